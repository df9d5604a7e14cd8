//! CPUID (exit code 0x72): emulate it, so the guest sees the CPU the hypervisor describes.
//!
//! We run the real CPUID and edit the answer: the "hypervisor present" bit
//! (CPUID.1:ECX[31]) and OSXSAVE (CPUID.1:ECX[27], the guest's CR4.OSXSAVE), the hypervisor leaves at 0x4000_0000 with traplab's signature, the ABI
//! version and the TSC's rate (`traplab_abi::boot::cpuid`), and SVM hidden (CPUID.8000_0001:ECX[2], leaf 8000_000A):
//! this hypervisor does not offer nested virtualization. MONITOR/MWAIT (CPUID.1:ECX[3]) is
//! hidden too: their exits get #UD (`monitor.rs`).
//!
//! A feature is a promise: software that sees it turns it on, and for many features that is a
//! bit of CR4 or EFER (SMEP is CR4.SMEP, Automatic IBRS is EFER.AIBRSE). The CPU the
//! hypervisor describes has only the bits it lets the guest set: its checks of those writes
//! (`cr.rs` for CR4, `msr.rs` for EFER, whose writes always exit) refuse the others with
//! #GP(0), and its own page walks and emulation model none of the features behind them
//! (SMEP, SMAP, protection keys, 5-level paging). So each feature whose enable bit it refuses is cleared from the answer
//! ([`FEATURES`]), and the `emulate` line names it. Other features bring state a kernel uses
//! as soon as it sees them: RDTSCP and RDPID read MSR TSC_AUX, IBRS and SSBD are bits of MSR
//! SPEC_CTRL, XSAVES saves what MSR XSS selects (leaf 0xD subleaf 1 then lists no XSS
//! components either), OSVW's errata are in MSRs of their own, x2APIC and TSC-deadline are
//! modes of the local APIC.
//! The hypervisor emulates none of those (`msr.rs` answers their MSRs with #GP(0), as a CPU
//! without them does; `device/lapic.rs` has neither mode), so those features are hidden
//! always: a Linux kernel that saw RDTSCP would write TSC_AUX at boot and take the #GP. Under
//! QEMU's TCG the CPU (`qemu64`) has none of them; under KVM (`traplab trace --accel kvm`,
//! `-cpu host`) the guest would otherwise see the host's.

use super::{Exit, undecodable};
use crate::decision::{Decision, Effect, Words};
use crate::domain::Guest;
use crate::here;
use alloc::borrow::Cow;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use traplab_abi::boot::cpuid::{
    ABI_VERSION, HYPERVISOR_BIT, SIGNATURE, SIGNATURE_LEAF, TIMING_LEAF, VERSION_LEAF,
};
use traplab_abi::event::{Action, Argument};
use traplab_abi::x86::Cr4Flags;

/// CPUID.1:ECX[27], OSXSAVE: the OS has set CR4.OSXSAVE.
const OSXSAVE_BIT: u32 = 1 << 27;
/// CPUID.1:ECX[3], MONITOR: MONITOR and MWAIT are there.
const MONITOR_BIT: u32 = 1 << 3;

