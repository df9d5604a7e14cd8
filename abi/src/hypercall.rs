//! The hypercall ABI: how a guest asks the hypervisor for something.
//!
//! A guest executes `VMMCALL` (`0f 01 d9`). The hypervisor intercepts it (APM vol. 2,
//! 15.11: VMMCALL "can be intercepted"; a guest that runs it without the intercept gets #UD).
//!
//! | register | meaning                                                          |
//! |----------|------------------------------------------------------------------|
//! | RAX      | the hypercall number (below)                                     |
//! | RDI, RSI, RDX, R10, R8 | arguments 1–5 (the order Xen uses on x86-64)       |
//! | RAX      | on return: the result, or a negative error code ([`error`])      |
//!
//! All other registers are preserved. Pointers are guest *virtual* addresses, translated
//! through the guest's own page tables; a pointer the hypervisor cannot translate, or that
//! leaves the guest's memory, gets [`error::EFAULT`] and nothing else happens.
//! RIP moves past the VMMCALL, except for [`EXIT`], which does not return.
//!
//! | number | name            | arguments            | result                          |
//! |--------|-----------------|----------------------|---------------------------------|
//! | 0      | `console_write` | RDI = buffer, RSI = length (≤ 4096) | bytes written, `EFAULT`, `EINVAL` |
//! | 1      | `exit`          | RDI = status (i32)   | does not return: the domain ends |
//!
//! Any other number returns [`error::ENOSYS`].

/// `console_write(buffer, length)`: write bytes to the domain's console.
pub const CONSOLE_WRITE: u64 = 0;
/// `exit(status)`: end this domain with a status.
pub const EXIT: u64 = 1;

/// The longest buffer `console_write` takes at once.
pub const CONSOLE_WRITE_MAX: u64 = 4096;

/// The name of a hypercall number, or `None` for an unknown one.
pub fn name(number: u64) -> Option<&'static str> {
    match number {
        CONSOLE_WRITE => Some("console_write"),
        EXIT => Some("exit"),
        _ => None,
    }
}

/// Error results: negative numbers in RAX, with Linux/Xen errno values.
pub mod error {
    /// A pointer argument does not point into the guest's memory.
    pub const EFAULT: i64 = -14;
    /// An argument is out of range.
    pub const EINVAL: i64 = -22;
    /// No hypercall has this number.
    pub const ENOSYS: i64 = -38;

    pub fn name(code: i64) -> Option<&'static str> {
        match code {
            EFAULT => Some("EFAULT"),
            EINVAL => Some("EINVAL"),
            ENOSYS => Some("ENOSYS"),
            _ => None,
        }
    }
}
