//! Small, made-up traces of two domains and an event channel, written by hand to follow
//! the order of events `tracer/SCHEMA.md` promises ("Domains side by side"). Tests of the
//! flows, the export, the diff and the terminal UI use it; it is no recording of a real run
//! (those come from `traplab trace LAB --record FILE`).
//!
//! ```text
//!  seq  lane  what
//!    3  hv    schedule idle → d2 (start)
//!    4  d2    exit VMMCALL sched_op(SCHEDOP_block) … schedule d2 → d1 (blocked)      d2 waits
//!    8  d1    exit VMMCALL event_channel_op(EVTCHNOP_send): forward, notify d2 port 3
//!   12  hv    schedule d1 → d2 (woken by port 3)                                      d2 runs first
//!   13  d2    inject the upcall (interrupt 0xf3), resume in its handler, which prints and IRETs
//!   20  d2    exit hypercall: d2 ends; schedule d2 → d1 (ended); d1's send resumes
//! ```

use traplab_abi::event::{
    Action, Body, Boot, Change, Console, Decide, DomainChange, DomainState, Emulate, End, Event,
    EventType, Exit, Inject, InstructionBytes, Notify, Registers, Resume, Return, ReturnPath,
    Schedule, ScheduleWhy,
};
use traplab_abi::evtchn;
use traplab_abi::hypercall;
use traplab_abi::sched;
use traplab_abi::svm;

/// The upcall vector both domains registered with `set_callback`.
pub const UPCALL_VECTOR: u8 = 0xf3;
/// d2's port that d1's port 1 is bound to.
pub const RECEIVER_PORT: u32 = 3;

/// The events, `seq` 0, 1, 2, …
pub fn event_channel_ping() -> Vec<Event> {
    let mut trace = Builder::default();
    trace.push(None, Body::Boot(boot()));
    trace.push(Some(1), created("ping"));
    trace.push(Some(2), created("pong"));
    trace.push(None, schedule(None, Some(2), ScheduleWhy::Start, None));
    // d2 blocks until an event comes.
    let block = vmmcall(0x20_0400, hypercall::SCHED_OP, sched::cmd::BLOCK);
    trace.push(Some(2), Body::Exit(block.clone()));
    trace.push(
        Some(2),
        decide(
            Action::Emulate,
            "hypercall sched_op SCHEDOP_block: d2 waits until an event is pending",
            "hv/src/exit/vmmcall.rs:140",
        ),
    );
    trace.push(
        Some(2),
        emulate(
            "SCHEDOP_block: d2 blocks",
            &[("rax", 9, 0), ("rip", 0x20_0400, 0x20_0403)],
        ),
    );
    trace.push(None, schedule(Some(2), Some(1), ScheduleWhy::Blocked, None));
    // d1 sends on its port 1, bound to d2's port 3.
    trace.send_from_d1(true);
    trace.push(
        None,
        schedule(Some(1), Some(2), ScheduleWhy::Woken, Some(RECEIVER_PORT)),
    );
    // d2's blocked flow goes on: the upcall, through its IDT.
    trace.upcall_in_d2();
    // The wall time from its exit (seq 4) to here (seq 14); 100,000 of it d2 was away.
    trace.push(Some(2), resume(0x20_0900, 200_000));
    trace.push(
        Some(2),
        Body::Console(Console::line("pong: port 3 is pending")),
    );
    let mut iret = vmmcall(0x20_0980, 0, 0);
    iret.exitcode = 0x74;
    iret.reason = "IRET".into();
    iret.insn = InstructionBytes::new(&[0x48, 0xcf]);
    trace.push(Some(2), Body::Exit(iret));
    trace.push(
        Some(2),
        decide(
            Action::Emulate,
            "IRET: the interrupt 0xf3 handler returns",
            "hv/src/exit/iret.rs:30",
        ),
    );
    trace.push(
        Some(2),
        Body::Return(Return {
            via: ReturnPath::Iret,
            vector: Some(UPCALL_VECTOR),
            name: Some("interrupt 0xf3".into()),
            rip: 0x20_0403,
            cs: 8,
            rflags: 0x202,
            rsp: 0x21_f000,
        }),
    );
    trace.push(Some(2), resume(0x20_0403, 60_000));
    // d2 ends; d1's send goes on.
    trace.exit_hypercall(2, 0x20_0410, "pong");
    trace.push(None, schedule(Some(2), Some(1), ScheduleWhy::Ended, None));
    // From seq 8 to seq 24; 220,000 of it d1 was away (seq 12 to 23).
    trace.push(Some(1), resume(0x20_0503, 320_000));
    trace.exit_hypercall(1, 0x20_0510, "ping");
    trace.push(None, schedule(Some(1), None, ScheduleWhy::Ended, None));
    trace.end()
}

