//! gdb attached to a live lab through the hypervisor's gdbstub: real `traplab gdb`, real
//! QEMU, real gdb (Debian's) in batch mode, raw sockets for what gdb would never send, and
//! `traplab run` in a real terminal (tmux) for gdb beside the terminal UI.
//!
//! Every wait has a bound and waits for a condition, never for a time: the machine is
//! shared and loaded, and a test that fails under load is a defect.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A lab started with `traplab gdb`, its guest stopped, waiting for gdb.
struct Lab {
    child: Child,
    port: u16,
    elf: PathBuf,
    /// The trace traplab prints, read as it comes (a full pipe would stall the lab): what
    /// has come so far, and the reader, which ends with the trace.
    trace_so_far: std::sync::Arc<std::sync::Mutex<String>>,
    trace: Option<std::thread::JoinHandle<()>>,
}

/// gdb's loop that steps (at most 2,000 instructions, after `set $steps = 0` and `set
/// language c`) until the guest is at its first CPUID (`0f a2`) and has not run it.
const STEP_TO_THE_FIRST_CPUID: &str = "while *(unsigned short *)$pc != 0xa20f && $steps < 2000\n stepi\n set $steps = $steps + 1\nend";

/// A raw connection to gdb's `port` (QEMU opens it a moment after it starts).
fn connect(port: u16) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(socket) => return socket,
            Err(error) if Instant::now() > deadline => panic!("the gdb port: {error}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The port in a `target remote 127.0.0.1:PORT` (traplab's gdb command line) or a
/// `target remote :PORT` (the terminal UI's title) that `text` names: the tests ask for port
/// 0, a free one of the system's choosing, as tests picking ports ahead of time raced each
/// other for them.
fn attach_port(text: &str) -> Option<u16> {
    let (_, after) = text.split_once("target remote ")?;
    let after = after
        .strip_prefix("127.0.0.1")
        .unwrap_or(after)
        .strip_prefix(':')?;
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

impl Lab {
    fn start(lab: &str) -> Lab {
        Lab::start_with(&[lab])
    }

    /// `traplab gdb ARGS… --port 0`: on a free port, which its gdb command line names.
    fn start_with(arguments: &[&str]) -> Lab {
        let mut child = Command::new(env!("CARGO_BIN_EXE_traplab"))
            .arg("gdb")
            .args(arguments)
            .args(["--port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("traplab runs");
        // The attach hint is the first thing on stderr: "  gdb -q ELF -ex 'target remote …'".
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let mut attach = None;
        let mut before = String::new();
        let mut line = String::new();
        while attach.is_none() && stderr.read_line(&mut line).is_ok_and(|read| read > 0) {
            if let Some(rest) = line.trim().strip_prefix("gdb -q ") {
                // The first such line is the one: no other comes while the guest waits.
                let elf = rest.split_whitespace().next().map(PathBuf::from);
                match elf.zip(attach_port(rest)) {
                    Some(found) => attach = Some(found),
                    None => panic!("no guest ELF and port in the gdb command line: {line}"),
                }
            } else {
                before.push_str(&line);
            }
            line.clear();
        }
        // Keep draining stderr so that traplab never blocks on it.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        let Some((elf, port)) = attach else {
            panic!("traplab gdb printed no gdb command line; its stderr:\n{before}");
        };
        assert!(elf.is_file(), "{} is the guest ELF", elf.display());
        let stdout = child.stdout.take().expect("stdout");
        let trace_so_far = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let so_far = std::sync::Arc::clone(&trace_so_far);
        let trace = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut so_far = so_far.lock().expect("the trace");
                so_far.push_str(&line);
                so_far.push('\n');
            }
        });
        Lab {
            child,
            port,
            elf,
            trace_so_far,
            trace: Some(trace),
        }
    }

    /// Wait (a minute at most) until the trace printed so far shows what `wanted` looks for.
    fn wait_for_trace(&self, what: &str, wanted: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let so_far = self.trace_so_far.lock().expect("the trace").clone();
            if wanted(&so_far) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "waited for {what}; the trace so far:\n{so_far}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The events of the trace (started with `--json`).
    fn events(trace: &str) -> Vec<traplab_abi::event::Event> {
        trace
            .lines()
            .map(|line| traplab_tracer::json::from_line(line).expect("a JSON Lines trace"))
            .collect()
    }

    /// A raw connection to the gdb port.
    fn connect(&self) -> TcpStream {
        connect(self.port)
    }

    /// Run gdb in batch mode with these commands; its whole output.
    fn gdb(&self, commands: &[&str]) -> String {
        Gdb::start(&self.elf, self.port, commands).output()
    }

    /// Wait for traplab to end; its exit status and the trace it printed.
    fn finish(mut self) -> (i32, String) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                self.trace
                    .take()
                    .expect("the trace reader")
                    .join()
                    .expect("the trace");
                let trace = self.trace_so_far.lock().expect("the trace").clone();
                return (status.code().unwrap_or(-1), trace);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the lab did not end after gdb let it go");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// gdb in batch mode, running a script (a file, so that `while` … `end` blocks work) that
/// starts with `target remote`.
struct Gdb {
    child: Child,
    script: PathBuf,
    /// Its stdout and stderr, read as they come.
    output: std::sync::mpsc::Receiver<String>,
}

impl Gdb {
    fn start(elf: &std::path::Path, port: u16, commands: &[&str]) -> Gdb {
        let script = std::env::temp_dir().join(format!(
            "traplab-gdb-test-{}-{port}.gdb",
            std::process::id()
        ));
        let mut text = format!("target remote 127.0.0.1:{port}\n");
        for line in commands {
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write(&script, text).expect("write the gdb script");
        let mut child = Command::new("gdb")
            .args(["-q", "-batch", "-nx"])
            .arg(elf)
            .arg("-x")
            .arg(&script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gdb runs (apt-get install gdb)");
        let (sender, output) = std::sync::mpsc::channel();
        for mut stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let sender = sender.clone();
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = stream.read_to_string(&mut text);
                let _ = sender.send(text);
            });
        }
        Gdb {
            child,
            script,
            output,
        }
    }

    /// Wait for gdb to end (it ends with its script; a guest that never stops again keeps
    /// it waiting: killed after two minutes); what it printed.
    fn output(mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        let finished = loop {
            if self.child.try_wait().expect("wait for gdb").is_some() {
                break true;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break false;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let text: String = (0..2)
            .filter_map(|_| self.output.recv_timeout(Duration::from_secs(10)).ok())
            .collect();
        eprintln!("--- gdb said:\n{text}---");
        assert!(finished, "gdb did not finish its script in two minutes");
        text
    }
}

impl Drop for Gdb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.script);
    }
}

/// What gdb prints when the stub does not answer in time (its `remotetimeout`).
const GDB_TIMED_OUT: [&str; 3] = [
    "Ignoring packet error",
    "timeout",
    "Remote replied unexpectedly",
];

fn assert_answered_in_time(output: &str) {
    for symptom in GDB_TIMED_OUT {
        assert!(
            !output.contains(symptom),
            "gdb waited in vain for an answer ({symptom:?}):\n{output}"
        );
    }
}

/// The flow lab `lab_id`'s catalogue expects is in `events` (a run with gdb, `how`).
fn assert_the_labs_flow(lab_id: &str, events: &[traplab_abi::event::Event], how: &str) {
    let catalogue = traplab_labs::find(lab_id)
        .expect("the catalogue")
        .expect("the lab");
    let symbols =
        traplab_tracer::symbols::Symbols::load(&traplab_labs::guest_elf(&catalogue.guests[0]))
            .expect("symbols");
    if let Err(mismatch) = traplab_labs::expect::check(&catalogue.expect, events, &symbols) {
        panic!("{lab_id} {how}: {mismatch}");
    }
}

/// The value gdb's `info registers NAME` prints in hex, e.g. `cr3            0x10000 …`.
fn register(output: &str, name: &str) -> Option<u64> {
    output.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next()? == name)
            .then(|| u64::from_str_radix(words.next()?.trim_start_matches("0x"), 16).ok())?
    })
}

#[test]
fn registers_memory_a_breakpoint_in_the_pf_handler_and_detach() {
    let lab = Lab::start("page-fault");
    let output = lab.gdb(&[
        "info registers rip cr0 cr2 cr3 cr4 efer",
        "x/2xb $pc",
        "break page_fault::page_fault",
        "continue",
        "info registers cr2",
        "bt",
        // Enough traps back to reach the #PF, however many timer ticks a loaded machine
        // put between it and the breakpoint.
        "monitor traps 16",
        "detach",
    ]);
    // Stopped at the guest's first instruction: the ELF entry point, 2 MiB.
    assert!(output.contains("in _start ()"), "stopped at _start");
    assert_eq!(register(&output, "rip"), Some(0x20_0000));
    // Paging and protection on (CR0.PG|PE), the boot page tables at 0x10000, long mode.
    assert_eq!(
        register(&output, "cr0").map(|cr0| cr0 & 0x8000_0001),
        Some(0x8000_0001)
    );
    assert_eq!(register(&output, "cr3"), Some(0x10000));
    assert_eq!(
        register(&output, "efer").map(|efer| efer & 0x500),
        Some(0x500),
        "EFER.LME|LMA"
    );
    // `_start` begins with `lea …(%rip), %rsp`: 48 8d.
    assert!(
        output.contains("0x48\t0x8d"),
        "x/2xb reads guest memory through its page tables"
    );
    assert!(
        output.contains("Breakpoint 1, "),
        "the breakpoint in the #PF handler hit"
    );
    // In the handler, CR2 holds the faulting address, the unmapped 1 GiB.
    let cr2 = output
        .lines()
        .rfind(|line| line.starts_with("cr2"))
        .and_then(|line| register(line, "cr2"));
    assert_eq!(cr2, Some(0x4000_0000));
    assert!(
        output.contains("page_fault::page_fault (frame="),
        "bt shows the handler"
    );
    assert!(
        output.contains("traps::trap_entry"),
        "bt walks back to the IDT entry"
    );
    assert!(
        output.contains("EXCP_PF at 0x"),
        "monitor traps lists the #PF exit"
    );
    assert!(
        output.contains("reflect: the guest owns its exceptions (#PF page fault)"),
        "and its decision"
    );
    assert!(
        output.contains("is gdb's breakpoint"),
        "gdb's own int3 is told apart"
    );
    assert!(output.contains("Inferior 1 (process 1) detached"));
    let (status, trace) = lab.finish();
    assert_eq!(status, 0, "after detach the guest runs to its end");
    assert!(trace.contains("page-fault exited with status 0"));
}

#[test]
fn gdb_attaches_to_a_multiboot_kernel_at_its_entry_and_breaks_in_its_apic_timer_handler() {
    // A kernel that does not know traplab: gdb gets the kernel file's symbols, the vCPU
    // stopped at the multiboot entry (32-bit protected mode, paging off), a breakpoint in the
    // local APIC's timer handler, and the end the kernel writes to isa-debug-exit.
    let kernel = traplab_labs::guest_elf("multiboot-hello");
    let lab = Lab::start_with(&["--kernel", kernel.to_str().expect("a UTF-8 path")]);
    assert_eq!(lab.elf, kernel, "gdb is told to load the kernel file");
    let output = lab.gdb(&[
        "info registers rip",
        "break apic_timer_interrupt",
        "continue",
        "info registers rip",
        "delete",
        "continue",
    ]);
    assert_answered_in_time(&output);
    assert!(
        output.contains("<multiboot_entry>"),
        "stopped at the entry:\n{output}"
    );
    assert!(
        output.contains("Breakpoint 1, ") && output.contains("in apic_timer_interrupt ()"),
        "{output}"
    );
    assert!(output.contains("exited normally"), "{output}");
    let (status, trace) = lab.finish();
    let last: Vec<&str> = trace.lines().rev().take(20).collect();
    assert_eq!(status, 0, "the trace ends with {last:#?}");
}

