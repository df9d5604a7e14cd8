//! An event as one readable line, for `traplab trace` and for messages.
//!
//! ```text
//!      5 d1   exit     EXCP_PF at 0x200163: #PF (page fault), error code 0x2 (W/R), address 0x40000000
//!      6 d1   decide   reflect: the guest owns its exceptions: … [hv/src/exit/exception.rs:62]
//!     41 d1   notify   d2 port 3 pending, from port 1 (woke it)
//!     42 hv   schedule d1 → d2 (woken by port 3)
//! ```
//!
//! Domains are named as Xen names them ([`domain_label`]): `d0` is the control domain
//! (dom0), `d1`, `d2`, … the others; `hv` is the hypervisor itself.

use std::borrow::Cow;
use std::fmt::Write;
use traplab_abi::event::{
    Body, Console, DomainState, Event, Exit, Schedule, ScheduleWhy, domain_label,
};
use traplab_abi::exit::ExitReason;
use traplab_abi::svm;
use traplab_abi::x86::{self, PageFaultCode};

/// Who an event is about: `d1`, or `hv` for the hypervisor itself.
pub fn who(dom: Option<u16>) -> String {
    match dom {
        Some(dom) => domain_label(dom),
        None => "hv".into(),
    }
}

/// `seq dom kind detail`.
pub fn line(event: &Event) -> String {
    let dom = who(event.dom);
    format!(
        "{:>6} {:<4} {:<8} {}",
        event.seq,
        dom,
        event.body.kind(),
        detail(event)
    )
}

/// The part after the kind, printable ([`printable`]: what a guest printed or named may
/// hold a terminal's control characters).
pub fn detail(event: &Event) -> String {
    made_printable(unprintable_detail(event))
}

/// Text a guest chose (its console's bytes, a store path or value), made safe to show on a
/// terminal: a control character is shown as its Unicode picture (ESC as `␛`, BEL as `␇`),
/// DEL as `␡`, a C1 control as `�`, a tab as a space. Printed raw, busybox's `ESC[6n` asks
/// the terminal for the cursor's place, and the answer arrives as keys; other sequences
/// move the cursor, change colours or clear the screen under the terminal UI.
pub fn printable(text: &str) -> Cow<'_, str> {
    let shown = |character: char| match character {
        '\t' => ' ',
        '\u{0}'..='\u{1f}' => char::from_u32(0x2400 + character as u32).unwrap_or('\u{fffd}'),
        '\u{7f}' => '\u{2421}',
        '\u{80}'..='\u{9f}' => '\u{fffd}',
        other => other,
    };
    match text.chars().any(|character| shown(character) != character) {
        false => Cow::Borrowed(text),
        true => Cow::Owned(text.chars().map(shown).collect()),
    }
}

/// [`printable`], for a string of one's own: kept as it is when nothing needs showing.
pub fn made_printable(text: String) -> String {
    match printable(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(shown) => shown,
    }
}

