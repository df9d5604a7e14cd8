//! The machine's physical memory, and how the hypervisor divides it.
//!
//! The boot page tables map the first 4 GiB 1:1, so a physical address below 4 GiB is also
//! the virtual address the hypervisor uses for it.
//!
//! | physical                         | what                                                          |
//! |----------------------------------|---------------------------------------------------------------|
//! | 0 – 1 MiB                        | firmware, BIOS data area, QEMU's option ROMs: left alone       |
//! | 1 MiB – 16 MiB − 160 KiB         | the hypervisor's image: code, data, stacks (`linker.ld`)       |
//! | 16 MiB − 160 KiB – 32 MiB − 160 KiB | the heap ([`crate::heap`]; why it starts there: [`HEAP_START`]) |
//! | 32 MiB – 48 MiB + 4 KiB          | the trace ring (`traplab_abi::ring::RING_PHYS`)                |
//! | 64 MiB – end of RAM              | frames: guest RAM, VMCBs, nested page tables, permission maps  |

use crate::boot::{E820_RAM, MemmapEntry};
use spin::Mutex;
use traplab_abi::ring;

pub use traplab_hv::domain::memory::PAGE_SIZE;
/// 40 pages below 16 MiB, not at it. Under QEMU's TCG the software TLB is direct-mapped by
/// page number, 64 entries for a hypervisor's exit: with the image at 1 MiB and the heap at
/// 16 MiB, both multiples of 64 pages, the image's page k and the heap's page k took the same
/// entry, and the exit path's code and the heap's blocks an exit uses (a domain's, a
/// decision's) took it from each other at every trap, each time a call into QEMU's slow path
/// (book/src/speed.md, "Pages that share an entry of the TLB": 14 such swaps an untraced
/// CPUID trap, 2,300 of QEMU's instructions). From here the heap's page k shares an entry
/// with the image's page k + 24, past the code an exit runs. A real CPU's TLB is set
/// associative, and this does not matter there.
pub const HEAP_START: u64 = (16 << 20) - 40 * PAGE_SIZE;
pub const HEAP_SIZE: u64 = 16 << 20;
pub const FRAMES_START: u64 = 64 << 20;
/// Everything we use must sit below 4 GiB, inside the boot identity map.
const IDENTITY_MAPPED: u64 = 4 << 30;

const _: () = assert!(HEAP_START + HEAP_SIZE <= ring::RING_PHYS);
const _: () =
    assert!(ring::RING_PHYS + (ring::HEADER_SIZE + ring::DATA_SIZE) as u64 <= FRAMES_START);

unsafe extern "C" {
    static __image_end: u8;
}

/// Hands out physical page frames, zeroed, from [`FRAMES_START`] up.
///
/// A bump allocator: frames are never returned. A killed domain's memory stays used for
/// the rest of the run, which lasts one lab; the run ends long before RAM does.
struct FrameAllocator {
    next: u64,
    end: u64,
}

static FRAMES: Mutex<FrameAllocator> = Mutex::new(FrameAllocator { next: 0, end: 0 });

/// The usable RAM found in the memory map, in bytes (its end address).
pub fn init(memory_map: &[MemmapEntry]) -> Result<u64, &'static str> {
    let image_end = (&raw const __image_end) as u64;
    if image_end > HEAP_START {
        return Err("the hypervisor image overlaps its heap");
    }
    let ram = memory_map
        .iter()
        .find(|entry| {
            entry.kind == E820_RAM
                && entry.addr <= FRAMES_START
                && entry.addr + entry.size > FRAMES_START
        })
        .ok_or("no RAM at 64 MiB: give the machine at least 128 MiB")?;
    let end = (ram.addr + ram.size).min(IDENTITY_MAPPED) & !(PAGE_SIZE - 1);
    *FRAMES.lock() = FrameAllocator {
        next: FRAMES_START,
        end,
    };
    Ok(end)
}

/// `count` physically contiguous, zeroed frames; their physical address.
pub fn alloc_frames(count: u64) -> Option<u64> {
    let mut frames = FRAMES.lock();
    let start = frames.next;
    let end = start.checked_add(count * PAGE_SIZE)?;
    if end > frames.end {
        return None;
    }
    frames.next = end;
    // SAFETY: the range is RAM, identity-mapped, and nobody else owns it yet.
    unsafe { core::ptr::write_bytes(start as *mut u8, 0, (count * PAGE_SIZE) as usize) };
    Some(start)
}

/// One zeroed frame.
pub fn alloc_frame() -> Option<u64> {
    alloc_frames(1)
}
