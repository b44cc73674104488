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

/// `DRM_IOCTL_VIRTGPU_GETPARAM`: `DRM_IOWR(DRM_COMMAND_BASE + 3, struct drm_virtgpu_getparam)`.
const VIRTGPU_GETPARAM: libc::c_ulong = 0xc010_6443;

/// `struct drm_virtgpu_getparam`.
#[repr(C)]
struct GetParam {
    param: u64,
    value: u64,
}

/// The virtgpu parameters `VIRTGPU_PARAM_*` by name, and two numbers no driver knows.
pub const VIRTGPU_PARAMS: &[(&str, u64)] = &[
    ("3D_FEATURES", 1),
    ("CAPSET_QUERY_FIX", 2),
    ("RESOURCE_BLOB", 3),
    ("HOST_VISIBLE", 4),
    ("CROSS_DEVICE", 5),
    ("CONTEXT_INIT", 6),
    ("SUPPORTED_CAPSET_IDs", 7),
    ("EXPLICIT_DEBUG_NAME", 8),
    ("BLOB_ALIGNMENT", 9),
    ("UNKNOWN_0", 0),
    ("UNKNOWN_10", 10),
    ("UNKNOWN_HIGH_BITS", 0x1_0000_0001),
];

/// What `DRM_IOCTL_VIRTGPU_GETPARAM` wrote for one parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamValue {
    /// The `int` the driver wrote.
    pub value: i32,
    /// Whether the driver wrote exactly 4 bytes, as C does (the next 4 kept their pattern).
    pub wrote_int: bool,
}

/// `DRM_IOCTL_VIRTGPU_GETPARAM` for `param`, the driver writing to the user pointer `value`.
fn getparam_ioctl(fd: std::os::fd::BorrowedFd<'_>, param: u64, value: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut arg = GetParam { param, value };
    // SAFETY: `arg` is a valid `struct drm_virtgpu_getparam` for the call; the kernel checks the
    // user pointer `value`.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), VIRTGPU_GETPARAM, &mut arg) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Asks the virtgpu driver behind `fd` for parameter `param`.
pub fn virtgpu_getparam(
    fd: std::os::fd::BorrowedFd<'_>,
    param: u64,
) -> std::io::Result<ParamValue> {
    const PATTERN: u64 = 0xa5a5_a5a5_a5a5_a5a5;
    let mut out: u64 = PATTERN;
    // `out` is 8 writable bytes that outlive the call.
    getparam_ioctl(fd, param, std::ptr::addr_of_mut!(out) as u64)?;
    let bytes = out.to_ne_bytes();
    let value = i32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let rest = [bytes[4], bytes[5], bytes[6], bytes[7]];
    Ok(ParamValue {
        value,
        wrote_int: rest == [0xa5; 4],
    })
}

/// `DRM_IOCTL_VIRTGPU_GETPARAM` with `value` pointing nowhere (address 8): must fail with
/// `EFAULT` for a known parameter.
pub fn virtgpu_getparam_bad_pointer(
    fd: std::os::fd::BorrowedFd<'_>,
    param: u64,
) -> std::io::Result<()> {
    getparam_ioctl(fd, param, 8)
}

/// An argument-less ioctl `_IO('d', nr)` on `fd`: for driver ioctl numbers the
/// driver does not define (an empty slot of its table, or past its end).
pub fn drm_raw_ioctl(fd: std::os::fd::BorrowedFd<'_>, nr: u8) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let cmd = (u32::from(b'd') << 8 | u32::from(nr)) as libc::c_ulong;
    // SAFETY: An `_IO` ioctl passes no argument the kernel would read or write.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), cmd, 0) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}
