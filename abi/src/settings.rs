//! Hypervisor settings a lab can turn on (the catalogue's `settings`, passed to the
//! hypervisor as fw_cfg `opt/traplab/settings`, comma-separated).
//!
//! Some intercepts would flood every trace — a guest's CLTS, its every RDTSC — so the
//! hypervisor only takes them for the labs that are about them.

#[cfg(any(feature = "events", test))]
use alloc::{format, string::String, vec::Vec};

/// `(name, what it does)`, every setting there is.
pub const SETTINGS: [(&str, &str); 9] = [
    (
        "intercept-cr",
        "intercept writes to CR3; emulate them, answering invalid values with #GP (writes to CR4, CR8, and to CR0 that change more than TS/MP, always exit)",
    ),
    (
        "intercept-dr",
        "intercept MOV to and from DR0–DR7 and emulate them (the guest's debug registers are the hypervisor's to hand out; writes to DR7, and every access while DR7.GD is set, always exit)",
    ),
    (
        "intercept-rdtsc",
        "intercept RDTSC and RDTSCP: RDTSC emulated with the domain's TSC offset, RDTSCP a #UD, as on the CPU the guest is shown",
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
        BENCH_BARE,
        "answer CPUID in the run loop itself with the real CPU's answer, before anything else: no instruction fetch or decode, no trace, gdb or control (`traplab bench`'s baseline world switch, with the trace off; not for labs, nor for `--setting`: the hypervisor refuses it with a trace, which would miss those CPUIDs)",
    ),
];

/// `traplab bench`'s baseline (`hv/src/bench_bare.rs`): only with the trace off.
pub const BENCH_BARE: &str = "bench-bare";

/// Is `name` a setting?
pub fn is_known(name: &str) -> bool {
    SETTINGS.iter().any(|(known, _)| *known == name)
}

/// Why `name` cannot be a setting of a lab or of a traced run (`--setting`): it is none, or
/// it is [`BENCH_BARE`], whose CPUIDs a trace would never see (the hypervisor refuses it
/// with a trace). `None`: it can be.
#[cfg(any(feature = "events", test))]
pub fn refused(name: &str) -> Option<String> {
    if !is_known(name) {
        let known: Vec<&str> = SETTINGS.iter().map(|(known, _)| *known).collect();
        return Some(format!(
            "there is no setting \"{name}\"; the settings are: {}",
            known.join(", ")
        ));
    }
    (name == BENCH_BARE).then(|| {
        format!(
            "the setting \"{name}\" is `traplab bench`'s baseline: it answers CPUID without recording it, so a trace would miss those traps (`traplab bench` runs it with the trace off)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lab_or_a_trace_may_have_every_setting_but_the_bench_s_baseline() {
        for (name, _) in SETTINGS {
            assert_eq!(refused(name).is_some(), name == BENCH_BARE, "{name}");
        }
        let baseline = refused(BENCH_BARE).unwrap_or_default();
        assert!(baseline.contains("without recording it"), "{baseline}");
        let unknown = refused("intercept-everything").unwrap_or_default();
        assert!(
            unknown.contains("no setting \"intercept-everything\"")
                && unknown.contains("lazy-memory"),
            "{unknown}"
        );
    }
}