/// The hypervisor leaves a guest's x87 registers and MXCSR in the CPU across its exits
/// (`hv/src/svm/fpu.rs`); gdb, stopped at one of those exits, still reads the guest's
/// values, and what it writes is what the guest finds when it reads them back.
#[test]
fn gdb_reads_and_writes_the_x87_and_sse_state_the_cpu_holds_for_the_guest() {
    let lab = Lab::start_with(&["--guest", "fpu-across-exits"]);
    let output = lab.gdb(&[
        "monitor catch cpuid",
        // Until the guest's own values are in (its runtime may use CPUID before).
        "continue",
        "while $fctrl != 0x7f",
        "continue",
        "end",
        "monitor catch off",
        "p/x $mxcsr",
        "p/x $fctrl",
        "p/x $xmm3.uint128",
        "p $st0",
        "p $st1",
        // (gdb 13 takes no 128-bit literal.)
        "set $xmm5.v2_int64[0] = 0x0123456789abcdef",
        "set $xmm5.v2_int64[1] = 0x0123456789abcdef",
        "set $st0 = 42",
        "continue",
    ]);
    assert_answered_in_time(&output);
    // d1's values (`guests/src/bin/fpu-across-exits.rs`): MXCSR rounding toward zero, the
    // FCW single precision, XMM3 0x33 in every byte, the integers pushed last first.
    let printed: Vec<&str> = output
        .lines()
        .filter(|line| line.starts_with('$'))
        .filter_map(|line| line.split_once(" = ").map(|(_, value)| value))
        .collect();
    assert_eq!(
        printed,
        [
            "0x7f80",
            "0x7f",
            "0x33333333333333333333333333333333",
            "-7777778",
            "1000003"
        ],
        "{output}"
    );
    let (_, trace) = lab.finish();
    assert!(
        trace.contains(
            "XMM5 changed across the exits: [ef, cd, ab, 89, 67, 45, 23, 01, ef, cd, ab, 89, 67, 45, 23, 01]"
        ),
        "the guest read gdb's XMM5:\n{trace}"
    );
    assert!(
        trace
            .contains("the x87 stack held [1000003, 42] after the exits (was [1000003, -7777778])"),
        "the guest read gdb's ST0:\n{trace}"
    );
}

#[test]
fn stepi_across_ud2_lands_on_the_handlers_first_instruction() {
    let lab = Lab::start("invalid-opcode");
    let output = lab.gdb(&[
        "break invalid_opcode::main",
        "continue",
        "set language c",
        // Step (TF, one #DB exit per instruction) until the ud2 (0f 0b).
        "set $steps = 0",
        "while *(unsigned short *)$pc != 0x0b0f && $steps < 2000\n stepi\n set $steps = $steps + 1\nend",
        "printf \"at ud2 after %d steps\\n\", $steps",
        "x/i $pc",
        "stepi",
        "info symbol $pc",
        "x/i $pc",
        "continue",
    ]);
    assert!(output.contains("ud2"), "the loop reached the ud2");
    // vector 6's IDT stub is entry 6 of the table, 16 bytes each: +96; its first
    // instruction pushes the dummy error code.
    assert!(
        output.contains("exception_entries") && output.contains("+ 96 in section .text"),
        "stepi ended in the #UD entry stub"
    );
    assert!(output.contains("push   $0x0"), "at its first instruction");
    assert!(output.contains("exited normally"));
    let (status, trace) = lab.finish();
    assert_eq!(status, 0);
    assert!(
        trace.contains("a #DB caused by gdb (a single step)"),
        "gdb's steps are the hypervisor's, not the guest's:\n{}",
        &trace[..trace.len().min(3000)]
    );
}

/// A step goes to the next instruction, not into an interrupt handler: while gdb steps, the
/// guest's interrupts wait (as QEMU's gdb stub and KVM's `KVM_GUESTDBG_BLOCKIRQ` hold them),
/// and once gdb lets the guest run, one that waited is delivered. `timer-spin` stops at
/// `sti; nop; nop; nop; out 0x80, al; nop` with its timer's interrupt waiting: before, the
/// step after STI's shadow ended in the guest's interrupt entry stub.
#[test]
fn stepi_with_a_timer_interrupt_waiting_goes_to_the_next_instruction_and_continue_delivers_it() {
    let lab = Lab::start_with(&["--guest", "timer-spin", "--json"]);
    let mut commands = vec![
        "break timer_spin::open_window",
        "continue",
        "delete",
        "x/i $pc",
        "set $first = $pc",
    ];
    let steps: Vec<String> = (1..=4)
        .map(|step| format!("stepi\nprintf \"step {step} at +%d\\n\", $pc - $first"))
        .collect();
    commands.extend(steps.iter().map(String::as_str));
    commands.push("continue");
    let output = lab.gdb(&commands);
    assert!(output.contains("sti"), "stopped at the STI");
    // Where each instruction after the STI begins: three NOPs, the OUT (two bytes), a NOP.
    let boundaries = [1, 2, 3, 4, 6];
    // The first step runs STI and, under QEMU 7.2's TCG, the NOP after it as well: TCG
    // blocked the single-step trap after STI (fixed in QEMU 9.2.4 and 10.0.1, "target/i386:
    // do not block singlestep for STI"). A CPU stops after the STI.
    let tcg_ran_one_more = output.contains("step 1 at +2\n");
    let expected = &boundaries[usize::from(tcg_ran_one_more)..][..4];
    for (step, offset) in (1..=4).zip(expected) {
        assert!(
            output.contains(&format!("step {step} at +{offset}\n")),
            "step {step} went to the next instruction (+{offset}), not into the interrupt handler"
        );
    }
    assert!(
        output.contains("exited normally"),
        "the guest's 20 ticks came"
    );
    let (status, trace) = lab.finish();
    assert_eq!(status, 0);
    let events = Lab::events(&trace);
    let says = |wanted: &str| {
        events.iter().position(|event| match &event.body {
            traplab_abi::event::Body::Emulate(emulate) => emulate.what.contains(wanted),
            traplab_abi::event::Body::Decide(decide) => decide.why.contains(wanted),
            _ => false,
        })
    };
    if tcg_ran_one_more {
        assert!(
            says("QEMU's TCG holds the single-step trap after STI back for one instruction")
                .is_some(),
            "the stop after the STI says that TCG ran one instruction more"
        );
    }
    assert!(
        says("interrupt 0x20 is pending but gdb is single-stepping the guest").is_some(),
        "the trace says why the tick waited"
    );
    if expected.last() == Some(&6) {
        // The last step was over the OUT, which the hypervisor completes: gdb stopped after
        // the exit was handled, and its `continue` came after the resume was prepared. The
        // tick asks for its window then, and the VINTR exit injects it.
        let released = says("gdb lets the guest run: interrupt 0x20, held while gdb stepped")
            .expect("the tick that waited asked for its window once gdb let the guest run");
        assert!(
            events[released..].iter().any(|event| matches!(
                &event.body,
                traplab_abi::event::Body::Inject(inject) if inject.vector == 0x20
            )),
            "and was injected"
        );
    }
}

/// A trap's `resume` is recorded as the guest goes on, after gdb's last stop: the registers
/// gdb set while it held the guest after a step are the ones the resume shows. (It was
/// recorded before that stop, with the values the guest never resumed with.)
#[test]
fn the_resume_after_a_step_shows_the_registers_gdb_set_at_the_stop() {
    let lab = Lab::start_with(&["cpuid", "--json"]);
    let output = lab.gdb(&[
        "break cpuid::main",
        "continue",
        "set language c",
        // Step until the first CPUID (0f a2), over it, and change RAX at the stop.
        "set $steps = 0",
        STEP_TO_THE_FIRST_CPUID,
        "x/i $pc",
        "stepi",
        "set $rax = 0x1234",
        "continue",
    ]);
    assert!(output.contains("cpuid"), "the loop reached the CPUID");
    assert!(output.contains("exited normally"));
    let (_, trace) = lab.finish();
    let events = Lab::events(&trace);
    use traplab_abi::event::Body;
    // The stepped CPUID: leaf 1, main's first.
    let exit = events
        .iter()
        .position(|event| matches!(&event.body, Body::Exit(exit) if exit.exitcode == 0x72 && exit.regs.rax == 1))
        .expect("the CPUID of leaf 1 exited");
    let resume = events[exit..]
        .iter()
        .find_map(|event| match &event.body {
            Body::Resume(resume) => Some(resume),
            _ => None,
        })
        .expect("the guest went on");
    assert_eq!(resume.regs.rax, 0x1234, "{resume:?}");
}

