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
pub mod bare_qemu;
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
use traplab_tracer::symbols::Symbols;

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

/// The ELF of the guest a recording names, when the name is one a guest has (a plain file
/// name) and the file a regular one: a recording is input, and the name in it must not
/// choose another file to read (`/dev/zero`, a FIFO, `../elsewhere`).
pub fn recorded_guest_elf(name: &str) -> Option<PathBuf> {
    let plain = std::path::Path::new(name).file_name() == Some(std::ffi::OsStr::new(name));
    let elf = guest_elf(name);
    (plain && elf.is_file()).then_some(elf)
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
    /// Does the lab boot Debian's Linux kernel (`[boot] kernel = "debian-linux"`) rather
    /// than a guest program of the tree?
    pub fn boots_linux(&self) -> bool {
        self.boot
            .as_ref()
            .is_some_and(|boot| boot.kernel.as_deref() == Some(linux::DEBIAN_LINUX))
    }

    /// The machine this lab runs, from this process's tree.
    pub fn machine(&self) -> Result<Machine, String> {
        self.machine_from(&tree::tree().root, &bare_dir())
    }

    /// The machine this lab runs, with the programs built into `bare_dir` and the lab's
    /// files (initrd, `/init`) read from the tree at `root` (the exercise tests build and
    /// patch a copy): its control domain if it has one, its guests (the first with the
    /// lab's `[boot]`: command line, initrd, RAM, and for a Linux lab Debian's kernel and
    /// an initramfs), when they start, its settings, its disk (with a temporary image: set
    /// `disk.image` to keep one).
    ///
    /// `Err` when a Linux lab's kernel is not fetched (the CLI fetches it first, asking:
    /// `setup::ensure_lab_kernel`) or its `/init` cannot be read or packed.
    pub fn machine_from(&self, root: &Path, bare_dir: &Path) -> Result<Machine, String> {
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
            first.initrd = boot.initrd.as_ref().map(|path| root.join(path));
            first.memory_mib = boot.memory_mib;
            first.input = boot.input.clone();
            if self.boots_linux() {
                let (kernel, initramfs) = self.linux_files(root)?;
                first.image = kernel;
                first.initrd = Some(initramfs);
            }
        }
        machine.fit_ram();
        Ok(machine)
    }

    /// A Linux lab's kernel and its initramfs, written now from busybox and the lab's
    /// `/init` as it is in the tree at `root`: built with the machine rather than once at
    /// fetch time, so that an edited (or patched) `/init` is what runs, and packing 2 MiB
    /// costs milliseconds.
    fn linux_files(&self, root: &Path) -> Result<(PathBuf, PathBuf), String> {
        let Some((kernel, busybox)) = linux::fetched() else {
            return Err(format!(
                "lab {} boots Debian's Linux kernel, which is not fetched: `traplab trace {} --yes` fetches it ({})",
                self.id,
                self.id,
                linux::fetch_description()
            ));
        };
        let init_path = self
            .boot
            .as_ref()
            .and_then(|boot| boot.init.as_ref())
            .map(|init| root.join(init))
            .ok_or_else(|| format!("lab {} boots Linux but has no [boot] init", self.id))?;
        let init = std::fs::read_to_string(&init_path)
            .map_err(|error| format!("{}: {error}", init_path.display()))?;
        let initramfs = linux::initramfs(&self.id, &busybox, &init)?;
        Ok((kernel, initramfs))
    }

    /// The symbols of the lab's first guest, which its expected flow may name: a guest
    /// program's from its ELF in `bare_dir`; none for a Linux kernel (a bzImage is no ELF,
    /// and its flow names no symbol).
    pub fn symbols_from(&self, bare_dir: &Path) -> Result<Symbols, String> {
        if self.boots_linux() {
            return Ok(Symbols::default());
        }
        let elf = bare_dir.join(&self.guests[0]);
        Symbols::load(&elf)
            .map_err(|error| format!("cannot read the symbols of {}: {error}", elf.display()))
    }

    /// The same, from this process's tree.
    pub fn symbols(&self) -> Result<Symbols, String> {
        self.symbols_from(&bare_dir())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_recorded_name_chooses_no_file_outside_the_guests_directory() {
        for name in [
            "/dev/zero",
            "../traplab-hv",
            "a/b",
            "..",
            "",
            "no-such-guest",
        ] {
            assert_eq!(super::recorded_guest_elf(name), None, "{name:?}");
        }
    }
}
