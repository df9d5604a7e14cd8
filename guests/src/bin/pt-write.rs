//! `pt-write`: page-table writes the hypervisor checks, as Xen does for PV guests.
//!
//! Xen's rule: a page table may only be mapped read-only. So we first make our boot page
//! tables read-only to ourselves, then pin them (`pin_page_table`). From then on every store
//! to a page-table entry raises a #PF (a write to a read-only page), which the hypervisor
//! intercepts: it checks the new entry, writes it for us, and skips our store. Mapping a new
//! page takes three such checked writes (and two more make its new tables read-only). Three
//! entries are refused: one maps memory we do not own, one maps a page table writable, one
//! links a table we still map writable. A refused write gets us the #PF the store raised.
//! And once our tables are pinned, CR0.WP is the hypervisor's: we run at CPL 0, where
//! read-only stops our own stores only while WP is set, so clearing it gets us a #GP. So is
//! CR3: tables we did not pin could map the pinned ones writable, so loading a root we did
//! not pin gets us a #GP too.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};
use traplab_abi::boot::BOOT_PAGE_TABLES;
use traplab_guests::hypercall::pin_page_table;
use traplab_guests::paging::{self, Flags};
use traplab_guests::traps::{TrapFrame, set_handler};
use traplab_guests::{BootInfo, guest_main, println};

/// Where we map the new page: the first address past the boot tables' 1 GiB.
const NEW_PAGE: u64 = 0x4000_0000;
/// Frames for the new level-2 and level-1 tables. Tables must be mapped read-only, so they
/// come from the first 2 MiB, which the boot tables map with 4 KiB pages (a 2 MiB page
/// elsewhere could only be made read-only as a whole). Nothing else uses 0x90000–0x1fffff.
const NEW_PD: u64 = 0x9_0000;
const NEW_PT: u64 = 0x9_1000;
/// A frame we never make read-only, to try to link it as a table.
const STILL_WRITABLE: u64 = 0x9_2000;
/// Guest-physical memory past the end of our 16 MiB of RAM.
const NOT_OURS: u64 = 0x2000_0000;

/// `mov [rax], rcx` is 3 bytes (48 89 08).
const STORE_LENGTH: u64 = 3;
static REFUSED: AtomicU64 = AtomicU64::new(0);

/// `mov cr0, rax` and `mov cr3, rax` are 3 bytes each (0f 22 c0, 0f 22 d8).
const MOV_CR_LENGTH: u64 = 3;

fn general_protection(frame: &mut TrapFrame) {
    println!(
        "  #GP (error code {:#x}): the hypervisor refused the MOV; skipping it",
        frame.error_code
    );
    frame.rip += MOV_CR_LENGTH;
}

/// Clear CR0.WP (bit 16) with `mov cr0, rax`, the instruction the #GP handler skips.
fn clear_write_protect() {
    // SAFETY: clearing WP only lets our own supervisor stores write read-only pages; the
    // hypervisor refuses it while our tables are pinned (#GP, which we skip).
    unsafe {
        core::arch::asm!(
            "mov rax, cr0",
            "btr rax, 16",
            "mov cr0, rax",
            out("rax") _,
            options(nostack)
        )
    };
}

/// Load CR3 with `root` (`mov cr3, rax`, the instruction the #GP handler skips).
fn load_root(root: u64) {
    // SAFETY: `root` is no table we pinned, so the hypervisor refuses the MOV (#GP, which we
    // skip): we go on running on our pinned tables.
    unsafe { core::arch::asm!("mov cr3, rax", in("rax") root, options(nostack)) };
}

fn page_fault(frame: &mut TrapFrame) {
    println!(
        "  #PF (error code {:#x}): the hypervisor refused the entry; skipping the store",
        frame.error_code
    );
    REFUSED.fetch_add(1, Ordering::SeqCst);
    frame.rip += STORE_LENGTH;
}

