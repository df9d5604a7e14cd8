//! A real Linux kernel under traplab: Debian's 6.1 cloud kernel (`linux-image-cloud-amd64`)
//! with a busybox initramfs written here (`traplab_labs::linux`), booted by the hypervisor's
//! Linux loader (`hv/src/image/linux.rs`, the 32-bit boot protocol) on the legacy PC (PIC and
//! PIT: `noapic nolapic acpi=off pci=off`), and the same kernel and initramfs under QEMU's own
//! `-kernel`. The console is the same once timestamps are gone, but for the lines listed in
//! [`DIFFERENT`], each with its reason.
//!
//! The packages are fetched from Debian's archive with `apt-get download` (no root, nothing
//! installed) into `target/debian/` the first time, as for `labs/tests/xen.rs`.

use traplab_abi::event::DomainState;
use traplab_labs::{bare_qemu, linux, machine_for};
use traplab_tracer::qemu::Guest;

mod common;

const COMMAND_LINE: &str = "console=ttyS0 reboot=t panic=-1 acpi=off pci=off noapic nolapic";
const MARKER: &str = "TRAPLAB-LINUX-MARKER";
/// The kernel's last line: busybox's `poweroff -f` without ACPI halts the machine.
const LAST_LINE: &str = "reboot: System halted";
const INIT: &str = "#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox echo TRAPLAB-LINUX-MARKER
/bin/busybox uname -a
/bin/busybox cat /proc/interrupts
/bin/busybox poweroff -f
";

/// Lines that differ, and why: a line starting with one of these is left out on both sides.
const DIFFERENT: [(&str, &str); 27] = [
    (
        "BIOS-e820:",
        "the memory map: SeaBIOS reserves RAM's last 128 KiB for its ACPI tables, the BIOS flash and the HyperTransport hole",
    ),
    ("last_pfn", "(the same: RAM ends 128 KiB later)"),
    ("RAMDISK:", "(the same)"),
    ("Faking a node", "(the same)"),
    ("NODE_DATA(0)", "(the same)"),
    ("  DMA32", "(the same)"),
    ("  node   0:", "(the same)"),
    ("Initmem setup node", "(the same)"),
    ("On node 0, zone DMA32", "(the same)"),
    ("[mem 0x10000000-", "(the same: the hole above RAM)"),
    ("Built 1 zonelists", "(the same)"),
    ("Memory: ", "(the same)"),
    (
        "DMI",
        "the machine's name in the SMBIOS tables: SeaBIOS's says QEMU, traplab's traplab (`hv/src/image/smbios.rs`)",
    ),
    (
        "Console: colour",
        "the screen as the BIOS's video mode says: no BIOS, no mode (a dummy console; ttyS0 is the console here)",
    ),
    (
        "tsc: ",
        "TSC calibration against the PIT: Linux counts at least 1000 reads of port 0x61 in 50 ms, and under traplab each is an exit of ~60 µs under TCG, so it gives up, marks the TSC unstable and calibrates its delay loop instead",
    ),
    (
        "clocksource:",
        "the clocksources and their watchdog: which one Linux trusts depends on the calibration above, and on a loaded host bare QEMU's TSC can fail the watchdog too",
    ),
    ("TSC found unstable", "(the same)"),
    ("Calibrating delay loop", "(the same)"),
    (
        "smpboot: Total of 1 processors activated",
        "(the same: BogoMIPS)",
    ),
    ("sched_clock:", "(the same)"),
    ("Unstable clock detected", "(the same)"),
    ("If you want to keep using the local clock", "(the same)"),
    ("  \"trace_clock=local\"", "(the same)"),
    ("on the kernel command line", "(the same)"),
    (
        "serio: i8042",
        "QEMU's `pc` has an i8042 keyboard controller even with -nodefaults; traplab's PC has none",
    ),
    ("i8042: No controller found", "(the same)"),
    ("input: AT Translated Set 2 keyboard", "(the same)"),
];

/// Lines whose place depends on timing (initcalls run beside the timer and printk's
/// consoles): compared as present on both sides, not by position.
const UNORDERED: [&str; 5] = [
    "audit: type=2000",
    "Trying to unpack rootfs image as initramfs",
    "Freeing initrd memory",
    "workingset: timestamp_bits",
    "rtc_cmos rtc_cmos: setting system clock to",
];

