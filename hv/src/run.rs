//! The run loop: VMRUN, #VMEXIT, decide, apply, resume — and the order domains run in.
//!
//! ```text
//!   ┌──────────────► world_switch (VMRUN) ── the guest runs ──┐
//!   │                                                          ▼
//!   │ resume event                                   #VMEXIT: Exit::read, exit event
//!   │ (apply::before_resume: the pending                       │
//!   │  interrupt, an interrupted delivery)          exit::handle: the decision (pure)
//!   │                                                          │
//!   └──────────── no end ◄──── apply: the effects, the events, in one fixed order
//!                                                              │
//!                                        the domain ends ──► domain event, next domain
//! ```
//!
//! Every event goes through [`record`], which is also where the host's controller may stop
//! the hypervisor (`control.rs`) and where gdb's `monitor traps` learns of decisions. gdb's
//! own hooks are called here, at the same three places every time: before VMRUN, right
//! after the exit is recorded (before anything is decided), and after the decision.

use crate::gdb::{self, Debugger};
use crate::hardware::Hardware;
use crate::loader;
use crate::svm::Host;
use crate::svm::world_switch::world_switch;
use crate::time::rdtsc;
use crate::{control, trace};
use alloc::borrow::Cow;
use alloc::boxed::Box;
use alloc::vec::Vec;
use traplab_abi::event::{self, Body, DomainState, Resume};
use traplab_hv::apply::{self, Applied};
use traplab_hv::{Domain, DomainEnd, Exit, Guest};

/// A domain the loop runs: on its own, or with gdb attached (gdbstub's target owns what it
/// debugs, so the debugger holds the domain while a session may come).
pub enum Running {
    Alone(Box<Domain>),
    Debugged(Box<Debugger>),
}

impl Running {
    pub fn domain(&mut self) -> &mut Domain {
        match self {
            Running::Alone(domain) => domain,
            Running::Debugged(debugger) => debugger.domain(),
        }
    }

    fn debugger(&mut self) -> Option<&mut Debugger> {
        match self {
            Running::Alone(_) => None,
            Running::Debugged(debugger) => Some(debugger),
        }
    }
}

/// Record one event (`dom`: the domain it is about, `None` for the hypervisor), then let
/// the host stop us there if it wants to. A guest's console line goes to the hypervisor's
/// log when no host reads the trace.
pub fn record(dom: Option<u16>, body: Body) {
    if let Body::Console(console) = &body
        && !trace::has_reader()
    {
        crate::console::write_fmt(format_args!("dom{}| {}\n", dom.unwrap_or(0), console.text));
    }
    if let Body::Decide(decide) = &body {
        // gdb's `monitor traps` remembers decisions too (a no-op without gdb).
        gdb::note_decision(decide.action, &decide.why, &decide.at);
    }
    if let Some(event) = trace::emit(dom, body) {
        control::checkpoint(&event);
    }
}

/// Run `running`'s domain until it ends.
fn run(running: &mut Running, host: &Host, machine: &mut Hardware) -> DomainEnd {
    let domain = running.domain();
    let id = domain.id;
    record(
        Some(id),
        Body::Domain(event::DomainChange {
            state: DomainState::Created,
            name: Cow::Owned(domain.name.clone()),
            status: None,
            reason: Some(loader::describe(domain)),
        }),
    );
    // DR0–DR3 are not in the VMCB: the CPU's are the running guest's (exit/dr.rs).
    for (slot, &address) in domain.vcpu.debug_registers.iter().enumerate() {
        traplab_hv::Machine::load_breakpoint_address(machine, slot as u8, address);
    }
    let mut events = Vec::new();
    loop {
        // gdb may hold the guest stopped here (`gdb/mod.rs`).
        if let Some(debugger) = running.debugger()
            && let Some(end) = gdb::before_entry(debugger)
        {
            return finish(running, end);
        }
        let domain = running.domain();
        // SAFETY: the VMCB was set up by `loader::create` and is changed only by the apply
        // step and gdb, through fields VMRUN checks; `host.save_area` was filled by VMSAVE
        // in `svm::enable`.
        unsafe {
            world_switch(
                &mut *domain.vcpu.context,
                domain.vcpu.vmcb_address(),
                host.save_area,
            )
        };
        domain.vcpu.after_vmrun();
        let exit = Exit::read(domain, rdtsc());
        if trace::enabled() {
            record(Some(id), Body::Exit(exit_event(domain, &exit)));
        }

        // An exit of gdb's own (its breakpoint, its single step) is not the guest's.
        let gdb_decision = running
            .debugger()
            .and_then(|debugger| gdb::at_exit(debugger, &exit));
        let domain = running.domain();
        let decision = gdb_decision.unwrap_or_else(|| {
            traplab_hv::exit::handle(
                &exit,
                &Guest {
                    domain,
                    machine: &Hardware,
                },
            )
        });
        let mut applied = apply::apply(domain, decision, machine, &mut events);
        if applied.end.is_none() {
            apply::before_resume(domain, &exit, &mut applied, &mut events);
        }
        for body in events.drain(..) {
            record(Some(id), body);
        }
        if let Some(end) = applied.end {
            return finish(running, end);
        }
        if trace::enabled() {
            record(
                Some(id),
                Body::Resume(resume_event(domain, &exit, &applied)),
            );
        }
        if let Some(debugger) = running.debugger()
            && let Some(end) = gdb::after_handling(debugger)
        {
            return finish(running, end);
        }
    }
}

fn exit_event(domain: &Domain, exit: &Exit) -> event::Exit {
    let (control, save) = (&domain.vcpu.vmcb.control, &domain.vcpu.vmcb.save);
    event::Exit {
        exitcode: control.exitcode,
        reason: Cow::Borrowed(exit.reason.name()),
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
        regs: domain.vcpu.registers(),
        insn: exit.instruction,
    }
}

fn resume_event(domain: &Domain, exit: &Exit, applied: &Applied) -> Resume {
    let save = &domain.vcpu.vmcb.save;
    Resume {
        // Where guest code continues: the handler of an injected event, the target of an
        // IRET, or RIP.
        rip: applied.resume_at.unwrap_or(save.rip),
        rflags: save.rflags,
        regs: domain.vcpu.registers(),
        cycles: rdtsc() - exit.tsc,
    }
}

/// The domain is over: tell gdb, flush its console, say how it ended.
fn finish(running: &mut Running, end: DomainEnd) -> DomainEnd {
    if let Some(debugger) = running.debugger() {
        gdb::domain_ended(debugger, &end);
    }
    let domain = running.domain();
    if let Some(line) = domain.devices.console.flush() {
        record(
            Some(domain.id),
            Body::Console(event::Console {
                text: Cow::Owned(line),
            }),
        );
    }
    let (state, status, reason) = match &end {
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
    record(
        Some(domain.id),
        Body::Domain(event::DomainChange {
            state,
            name: Cow::Owned(domain.name.clone()),
            status,
            reason: Some(Cow::Owned(reason)),
        }),
    );
    end
}

/// Run every domain, one after the other, each to its end.
pub fn run_all(domains: Vec<Domain>, host: &Host) {
    let mut machine = Hardware;
    for domain in domains {
        let mut running = match gdb::attach(Box::new(domain)) {
            Ok(debugger) => Running::Debugged(debugger),
            Err(domain) => Running::Alone(domain),
        };
        run(&mut running, host, &mut machine);
    }
}
