//! Kernels that do not know traplab: the hypervisor as a multiboot v1 boot loader
//! (`hv/src/image/`), checked against what the kernel prints of what it was given — and the
//! same kernel under QEMU's own multiboot loader, so that the kernel is known to be a
//! multiboot kernel and not one that only traplab boots.

mod common;

use common::{console, ending, run_machine};
use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use traplab_abi::event::{Body, DomainState};
use traplab_labs::{guest_elf, machine_for};
use traplab_tracer::qemu::Guest;

const KERNEL: &str = "multiboot-hello";

/// A file of `bytes` that lives as long as the test process needs it.
fn file_with(name: &str, bytes: &[u8]) -> PathBuf {
    let path = std::env::temp_dir().join(format!("traplab-kernels-{}-{name}", std::process::id()));
    std::fs::write(&path, bytes).expect("a temporary file");
    path
}

#[test]
fn a_multiboot_kernel_gets_its_command_line_its_module_and_its_memory() {
    let initrd = file_with("initrd", b"\x00\x01ABCDEFGHIJKLMNOPQRS");
    let mut machine = machine_for(&[KERNEL]);
    machine.guests[0].cmdline = Some("console=ttyS0,115200 quiet".into());
    machine.guests[0].initrd = Some(initrd.clone());
    machine.guests[0].memory_mib = Some(64);
    machine.fit_ram();
    let run = run_machine(&machine);
    std::fs::remove_file(&initrd).ok();

    let created = run
        .events
        .iter()
        .find_map(|event| match &event.body {
            Body::Domain(domain) if domain.state == DomainState::Created => domain.reason.clone(),
            _ => None,
        })
        .expect("d1 is created");
    assert!(
        created.starts_with(
            "a multiboot kernel: 65536 KiB of RAM, entry 0x100020 in 32-bit protected mode with paging off, EAX = 0x2badb002"
        ),
        "{created}"
    );
    // What the kernel read from EAX and from the boot information, line by line: the
    // kernel's image (its long-mode page tables included) ends below 0x109000, so its
    // module starts on that page; the kernel prints a module's range to its last byte (21
    // bytes: 0x109000-0x109014).
    let lines = console(&run.events, 1);
    let vendor = lines
        .iter()
        .find(|line| line.starts_with("CPU vendor: "))
        .expect("the kernel ran CPUID");
    let clock = lines
        .iter()
        .find(|line| line.starts_with("RTC: "))
        .expect("the kernel read the RTC");
    assert_near_now(clock);
    // CPUID again under 32-bit paging, then PAE paging: the hypervisor read the instruction
    // through the kernel's tables in each format, and the CPU's answer is the same.
    let vendor_name = vendor.trim_start_matches("CPU vendor: ");
    let legacy_paging = format!("legacy paging, 4 MiB pages: CPUID says {vendor_name}");
    let pae_paging = format!("PAE paging, 2 MiB pages: CPUID says {vendor_name}");
    assert_eq!(
        console(&run.events, 1),
        [
            "multiboot-hello: started by a multiboot loader (EAX = 0x2badb002)",
            "memory: 639 KiB below 1 MiB, 64512 KiB above",
            "command line: multiboot-hello console=ttyS0,115200 quiet",
            "memory map: 4 entries",
            "  0x0000000000000000-0x000000000009fbff RAM",
            "  0x000000000009fc00-0x000000000009ffff reserved (type 2)",
            "  0x00000000000f0000-0x00000000000fffff reserved (type 2)",
            "  0x0000000000100000-0x0000000003ffffff RAM",
            "modules: 1",
            "  module 0: 0x00109000-0x00109014, initrd, first bytes: \"..ABCDEFGHIJKLMN\"",
            vendor.as_str(),
            "PCI 00:00.0 device:vendor: 0x12378086",
            "fw_cfg signature: QEMU, CPUs: 1",
            clock.as_str(),
            "timer: 3 interrupts from PIT channel 0 through the PIC, vector 0x20",
            "local APIC version: 0x00050014",
            "IO-APIC version: 0x00170020",
            "timer: 3 interrupts from the local APIC timer, vector 0x30",
            legacy_paging.as_str(),
            pae_paging.as_str(),
            "long mode: active (EFER.LMA = 1), this line from 64-bit code",
            "multiboot-hello: done",
        ]
    );
    assert_eq!(
        ending(&run.events, 1),
        (
            DomainState::Exited,
            Some(0),
            "wrote 0 to isa-debug-exit (port 0xf4)".into()
        )
    );
}

