//! HLT (exit code 0x78): the guest waits for an interrupt.
//!
//! With interrupts off nothing can ever wake it: a bare CPU would sit there forever, so the
//! domain ends (status 0: this is how a lab guest says "done"). With interrupts on, it waits
//! for one:
//!
//! - while other domains run, its vCPU *blocks* and the scheduler runs another
//!   (`schedule.rs`); its timer, or an event upcall, wakes it;
//! - alone, with a timer armed (`set_timer`, the PIT's, the local APIC's), the hypervisor
//!   halts the physical CPU until the first of the guest's timers that can interrupt it is
//!   due, skips the HLT and delivers the interrupt (before the next VMRUN, `apply.rs`).
//!
//! - without a timer, with its COM1's receiver interrupt on while the host forwards keys
//!   (`traplab run`): its vCPU blocks, and the hypervisor's idle loop halts until a key comes
//!   (`run.rs`, `apply::keys_from_host`).
//!
//! When nothing can ever interrupt it (no timer that can interrupt it, no event can reach
//! it, no key) the domain ends too. Each of the guest's timers is looked at on its own, and
//! one whose tick the interrupt controller would hold back counts as none: IRQ 0 masked or
//! still in service at the PIC (a HLT in the timer's own handler before its EOI), the local
//! APIC's TPR above the vector. A halted CPU makes no unmask, EOI or TPR write, so a CPU
//! would halt there for good; the tick would only be latched (`Domain::timer_held_back`).

use super::{Exit, undecodable};
use crate::decide;
use crate::decision::{Decision, DomainEnd, Effect};
use crate::domain::Guest;
use crate::domain::evtchn::{Callback, PortState};
use crate::domain::vcpu::{RunState, Wait};
use crate::schedule;
use alloc::vec::Vec;
use traplab_abi::event::Action;

pub fn handle(exit: &Exit, guest: &Guest) -> Decision {
    let Some(length) = exit.instruction_length(guest) else {
        return undecodable(exit, guest);
    };
    halt(guest, guest.vcpu.rip_after(length), "")
}

