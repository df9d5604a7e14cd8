//! The lab catalogue: what each lab runs, which trap classes it shows, and the flow of
//! events it must produce.
//!
//! Each lab is one TOML file in `labs/catalogue/`, embedded in the `traplab` binary at
//! build time. The format is documented in `labs/README.md`.
//!
//! The bare-metal programs a lab runs (the hypervisor and the guests) are built by this
//! crate's `build.rs`; [`hv_elf`] and [`guest_elf`] say where they are.
//!
//! Checking a lab: [`run`] runs it headless, [`grade`] compares the run with the lab's
//! expected flow (or an exercise's) and [`explain`] puts a mismatch in a student's words.

pub mod bare;
pub mod book;
pub mod catalogue;
pub mod expect;
pub mod explain;
pub mod grade;
pub mod run;

pub use catalogue::{Exercise, Lab, LabDisk, all, find};
use std::path::{Path, PathBuf};
use traplab_tracer::qemu::{Disk, Guest, Machine};

/// Where `build.rs` put the hypervisor and the guests.
pub fn bare_dir() -> PathBuf {
    PathBuf::from(env!("TRAPLAB_BARE_DIR"))
}

/// The hypervisor's ELF.
pub fn hv_elf() -> PathBuf {
    bare_dir().join("traplab-hv")
}

/// A guest's ELF (`guests/src/bin/<name>.rs`).
pub fn guest_elf(name: &str) -> PathBuf {
    bare_dir().join(name)
}

/// The machine that runs `guests`, one domain each, in this order: d1, d2, …
pub fn machine_for(guests: &[&str]) -> Machine {
    machine_from(&bare_dir(), guests)
}

/// The same, with the hypervisor and guests built into `bare_dir` (the exercise tests build
/// solutions elsewhere).
pub fn machine_from(bare_dir: &Path, guests: &[&str]) -> Machine {
    Machine::new(
        bare_dir.join("traplab-hv"),
        guests
            .iter()
            .map(|name| Guest {
                name: name.to_string(),
                elf: bare_dir.join(name),
            })
            .collect(),
    )
}

impl Lab {
    /// The machine this lab runs.
    pub fn machine(&self) -> Machine {
        self.machine_from(&bare_dir())
    }

    /// The machine this lab runs, with the programs built into `bare_dir`: its control
    /// domain if it has one, its guests, when they start, its settings, its disk (with a
    /// temporary image: set `disk.image` to keep one).
    pub fn machine_from(&self, bare_dir: &Path) -> Machine {
        let guests: Vec<&str> = self.guests.iter().map(String::as_str).collect();
        let mut machine = machine_from(bare_dir, &guests);
        machine.dom0 = self.dom0.as_ref().map(|name| Guest {
            name: name.clone(),
            elf: bare_dir.join(name),
        });
        machine.start = self.start;
        machine.settings = self.settings.clone();
        machine.disk = self.disk.as_ref().map(|disk| Disk {
            image: None,
            sectors: disk.sectors,
            owner: disk.owner,
        });
        machine
    }
}
