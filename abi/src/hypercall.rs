//! The hypercall ABI: how a guest asks the hypervisor for something.
//!
//! A guest executes `VMMCALL` (`0f 01 d9`). The hypervisor intercepts it (APM vol. 2,
//! 15.11: VMMCALL "can be intercepted"; a guest that runs it without the intercept gets #UD).
//!
//! | register | meaning                                                          |
//! |----------|------------------------------------------------------------------|
//! | RAX      | the hypercall number (below)                                     |
//! | RDI, RSI, RDX, R10, R8 | arguments 1–5 (the order Xen uses on x86-64)       |
//! | RAX      | on return: the result, or a negative error code ([`error`])      |
//!
//! All other registers are preserved. Pointers are guest *virtual* addresses, translated
//! through the guest's own page tables and checked as the guest's CPU would check its own
//! access there: a pointer the hypervisor cannot translate, that leaves the guest's memory,
//! names a supervisor page from CPL 3, or a page the CPU would not let the guest write
//! (read-only, CR0.WP included) for a structure the call writes results into, gets
//! [`error::EFAULT`] and nothing else happens.
//! RIP moves past the VMMCALL, except for [`EXIT`], which does not return.
//!
//! The calls that have a Xen counterpart take its arguments and give its results, but the
//! numbers are traplab's own, in one short table: Xen numbers them in `xen.h`
//! (`__HYPERVISOR_set_trap_table` 0, `grant_table_op` 20, `iret` 23, `sched_op` 29,
//! `event_channel_op` 32, …) and enters through a hypercall page, not a bare `VMMCALL`.
//!
//! | number | name             | arguments                          | result                          |
//! |--------|------------------|------------------------------------|---------------------------------|
//! | 0      | `console_write`  | RDI = buffer, RSI = length (≤ 4096) | bytes written, `EFAULT`, `EINVAL` |
//! | 1      | `exit`           | RDI = status (i32)                 | does not return: the domain ends |
//! | 2      | `set_trap_table` | RDI = table of [`TrapInfo`], or 0  | 0, `EFAULT`, `EINVAL`           |
//! | 3      | `iret`           | RSP = an [`IretFrame`]             | does not return to the caller: resumes the frame, or `EFAULT`, `EINVAL` |
//! | 4      | `raise_event`    | RDI = vector, RSI = error code     | 0, then the event is delivered; `EINVAL` |
//! | 5      | `pin_page_table` | RDI = a level-4 table (guest-physical) | tables newly pinned; `EINVAL` |
//! | 6      | `set_timer`      | RDI = vector (32–255), RSI = period in µs (1,000–10,000,000), or 0 to stop | 0, `EINVAL` |
//! | 7      | `set_pv_mode`    | RDI = 1: from now on the hypervisor emulates privileged instructions that fault at CPL 3 (0: stop) | 0, `EINVAL` |
//! | 8      | —                | (left free for the `hypercall` lab's exercise)     |                                 |
//! | 9      | `sched_op`       | RDI = command, RSI = its argument ([`crate::sched`]) | 0; `EINVAL`, `EFAULT`; `ENOSYS` for an unknown command |
//! | 10     | `event_channel_op` | RDI = command, RSI = its structure ([`crate::evtchn`]) | 0; `EINVAL`, `EFAULT`, `ESRCH`, `EPERM`, `ENOSPC`, `EEXIST` and `ENOENT` (`bind_virq`); `ENOSYS` for an unknown command |
//! | 11     | `grant_table_op` | RDI = command, RSI = its structure ([`crate::grant_table`]) | 0 and a `GNTST_*` status in the structure; `EFAULT`; `EINVAL` for a continuation's bits (31:12); `ENOSYS` for an unknown command |
//! | 12     | `set_callback`   | RDI = how ([`crate::evtchn::callback`]: 0 vector), RSI = the vector (32–255, 0: none) | 0; `EINVAL`; `ENOSYS` for 1 (a PV callback address) |
//! | 13     | `set_shared_info`| RDI = a page of the guest's RAM (guest-physical): its shared-info page ([`crate::evtchn::shared_info`]) | 0; `EINVAL` |
//! | 14     | `store_op`       | RDI = command, RSI = path, RDX = its length, R10 = value, R8 = its length ([`crate::store`]) | see there |
//!
//! Any other number returns [`error::ENOSYS`].
//!
//! ## Exceptions delivered by the hypervisor: `set_trap_table` and `iret`
//!
//! As Xen's `do_set_trap_table` and `do_guest_trap`: a guest that registers a handler for a
//! vector gets that exception *bounced*: the hypervisor builds an exception frame on the
//! guest's stack and resumes the guest at the handler, instead of letting the CPU deliver
//! it through the guest's IDT. Each entry ([`TrapInfo`], Xen's `trap_info`) sets its
//! vector's handler, the others stay (a later entry for the same vector wins); a table
//! pointer of 0 clears them all. An entry whose handler is not a canonical address is
//! `EINVAL`, as Xen's, and so is a list of more than [`TRAP_TABLE_MAX`] entries (traplab's
//! bound); the entries before it are set, as in Xen. The bounce frame has the hardware's layout, at a 16-byte
//! aligned address 128 bytes below the interrupted RSP (the red zone, which the System V
//! ABI lets a function use below RSP, is left alone, as Linux does for signal frames):
//!
//! | offset | value                                                  |
//! |--------|--------------------------------------------------------|
//! | +0     | error code (only for vectors that have one: 8, 10–14, 17, 21, 29, 30) |
//! | +0/+8  | RIP: where the trap happened (fault) or after it (trap) |
//! | +8/+16 | CS                                                     |
//! | …      | RFLAGS, RSP, SS                                        |
//!
//! The hypervisor writes the frame as Xen does, at ring 0 with CR0.WP set: every page of it
//! must be mapped and writable at every level of the guest's page tables, whatever the
//! guest's CPL and its own CR0.WP; a frame that cannot be written so ends the domain (Xen
//! crashes a PV domain whose stack faults while it builds a bounce frame).
//!
//! For a PV kernel (`set_pv_mode`) the interrupt flag is its virtual one: the frame's IF
//! carries that, an entry with [`TrapInfo::CLEAR_IF`] clears it for the handler, and
//! `iret` restores it from the frame (Xen keeps it in `evtchn_upcall_mask` the same way).
//! RFLAGS.IF stays set throughout, as a Xen PV guest always runs with it (`do_iret` sets it).
//!
//! The trap table is the kernel's, and a 64-bit one's (the frame is 64-bit mode's; outside
//! 64-bit mode `set_trap_table` returns `EINVAL`, and events go through the IDT): it takes the events of a PV kernel (at CPL 3,
//! all kernel) and of a non-PV kernel at CPL 0. A non-PV kernel's user programs (CPL 3) take theirs
//! through its IDT, where the CPU switches to the kernel's stack (TSS.RSP0); a bounce, written
//! on the interrupted stack, would put the kernel's frame where the user program pointed RSP
//! (Xen switches a PV guest to its kernel stack for a trap from user mode).
//!
//! The handler runs with RSP at the frame, at the interrupted privilege level, with
//! interrupts off if its entry says so ([`TrapInfo::CLEAR_IF`]), TF, NT and RF cleared, and AC
//! too for a PV kernel (as Xen's `create_bounce_frame`: alignment checks would otherwise
//! trigger in its kernel, at CPL 3). A PV kernel's #PF has U (bit 2) clear in its error code,
//! though the CPU set it at CPL 3: the fault is its kernel's (Xen's `pv_inject_event`). An `INT n`
//! (not INT3 or INTO, which Xen's own IDT lets through from any ring) reaches its handler
//! only from a privilege level at or above the entry's DPL; from below it is a #GP with
//! error code `vector * 8 + 2`, as through an IDT gate (a PV kernel counts as ring 1, as in
//! Xen's `permit_softint`). It returns with `iret`: it pops the error code, pushes RAX, and makes the
//! hypercall with RSP pointing to an [`IretFrame`]; the hypervisor restores RAX, RIP, CS,
//! RFLAGS, RSP and SS from it. CS and SS must be the current ones (no privilege change),
//! and RIP one a CPU's IRET would accept (canonical in 64-bit mode, below 4 GiB outside
//! it); otherwise the call returns `EINVAL` and changes nothing, as Xen's hypercalls refuse
//! a bad argument, rather than raising the #GP(0) a CPU's IRET would.
//!
//! A vector without an entry, in a domain that has a trap table, is handled the way the CPU
//! handles a missing IDT gate: as a #GP (error code `vector * 8 + 2`), which may become #DF,
//! then a triple fault that ends the domain.

