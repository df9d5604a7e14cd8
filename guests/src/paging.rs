//! Changing the guest's own page tables.
//!
//! The hypervisor's boot page tables map guest RAM 1:1 (virtual = physical), so every page
//! table is at an address we can use directly: the `x86_64` crate's `OffsetPageTable` with
//! offset 0. Frames for new pages and tables come from the free range in the boot info.

use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::registers::control::Cr3;
use x86_64::structures::paging::mapper::MapToError;
use x86_64::structures::paging::{
    FrameAllocator, Mapper, OffsetPageTable, Page, PageTable, PageTableFlags, PhysFrame, Size4KiB,
};
use x86_64::{PhysAddr, VirtAddr};

pub use x86_64::structures::paging::PageTableFlags as Flags;

static NEXT_FREE: AtomicU64 = AtomicU64::new(0);
static FREE_END: AtomicU64 = AtomicU64::new(0);

/// Free guest-physical frames, handed out once each (set up by the runtime at boot).
pub struct FreeFrames;

pub(crate) fn init(free_start: u64, free_end: u64) {
    NEXT_FREE.store(free_start, Ordering::SeqCst);
    FREE_END.store(free_end, Ordering::SeqCst);
}

// SAFETY: every frame comes from the free range the hypervisor gave us, and only once.
unsafe impl FrameAllocator<Size4KiB> for FreeFrames {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        let address = NEXT_FREE.fetch_add(4096, Ordering::SeqCst);
        (address + 4096 <= FREE_END.load(Ordering::SeqCst))
            .then(|| PhysFrame::containing_address(PhysAddr::new(address)))
    }
}

/// A zeroed free frame's physical (= virtual) address.
pub fn alloc_frame() -> Option<u64> {
    let frame = FreeFrames.allocate_frame()?.start_address().as_u64();
    // SAFETY: a fresh frame of our RAM, identity-mapped, used by nobody yet.
    unsafe { core::ptr::write_bytes(frame as *mut u8, 0, 4096) };
    Some(frame)
}

/// The active page tables.
pub fn tables() -> OffsetPageTable<'static> {
    let (level4, _) = Cr3::read();
    // SAFETY: guest RAM is mapped 1:1, so the level-4 table is at its physical address, and
    // offset 0 is right for every table below it.
    unsafe {
        OffsetPageTable::new(
            &mut *(level4.start_address().as_u64() as *mut PageTable),
            VirtAddr::new(0),
        )
    }
}

/// Map the 4 KiB page at `virtual_address` to the frame at `physical`, with `flags`
/// (PRESENT is added). The page must not be mapped yet.
pub fn map(
    virtual_address: u64,
    physical: u64,
    flags: PageTableFlags,
) -> Result<(), MapToError<Size4KiB>> {
    let page = Page::<Size4KiB>::containing_address(VirtAddr::new(virtual_address));
    let frame = PhysFrame::containing_address(PhysAddr::new(physical));
    // Intermediate tables allow user access and writes: the leaf decides (as the boot tables do).
    let parents =
        PageTableFlags::PRESENT | PageTableFlags::WRITABLE | PageTableFlags::USER_ACCESSIBLE;
    // SAFETY: callers map pages that were unmapped to frames they own; no Rust reference
    // to the page's old contents can exist.
    unsafe {
        tables().map_to_with_table_flags(
            page,
            frame,
            flags | PageTableFlags::PRESENT,
            parents,
            &mut FreeFrames,
        )
    }
    .map(|flush| flush.flush())
}

/// Unmap the 4 KiB page at `virtual_address` (and flush it from the TLB): the next access
/// is a page fault. The frame it led to, if it was mapped.
pub fn unmap(virtual_address: u64) -> Option<u64> {
    let page = Page::<Size4KiB>::containing_address(VirtAddr::new(virtual_address));
    let (frame, flush) = tables().unmap(page).ok()?;
    flush.flush();
    Some(frame.start_address().as_u64())
}

/// Set the flags of the mapped 4 KiB page at `virtual_address` to `flags` (PRESENT is
/// added) and flush it from the TLB. Whether the page was mapped.
pub fn set_flags(virtual_address: u64, flags: PageTableFlags) -> bool {
    let page = Page::<Size4KiB>::containing_address(VirtAddr::new(virtual_address));
    // SAFETY: only the flags of a page that stays mapped to the same frame change.
    match unsafe { tables().update_flags(page, flags | PageTableFlags::PRESENT) } {
        Ok(flush) => {
            flush.flush();
            true
        }
        Err(_) => false,
    }
}

/// Where `virtual_address` leads through the active page tables, if it is mapped.
pub fn translate(virtual_address: u64) -> Option<u64> {
    use x86_64::structures::paging::Translate;
    tables()
        .translate_addr(VirtAddr::new(virtual_address))
        .map(|physical| physical.as_u64())
}

/// Map a fresh zeroed frame at `virtual_address`; returns the frame's address.
pub fn map_new(virtual_address: u64, flags: PageTableFlags) -> Option<u64> {
    let frame = alloc_frame()?;
    map(virtual_address, frame, flags).ok()?;
    Some(frame)
}

/// Let CPL 3 use all of guest RAM: set the USER bit on every leaf of the boot page tables
/// (the upper levels already have it). Ring-3 code in a lab can then run anywhere in the
/// image, with its stack anywhere in RAM.
pub fn allow_user_everywhere() {
    let (level4, _) = Cr3::read();
    let entry = |table: u64, index: u64| (table + index * 8) as *mut u64;
    // SAFETY: the boot tables' layout is documented in traplab_abi::boot: PML4[0] → PDPT[0]
    // → PD, whose entry 0 is a page table and the rest 2 MiB pages. We only set bit 2.
    unsafe {
        let pdpt = *entry(level4.start_address().as_u64(), 0) & 0x000f_ffff_ffff_f000;
        let pd = *entry(pdpt, 0) & 0x000f_ffff_ffff_f000;
        for index in 0..512 {
            let pde = entry(pd, index);
            if *pde & 1 == 0 {
                continue;
            }
            *pde |= PageTableFlags::USER_ACCESSIBLE.bits();
            if *pde & PageTableFlags::HUGE_PAGE.bits() == 0 {
                let pt = *pde & 0x000f_ffff_ffff_f000;
                for pte in 0..512 {
                    if *entry(pt, pte) & 1 != 0 {
                        *entry(pt, pte) |= PageTableFlags::USER_ACCESSIBLE.bits();
                    }
                }
            }
        }
    }
    x86_64::instructions::tlb::flush_all();
}