/// Emulate a HLT that continues at `next`: wait for the guest's next interrupt, or end the
/// domain when none can ever come. Also used for a PV kernel's HLT at CPL 3
/// (`privileged.rs`), with its virtual interrupt flag; `context` starts the decision's
/// reason then.
pub fn halt(guest: &Guest, next: u64, context: &str) -> Decision {
    let interrupts = &guest.vcpu.interrupts;
    if !guest.interrupts_enabled() {
        return decide!(
            Action::Emulate,
            "{context}HLT with interrupts off: nothing can wake the guest, so the domain is done"
        )
        .with(Effect::Rip(next))
        .describe("HLT: the virtual CPU stops")
        .ending(stopped("halted with interrupts off"));
    }
    let owed = guest.pending_interrupt().is_some();
    // An event can reach it: an upcall it registered and has not masked (a halted CPU
    // never clears `evtchn_upcall_mask`), and a channel another domain holds the other end
    // of, or its store port (another domain's write of a node it watches, or an end).
    let reachable = guest.events.callback != Callback::None
        && !guest.upcalls_masked()
        && guest.events.ports.iter().any(|port| {
            matches!(
                port,
                PortState::Interdomain { .. } | PortState::Unbound { .. } | PortState::Store
            )
        });
    let others_run = guest.others.iter().any(|other| {
        matches!(
            other.vcpu.run_state,
            RunState::Runnable | RunState::Blocked(_)
        )
    });
    // A key can reach it: the host forwards a terminal's keys (`traplab run`) and its COM1
    // interrupts on a received byte.
    let keys_reach = guest.machine.keyboard() && guest.devices.console.listening();
    // One of its timers, unless the device it goes through would hold its tick back (IRQ 0
    // masked or still in service at the PIC, the APIC's priority above the vector): only an
    // unmask, an EOI or a TPR write would let it through, which a halted CPU never makes.
    let held_back: Vec<&str> = interrupts
        .timers
        .running()
        .filter_map(|timer| guest.timer_held_back(&timer))
        .collect();
    let timer_wakes = schedule::halt_ends_at(guest).is_some();
    let can_be_woken = owed || timer_wakes || (reachable && others_run) || keys_reach;
    if !can_be_woken && !held_back.is_empty() {
        let (ticks, could) = match held_back.len() {
            1 => ("its timer's tick", "could"),
            _ => ("its timers' ticks", "each could"),
        };
        return decide!(
            Action::Emulate,
            "{context}HLT waits for an interrupt, and {ticks} {could} not interrupt it ({}), which nothing changes while the CPU is halted; no event can reach it: the domain is done, as a CPU would wait forever",
            held_back.join("; ")
        )
        .with(Effect::Rip(next))
        .describe("HLT: the virtual CPU stops")
        .ending(stopped("halted waiting for an interrupt its interrupt controller holds back"));
    }
    if !can_be_woken {
        return decide!(
            Action::Emulate,
            "{context}HLT waits for an interrupt, and no device of this domain raises one (no timer that can interrupt it, no event can reach it): the domain is done"
        )
        .with(Effect::Rip(next))
        .describe("HLT: the virtual CPU stops")
        .ending(stopped("halted waiting for an interrupt that no device sends"));
    }
    // With gdb attached, the hypervisor must answer it while the guest waits: the vCPU
    // blocks, and the idle loop waits for its timers, reading gdb's line every 1/100 s
    // (`run.rs`), instead of halting for them in the exit's place (below), deaf to gdb.
    // (Not when its only timer is one bound to VIRQ_TIMER: its tick is an event, which wakes
    // a blocked vCPU only through a callback it may not have, where the HLT below returns
    // after the tick.)
    let wakes_blocked = guest.timer_event_port().is_none()
        || interrupts
            .timers
            .running()
            .any(|timer| schedule::timer_may_wake(&Wait::Interrupt, guest, &timer));
    let debugged = guest.machine.debugger_attached() && wakes_blocked;
    if !owed && (others_run || debugged) {
        let meanwhile = if others_run {
            "the hypervisor runs another domain meanwhile"
        } else {
            "the hypervisor idles meanwhile, answering gdb"
        };
        return decide!(
            Action::Emulate,
            "{context}HLT with interrupts on: d{} blocks until its timer or an event interrupts it; {meanwhile}",
            guest.id
        )
        .with_all(prompt(guest))
        .with(Effect::Rip(next))
        .with(Effect::EndInterruptShadow)
        .with(Effect::Block(Wait::Interrupt))
        .describe("HLT: the virtual CPU blocks");
    }
    if !owed && !timer_wakes && keys_reach {
        // Blocked, the vCPU leaves the CPU and the trace shows the wait at once; the
        // scheduler's idle loop halts until a key comes (`run.rs`).
        return decide!(
            Action::Emulate,
            "{context}HLT with interrupts on and no timer that can interrupt it: d{} blocks until a key the host types on COM1, whose receiver interrupt is on",
            guest.id
        )
        .with_all(prompt(guest))
        .with(Effect::Rip(next))
        .with(Effect::EndInterruptShadow)
        .with(Effect::StartHostTimer)
        .with(Effect::Block(Wait::Interrupt))
        .describe("HLT: the virtual CPU blocks");
    }
    // HLT ends an interrupt shadow (a `sti; hlt` pair halts in STI's shadow): the
    // interrupt may be delivered right after it.
    decide!(
        Action::Emulate,
        "{context}HLT with interrupts on: the hypervisor waits for the guest's timer, then delivers its interrupt"
    )
    .with_all(prompt(guest))
    .with(Effect::Rip(next))
    .with(Effect::EndInterruptShadow)
    .with(Effect::HaltUntilInterrupt)
    .describe("HLT")
}

/// A guest that halts to wait has printed all it will before its input comes: the unfinished
/// line it waits after (a shell's prompt, `/ # `) is shown now, not at a newline that comes
/// only once a line is typed. (A domain that ends passes its unfinished line on anyway.)
fn prompt(guest: &Guest) -> Option<Effect> {
    guest
        .devices
        .console
        .waits_after_prompt()
        .then_some(Effect::ConsolePrompt)
}

