//! Running code at CPL 3 (user mode).
//!
//! [`run`] makes all of RAM user-accessible, then IRETQ "returns" to a ring-3 code segment
//! with a ring-3 stack: the only way down from CPL 0 (AMD APM vol. 2, 4.11 and 8.9.3).
//! Exceptions from ring 3 come back to CPL 0 through the IDT (every gate has an IST stack,
//! so the TSS's RSP0 is not even needed). User code ends the domain with the `exit`
//! hypercall: VMMCALL works at any CPL, and the hypervisor decides what to allow (from user
//! mode: `console_write`, `exit` and `raise_event`; anything else is EPERM, hv/README.md).

use core::sync::atomic::{AtomicUsize, Ordering};

const USER_STACK_SIZE: usize = 16 * 1024;

#[repr(align(16))]
#[allow(dead_code, reason = "only its address is used")]
struct Stack([u8; USER_STACK_SIZE]);

static mut USER_STACK: Stack = Stack([0; USER_STACK_SIZE]);
static USER_MAIN: AtomicUsize = AtomicUsize::new(0);

/// Run `main` at CPL 3; its return value becomes the domain's exit status.
pub fn run(main: fn() -> i32) -> ! {
    crate::paging::allow_user_everywhere();
    USER_MAIN.store(main as usize, Ordering::SeqCst);
    let selectors = crate::selectors();
    let stack_top = (&raw const USER_STACK) as u64 + USER_STACK_SIZE as u64;
    // SAFETY: an IRETQ frame (SS, RSP, RFLAGS, CS, RIP) with ring-3 selectors from our GDT,
    // a ring-3 stack we own, and a ring-3 entry point; interrupts stay off (IF = 0).
    unsafe {
        core::arch::asm!(
            "push {ss}",
            "push {rsp}",
            "push 0x2",
            "push {cs}",
            "push {rip}",
            "iretq",
            ss = in(reg) selectors.user_data.0 as u64,
            rsp = in(reg) stack_top,
            cs = in(reg) selectors.user_code.0 as u64,
            rip = in(reg) user_entry as *const () as u64,
            options(noreturn),
        )
    }
}

/// The first ring-3 instruction.
extern "C" fn user_entry() -> ! {
    let main = USER_MAIN.load(Ordering::SeqCst);
    // SAFETY: `run` stored a `fn() -> i32` here.
    let main: fn() -> i32 = unsafe { core::mem::transmute::<usize, fn() -> i32>(main) };
    crate::hypercall::exit(main())
}
