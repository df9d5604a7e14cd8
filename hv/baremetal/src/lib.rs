//! What the precompiled `core` of the `x86_64-unknown-linux-gnu` target expects from a
//! libc, for programs that run without one (the hypervisor and the lab guests).
//!
//! `core` calls `memcpy`, `memmove`, `memset`, `memcmp` and `bcmp` for copies and
//! comparisons, and names `rust_eh_personality` / `_Unwind_Resume` in its unwind tables
//! even though we abort on panic. See `../shared/DESIGN.md`, "Build facts".
//!
//! The copies use `rep movsq` / `rep stosq` and then `rep movsb` / `rep stosb` for the last
//! bytes: short, correct for every size and alignment. Written as loops, LLVM would
//! recognise them and turn them back into calls to `memcpy`: infinite recursion.
#![no_std]

use core::arch::asm;

/// # Safety
/// The C contract: `dest` and `src` valid for `n` bytes and not overlapping.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // Eight bytes at a time, then the rest: under TCG every iteration of a REP string
    // instruction is an instruction of its own, and Rust moves values of a few hundred bytes
    // (trace events) with memcpy.
    // SAFETY: the caller gives valid, non-overlapping ranges; DF is clear (SysV ABI).
    unsafe {
        asm!("rep movsq", "mov rcx, {tail}", "rep movsb",
             tail = in(reg) n % 8,
             inout("rcx") n / 8 => _, inout("rdi") dest => _, inout("rsi") src => _,
             options(nostack, preserves_flags));
    }
    dest
}

/// # Safety
/// The C contract: `dest` and `src` valid for `n` bytes; they may overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize).wrapping_sub(src as usize) >= n {
        // No harmful overlap: a forward copy reads every byte before it is overwritten.
        // SAFETY: as for memcpy.
        unsafe { memcpy(dest, src, n) }
    } else {
        // `dest` overlaps the end of `src`: copy backwards (DF set), then restore DF.
        // SAFETY: the caller gives valid ranges; we point at their last bytes.
        unsafe {
            asm!("std", "rep movsb", "cld",
                 inout("rcx") n => _, inout("rdi") dest.add(n).wrapping_sub(1) => _,
                 inout("rsi") src.add(n).wrapping_sub(1) => _, options(nostack));
        }
        dest
    }
}

/// # Safety
/// The C contract: `dest` valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dest: *mut u8, value: i32, n: usize) -> *mut u8 {
    // The byte in all eight bytes of RAX: eight at a time, then the rest (as in `memcpy`).
    let byte = value as u8 as u64;
    // SAFETY: the caller gives a valid range; DF is clear.
    unsafe {
        asm!("rep stosq", "mov rcx, {tail}", "rep stosb",
             tail = in(reg) n % 8,
             inout("rcx") n / 8 => _, inout("rdi") dest => _, in("rax") byte * 0x0101_0101_0101_0101,
             options(nostack, preserves_flags));
    }
    dest
}

/// # Safety
/// The C contract: `a` and `b` valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: `i < n` and the caller gives ranges of `n` bytes.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return x as i32 - y as i32;
        }
    }
    0
}

/// # Safety
/// The C contract: `a` and `b` valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}

/// Named by `core`'s unwind tables; never called because every panic aborts.
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}

/// Named by `alloc`'s unwind paths; never called because every panic aborts.
#[unsafe(no_mangle)]
pub extern "C" fn _Unwind_Resume() -> ! {
    loop {
        core::hint::spin_loop();
    }
}

pub mod idt;
pub mod trap;
