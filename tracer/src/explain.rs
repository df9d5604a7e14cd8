//! Each step of a trap in plain words, and its fields decoded: what the TUI shows beside
//! the swimlanes.
//!
//! [`sentence`] is the one-line meaning of a step ("the CPU left the guest because …");
//! [`fields`] lists every field of an event with what it means (the #PF error code bit by
//! bit, the IOIO fields, CR/MSR/DR names, EXITINTINFO). What EXITINFO1 and EXITINFO2 hold
//! is decoded once, by [`ExitReason`]; the names of exits, vectors and MSRs are the abi's
//! too. References: AMD APM vol. 2, chapter 15 (SVM) and chapter 8 (exceptions).

use traplab_abi::event::{
    Action, Body, DomainState, Event, Exit, ReturnPath, Schedule, ScheduleWhy, domain_label,
};
use traplab_abi::exit::ExitReason;
use traplab_abi::svm;
use traplab_abi::x86::{self, EferFlags, PageFaultCode};

/// What a sentence may mention besides the event itself.
pub struct Context<'a> {
    /// A guest address as `symbol+offset`.
    pub symbol: &'a dyn Fn(u64) -> Option<String>,
    /// TSC ticks per second, to say how long a trap took.
    pub tsc_hz: Option<u64>,
    /// The event this flow delivers (`#PF`), known when the resume comes.
    pub delivering: Option<String>,
    /// For a `decide`: what the hypervisor went on to do, once the flow's later events are
    /// in (`None` while a live run is stopped at the decision).
    pub outcome: Option<Outcome>,
    /// For a `resume`: the hypervisor's own share of its flow's cycles (`Flow::cycles`, the
    /// time the domain was switched out taken away), when the flow is known.
    pub trap_cycles: Option<u64>,
    /// d0 is a guest of the lab, not the control domain: a recording made before domains
    /// side by side, which numbered the guests from 0 (`Trace::d0_is_a_guest`).
    pub d0_is_a_guest: bool,
}

/// What the hypervisor did after a decision, read from the events that follow it in its
/// flow. The decision's sentence says what happened — "then moves RIP past the
/// instruction" only when RIP moved — because an action names a kind of handling, not one
/// operation: an INTR exit is emulated and nothing is skipped, an exit hypercall is
/// emulated and nothing resumes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// RIP as the decision's emulation moved it: (old, new).
    pub rip: Option<(u64, u64)>,
    /// What else that emulation changed, by name (`rax`, `cr3`, `page table entry`).
    pub changed: Vec<String>,
    /// The event delivered to the guest (`#PF`), reflected or bounced.
    pub delivered: Option<String>,
    /// The domain notified, and its port made pending.
    pub notified: Option<(u16, u32)>,
    /// How a handler's return was noted.
    pub returned: Option<ReturnPath>,
    /// The domain ended in this flow.
    pub ended: bool,
}

impl Outcome {
    /// From the flow's events after its decision, in order.
    ///
    /// Only the decision's own emulation counts: the first `emulate`, before any
    /// notification, delivery or return (tracer/SCHEMA.md gives the order). A later one
    /// asks for an interrupt window for a pending interrupt, which is not what the guest's
    /// instruction asked for.
    pub fn after<'e>(events: impl IntoIterator<Item = &'e Event>) -> Outcome {
        let mut outcome = Outcome::default();
        let mut emulation_seen = false;
        for event in events {
            match &event.body {
                // A second decision (the first could not be carried out) has its own sentence.
                Body::Decide(_) => break,
                Body::Emulate(emulate) if !emulation_seen => {
                    emulation_seen = true;
                    let delivery_begun = outcome.delivered.is_some()
                        || outcome.notified.is_some()
                        || outcome.returned.is_some();
                    if delivery_begun {
                        continue;
                    }
                    for change in emulate.changes.iter() {
                        match &*change.name {
                            "rip" => outcome.rip = Some((change.old, change.new)),
                            // The interrupt window is the pending interrupt's business.
                            "v_intr" => {}
                            name => outcome.changed.push(name.to_string()),
                        }
                    }
                }
                Body::Inject(inject) => {
                    outcome
                        .delivered
                        .get_or_insert_with(|| inject.name.to_string());
                }
                Body::Bounce(bounce) => {
                    outcome
                        .delivered
                        .get_or_insert_with(|| bounce.name.to_string());
                }
                Body::Notify(notify) => {
                    outcome.notified.get_or_insert((notify.to, notify.port));
                }
                Body::Return(ret) => outcome.returned = Some(ret.via),
                Body::Domain(domain) if domain.state != DomainState::Created => {
                    outcome.ended = true
                }
                _ => {}
            }
        }
        outcome
    }

    /// Where the emulation moved RIP: `RIP past the instruction (0x200bf4 → 0x200bf5)`, or
    /// `RIP from … to …` for a jump; `None` when RIP stayed.
    fn rip_moved(&self) -> Option<String> {
        let (old, new) = self.rip?;
        // An instruction is at most 15 bytes long (AMD APM vol. 3, 1.1).
        Some(if new > old && new - old <= 15 {
            format!("RIP past the instruction ({old:#x} → {new:#x})")
        } else {
            format!("RIP from {old:#x} to {new:#x}")
        })
    }

    /// `{joint} {RIP moved}`, or nothing when RIP stayed.
    fn rip_clause(&self, joint: &str) -> String {
        self.rip_moved()
            .map(|moved| format!("{joint} {moved}"))
            .unwrap_or_default()
    }

    /// How the hypervisor emulated: what the sentence of an `emulate` decision says.
    fn emulation(&self) -> String {
        let changed = if self.changed.is_empty() {
            String::new()
        } else {
            format!(" ({} change)", self.changed.join(", "))
        };
        if self.ended {
            return "it does what the guest asked, and the domain ends: there is no instruction to skip and nothing to resume".into();
        }
        if let Some(via) = self.returned
            && self.rip.is_none()
        {
            return match via {
                ReturnPath::Iret => "it notes that the handler returns and lets the CPU execute the IRET itself at the next VMRUN: no instruction is skipped".into(),
                ReturnPath::Hypercall => "it notes that the handler returns".into(),
            };
        }
        match (self.rip, self.changed.is_empty()) {
            (Some(_), _) => format!(
                "it does the operation for the guest{changed}{}",
                self.rip_clause(", then moves")
            ),
            (None, false) => format!(
                "it changes the guest's state{changed} and resumes it at the same instruction, which runs again"
            ),
            (None, true) => "it handles the exit itself and changes nothing in the guest, which goes on where it was: no instruction is skipped".into(),
        }
    }
}