/// `RTC: 2026-12-02 07:25:06 (UTC)` shows the host's time, give or take the run's length:
/// the emulated RTC starts from the real one, which QEMU sets to the host's UTC time.
fn assert_near_now(line: &str) {
    let fields: Vec<u64> = line
        .trim_start_matches("RTC: ")
        .trim_end_matches(" (UTC)")
        .split(['-', ' ', ':'])
        .map(|field| {
            field
                .parse()
                .unwrap_or_else(|_| panic!("a number in {line:?}"))
        })
        .collect();
    let [year, month, day, hour, minute, second] = fields[..] else {
        panic!("a date and a time in {line:?}");
    };
    // Days from 1970-01-01 to the date (the proleptic Gregorian calendar).
    let days_to = |year: u64, month: u64, day: u64| {
        let (y, m) = if month <= 2 {
            (year - 1, month + 12)
        } else {
            (year, month)
        };
        365 * y + y / 4 - y / 100 + y / 400 + (153 * (m - 3) + 2) / 5 + day - 719_469
    };
    let shown = days_to(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    assert!(
        shown.abs_diff(now) < 600,
        "{line:?} is {} s from the host's time",
        shown.abs_diff(now)
    );
}

#[test]
fn a_file_that_is_no_kernel_is_refused_with_what_it_is_and_the_next_domain_runs() {
    let junk = file_with("junk", b"MZ\x90\x00\x03\x00\x00\x00\x04\x00");
    // A bzImage header without its protected-mode part: the loader says what is missing.
    let mut bzimage = vec![0u8; 0x400];
    bzimage[0x1f1] = 1; // one setup sector: the protected-mode part would start at 0x400
    bzimage[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    // The jump over the header: it ends at 0x268, after init_size, as a 2.15 header does.
    bzimage[0x200..0x202].copy_from_slice(&[0xeb, 0x66]);
    bzimage[0x202..0x206].copy_from_slice(b"HdrS");
    bzimage[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    bzimage[0x211] = 1; // LOADED_HIGH
    let linux = file_with("bzImage", &bzimage);
    // A lab guest's ELF whose first loadable segment has more bytes in the file than in
    // memory (p_filesz > p_memsz): the ELF gABI forbids it, and the extra bytes would land
    // past the segment, where the guest is told its free memory starts.
    let mut elf = std::fs::read(guest_elf("hello")).expect("the hello guest is built");
    let u16_at = |elf: &[u8], at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    let u64_at =
        |elf: &[u8], at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().expect("8 bytes"));
    let (phoff, phentsize, phnum) = (
        u64_at(&elf, 0x20) as usize,
        u16_at(&elf, 0x36),
        u16_at(&elf, 0x38),
    );
    let load = (0..phnum)
        .map(|index| phoff + index * phentsize)
        .find(|&header| {
            elf[header..header + 4] == 1u32.to_le_bytes() && u64_at(&elf, header + 32) > 0
        })
        .expect("a PT_LOAD with file bytes");
    let filesz = u64_at(&elf, load + 32);
    elf[load + 40..load + 48].copy_from_slice(&(filesz - 1).to_le_bytes());
    let oversized = file_with("oversized", &elf);
    let mut machine = machine_for(&["hello"]);
    machine.guests.insert(0, Guest::new("junk", &junk));
    machine.guests.insert(1, Guest::new("linux", &linux));
    machine
        .guests
        .insert(2, Guest::new("oversized", &oversized));
    let run = run_machine(&machine);
    std::fs::remove_file(&junk).ok();
    std::fs::remove_file(&linux).ok();
    std::fs::remove_file(&oversized).ok();

    let (state, _, reason) = ending(&run.events, 1);
    assert_eq!(state, DomainState::Killed);
    assert_eq!(
        reason,
        "cannot load junk: not a kernel image traplab knows: no multiboot header in its first 8 KiB, not an ELF file, not a Linux bzImage (it starts with 4d 5a 90 00 03 00 00 00 …)"
    );
    let (state, _, reason) = ending(&run.events, 2);
    assert_eq!(state, DomainState::Killed);
    assert_eq!(
        reason,
        "cannot load linux: a Linux bzImage, but the file ends before its protected-mode kernel (after 1 setup sectors)"
    );
    let (state, _, reason) = ending(&run.events, 3);
    assert_eq!(state, DomainState::Killed);
    assert!(
        reason.starts_with("cannot load oversized: ")
            && reason.ends_with("than in memory (p_filesz > p_memsz)"),
        "{reason}"
    );
    // The hypervisor lives on: the fourth domain runs as ever.
    assert_eq!(ending(&run.events, 4).1, Some(0));
    assert_eq!(console(&run.events, 4), ["Hello from a traplab guest!"]);
}

#[test]
fn a_kernel_s_cr0_write_that_a_cpu_refuses_is_a_gp_not_a_failed_vmrun() {
    // NW without CD: TCG would take the MOV and the next VMRUN would refuse the state
    // (VMEXIT_INVALID, the domain killed); the hypervisor checks every domain's CR0 writes
    // and raises #GP(0), which the kernel's own handler catches.
    let run = run_machine(&machine_for(&["bad-cr0-kernel"]));
    let (exit_at, _) = run
        .events
        .iter()
        .enumerate()
        .find_map(|(index, event)| match &event.body {
            Body::Exit(exit) if exit.reason == "CR0_SEL_WRITE" => Some((index, exit)),
            _ => None,
        })
        .expect("the CR0 write exits");
    assert!(
        matches!(&run.events[exit_at + 1].body, Body::Decide(decide) if decide.why.contains("sets NW without CD: the CPU would raise #GP(0)")),
        "{:?}",
        run.events[exit_at + 1]
    );
    assert!(
        matches!(&run.events[exit_at + 2].body, Body::Inject(inject) if inject.vector == 13 && inject.error_code == Some(0))
    );
    assert_eq!(
        console(&run.events, 1),
        ["bad-cr0-kernel: #GP: MOV CR0 with NW and not CD was refused"]
    );
    assert_eq!(ending(&run.events, 1).1, Some(0));
}

/// Run `kernel` under QEMU's own multiboot loader (`-kernel`), with `args` after it, the
/// isa-debug-exit device, and COM1 on QEMU's stdin and stdout: `input` is what COM1 receives
/// (then end of file). Its exit status and output, or a failure after `bound`.
///
/// Not `-nographic`: with it QEMU tells SeaBIOS to make COM1 its console (the fw_cfg file
/// `etc/sercon-port`), and SeaBIOS prints its banner there and reads keys from it — the first
/// byte of `input` would go to the firmware, not to the kernel.
fn under_qemus_loader(
    kernel: &Path,
    args: &[&OsStr],
    input: &[u8],
    bound: Duration,
) -> (i32, String) {
    let name = kernel.file_name().unwrap_or_default().to_string_lossy();
    let output_file = std::env::temp_dir().join(format!(
        "traplab-kernels-{}-{name}-qemu.out",
        std::process::id()
    ));
    let output = std::fs::File::create(&output_file).expect("a temporary file");
    let mut qemu = Command::new("qemu-system-x86_64")
        .args([
            "-nodefaults",
            "-machine",
            "pc",
            "-accel",
            "tcg",
            "-display",
            "none",
            "-m",
            "64",
        ])
        .args([
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=4",
            "-serial",
            "stdio",
        ])
        .arg("-kernel")
        .arg(kernel)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(output)
        .stderr(Stdio::inherit())
        .spawn()
        .expect("QEMU starts (the tests need qemu-system-x86_64)");
    // The input fits in the pipe's buffer: the write does not wait for QEMU to read it.
    // Dropping our end is the end of file.
    let mut stdin = qemu.stdin.take().expect("QEMU's stdin is a pipe");
    stdin
        .write_all(input)
        .expect("QEMU's stdin takes the input");
    drop(stdin);
    // Wait for QEMU to end, with a bound: a kernel that hangs fails the test, never blocks it.
    let started = Instant::now();
    let status = loop {
        if let Some(status) = qemu.try_wait().expect("QEMU's status") {
            break status;
        }
        if started.elapsed() > bound {
            qemu.kill().ok();
            qemu.wait().ok();
            panic!("the kernel did not end within {bound:?} under QEMU's loader");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&output_file).unwrap_or_default();
    std::fs::remove_file(&output_file).ok();
    (status.code().unwrap_or(-1), text)
}

#[test]
fn the_same_kernel_boots_under_qemus_own_multiboot_loader() {
    let initrd = file_with("qemu-initrd", b"module bytes for QEMU");
    let (status, text) = under_qemus_loader(
        &guest_elf(KERNEL),
        &[
            "-append".as_ref(),
            "hello world".as_ref(),
            "-initrd".as_ref(),
            initrd.as_os_str(),
        ],
        b"",
        traplab_labs::run::TIMEOUT,
    );
    std::fs::remove_file(&initrd).ok();
    // isa-debug-exit: QEMU exits with (value << 1) | 1, so the kernel's 0 is 1.
    assert_eq!(status, 1, "the kernel wrote 0 to port 0xf4:\n{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"multiboot-hello: started by a multiboot loader (EAX = 0x2badb002)"),
        "{text}"
    );
    // QEMU puts the kernel's path first on the command line, as traplab puts its name.
    assert!(
        lines.iter().any(|line| line.starts_with("command line: ")
            && line.ends_with("multiboot-hello hello world")),
        "{text}"
    );
    assert!(lines.contains(&"modules: 1"), "{text}");
    // The platform's PCI host bridge is the one of QEMU's `pc` machine: an Intel 440FX.
    assert!(
        lines.contains(&"PCI 00:00.0 device:vendor: 0x12378086"),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line.ends_with("first bytes: \"module bytes for\"")),
        "{text}"
    );
    // Its fw_cfg says what the hypervisor's emulation of it says; its RTC shows the host's
    // time; its PIT and PICs, and its local APIC, interrupt as the hypervisor's models do.
    assert!(lines.contains(&"fw_cfg signature: QEMU, CPUs: 1"), "{text}");
    let clock = lines
        .iter()
        .find(|line| line.starts_with("RTC: "))
        .expect("the kernel read the RTC");
    assert_near_now(clock);
    assert!(
        lines.contains(&"timer: 3 interrupts from PIT channel 0 through the PIC, vector 0x20"),
        "{text}"
    );
    // Its local APIC and IO-APIC are the versions the hypervisor's models give.
    for line in [
        "local APIC version: 0x00050014",
        "IO-APIC version: 0x00170020",
        "timer: 3 interrupts from the local APIC timer, vector 0x30",
        // Its own way into long mode: on QEMU's TCG as under the hypervisor.
        "long mode: active (EFER.LMA = 1), this line from 64-bit code",
    ] {
        assert!(lines.contains(&line), "{line:?} in:\n{text}");
    }
    // Its CPUID under 32-bit paging and under PAE paging says what it said without.
    let vendor = lines
        .iter()
        .find_map(|line| line.strip_prefix("CPU vendor: "))
        .expect("the kernel ran CPUID");
    for paging in ["legacy paging, 4 MiB pages", "PAE paging, 2 MiB pages"] {
        let line = format!("{paging}: CPUID says {vendor}");
        assert!(lines.contains(&line.as_str()), "{line:?} in:\n{text}");
    }
    assert_eq!(lines.last(), Some(&"multiboot-hello: done"), "{text}");
}

#[test]
fn serial_echo_reads_its_input_by_interrupt_under_qemus_own_loader() {
    // QEMU's own 16550 and 8259A: the kernel's receive path (IER, OUT2, IRQ 4 at vector
    // 0x24, RBR while LSR.DR, the EOI) works on the real models, not only on traplab's. The
    // bytes are all there before the kernel starts; `\r\n` and a bare `\n` both end a line,
    // the empty line between them is none, and only the first 64 bytes of a line are kept.
    let long = "x".repeat(70);
    let input = format!("hello\r\n\n{long}\nquit\n");
    let (status, text) = under_qemus_loader(
        &guest_elf("serial-echo"),
        &[],
        input.as_bytes(),
        traplab_labs::run::TIMEOUT,
    );
    assert_eq!(status, 1, "the kernel wrote 0 to port 0xf4:\n{text}");
    let kept = format!("you typed: {} (64 bytes)", &long[..64]);
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [
            "serial-echo: type a line (quit ends)",
            "you typed: hello (5 bytes)",
            kept.as_str(),
            "you typed: quit (4 bytes)",
            // QEMU's UART as reset leaves it, FIFOs off: IIR bits 7:6 clear.
            "the first serial interrupt: IIR = 0x04 (received data available)",
            "serial-echo: done",
        ]
    );
}

#[test]
fn serial_echo_reads_the_same_input_by_irq_4_under_traplab() {
    // The same kernel and input as under QEMU's own loader above, typed ahead on the
    // domain's COM1 (`--input`): the same lines, taken through traplab's 16550, its PIC's
    // IRQ 4 (request, in service, EOI) and the vector the hypervisor injects.
    let long = "x".repeat(70);
    let mut machine = machine_for(&["serial-echo"]);
    machine.guests[0].input = Some(format!("hello\r\n\n{long}\nquit\n"));
    let run = run_machine(&machine);
    let kept = format!("you typed: {} (64 bytes)", &long[..64]);
    assert_eq!(
        console(&run.events, 1),
        [
            "serial-echo: type a line (quit ends)",
            "you typed: hello (5 bytes)",
            kept.as_str(),
            "you typed: quit (4 bytes)",
            "the first serial interrupt: IIR = 0x04 (received data available)",
            "serial-echo: done",
        ]
    );
    assert_eq!(ending(&run.events, 1).1, Some(0));
    let injected_at_0x24 = run
        .events
        .iter()
        .filter(|event| matches!(&event.body, Body::Inject(inject) if inject.vector == 0x24))
        .count();
    assert!(
        injected_at_0x24 >= 3,
        "at least one interrupt for each of the three lines: {injected_at_0x24}"
    );
}
