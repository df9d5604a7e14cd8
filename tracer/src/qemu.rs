//! QEMU: the command line that boots the hypervisor with a lab's guests, where QEMU is,
//! and how to install it.
//!
//! The machine: a q35 PC under TCG with a CPU model that has SVM and nested paging
//! (`-cpu qemu64,+svm,+npt`; QEMU's TCG implements both), its RAM backed by a shared file
//! that the host maps to read the trace ring (`-object memory-backend-file,…,share=on`),
//! the hypervisor as `-kernel` (PVH boot), the guests as fw_cfg files, the hypervisor's log
//! on the serial port (QEMU's stdout), and `isa-debug-exit` so the hypervisor can report
//! its status as QEMU's exit code.
//!
//! Domains are numbered as Xen numbers them: domain 0 is the privileged control domain
//! (dom0), present only when a lab needs one; the lab's guests are the unprivileged
//! domains 1, 2, … Each is a set of fw_cfg files under `opt/traplab/dom<id>/`:
//!
//! | file         | kind   | what                                                          |
//! |--------------|--------|---------------------------------------------------------------|
//! | `name`       | string | the guest's name in the trace                                 |
//! | `image`      | file   | the kernel image, whatever its format: the hypervisor detects a traplab ELF64 guest or a multiboot v1 kernel |
//! | `cmdline`    | string | the kernel's command line; only when given                    |
//! | `initrd`     | file   | loaded as the first multiboot module; only when given         |
//! | `memory-mib` | string | the domain's RAM in MiB, in decimal; only when given (the hypervisor's default: 16) |
//!
//! QEMU's RAM ([`Machine::ram_mib`]) holds the hypervisor and every domain's RAM:
//! [`Machine::fit_ram`] makes it large enough.
//!
//! A lab with a disk ([`Disk`]) gets a real disk controller: QEMU's legacy ATA controller
//! (`isa-ide`) at the PC's primary IDE addresses (ports 0x1f0–0x1f7 and 0x3f6, IRQ 14),
//! with a raw image as drive 0, and fw_cfg `opt/traplab/disk-owner` naming the domain the
//! hypervisor gives the whole controller to. Legacy ATA in PIO mode, not virtio-blk or
//! AHCI: its owner moves every byte through I/O ports with its own CPU, the device never
//! reaches memory by DMA, so no IOMMU is needed to keep it inside its owner's memory —
//! giving the owner the ports is the whole assignment (`hv/src/device/ata.rs`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use traplab_abi::ata;

/// The QEMU binary traplab runs.
pub const PROGRAM: &str = "qemu-system-x86_64";
/// The Debian/Ubuntu package that has it.
pub const DEBIAN_PACKAGE: &str = "qemu-system-x86";

/// What the hypervisor does when the trace ring is full (fw_cfg `opt/traplab/trace`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceMode {
    /// A host reads the ring: the hypervisor waits for space. Nothing is lost.
    Ring,
    /// Nobody promised to read: drop and count (`lost` events).
    Lossy,
    /// No events at all (a baseline for benchmarks).
    Off,
}

impl TraceMode {
    pub fn fw_cfg_value(self) -> &'static str {
        match self {
            TraceMode::Ring => "ring",
            TraceMode::Lossy => "lossy",
            TraceMode::Off => "off",
        }
    }
}

/// One guest to run in a domain: a kernel image and how to boot it (the domain's fw_cfg
/// files, `opt/traplab/dom<id>/…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guest {
    /// Its name in the trace (`name`).
    pub name: String,
    /// The kernel image (`image`), whatever its format: a traplab ELF64 guest or a multiboot
    /// v1 kernel; the hypervisor tells which. gdb reads the guest's symbols from it.
    pub image: PathBuf,
    /// The kernel's command line (`cmdline`); `None`: the file is left out.
    pub cmdline: Option<String>,
    /// A file loaded as the first multiboot module, its initrd (`initrd`).
    pub initrd: Option<PathBuf>,
    /// The domain's RAM in MiB (`memory-mib`); `None`: the hypervisor's default,
    /// [`DEFAULT_DOMAIN_MIB`]. From [`MIN_DOMAIN_MIB`] to [`MAX_DOMAIN_MIB`].
    pub memory_mib: Option<u32>,
    /// Text typed ahead on the domain's COM1 (`input`): it waits in the UART's receiver
    /// when the guest starts; `None` or empty: nothing.
    pub input: Option<String>,
}

