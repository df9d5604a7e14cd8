//! The guest's virtual interrupts: its timer, and delivering an interrupt when the guest
//! can take it.
//!
//! A guest asks for a periodic timer with the `set_timer` hypercall. The hypervisor notices
//! that it is due when it has control: at each tick of its own timer (an INTR exit,
//! `exit/intr.rs`) or while the guest halts (`exit/hlt.rs`). The interrupt then becomes
//! *pending*, and after every exit the hypervisor tries to deliver it ([`Domain::deliver_pending_interrupt`]):
//!
//! - the guest can take it (RFLAGS.IF = 1, no interrupt shadow after STI or MOV SS, no
//!   other event being injected): EVENTINJ with type INTR, and VMRUN delivers it through
//!   the guest's IDT (AMD APM vol. 2, 15.20);
//! - it cannot: the hypervisor sets V_IRQ in the VMCB and intercepts VINTR. The CPU itself
//!   then watches for the moment the guest opens its interrupt window and exits with code
//!   0x64 (15.21.4 "Injecting Virtual (INTR) Interrupts"), and `exit/vintr.rs`
//!   turns the request into an injection. Nothing is polled, nothing is lost.

use super::Domain;
use crate::svm::vmcb::misc1;
use crate::time::{rdtsc, tsc_ticks};
use alloc::format;
use traplab_abi::svm::{Event, EventType};

const RFLAGS_IF: u64 = 1 << 9;

/// VMCB +0x060 `virtual_interrupt` fields (APM vol. 2, appendix B, "VMCB Layout, Control Area").
const V_IRQ: u64 = 1 << 8;
const V_INTR_PRIO_SHIFT: u64 = 16;
const V_IGN_TPR: u64 = 1 << 20;
const V_INTR_VECTOR_SHIFT: u64 = 32;
/// VMCB +0x068 bit 0: the guest is in an interrupt shadow (after STI or MOV SS).
const INTERRUPT_SHADOW: u64 = 1;
/// EVENTINJ bit 31: an event is already to be injected at the next VMRUN.
const EVENTINJ_VALID: u64 = 1 << 31;

/// What [`Domain::poll_timer`] found.
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

/// A periodic timer the guest asked for with `set_timer`.
#[derive(Debug, Clone, Copy)]
pub struct VirtualTimer {
    pub vector: u8,
    /// The period and the next deadline, in TSC ticks.
    pub period_tsc: u64,
    pub due_tsc: u64,
}

impl Domain {
    /// Arm (or, with `period_us` = 0, stop) the guest's periodic timer. The hypervisor's own
    /// timer must run for it to notice the deadlines: it is started if it is off.
    pub fn set_timer(&mut self, vector: u8, period_us: u64) {
        if period_us == 0 {
            self.timer = None;
            return;
        }
        let hz = crate::timer::ensure_running();
        let period_tsc = tsc_ticks(period_us);
        self.timer = Some(VirtualTimer {
            vector,
            period_tsc,
            due_tsc: rdtsc() + period_tsc,
        });
        self.emulated(format!(
            "timer armed: interrupt {vector:#x} every {period_us} µs, noticed at the hypervisor's {hz} Hz ticks"
        ));
    }

    /// Has the guest's timer expired? Then its interrupt becomes pending and the next
    /// deadline is one period later.
    pub fn poll_timer(&mut self) -> TimerPoll {
        let now = rdtsc();
        let Some(timer) = self.timer.as_mut() else {
            return TimerPoll::NotDue;
        };
        if now < timer.due_tsc {
            return TimerPoll::NotDue;
        }
        // Deadlines missed while nobody looked are not made up for: one interrupt, then
        // the next period.
        timer.due_tsc = now + timer.period_tsc;
        let vector = timer.vector;
        if self.pending_interrupt.is_some() {
            return TimerPoll::Merged(vector);
        }
        self.pending_interrupt = Some(vector);
        TimerPoll::Pending(vector)
    }

