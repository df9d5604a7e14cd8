//! End to end: the real `traplab run page-fault` in a real terminal (tmux), driven by
//! keys as a student types them. Break on #PF, step through the decision, the injection
//! and the resume, quit; read the screen at each step (tmux capture-pane).
//!
//! Needs `tmux` (CI installs it, see `.ci/run`).

use std::process::Command;
use std::time::{Duration, Instant};

/// One tmux session, killed however the test ends.
struct Tmux {
    name: String,
}

impl Tmux {
    /// `label` tells the tests' sessions apart (they run in parallel).
    fn start(label: &str, command: &str) -> Tmux {
        let name = format!("traplab-e2e-{}-{label}", std::process::id());
        let status = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                &name,
                "-x",
                "100",
                "-y",
                "30",
                command,
            ])
            // A terminal that every machine knows; no colours to strip from the capture.
            .env("TERM", "xterm-256color")
            .env("NO_COLOR", "1")
            .status()
            .expect("tmux runs (install it: apt-get install tmux)");
        assert!(status.success(), "tmux new-session");
        Tmux { name }
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.name];
        args.extend_from_slice(keys);
        assert!(
            Command::new("tmux")
                .args(&args)
                .status()
                .expect("tmux send-keys")
                .success()
        );
    }

    fn screen(&self) -> String {
        let output = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.name])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Wait until the screen shows every one of `texts`; fail with the screen after 60 s.
    fn wait_for(&self, texts: &[&str]) -> String {
        within(
            60,
            || {
                let screen = self.screen();
                texts
                    .iter()
                    .all(|text| screen.contains(text))
                    .then_some(screen)
            },
            || format!("waited for {texts:?}; the screen shows:\n{}", self.screen()),
        )
    }

    fn alive(&self) -> bool {
        Command::new("tmux")
            .args(["has-session", "-t", &self.name])
            .output()
            .is_ok_and(|output| output.status.success())
    }

    /// The process in the pane (traplab itself: the command is `exec`ed).
    fn pane_pid(&self) -> u32 {
        let output = Command::new("tmux")
            .args(["list-panes", "-t", &self.name, "-F", "#{pane_pid}"])
            .output()
            .expect("tmux list-panes");
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .expect("a pid")
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .output();
    }
}