impl Guest {
    /// A guest that runs `image` and nothing more: no command line, no module, the
    /// hypervisor's default RAM.
    pub fn new(name: impl Into<String>, image: impl Into<PathBuf>) -> Guest {
        Guest {
            name: name.into(),
            image: image.into(),
            cmdline: None,
            initrd: None,
            memory_mib: None,
            input: None,
        }
    }
}

/// QEMU's RAM (`-m`) unless the domains need more.
pub const DEFAULT_RAM_MIB: u32 = 256;

/// QEMU's RAM the hypervisor needs besides the domains': its image, its heap and the
/// 16 MiB trace ring.
pub const HV_RAM_MIB: u32 = 128;

/// A domain's RAM when its guest does not say: the hypervisor's default (`memory-mib`),
/// 16 MiB.
pub const DEFAULT_DOMAIN_MIB: u32 = (traplab_abi::boot::GUEST_RAM_SIZE >> 20) as u32;

/// The least RAM the hypervisor gives a domain (`memory-mib`, as `hv/src/main.rs` checks it).
pub const MIN_DOMAIN_MIB: u32 = traplab_abi::boot::MIN_GUEST_RAM_MIB;

/// The most RAM a domain may have (`traplab_abi::boot::MAX_GUEST_RAM_MIB` says why); the
/// hypervisor refuses more (`hv/src/main.rs`).
pub const MAX_DOMAIN_MIB: u32 = traplab_abi::boot::MAX_GUEST_RAM_MIB;

/// When the domains start (fw_cfg `opt/traplab/start`; in a lab's catalogue file,
/// `start = "together"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Start {
    /// Each domain starts when the one before it ended: one runs at a time, as in the
    /// single-guest labs.
    #[default]
    InTurn,
    /// All are runnable from the start, side by side on the one CPU.
    Together,
}

impl Start {
    pub fn fw_cfg_value(self) -> &'static str {
        match self {
            Start::InTurn => "in-turn",
            Start::Together => "together",
        }
    }
}

/// The machine's disk: a legacy ATA controller with one raw image as its drive 0, owned
/// whole by one domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// The raw image file, kept after the run (`--disk FILE`). `None`: the run makes a
    /// temporary one and deletes it after (`disk::Image`).
    pub image: Option<PathBuf>,
    /// The image's size in sectors of 512 bytes when the run creates it (a temporary image,
    /// or a file that does not exist yet); an existing file is used as it is.
    pub sectors: u64,
    /// The domain the controller belongs to, its driver domain (fw_cfg
    /// `opt/traplab/disk-owner`).
    pub owner: u16,
}

/// The first unprivileged domain: a lab's first guest.
pub const FIRST_GUEST: u16 = 1;

/// Everything that defines one run of the machine.
#[derive(Debug, Clone)]
pub struct Machine {
    pub hv: PathBuf,
    /// The control domain's program (domain 0), when the lab needs one.
    pub dom0: Option<Guest>,
    /// The unprivileged domains 1, 2, … in this order.
    pub guests: Vec<Guest>,
    /// When the domains start.
    pub start: Start,
    pub trace: TraceMode,
    /// QEMU's RAM in MiB (`-m`), [`DEFAULT_RAM_MIB`] by default; the host maps the same
    /// amount to read the trace ring. [`Machine::fit_ram`] raises it to what the domains need.
    pub ram_mib: u32,
    /// The trace ring's data size in KiB (64 to 16384); `None`: the hypervisor's default,
    /// 16 MiB. Small rings are for tests of the lossy mode.
    pub ring_kib: Option<u32>,
    /// Let the host pause, step and break the hypervisor (`None`: no control, no cost).
    pub control: Option<ControlStart>,
    /// Hypervisor settings (`traplab_abi::settings`), e.g. `intercept-cr`.
    pub settings: Vec<String>,
    /// The hypervisor's own timer, ticks per second (`None`: off). Each tick is an INTR exit:
    /// it lets the hypervisor answer a pause while a guest spins without exits.
    pub timer_hz: Option<u32>,
    /// Serve gdb on this loopback TCP port (0: a free one of the system's choosing,
    /// [`Session::gdb_port`](crate::session::Session::gdb_port)): the hypervisor's gdbstub
    /// talks on COM2, which QEMU connects to the port. The debugged domain starts stopped,
    /// waiting for gdb.
    pub gdb_port: Option<u16>,
    /// The domain gdb debugs (fw_cfg `opt/traplab/gdb`, its number in decimal).
    pub gdb_domain: u16,
    /// A disk controller with an image, owned by one domain (`None`: no disk, and the
    /// controller's ports are empty).
    pub disk: Option<Disk>,
    /// More QEMU arguments, appended as they are (e.g. `-s -S` for QEMU's own gdb stub).
    pub extra_args: Vec<String>,
    /// Who runs the guest's instructions: QEMU's TCG, or KVM with nested SVM.
    pub accel: Accel,
}

