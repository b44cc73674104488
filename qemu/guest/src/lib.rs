//! What the guest programs share.

/// Kills what is left of the process group `pid` led (a program spawned
/// with `process_group(0)`), so helpers it left behind do not run on.
pub fn kill_group(pid: u32) {
    let Ok(pgid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // Never signal -1 (every process) or 0 (our own group).
    if pgid > 1 {
        // SAFETY: kill(2) has no memory-safety preconditions; `-pgid` names
        // the group the child led (it was spawned with `process_group(0)`),
        // which the caller is not in.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
}

/// Runs `cmd` with `args` and waits for it; an error says what failed.
pub fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let st = std::process::Command::new(cmd)
        .args(args)
        .status()
        .map_err(|e| format!("cannot run {cmd}: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("{cmd} {} failed: {st}", args.join(" ")))
    }
}
