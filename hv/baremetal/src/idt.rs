//! Filling the 32 exception entries of an IDT with entry stubs, for the hypervisor and
//! the guest runtime alike.
//!
//! The `x86_64` crate types each exception entry by its handler's signature (with or
//! without an error code, diverging or not); our stubs are naked assembly that handle
//! both cases themselves, so we set them by address.

use x86_64::VirtAddr;
use x86_64::structures::idt::InterruptDescriptorTable;

/// Point vector `n` (0–31) of `idt` at `stubs[n]`, on interrupt stack `ist_index`
/// (0-based index into the TSS's IST; every entry needs one: see DESIGN.md, the red zone).
/// The reserved vectors (9, 15, 22–27, 31) stay not-present: the `x86_64` crate keeps them
/// private, and no CPU raises them.
///
/// # Safety
/// Every address must be a valid entry stub for its vector, and `ist_index` a loaded
/// TSS's IST slot with a valid stack.
pub unsafe fn set_exception_stubs(
    idt: &mut InterruptDescriptorTable,
    stubs: &[u64; 32],
    ist_index: u16,
) {
    let address = |vector: usize| VirtAddr::new(stubs[vector]);
    // SAFETY: the caller's contract.
    unsafe {
        idt.divide_error
            .set_handler_addr(address(0))
            .set_stack_index(ist_index);
        idt.debug
            .set_handler_addr(address(1))
            .set_stack_index(ist_index);
        idt.non_maskable_interrupt
            .set_handler_addr(address(2))
            .set_stack_index(ist_index);
        idt.breakpoint
            .set_handler_addr(address(3))
            .set_stack_index(ist_index);
        idt.overflow
            .set_handler_addr(address(4))
            .set_stack_index(ist_index);
        idt.bound_range_exceeded
            .set_handler_addr(address(5))
            .set_stack_index(ist_index);
        idt.invalid_opcode
            .set_handler_addr(address(6))
            .set_stack_index(ist_index);
        idt.device_not_available
            .set_handler_addr(address(7))
            .set_stack_index(ist_index);
        idt.double_fault
            .set_handler_addr(address(8))
            .set_stack_index(ist_index);
        idt.invalid_tss
            .set_handler_addr(address(10))
            .set_stack_index(ist_index);
        idt.segment_not_present
            .set_handler_addr(address(11))
            .set_stack_index(ist_index);
        idt.stack_segment_fault
            .set_handler_addr(address(12))
            .set_stack_index(ist_index);
        idt.general_protection_fault
            .set_handler_addr(address(13))
            .set_stack_index(ist_index);
        idt.page_fault
            .set_handler_addr(address(14))
            .set_stack_index(ist_index);
        idt.x87_floating_point
            .set_handler_addr(address(16))
            .set_stack_index(ist_index);
        idt.alignment_check
            .set_handler_addr(address(17))
            .set_stack_index(ist_index);
        idt.machine_check
            .set_handler_addr(address(18))
            .set_stack_index(ist_index);
        idt.simd_floating_point
            .set_handler_addr(address(19))
            .set_stack_index(ist_index);
        idt.virtualization
            .set_handler_addr(address(20))
            .set_stack_index(ist_index);
        idt.cp_protection_exception
            .set_handler_addr(address(21))
            .set_stack_index(ist_index);
        idt.hv_injection_exception
            .set_handler_addr(address(28))
            .set_stack_index(ist_index);
        idt.vmm_communication_exception
            .set_handler_addr(address(29))
            .set_stack_index(ist_index);
        idt.security_exception
            .set_handler_addr(address(30))
            .set_stack_index(ist_index);
    }
}

/// Make `vector`'s gate use IST slot `ist_index` (0-based), keeping its handler: an
/// exception's, or an interrupt's (32–255). Exceptions without a typed field (reserved
/// ones) are left alone.
///
/// # Safety
/// The slot must hold a usable stack — or, deliberately, an unusable one (that is how a
/// lab makes the CPU fail to deliver an exception).
pub unsafe fn set_stack_index(idt: &mut InterruptDescriptorTable, vector: u8, ist_index: u16) {
    // SAFETY: the caller's contract.
    unsafe {
        match vector {
            0 => idt
                .divide_error
                .set_handler_addr(idt.divide_error.handler_addr())
                .set_stack_index(ist_index),
            1 => idt
                .debug
                .set_handler_addr(idt.debug.handler_addr())
                .set_stack_index(ist_index),
            2 => idt
                .non_maskable_interrupt
                .set_handler_addr(idt.non_maskable_interrupt.handler_addr())
                .set_stack_index(ist_index),
            3 => idt
                .breakpoint
                .set_handler_addr(idt.breakpoint.handler_addr())
                .set_stack_index(ist_index),
            6 => idt
                .invalid_opcode
                .set_handler_addr(idt.invalid_opcode.handler_addr())
                .set_stack_index(ist_index),
            8 => idt
                .double_fault
                .set_handler_addr(idt.double_fault.handler_addr())
                .set_stack_index(ist_index),
            13 => idt
                .general_protection_fault
                .set_handler_addr(idt.general_protection_fault.handler_addr())
                .set_stack_index(ist_index),
            14 => idt
                .page_fault
                .set_handler_addr(idt.page_fault.handler_addr())
                .set_stack_index(ist_index),
            // An interrupt vector: one of the generic entries (an upcall's, a timer's).
            32.. => {
                let handler = idt[vector].handler_addr();
                idt[vector]
                    .set_handler_addr(handler)
                    .set_stack_index(ist_index)
            }
            _ => return,
        };
    }
}