/// `console_write(buffer, length)`: write bytes to the domain's console.
pub const CONSOLE_WRITE: u64 = 0;
/// `exit(status)`: end this domain with a status.
pub const EXIT: u64 = 1;
/// `set_trap_table(table)`: register exception handlers for the hypervisor to bounce to.
pub const SET_TRAP_TABLE: u64 = 2;
/// `iret()`: return from a bounced exception.
pub const IRET: u64 = 3;
/// `raise_event(vector, error_code)`: have the hypervisor deliver this event to me when the
/// hypercall returns: an NMI (vector 2), or an exception QEMU's TCG cannot raise natively
/// (#AC, #MC). The event is marked synthetic in the trace. #DB and #PF are refused
/// (`EINVAL`): a CPU raising them writes DR6 or CR2, which the call has no argument for.
pub const RAISE_EVENT: u64 = 4;

/// `pin_page_table(root)`: make the page tables under `root` read-only to the guest; the
/// hypervisor checks and performs every write to them (Xen's page-table write emulation).
/// A long walk is done in pieces, one exit each: until it is over RIP stays at the VMMCALL,
/// which runs again (a hypercall continuation), and the guest's interrupts wait; all the
/// tables are pinned at once at the end, or none. Returns how many tables were pinned that
/// were not pinned before; a root pinned already is refused (`EINVAL`), as Xen's
/// `MMUEXT_PIN_L4_TABLE` refuses a page pinned already. So is a pin while CR0.WP is clear
/// (`EINVAL`): at CPL 0 read-only holds only with WP set. The MOVs to CR0 that could clear WP
/// exit in every domain; from the pin on, one that does gets #GP(0), as Xen keeps a PV guest's
/// CR0 its own.
/// The tables the guest runs on come first: a root other than CR3's is refused (`EINVAL`)
/// until CR3's is pinned, and from the pin on a MOV to CR3 exits, and one that loads a root
/// not pinned gets #GP(0): unpinned tables could map the pinned ones writable. (A Xen guest
/// runs on a validated root only.) The walk reads long mode's tables: outside long mode the
/// call is `EINVAL`, and from the pin on a MOV to CR0 that clears PG, or to CR4 that clears
/// PAE, gets #GP(0).
pub const PIN_PAGE_TABLE: u64 = 5;

