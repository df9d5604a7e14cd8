//! Event channels from the guest's side, as a Linux HVM guest uses them under Xen
//! (`drivers/xen/events/events_base.c`, 2-level ABI): a shared-info page, a callback
//! vector, and the hypercalls (`traplab_abi::evtchn`).
//!
//! [`init`] gives the hypervisor our shared-info page and registers [`CALLBACK_VECTOR`]: a
//! pending event then interrupts us through our IDT. The handler the guest registers calls
//! [`take_pending`], which does what Linux's `__xen_evtchn_do_upcall` does: clear
//! `evtchn_upcall_pending` first (so an event that arrives meanwhile interrupts again), then
//! take each pending, unmasked port, clearing its bit.

use crate::hypercall::{event_channel_op, set_callback, set_shared_info};
use crate::traps::{self, Handler};
use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use traplab_abi::evtchn::{
    AllocUnbound, BindInterdomain, BindVirq, DOMID_SELF, PORTS, Port, PortArg, callback, cmd,
    shared_info,
};

/// The interrupt vector of our upcall. (Linux uses 0xf3, `HYPERVISOR_CALLBACK_VECTOR`; the
/// runtime's IDT has the 16 vectors 0x20–0x2F, and this is the last of them.)
pub const CALLBACK_VECTOR: u8 = 0x2f;

/// The shared-info page: the hypervisor marks pending events here, we mask them here.
#[repr(C, align(4096))]
struct SharedInfo([u8; 4096]);

static mut SHARED_INFO: SharedInfo = SharedInfo([0; 4096]);

fn shared_info() -> *mut u8 {
    (&raw mut SHARED_INFO).cast()
}

/// A byte of the page, read and written atomically: the hypervisor changes it too (while
/// we are stopped at an exit, but the compiler must not cache it across one).
fn byte(offset: u64) -> &'static AtomicU8 {
    // SAFETY: the page is a static of 4096 bytes, `offset` is inside it, and AtomicU8 has
    // the layout of u8.
    unsafe { &*(shared_info().add(offset as usize) as *const AtomicU8) }
}

fn word(offset: u64) -> &'static AtomicU64 {
    // SAFETY: as in `byte`; the bitmaps are 8-byte aligned in the page.
    unsafe { &*(shared_info().add(offset as usize) as *const AtomicU64) }
}

/// Name the shared-info page and, with `handler`, take upcalls on [`CALLBACK_VECTOR`].
/// Without a handler, events stay pending until we look (or poll). Returns the first
/// error of the two hypercalls, or 0.
pub fn init(handler: Option<Handler>) -> i64 {
    // The image is identity-mapped: the page's address is its guest-physical address.
    let result = set_shared_info(shared_info() as u64);
    if result != 0 {
        return result;
    }
    match handler {
        Some(handler) => {
            traps::set_handler(CALLBACK_VECTOR, handler);
            set_callback(callback::VECTOR, CALLBACK_VECTOR as u64)
        }
        None => 0,
    }
}

/// Take every pending, unmasked port: clear `evtchn_upcall_pending`, then each port's bit,
/// calling `each` with it.
pub fn take_pending(mut each: impl FnMut(Port)) {
    byte(shared_info::UPCALL_PENDING).store(0, Ordering::SeqCst);
    let selector = word(shared_info::PENDING_SEL).swap(0, Ordering::SeqCst);
    for index in 0..PORTS.div_ceil(64) as u64 {
        if selector & (1 << index) == 0 {
            continue;
        }
        let pending = word(shared_info::EVTCHN_PENDING + 8 * index);
        let mask = word(shared_info::EVTCHN_MASK + 8 * index).load(Ordering::SeqCst);
        let ready = pending.fetch_and(mask, Ordering::SeqCst) & !mask;
        for bit in 0..64 {
            if ready & (1 << bit) != 0 {
                each((index * 64 + bit) as Port);
            }
        }
    }
}

/// Is `port` pending?
pub fn pending(port: Port) -> bool {
    let bits = word(shared_info::EVTCHN_PENDING + 8 * (port as u64 / 64)).load(Ordering::SeqCst);
    bits & (1 << (port % 64)) != 0
}

/// Clear `port`'s pending bit (after polling for it).
pub fn clear(port: Port) {
    word(shared_info::EVTCHN_PENDING + 8 * (port as u64 / 64))
        .fetch_and(!(1 << (port % 64)), Ordering::SeqCst);
}

/// Mask `port`: its events stay pending without an upcall.
pub fn mask(port: Port) {
    word(shared_info::EVTCHN_MASK + 8 * (port as u64 / 64))
        .fetch_or(1 << (port % 64), Ordering::SeqCst);
}

fn op<T>(command: u64, argument: &mut T) -> i64 {
    // SAFETY: `argument` is the structure `command` expects (each wrapper below passes
    // its own), and lives across the call.
    unsafe { event_channel_op(command, argument as *mut T as u64) }
}

/// `EVTCHNOP_alloc_unbound`: a port of ours that domain `remote` may bind to.
pub fn alloc_unbound(remote: u16) -> Result<Port, i64> {
    let mut argument = AllocUnbound {
        dom: DOMID_SELF,
        remote_dom: remote,
        port: 0,
    };
    match op(cmd::ALLOC_UNBOUND, &mut argument) {
        0 => Ok(argument.port),
        error => Err(error),
    }
}

/// `EVTCHNOP_bind_interdomain`: a port of ours connected to `remote_port` of `remote`.
pub fn bind_interdomain(remote: u16, remote_port: Port) -> Result<Port, i64> {
    let mut argument = BindInterdomain {
        remote_dom: remote,
        remote_port,
        ..Default::default()
    };
    match op(cmd::BIND_INTERDOMAIN, &mut argument) {
        0 => Ok(argument.local_port),
        error => Err(error),
    }
}

/// `EVTCHNOP_bind_virq`: a port for virtual interrupt `virq` (the timer).
pub fn bind_virq(virq: u32) -> Result<Port, i64> {
    let mut argument = BindVirq {
        virq,
        ..Default::default()
    };
    match op(cmd::BIND_VIRQ, &mut argument) {
        0 => Ok(argument.port),
        error => Err(error),
    }
}

/// `EVTCHNOP_send`: notify the other end of `port`'s channel.
pub fn send(port: Port) -> i64 {
    op(cmd::SEND, &mut PortArg { port })
}

/// `EVTCHNOP_close`.
pub fn close(port: Port) -> i64 {
    op(cmd::CLOSE, &mut PortArg { port })
}

/// `EVTCHNOP_unmask`: let `port`'s events through again (one pending gets its upcall).
pub fn unmask(port: Port) -> i64 {
    op(cmd::UNMASK, &mut PortArg { port })
}
