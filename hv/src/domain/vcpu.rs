//! A virtual CPU: its VMCB, the registers VMRUN does not switch, and what the hypervisor
//! remembers about the events it delivered.
//!
//! VMRUN loads and saves RAX, RSP, RIP, RFLAGS, the control registers and the segments
//! from the VMCB's state save area (AMD APM vol. 2, 15.5); the other general registers and
//! the x87/SSE state are the hypervisor's to switch (`svm/world_switch.rs`), so they live
//! here, in [`GuestContext`], at offsets the world switch's assembly knows.

use super::interrupts::VirtualInterrupts;
use crate::vmcb::{INTERRUPT_SHADOW, Segment, Vmcb, attrib, misc1};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::mem::offset_of;
use traplab_abi::boot;
use traplab_abi::event::Registers;
use traplab_abi::evtchn::Port;
use traplab_abi::svm::EventType;
use traplab_abi::x86::{Cr0Flags, Cr4Flags, EferFlags, PageTables, RFlags};

/// The x87/SSE state as FXSAVE stores it (AMD APM vol. 5, FXSAVE): 512 bytes, 16-aligned.
#[repr(C, align(16))]
#[derive(Clone)]
pub struct FxsaveArea(pub [u8; 512]);

impl FxsaveArea {
    /// The state after FNINIT with SSE exceptions masked: FCW = 0x37f, MXCSR = 0x1f80.
    pub fn initial() -> FxsaveArea {
        let mut area = [0u8; 512];
        area[0..2].copy_from_slice(&0x037fu16.to_le_bytes());
        area[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
        FxsaveArea(area)
    }
}

/// The guest registers VMRUN does not switch, and the guest's x87/SSE state.
#[repr(C, align(16))]
pub struct GuestContext {
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    _padding: u64,
    /// The x87/SSE state. Its XMM registers are the guest's after every exit (the world
    /// switch stores them); the rest is stale while `fpu_in_cpu` says the CPU has it.
    pub guest_fpu: FxsaveArea,
    /// The CPU holds this vCPU's x87 registers, their control and status words and MXCSR
    /// (`svm/fpu.rs`): the hypervisor does not use them, so they stay in the CPU from one
    /// exit to the next, and `guest_fpu` gets them only when someone else needs the CPU's.
    pub fpu_in_cpu: bool,
}

// The world switch's assembly addresses these fields by number.
const _: () = {
    assert!(offset_of!(GuestContext, rbx) == 0);
    assert!(offset_of!(GuestContext, rdi) == 32);
    assert!(offset_of!(GuestContext, rbp) == 40);
    assert!(offset_of!(GuestContext, r8) == 48);
    assert!(offset_of!(GuestContext, r15) == 104);
    assert!(offset_of!(GuestContext, guest_fpu) == 128);
    assert!(offset_of!(GuestContext, fpu_in_cpu) == 640);
};

impl GuestContext {
    pub fn new() -> GuestContext {
        GuestContext {
            rbx: 0,
            rcx: 0,
            rdx: 0,
            rsi: 0,
            rdi: 0,
            rbp: 0,
            r8: 0,
            r9: 0,
            r10: 0,
            r11: 0,
            r12: 0,
            r13: 0,
            r14: 0,
            r15: 0,
            _padding: 0,
            guest_fpu: FxsaveArea::initial(),
            fpu_in_cpu: false,
        }
    }
}

impl Default for GuestContext {
    fn default() -> Self {
        GuestContext::new()
    }
}

/// The most delivered events a vCPU remembers whose handlers have not returned. A guest
/// may leave a handler without IRET (jump out of it, or never finish it), and every event
/// it gets then would stay in the list for good; past this depth the oldest is forgotten,
/// and the trace says so (`apply.rs`). A real kernel nests a few interrupts and exceptions,
/// never dozens, so no handler that can still return is lost.
pub const IN_FLIGHT_MAX: usize = 64;

/// An event the hypervisor delivered whose handler has not returned yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InFlight {
    pub vector: u8,
    pub kind: EventType,
}

