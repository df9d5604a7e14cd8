//! Getting exceptions the PV way: register handlers with the hypervisor (`set_trap_table`),
//! which then delivers those exceptions itself — a *bounce* — instead of letting the CPU
//! deliver them through our IDT. Xen's paravirtual guests work this way.
//!
//! The handlers are the same [`traps::Handler`](crate::traps::Handler)s as for the IDT
//! (registered with `traps::set_handler`); only the way in and out differs: the hypervisor
//! resumes us at an entry of [`bounce_entries`], with an exception frame it wrote on our
//! stack, and the entry returns with the `iret` hypercall.

use traplab_abi::hypercall::TrapInfo;

traplab_baremetal::bounce_entry!(bounce_entry, crate::traps::dispatch);
traplab_baremetal::exception_entries!(bounce_entries, bounce_entry);

/// The exceptions' vectors, 0–31: the most entries we list.
const EXCEPTIONS: usize = 32;

static mut TABLE: [TrapInfo; EXCEPTIONS + 1] = [TrapInfo {
    vector: 0,
    flags: 0,
    cs: 0,
    reserved: [0; 4],
    handler: 0,
}; EXCEPTIONS + 1];

/// Ask the hypervisor to bounce these exception vectors to our handlers (interrupts off on
/// entry, like an interrupt gate). Returns the hypercall's result: 0, or a negative error.
pub fn use_trap_table(vectors: &[u8]) -> i64 {
    let count = vectors.len().min(EXCEPTIONS);
    // SAFETY: one CPU; the table is only written here, before the hypercall reads it.
    let table = unsafe { &mut *(&raw mut TABLE) };
    for (slot, &vector) in table.iter_mut().zip(&vectors[..count]) {
        let handler = traplab_baremetal::trap::entry_address(bounce_entries, vector as usize & 31);
        *slot = TrapInfo {
            vector,
            // Xen's TI_SET_IF: interrupts off on entry, as through an interrupt gate.
            flags: TrapInfo::CLEAR_IF,
            handler,
            ..TrapInfo::default()
        };
    }
    table[count] = TrapInfo::default();
    crate::hypercall::set_trap_table(table.as_ptr())
}

/// Back to the IDT for everything.
pub fn stop_using_trap_table() -> i64 {
    crate::hypercall::set_trap_table(core::ptr::null())
}