/// QEMU's accelerator. The labs run under TCG unless asked otherwise (their traces, quirks
/// included, are TCG's, and `traplab check` expects those); `--accel` of `traplab bench`,
/// `trace`, `run` and `gdb` may choose KVM where the host offers nested SVM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accel {
    /// QEMU's tiny code generator: emulated SVM, on any host.
    #[default]
    Tcg,
    /// The host's AMD-V through /dev/kvm, with nested SVM: the hypervisor's VMRUN runs on
    /// the real CPU (the host kernel's `kvm_amd` emulates it with its own).
    Kvm,
}

impl Accel {
    /// QEMU's name for it (`-accel tcg`).
    pub fn name(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }

    /// Can KVM run the hypervisor here? `Err` says why not, in a user's words.
    pub fn kvm_offers_nested_svm() -> Result<(), String> {
        let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let svm = cpu
            .lines()
            .filter(|line| line.starts_with("flags"))
            .any(|line| line.split_whitespace().any(|flag| flag == "svm"));
        if !svm {
            return Err(
                "this CPU has no AMD-V (no `svm` flag in /proc/cpuinfo): KVM cannot run an SVM hypervisor here"
                    .into(),
            );
        }
        if let Err(error) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
        {
            return Err(format!("/dev/kvm cannot be opened: {error}"));
        }
        let nested = std::fs::read_to_string("/sys/module/kvm_amd/parameters/nested")
            .map_err(|_| "the kvm_amd module is not loaded (no /sys/module/kvm_amd)".to_string())?;
        match nested.trim() {
            "1" | "Y" | "y" => Ok(()),
            other => Err(format!(
                "kvm_amd's nested SVM is off (/sys/module/kvm_amd/parameters/nested = {other}); turn it on with: modprobe -r kvm_amd && modprobe kvm_amd nested=1"
            )),
        }
    }
}

/// How a controlled machine starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlStart {
    /// Running; the host may pause it.
    Run,
    /// Stopped after its first event (`boot`): the host sets breakpoints, then continues.
    Paused,
}

impl Machine {
    /// A machine that runs `guests` as domains 1, 2, … in turn, without a control domain.
    pub fn new(hv: PathBuf, guests: Vec<Guest>) -> Machine {
        Machine {
            hv,
            dom0: None,
            guests,
            start: Start::InTurn,
            trace: TraceMode::Ring,
            ram_mib: DEFAULT_RAM_MIB,
            ring_kib: None,
            control: None,
            settings: Vec::new(),
            timer_hz: None,
            gdb_port: None,
            gdb_domain: FIRST_GUEST,
            disk: None,
            extra_args: Vec::new(),
            accel: Accel::Tcg,
        }
    }

    /// Every domain with its number: dom0 first when there is one, then 1, 2, …
    pub fn domains(&self) -> Vec<(u16, &Guest)> {
        let dom0 = self.dom0.iter().map(|guest| (0, guest));
        let guests = self
            .guests
            .iter()
            .enumerate()
            .map(|(index, guest)| (FIRST_GUEST + index as u16, guest));
        dom0.chain(guests).collect()
    }

