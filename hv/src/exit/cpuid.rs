//! CPUID (exit code 0x72): emulate it, so the guest sees the CPU the hypervisor describes.
//!
//! We run the real CPUID and edit the answer: the "hypervisor present" bit
//! (CPUID.1:ECX[31]), the hypervisor leaves at 0x4000_0000 with traplab's signature
//! (`traplab_abi::boot::cpuid`), and SVM hidden (CPUID.8000_0001:ECX[2], leaf 8000_000A):
//! this hypervisor does not offer nested virtualization.

use super::{Exit, undecodable};
use crate::decide;
use crate::decision::{Decision, Effect};
use crate::domain::Guest;
use alloc::format;
use traplab_abi::boot::cpuid::{
    ABI_VERSION, HYPERVISOR_BIT, SIGNATURE, SIGNATURE_LEAF, VERSION_LEAF,
};
use traplab_abi::event::Action;

pub fn handle(exit: &Exit, guest: &Guest) -> Decision {
    let Some(length) = exit.instruction_length(guest) else {
        return undecodable();
    };
    let leaf = guest.gpr(0) as u32;
    let subleaf = guest.gpr(1) as u32;
    let decision = decide!(
        Action::Emulate,
        "CPUID is intercepted: the hypervisor answers with the CPU it wants the guest to see"
    );

    let [mut eax, mut ebx, mut ecx, mut edx] = guest.machine.cpuid(leaf, subleaf);
    let edited = match leaf {
        1 => {
            ecx |= HYPERVISOR_BIT;
            "set ECX bit 31 (hypervisor present)"
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
            (eax, ebx, ecx, edx) = (VERSION_LEAF, word(0), word(4), word(8));
            "traplab's signature \"TrapLabSVMhv\""
        }
        VERSION_LEAF => {
            (eax, ebx, ecx, edx) = (ABI_VERSION, 0, 0, 0);
            "the hypercall ABI version"
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
        _ => "the real CPU's answer, unchanged",
    };
    decision
        .with(Effect::Gpr(0, eax as u64))
        .with(Effect::Gpr(3, ebx as u64))
        .with(Effect::Gpr(1, ecx as u64))
        .with(Effect::Gpr(2, edx as u64))
        .with(Effect::Rip(guest.vcpu.rip_after(length)))
        .describe(format!(
            "CPUID leaf {leaf:#x} subleaf {subleaf:#x}: {edited}"
        ))
}
