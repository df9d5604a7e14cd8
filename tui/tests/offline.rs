//! `traplab stats`, `export` and `diff` on the recordings checked in under
//! `tests/recordings/` (recorded from real runs with `traplab trace LAB --record FILE`, by
//! the hypervisor before domains were numbered as Xen numbers them: their guests are d0 and
//! d1, which old recordings keep).

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn recording(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/recordings")
        .join(name)
        .display()
        .to_string()
}

fn traplab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_traplab"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("traplab runs")
}

fn temporary(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "traplab-offline-test-{}-{name}",
        std::process::id()
    ))
}

#[test]
fn stats_is_a_table_per_exit_reason() {
    let output = traplab(&["stats", &recording("page-fault.jsonl")]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let header = stdout
        .lines()
        .find(|line| line.starts_with("exit reason"))
        .expect("a header");
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        [
            "exit", "reason", "class", "count", "count%", "time%", "min", "µs", "avg", "µs", "p50",
            "µs", "p95", "µs", "max", "µs"
        ]
    );
    let row = |reason: &str| -> Vec<String> {
        stdout
            .lines()
            .find(|line| line.starts_with(&format!("{reason} ")))
            .unwrap_or_else(|| panic!("a {reason} row in\n{stdout}"))
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    assert_eq!(row("IOIO")[1..3], ["IOIO", "155"]);
    assert_eq!(row("EXCP_PF")[1..3], ["#PF", "1"]);
    assert_eq!(row("IRET")[2], "1");
    assert_eq!(
        row("VMMCALL")[5],
        "-",
        "the exit hypercall never resumes: no time"
    );
    assert!(stdout.contains("Total: 158 exits"), "{stdout}");

    let json = traplab(&[
        "stats",
        &recording("reflect-vs-bounce.jsonl"),
        "--dom",
        "1",
        "--json",
    ]);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    let reasons = value["reasons"].as_array().expect("reasons");
    assert!(
        reasons
            .iter()
            .any(|reason| reason["reason"] == "EXCP_PF" && reason["count"] == 1)
    );
    assert!(value["tsc_hz"].as_u64().is_some());
}

#[test]
fn stats_has_a_table_per_domain_and_keeps_one_with_domain() {
    let file = recording("reflect-vs-bounce.jsonl");
    let output = traplab(&["stats", &file]);
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let titles: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with('d') && line.ends_with(':'))
        .collect();
    assert_eq!(
        titles,
        ["d0 (faults-reflect):", "d1 (faults-bounce):"],
        "{stdout}"
    );
    let json = traplab(&["stats", &file, "--json"]);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    let domains = value["domains"].as_array().expect("domains");
    let summed: u64 = domains
        .iter()
        .map(|domain| domain["exits"].as_u64().unwrap())
        .sum();
    assert_eq!(
        summed,
        value["exits"].as_u64().unwrap(),
        "every exit in one domain"
    );
    assert_eq!(domains[1]["label"], "d1");
    assert_eq!(domains[1]["name"], "faults-bounce");
    let one = traplab(&["stats", &file, "--domain", "1"]);
    let stdout = String::from_utf8_lossy(&one.stdout);
    assert!(
        stdout.starts_with(&format!("Exits of {file}, d1 (faults-bounce)")),
        "{stdout}"
    );
    assert!(!stdout.contains("d0 (faults-reflect):"), "{stdout}");
    let none = traplab(&["stats", &file, "--domain", "5"]);
    assert_eq!(none.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&none.stderr)
            .contains("has no domain 5; its domains are 0 (faults-reflect), 1 (faults-bounce)"),
        "{}",
        String::from_utf8_lossy(&none.stderr)
    );
}

