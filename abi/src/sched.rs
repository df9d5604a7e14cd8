//! Scheduling calls: give the CPU away, or wait for an event, on Xen's ABI
//! (`xen/include/public/sched.h`).
//!
//! Every domain has one vCPU, and the hypervisor runs the runnable ones in turn. A vCPU
//! that has nothing to do says so: it *yields* (it stays runnable, others go first), or it
//! *blocks* until an event is pending for it (an event channel's upcall, its timer). The
//! call is `sched_op(cmd, arg)` (hypercall [`crate::hypercall::SCHED_OP`]).

/// The commands of `sched_op` (Xen's `SCHEDOP_*` numbers).
pub mod cmd {
    /// Let the other runnable domains run first.
    pub const YIELD: u64 = 0;
    /// Block until an event is pending (the upcall mask is cleared first, as in Xen: a
    /// domain that blocks wants its events).
    pub const BLOCK: u64 = 1;
    /// [`super::SchedPoll`]: block until one of these ports is pending (no upcall needed),
    /// unless an interrupt is owed; an upcall to the vCPU's callback wakes it too, as Xen's.
    pub const POLL: u64 = 3;

    /// The command's name, as Xen spells it.
    pub fn name(cmd: u64) -> Option<&'static str> {
        Some(match cmd {
            YIELD => "SCHEDOP_yield",
            BLOCK => "SCHEDOP_block",
            POLL => "SCHEDOP_poll",
            _ => return None,
        })
    }
}

/// `SCHEDOP_poll`: the guest-virtual address of an array of `nr_ports` ports (u32). Xen's
/// has a timeout too; traplab's waits without one (`timeout` must be 0).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedPoll {
    pub ports: u64,
    pub nr_ports: u32,
    pub _pad: u32,
    pub timeout: u64,
}

/// The most ports one poll may name.
pub const POLL_PORTS_MAX: u32 = 8;
