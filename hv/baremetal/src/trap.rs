//! Exception entry stubs and the frame they build, for the hypervisor and the guest runtime.
//!
//! When the CPU delivers an exception in 64-bit mode it switches to the IST stack named by
//! the gate, aligns it to 16 bytes, and pushes SS, RSP, RFLAGS, CS, RIP and, for some
//! vectors, an error code (AMD APM vol. 2, 8.9.3 "Interrupt Stack Frame"). Our stubs make
//! every vector look the same: a stub pushes a zero where the CPU pushed no error code, then
//! the vector number, and jumps to a common entry that saves all general registers, CR0 and
//! the x87/SSE state, and calls the handler with a [`TrapFrame`]. When the handler returns,
//! the entry restores everything and executes IRETQ: the interrupted code continues at
//! `frame.rip`.
//!
//! Why CR0 is in the frame: the handler is Rust code and may use SSE, but with CR0.TS set
//! (lazy FPU switching) any SSE instruction — FXSAVE included — raises #NM. So the entry
//! saves CR0, clears TS (CLTS), saves the FPU state, and on the way out restores both: the
//! interrupted code finds TS as it was, unless the handler changed `frame.cr0` (the #NM
//! handler of a lazy-FPU kernel clears TS there). The FPU state in the frame is the
//! interrupted code's: a handler may swap it (`frame.fpu`), which is lazy FPU switching.

/// The x87/SSE state as FXSAVE stores it (AMD APM vol. 5, FXSAVE): 512 bytes.
#[repr(C, align(16))]
#[derive(Clone, Copy)]
pub struct FpuState(pub [u8; 512]);

impl core::fmt::Debug for FpuState {
    fn fmt(&self, formatter: &mut core::fmt::Formatter) -> core::fmt::Result {
        formatter.write_str("FpuState")
    }
}

/// The stack at the call of a trap handler, lowest address first.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct TrapFrame {
    /// The interrupted code's x87/SSE state (FXSAVE image), restored on return.
    pub fpu: FpuState,
    /// CR0 when the trap came in, written back on return (TS included).
    pub cr0: u64,
    _padding: u64,
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// Pushed by our stub.
    pub vector: u64,
    /// Pushed by the CPU, or a zero pushed by our stub.
    pub error_code: u64,
    /// Pushed by the CPU: where IRETQ returns.
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

// 512 + 2 + 15 registers + vector + error code + 5 CPU words: a multiple of 16 bytes, so
// the 16-byte alignment the CPU gave the stack survives to FXSAVE and to the handler call.
const _: () = assert!(core::mem::size_of::<TrapFrame>() == 512 + 24 * 8);
const _: () = assert!(core::mem::size_of::<TrapFrame>().is_multiple_of(16));

/// `trap_entry!(name, handler)`: the common entry `name`, which saves the interrupted
/// state, calls `handler(&mut TrapFrame)` (an `extern "C" fn`), restores and returns with
/// IRETQ.
#[macro_export]
macro_rules! trap_entry {
    ($name:ident, $handler:path) => {
        $crate::trap_entry!(@build $name, $handler,
            // Save CR0 in the frame and clear TS, so that FXSAVE and the handler's SSE
            // cannot raise #NM; put CR0 back (TS as it was, or as the handler set it).
            ["mov rax, cr0", "push rax", "clts"],
            ["pop rax", "mov cr0, rax"],
            ["iretq"]);
    };
    (@build $name:ident, $handler:path, [$($save_cr0:literal),*], [$($restore_cr0:literal),*], [$($return:literal),*]) => {
        #[unsafe(naked)]
        pub extern "C" fn $name() -> ! {
            core::arch::naked_asm!(
                "push rax", "push rbx", "push rcx", "push rdx", "push rsi", "push rdi", "push rbp",
                "push r8", "push r9", "push r10", "push r11", "push r12", "push r13", "push r14",
                "push r15",
                "push 0",                   // padding
                $($save_cr0,)*
                "sub rsp, 512",
                "fxsave [rsp]",
                "mov rdi, rsp",
                "cld",
                "call {handler}",
                "fxrstor [rsp]",
                "add rsp, 512",
                $($restore_cr0,)*
                "add rsp, 8",
                "pop r15", "pop r14", "pop r13", "pop r12", "pop r11", "pop r10", "pop r9",
                "pop r8", "pop rbp", "pop rdi", "pop rsi", "pop rdx", "pop rcx", "pop rbx",
                "pop rax",
                "add rsp, 16",              // vector and error code
                $($return,)*
                handler = sym $handler,
            )
        }
    };
}

/// `bounce_entry!(name, handler)`: like [`trap_entry!`], for exceptions the hypervisor
/// *bounces* (delivers itself, to handlers registered with the `set_trap_table` hypercall).
/// The frame the hypervisor builds has the hardware's layout, so the stubs are the same;
/// the way back differs: not IRETQ but the `iret` hypercall (number 3), with RAX pushed on
/// the frame for the hypervisor to restore (`traplab_abi::hypercall::IretFrame`). CR0 is
/// left alone: a bounced handler may run at CPL 3, where it cannot touch CR0.
#[macro_export]
macro_rules! bounce_entry {
    ($name:ident, $handler:path) => {
        $crate::trap_entry!(@build $name, $handler,
            ["push 0"],
            ["add rsp, 8"],
            ["push rax", "mov eax, 3", "vmmcall", "ud2"]);
    };
}

