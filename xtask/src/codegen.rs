//! The "option off changes nothing" check of `CONFIG_RUST_ARC_LOCKDEP`.
//!
//! `qemu/arc-user/` is a small user of `Arc`. It is built as an external
//! module twice: against the `arc-lockdep-off` variant of our kernel, and
//! against the pristine kernel source (no overlay) prepared with the same
//! configuration. Every function the two objects share (the user's, and the
//! `Arc` code instantiated in it), except the module glue that our
//! `module!` extends, must disassemble to the same instructions and
//! relocations.

use crate::build::{Ctx, Kernel};
use crate::machine::Machine;
use crate::paths;
use crate::toolchain::Cmd;
use crate::ui::{self, Phase};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::Path;

use crate::report::Verdict;

/// Functions left out of the comparison: the module glue, which our
/// `module!` extends (it releases the module's implicit classes).
fn is_glue(name: &str) -> bool {
    [
        "init_module",
        "cleanup_module",
        "__init",
        "__exit",
        "__release_implicit_classes",
        "InPlaceModule",
    ]
    .iter()
    .any(|g| name.contains(g))
}

/// Splits `llvm-objdump -d -r --no-show-raw-insn` output into functions,
/// normalised: no addresses, no crate disambiguators (`Cs<hash>_`).
pub fn functions(disasm: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in disasm.lines() {
        let t = line.trim();
        if let Some(name) = t
            .strip_suffix(">:")
            .and_then(|l| l.split_once(" <"))
            .map(|(_, n)| n)
        {
            let name = strip_disambiguators(name);
            out.entry(name.clone()).or_default();
            current = Some(name);
            continue;
        }
        let Some(cur) = &current else { continue };
        if t.is_empty() {
            continue;
        }
        // "1a: mov ..." or "000000000000001b:  R_X86_64_PLT32 foo-0x4"
        let body = match t.split_once(':') {
            Some((addr, rest)) if addr.chars().all(|c| c.is_ascii_hexdigit()) => rest.trim(),
            _ => t,
        };
        // Branch targets: "jmp 4a0 <f+0x20>" -> "jmp <f+0x20>".
        let words: Vec<&str> = body.split_whitespace().collect();
        let mut norm = String::new();
        let mut it = words.iter().peekable();
        while let Some(w) = it.next() {
            let is_addr = w.chars().all(|c| c.is_ascii_hexdigit() || c == 'x');
            if is_addr && it.peek().is_some_and(|n| n.starts_with('<')) {
                continue;
            }
            if !norm.is_empty() {
                norm.push(' ');
            }
            norm.push_str(w);
        }
        if let Some(v) = out.get_mut(cur) {
            v.push(strip_disambiguators(&norm));
        }
    }
    out
}

