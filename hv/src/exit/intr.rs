//! A physical interrupt (exit code 0x60 INTR): the hypervisor's own timer.
//!
//! The interrupt belongs to the hypervisor, not to the guest: we let it in through our own
//! IDT (`timer::take_pending`), count the tick, and resume the guest exactly where it was.
//! The guest never sees it. What the exit gives the hypervisor is control: a chance to
//! answer the host (pause, step) even while a guest spins, and to notice that the guest's
//! own virtual timers are due (`domain/interrupts.rs`), as Xen's timer softirq does: every
//! one due by then ticks, each through its own device.

use super::Exit;
use crate::decide;
use crate::decision::{Decision, Effect};
use crate::domain::Guest;
use crate::domain::interrupts::TimerPoll;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use traplab_abi::event::Action;

pub fn handle(exit: &Exit, guest: &Guest) -> Decision {
    // A guest that bound its timer to a port (VIRQ_TIMER) gets its ticks as events.
    let event_port = guest.timer_event_port();
    // Every timer of the guest's that is due by now ticks, the earliest deadline first: a
    // PC's PIT and local APIC count on their own, and both may have come due since the last
    // look. Each ticks once (its next deadline is after now).
    let mut interrupts = guest.vcpu.interrupts;
    let mut ticked: Vec<String> = Vec::new();
    let mut effects = Vec::new();
    let mut pending_changed = false;
    for _ in 0..interrupts.timers.running().count() {
        let (poll, next) = interrupts.poll(exit.tsc);
        match (poll, event_port) {
            (TimerPoll::NotDue, _) => break,
            (TimerPoll::ToLocalApic(vector), _) => {
                let timer = match interrupts.timers.pit != next.timers.pit {
                    true => "PIT channel 0 is due (through pin 2 of the IO-APIC)",
                    false => "the local APIC's timer is due",
                };
                ticked.push(format!(
                    "{timer}: interrupt {vector:#x} is requested in the local APIC, which delivers it when its priority allows"
                ));
                effects.push(Effect::LocalApicRequest(vector));
                interrupts = next;
            }
            (TimerPoll::ToIrq0, _) => {
                ticked.push("PIT channel 0 is due (through the 8259A): IRQ 0 rises, and the PIC latches it in its IRR, to present it while IRQ 0 is unmasked and not in service".into());
                effects.push(Effect::PitTick);
                interrupts = next;
            }
            (TimerPoll::ToRtc, _) => {
                ticked.push("the RTC's timer is due (its next periodic tick, update end or alarm with its enable on): its flag is set in status C, and IRQ 8 follows IRQF".into());
                effects.push(Effect::RtcTick(exit.tsc));
                interrupts = next;
            }
            (TimerPoll::Pending(_) | TimerPoll::Merged(_), Some(port)) => {
                ticked.push(format!(
                    "the guest's own timer is due: it is bound to port {port} (VIRQ_TIMER), so the tick is an event there"
                ));
                effects.push(Effect::Notify {
                    to: guest.id,
                    port,
                    from_port: 0,
                });
                // An event, not an interrupt: what is pending stays as it was.
                interrupts.timers = next.timers;
            }
            (TimerPoll::Pending(vector), None) => {
                ticked.push(format!(
                    "the guest's own timer is due: interrupt {vector:#x} becomes pending for the guest"
                ));
                pending_changed = true;
                interrupts = next;
            }
            (TimerPoll::Merged(vector), None) => {
                ticked.push(format!(
                    "the guest's own timer is due again, but interrupt {vector:#x} is still pending: the two merge into one"
                ));
                pending_changed = true;
                interrupts = next;
            }
        }
    }
    // The tick is taken through the hypervisor's own IDT (`timer.rs`); the machine reports
    // its number for the `emulate` event.
    if ticked.is_empty() {
        return decide!(
            Action::Emulate,
            "a physical interrupt (the hypervisor's timer) arrived while the guest ran: the hypervisor takes it, the guest never sees it"
        )
        .with(Effect::AcknowledgeHostTimer);
    }
    let mut decision = decide!(
        Action::Emulate,
        "the hypervisor's timer interrupted the guest, and {}",
        ticked.join("; and ")
    )
    .with(Effect::AcknowledgeHostTimer)
    .with(Effect::Timers(interrupts.timers));
    for effect in effects {
        decision = decision.with(effect);
    }
    if pending_changed {
        decision = decision.with(Effect::PendingInterrupt(interrupts.pending));
    }
    decision
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::evtchn::{Callback, PortState};
    use crate::domain::interrupts::{TimerTarget, Timers, VirtualTimer};
    use crate::testing::{ENTRY, SHARED_INFO, Test};
    use traplab_abi::event::Notify;
    use traplab_abi::evtchn::virq;
    use traplab_abi::exit::ExitReason;

    /// A guest whose timer (vector 0x20, every 10,000 ticks) is due at `due`.
    fn with_timer(due: u64) -> Test {
        let mut test = Test::long_mode();
        test.domain.vcpu.interrupts.timers.set_timer = Some(VirtualTimer {
            vector: 0x20,
            period_tsc: 10_000,
            due_tsc: due,
            target: TimerTarget::Pending,
        });
        test
    }

    /// The effect that moves [`with_timer`]'s timer, due at `now`, to its next period.
    fn next_period(now: u64) -> Effect {
        Effect::Timers(Timers {
            set_timer: Some(VirtualTimer {
                vector: 0x20,
                period_tsc: 10_000,
                due_tsc: now + 10_000,
                target: TimerTarget::Pending,
            }),
            ..Timers::default()
        })
    }

    #[test]
    fn an_apic_one_shot_s_tick_leaves_the_pit_s_timer_counting() {
        // The APIC's one-shot and PIT channel 0's timer run side by side
        // (`apply::device_timers`): the one-shot's tick, noticed at the hypervisor's timer
        // interrupt, is requested in the APIC, and the PIT's timer, not yet due, is untouched.
        let mut test = Test::long_mode();
        let pit = VirtualTimer {
            vector: 0x20,
            period_tsc: 10_000,
            due_tsc: 2_000_000,
            target: TimerTarget::Irq0,
        };
        test.domain.vcpu.interrupts.timers = Timers {
            local_apic: Some(VirtualTimer {
                vector: 0x30,
                period_tsc: crate::domain::interrupts::ONCE,
                due_tsc: 900_000,
                target: TimerTarget::LocalApic,
            }),
            pit: Some(pit),
            set_timer: None,
            rtc: None,
        };
        let run = test.run(test.exit(ExitReason::Intr));
        assert!(
            run.decision.why.contains("interrupt 0x30 is requested"),
            "{}",
            run.decision.why
        );
        assert!(!run.decision.why.contains("PIT"), "{}", run.decision.why);
        let timers = test.domain.vcpu.interrupts.timers;
        assert_eq!((timers.local_apic, timers.pit), (None, Some(pit)));
        assert!(test.domain.devices.lapic.requested.contains(0x30));
    }

    #[test]
    fn a_host_tick_before_the_guest_s_deadline_only_acknowledges_the_tick() {
        let test = with_timer(2_000_000);
        let decision = test.decide(test.exit(ExitReason::Intr));
        assert_eq!(decision.action, Action::Emulate);
        assert_eq!(decision.effects, [Effect::AcknowledgeHostTimer]);
        assert!(decision.why.contains("the guest never sees it"));
    }

    #[test]
    fn a_host_tick_after_the_deadline_makes_the_guest_s_interrupt_pending() {
        let test = with_timer(900_000);
        let now = test.machine.now.get();
        let decision = test.decide(test.exit(ExitReason::Intr));
        assert!(decision.why.contains("interrupt 0x20 becomes pending"));
        assert_eq!(
            decision.effects,
            [
                Effect::AcknowledgeHostTimer,
                next_period(now),
                Effect::PendingInterrupt(Some(0x20)),
            ]
        );
    }

    #[test]
    fn a_deadline_while_the_last_interrupt_is_still_pending_merges_into_it() {
        // As a PIC's interrupt request register: one bit per line, so two requests for the
        // same vector before it is taken are one interrupt.
        let mut test = with_timer(900_000);
        test.domain.vcpu.interrupts.pending = Some(0x20);
        let decision = test.decide(test.exit(ExitReason::Intr));
        assert!(decision.why.contains("merge"), "{}", decision.why);
        assert!(
            decision
                .effects
                .contains(&Effect::PendingInterrupt(Some(0x20)))
        );
    }

    #[test]
    fn the_tick_is_acknowledged_on_the_host_and_the_guest_resumes_where_it_was() {
        let mut test = with_timer(2_000_000);
        let run = test.run(test.exit(ExitReason::Intr));
        assert_eq!(test.machine.calls, ["acknowledge_timer"]);
        assert_eq!(run.kinds(), ["decide", "emulate"]);
        assert_eq!(run.emulate().what, "timer tick 1 acknowledged");
        assert_eq!(test.rip(), ENTRY, "an interrupt is not an instruction");
    }

    /// A guest whose timer is due at `due`, bound to port 2 (VIRQ_TIMER), with its
    /// shared-info page.
    fn bound_to_virq_timer(due: u64) -> Test {
        let mut test = with_timer(due);
        test.domain.events.shared_info = Some(SHARED_INFO);
        test.domain.events.ports[2] = PortState::Virq(virq::TIMER);
        test
    }

    #[test]
    fn a_due_timer_bound_to_virq_timer_is_an_event_on_its_port_not_an_interrupt() {
        // Xen's timer VIRQ: send_timer_event calls send_guest_vcpu_virq(v, VIRQ_TIMER)
        // (xen/common/event_channel.c), which makes the bound port pending; no interrupt.
        let mut test = bound_to_virq_timer(900_000);
        let now = test.machine.now.get();
        let run = test.run(test.exit(ExitReason::Intr));
        assert_eq!(run.decision.action, Action::Emulate);
        assert!(
            run.decision
                .why
                .contains("it is bound to port 2 (VIRQ_TIMER), so the tick is an event there"),
            "{}",
            run.decision.why
        );
        assert_eq!(
            run.decision.effects,
            [
                Effect::AcknowledgeHostTimer,
                next_period(now),
                Effect::Notify {
                    to: 1,
                    port: 2,
                    from_port: 0
                },
            ]
        );
        assert_eq!(run.kinds(), ["decide", "notify", "emulate"]);
        assert_eq!(
            run.notifies(),
            [&Notify {
                to: 1,
                port: 2,
                from_port: 0,
                woke: false,
                masked: false,
            }]
        );
        assert_eq!(run.emulate().what, "timer tick 1 acknowledged");
        assert_eq!(
            test.domain.vcpu.interrupts.pending, None,
            "no interrupt 0x20"
        );
        assert!(test.domain.event_pending(2));
        assert!(test.domain.upcall_pending());
        assert_eq!(test.rip(), ENTRY);
    }

    #[test]
    fn the_timer_s_event_comes_as_the_upcall_when_the_guest_has_a_callback_vector() {
        let mut test = bound_to_virq_timer(900_000);
        test.domain.events.callback = Callback::Vector(0xf3);
        test.interrupts_on();
        test.gate(0xf3, 0x21_3000);
        let run = test.run(test.exit(ExitReason::Intr));
        assert_eq!(run.kinds(), ["decide", "notify", "emulate", "inject"]);
        assert_eq!(run.injected().vector, 0xf3);
    }

    #[test]
    fn a_host_tick_before_the_deadline_of_a_timer_bound_to_a_port_only_acknowledges() {
        let test = bound_to_virq_timer(2_000_000);
        let decision = test.decide(test.exit(ExitReason::Intr));
        assert_eq!(decision.effects, [Effect::AcknowledgeHostTimer]);
    }

    #[test]
    fn a_due_timer_with_interrupts_off_asks_the_cpu_for_the_interrupt_window() {
        // The interrupt is pending, but RFLAGS.IF = 0: V_IRQ and the VINTR intercept make
        // the CPU exit as soon as the guest can take it (AMD APM vol. 2, 15.21.4).
        let mut test = with_timer(900_000);
        let run = test.run(test.exit(ExitReason::Intr));
        assert_eq!(test.domain.vcpu.interrupts.pending, Some(0x20));
        assert_eq!(run.kinds(), ["decide", "emulate", "emulate"]);
        let control = &test.domain.vcpu.vmcb.control;
        assert_ne!(control.virtual_interrupt & crate::vmcb::v_intr::IRQ, 0);
        assert_ne!(control.intercept_misc1 & crate::vmcb::misc1::VINTR, 0);
    }
}
