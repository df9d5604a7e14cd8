//! The `traplab` command as a user runs it: real QEMU, real output, real exit statuses.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use traplab_abi::event::Body;
use traplab_tracer::json;

fn traplab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_traplab"))
}

fn run(args: &[&str]) -> Output {
    traplab()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("traplab runs")
}

/// [`run`] in folder `dir` (a tree of its own).
fn run_in(dir: &std::path::Path, args: &[&str]) -> Output {
    traplab()
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("traplab runs")
}

fn temporary(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("traplab-cli-test-{}-{name}", std::process::id()))
}

/// QEMU processes whose RAM file names this traplab process (`/dev/shm/traplab-<pid>-…`).
fn qemu_of(pid: u32) -> Vec<u32> {
    let marker = format!("traplab-{pid}-");
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|process| {
            std::fs::read(format!("/proc/{process}/cmdline"))
                .map(|cmdline| String::from_utf8_lossy(&cmdline).contains(&marker))
                .unwrap_or(false)
        })
        .collect()
}

#[test]
fn list_json_names_every_lab_with_title_and_classes() {
    let output = run(&["list", "--json"]);
    assert!(output.status.success());
    let labs: serde_json::Value = serde_json::from_slice(&output.stdout).expect("a JSON array");
    let labs = labs.as_array().expect("an array");
    let ids: Vec<&str> = labs.iter().filter_map(|lab| lab["id"].as_str()).collect();
    for id in [
        "hello",
        "cpuid",
        "hypercall",
        "invalid-opcode",
        "page-fault",
    ] {
        assert!(ids.contains(&id), "{id} in {ids:?}");
    }
    // A lab for every exception class x86 can raise (issue 3).
    let classes: Vec<&str> = labs
        .iter()
        .flat_map(|lab| lab["classes"].as_array().into_iter().flatten())
        .filter_map(|c| c.as_str())
        .collect();
    for class in [
        "#DE", "#DB", "#BP", "NMI", "#UD", "#NM", "#DF", "#NP", "#SS", "#GP", "#PF", "#MF", "#AC",
        "#XM", "#MC", "#OF", "#BR", "#TS",
    ] {
        assert!(classes.contains(&class), "a lab for {class}");
    }
    for lab in labs {
        assert!(lab["title"].as_str().is_some_and(|title| !title.is_empty()));
        assert!(
            lab["classes"]
                .as_array()
                .is_some_and(|classes| !classes.is_empty()),
            "{lab}"
        );
    }
    // Every lab says whether it has a control domain and how its domains start.
    assert!(
        labs.iter()
            .all(|lab| lab.get("dom0").is_some() && lab["start"].is_string()),
        "dom0 and start in every lab"
    );
    let text = run(&["list"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert_eq!(text.lines().count(), labs.len());
    // Every title starts at one column, and the classes come after it, the long lists
    // (cr-write, other-intercepts, linux-boot) too.
    let title_columns: std::collections::BTreeSet<usize> = text
        .lines()
        .zip(labs)
        .map(|(line, lab)| {
            let title = lab["title"].as_str().expect("a title");
            let start = line.rfind(title).expect("the lab's title on its line");
            let classes: Vec<&str> = lab["classes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|class| class.as_str())
                .collect();
            assert!(
                line.ends_with(&format!("{title}  [{}]", classes.join(" "))),
                "{line}"
            );
            line[..start].chars().count()
        })
        .collect();
    assert_eq!(title_columns.len(), 1, "{text}");
}

#[test]
fn trace_json_is_json_lines_from_seq_0_and_the_status_is_the_guests() {
    let record = temporary("hello.jsonl");
    let output = run(&[
        "trace",
        "hello",
        "--json",
        "--record",
        record.to_str().unwrap(),
    ]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    let events: Vec<_> = stdout
        .lines()
        .map(|line| json::from_line(line).expect("every line is an event"))
        .collect();
    for (seq, event) in events.iter().enumerate() {
        assert_eq!(event.seq, seq as u64);
    }
    assert!(
        stdout
            .lines()
            .all(|line| line.starts_with(r#"{"v":1,"seq":"#))
    );
    assert!(matches!(events.last().map(|e| &e.body), Some(Body::End(_))));
    // The lab's guest is d1, as Xen numbers an unprivileged domain, and the hypervisor
    // switches to it once, to start it.
    let created: Vec<Option<u16>> = events
        .iter()
        .filter(|event| matches!(event.body, Body::Domain(_)))
        .map(|event| event.dom)
        .collect();
    assert_eq!(created[0], Some(1), "the first guest is domain 1");
    assert!(
        events
            .iter()
            .any(|event| matches!(&event.body, Body::Schedule(schedule)
            if schedule.to == Some(1) && schedule.why == traplab_abi::event::ScheduleWhy::Start)),
        "a schedule event starts d1"
    );
    let recorded = traplab_tracer::recording::read(&record).expect("the recording reads");
    assert!(recorded.error.is_none());
    assert_eq!(
        recorded.events, events,
        "--record writes what --json prints"
    );
    // stats of it, with a reader that has gone before it writes (a `| head` that quit):
    // the output ends there, quietly, and the command ends as it would have.
    let mut stats = traplab()
        .args(["stats", record.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("traplab runs");
    drop(stats.stdout.take());
    let stats = stats.wait_with_output().expect("stats ends");
    let stderr = String::from_utf8_lossy(&stats.stderr);
    assert_eq!(stats.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    std::fs::remove_file(record).unwrap();
}

#[test]
fn trace_text_shows_the_reflected_page_fault() {
    let output = run(&["trace", "page-fault"]);
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains(" d1   exit     EXCP_PF at "), "{stdout}");
    assert!(
        stdout.contains(" hv   schedule idle → d1 (start)"),
        "{stdout}"
    );
    assert!(stdout.contains("#PF (page fault), error code 0x2 (W/R), address 0x40000000"));
    assert!(stdout.contains("decide   reflect: "));
    assert!(stdout.contains(
        "inject   #PF (vector 14, Exception, error code 0x2, CR2 0x40000000) -> guest handler 0x"
    ));
    assert!(stdout.contains("console  | the write was retried and worked: read back 42"));
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(
        summary.starts_with("-- page-fault: the guest exited with status 0; ")
            && summary.ends_with(" events, none lost"),
        "{summary}"
    );
}

#[test]
fn a_killed_domain_gives_status_137() {
    let output = run(&["trace", "--guest", "bad-triple-fault"]);
    assert_eq!(output.status.code(), Some(137));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("bad-triple-fault KILLED: triple fault: #GP while delivering #DF"),
        "{stdout}"
    );
}

#[test]
fn qemu_s_own_failure_is_125_and_its_words_not_the_hypervisor_s_done() {
    // QEMU exits 1 on a bad option, the code the hypervisor's "done" makes through
    // isa-debug-exit too: a hypervisor that never set its ring up did not finish.
    let output = run(&["trace", "hello", "--qemu-arg=-no-such-option"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains("-no-such-option: invalid option"),
        "{stderr}"
    );
    assert!(!stderr.contains("every domain ended"), "{stderr}");
}

#[test]
fn a_label_of_hand_written_assembly_covers_its_code_up_to_the_next_symbol() {
    // bound-range's 32-bit code is assembly: `main32` is a label without a size. An
    // address inside it (the BOUND that raises #BR) is named `main32+…`, not "no symbol".
    let symbols = traplab_tracer::symbols::Symbols::load(&traplab_labs::guest_elf("bound-range"))
        .expect("the bound-range guest is built");
    let start = symbols.address_of("main32").expect("main32 is a symbol");
    assert_eq!(symbols.describe(start).as_deref(), Some("main32"));
    assert_eq!(
        symbols.describe(start + 0x13).as_deref(),
        Some("main32+0x13")
    );
    let (symbol, _) = symbols.lookup(start).expect("main32");
    let next = symbols
        .iter()
        .map(|other| other.address)
        .find(|&address| address > start);
    if let Some(next) = next {
        assert!(
            start + symbol.size <= next,
            "{symbol:?} runs into the next symbol"
        );
    }
}

#[test]
fn trace_kernel_boots_a_multiboot_kernel_with_its_arguments_and_refuses_a_file_that_is_none() {
    let kernel = traplab_labs::guest_elf("multiboot-hello");
    let kernel = kernel.to_str().expect("a UTF-8 path");
    let output = run(&[
        "trace",
        "--kernel",
        kernel,
        "--append",
        "root=/dev/sda,ro",
        "--memory",
        "48",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    for line in [
        "multiboot-hello created: a multiboot kernel: 49152 KiB of RAM",
        "| command line: multiboot-hello root=/dev/sda,ro",
        "| memory: 639 KiB below 1 MiB, 48128 KiB above",
        "multiboot-hello exited with status 0: wrote 0 to isa-debug-exit (port 0xf4)",
    ] {
        assert!(stdout.contains(line), "{line:?} in:\n{stdout}");
    }
    // stats runs the same kernel now and counts its exits: an IN and an OUT per byte it
    // prints, and its timer HLTs: it waits for three PIT ticks, then three APIC ticks, with
    // `hlt` in a loop, so one to three HLTs each (a tick that comes due before a HLT, on a
    // loaded machine, is taken without one).
    let output = run(&["stats", "--kernel", kernel, "--json"]);
    assert_eq!(output.status.code(), Some(0));
    let stats: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("stats --json prints JSON");
    let count = |reason: &str| {
        stats["reasons"]
            .as_array()
            .and_then(|reasons| reasons.iter().find(|entry| entry["reason"] == reason))
            .and_then(|entry| entry["count"].as_u64())
    };
    assert!(count("IOIO").is_some_and(|ioio| ioio > 1000), "{stats}");
    assert!(
        count("HLT").is_some_and(|halts| (2..=6).contains(&halts)),
        "{stats}"
    );
    // check grades the same kernel by how it ends: status 0 passes; told to expect another
    // status, it does not, and says why.
    let output = run(&["check", "--kernel", kernel]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert_eq!(
        stdout,
        "multiboot-hello: passed (it exited with status 0)\n"
    );
    let output = run(&["check", "--kernel", kernel, "--status", "1", "--json"]);
    assert_eq!(output.status.code(), Some(1));
    let verdict: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("check --json prints JSON");
    assert_eq!(verdict["passed"], false, "{verdict}");
    assert!(
        verdict["problems"][0]["explanation"]
            .as_str()
            .is_some_and(|why| why.contains("to exit with status 1, but it exited with status 0")),
        "{verdict}"
    );
    // A file that is no kernel: the hypervisor refuses it and says what it is; the domain
    // counts as killed (137).
    let junk = temporary("not-a-kernel");
    std::fs::write(&junk, b"#!/bin/sh\necho hello\n").expect("a temporary file");
    let output = run(&["trace", "--kernel", junk.to_str().expect("UTF-8")]);
    std::fs::remove_file(&junk).ok();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(137), "{stdout}");
    assert!(
        stdout.contains("not a kernel image traplab knows: no multiboot header in its first 8 KiB, not an ELF file, not a Linux bzImage (it starts with 23 21 2f 62 69 6e 2f 73 …)"),
        "{stdout}"
    );
}

#[test]
fn unknown_labs_and_guests_are_usage_errors() {
    let output = run(&["trace", "no-such-lab"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("there is no lab called \"no-such-lab\"; `traplab list` shows them")
    );
    let output = run(&["trace", "--guest", "no-such-guest"]);
    assert_eq!(output.status.code(), Some(2));
}

/// The bench's baseline answers CPUID in the run loop without recording it: a trace run with
/// it would say "none lost" over thousands of traps it never saw. traplab refuses it as a
/// `--setting` (a usage error), and the hypervisor refuses it with a trace whoever passes it
/// (here straight through QEMU's fw_cfg), as it refuses an unknown setting.
#[test]
fn the_bench_s_baseline_is_refused_with_a_trace() {
    let output = run(&["trace", "--guest", "cpuid-loop", "--setting", "bench-bare"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("without recording it, so a trace would miss those traps"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty(), "nothing ran");

    let output = run(&[
        "trace",
        "--guest",
        "cpuid-loop",
        "--json",
        "--qemu-arg=-fw_cfg",
        "--qemu-arg=name=opt/traplab/settings,string=bench-bare",
    ]);
    assert_eq!(output.status.code(), Some(125));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let events: Vec<_> = stdout.lines().map(json::from_line).collect();
    assert!(
        events.iter().all(|event| !matches!(
            event,
            Ok(event) if matches!(event.body, Body::Exit(_))
        )),
        "no guest ran: {stdout}"
    );
    let Some(Ok(last)) = events.last() else {
        panic!("no events: {stdout}")
    };
    let Body::End(end) = &last.body else {
        panic!("the last event is end: {stdout}")
    };
    assert!(
        end.reason.contains("runs only with the trace off"),
        "{}",
        end.reason
    );
}

#[test]
fn gdb_for_a_domain_the_lab_does_not_have_is_a_usage_error() {
    let output = run(&["gdb", "hello", "--domain", "3"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("--domain 3: this run has no domain 3; its domains are 1 (hello)"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = run(&["trace", "hello", "--domain", "1"]);
    assert_eq!(output.status.code(), Some(2), "--domain needs --gdb");
}

#[test]
fn a_disk_image_named_with_disk_is_made_at_the_lab_s_size_kept_and_holds_what_d1_wrote() {
    let image = temporary("driver-domain.img");
    let _ = std::fs::remove_file(&image);
    let path = image.to_str().expect("a UTF-8 path");
    let output = run(&["trace", "driver-domain", "--disk", path]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let bytes = std::fs::read(&image).expect("the image is kept");
    assert_eq!(bytes.len(), 2048 * 512, "the lab's size");
    // Sector 3, where d1 writes (guests/src/bin/driver-domain.rs).
    assert!(bytes[0x600..].starts_with(b"traplab: written by d1, the driver domain\0"));
    std::fs::remove_file(&image).expect("removable");

    // Only a lab with a disk takes one.
    let output = run(&["trace", "hello", "--disk", path]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("hello has no disk"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!image.exists(), "nothing made for a lab without a disk");
}

#[test]
fn without_qemu_the_error_names_the_install_command() {
    // A PATH with nothing on it: no qemu-system-x86_64, no sudo, no apt-get, and no cargo
    // (`cargo test` names its own in CARGO): traplab runs the programs built before, and
    // says so, then finds no QEMU.
    let empty = temporary("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let output = traplab()
        .args(["trace", "hello"])
        .env("PATH", &empty)
        .env_remove("CARGO")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("traplab needs qemu-system-x86_64, which is not installed."),
        "{stderr}"
    );
    assert!(
        stderr.contains("apt-get update && apt-get install -y qemu-system-x86"),
        "{stderr}"
    );
    assert!(stderr.contains("--yes"), "{stderr}");
    assert!(
        stderr.contains("running the hypervisor and guests built before"),
        "{stderr}"
    );
    std::fs::remove_dir(empty).unwrap();
}

#[test]
fn ctrl_c_stops_qemu_and_leaves_nothing_behind() {
    let mut child = traplab()
        .args(["trace", "--guest", "spin"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Wait, with a bound, until the guest has printed: then QEMU is up and the guest runs.
    // (A fixed sleep here failed on a loaded machine.)
    let stdout = child.stdout.take().expect("stdout is piped");
    let (lines, printed) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            let _ = lines.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match printed.recv_timeout(left) {
            Ok(line) if line.contains("| spinning") => break,
            Ok(_) => continue,
            Err(error) => panic!("the guest never printed `spinning`: {error}"),
        }
    }
    assert!(!qemu_of(pid).is_empty(), "QEMU runs the guest");
    // SAFETY: sending SIGINT to our own child process.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let output = child.wait_with_output().unwrap();
    let stdout = reader.join().expect("the reader thread");
    assert_eq!(
        output.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(qemu_of(pid).is_empty(), "no QEMU left running");
    assert!(
        !std::fs::read_dir("/dev/shm").unwrap().any(|entry| entry
            .map(|entry| entry
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("traplab-{pid}-")))
            .unwrap_or(false)),
        "no RAM file left"
    );
    assert!(stdout.contains("| spinning"));
    assert!(
        stdout
            .lines()
            .last()
            .is_some_and(|line| line.starts_with("-- spin: ")),
        "the summary still comes after Ctrl-C: {stdout}"
    );
}

#[test]
fn a_time_limit_stops_qemu_too() {
    let child = traplab()
        .args(["trace", "--guest", "spin", "--timeout", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(124),
        "as `--help` says, and as timeout(1) does"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("did not finish in time"));
    assert!(qemu_of(pid).is_empty());
}

/// Wait (at most `bound`) for `child` to exit; kill it and fail if it does not.
fn exits_within(child: &mut std::process::Child, bound: Duration, what: &str) -> Option<i32> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code();
        }
        if started.elapsed() > bound {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: traplab still runs after {bound:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `traplab trace` whose stdout is a pipe nobody reads, with a guest that prints far
/// more than a pipe holds (20,000 CPUID exits); `--json` and `extra` arguments.
fn trace_nobody_reads(extra: &[&str]) -> std::process::Child {
    traplab()
        .args(["trace", "--guest", "cpuid-loop", "--json"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("traplab runs")
}

/// How many bytes wait in the pipe `stdout` (FIONREAD).
fn waiting_in(stdout: &std::process::ChildStdout) -> usize {
    use std::os::fd::AsRawFd;
    let mut waiting: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int to the pointer, which points to ours.
    unsafe { libc::ioctl(stdout.as_raw_fd(), libc::FIONREAD, &mut waiting) };
    waiting.max(0) as usize
}

#[test]
fn a_time_limit_holds_while_nothing_reads_the_output() {
    let mut child = trace_nobody_reads(&["--timeout", "5"]);
    let pid = child.id();
    let status = exits_within(&mut child, Duration::from_secs(90), "--timeout 5");
    let mut stderr = String::new();
    let _ = std::io::Read::read_to_string(child.stderr.as_mut().expect("stderr"), &mut stderr);
    assert_eq!(status, Some(124), "{stderr}");
    assert!(
        stderr.contains("did not finish in time") || stderr.contains("not read in time"),
        "{stderr}"
    );
    assert!(qemu_of(pid).is_empty(), "no QEMU left running");
}

#[test]
fn sigterm_stops_a_trace_whose_output_nobody_reads() {
    let mut child = trace_nobody_reads(&[]);
    let pid = child.id();
    // Wait until the pipe is full: it holds many lines and takes no more (how many bytes
    // fill it depends on how the writes fall into its pages), so traplab's writes block.
    let started = Instant::now();
    let (mut waiting, mut same_for) = (0, 0);
    while waiting < 16_384 || same_for < 10 {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the pipe never filled"
        );
        assert!(child.try_wait().expect("wait").is_none(), "traplab ended");
        std::thread::sleep(Duration::from_millis(50));
        let now = waiting_in(child.stdout.as_ref().expect("stdout"));
        same_for = if now == waiting { same_for + 1 } else { 0 };
        waiting = now;
    }
    // SAFETY: sending SIGTERM to our own child process.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = exits_within(&mut child, Duration::from_secs(30), "SIGTERM");
    assert_eq!(status, Some(130));
    assert!(qemu_of(pid).is_empty(), "no QEMU left running");
}

#[test]
fn a_misspelled_lab_is_answered_with_the_nearest_one_by_every_command() {
    for args in [
        &["trace", "page-falt"][..],
        &["gdb", "page-falt"],
        &["run", "page-falt"],
        &["check", "page-falt"],
        &["stats", "page-falt"],
        &[
            "book-traces",
            "--lab",
            "page-falt",
            "--out",
            "/nonexistent/traplab",
        ],
    ] {
        let output = run(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("did you mean page-fault?"),
            "{args:?}: {stderr}"
        );
    }
    let guest = run(&["trace", "--guest", "cpuid-lop"]);
    assert!(
        String::from_utf8_lossy(&guest.stderr).contains("did you mean cpuid-loop?"),
        "{}",
        String::from_utf8_lossy(&guest.stderr)
    );
}

/// A traplab tree made by hand in a temporary folder: its own "hello" is the page-fault
/// guest, so that a run says whose guests it ran.
fn copied_tree(name: &str) -> PathBuf {
    let root = temporary(name);
    let built = traplab_labs::tree::tree().bare_dir();
    let bare = root.join("target/bare/x86_64-unknown-linux-gnu/release");
    std::fs::create_dir_all(&bare).expect("a temporary folder");
    std::fs::create_dir_all(root.join("labs/catalogue")).expect("a temporary folder");
    std::fs::write(root.join("Cargo.toml"), "[workspace]\n").expect("writable");
    std::fs::copy(built.join("traplab-hv"), bare.join("traplab-hv")).expect("the hypervisor");
    std::fs::copy(built.join("page-fault"), bare.join("hello")).expect("a guest");
    root
}

#[test]
fn a_tree_without_its_hypervisor_built_says_so_and_how_to_build_it() {
    // Not QEMU's "could not open kernel file": traplab names what is missing first.
    let root = copied_tree("tree-without-hv");
    std::fs::remove_file(root.join("target/bare/x86_64-unknown-linux-gnu/release/traplab-hv"))
        .expect("the copy's hypervisor");
    let output = run_in(&root, &["trace", "hello"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("the hypervisor is not built"), "{stderr}");
    assert!(stderr.contains("cargo build --release"), "{stderr}");
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn a_copied_tree_runs_its_own_guests_and_gdb_names_its_elf() {
    let root = copied_tree("copied-tree");
    let output = run_in(&root, &["trace", "hello"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("the write was retried and worked"),
        "the copy's hello (the page-fault guest) ran, not the build's: {stdout}"
    );

    let mut child = traplab()
        .current_dir(&root)
        .args(["gdb", "hello", "--port", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("traplab runs");
    let stderr = child.stderr.take().expect("stderr");
    let (lines, read) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let attach = loop {
        match read.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.trim().starts_with("gdb -q ") => break line,
            Ok(_) => {}
            Err(error) => {
                let _ = child.kill();
                panic!("no gdb command line: {error}");
            }
        }
    };
    // SAFETY: sending SIGINT to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    exits_within(&mut child, Duration::from_secs(30), "gdb after Ctrl-C");
    assert!(
        attach.contains(&format!(
            "gdb -q {}/target/bare/x86_64-unknown-linux-gnu/release/hello ",
            root.display()
        )),
        "{attach}"
    );
    // `--port 0`: the command line names the free port the system chose, not 0.
    let port = attach
        .split_once("target remote 127.0.0.1:")
        .and_then(|(_, port)| port.trim_end_matches('\'').parse::<u16>().ok());
    assert!(port.is_some_and(|port| port != 0), "{attach}");
    std::fs::remove_dir_all(root).expect("removable");
}

#[test]
fn a_cpu_without_svm_or_nested_paging_stops_the_hypervisor_with_its_status() {
    for (cpu, message) in [
        (
            "qemu64,-svm",
            "the hypervisor stopped: the CPU has no AMD SVM",
        ),
        (
            "qemu64,+svm,-npt",
            "the hypervisor stopped: the CPU has no nested paging",
        ),
    ] {
        // The last -cpu wins: this replaces the model traplab asks for.
        let output = run(&[
            "trace",
            "hello",
            "--json",
            "--qemu-arg=-cpu",
            &format!("--qemu-arg={cpu}"),
        ]);
        assert_eq!(output.status.code(), Some(125), "{cpu}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(message), "{cpu}: {stderr}");
        let last = String::from_utf8_lossy(&output.stdout)
            .lines()
            .last()
            .map(json::from_line);
        let Some(Ok(event)) = last else {
            panic!("{cpu}: no events")
        };
        let Body::End(end) = event.body else {
            panic!("{cpu}: the last event is end")
        };
        assert!(
            end.reason.contains("-cpu qemu64,+svm,+npt"),
            "the hypervisor says how to fix it: {}",
            end.reason
        );
    }
}

/// The TSC rate the host gives (`opt/traplab/tsc-hz`, as `tools/qemu-cost.sh` does) is the
/// one the boot event reports; one that is not a rate is measured instead, as without it.
#[test]
fn a_tsc_rate_the_host_gives_is_taken_instead_of_measured() {
    let boot_rate = |given: &str| {
        let output = run(&[
            "trace",
            "hello",
            "--json",
            "--qemu-arg=-fw_cfg",
            &format!("--qemu-arg=name=opt/traplab/tsc-hz,string={given}"),
        ]);
        assert_eq!(output.status.code(), Some(0), "{given}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let Some(Ok(first)) = stdout.lines().next().map(json::from_line) else {
            panic!("{given}: no events")
        };
        let Body::Boot(boot) = first.body else {
            panic!("{given}: the first event is boot")
        };
        boot.tsc_hz
    };
    assert_eq!(boot_rate("1234567890"), 1_234_567_890);
    let measured = boot_rate("fast");
    assert!(
        measured != 1_234_567_890 && measured > 100_000_000,
        "measured: {measured} Hz"
    );
}

/// `bench --ui` loads a generated recording into the terminal UI, off screen, and jumps to
/// its last flow, which ends in a folded run of the guest's console writes: the jump must
/// get there (it stopped at the run's first flow once runs were folded).
#[test]
fn bench_ui_loads_a_recording_and_reaches_its_last_flow() {
    let output = run(&["bench", "--ui", "--events", "1000", "--json"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("bench --ui --json prints JSON");
    assert_eq!(report["events"], 1001);
    assert!(
        report["flows"].as_u64().is_some_and(|flows| flows > 100),
        "{report}"
    );
}

/// `traplab bench ARGS --runs 1 --json`, which must succeed: its report.
fn bench_report(args: &[&str]) -> serde_json::Value {
    let output = traplab()
        .arg("bench")
        .args(args)
        .args(["--runs", "1", "--json"])
        .output()
        .expect("traplab runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("bench --json prints JSON")
}

/// `bench --kernel` boots a kernel three ways to a line of its console: multiboot-hello
/// prints one line per byte through the UART (an IN and an OUT each), so its traced boot
/// has well over a thousand exits. A line it never prints, or a missing `--until`, is an
/// error that says so.
#[test]
fn bench_kernel_times_a_kernel_to_a_console_line_three_ways() {
    let kernel = traplab_labs::guest_elf("multiboot-hello");
    let kernel = kernel.to_str().expect("a UTF-8 path");
    let report = bench_report(&[
        "--kernel",
        kernel,
        "--until",
        "multiboot-hello: done",
        "--accel",
        "tcg",
    ]);
    assert_eq!(report["boot"], "multiboot-hello");
    assert_eq!(report["accel"], "tcg", "named as the main bench names it");
    for key in ["bare_qemu_s", "untraced_s", "traced_s"] {
        assert!(
            report[key].as_f64().is_some_and(|seconds| seconds > 0.0),
            "{key} in {report}"
        );
    }
    let exits = report["exits"].as_u64().expect("exits");
    assert!(exits > 1000, "{report}");
    assert!(
        report["events"]
            .as_u64()
            .is_some_and(|events| events > exits)
    );

    let output = traplab()
        .args([
            "bench",
            "--kernel",
            kernel,
            "--until",
            "a line it never prints",
        ])
        .args(["--runs", "1", "--accel", "tcg"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("multiboot-hello exited before a line with \"a line it never prints\""),
        "{stderr}"
    );
    let output = traplab()
        .args(["bench", "--kernel", kernel])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "--until is required");
}

/// `traplab bench` measures the limit in the same run: the bare world switch, then traplab
/// untraced, then traced, each also under -icount, where the TSC counts instructions. The
/// counts do not depend on the machine's load: each configuration does strictly more work
/// per trap than the one before it.
#[test]
fn bench_measures_the_bare_world_switch_beside_traplab() {
    let report = bench_report(&["--accel", "tcg"]);
    assert_eq!(report["accel"], "tcg");
    let instructions = |key: &str| {
        report["configs"][key]["instructions_per_trap"]
            .as_f64()
            .unwrap_or_else(|| panic!("{key}: instructions per trap in {report}"))
    };
    let (bare, untraced, traced) = (
        instructions("bare"),
        instructions("untraced"),
        instructions("traced"),
    );
    assert!(
        0.0 < bare && bare < untraced && untraced < traced,
        "bare {bare}, untraced {untraced}, traced {traced}"
    );
    let ratio = report["untraced_over_bare"]["instructions"]
        .as_f64()
        .expect("the ratio in instructions");
    // The same division, done by the bench and here (JSON may round the last bit).
    assert!((ratio - untraced / bare).abs() < 1e-9 * ratio, "{ratio}");
    assert_eq!(
        report["ring"]["events_per_trap"].as_f64().map(f64::round),
        Some(4.0)
    );
    // A size, not a speed: the issue's target, which the compact records meet (18 bytes).
    let bytes = report["ring"]["bytes_per_event"].as_f64();
    assert!(
        bytes.is_some_and(|bytes| 8.0 < bytes && bytes <= 48.0),
        "{bytes:?}"
    );
}

/// A lab runs under KVM with `trace --accel kvm` where the host offers nested SVM, and says
/// so first (its trace is not the book's, which is TCG's); `--accel auto` takes KVM there
/// and TCG elsewhere. These machines offer none: then the test says so on the terminal and
/// checks that `--accel kvm` is refused with the reason and `auto` runs the lab under TCG,
/// without the note.
#[test]
fn a_lab_runs_under_kvm_where_there_is_nested_svm_and_says_why_not_elsewhere() {
    const NOTE: &str = "the hypervisor runs under KVM";
    let kvm = run(&["trace", "hello", "--accel", "kvm"]);
    let auto = run(&["trace", "hello", "--accel", "auto"]);
    let stderr = |output: &Output| String::from_utf8_lossy(&output.stderr).into_owned();
    let stdout = |output: &Output| String::from_utf8_lossy(&output.stdout).into_owned();
    match traplab_tracer::qemu::Accel::kvm_offers_nested_svm() {
        Ok(()) => {
            for output in [&kvm, &auto] {
                assert!(output.status.success(), "{}", stderr(output));
                assert!(stderr(output).contains(NOTE), "{}", stderr(output));
                assert!(stdout(output).contains("Hello"), "{}", stdout(output));
            }
        }
        Err(why) => {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr().lock(),
                "a_lab_runs_under_kvm…: KVM part skipped, no nested SVM here: {why}"
            );
            assert_eq!(kvm.status.code(), Some(2));
            assert!(
                stderr(&kvm).contains("--accel kvm") && stderr(&kvm).contains(&why),
                "{}",
                stderr(&kvm)
            );
            assert!(kvm.stdout.is_empty(), "nothing ran");
            assert!(auto.status.success(), "{}", stderr(&auto));
            assert!(!stderr(&auto).contains(NOTE), "{}", stderr(&auto));
            assert!(stdout(&auto).contains("Hello"), "{}", stdout(&auto));
        }
    }
}

/// QEMU counts instructions (`-icount`) only under TCG: `--accel kvm` with it is refused
/// before QEMU starts, wherever KVM could run.
#[test]
fn kvm_is_refused_where_qemu_is_to_count_instructions() {
    let output = run(&[
        "trace",
        "hello",
        "--accel",
        "kvm",
        "--qemu-arg=-icount",
        "--qemu-arg=shift=0,sleep=off",
    ]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--accel kvm: QEMU's -icount counts the instructions TCG runs"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty(), "nothing ran");
}

/// `--accel kvm` runs the same hypervisor under KVM where the host offers nested SVM. These
/// machines offer none: then the test says so on the terminal (not in the captured output)
/// and checks that traplab refuses with the reason, instead of passing silently.
#[test]
fn bench_under_kvm_runs_where_there_is_nested_svm_and_says_why_not_elsewhere() {
    let output = traplab()
        .args(["bench", "--runs", "1", "--json", "--accel", "kvm"])
        .output()
        .unwrap();
    match traplab_tracer::qemu::Accel::kvm_offers_nested_svm() {
        Ok(()) => {
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            let report: serde_json::Value =
                serde_json::from_slice(&output.stdout).expect("bench --json prints JSON");
            assert_eq!(report["accel"], "kvm");
        }
        Err(why) => {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr().lock(),
                "bench_under_kvm…: KVM part skipped, no nested SVM here: {why}"
            );
            assert_eq!(output.status.code(), Some(2));
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                stderr.contains("--accel kvm") && stderr.contains(&why),
                "{stderr}"
            );
        }
    }
}

#[test]
fn an_exercise_number_a_lab_does_not_have_is_refused_with_the_numbers_it_has() {
    let labs = traplab_labs::all().expect("the catalogue");
    let mut seen = 0;
    for lab in labs.iter().filter(|lab| !lab.exercises.is_empty()) {
        let count = lab.exercises.len();
        let expected = match count {
            1 => format!("lab {} has one exercise, number 1, not 9", lab.id),
            _ => format!("lab {} has exercises 1 to {count}, not 9", lab.id),
        };
        let output = run(&["check", &lab.id, "--exercise", "9"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(&expected), "{stderr}");
        seen += 1;
        if seen == 3 {
            break;
        }
    }
    assert!(seen > 0, "a lab with an exercise");
}
