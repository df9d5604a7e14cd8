//! VMRUN, VMLOAD, VMSAVE, STGI, CLGI, SKINIT, INVLPGA run by a guest (exit codes 0x80,
//! 0x82–0x86, 0x7A): answer #UD.
//!
//! These instructions work on host-physical memory and on the global interrupt flag: a
//! guest that ran them would reach outside itself. This hypervisor offers no nested
//! virtualization (CPUID hides SVM from the guest), so it answers as a CPU without SVM
//! does: #UD. The #UD is made up by the hypervisor, so the event is marked synthetic.

use super::Exit;
use crate::decision::Decision;
use crate::deliver;
use crate::domain::Guest;
use traplab_abi::exit::{ExitReason, SvmInstruction};

pub fn handle(_exit: &Exit, guest: &Guest, instruction: SvmInstruction) -> Decision {
    let name = ExitReason::SvmInstruction(instruction).name();
    deliver!(
        guest,
        6,
        0,
        true,
        "{name} from a guest: no nested virtualization here, so the hypervisor answers as a CPU without SVM: #UD"
    )
}
