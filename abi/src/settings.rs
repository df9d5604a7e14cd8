//! Hypervisor settings a lab can turn on (the catalogue's `settings`, passed to the
//! hypervisor as fw_cfg `opt/traplab/settings`, comma-separated).
//!
//! Some intercepts would flood every trace — a guest's CLTS, its every RDTSC — so the
//! hypervisor only takes them for the labs that are about them.

/// `(name, what it does)`, every setting there is.
pub const SETTINGS: [(&str, &str); 9] = [
    (
        "intercept-cr",
        "intercept writes to CR3 and CR4, and writes to CR0 that change more than TS/MP (selective CR0 intercept); emulate them, answering invalid values with #GP",
    ),
    (
        "intercept-dr",
        "intercept MOV to and from DR0–DR7 and emulate them (the guest's debug registers are the hypervisor's to hand out)",
    ),
    (
        "intercept-rdtsc",
        "intercept RDTSC and RDTSCP and emulate them with the domain's TSC offset",
    ),
    (
        "intercept-invlpg",
        "intercept INVLPG and emulate it with INVLPGA in the guest's address space",
    ),
    (
        "intercept-pause",
        "intercept every PAUSE (a spin-wait hint a real hypervisor uses to run someone else)",
    ),
    (
        "lazy-memory",
        "map guest RAM in the nested page tables only when the guest first touches it",
    ),
    (
        "passthrough-fs-base",
        "let the guest read and write MSR FS_BASE without an exit (cleared in the MSR permission map)",
    ),
    (
        "pc-testdev",
        "give the domains QEMU's pc-testdev (`-device pc-testdev`, which kvm-unit-tests use): a data register at port 0xe0, \"flush page\" at 0xe4, one interrupt line per IO-APIC pin at 0x2000–0x2017, 64 KiB of memory at 0xff000000",
    ),
    (
        "bench-bare",
        "answer CPUID in the run loop itself with the real CPU's answer, before anything else: no instruction fetch or decode, no trace, gdb or control (`traplab bench`'s baseline world switch; not for labs)",
    ),
];

/// Is `name` a setting?
pub fn is_known(name: &str) -> bool {
    SETTINGS.iter().any(|(known, _)| *known == name)
}
