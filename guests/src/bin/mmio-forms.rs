//! `mmio-forms` (test guest): every instruction form the hypervisor emulates on a device
//! register, held to the CPU's own result.
//!
//! Each form runs twice with the same registers and flags: once on a quadword of RAM, where
//! the CPU (QEMU's TCG here) does it, and once on the lab device's SCRATCH register, which is
//! not RAM: a nested page fault, and the hypervisor decodes the instruction and does it
//! (`hv/src/emulate.rs`, `hv/src/exit/npf/string.rs`). The memory, the registers and the
//! flags the manual defines must come out the same. A line per form says what came out;
//! the exit status is the number of forms that differed. `labs/tests/flows.rs` runs it.
#![no_std]
#![no_main]

use traplab_abi::boot::LAB_DEVICE;
use traplab_guests::paging::{self, Flags};
use traplab_guests::{BootInfo, guest_main, println};

/// Where we map the device's page.
const DEVICE: u64 = 0x5000_0000;
/// SCRATCH: eight bytes that keep what is written (`hv/src/device/lab_device.rs`).
const SCRATCH: *mut u64 = (DEVICE + 0x08) as *mut u64;

/// RFLAGS' status flags: CF, PF, AF, ZF, SF, OF.
const STATUS: u64 = 0x8d5;
const CF: u64 = 1;

/// What a form left: the memory, its register operand, RAX, RFLAGS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct After {
    memory: u64,
    register: u64,
    rax: u64,
    rflags: u64,
}

/// A form: an instruction on the quadword at `at` (`[{at}]`), with `{register}` and RAX as
/// its registers, RFLAGS `flags` going in. Its register and RAX, and RFLAGS, after it.
type Form = fn(at: *mut u64, register: u64, rax: u64, flags: u64) -> (u64, u64, u64);

macro_rules! form {
    ($name:ident, [$($instruction:literal),+] $(, $($extra:tt)+)?) => {
        fn $name(at: *mut u64, register: u64, rax: u64, flags: u64) -> (u64, u64, u64) {
            let (mut register, mut rax) = (register, rax);
            let rflags: u64;
            // SAFETY: `at` is SCRATCH (mapped, uncached) or a quadword of RAM of ours, with
            // a quadword of ours before it (`[{at} - 8]`); the PUSH/POPF pair is balanced;
            // the registers a string instruction steps are declared clobbered.
            unsafe {
                core::arch::asm!(
                    "push {flags}",
                    "popfq",
                    $($instruction,)+
                    "pushfq",
                    "pop {rflags}",
                    at = in(reg) at,
                    register = inout(reg) register,
                    flags = in(reg) flags,
                    rflags = lateout(reg) rflags,
                    inout("rax") rax,
                    $($($extra)+)?
                )
            }
            (register, rax, rflags)
        }
    };
}

form!(adc, ["adc qword ptr [{at}], {register}"]);
form!(sbb, ["sbb dword ptr [{at}], {register:e}"]);
form!(bts, ["lock bts qword ptr [{at}], {register}"]);
// The bit number moves the access: 73 is bit 9 of the quadword after [{at} - 8].
form!(bts_displaced, ["lock bts qword ptr [{at} - 8], {register}"]);
form!(
    btr,
    ["btr qword ptr [{at}], 63", "mov {register}, {register}"]
);
form!(btc, ["btc word ptr [{at}], {register:x}"]);
form!(bt, ["bt dword ptr [{at}], {register:e}"]);
form!(cmpxchg, ["lock cmpxchg qword ptr [{at}], {register}"]);
form!(xadd, ["lock xadd dword ptr [{at}], {register:e}"]);
form!(setc, ["setc byte ptr [{at}]", "mov {register}, {register}"]);
form!(
    mov_ds,
    ["mov word ptr [{at}], ds", "mov {register}, {register}"]
);
// The string forms: `{register}` is the count, and RCX's after; RAX the value (STOS) or
// what was loaded (LODS). RSI and RDI are not compared: they step by the same amounts from
// different places.
form!(
    rep_stosb,
    [
        "mov rdi, {at}",
        "mov rcx, {register}",
        "rep stosb",
        "mov {register}, rcx"
    ],
    out("rdi") _,
    out("rcx") _,
);
// Backwards (DF set) from SCRATCH's last byte: `{register}` is the count, and after it how
// far RDI moved (RDI is compared so, since it starts at different places).
form!(
    rep_stosb_backwards,
    [
        "lea rdi, [{at} + 7]",
        "mov rcx, {register}",
        "std",
        "rep stosb",
        "cld",
        "mov {register}, rdi",
        "sub {register}, {at}"
    ],
    out("rdi") _,
    out("rcx") _,
);
form!(
    rep_movsb_in,
    [
        "mov rdi, {at}",
        "lea rsi, [rip + {source}]",
        "mov rcx, {register}",
        "rep movsb",
        "mov {register}, rcx"
    ],
    source = sym SOURCE,
    out("rdi") _,
    out("rsi") _,
    out("rcx") _,
);
form!(
    movsq_out,
    [
        "mov rsi, {at}",
        "lea rdi, [rip + {copy}]",
        "movsq",
        "mov {register}, qword ptr [rip + {copy}]"
    ],
    copy = sym COPY,
    out("rdi") _,
    out("rsi") _,
);
form!(
    lodsq,
    ["mov rsi, {at}", "lodsq", "mov {register}, {register}"],
    out("rsi") _,
);

