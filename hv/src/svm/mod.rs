//! AMD SVM: finding it, turning it on, and the pieces VMRUN works with (the VMCB layout is
//! the library's, `vmcb.rs`).
//!
//! | file              | what                                                     |
//! |-------------------|----------------------------------------------------------|
//! | `fpu.rs`          | the guest's x87/SSE state, left in the CPU across exits   |
//! | `npt.rs`          | nested page tables                                       |
//! | `world_switch.rs` | VMRUN and the state around it                            |

pub mod fpu;
pub mod npt;
pub mod world_switch;

use crate::frames;
use crate::power::HvStatus;
use core::arch::x86_64::__cpuid;
use traplab_abi::msr::{VM_CR, VM_HSAVE_PA};
use x86_64::registers::model_specific::{Efer, EferFlags, Msr};

/// What the CPU offers (CPUID Fn8000_000A, AMD APM vol. 3, appendix E.4.9).
#[derive(Debug, Clone, Copy)]
pub struct Features {
    pub revision: u32,
    pub nested_paging: bool,
    /// NRIP save: the CPU stores the next RIP in the VMCB on exits (not under TCG).
    pub nrip_save: bool,
    pub decode_assists: bool,
}

/// Check for SVM the way APM vol. 2, 15.4 "Enabling SVM" says.
pub fn check() -> Result<Features, HvStatus> {
    let extended = __cpuid(0x8000_0001);
    if extended.ecx & (1 << 2) == 0 {
        return Err(HvStatus::NoSvm);
    }
    // SAFETY: VM_CR exists on every CPU with SVM (checked just above).
    let vm_cr = unsafe { Msr::new(VM_CR).read() };
    if vm_cr & (1 << 4) != 0 {
        return Err(HvStatus::SvmDisabled);
    }
    let leaf = __cpuid(0x8000_000a);
    let features = Features {
        revision: leaf.eax & 0xff,
        nested_paging: leaf.edx & (1 << 0) != 0,
        nrip_save: leaf.edx & (1 << 3) != 0,
        decode_assists: leaf.edx & (1 << 7) != 0,
    };
    if !features.nested_paging {
        return Err(HvStatus::NoNestedPaging);
    }
    Ok(features)
}

/// The host's side of every world switch.
pub struct Host {
    /// Physical address of the page VMSAVE filled with our FS, GS, TR, LDTR and syscall MSRs.
    pub save_area: u64,
}

/// Turn SVM on: EFER.SVME, then tell the CPU where to save host state on VMRUN.
pub fn enable() -> Option<Host> {
    let hsave = frames::alloc_frame()?;
    let save_area = frames::alloc_frame()?;
    // SAFETY: `check` found SVM; setting EFER.SVME makes the SVM instructions legal, and
    // the two frames are ours, page-aligned and zeroed.
    unsafe {
        Efer::update(|flags| flags.insert(EferFlags::SECURE_VIRTUAL_MACHINE_ENABLE));
        Msr::new(VM_HSAVE_PA).write(hsave);
        core::arch::asm!("vmsave rax", in("rax") save_area, options(nostack));
    }
    Some(Host { save_area })
}
