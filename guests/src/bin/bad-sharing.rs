//! `bad-sharing`: two domains try what the hypervisor must refuse, one thing at a time.
//!
//! Each attempt gets an error code (an event-channel call's return value, or a grant
//! operation's `GNTST_*` status, Xen's codes) and the trace says why; nothing crosses from
//! one domain to the other, and both go on.
//!
//! - d1 sends on a port it never allocated (EINVAL), and binds to a domain that does not
//!   exist (ESRCH);
//! - d1 grants a frame that is not its own (GNTST_bad_page);
//! - d2 maps a grant d1 made for another domain (GNTST_general_error, as Xen), and a
//!   read-only grant writable (GNTST_general_error);
//! - d1 revokes a grant while d2 maps it (GNTST_eagain), and again once d2 has unmapped
//!   it (okay).
#![no_std]
#![no_main]

use traplab_abi::grant_table::{MAP_AREA, status};
use traplab_abi::hypercall::error;
use traplab_guests::{BootInfo, evtchn, grant, guest_main, hprintln, store};

const READY: &str = "/local/domain/1/bad-sharing/ready";
const TRIED: &str = "/local/domain/1/bad-sharing/revoke-tried";
const MAPPED: &str = "/local/domain/2/bad-sharing/mapped";
const UNMAPPED: &str = "/local/domain/2/bad-sharing/unmapped";

#[repr(C, align(4096))]
struct Page([u8; 4096]);

static mut PAGE: Page = Page([0; 4096]);

fn name(code: i16) -> &'static str {
    status::name(code).unwrap_or("?")
}

fn wait(path: &str) -> bool {
    let mut value = [0u8; 8];
    store::wait(path, &mut value).is_ok()
}

fn d1() -> i32 {
    let page = &raw mut PAGE as u64;
    let mut right = 0;
    let mut check = |what: &str, got: i64, expected: i64| {
        hprintln!("d1: {what}: {got}");
        right += (got == expected) as i32;
    };
    check("shared info", evtchn::init(None), 0);
    check(
        "send on port 5, never allocated",
        evtchn::send(5),
        error::EINVAL,
    );
    let bound = evtchn::bind_interdomain(7, 1).err().unwrap_or(0);
    check("bind to d7, which does not exist", bound, error::ESRCH);

    let for_d3 = grant::grant_access(0, 3, page, false);
    let read_only = grant::grant_access(1, 2, page, true);
    let not_mine = grant::grant_access(2, 2, MAP_AREA, false);
    hprintln!("d1: grant a frame that is not mine: {}", name(not_mine));
    let good = grant::grant_access(3, 2, page, false);
    right += (for_d3 == status::OKAY) as i32
        + (read_only == status::OKAY) as i32
        + (not_mine == status::BAD_PAGE) as i32
        + (good == status::OKAY) as i32;
    store::write(READY, "1");

    if !wait(MAPPED) {
        return 100;
    }
    let early = grant::end_access(3);
    hprintln!("d1: revoke grant 3 while d2 maps it: {}", name(early));
    store::write(TRIED, "1");
    if !wait(UNMAPPED) {
        return 100;
    }
    let late = grant::end_access(3);
    hprintln!("d1: revoke grant 3 once d2 unmapped it: {}", name(late));
    right += (early == status::EAGAIN) as i32 + (late == status::OKAY) as i32;
    // Every check above, right: 3 calls, 4 grants, 2 revokes.
    if right == 9 { 0 } else { 1 }
}

fn d2() -> i32 {
    if !wait(READY) {
        return 100;
    }
    let other = grant::map(1, 0, MAP_AREA, false)
        .err()
        .unwrap_or(status::OKAY);
    hprintln!("d2: map grant 0 of d1, made for d3: {}", name(other));
    let writable = grant::map(1, 1, MAP_AREA, false)
        .err()
        .unwrap_or(status::OKAY);
    hprintln!(
        "d2: map read-only grant 1 of d1 writable: {}",
        name(writable)
    );
    let handle = match grant::map(1, 3, MAP_AREA, false) {
        Ok(handle) => handle,
        Err(code) => {
            hprintln!("d2: map grant 3 of d1: {}", name(code));
            return 2;
        }
    };
    hprintln!("d2: map grant 3 of d1: handle {handle}");
    store::write(MAPPED, "1");
    if !wait(TRIED) {
        return 100;
    }
    let unmapped = grant::unmap(handle, MAP_AREA);
    hprintln!("d2: unmap: {}", name(unmapped));
    // EXERCISE bad-sharing.1: unmap a handle d2 never had (7), and print
    // `d2: unmap handle 7: STATUS`.
    store::write(UNMAPPED, "1");
    let as_expected = other == status::GENERAL_ERROR
        && writable == status::GENERAL_ERROR
        && unmapped == status::OKAY;
    if as_expected { 0 } else { 1 }
}

fn main(info: &BootInfo) -> i32 {
    match info.domain {
        1 => d1(),
        2 => d2(),
        other => {
            hprintln!("bad-sharing runs as d1 and d2, not d{other}");
            1
        }
    }
}

guest_main!(main);
