//! Hypercalls: VMMCALL with the number in RAX and arguments in RDI, RSI, RDX, R10, R8
//! (the ABI is documented in `traplab_abi::hypercall`).

use traplab_abi::hypercall::{
    CONSOLE_WRITE, EXIT, PIN_PAGE_TABLE, RAISE_EVENT, SET_PV_MODE, SET_TIMER, SET_TRAP_TABLE,
    TrapInfo,
};

/// Make hypercall `number` with up to two arguments; returns RAX.
///
/// # Safety
/// The arguments must be what hypercall `number` expects (a bad pointer only earns
/// EFAULT from the hypervisor, but the hypercall may act on the memory it points to).
pub unsafe fn hypercall2(number: u64, first: u64, second: u64) -> i64 {
    let result: u64;
    // SAFETY: VMMCALL is intercepted by the hypervisor, which preserves every register
    // but RAX; the caller vouches for the arguments.
    unsafe {
        core::arch::asm!("vmmcall", inout("rax") number => result, in("rdi") first, in("rsi") second,
                         options(nostack));
    }
    result as i64
}

/// `console_write`: the hypervisor writes `bytes` to this domain's console.
/// Returns the number of bytes written, or a negative error code.
pub fn console_write(bytes: &[u8]) -> i64 {
    // SAFETY: a valid buffer and its length.
    unsafe { hypercall2(CONSOLE_WRITE, bytes.as_ptr() as u64, bytes.len() as u64) }
}

/// `exit`: end this domain with `status`. Does not return.
pub fn exit(status: i32) -> ! {
    // SAFETY: `exit` takes a number and no pointer.
    unsafe { hypercall2(EXIT, status as u64, 0) };
    // The hypervisor never resumes a domain after `exit`; if it did, stop here.
    crate::halt()
}

/// `set_trap_table`: the hypervisor bounces the listed exceptions to their handlers; a null
/// table stops that. Returns 0 or a negative error.
pub fn set_trap_table(table: *const TrapInfo) -> i64 {
    // SAFETY: a table ending with a zero handler, or null; the hypervisor only reads it.
    unsafe { hypercall2(SET_TRAP_TABLE, table as u64, 0) }
}

/// `raise_event`: have the hypervisor deliver exception `vector` (or an NMI, vector 2) to us
/// as the hypercall returns. For the classes QEMU's TCG cannot raise itself.
pub fn raise_event(vector: u8, error_code: u32) -> i64 {
    // SAFETY: two numbers, no pointer.
    unsafe { hypercall2(RAISE_EVENT, vector as u64, error_code as u64) }
}

/// `pin_page_table`: from now on the hypervisor checks every write to the page tables under
/// `root` (guest-physical). Returns how many tables it pinned, or a negative error.
pub fn pin_page_table(root: u64) -> i64 {
    // SAFETY: a guest-physical address, which the hypervisor checks.
    unsafe { hypercall2(PIN_PAGE_TABLE, root, 0) }
}

/// `set_timer`: interrupt `vector` every `period_us` microseconds (0 stops it). Returns 0
/// or a negative error.
pub fn set_timer(vector: u8, period_us: u64) -> i64 {
    // SAFETY: two numbers, no pointer.
    unsafe { hypercall2(SET_TIMER, vector as u64, period_us) }
}

/// `set_pv_mode`: from now on the hypervisor emulates the privileged instructions this
/// domain's deprivileged kernel runs at CPL 3. Returns 0 or a negative error.
pub fn set_pv_mode(on: bool) -> i64 {
    // SAFETY: a number, no pointer.
    unsafe { hypercall2(SET_PV_MODE, on as u64, 0) }
}
