//! VMRUN, VMLOAD, VMSAVE, STGI, CLGI, SKINIT, INVLPGA run by a guest (exit codes 0x80,
//! 0x82–0x86, 0x7A): answer #UD.
//!
//! These instructions work on host-physical memory and on the global interrupt flag: a
//! guest that ran them would reach outside itself. This hypervisor offers no nested
//! virtualization (CPUID hides SVM from the guest), so it answers as a CPU without SVM
//! does: #UD. The #UD is made up by the hypervisor, so the event is marked synthetic.

use super::Next;
use crate::deliver;
use crate::domain::Domain;
fn exit_name(code: u64) -> &'static str { traplab_abi::exit::ExitReason::from_code(code).name() }

pub fn handle(domain: &mut Domain) -> Next {
    let instruction = exit_name(domain.vmcb.control.exitcode);
    deliver!(
        domain,
        6,
        0,
        true,
        "{instruction} from a guest: no nested virtualization here, so the hypervisor answers as a CPU without SVM: #UD"
    )
}