/// Look every tenth of a second until `found` gives a value; fail with `stuck`'s words after
/// `seconds` (a bound, never a fixed wait: these machines are loaded).
fn within<T>(seconds: u64, mut found: impl FnMut() -> Option<T>, stuck: impl Fn() -> String) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = found() {
            return value;
        }
        assert!(
            started.elapsed() < Duration::from_secs(seconds),
            "{}",
            stuck()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// QEMU processes whose RAM file names traplab process `pid`.
fn qemu_of(pid: u32) -> usize {
    let marker = format!("traplab-{pid}-");
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter(|process| {
                    std::fs::read(format!("/proc/{process}/cmdline"))
                        .is_ok_and(|line| String::from_utf8_lossy(&line).contains(&marker))
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn break_on_page_fault_step_to_the_resume_and_quit() {
    let tmux = Tmux::start(
        "steps",
        &format!("exec {} run page-fault", env!("CARGO_BIN_EXE_traplab")),
    );
    tmux.wait_for(&[
        "page-fault (live)",
        "STOPPED after seq 0",
        "The hypervisor waits after its boot",
    ]);
    let traplab = tmux.pane_pid();
    assert_eq!(qemu_of(traplab), 1, "QEMU runs");

    tmux.keys(&["b"]);
    tmux.wait_for(&["break on (pf"]);
    tmux.keys(&["pf", "Enter"]);
    tmux.wait_for(&["break pf"]);

    // Continue: the hypervisor stops at the #PF exit, before it decides.
    tmux.keys(&["c"]);
    // Everything the test reads is waited for: a screen is written to the terminal in
    // pieces, and tmux may be read between two of them.
    let screen = tmux.wait_for(&[
        "#VMEXIT EXCP_PF",
        "before it decides",
        "PENDING",
        "a supervisor-mode write to 0x40000000, whose page is not present",
        "W/R       1 — write",
    ]);
    assert!(
        screen.contains("W/R       1 — write"),
        "the error code, bit by bit:\n{screen}"
    );

    // Each step shows one more event: the decision, the injection, the resume.
    tmux.keys(&["s"]);
    tmux.wait_for(&["decide: reflect", "The hypervisor decides to reflect it"]);
    tmux.keys(&["s"]);
    let screen = tmux.wait_for(&[
        "inject #PF → EVENTINJ",
        "into the guest's IDT vector 14",
        "EVENTINJ   0x280000b0e",
    ]);
    assert!(
        screen.contains(
            "EVENTINJ   0x280000b0e: vector 14: #PF (page fault), type Exception, error code 0x2"
        ),
        "EVENTINJ decoded:\n{screen}"
    );
    tmux.keys(&["s"]);
    tmux.wait_for(&["VMRUN", "now in its #PF handler at 0x"]);

    // Quit: the terminal is given back and QEMU is gone.
    tmux.keys(&["q"]);
    within(
        20,
        || (!tmux.alive()).then_some(()),
        || format!("traplab did not quit:\n{}", tmux.screen()),
    );
    assert_eq!(qemu_of(traplab), 0, "quitting stops QEMU");
}

#[test]
fn closing_the_terminal_stops_qemu() {
    let tmux = Tmux::start(
        "hangup",
        &format!("exec {} run page-fault", env!("CARGO_BIN_EXE_traplab")),
    );
    tmux.wait_for(&["STOPPED after seq 0"]);
    let traplab = tmux.pane_pid();
    assert_eq!(qemu_of(traplab), 1, "QEMU runs");
    // The terminal goes away: traplab gets SIGHUP.
    drop(tmux);
    within(
        20,
        || (qemu_of(traplab) == 0).then_some(()),
        || "QEMU outlived its terminal".into(),
    );
}

/// Run traplab with `arguments` (and its stderr to `stderr`) in a tmux session `label`,
/// wait until the screen shows `shown`, quit with `q`: its exit status, which the shell
/// writes to a file once traplab quits (`…; echo $? >status`), waited for with a bound.
/// (`sleep 60` only keeps the pane open for the screen's capture meanwhile.)
fn status_after_quitting(label: &str, arguments: &str, stderr: &str, shown: &str) -> String {
    let status =
        std::env::temp_dir().join(format!("traplab-e2e-{}-{label}-status", std::process::id()));
    let _ = std::fs::remove_file(&status);
    let tmux = Tmux::start(
        label,
        &format!(
            "{} {arguments} 2>{stderr}; echo $? >{}; sleep 60",
            env!("CARGO_BIN_EXE_traplab"),
            status.display()
        ),
    );
    tmux.wait_for(&[shown]);
    tmux.keys(&["q"]);
    let code = within(
        20,
        || {
            let text = std::fs::read_to_string(&status).ok()?;
            text.ends_with('\n').then(|| text.trim().to_string())
        },
        || format!("traplab did not quit:\n{}", tmux.screen()),
    );
    let _ = std::fs::remove_file(&status);
    code
}

/// `run --record` on a file that refuses every write (/dev/full, a full disk): the run is
/// incomplete, as `trace --record` is (`offline.rs`): status 123 and a `TRACE FAULT` that
/// says how many events the recording lacks. It used to say so and exit with 0.
#[test]
fn a_run_whose_recording_cannot_be_written_exits_incomplete() {
    let stderr = std::env::temp_dir().join(format!("traplab-e2e-{}-stderr", std::process::id()));
    let code = status_after_quitting(
        "record-full",
        "run hello --running --record /dev/full",
        &stderr.display().to_string(),
        "QEMU stopped: the hypervisor finished",
    );
    let said = std::fs::read_to_string(&stderr).unwrap_or_default();
    let _ = std::fs::remove_file(&stderr);
    assert_eq!(code, "123", "{said}");
    assert!(
        said.contains("traplab: TRACE FAULT: the recording is incomplete: writing"),
        "{said}"
    );
}

/// `replay` of a recording without its end event shows it (the title says `NO END EVENT`)
/// and, once the screen closes, exits with 123 (incomplete) as `stats` and `export` do; it
/// exited with 0.
#[test]
fn replay_of_an_incomplete_recording_exits_incomplete() {
    let pid = std::process::id();
    let recording = std::env::temp_dir().join(format!("traplab-e2e-{pid}-no-end.jsonl"));
    let original = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/recordings/page-fault.jsonl"),
    )
    .expect("the checked-in recording");
    let lines: Vec<&str> = original.lines().collect();
    assert!(lines[lines.len() - 1].contains(r#""kind":"end""#));
    std::fs::write(&recording, lines[..lines.len() - 1].join("\n") + "\n").unwrap();
    let code = status_after_quitting(
        "replay-no-end",
        &format!("replay {}", recording.display()),
        "/dev/null",
        "NO END EVENT",
    );
    let _ = std::fs::remove_file(&recording);
    assert_eq!(code, "123");
}