/// What a vCPU is doing (the scheduler's view, `schedule.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RunState {
    /// Not started yet (in turn: an earlier domain still runs).
    #[default]
    Waiting,
    /// May run.
    Runnable,
    /// Waits for something.
    Blocked(Wait),
    /// Over.
    Ended,
}

impl RunState {
    pub fn is_blocked(&self) -> bool {
        matches!(self, RunState::Blocked(_))
    }
}

/// What a blocked vCPU waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// An interrupt it can take: its timer's, or its event upcall (HLT with interrupts on).
    Interrupt,
    /// An event upcall (`SCHEDOP_block`).
    Event,
    /// One of these ports pending (`SCHEDOP_poll`).
    Poll(Vec<Port>),
    /// This store node written (a store wait).
    Store(String),
}

/// The exit code of an intercepted #DB (0x40 + vector 1, AMD APM vol. 2, 15.12).
const DEBUG_EXCEPTION_EXIT: u64 = 0x41;

/// The single step over an IRET that finds the end of NMI blocking ([`Vcpu::nmi_window`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NmiWindow {
    /// Where the IRET is: while the guest is still there, it has not run.
    pub iret_at: u64,
    /// DR6 before the step: the #DB it raises sets DR6.BS, which is not the guest's.
    pub dr6: u64,
    /// The IRET has run, and the exit after it came: the window lasts for that one exit
    /// (the step's #DB), and is over at the next, whoever took the #DB (gdb's own step
    /// takes it first when gdb single-steps the IRET).
    pub stepped: bool,
}

/// A debug-register slot lent to a debugger (gdb's hardware breakpoint or watchpoint,
/// `gdb/target.rs`): the CPU's DRn and the slot's bits of DR7 are the debugger's, and the
/// guest keeps its own view of both, which its MOVs to and from the debug registers read and
/// write: while a slot is lent they are intercepted (`exit/dr.rs`), as KVM intercepts them
/// while a host debugger uses the debug registers. So a guest that clears DR7 does not take
/// gdb's breakpoint away, nor does it read gdb's bits. (A breakpoint the guest enables in a
/// lent slot does not fire until gdb gives the slot back: the CPU has only four; a data
/// breakpoint there does not fire on the accesses the hypervisor makes either, gdb's does,
/// `Effect::DebuggerWatchpoint`. An I/O breakpoint of the guest's does, since the
/// hypervisor checks all of those itself, `delivery.rs`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LentSlot {
    /// The debugger's address, in the CPU's DRn.
    pub address: u64,
    /// The debugger's bits of DR7 for the slot: its enable, R/W and LEN.
    pub dr7_bits: u64,
    /// The guest's bits of DR7 for the slot, as it last wrote them.
    pub guest_dr7_bits: u64,
}

/// DR7's enables of slot `n`: L`n` and G`n`, bits 2n and 2n+1 (AMD APM vol. 2, 13.1.1.5).
pub fn dr7_slot_enables(slot: usize) -> u64 {
    0b11 << (2 * slot)
}

/// DR7.GD, general detect (bit 13): a MOV with a debug register raises #DB first, DR6.BD set
/// (`exit/dr.rs`).
pub const DR7_GENERAL_DETECT: u64 = 1 << 13;

/// All of DR7's bits for slot `n`: its enables ([`dr7_slot_enables`]) and its condition
/// (R/W`n` and LEN`n`, bits 16+4n to 19+4n).
pub fn dr7_slot_mask(slot: usize) -> u64 {
    dr7_slot_enables(slot) | (0b1111 << (16 + 4 * slot))
}

/// Every debug-register access: reads (bits 0–7) and writes (bits 16–23) of DR0–DR7 (VMCB
/// +0x004, AMD APM vol. 2, 15.9).
pub const DR_ACCESSES: u32 = 0x00ff_00ff;
/// Writes to DR7 (bit 23), and to DR5 (bit 21), DR7's old name while CR4.DE is clear
/// (AMD APM vol. 2, 13.1.1; QEMU's TCG checks the intercept of the number the MOV names):
/// always intercepted ([`Vcpu::debug_register_intercepts`]).
pub const DR7_WRITES: u32 = 1 << 23 | 1 << 21;

