//! Every lab's exercises, proven both ways:
//!
//! - the starting point — this repository as it is — does **not** pass
//!   `traplab check <lab> --exercise N` (so there is something to do), while it passes the
//!   lab's own flow (`flows.rs`);
//! - with the reference solution applied (`labs/solutions/<lab>/<N>.patch`, a git diff
//!   against this repository), it **does** pass; and when it changes the hypervisor or the
//!   ABI, their unit tests still pass with it (a student who solved an exercise runs them
//!   too).
//!
//! A solution is applied to a copy of the source trees the bare-metal build needs (`abi/`,
//! `hv/`, `guests/`) and the lab files (`labs/files/`: a Linux lab's `/init`) in
//! `target/exercises/tree`, with a workspace manifest of its own, and built into
//! `target/exercises/target` (the unit tests into `target/exercises/host`).
//! They persist between runs, and the copy is refreshed file by file (only files whose
//! content differs are rewritten), so cargo rebuilds only what a patch touched: under a
//! second for a guest, about ten seconds for the hypervisor here, and about as much for
//! its unit tests. All 44 exercises take about eight minutes (a cold `target/exercises`
//! adds two).

use std::path::{Path, PathBuf};
use std::time::Instant;
use traplab_labs::grade::{Problem, grade};
use traplab_labs::{Exercise, Lab};

/// The source trees a solution may touch, and what the copy holds: what the bare-metal build
/// reads, and the files a lab's guest is given (an initrd, a Linux lab's `/init`). (Beside
/// them, the copy's own workspace manifest: [`write_workspace`].)
const TREES: [&str; 4] = ["abi", "hv", "guests", "labs/files"];

/// The crates of the host workspace that [`TREES`] hold: the ABI and the hypervisor's library,
/// whose unit tests run on a solved copy too (`unit_tests_pass`).
const HOST_CRATES: [&str; 2] = ["abi", "hv/host"];

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("labs/ is inside the repository")
        .to_path_buf()
}

fn solution(lab: &Lab, exercise: &Exercise) -> PathBuf {
    repository()
        .join("labs/solutions")
        .join(&lab.id)
        .join(format!("{}.patch", exercise.number))
}

/// The files a patch changes (`diff --git a/PATH b/PATH`).
fn patched_files(patch: &str) -> Vec<String> {
    patch
        .lines()
        .filter_map(|line| line.strip_prefix("diff --git a/"))
        .filter_map(|rest| rest.split_once(" b/").map(|(path, _)| path.to_string()))
        .collect()
}

/// How much a solution makes cargo rebuild: 0 one guest, 1 every guest, 2 the hypervisor,
/// 3 everything (the ABI).
fn rebuild_cost(files: &[String]) -> u8 {
    files
        .iter()
        .map(|file| match file {
            file if file.starts_with("guests/src/bin/") || file.starts_with("labs/files/") => 0,
            file if file.starts_with("guests/") => 1,
            file if file.starts_with("hv/") => 2,
            _ => 3,
        })
        .max()
        .unwrap_or(0)
}

fn source_files(root: &Path) -> Vec<PathBuf> {
    traplab_labs::tree::files(root, &TREES)
}

#[test]
fn every_lab_has_an_exercise_with_its_markers_and_a_solution() {
    let repository = repository();
    let labs = traplab_labs::all().expect("the catalogue parses");
    let sources = source_files(&repository);
    let mut markers_found = Vec::new();
    for lab in &labs {
        assert!(
            !lab.exercises.is_empty(),
            "lab {} has no exercise: every lab needs at least one",
            lab.id
        );
        assert!(
            !lab.questions.is_empty(),
            "lab {} has no questions for its chapter",
            lab.id
        );
        for exercise in &lab.exercises {
            let marker = exercise.marker(&lab.id);
            assert!(!exercise.files.is_empty(), "{marker} names no file");
            for file in &exercise.files {
                let text = std::fs::read_to_string(repository.join(file))
                    .unwrap_or_else(|error| panic!("{marker}: {file}: {error}"));
                assert!(
                    text.contains(&format!("{marker}:")),
                    "{file} has no `{marker}:` comment"
                );
            }
            let patch_path = solution(lab, exercise);
            let patch = std::fs::read_to_string(&patch_path).unwrap_or_else(|error| {
                panic!("{marker}: no solution {}: {error}", patch_path.display())
            });
            let patched = patched_files(&patch);
            assert!(
                !patched.is_empty(),
                "{} is not a git diff",
                patch_path.display()
            );
            for file in patched {
                assert!(
                    TREES
                        .iter()
                        .any(|tree| file.starts_with(&format!("{tree}/"))),
                    "{}: the proof only copies {TREES:?}, not {file}",
                    patch_path.display()
                );
            }
            markers_found.push(marker);
        }
    }
    // No marker in the code without an exercise in the catalogue (a renamed or removed one).
    for file in &sources {
        let Ok(text) = std::fs::read_to_string(repository.join(file)) else {
            continue;
        };
        for (index, _) in text.match_indices("EXERCISE ") {
            let rest = &text[index + "EXERCISE ".len()..];
            let marker: String = rest
                .chars()
                .take_while(|character| !character.is_whitespace() && *character != ':')
                .collect();
            if marker.contains('.') {
                assert!(
                    markers_found.contains(&format!("EXERCISE {marker}")),
                    "{}: `EXERCISE {marker}` is not in the catalogue",
                    file.display()
                );
            }
        }
    }
}

