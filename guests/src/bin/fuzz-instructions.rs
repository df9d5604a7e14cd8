//! `fuzz-instructions` (test guest): runs random instruction bytes at CPL 0 and recovers from
//! whatever they raise. It attacks the hypervisor, not itself: every exit the random code
//! causes — privileged instructions, port and MSR accesses, CR writes, faults the hypervisor
//! reflects, a HLT, a triple fault — must be decided as a CPU would, and the hypervisor
//! must live on whatever happens to this domain. `labs/tests/fuzz.rs` runs it in several
//! domains, one seed each (the seed is the domain's number), and asserts exactly that.
//!
//! Each round: a code page full of `int3` (0xCC) gets 16 random bytes in its middle; every
//! general register points into a scratch page (so that most random loads and stores land
//! there); the bytes run. Whatever they raise — the `int3` after them included — comes to
//! [`recover`] through the IDT, which puts the CPU back to the round's start: RIP, RSP,
//! RFLAGS, CR0 as they were (the trap entry restores CR0 from the frame). A round that loops
//! forever with interrupts on is stopped by the guest's own timer.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};
use traplab_guests::hypercall::set_timer;
use traplab_guests::random::Random;
use traplab_guests::traps::{self, TrapFrame};
use traplab_guests::{BootInfo, guest_main, hprintln, paging};

/// Rounds per domain.
const ROUNDS: u64 = 1_000;
/// Where the random code runs (a page mapped writable and executable).
const CODE_PAGE: u64 = 0x7000_0000;
/// Where the random code's registers point.
const SCRATCH_PAGE: u64 = 0x7000_2000;
/// The timer that stops a round looping with interrupts on.
const TIMER_VECTOR: u8 = 0x20;

/// The stack pointer of `run_round`, for [`recover`] to return to.
static SAVED_RSP: AtomicU64 = AtomicU64::new(0);
/// What the last round raised (its vector).
static LAST_VECTOR: AtomicU64 = AtomicU64::new(0);
/// CR0 at the start, which every recovery puts back.
static CLEAN_CR0: AtomicU64 = AtomicU64::new(0);

fn main(info: &BootInfo) -> i32 {
    let seed = info.domain as u64;
    let flags = paging::Flags::WRITABLE;
    if paging::map_new(CODE_PAGE, flags).is_none() || paging::map_new(SCRATCH_PAGE, flags).is_none()
    {
        return 1;
    }
    CLEAN_CR0.store(
        x86_64::registers::control::Cr0::read_raw(),
        Ordering::SeqCst,
    );
    for vector in 0..48 {
        traps::set_handler(vector, recover);
    }
    set_timer(TIMER_VECTOR, 2_000);
    let mut random = Random::new(seed);
    let mut raised = [0u64; 48];
    for _ in 0..ROUNDS {
        // SAFETY: both pages are ours, mapped above; nothing else uses them.
        unsafe {
            core::ptr::write_bytes(CODE_PAGE as *mut u8, 0xcc, 4096);
            core::ptr::write_bytes(SCRATCH_PAGE as *mut u8, 0, 4096);
            for offset in 0..16 {
                ((CODE_PAGE + 2048 + offset) as *mut u8).write_volatile(random.next_u64() as u8);
            }
        }
        let vector = run_round(CODE_PAGE + 2048, SCRATCH_PAGE);
        if let Some(count) = raised.get_mut(vector as usize) {
            *count += 1;
        }
    }
    hprintln!(
        "fuzz-instructions d{seed}: {ROUNDS} rounds survived; #UD {}, #GP {}, #PF {}, #BP {}, timer {}",
        raised[6],
        raised[13],
        raised[14],
        raised[3],
        raised[TIMER_VECTOR as usize]
    );
    0
}

/// Run the code at `code` with every register at `scratch` (RSP in its middle); returns the
/// vector of what stopped it.
#[unsafe(naked)]
extern "C" fn run_round(code: u64, scratch: u64) -> u64 {
    core::arch::naked_asm!(
        "push rbx",
        "push rbp",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        "mov [rip + {saved}], rsp",
        "mov rax, rsi",
        "mov rbx, rsi",
        "mov rcx, rsi",
        "mov rdx, rsi",
        "mov rbp, rsi",
        "mov r8, rsi",
        "mov r9, rsi",
        "mov r10, rsi",
        "mov r11, rsi",
        "mov r12, rsi",
        "mov r13, rsi",
        "mov r14, rsi",
        "mov r15, rsi",
        "lea rsp, [rsi + 2048]",
        // Interrupts on: the guest's timer stops a round that loops.
        "sti",
        "jmp rdi",
        saved = sym SAVED_RSP,
    )
}

/// Where every trap sends the CPU back to: `run_round`'s caller, with the vector.
#[unsafe(naked)]
extern "C" fn back_to_caller() -> ! {
    core::arch::naked_asm!(
        "mov rsp, [rip + {saved}]",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbp",
        "pop rbx",
        "mov rax, [rip + {vector}]",
        "ret",
        saved = sym SAVED_RSP,
        vector = sym LAST_VECTOR,
    )
}

/// Every vector's handler: note what came, and return to the round's start with a clean
/// CPU state (interrupts off, CR0 as at boot, our own code and stack segments).
fn recover(frame: &mut TrapFrame) {
    LAST_VECTOR.store(frame.vector, Ordering::SeqCst);
    let selectors = traplab_guests::selectors();
    frame.rip = back_to_caller as *const () as u64;
    frame.rsp = SAVED_RSP.load(Ordering::SeqCst);
    frame.rflags = 0x2;
    frame.cs = selectors.kernel_code.0 as u64;
    frame.ss = selectors.kernel_data.0 as u64;
    frame.cr0 = CLEAN_CR0.load(Ordering::SeqCst);
}

guest_main!(main);
