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
            "its structure is not in the guest's memory, EFAULT",
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
    if guest.read_virtual(list, bytes).is_err() {
        return refused(
            "its list of ports is not in the guest's memory, EFAULT",
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
