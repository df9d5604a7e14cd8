//! QEMU's `isa-debug-exit` at port 0xf4: how a test kernel ends its machine with a status.
//!
//! On QEMU with `-device isa-debug-exit,iobase=0xf4`, a write of V makes QEMU exit with
//! status (V << 1) | 1 (QEMU `hw/misc/debugexit.c`): kernels' test suites (kvm-unit-tests,
//! the multiboot lab's kernel) end that way. Under traplab the machine is the hypervisor's,
//! and the port ends only the *domain* that wrote it, with status V as written: the other
//! domains, and the hypervisor, run on. `traplab trace` reports the status like any other
//! domain's (the `domain exited` event).
//!
//! Reads answer all ones, as QEMU's device (write-only) and an empty ISA port do.

/// The port QEMU's device uses by default (`iobase=0xf4`), and the width a kernel writes.
pub const PORT: u16 = 0xf4;

/// The domain's exit status for a write of `value` of `size` bytes: the value, cut to the
/// width written (a byte `out 0xf4, al` gives 0–255).
pub fn status(value: u32, size: u8) -> i32 {
    match size {
        1 => (value & 0xff) as i32,
        2 => (value & 0xffff) as i32,
        _ => value as i32,
    }
}
