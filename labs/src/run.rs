//! Running a lab headless to its end, and reading what its trace says about how it went:
//! was the run itself sound, how did each domain end, what did it print.
//!
//! `traplab check`, the book's trace generator and the tests all run labs this way.

use std::collections::HashMap;
use std::time::{Duration, Instant};
use traplab_abi::event::{Body, DomainState, Event, Exit, Registers};
use traplab_abi::exit::ExitReason;
use traplab_tracer::check::StreamFault;
use traplab_tracer::qemu::{HvStatus, Machine};
use traplab_tracer::session::{self, Options, Run, SessionError};

/// Long enough for any lab under TCG on a slow machine (they take about a second here).
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// How many times in a row a domain may take the very same fault before its run is stopped
/// as stuck. A handler that does not fix what faults sends the guest back to the same
/// instruction, with the same registers, for ever (about 30 times a second under TCG); no
/// lab repeats a fault more than a few times, and 64 takes a couple of seconds.
pub const STUCK_AFTER: usize = 64;

/// Run `machine` to its end and keep everything it produced; a domain stuck on one fault
/// ([`STUCK_AFTER`]) stops it early.
pub fn collect(machine: &Machine, timeout: Duration) -> Result<Run, SessionError> {
    watch(
        machine,
        Options {
            timeout: Some(timeout),
            ..Options::default()
        },
        |_| {},
    )
}

/// How far a run is, for a progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub events: usize,
    pub elapsed: Duration,
}

/// [`collect`] with the caller's options, telling `progress` how far it is at each event
/// and a few times a second between events. A domain stuck on one fault stops the run:
/// its `finish.stopped` says which fault repeated.
pub fn watch(
    machine: &Machine,
    options: Options,
    mut progress: impl FnMut(Progress),
) -> Result<Run, SessionError> {
    let started = Instant::now();
    let mut repeats = Repeats::default();
    let mut events = 0;
    session::collect_observed(machine, options, |event| {
        let stuck = event.and_then(|event| {
            events += 1;
            repeats.observe(event)
        });
        progress(Progress {
            events,
            elapsed: started.elapsed(),
        });
        stuck.map(|stuck| stuck.describe())
    })
}

/// One fault exactly as it was taken: the exit, its EXITINFO, where, and the registers.
/// The same again means the guest did not get one step further.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FaultKey {
    exitcode: u64,
    exitinfo1: u64,
    exitinfo2: u64,
    rip: u64,
    regs: Registers,
}

/// A domain that took the same fault [`STUCK_AFTER`] times in a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck {
    pub dom: u16,
    /// The exit's class: `#PF`, `NPF`, …
    pub class: &'static str,
    pub rip: u64,
    /// The error code (#PF: its bits; NPF: EXITINFO1), when the fault has one.
    pub error_code: Option<u64>,
    /// The address that faults (#PF: CR2; NPF: the guest-physical address), when it has one.
    pub address: Option<u64>,
    pub count: usize,
}