#[test]
fn stats_runs_a_lab_when_given_its_name() {
    let output = traplab(&["stats", "cpuid"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with("Exits of cpuid (run now)"), "{stdout}");
    assert!(
        stdout.lines().any(|line| line.starts_with("CPUID ")),
        "{stdout}"
    );
    let unknown = traplab(&["stats", "no-such-thing"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&unknown.stderr)
            .contains("\"no-such-thing\" is neither a recording (no such file) nor a lab")
    );
    // A directory is there, and is no lab: the read says why it is no recording, as
    // `replay`'s does.
    let directory = temporary("a-directory.jsonl");
    std::fs::create_dir_all(&directory).expect("a temporary directory");
    let path = directory.to_string_lossy();
    let stats = traplab(&["stats", &path]);
    assert_eq!(stats.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&stats.stderr);
    assert!(
        stderr.contains(&format!("cannot read {path}: ")),
        "{stderr}"
    );
    std::fs::remove_dir(&directory).expect("the temporary directory removed");
}

#[test]
fn a_malformed_line_is_named_and_skipped_and_the_lines_after_it_are_read() {
    let original = std::fs::read_to_string(recording("page-fault.jsonl")).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    let path = temporary("bad-line.jsonl");
    // 200 good lines, half of line 201, then the rest of the recording.
    std::fs::write(
        &path,
        format!(
            "{}\n{}\n{}\n",
            lines[..200].join("\n"),
            &lines[200][..lines[200].len() / 2],
            lines[201..].join("\n")
        ),
    )
    .unwrap();
    let output = traplab(&["stats", path.to_str().unwrap()]);
    assert_eq!(
        output.status.code(),
        Some(3),
        "a bad recording has its own status (124 is a time limit's)"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "traplab: TRACE FAULT: {}:201: not JSON: EOF while parsing",
            path.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "that line was skipped (the first named above); {} events read",
            lines.len() - 1
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "traplab: TRACE FAULT: {}:202: 1 event is missing (seq 200): seq jumped from 199 to 201",
            path.display()
        )),
        "the hole the bad line leaves, at the line after it: {stderr}"
    );
    assert!(
        !stderr.contains("without the hypervisor's end event"),
        "the end event after the bad line was read: {stderr}"
    );
    // Every exit is counted, those after the bad line too (the bad line was a decide: the
    // one flow it cut short only takes less time).
    let good = traplab(&["stats", &recording("page-fault.jsonl")]);
    let exits = |stdout: &[u8]| {
        let text = String::from_utf8_lossy(stdout).to_string();
        text.lines()
            .find_map(|line| {
                line.split(" exits,")
                    .next()
                    .filter(|_| line.starts_with("Total: "))
                    .map(str::to_string)
            })
            .unwrap_or_else(|| panic!("a total: {text}"))
    };
    assert_eq!(exits(&output.stdout), exits(&good.stdout));
    assert_eq!(exits(&good.stdout), "Total: 158");
    std::fs::remove_file(path).unwrap();
}