    /// The program domain `dom` runs, if the machine has that domain.
    pub fn domain(&self, dom: u16) -> Option<&Guest> {
        self.domains()
            .into_iter()
            .find(|(id, _)| *id == dom)
            .map(|(_, guest)| guest)
    }

    /// Raise QEMU's RAM to what the machine needs: [`HV_RAM_MIB`] for the hypervisor, its
    /// heap and the trace ring, plus each domain's RAM (its `memory_mib`, else
    /// [`DEFAULT_DOMAIN_MIB`]), and never below [`DEFAULT_RAM_MIB`]. The hypervisor takes
    /// every domain's RAM out of QEMU's, so a guest that asks for more than the default
    /// needs a larger machine. Call it after giving guests memory: the host's map of the RAM
    /// (`session.rs`) and QEMU's `-m` both read `ram_mib`.
    pub fn fit_ram(&mut self) {
        let domains = self
            .domains()
            .iter()
            .map(|(_, guest)| guest.memory_mib.unwrap_or(DEFAULT_DOMAIN_MIB))
            .fold(0, u32::saturating_add);
        let needed = HV_RAM_MIB.saturating_add(domains).max(DEFAULT_RAM_MIB);
        self.ram_mib = self.ram_mib.max(needed);
    }
}

/// QEMU's option syntax doubles a comma inside a value (`-fw_cfg name=…,string=a,,b` is
/// the string `a,b`).
fn escape_text(value: &str) -> String {
    value.replace(',', ",,")
}

/// A path as a value of a QEMU option.
fn escape(path: &Path) -> String {
    escape_text(&path.display().to_string())
}

