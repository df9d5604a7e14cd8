//! The guest's virtual interrupts: its timers, and the interrupt waiting for the guest to
//! take it.
//!
//! Two sources make an interrupt pending: the guest's timer of `set_timer`'s, and its event
//! channels' upcall when it registered a callback vector (`evtchn.rs`,
//! [`Domain::pending_interrupt`]). The timers its devices make, PIT channel 0's, the local
//! APIC's and the RTC's, each its own ([`Timers`]), go through those devices instead
//! ([`TimerTarget`]): the local APIC's IRR, or the 8259A's for the PIT's IRQ 0 and the
//! RTC's IRQ 8, and the device presents it by priority.
//!
//! A guest asks for a periodic timer with the `set_timer` hypercall. The hypervisor notices
//! that a timer is due when it has control: at each tick of its own timer (an INTR exit,
//! `exit/intr.rs`), while the guest halts (`exit/hlt.rs`), at a device write that re-arms
//! a timer (`apply.rs`) and when it switches the domain in (`run.rs`). The interrupt then becomes
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
use super::evtchn::Pending;
use crate::device::{PlatformTimer, TimerSource};
use crate::vmcb::{INTERRUPT_SHADOW, v_intr};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use traplab_abi::evtchn::{Port, virq};

/// One of the guest's timers: the one it asked for with `set_timer`, or one of its devices'
/// (PIT channel 0, the local APIC's timer; `device/mod.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtualTimer {
    pub vector: u8,
    /// The period and the next deadline, in TSC ticks ([`ONCE`]: no period).
    pub period_tsc: u64,
    pub due_tsc: u64,
    /// Where a tick goes.
    pub target: TimerTarget,
}

impl From<PlatformTimer> for VirtualTimer {
    /// One of the guest's timers as its device makes it (`device/mod.rs`).
    fn from(timer: PlatformTimer) -> VirtualTimer {
        VirtualTimer {
            vector: timer.vector,
            // Once (the PIT's modes 0 and 4, the APIC's one-shot, the RTC's next event):
            // over after its tick.
            period_tsc: timer.countdown.period_tsc.unwrap_or(ONCE),
            due_tsc: timer.countdown.due_tsc,
            // Either way the device holds a tick from the CPU's INTA to the kernel's EOI.
            target: match timer.source {
                TimerSource::LocalApic | TimerSource::PitThroughIoApic => TimerTarget::LocalApic,
                TimerSource::Pit | TimerSource::PitMasked => TimerTarget::Irq0,
                TimerSource::Rtc => TimerTarget::Rtc,
            },
        }
    }
}

/// A [`VirtualTimer::period_tsc`] that says "once": the PIT's modes 0 and 4, the local
/// APIC's one-shot. After its tick such a timer is over (until the kernel reprograms it).
pub const ONCE: u64 = u64::MAX / 4;

/// Where a tick of one of the guest's timers goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerTarget {
    /// Its interrupt becomes pending at once (a timer the guest asked for with `set_timer`):
    /// no device between the timer and the CPU.
    Pending,
    /// It is *requested* in the local APIC (its IRR), which presents it to the CPU by
    /// priority (`device/lapic.rs`): the APIC's own timer, or the PIT's through the IO-APIC.
    LocalApic,
    /// PIT channel 0's output pulses: a rising edge on IRQ 0, which the master 8259A latches
    /// in its IRR and presents by priority, and which stays in service from the CPU's INTA
    /// to the kernel's EOI (`device/pic.rs`), as any other IRQ.
    Irq0,
    /// The RTC's next event with its enable on: its flag is set in status C, and IRQ 8
    /// follows IRQF, to the slave 8259A and the IO-APIC's pin 8 (`Devices::set_line`). A
    /// one-shot, armed again for the next event at each tick ([`Domain::timer_tick`]).
    Rtc,
}

/// The guest's timers, one per source. A PC's 8254 and its local APIC's timer count at the
/// same time, each on its own (Linux calibrates one against the other, and checks at boot
/// that the APIC's ticks while the PIT's do); a timer of `set_timer`'s is a third, Xen's
/// per-vCPU singleshot/periodic timer beside its emulated platform timers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timers {
    /// The one the guest asked for with `set_timer`: its ticks pending at once, or events on
    /// the port bound to `VIRQ_TIMER`.
    pub set_timer: Option<VirtualTimer>,
    /// PIT channel 0's: IRQ 0 through the 8259A, or pin 2 of the IO-APIC to the local APIC.
    pub pit: Option<VirtualTimer>,
    /// The local APIC's own timer (its LVT timer entry).
    pub local_apic: Option<VirtualTimer>,
    /// The RTC's: its periodic, update-ended and alarm interrupts, on IRQ 8 (`rtc.rs`).
    pub rtc: Option<VirtualTimer>,
}

impl Timers {
    /// The ones that run.
    pub fn running(&self) -> impl Iterator<Item = VirtualTimer> {
        [self.set_timer, self.pit, self.local_apic, self.rtc]
            .into_iter()
            .flatten()
    }

    /// The earliest deadline of those that run.
    pub fn earliest_due(&self) -> Option<u64> {
        self.running().map(|timer| timer.due_tsc).min()
    }

    /// The one whose deadline comes first, as the place it is kept.
    fn earliest_mut(&mut self) -> Option<&mut Option<VirtualTimer>> {
        let due = self.earliest_due()?;
        [
            &mut self.set_timer,
            &mut self.pit,
            &mut self.local_apic,
            &mut self.rtc,
        ]
        .into_iter()
        .find(|timer| timer.is_some_and(|timer| timer.due_tsc == due))
    }
}

