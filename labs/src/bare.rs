//! Building the bare-metal half of traplab — the hypervisor (`hv/`) and the lab guests
//! (`guests/`) — with a nested cargo. Used by `labs/build.rs` (through `#[path]`, so that
//! `cargo run` and `cargo test` build everything) and by the exercise tests, which build
//! reference solutions in a copy of the source trees.
//!
//! Each is its own Cargo workspace (bare-metal profile: panic = "abort"), built with
//! `cargo build --release` in its folder (so its `.cargo/config.toml` applies) and into a
//! target directory of its own (sharing the outer one would deadlock on its lock). The
//! environment an outer cargo gives its build scripts and tests must not leak in: our
//! RUSTFLAGS are not theirs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `cargo build --release --locked --bins` in `workspace`, into `target_dir`. Cargo's
/// messages go to our stderr (a build script's stdout is for `cargo:` lines).
pub fn build(workspace: &Path, target_dir: &Path) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args(["build", "--release", "--locked", "--bins", "--target-dir"])
        .arg(target_dir)
        .stdout(Stdio::from(std::io::stderr()));
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
    let status = command
        .status()
        .map_err(|error| format!("cannot run cargo for {}: {error}", workspace.display()))?;
    if !status.success() {
        return Err(format!(
            "building {} failed (see the cargo output above)",
            workspace.display()
        ));
    }
    Ok(())
}

/// Where the programs built into `target_dir` are: `traplab-hv` and one file per guest.
pub fn output_dir(target_dir: &Path) -> PathBuf {
    target_dir.join("x86_64-unknown-linux-gnu").join("release")
}