#[test]
fn gdb_s_step_over_pushf_and_popf_leaves_the_guest_s_tf_alone() {
    // gdb steps with RFLAGS.TF. A PUSHF stepped so saves that TF on the guest's stack, and
    // the guest's POPF would load it (a #DB the guest never asked for); a POPF stepped so
    // loads the guest's own TF, which the step must not then clear.
    let lab = Lab::start("alignment-check");
    let output = lab.gdb(&[
        "break alignment_check::user_mode",
        "continue",
        "set language c",
        "set $steps = 0",
        "while *(unsigned char *)$pc != 0x9c && $steps < 2000\n stepi\n set $steps = $steps + 1\nend",
        "stepi",
        "printf \"pushed flags %#lx\\n\", *(unsigned long *)$rsp",
        "stepi",
        "stepi",
        "printf \"after popf %#lx\\n\", $eflags",
        "continue",
    ]);
    let pushed = output
        .lines()
        .find_map(|line| line.strip_prefix("pushed flags 0x"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no pushed flags in\n{output}"));
    assert_eq!(
        pushed & 0x100,
        0,
        "gdb's TF on the guest's stack: {pushed:#x}"
    );
    let after = output
        .lines()
        .find_map(|line| line.strip_prefix("after popf 0x"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no flags after the popf in\n{output}"));
    assert_ne!(
        after & 0x4_0000,
        0,
        "the guest's AC, loaded by its POPF: {after:#x}"
    );
    assert_eq!(after & 0x100, 0, "and no TF: {after:#x}");
    assert!(output.contains("exited normally"), "{output}");
    let (status, _) = lab.finish();
    assert_eq!(status, 0, "no stray #DB in the guest");
}

#[test]
fn a_watchpoint_fires_after_the_retried_write() {
    let lab = Lab::start("page-fault");
    let output = lab.gdb(&[
        "set language c",
        "watch *(long *)0x40000000",
        "continue",
        "delete",
        "continue",
    ]);
    assert!(output.contains("Hardware watchpoint 1: *(long *)0x40000000"));
    assert!(
        output.contains("New value = 42"),
        "the watchpoint fired on the write"
    );
    assert!(output.contains("exited normally"));
    assert_eq!(lab.finish().0, 0);
}

#[test]
fn a_watchpoint_fires_on_an_entry_the_hypervisor_writes_for_the_guest() {
    // pt-write's PDPT[1] (0x11008): the guest's store to its pinned table faults, and the
    // hypervisor writes the entry in its place (`exit/ptwr.rs`). The CPU never made that
    // write, so no #DB came for gdb's watchpoint: the hypervisor checks its own accesses
    // against gdb's slots and stops the guest after the store.
    let lab = Lab::start("pt-write");
    let output = lab.gdb(&[
        "set language c",
        "watch *(long *)0x11008",
        "continue",
        "delete",
        "continue",
    ]);
    assert!(
        output.contains("Hardware watchpoint 1: *(long *)0x11008"),
        "{output}"
    );
    assert!(
        output.contains("New value = 589831"),
        "the watchpoint fired on the new PD's entry (0x90007): {output}"
    );
    assert!(output.contains("exited normally"), "{output}");
    assert_eq!(lab.finish().0, 0);
}

#[test]
fn monitor_catch_pf_stops_at_the_exit_before_the_hypervisor_decides() {
    let lab = Lab::start("page-fault");
    let output = lab.gdb(&[
        "monitor catch pf",
        "continue",
        "monitor decision",
        "info registers rip",
        "continue",
    ]);
    assert!(output.contains("SIGTRAP"), "stopped");
    assert!(output.contains("EXCP_PF at 0x"), "at the #PF exit");
    assert!(
        output.contains("hv/src/exit/exception.rs decides"),
        "before the decision"
    );
    assert!(
        output.contains("reflect #PF into the guest's IDT, vector 14"),
        "which will reflect it"
    );
    assert!(output.contains("exited normally"));
    assert_eq!(lab.finish().0, 0);
}

/// One GDB remote packet: `$body#checksum`.
fn packet(body: &str) -> Vec<u8> {
    let checksum = body.bytes().fold(0u8, |sum, byte| sum.wrapping_add(byte));
    format!("${body}#{checksum:02x}").into_bytes()
}

/// Whatever the socket delivers within `time`.
fn read_for(socket: &mut TcpStream, time: Duration) -> String {
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("a timeout");
    let end = Instant::now() + time;
    let mut seen = String::new();
    let mut buffer = [0u8; 4096];
    while Instant::now() < end {
        if let Ok(read) = socket.read(&mut buffer) {
            seen.push_str(&String::from_utf8_lossy(&buffer[..read]));
        }
    }
    seen
}

/// Read from the socket until `wanted` shows up (or fail after a few seconds).
fn read_until(socket: &mut TcpStream, wanted: &str) -> String {
    read_until_within(socket, wanted, Duration::from_secs(10))
}

/// Read from the socket until `wanted` shows up (or fail after `within`).
fn read_until_within(socket: &mut TcpStream, wanted: &str, within: Duration) -> String {
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("a timeout");
    let deadline = Instant::now() + within;
    let mut seen = String::new();
    let mut buffer = [0u8; 4096];
    while !seen.contains(wanted) {
        assert!(
            Instant::now() < deadline,
            "no {wanted:?} from the stub; got {seen:?}"
        );
        if let Ok(read) = socket.read(&mut buffer) {
            seen.push_str(&String::from_utf8_lossy(&buffer[..read]));
        }
    }
    seen
}

/// Ask `?` until the stub answers (`$T05`: stopped, SIGTRAP): it answers once the
/// hypervisor has booted, and like gdb we ask again until it does. The session has started
/// then.
fn wait_for_the_stub(socket: &mut TcpStream) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        socket.write_all(&packet("?")).expect("send");
        if read_for(socket, Duration::from_millis(500)).contains("$T05") {
            break;
        }
        assert!(Instant::now() < deadline, "the stub never answered");
    }
    socket.write_all(b"+").expect("ack");
}

/// The next whole packet's data from the stub (its `+`s skipped), acknowledged. `pending`
/// keeps what arrived after it: a packet may come in pieces, or with the next one.
fn next_packet(socket: &mut TcpStream, pending: &mut Vec<u8>) -> String {
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("a timeout");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(start) = pending.iter().position(|&byte| byte == b'$')
            && let Some(length) = pending[start..].iter().position(|&byte| byte == b'#')
            && pending.len() >= start + length + 3
        {
            let data = String::from_utf8_lossy(&pending[start + 1..start + length]).into_owned();
            pending.drain(..start + length + 3);
            socket.write_all(b"+").expect("ack");
            return data;
        }
        assert!(
            Instant::now() < deadline,
            "no whole packet from the stub; got {:?}",
            String::from_utf8_lossy(pending)
        );
        let mut buffer = [0u8; 4096];
        if let Ok(read) = socket.read(&mut buffer) {
            pending.extend_from_slice(&buffer[..read]);
        }
    }
}

/// Send packet `body`; the first packet of the stub's answer that `wanted` accepts (the
/// ones before it, a `monitor` command's output, are read and acknowledged).
fn exchange(
    socket: &mut TcpStream,
    pending: &mut Vec<u8>,
    body: &str,
    wanted: impl Fn(&str) -> bool,
) -> String {
    socket.write_all(&packet(body)).expect("send");
    loop {
        let data = next_packet(socket, pending);
        if wanted(&data) {
            return data;
        }
    }
}

/// A packet's data with its run-length encoding undone (GDB manual, "Overview": `X*N`
/// is X and N − 29 more of it).
fn run_length_decoded(data: &str) -> String {
    let mut decoded = String::new();
    let mut chars = data.chars();
    while let Some(char) = chars.next() {
        if char == '*' {
            let count = chars.next().expect("a count after `*`") as usize - 29;
            let last = decoded.chars().last().expect("a character before `*`");
            decoded.extend(std::iter::repeat_n(last, count));
        } else {
            decoded.push(char);
        }
    }
    decoded
}

/// `qRcmd` (gdb's `monitor`): the command, hex-encoded.
fn monitor(command: &str) -> String {
    let hex: String = command.bytes().map(|byte| format!("{byte:02x}")).collect();
    format!("qRcmd,{hex}")
}

/// A `G` packet whose MXCSR has reserved bits set (gdb's own `set $mxcsr` refuses such a
/// value): the stub clears the bits MXCSR_MASK does not allow, since FXRSTOR would raise
/// #GP in the hypervisor with them (`hv/src/gdb/target.rs`), and the guest reads what is
/// left. Sent at one of the guest's exits, while the CPU holds its x87 state and MXCSR.
#[test]
fn an_mxcsr_written_with_reserved_bits_reaches_the_guest_without_them() {
    let lab = Lab::start_with(&["--guest", "fpu-across-exits"]);
    let mut socket = lab.connect();
    wait_for_the_stub(&mut socket);
    let mut pending = Vec::new();
    let ok = |data: &str| data == "OK";
    exchange(&mut socket, &mut pending, &monitor("catch cpuid"), ok);
    // Stopped (S05) at the first CPUID: in the guest's loop, its MXCSR 0x7f80 in.
    exchange(&mut socket, &mut pending, "c", |data| data.starts_with('S'));
    let registers = run_length_decoded(&exchange(&mut socket, &mut pending, "g", |_| true));
    // gdbstub_arch's x86-64 core registers: 16 general registers, RIP (8 bytes each),
    // EFLAGS, 6 selectors (4 each), ST0–ST7 (10 each), 8 x87 words (4 each), XMM0–XMM15
    // (16 each), then MXCSR (4), at byte 532; the stub's system registers follow.
    let mxcsr = 2 * (17 * 8 + 7 * 4 + 8 * 10 + 8 * 4 + 16 * 16);
    assert_eq!(
        &registers[mxcsr..mxcsr + 8],
        "807f0000",
        "MXCSR 0x7f80: {registers}"
    );
    let written = format!("{}ffffffff{}", &registers[..mxcsr], &registers[mxcsr + 8..]);
    exchange(&mut socket, &mut pending, &format!("G{written}"), ok);
    exchange(&mut socket, &mut pending, &monitor("catch off"), ok);
    socket.write_all(&packet("c")).expect("continue");
    let (_, trace) = lab.finish();
    // What QEMU allows (its MXCSR_MASK, 0xffff): every bit but the reserved 31:16.
    assert!(
        trace.contains("MXCSR 0xffff (was 0x7f80), FCW 0x7f (was 0x7f) after the exits"),
        "the guest read gdb's MXCSR, its reserved bits cleared:\n{trace}"
    );
    assert!(
        trace.contains("fpu-across-exits exited with status 1"),
        "and the hypervisor lived on to its end:\n{trace}"
    );
}

/// GDB manual, "Packet Acknowledgment": a packet with a bad checksum is answered with `-`
/// (send it again), and the session goes on: the next packet is answered, `c` lets the guest
/// run to its end. (It used to end the session, with no `-`.)
#[test]
fn a_bad_checksum_is_answered_with_a_nak_and_the_session_goes_on() {
    let lab = Lab::start_with(&["hello", "--verbose"]);
    let mut socket = lab.connect();
    wait_for_the_stub(&mut socket);
    socket.write_all(b"$g#00").expect("send");
    read_until(&mut socket, "-");
    // A `-` from us, and the stub sends its last packet again: the `?` answer.
    socket.write_all(b"-").expect("NAK");
    read_until(&mut socket, "$T05");
    socket.write_all(b"+").expect("ack");
    socket.write_all(&packet("?")).expect("send");
    read_until(&mut socket, "$T05");
    socket.write_all(b"+").expect("ack");
    socket.write_all(&packet("c")).expect("continue");
    let (status, trace) = lab.finish();
    assert_eq!(status, 0, "the guest ran to its end after `c`");
    assert!(
        trace.contains(
            "gdb: a packet of 5 bytes says checksum 0x00, its data sum to 0x67: answered `-`"
        ),
        "{trace}"
    );
    assert!(!trace.contains("session dropped"), "{trace}");
    assert!(trace.contains("hello exited with status 0"));
}

/// A packet the stub cannot parse (`G` with no hex in it) while gdb holds the guest is
/// answered `E01`, and the session goes on: the guest stays stopped (it used to run on,
/// unanswered, with gdb's breakpoints taken out), the next packet is answered, `c` runs it.
#[test]
fn a_malformed_packet_is_answered_e01_and_the_guest_stays_stopped() {
    let lab = Lab::start_with(&["hello", "--verbose"]);
    let mut socket = lab.connect();
    wait_for_the_stub(&mut socket);
    // The packet is acknowledged (`+`), then answered with the error.
    socket.write_all(&packet("Gzz")).expect("send");
    let answer = read_until(&mut socket, "$E01");
    let error_at = answer.find("$E01").expect("read_until found it");
    assert!(
        answer[..error_at].contains('+'),
        "the packet is acknowledged before its answer: {answer:?}"
    );
    socket.write_all(b"+").expect("ack");
    let mut pending = Vec::new();
    let stopped = exchange(&mut socket, &mut pending, "?", |data| data.starts_with('T'));
    assert!(stopped.starts_with("T05"), "{stopped}");
    socket.write_all(&packet("c")).expect("continue");
    let (status, trace) = lab.finish();
    assert_eq!(status, 0, "the guest ran to its end after `c`");
    assert!(
        trace.contains("answered E01; the guest stays stopped"),
        "{trace}"
    );
    assert!(!trace.contains("session dropped"), "{trace}");
}

/// A packet longer than the stub's buffer (`qSupported`'s PacketSize, 4096) is dropped with
/// a log line, the noise after it too, and the next packet is answered. (It used to end the
/// session; then the hypervisor read one byte per exit: after a 2 MB packet, nothing.)
#[test]
fn an_oversized_packet_is_dropped_and_the_stub_answers_the_next() {
    let lab = Lab::start_with(&["hello", "--verbose"]);
    let mut socket = lab.connect();
    wait_for_the_stub(&mut socket);
    // 64 KiB: QEMU passes some 14 KB/s to the UART on a loaded machine, so this takes
    // seconds; the framing is the same at 2 MB (`wire.rs`'s tests).
    let mut oversized = b"$M200000,8000:".to_vec();
    oversized.extend(std::iter::repeat_n(b'a', 64 * 1024));
    oversized.extend(b"#00\xff\xfe garbage");
    let mut writer = socket.try_clone().expect("a second handle");
    let (sent, written) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sent.send(writer.write_all(&oversized).is_ok());
    });
    assert_eq!(
        written.recv_timeout(Duration::from_secs(120)),
        Ok(true),
        "the stub takes the whole packet in"
    );
    socket.write_all(&packet("?")).expect("send");
    read_until_within(&mut socket, "$T05", Duration::from_secs(120));
    socket.write_all(b"+").expect("ack");
    socket.write_all(&packet("c")).expect("continue");
    let (status, trace) = lab.finish();
    assert_eq!(
        status, 0,
        "the hypervisor lived on and the guest ran to its end"
    );
    assert!(
        trace.contains(
            "gdb: dropped a packet of 65553 bytes: the stub takes at most 4096 (its qSupported PacketSize); the session goes on"
        ),
        "{trace}"
    );
    // The 10 bytes after the packet may reach the stub in more than one piece (the UART
    // delivers what QEMU has passed it so far): the pieces add up to 10.
    let ignored: usize = trace
        .lines()
        .filter_map(|line| {
            let (_, after) = line.split_once("gdb: ignored ")?;
            after
                .strip_suffix(" bytes outside any packet")?
                .parse::<usize>()
                .ok()
        })
        .sum();
    assert_eq!(ignored, 10, "{trace}");
    assert!(trace.contains("hello exited with status 0"));
    assert!(trace.contains("none lost"));
}

