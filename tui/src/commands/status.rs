//! The exit statuses of `traplab` (see `traplab trace --help`).

/// Bad usage: an unknown lab, a file that cannot be written.
pub const USAGE: u8 = 2;
/// The trace lost events, had a gap, or ended before the hypervisor's `end` event.
pub const TRACE_INCOMPLETE: u8 = 124;
/// The hypervisor or QEMU failed.
pub const HV_FAILED: u8 = 125;
/// The hypervisor killed a domain.
pub const DOMAIN_KILLED: u8 = 137;
/// Stopped by Ctrl-C.
pub const INTERRUPTED: u8 = 130;
