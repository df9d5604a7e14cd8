//! How the hypervisor stops: it tells QEMU its status through the `isa-debug-exit` device.
//!
//! Writing `status` to port 0xf4 makes QEMU exit with `(status << 1) | 1`, so the host
//! learns why the machine stopped. The statuses are part of the host interface
//! (`tracer::launch` decodes them):

use x86_64::instructions::port::Port;

/// Why the hypervisor stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum HvStatus {
    /// Every domain ran to its end (exited or killed); see the trace for each status.
    Done = 0,
    /// The CPU has no SVM (CPUID 0x8000_0001 ECX bit 2 clear).
    NoSvm = 1,
    /// SVM is disabled by firmware (VM_CR.SVMDIS).
    SvmDisabled = 2,
    /// The CPU has no nested paging (CPUID 0x8000_000A EDX bit 0 clear).
    NoNestedPaging = 3,
    /// The boot configuration is unusable: no guest, a bad ELF, too little memory.
    BadConfig = 4,
    /// The hypervisor itself faulted or panicked: a bug in traplab.
    HvFault = 5,
}

/// The port of QEMU's `isa-debug-exit` device (`-device isa-debug-exit,iobase=0xf4`).
const DEBUG_EXIT_PORT: u16 = 0xf4;

/// Power the machine off with `status`. Without the debug-exit device (a hand-made QEMU
/// command line), the CPU halts forever instead.
pub fn exit(status: HvStatus) -> ! {
    // The last events recorded, if any are still gathered, go to the reader first.
    crate::trace::flush();
    crate::log!("stopping: {:?} (status {})", status, status as u8);
    // SAFETY: port 0xf4 is QEMU's debug-exit device, or nothing.
    unsafe { Port::<u32>::new(DEBUG_EXIT_PORT).write(status as u32) };
    halt_forever()
}

pub fn halt_forever() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}