/// [`detail`] before it is made printable.
fn unprintable_detail(event: &Event) -> String {
    match &event.body {
        Body::Boot(boot) => format!(
            "{} on {} (SVM revision {}, nested paging {}, NRIP save {}), TSC {:.2} GHz, {} MiB",
            boot.hv,
            boot.cpu,
            boot.svm_revision,
            yes_no(boot.nested_paging),
            yes_no(boot.nrip_save),
            boot.tsc_hz as f64 / 1e9,
            boot.ram_mib
        ),
        Body::Domain(domain) => {
            let state = match domain.state {
                DomainState::Created => "created",
                DomainState::Exited => "exited",
                DomainState::Killed => "KILLED",
            };
            let mut text = format!("{} {state}", domain.name);
            if let Some(status) = domain.status {
                let _ = write!(text, " with status {status}");
            }
            if let Some(reason) = &domain.reason {
                let _ = write!(text, ": {reason}");
            }
            text
        }
        Body::Exit(exit) => exit_detail(exit),
        Body::Decide(decide) => format!("{}: {} [{}]", decide.action.name(), decide.why, decide.at),
        Body::Emulate(emulate) => {
            let mut text = emulate.what.to_string();
            for change in &emulate.changes {
                let _ = write!(
                    text,
                    "; {} {:#x} -> {:#x}",
                    change.name, change.old, change.new
                );
            }
            text
        }
        Body::Inject(inject) => {
            let mut text = format!(
                "{} (vector {}, {:?}",
                inject.name, inject.vector, inject.kind
            );
            if let Some(code) = inject.error_code {
                let _ = write!(text, ", error code {code:#x}");
            }
            if let Some(cr2) = inject.cr2 {
                let _ = write!(text, ", CR2 {cr2:#x}");
            }
            text.push(')');
            match inject.handler {
                Some(handler) => {
                    let _ = write!(text, " -> guest handler {handler:#x}");
                }
                None => text.push_str(" -> no interrupt or trap gate in the guest's IDT"),
            }
            if inject.synthetic {
                text.push_str(" [synthetic: made up by the hypervisor]");
            }
            text
        }
        Body::Bounce(bounce) => {
            let mut text = format!("{} (vector {}", bounce.name, bounce.vector);
            if let Some(code) = bounce.error_code {
                let _ = write!(text, ", error code {code:#x}");
            }
            if let Some(cr2) = bounce.cr2 {
                let _ = write!(text, ", CR2 {cr2:#x}");
            }
            let _ = write!(
                text,
                ") -> trap-table handler {:#x}, frame at {:#x}, interrupts {}",
                bounce.handler,
                bounce.frame,
                if bounce.interrupts { "on" } else { "off" }
            );
            if bounce.synthetic {
                text.push_str(" [synthetic: made up by the hypervisor]");
            }
            text
        }
        Body::Return(ret) => {
            let what = ret.name.as_deref().map_or("a handler".to_string(), |name| {
                format!("the {name} handler")
            });
            let via = match ret.via {
                traplab_abi::event::ReturnPath::Iret => "IRET",
                traplab_abi::event::ReturnPath::Hypercall => "the iret hypercall",
            };
            format!(
                "{what} returns via {via} to {:#x} (CS {:#x}, RSP {:#x})",
                ret.rip, ret.cs, ret.rsp
            )
        }
        // The cycles since the exit, which include the time other domains ran while this
        // one was switched out (`tracer/SCHEMA.md`): a line alone cannot tell the two apart.
        Body::Resume(resume) => format!(
            "guest continues at {:#x} ({} cycles since the exit)",
            resume.rip, resume.cycles
        ),
        Body::Notify(notify) => {
            let from = match notify.from_port {
                0 => "from the hypervisor".to_string(),
                from_port => format!("from port {from_port}"),
            };
            let mut text = format!(
                "{} port {} pending, {from}",
                domain_label(notify.to),
                notify.port
            );
            if notify.woke {
                text.push_str(" (woke it)");
            } else if notify.masked {
                text.push_str(" (masked: it waits)");
            }
            text
        }
        Body::GrantMap(map) => format!(
            "gref {} of {} (frame {:#x}) at {:#x} {}, handle {}",
            map.gref,
            domain_label(map.granter),
            map.frame,
            map.host_addr,
            if map.readonly { "ro" } else { "rw" },
            map.handle
        ),
        Body::GrantUnmap(unmap) => format!(
            "handle {}: gref {} of {} at {:#x}",
            unmap.handle,
            unmap.gref,
            domain_label(unmap.granter),
            unmap.host_addr
        ),
        Body::Schedule(schedule) => switch(schedule),
        Body::Console(console) if console.unfinished => {
            format!("| {}{}", console.text, Console::UNFINISHED_NOTE)
        }
        Body::Console(console) => format!("| {}", console.text),
        Body::Lost(lost) => format!("{} event(s) LOST before this one", lost.count),
        Body::End(end) => format!("hypervisor stops (status {}): {}", end.status, end.reason),
    }
}

/// A hypercall as the guest made it: `console_write (0)`, and for the calls that take a
/// command in RDI (Xen's `*_op` hypercalls), the command too: `event_channel_op (10)
/// EVTCHNOP_send`.
pub fn hypercall(regs: &traplab_abi::event::Registers) -> String {
    use traplab_abi::{evtchn, grant_table, hypercall, sched, store};
    let number = regs.rax;
    let name = hypercall::name(number).unwrap_or("unknown");
    // The command is 32 bits wide, as Xen's (`int cmd`, `unsigned int cmd`): the hypervisor
    // reads it so.
    let command_word = regs.rdi as u32 as u64;
    let command = match number {
        hypercall::SCHED_OP => sched::cmd::name(command_word),
        hypercall::EVENT_CHANNEL_OP => evtchn::cmd::name(command_word),
        hypercall::GRANT_TABLE_OP => grant_table::cmd::name(command_word),
        hypercall::STORE_OP => store::cmd::name(regs.rdi),
        _ => None,
    };
    match command {
        Some(command) => format!("{name} ({number}) {command}"),
        None => format!("{name} ({number})"),
    }
}

