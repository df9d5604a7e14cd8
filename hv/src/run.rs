//! The run loop: VMRUN, #VMEXIT, decide, resume — and the order domains run in.
//!
//! ```text
//!   ┌──────────────► world_switch (VMRUN) ── the guest runs ──┐
//!   │                                                          ▼
//!   │ resume event                                   #VMEXIT: exit event
//!   │ (re-deliver an interrupted event)                        │
//!   └──── Next::Resume ◄──── exit::handle: decide, emulate/inject
//!                                                              │
//!                                   Next::End ──► domain event, next domain
//! ```

use crate::domain::loader;
use crate::domain::{Domain, ExitState};
use crate::exit::{self, DomainEnd, Next};
use crate::svm::Host;
use crate::svm::world_switch::world_switch;
use crate::time::rdtsc;
use crate::trace;
use alloc::borrow::Cow;
use alloc::vec::Vec;
use traplab_abi::event::{self, Body, DomainState, Resume};
use traplab_abi::svm::{self, exitcode};

/// Run `domain` until it ends.
pub fn run(domain: &mut Domain, host: &Host) -> DomainEnd {
    trace::emit(
        Some(domain.id),
        Body::Domain(event::Domain {
            state: DomainState::Created,
            name: Cow::Owned(domain.name.clone()),
            status: None,
            reason: Some(loader::describe(domain)),
        }),
    );
    // DR0–DR3 are not in the VMCB: the CPU's are the running guest's (exit/dr.rs).
    for (number, &address) in domain.debug_registers.iter().enumerate() {
        crate::exit::load_breakpoint_address(number as u8, address);
    }
    crate::gdb::attach(domain);
    loop {
        // gdb may hold the guest stopped here (`gdb/mod.rs`).
        if let Some(end) = crate::gdb::before_entry(domain) {
            finish(domain, &end);
            return end;
        }
        // SAFETY: the VMCB was set up by `loader::create` and only changed by handlers
        // through fields VMRUN checks; `host.save_area` was filled by VMSAVE in `svm::enable`.
        unsafe { world_switch(&mut *domain.context, domain.vmcb_pa, host.save_area) };
        domain.vmcb.control.tlb_control = 0;
        if domain.iret_intercept_suspended {
            // The IRET we let through has run: watch the next one (exit/iret.rs).
            domain.vmcb.control.intercept_misc1 |= crate::svm::vmcb::misc1::IRET;
            domain.iret_intercept_suspended = false;
        }
        domain.exit = ExitState {
            tsc: rdtsc(),
            ..ExitState::default()
        };
        domain.fetch_instruction();
        if trace::enabled() {
            trace::emit(Some(domain.id), Body::Exit(exit_event(domain)));
        }
        // An exit of gdb's own (its breakpoint, its single step) is not the guest's.
        let next = match crate::gdb::at_exit(domain) {
            Some(next) => next,
            None => exit::handle(domain),
        };
        match next {
            Next::Resume => {
                redeliver_interrupted_event(domain);
                domain.deliver_pending_interrupt();
                if trace::enabled() {
                    trace::emit(Some(domain.id), Body::Resume(resume_event(domain)));
                }
                if let Some(end) = crate::gdb::after_handling(domain) {
                    finish(domain, &end);
                    return end;
                }
            }
            Next::End(end) => {
                finish(domain, &end);
                return end;
            }
        }
    }
}

/// An exit can interrupt the delivery of an event (EXITINTINFO valid: an NPF while the CPU
/// pushed an exception frame, say). Unless the handler decided what to deliver itself (the
/// exception handlers do), the event must be delivered again (AMD APM vol. 2, 15.7.2).
fn redeliver_interrupted_event(domain: &mut Domain) {
    let code = domain.vmcb.control.exitcode;
    let is_exception = (exitcode::EXCP_BASE..exitcode::EXCP_BASE + 32).contains(&code);
    if is_exception || code == exitcode::SWINT || domain.exit.injected.is_some() {
        return;
    }
    if let Some(interrupted) = svm::Event::decode(domain.vmcb.control.exitintinfo) {
        domain.inject(interrupted, false);
    }
}

fn exit_event(domain: &Domain) -> event::Exit {
    let (control, save) = (&domain.vmcb.control, &domain.vmcb.save);
    event::Exit {
        exitcode: control.exitcode,
        reason: Cow::Borrowed(traplab_abi::exit::ExitReason::from_code(control.exitcode).name()),
        exitinfo1: control.exitinfo1,
        exitinfo2: control.exitinfo2,
        exitintinfo: control.exitintinfo,
        rip: save.rip,
        cs: save.cs.selector,
        cpl: save.cpl,
        rflags: save.rflags,
        cr0: save.cr0,
        cr2: save.cr2,
        cr3: save.cr3,
        cr4: save.cr4,
        efer: save.efer,
        regs: domain.registers(),
        insn: domain.exit.instruction,
    }
}

fn resume_event(domain: &Domain) -> Resume {
    Resume {
        // Where guest code continues: the handler of an injected event, the target of an
        // IRET, or RIP.
        rip: domain
            .exit
            .injected
            .flatten()
            .or(domain.exit.resume_at)
            .unwrap_or(domain.vmcb.save.rip),
        rflags: domain.vmcb.save.rflags,
        regs: domain.registers(),
        cycles: rdtsc() - domain.exit.tsc,
    }
}

/// The domain is over: flush its console, say how it ended.
fn finish(domain: &mut Domain, end: &DomainEnd) {
    crate::gdb::domain_ended(domain, end);
    if let Some(line) = domain.console.flush() {
        domain.console_line(line);
    }
    let (state, status, reason) = match end {
        DomainEnd::Exited { status, reason } => {
            (DomainState::Exited, Some(*status), reason.clone())
        }
        DomainEnd::Killed { reason } => (DomainState::Killed, None, reason.clone()),
    };
    crate::log!(
        "domain {} ({}) {:?}: {}",
        domain.id,
        domain.name,
        state,
        reason
    );
    trace::emit(
        Some(domain.id),
        Body::Domain(event::Domain {
            state,
            name: Cow::Owned(domain.name.clone()),
            status,
            reason: Some(Cow::Owned(reason)),
        }),
    );
}

/// Run every domain, one after the other, each to its end.
pub fn run_all(domains: Vec<Domain>, host: &Host) {
    for mut domain in domains {
        run(&mut domain, host);
    }
}