impl Context<'_> {
    fn at(&self, address: u64) -> String {
        match (self.symbol)(address) {
            Some(name) => format!("{address:#x} ({name})"),
            None => format!("{address:#x}"),
        }
    }

    fn duration(&self, cycles: u64) -> String {
        match self.tsc_hz {
            Some(hz) if hz > 0 => {
                format!("{cycles} cycles, {:.1} µs", cycles as f64 * 1e6 / hz as f64)
            }
            _ => format!("{cycles} cycles"),
        }
    }
}

/// One plain sentence: what this step means, printable (`text::printable`: it may quote
/// what a guest chose).
pub fn sentence(event: &Event, context: &Context) -> String {
    crate::text::made_printable(unprintable_sentence(event, context))
}

/// [`sentence`] before it is made printable.
fn unprintable_sentence(event: &Event, context: &Context) -> String {
    match &event.body {
        Body::Boot(boot) => format!(
            "The hypervisor is up on {} ({} MiB of RAM): from now on every trap of every guest comes to it.",
            boot.cpu, boot.ram_mib
        ),
        Body::Domain(domain) => {
            let dom = event.dom.map_or("A domain".to_string(), domain_label);
            match domain.state {
                DomainState::Created => format!(
                    "{dom} is created to run the guest program {}: {}.",
                    domain.name,
                    match event.dom {
                        Some(0) if context.d0_is_a_guest => {
                            "the lab's guest (a recording from before domains side by side, which numbered the guests from 0)"
                        }
                        Some(0) => "the control domain (dom0), which may manage the others",
                        _ => "an unprivileged domain (a domU, as Xen calls it)",
                    }
                ),
                DomainState::Exited => format!(
                    "{dom} ({}) ends: {} (status {}).",
                    domain.name,
                    domain.reason.as_deref().unwrap_or("it exited"),
                    domain
                        .status
                        .map_or("-".into(), |status| status.to_string())
                ),
                DomainState::Killed => format!(
                    "The hypervisor kills {dom} ({}): {}. The hypervisor and the other domains live on.",
                    domain.name,
                    domain.reason.as_deref().unwrap_or("a fatal trap")
                ),
            }
        }
        Body::Exit(exit) => {
            let specific = exit_specifics(exit);
            format!(
                "The CPU left the guest (#VMEXIT {}) because {}{}.",
                exit.reason,
                exit.exit_reason().sentence(),
                if specific.is_empty() {
                    String::new()
                } else {
                    format!(": {specific}")
                }
            )
        }
        Body::Decide(decide) => {
            let verb = decision_verb(decide.action, context.outcome.as_ref());
            format!(
                "The hypervisor decides to {verb}. Its reason: {}.",
                decide.why.trim_end_matches('.')
            )
        }
        Body::Emulate(emulate) => {
            let changes: Vec<String> = emulate
                .changes
                .iter()
                .map(|change| format!("{} {:#x} → {:#x}", change.name, change.old, change.new))
                .collect();
            if changes.is_empty() {
                format!("The hypervisor emulates: {}.", emulate.what)
            } else {
                format!(
                    "The hypervisor emulates: {}; it changes {}.",
                    emulate.what,
                    changes.join(", ")
                )
            }
        }
        Body::Inject(inject) => {
            // An exception goes back to the guest that raised it (reflected); an interrupt
            // (a timer tick, an event channel's upcall) is the hypervisor's to give.
            let verb = match inject.kind {
                traplab_abi::svm::EventType::Interrupt => "injects",
                _ => "reflects",
            };
            let mut text = format!(
                "The hypervisor {verb} {} into the guest's IDT vector {}: it writes the event{} into EVENTINJ, and at the next VMRUN the CPU delivers it",
                inject.name,
                inject.vector,
                inject
                    .error_code
                    .map(|code| format!(" (error code {code:#x})"))
                    .unwrap_or_default()
            );
            match inject.handler {
                Some(handler) => text.push_str(&format!(" to the guest's handler at {}", context.at(handler))),
                None => text.push_str(", but the guest's IDT has no interrupt or trap gate for it (the decision says what is there): the delivery itself will fault, or switch tasks through a task gate"),
            }
            if let Some(cr2) = inject.cr2 {
                text.push_str(&format!("; CR2 is set to {cr2:#x}, the faulting address"));
            }
            if inject.synthetic {
                text.push_str(
                    " (synthetic: the hypervisor made this event up, no CPU exception caused it)",
                );
            }
            text.push('.');
            text
        }
        Body::Bounce(bounce) => format!(
            "The hypervisor bounces {} to the handler the guest registered with set_trap_table, at {}: it writes the exception frame on the guest's stack at {:#x} itself (as Xen does for PV guests) and will resume the guest in the handler, interrupts {}{}.",
            bounce.name,
            context.at(bounce.handler),
            bounce.frame,
            if bounce.interrupts { "on" } else { "off" },
            if bounce.synthetic {
                " (synthetic: no CPU exception caused it)"
            } else {
                ""
            }
        ),
        Body::Return(ret) => {
            let what = ret.name.as_deref().map_or("A handler".to_string(), |name| {
                format!("The guest's {name} handler")
            });
            let how = match ret.via {
                ReturnPath::Iret => "with IRET, which the hypervisor intercepts",
                ReturnPath::Hypercall => "with the iret hypercall (a bounced event's way back)",
            };
            format!(
                "{what} returns {how}: the delivery is over, and the guest goes back to {}.",
                context.at(ret.rip)
            )
        }
        Body::Resume(resume) => {
            let place = match &context.delivering {
                Some(name) => format!(", now in its {name} handler at {}", context.at(resume.rip)),
                None => format!(" at {}", context.at(resume.rip)),
            };
            // `cycles` count from the exit, the time other domains ran meanwhile included
            // (`tracer/SCHEMA.md`): the hypervisor's share is its flow's.
            let took = match context.trap_cycles {
                Some(own) if own < resume.cycles => format!(
                    "this trap took the hypervisor {} ({} since the exit, while other domains ran too)",
                    context.duration(own),
                    context.duration(resume.cycles)
                ),
                Some(own) => format!("this trap took the hypervisor {}", context.duration(own)),
                None => format!("{} since the exit", context.duration(resume.cycles)),
            };
            format!("VMRUN: the guest runs again{place} — {took}.")
        }
        Body::Notify(notify) => {
            let sender = event.dom.map_or("the hypervisor".to_string(), domain_label);
            let receiver = domain_label(notify.to);
            let state = if notify.woke {
                format!(
                    "{receiver} was blocked waiting for an event, so it is runnable again; its upcall comes when it runs, in its own lane"
                )
            } else if notify.masked {
                format!(
                    "{receiver} masked the port (or all its upcalls): the event waits, pending, until {receiver} unmasks it"
                )
            } else {
                format!("{receiver} takes the upcall the next time it runs, in its own lane")
            };
            // Port 0 is never a domain's (Xen allocates from 1): a `from_port` of 0 is an
            // event the hypervisor raised itself, a virtual IRQ (VIRQ_TIMER's tick) or the
            // store's watch event (`tracer/SCHEMA.md`).
            match notify.from_port {
                0 => format!(
                    "The hypervisor raises an event for {receiver} itself (its timer's tick on the port bound to VIRQ_TIMER, or the store's watch event; no domain sent it): it sets the pending bit of {receiver}'s port {} in {receiver}'s shared-info page. {state}.",
                    notify.port
                ),
                from_port => format!(
                    "The hypervisor notifies {receiver} for {sender}: it sets the pending bit of {receiver}'s port {} (the other end of {sender}'s port {from_port}) in {receiver}'s shared-info page. {state}.",
                    notify.port
                ),
            }
        }
        Body::GrantMap(map) => {
            let mapper = event.dom.map_or("a domain".to_string(), domain_label);
            let granter = domain_label(map.granter);
            format!(
                "The hypervisor maps grant reference {} of {granter} into {mapper}: {granter}'s page (frame {:#x}) now also appears at {mapper}'s guest-physical {:#x}, {}, through {mapper}'s nested page tables. Both domains reach the same memory; {mapper} names this mapping handle {} when it unmaps it.",
                map.gref,
                map.frame,
                map.host_addr,
                if map.readonly {
                    "read-only"
                } else {
                    "writable"
                },
                map.handle
            )
        }
        Body::GrantUnmap(unmap) => {
            let mapper = event.dom.map_or("a domain".to_string(), domain_label);
            let granter = domain_label(unmap.granter);
            format!(
                "The hypervisor unmaps handle {} from {mapper}'s guest-physical {:#x}: {mapper} no longer reaches {granter}'s page (grant reference {}). Once nobody maps it, {granter} may end the grant.",
                unmap.handle, unmap.host_addr, unmap.gref
            )
        }
        Body::Schedule(schedule) => switch_sentence(schedule),
        Body::Console(console) if console.unfinished => format!(
            "The guest has printed “{}” and waits for input: a prompt, a line with no newline yet. It halted, so it will print no more of it before a key comes; the whole line comes again at its newline.",
            console.text
        ),
        Body::Console(console) => format!("The guest prints: “{}”.", console.text),
        Body::Lost(lost) => format!(
            "{} events were lost here: the trace has a hole.",
            lost.count
        ),
        Body::End(end) => format!(
            "The hypervisor stops (status {}): {}.",
            end.status, end.reason
        ),
    }
}