/// `d1 → d2 (woken by port 3)`, `d1 → idle (blocked)`, `idle → d1 (start)`.
pub fn switch(schedule: &Schedule) -> String {
    let side = |dom: Option<u16>| dom.map_or("idle".to_string(), domain_label);
    let why = match (schedule.why, schedule.port) {
        (ScheduleWhy::Woken, Some(port)) => format!("woken by port {port}"),
        (why, _) => why.name().to_string(),
    };
    format!("{} → {} ({why})", side(schedule.from), side(schedule.to))
}

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

/// [`exit_detail`] of an exit event; for any other event its [`detail`].
pub fn exit_detail_of(event: &Event) -> String {
    match &event.body {
        Body::Exit(exit) => exit_detail(exit),
        _ => detail(event),
    }
}

/// The exit reason with the EXITINFO fields decoded ([`ExitReason`] reads them).
pub fn exit_detail(exit: &Exit) -> String {
    let mut text = format!("{} at {:#x}", exit.reason, exit.rip);
    match exit.exit_reason() {
        ExitReason::Exception {
            vector,
            error_code,
            address,
        } => {
            let _ = write!(text, ": {}", x86::Vector(vector));
            if x86::exception(vector).has_error_code {
                let _ = write!(text, ", error code {error_code:#x}");
            }
            // #PF: the error code bit by bit, and the address (EXITINFO2; CR2 is not written).
            if vector == 14 {
                let flags: Vec<_> = PageFaultCode(error_code).flag_names().collect();
                let _ = write!(
                    text,
                    " ({}), address {address:#x}",
                    if flags.is_empty() {
                        "-".into()
                    } else {
                        flags.join("|")
                    }
                );
            }
        }
        ExitReason::Ioio { info: io, .. } => {
            let _ = write!(
                text,
                ": {}{}{} port {:#x}, {} byte(s)",
                if io.rep { "REP " } else { "" },
                if io.input { "IN" } else { "OUT" },
                if io.string { "S" } else { "" },
                io.port,
                io.size
            );
            if !io.input && !io.string {
                let _ = write!(
                    text,
                    ", value {:#x}",
                    exit.regs.rax & x86::operand_mask(io.size)
                );
            }
        }
        ExitReason::Npf { gpa, info: npf } => {
            let _ = write!(
                text,
                ": {} guest-physical {gpa:#x}{}",
                if npf.fetch {
                    "fetch at"
                } else if npf.write {
                    "write to"
                } else {
                    "read of"
                },
                if npf.guest_page_walk {
                    " (walking the guest's page tables)"
                } else {
                    ""
                }
            );
        }
        ExitReason::Cpuid => {
            let _ = write!(
                text,
                ": leaf {:#x}, subleaf {:#x}",
                exit.regs.rax as u32, exit.regs.rcx as u32
            );
        }
        ExitReason::Msr { write } => {
            let _ = write!(
                text,
                ": {} MSR {:#x}",
                if write { "WRMSR" } else { "RDMSR" },
                exit.regs.rcx as u32
            );
        }
        ExitReason::Vmmcall => {
            let _ = write!(text, ": hypercall {}", hypercall(&exit.regs));
        }
        _ => {}
    }
    if let Some(interrupted) = svm::Event::decode(exit.exitintinfo) {
        let _ = write!(
            text,
            " [while delivering vector {} ({:?})]",
            interrupted.vector, interrupted.kind
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_guest_prints_is_shown_printable_never_raw() {
        // busybox's cursor query, a tab, a bell, DEL and a C1 CSI.
        let text = "/ # \u{1b}[6n\tok\u{7}\u{7f}\u{9b}2J";
        assert_eq!(
            printable(text),
            "/ # \u{241b}[6n ok\u{2407}\u{2421}\u{fffd}2J"
        );
        assert!(matches!(
            printable("plain text, “quoted”"),
            Cow::Borrowed(_)
        ));
        let console = Event {
            seq: 1,
            tsc: 0,
            dom: Some(1),
            body: Body::Console(traplab_abi::event::Console::line(text)),
        };
        let shown = line(&console);
        assert!(
            shown.chars().all(|character| !character.is_control()),
            "{shown:?}"
        );
        assert!(shown.ends_with("| / # ␛[6n ok␇␡�2J"), "{shown}");
    }
    use traplab_abi::event::{GrantMap, GrantUnmap, Notify};

    fn event(dom: Option<u16>, body: Body) -> Event {
        Event {
            seq: 42,
            tsc: 0,
            dom,
            body,
        }
    }

    #[test]
    fn domains_are_named_as_xen_names_them() {
        let notify = event(
            Some(1),
            Body::Notify(Notify {
                to: 2,
                port: 3,
                from_port: 1,
                woke: true,
                masked: false,
            }),
        );
        assert_eq!(
            line(&notify),
            "    42 d1   notify   d2 port 3 pending, from port 1 (woke it)"
        );
        let masked = Body::Notify(Notify {
            to: 0,
            port: 7,
            from_port: 2,
            woke: false,
            masked: true,
        });
        assert_eq!(
            detail(&event(Some(2), masked)),
            "d0 port 7 pending, from port 2 (masked: it waits)"
        );
        // From port 0, which no domain has: the hypervisor's own (VIRQ_TIMER's tick).
        let tick = Body::Notify(Notify {
            to: 1,
            port: 2,
            from_port: 0,
            woke: false,
            masked: false,
        });
        assert_eq!(
            detail(&event(Some(1), tick)),
            "d1 port 2 pending, from the hypervisor"
        );
    }

    #[test]
    fn a_hypercall_names_its_command() {
        use traplab_abi::event::Registers;
        let call = |rax, rdi| {
            hypercall(&Registers {
                rax,
                rdi,
                ..Registers::default()
            })
        };
        assert_eq!(call(10, 4), "event_channel_op (10) EVTCHNOP_send");
        assert_eq!(call(9, 1), "sched_op (9) SCHEDOP_block");
        assert_eq!(call(11, 0), "grant_table_op (11) GNTTABOP_map_grant_ref");
        assert_eq!(call(14, 2), "store_op (14) store_wait");
        assert_eq!(call(1, 0), "exit (1)", "exit takes no command");
        assert_eq!(call(10, 99), "event_channel_op (10)", "an unknown command");
        assert_eq!(
            call(10, 1 << 32 | 4),
            "event_channel_op (10) EVTCHNOP_send",
            "a 32-bit command, as the hypervisor reads it"
        );
        assert_eq!(call(0x1234, 0), "unknown (4660)");
    }

    #[test]
    fn a_switch_says_from_where_to_where_and_why() {
        let schedule = |from, to, why, port| {
            line(&event(
                None,
                Body::Schedule(Schedule {
                    from,
                    to,
                    why,
                    port,
                }),
            ))
        };
        assert_eq!(
            schedule(Some(1), Some(2), ScheduleWhy::Woken, Some(3)),
            "    42 hv   schedule d1 → d2 (woken by port 3)"
        );
        assert!(
            schedule(Some(1), None, ScheduleWhy::Blocked, None).ends_with("d1 → idle (blocked)")
        );
        assert!(schedule(None, Some(1), ScheduleWhy::Start, None).ends_with("idle → d1 (start)"));
        assert!(
            schedule(Some(2), Some(1), ScheduleWhy::SliceOver, None)
                .ends_with("d2 → d1 (slice over)")
        );
    }

    #[test]
    fn grants_name_the_granter_the_reference_and_where_they_are_mapped() {
        let map = Body::GrantMap(GrantMap {
            granter: 1,
            gref: 5,
            frame: 0x230,
            host_addr: 0x4000_0000,
            readonly: false,
            handle: 0,
        });
        assert_eq!(
            detail(&event(Some(2), map)),
            "gref 5 of d1 (frame 0x230) at 0x40000000 rw, handle 0"
        );
        let unmap = Body::GrantUnmap(GrantUnmap {
            granter: 1,
            gref: 5,
            host_addr: 0x4000_0000,
            handle: 0,
        });
        assert_eq!(
            detail(&event(Some(2), unmap)),
            "handle 0: gref 5 of d1 at 0x40000000"
        );
    }
}
