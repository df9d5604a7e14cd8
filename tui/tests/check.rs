//! `traplab check` as a student meets it, on a copy of this tree (`target/check-tree`) where
//! a test changes the code the way a student does: check grades the code as it is now (it
//! rebuilds what changed), stops a guest stuck on one fault early and says which, and
//! grades nothing it cannot build.
//!
//! The copy persists between runs and is refreshed file by file (`traplab_labs::tree::
//! mirror`), so cargo rebuilds only what a test changed; the first run builds the copy's
//! hypervisor and guests from scratch (about a minute here). The tests that change the copy
//! take turns (`COPY`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// What the copy holds: what the bare-metal build reads, and the catalogue that marks a
/// traplab tree (`traplab_labs::tree`).
const PARTS: [&str; 5] = ["Cargo.toml", "abi", "hv", "guests", "labs/catalogue"];

/// One test at a time changes the copy.
static COPY: Mutex<()> = Mutex::new(());

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tui/ is inside the repository")
        .to_path_buf()
}

/// The copy, as this repository has it, for the caller alone while it holds the guard.
fn fresh_copy() -> (MutexGuard<'static, ()>, PathBuf) {
    let guard = COPY.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let copy = repository().join("target/check-tree");
    traplab_labs::tree::mirror(&repository(), &copy, &PARTS)
        .unwrap_or_else(|error| panic!("copying the tree to {}: {error}", copy.display()));
    (guard, copy)
}

/// Change `file` of the copy: `from` becomes `to` (which must be there).
fn edit(copy: &Path, file: &str, from: &str, to: &str) {
    let path = copy.join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{file}: {error}"));
    assert!(text.contains(from), "{file} has `{from}`");
    std::fs::write(&path, text.replace(from, to)).unwrap_or_else(|error| panic!("{file}: {error}"));
}

/// `traplab ARGS` in `dir`, as a student in that tree runs it (no terminal).
fn traplab_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_traplab"))
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("traplab runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_grades_the_code_as_it_is_now_not_the_last_build() {
    let (_turn, copy) = fresh_copy();
    let solution = repository().join("labs/solutions/hello/1.patch");
    traplab_labs::tree::apply_patch(&solution, &copy).expect("the solution applies");
    let solved = traplab_in(&copy, &["check", "hello", "--exercise", "1"]);
    assert_eq!(
        solved.status.code(),
        Some(0),
        "the solved exercise is built and passes\n{}{}",
        text(&solved.stdout),
        text(&solved.stderr)
    );
    assert!(
        text(&solved.stdout).starts_with("hello exercise 1 (One exit for the whole line): passed"),
        "{}",
        text(&solved.stdout)
    );

    // `git stash`: the starting point is back, and the solution's build is still there.
    traplab_labs::tree::mirror(&repository(), &copy, &PARTS).expect("the copy refreshes");
    let start = traplab_in(&copy, &["check", "hello", "--exercise", "1"]);
    assert_eq!(
        start.status.code(),
        Some(1),
        "the starting point is graded, not the last build\n{}{}",
        text(&start.stdout),
        text(&start.stderr)
    );
    assert!(
        text(&start.stdout).contains("NOT PASSED"),
        "{}",
        text(&start.stdout)
    );
}