/// A console line without its printk timestamp, and with the counts of /proc/interrupts
/// (`  0:        287    XT-PIC      timer`) as `N`: they depend on how long each step took.
fn normalized(line: &str) -> String {
    let line = line.trim_end();
    let line = match line
        .strip_prefix('[')
        .and_then(|rest| rest.split_once("] "))
    {
        Some((stamp, rest)) if stamp.trim().parse::<f64>().is_ok() => rest,
        _ => line,
    };
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        [irq, count, "XT-PIC", ..] if irq.ends_with(':') && count.parse::<u64>().is_ok() => {
            format!("{irq} N XT-PIC {}", words[3..].join(" "))
        }
        _ => line.to_string(),
    }
}

/// The lines to compare in order, and those compared as a set.
fn comparable(lines: &[String]) -> (Vec<String>, Vec<String>) {
    let kept: Vec<String> = lines
        .iter()
        .map(|line| normalized(line))
        .filter(|line| !DIFFERENT.iter().any(|(start, _)| line.starts_with(start)))
        // /proc/interrupts rows of the i8042's IRQs 1 and 12: QEMU's i8042 only.
        .filter(|line| !line.starts_with("1: N XT-PIC") && !line.starts_with("12: N XT-PIC"))
        .collect();
    let (mut unordered, ordered): (Vec<String>, Vec<String>) = kept
        .into_iter()
        .partition(|line| UNORDERED.iter().any(|start| line.starts_with(start)));
    // Their values (the time of day, the audit serial) differ too: compare what they are.
    for line in &mut unordered {
        if let Some(start) = UNORDERED.iter().find(|start| line.starts_with(*start)) {
            *line = start.to_string();
        }
    }
    unordered.sort();
    (ordered, unordered)
}

#[test]
fn linux_boots_to_its_init_under_traplab_with_the_console_it_has_under_qemu() {
    let (kernel, busybox) = linux::fetched()
        .map(Ok)
        .unwrap_or_else(linux::fetch)
        .unwrap_or_else(|why| panic!("Debian's kernel and busybox: {why}"));
    let initramfs = linux::initramfs("linux-test", &busybox, INIT).expect("the initramfs");
    let bare_kernel = bare_qemu::Kernel {
        image: &kernel,
        initrd: Some(&initramfs),
        append: COMMAND_LINE,
        memory_mib: 256,
        accel: traplab_tracer::qemu::Accel::Tcg,
    };
    let (bare, _) = bare_qemu::boot_until(&bare_kernel, LAST_LINE, traplab_labs::run::TIMEOUT)
        .unwrap_or_else(|why| panic!("{why}"));

    let mut machine = machine_for(&[]);
    machine.guests = vec![Guest {
        cmdline: Some(COMMAND_LINE.into()),
        initrd: Some(initramfs.clone()),
        memory_mib: Some(256),
        ..Guest::new("linux", &kernel)
    }];
    machine.fit_ram();
    let run = common::run_machine(&machine);
    let traced = common::console(&run.events, 1);
    assert!(traced.iter().any(|line| line == MARKER), "{traced:#?}");
    assert!(
        traced
            .iter()
            .any(|line| line.starts_with("Linux (none) 6.")),
        "uname -a: {traced:#?}"
    );
    let (state, status, reason) = common::ending(&run.events, 1);
    assert_eq!(
        (state, status, reason.as_str()),
        (DomainState::Exited, Some(0), "halted with interrupts off"),
        "poweroff -f without ACPI halts: the domain ends cleanly"
    );
    let (traced_ordered, traced_unordered) = comparable(&traced);
    let (bare_ordered, bare_unordered) = comparable(&bare);
    if let Some(at) = (0..traced_ordered.len().max(bare_ordered.len()))
        .find(|&at| traced_ordered.get(at) != bare_ordered.get(at))
    {
        let around =
            |lines: &[String]| lines[at.saturating_sub(3)..(at + 3).min(lines.len())].to_vec();
        panic!(
            "the consoles differ at line {at} (of the compared ones):\ntraplab: {:#?}\nQEMU:    {:#?}",
            around(&traced_ordered),
            around(&bare_ordered)
        );
    }
    assert_eq!(traced_unordered, bare_unordered);
}

