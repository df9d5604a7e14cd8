//! Link every guest as a static ELF: the lab guests at 2 MiB (`linker.ld`,
//! `traplab_abi::boot::IMAGE_BASE`), the multiboot kernels ([`MULTIBOOT_KERNELS`]) at 1 MiB
//! (`multiboot.ld`).
//!
//! A bin must get one linker script, not two: given `-T` twice, the linker reads both and
//! adds them up. So `linker.ld` is every bin's *default* script (`--default-script`, which
//! GNU ld and LLD read only "in the absence of --script"), and each multiboot kernel gets its
//! own `-T`, which replaces it. Cargo has "every bin" (`rustc-link-arg-bins`) and "this
//! bin" (`rustc-link-arg-bin=NAME=ARG`), but no "every bin but this one".
/// The bins that are multiboot kernels, not lab guests: they know nothing of traplab.
const MULTIBOOT_KERNELS: [&str; 3] = ["multiboot-hello", "bad-cr0-kernel", "serial-echo"];

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-arg-bins=-Wl,--default-script={dir}/linker.ld");
    for kernel in MULTIBOOT_KERNELS {
        println!("cargo:rustc-link-arg-bin={kernel}=-T{dir}/multiboot.ld");
    }
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
    println!("cargo:rerun-if-changed=multiboot.ld");
}
