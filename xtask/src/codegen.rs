//! The "option off changes nothing" checks of `CONFIG_RUST_ARC_LOCKDEP`
//! and of implicit lock classes without `CONFIG_LOCKDEP`.
//!
//! `qemu/arc-user/` is a small user of `Arc`. It is built as an external
//! module twice: against the `arc-lockdep-off` variant of our kernel, and
//! against the pristine kernel source (no overlay) prepared with the same
//! configuration. Every function the two objects share (the user's, and the
//! `Arc` code instantiated in it), except the module glue that our
//! `module!` extends and KASAN's constructors (see [`is_glue`]), must
//! disassemble to the same instructions and relocations.
//!
//! `qemu/implicit-user/` makes each kind of lock twice, with an implicit
//! class and with the class macro. It is built against our tree configured
//! like the variant but without lockdep; each pair must disassemble to the
//! same instructions (relocation targets aside: the names and keys differ),
//! and nothing may refer to the implicit class code.

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
/// `module!` extends (it releases the module's implicit classes), and
/// KASAN's module constructors and destructors (`asan.module_ctor.3`). Those
/// register the object's globals, and with `CONFIG_RUST_INLINE_HELPERS` the
/// object holds the bitcode of every C helper, of which our overlay has more:
/// their count differs, not `Arc`'s code.
fn is_glue(name: &str) -> bool {
    name.starts_with("asan.module_")
        || [
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

/// Relocation lines keep only their type: the two functions of a pair point
/// to different names and keys by design. Branches within the function name
/// the function itself; that name becomes `<self>`.
fn without_reloc_targets(name: &str, code: &[String]) -> Vec<String> {
    code.iter()
        .map(|l| match l.split_once(char::is_whitespace) {
            Some((kind, _)) if kind.starts_with("R_") => kind.to_string(),
            _ => l.replace(name, "<self>"),
        })
        .collect()
}

/// Compares each `implicit_user_*_implicit` function of `disasm` with its
/// `*_macro` twin, and checks that nothing refers to the implicit class code.
pub fn compare_implicit(disasm: &str) -> Verdict {
    let fns = functions(disasm);
    let mut pairs = 0;
    let mut differ = Vec::new();
    for (name, code) in &fns {
        let Some(stem) = name
            .rfind("implicit_user_")
            .and_then(|i| name[i..].strip_suffix("_implicit"))
        else {
            continue;
        };
        let twin = fns
            .iter()
            .find(|(n, _)| n.ends_with(&format!("{stem}_macro")));
        match twin {
            Some((twin, other))
                if without_reloc_targets(name, code) == without_reloc_targets(twin, other) =>
            {
                pairs += 1
            }
            _ => differ.push(stem.to_string()),
        }
    }
    // Calls into the implicit class code (a lookup); a reference to the one
    // static key that stands for every class without lockdep is data.
    let table_refs: Vec<&str> = disasm
        .lines()
        .filter(|l| l.contains("implicit_class") || l.contains("class_at"))
        .filter(|l| l.contains("PLT32") || l.contains("call") || l.contains("R_AARCH64_CALL26"))
        .collect();
    let ok = pairs >= 3 && differ.is_empty() && table_refs.is_empty();
    let summary = if ok {
        format!("without CONFIG_LOCKDEP, {pairs} locks made with implicit classes compile to the same code as with the class macros; no reference to the class table")
    } else if !table_refs.is_empty() {
        format!(
            "without CONFIG_LOCKDEP the object still refers to implicit class code: {}",
            table_refs[0].trim()
        )
    } else {
        format!(
            "{pairs} identical pair(s); differ or missing: {}",
            if differ.is_empty() {
                "fewer than 3 pairs found".to_string()
            } else {
                differ.join(", ")
            }
        )
    };
    Verdict { ok, summary }
}

/// The options that, set to `n` over a configuration, take lockdep out.
const NO_LOCKDEP: &[&str] = &[
    "PROVE_LOCKING",
    "DEBUG_LOCK_ALLOC",
    "DEBUG_WW_MUTEX_SLOWPATH",
    "LOCK_STAT",
    "LOCKDEP",
];

impl Ctx {
    /// The build directory for external modules of `kind` against a tree
    /// configured with `config` (one per machine, source, toolchain and
    /// configuration).
    fn modules_dir(&self, m: &Machine, kind: &str, config: &str) -> Result<std::path::PathBuf> {
        let key = format!(
            "{}\n{}\n{}\n{config}",
            m.name, self.source.key, self.tc_identity
        );
        ui::ensure_dir(self.cache.dir.join(format!(
            "build/{}-{kind}-{}",
            m.name,
            paths::short_hash(&key)
        )))
    }

    /// Prepares `out` (once per configuration) for building external
    /// modules from `src` with `config`.
    fn prepare_for_modules(
        &self,
        m: &Machine,
        src: &Path,
        out: &Path,
        config: &str,
        phase: &Phase,
    ) -> Result<()> {
        let stamp = out.join("prepared.stamp");
        if stamp.exists() {
            return Ok(());
        }
        let log = out.join("build.log");
        let hint = format!("see {}", log.display());
        std::fs::write(out.join(".config"), config)?;
        for target in ["olddefconfig", "modules_prepare"] {
            phase.status(&format!(
                "{} {target}",
                out.file_name().unwrap_or_default().to_string_lossy()
            ));
            ui::run_logged(
                &mut self.tc.command(&self.make_in(src, m, out).arg(target)),
                &log,
                phase,
                &hint,
            )?;
        }
        std::fs::write(&stamp, "")?;
        Ok(())
    }

    /// Builds the external module in `qemu/<user>/` (module `module`)
    /// against the tree `src` configured in `out`, into the run directory
    /// `run_name`, and returns its disassembly.
    fn build_user(
        &self,
        m: &Machine,
        (src, out): (&Path, &Path),
        (user, module): (&str, &str),
        run_name: &str,
        phase: &Phase,
    ) -> Result<String> {
        let dir = ui::ensure_dir(self.cache.run_dir(&m.name)?.join(run_name))?;
        for f in ["Kbuild".to_string(), format!("{module}.rs")] {
            let from = self.project.join("qemu").join(user).join(&f);
            let to = dir.join(&f);
            let text =
                std::fs::read(&from).with_context(|| format!("reading {}", from.display()))?;
            if std::fs::read(&to).ok().as_deref() != Some(text.as_slice()) {
                std::fs::write(&to, text)?;
            }
        }
        let log = out.join("build.log");
        let hint = format!("see {}", log.display());
        phase.status(&format!("build {user} ({run_name})"));
        ui::run_logged(
            &mut self.tc.command(
                &self
                    .make_in(src, m, out)
                    .arg(format!("M={}", dir.display()))
                    .arg("KBUILD_MODPOST_WARN=1")
                    // Instantiate every generic here: a shared instance
                    // from the kernel crate exists or not depending on the
                    // crate's other users.
                    .arg("KRUSTFLAGS=-Zshare-generics=no")
                    .arg("modules"),
            ),
            &log,
            phase,
            &hint,
        )?;
        self.tc.output(
            &Cmd::new("llvm-objdump")
                .arg("-d")
                .arg("-r")
                .arg("--no-show-raw-insn")
                .arg(dir.join(format!("{module}.o"))),
        )
    }

    /// Builds `qemu/arc-user` against the off variant `off` and against the
    /// pristine source with the same configuration, and compares them.
    pub fn arc_off_codegen(&self, m: &Machine, off: &Kernel) -> Result<Verdict> {
        let config = std::fs::read_to_string(off.build_dir.join(".config"))?;
        let pristine = self.modules_dir(m, "pristine", &config)?;
        Phase::start(format!("arc-off codegen {}", m.name)).run(
            |phase| {
                self.prepare_for_modules(m, &self.source.dir, &pristine, &config, phase)?;
                let user = ("arc-user", "rust_arc_user");
                let ours = self.build_user(
                    m,
                    (&self.tree, &off.build_dir),
                    user,
                    "arc-user-ours",
                    phase,
                )?;
                let theirs = self.build_user(
                    m,
                    (&self.source.dir, &pristine),
                    user,
                    "arc-user-pristine",
                    phase,
                )?;
                Ok(compare(&ours, &theirs))
            },
            |v| v.summary.clone(),
        )
    }

    /// Builds `qemu/implicit-user` against our tree configured like the
    /// variant `off` but without lockdep, and compares each lock made with
    /// an implicit class with its twin made with the class macro.
    pub fn implicit_off_codegen(&self, m: &Machine, off: &Kernel) -> Result<Verdict> {
        let mut config = std::fs::read_to_string(off.build_dir.join(".config"))?;
        for opt in NO_LOCKDEP {
            config.push_str(&format!("# CONFIG_{opt} is not set\n"));
        }
        let out = self.modules_dir(m, "nolockdep", &config)?;
        Phase::start(format!("implicit-class codegen {}", m.name)).run(
            |phase| {
                // Our tree changes with the overlay: let `make` bring the
                // prepared kernel crate up to date every time.
                let _ = std::fs::remove_file(out.join("prepared.stamp"));
                self.prepare_for_modules(m, &self.tree, &out, &config, phase)?;
                let final_config = std::fs::read_to_string(out.join(".config"))?;
                if final_config.lines().any(|l| l == "CONFIG_LOCKDEP=y") {
                    return Ok(Verdict {
                        ok: false,
                        summary: format!(
                            "CONFIG_LOCKDEP is still selected in {}: another option selects it",
                            out.join(".config").display()
                        ),
                    });
                }
                let disasm = self.build_user(
                    m,
                    (&self.tree, &out),
                    ("implicit-user", "rust_implicit_user"),
                    "implicit-user",
                    phase,
                )?;
                Ok(compare_implicit(&disasm))
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

    const PAIR: &str = "\
0000000000000000 <_RNvCs1AbC_18rust_implicit_user31implicit_user_spinlock_implicit>:
       0: leaq (%rip), %rsi
\t\t0000000000000003:  R_X86_64_PC32\t.Lanon.1-0x4
       7: jmp 0x0 <_RNvCs1AbC_18rust_implicit_user31implicit_user_spinlock_implicit+0x7>
0000000000000010 <_RNvCs1AbC_18rust_implicit_user28implicit_user_spinlock_macro>:
      10: leaq (%rip), %rsi
\t\t0000000000000013:  R_X86_64_PC32\t_RNvNvCs1AbC_18rust_implicit_user28implicit_user_spinlock_macro5CLASS-0x4
      17: jmp 0x0 <_RNvCs1AbC_18rust_implicit_user28implicit_user_spinlock_macro+0x7>
";

    #[test]
    fn implicit_pairs_compare_without_relocation_targets() {
        let three = [
            PAIR,
            &PAIR.replace("spinlock", "mutexxxx"),
            &PAIR.replace("spinlock", "condvarx"),
        ]
        .concat();
        let v = compare_implicit(&three);
        assert!(v.ok, "{}", v.summary);
        // Another instruction in one twin fails.
        let changed = three.replacen("      17: jmp", "      17: call", 1);
        assert!(!compare_implicit(&changed).ok);
        // A call into the class table fails even when the pairs match...
        let table = format!("{three}\t\t0000000000000020:  R_X86_64_PLT32\t_RNvNtNtCs1AbC_6kernel4sync14implicit_class8class_at-0x4\n");
        assert!(!compare_implicit(&table).ok);
        // ...but the address of the static key is data, not a lookup (the
        // line stands before the functions, so the pairs stay equal).
        let key = format!(
            "\t\t0000000000000020:  R_X86_64_32S\t_RNvNvNtNtCs1AbC_6kernel4sync14implicit_class8class_at3KEY\n{three}"
        );
        assert!(compare_implicit(&key).ok);
        // Too few pairs is not a pass.
        assert!(!compare_implicit(PAIR).ok);
    }

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
        let asan = |n: u32| {
            format!(
                "{ours}\n0000000000000200 <asan.module_ctor.3>:\n     200: movl $0x{n:x}, %esi\n"
            )
        };
        assert!(compare(&asan(0x25), &asan(0x1a)).ok);
        let changed = ours.replace("pushq %rbp", "pushq %rbx");
        let v = compare(&changed, &ours);
        assert!(!v.ok && v.summary.contains("arc_user_roundtrip"));
        let reloc = ours.replace("__rust_alloc", "__rust_alloc_zeroed");
        assert!(!compare(&reloc, &ours).ok);
    }
}