/// What a decision does, in words: from what followed it when that is known (`outcome`),
/// else what the action means.
fn decision_verb(action: Action, outcome: Option<&Outcome>) -> String {
    let Some(outcome) = outcome else {
        return match action {
            Action::Emulate => "emulate it: handle the exit in the hypervisor, without the guest's handlers (the next steps show what it changes)",
            Action::Reflect => "reflect it: hand the event back to the guest, through the guest's own IDT",
            Action::Bounce => "bounce it: deliver the event itself to the handler the guest registered (Xen PV style)",
            Action::Forward => "forward it: notify another domain",
            Action::Kill => "kill the domain",
        }
        .into();
    };
    let event = outcome.delivered.as_deref().unwrap_or("the event");
    match action {
        Action::Emulate => format!("emulate it: {}", outcome.emulation()),
        Action::Reflect => format!(
            "reflect it: hand {event} back to the guest, through the guest's own IDT{}",
            outcome.rip_clause(", after moving")
        ),
        Action::Bounce => format!(
            "bounce it: deliver {event} itself to the handler the guest registered (Xen PV style){}",
            outcome.rip_clause(", after moving")
        ),
        Action::Forward => match outcome.notified {
            Some((to, port)) => format!(
                "forward it: notify {} (its port {port}){}",
                domain_label(to),
                outcome.rip_clause(", and move")
            ),
            None => "forward it: notify another domain".into(),
        },
        Action::Kill => "kill the domain".into(),
    }
}

/// Why the hypervisor switched its CPU, in words.
fn switch_sentence(schedule: &Schedule) -> String {
    let side = |dom: Option<u16>| dom.map_or("its idle loop".to_string(), domain_label);
    let (from, to) = (side(schedule.from), side(schedule.to));
    let reason = match schedule.why {
        ScheduleWhy::Start => format!("{to} runs for the first time"),
        ScheduleWhy::SliceOver => format!("{from} used up its time slice and {to} may run"),
        ScheduleWhy::Blocked if schedule.to.is_none() => format!(
            "{from} blocked (it waits for an event) and no domain is runnable: the CPU idles until an event wakes one"
        ),
        ScheduleWhy::Blocked => format!("{from} blocked: it waits for an event"),
        ScheduleWhy::Yielded => format!("{from} yielded: it lets the others run first"),
        ScheduleWhy::Woken => format!(
            "an event{} woke {to}, and a woken domain runs first (as Xen's credit scheduler boosts it)",
            schedule
                .port
                .map(|port| format!(" on {to}'s port {port}"))
                .unwrap_or_default()
        ),
        ScheduleWhy::Ended => format!("{from} ended"),
    };
    let stays_open = match (schedule.from, schedule.why) {
        (Some(from), why) if why != ScheduleWhy::Ended => format!(
            " {}'s trap stays open until it runs again.",
            domain_label(from)
        ),
        _ => String::new(),
    };
    format!("The hypervisor switches its CPU from {from} to {to}: {reason}.{stays_open}")
}