/// Removes v0-mangling crate disambiguators (`Cs<base62>_`), which depend on
/// build flags rather than on code.
fn strip_disambiguators(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'C' && b.get(i + 1) == Some(&b's') {
            let mut j = i + 2;
            while j < b.len() && b[j].is_ascii_alphanumeric() {
                j += 1;
            }
            if j < b.len() && b[j] == b'_' && j > i + 2 {
                out.push_str("Cs_");
                i = j + 1;
                continue;
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

/// Compares the shared, non-glue functions of two objects' disassembly.
pub fn compare(ours: &str, pristine: &str) -> Verdict {
    let a = functions(ours);
    let b = functions(pristine);
    let mut same = 0;
    let mut differ = Vec::new();
    let mut only = 0;
    for (name, code) in &a {
        if is_glue(name) {
            continue;
        }
        match b.get(name) {
            Some(other) if other == code => same += 1,
            Some(_) => differ.push(name.clone()),
            None => only += 1,
        }
    }
    let user_fns = a.keys().filter(|n| n.contains("arc_user_")).count();
    let ok = differ.is_empty() && same > 0 && user_fns >= 4 && only == 0;
    let summary = if ok {
        format!("{same} functions identical to the pristine kernel's ({user_fns} of the user, the rest Arc code instantiated in it)")
    } else if !differ.is_empty() {
        format!(
            "{} function(s) differ from the pristine kernel's: {}",
            differ.len(),
            differ.join(", ")
        )
    } else {
        format!("{same} identical, {only} only in ours, {user_fns} user functions found: not a full comparison")
    };
    Verdict { ok, summary }
}

impl Ctx {
    /// Builds `qemu/arc-user` against the off variant `off` and against the
    /// pristine source with the same configuration, and compares them.
    pub fn arc_off_codegen(&self, m: &Machine, off: &Kernel) -> Result<Verdict> {
        let config = std::fs::read_to_string(off.build_dir.join(".config"))?;
        let key = format!(
            "{}\n{}\n{}\n{config}",
            m.name, self.source.key, self.tc_identity
        );
        let pristine = ui::ensure_dir(self.cache.dir.join(format!(
            "build/{}-pristine-{}",
            m.name,
            paths::short_hash(&key)
        )))?;
        let log = pristine.join("build.log");
        let hint = format!("see {}", log.display());
        let make = |src: &Path, o: &Path| self.make_in(src, m, o);
        Phase::start(format!("arc-off codegen {}", m.name)).run(
            |phase| {
                let stamp = pristine.join("prepared.stamp");
                if !stamp.exists() {
                    std::fs::write(pristine.join(".config"), &config)?;
                    for target in ["olddefconfig", "modules_prepare"] {
                        phase.status(&format!("pristine {target}"));
                        ui::run_logged(
                            &mut self
                                .tc
                                .command(&make(&self.source.dir, &pristine).arg(target)),
                            &log,
                            phase,
                            &hint,
                        )?;
                    }
                    std::fs::write(&stamp, "")?;
                }
                let mut dumps = Vec::new();
                for (name, src, o) in [
                    ("ours", self.tree.as_path(), off.build_dir.as_path()),
                    ("pristine", self.source.dir.as_path(), pristine.as_path()),
                ] {
                    let dir = ui::ensure_dir(
                        self.cache
                            .run_dir(&m.name)?
                            .join(format!("arc-user-{name}")),
                    )?;
                    for f in ["Kbuild", "rust_arc_user.rs"] {
                        let from = self.project.join("qemu/arc-user").join(f);
                        let to = dir.join(f);
                        let text = std::fs::read(&from)
                            .with_context(|| format!("reading {}", from.display()))?;
                        if std::fs::read(&to).ok().as_deref() != Some(text.as_slice()) {
                            std::fs::write(&to, text)?;
                        }
                    }
                    phase.status(&format!("build the user against {name}"));
                    ui::run_logged(
                        &mut self.tc.command(
                            &make(src, o)
                                .arg(format!("M={}", dir.display()))
                                .arg("KBUILD_MODPOST_WARN=1")
                                // Instantiate every generic here: a shared
                                // instance from the kernel crate exists or
                                // not depending on the crate's other users.
                                .arg("KRUSTFLAGS=-Zshare-generics=no")
                                .arg("modules"),
                        ),
                        &log,
                        phase,
                        &hint,
                    )?;
                    let obj = dir.join("rust_arc_user.o");
                    dumps.push(
                        self.tc.output(
                            &Cmd::new("llvm-objdump")
                                .arg("-d")
                                .arg("-r")
                                .arg("--no-show-raw-insn")
                                .arg(&obj),
                        )?,
                    );
                }
                Ok(compare(&dumps[0], &dumps[1]))
            },
            |v| v.summary.clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "\
rust_arc_user.o:\tfile format elf64-x86-64

Disassembly of section .text:

0000000000000000 <_RNvCs1AbC_13rust_arc_user18arc_user_roundtrip>:
       0: pushq %rbp
       1: callq 0x6 <_RNvCs1AbC_13rust_arc_user18arc_user_roundtrip+0x6>
\t\t0000000000000002:  R_X86_64_PLT32\t__rust_alloc-0x4
       6: jmp 0x20 <_RNvCs1AbC_13rust_arc_user18arc_user_roundtrip+0x20>

0000000000000030 <init_module>:
      30: retq
";

    #[test]
    fn same_code_at_other_addresses_and_hashes_matches() {
        let moved = DUMP
            .replace("Cs1AbC_", "Cs9ZzQ_")
            .replace("       0:", "     100:")
            .replace("0x20 <", "0x120 <");
        let f = functions(DUMP);
        assert_eq!(f.len(), 2);
        assert_eq!(functions(&moved), f);
    }

    #[test]
    fn a_changed_instruction_or_relocation_differs_and_glue_is_ignored() {
        let four = |d: &str| {
            let mut s = d.to_string();
            for n in ["pinned", "unique", "raw"] {
                s.push_str(&format!(
                    "\n0000000000000100 <_RNvCs1AbC_13rust_arc_user11arc_user_{n}>:\n     100: retq\n"
                ));
            }
            s
        };
        let ours = four(DUMP);
        assert!(compare(&ours, &ours).ok);
        let glue = ours.replace("      30: retq", "      30: nop");
        assert!(compare(&glue, &ours).ok);
        let changed = ours.replace("pushq %rbp", "pushq %rbx");
        let v = compare(&changed, &ours);
        assert!(!v.ok && v.summary.contains("arc_user_roundtrip"));
        let reloc = ours.replace("__rust_alloc", "__rust_alloc_zeroed");
        assert!(!compare(&reloc, &ours).ok);
    }
}