/// A kibibyte of binary junk on one connection, closed; then gdb attaches and is answered
/// at once: the guest is still at its first instruction, and runs to its end. (The junk
/// used to keep the stub busy for seconds, one byte per exit, or drop gdb's session.) The
/// junk's bad packets are answered with `-` after gdb connected, at times: gdb then sends
/// its packet again, and the stub must not answer it twice (`wire.rs`, `Repeated`).
#[test]
fn gdb_attaches_at_once_after_a_burst_of_junk() {
    let lab = Lab::start_with(&["page-fault", "--verbose"]);
    let mut junk = b"-+\x03$g#00$qSupp$#zz\x03".to_vec();
    let mut seed: u32 = 16;
    junk.extend((0..1024).map(|_| {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        (seed >> 16) as u8
    }));
    let mut socket = lab.connect();
    socket.write_all(&junk).expect("send the junk");
    drop(socket);
    let output = lab.gdb(&["info registers rip", "continue"]);
    assert_answered_in_time(&output);
    assert_eq!(register(&output, "rip"), Some(0x20_0000), "{output}");
    assert!(output.contains("exited normally"), "{output}");
    let (status, trace) = lab.finish();
    assert_eq!(status, 0, "{trace}");
}

/// A gdb that goes away without detaching (killed, its terminal closed) while it holds the
/// guest stopped: the relay on gdb's port sees the connection end and detaches for it, and
/// the lab runs to its end. (A serial line carries no hang-up: the guest used to wait for
/// ever.) The same with real gdb, killed while it holds the guest.
#[test]
fn a_gdb_that_vanishes_while_it_holds_the_guest_is_detached_and_the_lab_ends() {
    let lab = Lab::start("page-fault");
    let mut socket = lab.connect();
    wait_for_the_stub(&mut socket);
    drop(socket);
    let (status, trace) = lab.finish();
    assert_eq!(status, 0, "{trace}");

    let lab = Lab::start("page-fault");
    let holding = flag("holding", lab.port);
    let _ = std::fs::remove_file(&holding);
    // gdb reads a register (it holds the guest stopped then), says so, and waits.
    let mut gdb = Gdb::start(
        &lab.elf,
        lab.port,
        &[
            "info registers rip",
            &format!("shell touch {}; sleep 600", holding.display()),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while !holding.exists() {
        if gdb.child.try_wait().expect("wait for gdb").is_some() {
            let output = gdb.output();
            panic!("gdb ended before it held the guest:\n{output}");
        }
        assert!(Instant::now() < deadline, "gdb never held the guest");
        std::thread::sleep(Duration::from_millis(50));
    }
    // gdb's shell runs in a child of gdb: kill gdb alone, as a crash would.
    gdb.child.kill().expect("kill gdb");
    let _ = gdb.child.wait();
    let _ = std::fs::remove_file(&holding);
    let (status, trace) = lab.finish();
    assert_eq!(status, 0, "{trace}");
}

/// `monitor` with a word the stub does not know says so, then lists the commands; `monitor
/// decision` after a `stepi` over the faulting store is the #PF's reflection — not gdb's own
/// fetch trap that ended the step, nor a timer tick.
#[test]
fn monitor_names_an_unknown_command_and_decision_is_the_guests_last_trap() {
    let lab = Lab::start("page-fault");
    let output = lab.gdb(&[
        "monitor frobnicate",
        "monitor catch pf",
        "continue",
        "monitor catch off",
        "stepi",
        "monitor decision",
        "continue",
    ]);
    assert!(
        output.contains("unknown monitor command \"frobnicate\"\ntraplab monitor commands:"),
        "{output}"
    );
    assert!(
        output.contains("  monitor decision "),
        "the help follows: {output}"
    );
    let decision = output
        .lines()
        .find(|line| line.starts_with("no decision pending"))
        .unwrap_or_else(|| panic!("monitor decision answered: {output}"));
    assert!(
        decision.contains("on d1's last trap (EXCP_PF at 0x")
            && decision.contains("reflect: the guest owns its exceptions (#PF page fault)"),
        "{decision}"
    );
    assert!(output.contains("exited normally"), "{output}");
    assert_eq!(lab.finish().0, 0);
}

#[test]
fn ctrl_c_stops_a_guest_that_spins_without_exits_and_kill_ends_it() {
    // `spin` never exits on its own: only the hypervisor's timer (INTR exits) lets the stub
    // see gdb's interrupt byte.
    let lab = Lab::start_with(&["--guest", "spin"]);
    let mut socket = lab.connect();
    wait_for_the_stub(&mut socket);
    socket.write_all(&packet("c")).expect("continue");
    // Its `+`: the stub took the `c`, the guest spins.
    read_until(&mut socket, "+");
    socket.write_all(b"\x03").expect("Ctrl-C");
    // S02: stopped by SIGINT.
    read_until(&mut socket, "$S02");
    socket.write_all(b"+").expect("ack");
    socket.write_all(&packet("k")).expect("kill");
    let (status, trace) = lab.finish();
    assert_eq!(status, 137, "the domain was killed from gdb");
    assert!(trace.contains("spin KILLED: killed from gdb"), "{trace}");
}

/// Ctrl-C while the guest waits in HLT and the hypervisor idles: the stub answers it there.
/// (Its timer ticks every 10 s; whether one came first depends on the machine's load, so
/// the test does not ask.)
#[test]
fn ctrl_c_stops_a_guest_halted_until_a_distant_timer() {
    let lab = Lab::start_with(&["--guest", "long-halt"]);
    let symbols = traplab_tracer::symbols::Symbols::load(&lab.elf).expect("symbols");
    let halt = symbols
        .address_of("long_halt::halt")
        .expect("the guest's halt function");
    let mut socket = lab.connect();
    wait_for_the_stub(&mut socket);
    let mut pending = Vec::new();
    let set = exchange(&mut socket, &mut pending, &format!("Z0,{halt:x},1"), |_| {
        true
    });
    assert_eq!(set, "OK");
    // At `halt`, its timer armed.
    let stop = exchange(&mut socket, &mut pending, "c", |data| {
        data.starts_with('T') || data.starts_with('S')
    });
    assert!(stop.starts_with("T05") || stop.starts_with("S05"), "{stop}");
    let removed = exchange(&mut socket, &mut pending, &format!("z0,{halt:x},1"), |_| {
        true
    });
    assert_eq!(removed, "OK");
    // Into the HLT: the hypervisor idles until the timer. The Ctrl-C waits until the trace
    // shows the guest there: sent at once, it was taken at an exit on the way (a tick of the
    // hypervisor's timer, on a loaded machine), before the HLT.
    socket.write_all(&packet("c")).expect("continue");
    read_until(&mut socket, "+");
    lab.wait_for_trace("the guest's HLT", |trace| trace.contains(" HLT at "));
    socket.write_all(b"\x03").expect("Ctrl-C");
    // S02: stopped by SIGINT.
    read_until_within(&mut socket, "$S02", Duration::from_secs(60));
    socket.write_all(b"+").expect("ack");
    socket.write_all(&packet("k")).expect("kill");
    let (status, trace) = lab.finish();
    assert_eq!(status, 137, "the domain was killed from gdb");
    assert!(
        trace.contains("long-halt KILLED: killed from gdb"),
        "{trace}"
    );
    assert!(trace.contains("HLT"), "stopped in the HLT:\n{trace}");
}

/// `--domain 2` debugs the lab's second guest: in the triple-fault lab, d1 dies first and
/// then d2 (hello) starts, stopped for gdb at its first instruction.
#[test]
fn gdb_attaches_to_the_domain_asked_for() {
    let lab = Lab::start_with(&["triple-fault", "--domain", "2", "--json"]);
    assert!(
        lab.elf.ends_with("hello"),
        "{} is d2's program",
        lab.elf.display()
    );
    let output = lab.gdb(&["break hello::main", "continue", "delete", "continue"]);
    assert!(
        output.contains("Breakpoint 1, "),
        "d2 stops at gdb's breakpoint"
    );
    assert!(output.contains("exited normally"), "and runs to its end");
    let (status, trace) = lab.finish();
    assert_eq!(status, 137, "d1 was killed, as the lab wants");
    let events = Lab::events(&trace);
    let ending = traplab_labs::run::ending(&events, 2).expect("d2 ended");
    assert_eq!(ending.status, Some(0), "{}", ending.describe());
}

/// gdb's breakpoints and steps must not change what the guest's own TF, #DB and int3 do: the
/// #DB and #BP labs, stepped and broken into by gdb, still produce their expected flows.
#[test]
fn the_debug_and_breakpoint_labs_behave_the_same_with_gdb_attached() {
    for (lab_id, main) in [("debug", "debug::main"), ("breakpoint", "breakpoint::main")] {
        let lab = Lab::start_with(&[lab_id, "--json"]);
        let break_at_main = format!("break {main}");
        let output = lab.gdb(&[
            &break_at_main,
            "continue",
            "stepi",
            "stepi",
            "stepi",
            "delete",
            "continue",
        ]);
        assert!(
            output.contains("Breakpoint 1, "),
            "{lab_id}: gdb's breakpoint hit"
        );
        assert!(
            output.contains("exited normally"),
            "{lab_id}: the guest ran to its end"
        );
        let (status, trace) = lab.finish();
        assert_eq!(status, 0, "{lab_id}");
        assert_the_labs_flow(lab_id, &Lab::events(&trace), "with gdb attached");
    }
}

/// gdb's hardware breakpoint on the instruction where the guest's own single step traps
/// (the `debug` lab's first #DB: `popf` sets TF, the NOP after it runs, #DB with DR6.BS):
/// QEMU's TCG reports gdb's slot and the guest's BS in one #DB. gdb stops, and when it lets
/// the guest go the guest's own #DB is delivered, with only BS in DR6, as without gdb.
/// Before, the guest's #DB was dropped with gdb's: its TF still set, it trapped one
/// instruction later, and its handler reported the wrong place.
#[test]
fn a_guest_single_step_that_traps_with_gdb_s_breakpoint_still_reaches_the_guest() {
    let lab = Lab::start_with(&["debug", "--json"]);
    let output = lab.gdb(&[
        // `popf; nop`: the guest's step traps at the instruction after the NOP.
        "find /b 0x200000, +0x10000, 0x9d, 0x90",
        "set $target = $_ + 2",
        "printf \"target %#x\\n\", $target",
        "hbreak *$target",
        "continue",
        "printf \"stopped %d bytes from the guest's step\\n\", $pc - $target",
        "delete",
        "continue",
    ]);
    assert!(
        output.contains("stopped 0 bytes from the guest's step"),
        "gdb's hardware breakpoint stopped the guest"
    );
    assert!(
        output.contains("exited normally"),
        "the guest ran to its end"
    );
    let target = output
        .lines()
        .find_map(|line| line.strip_prefix("target "))
        .expect("gdb printed the target")
        .to_string();
    let (status, trace) = lab.finish();
    assert_eq!(status, 0);
    let events = Lab::events(&trace);
    let wanted = format!("#DB single step, now at {target}:");
    assert!(
        events.iter().any(|event| matches!(
            &event.body,
            traplab_abi::event::Body::Console(console) if console.text.starts_with(&wanted)
        )),
        "the guest's own #DB handler saw its step trap at {target}"
    );
    assert!(
        events.iter().any(|event| matches!(
            &event.body,
            traplab_abi::event::Body::Decide(decide)
                if decide.why.contains("a #DB caused by gdb (a hardware breakpoint) and by the guest itself")
        )),
        "the decision says both"
    );
}

/// gdb's hardware breakpoint survives the guest's own writes to DR7: the `debug` lab's #DB
/// handler clears DR7 after its breakpoint 0, before its ICEBP. While gdb holds a slot, the
/// guest's MOVs to and from the debug registers are intercepted and kept apart from gdb's
/// (`Vcpu::lent_slots`): before, the guest's MOV took gdb's breakpoint away.
#[test]
fn gdb_s_hardware_breakpoint_survives_the_guest_clearing_dr7() {
    let lab = Lab::start_with(&["debug", "--json"]);
    let output = lab.gdb(&[
        // The ICEBP (f1), then the `mov edi, …` of the next line's text.
        "find /b 0x200000, +0x10000, 0xf1, 0xbf",
        "set $icebp = $_",
        "hbreak *$icebp",
        "continue",
        "printf \"stopped %d bytes from the ICEBP\\n\", $pc - $icebp",
        "delete",
        "continue",
    ]);
    assert!(
        output.contains("stopped 0 bytes from the ICEBP"),
        "gdb's hardware breakpoint still fired after the guest wrote DR7 = 0"
    );
    assert!(
        output.contains("exited normally"),
        "the guest ran to its end"
    );
    let (status, trace) = lab.finish();
    assert_eq!(status, 0);
    let events = Lab::events(&trace);
    assert!(
        events.iter().any(|event| matches!(
            &event.body,
            traplab_abi::event::Body::Decide(decide) if decide.why.starts_with("MOV DR7, 0x0")
        )),
        "the guest's MOV to DR7 was intercepted while gdb held a slot"
    );
    assert_the_labs_flow("debug", &events, "with gdb's hardware breakpoint");
}

/// Two domains side by side, gdb on d2: `monitor domains` lists d1 (blocked waiting for the
/// store node d2 will write, or still runnable on a slow machine) and, once d2 has allocated
/// its port (stopped where it is about to publish it), shows the port unbound, for d1.
#[test]
fn monitor_domains_shows_every_domain_side_by_side() {
    let lab = Lab::start_with(&["event-channel", "--domain", "2", "--json"]);
    let output = lab.gdb(&[
        "monitor domains",
        "break traplab_guests::store::write_number",
        "continue",
        "monitor domains",
        "delete",
        "continue",
    ]);
    // Where d1 is depends on the machine's speed (whether its first time slice reached its
    // store_wait before d2 started): waiting for the node, or still runnable. Either way it
    // is listed beside the debugged domain.
    assert!(
        output.contains(
            "d1 event-channel: waiting for store node /local/domain/2/event-channel/port"
        ) || output.contains("d1 event-channel: runnable"),
        "{output}"
    );
    assert!(
        output.contains("d2 event-channel (gdb's): runnable"),
        "{output}"
    );
    assert!(output.contains("    port 1: unbound, for d1"), "{output}");
    assert!(output.contains("exited normally"), "{output}");
    let (status, trace) = lab.finish();
    assert_eq!(status, 0);
    let events = Lab::events(&trace);
    for dom in [1, 2] {
        let ending = traplab_labs::run::ending(&events, dom).expect("the domain ended");
        assert_eq!(ending.status, Some(0), "d{dom}: {}", ending.describe());
    }
}

/// `traplab run LAB --gdb PORT` in a real terminal (tmux): the terminal UI, live, the
/// hypervisor held by the host after its boot.
struct Tui {
    name: String,
}

impl Tui {
    /// `traplab run LAB --gdb 0` in a tmux session: gdb's port, a free one, is in the title
    /// (160 columns wide, for the title to show all of it).
    fn start(lab: &str) -> Tui {
        let name = format!("traplab-gdb-{}-{lab}", std::process::id());
        let command = format!("exec {} run {lab} --gdb 0", env!("CARGO_BIN_EXE_traplab"));
        let status = Command::new("tmux")
            .args(["new-session", "-d", "-s", &name, "-x", "160", "-y", "30"])
            .arg(&command)
            .env("TERM", "xterm-256color")
            .env("NO_COLOR", "1")
            .status()
            .expect("tmux runs (apt-get install tmux)");
        assert!(status.success(), "tmux new-session");
        Tui { name }
    }

    fn key(&self, key: &str) {
        let status = Command::new("tmux")
            .args(["send-keys", "-t", &self.name, key])
            .status()
            .expect("tmux send-keys");
        assert!(status.success());
    }

    /// The title line, e.g. `traplab · page-fault (live) · … · STOPPED after seq 0`.
    fn title(&self) -> String {
        let output = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.name])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    }

    /// Wait (a minute at most) until the title says what `wanted` looks for.
    fn wait_for_title(&self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let title = self.title();
            if wanted(&title) {
                return title;
            }
            assert!(
                Instant::now() < deadline,
                "waited for {what}; the title: {title}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .output();
    }
}

/// A file the gdb script and the test signal each other with.
fn flag(name: &str, port: u16) -> PathBuf {
    std::env::temp_dir().join(format!("traplab-gdb-{}-{port}-{name}", std::process::id()))
}

/// gdb attaches while the terminal UI holds the hypervisor after its boot (before `c`):
/// the stub answers at once (it used to be silent until `c`: `vMustReplyEmpty`: timeout).
/// Then the UI's `c` does not start the guest that gdb holds: gdb, which lets it go.
#[test]
fn gdb_is_answered_while_the_terminal_ui_holds_the_hypervisor() {
    let tui = Tui::start("page-fault");
    let title = tui.wait_for_title("the stop after boot", |title| {
        title.contains("STOPPED after seq 0")
    });
    let port = attach_port(&title).unwrap_or_else(|| panic!("gdb's port in the title: {title}"));
    let elf = traplab_labs::guest_elf("page-fault");
    let (ready, go) = (flag("ready", port), flag("go", port));
    let _ = std::fs::remove_file(&go);
    // gdb tells the test it holds the guest, then waits (two minutes at most) for the test
    // to have pressed `c` in the UI.
    let handshake = format!(
        "shell touch {}; for i in $(seq 1200); do [ -e {} ] && break; sleep 0.1; done",
        ready.display(),
        go.display()
    );
    let mut gdb = Gdb::start(
        &elf,
        port,
        &[
            "info registers rip",
            &handshake,
            "info registers rip",
            "break page_fault::page_fault",
            "continue",
            "info registers cr2",
            "continue",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ready.exists() {
        if gdb.child.try_wait().expect("wait for gdb").is_some() {
            let output = gdb.output();
            panic!("gdb ended before its handshake:\n{output}");
        }
        assert!(Instant::now() < deadline, "gdb never got to its handshake");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The UI lets the hypervisor go; it runs up to the guest's first VMRUN and stops there,
    // for gdb holds the guest: the title shows a stop after a later event.
    tui.key("c");
    tui.wait_for_title("the hold of gdb", |title| {
        title.contains("STOPPED after seq ") && !title.contains("STOPPED after seq 0")
    });
    std::fs::write(&go, "").expect("signal gdb");
    let output = gdb.output();
    let _ = std::fs::remove_file(&ready);
    let _ = std::fs::remove_file(&go);
    assert_answered_in_time(&output);
    let rips: Vec<&str> = output
        .lines()
        .filter(|line| line.starts_with("rip "))
        .collect();
    assert_eq!(rips.len(), 2, "{output}");
    assert!(
        rips.iter()
            .all(|line| register(line, "rip") == Some(0x20_0000)),
        "the guest stayed at its first instruction, the UI's `c` notwithstanding:\n{output}"
    );
    assert!(output.contains("Breakpoint 1, "), "{output}");
    assert_eq!(register(&output, "cr2"), Some(0x4000_0000), "{output}");
    assert!(output.contains("exited normally"), "{output}");
}

/// While gdb holds its domain stopped — here at the guest's first instruction, before gdb
/// has even come — the trace up to that stop has reached the host: the domain's `created`
/// event is there. (The hypervisor gathers events into one ring record and pushes it before
/// VMRUN; a gdb stop, which comes before that VMRUN, must push it too: `gdb::serve`.)
#[test]
fn the_trace_up_to_a_gdb_stop_reaches_the_host() {
    use traplab_abi::event::{Body, DomainState};
    use traplab_tracer::session::{Item, Options, Session};
    let mut machine = traplab_labs::machine_for(&["page-fault"]);
    machine.gdb_port = Some(0);
    let options = Options {
        timeout: Some(Duration::from_secs(120)),
        ..Options::default()
    };
    let mut session = Session::start(&machine, options).expect("QEMU starts");
    let started = Instant::now();
    loop {
        match session.next_within(Some(Duration::from_millis(50))) {
            Some(Item::Event(event))
                if event.dom == Some(1)
                    && matches!(&event.body, Body::Domain(change) if change.state == DomainState::Created) =>
            {
                break;
            }
            Some(Item::Finished(finish)) => panic!("QEMU finished before gdb came: {finish:?}"),
            _ => {}
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "d1's `created` event never came while the guest waited for gdb"
        );
    }
}

/// A gdb that comes after the debugged domain ended, while another domain still runs, is
/// told how it ended and says the target is not running (the stub used to stay silent:
/// gdb waited for its timeouts). In the triple-fault lab gdb debugs d1, which dies; the
/// host then holds the hypervisor at d2's HLT (its end) while a second gdb connects.
#[test]
fn a_gdb_that_comes_after_its_domain_ended_is_told_the_target_is_not_running() {
    use traplab_abi::control::{Break, Command};
    use traplab_abi::event::{Body, DomainState, Event};
    use traplab_tracer::qemu::ControlStart;
    use traplab_tracer::session::{Item, Options, Session};
    let mut machine = traplab_labs::machine_for(&["triple-fault", "hello"]);
    machine.gdb_port = Some(0);
    machine.control = Some(ControlStart::Paused);
    let options = Options {
        timeout: Some(Duration::from_secs(180)),
        ..Options::default()
    };
    let mut session = Session::start(&machine, options).expect("QEMU starts");
    let port = session.gdb_port().expect("a port for gdb");
    let mut events: Vec<Event> = Vec::new();
    // Read events until the hypervisor is stopped after the last one read, and that one is
    // what `wanted` asks for.
    let mut until_stopped = |session: &mut Session, wanted: &dyn Fn(&Event) -> bool| {
        let started = Instant::now();
        loop {
            while let Some(item) = session.next_within(Some(Duration::from_millis(5))) {
                match item {
                    Item::Event(event) => events.push(event),
                    Item::Finished(finish) => panic!("QEMU finished: {finish:?}"),
                    _ => {}
                }
            }
            let control = session.control();
            if let (Some(seq), Some(last)) = (
                control.as_ref().and_then(|control| control.stopped_after()),
                events.last(),
            ) && last.seq == seq
                && wanted(last)
            {
                return events.clone();
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the hypervisor never stopped where the test waits"
            );
        }
    };
    until_stopped(&mut session, &|_| true);
    let control = session.control().expect("the control channel");
    control
        .send(Command::AddBreak(Break::parse("hlt").expect("HLT")))
        .expect("break at HLT");
    control.send(Command::Continue).expect("continue");

    let elf = traplab_labs::guest_elf("triple-fault");
    let first = Gdb::start(&elf, port, &["continue"]).output();
    assert!(
        first.contains("Program terminated with signal SIGKILL"),
        "the first gdb saw its domain die:\n{first}"
    );
    let events = until_stopped(&mut session, &|event| {
        event.dom == Some(2) && matches!(event.body, Body::Exit(_))
    });
    assert!(
        events.iter().any(|event| event.dom == Some(1)
            && matches!(&event.body, Body::Domain(change) if change.state == DomainState::Killed)),
        "d1 was killed before d2's HLT"
    );

    let later = Gdb::start(&elf, port, &["info registers rip"]).output();
    assert_answered_in_time(&later);
    assert!(
        later.contains("The target is not running"),
        "the later gdb was told its domain is gone:\n{later}"
    );
    control.send(Command::Continue).expect("continue");
    let started = Instant::now();
    while !session.is_done() {
        let _ = session.next_within(Some(Duration::from_millis(50)));
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the lab did not end once the host let it go"
        );
    }
}

/// gdb's `x` on a page of lazy RAM the guest has not touched yet shows the zeros the page
/// will hold and leaves it unmapped: the guest's first touch is still the nested page fault
/// the lab expects (gdb's read used to map it, and that fault went missing). At the first
/// instruction RDI points to the boot info, whose `free_start` (offset 24) is the first page
/// the `lazy-memory` guest touches.
#[test]
fn gdb_reads_an_untouched_lazy_page_as_zeros_and_leaves_it_for_the_guest() {
    let lab = Lab::start_with(&["lazy-memory", "--json"]);
    let output = lab.gdb(&["x/2xg *(unsigned long long *)($rdi + 24)", "continue"]);
    assert_answered_in_time(&output);
    assert!(
        output
            .lines()
            .any(|line| line.ends_with(":\t0x0000000000000000\t0x0000000000000000")),
        "gdb read the untouched page's zeros:\n{output}"
    );
    assert!(output.contains("exited normally"), "{output}");
    let (status, trace) = lab.finish();
    assert_eq!(status, 0);
    assert_the_labs_flow("lazy-memory", &Lab::events(&trace), "after gdb's read");
}

#[test]
fn the_trace_shows_the_guest_s_code_not_gdb_s_int3s() {
    // gdb's breakpoint on the instruction after a CPUID: the CPUID's exit reads 15 bytes at
    // RIP, gdb's `int3` among them. The trace shows the guest's byte there, as gdb's own
    // reads do; the TUI would take an `int3` for the guest changing its code.
    let lab = Lab::start_with(&["cpuid", "--json"]);
    let output = lab.gdb(&[
        "break cpuid::main",
        "continue",
        "set language c",
        "set $steps = 0",
        STEP_TO_THE_FIRST_CPUID,
        "x/i $pc",
        "break *($pc + 2)",
        "continue",
        "delete",
        "continue",
    ]);
    assert!(
        output.contains("cpuid"),
        "the loop reached the CPUID: {output}"
    );
    assert!(output.contains("exited normally"), "{output}");
    let (_, trace) = lab.finish();
    let events = Lab::events(&trace);
    use traplab_abi::event::Body;
    let insn = events
        .iter()
        .find_map(|event| match &event.body {
            Body::Exit(exit) if exit.exitcode == 0x72 && exit.regs.rax == 1 => Some(exit.insn),
            _ => None,
        })
        .expect("the CPUID of leaf 1 exited");
    let bytes = insn.as_slice();
    assert_eq!(&bytes[..2], [0x0f, 0xa2]);
    assert_ne!(bytes[2], 0xcc, "gdb's int3 after the CPUID: {bytes:02x?}");
}

#[test]
fn gdb_s_kill_is_answered_while_the_other_domains_run_on() {
    // gdb sends `vKill;1` (the stub offers multiprocess) and waits for its `OK`; d2 lives on
    // after d1 is killed, so nothing else would end gdb's wait.
    let lab = Lab::start_with(&["event-channel"]);
    let output = lab.gdb(&["kill"]);
    assert!(
        output.contains("[Inferior 1 (process 1) killed]"),
        "{output}"
    );
    let (status, trace) = lab.finish();
    assert_eq!(status, 137, "a domain was killed: {trace}");
}

/// gdb stops its domain while another domain traps, and kills it: the end is recorded
/// between that domain's traps, not inside one. d1 (`long-halt`) halts for ten seconds; d2
/// (`spin`) runs meanwhile, and the hypervisor answers gdb at d2's exits (its timer's). The
/// Ctrl-C and the `kill` are taken there: d1's end used to be recorded between d2's `exit`
/// and its `decide`, inside d2's trap, where no reader of the trace looks for it.
#[test]
fn a_kill_taken_while_another_domain_traps_is_recorded_between_its_traps() {
    use std::sync::mpsc;
    use traplab_abi::event::{Body, DomainState, Event};
    use traplab_tracer::qemu::Start;
    use traplab_tracer::session::{Item, Options, Session};
    const HLT: u64 = 0x78;
    let mut machine = traplab_labs::machine_for(&["long-halt", "spin"]);
    machine.start = Start::Together;
    machine.gdb_port = Some(0);
    let options = Options {
        timeout: Some(Duration::from_secs(240)),
        ..Options::default()
    };
    let mut session = Session::start(&machine, options).expect("QEMU starts");
    let port = session.gdb_port().expect("a port for gdb");
    let (d1_halted_and_d2_traps, go) = mpsc::channel();
    let (kill_seen, hang_up) = mpsc::channel::<()>();
    let gdb = std::thread::spawn(move || {
        let mut socket = connect(port);
        wait_for_the_stub(&mut socket);
        socket.write_all(&packet("c")).expect("continue");
        read_until(&mut socket, "+");
        go.recv_timeout(Duration::from_secs(120))
            .expect("d1 halted and d2 trapped after it");
        socket.write_all(b"\x03").expect("Ctrl-C");
        read_until_within(&mut socket, "$S02", Duration::from_secs(60));
        socket.write_all(b"+").expect("ack");
        socket.write_all(&packet("k")).expect("kill");
        // Connected until the kill is done, as real gdb stays for its `vKill`'s answer (a
        // hang-up right after a plain `k` is one gdb never makes).
        let _ = hang_up.recv_timeout(Duration::from_secs(120));
    });
    let mut events: Vec<Event> = Vec::new();
    let mut d1_halted = false;
    let mut told = false;
    let started = Instant::now();
    // Until d1 has ended and d2 has trapped after that (`spin` never ends by itself).
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(200),
            "d1 was not killed while d2 ran on: {events:#?}"
        );
        let Some(item) = session.next_within(Some(Duration::from_millis(50))) else {
            continue;
        };
        let event = match item {
            Item::Event(event) => event,
            Item::Finished(finish) => panic!("QEMU finished: {finish:?}"),
            _ => continue,
        };
        if let Body::Exit(exit) = &event.body {
            d1_halted |= event.dom == Some(1) && exit.exitcode == HLT;
            if d1_halted && event.dom == Some(2) && !told {
                d1_halted_and_d2_traps
                    .send(())
                    .expect("the gdb thread waits");
                told = true;
            }
        }
        let d1_ended = events.iter().any(|event| {
            event.dom == Some(1)
                && matches!(&event.body, Body::Domain(change) if change.state == DomainState::Killed)
        });
        let d2_decided = event.dom == Some(2) && matches!(event.body, Body::Decide(_));
        events.push(event);
        if d1_ended && d2_decided {
            break;
        }
    }
    let _ = kill_seen.send(());
    gdb.join().expect("the gdb thread");
    for (index, event) in events.iter().enumerate() {
        if let Body::Exit(_) = event.body {
            let next = events.get(index + 1);
            assert!(
                next.is_some_and(
                    |next| next.dom == event.dom && matches!(next.body, Body::Decide(_))
                ),
                "the exit {} of d{:?} is followed by {next:?}, not by its decide",
                event.seq,
                event.dom
            );
        }
    }
}

#[test]
fn gdb_s_hardware_slots_give_the_guest_its_own_dr0_back() {
    // Stopped between the guest's `mov dr0` and its `mov dr7`: gdb takes all four slots
    // (slot 0 is free, the guest has not enabled it yet) and gives them back. The guest's
    // DR0, which its own MOV put in the CPU, must come back with slot 0: its breakpoint then
    // fires as if gdb had never been there.
    let lab = Lab::start_with(&["debug"]);
    let output = lab.gdb(&[
        "break debug::main",
        "continue",
        // The first `0f 23` (MOV to a debug register) in main is its `mov dr0`: run it.
        "find /1b debug::main, +4096, 0x0f, 0x23",
        "break *$_",
        "continue",
        "stepi",
        // gdb inserts its breakpoints for the next step, in all four slots, and takes them
        // out when the step stops.
        "hbreak *0x1000",
        "hbreak *0x2000",
        "hbreak *0x3000",
        "hbreak *0x4000",
        "stepi",
        "delete",
        "continue",
    ]);
    assert!(output.contains("exited normally"), "{output}");
    let (_, trace) = lab.finish();
    assert!(
        trace.contains("#DB breakpoint 0 at "),
        "the guest's own breakpoint fired: {trace}"
    );
}

#[test]
fn a_stepi_over_a_hypercall_that_switches_domains_stops_right_after_it() {
    // d1's EVTCHNOP_send wakes d2, and d1 leaves the CPU at that exit. The step is done
    // there (RIP past the VMMCALL): gdb must be told then, not at d1's next exit, one
    // instruction later.
    let lab = Lab::start("event-channel");
    let output = lab.gdb(&[
        "break traplab_guests::evtchn::send",
        "continue",
        "set language c",
        "set $steps = 0",
        "while (*(unsigned int *)$pc & 0xffffff) != 0xd9010f && $steps < 500\n stepi\n set $steps = $steps + 1\nend",
        "x/i $pc",
        "set $at = $pc",
        "stepi",
        "printf \"stepped %d bytes\\n\", $pc - $at",
        "delete",
        "continue",
    ]);
    assert!(
        output.contains("vmmcall"),
        "the step reached the VMMCALL: {output}"
    );
    assert!(output.contains("stepped 3 bytes"), "{output}");
    assert!(output.contains("exited normally"), "{output}");
    lab.finish();
}

#[test]
fn a_stepi_over_the_guest_s_own_single_step_leaves_it_its_debug_trap() {
    // The `debug` guest sets TF with POPF: the CPU traps after the NOP that follows, with
    // DR6.BS, and its handler says where. gdb stops on that NOP and steps it: the #DB is the
    // guest's as much as gdb's, and the guest's handler must still see it right after the
    // NOP (gdb's step ends in that handler), not one instruction later.
    let lab = Lab::start("debug");
    let output = lab.gdb(&[
        "break debug::main",
        "continue",
        "find /1b debug::main, +4096, 0x9d, 0x90",
        "printf \"nop at %#lx\\n\", $_ + 1",
        "break *($_ + 1)",
        "continue",
        "stepi",
        "delete",
        "continue",
    ]);
    assert!(output.contains("exited normally"), "{output}");
    let nop = output
        .lines()
        .find_map(|line| line.strip_prefix("nop at 0x"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or_else(|| panic!("gdb found the POPF; NOP: {output}"));
    let (_, trace) = lab.finish();
    assert!(
        trace.contains(&format!("#DB single step, now at {:#x}", nop + 1)),
        "the guest's own step trapped right after the NOP: {trace}"
    );
}

#[test]
fn a_watchpoint_on_16_bytes_takes_two_slots_and_fires() {
    // A debug register watches at most 8 bytes; gdb sends the 16-byte range whole (`Z2`),
    // and the stub splits it over two slots, as gdbserver does.
    let lab = Lab::start("page-fault");
    let output = lab.gdb(&[
        "set language c",
        "watch *(char (*)[16])0x40000000",
        "continue",
        "delete",
        "continue",
    ]);
    assert!(
        output.contains("Hardware watchpoint 1: *(char (*)[16])0x40000000"),
        "{output}"
    );
    assert!(
        !output.contains("Could not insert"),
        "the stub took the range: {output}"
    );
    assert!(
        output.contains("New value = "),
        "the watchpoint fired: {output}"
    );
    assert!(output.contains("exited normally"), "{output}");
    assert_eq!(lab.finish().0, 0);
}

#[test]
fn a_stepi_onto_the_guest_s_own_breakpoint_leaves_it_a_debug_trap_without_bs() {
    // gdb steps the `debug` guest's `mov dr7` that enables its breakpoint on the next
    // instruction: the #DB after the step carries the guest's B0 with gdb's BS. It is the
    // guest's, and it gets it without gdb's BS (it had no TF): its handler says
    // "breakpoint 0", not "single step".
    let lab = Lab::start("debug");
    let output = lab.gdb(&[
        "break debug::main",
        "continue",
        // The last `0f 23` (MOV to a debug register) in main is its `mov dr7, reg`.
        "find /b debug::main, +4096, 0x0f, 0x23",
        "printf \"nop at %#lx\\n\", $_ + 3",
        "break *$_",
        "continue",
        "stepi",
        "delete",
        "continue",
    ]);
    assert!(output.contains("exited normally"), "{output}");
    let nop = output
        .lines()
        .find_map(|line| line.strip_prefix("nop at 0x"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or_else(|| panic!("gdb found the MOV to DR7: {output}"));
    let (_, trace) = lab.finish();
    assert!(
        !trace.contains(&format!("#DB single step, now at {nop:#x}")),
        "gdb's BS reached the guest: {trace}"
    );
    assert!(
        trace.contains(&format!("#DB breakpoint 0 at {nop:#x}")),
        "{trace}"
    );
}

/// The hex number after `prefix` on a line of gdb's `output` (a `printf "… %#lx"`).
fn printed(output: &str, prefix: &str) -> u64 {
    output
        .lines()
        .find_map(|line| line.strip_prefix(prefix))
        .and_then(|hex| u64::from_str_radix(hex.trim().trim_start_matches("0x"), 16).ok())
        .unwrap_or_else(|| panic!("no {prefix:?} in gdb's output:\n{output}"))
}

#[test]
fn a_stepi_over_syscall_and_sysret_stops_after_each_and_leaves_no_tf_in_the_guest() {
    // SYSCALL saves RFLAGS in R11 and clears what SFMASK names (TF, in this guest as in
    // Linux); SYSRET loads RFLAGS from R11. A step's TF in RFLAGS alone would not stop after
    // SYSCALL, and R11 would carry it to SYSRET and into the user code (a #DB the guest
    // never asked for: it would end with 129). The step over SYSCALL must stop on the
    // entry's first instruction, R11 holding the user's own RFLAGS; the step over SYSRET on
    // the instruction after the SYSCALL, RFLAGS as R11 held them.
    let lab = Lab::start_with(&["--guest", "syscall-step", "--json"]);
    let output = lab.gdb(&[
        "break *syscall_at",
        "continue",
        "delete",
        "stepi",
        "info symbol $pc",
        "printf \"r11 after syscall %#lx\\n\", $r11",
        "printf \"rflags after syscall %#lx\\n\", $eflags",
        // The entry's TEST and JNZ (RAX 0: not the SFMASK request), then its two MOVs.
        "stepi 4",
        "info symbol $pc",
        "printf \"r11 before sysret %#lx\\n\", $r11",
        "stepi",
        "info symbol $pc",
        "printf \"rflags after sysret %#lx\\n\", $eflags",
        "printf \"r11 after sysret %#lx\\n\", $r11",
        "continue",
    ]);
    assert_answered_in_time(&output);
    let entry = output
        .find("syscall_entry in section")
        .unwrap_or_else(|| panic!("the step over SYSCALL stopped at the entry:\n{output}"));
    let sysret = output[entry..]
        .find("sysret_at in section")
        .unwrap_or_else(|| panic!("four steps on, the SYSRET:\n{output}"));
    assert!(
        output[entry + sysret..].contains("after_sysret in section"),
        "the step over SYSRET stopped right after the SYSCALL:\n{output}"
    );
    const TF: u64 = 0x100;
    let saved = printed(&output, "r11 after syscall ");
    assert_eq!(saved & TF, 0, "gdb's TF in R11: {saved:#x}");
    let kernel = printed(&output, "rflags after syscall ");
    assert_eq!(
        kernel & TF,
        0,
        "gdb's TF in the kernel's RFLAGS: {kernel:#x}"
    );
    let held = printed(&output, "r11 before sysret ");
    assert_eq!(held, saved, "the entry left R11 alone");
    assert_eq!(
        printed(&output, "rflags after sysret "),
        held,
        "RFLAGS after SYSRET are R11's"
    );
    assert_eq!(printed(&output, "r11 after sysret "), held);
    assert!(output.contains("exited normally"), "{output}");
    let (status, trace) = lab.finish();
    // 3: the guest's second SYSCALL read an SFMASK the step did not give back.
    assert_eq!(
        status, 0,
        "no TF reached the guest, and SFMASK is its own again:\n{trace}"
    );
    // Nor the trace: the exits of gdb's steps (#DB, exit code 0x41) show the guest's own
    // RFLAGS and R11, the step taken out before they are recorded.
    let steps: Vec<_> = Lab::events(&trace)
        .into_iter()
        .filter_map(|event| match event.body {
            traplab_abi::event::Body::Exit(exit) if exit.exitcode == 0x41 => Some(exit),
            _ => None,
        })
        .collect();
    assert_eq!(steps.len(), 6, "six steps, six #DB exits:\n{trace}");
    for exit in steps {
        assert_eq!(exit.rflags & TF, 0, "gdb's TF in a recorded exit: {exit:?}");
        assert_eq!(
            exit.regs.r11 & TF,
            0,
            "gdb's TF in a recorded R11: {exit:?}"
        );
    }
}

/// gdb's `qSupported`, as gdb 13 sends it (the features that matter here).
const GDB_S_QSUPPORTED: &str = "qSupported:multiprocess+;swbreak+;hwbreak+;qRelocInsn+;fork-events+;vfork-events+;exec-events+;vContSupported+;QThreadEvents+;no-resumed+;memory-tagging+;xmlRegisters=i386";

#[test]
fn a_refused_packet_keeps_what_gdb_negotiated() {
    // gdb and the stub agree on `multiprocess+`: every thread id names its process then
    // (`thread:p01.01`). A packet the stub refuses (E01) replaces gdbstub's state machine, and
    // the new one must still know it (it used to answer `thread:01`, for gdb another
    // process's thread).
    let lab = Lab::start_with(&["hello", "--verbose"]);
    let mut socket = lab.connect();
    wait_for_the_stub(&mut socket);
    let mut pending = Vec::new();
    exchange(&mut socket, &mut pending, GDB_S_QSUPPORTED, |data| {
        data.starts_with("PacketSize")
    });
    let stopped = exchange(&mut socket, &mut pending, "?", |data| data.starts_with('T'));
    assert!(stopped.contains("thread:p"), "multiprocess form: {stopped}");
    let refused = exchange(&mut socket, &mut pending, "Gzz", |data| {
        data.starts_with('E')
    });
    assert_eq!(refused, "E01");
    // The next packet is the answer to `?`: the new state machine's answer to the
    // `qSupported` it was told again stays in the hypervisor.
    socket.write_all(&packet("?")).expect("send");
    let stopped = next_packet(&mut socket, &mut pending);
    assert!(
        stopped.starts_with('T') && stopped.contains("thread:p"),
        "still the multiprocess form after the refusal: {stopped}"
    );
    socket.write_all(&packet("c")).expect("continue");
    let (status, trace) = lab.finish();
    assert_eq!(status, 0, "the guest ran to its end after `c`");
    assert!(!trace.contains("session dropped"), "{trace}");
}

#[test]
fn a_refused_qsupported_is_answered_once_and_so_is_every_later_packet() {
    // gdbstub refuses a feature list with an empty item (`;;`). The refusal is one E01; the
    // stub must not keep that `qSupported` as what gdb negotiated: told again to the state
    // machine that replaces the refused one, it was refused again and answered a second E01
    // (gdb would take it for the answer to its next packet), and so at every later refusal.
    // Each packet's first answer is read in order: a stray E01 would come before it.
    let lab = Lab::start_with(&["hello", "--verbose"]);
    let mut socket = lab.connect();
    wait_for_the_stub(&mut socket);
    let mut pending = Vec::new();
    socket
        .write_all(&packet("qSupported:multiprocess+;;swbreak+"))
        .expect("send");
    assert_eq!(next_packet(&mut socket, &mut pending), "E01");
    socket.write_all(&packet("?")).expect("send");
    let stopped = next_packet(&mut socket, &mut pending);
    assert!(stopped.starts_with('T'), "the answer to `?`: {stopped}");
    // A good `qSupported` now, then a refused packet: one E01 again, and `?` answered.
    socket.write_all(&packet(GDB_S_QSUPPORTED)).expect("send");
    let supported = next_packet(&mut socket, &mut pending);
    assert!(supported.starts_with("PacketSize"), "{supported}");
    for _ in 0..2 {
        socket.write_all(&packet("Gzz")).expect("send");
        assert_eq!(next_packet(&mut socket, &mut pending), "E01");
        socket.write_all(&packet("?")).expect("send");
        let stopped = next_packet(&mut socket, &mut pending);
        assert!(
            stopped.starts_with('T') && stopped.contains("thread:p"),
            "the answer to `?`, with what the good qSupported negotiated: {stopped}"
        );
    }
    socket.write_all(&packet("c")).expect("continue");
    let (status, trace) = lab.finish();
    assert_eq!(status, 0, "the guest ran to its end after `c`");
    assert!(!trace.contains("session dropped"), "{trace}");
}

/// gdb's command that keeps it from sending `P` (GDB manual, "Remote Configuration",
/// `set-register-packet`): it writes every register with `G` then, as before the stub had
/// `P`.
const WRITE_WITH_G: &str = "set remote set-register-packet off";

/// What gdb says when the stub refuses a register write with EINVAL: for a `G`, or for the
/// `P` of register `name`.
fn refused_write(name: Option<&str>) -> String {
    match name {
        None => "Could not write registers; remote failure reply 'E16'".to_string(),
        Some(name) => format!("Could not write register \"{name}\"; remote failure reply 'E16'"),
    }
}

#[test]
fn a_selector_gdb_sets_is_refused_and_the_other_registers_are_written() {
    // gdb told to write registers with `G` (all of them). A selector alone is no segment
    // (the CPU loads its descriptor, with checks): a `G` that changes one is refused whole,
    // and gdb says so; one that leaves them as they are is written.
    let lab = Lab::start("hello");
    let output = lab.gdb(&[
        WRITE_WITH_G,
        "printf \"ds before %#x\\n\", $ds",
        "python\ntry:\n    gdb.execute(\"set $ds = 0x2b\")\nexcept gdb.error as error:\n    print(\"refused:\", error)\nend",
        "printf \"ds after %#x\\n\", $ds",
        "set $saved = $rbx",
        "set $rbx = 0x1234",
        "printf \"rbx after %#lx\\n\", $rbx",
        "set $rbx = $saved",
        "continue",
    ]);
    assert_answered_in_time(&output);
    assert!(
        output.contains(&format!("refused: {}", refused_write(None))),
        "{output}"
    );
    assert_eq!(
        printed(&output, "ds after "),
        printed(&output, "ds before "),
        "{output}"
    );
    assert_eq!(printed(&output, "rbx after "), 0x1234, "{output}");
    assert!(output.contains("exited normally"), "{output}");
    assert_eq!(lab.finish().0, 0);
}

/// What gdb's `maintenance packet` commands in `output` sent and received, in order.
fn maintenance_packets(output: &str) -> Vec<(String, String)> {
    let mut packets = Vec::new();
    let mut lines = output.lines();
    while let Some(line) = lines.next() {
        if let Some(sent) = line.strip_prefix("sending: ")
            && let Some(received) = lines.next().and_then(|line| {
                line.strip_prefix("received: \"")
                    .and_then(|rest| rest.strip_suffix('"'))
            })
        {
            packets.push((sent.to_string(), received.to_string()));
        }
    }
    packets
}

/// gdb's remote debug log line for a packet it sent (`set debug remote 1`).
fn sent(body: &str) -> String {
    format!("Sending packet: ${body}#")
}

#[test]
fn set_writes_one_register_with_p_and_p_reads_what_g_does() {
    // The stub answers `P`: gdb writes the one register the user sets with it, never a `G`
    // of every register; a `P` goes through the checks a `G` does (a selector is refused,
    // and gdb names the register); `p` answers the bytes `g` has for the register, and a
    // number the target description does not have is an error, E16, not the empty answer
    // (which would tell gdb the stub has no `p` or `P`).
    let lab = Lab::start("hello");
    let output = lab.gdb(&[
        "printf \"ds before %#x\\n\", $ds",
        "set $saved_rax = $rax",
        "set $saved_r12 = $r12",
        "set debug remote 1",
        "set $rax = 0x1122334455667788",
        "set $r12 = 0x42",
        "set $saved_fop = $fop",
        "set $fop = 0x123",
        "python\nfor value in [\"$ds = 0x2b\", \"$cr8 = 16\", \"$fs_base = 0x8000000000000000\"]:\n    try:\n        gdb.execute(\"set \" + value)\n    except gdb.error as error:\n        print(\"refused:\", value, error)\nend",
        "set debug remote 0",
        "maintenance flush register-cache",
        "printf \"rax read back %#lx\\n\", $rax",
        "printf \"r12 read back %#lx\\n\", $r12",
        "printf \"fop read back %#x\\n\", $fop",
        "set $fop = $saved_fop",
        "printf \"ds after %#x\\n\", $ds",
        // gdb's numbers, in hex: rax 0, r12 12, ds 20, st0 24, xmm0 40, mxcsr 56,
        // k_gs_base 59, cr8 64, efer 65; 66 is none.
        "maintenance packet g",
        "maintenance packet p0",
        "maintenance packet pc",
        "maintenance packet p14",
        "maintenance packet p18",
        "maintenance packet p28",
        "maintenance packet p38",
        "maintenance packet p3b",
        "maintenance packet p40",
        "maintenance packet p41",
        "maintenance packet p42",
        "maintenance packet P42=0000000000000000",
        // A value of the wrong length for the register.
        "maintenance packet P0=00",
        "set $rax = $saved_rax",
        "set $r12 = $saved_r12",
        "continue",
    ]);
    assert_answered_in_time(&output);
    assert!(output.contains(&sent("P0=8877665544332211")), "{output}");
    assert!(output.contains(&sent("Pc=4200000000000000")), "{output}");
    assert!(output.contains(&sent("P14=2b000000")), "{output}");
    // (`sent` ends at the `#` before the checksum: a `G`'s registers come before it.)
    assert!(!output.contains("Sending packet: $G"), "no `G`:\n{output}");
    assert_eq!(printed(&output, "rax read back "), 0x1122_3344_5566_7788);
    assert_eq!(printed(&output, "r12 read back "), 0x42);
    // The x87 last opcode goes into the FXSAVE image, as every register but the selectors:
    // written, it reads back (gdb's cache flushed: the stub's answer).
    assert!(output.contains(&sent("P27=23010000")), "{output}");
    assert_eq!(printed(&output, "fop read back "), 0x123);
    for (value, name) in [
        ("$ds = 0x2b", "ds"),
        ("$cr8 = 16", "cr8"),
        ("$fs_base = 0x8000000000000000", "fs_base"),
    ] {
        assert!(
            output.contains(&format!("refused: {value} {}", refused_write(Some(name)))),
            "{output}"
        );
    }
    assert_eq!(
        printed(&output, "ds after "),
        printed(&output, "ds before "),
        "{output}"
    );
    // What `p` answers is the register's slice of what `g` answers (byte offsets: 16
    // general registers and RIP of 8 bytes, EFLAGS and 6 selectors of 4, 8 STn of 10, 8
    // x87 words of 4, 16 XMMn of 16, MXCSR, then the system registers of 8).
    let answers = maintenance_packets(&output);
    let answer = |sent: &str| {
        answers
            .iter()
            .find(|(packet, _)| packet == sent)
            .map(|(_, received)| run_length_decoded(received))
            .unwrap_or_else(|| panic!("no answer to {sent}:\n{output}"))
    };
    let g = answer("g");
    for (sent, offset, size) in [
        ("p0", 0, 8),
        ("pc", 12 * 8, 8),
        ("p14", 0x94, 4),
        ("p18", 0xa4, 10),
        ("p28", 0x114, 16),
        ("p38", 0x214, 4),
        ("p3b", 0x228, 8),
        ("p40", 0x250, 8),
        ("p41", 0x258, 8),
    ] {
        assert_eq!(
            answer(sent),
            g[2 * offset..2 * (offset + size)],
            "{sent}: {g}"
        );
    }
    assert_eq!(answer("p0"), "8877665544332211");
    assert_eq!(answer("pc"), "4200000000000000");
    assert_eq!(
        output.matches("received: \"E16\"").count(),
        3,
        "p and P of register 66 and a P of the wrong length:\n{output}"
    );
    assert!(output.contains("exited normally"), "{output}");
    assert_eq!(lab.finish().0, 0);
}

#[test]
fn the_stub_offers_no_fork_events() {
    // A domain never forks: the stub reports no fork, vfork or vforkdone stops, and must
    // not offer them (gdbstub does unless the target says otherwise).
    let lab = Lab::start_with(&["hello"]);
    let mut socket = lab.connect();
    wait_for_the_stub(&mut socket);
    let mut pending = Vec::new();
    let supported = exchange(&mut socket, &mut pending, GDB_S_QSUPPORTED, |data| {
        data.starts_with("PacketSize")
    });
    assert!(supported.contains("multiprocess+"), "{supported}");
    assert!(!supported.contains("fork-events"), "{supported}");
    assert!(!supported.contains("vforkdone-events"), "{supported}");
    socket.write_all(&packet("c")).expect("continue");
    assert_eq!(lab.finish().0, 0);
}

/// The values a `G` or a `P` may not write: the CPU refuses each (#GP), VMRUN would not.
const REFUSED_REGISTER_VALUES: [&str; 4] = [
    "$cr8 = 16",
    "$k_gs_base = 0x800000000000",
    "$fs_base = 0x8000000000000000",
    "$gs_base = 0x800000000000",
];

#[test]
fn k_gs_base_and_cr8_are_read_and_written_where_the_cpu_keeps_them() {
    k_gs_base_and_cr8_written_with(Packet::G);
}

#[test]
fn k_gs_base_and_cr8_are_written_with_p_as_with_g() {
    k_gs_base_and_cr8_written_with(Packet::P);
}

/// How gdb writes a register: `G` (every register), or `P` (the one).
#[derive(Clone, Copy, PartialEq)]
enum Packet {
    G,
    P,
}

fn k_gs_base_and_cr8_written_with(packet: Packet) {
    // KernelGSbase is in the VMCB's state save area, CR8 is V_TPR in its control area; gdb
    // reads and writes both, and a value the CPU refuses (CR8 above 15, a non-canonical
    // FS, GS or KernelGS base) is refused as a selector is. The CR8 gdb writes is the local
    // APIC's task priority too: the guest reads its TPR and exits with it.
    let lab = Lab::start_with(&["--guest", "cr8-tpr"]);
    let refusals = format!(
        "python\nfor value in {REFUSED_REGISTER_VALUES:?}:\n    try:\n        gdb.execute(\"set \" + value)\n    except gdb.error as error:\n        print(\"refused:\", value, error)\nend"
    );
    let write_with = if packet == Packet::G {
        WRITE_WITH_G
    } else {
        ""
    };
    let output = lab.gdb(&[
        write_with,
        "info registers k_gs_base cr8",
        "printf \"fs_base before %#lx\\n\", $fs_base",
        "printf \"gs_base before %#lx\\n\", $gs_base",
        "set $k_gs_base = 0xffff800000001000",
        "set $cr8 = 5",
        "maintenance flush register-cache",
        "printf \"k_gs_base read back %#lx\\n\", $k_gs_base",
        "printf \"cr8 read back %#lx\\n\", $cr8",
        &refusals,
        "maintenance flush register-cache",
        "printf \"cr8 after the refusal %#lx\\n\", $cr8",
        "printf \"fs_base after the refusal %#lx\\n\", $fs_base",
        "printf \"gs_base after the refusal %#lx\\n\", $gs_base",
        "set $k_gs_base = 0",
        "continue",
    ]);
    assert_answered_in_time(&output);
    assert_eq!(register(&output, "k_gs_base"), Some(0), "{output}");
    assert_eq!(register(&output, "cr8"), Some(0), "{output}");
    assert_eq!(
        printed(&output, "k_gs_base read back "),
        0xffff_8000_0000_1000
    );
    assert_eq!(printed(&output, "cr8 read back "), 5);
    for refused in REFUSED_REGISTER_VALUES {
        // `$cr8 = 16`: the `P` of cr8.
        let name = refused
            .trim_start_matches('$')
            .split_whitespace()
            .next()
            .filter(|_| packet == Packet::P);
        assert!(
            output.contains(&format!("refused: {refused} {}", refused_write(name))),
            "{output}"
        );
    }
    assert_eq!(printed(&output, "cr8 after the refusal "), 5, "{output}");
    for base in ["fs_base", "gs_base"] {
        assert_eq!(
            printed(&output, &format!("{base} after the refusal ")),
            printed(&output, &format!("{base} before ")),
            "{output}"
        );
    }
    // CR8 5 is TPR 0x50 (CR8 is TPR bits 7:4); gdb prints a status in octal.
    assert!(output.contains("exited with code 0120"), "{output}");
    let (status, trace) = lab.finish();
    assert_eq!(
        status, 0x50,
        "the guest's TPR after gdb wrote CR8 5:\n{trace}"
    );
}