/// `set_timer(vector, period_us)`: a periodic virtual timer. Every `period_us` the
/// hypervisor makes interrupt `vector` pending and delivers it through the guest's IDT as
/// soon as RFLAGS.IF allows; HLT with interrupts on waits for it. Ticks that come while one
/// is still pending merge into it, as in a PIC's request register. A period of 0 stops it.
pub const SET_TIMER: u64 = 6;
/// The shortest and longest timer periods, in microseconds.
pub const TIMER_PERIOD_MIN_US: u64 = 1_000;
pub const TIMER_PERIOD_MAX_US: u64 = 10_000_000;

/// `set_pv_mode(on)`: run this domain's kernel deprivileged, as a Xen PV kernel: a
/// privileged instruction that raises #GP at CPL 3 is decoded and emulated by the
/// hypervisor (MOV to/from CR, HLT, IN/OUT, RDMSR/WRMSR, CLI/STI on a virtual interrupt
/// flag) instead of delivered.
pub const SET_PV_MODE: u64 = 7;

/// The most entries one `set_trap_table` reads (one per vector: a longer list repeats a
/// vector). Xen reads on, in pieces with a hypercall continuation; traplab refuses a longer
/// list with `EINVAL`.
pub const TRAP_TABLE_MAX: usize = 256;

/// One entry of a trap table: Xen's `struct trap_info` (`xen/include/public/xen.h`, 16 bytes
/// on x86-64); a list ends with an entry whose handler is 0.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TrapInfo {
    pub vector: u8,
    /// Bits 0–1: the privilege level from which an `INT n` may reach the handler
    /// ([`TrapInfo::DPL`]); bit 2: events (interrupts) off on entry ([`TrapInfo::CLEAR_IF`]).
    pub flags: u8,
    /// Xen's code selector for the handler. traplab enters the handler with the interrupted
    /// CS, and does not read it.
    pub cs: u16,
    pub reserved: [u8; 4],
    /// The handler's guest-virtual address.
    pub handler: u64,
}

impl TrapInfo {
    /// The gate's DPL, as Xen's `TI_GET_DPL`: an `INT n` of this vector from a lower
    /// privilege (a greater CPL) is a #GP, as through an IDT gate (AMD APM vol. 2, 8.9.3).
    pub const DPL: u8 = 0b11;
    /// Enter the handler with interrupts off, as through an interrupt gate (Xen's
    /// `TI_SET_IF`, "clear event enable"); without it, as through a trap gate, they stay as
    /// they were.
    pub const CLEAR_IF: u8 = 1 << 2;