/// What a feature needs of the hypervisor before the guest may see it.
#[derive(Debug, Clone, Copy)]
enum Needs {
    /// Its enable bit in CR4, by number, allowed by `cr.rs`.
    Cr4(u32),
    /// Its enable bit in EFER, by number, allowed by `msr.rs`.
    Efer(u32),
    /// State the hypervisor does not emulate (an MSR, a mode of the local APIC), named:
    /// never seen.
    NotEmulated(&'static str),
}

/// A feature CPUID reports (in `leaf`, `subleaf` for the leaves that have subleaves (7 and
/// 0xD), register `register`: 0 EAX, 1 EBX, 2 ECX, 3 EDX, bit `bit`) that the guest may see
/// only if the hypervisor gives it what it `needs`.
struct Feature {
    leaf: u32,
    subleaf: u32,
    register: usize,
    bit: u32,
    name: &'static str,
    needs: Needs,
}

/// The features CPUID may report that need something of the hypervisor (AMD APM vol. 3,
/// appendix E, "Obtaining Processor Information Via the CPUID Instruction"; vol. 2, 3.1.3
/// "CR4 Register" and 3.1.7 "Extended Feature Enable Register"; and, for Intel's, the Intel
/// SDM vol. 2A, CPUID): one whose enable bit the hypervisor refuses, or whose state it does
/// not emulate, is hidden (the module's text).
#[rustfmt::skip]
const FEATURES: [Feature; 37] = [
    // leaf, subleaf, register, bit
    feature(1, 0, 2, 5,            "VMX",                 Needs::Cr4(13)),
    feature(1, 0, 2, 6,            "SMX",                 Needs::Cr4(14)),
    feature(1, 0, 2, 17,           "PCID",                Needs::Cr4(17)),
    feature(1, 0, 2, 21,           "x2APIC",              Needs::NotEmulated("x2APIC mode and its MSRs")),
    feature(1, 0, 2, 24,           "TSC-deadline",        Needs::NotEmulated("the APIC timer's TSC-deadline mode")),
    feature(7, 0, 1, 0,            "FSGSBASE",            Needs::Cr4(16)),
    feature(7, 0, 1, 1,            "TSC_ADJUST",          Needs::NotEmulated("MSR TSC_ADJUST")),
    feature(7, 0, 1, 7,            "SMEP",                Needs::Cr4(20)),
    feature(7, 0, 1, 20,           "SMAP",                Needs::Cr4(21)),
    feature(7, 0, 2, 2,            "UMIP",                Needs::Cr4(11)),
    feature(7, 0, 2, 3,            "PKU",                 Needs::Cr4(22)),
    feature(7, 0, 2, 7,            "CET_SS",              Needs::Cr4(23)),
    feature(7, 0, 2, 16,           "LA57",                Needs::Cr4(12)),
    feature(7, 0, 2, 22,           "RDPID",               Needs::NotEmulated("MSR TSC_AUX")),
    feature(7, 0, 2, 23,           "KL",                  Needs::Cr4(19)),
    feature(7, 0, 2, 31,           "PKS",                 Needs::Cr4(24)),
    feature(7, 0, 3, 20,           "CET_IBT",             Needs::Cr4(23)),
    feature(7, 0, 3, 26,           "IBRS_IBPB",           Needs::NotEmulated("MSRs SPEC_CTRL and PRED_CMD")),
    feature(7, 0, 3, 27,           "STIBP",               Needs::NotEmulated("MSR SPEC_CTRL")),
    feature(7, 0, 3, 28,           "L1D_FLUSH",           Needs::NotEmulated("MSR FLUSH_CMD")),
    feature(7, 0, 3, 29,           "ARCH_CAPABILITIES",   Needs::NotEmulated("MSR ARCH_CAPABILITIES")),
    feature(7, 0, 3, 31,           "SSBD",                Needs::NotEmulated("MSR SPEC_CTRL")),
    feature(0xd, 1, 0, 3,          "XSAVES",              Needs::NotEmulated("MSR XSS")),
    feature(0x8000_0001, 0, 3, 25, "FFXSR",               Needs::Efer(14)),
    feature(0x8000_0001, 0, 3, 27, "RDTSCP",              Needs::NotEmulated("MSR TSC_AUX")),
    feature(0x8000_0001, 0, 2, 9,  "OSVW",                Needs::NotEmulated("MSRs OSVW_ID_Length and OSVW_Status")),
    feature(0x8000_0001, 0, 2, 17, "TCE",                 Needs::Efer(15)),
    feature(0x8000_0001, 0, 2, 23, "PerfCtrExtCore",      Needs::NotEmulated("the six core performance counters")),
    feature(0x8000_0008, 0, 1, 8,  "MCOMMIT",             Needs::Efer(17)),
    feature(0x8000_0008, 0, 1, 12, "IBPB",                Needs::NotEmulated("MSR PRED_CMD")),
    feature(0x8000_0008, 0, 1, 14, "IBRS",                Needs::NotEmulated("MSR SPEC_CTRL")),
    feature(0x8000_0008, 0, 1, 15, "STIBP",               Needs::NotEmulated("MSR SPEC_CTRL")),
    feature(0x8000_0008, 0, 1, 24, "SSBD",                Needs::NotEmulated("MSR SPEC_CTRL")),
    feature(0x8000_0008, 0, 1, 25, "VIRT_SSBD",           Needs::NotEmulated("MSR VIRT_SPEC_CTRL")),
    feature(0x8000_0021, 0, 0, 7,  "UpperAddressIgnore",  Needs::Efer(20)),
    feature(0x8000_0021, 0, 0, 8,  "AutomaticIBRS",       Needs::Efer(21)),
    feature(0x8000_0022, 0, 0, 0,  "PerfMonV2",           Needs::NotEmulated("the global performance-counter MSRs")),
];

const fn feature(
    leaf: u32,
    subleaf: u32,
    register: usize,
    bit: u32,
    name: &'static str,
    needs: Needs,
) -> Feature {
    Feature {
        leaf,
        subleaf,
        register,
        bit,
        name,
        needs,
    }
}

/// Does leaf `leaf` read ECX as its subleaf? (Of the table's leaves, 7 and 0xD do; leaf 1
/// and the extended leaves ignore ECX, so any value asks for the same answer.)
fn has_subleaves(leaf: u32) -> bool {
    matches!(leaf, 7 | 0xd)
}

/// Clear from `answer` (leaf `leaf`'s, subleaf `subleaf`'s) the features the hypervisor
/// cannot give the guest: an enable bit in CR4 outside `cr4` (what `cr.rs` lets the guest
/// set), in EFER outside `efer` (`msr.rs`'s), or state it does not emulate. Their names,
/// each with why, if any were there.
fn hide_unsupported(
    leaf: u32,
    subleaf: u32,
    answer: &mut [u32; 4],
    cr4: u64,
    efer: u64,
) -> Option<String> {
    let mut hidden = Vec::new();
    let asked = |f: &&Feature| f.leaf == leaf && (!has_subleaves(leaf) || f.subleaf == subleaf);
    for feature in FEATURES.iter().filter(asked) {
        let mask = 1 << feature.bit;
        if answer[feature.register] & mask == 0 {
            continue;
        }
        let why = match feature.needs {
            Needs::Cr4(bit) if cr4 & 1 << bit == 0 => format!("CR4 bit {bit}"),
            Needs::Efer(bit) if efer & 1 << bit == 0 => format!("EFER bit {bit}"),
            Needs::NotEmulated(what) => format!("{what} not emulated"),
            Needs::Cr4(_) | Needs::Efer(_) => continue,
        };
        answer[feature.register] &= !mask;
        hidden.push(format!("{} ({why})", feature.name));
    }
    (!hidden.is_empty()).then(|| hidden.join(", "))
}

/// Does leaf `leaf`, subleaf `subleaf`, report features of [`FEATURES`]? (Leaf 7's are in
/// its subleaf 0, leaf 0xD's in its subleaf 1; their other subleaves' bits mean other
/// things.) A few compares, not a walk of the table: the bench's leaf 0 is the hottest exit
/// of all.
fn has_features_to_hide(leaf: u32, subleaf: u32) -> bool {
    match leaf {
        1 | 0x8000_0001 | 0x8000_0008 | 0x8000_0021 | 0x8000_0022 => true,
        7 => subleaf == 0,
        0xd => subleaf == 1,
        _ => false,
    }
}

/// [`hide_unsupported`] for `leaf` and `subleaf`, with the guest's CR4 and EFER checks: the
/// features hidden from `answer`, if any were. (Apart: never for the bench's leaf 0.)
#[inline(never)]
fn hide_for_guest(leaf: u32, subleaf: u32, answer: &mut [u32; 4], guest: &Guest) -> Option<String> {
    hide_unsupported(
        leaf,
        subleaf,
        answer,
        super::cr::cr4_supported(guest),
        super::msr::EFER_BITS.bits(),
    )
}

/// Does the CPUID the guest sees offer the feature in bit `bit` of register `register` (0
/// EAX … 3 EDX) of leaf `leaf` (subleaf 0)? The real CPU's answer less what
/// [`hide_for_guest`] hides: what `msr.rs` goes by for the reason of an absent MSR's #GP and
/// for APIC_BASE's EXTD.
pub(super) fn guest_sees(guest: &Guest, leaf: u32, register: usize, bit: u32) -> bool {
    let mut answer = guest.machine.cpuid(leaf, 0);
    if has_features_to_hide(leaf, 0) {
        hide_for_guest(leaf, 0, &mut answer, guest);
    }
    answer[register] & 1 << bit != 0
}

pub fn handle(exit: &Exit, guest: &Guest) -> Decision {
    let Some(length) = exit.instruction_length(guest) else {
        return undecodable(exit, guest);
    };
    // EAX and ECX, whatever the mode: CPUID reads only their low 32 bits.
    let leaf = guest.vcpu.gpr_64(0) as u32;
    let subleaf = guest.vcpu.gpr_64(1) as u32;
    let [mut eax, mut ebx, mut ecx, mut edx] = guest.machine.cpuid(leaf, subleaf);
    let edited = match leaf {
        1 => {
            ecx |= HYPERVISOR_BIT;
            // MONITOR/MWAIT (ECX bit 3) hidden: the hypervisor answers them with #UD
            // (`monitor.rs`). QEMU's qemu64 has no such bit to clear.
            ecx &= !MONITOR_BIT;
            // ECX bit 27, OSXSAVE, is CR4.OSXSAVE as the CPU reads it (AMD APM vol. 3,
            // CPUID Fn0000_0001_ECX): the guest's, not the hypervisor's (which sets its own
            // at the first XSETBV of any domain).
            let guest_osxsave = guest.vcpu.vmcb.save.cr4 & Cr4Flags::OSXSAVE.bits() != 0;
            if (ecx & OSXSAVE_BIT != 0) != guest_osxsave {
                ecx ^= OSXSAVE_BIT;
                "set ECX bit 31 (hypervisor present), and bit 27 (OSXSAVE) as the guest's CR4.OSXSAVE"
            } else {
                "set ECX bit 31 (hypervisor present)"
            }
        }
        SIGNATURE_LEAF => {
            let word = |index: usize| {
                u32::from_le_bytes([
                    SIGNATURE[index],
                    SIGNATURE[index + 1],
                    SIGNATURE[index + 2],
                    SIGNATURE[index + 3],
                ])
            };
            (eax, ebx, ecx, edx) = (TIMING_LEAF, word(0), word(4), word(8));
            "traplab's signature \"TrapLabSVMhv\""
        }
        VERSION_LEAF => {
            (eax, ebx, ecx, edx) = (ABI_VERSION, 0, 0, 0);
            "the hypercall ABI version"
        }
        TIMING_LEAF => {
            let khz = guest.machine.tsc_hz() / 1000;
            (eax, ebx, ecx, edx) = (khz.min(u32::MAX as u64) as u32, 0, 0, 0);
            "the TSC's rate in kHz, as the hypervisor measured it"
        }
        0x4000_0002..=0x4000_00ff => {
            (eax, ebx, ecx, edx) = (0, 0, 0, 0);
            "an unused hypervisor leaf: zeros"
        }
        0x8000_0001 => {
            ecx &= !(1 << 2);
            "cleared ECX bit 2 (SVM): no nested virtualization"
        }
        0x8000_000a => {
            (eax, ebx, ecx, edx) = (0, 0, 0, 0);
            "the SVM leaf: zeros, SVM is hidden"
        }
        // The supervisor state components XSAVES would save (the XSS bits, AMD APM vol. 3,
        // CPUID Fn0000_000D_ECX_x1 and _EDX_x1): none, as XSAVES is hidden ([`FEATURES`]).
        0xd if subleaf == 1 => {
            (ecx, edx) = (0, 0);
            "ECX and EDX zero: no supervisor state components, as XSAVES is hidden"
        }
        _ => "the real CPU's answer, unchanged",
    };
    // The features hidden for an enable bit the hypervisor refuses, or for state it does not
    // emulate, named.
    let mut answer = [eax, ebx, ecx, edx];
    let hidden = match has_features_to_hide(leaf, subleaf) {
        true => hide_for_guest(leaf, subleaf, &mut answer, guest),
        false => None,
    };
    let [eax, ebx, ecx, edx] = answer;
    let edited = match hidden {
        None => Cow::Borrowed(edited),
        Some(hidden) => Cow::Owned(format!(
            "{}; hid {hidden}: the CPU the hypervisor describes has no feature whose enable bit it refuses or whose state it does not emulate",
            edited.trim_end_matches(", unchanged")
        )),
    };
    // The decision made last, in one go, where it is returned (`Decision::made`), not
    // through the builder (`with`, `with_all`, `describe`): each step of it moves the whole
    // decision (about 200 bytes), and how much of that the compiler removes changed with
    // unrelated code elsewhere. This is the hottest exit of all (`traplab bench`).
    let effects = vec![
        Effect::Gpr(0, eax as u64),
        Effect::Gpr(3, ebx as u64),
        Effect::Gpr(1, ecx as u64),
        Effect::Gpr(2, edx as u64),
        Effect::Rip(guest.vcpu.rip_after(length)),
    ];
    let what = Words::template(
        "CPUID leaf {} subleaf {}: {}",
        [
            Argument::Hex(leaf.into()),
            Argument::Hex(subleaf.into()),
            Argument::Text(edited),
        ],
    );
    Decision::made(
        Action::Emulate,
        Cow::Borrowed(
            "CPUID is intercepted: the hypervisor answers with the CPU it wants the guest to see",
        ),
        here!(),
        effects,
        Some(what),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::Machine;
    use crate::testing::{self, ENTRY, Run, Test, UNMAPPED};
    use traplab_abi::exit::ExitReason;

    /// CPUID (`0f a2`) at RIP with EAX = `leaf`, decided and applied.
    fn cpuid(leaf: u64) -> (Test, Run) {
        let mut test = Test::long_mode();
        test.code(&[0x0f, 0xa2]);
        test.set_gpr(0, leaf);
        let exit = test.exit(ExitReason::Cpuid);
        let run = test.run(exit);
        (test, run)
    }

    #[test]
    fn outside_long_mode_cs_base_plus_rip_wraps_at_4_gib() {
        // A 32-bit guest with CS based at 0xffff_f000: the CPUID at EIP ENTRY + 0x1000 is at
        // linear ENTRY, as the CPU fetched it. Unwrapped, the hypervisor read beyond 4 GiB
        // and killed the domain as undecodable.
        let mut test = Test::protected_mode();
        test.code(&[0x0f, 0xa2]);
        test.domain.vcpu.vmcb.save.cs.base = 0xffff_f000;
        test.domain.vcpu.vmcb.save.rip = ENTRY + 0x1000;
        let decision = test.decide(test.exit(ExitReason::Cpuid));
        assert_eq!(decision.action, Action::Emulate, "{}", decision.why);
    }

    #[test]
    fn a_32_bit_guest_s_cpuid_is_read_through_its_legacy_or_pae_page_tables() {
        // A 32-bit kernel that turned paging on outside long mode, its code at 0xc000_0000
        // (a higher-half kernel) on the physical page at ENTRY: the instruction bytes come
        // through its tables' own format, two levels of 4-byte entries or PAE's three
        // levels (AMD APM vol. 2, 5.2), not long mode's four.
        use traplab_abi::x86::{Cr0Flags, Cr4Flags, pte};
        const TABLES: u64 = 0x10_0000;
        const CODE: u64 = 0xc000_0000;
        let table = pte::PRESENT | pte::WRITABLE;
        for pae in [false, true] {
            let mut test = Test::protected_mode();
            if pae {
                // Pointer 3 (3 GiB–4 GiB) → a page directory → a page table.
                test.write_u64(TABLES + 3 * 8, (TABLES + 0x1000) | pte::PRESENT);
                test.write_u64(TABLES + 0x1000, (TABLES + 0x2000) | table);
                test.write_u64(TABLES + 0x2000, ENTRY | pte::PRESENT);
            } else {
                // Directory entry 0x300 (3 GiB) → a page table of 4-byte entries.
                let directory_entry = ((TABLES + 0x1000) | table) as u32;
                test.write(TABLES + 0x300 * 4, &directory_entry.to_le_bytes());
                test.write(
                    TABLES + 0x1000,
                    &((ENTRY | pte::PRESENT) as u32).to_le_bytes(),
                );
            }
            let save = &mut test.domain.vcpu.vmcb.save;
            save.cr3 = TABLES;
            save.cr0 |= Cr0Flags::PAGING.bits();
            if pae {
                save.cr4 |= Cr4Flags::PHYSICAL_ADDRESS_EXTENSION.bits();
            }
            save.rip = CODE;
            test.write(ENTRY, &[0x0f, 0xa2]);
            let exit = test.exit(ExitReason::Cpuid);
            let run = test.run(exit);
            assert_eq!(
                run.decision.action,
                Action::Emulate,
                "PAE {pae}: {}",
                run.decision.why
            );
            assert_eq!(test.rip(), CODE + 2, "PAE {pae}");
        }
    }

    #[test]
    fn a_cpuid_at_the_end_of_16_bit_code_wraps_ip_at_64_kib() {
        // In 16-bit code the instruction pointer is IP: the CPU's next IP after a CPUID at
        // 0xfffe is 0 (Intel SDM vol. 1, 3.5).
        let mut test = Test::protected_mode();
        test.domain.vcpu.vmcb.save.cs.attrib &= !crate::vmcb::attrib::DEFAULT_32;
        test.domain.vcpu.vmcb.save.rip = 0xfffe;
        test.code(&[0x0f, 0xa2]);
        let exit = test.exit(ExitReason::Cpuid);
        test.run(exit);
        assert_eq!(test.rip(), 0);
    }

    /// A host CPU's leaf 7 (subleaf 0), as KVM would pass it on: FSGSBASE, SMEP and SMAP in
    /// EBX (with BMI1, bit 3, which has no enable bit); UMIP, PKU and LA57 in ECX.
    const HOST_LEAF_7: [u32; 4] = [
        0,
        1 | 1 << 3 | 1 << 7 | 1 << 20,
        1 << 2 | 1 << 3 | 1 << 16,
        0,
    ];

    #[test]
    fn the_leaves_that_have_such_features_are_the_table_s() {
        for feature in &FEATURES {
            assert!(
                has_features_to_hide(feature.leaf, feature.subleaf),
                "{}",
                feature.name
            );
        }
        let asked: Vec<(u32, u32)> = FEATURES.iter().map(|f| (f.leaf, f.subleaf)).collect();
        for leaf in [
            0,
            1,
            7,
            0xd,
            0x4000_0000,
            0x8000_0001,
            0x8000_0008,
            0x8000_0021,
            0x8000_0022,
        ] {
            for subleaf in 0..3 {
                // A leaf without subleaves answers the same whatever ECX says.
                let table_s = match has_subleaves(leaf) {
                    true => asked.contains(&(leaf, subleaf)),
                    false => asked.iter().any(|(at, _)| *at == leaf),
                };
                assert_eq!(
                    has_features_to_hide(leaf, subleaf),
                    table_s,
                    "{leaf:#x}.{subleaf}"
                );
            }
        }
    }

    #[test]
    fn a_feature_is_hidden_when_the_hypervisor_refuses_its_enable_bit() {
        // A CR4 check that lets the guest set VME … OSXMMEXCPT, FSGSBASE and OSXSAVE (as
        // `cr.rs` does before the cr-write lab's exercise).
        let cr4 = 0x7ff | 1 << 16 | 1 << 18;
        let mut answer = HOST_LEAF_7;
        let hidden = hide_unsupported(7, 0, &mut answer, cr4, 0);
        assert_eq!(answer, [0, 1 | 1 << 3, 0, 0], "FSGSBASE and BMI1 stay");
        assert_eq!(
            hidden.as_deref(),
            Some(
                "SMEP (CR4 bit 20), SMAP (CR4 bit 21), UMIP (CR4 bit 11), PKU (CR4 bit 22), LA57 (CR4 bit 12)"
            )
        );
        // A hypervisor that let the guest set SMEP would show it.
        let mut answer = HOST_LEAF_7;
        hide_unsupported(7, 0, &mut answer, cr4 | 1 << 20, 0);
        assert_ne!(answer[1] & 1 << 7, 0, "SMEP shown");
        // EFER: Automatic IBRS (8000_0021 EAX bit 8) is EFER.AIBRSE (bit 21).
        let mut answer = [1 << 8 | 1, 0, 0, 0];
        let hidden = hide_unsupported(0x8000_0021, 0, &mut answer, cr4, 0xd01);
        assert_eq!(answer, [1, 0, 0, 0]);
        assert_eq!(hidden.as_deref(), Some("AutomaticIBRS (EFER bit 21)"));
        // Nothing to hide: nothing said.
        let mut answer = [0, 1, 0, 0];
        assert_eq!(hide_unsupported(7, 0, &mut answer, cr4, 0), None);
    }

    /// CPUID leaf `leaf`, subleaf `subleaf`, on a machine whose CPU answers `answer` for it
    /// (a host's, as KVM passes it on), decided and applied.
    fn cpuid_of(leaf: u32, subleaf: u32, answer: [u32; 4]) -> (Test, Run) {
        let mut test = Test::long_mode();
        test.machine.cpuid_answers.push((leaf, subleaf, answer));
        test.code(&[0x0f, 0xa2]);
        test.set_gpr(0, leaf.into());
        test.set_gpr(1, subleaf.into());
        let exit = test.exit(ExitReason::Cpuid);
        let run = test.run(exit);
        (test, run)
    }

    /// The answer's registers as the guest has them after the CPUID: EAX, EBX, ECX, EDX.
    fn answer(test: &Test) -> [u32; 4] {
        [0, 3, 1, 2].map(|number| test.gpr(number) as u32)
    }

    /// CPUID of `feature`'s leaf on a CPU that has the feature: whether the guest sees it.
    fn seen(feature: &Feature) -> (Test, Run, bool) {
        let mut with_it = [0; 4];
        with_it[feature.register] = 1 << feature.bit;
        let (test, run) = cpuid_of(feature.leaf, feature.subleaf, with_it);
        let shown = answer(&test)[feature.register] & 1 << feature.bit != 0;
        (test, run, shown)
    }

    /// The CPU the guest sees is one it can use: for every feature of the table, on a CPU that
    /// has them all, the guest sees it exactly when the hypervisor lets it set the feature's
    /// CR4 bit, and a MOV to CR4 (`cr.rs`: CR4 writes always exit) setting that bit is refused
    /// exactly when the feature is hidden. (Whatever `cr.rs` allows: in the cr-write lab's
    /// exercise a student takes FSGSBASE out, and it is hidden then.)
    #[test]
    fn the_guest_sees_a_cr4_feature_exactly_when_it_may_set_its_bit() {
        for feature in &FEATURES {
            let Needs::Cr4(bit) = feature.needs else {
                continue;
            };
            let (test, run, shown) = seen(feature);
            let allowed = super::super::cr::cr4_supported(&test.guest()) & 1 << bit != 0;
            assert_eq!(shown, allowed, "{}", feature.name);
            let what = run.emulate().what.clone();
            assert_eq!(what.contains(feature.name), !allowed, "{what}");
            // The MOV to CR4 that sets the bit.
            let mut test = Test::long_mode();
            test.code(&[0x0f, 0x22, 0xe0]);
            let cr4 = test.domain.vcpu.vmcb.save.cr4 | 1 << bit;
            test.set_gpr(0, cr4);
            let exit = test.exit(ExitReason::CrWrite { number: 4 });
            let run = test.run(exit);
            let refused = run.decision.action == Action::Reflect;
            assert_eq!(refused, !shown, "{}: {}", feature.name, run.decision.why);
        }
    }

    /// A feature whose state the hypervisor does not emulate is never seen, whatever CR4 and
    /// EFER allow, and the `emulate` line says what is missing; leaf 0xD's XSAVES only in
    /// subleaf 1 (subleaf 0's EAX bit 3 is an XCR0 component, MPX's BNDREGS, and stays).
    #[test]
    fn a_feature_whose_state_is_not_emulated_is_never_seen() {
        let mut hidden = Vec::new();
        for feature in &FEATURES {
            let Needs::NotEmulated(what) = feature.needs else {
                continue;
            };
            let (_, run, shown) = seen(feature);
            assert!(!shown, "{}", feature.name);
            let said = run.emulate().what.clone();
            assert!(
                said.contains(&format!("hid {} ({what} not emulated)", feature.name)),
                "{said}"
            );
            hidden.push(feature.name);
        }
        assert_eq!(
            hidden,
            [
                "x2APIC",
                "TSC-deadline",
                "TSC_ADJUST",
                "RDPID",
                "IBRS_IBPB",
                "STIBP",
                "L1D_FLUSH",
                "ARCH_CAPABILITIES",
                "SSBD",
                "XSAVES",
                "RDTSCP",
                "OSVW",
                "PerfCtrExtCore",
                "IBPB",
                "IBRS",
                "STIBP",
                "SSBD",
                "VIRT_SSBD",
                "PerfMonV2",
            ]
        );
        // A host's leaf 8000_0001 (under KVM): RDTSCP goes, LM and NX stay.
        let (test, _) = cpuid_of(0x8000_0001, 0, [0, 0, 0, 1 << 27 | 1 << 29 | 1 << 20]);
        assert_eq!(answer(&test), [0, 0, 0, 1 << 29 | 1 << 20]);
        // Leaf 0xD subleaf 0: EAX bit 3 is an XCR0 component (MPX's BNDREGS), not XSAVES.
        let (test, run) = cpuid_of(0xd, 0, [1 << 3 | 7, 0x340, 0x340, 0]);
        assert_eq!(answer(&test)[0], 1 << 3 | 7);
        assert!(!run.emulate().what.contains("hid"));
        // Subleaf 1: XSAVES (EAX bit 3) goes, XSAVEOPT (bit 0) stays, and the XSS components
        // XSAVES would save (ECX, EDX) are none.
        let (test, _) = cpuid_of(0xd, 1, [1 << 3 | 1, 0x340, 1 << 11 | 1 << 12, 0]);
        assert_eq!(answer(&test), [1, 0x340, 0, 0]);
    }

    /// The same for EFER: a feature is seen exactly when the guest may set its EFER bit, and
    /// WRMSR EFER setting a hidden one's is refused.
    #[test]
    fn the_guest_sees_an_efer_feature_exactly_when_it_may_set_its_bit() {
        for feature in &FEATURES {
            let Needs::Efer(bit) = feature.needs else {
                continue;
            };
            let (_, _, shown) = seen(feature);
            let allowed = super::super::msr::EFER_BITS.bits() & 1 << bit != 0;
            assert_eq!(shown, allowed, "{}", feature.name);
            // WRMSR EFER (0xc000_0080): as it is (taken: the test's own check), then with the
            // bit set.
            for (with_the_bit, name) in [(0, "EFER as it is"), (1 << bit, feature.name)] {
                let mut test = Test::long_mode();
                test.code(&[0x0f, 0x30]);
                let efer = test.domain.vcpu.vmcb.save.efer & !(1 << 12) | with_the_bit;
                test.set_gpr(1, 0xc000_0080);
                test.set_gpr(0, efer & 0xffff_ffff);
                test.set_gpr(2, efer >> 32);
                let exit = test.exit(ExitReason::Msr { write: true });
                let run = test.run(exit);
                let refused = run.decision.action == Action::Reflect;
                let expected = with_the_bit != 0 && !shown;
                assert_eq!(refused, expected, "{name}: {}", run.decision.why);
                if refused {
                    assert!(run.decision.why.contains("a bit this CPU does not have"));
                }
            }
        }
    }

    /// Each leaf with such features hides them, and says so; leaf 7's other subleaves are
    /// left as they are (their bits mean other things).
    #[test]
    fn every_leaf_with_such_features_hides_them_and_leaf_7_only_in_its_subleaf_0() {
        // BMI1 (EBX bit 3) has no enable bit.
        const SMEP: u32 = 1 << 7;
        const BMI1: u32 = 1 << 3;
        let (test, run) = cpuid_of(7, 0, [0, BMI1 | SMEP, 0, 0]);
        assert_eq!(answer(&test), [0, BMI1, 0, 0], "BMI1 stays, SMEP goes");
        let what = run.emulate().what.clone();
        assert!(what.contains("hid SMEP (CR4 bit 20)"), "{what}");
        assert!(!what.contains("unchanged"), "{what}");
        let (test, run) = cpuid_of(7, 1, [0, BMI1 | SMEP, 0, 0]);
        assert_eq!(answer(&test), [0, BMI1 | SMEP, 0, 0], "subleaf 1 as it is");
        assert!(!run.emulate().what.contains("hid"));
        // Leaf 1: PCID (ECX bit 17) goes, and the hypervisor bit is set as always.
        let (test, run) = cpuid_of(1, 0, [0x663, 0x800, 1 << 17, 0x078b_fbff]);
        assert_eq!(answer(&test)[2], HYPERVISOR_BIT);
        assert!(run.emulate().what.contains("hid PCID (CR4 bit 17)"));
        // 8000_0001: FFXSR (EDX bit 25) and SVM go.
        let (test, run) = cpuid_of(0x8000_0001, 0, [0, 0, 1 << 2, 1 << 25 | 1 << 29]);
        assert_eq!(answer(&test), [0, 0, 0, 1 << 29], "LM stays");
        let what = run.emulate().what.clone();
        assert!(
            what.contains("SVM") && what.contains("hid FFXSR (EFER bit 14)"),
            "{what}"
        );
        // 8000_0021: Automatic IBRS (EAX bit 8).
        let (test, run) = cpuid_of(0x8000_0021, 0, [1 << 8 | 1, 0, 0, 0]);
        assert_eq!(answer(&test), [1, 0, 0, 0]);
        assert!(
            run.emulate()
                .what
                .contains("hid AutomaticIBRS (EFER bit 21)")
        );
        // 8000_0008: MCOMMIT (EBX bit 8); the address sizes in EAX stay.
        let (test, _) = cpuid_of(0x8000_0008, 0, [0x3028, 1 << 8, 0, 0]);
        assert_eq!(answer(&test), [0x3028, 0, 0, 0]);
    }

    #[test]
    fn leaf_1_sets_the_hypervisor_present_bit_31_of_ecx() {
        let (test, run) = cpuid(1);
        let [eax, _, ecx, _] = test.machine.cpuid(1, 0);
        assert_eq!(ecx & HYPERVISOR_BIT, 0, "the real CPU does not set it");
        assert_eq!(test.gpr(1), (ecx | HYPERVISOR_BIT) as u64);
        assert_eq!(test.gpr(0), eax as u64, "the rest is the real CPU's answer");
        assert_eq!(run.decision.action, Action::Emulate);
        assert!(run.decision.at.contains("src/exit/cpuid.rs:"));
        assert!(run.emulate().what.contains("ECX bit 31"));
    }

    #[test]
    fn leaf_1_s_osxsave_bit_is_the_guest_s_cr4_osxsave() {
        // The real CPU's bit says the hypervisor's own CR4; the guest's must say its own.
        let mut test = Test::long_mode();
        test.domain.vcpu.vmcb.save.cr4 |= Cr4Flags::OSXSAVE.bits();
        test.code(&[0x0f, 0xa2]);
        test.set_gpr(0, 1);
        let run = test.run(test.exit(ExitReason::Cpuid));
        assert_ne!(test.gpr(1) & OSXSAVE_BIT as u64, 0);
        assert!(
            run.emulate().what.contains("OSXSAVE"),
            "{}",
            run.emulate().what
        );
    }

    #[test]
    fn leaf_0x4000_0000_spells_traplab_s_signature_in_ebx_ecx_edx() {
        // As KVM's "KVMKVMKVM\0\0\0" and Xen's "XenVMMXenVMM": EBX, ECX, EDX in that order.
        let (test, _) = cpuid(0x4000_0000);
        let signature: Vec<u8> = [3, 1, 2]
            .iter()
            .flat_map(|&register| (test.gpr(register) as u32).to_le_bytes())
            .collect();
        assert_eq!(signature, b"TrapLabSVMhv");
        assert_eq!(test.gpr(0), 0x4000_0010, "EAX: the highest hypervisor leaf");
    }

    #[test]
    fn leaf_0x4000_0010_gives_the_tsc_rate_in_khz() {
        let (test, run) = cpuid(0x4000_0010);
        assert_eq!(test.gpr(0), test.machine.tsc_hz() / 1000);
        assert_eq!((test.gpr(3), test.gpr(1), test.gpr(2)), (0, 0, 0));
        assert!(run.emulate().what.contains("the TSC's rate in kHz"));
    }

    #[test]
    fn leaf_0x4000_0001_gives_the_hypercall_abi_version() {
        let (test, _) = cpuid(0x4000_0001);
        assert_eq!(test.gpr(0), ABI_VERSION as u64);
        assert_eq!([test.gpr(3), test.gpr(1), test.gpr(2)], [0, 0, 0]);
    }

    #[test]
    fn leaf_0x8000_0001_hides_svm_so_the_guest_sees_no_nested_virtualization() {
        // CPUID Fn8000_0001_ECX bit 2 is SVM (AMD APM vol. 3, appendix E).
        let (test, _) = cpuid(0x8000_0001);
        let real = test.machine.cpuid(0x8000_0001, 0)[2];
        assert_ne!(real & (1 << 2), 0, "the real CPU has SVM");
        assert_eq!(
            test.gpr(1),
            (real & !(1 << 2)) as u64,
            "only SVM is cleared"
        );
    }

    #[test]
    fn the_svm_leaf_0x8000_000a_reads_as_zeros() {
        let (test, _) = cpuid(0x8000_000a);
        assert_eq!([test.gpr(0), test.gpr(3), test.gpr(1), test.gpr(2)], [0; 4]);
    }

    #[test]
    fn cpuid_moves_rip_past_its_two_bytes_and_records_each_register_old_to_new() {
        let (test, run) = cpuid(0);
        assert_eq!(test.rip(), ENTRY + 2);
        // The fake CPU answers leaf 0 with 0x11, 0x22, 0x33, 0x44.
        let changes = run.changes();
        for expected in [
            ("rax", 0, 0x11),
            ("rbx", 0, 0x22),
            ("rcx", 0, 0x33),
            ("rdx", 0, 0x44),
            ("rip", ENTRY, ENTRY + 2),
        ] {
            assert!(changes.contains(&expected), "{expected:?} in {changes:?}");
        }
    }

    #[test]
    fn cpuid_at_an_unmapped_rip_kills_the_domain_as_undecodable() {
        let mut test = Test::long_mode();
        test.domain.vcpu.vmcb.save.rip = UNMAPPED;
        let decision = test.decide(test.exit(ExitReason::Cpuid));
        assert_eq!(decision.action, Action::Kill);
        assert_eq!(
            testing::killed(&decision),
            "undecodable instruction at the exit"
        );
        assert!(decision.at.contains("src/exit/mod.rs:"), "{}", decision.at);
    }

    #[test]
    fn bytes_that_are_no_instruction_kill_the_domain_as_undecodable() {
        // FF /7 is not an instruction.
        let mut test = Test::long_mode();
        test.code(&[0xff, 0xff]);
        let decision = test.decide(test.exit(ExitReason::Cpuid));
        assert_eq!(
            testing::killed(&decision),
            "undecodable instruction at the exit"
        );
        assert!(decision.effects.is_empty(), "nothing changes");
    }

    #[test]
    fn a_completed_cpuid_clears_rflags_rf() {
        // RF=1 let the CPUID run past its instruction breakpoint (an IRET onto it, say); the
        // CPU clears RF once an instruction completes, so the next one's breakpoint fires
        // (AMD APM vol. 2, 3.1.6).
        let mut test = Test::long_mode();
        test.code(&[0x0f, 0xa2]);
        let resume = traplab_abi::x86::RFlags::RESUME_FLAG.bits();
        test.domain.vcpu.vmcb.save.rflags |= resume;
        let exit = test.exit(ExitReason::Cpuid);
        test.run(exit);
        assert_eq!(test.rip(), ENTRY + 2);
        assert_eq!(test.domain.vcpu.vmcb.save.rflags & resume, 0);
    }
}
