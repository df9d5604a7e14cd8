//! `faults-bounce`: the same four faults as `faults-reflect`, with the same handlers, but
//! registered with the hypervisor (`set_trap_table`): it delivers them itself, writing the
//! exception frame on our stack, and our handlers return with the `iret` hypercall.
#![no_std]
#![no_main]

use traplab_guests::{BootInfo, bounce, faults, guest_main, println};

fn main(_info: &BootInfo) -> i32 {
    println!("bounce: the hypervisor delivers our exceptions to our trap table");
    let result = bounce::use_trap_table(&faults::VECTORS);
    if result != 0 {
        println!("set_trap_table failed: {result}");
        return 1;
    }
    faults::raise_all();
    println!("four faults handled");
    0
}

guest_main!(main);
