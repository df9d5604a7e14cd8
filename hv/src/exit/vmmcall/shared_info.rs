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
    if let Some(level) = guest.pinned_level(page) {
        // Its event bits would land in page-table entries, past the checks every write to a
        // pinned table gets (`exit/ptwr.rs`).
        let decision = decide!(
            Action::Emulate,
            "hypercall set_shared_info({page:#x}): a pinned level-{level} page table, where the hypervisor's event bits would change entries it never checked: EINVAL"
        );
        return finish(decision, next, number, error::EINVAL);
    }
    let decision = match guest.events.shared_info {
        Some(old) if old != page => decide!(
            Action::Emulate,
            "hypercall set_shared_info({page:#x}): the shared-info page moves from {old:#x}, its contents with it (pending and masked ports, the upcall's flags), as Xen's one frame moves where the guest maps it again; from now on the hypervisor marks d{}'s pending events in the new page",
            guest.id
        ),
        _ => decide!(
            Action::Emulate,
            "hypercall set_shared_info({page:#x}): from now on the hypervisor marks d{}'s pending events in this page",
            guest.id
        ),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::assert_returned;
    use crate::testing::{ENTRY, SHARED_INFO, Test};
    use traplab_abi::boot::GUEST_RAM_SIZE;

    #[test]
    fn set_shared_info_of_a_page_of_ram_names_the_page() {
        let mut test = Test::hypercall(hypercall::SET_SHARED_INFO, SHARED_INFO, 0);
        let run = test.call();
        assert_eq!(run.decision.action, Action::Emulate);
        assert_eq!(
            run.decision.why,
            "hypercall set_shared_info(0x110000): from now on the hypervisor marks d1's pending events in this page"
        );
        assert_eq!(
            run.decision.effects,
            [
                Effect::SharedInfo(SHARED_INFO),
                Effect::Gpr(0, 0),
                Effect::Rip(ENTRY + 3)
            ]
        );
        assert_eq!(run.emulate().what, "set_shared_info returned 0");
        assert_returned(&test, 0);
        assert_eq!(test.domain.events.shared_info, Some(SHARED_INFO));
    }

    #[test]
    fn a_second_set_shared_info_moves_the_page_with_its_pending_events() {
        // Port 3 pending and masked in the first page; the second page held other bytes.
        use traplab_abi::evtchn::shared_info;
        let second = SHARED_INFO + 0x2000;
        let mut test = Test::hypercall(hypercall::SET_SHARED_INFO, second, 0);
        test.domain.events.shared_info = Some(SHARED_INFO);
        test.write(SHARED_INFO + shared_info::EVTCHN_PENDING, &[1 << 3]);
        test.write(SHARED_INFO + shared_info::EVTCHN_MASK, &[1 << 3]);
        test.write(SHARED_INFO + shared_info::UPCALL_PENDING, &[1]);
        test.write(second + shared_info::EVTCHN_MASK + 1, &[0xff]);
        let run = test.call();
        assert_returned(&test, 0);
        assert!(
            run.decision.why.contains("moves from 0x110000"),
            "{}",
            run.decision.why
        );
        assert_eq!(test.domain.events.shared_info, Some(second));
        assert!(test.domain.event_pending(3) && test.domain.event_masked(3));
        assert_eq!(
            test.domain.shared_info_byte(shared_info::UPCALL_PENDING),
            Some(1)
        );
        assert!(
            !test.domain.event_masked(8),
            "the new page's old bytes are gone"
        );
    }

    #[test]
    fn a_pinned_page_table_cannot_be_the_shared_info_page() {
        use crate::testing::PDPT;
        let mut test = Test::hypercall(hypercall::SET_SHARED_INFO, PDPT, 0);
        test.pin_page_tables();
        let run = test.call();
        assert_returned(&test, error::EINVAL);
        assert!(
            run.decision.why.contains("a pinned level-3 page table"),
            "{}",
            run.decision.why
        );
        assert_eq!(test.domain.events.shared_info, None);
    }

    #[test]
    fn the_last_page_of_ram_may_be_the_shared_info_page() {
        let last = GUEST_RAM_SIZE - 4096;
        let mut test = Test::hypercall(hypercall::SET_SHARED_INFO, last, 0);
        test.call();
        assert_returned(&test, 0);
        assert_eq!(test.domain.events.shared_info, Some(last));
    }

    #[test]
    fn set_shared_info_of_a_misaligned_address_or_outside_ram_returns_einval() {
        for page in [
            SHARED_INFO + 8,
            GUEST_RAM_SIZE,
            GUEST_RAM_SIZE - 2048,
            0xffff_ffff_ffff_f000,
        ] {
            let mut test = Test::hypercall(hypercall::SET_SHARED_INFO, page, 0);
            let run = test.call();
            assert_returned(&test, error::EINVAL);
            assert_eq!(
                run.decision.why,
                format!(
                    "hypercall set_shared_info({page:#x}): not a page of the guest's RAM, EINVAL"
                )
            );
            assert_eq!(test.domain.events.shared_info, None, "{page:#x}");
        }
    }

    #[test]
    fn set_callback_vector_takes_any_interrupt_vector() {
        // Xen's HVM_PARAM_CALLBACK_IRQ, type HVM_PARAM_CALLBACK_TYPE_VECTOR: an interrupt
        // vector; 0–31 are the CPU's exceptions (AMD APM vol. 2, 8.2).
        for vector in [32u8, 0xf3, 255] {
            let mut test =
                Test::hypercall(hypercall::SET_CALLBACK, callback::VECTOR, vector as u64);
            let run = test.call();
            assert_returned(&test, 0);
            assert_eq!(test.domain.events.callback, Callback::Vector(vector));
            assert!(
                run.decision.why.contains(&format!(
                    "a pending event interrupts the guest through its IDT, vector {vector:#x}"
                )),
                "{}",
                run.decision.why
            );
        }
    }

    #[test]
    fn set_callback_vector_0_clears_the_callback() {
        let mut test = Test::hypercall(hypercall::SET_CALLBACK, callback::VECTOR, 0);
        test.domain.events.callback = Callback::Vector(0xf3);
        let run = test.call();
        assert_returned(&test, 0);
        assert_eq!(test.domain.events.callback, Callback::None);
        assert!(run.decision.why.contains("no upcall any more"));
    }

    #[test]
    fn set_callback_vector_of_an_exception_or_no_vector_returns_einval() {
        for target in [5, 31, 256] {
            let mut test = Test::hypercall(hypercall::SET_CALLBACK, callback::VECTOR, target);
            test.domain.events.callback = Callback::Vector(0xf3);
            let run = test.call();
            assert_returned(&test, error::EINVAL);
            assert_eq!(
                run.decision.why,
                format!(
                    "hypercall set_callback(vector, {target}): not an interrupt vector (32–255), EINVAL"
                )
            );
            assert_eq!(
                test.domain.events.callback,
                Callback::Vector(0xf3),
                "the old callback stays"
            );
        }
    }

    #[test]
    fn set_callback_address_is_not_implemented_and_returns_enosys() {
        // Xen's PV event callback (`set_callbacks`) would bounce the upcall to a handler;
        // traplab delivers upcalls through the IDT only, and says so.
        let mut test = Test::hypercall(hypercall::SET_CALLBACK, callback::ADDRESS, 0x20_1000);
        let run = test.call();
        assert_returned(&test, error::ENOSYS);
        assert!(
            run.decision
                .why
                .contains("a PV event callback is not implemented: ENOSYS"),
            "{}",
            run.decision.why
        );
        assert_eq!(test.domain.events.callback, Callback::None);
    }

    #[test]
    fn set_callback_of_an_unknown_kind_returns_einval() {
        let mut test = Test::hypercall(hypercall::SET_CALLBACK, 2, 0xf3);
        let run = test.call();
        assert_returned(&test, error::EINVAL);
        assert_eq!(
            run.decision.why,
            "hypercall set_callback(2, …): no such kind of callback (0 vector, 1 address), EINVAL"
        );
        assert_eq!(test.domain.events.callback, Callback::None);
    }
}