    /// Decode 16 little-endian bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> TrapInfo {
        let mut handler = [0u8; 8];
        handler.copy_from_slice(&bytes[8..16]);
        let mut reserved = [0u8; 4];
        reserved.copy_from_slice(&bytes[4..8]);
        TrapInfo {
            vector: bytes[0],
            flags: bytes[1],
            cs: u16::from_le_bytes([bytes[2], bytes[3]]),
            reserved,
            handler: u64::from_le_bytes(handler),
        }
    }

    /// The entry's DPL ([`TrapInfo::DPL`]).
    pub fn dpl(&self) -> u8 {
        self.flags & TrapInfo::DPL
    }
}

/// What `iret` finds at RSP (each field 8 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IretFrame {
    pub rax: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// `sched_op(cmd, arg)`: yield, block, poll ([`crate::sched`]).
pub const SCHED_OP: u64 = 9;
/// `event_channel_op(cmd, arg)`: event channels ([`crate::evtchn`]).
pub const EVENT_CHANNEL_OP: u64 = 10;
/// `grant_table_op(cmd, arg)`: grant tables ([`crate::grant_table`]).
pub const GRANT_TABLE_OP: u64 = 11;
/// `set_callback(how, target)`: where the domain takes its event upcall.
pub const SET_CALLBACK: u64 = 12;
/// `set_shared_info(gpa)`: the page where the hypervisor marks pending events. Called again,
/// the page moves there with its contents, as Xen's shared-info frame does.
pub const SET_SHARED_INFO: u64 = 13;
/// `store_op(cmd, path, path_len, value, value_len)`: the store ([`crate::store`]).
pub const STORE_OP: u64 = 14;

/// The longest buffer `console_write` takes at once.
pub const CONSOLE_WRITE_MAX: u64 = 4096;

// EXERCISE hypercall.1: a new hypercall needs a number here, its name in `name()` below,
// its handling in hv/src/exit/vmmcall.rs and a caller in a guest.

/// The name of a hypercall number, or `None` for an unknown one.
pub fn name(number: u64) -> Option<&'static str> {
    match number {
        CONSOLE_WRITE => Some("console_write"),
        EXIT => Some("exit"),
        SET_TRAP_TABLE => Some("set_trap_table"),
        IRET => Some("iret"),
        RAISE_EVENT => Some("raise_event"),
        PIN_PAGE_TABLE => Some("pin_page_table"),
        SET_TIMER => Some("set_timer"),
        SET_PV_MODE => Some("set_pv_mode"),
        SCHED_OP => Some("sched_op"),
        EVENT_CHANNEL_OP => Some("event_channel_op"),
        GRANT_TABLE_OP => Some("grant_table_op"),
        SET_CALLBACK => Some("set_callback"),
        SET_SHARED_INFO => Some("set_shared_info"),
        STORE_OP => Some("store_op"),
        _ => None,
    }
}

/// Error results: negative numbers in RAX, with Linux/Xen errno values.
pub mod error {
    /// Only the control domain (dom0) may do that.
    pub const EPERM: i64 = -1;
    /// No such store node.
    pub const ENOENT: i64 = -2;
    /// No such domain.
    pub const ESRCH: i64 = -3;
    /// Too long, or too many: a domain's watches over its quota (`store_op`, as xenstored's
    /// `do_watch`); the guests' store client returns it too, for a value longer than the
    /// buffer it read it into (Xen's xenstore has the same error, `xs_wire.h`).
    pub const E2BIG: i64 = -7;
    /// Permission denied: a store node outside the caller's part of the tree (xenstored's
    /// answer, `EACCES`, where a hypercall's is `EPERM`).
    pub const EACCES: i64 = -13;
    /// A pointer argument does not point into the guest's memory.
    pub const EFAULT: i64 = -14;
    /// It exists already (a virtual interrupt bound to a port twice).
    pub const EEXIST: i64 = -17;
    /// No such device: no hypercall returns it; the guests' XenBus does, for a device whose
    /// other end closed before it connected (as Linux's does).
    pub const ENODEV: i64 = -19;
    /// An argument is out of range.
    pub const EINVAL: i64 = -22;
    /// No room left (every port in use, the store full).
    pub const ENOSPC: i64 = -28;
    /// No hypercall has this number.
    pub const ENOSYS: i64 = -38;

    pub fn name(code: i64) -> Option<&'static str> {
        match code {
            EPERM => Some("EPERM"),
            ENOENT => Some("ENOENT"),
            ESRCH => Some("ESRCH"),
            E2BIG => Some("E2BIG"),
            EACCES => Some("EACCES"),
            EFAULT => Some("EFAULT"),
            EEXIST => Some("EEXIST"),
            ENODEV => Some("ENODEV"),
            EINVAL => Some("EINVAL"),
            ENOSPC => Some("ENOSPC"),
            ENOSYS => Some("ENOSYS"),
            _ => None,
        }
    }
}
