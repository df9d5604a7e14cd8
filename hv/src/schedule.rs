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
use crate::domain::evtchn::{Callback, Pending};
use crate::domain::interrupts::{Tick, TimerTarget, VirtualTimer};
pub use crate::domain::vcpu::{RunState, Wait};
use alloc::vec::Vec;
use traplab_abi::evtchn::Port;

/// How long a vCPU may run while another is runnable: Xen's default credit time slice
/// (`sched_credit_tslice_ms`, 30 ms), counted in ticks of the hypervisor's timer
/// ([`slice_ticks`]). Only ticks that come while another vCPU waits count ([`charge_tick`]).
pub const SLICE_MS: u32 = 30;

/// The slice in ticks of a timer at `timer_hz`: 3 at its usual 100 Hz, more when it runs
/// faster for a guest's own timer (up to 1000 Hz for Linux's: 30 ticks, still 30 ms).
pub fn slice_ticks(timer_hz: u32) -> u32 {
    (SLICE_MS * timer_hz / 1000).max(1)
}

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
    /// It woke domain `to` (by port `port`, if an event did; or by its timer, or a key for
    /// its serial port, at a tick of the hypervisor's timer), which runs first.
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

/// The vCPU to run after `id` left the CPU, having woken `woke` (if it did). A woken vCPU
/// runs first (Xen's credit scheduler boosts it); the turns then go on after the vCPU it
/// preempted (`preempted`, kept between calls), as Xen puts that one back at the tail of
/// its run queue. Else a domain that wakes another at every turn (a frontend and its
/// backend) would keep the CPU between the two, and a third would never run.
pub fn after(
    domains: &[Domain],
    id: u16,
    woke: Option<u16>,
    preempted: &mut Option<u16>,
) -> Option<u16> {
    match woke {
        Some(to) => {
            preempted.get_or_insert(id);
            Some(to)
        }
        None => match next(domains, Some(preempted.take().unwrap_or(id))) {
            // The woken vCPU itself, which yields or has used its slice: it lets the others
            // go first, as any vCPU does.
            Some(again) if again == id => next(domains, Some(id)),
            other => other,
        },
    }
}

/// A tick of the hypervisor's timer came while vCPU `id` ran: it counts against its slice
/// if another vCPU was waiting to run. (Ticks while nobody waits do not: a vCPU's slice
/// starts when it has a competitor, so a domain that was alone until it woke another is
/// not preempted at once.)
pub fn charge_tick(domains: &mut [Domain], id: u16) {
    let waiting = domains
        .iter()
        .any(|other| other.id != id && other.vcpu.run_state == RunState::Runnable);
    if waiting && let Some(domain) = domains.iter_mut().find(|domain| domain.id == id) {
        domain.vcpu.ticks_run += 1;
    }
}

