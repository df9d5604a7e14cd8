//! The benchmark's baseline: a world switch and nothing else (setting `bench-bare`).
//!
//! `traplab bench` compares the hypervisor's cost per trap with the least a hypervisor can
//! do: take the #VMEXIT, answer the guest's CPUID with the real CPU's answer, step over
//! it, VMRUN. Here the run loop does exactly that, in a loop of its own around the world
//! switch (`run.rs`) — no instruction fetch or decode, no trace, no gdb, no control, not
//! even their tests — so the difference between this and a normal run is what traplab's
//! exit path costs. Every other exit takes the normal path.
//!
//! The guest sees the real CPU's CPUID (the normal handler hides SVM, for one): fine for
//! the `cpuid-loop` guest, which only times the instruction. Never on in a lab.

use traplab_abi::svm::exitcode;
use traplab_hv::Domain;

/// Is the baseline on? (Read once from the settings, at boot.)
pub fn on() -> bool {
    crate::settings::get().bench_bare
}

/// If the exit is a CPUID, answer it as the bare world switch does and say so.
pub fn answered(domain: &mut Domain) -> bool {
    if domain.vcpu.vmcb.control.exitcode != exitcode::CPUID {
        return false;
    }
    // RAX is in the VMCB (VMRUN switches it), RBX, RCX and RDX in the context the world
    // switch saves: read and written in place, so that this stays the least it can be
    // whatever the compiler makes of the rest of the hypervisor.
    let (vmcb, context) = (&mut domain.vcpu.vmcb, &mut *domain.vcpu.context);
    let answer = core::arch::x86_64::__cpuid_count(vmcb.save.rax as u32, context.rcx as u32);
    vmcb.save.rax = u64::from(answer.eax);
    context.rbx = u64::from(answer.ebx);
    context.rcx = u64::from(answer.ecx);
    context.rdx = u64::from(answer.edx);
    // CPUID is 0F A2: the baseline does not look for prefixes (the cpuid-loop guest has none).
    vmcb.save.rip += 2;
    true
}
