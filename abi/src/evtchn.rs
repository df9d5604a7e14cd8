//! Event channels: how one domain notifies another, on Xen's ABI (`xen/include/public/
//! event_channel.h`, and the shared-info page of `xen.h`).
//!
//! An event channel is a pair of *ports*, one in each domain, that the hypervisor links.
//! Sending on one end makes the other end *pending*: the hypervisor sets the port's bit in
//! the receiver's shared-info page and, unless the receiver masked it, interrupts the
//! receiver with an *upcall*: an interrupt through its IDT, with the vector it registered
//! (`set_callback`, as an HVM guest's callback vector under Xen). The receiver's handler finds the pending ports in the page, clears their
//! bits, and does the work. The sender has done nothing but a hypercall: the other domain
//! runs because of it, later, in its own time.
//!
//! Setting one up takes two steps, as in Xen: the receiving side allocates an *unbound*
//! port that a named remote domain may connect to (`EVTCHNOP_alloc_unbound`), and tells the
//! other side its number out of band (traplab's store, `store.rs`); the remote domain binds
//! a port of its own to it (`EVTCHNOP_bind_interdomain`). Only the control domain (dom0)
//! may allocate a port in *another* domain.
//!
//! The calls are `event_channel_op(cmd, arg)` (hypercall [`crate::hypercall::EVENT_CHANNEL_OP`]):
//! `cmd` is one of [`cmd`], `arg` the guest-virtual address of the command's structure, laid
//! out as in Xen's header (the hypervisor reads it and writes the outputs back).

/// A port number: 1 to [`PORTS`] − 1 (port 0 is never allocated, as in Xen).
pub type Port = u32;

/// How many ports a domain has in traplab (Xen's 2-level ABI allows 4096 on x86-64; the
/// bitmaps below have room for them all).
pub const PORTS: u32 = 64;

/// `dom` meaning "the calling domain" (Xen's `DOMID_SELF`).
pub const DOMID_SELF: u16 = 0x7ff0;

/// The commands of `event_channel_op` (Xen's `EVTCHNOP_*` numbers).
pub mod cmd {
    /// [`super::BindInterdomain`]: connect a new local port to a remote domain's unbound port.
    pub const BIND_INTERDOMAIN: u64 = 0;
    /// [`super::BindVirq`]: a port for a virtual interrupt of the hypervisor (the timer).
    pub const BIND_VIRQ: u64 = 1;
    /// [`super::PortArg`]: close a port (its peer becomes unbound again).
    pub const CLOSE: u64 = 3;
    /// [`super::PortArg`]: notify the other end.
    pub const SEND: u64 = 4;
    /// [`super::AllocUnbound`]: a port that `remote_dom` may bind to.
    pub const ALLOC_UNBOUND: u64 = 6;
    /// [`super::PortArg`]: clear the port's mask bit; if it is pending, the upcall comes.
    pub const UNMASK: u64 = 9;

    /// The command's name, as Xen spells it.
    pub fn name(cmd: u64) -> Option<&'static str> {
        Some(match cmd {
            BIND_INTERDOMAIN => "EVTCHNOP_bind_interdomain",
            BIND_VIRQ => "EVTCHNOP_bind_virq",
            CLOSE => "EVTCHNOP_close",
            SEND => "EVTCHNOP_send",
            ALLOC_UNBOUND => "EVTCHNOP_alloc_unbound",
            UNMASK => "EVTCHNOP_unmask",
            _ => return None,
        })
    }
}

/// The hypervisor's virtual interrupts a port can be bound to (Xen's `VIRQ_*`).
pub mod virq {
    /// The domain's periodic timer (`set_timer`): its ticks come as events instead.
    pub const TIMER: u32 = 0;
    /// How many VIRQ numbers Xen's ABI has (`NR_VIRQS`); traplab raises only [`TIMER`].
    pub const COUNT: u32 = 24;

    /// Is `virq` one of a domain's, bound on vCPU 0 only, rather than one each vCPU has
    /// (Xen's `virq_is_global`: all but VIRQ_TIMER 0, VIRQ_DEBUG 1, VIRQ_XENOPROF 5 and
    /// VIRQ_XENPMU 13, in `xen/include/public/xen.h`)?
    pub fn is_global(virq: u32) -> bool {
        !matches!(virq, TIMER | 1 | 5 | 13)
    }
}

/// `EVTCHNOP_alloc_unbound`: allocate a port in domain `dom` (`DOMID_SELF`, or any domain
/// when the caller is dom0) that `remote_dom` may bind to. Out: `port`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllocUnbound {
    pub dom: u16,
    pub remote_dom: u16,
    pub port: Port,
}

/// `EVTCHNOP_bind_interdomain`: connect a new local port to `remote_port` of `remote_dom`,
/// which must be unbound and allocated for the caller. Out: `local_port`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BindInterdomain {
    pub remote_dom: u16,
    pub _pad: u16,
    pub remote_port: Port,
    pub local_port: Port,
}

/// `EVTCHNOP_bind_virq`: a port for virtual interrupt `virq` of vCPU `vcpu`. Out: `port`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BindVirq {
    pub virq: u32,
    pub vcpu: u32,
    pub port: Port,
}

/// `EVTCHNOP_send`, `EVTCHNOP_close`, `EVTCHNOP_unmask`: one port.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortArg {
    pub port: Port,
}

/// The shared-info page (Xen's `struct shared_info` for x86-64): where the hypervisor marks
/// pending events and the guest masks them, one 4 KiB page of the guest's own RAM that it
/// names with `set_shared_info`. Offsets in the page:
pub mod shared_info {
    /// `vcpu_info[0].evtchn_upcall_pending` (u8): the hypervisor sets it with a port's
    /// pending bit; the guest's handler clears it.
    pub const UPCALL_PENDING: u64 = 0;
    /// `vcpu_info[0].evtchn_upcall_mask` (u8): while the guest sets it, no upcall comes
    /// (the events stay pending), as `cli` for events.
    pub const UPCALL_MASK: u64 = 1;
    /// `vcpu_info[0].evtchn_pending_sel` (u64): which words of `EVTCHN_PENDING` have a bit.
    pub const PENDING_SEL: u64 = 8;
    /// `evtchn_pending[64]` (u64 each): bit `port % 64` of word `port / 64`.
    pub const EVTCHN_PENDING: u64 = 0x800;
    /// `evtchn_mask[64]`: a masked port's events stay pending without an upcall.
    pub const EVTCHN_MASK: u64 = 0xa00;
}

/// How a domain takes its upcall (`set_callback`).
pub mod callback {
    /// An interrupt through the guest's IDT, vector `target` (32–255), as an HVM guest's
    /// "callback via vector" in Xen.
    pub const VECTOR: u64 = 0;
    /// A bounce to the handler at address `target`, as a PV guest's event callback (Xen's
    /// `set_callbacks`). Not implemented: traplab answers ENOSYS.
    pub const ADDRESS: u64 = 1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn the_structures_have_xen_s_layout() {
        assert_eq!(size_of::<AllocUnbound>(), 8);
        assert_eq!(offset_of!(AllocUnbound, port), 4);
        assert_eq!(size_of::<BindInterdomain>(), 12);
        assert_eq!(offset_of!(BindInterdomain, remote_port), 4);
        assert_eq!(offset_of!(BindInterdomain, local_port), 8);
        assert_eq!(size_of::<BindVirq>(), 12);
        assert_eq!(size_of::<PortArg>(), 4);
        assert_eq!(cmd::name(cmd::SEND), Some("EVTCHNOP_send"));
    }
}
