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
use alloc::vec::Vec;
use traplab_abi::event::Action;
use traplab_abi::evtchn::{PORTS, Port};
use traplab_abi::hypercall::{self, error};
use traplab_abi::sched::{POLL_PORTS_MAX, cmd};

pub fn handle(guest: &Guest, next: u64, command: u64, arg: u64) -> Decision {
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
/// `local_event_delivery_enable`), then wait for one, unless one is owed already.
fn block(guest: &Guest) -> (Decision, i64) {
    let decision = if guest.upcall_pending() {
        decide!(
            Action::Emulate,
            "SCHEDOP_block: an event is pending already, so d{} does not wait",
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
    (decision.with(Effect::UpcallMask(false)), 0)
}

/// `SCHEDOP_poll`: wait until one of these ports is pending (masked or not), unless one is
/// already.
fn poll(guest: &Guest, arg: u64) -> (Decision, i64) {
    let refused = |why: &str, code| (decide!(Action::Emulate, "SCHEDOP_poll: {why}"), code);
    let Ok(argument) = Argument::<24>::read(guest, arg) else {
        return refused(
            "its structure is not memory the guest can read (unmapped, a supervisor page at CPL 3, or not its RAM), EFAULT",
            error::EFAULT,
        );
    };
    let (list, count, timeout) = (argument.u64(0), argument.u32(8), argument.u64(16));
    if count == 0 || count > POLL_PORTS_MAX {
        return refused("it names no port, or more than 8, EINVAL", error::EINVAL);
    }
    if timeout != 0 {
        return refused(
            "traplab's poll has no timeout (it must be 0), EINVAL",
            error::EINVAL,
        );
    }
    let mut bytes = [0u8; 4 * POLL_PORTS_MAX as usize];
    let bytes = &mut bytes[..4 * count as usize];
    if guest.cpu_read(list, bytes).is_err() {
        return refused(
            "its list of ports is not memory the guest can read, EFAULT",
            error::EFAULT,
        );
    }
    let ports: Vec<Port> = bytes
        .chunks_exact(4)
        .map(|chunk| u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
        .collect();
    if ports.iter().any(|&port| port >= PORTS) {
        return refused("a port in its list does not exist, EINVAL", error::EINVAL);
    }
    if let Some(port) = ports.iter().find(|&&port| guest.event_pending(port)) {
        let decision = decide!(
            Action::Emulate,
            "SCHEDOP_poll: port {port} is pending already, so d{} does not wait",
            guest.id
        );
        return (decision, 0);
    }
    let decision = decide!(
        Action::Emulate,
        "SCHEDOP_poll: d{} waits until one of ports {ports:?} is pending; the hypervisor runs another domain meanwhile",
        guest.id
    )
    .with(Effect::Block(Wait::Poll(ports)));
    (decision, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::vcpu::RunState;
    use crate::schedule::Switch;
    use crate::testing::assert_returned;
    use crate::testing::{DATA, ENTRY, SHARED_INFO, Test, UNMAPPED};
    use traplab_abi::evtchn::shared_info;

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
    fn poll_blocks_until_one_of_its_ports_is_pending() {
        // SCHEDOP_poll (sched.h): "Poll a set of event-channel ports. Return when one or
        // more are pending."
        let mut test = poll_of(&[3, 7], 2, 0);
        let run = test.call();
        assert_eq!(
            run.decision.why,
            "SCHEDOP_poll: d1 waits until one of ports [3, 7] is pending; the hypervisor runs another domain meanwhile"
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
    fn poll_of_no_port_or_more_than_8_returns_einval() {
        for count in [0, POLL_PORTS_MAX + 1] {
            let mut test = poll_of(&[1; 9], count, 0);
            let run = test.call();
            assert_returned(&test, error::EINVAL);
            assert_eq!(
                run.decision.why,
                "SCHEDOP_poll: it names no port, or more than 8, EINVAL"
            );
            assert_eq!(test.domain.vcpu.run_state, RunState::Runnable);
        }
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
            "SCHEDOP_poll: a port in its list does not exist, EINVAL"
        );
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
