//! The lab catalogue: what each lab runs, which trap classes it shows, and the flow of
//! events it must produce.
//!
//! Each lab is one TOML file in `labs/catalogue/`, embedded in the `traplab` binary at
//! build time. The format is documented in `labs/README.md`.
//!
//! The bare-metal programs a lab runs (the hypervisor and the guests) are built by this
//! crate's `build.rs` (and again by `traplab check`, when their code changed: [`bare`]);
//! [`hv_elf`] and [`guest_elf`] say where they are, in the traplab tree found where
//! `traplab` runs ([`tree`]).
//!
//! Checking a lab: [`run`] runs it headless, [`grade`] compares the run with the lab's
//! expected flow (or an exercise's) and [`explain`] puts a mismatch in a student's words.

pub mod bare;
pub mod book;
pub mod catalogue;
pub mod expect;
pub mod explain;
pub mod grade;
pub mod linux;
pub mod nearest;
pub mod run;
pub mod tree;

pub use catalogue::{Exercise, Lab, LabDisk, all, find};
use std::path::{Path, PathBuf};
use traplab_tracer::qemu::{Disk, Guest, Machine};

/// Where the hypervisor and the guests of this process's traplab tree are built.
pub fn bare_dir() -> PathBuf {
    tree::tree().bare_dir()
}

/// The hypervisor's ELF.
pub fn hv_elf() -> PathBuf {
    bare_dir().join("traplab-hv")
}

/// A guest's ELF (`guests/src/bin/<name>.rs`).
pub fn guest_elf(name: &str) -> PathBuf {
    bare_dir().join(name)
}

/// What to say about a lab id the catalogue does not have: the nearest ids, when one is
/// near enough to be a typo of it (`traplab trace page-falt`).
pub fn no_such_lab(id: &str, labs: &[Lab]) -> String {
    let ids = labs.iter().map(|lab| lab.id.as_str());
    match nearest::did_you_mean(id, ids) {
        Some(suggestion) => {
            format!("there is no lab called \"{id}\"; {suggestion} (`traplab list` shows them all)")
        }
        None => format!("there is no lab called \"{id}\"; `traplab list` shows them"),
    }
}

/// The lab called `id`, or an error that says there is none (and which was meant).
pub fn lab(id: &str) -> Result<Lab, String> {
    let mut labs = all().map_err(|error| error.to_string())?;
    match labs.iter().position(|lab| lab.id == id) {
        Some(index) => Ok(labs.swap_remove(index)),
        None => Err(no_such_lab(id, &labs)),
    }
}

/// The guest programs of this process's tree (`guests/src/bin/<name>.rs`), by name.
pub fn guest_names() -> Vec<String> {
    let bin = tree::tree().root.join("guests/src/bin");
    let mut names: Vec<String> = std::fs::read_dir(bin)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|entry| {
                    let name = entry.file_name().into_string().ok()?;
                    name.strip_suffix(".rs").map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
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
            .map(|name| Guest::new(*name, bare_dir.join(name)))
            .collect(),
    )
}

impl Lab {
    /// The machine this lab runs.
    pub fn machine(&self) -> Machine {
        self.machine_from(&bare_dir())
    }

    /// The machine this lab runs, with the programs built into `bare_dir`: its control
    /// domain if it has one, its guests (the first with the lab's `[boot]`: command line,
    /// initrd from the tree, RAM), when they start, its settings, its disk (with a
    /// temporary image: set `disk.image` to keep one).
    pub fn machine_from(&self, bare_dir: &Path) -> Machine {
        let guests: Vec<&str> = self.guests.iter().map(String::as_str).collect();
        let mut machine = machine_from(bare_dir, &guests);
        machine.dom0 = self
            .dom0
            .as_ref()
            .map(|name| Guest::new(name, bare_dir.join(name)));
        machine.start = self.start;
        machine.settings = self.settings.clone();
        machine.disk = self.disk.as_ref().map(|disk| Disk {
            image: None,
            sectors: disk.sectors,
            owner: disk.owner,
        });
        if let (Some(boot), Some(first)) = (&self.boot, machine.guests.first_mut()) {
            first.cmdline = boot.append.clone();
            first.initrd = boot
                .initrd
                .as_ref()
                .map(|path| tree::tree().root.join(path));
            first.memory_mib = boot.memory_mib;
            first.input = boot.input.clone();
        }
        machine.fit_ram();
        machine
    }
}
