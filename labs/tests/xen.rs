//! An unmodified kernel nobody here wrote: the Xen hypervisor (Debian's
//! `xen-hypervisor-4.17-amd64`, a multiboot v1 kernel) boots under traplab as under QEMU's
//! own `-kernel`, and prints the same console lines but for the ones listed in
//! [`DIFFERENCES`], each with its reason.
//!
//! Xen is given a dom0 it cannot build (`multiboot-hello`, which has no Xen ELF notes), so
//! it boots the whole platform — memory map, ACPI, local APIC, IO-APIC, PIT calibration, the
//! PM timer, the timer check through the IO-APIC, an NMI it sends itself, its scheduler —
//! and then stops at a panic, "Could not construct domain 0", and halts (`noreboot`). Its
//! `no-real-mode` option keeps it from calling BIOS services, which traplab does not have.
//!
//! The package is fetched from Debian's archive with `apt-get download` (no root, nothing
//! installed) into `target/xen/` the first time; CI and a fresh machine need apt and the
//! network to Debian's mirror, as for QEMU.

use std::path::{Path, PathBuf};
use std::process::Command;
use traplab_labs::{bare_qemu, guest_elf, machine_for};
use traplab_tracer::qemu::Guest;

mod common;

const PACKAGE: &str = "xen-hypervisor-4.17-amd64";
const COMMAND_LINE: &str = "console=com1 com1=115200,8n1 no-real-mode noreboot loglvl=all";
/// Xen's last line before it halts for good.
const LAST_LINE: &str = "(XEN) Manual reset required ('noreboot' specified)";

/// Lines that differ between the two PCs, and why: a line matching one of these prefixes (or
/// containing it, for those starting with `*`) is left out on both sides.
const DIFFERENCES: [(&str, &str); 16] = [
    (
        "(XEN) Bootloader: ",
        "the multiboot loader's name: `qemu` or `traplab`",
    ),
    (
        "(XEN)  [0000000000100000, ",
        "the memory map: SeaBIOS reserves RAM's last 128 KiB for its ACPI tables, the BIOS flash and the HyperTransport hole; traplab's tables are in the F segment",
    ),
    ("(XEN)  [000000000ffe0000, ", "(the same)"),
    ("(XEN)  [00000000fffc0000, ", "(the same)"),
    ("(XEN)  [000000fd00000000, ", "(the same)"),
    (
        "(XEN) New Xen image base address: ",
        "(the same: it follows the end of RAM)",
    ),
    ("(XEN) System RAM: ", "(the same)"),
    ("(XEN) Faking a node at ", "(the same)"),
    (
        "(XEN) ACPI: ",
        "the ACPI tables: SeaBIOS's (RSDP revision 0, an RSDT, a DSDT with AML, WAET, overrides for the PCI interrupts 5, 10, 11) and traplab's (revision 2, an XSDT, a DSDT with \\_S5, the PCI host bridge, COM1 and the RTC)",
    ),
    (
        "(XEN) found SMP MP-table at ",
        "SeaBIOS also writes an MP table; traplab only ACPI's MADT",
    ),
    (
        "*levelling caps",
        "Xen probes the CPUID-masking MSRs of a family 0Fh AMD CPU with a guarded RDMSR: QEMU's TCG reads an unknown MSR as 0, traplab raises #GP as a CPU without them does",
    ),
    ("(XEN) Fam 0xf, model 0x6b level ", "(the same)"),
    ("(XEN) If not running virtualised", "(the same)"),
    (
        "(XEN) CPU0: ",
        "machine checks: QEMU's MCG_CAP has banks, traplab's CPU has none (`exit/msr.rs`)",
    ),
    (
        "(XEN) Detected ",
        "the TSC's rate as Xen measures it against the platform timer: a little different every run",
    ),
    (
        "*TSC only partially writable",
        "QEMU's TCG keeps 32 bits of a TSC write; traplab's TSC offset takes all 64, as an AMD CPU does",
    ),
];

/// Lines only one side prints, for a reason given by a line above: machine-check polling
/// (QEMU's banks), and cpuidle's remark on the HPET, which Xen makes only without MCE.
const ONE_SIDED: [&str; 3] = [
    "(XEN) mcheck_poll: Machine check polling timer started.",
    "(XEN) CPUIDLE: disabled due to no HPET. Force enable with 'cpuidle'.",
    // The 24-bit PM timer wraps every 4.7 s; Xen reads it about twice as often. On a loaded
    // host its domain can be off the CPU longer than that, and Xen says so (seen with three
    // of these tests beside a CI run).
    "(XEN) Platform timer appears to have unexpectedly wrapped 1 times.",
];

