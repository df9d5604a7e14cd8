//! `bad-block`: a domain that waits for an event nothing will ever send.
//!
//! It blocks (`SCHEDOP_block`) with no event channel, no timer and no other domain alive:
//! nothing can wake it. A CPU halted like that would sit there forever; the hypervisor sees
//! that no runnable domain and no timer is left that could wake it, and kills it as a
//! deadlock. The next domain runs as if nothing happened.
#![no_std]
#![no_main]

use traplab_guests::{BootInfo, evtchn, guest_main, hprintln, sched};

fn main(_info: &BootInfo) -> i32 {
    evtchn::init(None);
    hprintln!("blocking, and nothing can wake me");
    let result = sched::block();
    hprintln!("woken?! block returned {result}");
    1
}

guest_main!(main);
