//! `event-channel`: one domain notifies another, and the other's handler runs.
//!
//! Two domains run side by side, this same program in each, playing two parts:
//!
//! - **d2, the receiver**, names its shared-info page and its callback vector, allocates a
//!   port that d1 may bind to (`EVTCHNOP_alloc_unbound`), publishes the port's number in
//!   the store, and halts with interrupts on: its vCPU blocks, and the hypervisor runs d1.
//! - **d1, the sender**, waits for that store node (its vCPU blocks until d2 writes it),
//!   binds a port of its own to d2's (`EVTCHNOP_bind_interdomain`), and sends
//!   (`EVTCHNOP_send`). That hypercall is the hypervisor's *forward*: it marks d2's port
//!   pending in d2's shared-info page and wakes d2, which runs first. d2's upcall arrives
//!   through its IDT; its handler finds the port pending. Then d1 goes on.
//!
//! d1 did nothing but a hypercall; d2 ran because of it, in its own time and its own
//! lane: the pattern of every split driver in Xen.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};
use traplab_guests::traps::TrapFrame;
use traplab_guests::{BootInfo, evtchn, guest_main, hprintln, store};

const PORT_NODE: &str = "/local/domain/2/event-channel/port";

/// The port whose event the upcall found (0: none yet).
static RECEIVED: AtomicU32 = AtomicU32::new(0);

fn on_upcall(_frame: &mut TrapFrame) {
    evtchn::take_pending(|port| {
        hprintln!("d2: upcall: port {port} is pending");
        RECEIVED.store(port, Ordering::SeqCst);
    });
}

fn receiver() -> i32 {
    let ready = evtchn::init(Some(on_upcall));
    if ready != 0 {
        // Without its shared info and callback no upcall would ever wake d2's HLT.
        hprintln!("d2: shared info and callback refused: {ready}");
        return 1;
    }
    let Ok(port) = evtchn::alloc_unbound(1) else {
        hprintln!("d2: cannot allocate a port");
        return 1;
    };
    hprintln!("d2: port {port} allocated for d1 (shared info and callback: {ready})");
    hprintln!("d2: publishing it, then waiting for d1's event (sti; hlt)");
    // From the store write on, d1 may run: halt right after it.
    if store::write_number(PORT_NODE, port) != 0 {
        hprintln!("d2: cannot publish the port");
        return 2;
    }
    while RECEIVED.load(Ordering::SeqCst) == 0 {
        // SAFETY: our IDT has a handler for the callback vector; STI's shadow makes
        // `sti; hlt` safe (no upcall can slip in between). Not `nomem`: the upcall that runs
        // inside the block writes `RECEIVED`, which the loop must read again after it.
        unsafe { core::arch::asm!("sti", "hlt", "cli", options(nostack)) };
    }
    let received = RECEIVED.load(Ordering::SeqCst);
    hprintln!("d2: woken by d1's event on port {received}");
    // EXERCISE event-channel.1: answer d1 on the same channel (`evtchn::send(port)`).
    if received == port { 0 } else { 3 }
}

fn sender() -> i32 {
    if evtchn::init(None) != 0 {
        return 1;
    }
    // Wait for d2's port first (d2 runs meanwhile), and talk after.
    let Ok(remote_port) = store::wait_number(PORT_NODE) else {
        hprintln!("d1: no port in the store");
        return 2;
    };
    hprintln!("d1: d2's port is {remote_port}");
    let Ok(port) = evtchn::bind_interdomain(2, remote_port) else {
        hprintln!("d1: cannot bind to d2's port {remote_port}");
        return 3;
    };
    hprintln!("d1: port {port} is bound to d2's port {remote_port}; sending");
    let sent = evtchn::send(port);
    hprintln!("d1: send returned {sent}; d1 goes on");
    // EXERCISE event-channel.1: wait for d2's answer on `port` with `sched::poll(&[port])`,
    // then print `d1: d2 answered on port N`. (Binding made `port` pending already, as Xen
    // does in case an event was lost: clear it right after binding, `evtchn::clear(port)`,
    // or the poll returns at once.)
    if sent == 0 { 0 } else { 4 }
}

fn main(info: &BootInfo) -> i32 {
    match info.domain {
        1 => sender(),
        2 => receiver(),
        other => {
            hprintln!("event-channel runs as d1 and d2, not d{other}");
            1
        }
    }
}

guest_main!(main);