/// The exit's own facts, in words: `a write to 0x40000000, whose page is not present`.
pub fn exit_specifics(exit: &Exit) -> String {
    match exit.exit_reason() {
        ExitReason::Exception {
            vector: 14,
            error_code,
            address,
        } => {
            let error = PageFaultCode(error_code);
            format!(
                "#PF, {} {} {address:#x}, {}",
                if error.user() {
                    "a user-mode"
                } else {
                    "a supervisor-mode"
                },
                if error.fetch() {
                    "instruction fetch at"
                } else if error.write() {
                    "write to"
                } else {
                    "read of"
                },
                if error.present() {
                    "a protection violation on a present page"
                } else {
                    "whose page is not present"
                }
            )
        }
        ExitReason::Exception { vector, .. } => x86::Vector(vector).to_string(),
        ExitReason::Ioio { info: io, .. } => {
            if io.input {
                format!(
                    "{} of {} byte(s) from port {:#x}",
                    if io.string { "INS" } else { "IN" },
                    io.size,
                    io.port
                )
            } else if io.string {
                format!("OUTS of {} byte(s) to port {:#x}", io.size, io.port)
            } else {
                format!(
                    "OUT of {:#x} to port {:#x}",
                    exit.regs.rax & x86::operand_mask(io.size),
                    io.port
                )
            }
        }
        ExitReason::Cpuid => format!(
            "leaf {:#x}, subleaf {:#x}",
            exit.regs.rax as u32, exit.regs.rcx as u32
        ),
        ExitReason::Msr { write } => {
            // The MSR's number is in ECX: EXITINFO1 only says read or write.
            let msr = exit.regs.rcx as u32;
            format!(
                "{} of MSR {msr:#x}{}",
                if write { "WRMSR" } else { "RDMSR" },
                traplab_abi::msr::name(msr)
                    .map(|name| format!(" ({name})"))
                    .unwrap_or_default()
            )
        }
        ExitReason::Vmmcall => format!("hypercall {}", crate::text::hypercall(&exit.regs)),
        ExitReason::Npf { gpa, info: npf } => format!(
            "a {} guest-physical {gpa:#x}",
            if npf.fetch {
                "fetch at"
            } else if npf.write {
                "write to"
            } else {
                "read of"
            }
        ),
        ExitReason::CrRead { number } => format!("{} (read)", cr_name(number)),
        ExitReason::CrWrite { number } => format!("{} (written)", cr_name(number)),
        ExitReason::DrRead { number } => format!("{} (read)", dr_name(number)),
        ExitReason::DrWrite { number } => format!("{} (written)", dr_name(number)),
        _ => String::new(),
    }
}

/// What a run of the same trap does, without what changes from one to the next (the byte
/// written): `OUT to the console UART`, `IN from port 0x60`; `None` for an exit other than
/// IOIO, which the trap's class names well enough.
pub fn repeated_access(exit: &Exit) -> Option<String> {
    let ExitReason::Ioio { info: io, .. } = exit.exit_reason() else {
        return None;
    };
    // The console UART's eight registers (transmit, line status, …) from its base port.
    let uart = traplab_abi::boot::CONSOLE_PORT..traplab_abi::boot::CONSOLE_PORT + 8;
    let port = if uart.contains(&io.port) {
        "the console UART".to_string()
    } else {
        format!("port {:#x}", io.port)
    };
    let instruction = match (io.input, io.string) {
        (true, false) => "IN",
        (true, true) => "INS",
        (false, false) => "OUT",
        (false, true) => "OUTS",
    };
    let direction = if io.input { "from" } else { "to" };
    Some(format!("{instruction} {direction} {port}"))
}

/// What a control register holds.
pub fn cr_name(number: u8) -> String {
    let what = match number {
        0 => "CR0: protection and paging switches (PE, WP, PG, TS, …)",
        2 => "CR2: the page-fault address",
        3 => "CR3: the page-table base",
        4 => "CR4: extensions (PAE, OSFXSR, SMEP, …)",
        8 => "CR8: the task priority",
        _ => return format!("CR{number}"),
    };
    what.to_string()
}

/// What a debug register holds.
pub fn dr_name(number: u8) -> String {
    match number {
        0..=3 => format!("DR{number}: breakpoint address {number}"),
        6 => "DR6: debug status (which breakpoint hit)".into(),
        7 => "DR7: debug control (which breakpoints are on)".into(),
        _ => format!("DR{number}"),
    }
}

/// EXITINTINFO (or EVENTINJ) in words.
pub fn event_info(bits: u64) -> String {
    match svm::Event::decode(bits) {
        None => format!("{bits:#x}: valid bit clear — no event was being delivered"),
        Some(event) => format!(
            "{bits:#x}: vector {}: {}, type {:?}{}",
            event.vector,
            x86::Vector(event.vector),
            event.kind,
            event
                .error_code
                .map(|code| format!(", error code {code:#x}"))
                .unwrap_or_default()
        ),
    }
}

