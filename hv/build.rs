//! Link the hypervisor as a static ELF at 1 MiB with our own linker script, and tell the
//! `decide!` macro where its sources are.
fn main() {
    // cargo names source files relative to the workspace: `src/exit/cr.rs` here, where the
    // trace says `hv/src/exit/cr.rs` (`host/build.rs` says the same for the host tests).
    println!("cargo:rustc-env=TRAPLAB_HV_SOURCE_PREFIX=hv/");
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-arg-bins=-T{dir}/linker.ld");
    for arg in [
        "-nostartfiles",
        "-nodefaultlibs",
        "-static",
        "-no-pie",
        "-Wl,--build-id=none",
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    println!("cargo:rerun-if-changed=linker.ld");
}
