//! A domain's event channels: its ports, where its pending bits are, how it takes its
//! upcall (Xen's `struct evtchn` and the shared-info page; the ABI is
//! `traplab_abi::evtchn`).
//!
//! The hypervisor keeps each port's *state* (free, unbound for a named remote domain, bound
//! to a remote port, bound to a virtual interrupt). The *pending* and *mask* bits are in the
//! guest's shared-info page, as in Xen: the hypervisor sets a pending bit when an event
//! arrives, the guest clears it when it has handled the event, and sets a mask bit to hold a
//! port's events back. The hypervisor reads and writes them through guest memory.

use super::Domain;
use super::memory::MemoryError;
use traplab_abi::evtchn::{PORTS, Port, shared_info};

/// What a port is (Xen's `ECS_*` states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PortState {
    /// Not allocated.
    #[default]
    Free,
    /// Allocated; domain `remote` may bind a port of its own to it.
    Unbound { remote: u16 },
    /// Connected to `remote_port` of domain `remote`: a send here makes that one pending.
    Interdomain { remote: u16, remote_port: Port },
    /// Bound to a virtual interrupt of the hypervisor (`traplab_abi::evtchn::virq`).
    Virq(u32),
    /// The domain's store port: a write of a node it watches makes it pending
    /// (`store_watch_event`, as xenstored's watch events come on the xenstore event channel).
    Store,
}

/// How a domain takes its upcall (`set_callback`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Callback {
    /// None registered: events stay pending until the guest looks (or polls).
    #[default]
    None,
    /// An interrupt through its IDT (an HVM guest's callback vector).
    Vector(u8),
}

/// What making a port pending did (Xen's `evtchn_set_pending`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// The port was pending already: the two events are one.
    pub already: bool,
    /// The port is masked: no upcall is owed for it.
    pub masked: bool,
    /// An upcall is owed now (`evtchn_upcall_pending` was set).
    pub upcall: bool,
}

/// One domain's event channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventChannels {
    pub ports: [PortState; PORTS as usize],
    /// The guest-physical address of its shared-info page, once it named one.
    pub shared_info: Option<u64>,
    pub callback: Callback,
}

impl Default for EventChannels {
    fn default() -> Self {
        EventChannels {
            ports: [PortState::Free; PORTS as usize],
            shared_info: None,
            callback: Callback::None,
        }
    }
}

impl EventChannels {
    /// The lowest free port (port 0 is never allocated).
    pub fn free_port(&self) -> Option<Port> {
        (1..PORTS).find(|&port| self.ports[port as usize] == PortState::Free)
    }

    /// The state of `port`, or `None` outside the table.
    pub fn state(&self, port: Port) -> Option<PortState> {
        self.ports.get(port as usize).copied()
    }

    /// The domain's store port, if a watch bound it.
    pub fn store_port(&self) -> Option<Port> {
        (1..PORTS).find(|&port| self.ports[port as usize] == PortState::Store)
    }

    /// The port bound to virtual interrupt `virq`, if any.
    pub fn virq_port(&self, virq: u32) -> Option<Port> {
        (1..PORTS).find(|&port| self.ports[port as usize] == PortState::Virq(virq))
    }
}

/// Where bit `index` of a bitmap at `offset` in the shared-info page lives: the byte, and
/// the bit in it.
pub fn bit(offset: u64, index: u32) -> (u64, u8) {
    (offset + index as u64 / 8, 1 << (index % 8))
}

impl Domain {
    /// Make `port` pending in the shared-info page, as Xen's 2-level `evtchn_set_pending`:
    /// set its bit; unless it was set already or the port is masked, set its word's bit in
    /// `evtchn_pending_sel` and, when that is new, `evtchn_upcall_pending`. Without a shared-info page nothing
    /// can be marked (the hypercalls that bind a port refuse a domain without one).
    pub fn set_pending(&mut self, port: Port) -> Pending {
        let masked = self.event_masked(port);
        let mut result = Pending {
            already: self.event_pending(port),
            masked,
            upcall: false,
        };
        if result.already || !self.set_shared_info_bit(shared_info::EVTCHN_PENDING, port) {
            return result;
        }
        if !masked {
            result.upcall = self.mark_selector(port);
        }
        result
    }