/// One run of an instruction: its RIP, and the stack pointer it ran with. A kernel reads the
/// RTC through one helper (`out 0x70` then `in 0x71`) that its IRQ 8 handler calls too: the
/// handler's call runs the same instructions deeper on the stack, or on another one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstructionAt {
    pub rip: u64,
    pub rsp: u64,
}

impl InstructionAt {
    /// The instruction the vCPU is at.
    pub fn of(vcpu: &Vcpu) -> InstructionAt {
        InstructionAt {
            rip: vcpu.vmcb.save.rip,
            rsp: vcpu.vmcb.save.rsp,
        }
    }
}

/// One virtual CPU.
pub struct Vcpu {
    /// The VMCB (page-aligned; its address is the physical address VMRUN takes).
    pub vmcb: Box<Vmcb>,
    /// The general registers VMRUN does not switch, and the x87/SSE state.
    pub context: Box<GuestContext>,
    /// The guest's DR0–DR3 (VMRUN switches only DR6 and DR7; see `exit/dr.rs`).
    pub debug_registers: [u64; 4],
    /// The breakpoint slots lent to gdb ([`LentSlot`]).
    pub lent_slots: [Option<LentSlot>; 4],
    /// Every debug-register access exits, whatever DR7 holds: the lab's setting
    /// `intercept-dr` ([`Vcpu::debug_register_intercepts`]).
    pub intercept_every_debug_register: bool,
    /// Delivered events whose handlers have not returned, innermost last.
    pub in_flight: Vec<InFlight>,
    /// The IRET intercept is off for one IRET (`exit/iret.rs`); back on after the next exit.
    pub iret_intercept_suspended: bool,
    /// An NMI was delivered and no IRET has run since: a CPU holds further NMIs back until
    /// the next IRET (AMD APM vol. 2, 8.2.2 "NMI"), and since the hypervisor injects NMIs
    /// itself (EVENTINJ), it keeps that mask (`apply::before_resume`). It ends when an IRET
    /// let through has *run* ([`Vcpu::after_vmrun`]), not at its intercept, which comes
    /// before the instruction: an NMI injected then would enter its handler before the IRET
    /// it waits for (Xen's VMEXIT_IRET and KVM's `awaiting_iret_completion` wait the same way).
    pub nmi_blocked: bool,
    /// The RIP of the IRET whose return was noted and that the CPU was let run, while the
    /// guest has not moved from it: an interrupt may come first (an INTR exit at the IRET
    /// itself), and the same IRET then exits again (`exit/iret.rs`). Cleared at the first
    /// exit elsewhere: the IRET has run.
    pub iret_not_yet_run: Option<u64>,
    /// The single step the hypervisor set over an NMI handler's IRET while another NMI
    /// waits (`exit/iret.rs`): SVM has no NMI-window intercept, so RFLAGS.TF makes the CPU
    /// exit (#DB) right after the IRET, where the NMI goes in (`exit/exception.rs`), as
    /// KVM's `nmi_singlestep` does. Undone at the next exit if the IRET did not run.
    pub nmi_window: Option<NmiWindow>,
    /// The RIP the last VMRUN entered the guest at, if it entered it in an interrupt shadow
    /// (the VMCB's INTERRUPT_SHADOW, saved by the #VMEXIT before): QEMU's TCG does not
    /// restore the shadow at VMRUN, so an interrupt may be taken before that instruction
    /// runs (`quirks.rs`, `exit/vintr.rs`).
    pub entered_in_shadow_at: Option<u64>,
    /// The RIP of the last INT n injected (RIP was moved past it), to put back if its
    /// delivery faults (`exit/exception.rs`).
    pub software_interrupt_rip: Option<u64>,
    /// The access to the RTC's registers that waited for the IRQ 8 the RTC's due tick raised
    /// (`exit/ioio.rs`, `rtc_interrupt_first`): when it comes back after the handler it runs,
    /// whatever tick is due by then, so that the guest makes progress however fast the RTC
    /// interrupts (a handler under TCG, traced, can outlast a period of 122 µs, where a CPU's
    /// takes a few). One waits at a time; cleared when it runs.
    pub rtc_access_waited_at: Option<InstructionAt>,
    /// The guest's timer and the interrupt waiting for it (`interrupts.rs`).
    pub interrupts: VirtualInterrupts,
    /// The MSRs the emulated CPU has that neither the VMCB nor the real CPU holds for the
    /// guest (the MTRRs, MCG_STATUS; `exit/msr.rs`). One missing reads as its reset value, 0.
    pub msrs: BTreeMap<u32, u64>,
    /// The guest's XCR0 (XSETBV): loaded into the CPU when this vCPU runs, since VMRUN
    /// does not switch it.
    pub xcr0: u64,
    /// Waiting to start, runnable, blocked, or over (`schedule.rs`).
    pub run_state: RunState,
    /// Ticks of the hypervisor's timer this vCPU has run, since it was last switched to,
    /// while another vCPU waited to run (`schedule::charge_tick`).
    pub ticks_run: u32,
    /// The slot of gdb's watchpoint an access the hypervisor made hit at this exit
    /// (`Effect::DebuggerWatchpoint`): gdb stops the guest after it (`gdb::after_handling`).
    pub debugger_watchpoint: Option<u8>,
}

