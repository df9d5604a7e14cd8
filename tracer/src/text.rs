//! An event as one readable line, for `traplab trace` and for messages.
//!
//! ```text
//!      5 dom0 exit     EXCP_PF at 0x200163: #PF (page fault), error code 0x2 (W/R), address 0x40000000
//!      6 dom0 decide   reflect: the guest owns its exceptions: … [hv/src/exit/exception.rs:62]
//! ```

use std::fmt::Write;
use traplab_abi::event::{Body, DomainState, Event, Exit};
use traplab_abi::exit::ExitReason;
use traplab_abi::svm;
use traplab_abi::x86::{self, PageFaultCode};

/// `seq dom kind detail`.
pub fn line(event: &Event) -> String {
    let dom = match event.dom {
        Some(dom) => format!("dom{dom}"),
        None => "hv".into(),
    };
    format!(
        "{:>6} {:<4} {:<8} {}",
        event.seq,
        dom,
        event.body.kind(),
        detail(event)
    )
}

/// The part after the kind.
pub fn detail(event: &Event) -> String {
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
                None => text.push_str(" -> no present gate in the guest's IDT"),
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
        Body::Resume(resume) => format!(
            "guest continues at {:#x} ({} cycles in the hypervisor)",
            resume.rip, resume.cycles
        ),
        Body::Console(console) => format!("| {}", console.text),
        Body::Lost(lost) => format!("{} event(s) LOST before this one", lost.count),
        Body::End(end) => format!("hypervisor stops (status {}): {}", end.status, end.reason),
    }
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
            let number = exit.regs.rax;
            let _ = write!(
                text,
                ": hypercall {} ({number})",
                traplab_abi::hypercall::name(number).unwrap_or("unknown")
            );
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