/// Xen's image: Debian's package, fetched once into `target/xen/` and unpacked (its
/// `boot/xen-4.17-amd64.gz` is a gzipped 32-bit ELF with a multiboot header).
fn xen_image() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/xen");
    let image = dir.join("xen-4.17");
    if image.exists() {
        return image;
    }
    std::fs::create_dir_all(&dir).expect("target/xen");
    let fetched = Command::new("apt-get")
        .args(["download", PACKAGE])
        .current_dir(&dir)
        .status();
    assert!(
        fetched.is_ok_and(|status| status.success()),
        "`apt-get download {PACKAGE}` (in {}) failed: this test needs Debian's Xen package from the archive",
        dir.display()
    );
    let deb = std::fs::read_dir(&dir)
        .expect("target/xen")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|extension| extension == "deb"))
        .expect("the package file");
    let unpacked = dir.join("package");
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&unpacked)
        .status()
        .expect("dpkg-deb runs");
    assert!(status.success(), "dpkg-deb -x {}", deb.display());
    let gzipped = unpacked.join("boot/xen-4.17-amd64.gz");
    let output = Command::new("gzip")
        .arg("-dc")
        .arg(&gzipped)
        .output()
        .expect("gzip runs");
    assert!(output.status.success(), "gzip -dc {}", gzipped.display());
    let partial = dir.join("xen-4.17.partial");
    std::fs::write(&partial, &output.stdout).expect("the image");
    std::fs::rename(&partial, &image).expect("the image");
    image
}

/// The lines both PCs should print alike (trailing blanks aside: QEMU's side is read from
/// its output file, traplab's from console events that keep them).
fn comparable(lines: &[String]) -> Vec<&str> {
    lines
        .iter()
        .map(|line| line.trim_end())
        .filter(|line| {
            !DIFFERENCES
                .iter()
                .any(|(start, _)| match start.strip_prefix('*') {
                    Some(part) => line.contains(part),
                    None => line.starts_with(start),
                })
                && !ONE_SIDED.contains(line)
        })
        .collect()
}

#[test]
fn xen_boots_under_traplab_to_the_same_lines_as_under_qemus_own_loader() {
    let xen = xen_image();
    let dom0 = guest_elf("multiboot-hello");
    // SeaBIOS prints first, and escape sequences; Xen's lines start with "(XEN)".
    let bare_kernel = bare_qemu::Kernel {
        image: &xen,
        initrd: Some(&dom0),
        append: COMMAND_LINE,
        memory_mib: 256,
        accel: traplab_tracer::qemu::Accel::Tcg,
    };
    let (console, _) = bare_qemu::boot_until(&bare_kernel, LAST_LINE, traplab_labs::run::TIMEOUT)
        .unwrap_or_else(|why| panic!("{why}"));
    let bare: Vec<String> = console
        .iter()
        .filter_map(|line| {
            line.find("(XEN)")
                .map(|at| line[at..].trim_end().to_string())
        })
        .collect();

    let mut machine = machine_for(&[]);
    machine.guests = vec![Guest {
        cmdline: Some(COMMAND_LINE.into()),
        initrd: Some(dom0.clone()),
        memory_mib: Some(256),
        ..Guest::new("xen", &xen)
    }];
    machine.fit_ram();
    let run = common::run_machine(&machine);
    let traced = common::console(&run.events, 1);
    assert_eq!(
        traced.last().map(String::as_str),
        Some(LAST_LINE),
        "{traced:#?}"
    );
    let (state, _, reason) = common::ending(&run.events, 1);
    assert_eq!(
        (state, reason.as_str()),
        (
            traplab_abi::event::DomainState::Exited,
            "halted with interrupts off"
        ),
        "Xen halts for good after its panic, as on a PC"
    );
    // What Xen found on the way: the PC's ACPI tables, its timers, its interrupt routing.
    for line in [
        "(XEN) ACPI: IOAPIC (id[0x00] address[0xfec00000] gsi_base[0])",
        "(XEN) Platform timer is 3.580MHz ACPI PM Timer",
        "(XEN) ..TIMER: vector=0xF0 apic1=0 pin1=2 apic2=-1 pin2=-1",
        "(XEN) Could not construct domain 0",
    ] {
        assert!(
            traced.iter().any(|traced| traced == line),
            "{line:?} in {traced:#?}"
        );
    }
    let (traced, bare) = (comparable(&traced), comparable(&bare));
    if let Some(at) = (0..traced.len().max(bare.len())).find(|&at| traced.get(at) != bare.get(at)) {
        let around =
            |lines: &[&str]| lines[at.saturating_sub(3)..(at + 3).min(lines.len())].join("\n  ");
        panic!(
            "Xen's lines differ at line {at} (of the compared ones):\ntraplab:\n  {}\nQEMU:\n  {}",
            around(&traced),
            around(&bare)
        );
    }
}