impl Vcpu {
    /// A vCPU with a zeroed VMCB and registers (the loader sets the boot state).
    pub fn new() -> Vcpu {
        Vcpu {
            vmcb: Vmcb::new_zeroed(),
            context: Box::new(GuestContext::new()),
            debug_registers: [0; 4],
            lent_slots: [None; 4],
            intercept_every_debug_register: false,
            in_flight: Vec::new(),
            iret_intercept_suspended: false,
            nmi_blocked: false,
            iret_not_yet_run: None,
            nmi_window: None,
            entered_in_shadow_at: None,
            software_interrupt_rip: None,
            rtc_access_waited_at: None,
            interrupts: VirtualInterrupts::default(),
            msrs: BTreeMap::new(),
            // x87 state only: the value after reset (Intel SDM vol. 1, 13.3).
            xcr0: 1,
            run_state: RunState::default(),
            ticks_run: 0,
            debugger_watchpoint: None,
        }
    }

    /// Remember a delivered event as in flight (innermost last); when that makes more
    /// than [`IN_FLIGHT_MAX`], the oldest is forgotten and returned.
    pub fn push_in_flight(&mut self, event: InFlight) -> Option<InFlight> {
        self.in_flight.push(event);
        (self.in_flight.len() > IN_FLIGHT_MAX).then(|| self.in_flight.remove(0))
    }

    /// The physical address of the VMCB, for VMRUN (the hypervisor's memory is
    /// identity-mapped).
    pub fn vmcb_address(&self) -> u64 {
        &raw const *self.vmcb as u64
    }

    /// A general register by encoding number. RAX and RSP live in the VMCB. A 32-bit guest
    /// sees only the low halves (its registers are EAX…EDI).
    pub fn gpr(&self, number: u8) -> u64 {
        let value = self.gpr_64(number);
        if self.vmcb.code_bits() == 64 {
            value
        } else {
            value & 0xffff_ffff
        }
    }

    /// All 64 bits of a general register, whatever the mode. (`#[inline]`: with a constant
    /// `number`, as most handlers give, the match folds to one load.)
    #[inline]
    pub fn gpr_64(&self, number: u8) -> u64 {
        let context = &self.context;
        match number & 15 {
            0 => self.vmcb.save.rax,
            1 => context.rcx,
            2 => context.rdx,
            3 => context.rbx,
            4 => self.vmcb.save.rsp,
            5 => context.rbp,
            6 => context.rsi,
            7 => context.rdi,
            8 => context.r8,
            9 => context.r9,
            10 => context.r10,
            11 => context.r11,
            12 => context.r12,
            13 => context.r13,
            14 => context.r14,
            _ => context.r15,
        }
    }

