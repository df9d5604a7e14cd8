//! Changing the GDT: a copy of the runtime's, with one more descriptor.
//!
//! The `segment-not-present` and `stack-fault` labs need a descriptor with its P bit clear.
//! The runtime's GDT lives in a static the `x86_64` crate owns; instead of patching it, we
//! copy its seven entries (null, four segments, the 16-byte TSS descriptor) into a table
//! of our own, add the new descriptor at index 7 (selector 0x38) and load that table.

use x86_64::VirtAddr;
use x86_64::instructions::tables::{lgdt, sgdt};
use x86_64::structures::DescriptorTablePointer;

/// Selector of the added descriptor.
pub const ADDED: u16 = 0x38;
/// A 32-bit data segment (type 2, S, DPL 0, D/B, G) with P clear.
pub const NOT_PRESENT_DATA: u64 = 0x00cf_1200_0000_ffff;

static mut GDT: [u64; 8] = [0; 8];

/// Load a GDT that is the runtime's plus `descriptor` at selector [`ADDED`].
pub fn add_descriptor(descriptor: u64) {
    let current = sgdt();
    // SAFETY: the runtime's GDT has 7 entries (see above), readable at its base; ours has
    // room for 8; one CPU, and the loaded segment registers keep their hidden parts.
    unsafe {
        let gdt = &mut *(&raw mut GDT);
        core::ptr::copy_nonoverlapping(current.base.as_ptr::<u64>(), gdt.as_mut_ptr(), 7);
        gdt[7] = descriptor;
        lgdt(&DescriptorTablePointer {
            limit: 63,
            base: VirtAddr::new(gdt.as_ptr() as u64),
        });
    }
}