/// The arguments (without the program) that run `machine` with its RAM in `ram_file`,
/// when it has a disk, that disk's image in `disk_image` (`disk::Image`), and, when it has
/// gdb's port, COM2 connected to the relay on `gdb_relay` (`gdb_relay::GdbRelay`).
pub fn arguments(
    machine: &Machine,
    ram_file: &Path,
    disk_image: Option<&Path>,
    gdb_relay: Option<u16>,
) -> Vec<OsString> {
    let ram = format!("{}M", machine.ram_mib);
    let mut args: Vec<String> = vec![
        "-machine".into(),
        "q35,memory-backend=ram".into(),
        "-accel".into(),
        machine.accel.name().into(),
        "-cpu".into(),
        // Under KVM the guest sees the host's CPU, whose SVM and nested paging KVM passes on.
        match machine.accel {
            Accel::Tcg => "qemu64,+svm,+npt".into(),
            Accel::Kvm => "host,+svm".into(),
        },
        "-m".into(),
        ram.clone(),
        "-object".into(),
        format!(
            "memory-backend-file,id=ram,size={ram},mem-path={},share=on",
            escape(ram_file)
        ),
        // `-kernel` takes its value whole (it is no list of options): a comma stays one.
        "-kernel".into(),
        machine.hv.display().to_string(),
        "-nodefaults".into(),
        "-display".into(),
        "none".into(),
        "-monitor".into(),
        "none".into(),
        "-serial".into(),
        "stdio".into(),
        "-no-reboot".into(),
        "-device".into(),
        "isa-debug-exit,iobase=0xf4,iosize=0x04".into(),
        "-fw_cfg".into(),
        format!(
            "name=opt/traplab/trace,string={}",
            machine.trace.fw_cfg_value()
        ),
    ];
    if let Some(start) = machine.control {
        let value = match start {
            ControlStart::Run => "run",
            ControlStart::Paused => "pause",
        };
        args.push("-fw_cfg".into());
        args.push(format!("name=opt/traplab/control,string={value}"));
    }
    if !machine.settings.is_empty() {
        args.push("-fw_cfg".into());
        args.push(format!(
            "name=opt/traplab/settings,string={}",
            machine.settings.join(",,")
        ));
    }
    if let Some(hz) = machine.timer_hz {
        args.push("-fw_cfg".into());
        args.push(format!("name=opt/traplab/timer-hz,string={hz}"));
    }
    if let (Some(_), Some(relay)) = (machine.gdb_port, gdb_relay) {
        // COM2 is the second -serial, connected to the relay that gdb's port leads to
        // (loopback only: whoever reaches the port controls the guest). `nodelay=on`: the
        // UART sends a byte at a time, and Nagle's algorithm would hold each small segment
        // for the peer's delayed ACK (measured: 160 ms per register read).
        args.push("-chardev".into());
        args.push(format!(
            "socket,id=gdb,host=127.0.0.1,port={relay},server=off,nodelay=on"
        ));
        args.push("-serial".into());
        args.push("chardev:gdb".into());
        args.push("-fw_cfg".into());
        args.push(format!(
            "name=opt/traplab/gdb,string={}",
            machine.gdb_domain
        ));
    }
    if let Some(kib) = machine.ring_kib {
        args.push("-fw_cfg".into());
        args.push(format!("name=opt/traplab/ring-kib,string={kib}"));
    }
    if let (Some(disk), Some(image)) = (&machine.disk, disk_image) {
        // The image as drive 0 (the master) of a legacy ATA controller at the primary IDE
        // channel's ports and IRQ (`traplab_abi::ata`).
        args.push("-drive".into());
        args.push(format!("if=none,id=disk,file={},format=raw", escape(image)));
        args.push("-device".into());
        args.push(format!(
            "isa-ide,id=ata,iobase={:#x},iobase2={:#x},irq={}",
            ata::COMMAND_BLOCK,
            ata::CONTROL,
            ata::IRQ
        ));
        args.push("-device".into());
        args.push("ide-hd,drive=disk,bus=ata.0".into());
        args.push("-fw_cfg".into());
        args.push(format!("name=opt/traplab/disk-owner,string={}", disk.owner));
    }
    args.push("-fw_cfg".into());
    args.push(format!(
        "name=opt/traplab/start,string={}",
        machine.start.fw_cfg_value()
    ));
    for (id, guest) in machine.domains() {
        let dom = format!("opt/traplab/dom{id}");
        args.push("-fw_cfg".into());
        args.push(format!(
            "name={dom}/name,string={}",
            escape_text(&guest.name)
        ));
        args.push("-fw_cfg".into());
        args.push(format!("name={dom}/image,file={}", escape(&guest.image)));
        // QEMU refuses an empty `string=` ("name, plus exactly one of file, string and
        // gen_id, are needed"): an empty command line is sent as none.
        if let Some(cmdline) = guest.cmdline.as_deref().filter(|line| !line.is_empty()) {
            args.push("-fw_cfg".into());
            args.push(format!(
                "name={dom}/cmdline,string={}",
                escape_text(cmdline)
            ));
        }
        if let Some(initrd) = &guest.initrd {
            args.push("-fw_cfg".into());
            args.push(format!("name={dom}/initrd,file={}", escape(initrd)));
        }
        if let Some(mib) = guest.memory_mib {
            args.push("-fw_cfg".into());
            args.push(format!("name={dom}/memory-mib,string={mib}"));
        }
        if let Some(input) = guest.input.as_deref().filter(|text| !text.is_empty()) {
            args.push("-fw_cfg".into());
            args.push(format!("name={dom}/input,string={}", escape_text(input)));
        }
    }
    args.extend(machine.extra_args.iter().cloned());
    args.into_iter().map(OsString::from).collect()
}

/// Where `qemu-system-x86_64` is on the PATH.
pub fn find() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(PROGRAM))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// The commands that install QEMU on Debian or Ubuntu, in order (with sudo unless we are
/// root): the package lists first, which a fresh image has not fetched yet (an install
/// without them says "Unable to locate package").
pub fn install_commands() -> Vec<Vec<String>> {
    vec![
        as_root(&["apt-get", "update"]),
        as_root(&["apt-get", "install", "-y", DEBIAN_PACKAGE]),
    ]
}

/// `words` as a command that runs as root: itself for root, else after `sudo`.
pub fn as_root(words: &[&str]) -> Vec<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let mut command: Vec<String> = Vec::new();
    if !root {
        command.push("sudo".into());
    }
    command.extend(words.iter().map(|word| word.to_string()));
    command
}

/// [`install_commands`] as one line a user can paste into a shell.
pub fn install_text() -> String {
    install_commands()
        .iter()
        .map(|command| command.join(" "))
        .collect::<Vec<_>>()
        .join(" && ")
}