    /// Write a general register (the apply step and gdb do; handlers decide).
    pub fn set_gpr(&mut self, number: u8, value: u64) {
        let context = &mut self.context;
        let slot = match number & 15 {
            0 => &mut self.vmcb.save.rax,
            1 => &mut context.rcx,
            2 => &mut context.rdx,
            3 => &mut context.rbx,
            4 => &mut self.vmcb.save.rsp,
            5 => &mut context.rbp,
            6 => &mut context.rsi,
            7 => &mut context.rdi,
            8 => &mut context.r8,
            9 => &mut context.r9,
            10 => &mut context.r10,
            11 => &mut context.r11,
            12 => &mut context.r12,
            13 => &mut context.r13,
            14 => &mut context.r14,
            _ => &mut context.r15,
        };
        *slot = value;
    }

    /// The general registers, for events.
    pub fn registers(&self) -> Registers {
        let context = &self.context;
        Registers {
            rax: self.vmcb.save.rax,
            rbx: context.rbx,
            rcx: context.rcx,
            rdx: context.rdx,
            rsi: context.rsi,
            rdi: context.rdi,
            rbp: context.rbp,
            rsp: self.vmcb.save.rsp,
            r8: context.r8,
            r9: context.r9,
            r10: context.r10,
            r11: context.r11,
            r12: context.r12,
            r13: context.r13,
            r14: context.r14,
            r15: context.r15,
        }
    }

    /// The guest's page tables (CR3, and their format: legacy, PAE or long mode's), or
    /// `None` when paging is off.
    pub fn page_tables(&self) -> Option<PageTables> {
        let save = &self.vmcb.save;
        PageTables::of(save.cr0, save.cr3, save.cr4, save.efer)
    }

    /// Does the CPU check the alignment of data accesses now: at CPL 3 with CR0.AM and
    /// RFLAGS.AC set (AMD APM vol. 2, 8.2.17)? Then a misaligned one raises #AC(0).
    pub fn alignment_checks(&self) -> bool {
        let save = &self.vmcb.save;
        save.cpl == 3
            && Cr0Flags::from_bits_truncate(save.cr0).contains(Cr0Flags::ALIGNMENT_MASK)
            && RFlags::from_bits_truncate(save.rflags).contains(RFlags::ALIGNMENT_CHECK)
    }

    /// Is the guest in long mode (EFER.LMA)?
    pub fn long_mode(&self) -> bool {
        EferFlags::from_bits_truncate(self.vmcb.save.efer).contains(EferFlags::LONG_MODE_ACTIVE)
    }

    /// DR7 as the guest sees it: the VMCB's (the CPU's), with the bits of the slots lent to
    /// a debugger as the guest last wrote them ([`LentSlot`]).
    pub fn guest_dr7(&self) -> u64 {
        self.lent_slots.iter().enumerate().fold(
            self.vmcb.save.dr7,
            |dr7, (slot, lent)| match lent {
                Some(lent) => dr7 & !dr7_slot_mask(slot) | lent.guest_dr7_bits,
                None => dr7,
            },
        )
    }

    /// The guest writes DR7 (`value`, as it sees it): the lent slots' bits are kept as the
    /// guest's, and the VMCB's DR7 (the CPU's) keeps the debugger's there.
    pub fn set_guest_dr7(&mut self, value: u64) {
        let mut cpu = value;
        for (slot, lent) in self.lent_slots.iter_mut().enumerate() {
            if let Some(lent) = lent {
                lent.guest_dr7_bits = value & dr7_slot_mask(slot);
                cpu = cpu & !dr7_slot_mask(slot) | lent.dr7_bits;
            }
        }
        self.vmcb.save.dr7 = cpu;
    }

    /// Its DR0–DR3 as the CPU holds them, into the guest's copies (while DR accesses are not
    /// intercepted, the guest's MOVs to them reach the CPU unseen); not in a slot lent to a
    /// debugger, where the CPU has the debugger's address. Only while this vCPU has the CPU.
    pub fn keep_breakpoint_addresses(&mut self, machine: &dyn crate::machine::Machine) {
        for slot in 0..4 {
            if self.lent_slots[slot].is_none() {
                self.debug_registers[slot] = machine.breakpoint_address(slot as u8);
            }
        }
    }

    /// Load its DR0–DR3 and DR7 into the CPU, which it has now: the debugger's in a lent slot.
    pub fn load_debug_registers(&self, machine: &mut dyn crate::machine::Machine) {
        for slot in 0..4 {
            machine.load_breakpoint_address(slot as u8, self.cpu_breakpoint_address(slot));
        }
        machine.load_dr7(self.vmcb.save.dr7);
    }