/// Make `tree` hold the repository's source files (`traplab_labs::tree::mirror`).
fn refresh(repository: &Path, tree: &Path) {
    traplab_labs::tree::mirror(repository, tree, &TREES)
        .unwrap_or_else(|error| panic!("copying the sources to {}: {error}", tree.display()));
    write_workspace(repository, tree);
}

/// The copy's workspace manifest and lockfile: the repository's, with only [`HOST_CRATES`]
/// as members (the copy holds no other: cargo refuses a workspace whose members are missing),
/// so that the hypervisor's unit tests run in the copy as they do here. Written only when
/// they differ from what is there (cargo prunes the lockfile to those members: it is written
/// back each time, which costs no rebuild).
fn write_workspace(repository: &Path, tree: &Path) {
    let text = std::fs::read_to_string(repository.join("Cargo.toml")).expect("Cargo.toml");
    let mut manifest: toml::Table = toml::from_str(&text).expect("Cargo.toml parses");
    let members = toml::Value::from(HOST_CRATES.to_vec());
    let workspace = manifest
        .get_mut("workspace")
        .and_then(toml::Value::as_table_mut)
        .expect("Cargo.toml has [workspace]");
    workspace.insert("members".into(), members.clone());
    workspace.insert("default-members".into(), members);
    let manifest = toml::to_string(&manifest).expect("a manifest serializes");
    let lockfile = std::fs::read(repository.join("Cargo.lock")).expect("Cargo.lock");
    for (name, content) in [
        ("Cargo.toml", manifest.into_bytes()),
        ("Cargo.lock", lockfile),
    ] {
        let path = tree.join(name);
        if std::fs::read(&path).ok() != Some(content.clone()) {
            std::fs::write(&path, content)
                .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        }
    }
}