/// The guest's timers and its pending interrupt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VirtualInterrupts {
    pub timers: Timers,
    /// An interrupt vector waiting for the guest to take it.
    pub pending: Option<u8>,
    /// gdb is single-stepping this vCPU: maskable interrupts wait until gdb lets it run, so
    /// that a step goes to the next instruction, not into a handler (`gdb/mod.rs`).
    pub held_for_step: bool,
    /// One waited at the last resume because of that, or gdb changed the task priority that
    /// held one back: once gdb lets the vCPU run, it asks for its window
    /// (`apply::end_hold_for_step`).
    pub waiting_for_gdb: bool,
}

/// What [`VirtualInterrupts::poll`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerPoll {
    /// No deadline is due yet (or there is no timer).
    NotDue,
    /// Due: the interrupt with this vector is now pending.
    Pending(u8),
    /// Due, and the timer goes through the local APIC (its own, or the PIT's through the
    /// IO-APIC): the interrupt with this vector is requested there (the state after it
    /// leaves `pending` alone).
    ToLocalApic(u8),
    /// Due, and the timer is the PIT's through the 8259A: IRQ 0's edge (the state after it
    /// leaves `pending` alone; the PIC merges a tick it still holds, in its IRR).
    ToIrq0,
    /// Due, and the timer is the RTC's: its flags are brought up to date and IRQ 8 follows
    /// (the state after it leaves `pending` alone, and the RTC's timer to be armed again).
    ToRtc,
    /// Due, but its interrupt is still pending from the last period: the two merge into one,
    /// as in a PIC's interrupt request register.
    Merged(u8),
}

impl VirtualInterrupts {
    /// Is one of the guest's timers due at TSC `now`? The first one due, and the state after
    /// its tick: the interrupt pending (a timer of `set_timer`'s) and that timer's next
    /// deadline the first one of its own after `now` (deadlines missed while nobody looked
    /// are not made up for: they merge into this tick), or after a one-shot's ([`ONCE`]) no
    /// timer there. Another timer due as well is the next call's: each ticks once a look.
    ///
    /// The deadlines stay the timer's own, `due + k × period`, however late the hypervisor
    /// looks, as an 8254 or a local APIC counting down keeps its phase (and Xen's virtual
    /// timers, `pt_process_missed_ticks`). A deadline set from `now` instead took each
    /// look's lateness into every period after it: with the hypervisor's own timer ticking
    /// a little faster than the guest's, the guest got every other tick.
    pub fn poll(&self, now: u64) -> (TimerPoll, VirtualInterrupts) {
        let mut next = *self;
        let Some(slot) = next.timers.earliest_mut() else {
            return (TimerPoll::NotDue, *self);
        };
        let Some(timer) = *slot else {
            return (TimerPoll::NotDue, *self);
        };
        if now < timer.due_tsc {
            return (TimerPoll::NotDue, *self);
        }
        // A one-shot is over after its tick.
        *slot = match timer.period_tsc {
            ONCE => None,
            period => {
                let period = period.max(1);
                let periods = (now - timer.due_tsc) / period + 1;
                Some(VirtualTimer {
                    due_tsc: timer.due_tsc.saturating_add(periods.saturating_mul(period)),
                    ..timer
                })
            }
        };
        match timer.target {
            TimerTarget::LocalApic => (TimerPoll::ToLocalApic(timer.vector), next),
            TimerTarget::Irq0 => (TimerPoll::ToIrq0, next),
            TimerTarget::Rtc => (TimerPoll::ToRtc, next),
            TimerTarget::Pending => {
                next.pending = Some(timer.vector);
                match self.pending {
                    Some(_) => (TimerPoll::Merged(timer.vector), next),
                    None => (TimerPoll::Pending(timer.vector), next),
                }
            }
        }
    }
}

/// What a tick of a domain's timer became ([`Domain::timer_tick`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tick {
    NotDue,
    /// Its interrupt is pending (a timer of `set_timer`'s).
    Interrupt,
    /// Requested at the device the timer goes through (the local APIC's IRR, IRQ 0 of the
    /// PIC); `presented`: the device presents an interrupt to the CPU now (not while IRQ 0
    /// is still in service, or the APIC's priority holds it back). What it did, in words.
    Requested {
        presented: bool,
        what: String,
    },
    /// An event on the port bound to `VIRQ_TIMER`, and what making it pending did.
    Event {
        port: Port,
        pending: Pending,
    },
}

impl Tick {
    /// What it did, in words, for the trace: `None` when nothing happened.
    pub fn words(self) -> Option<String> {
        match self {
            Tick::NotDue => None,
            Tick::Interrupt => Some("its interrupt is pending".into()),
            Tick::Requested { what, .. } => Some(what),
            Tick::Event { port, .. } => Some(format!(
                "the tick is an event on port {port} (bound to VIRQ_TIMER)"
            )),
        }
    }

    /// Can the CPU take an interrupt because of it?
    pub fn interrupts(&self) -> bool {
        matches!(
            self,
            Tick::Interrupt
                | Tick::Requested {
                    presented: true,
                    ..
                }
        )
    }
}