/// The virtual CPU stops for good: the domain ends with status 0.
fn stopped(reason: &str) -> DomainEnd {
    DomainEnd::Exited {
        status: 0,
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::interrupts::{TimerTarget, VirtualTimer};
    use crate::schedule::Switch;
    use crate::testing::{self, ENTRY, Run, SHARED_INFO, Test};
    use traplab_abi::event::{Body, EventType};
    use traplab_abi::evtchn::shared_info;
    use traplab_abi::exit::ExitReason;

    const HLT: [u8; 1] = [0xf4];
    const HANDLER: u64 = 0x20_8000;

    /// A guest at a HLT with a timer of vector 0x20 due 5,000 ticks from now, every 10,000.
    fn waiting_for_its_timer() -> Test {
        let mut test = Test::long_mode();
        test.code(&HLT);
        test.interrupts_on();
        test.gate(0x20, HANDLER);
        test.domain.vcpu.interrupts.timers.set_timer = Some(VirtualTimer {
            vector: 0x20,
            period_tsc: 10_000,
            due_tsc: test.machine.now.get() + 5_000,
            target: TimerTarget::Pending,
        });
        test
    }

    #[test]
    fn with_gdb_attached_a_hlt_that_waits_for_its_timer_blocks_so_that_gdb_is_answered() {
        let mut test = waiting_for_its_timer();
        test.machine.debugger = true;
        let run = test.run(test.exit(ExitReason::Hlt));
        assert!(
            run.decision
                .effects
                .contains(&Effect::Block(Wait::Interrupt)),
            "{:?}",
            run.decision.effects
        );
        assert!(!run.decision.effects.contains(&Effect::HaltUntilInterrupt));
        assert!(run.decision.why.to_string().contains("answering gdb"));
        // A timer bound to VIRQ_TIMER, no callback registered: its tick is an event that
        // would never wake a blocked vCPU. The HLT waits for it in place, with gdb or
        // without, and returns after it, the port pending.
        let mut test = waiting_for_its_timer();
        test.domain.events.shared_info = Some(SHARED_INFO);
        test.domain.events.ports[3] = PortState::Virq(traplab_abi::evtchn::virq::TIMER);
        test.machine.debugger = true;
        let run = test.run(test.exit(ExitReason::Hlt));
        assert!(
            run.decision.effects.contains(&Effect::HaltUntilInterrupt),
            "{:?}",
            run.decision.effects
        );
        assert!(run.applied.switch.is_none() && run.applied.end.is_none());
        assert!(test.domain.event_pending(3));
    }

    #[test]
    fn a_key_for_another_domain_does_not_end_a_hlt_that_waits_for_its_timer() {
        // Keys typed for d2 (ended, or not started: this domain is the only one that runs)
        // are dropped; the HLT waits on for its timer, and its interrupt comes. (The key
        // used to end the halt, and the HLT to return with no interrupt to take.)
        let mut test = waiting_for_its_timer();
        test.machine.keyboard = true;
        test.machine.keys.push((2, b"k".to_vec()));
        let run = test.run(test.exit(ExitReason::Hlt));
        assert_eq!(run.kinds(), ["decide", "emulate", "inject"]);
        assert!(test.machine.keys.is_empty(), "the key is dropped");
    }

    /// A kernel waiting for a line on COM1: the PICs at 0x20, only IRQ 4 open, the UART's
    /// received-data interrupt on and OUT2 set; no timer.
    fn waiting_for_a_key(keyboard: bool) -> Test {
        let mut test = Test::long_mode();
        test.code(&HLT);
        test.interrupts_on();
        test.gate(0x24, HANDLER);
        test.machine.keyboard = keyboard;
        let devices = &mut test.domain.devices;
        for (port, value) in [
            (0x20, 0x11),
            (0x21, 0x20),
            (0x21, 0x04),
            (0x21, 0x01),
            (0x21, 0xef),
        ] {
            devices.pic.write(port, value);
        }
        devices.console.write(1, 0x01);
        devices.console.write(4, 0x0b);
        test
    }

    #[test]
    fn with_a_keyboard_hlt_blocks_until_a_key_and_the_key_raises_irq_4() {
        let mut test = waiting_for_a_key(true);
        let run = test.run(test.exit(ExitReason::Hlt));
        assert!(
            run.decision
                .why
                .contains("blocks until a key the host types on COM1"),
            "{}",
            run.decision.why
        );
        assert!(run.decision.effects.contains(&Effect::StartHostTimer));
        assert!(
            run.decision
                .effects
                .contains(&Effect::Block(Wait::Interrupt))
        );
        // The key, taken by the scheduler's idle loop (`run.rs`): into the receiver, and
        // IRQ 4 is owed, which wakes the HLT.
        test.machine.keys.push((1, b"k".to_vec()));
        let mut events = Vec::new();
        crate::apply::keys_from_host(&mut test.domain, &mut test.machine, &mut events);
        let [Body::Emulate(typed)] = events.as_slice() else {
            panic!("{events:?}")
        };
        assert_eq!(
            typed.what,
            "the host typed \"k\" on COM1: into its receiver; COM1 raises IRQ 4: requested at the PIC"
        );
        assert_eq!(test.domain.pending_interrupt(), Some(0x24));
        assert!(test.machine.keys.is_empty(), "taken");
    }

    #[test]
    fn a_shell_s_prompt_is_shown_when_it_halts_to_wait_for_a_line_and_once() {
        // busybox printed "/ # " and waits in read(): no newline comes until a line is
        // typed, and the trace showed nothing of it. Its HLT shows it, unfinished.
        let mut test = waiting_for_a_key(true);
        for &byte in b"done\n/ # " {
            test.domain.devices.console.write(0, byte);
        }
        let run = test.run(test.exit(ExitReason::Hlt));
        let [Body::Decide(_), Body::Console(prompt), Body::Emulate(_)] = run.events.as_slice()
        else {
            panic!("{:?}", run.kinds())
        };
        assert_eq!((prompt.text.as_ref(), prompt.unfinished), ("/ # ", true));
        // The next HLT, still waiting: nothing new to show.
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        let run = test.run(test.exit(ExitReason::Hlt));
        assert_eq!(run.kinds(), ["decide", "emulate"]);
        // While the driver still sends (THR-empty interrupt on), the line is not done.
        test.domain.devices.console.write(0, b'x');
        test.domain.devices.console.write(1, 0x03);
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        let run = test.run(test.exit(ExitReason::Hlt));
        assert!(!run.kinds().contains(&"console"), "{:?}", run.kinds());
    }

    #[test]
    fn without_a_keyboard_no_key_is_asked_for() {
        // `keys_from_host` runs at every exit: without a terminal forwarding keys it does
        // not ask the machine for them (a key there would be a host that has no keyboard).
        let mut test = waiting_for_a_key(false);
        test.machine.keys.push((1, b"k".to_vec()));
        let mut events = Vec::new();
        crate::apply::keys_from_host(&mut test.domain, &mut test.machine, &mut events);
        assert!(events.is_empty(), "{events:?}");
        assert_eq!(test.machine.keys.len(), 1, "not taken");
        assert_eq!(test.domain.pending_interrupt(), None);
    }

    #[test]
    fn without_a_keyboard_a_kernel_waiting_for_its_serial_port_is_done() {
        let mut test = waiting_for_a_key(false);
        let run = test.run(test.exit(ExitReason::Hlt));
        assert_eq!(
            testing::exited(&run.decision),
            (0, "halted waiting for an interrupt that no device sends")
        );
    }

    #[test]
    fn hlt_with_interrupts_off_ends_the_domain_with_status_0() {
        // Nothing can wake a CPU halted with IF = 0 (but NMI, which no device here sends).
        let mut test = Test::long_mode();
        test.code(&HLT);
        let run = test.run(test.exit(ExitReason::Hlt));
        assert_eq!(run.decision.action, Action::Emulate);
        assert_eq!(
            testing::exited(&run.decision),
            (0, "halted with interrupts off")
        );
        assert_eq!(run.applied.end.as_ref(), run.decision.end.as_deref());
        assert_eq!(test.rip(), ENTRY + 1);
    }

    #[test]
    fn hlt_with_interrupts_on_but_no_timer_ends_the_domain_too() {
        let mut test = Test::long_mode();
        test.code(&HLT);
        test.interrupts_on();
        let decision = test.decide(test.exit(ExitReason::Hlt));
        assert_eq!(
            testing::exited(&decision),
            (0, "halted waiting for an interrupt that no device sends")
        );
    }

    /// Both 8259As initialised as a PC kernel does (`testing::PICS_INITIALISED`: the master at
    /// vector 0x20), every IRQ still open. Written to the device itself, not by the guest's
    /// OUTs (`Test::initialise_the_pics`), which would take the place of the HLT at RIP.
    fn initialise_the_pic(test: &mut Test) {
        for (port, value) in testing::PICS_INITIALISED {
            test.domain.devices.pic.write(port, value);
        }
    }

    #[test]
    fn hlt_waits_for_the_rtc_s_update_interrupt_unless_irq_8_is_still_high() {
        // The RTC's update-ended interrupt through the slave 8259A (vector 0x28) is the only
        // timer: the HLT waits for it, and its tick wakes the CPU. Left unread, status C
        // keeps IRQ 8 high, and the next tick could not interrupt: the domain is done.
        let mut test = Test::long_mode();
        test.interrupts_on();
        test.gate(0x28, HANDLER);
        test.initialise_the_pics(0xfb, 0xfe);
        for (port, value) in [
            (0x70, 0x0b),
            (0x71, 0x12), // UIE, 24-hour
        ] {
            test.out(port, value);
        }
        let timer = test.domain.vcpu.interrupts.timers.rtc.expect("armed");
        test.code(&HLT);
        let run = test.run(test.exit(ExitReason::Hlt));
        assert!(
            run.decision.effects.contains(&Effect::HaltUntilInterrupt),
            "{}",
            run.decision.why
        );
        assert!(
            test.machine
                .calls
                .contains(&format!("halt_until {}", timer.due_tsc)),
            "{:?}",
            test.machine.calls
        );
        assert_eq!(run.injected().vector, 0x28, "IRQ 8 woke it");
        test.vmrun();
        test.domain.devices.pic.write(0xa0, 0x20);
        test.domain.devices.pic.write(0x20, 0x20);
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        let decision = test.decide(test.exit(ExitReason::Hlt));
        assert!(
            decision.why.contains("IRQ 8 is high already"),
            "{}",
            decision.why
        );
        assert_eq!(
            testing::exited(&decision).1,
            "halted waiting for an interrupt its interrupt controller holds back"
        );
    }

    #[test]
    fn hlt_with_only_the_pit_behind_a_masked_irq_0_ends_the_domain() {
        // The PIC latches the PIT's next edge while IRQ 0 is masked, but only an unmask,
        // which a halted CPU never makes, would present it. Unmasked, the timer wakes it.
        let mut test = Test::long_mode();
        test.code(&HLT);
        test.interrupts_on();
        initialise_the_pic(&mut test);
        test.domain.devices.pic.write(0x21, 0xff);
        test.domain.vcpu.interrupts.timers.pit = Some(VirtualTimer {
            vector: 0x20,
            period_tsc: crate::domain::interrupts::ONCE,
            due_tsc: test.machine.now.get() + 5_000,
            target: TimerTarget::Irq0,
        });
        let decision = test.decide(test.exit(ExitReason::Hlt));
        assert_eq!(
            testing::exited(&decision),
            (
                0,
                "halted waiting for an interrupt its interrupt controller holds back"
            )
        );
        assert!(
            decision
                .why
                .contains("(IRQ 0 is masked at the PIC, or the PIC is not initialised)"),
            "{}",
            decision.why
        );
        test.domain.devices.pic.write(0x21, 0xfe);
        let decision = test.decide(test.exit(ExitReason::Hlt));
        assert!(decision.effects.contains(&Effect::HaltUntilInterrupt));
    }

    #[test]
    fn hlt_behind_an_apic_one_shot_held_back_waits_for_the_pit_after_it() {
        // The APIC's one-shot (vector 0x30) is held back by the task priority, but the PIT
        // counts too, and IRQ 0 is open: the HLT waits through the one-shot's tick, which the
        // APIC latches, for the PIT's edge, which wakes it.
        let mut test = Test::long_mode();
        test.code(&HLT);
        test.interrupts_on();
        test.gate(0x20, 0x20_0000);
        initialise_the_pic(&mut test);
        test.domain.devices.pic.write(0x21, 0xfe);
        test.domain.devices.lapic.tpr = 0x40;
        let now = test.machine.now.get();
        test.domain.vcpu.interrupts.timers.local_apic = Some(VirtualTimer {
            vector: 0x30,
            period_tsc: crate::domain::interrupts::ONCE,
            due_tsc: now + 5_000,
            target: TimerTarget::LocalApic,
        });
        test.domain.vcpu.interrupts.timers.pit = Some(VirtualTimer {
            vector: 0x20,
            period_tsc: 10_000,
            due_tsc: now + 8_000,
            target: TimerTarget::Irq0,
        });
        let run = test.run(test.exit(ExitReason::Hlt));
        assert!(
            run.decision.effects.contains(&Effect::HaltUntilInterrupt),
            "{}",
            run.decision.why
        );
        assert_eq!(run.injected().vector, 0x20, "the PIT's edge woke it");
        assert!(
            test.domain.devices.lapic.requested.contains(0x30),
            "held back"
        );
    }

    #[test]
    fn hlt_waits_past_a_virq_timer_tick_that_raises_no_upcall_for_the_pit_s_edge() {
        // A `set_timer` timer bound to VIRQ_TIMER, with no callback: its tick (at +1,000) is
        // an event that interrupts nothing. The PIT's IRQ 0 is open (its edge at +5,000): a
        // CPU stays halted until that edge, as Xen's vCPU stays blocked through an event that
        // raises no upcall. (Alone, the VIRQ tick ends the HLT: `bound_to_virq_timer`.)
        let mut test = Test::long_mode();
        test.code(&HLT);
        test.interrupts_on();
        test.gate(0x20, 0x20_0000);
        test.domain.events.shared_info = Some(SHARED_INFO);
        test.domain.events.ports[2] = PortState::Virq(traplab_abi::evtchn::virq::TIMER);
        initialise_the_pic(&mut test);
        test.domain.devices.pic.write(0x21, 0xfe);
        let now = test.machine.now.get();
        test.domain.vcpu.interrupts.timers.set_timer = Some(VirtualTimer {
            vector: 0x40,
            period_tsc: 100_000,
            due_tsc: now + 1_000,
            target: TimerTarget::Pending,
        });
        test.domain.vcpu.interrupts.timers.pit = Some(VirtualTimer {
            vector: 0x20,
            period_tsc: 10_000,
            due_tsc: now + 5_000,
            target: TimerTarget::Irq0,
        });
        let run = test.run(test.exit(ExitReason::Hlt));
        assert_eq!(run.injected().vector, 0x20, "the PIT's edge woke it");
        assert!(test.machine.now.get() >= now + 5_000);
        assert!(
            test.domain.event_pending(2),
            "the VIRQ tick came too, as an event"
        );
        assert_eq!(
            run.notifies()
                .iter()
                .map(|notify| notify.port)
                .collect::<Vec<_>>(),
            [2],
            "in the trace, as at an INTR exit"
        );
    }

    #[test]
    fn hlt_in_the_timer_s_own_handler_before_its_eoi_waits_for_nothing_the_pit_can_send() {
        // IRQ 0 in service (taken, no EOI yet): the next edge waits in IRR, and the master
        // presents nothing while IRQ 0 is in service. A CPU halted here stays halted: the
        // hypervisor no longer resumes it after the HLT at the next tick, without an
        // interrupt. With the EOI first, the tick wakes it.
        let mut test = Test::long_mode();
        test.code(&HLT);
        test.interrupts_on();
        initialise_the_pic(&mut test);
        test.domain.devices.pic.write(0x21, 0xfe);
        test.domain.devices.pic.raise_irq_0();
        assert_eq!(test.domain.devices.pic.acknowledge(), Some(0x20));
        test.domain.vcpu.interrupts.timers.pit = Some(VirtualTimer {
            vector: 0x20,
            period_tsc: 1_000_000,
            due_tsc: test.machine.now.get() + 5_000,
            target: TimerTarget::Irq0,
        });
        let decision = test.decide(test.exit(ExitReason::Hlt));
        assert!(
            decision
                .why
                .contains("(IRQ 0 is still in service at the PIC (no EOI since its last tick))"),
            "{}",
            decision.why
        );
        assert_eq!(testing::exited(&decision).0, 0);
        test.domain.devices.pic.write(0x20, 0x20); // EOI
        let decision = test.decide(test.exit(ExitReason::Hlt));
        assert!(decision.effects.contains(&Effect::HaltUntilInterrupt));
    }

    #[test]
    fn hlt_with_the_apic_timer_below_the_tpr_ends_the_domain() {
        // The timer's vector 0x30 is in class 3; a TPR of 0x40 holds classes 0-4 back.
        let mut test = Test::long_mode();
        test.code(&HLT);
        test.interrupts_on();
        test.domain.devices.lapic.svr |= 0x100; // software-enabled
        test.domain.devices.lapic.tpr = 0x40;
        test.domain.vcpu.interrupts.timers.local_apic = Some(VirtualTimer {
            vector: 0x30,
            period_tsc: 1_000_000,
            due_tsc: test.machine.now.get() + 5_000,
            target: TimerTarget::LocalApic,
        });
        let decision = test.decide(test.exit(ExitReason::Hlt));
        assert!(
            decision.why.contains("holds the timer's vector back"),
            "{}",
            decision.why
        );
        assert_eq!(testing::exited(&decision).0, 0);
        test.domain.devices.lapic.tpr = 0x20;
        let decision = test.decide(test.exit(ExitReason::Hlt));
        assert!(decision.effects.contains(&Effect::HaltUntilInterrupt));
    }

    #[test]
    fn hlt_with_a_timer_waits_for_it_then_the_interrupt_is_injected_before_resume() {
        let mut test = waiting_for_its_timer();
        let due = test.machine.now.get() + 5_000;
        let run = test.run(test.exit(ExitReason::Hlt));
        assert_eq!(run.decision.end, None, "the domain goes on");
        assert_eq!(run.kinds(), ["decide", "emulate", "inject"]);
        assert_eq!(
            run.emulate().what,
            "HLT: the hypervisor waited 3 ticks of its own timer for the guest's timer, its interrupt is pending"
        );
        assert_eq!(test.machine.calls, [format!("halt_until {due}")]);
        let inject = run.injected();
        assert_eq!((inject.vector, inject.kind), (0x20, EventType::Interrupt));
        assert_eq!(inject.handler, Some(HANDLER));
        // The interrupt returns after the HLT; the next deadline is one period later.
        assert_eq!(test.rip(), ENTRY + 1);
        assert_eq!(run.applied.resume_at, Some(HANDLER));
        let interrupts = test.domain.vcpu.interrupts;
        assert_eq!(interrupts.pending, None, "delivered, no longer pending");
        assert_eq!(
            interrupts.timers.set_timer.map(|timer| timer.due_tsc),
            Some(due + 10_000)
        );
    }

    #[test]
    fn sti_then_hlt_halts_in_the_interrupt_shadow_and_still_gets_the_interrupt() {
        // `sti; hlt`: HLT runs in STI's interrupt shadow (AMD APM vol. 2, 15.21.5); once it
        // has executed, the shadow is over and the interrupt can be taken.
        let mut test = waiting_for_its_timer();
        test.domain.vcpu.vmcb.control.interrupt_shadow = 1;
        let run = test.run(test.exit(ExitReason::Hlt));
        assert!(run.decision.effects.contains(&Effect::EndInterruptShadow));
        assert_eq!(test.domain.vcpu.vmcb.control.interrupt_shadow, 0);
        assert_eq!(run.injected().vector, 0x20);
    }

    #[test]
    fn hlt_with_an_interrupt_already_pending_does_not_wait() {
        let mut test = waiting_for_its_timer();
        test.domain.vcpu.interrupts.pending = Some(0x20);
        let run = test.run(test.exit(ExitReason::Hlt));
        assert!(
            test.machine.calls.is_empty(),
            "no halt: {:?}",
            test.machine.calls
        );
        assert!(run.emulate().what.contains("waited 0 ticks"));
        assert_eq!(run.injected().vector, 0x20);
    }

    // ---- Beside other domains ---------------------------------------------------------

    /// A guest at a HLT with interrupts on, no timer, its upcall at vector 0xf3 (an IDT
    /// gate for it), and port 1 connected to port 5 of d2, which is in `d2`.
    fn reachable_by_d2(d2: RunState) -> Test {
        let mut test = Test::long_mode();
        test.code(&HLT);
        test.interrupts_on();
        test.gate(0xf3, HANDLER);
        test.domain.events.shared_info = Some(SHARED_INFO);
        test.domain.events.callback = Callback::Vector(0xf3);
        test.domain.events.ports[1] = PortState::Interdomain {
            remote: 2,
            remote_port: 5,
        };
        test.add_domain(2).vcpu.run_state = d2;
        test
    }

    /// The decision blocks the vCPU on HLT (and applying it did).
    fn assert_blocked(test: &Test, run: &Run) {
        assert_eq!(
            run.decision.why,
            "HLT with interrupts on: d1 blocks until its timer or an event interrupts it; the hypervisor runs another domain meanwhile"
        );
        assert_eq!(
            run.decision.effects,
            [
                Effect::Rip(ENTRY + 1),
                Effect::EndInterruptShadow,
                Effect::Block(Wait::Interrupt)
            ]
        );
        assert_eq!(run.decision.end, None);
        assert_eq!(run.kinds(), ["decide", "emulate"]);
        assert_eq!(run.emulate().what, "HLT: the virtual CPU blocks");
        assert_eq!(run.applied.switch, Some(Switch::Blocked));
        assert_eq!(
            test.domain.vcpu.run_state,
            RunState::Blocked(Wait::Interrupt)
        );
        assert!(
            test.machine.calls.is_empty(),
            "the CPU does not halt: {:?}",
            test.machine.calls
        );
        assert_eq!(test.rip(), ENTRY + 1);
    }

    #[test]
    fn hlt_with_a_timer_while_another_domain_is_runnable_blocks_the_vcpu() {
        // Xen's hvm_hlt: the vCPU blocks (do_sched_op(SCHEDOP_block)), and the scheduler
        // runs another; its timer wakes it.
        let mut test = waiting_for_its_timer();
        test.add_domain(2);
        let run = test.run(test.exit(ExitReason::Hlt));
        assert_blocked(&test, &run);
        assert_eq!(test.domain.vcpu.interrupts.pending, None, "not due yet");
    }

    #[test]
    fn hlt_with_a_timer_beside_domains_that_ended_or_wait_their_turn_halts_the_cpu() {
        // None of them can run meanwhile: as alone, the CPU halts until the timer is due.
        let mut test = waiting_for_its_timer();
        test.add_domain(2).vcpu.run_state = RunState::Ended;
        test.add_domain(3).vcpu.run_state = RunState::Waiting;
        let run = test.run(test.exit(ExitReason::Hlt));
        assert!(run.decision.effects.contains(&Effect::HaltUntilInterrupt));
        assert_eq!(run.applied.switch, None);
        assert_eq!(test.machine.calls.len(), 1, "halt_until");
        assert_eq!(run.injected().vector, 0x20);
        assert_eq!(test.domain.vcpu.run_state, RunState::Runnable);
    }

    #[test]
    fn hlt_with_a_callback_and_a_channel_blocks_while_the_other_end_is_blocked() {
        // No timer: the event the other domain may send is what wakes it.
        let mut test = reachable_by_d2(RunState::Blocked(Wait::Event));
        let run = test.run(test.exit(ExitReason::Hlt));
        assert_blocked(&test, &run);
    }

    #[test]
    fn hlt_with_a_callback_and_a_store_port_waits_for_the_watch_event() {
        // Another domain's write of a node it watches, or a domain's end, makes its store
        // port pending (`store_watch_event`): the upcall may still come.
        let mut test = reachable_by_d2(RunState::Runnable);
        test.domain.events.ports[1] = PortState::Store;
        let run = test.run(test.exit(ExitReason::Hlt));
        assert_blocked(&test, &run);
    }

    #[test]
    fn hlt_with_a_callback_and_a_port_allocated_for_another_domain_blocks_too() {
        let mut test = reachable_by_d2(RunState::Runnable);
        test.domain.events.ports[1] = PortState::Unbound { remote: 2 };
        let run = test.run(test.exit(ExitReason::Hlt));
        assert_blocked(&test, &run);
    }

    #[test]
    fn hlt_with_a_callback_and_a_channel_but_no_other_domain_alive_ends_the_domain() {
        let mut test = reachable_by_d2(RunState::Ended);
        let run = test.run(test.exit(ExitReason::Hlt));
        assert_eq!(
            testing::exited(&run.decision),
            (0, "halted waiting for an interrupt that no device sends")
        );
        assert!(
            run.decision
                .why
                .contains("no timer that can interrupt it, no event can reach it"),
            "{}",
            run.decision.why
        );
        assert_eq!(run.applied.switch, None);
    }

    #[test]
    fn hlt_with_a_channel_but_no_callback_ends_the_domain() {
        // Without a callback no event interrupts the guest: HLT would wait for ever.
        let mut test = reachable_by_d2(RunState::Runnable);
        test.domain.events.callback = Callback::None;
        let decision = test.decide(test.exit(ExitReason::Hlt));
        assert_eq!(
            testing::exited(&decision),
            (0, "halted waiting for an interrupt that no device sends")
        );
    }

    #[test]
    fn hlt_with_an_upcall_owed_does_not_block_and_the_upcall_is_injected() {
        let mut test = reachable_by_d2(RunState::Runnable);
        test.write(SHARED_INFO + shared_info::UPCALL_PENDING, &[1]);
        let run = test.run(test.exit(ExitReason::Hlt));
        assert!(run.decision.effects.contains(&Effect::HaltUntilInterrupt));
        assert_eq!(run.applied.switch, None);
        assert_eq!(
            run.emulate().what,
            "HLT: the hypervisor waited 0 ticks of its own timer for the guest's timer"
        );
        assert!(test.machine.calls.is_empty());
        assert_eq!(run.injected().vector, 0xf3);
        assert_eq!(test.domain.vcpu.run_state, RunState::Runnable);
    }

    #[test]
    fn hlt_at_an_unmapped_rip_kills_the_domain() {
        let test = Test::long_mode();
        let decision = test.decide(testing::exit(ExitReason::Hlt, &[]));
        assert_eq!(decision.action, Action::Kill);
    }

    #[test]
    fn a_hlt_ends_at_the_first_tick_that_can_interrupt_it_else_at_set_timer_s() {
        // One answer (`schedule::halt_ends_at`) for the handler's "can anything wake it?"
        // and the apply step's "halt until when?".
        let mut test = Test::long_mode();
        test.interrupts_on();
        test.domain.events.shared_info = Some(SHARED_INFO);
        assert_eq!(schedule::halt_ends_at(&test.domain), None, "no timer");
        test.domain.vcpu.interrupts.timers.pit = Some(VirtualTimer {
            vector: 0x20,
            period_tsc: 10_000,
            due_tsc: 100,
            target: TimerTarget::Irq0,
        });
        assert_eq!(
            schedule::halt_ends_at(&test.domain),
            None,
            "the PIT's edge, with the PIC not initialised, interrupts nothing"
        );
        let set_timer_due = |due_tsc| {
            Some(VirtualTimer {
                vector: 0x40,
                period_tsc: 100_000,
                due_tsc,
                target: TimerTarget::Pending,
            })
        };
        test.domain.vcpu.interrupts.timers.set_timer = set_timer_due(300);
        assert_eq!(schedule::halt_ends_at(&test.domain), Some(300));
        initialise_the_pic(&mut test);
        assert_eq!(
            schedule::halt_ends_at(&test.domain),
            Some(100),
            "IRQ 0 open: the PIT's edge comes first"
        );
        // `set_timer`'s ticks as events on port 2, with no callback for an upcall: they
        // interrupt nothing, and the HLT returns after one only when nothing else can end it.
        test.domain.events.ports[2] = PortState::Virq(traplab_abi::evtchn::virq::TIMER);
        test.domain.vcpu.interrupts.timers.set_timer = set_timer_due(50);
        assert_eq!(schedule::halt_ends_at(&test.domain), Some(100));
        test.domain.vcpu.interrupts.timers.pit = None;
        assert_eq!(schedule::halt_ends_at(&test.domain), Some(50));
    }
}
