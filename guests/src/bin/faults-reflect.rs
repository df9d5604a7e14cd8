//! `faults-reflect`: #DE, #BP, #UD and #PF, delivered by the CPU through our IDT (the
//! hypervisor reflects each with EVENTINJ). Compare with `faults-bounce`.
#![no_std]
#![no_main]

use traplab_guests::{BootInfo, faults, guest_main, println};

fn main(_info: &BootInfo) -> i32 {
    println!("reflect: the CPU delivers our exceptions through our IDT");
    faults::raise_all();
    println!("four faults handled");
    0
}

guest_main!(main);
