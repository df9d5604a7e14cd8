//! `sched_op(cmd, arg)`: give the CPU away, or wait for an event, as Xen's `do_sched_op`
//! (`xen/common/sched/core.c`; the ABI is `traplab_abi::sched`).
//!
//! The hypercall returns (RAX = 0, RIP past the VMMCALL) before the vCPU waits: when it is
//! woken, it simply continues after the call. The switch to another vCPU is the run loop's
//! (`run.rs`, with `schedule.rs`).

use super::{Argument, finish};
use crate::decide;
use crate::decision::{Decision, Effect};
use crate::domain::Guest;
use crate::domain::vcpu::Wait;
use alloc::format;
use alloc::vec::Vec;
use traplab_abi::event::Action;
use traplab_abi::evtchn::PORTS;
use traplab_abi::hypercall::{self, error};
use traplab_abi::sched::{POLL_PORTS_MAX, cmd};

pub fn handle(guest: &Guest, next: u64, command: u64, arg: u64) -> Decision {
    // Xen's `do_sched_op(int cmd, …)`: bits 63:32 of the register are no part of the command.
    let command = command as u32 as u64;
    let (decision, result) = match command {
        cmd::YIELD => (
            decide!(
                Action::Emulate,
                "SCHEDOP_yield: d{} lets the other runnable domains go first",
                guest.id
            )
            .with(Effect::Yield),
            0,
        ),
        cmd::BLOCK => block(guest),
        cmd::POLL => poll(guest, arg),
        _ => (
            decide!(
                Action::Emulate,
                "sched_op({command}): no such command, ENOSYS"
            ),
            error::ENOSYS,
        ),
    };
    finish(decision, next, hypercall::SCHED_OP, result)
}

/// `SCHEDOP_block`: events on (the upcall mask cleared, as Xen's
/// `local_event_delivery_enable`), then wait for one, unless one is owed already, or an
/// interrupt the vCPU would take now (Xen's `vcpu_block` checks
/// `local_events_need_delivery`, for an HVM vCPU `hvm_local_events_need_delivery`). Blocked,
/// an event or an interrupt wakes it (`schedule.rs`). A PV kernel's interrupt flag goes on
/// too: in Xen a PV guest's `evtchn_upcall_mask` is its interrupt flag, so blocking is its
/// `sti; hlt` (Linux's `xen_safe_halt`); traplab keeps the two apart, and sets both.
fn block(guest: &Guest) -> (Decision, i64) {
    let pv_interrupts_on = guest
        .pv
        .enabled
        .then_some(Effect::VirtualInterruptFlag(true));
    let owed = match guest.pv.enabled {
        // Its flag is about to be on: what it would take then.
        true => guest.pending_interrupt(),
        false => owed_interrupt(guest),
    };
    let decision = if guest.upcall_pending() {
        decide!(
            Action::Emulate,
            "SCHEDOP_block: an event is pending already, so d{} does not wait",
            guest.id
        )
    } else if let Some(vector) = owed {
        decide!(
            Action::Emulate,
            "SCHEDOP_block: d{} is owed interrupt {vector:#04x} and takes interrupts, so it does not wait",
            guest.id
        )
    } else {
        decide!(
            Action::Emulate,
            "SCHEDOP_block: d{} waits for an event; the hypervisor runs another domain meanwhile",
            guest.id
        )
        .with(Effect::Block(Wait::Event))
    };
    let decision = decision
        .with(Effect::UpcallMask(false))
        .with_all(pv_interrupts_on);
    (decision, 0)
}

/// The interrupt the vCPU would take now, if there is one: Xen's
/// `local_events_need_delivery` for an HVM vCPU (`hvm_local_events_need_delivery`), which
/// `vcpu_block` and `do_poll` check before they wait.
fn owed_interrupt(guest: &Guest) -> Option<u8> {
    guest
        .pending_interrupt()
        .filter(|_| guest.interrupts_enabled())
}