impl Domain {
    /// Why a tick of `timer` would not interrupt the CPU now, if it would not: the device
    /// it goes through would latch it and hold it back. Worked out on a copy of the device,
    /// ticked as the tick would tick it. A halted CPU changes nothing of what holds the tick
    /// back (no EOI, no TPR write, no unmask comes while it is halted), so a HLT that has
    /// only such a timer would wait forever on a CPU (`exit/hlt.rs`). An event bound to
    /// `VIRQ_TIMER` is not looked at here: a timer of `set_timer`'s is always taken.
    pub fn timer_held_back(&self, timer: &VirtualTimer) -> Option<&'static str> {
        match timer.target {
            TimerTarget::Pending => None,
            TimerTarget::Irq0 => {
                let mut pic = self.devices.pic;
                pic.raise_irq_0();
                match (pic.presented(), pic.timer_vector()) {
                    (Some(_), _) => None,
                    (None, None) => {
                        Some("IRQ 0 is masked at the PIC, or the PIC is not initialised")
                    }
                    (None, Some(_)) => {
                        Some("IRQ 0 is still in service at the PIC (no EOI since its last tick)")
                    }
                }
            }
            TimerTarget::Rtc => self.rtc_held_back(),
            TimerTarget::LocalApic => {
                let mut lapic = self.devices.lapic.clone();
                lapic.request(timer.vector);
                match (lapic.next_to_deliver(), lapic.software_enabled()) {
                    (Some(_), _) => None,
                    (None, false) => Some("the local APIC is disabled in software"),
                    (None, true) => Some(
                        "the local APIC's priority (its TPR, or an interrupt still in service) holds the timer's vector back",
                    ),
                }
            }
        }
    }

    /// Why a tick of the RTC's timer would not interrupt the CPU now, if it would not: IRQ 8
    /// is high already (the kernel has not read status C since it rose, so a new flag makes
    /// no edge), or neither route presents IRQ 8's own edge. The two routes: through the 8259As,
    /// IRQ 8 is the slave's IRQ 0, cascaded on the master's IRQ 2, and gets through when the
    /// pair then presents IRQ 8's vector; through the IO-APIC's pin 8, a message to the local
    /// APIC, when the pin is active high and the APIC then delivers that vector. Another interrupt the controllers
    /// present is not IRQ 8's: it interrupts the CPU by itself, and says nothing of whether
    /// IRQ 8 would (an IRQ 8 masked at the slave stays masked while the master presents
    /// IRQ 1).
    fn rtc_held_back(&self) -> Option<&'static str> {
        let devices = &self.devices;
        if devices.rtc.interrupt_line() {
            return Some(
                "IRQ 8 is high already: status C has not been read since the RTC raised it, so a new flag makes no edge",
            );
        }
        let mut pic = devices.pic;
        pic.set_irq(crate::device::rtc::IRQ, true);
        let irq_8 = pic.irq_vector(crate::device::rtc::IRQ);
        let through_pic = irq_8.is_some() && pic.presented() == irq_8;
        // On a pin programmed active low, IRQ 8's rise is the pin's release: its message
        // goes only when the line falls, at the kernel's read of status C (82093AA,
        // redirection table bit 13; `Devices::set_line`).
        let pin = crate::device::ioapic::isa_pin(crate::device::rtc::IRQ);
        let pin_8 = devices
            .ioapic_vector(pin)
            .filter(|_| !devices.ioapic.active_low(pin));
        let through_ioapic = pin_8.is_some_and(|vector| {
            let mut lapic = devices.lapic.clone();
            lapic.request(vector);
            lapic.next_to_deliver() == Some(vector)
        });
        if through_pic || through_ioapic {
            return None;
        }
        Some(match (irq_8, pin_8) {
            (None, None) => {
                "IRQ 8 is masked at the 8259As (at the slave, or at the master's IRQ 2, its cascade) or they are not initialised, and the IO-APIC's pin 8 is masked, not routed to this CPU, or active low (IRQ 8's rise is its release)"
            }
            (Some(_), None) => {
                "IRQ 8 is held back by priority at the 8259As (an IRQ above it in service, or presented first), and the IO-APIC's pin 8 is masked, not routed to this CPU, or active low (IRQ 8's rise is its release)"
            }
            (None, Some(_)) => {
                "IRQ 8 is masked at the 8259As (at the slave, or at the master's IRQ 2, its cascade) or they are not initialised, and the local APIC holds back pin 8's vector (disabled in software, its TPR or an interrupt in service above it, or a higher one delivered first)"
            }
            (Some(_), Some(_)) => {
                "IRQ 8 is held back by priority at the 8259As (an IRQ above it in service, or presented first), and the local APIC holds back pin 8's vector (disabled in software, its TPR or an interrupt in service above it, or a higher one delivered first)"
            }
        })
    }

    /// Would the RTC's timer, due by TSC `now`, interrupt the guest before its next
    /// instruction? Its tick raises IRQ 8 (a flag with its enable comes on, the line low
    /// before it), a controller presents IRQ 8's edge ([`Domain::timer_held_back`]), and the
    /// guest takes interrupts now ([`window_open`]; not while gdb steps it, [`assist`]).
    /// Worked out on a copy of the RTC, ticked as the tick would tick it. An access to the
    /// RTC's registers at such a boundary waits for the interrupt (`exit/ioio.rs`).
    pub fn rtc_interrupts_first(&self, now: u64) -> bool {
        let Some(timer) = self.vcpu.interrupts.timers.rtc else {
            return false;
        };
        if now < timer.due_tsc || self.vcpu.interrupts.held_for_step || !window_open(self) {
            return false;
        }
        let mut rtc = self.devices.rtc.clone();
        rtc.tick(now);
        rtc.interrupt_line() && self.timer_held_back(&timer).is_none()
    }

    /// The RTC's timer ticks at TSC `now` (`Devices::rtc_tick`: its flags, then IRQ 8), and
    /// is armed again for its next event, if one has its enable on. What it did, in words.
    pub fn rtc_tick(&mut self, now: u64) -> String {
        let what = self.devices.rtc_tick(now);
        self.vcpu.interrupts.timers.rtc = self.devices.rtc_timer().map(VirtualTimer::from);
        what
    }

    /// The port its timer's ticks come on as events: the port bound to `VIRQ_TIMER`, while it
    /// has a timer of `set_timer`'s. (A timer a device makes, the PIT's or the local APIC's,
    /// ticks through that device, whatever is bound.)
    pub fn timer_event_port(&self) -> Option<Port> {
        let own_timer = self.vcpu.interrupts.timers.set_timer.is_some();
        self.events.virq_port(virq::TIMER).filter(|_| own_timer)
    }

    /// Is one of the domain's timers due at TSC `now`? If so, the first one due ticks: its
    /// interrupt becomes pending, or is requested at the device the timer goes through, or,
    /// for a timer of `set_timer`'s when the domain bound a port to `VIRQ_TIMER`, an event on
    /// that port. Another one due as well is the next call's ([`Domain::timer_ticks`] makes
    /// them all).
    pub fn timer_tick(&mut self, now: u64) -> Tick {
        let (poll, next) = self.vcpu.interrupts.poll(now);
        match poll {
            TimerPoll::NotDue => return Tick::NotDue,
            TimerPoll::ToLocalApic(vector) => {
                // Requested in the APIC; it interrupts the CPU only if its priority lets it.
                self.vcpu.interrupts = next;
                let what = self.devices.local_apic_tick(vector);
                return Tick::Requested {
                    presented: self.devices.lapic.next_to_deliver().is_some(),
                    what,
                };
            }
            TimerPoll::ToIrq0 => {
                // Latched in the 8259A's IRR; it interrupts the CPU only if the PIC presents
                // it (not while IRQ 0 is still in service, before the last tick's EOI).
                self.vcpu.interrupts = next;
                let what = self.devices.pit_tick();
                return Tick::Requested {
                    presented: self.devices.pic.presented().is_some(),
                    what,
                };
            }
            TimerPoll::ToRtc => {
                // The flags, then IRQ 8: latched in the slave's IRR, or requested through
                // the IO-APIC; then the timer waits for the RTC's next event. It interrupts
                // the CPU when its edge rose and a route let IRQ 8's own vector through: the
                // one answer `timer_held_back` gives (another interrupt the controllers
                // present is not this tick's).
                let held_back = self.rtc_held_back();
                self.vcpu.interrupts = next;
                let what = self.rtc_tick(now);
                return Tick::Requested {
                    presented: held_back.is_none() && self.devices.rtc.interrupt_line(),
                    what,
                };
            }
            TimerPoll::Pending(_) | TimerPoll::Merged(_) => {}
        }
        match self.timer_event_port() {
            Some(port) => {
                self.vcpu.interrupts.timers = next.timers;
                let pending = self.set_pending(port);
                Tick::Event { port, pending }
            }
            None => {
                self.vcpu.interrupts = next;
                Tick::Interrupt
            }
        }
    }

    /// Every tick of the domain's timers due at TSC `now`, the earliest deadline first: where
    /// the hypervisor notices them outside an exit of the domain's own (while it halts, when
    /// it is switched in, for a blocked domain, `run.rs`; at a write that reprograms a timer,
    /// `apply.rs`). Each timer ticks at most once (its next deadline is after `now`).
    pub fn timer_ticks(&mut self, now: u64) -> Vec<Tick> {
        // At most one tick a timer (a deadline at the very end of time, `u64::MAX`, would be
        // due again after its own tick).
        let running = self.vcpu.interrupts.timers.running().count();
        let mut ticks = Vec::new();
        for _ in 0..running {
            match self.timer_tick(now) {
                Tick::NotDue => break,
                tick => ticks.push(tick),
            }
        }
        ticks
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
    /// gdb is single-stepping the vCPU: it waits, and no window is asked for (the VINTR
    /// exit would come before every step's instruction).
    HeldForStep(u8),
}

