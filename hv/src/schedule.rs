//! The scheduler: which domain's vCPU runs on the one physical CPU.
//!
//! Every domain has one vCPU. The hypervisor runs the runnable ones in turn (round robin),
//! each for at most a time slice of its own timer's ticks, as Xen's credit scheduler does
//! with its 30 ms slice. A vCPU that has nothing to do blocks (HLT, `SCHEDOP_block` or
//! `poll`, a store wait) and is woken when something arrives for it: an event channel's
//! notification, its timer, the store node it waits for. A woken vCPU runs next, before the
//! one that woke it goes on (Xen's credit scheduler *boosts* it): so the domain a trap was
//! forwarded to does its work at once, and the trace shows cause and effect side by side.
//! When no vCPU is runnable the hypervisor idles until a timer is due.
//!
//! ```text
//!              ┌───────── slice over / yield / woken boost ─────────┐
//!              ▼                                                     │
//!  (in turn) Waiting ──start──► Runnable ──picked──► running ────────┘
//!                                  ▲                    │ block
//!                                  └──── wake ───── Blocked(wait)      └─ end ─► Ended
//! ```
//!
//! Everything here is a pure function of the domains' states; the run loop (`run.rs`) asks
//! it and switches.

use crate::domain::Domain;
use crate::domain::evtchn::Callback;
use crate::domain::interrupts::Tick;
pub use crate::domain::vcpu::{RunState, Wait};
use alloc::vec::Vec;
use traplab_abi::evtchn::Port;

/// How many of the hypervisor's timer ticks a vCPU may run while another is runnable:
/// 3 ticks of 10 ms, Xen's default credit time slice (30 ms).
pub const SLICE_TICKS: u32 = 3;

/// How the domains of a run start (fw_cfg `opt/traplab/start`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Start {
    /// Each domain when the one before it has ended, as independent programs one after
    /// another (the toolstack unpauses the next one).
    #[default]
    InTurn,
    /// All of them at once: they run side by side.
    Together,
}

/// Why the hypervisor switches away from the running vCPU after an exit, if it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    /// It blocked.
    Blocked,
    /// It yielded.
    Yielded,
    /// It woke domain `to` (by port `port`, if an event did), which runs first.
    Woke { to: u16, port: Option<Port> },
    /// Its slice is over and another vCPU is runnable.
    SliceOver,
}

/// The next vCPU to run after `current` (or from the start): the first runnable one after
/// it in domain order, wrapping around; `current` itself only if nothing else is runnable
/// and it still is. `None`: nothing is runnable.
pub fn next(domains: &[Domain], current: Option<u16>) -> Option<u16> {
    let runnable: Vec<u16> = domains
        .iter()
        .filter(|domain| domain.vcpu.run_state == RunState::Runnable)
        .map(|domain| domain.id)
        .collect();
    let after = current.unwrap_or(0);
    runnable
        .iter()
        .copied()
        .find(|&id| current.is_none_or(|_| id > after))
        .or_else(|| runnable.first().copied())
}

/// Should the running vCPU `id` give the CPU up after an INTR exit: has it used its slice
/// while another vCPU waits to run?
pub fn slice_over(domains: &[Domain], id: u16) -> bool {
    let Some(domain) = domains.iter().find(|domain| domain.id == id) else {
        return false;
    };
    domain.vcpu.ticks_run >= SLICE_TICKS
        && domains
            .iter()
            .any(|other| other.id != id && other.vcpu.run_state == RunState::Runnable)
}

/// The domain that starts when `ended` has ended, in turn: the next one still waiting.
pub fn next_in_turn(domains: &[Domain]) -> Option<u16> {
    domains
        .iter()
        .find(|domain| domain.vcpu.run_state == RunState::Waiting)
        .map(|domain| domain.id)
}

/// The earliest deadline of a blocked vCPU's timer (the idle loop waits for it).
pub fn earliest_timer(domains: &[Domain]) -> Option<u64> {
    domains
        .iter()
        .filter(|domain| domain.vcpu.run_state.is_blocked())
        .filter_map(|domain| domain.vcpu.interrupts.timer.map(|timer| timer.due_tsc))
        .min()
}

/// Does an event on `port` of `domain` wake it from `wait`? `upcall`: the event made an
/// upcall owed (the port was not masked).
pub fn woken_by_event(wait: &Wait, domain: &Domain, port: Port, upcall: bool) -> bool {
    match wait {
        // HLT: an interrupt wakes it, and the upcall is one when it has a callback.
        Wait::Interrupt => {
            upcall && domain.events.callback != Callback::None && domain.interrupts_enabled()
        }
        Wait::Event => upcall,
        // Xen's SCHEDOP_poll wakes on a polled port's pending bit, masked or not.
        Wait::Poll(ports) => ports.contains(&port),
        Wait::Store(_) => false,
    }
}

/// Is a vCPU that waits for `wait` woken by a write of the store node `path`?
pub fn woken_by_store(wait: &Wait, path: &str) -> bool {
    matches!(wait, Wait::Store(waiting) if waiting == path)
}

/// Does a tick of its timer wake a vCPU that waits for `wait`?
pub fn woken_by_timer(wait: &Wait, domain: &Domain, tick: Tick) -> bool {
    match tick {
        Tick::NotDue => false,
        // Its interrupt: HLT wakes.
        Tick::Interrupt => *wait == Wait::Interrupt,
        // An event on the timer's port, as any other event.
        Tick::Event { port, upcall } => woken_by_event(wait, domain, port, upcall),
    }
}