/// A recording names functions with the guest's ELF only when the ELF here is the build
/// the recording ran: the exits' instruction bytes are its code at their RIPs.
#[test]
fn diff_leaves_out_the_symbols_of_another_build_and_says_so() {
    let fresh = temporary("fresh.jsonl");
    let made = traplab(&["trace", "page-fault", "--record", fresh.to_str().unwrap()]);
    assert_eq!(
        made.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let file = fresh.to_str().unwrap();
    let same = traplab(&["diff", file, file]);
    let stdout = String::from_utf8_lossy(&same.stdout);
    assert!(
        stdout.contains("Writ"),
        "the console writer's name: {stdout}"
    );
    assert!(!String::from_utf8_lossy(&same.stderr).contains("another build"));
    // Another build: the same recording with other bytes at every exit's RIP.
    let text = std::fs::read_to_string(&fresh).unwrap();
    let other: Vec<String> = text
        .lines()
        .map(|line| match line.find(r#""insn":""#) {
            Some(at) => {
                let start = at + r#""insn":""#.len();
                format!(
                    "{}0f{}",
                    &line[..start],
                    &line[(start + 2).min(line.len())..]
                )
            }
            None => line.to_string(),
        })
        .collect();
    let rebuilt = temporary("other-build.jsonl");
    std::fs::write(&rebuilt, other.join("\n") + "\n").unwrap();
    let file = rebuilt.to_str().unwrap();
    let differs = traplab(&["diff", file, file]);
    let stderr = String::from_utf8_lossy(&differs.stderr);
    assert!(
        stderr.contains("ran another build of page-fault than the one here"),
        "{stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&differs.stdout).contains("Writ"),
        "no symbols of the wrong build"
    );
    std::fs::remove_file(fresh).unwrap();
    std::fs::remove_file(rebuilt).unwrap();
}

#[test]
fn a_file_that_is_not_a_recording_is_said_to_be_one_by_every_command() {
    let path = temporary("passwd");
    std::fs::write(&path, "root:x:0:0:root:/root:/bin/bash\n").unwrap();
    let file = path.to_str().unwrap();
    let empty = temporary("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    for args in [
        vec!["stats", file],
        vec!["export", file],
        vec!["diff", file, file],
        vec!["replay", file],
    ] {
        let output = traplab(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(3), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "{file} is not a recording: its line 1 is not an event (not JSON: "
            )),
            "{args:?}: {stderr}"
        );
        assert!(output.stdout.is_empty(), "{args:?}: no empty table");
    }
    let output = traplab(&["stats", empty.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("is not a recording: it holds no event"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::remove_file(path).unwrap();
    std::fs::remove_file(empty).unwrap();
}

#[test]
fn a_seq_that_goes_back_or_repeats_names_its_line() {
    let original = std::fs::read_to_string(recording("page-fault.jsonl")).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    let path = temporary("backwards.jsonl");
    // Line 101 is line 100 again: a repeated event.
    let mut edited: Vec<&str> = lines[..100].to_vec();
    edited.push(lines[99]);
    edited.extend(&lines[100..]);
    std::fs::write(&path, edited.join("\n")).unwrap();
    let output = traplab(&["stats", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:101: seq 99 after seq 99: a trace's seq only goes up",
            path.display()
        )),
        "{stderr}"
    );
    assert!(
        !stderr.contains("are missing"),
        "no gap of a negative size: {stderr}"
    );
    std::fs::remove_file(path).unwrap();
}

/// A recording with events missing (a gap, no end event, a `lost` event) is shown all the
/// same, by every command that reads one, and the status says it is incomplete (123, as
/// `traplab trace` says it of a live trace); they exited with 0.
#[test]
fn an_incomplete_recording_is_shown_and_its_status_says_so() {
    let original = std::fs::read_to_string(recording("page-fault.jsonl")).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    let last = lines.len() - 1;
    assert!(lines[last].contains(r#""kind":"end""#));
    let no_end = lines[..last].join("\n") + "\n";
    // Line 101 left out: a gap (its seq is missing), no bad line.
    let gap = [&lines[..100], &lines[101..]].concat().join("\n") + "\n";
    // A `lost` event says events went missing, in place of line 101's event.
    let lost_line = r#"{"v":1,"seq":100,"tsc":240410742,"dom":0,"kind":"lost","count":3}"#;
    let lost = [&lines[..100], &[lost_line][..], &lines[101..]]
        .concat()
        .join("\n")
        + "\n";
    // Each fault named by the line where it came to light (the event after the gap, the
    // `lost` event); the missing end event by none.
    // An event after `end`, seq on from it: line 639.
    let late = r#"{"v":1,"seq":638,"tsc":257097700,"dom":0,"kind":"console","text":"late"}"#;
    let after_end = format!("{original}{late}\n");
    for (name, text, line, said) in [
        (
            "after-end.jsonl",
            &after_end,
            Some(639),
            "seq 638 came after the hypervisor's end event, which is the last one",
        ),
        (
            "no-end.jsonl",
            &no_end,
            None,
            "the trace ends without the hypervisor's end event",
        ),
        ("gap.jsonl", &gap, Some(101), "1 event is missing (seq 100)"),
        (
            "lost.jsonl",
            &lost,
            Some(101),
            "the hypervisor lost 3 event(s) before seq 100",
        ),
    ] {
        let path = temporary(name);
        std::fs::write(&path, text).unwrap();
        let file = path.to_str().unwrap();
        let said = match line {
            Some(line) => format!("{file}:{line}: {said}"),
            None => said.to_string(),
        };
        let complete = recording("page-fault.jsonl");
        for args in [
            vec!["stats", file],
            vec!["export", file],
            vec!["diff", file, &complete],
            vec!["diff", &complete, file],
        ] {
            let output = traplab(&args);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(123), "{args:?}: {stderr}");
            // In the words and with the prefix of `traplab trace`'s live report.
            assert!(
                stderr.contains(&format!("traplab: TRACE FAULT: {said}")),
                "{args:?}: {stderr}"
            );
            assert!(
                !stderr.contains(&format!("note: {said}")),
                "{args:?}: {stderr}"
            );
            assert!(!stderr.contains("skipped"), "no bad line: {stderr}");
            assert!(
                !output.stdout.is_empty(),
                "{args:?}: what it holds is shown"
            );
        }
        let stats = traplab(&["stats", file]);
        assert!(
            String::from_utf8_lossy(&stats.stdout).contains("Total: 15"),
            "the table of the events it holds"
        );
        std::fs::remove_file(path).unwrap();
    }
    // A bad line says more than the gap it leaves: 3, even beside an incomplete recording.
    let bad = temporary("bad-and-no-end.jsonl");
    std::fs::write(&bad, format!("{}\nnot json\n", lines.join("\n"))).unwrap();
    let no_end_path = temporary("no-end-beside.jsonl");
    std::fs::write(&no_end_path, &no_end).unwrap();
    let both = traplab(&["diff", no_end_path.to_str().unwrap(), bad.to_str().unwrap()]);
    assert_eq!(both.status.code(), Some(3));
    std::fs::remove_file(bad).unwrap();
    std::fs::remove_file(no_end_path).unwrap();
}

/// `traplab stats` of page-fault.jsonl with the `seq` of each line index given (0-based,
/// each line's own seq its index) replaced, written as the temporary file `name` (removed
/// after): its output, the file's name as messages show it, and how many lines it has.
fn stats_of_edited(name: &str, seqs: &[(usize, u64)]) -> (std::process::Output, String, usize) {
    let original =
        std::fs::read_to_string(recording("page-fault.jsonl")).expect("the checked-in recording");
    let mut lines: Vec<String> = original.lines().map(String::from).collect();
    for &(index, seq) in seqs {
        let own = format!(r#""seq":{index},"#);
        assert!(
            lines[index].contains(&own),
            "line {} holds seq {index}",
            index + 1
        );
        lines[index] = lines[index].replacen(&own, &format!(r#""seq":{seq},"#), 1);
    }
    let path = temporary(name);
    std::fs::write(&path, lines.join("\n") + "\n").expect("the edited recording written");
    let output = traplab(&["stats", &path.display().to_string()]);
    std::fs::remove_file(&path).expect("the edited recording removed");
    (output, path.display().to_string(), lines.len())
}

/// One line whose `seq` jumps far ahead is that line's error; the lines after it are read
/// as usual. It used to make every later line "go back", and the error named the next one.
#[test]
fn a_seq_far_ahead_names_its_own_line_and_spoils_no_other() {
    // Line 101 holds seq 100: give it a digit too many.
    let (output, path, lines) = stats_of_edited("far-ahead.jsonl", &[(100, 1000000)]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{path}:101: seq 1000000 jumps ahead of seq 99, but line 102 goes on from before it with seq 101"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "that line was skipped (the first named above); {} events read",
            lines - 1
        )),
        "one line lost, not the thousands after it: {stderr}"
    );
    assert!(
        !stderr.contains("without the hypervisor's end event"),
        "{stderr}"
    );
}

/// Two lines in a row whose `seq` jumps far ahead are their own errors; the lines after them
/// are read as usual. The second used to "confirm" the first: every later line went back,
/// the error named line 103 (a good one), and a gap of a million events was reported.
#[test]
fn two_seqs_far_ahead_in_a_row_name_their_own_lines_and_spoil_no_other() {
    let (output, path, lines) =
        stats_of_edited("two-far-ahead.jsonl", &[(100, 1000000), (101, 2000000)]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{path}:101: seq 1000000 jumps ahead of seq 99, but line 103 goes on from before it with seq 102"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "2 bad lines (lines 101–102) were skipped (the first named above); {} events read",
            lines - 2
        )),
        "two lines lost, not the hundreds after them: {stderr}"
    );
    assert!(
        stderr.contains("2 events are missing (seq 100 to 101)"),
        "the two lines' events, and no false gap: {stderr}"
    );
}

/// A recording with log lines mixed in (`traplab trace LAB 2>&1 >FILE`) has a bad line
/// after every event: 100,000 of them, each a run of its own. The message names the first
/// runs and counts the rest, exactly; it used to name all 100,000 on one line.
#[test]
fn a_hundred_thousand_bad_lines_between_events_are_counted_not_all_named() {
    use traplab_abi::event::{Body, Console, End, Event};
    const EVENTS: u64 = 100_000;
    let mut text = String::new();
    for seq in 0..EVENTS {
        let event = Event {
            seq,
            tsc: seq * 10,
            dom: Some(1),
            body: Body::Console(Console::line(format!("line {seq}"))),
        };
        text.push_str(&traplab_tracer::json::to_line(&event));
        text.push_str("\n[traplab] a log line in the recording\n");
    }
    let end = Event {
        seq: EVENTS,
        tsc: EVENTS * 10,
        dom: None,
        body: Body::End(End {
            status: 0,
            reason: "every domain has ended".into(),
        }),
    };
    text.push_str(&traplab_tracer::json::to_line(&end));
    text.push('\n');
    let path = temporary("log-lines-mixed-in.jsonl");
    std::fs::write(&path, text).unwrap();
    let output = traplab(&["stats", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!("TRACE FAULT: {}:2: not JSON", path.display())),
        "the first bad line is named: {stderr}"
    );
    assert!(
        stderr.contains(
            "100000 bad lines (lines 2, 4, 6, 8, 10, 12, 14, 16, 18, 20 … and 99990 more runs \
             (99990 lines)) were skipped (the first named above); 100001 events read"
        ),
        "the first ten runs named, the exact count of the rest: {stderr}"
    );
    assert!(
        stderr.len() < 1000,
        "a message of a few lines, not 100,000 numbers: {} bytes",
        stderr.len()
    );
}

/// `replay` of a recording cut from a longer one (its first event is not seq 0, so it waits
/// for the lines after it) whose second line is too long: the first piece read has no event
/// taken yet, but one held; that is a recording, not "not a recording" (status 3).
#[test]
fn replay_of_a_recording_whose_first_event_waits_is_a_recording() {
    let original = std::fs::read_to_string(recording("page-fault.jsonl")).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    let long = "x".repeat(3 << 20);
    let path = temporary("cut-then-long.jsonl");
    std::fs::write(
        &path,
        format!("{}\n{long}\n{}\n", lines[3], lines[4..].join("\n")),
    )
    .unwrap();
    let output = traplab(&["replay", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("is not a recording"), "{stderr}");
    // Without a terminal, replay goes no further than that.
    assert!(
        stderr.contains("traplab replay needs a terminal"),
        "{stderr}"
    );
}

/// A line longer than any event is that line's error, and the lines after it are read; a
/// file with no newline at all is one such line, not read whole into memory.
#[test]
fn a_line_too_long_for_any_event_is_named_by_its_number() {
    let original = std::fs::read_to_string(recording("page-fault.jsonl")).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    let long = "x".repeat(3 << 20);
    let path = temporary("long-line.jsonl");
    std::fs::write(
        &path,
        format!(
            "{}\n{long}\n{}\n",
            lines[..10].join("\n"),
            lines[10..].join("\n")
        ),
    )
    .unwrap();
    let output = traplab(&["stats", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:11: the line is longer than 1048576 bytes",
            path.display()
        )),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("Total: 158 exits"));
    std::fs::write(&path, "x".repeat(5 << 20)).unwrap();
    let output = traplab(&["stats", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("is not a recording: its line 1 is not an event (the line is longer than"),
        "{stderr}"
    );
    std::fs::remove_file(path).unwrap();
}

/// An event of a kind that is always about a domain, without its `dom`, is its line's error.
#[test]
fn an_event_without_the_dom_its_kind_needs_is_named_by_its_number() {
    let original = std::fs::read_to_string(recording("page-fault.jsonl")).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    let path = temporary("no-dom.jsonl");
    // The first decide (of d0, in this old recording) without its dom.
    let mut edited: Vec<String> = lines.iter().map(|line| line.to_string()).collect();
    let decide = edited
        .iter()
        .position(|line| line.contains(r#""kind":"decide""#))
        .expect("a decide");
    edited[decide] = edited[decide].replacen(r#""dom":0,"#, "", 1);
    std::fs::write(&path, edited.join("\n") + "\n").unwrap();
    let output = traplab(&["stats", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:{}: an event of kind \"decide\" is always about a domain, but this one has no \"dom\"",
            path.display(),
            decide + 1
        )),
        "{stderr}"
    );
    std::fs::remove_file(path).unwrap();
}

/// `"dom": null` is no domain: its line is a bad line, named by its number (it was read as
/// a `dom` left out, and the hypervisor's `end` with it passed as good).
#[test]
fn an_event_whose_dom_is_null_is_named_by_its_number() {
    let original = std::fs::read_to_string(recording("page-fault.jsonl")).unwrap();
    let mut lines: Vec<String> = original.lines().map(String::from).collect();
    let last = lines.len() - 1;
    assert!(lines[last].contains(r#""kind":"end""#));
    lines[last] = lines[last].replacen(r#","kind":"end""#, r#","dom":null,"kind":"end""#, 1);
    let path = temporary("null-dom.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let output = traplab(&["stats", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "traplab: TRACE FAULT: {}:{}: \"dom\" is null: an event about the hypervisor has no \"dom\" at all, and null names no domain",
            path.display(),
            last + 1
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("traplab: TRACE FAULT: the trace ends without the hypervisor's end event"),
        "the end event's line was the bad one: {stderr}"
    );
}

#[test]
fn export_perfetto_is_chrome_trace_event_json_with_a_track_per_domain() {
    let path = temporary("rvb.json");
    let output = traplab(&[
        "export",
        &recording("reflect-vs-bounce.jsonl"),
        "--format",
        "perfetto",
        "-o",
        path.to_str().unwrap(),
    ]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let value: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).expect("JSON");
    let events = value["traceEvents"].as_array().expect("traceEvents");
    let tracks: Vec<&str> = events
        .iter()
        .filter(|e| e["name"] == "thread_name")
        .filter_map(|e| e["args"]["name"].as_str())
        .collect();
    assert_eq!(
        tracks,
        ["hypervisor", "d0 faults-reflect", "d1 faults-bounce"]
    );
    let slice = |name: &str, tid: u64| {
        events
            .iter()
            .find(|e| e["ph"] == "X" && e["name"] == name && e["tid"] == tid)
            .unwrap_or_else(|| panic!("a {name} slice on track {tid}"))
    };
    let reflected = slice("#PF reflect", 1);
    let bounced = slice("#PF bounce", 2);
    assert!(
        reflected["dur"].as_f64().unwrap() > 0.0
            && bounced["ts"].as_f64() > reflected["ts"].as_f64()
    );
    assert!(
        reflected["args"]["why"]
            .as_str()
            .unwrap()
            .contains("reflect #PF")
    );
    // Steps nest inside their flow, and deliveries have an arrow to their return.
    assert!(
        events
            .iter()
            .any(|e| e["ph"] == "X" && e["name"] == "inject" && e["cat"] == "step")
    );
    assert_eq!(
        events.iter().filter(|e| e["ph"] == "s").count(),
        events.iter().filter(|e| e["ph"] == "f").count()
    );
    assert!(
        events.iter().filter(|e| e["ph"] == "s").count() >= 8,
        "four faults in each domain"
    );
    for event in events {
        assert!(
            event["ph"] == "M" || event["ts"].as_f64().is_some_and(|ts| ts >= 0.0),
            "{event}"
        );
    }
    std::fs::remove_file(path).unwrap();
    let stdout = traplab(&["export", &recording("page-fault.jsonl")]);
    assert!(
        serde_json::from_slice::<serde_json::Value>(&stdout.stdout).is_ok(),
        "stdout by default"
    );
}

#[test]
fn diff_aligns_the_reflected_and_the_bounced_faults() {
    let file = recording("reflect-vs-bounce.jsonl");
    let output = traplab(&["diff", &file, &file, "--left-dom", "0", "--right-dom", "1"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    for class in ["#DE", "SWINT", "#UD", "#PF"] {
        let row = stdout
            .lines()
            .find(|line| line.contains(&format!(" {class} ")) && line.contains(" ≠ "))
            .unwrap_or_else(|| panic!("{class} aligned\n{stdout}"));
        let (left, right) = row.split_once(" ≠ ").unwrap();
        assert!(
            left.contains("reflect") && right.contains("bounce"),
            "{row}"
        );
    }
    assert!(stdout.contains("4 handled differently"), "{stdout}");
    assert!(
        stdout.contains("more flows handled the same way"),
        "runs are folded"
    );
    assert!(stdout.contains("right: bounce: "), "{stdout}");
    let same = traplab(&[
        "diff",
        &recording("page-fault.jsonl"),
        &recording("page-fault.jsonl"),
        "--all",
    ]);
    let text = String::from_utf8_lossy(&same.stdout);
    assert!(text.contains("158 flows handled the same way, 0 handled differently, 0 only on the left, 0 only on the right."), "{text}");
    assert!(!text.contains("more flows handled"));
    // A domain the recording does not have is a usage error, as with `stats --domain`: it
    // used to compare d1's flows with nothing, and call all of them "only on the left".
    let none = traplab(&["diff", &file, &file, "--left-dom", "1", "--right-dom", "2"]);
    assert_eq!(none.status.code(), Some(2));
    let said = String::from_utf8_lossy(&none.stderr);
    assert!(
        said.contains(&format!(
            "--right-dom 2: {file} has no domain 2; its domains are 0 (faults-reflect), 1 (faults-bounce)"
        )),
        "{said}"
    );
}

/// A recording that cannot be written (a full disk: /dev/full refuses every write) loses
/// events: the run is incomplete (status 123), and the summary and the fault say how many.
#[test]
fn a_recording_that_cannot_be_written_makes_the_run_incomplete() {
    let run = traplab(&["trace", "hello", "--record", "/dev/full"]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(123), "{stderr}");
    assert!(
        stderr.contains("TRACE FAULT: the recording is incomplete: writing"),
        "{stderr}"
    );
    assert!(stdout.contains("1 trace fault(s)"), "{stdout}");
}