/// Can the pending interrupt be delivered before this VMRUN? (The run loop asks after every
/// exit's decision is applied.) Inlined into its one caller, `apply::before_resume`: at
/// every exit, a call more is a block QEMU's TCG looks up again after the world switch.
#[inline(always)]
pub fn assist(domain: &Domain) -> Assist {
    let Some(vector) = domain.pending_interrupt() else {
        return Assist::Nothing;
    };
    // A debugger's step is one instruction of the guest's, not a detour through whatever
    // handler an interrupt would enter first: QEMU's own gdb stub masks interrupts while it
    // steps (`SSTEP_NOIRQ`), and so does KVM with `KVM_GUESTDBG_BLOCKIRQ`. Without it, a
    // step over the instruction after a breakpoint could enter a timer's handler, return to
    // the breakpoint, and never get past it. (NMIs are not held, as KVM does not hold them.)
    if domain.vcpu.interrupts.held_for_step {
        return Assist::HeldForStep(vector);
    }
    let vmcb = &domain.vcpu.vmcb;
    // A `pin_page_table` under way (`page_tables.rs`) is one instruction, the VMMCALL it
    // runs again: as a CPU takes an interrupt only between instructions, the interrupt
    // waits until the call is over. (So no handler of the guest's can change its page
    // tables halfway through the walk.)
    if domain
        .pv
        .pinning
        .as_ref()
        .is_some_and(|pinning| pinning.rip == vmcb.save.rip)
    {
        return Assist::Nothing;
    }
    if window_open(domain) {
        return Assist::Inject(vector);
    }
    let shadowed = vmcb.control.interrupt_shadow & INTERRUPT_SHADOW != 0;
    let injecting = vmcb.injecting();
    let iret_first = domain.vcpu.iret_intercept_suspended;
    let enabled = domain.interrupts_enabled();
    if domain.pv.enabled && !enabled {
        // A PV kernel's CLI/STI are emulated: with its virtual flag off, its emulated STI is
        // an exit, and the pending interrupt is delivered after it. With the flag on, what
        // holds the interrupt back is the CPU's (an interrupt shadow, another event being
        // injected, an IRET let through): the window below brings the exit as soon as that
        // is over, as for any guest (its RFLAGS.IF is always 1).
        return Assist::Nothing;
    }
    if vmcb.control.virtual_interrupt & v_intr::IRQ != 0 {
        return Assist::Nothing; // already waiting for the window
    }
    let why = match (injecting, shadowed, iret_first) {
        (true, _, _) => "another event is being delivered first",
        (false, true, _) => "the guest is in an interrupt shadow",
        (false, false, true) if enabled => "the IRET the hypervisor lets through runs first",
        (false, false, _) => "the guest has interrupts off (RFLAGS.IF = 0)",
    };
    Assist::RequestWindow { vector, why }
}