    /// HLT with interrupts on: wait, on the physical CPU, until an interrupt is pending for
    /// the guest. Returns the hypervisor timer ticks it waited, or `None` when nothing could
    /// ever wake the guest (no timer, nothing pending).
    pub fn wait_for_interrupt(&mut self) -> Option<u64> {
        if self.pending_interrupt.is_some() {
            return Some(0);
        }
        self.timer?;
        let start = crate::timer::ticks();
        while self.poll_timer() == TimerPoll::NotDue {
            // The hypervisor halts too: STI;HLT sleeps until its own timer's next tick
            // (taken by our IDT, `timer::tick`), then CLI and look at the deadline again.
            // GIF is set between world switches, so the tick can come in.
            x86_64::instructions::interrupts::enable_and_hlt();
            x86_64::instructions::interrupts::disable();
        }
        Some(crate::timer::ticks() - start)
    }

    /// Can the guest take an external interrupt now? In PV mode its kernel's interrupt
    /// flag is the virtual one CLI/STI change (`exit/privileged.rs`), not RFLAGS.IF.
    pub fn interrupts_enabled(&self) -> bool {
        match self.pv_mode {
            true => self.virtual_interrupt_flag,
            false => self.vmcb.save.rflags & RFLAGS_IF != 0,
        }
    }

    /// After an exit: deliver the pending interrupt if the guest can take it, or ask the CPU
    /// to exit (VINTR) as soon as it can.
    pub fn deliver_pending_interrupt(&mut self) {
        let Some(vector) = self.pending_interrupt else {
            return;
        };
        let control = &self.vmcb.control;
        let shadowed = control.interrupt_shadow & INTERRUPT_SHADOW != 0;
        let injecting = control.eventinj & EVENTINJ_VALID != 0;
        if self.interrupts_enabled() && !shadowed && !injecting {
            if self.vmcb.control.virtual_interrupt & V_IRQ != 0 {
                // Asked for a VINTR exit earlier, but another exit (HLT) came first.
                self.interrupt_window_open();
            }
            self.pending_interrupt = None;
            self.inject(
                Event {
                    vector,
                    kind: EventType::Interrupt,
                    error_code: None,
                },
                false,
            );
            return;
        }
        if self.pv_mode {
            // A PV kernel's CLI/STI are emulated: the STI emulation delivers it.
            return;
        }
        if self.vmcb.control.virtual_interrupt & V_IRQ != 0 {
            return; // already waiting for the window
        }
        let old = self.vmcb.control.virtual_interrupt;
        // V_IGN_TPR with priority 15: the guest's TPR cannot hold it back; only IF and the
        // shadow can. V_INTR_MASKING (bit 24) stays as it is.
        let new = (old & !(0xff << V_INTR_VECTOR_SHIFT) & !(0xf << V_INTR_PRIO_SHIFT))
            | V_IRQ
            | V_IGN_TPR
            | (0xf << V_INTR_PRIO_SHIFT)
            | ((vector as u64) << V_INTR_VECTOR_SHIFT);
        self.record("v_intr", old, new);
        self.vmcb.control.virtual_interrupt = new;
        self.vmcb.control.intercept_misc1 |= misc1::VINTR;
        let why = match (injecting, shadowed) {
            (true, _) => "another event is being delivered first",
            (false, true) => "the guest is in an interrupt shadow",
            (false, false) => "the guest has interrupts off (RFLAGS.IF = 0)",
        };
        self.emulated(format!(
            "interrupt {vector:#x} is pending but {why}: V_IRQ set and VINTR intercepted, so the CPU exits when the guest can take it"
        ));
    }

    /// The guest opened its interrupt window (VINTR exit): withdraw the V_IRQ request; the
    /// pending interrupt is injected by [`Domain::deliver_pending_interrupt`].
    pub fn interrupt_window_open(&mut self) {
        let old = self.vmcb.control.virtual_interrupt;
        let new = old & !V_IRQ;
        self.record("v_intr", old, new);
        self.vmcb.control.virtual_interrupt = new;
        self.vmcb.control.intercept_misc1 &= !misc1::VINTR;
    }
}
