//! `set_shared_info(page)` and `set_callback(how, target)`: where a domain's events are
//! marked, and how it is told of them.
//!
//! Xen places the shared-info page itself (a PV guest maps the frame Xen gives it; an HVM
//! guest asks for it at a guest-physical address with `XENMAPSPACE_shared_info`); traplab's
//! guests name a page of their own RAM, which comes to the same: one page both sides
//! read and write. The callback is Xen's HVM "callback via vector" (an interrupt through
//! the guest's IDT, `HVM_PARAM_CALLBACK_IRQ`). A PV guest's event callback (Xen's
//! `set_callbacks`, a bounce to its handler) is not implemented: `set_callback(address, …)`
//! returns ENOSYS.

use super::finish;
use crate::decide;
use crate::decision::{Decision, Effect};
use crate::domain::Guest;
use crate::domain::evtchn::Callback;
use traplab_abi::event::Action;
use traplab_abi::evtchn::callback;
use traplab_abi::hypercall::{self, error};

pub fn set_shared_info(guest: &Guest, next: u64, page: u64) -> Decision {
    let number = hypercall::SET_SHARED_INFO;
    if page & 0xfff != 0
        || page
            .checked_add(4096)
            .is_none_or(|end| end > guest.memory.size())
    {
        let decision = decide!(
            Action::Emulate,
            "hypercall set_shared_info({page:#x}): not a page of the guest's RAM, EINVAL"
        );
        return finish(decision, next, number, error::EINVAL);
    }
    let decision = decide!(
        Action::Emulate,
        "hypercall set_shared_info({page:#x}): from now on the hypervisor marks d{}'s pending events in this page",
        guest.id
    )
    .with(Effect::SharedInfo(page));
    finish(decision, next, number, 0)
}

pub fn set_callback(next: u64, how: u64, target: u64) -> Decision {
    let number = hypercall::SET_CALLBACK;
    let refuse = |decision: Decision| finish(decision, next, number, error::EINVAL);
    let chosen = match how {
        callback::VECTOR => match u8::try_from(target) {
            Ok(0) => Callback::None,
            // Vectors 0–31 are the CPU's exceptions.
            Ok(vector @ 32..=255) => Callback::Vector(vector),
            _ => {
                return refuse(decide!(
                    Action::Emulate,
                    "hypercall set_callback(vector, {target}): not an interrupt vector (32–255), EINVAL"
                ));
            }
        },
        callback::ADDRESS => {
            return finish(
                decide!(
                    Action::Emulate,
                    "hypercall set_callback(address, {target:#x}): traplab delivers upcalls through the guest's IDT (an HVM guest's callback vector); a PV event callback is not implemented: ENOSYS"
                ),
                next,
                number,
                error::ENOSYS,
            );
        }
        _ => {
            return refuse(decide!(
                Action::Emulate,
                "hypercall set_callback({how}, …): no such kind of callback (0 vector, 1 address), EINVAL"
            ));
        }
    };
    let decision = match chosen {
        Callback::None => decide!(
            Action::Emulate,
            "hypercall set_callback(vector, 0): no upcall any more; events stay pending until the guest looks"
        ),
        Callback::Vector(vector) => decide!(
            Action::Emulate,
            "hypercall set_callback(vector, {vector:#x}): a pending event interrupts the guest through its IDT, vector {vector:#x} (as Xen's HVM callback vector)"
        ),
    };
    finish(decision.with(Effect::Callback(chosen)), next, number, 0)
}
