//! Building the bare-metal half of traplab — the hypervisor (`hv/`) and the lab guests
//! (`guests/`) — with a nested cargo. Used by `labs/build.rs` (through `#[path]`, so that
//! `cargo run` and `cargo test` build everything), by `traplab check` (which rebuilds what
//! changed before it grades: it must never grade the code of an older build), and by the
//! exercise tests, which build reference solutions in a copy of the source trees.
//!
//! Each is its own Cargo workspace (bare-metal profile: panic = "abort"), built with
//! `cargo build --release` in its folder (so its `.cargo/config.toml` applies) and into a
//! target directory of its own (sharing the outer one would deadlock on its lock). The
//! environment an outer cargo gives its build scripts and tests must not leak in: our
//! RUSTFLAGS are not theirs. Built the same way from everywhere, cargo's own record of what
//! it built stays valid, and it rebuilds only what changed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The bare-metal workspaces of a tree, in the order they are built.
pub const WORKSPACES: [&str; 2] = ["hv", "guests"];

/// Why a bare-metal build did not happen or did not succeed.
#[derive(Debug)]
pub enum BuildError {
    /// cargo could not be started (it is not on PATH).
    CannotRun {
        command: String,
        error: std::io::Error,
    },
    /// cargo ran and the build failed: its messages are on stderr, or in `messages` when
    /// they were kept (a quiet build).
    Failed {
        workspace: PathBuf,
        command: String,
        messages: String,
    },
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            BuildError::CannotRun { command, error } => {
                write!(formatter, "cannot run `{command}`: {error}")
            }
            BuildError::Failed {
                workspace,
                command,
                messages,
            } if messages.trim().is_empty() => write!(
                formatter,
                "building {} failed (see the cargo output above; `{command}` builds it again)",
                workspace.display()
            ),
            BuildError::Failed {
                workspace,
                command,
                messages,
            } => write!(
                formatter,
                "building {} failed (`{command}` builds it again):\n{}",
                workspace.display(),
                messages.trim_end()
            ),
        }
    }
}

/// The target directory of the bare-metal build of the tree at `root`.
pub fn target_dir(root: &Path) -> PathBuf {
    root.join("target").join("bare")
}

/// `cargo build --release --locked --bins` in `workspace`, into `target_dir`. Cargo's
/// messages go to our stderr (a build script's stdout is for `cargo:` lines); with `quiet`,
/// cargo says nothing about what it builds, and its warnings and errors are kept for the
/// error (a progress line is on stderr meanwhile: they would land in the middle of it).
pub fn build(workspace: &Path, target_dir: &Path, quiet: bool) -> Result<(), BuildError> {
    let mut command = cargo(workspace);
    command
        .args(["build", "--release", "--locked", "--bins", "--target-dir"])
        .arg(target_dir)
        .stdout(Stdio::from(std::io::stderr()));
    if quiet {
        command.arg("--quiet").stderr(Stdio::piped());
    } else {
        command.stderr(Stdio::inherit());
    }
    // With `quiet`, stderr is a pipe that `output` reads to its end; else it is ours.
    let output = command.output().map_err(|error| BuildError::CannotRun {
        command: command_line(workspace, target_dir),
        error,
    })?;
    if !output.status.success() {
        return Err(BuildError::Failed {
            workspace: workspace.to_path_buf(),
            command: command_line(workspace, target_dir),
            messages: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(())
}

/// A nested cargo, run in `dir`, without what an outer cargo puts in the environment of its
/// build scripts and tests (the module's text): its flags, target and profile are not the
/// nested build's.
pub fn cargo(dir: &Path) -> Command {
    let program = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(program);
    command.current_dir(dir);
    for variable in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        command.env_remove(variable);
    }
    for (variable, _) in std::env::vars() {
        if variable.starts_with("CARGO_PROFILE_") || variable.starts_with("CARGO_CFG_") {
            command.env_remove(variable);
        }
    }
    command
}

/// Build every bare-metal workspace of the tree at `root` into its target directory.
pub fn build_tree(root: &Path, quiet: bool) -> Result<(), BuildError> {
    let target_dir = target_dir(root);
    for workspace in WORKSPACES {
        build(&root.join(workspace), &target_dir, quiet)?;
    }
    Ok(())
}

/// The shell command that builds `workspace` as [`build`] does: what to tell a user who
/// must run it by hand.
pub fn command_line(workspace: &Path, target_dir: &Path) -> String {
    format!(
        "cd {} && cargo build --release --locked --bins --target-dir {}",
        workspace.display(),
        target_dir.display()
    )
}

/// Where the programs built into `target_dir` are: `traplab-hv` and one file per guest.
pub fn output_dir(target_dir: &Path) -> PathBuf {
    target_dir.join("x86_64-unknown-linux-gnu").join("release")
}
