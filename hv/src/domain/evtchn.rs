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
    /// `evtchn_pending_sel` and `evtchn_upcall_pending`. Without a shared-info page nothing
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
            self.set_shared_info_bit(shared_info::PENDING_SEL, port / 64);
            self.write_shared_info_byte(shared_info::UPCALL_PENDING, 1);
            result.upcall = true;
        }
        result
    }

    /// Clear `port`'s mask bit (Xen's `evtchn_unmask`): if the port is pending, the upcall
    /// it was held back from is owed now. Whether one is.
    pub fn unmask(&mut self, port: Port) -> bool {
        let (offset, mask) = bit(shared_info::EVTCHN_MASK, port);
        let Some(byte) = self.shared_info_byte(offset) else {
            return false;
        };
        self.write_shared_info_byte(offset, byte & !mask);
        if !self.event_pending(port) {
            return false;
        }
        self.set_shared_info_bit(shared_info::PENDING_SEL, port / 64);
        self.write_shared_info_byte(shared_info::UPCALL_PENDING, 1);
        true
    }

    /// The interrupt the guest is owed now, if any: its timer's, or its callback vector
    /// while an upcall is pending (level-triggered, as Xen's HVM callback vector: it comes
    /// again until the guest clears `evtchn_upcall_pending`). The higher vector first, as a
    /// local APIC orders them.
    pub fn pending_interrupt(&self) -> Option<u8> {
        let upcall = match self.events.callback {
            Callback::Vector(vector) if self.upcall_pending() => Some(vector),
            _ => None,
        };
        self.vcpu.interrupts.pending.max(upcall)
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