/// Is the guest's interrupt window open: would the CPU take a maskable interrupt before the
/// instruction at RIP? Interrupts on (RFLAGS.IF, or a PV kernel's virtual flag), no
/// interrupt shadow (the instruction after STI or MOV SS runs first: AMD APM vol. 3, STI),
/// no other event being injected, and no IRET the hypervisor lets through to run first (a
/// handler entered now would return through its suspended intercept, and its return would
/// go unseen: `exit/iret.rs`). What [`assist`] injects at; `exit/ioio.rs` asks it too.
#[inline(always)]
pub fn window_open(domain: &Domain) -> bool {
    let vmcb = &domain.vcpu.vmcb;
    domain.interrupts_enabled()
        && vmcb.control.interrupt_shadow & INTERRUPT_SHADOW == 0
        && !vmcb.injecting()
        && !domain.vcpu.iret_intercept_suspended
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::evtchn::PortState;
    use crate::testing::{SHARED_INFO, Test};
    use crate::vmcb::EVENTINJ_VALID;
    use traplab_abi::x86::RFlags;

    const TIMER: VirtualTimer = VirtualTimer {
        vector: 0x20,
        period_tsc: 1_000,
        due_tsc: 5_000,
        target: TimerTarget::Pending,
    };

    fn with_timer(pending: Option<u8>) -> VirtualInterrupts {
        VirtualInterrupts {
            timers: Timers {
                set_timer: Some(TIMER),
                ..Timers::default()
            },
            pending,
            ..VirtualInterrupts::default()
        }
    }

    #[test]
    fn without_a_timer_nothing_is_ever_due() {
        let none = VirtualInterrupts::default();
        assert_eq!(none.poll(u64::MAX), (TimerPoll::NotDue, none));
    }

    #[test]
    fn before_the_deadline_the_timer_is_not_due_and_nothing_changes() {
        let interrupts = with_timer(None);
        assert_eq!(interrupts.poll(4_999), (TimerPoll::NotDue, interrupts));
    }

    #[test]
    fn at_the_deadline_the_interrupt_becomes_pending_and_the_next_is_one_period_on() {
        let (poll, next) = with_timer(None).poll(5_000);
        assert_eq!(poll, TimerPoll::Pending(0x20));
        assert_eq!(next.pending, Some(0x20));
        assert_eq!(
            next.timers.set_timer.map(|timer| timer.due_tsc),
            Some(6_000)
        );
    }

    #[test]
    fn a_deadline_while_the_interrupt_is_still_pending_merges_into_it() {
        let (poll, next) = with_timer(Some(0x20)).poll(5_000);
        assert_eq!(poll, TimerPoll::Merged(0x20));
        assert_eq!(next.pending, Some(0x20), "one interrupt, not two");
    }

    #[test]
    fn a_one_shot_is_over_after_its_tick() {
        let once = VirtualInterrupts {
            timers: Timers {
                local_apic: Some(VirtualTimer {
                    period_tsc: ONCE,
                    target: TimerTarget::LocalApic,
                    ..TIMER
                }),
                ..Timers::default()
            },
            ..VirtualInterrupts::default()
        };
        let (poll, next) = once.poll(5_000);
        assert_eq!(poll, TimerPoll::ToLocalApic(0x20));
        assert_eq!(next.timers, Timers::default());
    }

    #[test]
    fn each_timer_ticks_on_its_own_the_earliest_deadline_first() {
        // The PIT's (IRQ 0, every 1,000 from 5,000) and the APIC's one-shot (0x30 at 4,500)
        // both run: a look at 5,200 finds both due, and two polls tick them, the APIC's
        // first; the PIT's next deadline is its own, 6,000, and a third poll finds nothing.
        let both = VirtualInterrupts {
            timers: Timers {
                pit: Some(VirtualTimer {
                    target: TimerTarget::Irq0,
                    ..TIMER
                }),
                local_apic: Some(VirtualTimer {
                    vector: 0x30,
                    period_tsc: ONCE,
                    due_tsc: 4_500,
                    target: TimerTarget::LocalApic,
                }),
                ..Timers::default()
            },
            ..VirtualInterrupts::default()
        };
        assert_eq!(both.timers.earliest_due(), Some(4_500));
        let (first, after_first) = both.poll(5_200);
        assert_eq!(first, TimerPoll::ToLocalApic(0x30));
        assert_eq!(after_first.timers.local_apic, None);
        assert_eq!(after_first.timers.pit, both.timers.pit, "not yet ticked");
        let (second, after_second) = after_first.poll(5_200);
        assert_eq!(second, TimerPoll::ToIrq0);
        assert_eq!(
            after_second.timers.pit.map(|timer| timer.due_tsc),
            Some(6_000)
        );
        assert_eq!(after_second.poll(5_200).0, TimerPoll::NotDue);
        assert_eq!(after_second.pending, None, "both went to their devices");
    }

    #[test]
    fn deadlines_missed_while_nobody_looked_are_not_made_up_for() {
        // Five periods late: one interrupt, and the next deadline the timer's own next one.
        let (poll, next) = with_timer(None).poll(10_007);
        assert_eq!(poll, TimerPoll::Pending(0x20));
        assert_eq!(
            next.timers.set_timer.map(|timer| timer.due_tsc),
            Some(11_000)
        );
    }

    #[test]
    fn a_periodic_timer_noticed_late_keeps_its_phase() {
        // The hypervisor looks a little more often than the timer fires (every 999 ticks
        // against a 1,000-tick period), always 3 ticks after a deadline at first: 99
        // deadlines pass, and 99 interrupts come. With each deadline set from the look that
        // noticed the last, the lateness added up and every other deadline was missed: 50.
        let mut interrupts = with_timer(None);
        let mut delivered = 0;
        for look in 0..100u64 {
            let (poll, next) = interrupts.poll(5_003 + look * 999);
            interrupts = next;
            if poll != TimerPoll::NotDue {
                delivered += 1;
                interrupts.pending = None;
            }
        }
        assert_eq!(delivered, 99);
    }

    /// A domain with interrupt 0x20 pending and RFLAGS.IF as given.
    fn pending(interrupts_on: bool) -> Test {
        let mut test = Test::long_mode();
        test.domain.vcpu.interrupts.pending = Some(0x20);
        if interrupts_on {
            test.interrupts_on();
        }
        test
    }

    #[test]
    fn with_nothing_pending_there_is_nothing_to_do() {
        let mut test = pending(true);
        test.domain.vcpu.interrupts.pending = None;
        assert_eq!(assist(&test.domain), Assist::Nothing);
    }

    #[test]
    fn a_guest_that_can_take_the_interrupt_gets_it_injected() {
        assert_eq!(assist(&pending(true).domain), Assist::Inject(0x20));
    }

    #[test]
    fn a_guest_that_cannot_take_it_gets_a_window_request_saying_why() {
        let off = pending(false);
        assert_eq!(
            assist(&off.domain),
            Assist::RequestWindow {
                vector: 0x20,
                why: "the guest has interrupts off (RFLAGS.IF = 0)"
            }
        );
        let mut shadow = pending(true);
        shadow.domain.vcpu.vmcb.control.interrupt_shadow = INTERRUPT_SHADOW;
        assert!(matches!(
            assist(&shadow.domain),
            Assist::RequestWindow {
                why: "the guest is in an interrupt shadow",
                ..
            }
        ));
        // EVENTINJ holds one event: an exception being injected goes first.
        let mut injecting = pending(true);
        injecting.domain.vcpu.vmcb.control.eventinj = EVENTINJ_VALID | 6 | (3 << 8);
        assert!(matches!(
            assist(&injecting.domain),
            Assist::RequestWindow {
                why: "another event is being delivered first",
                ..
            }
        ));
    }

    #[test]
    fn a_window_already_requested_is_not_requested_twice() {
        let mut test = pending(false);
        test.domain.vcpu.vmcb.control.virtual_interrupt = window_request(0, Some(0x20));
        assert_eq!(assist(&test.domain), Assist::Nothing);
    }

    #[test]
    fn a_pv_kernel_follows_its_virtual_flag_and_its_emulated_sti_delivers_the_rest() {
        let mut test = pending(false);
        test.domain.pv.enabled = true;
        test.domain.pv.virtual_interrupt_flag = true;
        assert_eq!(
            assist(&test.domain),
            Assist::Inject(0x20),
            "RFLAGS.IF is not its flag"
        );
        test.domain.pv.virtual_interrupt_flag = false;
        assert_eq!(assist(&test.domain), Assist::Nothing, "no VINTR request");
    }

    #[test]
    fn a_pv_kernel_with_its_flag_on_in_an_interrupt_shadow_asks_for_the_window() {
        // Its virtual flag is on, a MOV SS shadow holds the interrupt back one instruction:
        // the CPU's VINTR exit ends the wait right after it, instead of the next exit of any
        // kind, which could be far.
        let mut test = pending(false);
        test.domain.pv.enabled = true;
        test.domain.pv.virtual_interrupt_flag = true;
        test.domain.vcpu.vmcb.save.rflags |= RFlags::INTERRUPT_FLAG.bits();
        test.domain.vcpu.vmcb.control.interrupt_shadow = INTERRUPT_SHADOW;
        assert_eq!(
            assist(&test.domain),
            Assist::RequestWindow {
                vector: 0x20,
                why: "the guest is in an interrupt shadow"
            }
        );
    }

    #[test]
    fn a_window_request_sets_v_irq_its_vector_and_top_priority_ignoring_the_tpr() {
        // AMD APM vol. 2, appendix B: V_TPR 7:0, V_IRQ 8, V_INTR_PRIO 19:16, V_IGN_TPR 20,
        // V_INTR_MASKING 24, V_INTR_VECTOR 39:32.
        let current = v_intr::MASKING | 0x5 | (3 << v_intr::PRIORITY_SHIFT) | (0x31 << 32);
        let request = window_request(current, Some(0x20));
        assert_eq!(
            request,
            v_intr::MASKING
                | 0x5
                | v_intr::IRQ
                | v_intr::IGNORE_TPR
                | (0xf << v_intr::PRIORITY_SHIFT)
                | (0x20 << v_intr::VECTOR_SHIFT),
            "{request:#x}"
        );
    }

    #[test]
    fn withdrawing_a_request_clears_only_v_irq() {
        let request = window_request(v_intr::MASKING, Some(0x20));
        assert_eq!(window_request(request, None), request & !v_intr::IRQ);
    }

    // ---- Domain::timer_tick: the deadline noticed outside the domain's own exits -----

    /// A domain whose timer (0x20, every 1,000) is due at 5,000, with a shared-info page.
    fn ticking() -> Test {
        let mut test = Test::long_mode();
        test.domain.vcpu.interrupts.timers.set_timer = Some(TIMER);
        test.domain.events.shared_info = Some(SHARED_INFO);
        test
    }

    #[test]
    fn a_timer_tick_before_the_deadline_changes_nothing() {
        let mut test = ticking();
        assert_eq!(test.domain.timer_tick(4_999), Tick::NotDue);
        assert_eq!(test.domain.vcpu.interrupts, with_timer(None));
    }

    #[test]
    fn a_due_timer_tick_makes_its_interrupt_pending() {
        let mut test = ticking();
        assert_eq!(test.domain.timer_tick(5_000), Tick::Interrupt);
        let interrupts = test.domain.vcpu.interrupts;
        assert_eq!(interrupts.pending, Some(0x20));
        assert_eq!(
            interrupts.timers.set_timer.map(|timer| timer.due_tsc),
            Some(6_000)
        );
    }

    #[test]
    fn timer_ticks_makes_every_due_tick_once_the_earliest_first() {
        // A `set_timer` timer due at 5,000 and the APIC's one-shot due at 4,000 (its vector
        // requested in the APIC, which is enabled): at 5,500 both tick, once each.
        let mut test = ticking();
        test.domain.devices.lapic.svr = 0x1ff;
        test.domain.vcpu.interrupts.timers.local_apic = Some(VirtualTimer {
            vector: 0x30,
            period_tsc: ONCE,
            due_tsc: 4_000,
            target: TimerTarget::LocalApic,
        });
        let ticks = test.domain.timer_ticks(5_500);
        assert!(
            matches!(ticks.as_slice(), [Tick::Requested { .. }, Tick::Interrupt]),
            "{ticks:?}"
        );
        assert!(test.domain.devices.lapic.requested.contains(0x30));
        let interrupts = test.domain.vcpu.interrupts;
        assert_eq!(interrupts.pending, Some(0x20));
        assert_eq!(interrupts.timers.local_apic, None);
        assert_eq!(test.domain.timer_ticks(5_500), [], "nothing due twice");
    }

    #[test]
    fn a_due_timer_tick_bound_to_virq_timer_is_an_event_and_no_interrupt() {
        // Xen's send_timer_event → send_guest_vcpu_virq(v, VIRQ_TIMER).
        let mut test = ticking();
        test.domain.events.ports[2] = PortState::Virq(virq::TIMER);
        assert_eq!(
            test.domain.timer_tick(5_000),
            Tick::Event {
                port: 2,
                pending: Pending {
                    already: false,
                    masked: false,
                    upcall: true
                }
            }
        );
        let interrupts = test.domain.vcpu.interrupts;
        assert_eq!(interrupts.pending, None);
        assert_eq!(
            interrupts.timers.set_timer.map(|timer| timer.due_tsc),
            Some(6_000)
        );
        assert!(test.domain.event_pending(2));
        // The next tick before the guest looked: merged into the first, no new upcall.
        assert_eq!(
            test.domain.timer_tick(6_000),
            Tick::Event {
                port: 2,
                pending: Pending {
                    already: true,
                    masked: false,
                    upcall: false
                }
            }
        );
    }

    // ---- Domain::timer_held_back for the RTC's IRQ 8 ------------------------------------

    /// What [`Domain::timer_held_back`] says when neither controller would let IRQ 8 in.
    const IRQ_8_MASKED: &str = "IRQ 8 is masked at the 8259As (at the slave, or at the master's IRQ 2, its cascade) or they are not initialised, and the IO-APIC's pin 8 is masked, not routed to this CPU, or active low (IRQ 8's rise is its release)";

    /// The RTC's periodic interrupt on (status A 1024 Hz as a BIOS leaves it, status B PIE
    /// and 24-hour), by the guest's OUTs: its timer armed. The PICs as `initialise_the_pics`
    /// leaves them with `master_mask` and `slave_mask`.
    fn rtc_ticking(master_mask: u8, slave_mask: u8) -> (Test, VirtualTimer) {
        let mut test = Test::long_mode();
        test.initialise_the_pics(master_mask, slave_mask);
        for (port, value) in [(0x70, 0x0a), (0x71, 0x26), (0x70, 0x0b), (0x71, 0x42)] {
            test.out(port, value);
        }
        let timer = test.domain.vcpu.interrupts.timers.rtc.expect("armed");
        (test, timer)
    }

    #[test]
    fn the_rtc_s_tick_is_held_back_at_the_pics_whatever_other_irq_they_present() {
        // IRQ 8 masked at the slave, IRQ 1 (the keyboard) requested and presented by the
        // master: the CPU would take IRQ 1, but the RTC's tick, latched behind IRQ 8's mask,
        // interrupts nothing.
        let (mut test, timer) = rtc_ticking(0xf9, 0xff);
        test.domain.devices.pic.set_irq(1, true);
        assert_eq!(test.domain.devices.pic.presented(), Some(0x21));
        assert_eq!(test.domain.timer_held_back(&timer), Some(IRQ_8_MASKED));
        // Open at the slave and at the master's IRQ 2, its cascade: the slave's IRQ 0 is
        // what the pair presents once IRQ 1 is taken and over.
        test.out(0xa1, 0xfe);
        test.domain.devices.pic.set_irq(1, false);
        test.domain.devices.pic.acknowledge();
        test.out(0x20, 0x20);
        assert_eq!(test.domain.timer_held_back(&timer), None);
        // The master's IRQ 2 masked: the slave's request stops there.
        test.out(0x21, 0xfd);
        assert_eq!(test.domain.timer_held_back(&timer), Some(IRQ_8_MASKED));
        // IRQ 0 in service at the master (the PIT's handler before its EOI): IRQ 8, behind
        // IRQ 2, is below it.
        test.out(0x21, 0xfa);
        test.domain.devices.pic.raise_irq_0();
        assert_eq!(test.domain.devices.pic.acknowledge(), Some(0x20));
        assert_eq!(
            test.domain.timer_held_back(&timer),
            Some(
                "IRQ 8 is held back by priority at the 8259As (an IRQ above it in service, or presented first), and the IO-APIC's pin 8 is masked, not routed to this CPU, or active low (IRQ 8's rise is its release)"
            )
        );
    }

    #[test]
    fn an_rtc_tick_behind_irq_8_s_mask_interrupts_nothing_whatever_irq_1_does() {
        // The tick's own answer agrees with `timer_held_back`'s: IRQ 1 presented by the
        // master says nothing of IRQ 8, masked at the slave, so the tick wakes no vCPU
        // (`schedule::woken_by_timer`) that the idle loop would not have waited for.
        let (mut test, timer) = rtc_ticking(0xf9, 0xff);
        test.domain.devices.pic.set_irq(1, true);
        assert_eq!(test.domain.devices.pic.presented(), Some(0x21));
        let Tick::Requested { presented, .. } = test.domain.timer_tick(timer.due_tsc) else {
            panic!("the RTC's tick is requested at its device")
        };
        assert!(!presented, "IRQ 8 is latched behind its mask");
        assert!(test.domain.devices.rtc.interrupt_line(), "the line rose");
        // Open, with status C read (the line low again): the next tick gets through.
        test.out(0xa1, 0xfe);
        test.domain.devices.pic.set_irq(1, false);
        test.domain.devices.pic.acknowledge();
        test.out(0x20, 0x20);
        test.out(0x70, 0x0c);
        test.domain.devices.port_read(0x71, 1, &test.machine);
        test.domain.devices.follow_rtc_interrupt();
        let next = test.domain.vcpu.interrupts.timers.rtc.expect("armed again");
        assert_eq!(test.domain.timer_held_back(&next), None);
        let Tick::Requested { presented, .. } = test.domain.timer_tick(next.due_tsc) else {
            panic!("the RTC's tick is requested at its device")
        };
        assert!(presented, "IRQ 8's own vector, presented");
    }

    #[test]
    fn the_rtc_s_tick_through_the_io_apic_is_held_back_whatever_else_the_apic_delivers() {
        // The PICs masked, the local APIC enabled with its TPR at class 4, and 0x50 (class 5)
        // requested there: the APIC delivers 0x50. IO-APIC pin 8 routed to 0x38 (class 3,
        // fixed, unmasked): below the TPR, the tick's vector waits, and the tick interrupts
        // nothing.
        let (mut test, timer) = rtc_ticking(0xff, 0xff);
        let lapic = &mut test.domain.devices.lapic;
        lapic.svr = 0x1ff;
        lapic.tpr = 0x40;
        lapic.request(0x50);
        let ioapic = &mut test.domain.devices.ioapic;
        ioapic.write(crate::device::ioapic::REGISTER_SELECT, 0x10 + 2 * 8);
        ioapic.write(crate::device::ioapic::WINDOW, 0x38);
        assert_eq!(test.domain.devices.lapic.next_to_deliver(), Some(0x50));
        assert_eq!(
            test.domain.timer_held_back(&timer),
            Some(
                "IRQ 8 is masked at the 8259As (at the slave, or at the master's IRQ 2, its cascade) or they are not initialised, and the local APIC holds back pin 8's vector (disabled in software, its TPR or an interrupt in service above it, or a higher one delivered first)"
            )
        );
        // The TPR down to 0: 0x50 goes first, then the tick's. Nothing holds it back.
        test.domain.devices.lapic.tpr = 0;
        let mut lapic = test.domain.devices.lapic.clone();
        lapic.delivered(0x50);
        lapic.end_of_interrupt();
        test.domain.devices.lapic = lapic;
        assert_eq!(test.domain.timer_held_back(&timer), None);
    }

    #[test]
    fn an_rtc_tick_on_an_active_low_pin_8_is_held_back_until_status_c_is_read() {
        // The PICs masked, the local APIC enabled, IO-APIC pin 8 routed to 0x38 but
        // programmed active low: IRQ 8's rise is the pin's release and sends nothing
        // (82093AA, redirection table bit 13). The tick interrupts nothing, and a HLT with
        // only this timer would wait forever.
        let (mut test, timer) = rtc_ticking(0xff, 0xff);
        test.domain.devices.lapic.svr = 0x1ff;
        let ioapic = &mut test.domain.devices.ioapic;
        ioapic.write(crate::device::ioapic::REGISTER_SELECT, 0x10 + 2 * 8);
        ioapic.write(crate::device::ioapic::WINDOW, 0x2038);
        assert_eq!(
            test.domain.timer_held_back(&timer),
            Some(IRQ_8_MASKED),
            "the rise of an active-low pin delivers nothing"
        );
        let Tick::Requested { presented, what } = test.domain.timer_tick(timer.due_tsc) else {
            panic!("the RTC's tick is requested at its device")
        };
        assert!(!presented, "{what}");
        assert_eq!(test.domain.pending_interrupt(), None);
        // The kernel reads status C: IRQ 8 falls, and the pin's asserting edge sends 0x38.
        test.out(0x70, 0x0c);
        test.domain.devices.port_read(0x71, 1, &test.machine);
        test.domain.devices.follow_rtc_interrupt();
        assert_eq!(test.domain.devices.lapic.next_to_deliver(), Some(0x38));
    }
}