/// Write `entry` at `address` with a MOV the #PF handler knows how to skip.
fn store(address: u64, entry: u64) {
    // SAFETY: a page-table entry of ours, written before pinning (the table is still
    // writable) or checked by the hypervisor after (or refused with a #PF we skip).
    unsafe {
        core::arch::asm!("mov [rax], rcx", in("rax") address, in("rcx") entry, options(nostack))
    };
}

/// The entry of the boot level-1 table that maps the 4 KiB page at `page` (< 2 MiB).
fn boot_pte(page: u64) -> u64 {
    BOOT_PAGE_TABLES + 0x3000 + (page >> 12) * 8
}

fn read(address: u64) -> u64 {
    // SAFETY: guest RAM, identity-mapped, read-only access.
    unsafe { (address as *const u64).read_volatile() }
}

fn main(_info: &BootInfo) -> i32 {
    set_handler(13, general_protection);
    set_handler(14, page_fault);
    let present = Flags::PRESENT.bits();
    let table = (Flags::PRESENT | Flags::WRITABLE | Flags::USER_ACCESSIBLE).bits();
    let writable = Flags::WRITABLE.bits();

    // The boot tables (PML4, PDPT, PD, PT at 0x10000–0x13fff) become read-only to us. The
    // PT maps itself, so its own entry goes last: after it, we can no longer write it.
    for page in (0..4).map(|index| BOOT_PAGE_TABLES + index * 0x1000) {
        store(boot_pte(page), read(boot_pte(page)) & !writable);
    }
    x86_64::instructions::tlb::flush_all();
    println!(
        "pinned {} page tables (now read-only to us)",
        pin_page_table(BOOT_PAGE_TABLES)
    );
    // With WP clear, our stores would go past the read-only mappings, unchecked.
    println!("clearing CR0.WP, which would let our stores write the pinned tables:");
    clear_write_protect();
    // Tables we did not pin could map the pinned ones writable, anywhere.
    println!("loading CR3 with a root we did not pin, {STILL_WRITABLE:#x}:");
    load_root(STILL_WRITABLE);

    // Two new tables: zeroed while still writable, then made read-only (a checked write to
    // the pinned PT), as a table must be before it is linked.
    for new_table in [NEW_PD, NEW_PT] {
        // SAFETY: a free frame of our RAM, still mapped writable.
        unsafe { core::ptr::write_bytes(new_table as *mut u8, 0, 4096) };
        store(boot_pte(new_table), read(boot_pte(new_table)) & !writable);
    }
    let Some(frame) = paging::alloc_frame() else {
        return 1;
    };
    println!("mapping {NEW_PAGE:#x} to frame {frame:#x}: every entry written is checked");
    let pdpt = BOOT_PAGE_TABLES + 0x1000;
    store(pdpt + 8, NEW_PD | table); // PDPT[1] → the new PD (pinned with it)
    store(NEW_PD, NEW_PT | table); // PD[0] → the new PT
    store(NEW_PT, frame | present | writable); // PT[0] → the frame
    // SAFETY: just mapped to a frame of ours.
    unsafe { (NEW_PAGE as *mut u64).write_volatile(7) };
    println!("the new page works: it holds {}", read(NEW_PAGE));

    println!("an entry mapping guest-physical {NOT_OURS:#x}, which we do not own:");
    store(NEW_PT + 8, NOT_OURS | present | writable);
    println!("an entry mapping our level-4 table writable:");
    store(NEW_PT + 16, BOOT_PAGE_TABLES | present | writable);
    println!("linking a table we still map writable:");
    store(pdpt + 16, STILL_WRITABLE | table);
    // EXERCISE pt-write.1: try a 2 MiB page (PS bit) in entry 1 of the new level-2 table, print
    // `an entry mapping a 2 MiB page:` first, and expect four refusals.
    let refused = REFUSED.load(Ordering::SeqCst);
    println!("{refused} entries refused");
    if refused == 3 { 0 } else { 1 }
}

guest_main!(main);
