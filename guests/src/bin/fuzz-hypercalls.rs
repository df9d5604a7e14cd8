//! `fuzz-hypercalls` (test guest): makes random hypercalls with random arguments — small
//! numbers, addresses in its RAM, addresses outside it, huge values — and checks that each
//! one returns. The hypervisor must answer every one with a result or an error code and live
//! on; `labs/tests/fuzz.rs` runs it in several domains side by side, one seed each (the
//! seed is the domain's number), and asserts it.
//!
//! Left out, because they end or stop the caller rather than answer it: `exit`, the `iret`
//! hypercall (it jumps to its argument), `set_pv_mode` (the kernel would find itself at
//! CPL 3), `sched_op` (block and poll wait) and the store's `wait` and `watch`.
#![no_std]
#![no_main]

use traplab_abi::hypercall;
use traplab_guests::hypercall::hypercall5;
use traplab_guests::random::Random;
use traplab_guests::traps::{self, TrapFrame};
use traplab_guests::{BootInfo, guest_main, hprintln};

/// Calls per domain.
const CALLS: u64 = 2_000;
/// The hypercall numbers tried: every one there is, and two that are not.
const NUMBERS: u64 = 16;

/// An argument as hostile code would pick it.
fn argument(random: &mut Random, ram_size: u64) -> u64 {
    match random.next_u64() % 6 {
        0 => random.next_u64() % 16,
        1 => random.next_u64() % ram_size,
        2 => 0x20_0000 + random.next_u64() % 0x10_0000,
        3 => u64::MAX - random.next_u64() % 4096,
        4 => 1 << (random.next_u64() % 64),
        _ => random.next_u64(),
    }
}

/// What a random `raise_event` or timer delivers: ignored (a fault the guest did not cause
/// re-executes nothing: the hypervisor injected it after the VMMCALL).
fn ignore(_frame: &mut TrapFrame) {}

fn main(info: &BootInfo) -> i32 {
    let seed = info.domain as u64;
    for vector in 0..48 {
        traps::set_handler(vector, ignore);
    }
    let mut random = Random::new(seed);
    let (mut calls, mut errors) = (0u64, 0u64);
    while calls < CALLS {
        let number = random.next_u64() % NUMBERS;
        let mut args = [0u64; 5];
        for arg in &mut args {
            *arg = argument(&mut random, info.ram_size);
        }
        let leaves = match number {
            hypercall::EXIT | hypercall::IRET | hypercall::SET_PV_MODE | hypercall::SCHED_OP => {
                true
            }
            // The store's wait (2) and watch (3) block until another domain writes.
            hypercall::STORE_OP => matches!(args[0], 2 | 3),
            // A console write of random memory would flood the trace: keep it short.
            hypercall::CONSOLE_WRITE => {
                args[1] %= 8;
                false
            }
            _ => false,
        };
        if leaves {
            continue;
        }
        // SAFETY: the point is random arguments; the hypervisor validates every pointer
        // against our memory, and a structure it writes lands somewhere in our RAM or
        // nowhere. (Our own code and stack may be hit: that is a bug found, not a crash of
        // the hypervisor.)
        let result = unsafe { hypercall5(number, args) };
        calls += 1;
        if result < 0 {
            errors += 1;
        }
    }
    hprintln!("fuzz-hypercalls d{seed}: {calls} calls answered, {errors} with an error code");
    0
}

guest_main!(main);