#[test]
fn console_lines_are_compared_without_timestamps_and_interrupt_counts() {
    assert_eq!(
        normalized("[    1.252186] Freeing unused kernel image"),
        "Freeing unused kernel image"
    );
    assert_eq!(
        normalized("  0:        287    XT-PIC      timer"),
        "0: N XT-PIC timer"
    );
    assert_eq!(
        normalized("NMI:          0   Non-maskable interrupts"),
        "NMI:          0   Non-maskable interrupts"
    );
}

#[test]
fn linux_on_the_apic_platform_takes_its_timer_through_the_io_apic_and_the_local_apic() {
    // Without `noapic nolapic acpi=off`: Linux reads the ACPI tables (the MADT, the FADT's
    // PM timer), routes the PIT through IO-APIC pin 2 and COM1 through pin 4, and runs its
    // local APIC timer.
    let (kernel, busybox) = linux::fetched()
        .map(Ok)
        .unwrap_or_else(linux::fetch)
        .unwrap_or_else(|why| panic!("Debian's kernel and busybox: {why}"));
    let initramfs = linux::initramfs("linux-apic-test", &busybox, INIT).expect("the initramfs");
    let mut machine = machine_for(&[]);
    machine.guests = vec![Guest {
        cmdline: Some("console=ttyS0 reboot=t panic=-1".into()),
        initrd: Some(initramfs),
        memory_mib: Some(256),
        ..Guest::new("linux", &kernel)
    }];
    machine.fit_ram();
    let run = common::run_machine(&machine);
    let traced: Vec<String> = common::console(&run.events, 1)
        .iter()
        .map(|line| normalized(line))
        .collect();
    for line in [
        "ACPI: PM-Timer IO Port: 0x608",
        "IOAPIC[0]: apic_id 0, version 32, address 0xfec00000, GSI 0-23",
        "..TIMER: vector=0x30 apic1=0 pin1=2 apic2=-1 pin2=-1",
        // The DSDT's \_SB.PCI0: Linux scans bus 0 and finds the host bridge.
        "ACPI: PCI Root Bridge [PCI0] (domain 0000 [bus 00-ff])",
        "pci_bus 0000:00: root bus resource [io  0x0000-0x0cf7 window]",
        "pci 0000:00:00.0: [8086:1237] type 00 class 0x060000",
        // COM1 and the RTC, found by their PNP IDs in the DSDT.
        "pnp: PnP ACPI: found 2 devices",
        "00:00: ttyS0 at I/O 0x3f8 (irq = 4, base_baud = 115200) is a 16550A",
        "rtc_cmos 00:01: registered as rtc0",
        MARKER,
    ] {
        assert!(
            traced.iter().any(|traced| traced == line),
            "{line:?} in {traced:#?}"
        );
    }
    let words = |start: &str| -> Vec<String> {
        let line = traced
            .iter()
            .find(|line| line.trim_start().starts_with(start))
            .unwrap_or_else(|| panic!("{start:?} in /proc/interrupts: {traced:#?}"));
        line.split_whitespace().map(str::to_string).collect()
    };
    assert_eq!(words("0:")[2..], ["IO-APIC", "2-edge", "timer"]);
    assert_eq!(words("4:")[2..], ["IO-APIC", "4-edge", "ttyS0"]);
    let local_timer: u64 = words("LOC:")[1].parse().expect("a count");
    assert!(local_timer > 0, "the local APIC timer ticked");
    // `poweroff -f` goes through ACPI: the DSDT's \_S5 gives the sleep type, and the write
    // of SLP_EN switches the machine off, as under QEMU.
    for line in [
        "ACPI: PM: (supports S0 S5)",
        "ACPI: PM: Preparing to enter system sleep state S5",
        "reboot: Power down",
    ] {
        assert!(
            traced.iter().any(|traced| traced == line),
            "{line:?} in {traced:#?}"
        );
    }
    assert_eq!(
        common::ending(&run.events, 1),
        (
            DomainState::Exited,
            Some(0),
            "ACPI soft off (S5): SLP_EN in PM1 control".into()
        )
    );
}