    /// The address for the CPU's DRn: the debugger's in a lent slot, else the guest's.
    pub fn cpu_breakpoint_address(&self, slot: usize) -> u64 {
        match self.lent_slots[slot] {
            Some(lent) => lent.address,
            None => self.debug_registers[slot],
        }
    }

    /// The debug-register accesses that must exit now. Every one while the guest's DR7.GD is
    /// set: general detect makes any MOV with a debug register raise #DB before it runs
    /// (AMD APM vol. 2, 13.1.1), which QEMU's TCG does not implement, so the hypervisor
    /// raises it (`exit/dr.rs`); while a slot is lent to a debugger (the guest's accesses
    /// are answered from its own view); and with the lab's setting `intercept-dr`. Otherwise
    /// writes to DR7 alone, so that the hypervisor sees GD set: DR0–DR6 and reads of DR7 are
    /// the CPU's, and cost nothing.
    pub fn debug_register_intercepts(&self) -> u32 {
        let every_access = self.intercept_every_debug_register
            || self.lent_slots.iter().any(Option::is_some)
            || self.guest_dr7() & DR7_GENERAL_DETECT != 0;
        match every_access {
            true => DR_ACCESSES,
            false => DR7_WRITES,
        }
    }

    /// Put [`Vcpu::debug_register_intercepts`] in the VMCB, from the next VMRUN. When reads
    /// of DR0–DR3 begin to exit, the guest's copies must hold what it wrote to them unseen:
    /// `machine` (only while this vCPU has the CPU) gives them first.
    pub fn intercept_debug_registers(&mut self, machine: Option<&dyn crate::machine::Machine>) {
        let intercepts = self.debug_register_intercepts();
        if intercepts == DR_ACCESSES
            && self.vmcb.control.intercept_dr != DR_ACCESSES
            && let Some(machine) = machine
        {
            self.keep_breakpoint_addresses(machine);
        }
        self.vmcb.control.intercept_dr = intercepts;
    }

    /// Lend slot `n` to a debugger: its `address` and its `dr7_bits` (enable, R/W, LEN) go
    /// to the CPU's view, and the guest's DR accesses are intercepted from the next VMRUN.
    /// (The caller loads the CPU's registers when this vCPU has the CPU, and before, keeps
    /// the guest's DR0–DR3 from it.)
    pub fn lend_slot(&mut self, slot: usize, address: u64, dr7_bits: u64) {
        let guest_dr7 = self.guest_dr7();
        self.lent_slots[slot] = Some(LentSlot {
            address,
            dr7_bits,
            guest_dr7_bits: guest_dr7 & dr7_slot_mask(slot),
        });
        self.set_guest_dr7(guest_dr7);
        self.intercept_debug_registers(None);
    }

    /// Take slot `n` back from the debugger: the guest's DRn and DR7 bits as it left them
    /// (its writes meanwhile included). With no slot lent any more, the DR intercepts are
    /// what the guest's DR7 and the lab ask for again.
    pub fn take_back_slot(&mut self, slot: usize) {
        let guest_dr7 = self.guest_dr7();
        self.lent_slots[slot] = None;
        // A hit of the watchpoint gdb no longer has is no stop for a new one in its slot.
        if self.debugger_watchpoint == Some(slot as u8) {
            self.debugger_watchpoint = None;
        }
        self.set_guest_dr7(guest_dr7);
        self.intercept_debug_registers(None);
    }

    /// The RIP after an instruction of `length` bytes at RIP: wrapping at 4 GiB in 32-bit
    /// code, as the CPU's EIP does, and at 64 KiB in 16-bit code, as IP does.
    pub fn rip_after(&self, length: u64) -> u64 {
        // The low 64, 32 or 16 bits: one mask, no branch (this is on every skipped
        // instruction's path).
        let mask = u64::MAX >> (64 - self.vmcb.code_bits());
        self.vmcb.save.rip.wrapping_add(length) & mask
    }