impl Stuck {
    /// The sentence a report shows.
    pub fn describe(&self) -> String {
        let details: Vec<String> = [
            self.error_code
                .map(|error_code| format!("error code {error_code:#x}")),
            self.address.map(|address| format!("address {address:#x}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        let details = match details.is_empty() {
            true => String::new(),
            false => format!(" ({})", details.join(", ")),
        };
        format!(
            "{} is stuck: the same {}{details} at RIP {:#x} came {} times in a row, with the same registers each time, so the run was stopped: whatever handles it does not fix what faults",
            traplab_abi::event::domain_label(self.dom),
            self.class,
            self.rip,
            self.count
        )
    }
}

/// Watches each domain's faults (exception and nested-page-fault exits) for one that
/// repeats without the guest getting anywhere. Other exits come between (the handler
/// printing, its IRET) and do not count; a different fault starts the count again.
#[derive(Debug, Default)]
pub struct Repeats {
    last: HashMap<u16, (FaultKey, usize)>,
}

impl Repeats {
    /// Look at the next event; `Some` once a domain has taken the same fault
    /// [`STUCK_AFTER`] times in a row.
    pub fn observe(&mut self, event: &Event) -> Option<Stuck> {
        // A fault the hypervisor emulated moved the guest past the instruction (an MMIO
        // access: RIP moves on): that was a step, whatever comes next. A kernel spinning
        // on a flag while its timer's handler writes the APIC's EOI takes the very same
        // NPF, with the same registers, at every tick — and is not stuck.
        if let (Body::Emulate(emulate), Some(dom)) = (&event.body, event.dom)
            && let Some((last, _)) = self.last.get(&dom)
            && emulate
                .changes
                .iter()
                .any(|change| &*change.name == "rip" && change.old == last.rip)
        {
            self.last.remove(&dom);
            return None;
        }
        let (Body::Exit(exit), Some(dom)) = (&event.body, event.dom) else {
            return None;
        };
        let reason = exit.exit_reason();
        if !matches!(
            reason,
            ExitReason::Exception { .. } | ExitReason::Npf { .. }
        ) {
            return None;
        }
        let key = fault_key(exit);
        let count = match self.last.get_mut(&dom) {
            Some((last, count)) if *last == key => {
                *count += 1;
                *count
            }
            _ => {
                self.last.insert(dom, (key, 1));
                1
            }
        };
        let (error_code, address) = match reason {
            ExitReason::Exception { vector: 14, .. } | ExitReason::Npf { .. } => {
                (Some(exit.exitinfo1), Some(exit.exitinfo2))
            }
            ExitReason::Exception { vector, .. } => (
                traplab_abi::x86::exception(vector)
                    .has_error_code
                    .then_some(exit.exitinfo1),
                None,
            ),
            _ => (None, None),
        };
        (count == STUCK_AFTER).then(|| Stuck {
            dom,
            class: reason.class(),
            rip: exit.rip,
            error_code,
            address,
            count,
        })
    }
}

fn fault_key(exit: &Exit) -> FaultKey {
    FaultKey {
        exitcode: exit.exitcode,
        exitinfo1: exit.exitinfo1,
        exitinfo2: exit.exitinfo2,
        rip: exit.rip,
        regs: exit.regs,
    }
}

/// What is wrong with the run itself, apart from the lab's flow: the hypervisor failed or
/// did not finish, or the trace cannot be trusted (a gap, a loss, no `end`). Empty when the
/// run is sound. Each entry is one sentence.
pub fn unsound(run: &Run) -> Vec<String> {
    let mut problems = Vec::new();
    let finish = &run.finish;
    if finish.interrupted {
        problems.push("the run was interrupted (Ctrl-C)".to_string());
    }
    if finish.timed_out {
        problems.push(
            "the lab did not finish in time, so QEMU was stopped: does a guest spin forever?"
                .to_string(),
        );
    }
    if let Some(why) = &finish.stopped {
        problems.push(why.clone());
    }
    match finish.hv_status {
        Some(HvStatus::Done) => {}
        Some(status) => problems.push(format!(
            "the hypervisor stopped with an error: {}",
            status.explain()
        )),
        None if !finish.timed_out && !finish.interrupted && finish.stopped.is_none() => problems
            .push(format!(
                "QEMU stopped without a hypervisor status (exit code {:?}, signal {:?}){}",
                finish.exit_code,
                finish.signal,
                if finish.stderr.trim().is_empty() {
                    String::new()
                } else {
                    format!("; QEMU said: {}", finish.stderr.trim())
                }
            )),
        None => {}
    }
    for broken in &run.broken {
        problems.push(format!("the trace ring is broken: {broken}"));
    }
    // A run stopped before its end has no `end` event: that is no news.
    let stopped_early = finish.timed_out || finish.interrupted || finish.stopped.is_some();
    for fault in &run.faults {
        if !(stopped_early && *fault == StreamFault::Truncated) {
            problems.push(format!("the trace is incomplete: {fault}"));
        }
    }
    if !matches!(
        run.events.first().map(|event| &event.body),
        Some(Body::Boot(_))
    ) {
        problems.push("the trace does not start with the hypervisor's boot event".to_string());
    }
    problems
}

/// How a domain ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    pub state: DomainState,
    /// The exit status, when it exited.
    pub status: Option<i32>,
    /// Why, in the hypervisor's words (`exit hypercall`, `triple fault: …`).
    pub reason: String,
}

impl Ending {
    /// "exited with status 0 (exit hypercall)", "was killed: triple fault: …".
    pub fn describe(&self) -> String {
        match (self.state, self.status) {
            (DomainState::Killed, _) => format!("was killed: {}", self.reason),
            (_, Some(status)) => format!("exited with status {status} ({})", self.reason),
            _ => format!("ended ({})", self.reason),
        }
    }
}

/// How domain `dom` ended, from its last `domain` event; `None` when it never ended.
pub fn ending(events: &[Event], dom: u16) -> Option<Ending> {
    events.iter().rev().find_map(|event| match &event.body {
        Body::Domain(domain) if event.dom == Some(dom) && domain.state != DomainState::Created => {
            Some(Ending {
                state: domain.state,
                status: domain.status,
                reason: domain.reason.as_deref().unwrap_or("").to_string(),
            })
        }
        _ => None,
    })
}

/// The console lines of domain `dom`, in order: the finished ones (a prompt shown before its
/// newline comes again, whole, in the line that ends it).
pub fn console(events: &[Event], dom: u16) -> Vec<String> {
    events
        .iter()
        .filter(|event| event.dom == Some(dom))
        .filter_map(|event| match &event.body {
            Body::Console(console) if !console.unfinished => Some(console.text.to_string()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use traplab_abi::event::Console;

    /// A #PF exit of d1 at `rip`, writing to `address`, with `rax` in RAX.
    fn page_fault(rip: u64, address: u64, rax: u64) -> Event {
        let mut exit = Exit {
            exitcode: 0x4e,
            reason: "EXCP_PF".into(),
            exitinfo1: 2,
            exitinfo2: address,
            exitintinfo: 0,
            rip,
            cs: 8,
            cpl: 0,
            rflags: 2,
            cr0: 0,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            efer: 0,
            regs: Registers::default(),
            insn: Default::default(),
        };
        exit.regs.rax = rax;
        Event {
            seq: 0,
            tsc: 0,
            dom: Some(1),
            body: Body::Exit(exit),
        }
    }

    fn printed() -> Event {
        Event {
            seq: 0,
            tsc: 0,
            dom: Some(1),
            body: Body::Console(Console::line(
                "#PF at 0x40000000: mapping a free frame there",
            )),
        }
    }

    #[test]
    fn the_same_fault_over_and_over_is_stuck() {
        let mut repeats = Repeats::default();
        let fault = page_fault(0x2003d1, 0x4000_0000, 42);
        for _ in 1..STUCK_AFTER {
            assert_eq!(repeats.observe(&fault), None);
            // What its handler prints comes between, and does not count.
            assert_eq!(repeats.observe(&printed()), None);
        }
        let stuck = repeats.observe(&fault).expect("the 64th is one too many");
        assert_eq!(
            stuck.describe(),
            "d1 is stuck: the same #PF (error code 0x2, address 0x40000000) at RIP 0x2003d1 came 64 times in a row, with the same registers each time, so the run was stopped: whatever handles it does not fix what faults"
        );
    }

    #[test]
    fn a_fault_the_hypervisor_emulated_past_is_no_repeat() {
        // Linux's timer handler writes the APIC's EOI (an NPF the hypervisor emulates,
        // moving RIP on) at every tick while the code it interrupted spins: the same NPF,
        // the same registers, over and over, and progress each time.
        use traplab_abi::event::{Change, Emulate};
        let mut repeats = Repeats::default();
        let eoi = page_fault(0x2003d1, 0xfee0_00b0, 0);
        let emulated = Event {
            seq: 0,
            tsc: 0,
            dom: Some(1),
            body: Body::Emulate(Emulate {
                what: "local APIC: EOI".into(),
                arguments: Default::default(),
                changes: vec![Change {
                    name: "rip".into(),
                    old: 0x2003d1,
                    new: 0x2003d7,
                }],
            }),
        };
        for _ in 0..STUCK_AFTER * 2 {
            assert_eq!(repeats.observe(&eoi), None);
            assert_eq!(repeats.observe(&emulated), None);
        }
    }

    #[test]
    fn a_guest_that_moves_on_is_not_stuck() {
        let mut repeats = Repeats::default();
        // A loop that faults at the same place, one register different each time (the
        // MMIO of a driver writing byte after byte): progress.
        for byte in 0..(STUCK_AFTER as u64 * 2) {
            assert_eq!(
                repeats.observe(&page_fault(0x2003d1, 0x4000_0000, byte)),
                None
            );
        }
        // The same fault, with another one between: the count starts again.
        for _ in 0..STUCK_AFTER {
            assert_eq!(repeats.observe(&page_fault(0x2003d1, 0x4000_0000, 7)), None);
            assert_eq!(repeats.observe(&page_fault(0x2004a0, 0x5000_0000, 7)), None);
        }
    }
}