    /// Set `port`'s word in `evtchn_pending_sel`; if the bit is new, set
    /// `evtchn_upcall_pending` too: an upcall is owed (Xen's 2-level `evtchn_set_pending`
    /// and `vcpu_mark_events_pending`). Whether it was new: when it was set already, the
    /// guest owes itself a look at that word anyway.
    fn mark_selector(&mut self, port: Port) -> bool {
        let (offset, mask) = bit(shared_info::PENDING_SEL, port / 64);
        match self.shared_info_byte(offset) {
            Some(byte) if byte & mask == 0 => {
                self.write_shared_info_byte(offset, byte | mask);
                self.write_shared_info_byte(shared_info::UPCALL_PENDING, 1);
                true
            }
            _ => false,
        }
    }

    /// Clear `port`'s pending bit, as Xen's `evtchn_free` does when a port is closed ("to
    /// avoid unexpected behavior on re-bind"): whether it was set.
    pub fn clear_pending(&mut self, port: Port) -> bool {
        let (offset, mask) = bit(shared_info::EVTCHN_PENDING, port);
        match self.shared_info_byte(offset) {
            Some(byte) if byte & mask != 0 => self.write_shared_info_byte(offset, byte & !mask),
            _ => false,
        }
    }

    /// Clear `port`'s mask bit (Xen's `evtchn_unmask`): if it was set and the port is
    /// pending, the upcall it held back is owed now. Whether one is.
    pub fn unmask(&mut self, port: Port) -> bool {
        let (offset, mask) = bit(shared_info::EVTCHN_MASK, port);
        let Some(byte) = self.shared_info_byte(offset) else {
            return false;
        };
        self.write_shared_info_byte(offset, byte & !mask);
        byte & mask != 0 && self.event_pending(port) && self.mark_selector(port)
    }

    /// The interrupt the guest is owed now, if any: its timer's, its callback vector while
    /// an upcall is pending and not masked (level-triggered, as Xen's HVM callback vector: it
    /// comes again until the guest clears `evtchn_upcall_pending`), or the one its local APIC or its PICs
    /// present (`device/lapic.rs`, `device/pic.rs`). The higher vector first, as a local
    /// APIC orders them.
    pub fn pending_interrupt(&self) -> Option<u8> {
        // `evtchn_upcall_mask` holds it back, as `cli` for events (`traplab_abi::evtchn`).
        let upcall = match self.events.callback {
            Callback::Vector(vector) if self.upcall_pending() && !self.upcalls_masked() => {
                Some(vector)
            }
            _ => None,
        };
        let local_apic = self.devices.lapic.next_to_deliver();
        let pic = self.devices.pic.presented();
        self.vcpu
            .interrupts
            .pending
            .max(upcall)
            .max(local_apic)
            .max(pic)
    }

    /// Put the shared-info page at guest-physical `page` (`set_shared_info`). Xen's shared
    /// info is one frame the guest maps where it asks: asked again, the frame moves, and what
    /// it holds (pending and masked ports, the upcall's flags) goes with it. Here it is a page
    /// of the guest's RAM, so a second call copies the old page's contents to the new page.
    /// The page it moved from, if it moved; or why the copy failed (an old page that cannot
    /// be read, a new one that cannot be written; the handler checked both are RAM).
    pub fn move_shared_info(&mut self, page: u64) -> Result<Option<u64>, MemoryError> {
        let moved = self.events.shared_info.filter(|&old| old != page);
        if let Some(old) = moved {
            // On the heap: the hypervisor's stack is small.
            let mut contents = alloc::vec![0u8; 4096];
            self.memory.read_physical(old, &mut contents)?;
            self.memory.write_physical(page, &contents)?;
        }
        self.events.shared_info = Some(page);
        Ok(moved)
    }

    /// Set or clear `evtchn_upcall_mask`.
    pub fn set_upcall_mask(&mut self, masked: bool) {
        self.write_shared_info_byte(shared_info::UPCALL_MASK, masked as u8);
    }

    fn set_shared_info_bit(&mut self, offset: u64, index: u32) -> bool {
        let (offset, mask) = bit(offset, index);
        match self.shared_info_byte(offset) {
            Some(byte) => self.write_shared_info_byte(offset, byte | mask),
            None => false,
        }
    }

    fn write_shared_info_byte(&mut self, offset: u64, value: u8) -> bool {
        let Some(page) = self.events.shared_info else {
            return false;
        };
        self.memory.write_physical(page + offset, &[value]).is_ok()
    }

    /// A byte of the shared-info page, or `None` without a page (or an unreadable one).
    pub fn shared_info_byte(&self, offset: u64) -> Option<u8> {
        let page = self.events.shared_info?;
        let mut byte = [0u8; 1];
        self.memory.read_physical(page + offset, &mut byte).ok()?;
        Some(byte[0])
    }