/// `SCHEDOP_poll`: wait until one of these ports is pending (masked or not), unless one is
/// already, or the vCPU is owed an interrupt it would take now. As Xen's `do_poll`
/// (`xen/common/sched/core.c`): first the count, then `local_events_need_delivery` (for an
/// HVM vCPU, `hvm_local_events_need_delivery`: an interrupt pending, its callback vector's
/// among them, and not blocked by IF), before any port is read; then the ports one by one,
/// so that a pending port ends the call before a later one is read or checked. No port at
/// all is allowed. Woken, the call has returned 0: by an event on its port (on any port
/// when it polls none or several), by an upcall to its callback vector
/// (`schedule::woken_by_event`), or by an interrupt (`schedule::woken_by_interrupt`). One
/// difference: traplab's callback waits while `evtchn_upcall_mask` is set
/// (`Domain::pending_interrupt`), where Xen's HVM callback looks at IF alone, so a masked
/// upcall does not end a poll here.
fn poll(guest: &Guest, arg: u64) -> (Decision, i64) {
    let refused = |why: &str, code| (decide!(Action::Emulate, "SCHEDOP_poll: {why}"), code);
    let Ok(argument) = Argument::<24>::read(guest, arg) else {
        return refused(
            "its structure is not memory the guest can read (unmapped, a supervisor page at CPL 3, or not its RAM), EFAULT",
            error::EFAULT,
        );
    };
    let (list, count, timeout) = (argument.u64(0), argument.u32(8), argument.u64(16));
    if count > POLL_PORTS_MAX {
        return refused("it names more than 8 ports, EINVAL", error::EINVAL);
    }
    if timeout != 0 {
        return refused(
            "traplab's poll has no timeout (it must be 0), EINVAL",
            error::EINVAL,
        );
    }
    if let Some(vector) = owed_interrupt(guest) {
        let decision = decide!(
            Action::Emulate,
            "SCHEDOP_poll: d{} is owed interrupt {vector:#04x} and takes interrupts, so it does not wait",
            guest.id
        );
        return (decision, 0);
    }
    let mut ports = Vec::new();
    for index in 0..u64::from(count) {
        let mut bytes = [0u8; 4];
        if guest
            .cpu_read(list.wrapping_add(4 * index), &mut bytes)
            .is_err()
        {
            return refused(
                "its list of ports is not memory the guest can read, EFAULT",
                error::EFAULT,
            );
        }
        let port = u32::from_le_bytes(bytes);
        if port >= PORTS {
            return refused(
                &format!("port {port} in its list does not exist, EINVAL"),
                error::EINVAL,
            );
        }
        if guest.event_pending(port) {
            let decision = decide!(
                Action::Emulate,
                "SCHEDOP_poll: port {port} is pending already, so d{} does not wait",
                guest.id
            );
            return (decision, 0);
        }
        ports.push(port);
    }
    let decision = if ports.is_empty() {
        decide!(
            Action::Emulate,
            "SCHEDOP_poll: d{} names no port: it waits for an event on any port; the hypervisor runs another domain meanwhile",
            guest.id
        )
    } else {
        decide!(
            Action::Emulate,
            "SCHEDOP_poll: d{} waits until one of ports {ports:?} is pending, or an upcall to its callback; the hypervisor runs another domain meanwhile",
            guest.id
        )
    };
    (decision.with(Effect::Block(Wait::Poll(ports))), 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::evtchn::Callback;
    use crate::domain::vcpu::RunState;
    use crate::schedule::Switch;
    use crate::testing::assert_returned;
    use crate::testing::{DATA, ENTRY, SHARED_INFO, Test, UNMAPPED};
    use traplab_abi::evtchn::{Port, shared_info};
    use traplab_abi::x86::RFlags;

    /// Where the tests put a poll's list of ports.
    const LIST: u64 = DATA + 0x100;

    /// The test's domain (d1, its shared-info page at [`SHARED_INFO`]) at
    /// `sched_op(command, DATA)`.
    fn op(command: u64) -> Test {
        let mut test = Test::hypercall(hypercall::SCHED_OP, command, DATA);
        test.domain.events.shared_info = Some(SHARED_INFO);
        test
    }

    /// At `SCHEDOP_poll` of `ports` (a `SchedPoll` at DATA naming `count` of them) with
    /// `timeout`.
    fn poll_of(ports: &[Port], count: u32, timeout: u64) -> Test {
        let mut test = op(cmd::POLL);
        let list: Vec<u8> = ports.iter().flat_map(|port| port.to_le_bytes()).collect();
        test.write(LIST, &list);
        let arg = [
            &LIST.to_le_bytes()[..],
            &count.to_le_bytes(),
            &[0; 4],
            &timeout.to_le_bytes(),
        ]
        .concat();
        test.write(DATA, &arg);
        test
    }

    #[test]
    fn yield_asks_the_scheduler_to_run_the_others_first_and_returns_0() {
        // SCHEDOP_yield (sched.h): "Voluntarily yield the CPU"; the vCPU stays runnable.
        let mut test = op(cmd::YIELD);
        let run = test.call();
        assert_eq!(run.decision.action, Action::Emulate);
        assert_eq!(
            run.decision.why,
            "SCHEDOP_yield: d1 lets the other runnable domains go first"
        );
        assert_eq!(
            run.decision.effects,
            [Effect::Yield, Effect::Gpr(0, 0), Effect::Rip(ENTRY + 3)]
        );
        assert_eq!(run.applied.switch, Some(Switch::Yielded));
        assert_eq!(run.emulate().what, "sched_op returned 0");
        assert_returned(&test, 0);
        assert_eq!(test.domain.vcpu.run_state, RunState::Runnable);
    }

    #[test]
    fn block_clears_the_upcall_mask_and_waits_for_an_event_after_returning_0() {
        // SCHEDOP_block (sched.h): "Block execution of this VCPU until an event is
        // received for processing"; Xen's vcpu_block_enable_events
        // (xen/common/sched/core.c) first calls local_event_delivery_enable. The hypercall
        // returns 0 before the wait: woken, the guest continues after the VMMCALL.
        let mut test = op(cmd::BLOCK);
        test.domain.set_upcall_mask(true);
        let run = test.call();
        assert_eq!(
            run.decision.why,
            "SCHEDOP_block: d1 waits for an event; the hypervisor runs another domain meanwhile"
        );
        assert_eq!(
            run.decision.effects,
            [
                Effect::Block(Wait::Event),
                Effect::UpcallMask(false),
                Effect::Gpr(0, 0),
                Effect::Rip(ENTRY + 3),
            ]
        );
        assert_eq!(run.applied.switch, Some(Switch::Blocked));
        assert_returned(&test, 0);
        assert_eq!(test.domain.vcpu.run_state, RunState::Blocked(Wait::Event));
        assert_eq!(
            test.domain.shared_info_byte(shared_info::UPCALL_MASK),
            Some(0)
        );
    }

    #[test]
    fn block_with_an_upcall_already_pending_does_not_wait() {
        // vcpu_block: `if ( local_events_need_delivery() ) clear_bit(_VPF_blocked, …)`.
        let mut test = op(cmd::BLOCK);
        test.write(SHARED_INFO + shared_info::UPCALL_PENDING, &[1]);
        test.domain.set_upcall_mask(true);
        let run = test.call();
        assert_eq!(
            run.decision.why,
            "SCHEDOP_block: an event is pending already, so d1 does not wait"
        );
        assert_eq!(
            run.decision.effects,
            [
                Effect::UpcallMask(false),
                Effect::Gpr(0, 0),
                Effect::Rip(ENTRY + 3)
            ]
        );
        assert_eq!(run.applied.switch, None);
        assert_returned(&test, 0);
        assert_eq!(test.domain.vcpu.run_state, RunState::Runnable);
        assert_eq!(
            test.domain.shared_info_byte(shared_info::UPCALL_MASK),
            Some(0),
            "events on all the same"
        );
    }

    #[test]
    fn block_with_an_interrupt_owed_and_interrupts_on_does_not_wait() {
        // vcpu_block: local_events_need_delivery, for an HVM vCPU an interrupt pending that
        // IF lets in. With IF clear it waits (an interrupt raised later kicks it awake).
        let mut test = op(cmd::BLOCK);
        test.domain.vcpu.interrupts.pending = Some(0x30);
        test.domain.vcpu.vmcb.save.rflags |= RFlags::INTERRUPT_FLAG.bits();
        let run = test.call();
        assert_eq!(
            run.decision.why,
            "SCHEDOP_block: d1 is owed interrupt 0x30 and takes interrupts, so it does not wait"
        );
        assert_eq!(run.applied.switch, None);
        assert_eq!(test.domain.vcpu.run_state, RunState::Runnable);
        let mut test = op(cmd::BLOCK);
        test.domain.vcpu.interrupts.pending = Some(0x30);
        test.call();
        assert_eq!(test.domain.vcpu.run_state, RunState::Blocked(Wait::Event));
    }

    #[test]
    fn a_pv_kernel_s_block_turns_its_interrupt_flag_on_with_its_events() {
        // A Xen PV guest's event mask is its interrupt flag: Linux's xen_safe_halt blocks
        // with it masked, and the upcall that wakes it must come in. Here the PV kernel's
        // virtual IF is off and its upcall pending: blocking turns both on, and it takes it.
        let mut test = op(cmd::BLOCK);
        test.domain.pv.enabled = true;
        test.domain.pv.virtual_interrupt_flag = false;
        test.domain.set_upcall_mask(true);
        let run = test.call();
        assert!(
            run.decision
                .effects
                .contains(&Effect::VirtualInterruptFlag(true)),
            "{:?}",
            run.decision.effects
        );
        assert!(test.domain.pv.virtual_interrupt_flag);
        assert!(test.domain.interrupts_enabled());
        // Owed an interrupt with its flag off: the block turns the flag on, so it does not
        // wait.
        let mut test = op(cmd::BLOCK);
        test.domain.pv.enabled = true;
        test.domain.vcpu.interrupts.pending = Some(0x30);
        test.call();
        assert_eq!(test.domain.vcpu.run_state, RunState::Runnable);
    }

    #[test]
    fn poll_blocks_until_one_of_its_ports_is_pending() {
        // SCHEDOP_poll (sched.h): "Poll a set of event-channel ports. Return when one or
        // more are pending."
        let mut test = poll_of(&[3, 7], 2, 0);
        let run = test.call();
        assert_eq!(
            run.decision.why,
            "SCHEDOP_poll: d1 waits until one of ports [3, 7] is pending, or an upcall to its callback; the hypervisor runs another domain meanwhile"
        );
        assert_eq!(
            run.decision.effects,
            [
                Effect::Block(Wait::Poll(vec![3, 7])),
                Effect::Gpr(0, 0),
                Effect::Rip(ENTRY + 3)
            ]
        );
        assert_eq!(run.applied.switch, Some(Switch::Blocked));
        assert_returned(&test, 0);
        assert_eq!(
            test.domain.vcpu.run_state,
            RunState::Blocked(Wait::Poll(vec![3, 7]))
        );
    }

    #[test]
    fn poll_reads_only_the_ports_it_is_told_of() {
        let mut test = poll_of(&[3, 7, 9], 2, 0);
        test.call();
        assert_eq!(
            test.domain.vcpu.run_state,
            RunState::Blocked(Wait::Poll(vec![3, 7]))
        );
    }

    #[test]
    fn poll_returns_at_once_when_a_port_is_pending_even_a_masked_one() {
        // do_poll checks `evtchn_port_is_pending` for each port, whatever its mask.
        let mut test = poll_of(&[3, 7], 2, 0);
        test.write(SHARED_INFO + shared_info::EVTCHN_PENDING, &[1 << 7]);
        test.write(SHARED_INFO + shared_info::EVTCHN_MASK, &[1 << 7]);
        let run = test.call();
        assert_eq!(
            run.decision.why,
            "SCHEDOP_poll: port 7 is pending already, so d1 does not wait"
        );
        assert_eq!(run.decision.effects.len(), 2, "RAX and RIP only");
        assert_eq!(run.applied.switch, None);
        assert_returned(&test, 0);
        assert_eq!(test.domain.vcpu.run_state, RunState::Runnable);
    }

    #[test]
    fn poll_of_more_than_8_ports_returns_einval() {
        // do_poll: `if ( sched_poll->nr_ports > 128 ) return -EINVAL;` (traplab's limit is 8).
        let mut test = poll_of(&[1; 9], POLL_PORTS_MAX + 1, 0);
        let run = test.call();
        assert_returned(&test, error::EINVAL);
        assert_eq!(
            run.decision.why,
            "SCHEDOP_poll: it names more than 8 ports, EINVAL"
        );
        assert_eq!(test.domain.vcpu.run_state, RunState::Runnable);
    }

    #[test]
    fn poll_of_no_port_waits_for_an_event_on_any_port() {
        // do_poll reads no port when nr_ports is 0 and blocks: an event on any port, or an
        // upcall to its callback, wakes it (`schedule::woken_by_event`).
        let mut test = poll_of(&[], 0, 0);
        let run = test.call();
        assert_eq!(
            run.decision.why,
            "SCHEDOP_poll: d1 names no port: it waits for an event on any port; the hypervisor runs another domain meanwhile"
        );
        assert_returned(&test, 0);
        assert_eq!(
            test.domain.vcpu.run_state,
            RunState::Blocked(Wait::Poll(vec![]))
        );
    }

    #[test]
    fn poll_returns_at_once_when_an_interrupt_is_owed_and_interrupts_are_on() {
        // do_poll: `if ( local_events_need_delivery() ) goto out;` with rc = 0, before the
        // ports are read: here the list is not even readable. For an HVM vCPU that is an
        // interrupt pending (the callback vector's, while an upcall is) and IF set.
        let mut test = poll_of(&[3], 1, 0);
        test.write(DATA, &UNMAPPED.to_le_bytes());
        test.write(SHARED_INFO + shared_info::UPCALL_PENDING, &[1]);
        test.domain.events.callback = Callback::Vector(0xf3);
        test.domain.vcpu.vmcb.save.rflags |= RFlags::INTERRUPT_FLAG.bits();
        let run = test.call();
        assert_eq!(
            run.decision.why,
            "SCHEDOP_poll: d1 is owed interrupt 0xf3 and takes interrupts, so it does not wait"
        );
        assert_eq!(run.applied.switch, None);
        assert_returned(&test, 0);
        assert_eq!(test.domain.vcpu.run_state, RunState::Runnable);
    }

    #[test]
    fn poll_waits_while_the_owed_upcall_cannot_be_taken() {
        // Masked (evtchn_upcall_mask), with interrupts off, or without a callback to take it
        // through, the pending upcall is not an interrupt the vCPU takes now: it waits.
        type Setup = fn(&mut Test);
        let setups: [(&str, Setup); 3] = [
            ("masked", |test| test.domain.set_upcall_mask(true)),
            ("IF clear", |test| {
                test.domain.vcpu.vmcb.save.rflags &= !RFlags::INTERRUPT_FLAG.bits()
            }),
            ("no callback", |test| {
                test.domain.events.callback = Callback::None
            }),
        ];
        for (case, setup) in setups {
            let mut test = poll_of(&[3], 1, 0);
            test.write(SHARED_INFO + shared_info::UPCALL_PENDING, &[1]);
            test.domain.events.callback = Callback::Vector(0xf3);
            test.domain.vcpu.vmcb.save.rflags |= RFlags::INTERRUPT_FLAG.bits();
            setup(&mut test);
            test.call();
            assert_eq!(
                test.domain.vcpu.run_state,
                RunState::Blocked(Wait::Poll(vec![3])),
                "{case}"
            );
        }
    }

    #[test]
    fn poll_reads_its_ports_in_order_and_a_pending_one_ends_it_before_the_next() {
        // do_poll's loop: a pending port returns 0 before a later port is read or checked.
        let mut test = poll_of(&[7, PORTS], 2, 0);
        test.write(SHARED_INFO + shared_info::EVTCHN_PENDING, &[1 << 7]);
        let run = test.call();
        assert_returned(&test, 0);
        assert_eq!(
            run.decision.why,
            "SCHEDOP_poll: port 7 is pending already, so d1 does not wait"
        );
    }

    #[test]
    fn poll_of_8_ports_is_allowed() {
        let mut test = poll_of(&[1, 2, 3, 4, 5, 6, 7, 8], POLL_PORTS_MAX, 0);
        test.call();
        assert_returned(&test, 0);
        assert!(test.domain.vcpu.run_state.is_blocked());
    }

    #[test]
    fn poll_with_a_timeout_returns_einval() {
        let mut test = poll_of(&[3], 1, 1_000);
        let run = test.call();
        assert_returned(&test, error::EINVAL);
        assert!(run.decision.why.contains("no timeout (it must be 0)"));
        assert_eq!(test.domain.vcpu.run_state, RunState::Runnable);
    }

    #[test]
    fn poll_of_a_port_that_does_not_exist_returns_einval() {
        // do_poll: `if ( port >= d->max_evtchns ) goto out;` with rc = -EINVAL.
        let mut test = poll_of(&[3, PORTS], 2, 0);
        let run = test.call();
        assert_returned(&test, error::EINVAL);
        assert_eq!(
            run.decision.why,
            format!("SCHEDOP_poll: port {PORTS} in its list does not exist, EINVAL")
        );
        assert_eq!(test.domain.vcpu.run_state, RunState::Runnable);
    }

    #[test]
    fn poll_with_an_unreadable_structure_or_list_returns_efault() {
        let mut test = poll_of(&[3], 1, 0);
        test.set_gpr(6, UNMAPPED);
        let run = test.call();
        assert_returned(&test, error::EFAULT);
        assert!(
            run.decision
                .why
                .contains("its structure is not memory the guest can read")
        );

        let mut test = poll_of(&[3], 1, 0);
        test.write(DATA, &UNMAPPED.to_le_bytes());
        let run = test.call();
        assert_returned(&test, error::EFAULT);
        assert!(
            run.decision
                .why
                .contains("its list of ports is not memory the guest can read")
        );
        assert_eq!(test.domain.vcpu.run_state, RunState::Runnable);
    }

    #[test]
    fn an_unknown_command_returns_enosys() {
        let mut test = op(2);
        let run = test.call();
        assert_returned(&test, error::ENOSYS);
        assert_eq!(run.decision.why, "sched_op(2): no such command, ENOSYS");
        assert_eq!(run.applied.switch, None);
    }
}