/// The distance between two entries of the table [`exception_entries!`] builds.
pub const ENTRY_SIZE: u64 = 16;

/// `exception_entries!(name, entry)`: a function `name` that is really a table of 32 entry
/// stubs, one per vector, each [`ENTRY_SIZE`] bytes apart (as Linux lays out its
/// `asm_exc_*` entries): vector `n` starts at `name + 16 * n`, so a trace or a debugger
/// shows `name+0xe0` for the #PF entry. A stub pushes a zero where the CPU pushes no error
/// code (every vector but 8, 10–14, 17, 21, 29 and 30: AMD APM vol. 2, table 8-1), pushes
/// its vector and jumps to the common `entry` (made by [`trap_entry!`]).
#[macro_export]
macro_rules! exception_entries {
    ($name:ident, $entry:path) => {
        #[unsafe(naked)]
        pub extern "C" fn $name() -> ! {
            core::arch::naked_asm!(
                ".p2align 4", "push 0", "push 0", "jmp {entry}",
                ".p2align 4", "push 0", "push 1", "jmp {entry}",
                ".p2align 4", "push 0", "push 2", "jmp {entry}",
                ".p2align 4", "push 0", "push 3", "jmp {entry}",
                ".p2align 4", "push 0", "push 4", "jmp {entry}",
                ".p2align 4", "push 0", "push 5", "jmp {entry}",
                ".p2align 4", "push 0", "push 6", "jmp {entry}",
                ".p2align 4", "push 0", "push 7", "jmp {entry}",
                ".p2align 4", "push 8", "jmp {entry}",
                ".p2align 4", "push 0", "push 9", "jmp {entry}",
                ".p2align 4", "push 10", "jmp {entry}",
                ".p2align 4", "push 11", "jmp {entry}",
                ".p2align 4", "push 12", "jmp {entry}",
                ".p2align 4", "push 13", "jmp {entry}",
                ".p2align 4", "push 14", "jmp {entry}",
                ".p2align 4", "push 0", "push 15", "jmp {entry}",
                ".p2align 4", "push 0", "push 16", "jmp {entry}",
                ".p2align 4", "push 17", "jmp {entry}",
                ".p2align 4", "push 0", "push 18", "jmp {entry}",
                ".p2align 4", "push 0", "push 19", "jmp {entry}",
                ".p2align 4", "push 0", "push 20", "jmp {entry}",
                ".p2align 4", "push 21", "jmp {entry}",
                ".p2align 4", "push 0", "push 22", "jmp {entry}",
                ".p2align 4", "push 0", "push 23", "jmp {entry}",
                ".p2align 4", "push 0", "push 24", "jmp {entry}",
                ".p2align 4", "push 0", "push 25", "jmp {entry}",
                ".p2align 4", "push 0", "push 26", "jmp {entry}",
                ".p2align 4", "push 0", "push 27", "jmp {entry}",
                ".p2align 4", "push 0", "push 28", "jmp {entry}",
                ".p2align 4", "push 29", "jmp {entry}",
                ".p2align 4", "push 30", "jmp {entry}",
                ".p2align 4", "push 0", "push 31", "jmp {entry}",
                entry = sym $entry,
            )
        }
    };
}

/// The addresses of the 32 stubs of a table made by [`exception_entries!`], for
/// [`crate::idt::set_exception_stubs`].
pub fn entry_addresses(table: extern "C" fn() -> !) -> [u64; 32] {
    core::array::from_fn(|vector| entry_address(table, vector))
}

/// The address of entry `index` of a table made by [`exception_entries!`] or
/// [`interrupt_entries!`].
pub fn entry_address(table: extern "C" fn() -> !, index: usize) -> u64 {
    table as *const () as u64 + ENTRY_SIZE * index as u64
}

/// `interrupt_entries!(name, entry)`: like [`exception_entries!`], for the 16 legacy PIC
/// vectors 0x20–0x2F (no error code): entry `n` (vector `0x20 + n`) starts at `name + 16 * n`.
#[macro_export]
macro_rules! interrupt_entries {
    ($name:ident, $entry:path) => {
        #[unsafe(naked)]
        pub extern "C" fn $name() -> ! {
            core::arch::naked_asm!(
                ".p2align 4", "push 0", "push 32", "jmp {entry}",
                ".p2align 4", "push 0", "push 33", "jmp {entry}",
                ".p2align 4", "push 0", "push 34", "jmp {entry}",
                ".p2align 4", "push 0", "push 35", "jmp {entry}",
                ".p2align 4", "push 0", "push 36", "jmp {entry}",
                ".p2align 4", "push 0", "push 37", "jmp {entry}",
                ".p2align 4", "push 0", "push 38", "jmp {entry}",
                ".p2align 4", "push 0", "push 39", "jmp {entry}",
                ".p2align 4", "push 0", "push 40", "jmp {entry}",
                ".p2align 4", "push 0", "push 41", "jmp {entry}",
                ".p2align 4", "push 0", "push 42", "jmp {entry}",
                ".p2align 4", "push 0", "push 43", "jmp {entry}",
                ".p2align 4", "push 0", "push 44", "jmp {entry}",
                ".p2align 4", "push 0", "push 45", "jmp {entry}",
                ".p2align 4", "push 0", "push 46", "jmp {entry}",
                ".p2align 4", "push 0", "push 47", "jmp {entry}",
                entry = sym $entry,
            )
        }
    };
}
