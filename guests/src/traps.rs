//! The guest's exception handling: an IDT whose entries all lead to [`dispatch`], which
//! calls the handler the guest registered for the vector.
//!
//! A handler gets the [`TrapFrame`] and may change it: `frame.rip += 2` skips a 2-byte
//! instruction, as the `invalid-opcode` guest does. When it returns, IRETQ resumes the
//! interrupted code with the frame's registers.

use core::sync::atomic::{AtomicUsize, Ordering};
pub use traplab_baremetal::trap::{FpuState, TrapFrame};
use x86_64::structures::idt::InterruptDescriptorTable;

/// A trap handler.
pub type Handler = fn(&mut TrapFrame);

static HANDLERS: [AtomicUsize; 32] = [const { AtomicUsize::new(0) }; 32];
static mut IDT: InterruptDescriptorTable = InterruptDescriptorTable::new();

traplab_baremetal::trap_entry!(trap_entry, dispatch);
traplab_baremetal::exception_entries!(exception_entries, trap_entry);

/// Call `handler` for exceptions with this vector.
pub fn set_handler(vector: u8, handler: Handler) {
    HANDLERS[vector as usize & 31].store(handler as usize, Ordering::SeqCst);
}

pub(crate) fn load_idt() {
    let stubs = traplab_baremetal::trap::entry_addresses(exception_entries);
    // SAFETY: runs once at boot, before any exception can use the IDT; the stubs are
    // entry stubs and IST slot 0 is set up by the runtime.
    unsafe {
        let idt = &mut *(&raw mut IDT);
        traplab_baremetal::idt::set_exception_stubs(idt, &stubs, 0);
        idt.load_unsafe();
    }
}

/// Every exception comes here (on the IST stack, or bounced by the hypervisor).
pub(crate) extern "C" fn dispatch(frame: &mut TrapFrame) {
    let handler = HANDLERS[frame.vector as usize & 31].load(Ordering::SeqCst);
    if handler == 0 {
        let exception = traplab_abi::x86::exception(frame.vector as u8);
        crate::println!(
            "unhandled {} ({}) at {:#x}, error code {:#x}",
            exception.mnemonic, exception.name, frame.rip, frame.error_code
        );
        crate::hypercall::exit(128 + frame.vector as i32);
    }
    // SAFETY: only `set_handler` stores non-zero values, and it stores `Handler`s.
    let handler: Handler = unsafe { core::mem::transmute::<usize, Handler>(handler) };
    handler(frame);
}

/// Deliver `vector` on its own stack whose top is `stack_top` (the TSS's second IST slot),
/// instead of the runtime's trap stack. The `double-fault` lab points it at unmapped
/// memory: the CPU then cannot push the exception frame and faults while delivering.
pub fn set_stack(vector: u8, stack_top: u64) {
    crate::set_second_interrupt_stack(stack_top);
    // SAFETY: one CPU; the IDT is only changed here and in `load_idt`, and slot 1 was just
    // set (to whatever the caller wants the CPU to find there).
    unsafe { traplab_baremetal::idt::set_stack_index(&mut *(&raw mut IDT), vector, 1) };
}
