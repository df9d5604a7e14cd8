//! The guest's virtual interrupts: its timer, and the interrupt waiting for the guest to
//! take it.
//!
//! A guest asks for a periodic timer with the `set_timer` hypercall. The hypervisor notices
//! that it is due when it has control: at each tick of its own timer (an INTR exit,
//! `exit/intr.rs`) or while the guest halts (`exit/hlt.rs`). The interrupt then becomes
//! *pending*, and before every VMRUN the hypervisor tries to deliver it ([`assist`], applied
//! by `apply.rs`), as Xen's `hvm_intr_assist` and KVM's `inject_pending_event` do:
//!
//! - the guest can take it (interrupts on, no interrupt shadow after STI or MOV SS, no
//!   other event being injected): EVENTINJ with type INTR, and VMRUN delivers it through
//!   the guest's IDT (AMD APM vol. 2, 15.20);
//! - it cannot: the hypervisor sets V_IRQ in the VMCB and intercepts VINTR. The CPU itself
//!   then watches for the moment the guest opens its interrupt window and exits with code
//!   0x64 (15.21.4 "Injecting Virtual (INTR) Interrupts"), and `exit/vintr.rs` turns the
//!   request into an injection. Nothing is polled, nothing is lost.

use super::Domain;
use crate::vmcb::{INTERRUPT_SHADOW, v_intr};

/// A periodic timer the guest asked for with `set_timer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtualTimer {
    pub vector: u8,
    /// The period and the next deadline, in TSC ticks.
    pub period_tsc: u64,
    pub due_tsc: u64,
}

/// The guest's timer and its pending interrupt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VirtualInterrupts {
    pub timer: Option<VirtualTimer>,
    /// An interrupt vector waiting for the guest to take it.
    pub pending: Option<u8>,
}

/// What [`VirtualInterrupts::poll`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerPoll {
    /// The deadline is still ahead (or there is no timer).
    NotDue,
    /// Due: the interrupt with this vector is now pending.
    Pending(u8),
    /// Due, but its interrupt is still pending from the last period: the two merge into one,
    /// as in a PIC's interrupt request register.
    Merged(u8),
}

impl VirtualInterrupts {
    /// Is the guest's timer due at TSC `now`? The answer, and the state after it: the
    /// interrupt pending and the next deadline one period after `now` (deadlines missed
    /// while nobody looked are not made up for).
    pub fn poll(&self, now: u64) -> (TimerPoll, VirtualInterrupts) {
        let Some(timer) = self.timer else {
            return (TimerPoll::NotDue, *self);
        };
        if now < timer.due_tsc {
            return (TimerPoll::NotDue, *self);
        }
        let next = VirtualInterrupts {
            timer: Some(VirtualTimer {
                due_tsc: now + timer.period_tsc,
                ..timer
            }),
            pending: Some(timer.vector),
        };
        match self.pending {
            Some(_) => (TimerPoll::Merged(timer.vector), next),
            None => (TimerPoll::Pending(timer.vector), next),
        }
    }
}

/// What happens to the pending interrupt before the next VMRUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assist {
    /// Nothing is pending, or the CPU has already been asked to exit when the guest can
    /// take it (or a PV kernel's emulated STI will deliver it).
    Nothing,
    /// Inject it now.
    Inject(u8),
    /// The guest cannot take it now, for this reason: set V_IRQ and intercept VINTR.
    RequestWindow { vector: u8, why: &'static str },
}

/// Can the pending interrupt be delivered before this VMRUN? (The run loop asks after every
/// exit's decision is applied.)
pub fn assist(domain: &Domain) -> Assist {
    let Some(vector) = domain.vcpu.interrupts.pending else {
        return Assist::Nothing;
    };
    let vmcb = &domain.vcpu.vmcb;
    let shadowed = vmcb.control.interrupt_shadow & INTERRUPT_SHADOW != 0;
    let injecting = vmcb.injecting();
    if domain.interrupts_enabled() && !shadowed && !injecting {
        return Assist::Inject(vector);
    }
    if domain.pv.enabled {
        // A PV kernel's CLI/STI are emulated: its emulated STI is an exit, and the pending
        // interrupt is delivered after it.
        return Assist::Nothing;
    }
    if vmcb.control.virtual_interrupt & v_intr::IRQ != 0 {
        return Assist::Nothing; // already waiting for the window
    }
    let why = match (injecting, shadowed) {
        (true, _) => "another event is being delivered first",
        (false, true) => "the guest is in an interrupt shadow",
        (false, false) => "the guest has interrupts off (RFLAGS.IF = 0)",
    };
    Assist::RequestWindow { vector, why }
}

/// The `virtual_interrupt` field that asks the CPU for a VINTR exit with `vector`, or
/// withdraws the request (`None`). V_IGN_TPR with priority 15: the guest's TPR cannot hold
/// it back; only IF and the shadow can. V_INTR_MASKING stays as it is.
pub fn window_request(current: u64, vector: Option<u8>) -> u64 {
    match vector {
        Some(vector) => {
            (current & !(0xff << v_intr::VECTOR_SHIFT) & !(0xf << v_intr::PRIORITY_SHIFT))
                | v_intr::IRQ
                | v_intr::IGNORE_TPR
                | (0xf << v_intr::PRIORITY_SHIFT)
                | ((vector as u64) << v_intr::VECTOR_SHIFT)
        }
        None => current & !v_intr::IRQ,
    }
}
