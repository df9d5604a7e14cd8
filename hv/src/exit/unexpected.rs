//! Every exit without a handler of its own.
//!
//! The hypervisor intercepts only what it handles, so this should not happen; when it does
//! (or when VMRUN refuses the guest state: exit code -1, VMEXIT_INVALID) the domain ends
//! with the exit's name. A guest never takes the hypervisor down.

use super::{DomainEnd, Next};
use crate::decide;
use crate::domain::Domain;
use alloc::format;
use traplab_abi::event::Action;
fn exit_name(code: u64) -> &'static str { traplab_abi::exit::ExitReason::from_code(code).name() }

pub fn handle(domain: &mut Domain) -> Next {
    let code = domain.vmcb.control.exitcode;
    let name = exit_name(code);
    decide!(
        domain,
        Action::Kill,
        "exit {name} ({code:#x}) has no handler here: the domain ends, the hypervisor does not"
    );
    Next::End(DomainEnd::Killed {
        reason: format!("unhandled exit {name} ({code:#x})"),
    })
}
