//! `cpuid`: ask the CPU who it is, and find out that a hypervisor answers.
//!
//! CPUID always exits to the hypervisor, which sets the "hypervisor present" bit
//! (CPUID.1:ECX bit 31) and answers leaf 0x4000_0000 with its signature.
#![no_std]
#![no_main]

use core::arch::x86_64::__cpuid;
use traplab_abi::boot::cpuid::{HYPERVISOR_BIT, SIGNATURE, SIGNATURE_LEAF};
use traplab_guests::{BootInfo, guest_main, println};

fn main(_info: &BootInfo) -> i32 {
    let features = __cpuid(1);
    let hypervisor_present = features.ecx & HYPERVISOR_BIT != 0;
    println!(
        "CPUID.1:ECX bit 31 (hypervisor present) = {}",
        hypervisor_present as u8
    );

    let leaf = __cpuid(SIGNATURE_LEAF);
    let mut signature = [0u8; 12];
    signature[0..4].copy_from_slice(&leaf.ebx.to_le_bytes());
    signature[4..8].copy_from_slice(&leaf.ecx.to_le_bytes());
    signature[8..12].copy_from_slice(&leaf.edx.to_le_bytes());
    let text = core::str::from_utf8(&signature).unwrap_or("(not text)");
    println!(
        "CPUID.0x40000000: signature \"{text}\", highest leaf {:#x}",
        leaf.eax
    );

    // EXERCISE cpuid.1: only once the signature is traplab's may the guest trust the next
    // leaf: read leaf `VERSION_LEAF` (0x4000_0001), whose EAX is the hypercall ABI version,
    // and print `hypercall ABI version N`.
    if hypervisor_present && signature == SIGNATURE {
        0
    } else {
        1
    }
}

guest_main!(main);