    /// Is `port` pending in the shared-info page?
    pub fn event_pending(&self, port: Port) -> bool {
        let (offset, mask) = bit(shared_info::EVTCHN_PENDING, port);
        self.shared_info_byte(offset)
            .is_some_and(|byte| byte & mask != 0)
    }

    /// Has the guest masked `port`?
    pub fn event_masked(&self, port: Port) -> bool {
        let (offset, mask) = bit(shared_info::EVTCHN_MASK, port);
        self.shared_info_byte(offset)
            .is_some_and(|byte| byte & mask != 0)
    }

    /// Has the guest masked every upcall (`evtchn_upcall_mask`)?
    pub fn upcalls_masked(&self) -> bool {
        self.shared_info_byte(shared_info::UPCALL_MASK)
            .is_some_and(|byte| byte != 0)
    }

    /// Is an upcall owed (`evtchn_upcall_pending`)?
    pub fn upcall_pending(&self) -> bool {
        self.shared_info_byte(shared_info::UPCALL_PENDING)
            .is_some_and(|byte| byte != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{ENTRY, Run, SHARED_INFO, Test};
    use crate::vmcb::{misc1, v_intr};
    use traplab_abi::event::{Body, EventType};
    use traplab_abi::exit::ExitReason;
    use traplab_abi::x86::RFlags;

    const PAUSE: [u8; 2] = [0xf3, 0x90];
    const UPCALL: u8 = 0xf3;
    const HANDLER: u64 = 0x21_3000;

    /// A domain with a shared-info page at [`SHARED_INFO`] and nothing pending.
    fn with_page() -> Test {
        let mut test = Test::long_mode();
        test.domain.events.shared_info = Some(SHARED_INFO);
        test
    }

    fn byte(test: &Test, offset: u64) -> u8 {
        test.domain.shared_info_byte(offset).expect("a page")
    }

    fn pending_sel(test: &Test) -> u64 {
        test.read_u64(SHARED_INFO + shared_info::PENDING_SEL)
    }

    #[test]
    fn a_port_s_bit_is_bit_port_mod_8_of_byte_port_div_8() {
        // The bitmaps are arrays of xen_ulong_t, little-endian: bit n of the array is bit
        // n % 8 of byte n / 8.
        assert_eq!(bit(shared_info::EVTCHN_PENDING, 0), (0x800, 1));
        assert_eq!(bit(shared_info::EVTCHN_PENDING, 13), (0x801, 1 << 5));
        assert_eq!(bit(shared_info::EVTCHN_MASK, 63), (0xa07, 1 << 7));
    }

    #[test]
    fn a_word_already_selected_owes_no_new_upcall() {
        // evtchn_2l_set_pending: only a new bit in evtchn_pending_sel marks the upcall; the
        // guest will look at that word anyway.
        let mut test = with_page();
        test.domain.set_pending(3);
        test.write(SHARED_INFO + shared_info::UPCALL_PENDING, &[0]);
        let second = test.domain.set_pending(5);
        assert_eq!(
            second,
            Pending {
                already: false,
                masked: false,
                upcall: false
            }
        );
        assert!(test.domain.event_pending(5));
        assert_eq!(byte(&test, shared_info::UPCALL_PENDING), 0);
    }

    #[test]
    fn unmask_owes_an_upcall_only_for_a_port_that_was_masked_and_is_pending() {
        // evtchn_2l_unmask: test_and_clear_bit(mask) && test_bit(pending) &&
        // !test_and_set_bit(pending_sel).
        let mut test = with_page();
        test.domain.set_pending(3);
        test.write(SHARED_INFO + shared_info::UPCALL_PENDING, &[0]);
        test.write(SHARED_INFO + shared_info::PENDING_SEL, &[0]);
        assert!(!test.domain.unmask(3), "not masked: nothing was held back");
        assert_eq!(byte(&test, shared_info::UPCALL_PENDING), 0);
        let (offset, mask) = bit(shared_info::EVTCHN_MASK, 3);
        test.write(SHARED_INFO + offset, &[mask]);
        assert!(test.domain.unmask(3));
        assert_eq!(byte(&test, shared_info::UPCALL_PENDING), 1);
        assert!(!test.domain.event_masked(3));
    }

    #[test]
    fn set_pending_marks_the_port_its_word_and_the_upcall() {
        // xen/common/event_2l.c, evtchn_2l_set_pending.
        let mut test = with_page();
        let pending = test.domain.set_pending(13);
        assert_eq!(
            pending,
            Pending {
                already: false,
                masked: false,
                upcall: true
            }
        );
        assert_eq!(byte(&test, shared_info::EVTCHN_PENDING + 1), 1 << 5);
        assert_eq!(pending_sel(&test), 1, "port 13 is in word 0");
        assert_eq!(byte(&test, shared_info::UPCALL_PENDING), 1);
        assert!(test.domain.event_pending(13));
        assert!(test.domain.upcall_pending());
    }

    #[test]
    fn set_pending_of_a_masked_port_marks_only_the_port() {
        let mut test = with_page();
        test.write(SHARED_INFO + shared_info::EVTCHN_MASK + 1, &[1 << 5]);
        let pending = test.domain.set_pending(13);
        assert_eq!(
            pending,
            Pending {
                already: false,
                masked: true,
                upcall: false
            }
        );
        assert!(test.domain.event_pending(13));
        assert_eq!(pending_sel(&test), 0);
        assert!(!test.domain.upcall_pending());
    }

    #[test]
    fn set_pending_of_a_port_already_pending_changes_nothing() {
        let mut test = with_page();
        test.write(SHARED_INFO + shared_info::EVTCHN_PENDING, &[1 << 3]);
        let pending = test.domain.set_pending(3);
        assert_eq!(
            pending,
            Pending {
                already: true,
                masked: false,
                upcall: false
            }
        );
        assert_eq!(pending_sel(&test), 0);
        assert!(!test.domain.upcall_pending());
    }

    #[test]
    fn without_a_shared_info_page_nothing_is_marked_and_no_upcall_is_owed() {
        let mut test = Test::long_mode();
        test.domain.events.callback = Callback::Vector(UPCALL);
        let pending = test.domain.set_pending(3);
        assert_eq!(
            pending,
            Pending {
                already: false,
                masked: false,
                upcall: false
            }
        );
        assert!(!test.domain.event_pending(3));
        assert!(!test.domain.unmask(3));
        assert_eq!(test.domain.pending_interrupt(), None);
        assert_eq!(test.domain.shared_info_byte(0), None);
    }

    #[test]
    fn the_lowest_free_port_is_allocated_and_never_port_0() {
        let mut events = EventChannels::default();
        assert_eq!(events.free_port(), Some(1));
        events.ports[1] = PortState::Virq(0);
        events.ports[2] = PortState::Unbound { remote: 0 };
        assert_eq!(events.free_port(), Some(3));
        assert_eq!(events.virq_port(0), Some(1));
        assert_eq!(events.state(PORTS), None);
        for port in 1..PORTS as usize {
            events.ports[port] = PortState::Unbound { remote: 0 };
        }
        assert_eq!(events.free_port(), None);
    }

    // ---- The upcall through the guest's IDT (Xen's HVM callback vector) ---------------

    /// A guest at a PAUSE, interrupts on, with callback vector 0xf3 and an IDT gate for
    /// it, and `evtchn_upcall_pending` set.
    fn owed_an_upcall() -> Test {
        let mut test = with_page();
        test.code(&PAUSE);
        test.interrupts_on();
        test.domain.events.callback = Callback::Vector(UPCALL);
        test.gate(UPCALL, HANDLER);
        test.write(SHARED_INFO + shared_info::UPCALL_PENDING, &[1]);
        test
    }

    /// The guest took what was injected; it is back at the PAUSE.
    fn pause_again(test: &mut Test) -> Run {
        test.vmrun();
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        test.run(test.exit(ExitReason::Pause))
    }

    #[test]
    fn an_owed_upcall_is_injected_through_the_idt_after_any_exit() {
        // Xen's HVMIRQ_callback_vector: while evtchn_upcall_pending is set, the callback
        // vector is a pending interrupt, injected like any other (AMD APM vol. 2, 15.20).
        let mut test = owed_an_upcall();
        let run = test.run(test.exit(ExitReason::Pause));
        assert_eq!(run.kinds(), ["decide", "emulate", "inject"]);
        let inject = run.injected();
        assert_eq!(
            (inject.vector, inject.kind, inject.handler, inject.synthetic),
            (UPCALL, EventType::Interrupt, Some(HANDLER), false)
        );
        assert_eq!(run.applied.resume_at, Some(HANDLER));
        assert!(run.applied.injected);
    }

    #[test]
    fn the_upcall_and_the_timer_s_interrupt_go_in_higher_vector_first() {
        // As a local APIC orders them: a vector's priority is its upper four bits, and the
        // highest goes first (AMD APM vol. 2, chapter 16, the APIC).
        let mut test = owed_an_upcall();
        test.gate(0x20, HANDLER + 0x100);
        test.domain.vcpu.interrupts.pending = Some(0x20);
        let run = test.run(test.exit(ExitReason::Pause));
        assert_eq!(run.injected().vector, UPCALL);
        assert_eq!(
            test.domain.vcpu.interrupts.pending,
            Some(0x20),
            "the timer's waits"
        );
        // The guest's handler clears evtchn_upcall_pending; the timer's comes next.
        test.write(SHARED_INFO + shared_info::UPCALL_PENDING, &[0]);
        let run = pause_again(&mut test);
        assert_eq!(run.injected().vector, 0x20);
        assert_eq!(test.domain.vcpu.interrupts.pending, None);
    }

    #[test]
    fn a_timer_vector_above_the_upcall_s_goes_first_and_the_upcall_stays_owed() {
        let mut test = owed_an_upcall();
        test.gate(0xf8, HANDLER + 0x100);
        test.domain.vcpu.interrupts.pending = Some(0xf8);
        let run = test.run(test.exit(ExitReason::Pause));
        assert_eq!(run.injected().vector, 0xf8);
        assert_eq!(
            test.domain.vcpu.interrupts.pending, None,
            "the timer's taken"
        );
        assert_eq!(test.domain.pending_interrupt(), Some(UPCALL));
        let run = pause_again(&mut test);
        assert_eq!(run.injected().vector, UPCALL);
    }

    #[test]
    fn the_upcall_is_level_triggered_until_the_guest_clears_upcall_pending() {
        // Xen asks at every VM entry (xen/arch/x86/hvm/irq.c, hvm_vcpu_has_pending_irq):
        // `if ( (plat->irq->callback_via_type == HVMIRQ_callback_vector) &&
        // vcpu_info(v, evtchn_upcall_pending) ) return hvm_intack_vector(…);`.
        let mut test = owed_an_upcall();
        test.run(test.exit(ExitReason::Pause));
        let run = pause_again(&mut test);
        assert_eq!(run.injected().vector, UPCALL, "still owed");
        test.write(SHARED_INFO + shared_info::UPCALL_PENDING, &[0]);
        let run = pause_again(&mut test);
        assert_eq!(run.kinds(), ["decide", "emulate"], "no upcall any more");
        assert_eq!(test.domain.pending_interrupt(), None);
    }

    #[test]
    fn with_if_clear_the_upcall_waits_for_the_interrupt_window() {
        // V_IRQ and the VINTR intercept (AMD APM vol. 2, 15.21.4); the VINTR exit then
        // injects the upcall.
        let mut test = owed_an_upcall();
        test.domain.vcpu.vmcb.save.rflags &= !RFlags::INTERRUPT_FLAG.bits();
        let run = test.run(test.exit(ExitReason::Pause));
        assert_eq!(run.kinds(), ["decide", "emulate", "emulate"]);
        let Some(Body::Emulate(request)) = run.events.last() else {
            panic!("{:?}", run.kinds())
        };
        assert!(
            request
                .what
                .starts_with("interrupt 0xf3 is pending but the guest has interrupts off"),
            "{}",
            request.what
        );
        let control = &test.domain.vcpu.vmcb.control;
        assert_ne!(control.virtual_interrupt & v_intr::IRQ, 0);
        assert_eq!(
            control.virtual_interrupt >> v_intr::VECTOR_SHIFT & 0xff,
            UPCALL as u64
        );
        assert_ne!(control.intercept_misc1 & misc1::VINTR, 0);
        // The guest sets IF: the CPU exits with VINTR, and the upcall goes in.
        test.vmrun();
        test.interrupts_on();
        let run = test.run(test.exit(ExitReason::Vintr));
        assert_eq!(run.injected().vector, UPCALL);
    }

    #[test]
    fn without_a_callback_vector_an_owed_upcall_is_no_interrupt() {
        let mut test = owed_an_upcall();
        test.domain.events.callback = Callback::None;
        assert_eq!(test.domain.pending_interrupt(), None);
        let run = test.run(test.exit(ExitReason::Pause));
        assert_eq!(run.kinds(), ["decide", "emulate"]);
    }
}