/// A solution that changes the hypervisor or the ABI must keep their unit tests green: a
/// student who solved the exercise runs them too, and a test that holds only at the
/// starting point (a UD2 that must be reflected, a #AC raised at CPL 0) would fail them.
/// `cargo test` in the solved copy, whose workspace is [`HOST_CRATES`], into `target_dir`;
/// its time.
fn unit_tests_pass(tree: &Path, target_dir: &Path, marker: &str) -> std::time::Duration {
    let clock = Instant::now();
    let output = traplab_labs::bare::cargo(tree)
        .args(["test", "--offline", "--target-dir"])
        .arg(target_dir)
        .output()
        .unwrap_or_else(|error| panic!("{marker}: cannot run cargo: {error}"));
    if !output.status.success() {
        let failures: Vec<String> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| line.ends_with("FAILED") || line.starts_with("test result"))
            .map(str::to_string)
            .collect();
        panic!(
            "{marker}: with the reference solution applied, the unit tests of the hypervisor and the ABI fail ({}):\n{}\n{}",
            tree.display(),
            failures.join("\n"),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    clock.elapsed()
}

#[test]
fn every_exercise_fails_at_its_starting_point_and_passes_with_its_solution() {
    let started = Instant::now();
    let repository = repository();
    let work = repository.join("target/exercises");
    let (tree, target) = (work.join("tree"), work.join("target"));
    // The host's build of the copy (the hypervisor's unit tests), apart from the bare one.
    let host_target = work.join("host");
    let labs = traplab_labs::all().expect("the catalogue parses");
    let mut solutions = Vec::new();
    for lab in &labs {
        // The starting point: the programs `cargo test` built from this repository.
        if lab.boots_linux() && traplab_labs::linux::fetched().is_none() {
            traplab_labs::linux::fetch()
                .unwrap_or_else(|why| panic!("Debian's kernel and busybox: {why}"));
        }
        let machine = lab
            .machine()
            .unwrap_or_else(|why| panic!("lab {}: {why}", lab.id));
        let run =
            traplab_labs::run::collect(&machine, traplab_labs::run::TIMEOUT).expect("QEMU starts");
        let symbols = lab.symbols().expect("the guest has symbols");
        for exercise in &lab.exercises {
            let marker = exercise.marker(&lab.id);
            // An exercise that runs guests of its own starts from a run of them.
            let own_run = exercise.guests.is_some().then(|| {
                let machine = exercise
                    .lab(lab)
                    .machine()
                    .unwrap_or_else(|why| panic!("{marker}: {why}"));
                traplab_labs::run::collect(&machine, traplab_labs::run::TIMEOUT)
                    .expect("QEMU starts")
            });
            let start = grade(
                lab,
                Some(exercise),
                own_run.as_ref().unwrap_or(&run),
                &symbols,
            );
            assert!(
                !start.passed,
                "{marker}: the starting point already passes: there is nothing to do"
            );
            let broken: Vec<&Problem> = start
                .problems
                .iter()
                .filter(|problem| matches!(problem, Problem::Run { .. }))
                .collect();
            assert!(
                broken.is_empty(),
                "{marker}: the starting point's run is broken: {broken:?}"
            );
            let patch = std::fs::read_to_string(solution(lab, exercise))
                .unwrap_or_else(|error| panic!("{marker}: {error}"));
            solutions.push((rebuild_cost(&patched_files(&patch)), lab, exercise, start));
        }
    }
    // Cheap rebuilds first: cargo rebuilds what a solution changes, and again what the next
    // one restores. So the solutions that change one guest come first, then those that change
    // the guests' runtime (every guest), then the hypervisor, then the ABI (everything).
    solutions.sort_by_key(|(cost, ..)| *cost);
    let mut proven = 0;
    for (cost, lab, exercise, start) in solutions {
        let marker = exercise.marker(&lab.id);
        let clock = Instant::now();
        refresh(&repository, &tree);
        if let Err(error) = traplab_labs::tree::apply_patch(&solution(lab, exercise), &tree) {
            panic!("{marker}: {error}");
        }
        for workspace in traplab_labs::bare::WORKSPACES {
            if let Err(error) = traplab_labs::bare::build(&tree.join(workspace), &target, false) {
                panic!("{marker}: the solution does not build: {error}");
            }
        }
        let built = clock.elapsed();
        let bare = traplab_labs::bare::output_dir(&target);
        // The lab's files (an initrd, a Linux /init) come from the patched copy too; Debian's
        // packages from this repository's target/debian/, where `linux::dir()` looks: the
        // copy holds sources only.
        let machine = exercise
            .lab(lab)
            .machine_from(&tree, &bare)
            .unwrap_or_else(|why| panic!("{marker}: {why}"));
        let solved_run =
            traplab_labs::run::collect(&machine, traplab_labs::run::TIMEOUT).expect("QEMU starts");
        let solved_symbols = lab.symbols_from(&bare).expect("the guest has symbols");
        let solved = grade(lab, Some(exercise), &solved_run, &solved_symbols);
        let problems: Vec<&str> = solved.problems.iter().map(Problem::explanation).collect();
        assert!(
            solved.passed,
            "{marker}: the reference solution does not pass:\n{}",
            problems.join("\n")
        );
        let checked = clock.elapsed() - built;
        // A cost of 2 or more rebuilds the hypervisor: the solution touched it or the ABI.
        let unit_tests = (cost >= 2).then(|| unit_tests_pass(&tree, &host_target, &marker));
        eprintln!(
            "{marker}: the start fails ({} of {} steps matched), the solution passes (built in {:.1} s, checked in {:.1} s{})",
            start.matched,
            start.steps,
            built.as_secs_f64(),
            checked.as_secs_f64(),
            unit_tests.map_or(String::new(), |took| format!(
                ", the unit tests of the hypervisor and the ABI pass with it in {:.1} s",
                took.as_secs_f64()
            ))
        );
        proven += 1;
    }
    eprintln!(
        "{proven} exercises proven in {:.0} s",
        started.elapsed().as_secs_f64()
    );
}
