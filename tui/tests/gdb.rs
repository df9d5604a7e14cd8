//! gdb attached to a live lab through the hypervisor's gdbstub: real `traplab gdb`, real
//! QEMU, real gdb (Debian's) in batch mode.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A lab started with `traplab gdb`, its guest stopped, waiting for gdb.
struct Lab {
    child: Child,
    port: u16,
    elf: PathBuf,
    /// The trace traplab prints, read as it comes (a full pipe would stall the lab).
    trace: Option<std::thread::JoinHandle<String>>,
}

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

impl Lab {
    fn start(lab: &str) -> Lab {
        Lab::start_with(&[lab])
    }

    /// `traplab gdb ARGS… --port P`.
    fn start_with(arguments: &[&str]) -> Lab {
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_traplab"))
            .arg("gdb")
            .args(arguments)
            .args(["--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("traplab runs");
        // The attach hint is the first thing on stderr: "  gdb -q ELF -ex 'target remote …'".
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let mut elf = None;
        let mut line = String::new();
        while elf.is_none() && stderr.read_line(&mut line).is_ok_and(|read| read > 0) {
            if let Some(rest) = line.trim().strip_prefix("gdb -q ") {
                elf = rest.split_whitespace().next().map(PathBuf::from);
            }
            line.clear();
        }
        // Keep draining stderr so that traplab never blocks on it.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        let elf = elf.expect("traplab gdb prints the gdb command line");
        assert!(elf.is_file(), "{} is the guest ELF", elf.display());
        let mut stdout = child.stdout.take().expect("stdout");
        let trace = std::thread::spawn(move || {
            let mut trace = String::new();
            let _ = stdout.read_to_string(&mut trace);
            trace
        });
        Lab {
            child,
            port,
            elf,
            trace: Some(trace),
        }
    }

    /// The events of the trace (started with `--json`).
    fn events(trace: &str) -> Vec<traplab_abi::event::Event> {
        trace
            .lines()
            .map(|line| traplab_tracer::json::from_line(line).expect("a JSON Lines trace"))
            .collect()
    }

    /// A raw connection to the gdb port (QEMU opens it a moment after it starts).
    fn connect(&self) -> TcpStream {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match TcpStream::connect(("127.0.0.1", self.port)) {
                Ok(socket) => return socket,
                Err(error) if Instant::now() > deadline => panic!("the gdb port: {error}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Run gdb in batch mode with these commands (from a script file, so that `while` …
    /// `end` blocks work); its whole output.
    fn gdb(&self, commands: &[&str]) -> String {
        let script = std::env::temp_dir().join(format!(
            "traplab-gdb-test-{}-{}.gdb",
            std::process::id(),
            self.port
        ));
        let mut text = format!("target remote 127.0.0.1:{}\n", self.port);
        for line in commands {
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write(&script, text).expect("write the gdb script");
        let output = Command::new("gdb")
            .args(["-q", "-batch", "-nx"])
            .arg(&self.elf)
            .arg("-x")
            .arg(&script)
            .stdin(Stdio::null())
            .output()
            .expect("gdb runs (apt-get install gdb)");
        let _ = std::fs::remove_file(&script);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        eprintln!("--- gdb said:\n{text}---");
        text
    }

    /// Wait for traplab to end; its exit status and the trace it printed.
    fn finish(mut self) -> (i32, String) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                let trace = self
                    .trace
                    .take()
                    .expect("the trace reader")
                    .join()
                    .expect("the trace");
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

#[test]
fn malformed_and_oversized_packets_do_not_hurt_the_hypervisor() {
    let lab = Lab::start_with(&["hello", "--verbose"]);
    let mut socket = lab.connect();
    // A packet far larger than the stub's buffer: the session is dropped, and the guest,
    // no longer held by a debugger, runs on.
    let mut oversized = b"$M200000,8000:".to_vec();
    oversized.extend(std::iter::repeat_n(b'a', 64 * 1024));
    oversized.extend(b"#00");
    // QEMU may stop reading once the guest has gone: a refused write is fine here.
    let _ = socket.write_all(&oversized);
    let _ = socket.write_all(b"$g#00\xff\xfe garbage");
    let (status, trace) = lab.finish();
    assert_eq!(
        status, 0,
        "the hypervisor lived on and the guest ran to its end"
    );
    assert!(
        trace.contains("gdb: session dropped"),
        "the hypervisor says why it dropped the session"
    );
    assert!(trace.contains("hello exited with status 0"));
    assert!(trace.contains("none lost"));
    drop(socket);
}

#[test]
fn a_bad_checksum_drops_the_session_too() {
    let lab = Lab::start_with(&["hello", "--verbose"]);
    let mut socket = lab.connect();
    socket.write_all(b"$g#00").expect("send");
    let (status, trace) = lab.finish();
    assert_eq!(status, 0);
    assert!(trace.contains("gdb: session dropped: "), "{trace}");
    drop(socket);
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
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("a timeout");
    let deadline = Instant::now() + Duration::from_secs(10);
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

#[test]
fn ctrl_c_stops_a_guest_that_spins_without_exits_and_kill_ends_it() {
    // `spin` never exits on its own: only the hypervisor's timer (INTR exits) lets the stub
    // see gdb's interrupt byte.
    let lab = Lab::start_with(&["--guest", "spin"]);
    let mut socket = lab.connect();
    // The stub answers once the hypervisor has booted; like gdb, ask again until it does.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        socket.write_all(&packet("?")).expect("send");
        if read_for(&mut socket, Duration::from_millis(500)).contains("$T05") {
            break;
        }
        assert!(Instant::now() < deadline, "the stub never answered");
    }
    socket.write_all(b"+").expect("ack");
    socket.write_all(&packet("c")).expect("continue");
    std::thread::sleep(Duration::from_millis(500));
    socket.write_all(b"\x03").expect("Ctrl-C");
    // S02: stopped by SIGINT.
    read_until(&mut socket, "$S02");
    socket.write_all(b"+").expect("ack");
    socket.write_all(&packet("k")).expect("kill");
    let (status, trace) = lab.finish();
    assert_eq!(status, 137, "the domain was killed from gdb");
    assert!(trace.contains("spin KILLED: killed from gdb"), "{trace}");
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
        let catalogue = traplab_labs::find(lab_id)
            .expect("the catalogue")
            .expect("the lab");
        let symbols =
            traplab_tracer::symbols::Symbols::load(&traplab_labs::guest_elf(&catalogue.guests[0]))
                .expect("symbols");
        let events = Lab::events(&trace);
        if let Err(mismatch) = traplab_labs::expect::check(&catalogue.expect, &events, &symbols) {
            panic!("{lab_id} with gdb attached: {mismatch}");
        }
    }
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
