//! Build the bare-metal half of traplab — the hypervisor (`hv/`) and the lab guests
//! (`guests/`) — so that `cargo run` and `cargo test` need nothing else (how: `src/bare.rs`),
//! into `target/bare`. This tree's root reaches the crate as `TRAPLAB_BUILD_ROOT`: the tree
//! `traplab` falls back on when it finds none where it runs (`src/tree.rs`).

#[path = "src/bare.rs"]
#[allow(dead_code, reason = "the crate uses more of it than the build script")]
mod bare;

use std::path::{Path, PathBuf};

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .expect("labs/ is inside the repository")
        .to_path_buf();
    if let Err(error) = bare::build_tree(&root, false) {
        panic!("{error}");
    }
    for watched in [
        "hv/src",
        "hv/baremetal",
        "hv/Cargo.toml",
        "hv/Cargo.lock",
        "hv/build.rs",
        "hv/linker.ld",
        "hv/.cargo",
        "guests/src",
        "guests/Cargo.toml",
        "guests/Cargo.lock",
        "guests/build.rs",
        "guests/linker.ld",
        "guests/multiboot.ld",
        "guests/.cargo",
        "abi/src",
        "abi/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    println!("cargo:rustc-env=TRAPLAB_BUILD_ROOT={}", root.display());
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
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "toml")
        })
        .collect();
    files.sort();
    let mut code = String::from("&[\n");
    for file in files {
        let name = file
            .file_name()
            .and_then(|name| name.to_str())
            .expect("UTF-8 file names");
        code.push_str(&format!(
            "    ({name:?}, include_str!({:?})),\n",
            file.display().to_string()
        ));
    }
    code.push_str("]\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("catalogue.rs"), code).expect("OUT_DIR is writable");
}
