//! `bad-physical` (test guest): point one of our own pages at guest-physical 512 MiB, far
//! beyond the 16 MiB we own, and read it.
//!
//! Our page tables are ours to change, so the walk succeeds; the *nested* page tables do
//! not map that guest-physical address, so the CPU exits with a nested page fault and the
//! hypervisor ends the domain. A guest cannot reach memory it was not given.
#![no_std]
#![no_main]

use traplab_guests::{BootInfo, guest_main, println};
use x86_64::registers::control::Cr3;
use x86_64::structures::paging::{
    FrameAllocator, Mapper, OffsetPageTable, Page, PageTable, PageTableFlags, PhysFrame, Size4KiB,
};
use x86_64::{PhysAddr, VirtAddr};

const WINDOW: u64 = 0x5000_0000;
const OUTSIDE: u64 = 0x2000_0000;

struct FreeFrames(u64);

// SAFETY: frames come from the free range the boot info gives us, each once.
unsafe impl FrameAllocator<Size4KiB> for FreeFrames {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        self.0 += 4096;
        Some(PhysFrame::containing_address(PhysAddr::new(self.0 - 4096)))
    }
}

fn main(info: &BootInfo) -> i32 {
    let (level4, _) = Cr3::read();
    // SAFETY: guest RAM is mapped 1:1, so every page table is at its physical address.
    let mut tables = unsafe {
        OffsetPageTable::new(&mut *(level4.start_address().as_u64() as *mut PageTable), VirtAddr::new(0))
    };
    let page = Page::<Size4KiB>::containing_address(VirtAddr::new(WINDOW));
    let frame = PhysFrame::containing_address(PhysAddr::new(OUTSIDE));
    // SAFETY: the window was unmapped; the frame is not ours, which is the point.
    match unsafe { tables.map_to(page, frame, PageTableFlags::PRESENT, &mut FreeFrames(info.free_start)) } {
        Ok(flush) => flush.flush(),
        Err(error) => println!("could not map: {error:?}"),
    }
    println!("reading guest-physical {OUTSIDE:#x} through {WINDOW:#x}");
    // SAFETY: mapped just above; the nested page tables stop the read.
    let value = unsafe { (WINDOW as *const u64).read_volatile() };
    println!("read {value:#x}: the hypervisor let us out!");
    1
}

guest_main!(main);
