//! Giving the CPU away (`sched_op`, `traplab_abi::sched`).

use crate::hypercall::sched_op;
use traplab_abi::evtchn::Port;
use traplab_abi::sched::{SchedPoll, cmd};

/// `SCHEDOP_yield`: the other runnable domains go first.
pub fn yield_now() -> i64 {
    // SAFETY: no argument.
    unsafe { sched_op(cmd::YIELD, 0) }
}

/// `SCHEDOP_block`: wait until an event is pending for us.
pub fn block() -> i64 {
    // SAFETY: no argument.
    unsafe { sched_op(cmd::BLOCK, 0) }
}

/// `SCHEDOP_poll`: wait until one of `ports` is pending (masked or not). With a callback
/// registered, an upcall ends the wait too (as on Xen): check the port again after it.
pub fn poll(ports: &[Port]) -> i64 {
    let argument = SchedPoll {
        ports: ports.as_ptr() as u64,
        nr_ports: ports.len() as u32,
        ..Default::default()
    };
    // SAFETY: the structure and the array it names live across the call; the hypervisor
    // only reads them.
    unsafe { sched_op(cmd::POLL, &raw const argument as u64) }
}