/// Every field of an event with its meaning: (field, value and meaning).
pub fn fields(event: &Event) -> Vec<(String, String)> {
    let mut rows: Vec<(String, String)> = Vec::new();
    // A value may hold what a guest chose (a store value, the bytes it printed): shown as
    // `text::printable` shows it.
    let mut row = |name: &str, value: String| {
        rows.push((name.to_string(), crate::text::made_printable(value)))
    };
    row(
        "event",
        format!(
            "seq {}, {}, TSC {}",
            event.seq,
            event.dom.map_or("the hypervisor".into(), domain_label),
            event.tsc
        ),
    );
    match &event.body {
        Body::Exit(exit) => {
            let reason = exit.exit_reason();
            row(
                "exit reason",
                format!(
                    "{} (exit code {:#x}): {}",
                    exit.reason,
                    exit.exitcode,
                    reason.sentence()
                ),
            );
            row(
                "rip",
                format!("{:#x}, CPL {}, CS {:#x}", exit.rip, exit.cpl, exit.cs),
            );
            match reason {
                ExitReason::Exception {
                    vector,
                    error_code,
                    address,
                } => {
                    let exception = x86::exception(vector);
                    row(
                        "exception",
                        format!(
                            "{}: vector {vector}, {:?}, {:?} class",
                            x86::Vector(vector),
                            exception.kind,
                            exception.class
                        ),
                    );
                    if exception.has_error_code {
                        row("error code", format!("{error_code:#x} (EXITINFO1)"));
                    }
                    if vector == 14 {
                        let error = PageFaultCode(error_code);
                        for (mask, name, set, clear) in PageFaultCode::BITS {
                            let on = error.0 & mask != 0;
                            let meaning = if on {
                                set
                            } else if clear.is_empty() {
                                "no"
                            } else {
                                clear
                            };
                            row(
                                &format!("  {name}"),
                                format!("{} — {meaning}", u8::from(on)),
                            );
                        }
                        row(
                            "address",
                            format!(
                                "{address:#x} (EXITINFO2: the address that faulted; CR2 is not written by an intercepted #PF)"
                            ),
                        );
                    }
                }
                ExitReason::Ioio { info: io, next_rip } => {
                    row("port", format!("{:#x}", io.port));
                    row(
                        "direction",
                        (if io.input {
                            "IN (from the port)"
                        } else {
                            "OUT (to the port)"
                        })
                        .into(),
                    );
                    row("size", format!("{} byte(s)", io.size));
                    row(
                        "string",
                        (if io.string {
                            "yes (INS/OUTS: memory at RSI/RDI)"
                        } else {
                            "no"
                        })
                        .into(),
                    );
                    row(
                        "rep",
                        (if io.rep {
                            "yes (repeated RCX times)"
                        } else {
                            "no"
                        })
                        .into(),
                    );
                    if io.string {
                        row(
                            "address size",
                            format!(
                                "{} bits, segment {}",
                                io.address_bits,
                                ["ES", "CS", "SS", "DS", "FS", "GS", "?", "?"]
                                    [io.segment as usize & 7]
                            ),
                        );
                    }
                    if !io.input && !io.string {
                        row(
                            "value",
                            format!(
                                "{:#x} (from RAX)",
                                exit.regs.rax & x86::operand_mask(io.size)
                            ),
                        );
                    }
                    row("next rip", format!("{next_rip:#x} (EXITINFO2)"));
                }
                ExitReason::Msr { write } => {
                    let msr = exit.regs.rcx as u32;
                    row(
                        "access",
                        (if write {
                            "WRMSR (EXITINFO1 = 1)"
                        } else {
                            "RDMSR (EXITINFO1 = 0)"
                        })
                        .into(),
                    );
                    row(
                        "msr",
                        format!(
                            "{msr:#x} {}",
                            traplab_abi::msr::name(msr).unwrap_or("(no architectural name)")
                        ),
                    );
                    if write {
                        row(
                            "value",
                            format!(
                                "{:#x} (EDX:EAX)",
                                ((exit.regs.rdx & 0xffff_ffff) << 32)
                                    | (exit.regs.rax & 0xffff_ffff)
                            ),
                        );
                    }
                }
                ExitReason::Cpuid => row(
                    "leaf",
                    format!(
                        "EAX {:#x}, ECX {:#x}",
                        exit.regs.rax as u32, exit.regs.rcx as u32
                    ),
                ),
                ExitReason::Vmmcall => {
                    row("hypercall", crate::text::hypercall(&exit.regs));
                    row(
                        "arguments",
                        format!(
                            "rdi {:#x}, rsi {:#x}, rdx {:#x}",
                            exit.regs.rdi, exit.regs.rsi, exit.regs.rdx
                        ),
                    );
                }
                ExitReason::Npf { gpa, info: npf } => {
                    row("guest-physical", format!("{gpa:#x} (EXITINFO2)"));
                    row(
                        "access",
                        format!(
                            "{}{}{}{}",
                            if npf.fetch {
                                "fetch"
                            } else if npf.write {
                                "write"
                            } else {
                                "read"
                            },
                            if npf.present {
                                ", present (a permission fault)"
                            } else {
                                ", not present"
                            },
                            if npf.user { ", user" } else { "" },
                            if npf.reserved_bit {
                                ", reserved bit"
                            } else {
                                ""
                            }
                        ),
                    );
                    row(
                        "walk",
                        (if npf.guest_page_walk {
                            "while walking the guest's page tables"
                        } else {
                            "on the final guest-physical address"
                        })
                        .into(),
                    );
                }
                ExitReason::CrRead { number } | ExitReason::CrWrite { number } => {
                    row("register", cr_name(number));
                    row(
                        "access",
                        (if matches!(reason, ExitReason::CrWrite { .. }) {
                            "write (MOV to CR)"
                        } else {
                            "read (MOV from CR)"
                        })
                        .into(),
                    );
                    row(
                        "exitinfo1",
                        format!(
                            "{:#x} (with decode assists: bit 63 MOV CRx, bits 3:0 the GPR)",
                            exit.exitinfo1
                        ),
                    );
                }
                ExitReason::DrRead { number } | ExitReason::DrWrite { number } => {
                    row("register", dr_name(number));
                    row(
                        "access",
                        (if matches!(reason, ExitReason::DrWrite { .. }) {
                            "write (MOV to DR)"
                        } else {
                            "read (MOV from DR)"
                        })
                        .into(),
                    );
                }
                _ => {
                    row("exitinfo1", format!("{:#x}", exit.exitinfo1));
                    row("exitinfo2", format!("{:#x}", exit.exitinfo2));
                }
            }
            row("exitintinfo", event_info(exit.exitintinfo));
            row(
                "instruction",
                if exit.insn.as_slice().is_empty() {
                    "(RIP not mapped)".into()
                } else {
                    crate::code::hex_bytes(exit.insn.as_slice())
                },
            );
            row(
                "cr0 cr3 cr4",
                format!("{:#x} {:#x} {:#x}", exit.cr0, exit.cr3, exit.cr4),
            );
            row(
                "efer",
                format!(
                    "{:#x}{}",
                    exit.efer,
                    if EferFlags::from_bits_truncate(exit.efer)
                        .contains(EferFlags::LONG_MODE_ACTIVE)
                    {
                        " (long mode active)"
                    } else {
                        ""
                    }
                ),
            );
        }
        Body::Decide(decide) => {
            row("action", decide.action.name().into());
            row("why", decide.why.to_string());
            row("decided at", decide.at.to_string());
        }
        Body::Emulate(emulate) => {
            row("what", emulate.what.to_string());
            for change in &emulate.changes {
                row(
                    &format!("  {}", change.name),
                    format!("{:#x} → {:#x}", change.old, change.new),
                );
            }
        }
        Body::Inject(inject) => {
            row(
                "event",
                format!(
                    "{} (vector {}, type {:?})",
                    inject.name, inject.vector, inject.kind
                ),
            );
            row(
                "error code",
                inject
                    .error_code
                    .map_or("none".into(), |code| format!("{code:#x}")),
            );
            if let Some(cr2) = inject.cr2 {
                row("cr2", format!("{cr2:#x}"));
            }
            row(
                "handler",
                inject.handler.map_or(
                    "none: no interrupt or trap gate in the guest's IDT".into(),
                    |handler| format!("{handler:#x} (from the guest's IDT gate)"),
                ),
            );
            row(
                "synthetic",
                (if inject.synthetic {
                    "yes: made up by the hypervisor"
                } else {
                    "no: the CPU raised it"
                })
                .into(),
            );
            let encoded = svm::Event {
                vector: inject.vector,
                kind: inject.kind,
                error_code: inject.error_code,
            }
            .encode();
            row("EVENTINJ", event_info(encoded));
        }
        Body::Bounce(bounce) => {
            row(
                "event",
                format!("{} (vector {})", bounce.name, bounce.vector),
            );
            row(
                "error code",
                bounce
                    .error_code
                    .map_or("none".into(), |code| format!("{code:#x}")),
            );
            if let Some(cr2) = bounce.cr2 {
                row("cr2", format!("{cr2:#x}"));
            }
            row(
                "handler",
                format!("{:#x} (registered with set_trap_table)", bounce.handler),
            );
            row("frame", format!("{:#x} (the handler's RSP)", bounce.frame));
            row(
                "interrupts",
                (if bounce.interrupts { "on" } else { "off" }).into(),
            );
            row(
                "synthetic",
                (if bounce.synthetic { "yes" } else { "no" }).into(),
            );
        }
        Body::Return(ret) => {
            row(
                "via",
                (match ret.via {
                    ReturnPath::Iret => "IRET (intercepted)",
                    ReturnPath::Hypercall => "the iret hypercall",
                })
                .into(),
            );
            row(
                "ends",
                ret.name
                    .as_deref()
                    .map_or("no event the hypervisor delivered".into(), |name| {
                        format!("the delivery of {name}")
                    }),
            );
            row(
                "back to",
                format!(
                    "rip {:#x}, cs {:#x}, rsp {:#x}, rflags {:#x}",
                    ret.rip, ret.cs, ret.rsp, ret.rflags
                ),
            );
        }
        Body::Resume(resume) => {
            row("rip", format!("{:#x}", resume.rip));
            row("rflags", format!("{:#x}", resume.rflags));
            row(
                "cycles",
                format!("{} TSC ticks from the exit to this VMRUN", resume.cycles),
            );
        }
        Body::Notify(notify) => {
            let receiver = domain_label(notify.to);
            row(
                "notified",
                format!("{receiver}, port {} (now pending)", notify.port),
            );
            row(
                "sent on",
                match notify.from_port {
                    0 => "no port: the hypervisor raised it (VIRQ_TIMER, a store watch)".into(),
                    from_port => format!(
                        "port {from_port} of {}",
                        event.dom.map_or("the hypervisor".into(), domain_label)
                    ),
                },
            );
            row(
                "woke",
                (if notify.woke {
                    "yes: it was blocked, it is runnable again"
                } else {
                    "no: it was not blocked"
                })
                .into(),
            );
            row(
                "masked",
                (if notify.masked {
                    "yes: no upcall until it unmasks the port"
                } else {
                    "no: the upcall comes when it runs"
                })
                .into(),
            );
        }
        Body::GrantMap(map) => {
            row(
                "granter",
                format!(
                    "{}, grant reference {}",
                    domain_label(map.granter),
                    map.gref
                ),
            );
            row(
                "frame",
                format!("{:#x} (the granter's guest-physical page)", map.frame),
            );
            row(
                "mapped at",
                format!("{:#x} (the mapper's guest-physical address)", map.host_addr),
            );
            row(
                "access",
                (if map.readonly {
                    "read-only"
                } else {
                    "read and write"
                })
                .into(),
            );
            row("handle", format!("{} (what unmapping names)", map.handle));
        }
        Body::GrantUnmap(unmap) => {
            row(
                "granter",
                format!(
                    "{}, grant reference {}",
                    domain_label(unmap.granter),
                    unmap.gref
                ),
            );
            row("mapped at", format!("{:#x}", unmap.host_addr));
            row("handle", unmap.handle.to_string());
        }
        Body::Schedule(schedule) => {
            let side = |dom: Option<u16>| dom.map_or("idle (no domain)".to_string(), domain_label);
            row("from", side(schedule.from));
            row("to", side(schedule.to));
            row("why", schedule.why.name().into());
            if let Some(port) = schedule.port {
                row("port", format!("{port} (its event woke the domain)"));
            }
        }
        _ => row("detail", crate::text::detail(event)),
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use traplab_abi::event::{InstructionBytes, Registers};
    use traplab_abi::svm::exitcode;

    fn page_fault(error_code: u64) -> Exit {
        Exit {
            exitcode: 0x4e,
            reason: "EXCP_PF".into(),
            exitinfo1: error_code,
            exitinfo2: 0x4000_0000,
            exitintinfo: 0,
            rip: 0x2000b6,
            cs: 8,
            cpl: 0,
            rflags: 2,
            cr0: 0,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            efer: 0,
            regs: Registers::default(),
            insn: InstructionBytes::new(&[0xc7, 0x00, 0x2a, 0, 0, 0]),
        }
    }

    fn exit_event(exit: Exit) -> Event {
        Event {
            seq: 1,
            tsc: 2,
            dom: Some(1),
            body: Body::Exit(exit),
        }
    }

    /// The value of field `name` in [`fields`], or "" when the event has no such field.
    fn field(rows: &[(String, String)], name: &str) -> String {
        rows.iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.clone())
            .unwrap_or_default()
    }

    fn context() -> Context<'static> {
        Context {
            symbol: &|_| Some("write_it".into()),
            tsc_hz: None,
            delivering: None,
            outcome: None,
            trap_cycles: None,
            d0_is_a_guest: false,
        }
    }

    #[test]
    fn d0_is_the_control_domain_unless_the_recording_numbered_guests_from_0() {
        let created = body_event(Body::Domain(traplab_abi::event::DomainChange {
            state: DomainState::Created,
            name: "page-fault".into(),
            status: None,
            reason: None,
        }));
        let created = Event {
            dom: Some(0),
            ..created
        };
        assert!(sentence(&created, &context()).contains("the control domain (dom0)"));
        let old = Context {
            d0_is_a_guest: true,
            ..context()
        };
        let said = sentence(&created, &old);
        assert!(
            !said.contains("control domain") && said.contains("the lab's guest"),
            "{said}"
        );
    }

    #[test]
    fn a_resume_says_the_hypervisor_s_share_of_a_trap_its_domain_was_switched_out_in() {
        let resume = body_event(Body::Resume(traplab_abi::event::Resume {
            rip: 0x20_0503,
            rflags: 0x202,
            regs: Default::default(),
            cycles: 320_000,
        }));
        let own = Context {
            trap_cycles: Some(100_000),
            ..context()
        };
        let said = sentence(&resume, &own);
        assert!(
            said.contains("took the hypervisor 100000 cycles (320000 cycles since the exit, while other domains ran too)"),
            "{said}"
        );
        let said = sentence(&resume, &context());
        assert!(said.contains("320000 cycles since the exit"), "{said}");
    }

    #[test]
    fn the_page_fault_error_code_is_named_bit_by_bit() {
        let event = exit_event(page_fault(0x2));
        let rows = fields(&event);
        let value = |name: &str| field(&rows, name);
        assert_eq!(
            value("exception"),
            "#PF (page fault): vector 14, Fault, PageFault class"
        );
        assert_eq!(value("error code"), "0x2 (EXITINFO1)");
        assert_eq!(value("  P"), "0 — page not present");
        assert_eq!(value("  W/R"), "1 — write");
        assert_eq!(value("  U/S"), "0 — supervisor-mode access");
        assert_eq!(value("  RSVD"), "0 — no");
        assert_eq!(value("  I/D"), "0 — no");
        assert!(value("address").starts_with("0x40000000 (EXITINFO2"));
        assert!(value("exitintinfo").contains("no event was being delivered"));
        assert_eq!(
            sentence(&event, &context()),
            "The CPU left the guest (#VMEXIT EXCP_PF) because the guest raised an exception, and the hypervisor intercepts that vector: #PF, a supervisor-mode write to 0x40000000, whose page is not present."
        );
    }

    #[test]
    fn another_exception_is_named_by_its_vector() {
        let mut exit = page_fault(0);
        exit.exitcode = exitcode::EXCP_BASE + 6;
        exit.reason = "EXCP_UD".into();
        assert_eq!(exit_specifics(&exit), "#UD (invalid opcode)");
        let rows = fields(&exit_event(exit));
        assert_eq!(
            field(&rows, "exception"),
            "#UD (invalid opcode): vector 6, Fault, Benign class"
        );
        assert_eq!(field(&rows, "error code"), "", "#UD pushes no error code");
        assert_eq!(field(&rows, "  P"), "", "only a #PF has its bits named");
    }

    #[test]
    fn an_msr_exit_names_its_msr_and_the_value_written() {
        let mut exit = page_fault(0);
        exit.exitcode = exitcode::MSR;
        exit.reason = "MSR".into();
        exit.exitinfo1 = 1;
        exit.regs.rcx = 0xc000_0080;
        exit.regs.rdx = 0;
        exit.regs.rax = 0x0d01;
        exit.efer = 0x0d00;
        let event = exit_event(exit);
        assert_eq!(
            sentence(&event, &context()),
            "The CPU left the guest (#VMEXIT MSR) because the guest accessed an MSR marked in the MSR permission map: WRMSR of MSR 0xc0000080 (EFER)."
        );
        let rows = fields(&event);
        assert_eq!(field(&rows, "access"), "WRMSR (EXITINFO1 = 1)");
        assert_eq!(field(&rows, "msr"), "0xc0000080 EFER");
        assert_eq!(field(&rows, "value"), "0xd01 (EDX:EAX)");
        assert_eq!(field(&rows, "efer"), "0xd00 (long mode active)");
        let mut read = page_fault(0);
        read.exitcode = exitcode::MSR;
        read.exitinfo1 = 0;
        read.regs.rcx = 0xc001_1234;
        let rows = fields(&exit_event(read));
        assert_eq!(field(&rows, "access"), "RDMSR (EXITINFO1 = 0)");
        assert_eq!(field(&rows, "msr"), "0xc0011234 (no architectural name)");
        assert_eq!(field(&rows, "value"), "", "a read has no value yet");
        assert_eq!(field(&rows, "efer"), "0x0");
    }

    #[test]
    fn a_notification_a_switch_and_a_grant_in_plain_words() {
        use traplab_abi::event::{GrantMap, Notify};
        let notify = Event {
            seq: 9,
            tsc: 0,
            dom: Some(1),
            body: Body::Notify(Notify {
                to: 2,
                port: 3,
                from_port: 1,
                woke: true,
                masked: false,
            }),
        };
        assert_eq!(
            sentence(&notify, &context()),
            "The hypervisor notifies d2 for d1: it sets the pending bit of d2's port 3 (the other end of d1's port 1) in d2's shared-info page. d2 was blocked waiting for an event, so it is runnable again; its upcall comes when it runs, in its own lane."
        );
        let rows = fields(&notify);
        assert_eq!(field(&rows, "event"), "seq 9, d1, TSC 0");
        assert_eq!(field(&rows, "notified"), "d2, port 3 (now pending)");
        assert_eq!(
            field(&rows, "woke"),
            "yes: it was blocked, it is runnable again"
        );
        // From port 0, which no domain has: an event the hypervisor raised itself.
        let tick = Event {
            dom: Some(2),
            body: Body::Notify(Notify {
                to: 2,
                port: 3,
                from_port: 0,
                woke: false,
                masked: false,
            }),
            ..notify.clone()
        };
        assert_eq!(
            sentence(&tick, &context()),
            "The hypervisor raises an event for d2 itself (its timer's tick on the port bound to VIRQ_TIMER, or the store's watch event; no domain sent it): it sets the pending bit of d2's port 3 in d2's shared-info page. d2 takes the upcall the next time it runs, in its own lane."
        );
        assert_eq!(
            field(&fields(&tick), "sent on"),
            "no port: the hypervisor raised it (VIRQ_TIMER, a store watch)"
        );
        let switch = |from, to, why, port| Event {
            seq: 10,
            tsc: 0,
            dom: None,
            body: Body::Schedule(Schedule {
                from,
                to,
                why,
                port,
            }),
        };
        assert_eq!(
            sentence(
                &switch(Some(1), Some(2), ScheduleWhy::Woken, Some(3)),
                &context()
            ),
            "The hypervisor switches its CPU from d1 to d2: an event on d2's port 3 woke d2, and a woken domain runs first (as Xen's credit scheduler boosts it). d1's trap stays open until it runs again."
        );
        assert_eq!(
            sentence(&switch(None, Some(1), ScheduleWhy::Start, None), &context()),
            "The hypervisor switches its CPU from its idle loop to d1: d1 runs for the first time."
        );
        assert!(
            sentence(
                &switch(Some(2), None, ScheduleWhy::Blocked, None),
                &context()
            )
            .contains("the CPU idles until an event wakes one")
        );
        let rows = fields(&switch(Some(2), None, ScheduleWhy::Blocked, None));
        assert_eq!(field(&rows, "event"), "seq 10, the hypervisor, TSC 0");
        assert_eq!(field(&rows, "to"), "idle (no domain)");
        assert_eq!(field(&rows, "why"), "blocked");
        let map = Event {
            seq: 11,
            tsc: 0,
            dom: Some(2),
            body: Body::GrantMap(GrantMap {
                granter: 1,
                gref: 5,
                frame: 0x230,
                host_addr: 0x4000_0000,
                readonly: true,
                handle: 0,
            }),
        };
        assert!(
            sentence(&map, &context()).starts_with(
                "The hypervisor maps grant reference 5 of d1 into d2: d1's page (frame 0x230) now also appears at d2's guest-physical 0x40000000, read-only"
            )
        );
        assert_eq!(field(&fields(&map), "access"), "read-only");
    }

    #[test]
    fn ioio_msr_and_exitintinfo() {
        let mut exit = page_fault(0);
        exit.exitcode = exitcode::IOIO;
        exit.exitinfo1 = 0x03f8_0210;
        exit.regs.rax = 0x41;
        assert_eq!(exit_specifics(&exit), "OUT of 0x41 to port 0x3f8");
        assert_eq!(
            repeated_access(&exit).as_deref(),
            Some("OUT to the console UART")
        );
        exit.exitinfo1 = 0x0060_0011;
        assert_eq!(repeated_access(&exit).as_deref(), Some("IN from port 0x60"));
        exit.exitcode = exitcode::MSR;
        exit.exitinfo1 = 1;
        exit.regs.rcx = 0xc000_0080;
        assert_eq!(exit_specifics(&exit), "WRMSR of MSR 0xc0000080 (EFER)");
        assert_eq!(
            event_info(0x0000_0002_8000_0b0e),
            "0x280000b0e: vector 14: #PF (page fault), type Exception, error code 0x2"
        );
        assert_eq!(
            event_info(0x8000_0020),
            "0x80000020: vector 32: interrupt 0x20, type Interrupt"
        );
        exit.exitcode = 0x13;
        assert_eq!(exit_specifics(&exit), "CR3: the page-table base (written)");
        exit.exitcode = 0x27;
        assert_eq!(
            exit_specifics(&exit),
            "DR7: debug control (which breakpoints are on) (read)"
        );
    }

    fn body_event(body: Body) -> Event {
        Event {
            seq: 1,
            tsc: 0,
            dom: Some(1),
            body,
        }
    }

    fn emulated(what: &'static str, changes: &[(&'static str, u64, u64)]) -> Event {
        use traplab_abi::event::{Change, Emulate};
        body_event(Body::Emulate(Emulate {
            what: what.into(),
            arguments: Default::default(),
            changes: changes
                .iter()
                .map(|&(name, old, new)| Change {
                    name: name.into(),
                    old,
                    new,
                })
                .collect(),
        }))
    }

    /// The sentence of an `emulate` decision followed by `after`.
    fn emulate_decision(why: &'static str, after: &[Event]) -> String {
        use traplab_abi::event::Decide;
        let decide = body_event(Body::Decide(Decide {
            action: Action::Emulate,
            why: why.into(),
            at: "hv/src/exit/intr.rs:44".into(),
        }));
        let context = Context {
            outcome: Some(Outcome::after(after)),
            ..context()
        };
        sentence(&decide, &context)
    }

    #[test]
    fn an_emulation_is_described_by_what_it_did_not_by_the_action_s_name() {
        // INTR: the tick is the hypervisor's; the guest changes nowhere, skips nothing.
        let intr = emulate_decision(
            "a physical interrupt arrived",
            &[emulated("timer tick 1 acknowledged", &[])],
        );
        assert_eq!(
            intr,
            "The hypervisor decides to emulate it: it handles the exit itself and changes nothing in the guest, which goes on where it was: no instruction is skipped. Its reason: a physical interrupt arrived."
        );
        // The exit hypercall: the domain ends, nothing resumes.
        let exit = emulate_decision(
            "hypercall exit(0): the domain asks to end",
            &[
                emulated("exit(0)", &[]),
                body_event(Body::Domain(traplab_abi::event::DomainChange {
                    state: DomainState::Exited,
                    name: "page-fault".into(),
                    status: Some(0),
                    reason: Some("exit hypercall".into()),
                })),
            ],
        );
        assert!(
            exit.contains("the domain ends: there is no instruction to skip and nothing to resume"),
            "{exit}"
        );
        // An OUT: done, and RIP moves past it.
        let out = emulate_decision(
            "OUT to port 0x3f8",
            &[emulated("OUT 'w'", &[("rip", 0x200bf4, 0x200bf5)])],
        );
        assert!(out.contains("it does the operation for the guest, then moves RIP past the instruction (0x200bf4 → 0x200bf5)"), "{out}");
        // CPUID: the registers it set are named.
        let cpuid = emulate_decision(
            "CPUID",
            &[emulated(
                "CPUID leaf 0x1",
                &[("rax", 1, 0x60fb1), ("rip", 0x10, 0x12), ("v_intr", 0, 1)],
            )],
        );
        assert!(
            cpuid.contains("the guest (rax change), then moves RIP past"),
            "{cpuid}"
        );
        // A page mapped in: the instruction runs again.
        let retried = emulate_decision(
            "a lazy page",
            &[emulated("map", &[("page table entry", 0, 0x1007)])],
        );
        assert!(
            retried.contains("resumes it at the same instruction, which runs again"),
            "{retried}"
        );
        // IRET: the CPU executes it.
        let iret = emulate_decision(
            "the handler returns",
            &[body_event(Body::Return(traplab_abi::event::Return {
                via: ReturnPath::Iret,
                vector: Some(14),
                name: Some("#PF".into()),
                rip: 0x2000b6,
                cs: 8,
                rflags: 6,
                rsp: 0x21fe60,
            }))],
        );
        assert!(
            iret.contains("lets the CPU execute the IRET itself"),
            "{iret}"
        );
        // Not known yet (a live run stopped at the decision): what emulating means, no more.
        let decide = body_event(Body::Decide(traplab_abi::event::Decide {
            action: Action::Emulate,
            why: "why".into(),
            at: "here".into(),
        }));
        let unknown = sentence(&decide, &context());
        assert!(
            unknown.contains("the next steps show what it changes"),
            "{unknown}"
        );
        for text in [&intr, &exit, &out, &cpuid, &retried, &iret, &unknown] {
            assert!(!text.contains("skip the instruction"), "{text}");
        }
    }

    #[test]
    fn only_the_decision_s_own_emulation_counts() {
        // A pending interrupt's window, asked for after the delivery, is not the decision's.
        let outcome = Outcome::after(&[
            body_event(Body::Inject(traplab_abi::event::Inject {
                vector: 14,
                name: "#PF".into(),
                kind: svm::EventType::Exception,
                error_code: Some(2),
                cr2: Some(0x4000_0000),
                handler: Some(0x200240),
                synthetic: false,
            })),
            emulated("interrupt 0x20 is pending", &[("v_intr", 0, 0x100)]),
        ]);
        assert_eq!(
            outcome,
            Outcome {
                delivered: Some("#PF".into()),
                ..Outcome::default()
            }
        );
    }
}