/// A domain that takes its first event before it ever trapped: d1 sends to d2, which has
/// not run yet; d2 starts (`schedule … (start)`) with the upcall — a flow without an exit.
pub fn upcall_at_start() -> Vec<Event> {
    let mut trace = Builder::default();
    trace.push(None, Body::Boot(boot()));
    trace.push(Some(1), created("ping"));
    trace.push(Some(2), created("pong"));
    trace.push(None, schedule(None, Some(1), ScheduleWhy::Start, None));
    trace.send_from_d1(false);
    // d1 yields: d2 runs for the first time, and its first step is the upcall.
    trace.push(None, schedule(Some(1), Some(2), ScheduleWhy::Yielded, None));
    trace.upcall_in_d2();
    trace.push(Some(2), resume(0x20_0900, 40_000));
    trace.exit_hypercall(2, 0x20_0910, "pong");
    trace.push(None, schedule(Some(2), Some(1), ScheduleWhy::Ended, None));
    trace.push(Some(1), resume(0x20_0503, 200_000));
    trace.exit_hypercall(1, 0x20_0510, "ping");
    trace.push(None, schedule(Some(1), None, ScheduleWhy::Ended, None));
    trace.end()
}

#[derive(Default)]
struct Builder {
    events: Vec<Event>,
}

impl Builder {
    /// The next event, 20,000 TSC ticks after the one before.
    fn push(&mut self, dom: Option<u16>, body: Body) {
        let seq = self.events.len() as u64;
        self.events.push(Event {
            seq,
            tsc: 1_000_000 + seq * 20_000,
            dom,
            body,
        });
    }

    /// d1's `EVTCHNOP_send` on its port 1 at 0x20_0500: decided forward, d2's port 3 made
    /// pending (waking d2 when `woke`), RAX 0 and RIP past the VMMCALL.
    fn send_from_d1(&mut self, woke: bool) {
        self.push(
            Some(1),
            Body::Exit(vmmcall(
                0x20_0500,
                hypercall::EVENT_CHANNEL_OP,
                evtchn::cmd::SEND,
            )),
        );
        self.push(
            Some(1),
            decide(
                Action::Forward,
                match woke {
                    true => "EVTCHNOP_send: port 1 is connected to port 3 of d2: the hypervisor forwards the event there (it is blocked: the event may wake it); d1 goes on",
                    false => "EVTCHNOP_send: port 1 is connected to port 3 of d2: the hypervisor forwards the event there; d1 goes on",
                },
                "hv/src/exit/vmmcall/event_channel.rs:378",
            ),
        );
        self.push(
            Some(1),
            Body::Notify(Notify {
                to: 2,
                port: RECEIVER_PORT,
                from_port: 1,
                woke,
                masked: false,
            }),
        );
        self.push(
            Some(1),
            emulate(
                "EVTCHNOP_send: 0",
                &[("rax", 10, 0), ("rip", 0x20_0500, 0x20_0503)],
            ),
        );
    }

    /// d2's upcall ([`upcall`]).
    fn upcall_in_d2(&mut self) {
        self.push(Some(2), upcall());
    }

    /// Domain `dom` (its program `name`) ends with the `exit` hypercall at `rip`.
    fn exit_hypercall(&mut self, dom: u16, rip: u64, name: &'static str) {
        self.push(Some(dom), Body::Exit(vmmcall(rip, hypercall::EXIT, 0)));
        self.push(
            Some(dom),
            decide(
                Action::Emulate,
                "hypercall exit: the domain ends with status 0",
                "hv/src/exit/vmmcall.rs:60",
            ),
        );
        self.push(Some(dom), ended(name));
    }

