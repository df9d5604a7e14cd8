//! traplab-hv's decisions: what the hypervisor does with every trap, without the machine.
//!
//! The hypervisor is two crates over one `src/` folder. This library holds everything that
//! *decides*; it touches no hardware, so the same files build for the host
//! (`hv/host/Cargo.toml`) and `cargo test` feeds every handler synthetic exits. The
//! bare-metal program (`main.rs`) boots, runs VMRUN, and calls in here at every #VMEXIT.
//!
//! The path of one trap through the library, in reading order:
//!
//! ```text
//!  #VMEXIT ─► exit::Exit::read ─► exit::handle ─► exit/<reason>.rs ─► Decision ─► apply::apply
//!             (the reason,        (one match:     (a pure function:   (a value:    (the one place
//!              decoded once)       one arm per     the exit and a      action, why,  that changes
//!                                  exit reason)    read-only Guest)    effects)      the guest and
//!                                                                                    records events)
//! ```
//!
//! | module        | what it is                                                               |
//! |---------------|--------------------------------------------------------------------------|
//! | [`exit`]      | one file per exit reason: the handlers                                   |
//! | [`decision`]  | a decision as a value: action, reason, source line, effects              |
//! | [`apply`]     | the one place that applies a decision and records the events, in order   |
//! | [`record`]    | an exit's and a resume's trace records, read straight from the vCPU      |
//! | [`delivery`]  | how an exception reaches the guest: reflect (IDT) or bounce (trap table) |
//! | [`quirks`]    | where QEMU's TCG differs from a real CPU, and the corrections            |
//! | [`domain`]    | a domain: its vCPU, guest memory, devices, paravirtual state, channels   |
//! | [`system`]    | every domain side by side, and the store they share                      |
//! | [`schedule`]  | which domain's vCPU runs: the scheduler's decisions                      |
//! | [`store`]     | the store: names and values the domains share (xenstore, reduced)        |
//! | [`device`]    | the devices the hypervisor emulates (console UART, the lab's MMIO device), and the disk controller it hands to one domain |
//! | [`iopm`]      | the I/O permission map: which ports a domain reaches without an exit      |
//! | [`vmcb`]      | the VMCB layout (AMD APM vol. 2, appendix B)                             |
//! | [`machine`]   | what the hypervisor asks of the machine it runs on                       |
//! | [`calibration`] | the TSC rate, chosen from measurements against the PIT                 |
//! | [`free_blocks`] | freed heap blocks kept for the next allocation of the same layout (the program's allocator, `heap.rs`) |
//! | [`emulate`], [`instruction`] | decoding an instruction and the memory access it makes   |
//! | [`gdb`]       | the pure parts of the program's gdb stub (`gdb/`): the protocol's framing, the `monitor` commands, the trap flows they show, the registers by gdb's number and the check of a write, a step's trap flag through SYSCALL and SYSRET |
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod apply;
pub mod calibration;
pub mod decision;
pub mod delivery;
pub mod device;
pub mod domain;
pub mod emulate;
pub mod exit;
pub mod free_blocks;
pub mod image;
/// The pure parts of the program's gdb stub (`gdb/`): their files live there, and are built
/// here so that the host tests them.
pub mod gdb {
    pub mod command;
    pub mod flows;
    pub mod registers;
    pub mod step;
    pub mod watch;
    pub mod wire;
}
pub mod instruction;
pub mod iopm;
pub mod machine;
pub mod quirks;
pub mod record;
pub mod schedule;
pub mod store;
pub mod system;
pub mod vmcb;

#[cfg(test)]
mod testing;

pub use decision::{Decision, DomainEnd, Effect};
pub use domain::{Domain, Guest};
pub use exit::Exit;
pub use machine::Machine;
pub use system::System;

#[cfg(test)]
mod tests {
    //! The layout, checked: the hypervisor's modules (the library's and the program's) use
    //! each other without a cycle, so each can be read, and tested, with only what it needs.

    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    fn source() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../src")
    }

    /// The modules `root` (`lib.rs` or `main.rs`) declares: `mod name;` or `pub mod name;`.
    fn declared(root: &str) -> Vec<String> {
        let text = std::fs::read_to_string(source().join(root)).expect("the crate root");
        text.lines()
            .filter_map(|line| {
                let line = line.trim().trim_start_matches("pub ");
                let name = line.strip_prefix("mod ")?.strip_suffix(';')?;
                Some(name.to_string())
            })
            .filter(|name| name != "testing")
            .collect()
    }

    /// The code of a module: its file, or every file of its folder; comments and test
    /// modules left out.
    fn code(module: &str) -> String {
        fn files(path: &Path, found: &mut Vec<PathBuf>) {
            if path.is_dir() {
                for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
                    files(&entry.path(), found);
                }
            } else if path.is_file() && path.extension().is_some_and(|extension| extension == "rs")
            {
                found.push(path.to_path_buf());
            }
        }
        let mut found = Vec::new();
        files(&source().join(format!("{module}.rs")), &mut found);
        files(&source().join(module), &mut found);
        let mut code = String::new();
        for file in found {
            let text = std::fs::read_to_string(file).expect("a source file");
            let text = text.split("#[cfg(test)]").next().unwrap_or_default();
            for line in text.lines() {
                code.push_str(line.split("//").next().unwrap_or_default());
                code.push('\n');
            }
        }
        code
    }

    /// Which of `modules` each of them uses (`crate::name`, or a macro another defines).
    fn uses(modules: &[String]) -> BTreeMap<String, BTreeSet<String>> {
        let defined_in = [
            ("decide!", "decision"),
            ("here!", "decision"),
            ("deliver!", "delivery"),
            ("log!", "console"),
        ];
        modules
            .iter()
            .map(|module| {
                let code = code(module);
                let mut used: BTreeSet<String> = modules
                    .iter()
                    .filter(|other| *other != module)
                    .filter(|other| code.contains(&format!("crate::{other}")))
                    .cloned()
                    .collect();
                for (call, home) in defined_in {
                    if home != module && code.contains(call) && modules.iter().any(|m| m == home) {
                        used.insert(home.to_string());
                    }
                }
                (module.clone(), used)
            })
            .collect()
    }

    /// A cycle through `start`, if there is one.
    fn cycle(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
        fn walk(
            graph: &BTreeMap<String, BTreeSet<String>>,
            start: &str,
            path: &mut Vec<String>,
        ) -> bool {
            let current = path.last().cloned().unwrap_or_default();
            for next in graph.get(&current).into_iter().flatten() {
                if next == start {
                    return true;
                }
                if !path.contains(next) {
                    path.push(next.clone());
                    if walk(graph, start, path) {
                        return true;
                    }
                    path.pop();
                }
            }
            false
        }
        let mut path = vec![start.to_string()];
        walk(graph, start, &mut path).then_some(path)
    }

    #[test]
    fn no_module_of_the_hypervisor_depends_on_itself_through_others() {
        for root in ["lib.rs", "main.rs"] {
            let modules = declared(root);
            assert!(
                modules.len() > 5,
                "{root} declares its modules: {modules:?}"
            );
            let graph = uses(&modules);
            for module in &modules {
                if let Some(path) = cycle(&graph, module) {
                    panic!("an import cycle in {root}: {} → {module}", path.join(" → "));
                }
            }
        }
    }
}
