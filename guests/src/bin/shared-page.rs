//! `shared-page`: one domain lends a page of its memory to another.
//!
//! Two domains side by side, this same program in each:
//!
//! - **d1, the granter**, fills entry 0 of its grant table: "d2 may map my page P,
//!   writable", and publishes the grant reference in the store. Then it waits for d2.
//! - **d2, the mapper**, reads the reference and asks the hypervisor to map grant 0 of d1
//!   (`GNTTABOP_map_grant_ref`) at a guest-physical address of its own. The hypervisor
//!   checks the entry (for d2? writable?) and puts d1's host frame into d2's nested page
//!   tables: d2 now reaches d1's page. It writes a message there, unmaps it
//!   (`GNTTABOP_unmap_grant_ref`: the frame leaves d2's nested page tables) and says so.
//! - d1 reads the message in its own page, and ends the grant.
//!
//! No byte was copied by the hypervisor: both domains used the same frame of memory.
#![no_std]
#![no_main]

use traplab_abi::grant_table::{MAP_AREA, status};
use traplab_guests::{BootInfo, grant, guest_main, hprintln, store};

const GREF_NODE: &str = "/local/domain/1/shared-page/gref";
const DONE_NODE: &str = "/local/domain/2/shared-page/done";
const MESSAGE: &[u8] = b"hello from d2, through d1's own page";

/// The page d1 lends.
#[repr(C, align(4096))]
struct Page([u8; 4096]);

static mut PAGE: Page = Page([0; 4096]);

fn granter() -> i32 {
    let page = &raw mut PAGE as u64;
    let granted = grant::grant_access(0, 2, page, false);
    if store::write_number(GREF_NODE, 0) != 0 {
        hprintln!("d1: cannot publish the grant reference");
        return 2;
    }
    // d2 maps the page and writes to it meanwhile; talk after.
    let mut done = [0u8; 8];
    match store::wait(DONE_NODE, &mut done) {
        Ok(GAVE_UP) => {
            hprintln!("d1: grant 0 = my page {page:#x} for d2: status {granted}; d2 gave up");
            return 1;
        }
        Ok(_) => {}
        Err(_) => return 2,
    }
    hprintln!("d1: grant 0 = my page {page:#x} for d2, writable: status {granted}; d2 is done");
    // SAFETY: d2 has unmapped the page; it is ours alone again. A volatile read: another
    // domain wrote it, behind the compiler's back.
    let bytes: [u8; 4096] = unsafe { core::ptr::read_volatile(&raw const PAGE).0 };
    let length = bytes.iter().position(|&byte| byte == 0).unwrap_or(0);
    let message = core::str::from_utf8(&bytes[..length]).unwrap_or("(not text)");
    hprintln!("d1: my page now says \"{message}\"");
    let ended = grant::end_access(0);
    hprintln!("d1: grant 0 ended: status {ended}");
    let as_expected =
        granted == status::OKAY && &bytes[..length] == MESSAGE && ended == status::OKAY;
    if as_expected { 0 } else { 1 }
}

/// What d2 writes to [`DONE_NODE`] when it cannot go on: d1 waits for that node, and hears
/// of it, instead of waiting for ever (and being ended as deadlocked).
const GAVE_UP: &str = "gave up";

/// d2 cannot go on: it tells d1 ([`GAVE_UP`]) and ends with `code`.
fn give_up(code: i32) -> i32 {
    store::write(DONE_NODE, GAVE_UP);
    code
}

fn mapper() -> i32 {
    let Ok(gref) = store::wait_number(GREF_NODE) else {
        hprintln!("d2: d1's grant reference is no number");
        return give_up(2);
    };
    let handle = match grant::map(1, gref, MAP_AREA, false) {
        Ok(handle) => handle,
        Err(code) => {
            hprintln!("d2: mapping grant {gref} of d1 failed: status {code}");
            return give_up(3);
        }
    };
    hprintln!("d2: grant {gref} of d1 mapped at {MAP_AREA:#x}, handle {handle}");
    let target = MAP_AREA as *mut u8;
    for (offset, &byte) in MESSAGE.iter().enumerate() {
        // SAFETY: the page at MAP_AREA is d1's granted page, mapped writable in both our
        // page tables and the nested ones; the message fits in it.
        unsafe { target.add(offset).write_volatile(byte) };
    }
    hprintln!("d2: message written into d1's page");
    let unmapped = grant::unmap(handle, MAP_AREA);
    hprintln!("d2: unmapped: status {unmapped}");
    if store::write(DONE_NODE, "1") != 0 {
        hprintln!("d2: cannot tell d1 it is done");
        return 5;
    }
    // EXERCISE shared-page.1: read the first byte at MAP_AREA again, now that the grant is
    // unmapped, and print it (`d2: after the unmap the page holds …`).
    if unmapped == status::OKAY { 0 } else { 4 }
}

fn main(info: &BootInfo) -> i32 {
    match info.domain {
        1 => granter(),
        2 => mapper(),
        other => {
            hprintln!("shared-page runs as d1 and d2, not d{other}");
            1
        }
    }
}

guest_main!(main);