    /// The hypervisor stops: every domain has ended. The events.
    fn end(mut self) -> Vec<Event> {
        self.push(
            None,
            Body::End(End {
                status: 0,
                reason: "every domain ended".into(),
            }),
        );
        self.events
    }
}

/// One domain (d1) traps twice: an INT3 the hypervisor reflects as #BP (a SWINT flow that
/// delivers #BP), then an OUT it emulates. The events, `seq` 0, 1, 2, … (every one about d1
/// but the boot).
pub fn breakpoint_then_out() -> Vec<Event> {
    let bodies = [
        Body::Boot(boot()),
        created("breakpoint"),
        Body::Exit(exit(svm::exitcode::SWINT, 0x20_0100, &[0xcc])),
        decide(
            Action::Reflect,
            "INT3: reflect #BP",
            "software_interrupt.rs",
        ),
        Body::Inject(Inject {
            vector: 3,
            name: "#BP".into(),
            kind: EventType::Exception,
            error_code: None,
            cr2: None,
            handler: Some(0x20_0400),
            synthetic: false,
        }),
        resume(0x20_0400, 10),
        Body::Exit(exit(0x7b, 0x20_0500, &[0xee])),
        decide(Action::Emulate, "OUT", "ioio.rs"),
        resume(0x20_0501, 10),
    ];
    bodies
        .into_iter()
        .enumerate()
        .map(|(seq, body)| Event {
            seq: seq as u64,
            tsc: 100 * seq as u64,
            dom: (seq > 0).then_some(1),
            body,
        })
        .collect()
}

/// The hypervisor's `boot` of a hand-written trace.
pub fn boot() -> Boot {
    Boot {
        hv: "traplab-hv 0.1.0".into(),
        cpu: "AuthenticAMD".into(),
        svm_revision: 1,
        nested_paging: true,
        nrip_save: false,
        decode_assists: false,
        tsc_hz: 2_000_000_000,
        ram_mib: 255,
    }
}

/// A domain running guest program `name` is created.
pub fn created(name: &'static str) -> Body {
    Body::Domain(DomainChange {
        state: DomainState::Created,
        name: name.into(),
        status: None,
        reason: Some("16384 KiB of RAM, entry 0x200000".into()),
    })
}

fn ended(name: &'static str) -> Body {
    Body::Domain(DomainChange {
        state: DomainState::Exited,
        name: name.into(),
        status: Some(0),
        reason: Some("exit hypercall".into()),
    })
}

/// The hypervisor switches from one domain (or idle) to another (or idle).
pub fn schedule(from: Option<u16>, to: Option<u16>, why: ScheduleWhy, port: Option<u32>) -> Body {
    Body::Schedule(Schedule {
        from,
        to,
        why,
        port,
    })
}

/// An exit with `exitcode` at `rip` of a lab's 64-bit guest kernel, its registers zero but
/// RSP (its stack), the instruction's bytes `insn`.
pub fn exit(exitcode: u64, rip: u64, insn: &[u8]) -> Exit {
    Exit {
        exitcode,
        reason: traplab_abi::exit::ExitReason::from_code(exitcode)
            .name()
            .into(),
        exitinfo1: 0,
        exitinfo2: 0,
        exitintinfo: 0,
        rip,
        cs: 8,
        cpl: 0,
        rflags: 0x202,
        cr0: 0x8001_0033,
        cr2: 0,
        cr3: 0x10000,
        cr4: 0x620,
        efer: 0x1d00,
        regs: Registers {
            rsp: 0x21_f000,
            ..Registers::default()
        },
        insn: InstructionBytes::new(insn),
    }
}

/// Hypercall `number` (RAX) with its first argument `command` (RDI).
pub fn vmmcall(rip: u64, number: u64, command: u64) -> Exit {
    let mut vmmcall = exit(0x81, rip, &[0x0f, 0x01, 0xd9]);
    vmmcall.regs.rax = number;
    vmmcall.regs.rdi = command;
    vmmcall
}

