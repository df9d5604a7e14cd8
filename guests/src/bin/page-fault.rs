//! `page-fault`: write to a page our page tables do not map; the #PF handler maps it; the
//! write is retried and works.
//!
//! The CPU raises #PF (error code 0x2: not present, write, supervisor) with the address in
//! CR2; the hypervisor intercepts it, sets the guest's CR2 and reflects it into our IDT.
//! Our handler takes a free frame, maps the page, and returns: IRETQ goes back to the
//! faulting instruction, which now succeeds.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};
use traplab_guests::traps::{TrapFrame, set_handler};
use traplab_guests::{BootInfo, guest_main, println};
use x86_64::registers::control::{Cr2, Cr3};
use x86_64::structures::paging::{
    FrameAllocator, Mapper, OffsetPageTable, Page, PageTable, PageTableFlags, PhysFrame, Size4KiB,
};
use x86_64::{PhysAddr, VirtAddr};

/// 1 GiB: far above the 16 MiB the boot page tables map.
const UNMAPPED: u64 = 0x4000_0000;

/// Free guest-physical frames, from the boot info's free range.
static NEXT_FREE: AtomicU64 = AtomicU64::new(0);

struct FreeFrames;

// SAFETY: every frame comes from the free range the hypervisor gave us, once.
unsafe impl FrameAllocator<Size4KiB> for FreeFrames {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        let address = NEXT_FREE.fetch_add(4096, Ordering::SeqCst);
        Some(PhysFrame::containing_address(PhysAddr::new(address)))
    }
}

fn page_fault(frame: &mut TrapFrame) {
    let address = Cr2::read_raw();
    println!("#PF at {address:#x}, error code {:#x}: mapping a free frame there", frame.error_code);
    let (level4, _) = Cr3::read();
    // SAFETY: the boot page tables map guest RAM 1:1 (virtual = physical), so the level-4
    // table is at its physical address and offset 0 is right for every table.
    let mut tables = unsafe {
        OffsetPageTable::new(&mut *(level4.start_address().as_u64() as *mut PageTable), VirtAddr::new(0))
    };
    let page = Page::<Size4KiB>::containing_address(VirtAddr::new(address));
    let Some(target) = FreeFrames.allocate_frame() else { return };
    let flags = PageTableFlags::PRESENT | PageTableFlags::WRITABLE;
    // SAFETY: the page was unmapped and the frame is fresh: no existing memory is aliased.
    match unsafe { tables.map_to(page, target, flags, &mut FreeFrames) } {
        Ok(flush) => flush.flush(),
        Err(error) => println!("could not map: {error:?}"),
    }
}

fn main(info: &BootInfo) -> i32 {
    NEXT_FREE.store(info.free_start, Ordering::SeqCst);
    set_handler(14, page_fault);
    println!("writing 42 to {UNMAPPED:#x}, which is not mapped");
    // SAFETY: the write faults, and the #PF handler maps the page before it is retried.
    unsafe { (UNMAPPED as *mut u64).write_volatile(42) };
    // SAFETY: mapped now.
    let value = unsafe { (UNMAPPED as *const u64).read_volatile() };
    println!("the write was retried and worked: read back {value}");
    if value == 42 { 0 } else { 1 }
}

guest_main!(main);
