//! Build the bare-metal half of traplab — the hypervisor (`hv/`) and the lab guests
//! (`guests/`) — so that `cargo run` and `cargo test` need nothing else.
//!
//! Each is its own Cargo workspace (bare-metal profile: panic = "abort"), built here with a
//! nested `cargo build --release` in their folders (so their `.cargo/config.toml` applies)
//! and into their own target directory `target/bare` (sharing ours would deadlock on its
//! lock). The environment cargo gives build scripts must not leak in: our RUSTFLAGS are not
//! theirs. The paths of the results reach the crate as `TRAPLAB_BARE_DIR`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("labs/ is inside the repository").to_path_buf();
    let target_dir = root.join("target").join("bare");
    for workspace in ["hv", "guests"] {
        build(&root.join(workspace), &target_dir);
    }
    for watched in [
        "hv/src", "hv/baremetal", "hv/Cargo.toml", "hv/Cargo.lock", "hv/build.rs", "hv/linker.ld", "hv/.cargo",
        "guests/src", "guests/Cargo.toml", "guests/Cargo.lock", "guests/build.rs", "guests/linker.ld",
        "guests/.cargo", "abi/src", "abi/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let bare = target_dir.join("x86_64-unknown-linux-gnu").join("release");
    println!("cargo:rustc-env=TRAPLAB_BARE_DIR={}", bare.display());
    embed_catalogue(&manifest_dir);
}

/// Every `catalogue/*.toml`, embedded in the binary: `OUT_DIR/catalogue.rs` is a list of
/// `(file name, contents)` for `src/catalogue.rs`.
fn embed_catalogue(manifest_dir: &Path) {
    let dir = manifest_dir.join("catalogue");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("labs/catalogue exists")
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|extension| extension == "toml"))
        .collect();
    files.sort();
    let mut code = String::from("&[\n");
    for file in files {
        let name = file.file_name().and_then(|name| name.to_str()).expect("UTF-8 file names");
        code.push_str(&format!("    ({name:?}, include_str!({:?})),\n", file.display().to_string()));
    }
    code.push_str("]\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("catalogue.rs"), code).expect("OUT_DIR is writable");
}

fn build(workspace: &Path, target_dir: &Path) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args(["build", "--release", "--locked", "--bins", "--target-dir"])
        .arg(target_dir)
        // Cargo's messages go to our stderr: a build script's stdout is for cargo: lines.
        .stdout(Stdio::from(std::io::stderr()));
    for variable in ["CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS", "CARGO_TARGET_DIR", "CARGO_BUILD_TARGET", "RUSTC_WORKSPACE_WRAPPER"] {
        command.env_remove(variable);
    }
    for (variable, _) in std::env::vars() {
        if variable.starts_with("CARGO_PROFILE_") || variable.starts_with("CARGO_CFG_") {
            command.env_remove(variable);
        }
    }
    let status = command.status().unwrap_or_else(|error| panic!("cannot run cargo for {}: {error}", workspace.display()));
    if !status.success() {
        panic!("building {} failed (see the cargo output above)", workspace.display());
    }
}