/// The hypervisor's decision.
pub fn decide(action: Action, why: &'static str, at: &'static str) -> Body {
    Body::Decide(Decide {
        action,
        why: why.into(),
        at: at.into(),
    })
}

/// An upcall: [`UPCALL_VECTOR`] injected through the domain's IDT, to its handler at
/// 0x20_0900.
pub fn upcall() -> Body {
    Body::Inject(Inject {
        vector: UPCALL_VECTOR,
        name: "interrupt 0xf3".into(),
        kind: EventType::Interrupt,
        error_code: None,
        cr2: None,
        handler: Some(0x20_0900),
        synthetic: false,
    })
}

/// What the hypervisor emulated, and the registers it changed (name, old, new).
pub fn emulate(what: &'static str, changes: &[(&'static str, u64, u64)]) -> Body {
    Body::Emulate(Emulate {
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
    })
}

/// The guest goes on at `rip`, `cycles` after its exit.
pub fn resume(rip: u64, cycles: u64) -> Body {
    Body::Resume(Resume {
        rip,
        rflags: 0x202,
        regs: Registers {
            rsp: 0x21_f000,
            ..Registers::default()
        },
        cycles,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::StreamCheck;
    use crate::flows::{FlowEnd, NO_FLOW};
    use crate::store::Trace;

    fn trace() -> Trace {
        let mut trace = Trace::live("ping");
        for event in event_channel_ping() {
            trace.push_event(&event);
        }
        trace
    }

    #[test]
    fn the_samples_are_complete_streams() {
        for sample in [event_channel_ping(), upcall_at_start()] {
            let mut check = StreamCheck::new();
            for event in sample {
                assert_eq!(check.observe(&event), []);
            }
            assert!(check.finish().is_empty());
        }
    }

    #[test]
    fn an_upcall_at_the_start_is_a_flow_without_an_exit() {
        let mut trace = Trace::live("start");
        for event in upcall_at_start() {
            trace.push_event(&event);
        }
        let flows = trace.flows();
        let classes: Vec<(u16, &str)> = flows.iter().map(|flow| (flow.dom, flow.class())).collect();
        assert_eq!(
            classes,
            [
                (1, "VMMCALL"),
                (2, "upcall"),
                (2, "VMMCALL"),
                (1, "VMMCALL")
            ]
        );
        assert_eq!((flows[0].woke, flows[1].woken_by), (1, 0));
        assert_eq!(flows[1].events().collect::<Vec<_>>(), [8, 9, 10]);
        assert_eq!(flows[1].rip, 0x20_0900);
    }

    #[test]
    fn the_sample_has_the_flows_its_picture_shows() {
        let trace = trace();
        let flows = trace.flows();
        let shape: Vec<(u16, &str, String, FlowEnd)> = flows
            .iter()
            .map(|flow| (flow.dom, flow.class(), flow.action_text(), flow.end))
            .collect();
        let expected = [
            (2, "VMMCALL", "emulate", FlowEnd::Resumed),
            (1, "VMMCALL", "forward", FlowEnd::Resumed),
            (2, "IRET", "emulate", FlowEnd::Resumed),
            (2, "VMMCALL", "emulate", FlowEnd::Exited),
            (1, "VMMCALL", "emulate", FlowEnd::Exited),
        ];
        assert_eq!(shape.len(), expected.len());
        for (found, wanted) in shape.iter().zip(expected) {
            assert_eq!((found.0, found.1, found.2.as_str(), found.3), wanted);
        }
        let (blocked, send) = (&flows[0], &flows[1]);
        assert_eq!((send.woke, blocked.woken_by), (0, 1));
        assert_eq!((blocked.returned_by, flows[2].returns_from), (2, 0));
        assert_eq!((flows[2].woke, flows[2].woken_by), (NO_FLOW, NO_FLOW));
        // The hypervisor's own time: the wall time less the time each domain was away.
        assert_eq!(
            (blocked.cycles(), send.cycles()),
            (Some(100_000), Some(100_000))
        );
        assert!(trace.faults().is_empty());
        assert_eq!(trace.open_flows(), Vec::<usize>::new());
    }
}