#[test]
fn trace_runs_the_code_as_it_is_now_not_the_last_build() {
    // As check does: a student who changes a guest and traces the lab sees the change,
    // whether cargo rebuilt it or not (`traplab trace` run as it is, not by `cargo run`).
    let (_turn, copy) = fresh_copy();
    let ioio_exits = |output: &Output| {
        text(&output.stdout)
            .lines()
            .filter(|line| line.contains(r#""kind":"exit""#) && line.contains(r#""reason":"IOIO""#))
            .count()
    };
    let solution = repository().join("labs/solutions/hello/1.patch");
    traplab_labs::tree::apply_patch(&solution, &copy).expect("the solution applies");
    let solved = traplab_in(&copy, &["trace", "hello", "--json"]);
    assert_eq!(solved.status.code(), Some(0), "{}", text(&solved.stderr));
    // The solution writes the line with one REP OUTSB: one exit, where a byte each was.
    assert_eq!(ioio_exits(&solved), 1, "the solution's build ran");
    traplab_labs::tree::mirror(&repository(), &copy, &PARTS).expect("the copy refreshes");
    let start = traplab_in(&copy, &["trace", "hello", "--json"]);
    assert_eq!(start.status.code(), Some(0), "{}", text(&start.stderr));
    assert!(
        ioio_exits(&start) > 10,
        "the starting point ran, a byte an exit, not the solution's build: {} IOIO exits",
        ioio_exits(&start)
    );
}

#[test]
fn check_stops_a_guest_stuck_on_the_same_fault_and_says_which() {
    let (_turn, copy) = fresh_copy();
    // A handler that never maps the page that faults: the write faults for ever.
    edit(
        &copy,
        "guests/src/bin/page-fault.rs",
        "paging::map_new(address & !0xfff, Flags::WRITABLE)",
        "paging::map_new(0x5000_0000, Flags::WRITABLE)",
    );
    let started = Instant::now();
    let output = traplab_in(&copy, &["check", "page-fault", "--timeout", "120"]);
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{stdout}{}",
        text(&output.stderr)
    );
    assert!(
        stdout.contains("d1 is stuck: the same #PF (error code 0x2, address 0x40000000) at RIP 0x")
            && stdout.contains(&format!(
                "came {} times in a row",
                traplab_labs::run::STUCK_AFTER
            )),
        "{stdout}"
    );
    assert!(
        !stdout.contains("did not finish in time"),
        "stopped early, not by the time limit ({:.0} s): {stdout}",
        started.elapsed().as_secs_f64()
    );
    // Off a terminal, no progress line (and nothing a terminal would erase).
    assert!(
        !text(&output.stderr).contains('\r'),
        "{:?}",
        text(&output.stderr)
    );
}

#[test]
fn check_grades_nothing_that_does_not_build() {
    let (_turn, copy) = fresh_copy();
    edit(
        &copy,
        "guests/src/bin/hello.rs",
        "fn main(",
        "fn main(this does not compile",
    );
    let output = traplab_in(&copy, &["check", "hello"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains(&format!("building {}/guests failed", copy.display()))
            && stderr.contains("nothing was graded"),
        "{stderr}"
    );
    assert!(
        stderr.contains("error") && stderr.contains("src/bin/hello.rs"),
        "cargo's own message says where: {stderr}"
    );
    assert!(
        output.stdout.is_empty(),
        "no verdict: {}",
        text(&output.stdout)
    );
}

#[test]
fn without_cargo_check_refuses_with_the_commands_that_build() {
    let root = repository();
    let empty =
        std::env::temp_dir().join(format!("traplab-check-test-{}-path", std::process::id()));
    std::fs::create_dir_all(&empty).expect("a temporary folder");
    let output = Command::new(env!("CARGO_BIN_EXE_traplab"))
        .current_dir(&root)
        .args(["check", "hello"])
        .env("PATH", &empty)
        .env_remove("CARGO")
        .stdin(Stdio::null())
        .output()
        .expect("traplab runs");
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    for workspace in ["hv", "guests"] {
        let command = format!(
            "cd {}/{workspace} && cargo build --release --locked --bins --target-dir {}/target/bare",
            root.display(),
            root.display()
        );
        assert!(stderr.contains(&command), "`{command}` in {stderr}");
    }
    assert!(stderr.contains("nothing was graded"), "{stderr}");
    std::fs::remove_dir(empty).expect("removable");
}

#[test]
fn check_json_is_one_verdict_per_line_and_nothing_else() {
    // Nothing changed here: the rebuild is cargo finding nothing to do, and it says nothing.
    let output = traplab_in(&repository(), &["check", "hello", "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let verdict: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON line on stdout");
    assert_eq!(
        (verdict["lab"].as_str(), verdict["passed"].as_bool()),
        (Some("hello"), Some(true))
    );
}