fn main(_info: &BootInfo) -> i32 {
    if let Err(error) = paging::map(
        DEVICE,
        LAB_DEVICE,
        Flags::WRITABLE | Flags::NO_CACHE | Flags::WRITE_THROUGH,
    ) {
        println!("cannot map the device: {error:?}");
        return 1;
    }
    // (name, form, memory before, register, RAX, RFLAGS in, the flags to compare)
    let forms: [(&str, Form, u64, u64, u64, u64, u64); 17] = [
        (
            "ADC",
            adc,
            0x7fff_ffff_ffff_ffff,
            0x8000_0000_0000_0000,
            0,
            0x2 | CF,
            STATUS,
        ),
        ("SBB", sbb, 0x1_0000_0001, 1, 0, 0x2 | CF, STATUS),
        // The bit tests define CF alone.
        ("BTS", bts, 0x1, 5, 0, 0x2, CF),
        ("BTS 73 bits on", bts_displaced, 0x1, 73, 0, 0x2, CF),
        ("BTR", btr, 0x8000_0000_0000_0001, 0, 0, 0x2, CF),
        ("BTC", btc, 0xffff_0002, 17, 0, 0x2, CF),
        ("BT", bt, 0x10, 4, 0, 0x2, CF),
        (
            "CMPXCHG equal",
            cmpxchg,
            0x1234,
            0xabcd,
            0x1234,
            0x2,
            STATUS,
        ),
        (
            "CMPXCHG not equal",
            cmpxchg,
            0x1234,
            0xabcd,
            0x1235,
            0x2,
            STATUS,
        ),
        ("XADD", xadd, 0xffff_ffff_ffff_fffe, 3, 0, 0x2, STATUS),
        ("SETC", setc, 0xffff, 0, 0, 0x2 | CF, STATUS),
        ("MOV from DS", mov_ds, u64::MAX, 0, 0, 0x2, STATUS),
        ("REP STOSB", rep_stosb, 0, 8, 0x5a, 0x2, STATUS),
        (
            "REP STOSB backwards",
            rep_stosb_backwards,
            0,
            8,
            0xa5,
            0x2,
            STATUS,
        ),
        ("REP MOVSB", rep_movsb_in, 0, 8, 0, 0x2, STATUS),
        ("MOVSQ", movsq_out, 0x0123_4567_89ab_cdef, 0, 0, 0x2, STATUS),
        ("LODSQ", lodsq, 0xfedc_ba98_7654_3210, 0, 0, 0x2, STATUS),
    ];
    let mut differed = 0;
    for (name, form, before, register, rax, flags, compared) in forms {
        // RAM: a quadword with one before it, as SCRATCH has ID and VERSION before it.
        let mut ram = [0u64; 2];
        ram[1] = before;
        let on_ram = run(form, &raw mut ram[1], register, rax, flags, compared);
        // SAFETY: SCRATCH is mapped; an 8-byte write.
        unsafe { SCRATCH.write_volatile(before) };
        let on_device = run(form, SCRATCH, register, rax, flags, compared);
        if on_ram == on_device {
            println!(
                "{name}: the same on the device: memory {:#x}, register {:#x}, RAX {:#x}, flags {:#x}",
                on_device.memory, on_device.register, on_device.rax, on_device.rflags
            );
        } else {
            println!("{name}: RAM {on_ram:x?}, the device {on_device:x?}");
            differed += 1;
        }
    }
    differed
}

/// Run `form` at `at` and read the memory back (volatile: SCRATCH is a device register).
fn run(form: Form, at: *mut u64, register: u64, rax: u64, flags: u64, compared: u64) -> After {
    let (register, rax, rflags) = form(at, register, rax, flags);
    After {
        // SAFETY: `at` is mapped: RAM of ours, or SCRATCH.
        memory: unsafe { at.read_volatile() },
        register,
        rax,
        rflags: rflags & compared,
    }
}

/// REP MOVSB's source: eight bytes of RAM.
static SOURCE: [u8; 8] = *b"traplab!";
/// MOVSQ's destination: a quadword of RAM.
static mut COPY: u64 = 0;

guest_main!(main);