    /// Right before every VMRUN: remember whether it enters the guest in an interrupt
    /// shadow, and where (`entered_in_shadow_at`).
    pub fn before_vmrun(&mut self) {
        let save = &self.vmcb.save;
        self.entered_in_shadow_at =
            (self.vmcb.control.interrupt_shadow & INTERRUPT_SHADOW != 0).then_some(save.rip);
    }

    /// After every #VMEXIT, before anything looks at the exit: what a VMRUN consumed is
    /// reset (a TLB flush is done once), and an IRET let through by `exit/iret.rs` has had
    /// its chance to run, so its intercept is on again. Whether it ran: if the guest is
    /// still at it, an interrupt came first, and the IRET is still to run; if it ran, it
    /// ended any NMI blocking.
    pub fn after_vmrun(&mut self) {
        self.vmcb.control.tlb_control = 0;
        if self.iret_intercept_suspended {
            self.vmcb.control.intercept_misc1 |= misc1::IRET;
            self.iret_intercept_suspended = false;
        }
        if self
            .iret_not_yet_run
            .is_some_and(|iret| iret != self.vmcb.save.rip)
        {
            self.iret_not_yet_run = None;
            self.nmi_blocked = false;
        }
        if self.nmi_window.is_some() {
            self.after_nmi_window();
        }
    }

    /// [`Vcpu::after_vmrun`] with the NMI window's single step set: if the IRET did not run
    /// (an interrupt came first, or it faulted), the step is the hypervisor's to take back,
    /// before the guest's handler pushes RFLAGS with TF in it (the IRET exits again and sets
    /// it again). If it ran and this is not the step's #DB, nothing of it is left.
    #[cold]
    #[inline(never)]
    fn after_nmi_window(&mut self) {
        let Some(window) = self.nmi_window.as_mut() else {
            return;
        };
        if self.vmcb.save.rip == window.iret_at && !window.stepped {
            self.vmcb.save.rflags &= !RFlags::TRAP_FLAG.bits();
            self.nmi_window = None;
        } else if window.stepped || self.vmcb.control.exitcode != DEBUG_EXCEPTION_EXIT {
            self.nmi_window = None;
        } else {
            window.stepped = true;
        }
    }

    /// The state at the first VMRUN of a 64-bit guest (`traplab_abi::boot`): long mode,
    /// paging on with the boot page tables, CPL 0, interrupts off, at `entry`.
    pub fn set_long_mode_boot_state(&mut self, entry: u64) {
        let flat = |selector: u16, attrib: u16| Segment {
            selector,
            attrib,
            limit: 0xffff_ffff,
            base: 0,
        };
        let save = &mut self.vmcb.save;
        save.cs = flat(0x08, attrib::CODE64_DPL0);
        save.ds = flat(0x10, attrib::DATA_DPL0);
        save.es = flat(0x10, attrib::DATA_DPL0);
        save.ss = flat(0x10, attrib::DATA_DPL0);
        save.fs = Segment::default();
        save.gs = Segment::default();
        save.gdtr = Segment {
            selector: 0,
            attrib: 0,
            limit: 23,
            base: boot::BOOT_GDT,
        };
        // No IDT yet: a fault before the guest loads its own is a triple fault.
        save.idtr = Segment::default();
        save.ldtr = Segment {
            selector: 0,
            attrib: attrib::LDT,
            limit: 0,
            base: 0,
        };
        save.tr = Segment {
            selector: 0,
            attrib: attrib::TSS64_BUSY,
            limit: 0x67,
            base: 0,
        };
        save.cpl = 0;
        // LME and LMA (long mode active), NXE, and SVME: VMRUN refuses a guest without
        // EFER.SVME (AMD APM vol. 2, 15.5.1, "EFER.SVME is zero" is illegal guest state).
        save.efer = (EferFlags::LONG_MODE_ENABLE
            | EferFlags::LONG_MODE_ACTIVE
            | EferFlags::NO_EXECUTE_ENABLE
            | EferFlags::SECURE_VIRTUAL_MACHINE_ENABLE)
            .bits();
        // PE (protected mode), MP, ET, NE (x87 errors as #MF), WP (supervisor writes honour
        // read-only pages), PG (paging).
        save.cr0 = (Cr0Flags::PROTECTED_MODE_ENABLE
            | Cr0Flags::MONITOR_COPROCESSOR
            | Cr0Flags::EXTENSION_TYPE
            | Cr0Flags::NUMERIC_ERROR
            | Cr0Flags::WRITE_PROTECT
            | Cr0Flags::PAGING)
            .bits();
        save.cr3 = boot::BOOT_PAGE_TABLES;
        // PAE (long mode needs it), OSFXSR and OSXMMEXCPT (SSE instructions work).
        save.cr4 =
            (Cr4Flags::PHYSICAL_ADDRESS_EXTENSION | Cr4Flags::OSFXSR | Cr4Flags::OSXMMEXCPT_ENABLE)
                .bits();
        save.dr6 = 0xffff_0ff0;
        save.dr7 = 0x400;
        save.rflags = 0x2; // bit 1 is always set
        save.rip = entry;
        save.rsp = boot::BOOT_STACK_TOP;
        save.rax = 0;
        // The power-on PAT (AMD APM vol. 2, 7.8.2): WB, WT, UC-, UC, twice.
        save.g_pat = 0x0007_0406_0007_0406;
        self.context.rdi = boot::BOOT_INFO;
    }

