//! The guest's exception and interrupt handling: an IDT whose entries (the 32 exceptions
//! and the 16 interrupt vectors 0x20–0x2F) all lead to [`dispatch`], which calls the
//! handler the guest registered for the vector.
//!
//! A handler gets the [`TrapFrame`] and may change it: `frame.rip += 2` skips a 2-byte
//! instruction, as the `invalid-opcode` guest does. When it returns, IRETQ resumes the
//! interrupted code with the frame's registers.

use core::sync::atomic::{AtomicUsize, Ordering};
pub use traplab_baremetal::trap::{FpuState, TrapFrame};
use x86_64::structures::idt::InterruptDescriptorTable;

/// A trap handler.
pub type Handler = fn(&mut TrapFrame);

/// Vectors 0–31 (exceptions) and 32–47 (interrupts, e.g. the `set_timer` timer).
const VECTORS: usize = 48;
static HANDLERS: [AtomicUsize; VECTORS] = [const { AtomicUsize::new(0) }; VECTORS];
static mut IDT: InterruptDescriptorTable = InterruptDescriptorTable::new();

traplab_baremetal::trap_entry!(trap_entry, dispatch);
traplab_baremetal::exception_entries!(exception_entries, trap_entry);
traplab_baremetal::interrupt_entries!(interrupt_entries, trap_entry);

/// The first interrupt vector the IDT has an entry for.
pub const INTERRUPT_VECTOR_BASE: u8 = 0x20;

/// Call `handler` for exceptions or interrupts with this vector (0–47).
pub fn set_handler(vector: u8, handler: Handler) {
    if let Some(slot) = HANDLERS.get(vector as usize) {
        slot.store(handler as usize, Ordering::SeqCst);
    }
}

pub(crate) fn load_idt() {
    let stubs = traplab_baremetal::trap::entry_addresses(exception_entries);
    // SAFETY: runs once at boot, before any exception can use the IDT; the stubs are
    // entry stubs and IST slot 0 is set up by the runtime.
    unsafe {
        let idt = &mut *(&raw mut IDT);
        traplab_baremetal::idt::set_exception_stubs(idt, &stubs, 0);
        // Interrupt gates: the CPU clears RFLAGS.IF on entry, so a handler is not
        // interrupted by the next tick.
        for index in 0..16u8 {
            let entry = traplab_baremetal::trap::entry_address(interrupt_entries, index as usize);
            idt[INTERRUPT_VECTOR_BASE + index]
                .set_handler_addr(x86_64::VirtAddr::new(entry))
                .set_stack_index(0);
        }
        idt.load_unsafe();
    }
}

/// Let ring-3 code call interrupt `vector`'s handler with `int vector`: its gate's DPL
/// becomes 3, as an OS's system-call gate is (Linux's `int 0x80`). Through a gate whose DPL
/// is below the CPL, a software interrupt is a #GP instead (AMD APM vol. 2, 8.9.3); the
/// exceptions and the other interrupt gates stay DPL 0. (Vectors 0x20–0x2F only.)
pub fn allow_from_user(vector: u8) {
    if !(INTERRUPT_VECTOR_BASE..INTERRUPT_VECTOR_BASE + 16).contains(&vector) {
        return;
    }
    // SAFETY: one CPU; the IDT is only changed here, in `load_idt` and in `set_stack`. The
    // gate keeps its handler (the interrupt stub `load_idt` set) and its stack.
    unsafe {
        let gate = &mut (&mut *(&raw mut IDT))[vector];
        gate.set_handler_addr(gate.handler_addr())
            .set_privilege_level(x86_64::PrivilegeLevel::Ring3);
    }
}

/// Every exception comes here (on the IST stack, or bounced by the hypervisor).
pub(crate) extern "C" fn dispatch(frame: &mut TrapFrame) {
    let handler = HANDLERS
        .get(frame.vector as usize)
        .map_or(0, |slot| slot.load(Ordering::SeqCst));
    if handler == 0 && frame.vector >= INTERRUPT_VECTOR_BASE as u64 {
        crate::println!(
            "unhandled interrupt {:#x} at {:#x}",
            frame.vector,
            frame.rip
        );
        crate::hypercall::exit(128 + frame.vector as i32);
    }
    if handler == 0 {
        let exception = traplab_abi::x86::exception(frame.vector as u8);
        crate::println!(
            "unhandled {} ({}) at {:#x}, error code {:#x}",
            exception.mnemonic,
            exception.name,
            frame.rip,
            frame.error_code
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
    // SAFETY: one CPU; the IDT is only changed here, in `load_idt` and in `allow_from_user`,
    // and slot 1 was just set (to whatever the caller wants the CPU to find there).
    unsafe { traplab_baremetal::idt::set_stack_index(&mut *(&raw mut IDT), vector, 1) };
}

/// Load an empty IDT and fault: #UD cannot be delivered (no gate: #GP), nor the #GP (a
/// second contributory fault: #DF), nor the #DF: a triple fault, the CPU's shutdown. The
/// hypervisor, which intercepts every exception, shows each step and ends the domain.
pub fn triple_fault() -> ! {
    let empty = x86_64::structures::DescriptorTablePointer {
        limit: 0,
        base: x86_64::VirtAddr::new(0),
    };
    // SAFETY: deliberately broken: every exception from here on is undeliverable, and the
    // domain ends at the UD2.
    unsafe {
        x86_64::instructions::tables::lidt(&empty);
        core::arch::asm!("ud2", options(noreturn));
    }
}
