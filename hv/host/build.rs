//! Built in the repository's workspace, cargo names the library's files
//! `hv/host/../src/…`, a path from the repository that already leads to them: the
//! `decide!` macro's source locations need no prefix here (see `../build.rs`).
fn main() {
    println!("cargo:rustc-env=TRAPLAB_HV_SOURCE_PREFIX=");
}
