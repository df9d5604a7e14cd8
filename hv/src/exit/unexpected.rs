//! Every exit without a handler of its own.
//!
//! The hypervisor intercepts only what it handles, so this should not happen; when it does
//! (or when VMRUN refuses the guest state: exit code -1, VMEXIT_INVALID) the domain ends
//! with the exit's name. A guest never takes the hypervisor down.

use super::Exit;
use crate::decide;
use crate::decision::Decision;
use crate::domain::Guest;
use alloc::format;
use traplab_abi::event::Action;

pub fn handle(exit: &Exit, _guest: &Guest) -> Decision {
    let (name, code) = (exit.reason.name(), exit.reason.code());
    decide!(
        Action::Kill,
        "exit {name} ({code:#x}) has no handler here: the domain ends, the hypervisor does not"
    )
    .killing(format!("unhandled exit {name} ({code:#x})"))
}
