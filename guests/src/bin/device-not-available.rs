//! `device-not-available`: #NM and lazy FPU switching, as Linux (before 4.x) and Xen did it.
//!
//! Two tasks share one FPU. Saving and restoring 512 bytes of x87/SSE state at every task
//! switch is wasted when the next task never touches the FPU, so the kernel only sets
//! CR0.TS at a switch. The first FPU/SSE instruction of the new task then raises #NM; the
//! handler saves the old owner's registers, loads the new task's, clears TS, and returns:
//! the instruction runs again and works. Here task A leaves 0x1111 in XMM15, task B writes
//! 0x2222 there, and A finds its 0x1111 again.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use traplab_guests::traps::FpuState;
use traplab_guests::traps::{TrapFrame, set_handler};
use traplab_guests::{BootInfo, guest_main, println};

const CR0_TS: u64 = 1 << 3;

/// Each task's saved x87/SSE state (FXSAVE images).
static mut SAVED: [FpuState; 2] = [FpuState([0; 512]); 2];
/// Which task runs (set by the "scheduler" in `main`), and whose state the FPU holds.
static CURRENT: AtomicU8 = AtomicU8::new(0);
static OWNER: AtomicU8 = AtomicU8::new(0);
static SWITCHES: AtomicUsize = AtomicUsize::new(0);

fn device_not_available(frame: &mut TrapFrame) {
    let (owner, current) = (OWNER.load(Ordering::SeqCst), CURRENT.load(Ordering::SeqCst));
    println!(
        "#NM: task {} touches the FPU, which holds task {}'s registers: switching",
        task_name(current),
        task_name(owner)
    );
    // SAFETY: one CPU, and the only other user of SAVED is `main` before any #NM.
    let saved = unsafe { &mut *(&raw mut SAVED) };
    // `frame.fpu` is what the FPU held when the #NM came: the owner's live registers. Save
    // them, and put the current task's in their place: the trap entry's FXRSTOR loads them.
    saved[owner as usize] = frame.fpu;
    frame.fpu = saved[current as usize];
    OWNER.store(current, Ordering::SeqCst);
    frame.cr0 &= !CR0_TS;
    SWITCHES.fetch_add(1, Ordering::SeqCst);
}

fn task_name(task: u8) -> char {
    (b'A' + task) as char
}

fn main(_info: &BootInfo) -> i32 {
    set_handler(7, device_not_available);
    // Task B starts with a fresh FPU: FCW 0x37f, MXCSR 0x1f80 (the power-on values).
    // SAFETY: one CPU, before any #NM.
    unsafe {
        let fresh = &mut (*(&raw mut SAVED))[1].0;
        fresh[0..2].copy_from_slice(&0x037fu16.to_le_bytes());
        fresh[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
    }
    println!(
        "task A puts 0x1111 in XMM15; switch to B (set TS); B writes 0x2222; switch to A (set TS); A reads"
    );
    // EXERCISE device-not-available.1: switch to task B once more after A has read its value:
    // B reads XMM15, which must be its 0x2222 again. Print
    // `task B reads 0x2222 after 3 lazy switches`.
    let seen: u32;
    // SAFETY: all in one block, so that no compiled code touches XMM15 in between; the #NM
    // handler preserves every register it does not switch on purpose.
    unsafe {
        core::arch::asm!(
            "mov eax, 0x1111",
            "movd xmm15, eax",                       // task A
            "mov byte ptr [{current}], 1",           // switch to B: lazily, only TS
            "mov rax, cr0", "or rax, {ts}", "mov cr0, rax",
            "mov eax, 0x2222",
            "movd xmm15, eax",                       // task B: #NM, then it works
            "mov byte ptr [{current}], 0",           // switch back to A
            "mov rax, cr0", "or rax, {ts}", "mov cr0, rax",
            "movd eax, xmm15",                       // task A: #NM, then its own value
            current = in(reg) CURRENT.as_ptr(),
            ts = const CR0_TS,
            out("eax") seen,
            out("xmm15") _,
        )
    };
    println!(
        "task A reads {seen:#x} after {} lazy switches",
        SWITCHES.load(Ordering::SeqCst)
    );
    if seen == 0x1111 { 0 } else { 1 }
}

guest_main!(main);