/// What the hypervisor's status (QEMU's exit code through `isa-debug-exit`) means;
/// see `hv/src/power.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HvStatus {
    Done,
    NoSvm,
    SvmDisabled,
    NoNestedPaging,
    BadConfig,
    HvFault,
    Unknown(i32),
}

impl HvStatus {
    /// Decode QEMU's exit code: `isa-debug-exit` makes it `(status << 1) | 1`.
    pub fn from_qemu_exit_code(code: i32) -> Option<HvStatus> {
        if code % 2 == 0 {
            return None;
        }
        Some(match code >> 1 {
            0 => HvStatus::Done,
            1 => HvStatus::NoSvm,
            2 => HvStatus::SvmDisabled,
            3 => HvStatus::NoNestedPaging,
            4 => HvStatus::BadConfig,
            5 => HvStatus::HvFault,
            other => HvStatus::Unknown(other),
        })
    }

    pub fn explain(self) -> &'static str {
        match self {
            HvStatus::Done => "every domain ended",
            HvStatus::NoSvm => "the CPU has no AMD SVM",
            HvStatus::SvmDisabled => "SVM is disabled by firmware",
            HvStatus::NoNestedPaging => "the CPU has no nested paging",
            HvStatus::BadConfig => "the hypervisor could not use its configuration (see its log)",
            HvStatus::HvFault => "the hypervisor itself faulted: a traplab bug (see its log)",
            HvStatus::Unknown(_) => "an unknown hypervisor status",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_has_the_machine_the_ring_and_the_guests() {
        let mut machine = Machine::new(
            "/x,1/traplab-hv".into(),
            vec![Guest::new("page-fault", "/g/page,fault")],
        );
        machine.trace = TraceMode::Off;
        machine.settings = vec!["intercept-cr".into(), "lazy-memory".into()];
        let args: Vec<String> = arguments(&machine, Path::new("/dev/shm/ram"), None, None)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let joined = args.join(" ");
        assert!(joined.contains("-cpu qemu64,+svm,+npt"));
        assert!(joined.contains("-machine q35,memory-backend=ram"));
        assert!(
            joined.contains("memory-backend-file,id=ram,size=256M,mem-path=/dev/shm/ram,share=on")
        );
        assert!(
            joined.contains("-kernel /x,1/traplab-hv "),
            "-kernel is no option list: its comma stays one"
        );
        assert!(joined.contains("-device isa-debug-exit,iobase=0xf4,iosize=0x04"));
        assert!(joined.contains("name=opt/traplab/trace,string=off"));
        assert!(
            joined.contains("name=opt/traplab/dom1/name,string=page-fault"),
            "a lab's guest is domain 1: {joined}"
        );
        assert!(
            joined.contains("name=opt/traplab/dom1/image,file=/g/page,,fault"),
            "commas are doubled: {joined}"
        );
        assert!(!joined.contains("opt/traplab/dom0/"), "no control domain");
        for optional in ["cmdline", "initrd", "memory-mib"] {
            assert!(
                !joined.contains(&format!("opt/traplab/dom1/{optional}")),
                "no {optional} unless the guest has one: {joined}"
            );
        }
        assert!(joined.contains("name=opt/traplab/start,string=in-turn"));
        assert!(args.iter().any(|a| a == "-no-reboot"));
        assert!(
            joined.contains("name=opt/traplab/settings,string=intercept-cr,,lazy-memory"),
            "commas doubled inside the value"
        );
    }

    #[test]
    fn gdb_s_com2_connects_to_its_relay_on_a_loopback_port() {
        let mut machine = Machine::new(
            "/x/traplab-hv".into(),
            vec![Guest::new("hello", "/g/hello")],
        );
        machine.gdb_port = Some(2159);
        let args: Vec<String> = arguments(&machine, Path::new("/dev/shm/ram"), None, Some(40123))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let joined = args.join(" ");
        assert!(
            joined
                .contains("-chardev socket,id=gdb,host=127.0.0.1,port=40123,server=off,nodelay=on")
        );
        // COM1 is the first -serial (the log), COM2 the second (gdb).
        let serials: Vec<&String> = args
            .iter()
            .zip(args.iter().skip(1))
            .filter(|(a, _)| *a == "-serial")
            .map(|(_, b)| b)
            .collect();
        assert_eq!(serials, ["stdio", "chardev:gdb"]);
        assert!(
            joined.contains("name=opt/traplab/gdb,string=1"),
            "gdb debugs the first guest, domain 1, by default: {joined}"
        );
        machine.gdb_domain = 2;
        let args = arguments(&machine, Path::new("/dev/shm/ram"), None, Some(40123));
        assert!(
            args.iter()
                .any(|arg| arg == "name=opt/traplab/gdb,string=2")
        );
    }

    #[test]
    fn a_control_domain_is_domain_0_and_the_guests_follow() {
        let guest = |name: &str| Guest::new(name, format!("/g/{name}"));
        let mut machine = Machine::new(
            "/x/traplab-hv".into(),
            vec![guest("frontend"), guest("backend")],
        );
        machine.dom0 = Some(guest("toolstack"));
        machine.start = Start::Together;
        let numbered: Vec<(u16, &str)> = machine
            .domains()
            .into_iter()
            .map(|(id, guest)| (id, guest.name.as_str()))
            .collect();
        assert_eq!(
            numbered,
            [(0, "toolstack"), (1, "frontend"), (2, "backend")]
        );
        assert_eq!(
            machine.domain(2).map(|guest| guest.name.as_str()),
            Some("backend")
        );
        assert!(machine.domain(3).is_none());
        let args: Vec<String> = arguments(&machine, Path::new("/dev/shm/ram"), None, None)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let files: Vec<&str> = args
            .iter()
            .filter_map(|arg| arg.strip_prefix("name=opt/traplab/"))
            .filter(|arg| arg.starts_with("dom"))
            .collect();
        assert_eq!(
            files,
            [
                "dom0/name,string=toolstack",
                "dom0/image,file=/g/toolstack",
                "dom1/name,string=frontend",
                "dom1/image,file=/g/frontend",
                "dom2/name,string=backend",
                "dom2/image,file=/g/backend",
            ]
        );
        assert!(
            args.iter()
                .any(|arg| arg == "name=opt/traplab/start,string=together")
        );
    }

    /// The `opt/traplab/dom…` fw_cfg values of `machine`, in order.
    fn domain_files(machine: &Machine) -> Vec<String> {
        arguments(machine, Path::new("/dev/shm/ram"), None, None)
            .into_iter()
            .filter_map(|arg| arg.into_string().ok())
            .filter_map(|arg| arg.strip_prefix("name=opt/traplab/dom").map(str::to_string))
            .collect()
    }

    #[test]
    fn a_kernel_gets_its_command_line_its_initrd_and_its_memory() {
        let kernel = Guest {
            cmdline: Some("console=ttyS0,115200 root=/dev/ram0".into()),
            initrd: Some("/k/initrd,1.img".into()),
            memory_mib: Some(64),
            input: Some("ls, pwd\n".into()),
            ..Guest::new("vmlinux", "/k/vmlinux")
        };
        let machine = Machine::new("/x/traplab-hv".into(), vec![kernel.clone()]);
        assert_eq!(
            domain_files(&machine),
            [
                "1/name,string=vmlinux",
                "1/image,file=/k/vmlinux",
                "1/cmdline,string=console=ttyS0,,115200 root=/dev/ram0",
                "1/initrd,file=/k/initrd,,1.img",
                "1/memory-mib,string=64",
                "1/input,string=ls,, pwd\n",
            ],
            "commas doubled in the command line and the path, as in the name"
        );
        // QEMU refuses `string=` with nothing after it.
        let quiet = Guest {
            cmdline: Some(String::new()),
            initrd: None,
            memory_mib: None,
            input: None,
            ..kernel
        };
        assert_eq!(
            domain_files(&Machine::new("/x/traplab-hv".into(), vec![quiet])),
            ["1/name,string=vmlinux", "1/image,file=/k/vmlinux"],
            "an empty command line is left out"
        );
    }

    #[test]
    fn qemus_ram_holds_the_hypervisor_and_every_domains_ram() {
        let guest = |mib: Option<u32>| Guest {
            memory_mib: mib,
            ..Guest::new("k", "/k")
        };
        let fitted = |dom0: Option<Guest>, guests: Vec<Guest>| {
            let mut machine = Machine::new("/x/traplab-hv".into(), guests);
            machine.dom0 = dom0;
            machine.fit_ram();
            machine.ram_mib
        };
        assert_eq!(fitted(None, vec![guest(None)]), 256, "the floor");
        assert_eq!(
            fitted(Some(guest(None)), vec![guest(None); 7]),
            256,
            "eight domains of 16 MiB: 128 + 128"
        );
        assert_eq!(fitted(None, vec![guest(None); 9]), 128 + 9 * 16);
        assert_eq!(fitted(None, vec![guest(Some(512))]), 128 + 512);
        assert_eq!(
            fitted(Some(guest(Some(100))), vec![guest(Some(1024)), guest(None)]),
            128 + 100 + 1024 + 16,
            "dom0 counts too"
        );
        assert_eq!(
            fitted(None, vec![guest(Some(MAX_DOMAIN_MIB))]),
            128 + 2048,
            "the largest domain"
        );
        assert_eq!(
            fitted(None, vec![guest(Some(u32::MAX)), guest(None)]),
            u32::MAX
        );
        let mut large = Machine::new("/x/traplab-hv".into(), vec![guest(Some(64))]);
        large.ram_mib = 1024;
        large.fit_ram();
        assert_eq!(
            large.ram_mib, 1024,
            "a machine that is large enough stays so"
        );
        let args = arguments(&large, Path::new("/dev/shm/ram"), None, None);
        assert!(args.iter().any(
            |arg| arg == "memory-backend-file,id=ram,size=1024M,mem-path=/dev/shm/ram,share=on"
        ));
    }

    #[test]
    fn a_disk_is_an_ata_controller_at_the_legacy_ports_with_its_image_and_its_owner() {
        let mut machine = Machine::new(
            "/x/traplab-hv".into(),
            vec![Guest::new("hello", "/g/hello")],
        );
        let image = Path::new("/tmp/a,disk.img");
        let without: Vec<OsString> =
            arguments(&machine, Path::new("/dev/shm/ram"), Some(image), None);
        assert!(
            !without.iter().any(|arg| arg == "-drive"),
            "no disk in the machine: no controller, whatever the image"
        );
        machine.disk = Some(Disk {
            image: None,
            sectors: 2048,
            owner: 2,
        });
        let joined = arguments(&machine, Path::new("/dev/shm/ram"), Some(image), None)
            .into_iter()
            .map(|arg| arg.into_string().unwrap_or_default())
            .collect::<Vec<_>>()
            .join(" ");
        for expected in [
            "-drive if=none,id=disk,file=/tmp/a,,disk.img,format=raw",
            "-device isa-ide,id=ata,iobase=0x1f0,iobase2=0x3f6,irq=14",
            "-device ide-hd,drive=disk,bus=ata.0",
            "-fw_cfg name=opt/traplab/disk-owner,string=2",
        ] {
            assert!(joined.contains(expected), "{expected}: {joined}");
        }
    }

    #[test]
    fn exit_codes_decode() {
        assert_eq!(HvStatus::from_qemu_exit_code(1), Some(HvStatus::Done));
        assert_eq!(
            HvStatus::from_qemu_exit_code(7),
            Some(HvStatus::NoNestedPaging)
        );
        assert_eq!(HvStatus::from_qemu_exit_code(11), Some(HvStatus::HvFault));
        assert_eq!(HvStatus::from_qemu_exit_code(0), None);
    }

    #[test]
    fn the_install_commands_fetch_the_package_lists_then_install_the_package() {
        let commands = install_commands();
        assert_eq!(commands.len(), 2);
        assert!(commands[0].ends_with(&["apt-get".into(), "update".into()]));
        assert!(commands[1].ends_with(&[
            "apt-get".into(),
            "install".into(),
            "-y".into(),
            "qemu-system-x86".into()
        ]));
        assert!(install_text().contains("apt-get update && "));
    }
}
