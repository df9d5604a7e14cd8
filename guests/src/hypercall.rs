//! Hypercalls: VMMCALL with the number in RAX and arguments in RDI, RSI, RDX, R10, R8
//! (the ABI is documented in `traplab_abi::hypercall`).

use traplab_abi::hypercall::{
    CONSOLE_WRITE, EVENT_CHANNEL_OP, EXIT, GRANT_TABLE_OP, PIN_PAGE_TABLE, RAISE_EVENT, SCHED_OP,
    SET_CALLBACK, SET_PV_MODE, SET_SHARED_INFO, SET_TIMER, SET_TRAP_TABLE, STORE_OP, TrapInfo,
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

/// Make hypercall `number` with five arguments (RDI, RSI, RDX, R10, R8); returns RAX.
///
/// # Safety
/// As [`hypercall2`].
pub unsafe fn hypercall5(number: u64, args: [u64; 5]) -> i64 {
    let result: u64;
    // SAFETY: as in `hypercall2`.
    unsafe {
        core::arch::asm!("vmmcall", inout("rax") number => result, in("rdi") args[0],
                         in("rsi") args[1], in("rdx") args[2], in("r10") args[3],
                         in("r8") args[4], options(nostack));
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

/// `sched_op(cmd, arg)`: yield, block or poll (`traplab_abi::sched`; the wrappers are in
/// [`crate::sched`]).
///
/// # Safety
/// `arg` must be what `cmd` expects.
pub unsafe fn sched_op(cmd: u64, arg: u64) -> i64 {
    // SAFETY: the caller vouches for `arg`.
    unsafe { hypercall2(SCHED_OP, cmd, arg) }
}

/// `event_channel_op(cmd, arg)` (`traplab_abi::evtchn`; the wrappers are in
/// [`crate::evtchn`]).
///
/// # Safety
/// `arg` must point to the structure `cmd` expects.
pub unsafe fn event_channel_op(cmd: u64, arg: u64) -> i64 {
    // SAFETY: the caller vouches for `arg`.
    unsafe { hypercall2(EVENT_CHANNEL_OP, cmd, arg) }
}

/// `grant_table_op(cmd, arg)` (`traplab_abi::grant_table`; the wrappers are in
/// [`crate::grant`]).
///
/// # Safety
/// `arg` must point to the structure `cmd` expects.
pub unsafe fn grant_table_op(cmd: u64, arg: u64) -> i64 {
    // SAFETY: the caller vouches for `arg`.
    unsafe { hypercall2(GRANT_TABLE_OP, cmd, arg) }
}

/// `set_shared_info(page)`: the page (guest-physical) where the hypervisor marks this
/// domain's pending events.
pub fn set_shared_info(page: u64) -> i64 {
    // SAFETY: a guest-physical address, which the hypervisor checks.
    unsafe { hypercall2(SET_SHARED_INFO, page, 0) }
}

/// `set_callback(how, target)`: how the hypervisor tells this domain of a pending event
/// (`traplab_abi::evtchn::callback`).
pub fn set_callback(how: u64, target: u64) -> i64 {
    // SAFETY: two numbers; an address is only jumped to by the hypervisor's bounce.
    unsafe { hypercall2(SET_CALLBACK, how, target) }
}

/// `store_op(cmd, path, value)` (`traplab_abi::store`; the wrappers are in
/// [`crate::store`]).
pub fn store_op(cmd: u64, path: &str, value: &mut [u8]) -> i64 {
    let args = [
        cmd,
        path.as_ptr() as u64,
        path.len() as u64,
        value.as_mut_ptr() as u64,
        value.len() as u64,
    ];
    // SAFETY: a valid path and buffer with their lengths; the hypervisor writes at most
    // `value.len()` bytes into the buffer.
    unsafe { hypercall5(STORE_OP, args) }
}

/// Why a call was refused, in the two numbering spaces Xen keeps apart: a hypercall's
/// result (an errno, negative: `EINVAL` is -22) and a grant operation's per-operation status
/// (`GNTST_*`, negative too, but its own numbers: `GNTST_general_error` is -1, not `EPERM`).
/// A driver that does both (blkfront's connection: XenBus steps and a grant) says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A hypercall's error (`traplab_abi::hypercall::error`).
    Errno(i64),
    /// A grant operation's status (`traplab_abi::grant_table::status`).
    Grant(i16),
}

impl From<i64> for Refusal {
    fn from(code: i64) -> Refusal {
        Refusal::Errno(code)
    }
}

impl core::fmt::Display for Refusal {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        match *self {
            Refusal::Errno(code) => {
                let name = traplab_abi::hypercall::error::name(code).unwrap_or("an error");
                write!(f, "{code} ({name})")
            }
            Refusal::Grant(status) => {
                let name = traplab_abi::grant_table::status::name(status).unwrap_or("GNTST_?");
                write!(f, "{status} ({name})")
            }
        }
    }
}