/// Should the running vCPU `id` give the CPU up after an INTR exit of the hypervisor's timer
/// at `timer_hz`: has it used its slice while another vCPU waits to run?
pub fn slice_over(domains: &[Domain], id: u16, timer_hz: u32) -> bool {
    let Some(domain) = domains.iter().find(|domain| domain.id == id) else {
        return false;
    };
    domain.vcpu.ticks_run >= slice_ticks(timer_hz)
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

/// The earliest deadline of a blocked vCPU's timer whose tick could end its wait (the idle
/// loop waits for it). A timer that can never wake its vCPU does not count: the idle loop
/// would wait for it tick after tick, for ever, where nothing else can wake anyone (a
/// deadlock, which the loop ends).
pub fn earliest_timer(domains: &[Domain]) -> Option<u64> {
    domains
        .iter()
        .flat_map(|domain| {
            domain
                .vcpu
                .interrupts
                .timers
                .running()
                .filter(move |timer| match &domain.vcpu.run_state {
                    RunState::Blocked(wait) => timer_may_wake(wait, domain, timer),
                    _ => false,
                })
        })
        .map(|timer| timer.due_tsc)
        .min()
}

/// When a HLT with interrupts on returns for one of `domain`'s timers, if one can end it:
/// the one answer `exit/hlt.rs` decides on (a HLT nothing can end ends the domain) and
/// `apply.rs` halts the CPU until (`Effect::HaltUntilInterrupt`). The first tick of a timer
/// that can interrupt the halted vCPU ([`timer_may_wake`] with [`Wait::Interrupt`]: ticks its
/// device holds back until then are latched, as on a PC); else the tick of `set_timer`'s
/// timer bound to VIRQ_TIMER whose event raises no upcall: it interrupts nothing, and the HLT
/// returns after it only because nothing else would ever end it.
pub fn halt_ends_at(domain: &Domain) -> Option<u64> {
    let timers = &domain.vcpu.interrupts.timers;
    timers
        .running()
        .filter(|timer| timer_may_wake(&Wait::Interrupt, domain, timer))
        .map(|timer| timer.due_tsc)
        .min()
        .or(timers.set_timer.map(|timer| timer.due_tsc))
}

/// Could a tick of `timer` ever end `wait` ([`woken_by_timer`], over every tick to come)?
/// Not a wait for the store. For ticks that are events (a timer of `set_timer`'s bound to
/// VIRQ_TIMER), only where [`woken_by_event`] would let one through: not a poll of one other
/// port than the ticks' with no upcall to kick it (Xen's `evtchn_check_pollers` wakes a
/// poller of one port for that port only); not SCHEDOP_block with the ticks' port masked,
/// which never owes an upcall; not HLT without an upcall it can take (no callback, upcalls
/// or interrupts off). None of that can change while the vCPU waits. Ticks that are
/// interrupts wake any other wait (an interrupt kicks the vCPU), unless the device they go
/// through holds them back ([`Domain::timer_held_back`]): a blocked vCPU writes no EOI, no
/// unmask and no TPR that would let them through.
pub fn timer_may_wake(wait: &Wait, domain: &Domain, timer: &VirtualTimer) -> bool {
    let event_port = match timer.target {
        TimerTarget::Pending => domain.timer_event_port(),
        TimerTarget::LocalApic | TimerTarget::Irq0 | TimerTarget::Rtc => None,
    };
    let Some(timer_port) = event_port else {
        return !matches!(wait, Wait::Store(_)) && domain.timer_held_back(timer).is_none();
    };
    let upcall = !domain.event_masked(timer_port) && !domain.upcalls_masked();
    let kicks = upcall && domain.events.callback != Callback::None;
    match wait {
        Wait::Store(_) => false,
        Wait::Poll(ports) => match ports.as_slice() {
            [only] => *only == timer_port || kicks,
            _ => true,
        },
        Wait::Event => !domain.event_masked(timer_port),
        Wait::Interrupt => kicks && domain.interrupts_enabled(),
    }
}

/// An event arrives on `port` of `domain`: the port is pending, and a vCPU blocked in a wait
/// the event ends is runnable again (Xen's `evtchn_set_pending`, then `vcpu_unblock`). What
/// making it pending did, and whether the vCPU woke.
pub fn event_arrives(domain: &mut Domain, port: Port) -> (Pending, bool) {
    let pending = domain.set_pending(port);
    let woke = match &domain.vcpu.run_state {
        RunState::Blocked(wait) => woken_by_event(wait, domain, port, pending),
        _ => false,
    };
    if woke {
        domain.vcpu.run_state = RunState::Runnable;
    }
    (pending, woke)
}

/// Does an event on `port` of `domain` wake it from `wait`? `pending`: what making the port
/// pending did (an upcall owed; the port pending already).
pub fn woken_by_event(wait: &Wait, domain: &Domain, port: Port, pending: Pending) -> bool {
    // A port pending already: the two events are one, and wake nobody (Xen's
    // `evtchn_2l_set_pending` returns at once).
    if pending.already {
        return false;
    }
    let upcall = pending.upcall;
    match wait {
        // HLT: an interrupt wakes it, and the upcall is one when it has a callback and
        // `evtchn_upcall_mask` does not hold it back.
        Wait::Interrupt => {
            upcall
                && domain.events.callback != Callback::None
                && !domain.upcalls_masked()
                && domain.interrupts_enabled()
        }
        Wait::Event => upcall,
        // Xen's SCHEDOP_poll: a poll of one port notes it (`poll_evtchn`), and only an event
        // on it wakes the poller (`evtchn_check_pollers`), masked or not; a poll of none or
        // several notes -1, and an event on any port wakes it, to look again. And an event
        // that owes an upcall to a vCPU with a callback vector kicks it whatever it waits for
        // (`vcpu_mark_events_pending` → `hvm_assert_evtchn_irq`); without a callback the
        // upcall goes nowhere.
        Wait::Poll(ports) => {
            let polled = match ports.as_slice() {
                [only] => *only == port,
                _ => true,
            };
            polled || (upcall && domain.events.callback != Callback::None)
        }
        Wait::Store(_) => false,
    }
}

/// Is a vCPU that waits for `wait` woken by a write of the store node `path`?
pub fn woken_by_store(wait: &Wait, path: &str) -> bool {
    matches!(wait, Wait::Store(waiting) if waiting == path)
}

/// Could another domain's end wake `domain`, blocked: does it wait for the store's
/// `@releaseDomain` (`store_watch`), or poll its store port (`store_watch_event`, which
/// `@releaseDomain` makes pending when a domain it watches for ends)?
pub fn woken_by_an_end(domain: &Domain) -> bool {
    match &domain.vcpu.run_state {
        RunState::Blocked(wait) => {
            woken_by_store(wait, traplab_abi::store::RELEASE_DOMAIN)
                || domain
                    .events
                    .store_port()
                    .is_some_and(|port| matches!(wait, Wait::Poll(ports) if ports.contains(&port)))
        }
        _ => false,
    }
}

/// Does an interrupt for the vCPU (pending, or presented by its device) wake it from
/// `wait`? A halted one, and one blocked in SCHEDOP_block or SCHEDOP_poll too: Xen kicks a
/// vCPU an interrupt is raised for (`vcpu_kick` → `vcpu_unblock`), whatever it blocked in,
/// and the hypercall returns. Not a wait for the store, which is traplab's own.
pub fn woken_by_interrupt(wait: &Wait) -> bool {
    matches!(wait, Wait::Interrupt | Wait::Event | Wait::Poll(_))
}

/// Does a tick of its timer wake a vCPU that waits for `wait`?
pub fn woken_by_timer(wait: &Wait, domain: &Domain, tick: &Tick) -> bool {
    match *tick {
        // An event on the timer's port, as any other event.
        Tick::Event { port, pending } => woken_by_event(wait, domain, port, pending),
        // Its interrupt, pending or presented by its device.
        _ => tick.interrupts() && woken_by_interrupt(wait),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::interrupts::{TimerTarget, VirtualTimer};
    use crate::testing::VecMemory;
    use alloc::boxed::Box;
    use alloc::format;
    use alloc::string::String;
    use alloc::vec;
    use traplab_abi::evtchn::virq;
    use traplab_abi::x86::RFlags;

    /// What making an unmasked (`upcall`) or masked port pending did, the port not pending
    /// before.
    fn owes(upcall: bool) -> Pending {
        Pending {
            already: false,
            masked: !upcall,
            upcall,
        }
    }

    /// A domain `id` in `state`, with a little RAM.
    fn domain(id: u16, state: RunState) -> Domain {
        let mut domain = Domain::new(
            id,
            format!("d{id}"),
            Box::new(VecMemory::new(0x1_0000, false)),
        );
        domain.vcpu.run_state = state;
        domain
    }

    /// Domains with these ids and states, in domain order.
    fn system(states: &[(u16, RunState)]) -> Vec<Domain> {
        states
            .iter()
            .map(|(id, state)| domain(*id, state.clone()))
            .collect()
    }

    fn blocked() -> RunState {
        RunState::Blocked(Wait::Event)
    }

    // ---- next ---------------------------------------------------------------------------

    #[test]
    fn next_is_the_first_runnable_domain_after_the_current_one() {
        let domains = system(&[
            (0, RunState::Runnable),
            (1, RunState::Runnable),
            (2, blocked()),
            (3, RunState::Runnable),
        ]);
        assert_eq!(next(&domains, Some(0)), Some(1));
        assert_eq!(next(&domains, Some(1)), Some(3), "d2 is blocked");
        assert_eq!(next(&domains, Some(2)), Some(3), "after a blocked current");
    }

    #[test]
    fn a_domain_that_wakes_another_at_every_turn_does_not_starve_a_third() {
        // d0 a backend, blocked; d1 its frontend and d2 busy, both runnable. d1 wakes d0,
        // which serves and blocks again: the turns go on after d1, and d2 runs. (They used
        // to go on after d0: d1 again, at every turn, and d2 never.)
        let mut domains = system(&[
            (0, blocked()),
            (1, RunState::Runnable),
            (2, RunState::Runnable),
        ]);
        let mut preempted = None;
        domains[0].vcpu.run_state = RunState::Runnable;
        assert_eq!(after(&domains, 1, Some(0), &mut preempted), Some(0));
        domains[0].vcpu.run_state = blocked();
        assert_eq!(after(&domains, 0, None, &mut preempted), Some(2));
        // A chain of wakes goes on after the first vCPU preempted: d1 wakes d0, d0 wakes
        // d2, d2 blocks: next after d1 is d0 (d2 blocked), then back to d1.
        let mut preempted = None;
        domains[0].vcpu.run_state = RunState::Runnable;
        assert_eq!(after(&domains, 1, Some(0), &mut preempted), Some(0));
        assert_eq!(after(&domains, 0, Some(2), &mut preempted), Some(2));
        domains[2].vcpu.run_state = blocked();
        assert_eq!(after(&domains, 2, None, &mut preempted), Some(0));
        assert_eq!(preempted, None);
        // A woken vCPU that yields (or uses its slice) lets the others go first: d1 wakes
        // d2, d2 yields, and d3 runs, not d2 again.
        let domains = system(&[
            (1, RunState::Runnable),
            (2, RunState::Runnable),
            (3, RunState::Runnable),
        ]);
        let mut preempted = None;
        assert_eq!(after(&domains, 1, Some(2), &mut preempted), Some(2));
        assert_eq!(after(&domains, 2, None, &mut preempted), Some(3));
    }

    #[test]
    fn next_wraps_around_to_the_first_runnable_domain() {
        let domains = system(&[
            (0, RunState::Ended),
            (1, RunState::Runnable),
            (2, RunState::Runnable),
        ]);
        assert_eq!(next(&domains, Some(2)), Some(1));
    }

    #[test]
    fn next_without_a_current_domain_is_the_first_runnable_one() {
        // The start, and after the idle loop: dom0 first when it can run.
        let domains = system(&[
            (0, RunState::Waiting),
            (1, RunState::Runnable),
            (2, RunState::Runnable),
        ]);
        assert_eq!(next(&domains, None), Some(1));
        let domains = system(&[(0, RunState::Runnable), (1, RunState::Runnable)]);
        assert_eq!(next(&domains, None), Some(0));
    }

    #[test]
    fn next_is_the_current_domain_only_when_nothing_else_is_runnable() {
        let domains = system(&[
            (1, blocked()),
            (2, RunState::Runnable),
            (3, RunState::Ended),
        ]);
        assert_eq!(next(&domains, Some(2)), Some(2));
    }

    #[test]
    fn next_is_none_when_nothing_is_runnable() {
        // Blocked, not started, or over: the hypervisor idles (or every domain is done).
        let domains = system(&[(0, blocked()), (1, RunState::Waiting), (2, RunState::Ended)]);
        assert_eq!(next(&domains, Some(0)), None);
        assert_eq!(next(&domains, None), None);
        assert_eq!(next(&[], None), None);
    }

    // ---- slice_over ---------------------------------------------------------------------

    #[test]
    fn the_slice_is_over_after_3_ticks_when_another_domain_is_runnable() {
        // Xen's credit scheduler: a 30 ms time slice (sched_credit_tslice_ms).
        let mut domains = system(&[(1, RunState::Runnable), (2, RunState::Runnable)]);
        domains[0].vcpu.ticks_run = 2;
        assert!(!slice_over(&domains, 1, 100), "2 ticks");
        domains[0].vcpu.ticks_run = 3;
        assert!(slice_over(&domains, 1, 100), "3 ticks");
        domains[0].vcpu.ticks_run = 8;
        assert!(slice_over(&domains, 1, 100));
        // The timer sped up for a guest's (Linux's 250 Hz, at most 1000): still 30 ms,
        // not 3 ms. (It used to count 3 ticks whatever the rate.)
        domains[0].vcpu.ticks_run = 3;
        assert!(!slice_over(&domains, 1, 1000), "3 ms");
        domains[0].vcpu.ticks_run = 30;
        assert!(slice_over(&domains, 1, 1000), "30 ms");
        assert_eq!(slice_ticks(250), 7);
        assert_eq!(slice_ticks(19), 1, "at least a tick");
    }

    #[test]
    fn a_domain_with_nobody_waiting_to_run_keeps_the_cpu_past_its_slice() {
        let mut domains = system(&[
            (1, RunState::Runnable),
            (2, blocked()),
            (3, RunState::Waiting),
            (4, RunState::Ended),
        ]);
        domains[0].vcpu.ticks_run = 10;
        assert!(!slice_over(&domains, 1, 100));
        assert!(!slice_over(&domains, 9, 100), "no such domain");
    }

    #[test]
    fn only_ticks_while_another_domain_waits_count_against_the_slice() {
        // d1 ran alone (d2 blocked) for a while, then woke d2: its slice starts now.
        let mut domains = system(&[(1, RunState::Runnable), (2, blocked())]);
        for _ in 0..10 {
            charge_tick(&mut domains, 1);
        }
        assert_eq!(domains[0].vcpu.ticks_run, 0, "nobody waited");
        domains[1].vcpu.run_state = RunState::Runnable;
        charge_tick(&mut domains, 1);
        charge_tick(&mut domains, 1);
        assert!(!slice_over(&domains, 1, 100), "2 ticks with d2 waiting");
        charge_tick(&mut domains, 1);
        assert!(slice_over(&domains, 1, 100), "3 ticks with d2 waiting");
        assert_eq!(
            domains[1].vcpu.ticks_run, 0,
            "only the running vCPU is charged"
        );
    }

    // ---- next_in_turn -------------------------------------------------------------------

    #[test]
    fn in_turn_the_next_domain_is_the_first_still_waiting() {
        let domains = system(&[
            (0, RunState::Ended),
            (1, RunState::Waiting),
            (2, RunState::Waiting),
        ]);
        assert_eq!(next_in_turn(&domains), Some(1));
        let domains = system(&[(0, RunState::Ended), (1, RunState::Ended)]);
        assert_eq!(next_in_turn(&domains), None);
    }

    // ---- earliest_timer -----------------------------------------------------------------

    #[test]
    fn the_idle_loop_waits_for_the_earliest_timer_of_a_blocked_domain() {
        let mut domains = system(&[
            (1, RunState::Runnable),
            (2, blocked()),
            (3, RunState::Blocked(Wait::Interrupt)),
            (4, blocked()),
        ]);
        for (domain, due) in domains.iter_mut().zip([100, 300, 200]) {
            domain.vcpu.interrupts.timers.set_timer = Some(VirtualTimer {
                vector: 0x20,
                period_tsc: 1_000,
                due_tsc: due,
                target: TimerTarget::Pending,
            });
        }
        assert_eq!(earliest_timer(&domains), Some(200), "d1 runs: not counted");
        domains[2].vcpu.run_state = RunState::Ended;
        assert_eq!(earliest_timer(&domains), Some(300));
        domains[1].vcpu.interrupts.timers.set_timer = None;
        assert_eq!(earliest_timer(&domains), None, "d4 has no timer");
    }

    #[test]
    fn a_timer_that_can_never_wake_its_vcpu_is_not_waited_for() {
        // Each domain is blocked and has a timer; only those whose tick could end the wait
        // count. Else the idle loop waits tick after tick for a domain in a store wait that
        // nobody will write, instead of ending the deadlock.
        let timer = VirtualTimer {
            vector: 0x20,
            period_tsc: 1_000,
            due_tsc: 100,
            target: TimerTarget::Pending,
        };
        let with_timer = |wait: Wait| {
            let mut domains = system(&[(1, RunState::Blocked(wait))]);
            domains[0].vcpu.interrupts.timers.set_timer = Some(timer);
            domains
        };
        assert_eq!(
            earliest_timer(&with_timer(Wait::Store("/local/domain/1/x".into()))),
            None
        );
        assert_eq!(earliest_timer(&with_timer(Wait::Interrupt)), Some(100));
        // Its ticks as interrupts: they kick a poller, whatever port it polls.
        assert_eq!(earliest_timer(&with_timer(Wait::Poll(vec![3]))), Some(100));
        // Its ticks as events on port 1 (VIRQ_TIMER): a poll of port 3 alone never ends,
        // unless the event's upcall has a callback to kick.
        let mut polling = with_timer(Wait::Poll(vec![3]));
        polling[0].events.ports[1] = crate::domain::evtchn::PortState::Virq(virq::TIMER);
        assert_eq!(earliest_timer(&polling), None);
        polling[0].events.callback = Callback::Vector(0xf0);
        assert_eq!(earliest_timer(&polling), Some(100));
        polling[0].events.callback = Callback::None;
        polling[0].vcpu.run_state = RunState::Blocked(Wait::Poll(vec![1]));
        assert_eq!(earliest_timer(&polling), Some(100));
        // SCHEDOP_block with the ticks' port masked: no tick ever owes an upcall.
        let mut blocked = crate::testing::Test::long_mode();
        blocked.domain.events.shared_info = Some(crate::testing::SHARED_INFO);
        blocked.domain.events.ports[1] = crate::domain::evtchn::PortState::Virq(virq::TIMER);
        blocked.domain.vcpu.interrupts.timers.set_timer = Some(timer);
        blocked.domain.vcpu.run_state = RunState::Blocked(Wait::Event);
        assert_eq!(
            earliest_timer(core::slice::from_ref(&blocked.domain)),
            Some(100)
        );
        let mask = crate::testing::SHARED_INFO + traplab_abi::evtchn::shared_info::EVTCHN_MASK;
        blocked.write(mask, &[1 << 1]);
        assert_eq!(earliest_timer(core::slice::from_ref(&blocked.domain)), None);
        // HLT: a tick that is an event wakes it only by an upcall it can take.
        let mut halted = with_timer(Wait::Interrupt);
        halted[0].events.ports[1] = crate::domain::evtchn::PortState::Virq(virq::TIMER);
        assert_eq!(earliest_timer(&halted), None, "no callback");
        halted[0].events.callback = Callback::Vector(0xf0);
        halted[0].vcpu.vmcb.save.rflags |= 1 << 9;
        assert_eq!(earliest_timer(&halted), Some(100));
        // A timer its local APIC makes interrupts the CPU, VIRQ_TIMER bound or not: it
        // kicks a poller of any port.
        polling[0].vcpu.run_state = RunState::Blocked(Wait::Poll(vec![3]));
        polling[0].vcpu.interrupts.timers.set_timer = None;
        polling[0].vcpu.interrupts.timers.local_apic = Some(VirtualTimer {
            target: TimerTarget::LocalApic,
            ..timer
        });
        polling[0].devices.lapic.svr = 0x1ff;
        assert_eq!(earliest_timer(&polling), Some(100));
        // Unless the APIC holds its ticks back (its TPR above the vector): a blocked vCPU
        // writes no TPR, and the idle loop would wait tick after tick for ever.
        polling[0].devices.lapic.tpr = 0xf0;
        assert_eq!(earliest_timer(&polling), None);
    }

    #[test]
    fn a_domain_that_waits_for_release_domain_or_polls_its_store_port_may_be_woken_by_an_end() {
        // The idle loop kills the others of a deadlock first: their ends may wake these.
        let mut domains = system(&[
            (
                1,
                RunState::Blocked(Wait::Store(traplab_abi::store::RELEASE_DOMAIN.into())),
            ),
            (2, RunState::Blocked(Wait::Poll(vec![1, 3]))),
            (3, RunState::Blocked(Wait::Poll(vec![1]))),
            (
                4,
                RunState::Blocked(Wait::Store("/local/domain/4/state".into())),
            ),
        ]);
        for domain in &mut domains[1..3] {
            domain.events.ports[3] = crate::domain::evtchn::PortState::Store;
        }
        let woken: Vec<bool> = domains.iter().map(woken_by_an_end).collect();
        assert_eq!(woken, [true, true, false, false]);
    }

    // ---- woken_by_event, woken_by_timer, woken_by_store ---------------------------------

    /// A domain halted (blocked on HLT) with interrupts on and a callback vector.
    fn halted_with_a_callback() -> Domain {
        let mut domain = domain(1, RunState::Blocked(Wait::Interrupt));
        domain.vcpu.vmcb.save.rflags |= RFlags::INTERRUPT_FLAG.bits();
        domain.events.callback = Callback::Vector(0xf3);
        domain
    }

    #[test]
    fn a_domain_halted_wakes_on_an_upcall_it_can_take_as_an_interrupt() {
        let mut domain = halted_with_a_callback();
        assert!(woken_by_event(&Wait::Interrupt, &domain, 3, owes(true)));
        assert!(
            !woken_by_event(&Wait::Interrupt, &domain, 3, owes(false)),
            "no upcall: masked"
        );
        domain.vcpu.vmcb.save.rflags &= !RFlags::INTERRUPT_FLAG.bits();
        assert!(
            !woken_by_event(&Wait::Interrupt, &domain, 3, owes(true)),
            "interrupts off"
        );
        let mut domain = halted_with_a_callback();
        domain.events.callback = Callback::None;
        assert!(
            !woken_by_event(&Wait::Interrupt, &domain, 3, owes(true)),
            "no callback"
        );
    }

    #[test]
    fn a_pv_kernel_halted_wakes_by_its_virtual_interrupt_flag() {
        let mut domain = halted_with_a_callback();
        domain.vcpu.vmcb.save.rflags &= !RFlags::INTERRUPT_FLAG.bits();
        domain.pv.enabled = true;
        domain.pv.virtual_interrupt_flag = true;
        assert!(woken_by_event(&Wait::Interrupt, &domain, 3, owes(true)));
    }

    #[test]
    fn a_domain_blocked_in_schedop_block_wakes_on_any_upcall() {
        // vcpu_block (xen/common/sched/core.c): asleep until local_events_need_delivery().
        let domain = domain(1, blocked());
        assert!(woken_by_event(&Wait::Event, &domain, 3, owes(true)));
        assert!(!woken_by_event(&Wait::Event, &domain, 3, owes(false)));
    }

    #[test]
    fn a_domain_polling_one_port_wakes_on_it_upcall_or_not_and_on_no_other() {
        // do_poll notes a single port (`poll_evtchn = port`); evtchn_check_pollers wakes the
        // poller at that port's event, masked or not.
        let wait = Wait::Poll(vec![7]);
        let mut domain = domain(1, RunState::Blocked(wait.clone()));
        assert!(woken_by_event(&wait, &domain, 7, owes(false)));
        assert!(
            !woken_by_event(&wait, &domain, 4, owes(false)),
            "another port"
        );
        assert!(
            !woken_by_event(&wait, &domain, 4, owes(true)),
            "another port's upcall: no callback to kick"
        );
        // With a callback vector, an upcall kicks it whatever it polls
        // (vcpu_mark_events_pending → hvm_assert_evtchn_irq): a spurious wake-up, which
        // Linux's xen_poll_irq loops around.
        domain.events.callback = Callback::Vector(0xf3);
        assert!(woken_by_event(&wait, &domain, 4, owes(true)));
        assert!(
            !woken_by_event(&wait, &domain, 4, owes(false)),
            "masked: no upcall"
        );
    }

    #[test]
    fn an_event_on_a_port_pending_already_wakes_nobody() {
        // evtchn_2l_set_pending returns at once when the port's bit was set: no kick, no
        // poller checked.
        let already = Pending {
            already: true,
            masked: false,
            upcall: false,
        };
        for wait in [Wait::Poll(vec![7]), Wait::Poll(vec![]), Wait::Event] {
            let domain = domain(1, RunState::Blocked(wait.clone()));
            assert!(!woken_by_event(&wait, &domain, 7, already), "{wait:?}");
        }
    }

    #[test]
    fn a_domain_polling_none_or_several_ports_wakes_on_any_port_s_event() {
        // do_poll notes -1 unless nr_ports is 1; evtchn_check_pollers then wakes the poller
        // at an event on any port, masked or not, to look at its ports again.
        for wait in [Wait::Poll(vec![3, 7]), Wait::Poll(vec![])] {
            let domain = domain(1, RunState::Blocked(wait.clone()));
            assert!(woken_by_event(&wait, &domain, 4, owes(false)), "{wait:?}");
            assert!(woken_by_event(&wait, &domain, 7, owes(false)), "{wait:?}");
        }
    }

    #[test]
    fn a_domain_waiting_for_the_store_is_not_woken_by_an_event() {
        let wait = Wait::Store(String::from("/local/domain/0/port"));
        let domain = domain(1, RunState::Blocked(wait.clone()));
        assert!(!woken_by_event(&wait, &domain, 3, owes(true)));
    }

    #[test]
    fn a_timer_s_interrupt_wakes_a_halted_or_blocked_vcpu_but_not_one_waiting_for_the_store() {
        // Xen's vcpu_kick unblocks a vCPU an interrupt is raised for, in SCHEDOP_block or
        // SCHEDOP_poll as in HLT.
        let domain = domain(1, RunState::Blocked(Wait::Interrupt));
        assert!(woken_by_timer(&Wait::Interrupt, &domain, &Tick::Interrupt));
        assert!(woken_by_timer(&Wait::Event, &domain, &Tick::Interrupt));
        assert!(woken_by_timer(
            &Wait::Poll(vec![1]),
            &domain,
            &Tick::Interrupt
        ));
        let store = Wait::Store(String::from("/local/domain/0/port"));
        assert!(!woken_by_timer(&store, &domain, &Tick::Interrupt));
        assert!(!woken_by_timer(&Wait::Interrupt, &domain, &Tick::NotDue));
        // Requested at its device: only if the device presents it (IRQ 0 not in service).
        let requested = |presented| Tick::Requested {
            presented,
            what: String::new(),
        };
        assert!(woken_by_timer(&Wait::Interrupt, &domain, &requested(true)));
        assert!(!woken_by_timer(
            &Wait::Interrupt,
            &domain,
            &requested(false)
        ));
    }

    #[test]
    fn a_timer_s_event_wakes_as_any_event_on_its_port() {
        let domain = halted_with_a_callback();
        let tick = |upcall| Tick::Event {
            port: 2,
            pending: owes(upcall),
        };
        assert!(woken_by_timer(&Wait::Event, &domain, &tick(true)));
        assert!(!woken_by_timer(&Wait::Event, &domain, &tick(false)));
        assert!(woken_by_timer(&Wait::Interrupt, &domain, &tick(true)));
        assert!(woken_by_timer(&Wait::Poll(vec![2]), &domain, &tick(false)));
        assert!(!woken_by_timer(&Wait::Poll(vec![3]), &domain, &tick(false)));
        assert!(
            woken_by_timer(&Wait::Poll(vec![3]), &domain, &tick(true)),
            "an upcall kicks a poller with a callback"
        );
    }

    #[test]
    fn a_store_write_wakes_only_a_wait_for_that_very_node() {
        let wait = Wait::Store(String::from("/local/domain/0/port"));
        assert!(woken_by_store(&wait, "/local/domain/0/port"));
        assert!(!woken_by_store(&wait, "/local/domain/0/port/x"));
        assert!(!woken_by_store(&wait, "/local/domain/0"));
        assert!(!woken_by_store(&Wait::Event, "/local/domain/0/port"));
    }
}