    /// The state at the first VMRUN of a 32-bit guest: protected mode, paging off, CPL 0.
    pub fn set_protected_mode_boot_state(&mut self, entry: u64) {
        self.set_long_mode_boot_state(entry);
        let save = &mut self.vmcb.save;
        save.cs.attrib = attrib::CODE32_DPL0;
        // PE, ET, NE: protected mode without paging; EFER only SVME (no long mode).
        save.cr0 =
            (Cr0Flags::PROTECTED_MODE_ENABLE | Cr0Flags::EXTENSION_TYPE | Cr0Flags::NUMERIC_ERROR)
                .bits();
        save.cr3 = 0;
        save.cr4 = 0;
        save.efer = EferFlags::SECURE_VIRTUAL_MACHINE_ENABLE.bits();
        save.tr = Segment {
            selector: 0,
            attrib: attrib::TSS32_BUSY,
            limit: 0x67,
            base: 0,
        };
    }
}

impl Vcpu {
    /// The state a multiboot loader leaves (Multiboot Specification 0.6.96, §3.2): 32-bit
    /// protected mode, paging off, flat code and data segments, interrupts off, EAX = the
    /// loader's magic, EBX = the boot information's guest-physical address.
    pub fn set_multiboot_boot_state(&mut self, entry: u32, boot_information: u32) {
        self.set_protected_mode_boot_state(entry as u64);
        // §3.2 wants DS, ES, FS, GS and SS flat: FS and GS too, not null.
        self.vmcb.save.fs = self.vmcb.save.ds;
        self.vmcb.save.gs = self.vmcb.save.ds;
        self.set_gpr(0, traplab_abi::multiboot::BOOTLOADER_MAGIC as u64);
        self.set_gpr(3, boot_information as u64);
    }
}

impl Vcpu {
    /// The state the Linux 32-bit boot protocol asks for (`image/linux.rs`): protected mode,
    /// paging off, interrupts off, the loader's GDT (`gdt`: base, limit) with CS = `code`
    /// (`__BOOT_CS`) and DS = ES = SS = `data` (`__BOOT_DS`), ESI = the zero page, EBX =
    /// EBP = EDI = 0.
    pub fn set_linux_boot_state(
        &mut self,
        entry: u32,
        zero_page: u32,
        gdt: (u64, u32),
        (code, data): (u16, u16),
    ) {
        self.set_protected_mode_boot_state(entry as u64);
        let save = &mut self.vmcb.save;
        save.cs.selector = code;
        for segment in [&mut save.ds, &mut save.es, &mut save.ss] {
            segment.selector = data;
        }
        (save.gdtr.base, save.gdtr.limit) = gdt;
        self.context.rdi = 0;
        self.set_gpr(6, zero_page as u64);
    }
}

impl Default for Vcpu {
    fn default() -> Self {
        Vcpu::new()
    }
}
