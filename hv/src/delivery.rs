//! How an exception reaches the guest: two models, side by side.
//!
//! - **Reflect** (HVM): put the event in EVENTINJ; at the next VMRUN the CPU delivers it
//!   through the guest's own IDT, exactly as if the guest had taken it without us
//!   (AMD APM vol. 2, 15.20 "Event Injection").
//! - **Bounce** (PV, as Xen's `do_guest_trap`): the guest registered handlers with the
//!   `set_trap_table` hypercall. The hypervisor delivers the exception *itself*: it writes an
//!   exception frame on the guest's stack and moves RIP to the handler. The CPU's IDT is not
//!   involved; the handler returns with the `iret` hypercall. The frame layout is documented
//!   in `traplab_abi::hypercall`.
//!
//! A domain with a trap table gets every exception of its kernel bounced (a non-PV kernel's
//! user programs, at CPL 3, take theirs through its IDT: `Domain::bounces_events`); a vector
//! it has no entry for is
//! handled the way a CPU handles a missing IDT gate (#GP, then #DF, then shutdown), each
//! step said in the one decision. (Its own INT n, INT3 or INTO with no entry goes through
//! its IDT instead, `exit/software_interrupt.rs`: the trap table adds handlers to the IDT's
//! for software interrupts. Xen, whose PV guests have no IDT, gives such an INT n to the
//! guest's #GP handler.)
//!
//! Handlers use the [`deliver!`](crate::deliver) macro: it records the decision with the
//! caller's source line. Everything here is worked out before anything changes: the
//! decision carries the whole bounce frame.

use crate::decision::{Bounce, Decision, Delivery, Effect, PortAccess};
use crate::domain::memory::{AccessFault, CpuAccess, page_fault_code};
use crate::domain::vcpu::{DR7_GENERAL_DETECT, Wait, dr7_slot_enables};
use crate::domain::{Guest, IdtGate};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use traplab_abi::event::{Action, EventType, delivery_name};
use traplab_abi::hypercall::TrapInfo;
use traplab_abi::svm::Event;
use traplab_abi::x86::{self, Combined, ExceptionType, RFlags};

/// The System V red zone: 128 bytes below RSP that a function may use without moving RSP.
/// A bounce frame goes below it, as Linux puts signal frames.
const RED_ZONE: u64 = 128;

/// Deliver exception `vector` to the guest, reflected or bounced, after the effects `first`
/// (a RIP moved past the instruction, CR2 set). `why` says why the guest gets it; `at` is
/// the caller's source line.
pub fn exception(
    guest: &Guest,
    first: Vec<Effect>,
    vector: u8,
    error_code: u32,
    synthetic: bool,
    why: fmt::Arguments,
    at: &'static str,
) -> Decision {
    if !guest.bounces_events() {
        let how = reflect_how(guest, vector);
        let decision = Decision::new(Action::Reflect, format!("{why}: {how}").into(), at)
            .with_all(first)
            .with_all(resume_flag_of(vector))
            .deliver(Delivery::Inject {
                event: Event::exception(vector, error_code),
                handler: guest.idt_handler(vector),
                synthetic,
            });
        return with_general_detect_off(guest, vector, decision);
    }

    // Bounce: follow the trap table; a missing entry is a missing gate.
    let mut steps = format!("{why}: ");
    let (mut vector, mut error_code) = (vector, error_code);
    loop {
        let mnemonic = x86::exception(vector).mnemonic;
        if let Some(entry) = guest.trap_table_entry(vector) {
            steps.push_str(&format!(
                "the guest registered a {mnemonic} handler with set_trap_table: the hypervisor delivers it itself, to {:#x}",
                entry.handler
            ));
            // A PV kernel runs at CPL 3, so every #PF the CPU raises for it has U (bit 2)
            // set; the fault is its kernel's, and Xen sets U by the guest's mode, not the
            // CPU's (`pv_inject_event`): a PV guest of traplab is all kernel, so U is clear.
            let error_code = match (vector, guest.pv.enabled) {
                (14, true) if error_code & page_fault_code::USER != 0 => {
                    steps.push_str(
                        " (U cleared from the error code: a PV kernel's fault is a kernel-mode fault, as Xen's pv_inject_event says)",
                    );
                    error_code & !page_fault_code::USER
                }
                _ => error_code,
            };
            let error_code = x86::exception(vector).has_error_code.then_some(error_code);
            let event = (vector, EventType::Exception, error_code);
            // The frame's RFLAGS has RF set for a fault, as a CPU pushes it.
            let first = first.into_iter().chain(resume_flag_of(vector)).collect();
            let decision = bounce(guest, first, event, entry, synthetic, steps, at);
            return with_general_detect_off(guest, vector, decision);
        }
        let (next, next_code, name) = match x86::combine(Some(vector), 13) {
            Combined::Deliver(_) => (13, vector as u32 * 8 + 2, "#GP"),
            Combined::DoubleFault => (8, 0, "#DF"),
            Combined::TripleFault => {
                steps.push_str(&format!(
                    "no trap-table entry for {mnemonic} while delivering it: as a CPU in a triple fault, the domain ends"
                ));
                return Decision::new(Action::Kill, steps.into(), at)
                    .with_all(first)
                    .killing(format!("triple fault: no trap-table entry for {mnemonic}"));
            }
        };
        steps.push_str(&format!(
            "no trap-table entry for {mnemonic}: as a CPU that finds no IDT gate, the hypervisor raises {name} instead; "
        ));
        (vector, error_code) = (next, next_code);
    }
}

/// What the RFLAGS image pushed for exception `vector` says of RF: set for a fault, so
/// that the instruction the handler returns to runs once without its instruction breakpoint
/// (Intel SDM vol. 3B, 17.3.1.1: "for any fault-class exception except a debug exception
/// generated in response to an instruction breakpoint, the value pushed for RF is 1"; the
/// CPU then clears RF as it enters the handler). EVENTINJ does not tell a fault from a
/// trap (AMD APM vol. 2, 15.20 "Event Injection"), so a CPU injecting an exception pushes
/// RFLAGS as it is: the hypervisor sets RF first, as KVM and ACRN do before they inject a
/// fault. (A #DB is a fault or a trap by its cause: its caller sets RF for the one it raises
/// as a fault, general detect, `exit/dr.rs`.)
fn resume_flag_of(vector: u8) -> Option<Effect> {
    (x86::exception(vector).kind == ExceptionType::Fault).then_some(Effect::SetResumeFlag)
}

/// `decision`, which delivers exception `vector`, with DR7.GD cleared when it delivers a #DB
/// while GD is set: a CPU clears GD as it enters the #DB handler, whatever raised the #DB, so
/// that the handler may use the debug registers (Intel SDM vol. 3B, 17.2.4; KVM does the
/// same, "DR7.GD should be cleared upon any #DB exception"). QEMU's TCG, which has no general
/// detect, leaves it: the hypervisor, which delivers the #DB, clears it, and says so (an
/// `emulate` event with the change, where a delivery alone has none).
fn with_general_detect_off(guest: &Guest, vector: u8, decision: Decision) -> Decision {
    if vector != 1 || decision.delivery.is_none() {
        return decision;
    }
    // DR7 as the effects before the delivery leave it (a `MOV DR7` that a single-step trap
    // follows, `debug_trap`), else the guest's.
    let dr7 =
        written_debug_register(&decision.effects, 7).unwrap_or_else(|| guest.vcpu.guest_dr7());
    if dr7 & DR7_GENERAL_DETECT == 0 {
        return decision;
    }
    let decision = decision.with(Effect::DebugRegister(7, dr7 & !DR7_GENERAL_DETECT));
    match decision.what {
        Some(_) => decision,
        None => decision.describe("DR7.GD cleared for the #DB handler, as a CPU clears it"),
    }
}

/// The value the last of `effects` that writes debug register `number` writes, if one does.
fn written_debug_register(effects: &[Effect], number: u8) -> Option<u64> {
    effects.iter().rev().find_map(|effect| match effect {
        Effect::DebugRegister(written, value) if *written == number => Some(*value),
        _ => None,
    })
}

/// DR6's causes of a #DB (AMD APM vol. 2, 13.1.1.3 "Debug-Status Register"; Intel SDM vol.
/// 3B, 17.2.3). BS: the #DB was a single step.
pub const DR6_SINGLE_STEP: u64 = 1 << 14;
/// BD: an access to a debug register while DR7.GD was set (general detect).
pub const DR6_DEBUG_REGISTER_ACCESS: u64 = 1 << 13;
/// B0–B3: which of the breakpoints in DR0–DR3 matched.
pub const DR6_BREAKPOINTS: u64 = 0xf;

/// After an instruction the hypervisor completed in the CPU's place (CPUID, IN or OUT, an
/// MSR, a device register, a hypercall: the decision moved RIP on, delivers nothing and
/// ends nothing), what a CPU does once an instruction completes:
///
/// - RFLAGS.RF is cleared (AMD APM vol. 2, 3.1.6 "RFLAGS Register": the processor clears RF
///   when an instruction completes; Intel SDM vol. 3B, 17.3.1.1), as Xen's
///   `__update_guest_eip` clears it. RF=1 (an IRET onto the instruction, say) let that one
///   instruction run without its instruction breakpoint firing; the next one's must fire.
/// - With RFLAGS.TF set when the instruction began, #DB is raised as a trap, DR6.BS set, RIP
///   at the next instruction (Intel SDM vol. 3B, 17.3.1.4 "Single-Step Exception Condition";
///   AMD APM vol. 2, chapter 13, "Single Stepping"). The CPU never ran the instruction, so
///   it raises nothing: the hypervisor does, as Xen's `__update_guest_eip` and KVM's
///   `kvm_skip_emulated_instruction` do. Else a guest stepping through its code sees the step
///   after such an instruction land one instruction late. DR6 is the one after the
///   instruction: a `MOV DR6` it completed, with BS set.
///
/// - A REP string instruction traps after each iteration, RIP still at it while elements
///   are left: with TF the hypervisor does one element an exit (`ioio::Steps`), and the
///   trap follows each (RF stays: the instruction has not completed).
/// - A HLT's trap is an event pending, which ends the halt at once (Xen's `hvm_hlt` does not
///   block then, and KVM's halt returns): the vCPU neither halts nor blocks, and the #DB
///   comes right after the HLT. A hypercall that blocks (SCHEDOP_block, poll) stays
///   blocked: the #DB comes when it is woken, as in Xen.
/// - gdb's own steps take their TF out before any decision (`gdb/mod.rs`).
///
/// Called by `exit::handle` when TF or RF is set, apart (cold): a trap without them pays one
/// test.
#[cold]
#[inline(never)]
pub fn after_completed(guest: &Guest, decision: &mut Decision) {
    let save = &guest.vcpu.vmcb.save;
    let moved_on = decision
        .effects
        .iter()
        .any(|effect| matches!(effect, Effect::Rip(next) if *next != save.rip));
    let iterated = decision.effects.iter().any(|effect| {
        matches!(
            effect,
            Effect::MemoryString(_)
                | Effect::Port(PortAccess::InString { .. } | PortAccess::OutString { .. })
        )
    });
    // Emulated, or forwarded (an event sent to another domain: the VMMCALL completed all
    // the same).
    let completed = matches!(decision.action, Action::Emulate | Action::Forward)
        && decision.delivery.is_none()
        && decision.returning.is_none()
        && decision.end.is_none()
        && (moved_on || iterated);
    if !completed {
        return;
    }
    if moved_on && save.rflags & RFlags::RESUME_FLAG.bits() != 0 {
        decision.effects.push(Effect::ClearResumeFlag);
    }
    if save.rflags & RFlags::TRAP_FLAG.bits() != 0 {
        single_step(guest, decision);
    }
}

/// [`after_completed`]'s single-step trap: #DB after the instruction.
fn single_step(guest: &Guest, decision: &mut Decision) {
    debug_trap(
        guest,
        decision,
        DR6_SINGLE_STEP,
        format_args!(
            "RFLAGS.TF was set when the instruction began: the CPU would raise #DB (DR6.BS) after it, so the hypervisor does"
        ),
    );
}

/// The I/O breakpoints an IN, OUT, INS or OUTS of `size` bytes at `port` hits, as DR6's B0–B3
/// (AMD APM vol. 2, 13.1.1.5 "Debug-Control Register (DR7)": with CR4.DE set, R/Wn = 10b
/// makes slot n an I/O breakpoint on the ports from DRn, LENn bytes, enabled by Ln or Gn).
/// The CPU checks them after the instruction; the hypervisor completed it in the CPU's
/// place, so it checks them (under QEMU's TCG too, which implements them for a guest whose
/// IN and OUT are not intercepted).
fn io_breakpoints(guest: &Guest, port: u16, size: u8) -> u64 {
    let save = &guest.vcpu.vmcb.save;
    // One test at every port exit: no slot enabled (the usual case), nothing to look at.
    if save.dr7 & 0xff == 0 || save.cr4 & x86::Cr4Flags::DEBUGGING_EXTENSIONS.bits() == 0 {
        return 0;
    }
    let access = u64::from(port)..u64::from(port) + u64::from(size);
    // The guest's own slots: in one lent to gdb (never an I/O breakpoint), the guest's bits
    // and its address, since the hypervisor checks them, not the CPU.
    let dr7 = guest.vcpu.guest_dr7();
    (0..4)
        .filter(|&slot| {
            let enabled = dr7 & dr7_slot_enables(slot) != 0;
            let control = dr7 >> (16 + 4 * slot);
            let length = slot_length(control);
            let start = guest_breakpoint_address(guest, slot) & 0xffff & !(length - 1);
            enabled && control & 0b11 == 0b10 && start < access.end && access.start < start + length
        })
        .fold(0, |hits, slot| hits | 1 << slot)
}

/// Where the hypervisor left an instruction it did in the CPU's place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Done: RIP after it.
    Completed,
    /// A REP string instruction between two iterations, RIP still at it, RF set
    /// (`ioio::between_iterations`).
    BetweenIterations,
}

/// One memory access of an instruction the hypervisor did in the CPU's place: `size` bytes
/// at linear address `linear`, a write (a read-modify-write too) or a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataAccess {
    pub linear: u64,
    pub size: u64,
    pub write: bool,
}

/// A slot of DR7's R/Wn field: 01b breaks on data writes, 11b on data reads and writes
/// (AMD APM vol. 2, 13.1.1.5).
const RW_WRITES: u64 = 0b01;
const RW_READS_AND_WRITES: u64 = 0b11;

/// Does the CPU's DR7 enable a data breakpoint in any slot, the guest's or gdb's? One look
/// at DR7 when none is enabled, the usual case. A REP string instruction the hypervisor does
/// goes one element an exit while one watches the bytes its elements span (`exit/ioio.rs`,
/// `npf/string.rs`): its #DB, or gdb's stop, comes after the iteration that hit.
pub fn watches_data(guest: &Guest) -> bool {
    let dr7 = guest.vcpu.vmcb.save.dr7;
    dr7 & 0xff != 0
        && (0..4).any(|slot| {
            let rw = (dr7 >> (16 + 4 * slot)) & 0b11;
            dr7 & dr7_slot_enables(slot) != 0 && matches!(rw, RW_WRITES | RW_READS_AND_WRITES)
        })
}

/// The data breakpoints of the CPU's debug registers that `accesses` hit, as DR6's B0–B3
/// (AMD APM vol. 2, 13.1.1.5: slot n watches LENn bytes, 1, 2, 8 or 4, at DRn aligned down
/// to that length, for writes with R/Wn = 01b, for reads and writes with 11b). The CPU
/// checks them as it accesses memory; these accesses the hypervisor made in its place, so it
/// checks them (the CPU never saw them: under QEMU's TCG nothing would). The CPU's view: in
/// a slot lent to gdb, gdb's watchpoint (the guest's own waits for the slot, `LentSlot`).
fn data_breakpoints(guest: &Guest, accesses: &[DataAccess]) -> u64 {
    if accesses.is_empty() || !watches_data(guest) {
        return 0;
    }
    let dr7 = guest.vcpu.vmcb.save.dr7;
    (0..4)
        .filter(|&slot| {
            let control = dr7 >> (16 + 4 * slot);
            let rw = control & 0b11;
            if dr7 & dr7_slot_enables(slot) == 0 || !matches!(rw, RW_WRITES | RW_READS_AND_WRITES) {
                return false;
            }
            let length = slot_length(control);
            let start = cpu_breakpoint_address(guest, slot) & !(length - 1);
            // Byte distances within the linear address space (4 GiB outside long mode): an
            // access may wrap around its end, and so may the range a breakpoint covers.
            let mask = guest.vcpu.vmcb.linear_address_mask();
            accesses.iter().any(|access| {
                (access.write || rw == RW_READS_AND_WRITES)
                    && ((start.wrapping_sub(access.linear) & mask) < access.size
                        || (access.linear.wrapping_sub(start) & mask) < length)
            })
        })
        .fold(0, |hits, slot| hits | 1 << slot)
}

/// Do `accesses` hit a data breakpoint of the CPU's DR7, the guest's or gdb's
/// (`data_breakpoints`)?
pub fn hits_data_breakpoint(guest: &Guest, accesses: &[DataAccess]) -> bool {
    data_breakpoints(guest, accesses) != 0
}

/// The bytes slot n covers, from its LENn field (the 2 bits above R/Wn): 00b 1, 01b 2, 10b 8
/// (long mode), 11b 4 (AMD APM vol. 2, 13.1.1.5).
fn slot_length(control: u64) -> u64 {
    match (control >> 2) & 0b11 {
        0b00 => 1,
        0b01 => 2,
        0b10 => 8,
        _ => 4,
    }
}

/// The guest's DRn: the CPU's, where its own MOV to DRn went (`Machine::breakpoint_address`);
/// in a slot lent to gdb the guest's MOV was intercepted, and kept.
fn guest_breakpoint_address(guest: &Guest, slot: usize) -> u64 {
    match guest.vcpu.lent_slots[slot] {
        Some(_) => guest.vcpu.debug_registers[slot],
        None => guest.machine.breakpoint_address(slot as u8),
    }
}

/// The CPU's DRn: the guest's, where its own MOV to DRn went; in a slot lent to gdb, gdb's.
fn cpu_breakpoint_address(guest: &Guest, slot: usize) -> u64 {
    match guest.vcpu.lent_slots[slot] {
        Some(_) => guest.vcpu.cpu_breakpoint_address(slot),
        None => guest.machine.breakpoint_address(slot as u8),
    }
}

/// `decision`, an IN, OUT, INS or OUTS of `size` bytes at `port` the hypervisor did, followed
/// by the #DB trap of the I/O breakpoints it hits (`io_breakpoints`, above), if any
/// ([`with_breakpoints`]). The one way every port handler ends (`exit/ioio.rs`, a PV kernel's
/// port I/O in `exit/privileged.rs`).
pub fn with_io_breakpoints(
    guest: &Guest,
    port: u16,
    size: u8,
    decision: Decision,
    done: Progress,
) -> Decision {
    with_breakpoints(guest, Some((port, size)), &[], decision, done)
}

/// `decision`, an instruction the hypervisor did in the CPU's place, followed by the #DB trap
/// of the breakpoints it hits: the I/O breakpoints of its `port` access (port and size), the
/// data breakpoints of its `memory` accesses, DR6.Bn set for each, and BS too when RFLAGS.TF
/// was set: one #DB reports them all (AMD APM vol. 2, 13.1.1.3). A data hit in a slot lent
/// to gdb is gdb's watchpoint instead: `Effect::DebuggerWatchpoint`, and gdb stops the guest
/// once the decision is applied (`gdb::after_handling`). Both kinds are traps, after
/// the instruction. Between two iterations of a REP string instruction, the #DB comes after
/// the iteration (Intel SDM vol. 3B, 17.3.1.2), with RF set in its frame as for any event
/// there; a CPU single-steps such an instruction iteration by iteration too (17.3.1.4;
/// `ioio::Steps`), so BS comes with it there as well.
pub fn with_breakpoints(
    guest: &Guest,
    port: Option<(u16, u8)>,
    memory: &[DataAccess],
    mut decision: Decision,
    done: Progress,
) -> Decision {
    let io_hits = port.map_or(0, |(port, size)| io_breakpoints(guest, port, size));
    let all_data_hits = data_breakpoints(guest, memory);
    // Nothing hit, the usual case (every port exit comes here): nothing more to look at.
    if io_hits | all_data_hits == 0 {
        return decision;
    }
    // A hit in a slot lent to gdb is gdb's watchpoint: gdb stops the guest, which sees no
    // #DB for it (its own causes, if any, still get theirs).
    let lent = (0..4)
        .filter(|&slot| guest.vcpu.lent_slots[slot].is_some())
        .fold(0, |mask, slot| mask | 1 << slot);
    if let Some(slot) = (0..4u8).find(|&slot| all_data_hits & lent & 1 << slot != 0) {
        decision.effects.push(Effect::DebuggerWatchpoint(slot));
        decision.why = format!(
            "{}; the memory access hits gdb's watchpoint (DR{slot}, lent to gdb): gdb stops the guest after it, and the guest sees no #DB for it",
            decision.why
        )
        .into();
    }
    let data_hits = all_data_hits & !lent;
    let hits = io_hits | data_hits;
    if hits == 0 {
        return decision;
    }
    let rflags = guest.vcpu.vmcb.save.rflags;
    let stepping = rflags & RFlags::TRAP_FLAG.bits() != 0;
    let causes = hits | if stepping { DR6_SINGLE_STEP } else { 0 };
    let when = match done {
        Progress::Completed => {
            // RF is cleared before the #DB's frame is pushed (the trap goes in through a
            // delivery, which `after_completed` leaves alone).
            if rflags & RFlags::RESUME_FLAG.bits() != 0 {
                decision.effects.push(Effect::ClearResumeFlag);
            }
            "after the instruction"
        }
        Progress::BetweenIterations => {
            "after this iteration of the REP string instruction (Intel SDM vol. 3B, 17.3.1.2), the instruction left between two iterations"
        }
    };
    let what = match (io_hits, data_hits) {
        (0, _) => "the memory access hits a data breakpoint of DR7",
        (_, 0) => "the port access hits an I/O breakpoint of DR7",
        _ => {
            "the port access hits an I/O breakpoint of DR7 and the memory access a data breakpoint"
        }
    };
    debug_trap(
        guest,
        &mut decision,
        causes,
        format_args!(
            "{what} (DR6 B0-B3 = {hits:#x}): the CPU would raise #DB {when}, so the hypervisor does"
        ),
    );
    decision
}

/// Does an IN, OUT, INS or OUTS of `size` bytes at `port` hit an I/O breakpoint of the
/// guest's DR7 (`io_breakpoints`)?
pub fn hits_io_breakpoint(guest: &Guest, port: u16, size: u8) -> bool {
    io_breakpoints(guest, port, size) != 0
}

/// A #DB trap after the instruction `decision` completed, DR6 as the instruction left it (a
/// `MOV DR6` it completed wrote it: AMD APM vol. 2, 13.1.1.3) with `causes` set, and B0–B3
/// only as `causes` says.
fn debug_trap(guest: &Guest, decision: &mut Decision, causes: u64, why: fmt::Arguments) {
    let save = &guest.vcpu.vmcb.save;
    let mut first = core::mem::take(&mut decision.effects);
    let halted = |effect: &Effect| {
        matches!(
            effect,
            Effect::HaltUntilInterrupt | Effect::Block(Wait::Interrupt)
        )
    };
    let halts = first.iter().any(halted);
    first.retain(|effect| !halted(effect));
    // B0–B3 say which breakpoints this #DB is for: an earlier one's are cleared with it, as
    // general detect's are (`exit/dr.rs`; KVM clears them as it delivers any #DB).
    let dr6 = written_debug_register(&first, 6).unwrap_or(save.dr6) & !DR6_BREAKPOINTS;
    first.push(Effect::DebugRegister(6, dr6 | causes));
    let trap = exception(
        guest,
        first,
        1,
        0,
        true,
        format_args!(
            "{why}{}",
            if halts {
                " (an event pending: the HLT does not wait)"
            } else {
                ""
            }
        ),
        decision.at,
    );
    if trap.end.is_some() {
        decision.action = trap.action;
    }
    decision.why = format!("{}; {}", decision.why, trap.why).into();
    if decision.what.is_none() {
        decision.what = trap.what; // DR7.GD cleared (`with_general_detect_off`)
    }
    decision.effects = trap.effects;
    decision.delivery = trap.delivery;
    decision.end = trap.end;
}

/// How a reflected exception will arrive: which IDT gate, which handler.
fn reflect_how(guest: &Guest, vector: u8) -> String {
    let mnemonic = x86::exception(vector).mnemonic;
    match guest.idt_gate(vector) {
        IdtGate::Handler(handler) => format!(
            "reflect {mnemonic} into the guest's IDT, vector {vector}, handler {handler:#x}"
        ),
        IdtGate::Task { selector } => format!(
            "reflect {mnemonic} into the guest's IDT, vector {vector}: a task gate, so the CPU switches to the task of TSS selector {selector:#x}"
        ),
        IdtGate::Unusable => format!(
            "reflect {mnemonic} into the guest's IDT, vector {vector}: it has no present interrupt or trap gate there, so the CPU will fault delivering it"
        ),
    }
}

/// What [`exception`] would do with `vector` now, in words (gdb's `monitor decision`).
pub fn preview(guest: &Guest, vector: u8) -> String {
    if !guest.bounces_events() {
        return reflect_how(guest, vector);
    }
    let mnemonic = x86::exception(vector).mnemonic;
    match guest.trap_table_entry(vector) {
        Some(entry) => format!(
            "bounce {mnemonic} to the handler the guest registered with set_trap_table, {:#x}",
            entry.handler
        ),
        None => format!(
            "no trap-table entry for {mnemonic}: the hypervisor raises #GP instead, as a CPU that finds no IDT gate"
        ),
    }
}

/// The guest's own INT n (or INT3, INTO), bounced to the handler it registered for the
/// vector, after the effects `first` (RIP past the instruction: a software interrupt returns
/// after itself). Its frame has no error code, whatever the vector. From a privilege level
/// below the entry's DPL it is a #GP instead, as through an IDT gate.
pub fn software_interrupt(
    guest: &Guest,
    first: Vec<Effect>,
    vector: u8,
    entry: TrapInfo,
    why: fmt::Arguments,
    at: &'static str,
) -> Decision {
    let level = software_interrupt_level(guest);
    // INT3 and INTO come through Xen's own IDT from any ring (its gates for vectors 3 and 4
    // have DPL 3), so their entries' DPL is not checked; an INT n's is, as a CPU checks a
    // gate's DPL for a software interrupt (AMD APM vol. 2, 8.9.3), and Xen's
    // `do_general_protection` checks the trap table's (`permit_softint`).
    if !matches!(vector, 3 | 4) && level > entry.dpl() {
        let dpl = entry.dpl();
        return exception(
            guest,
            Vec::new(),
            13,
            vector as u32 * 8 + 2,
            false,
            format_args!(
                "{why}: its trap-table entry has DPL {dpl}, and the guest is at privilege level {level}: as through an IDT gate whose DPL is below the CPL, #GP with the gate's error code"
            ),
            at,
        );
    }
    let name = delivery_name(vector, EventType::Software);
    let why = format!(
        "{why}: the guest registered a handler for {name} with set_trap_table: the hypervisor delivers it itself, to {:#x}",
        entry.handler
    );
    let event = (vector, EventType::Software, None);
    bounce(guest, first, event, entry, false, why, at)
}

/// The privilege level a software interrupt comes from, for the trap table's DPL: the CPL,
/// and for a PV kernel (at CPL 3 in traplab) ring 1, as Xen's `permit_softint` counts a PV
/// guest's kernel mode.
fn software_interrupt_level(guest: &Guest) -> u8 {
    match guest.pv.enabled {
        true => 1,
        false => guest.vcpu.vmcb.save.cpl,
    }
}

/// The bounce of `event` (vector, kind, error code): the frame the hardware would push, 128
/// bytes below the interrupted RSP, and the handler's RFLAGS. A frame the guest's stack
/// cannot take ends the domain, as in Xen.
fn bounce(
    guest: &Guest,
    first: Vec<Effect>,
    event: (u8, EventType, Option<u32>),
    entry: TrapInfo,
    synthetic: bool,
    why: String,
    at: &'static str,
) -> Decision {
    let (vector, kind, error_code) = event;
    let save = &guest.vcpu.vmcb.save;
    let interrupted_rsp = save.rsp;
    // What the CPU pushes for an exception in 64-bit mode, highest address first:
    // SS, RSP, RFLAGS, CS, RIP (the one after `first`), then the error code if the event
    // has one. The frame lists them from the lowest address up.
    let mut words: Vec<u64> = Vec::with_capacity(6);
    if let Some(error_code) = error_code {
        words.push(error_code as u64);
    }
    // The RIP and RFLAGS the guest has once `first` is applied, as the CPU pushes them: an
    // instruction completed before a trap moved RIP on and cleared RF; a fault set RF
    // ([`resume_flag_of`]).
    let rip = crate::decision::rip_after(&first, save.rip);
    let rflags = crate::decision::rflags_after(&first, save.rflags);
    // A PV kernel's interrupt flag is its virtual one (`exit/privileged.rs`): the frame
    // carries that in IF, as Xen's create_bounce_frame puts !evtchn_upcall_mask there.
    let interrupted_rflags = match guest.pv.enabled {
        true => {
            let rflags = RFlags::from_bits_retain(rflags) - RFlags::INTERRUPT_FLAG;
            match guest.pv.virtual_interrupt_flag {
                true => rflags | RFlags::INTERRUPT_FLAG,
                false => rflags,
            }
            .bits()
        }
        false => rflags,
    };
    words.extend([
        rip,
        save.cs.selector as u64,
        interrupted_rflags,
        interrupted_rsp,
        save.ss.selector as u64,
    ]);
    let top = interrupted_rsp.wrapping_sub(RED_ZONE) & !15;
    let frame = top.wrapping_sub(8 * words.len() as u64);
    // Xen writes the frame itself, at ring 0 with CR0.WP set (always, in Xen): every page
    // of it must be present and writable at every level of the walk, whatever the guest's
    // CPL or its own CR0.WP. Where Xen's write would fault, the domain is crashed.
    let xen_write = CpuAccess {
        write: true,
        user: false,
        write_protect: true,
    };
    if let Err(fault) =
        guest
            .memory
            .cpu_pieces(guest.page_tables(), frame, 8 * words.len(), xen_write)
    {
        return Decision::new(
            Action::Kill,
            format!(
                "the bounce frame at {frame:#x} cannot be written ({}): the guest's stack is broken, so (as Xen) the domain ends",
                unwritable(&fault)
            )
            .into(),
            at,
        )
        .with_all(first)
        .killing(format!("cannot write a bounce frame at {frame:#x}"));
    }
    // The handler runs with TF, NT and RF clear (and AC, in PV mode), and IF clear if its entry says so, or
    // an interrupt pending would enter the handler at its first instruction. For a PV kernel
    // that is its virtual IF (Xen's TBF_INTERRUPT sets evtchn_upcall_mask); RFLAGS.IF stays
    // as it is, set, as a Xen PV guest always runs (`create_bounce_frame` leaves it).
    let mut flags = RFlags::from_bits_retain(rflags)
        - (RFlags::TRAP_FLAG | RFlags::NESTED_TASK | RFlags::RESUME_FLAG);
    // A PV kernel's handler runs at CPL 3, where AC (with CR0.AM) makes every misaligned
    // access an #AC: Xen clears it ("alignment checks shouldn't trigger in kernel mode",
    // `create_bounce_frame`). A kernel at CPL 0 keeps it, as a CPU's delivery through the IDT
    // does (AMD APM vol. 2, 8.9.3: TF, NT and RF cleared).
    if guest.pv.enabled {
        flags -= RFlags::ALIGNMENT_CHECK;
    }
    let masks = entry.flags & TrapInfo::CLEAR_IF != 0;
    if masks && !guest.pv.enabled {
        flags -= RFlags::INTERRUPT_FLAG;
    }
    Decision::new(Action::Bounce, why.into(), at)
        .with_all(first)
        .with_all((masks && guest.pv.enabled).then_some(Effect::VirtualInterruptFlag(false)))
        .deliver(Delivery::Bounce(Bounce {
            vector,
            kind,
            error_code,
            handler: entry.handler,
            frame,
            words,
            rflags: flags.bits(),
            synthetic,
        }))
}

/// Why a bounce frame's write would fail, in words.
fn unwritable(fault: &AccessFault) -> String {
    match fault {
        AccessFault::PageFault {
            address,
            error_code,
        } if error_code & page_fault_code::RESERVED != 0 => {
            format!("a reserved bit is set on the walk to {address:#x}")
        }
        AccessFault::PageFault {
            address,
            error_code,
        } if error_code & page_fault_code::PRESENT != 0 => {
            format!("{address:#x} is on a read-only page")
        }
        AccessFault::PageFault { address, .. } => format!("{address:#x} is not mapped"),
        AccessFault::NonCanonical => "the address is not canonical".into(),
        AccessFault::Segment(why) => (*why).into(),
        AccessFault::Misaligned => "the access is not aligned to its size".into(),
        AccessFault::Memory(error) => format!("{error:?}"),
    }
}

/// A #PF at guest-virtual `address`, after the effects `first`: CR2 is set to the address
/// first, as a CPU sets it when it raises #PF (AMD APM vol. 2, 8.2.15) — the guest's
/// handler reads it there, and neither an intercepted #PF nor an access the hypervisor
/// made for the guest wrote it. The one way every handler raises a #PF
/// (`deliver!(guest, after first, page_fault(address, error_code), …)`).
pub fn page_fault(
    guest: &Guest,
    mut first: Vec<Effect>,
    address: u64,
    error_code: u32,
    synthetic: bool,
    why: fmt::Arguments,
    at: &'static str,
) -> Decision {
    first.push(Effect::ControlRegister(2, address));
    exception(guest, first, 14, error_code, synthetic, why, at)
}

/// The exception a CPU raises where an access it makes for an instruction cannot be made
/// (`fault`, by [`Domain::cpu_pieces`](crate::domain::Domain::cpu_pieces)), after the effects `first`: #PF with its error code
/// and CR2, or for an address that is not canonical #GP(0), #SS(0) through SS (`stack`),
/// or #AC(0) for a misaligned one while the CPU checks alignment.
/// The hypervisor made the access for the guest (string I/O, LMSW's operand), so the CPU
/// raised nothing itself: the event is synthetic. `access` says what the access was, and
/// begins the reason. `None` for an address outside the guest's memory: no exception of
/// the guest's tells that, and the caller decides.
pub fn access_fault(
    guest: &Guest,
    first: Vec<Effect>,
    fault: &AccessFault,
    stack: bool,
    access: fmt::Arguments,
    at: &'static str,
) -> Option<Decision> {
    Some(match *fault {
        AccessFault::PageFault {
            address: page,
            error_code,
        } => {
            let why = match error_code & page_fault_code::PRESENT {
                0 => "its page tables do not map it",
                _ if error_code & page_fault_code::RESERVED != 0 => {
                    "an entry of its page walk sets a reserved bit (an address beyond the CPU's physical-address width, say)"
                }
                _ if error_code & page_fault_code::USER != 0
                    && guest.cpu_pieces(page, 1, false).is_err() =>
                {
                    "a supervisor page, and the guest runs at CPL 3"
                }
                _ => "a read-only page",
            };
            page_fault(
                guest,
                first,
                page,
                error_code,
                true,
                format_args!(
                    "{access}: {why}, so the CPU raises #PF with error code {error_code:#x} and CR2 = {page:#x}"
                ),
                at,
            )
        }
        AccessFault::NonCanonical | AccessFault::Segment(_) => {
            let why = match *fault {
                AccessFault::Segment(why) => why,
                _ => "not canonical",
            };
            let (vector, name) = match stack {
                true => (12, "#SS(0)"),
                false => (13, "#GP(0)"),
            };
            exception(
                guest,
                first,
                vector,
                0,
                true,
                format_args!("{access}: {why}, so the CPU raises {name}"),
                at,
            )
        }
        AccessFault::Misaligned => exception(
            guest,
            first,
            17,
            0,
            true,
            format_args!(
                "{access}: not aligned to its size, at CPL 3 with CR0.AM and RFLAGS.AC set, so the CPU raises #AC(0)"
            ),
            at,
        ),
        AccessFault::Memory(_) => return None,
    })
}

/// `deliver!(guest, vector, error_code, synthetic, "why {}", args)`: deliver an exception
/// (reflect or bounce, see [`exception`]) and record why, with this source line.
/// `deliver!(guest, after effects, vector, …)` first applies `effects` (an iterable of
/// [`Effect`]s). `deliver!(guest, after effects, page_fault(address, error_code), …)`
/// delivers a #PF with CR2 set ([`page_fault`]).
#[macro_export]
macro_rules! deliver {
    ($guest:expr, after $first:expr, page_fault($address:expr, $error_code:expr), $synthetic:expr, $($why:tt)+) => {
        $crate::delivery::page_fault(
            $guest,
            ::core::iter::IntoIterator::into_iter($first).collect(),
            $address,
            $error_code,
            $synthetic,
            format_args!($($why)+),
            $crate::here!(),
        )
    };
    ($guest:expr, after $first:expr, $vector:expr, $error_code:expr, $synthetic:expr, $($why:tt)+) => {
        $crate::delivery::exception(
            $guest,
            ::core::iter::IntoIterator::into_iter($first).collect(),
            $vector,
            $error_code,
            $synthetic,
            format_args!($($why)+),
            $crate::here!(),
        )
    };
    ($guest:expr, $vector:expr, $error_code:expr, $synthetic:expr, $($why:tt)+) => {
        $crate::delivery::exception(
            $guest,
            ::alloc::vec::Vec::new(),
            $vector,
            $error_code,
            $synthetic,
            format_args!($($why)+),
            $crate::here!(),
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, DATA, ENTRY, PT, Test, UNMAPPED, trap};
    use traplab_abi::exit::ExitReason;
    use traplab_abi::x86::Cr0Flags;

    const HANDLER: u64 = 0x21_4000;

    #[test]
    fn a_data_breakpoint_matches_accesses_that_wrap_around_the_linear_address_space() {
        let write = |linear, size| DataAccess {
            linear,
            size,
            write: true,
        };
        // The last byte of the 64-bit space.
        let mut test = Test::long_mode();
        test.watch(u64::MAX, 1, false);
        assert_eq!(
            data_breakpoints(&test.guest(), &[write(u64::MAX - 1, 2)]),
            1
        );
        assert_eq!(
            data_breakpoints(&test.guest(), &[write(u64::MAX - 2, 2)]),
            0
        );
        // A 4-byte write at 0xffff_fffe in 32-bit code wraps to 0 and 1.
        let mut test = Test::protected_mode();
        test.watch(1, 1, false);
        assert_eq!(data_breakpoints(&test.guest(), &[write(0xffff_fffe, 4)]), 1);
        // A read does not hit a breakpoint on writes.
        let read = DataAccess {
            write: false,
            ..write(1, 1)
        };
        assert_eq!(data_breakpoints(&test.guest(), &[read]), 0);
    }

    /// What the hypervisor decides to do with exception `vector` now, with no effects first.
    fn deliver(test: &Test, vector: u8, error_code: u32) -> Decision {
        exception(
            &test.guest(),
            Vec::new(),
            vector,
            error_code,
            false,
            format_args!("a test's exception"),
            crate::here!(),
        )
    }

    #[test]
    fn without_a_trap_table_an_exception_is_reflected_to_the_idt_handler() {
        let mut test = Test::long_mode();
        test.gate(6, HANDLER);
        let decision = deliver(&test, 6, 0);
        assert_eq!(decision.action, Action::Reflect);
        assert_eq!(
            decision.why,
            "a test's exception: reflect #UD into the guest's IDT, vector 6, handler 0x214000"
        );
        assert_eq!(
            testing::injected(&decision),
            (Event::exception(6, 0), Some(HANDLER), false)
        );
        assert!(
            decision.at.contains("src/delivery.rs:"),
            "the caller's line"
        );
    }

    #[test]
    fn a_user_program_s_fault_goes_through_the_idt_whatever_the_trap_table_says() {
        // A non-PV kernel's trap table takes the faults of CPL 0; its user program's (CPL 3)
        // go through its IDT, where the CPU switches to the kernel's stack. A bounce would
        // write its frame below the user's RSP, here pointed at kernel memory.
        let mut test = Test::long_mode();
        test.trap_table(&[trap(6, HANDLER)]);
        test.domain.vcpu.vmcb.save.cpl = 3;
        test.domain.vcpu.vmcb.save.rsp = DATA + 0x200;
        let before = test.read_u64(DATA);
        let decision = test.decide(test.exit(ExitReason::Exception {
            vector: 6,
            error_code: 0,
            address: 0,
        }));
        assert_eq!(decision.action, Action::Reflect, "{}", decision.why);
        assert_eq!(testing::injected(&decision).0.vector, 6);
        assert_eq!(test.read_u64(DATA), before, "nothing written");
        assert!(preview(&test.guest(), 6).starts_with("reflect #UD"));
        // Back in its kernel (CPL 0), the table holds again.
        test.domain.vcpu.vmcb.save.cpl = 0;
        let decision = test.decide(test.exit(ExitReason::Exception {
            vector: 6,
            error_code: 0,
            address: 0,
        }));
        assert_eq!(decision.action, Action::Bounce, "{}", decision.why);
    }

    #[test]
    fn a_pv_kernel_s_page_fault_is_bounced_as_a_kernel_mode_fault_and_its_handler_has_ac_clear() {
        // At CPL 3 the CPU sets U in the #PF's error code; Xen's pv_inject_event clears it for
        // the guest's kernel, and its create_bounce_frame clears AC for the handler.
        let mut test = Test::long_mode();
        test.trap_table(&[trap(14, HANDLER)]);
        test.domain.pv.enabled = true;
        test.domain.vcpu.vmcb.save.cpl = 3;
        test.domain.vcpu.vmcb.save.rflags = 0x4_0246;
        let exit = test.exit(ExitReason::Exception {
            vector: 14,
            error_code: 0b111,
            address: 0x40_0000,
        });
        let decision = test.decide(exit);
        let bounce = testing::bounced(&decision);
        assert_eq!(bounce.error_code, Some(0b011), "{}", decision.why);
        assert!(decision.why.contains("U cleared"), "{}", decision.why);
        assert_eq!(bounce.rflags & RFlags::ALIGNMENT_CHECK.bits(), 0, "AC");
        assert_ne!(
            bounce.words[3] & RFlags::ALIGNMENT_CHECK.bits(),
            0,
            "AC in the frame"
        );
        // A kernel at CPL 0 keeps its error code, and AC, as a CPU's delivery does.
        let mut test = Test::long_mode();
        test.trap_table(&[trap(14, HANDLER)]);
        test.domain.vcpu.vmcb.save.rflags = 0x4_0246;
        let exit = test.exit(ExitReason::Exception {
            vector: 14,
            error_code: 0b011,
            address: 0x40_0000,
        });
        let decision = test.decide(exit);
        let bounce = testing::bounced(&decision);
        assert_eq!(bounce.error_code, Some(0b011));
        assert_ne!(bounce.rflags & RFlags::ALIGNMENT_CHECK.bits(), 0, "AC");
    }

    #[test]
    fn a_bounce_frame_has_the_hardware_layout_128_bytes_below_rsp_16_byte_aligned() {
        // From the lowest address: error code, RIP, CS, RFLAGS, RSP, SS — what a CPU pushes
        // for an exception in 64-bit mode (AMD APM vol. 2, 8.9.3), below the red zone; RFLAGS
        // with RF set, as for any fault (`resume_flag_of`).
        let mut test = Test::long_mode();
        let rsp = 0x7_ff38;
        test.domain.vcpu.vmcb.save.rsp = rsp;
        test.domain.vcpu.vmcb.save.rflags = 0x246;
        test.trap_table(&[trap(14, HANDLER)]);
        let run = test.run(test.exit(ExitReason::Exception {
            vector: 14,
            error_code: 0b10,
            address: 0x40_0000,
        }));
        let frame = ((rsp - 128) & !15) - 8 * 6;
        assert_eq!(frame, 0x7_fe80);
        let bounce = testing::bounced(&run.decision);
        assert_eq!(bounce.frame, frame);
        let words = [0b10, ENTRY, 0x08, 0x1_0246, rsp, 0x10];
        assert_eq!(bounce.words, words);
        for (index, word) in words.into_iter().enumerate() {
            assert_eq!(
                test.read_u64(frame + 8 * index as u64),
                word,
                "word {index}"
            );
        }
        assert_eq!(test.gpr(4), frame, "the handler's RSP is the frame");
        assert_eq!(test.rip(), HANDLER);
        assert_eq!(run.bounced().handler, HANDLER);
    }

    #[test]
    fn an_exception_without_an_error_code_has_a_five_word_frame() {
        let mut test = Test::long_mode();
        test.trap_table(&[trap(6, HANDLER)]);
        let rsp = test.domain.vcpu.vmcb.save.rsp;
        let bounce = testing::bounced(&deliver(&test, 6, 0)).clone();
        assert_eq!(bounce.error_code, None);
        assert_eq!(bounce.words.len(), 5);
        assert_eq!(bounce.frame, ((rsp - 128) & !15) - 8 * 5);
    }

    #[test]
    fn the_handler_runs_with_tf_nt_rf_and_if_cleared() {
        // As an interrupt gate (APM vol. 2, 8.9.3): TF, NT, RF cleared, and IF too.
        let mut test = Test::long_mode();
        let flags = RFlags::INTERRUPT_FLAG
            | RFlags::TRAP_FLAG
            | RFlags::NESTED_TASK
            | RFlags::RESUME_FLAG
            | RFlags::ZERO_FLAG;
        test.domain.vcpu.vmcb.save.rflags = 0x2 | flags.bits();
        test.trap_table(&[trap(6, HANDLER)]);
        let decision = deliver(&test, 6, 0);
        let bounce = testing::bounced(&decision);
        assert_eq!(bounce.rflags, 0x2 | RFlags::ZERO_FLAG.bits());
        assert_eq!(
            bounce.words[2],
            0x2 | flags.bits(),
            "the frame keeps the old RFLAGS"
        );
    }

    #[test]
    fn an_entry_without_clear_if_keeps_if_as_a_trap_gate_does() {
        // Xen's trap_info: flags 0 is a trap gate; TI_SET_IF (CLEAR_IF) an interrupt gate.
        let mut test = Test::long_mode();
        test.interrupts_on();
        test.domain.vcpu.vmcb.save.rflags |= RFlags::TRAP_FLAG.bits();
        test.trap_table(&[TrapInfo {
            flags: 0,
            ..trap(6, HANDLER)
        }]);
        let run = test.run(test.exit(ExitReason::Exception {
            vector: 6,
            error_code: 0,
            address: 0,
        }));
        let bounce = testing::bounced(&run.decision);
        assert_eq!(
            bounce.rflags,
            0x2 | RFlags::INTERRUPT_FLAG.bits(),
            "IF kept, TF not"
        );
        assert!(run.bounced().interrupts);
    }

    #[test]
    fn a_missing_entry_becomes_a_gp_naming_the_gate_as_a_missing_idt_gate_does() {
        // A CPU that finds no gate raises #GP with the error code of the gate: index =
        // vector, IDT bit set: vector * 8 + 2 (APM vol. 2, 8.4.1).
        let mut test = Test::long_mode();
        test.trap_table(&[trap(13, HANDLER)]);
        let decision = deliver(&test, 6, 0);
        let bounce = testing::bounced(&decision);
        assert_eq!((bounce.vector, bounce.error_code), (13, Some(6 * 8 + 2)));
        assert!(decision.why.contains("no trap-table entry for #UD"));
        assert!(decision.why.contains("raises #GP instead"));
    }

    #[test]
    fn a_missing_gp_entry_after_that_becomes_a_double_fault() {
        // #GP while delivering #GP: two contributory faults make #DF(0) (APM vol. 2, 8.2.9).
        let mut test = Test::long_mode();
        test.trap_table(&[trap(8, HANDLER)]);
        let decision = deliver(&test, 6, 0);
        let bounce = testing::bounced(&decision);
        assert_eq!((bounce.vector, bounce.error_code), (8, Some(0)));
        assert!(decision.why.contains("raises #GP instead"));
        assert!(decision.why.contains("raises #DF instead"));
    }

    #[test]
    fn a_missing_page_fault_entry_is_a_double_fault_straight_away() {
        // The #GP for the missing gate happens while delivering a #PF: #PF then a
        // contributory fault is #DF.
        let mut test = Test::long_mode();
        test.trap_table(&[trap(8, HANDLER)]);
        let decision = deliver(&test, 14, 0b10);
        assert_eq!(testing::bounced(&decision).vector, 8);
        assert!(!decision.why.contains("#GP"), "{}", decision.why);
    }

    #[test]
    fn no_entry_for_ud_gp_or_df_ends_the_domain_in_one_decision_naming_every_step() {
        let mut test = Test::long_mode();
        test.trap_table(&[trap(3, HANDLER)]);
        let decision = deliver(&test, 6, 0);
        assert_eq!(decision.action, Action::Kill);
        assert_eq!(
            testing::killed(&decision),
            "triple fault: no trap-table entry for #DF"
        );
        let why = &decision.why;
        let steps = ["#UD", "raises #GP", "raises #DF", "triple fault"].map(|step| why.find(step));
        assert!(steps.iter().all(Option::is_some), "{why}");
        assert!(steps.is_sorted(), "in the order they happen: {why}");
    }

    #[test]
    fn a_frame_the_guest_s_stack_cannot_take_ends_the_domain() {
        // As Xen: a guest whose stack is broken cannot be delivered anything.
        let mut test = Test::long_mode();
        test.domain.vcpu.vmcb.save.rsp = UNMAPPED + 0x100;
        test.trap_table(&[trap(6, HANDLER)]);
        let decision = deliver(&test, 6, 0);
        assert_eq!(decision.action, Action::Kill);
        // ((RSP - 128) & !15) - 5 * 8: 0x4000_0058, on no page of the guest's.
        assert_eq!(
            testing::killed(&decision),
            "cannot write a bounce frame at 0x40000058"
        );
    }

    #[test]
    fn an_emulated_instruction_with_tf_set_is_followed_by_the_single_step_trap() {
        // CPUID at ENTRY with TF set: answered, RIP past it, and #DB reflected as a trap
        // with DR6.BS, from the one decision (exit::handle).
        let mut test = Test::long_mode();
        test.code(&[0x0f, 0xa2]);
        test.gate(1, HANDLER);
        test.domain.vcpu.vmcb.save.rflags |= RFlags::TRAP_FLAG.bits();
        test.domain.vcpu.vmcb.save.dr6 = 0xffff_0ff0;
        let run = test.run(test.exit(ExitReason::Cpuid));
        assert_eq!(run.decision.action, Action::Emulate);
        assert!(
            run.decision.why.contains("RFLAGS.TF was set"),
            "{}",
            run.decision.why
        );
        let (event, handler, synthetic) = testing::injected(&run.decision);
        assert_eq!(
            (event, handler, synthetic),
            (Event::exception(1, 0), Some(HANDLER), true)
        );
        assert_eq!(
            test.rip(),
            ENTRY + 2,
            "a trap: the frame's RIP is the next instruction"
        );
        assert_eq!(test.domain.vcpu.vmcb.save.dr6, 0xffff_4ff0, "DR6.BS");
        // Bounced the same way, to a trap-table handler, the frame's RIP the next one.
        let mut test = Test::long_mode();
        test.code(&[0x0f, 0xa2]);
        test.trap_table(&[trap(1, HANDLER)]);
        test.domain.vcpu.vmcb.save.rflags |= RFlags::TRAP_FLAG.bits();
        let decision = test.decide(test.exit(ExitReason::Cpuid));
        assert_eq!(testing::bounced(&decision).words[0], ENTRY + 2);
        // Without TF, or for an exit that completes no instruction (the hypervisor's own
        // timer), nothing is added.
        let mut test = Test::long_mode();
        test.code(&[0x0f, 0xa2]);
        assert!(test.decide(test.exit(ExitReason::Cpuid)).delivery.is_none());
        test.domain.vcpu.vmcb.save.rflags |= RFlags::TRAP_FLAG.bits();
        assert!(test.decide(test.exit(ExitReason::Intr)).delivery.is_none());
    }

    #[test]
    fn a_hlt_with_tf_set_does_not_wait_the_single_step_trap_comes_at_once() {
        // An event pending ends a HLT (Xen's hvm_hlt, KVM's halt): no halt, no block.
        // (With interrupts on and a timer, which a HLT would wait for.)
        let mut test = Test::long_mode();
        test.code(&[0xf4]);
        test.gate(1, HANDLER);
        test.interrupts_on();
        test.domain.vcpu.interrupts.timers.set_timer =
            Some(crate::domain::interrupts::VirtualTimer {
                vector: 0x30,
                period_tsc: 1_000_000,
                due_tsc: test.machine.now.get() + 1_000_000,
                target: crate::domain::interrupts::TimerTarget::Pending,
            });
        test.domain.vcpu.vmcb.save.rflags |= RFlags::TRAP_FLAG.bits();
        let decision = test.decide(test.exit(ExitReason::Hlt));
        assert!(
            !decision
                .effects
                .iter()
                .any(|effect| matches!(effect, Effect::HaltUntilInterrupt | Effect::Block(_))),
            "{:?}",
            decision.effects
        );
        assert!(
            decision.why.contains("the HLT does not wait"),
            "{}",
            decision.why
        );
        assert_eq!(testing::injected(&decision).0, Event::exception(1, 0));
    }

    #[test]
    fn a_gate_of_a_type_the_mode_does_not_allow_names_no_handler() {
        // A present call gate (type 0xC) for #UD in long mode: only 64-bit interrupt and
        // trap gates deliver there; the CPU raises #GP instead of running its "handler".
        let mut test = Test::long_mode();
        test.gate(6, HANDLER);
        test.write(crate::testing::IDT + 16 * 6 + 5, &[0x8c]);
        assert_eq!(test.domain.idt_gate(6), IdtGate::Unusable);
        assert_eq!(test.domain.idt_handler(6), None);
        assert!(
            preview(&test.guest(), 6).contains("no present interrupt or trap gate"),
            "{}",
            preview(&test.guest(), 6)
        );
        // A trap gate (0xF) is one.
        test.write(crate::testing::IDT + 16 * 6 + 5, &[0x8f]);
        assert_eq!(test.domain.idt_handler(6), Some(HANDLER));
    }

    #[test]
    fn a_legacy_task_gate_is_a_task_switch_not_a_handler_at_offset_0() {
        // 32-bit #DF through a task gate (type 5), as 32-bit Linux has it: the gate holds a
        // TSS selector, and its offset fields are reserved.
        let mut test = Test::protected_mode();
        let idt = crate::testing::IDT;
        test.domain.vcpu.vmcb.save.idtr.base = idt;
        test.domain.vcpu.vmcb.save.idtr.limit = 8 * 256 - 1;
        test.write(idt + 8 * 8, &[0, 0, 0x28, 0, 0, 0x85, 0, 0]);
        assert_eq!(test.domain.idt_gate(8), IdtGate::Task { selector: 0x28 });
        assert_eq!(test.domain.idt_handler(8), None);
        // A 16-bit interrupt gate (type 6): its offset is the low word, bytes 6–7 reserved.
        test.write(idt + 6 * 8, &[0x34, 0x12, 0x08, 0, 0, 0x86, 0xff, 0xff]);
        assert_eq!(test.domain.idt_handler(6), Some(0x1234));
        assert!(
            preview(&test.guest(), 8)
                .contains("a task gate, so the CPU switches to the task of TSS selector 0x28"),
            "{}",
            preview(&test.guest(), 8)
        );
    }

    #[test]
    fn a_pv_kernel_s_bounce_carries_and_clears_its_virtual_interrupt_flag() {
        // Xen's create_bounce_frame: the frame's IF is the virtual flag, and an entry with
        // TI_SET_IF (CLEAR_IF; Xen's TBF_INTERRUPT) masks it for the handler (else a pending
        // interrupt would enter the handler at its first instruction).
        let mut test = Test::long_mode();
        test.domain.pv.enabled = true;
        test.domain.pv.virtual_interrupt_flag = true;
        test.domain.vcpu.vmcb.save.rflags |= RFlags::INTERRUPT_FLAG.bits();
        test.trap_table(&[trap(6, HANDLER)]);
        let decision = deliver(&test, 6, 0);
        let bounce = testing::bounced(&decision);
        assert_ne!(
            bounce.words[2] & RFlags::INTERRUPT_FLAG.bits(),
            0,
            "the frame's IF"
        );
        assert!(
            decision
                .effects
                .contains(&Effect::VirtualInterruptFlag(false))
        );
        // RFLAGS.IF is not the PV kernel's flag: it stays set (it used to be cleared, and
        // the `iret` hypercall never set it again).
        assert_ne!(
            bounce.rflags & RFlags::INTERRUPT_FLAG.bits(),
            0,
            "the handler's RFLAGS.IF"
        );
        // The trace says the handler runs with its interrupts off: the virtual flag.
        let run = test.run(test.exit(ExitReason::Exception {
            vector: 6,
            error_code: 0,
            address: 0,
        }));
        assert!(
            !run.bounced().interrupts,
            "the PV kernel's flag, not RFLAGS.IF"
        );
        assert!(!test.domain.pv.virtual_interrupt_flag);
    }

    #[test]
    fn a_frame_on_a_read_only_page_ends_the_domain_even_with_cr0_wp_clear() {
        // Xen writes the frame at ring 0 with its own CR0.WP set: a read-only stack page
        // faults there whatever the guest's CR0.WP says, and Xen crashes the domain.
        let mut test = Test::long_mode();
        test.read_only_page_tables();
        test.domain.vcpu.vmcb.save.cr0 &= !Cr0Flags::WRITE_PROTECT.bits();
        // The frame lands on the read-only page table at PT.
        test.domain.vcpu.vmcb.save.rsp = PT + 0x800;
        test.trap_table(&[trap(6, HANDLER)]);
        let decision = deliver(&test, 6, 0);
        assert_eq!(decision.action, Action::Kill);
        assert!(
            decision.why.contains("is on a read-only page"),
            "{}",
            decision.why
        );
        // On a writable page the same frame is written.
        test.domain.vcpu.vmcb.save.rsp = DATA + 0x800;
        assert_eq!(deliver(&test, 6, 0).action, Action::Bounce);
    }

    #[test]
    fn the_frame_s_rip_is_the_one_after_the_effects_that_come_first() {
        let mut test = Test::long_mode();
        test.trap_table(&[trap(1, HANDLER)]);
        let decision = exception(
            &test.guest(),
            alloc::vec![Effect::Rip(ENTRY + 1)],
            1,
            0,
            false,
            format_args!("a trap"),
            crate::here!(),
        );
        assert_eq!(testing::bounced(&decision).words[0], ENTRY + 1);
        assert_eq!(decision.effects, [Effect::Rip(ENTRY + 1)]);
    }

    #[test]
    fn a_reflected_fault_pushes_rf_set_and_a_trap_does_not() {
        // The CPU pushes RFLAGS with RF set for a fault (so that the instruction it restarts
        // skips its own instruction breakpoint once), as it is for a trap; EVENTINJ does not
        // know which, so the hypervisor sets RF before injecting a fault.
        for (vector, resume_flag) in [(6, true), (14, true), (13, true), (3, false), (8, false)] {
            let mut test = Test::long_mode();
            test.gate(vector, HANDLER);
            let decision = deliver(&test, vector, 0);
            assert_eq!(
                decision.effects.contains(&Effect::SetResumeFlag),
                resume_flag,
                "vector {vector}"
            );
        }
        // Applied: the VMCB's RFLAGS at VMRUN, which the CPU pushes, has RF.
        let mut test = Test::long_mode();
        test.code(&testing::UD0);
        test.gate(6, HANDLER);
        test.domain.vcpu.vmcb.save.rflags = 0x2;
        let ud = ExitReason::Exception {
            vector: 6,
            error_code: 0,
            address: 0,
        };
        let run = test.run(test.exit(ud));
        assert_eq!(run.decision.action, Action::Reflect);
        assert_eq!(test.domain.vcpu.vmcb.save.rflags, 0x1_0002);
    }

    #[test]
    fn a_bounced_fault_s_frame_has_rf_set_and_its_handler_runs_with_rf_clear() {
        let mut test = Test::long_mode();
        test.trap_table(&[trap(6, HANDLER)]);
        test.domain.vcpu.vmcb.save.rflags = 0x202;
        let decision = deliver(&test, 6, 0);
        let bounce = testing::bounced(&decision);
        assert_eq!(bounce.words[2], 0x1_0202, "the frame's RFLAGS");
        assert_eq!(bounce.rflags & RFlags::RESUME_FLAG.bits(), 0);
    }

    #[test]
    fn a_single_step_trap_after_a_completed_instruction_pushes_the_rflags_after_it() {
        // TF and RF set (a handler returned onto the CPUID with RF, past its breakpoint): the
        // CPUID completes, which clears RF, and the #DB after it is a trap, which pushes
        // RFLAGS as they are then: RF clear, so that the next instruction's breakpoint fires.
        let mut test = Test::long_mode();
        test.code(&[0x0f, 0xa2]);
        test.trap_table(&[trap(1, HANDLER)]);
        let flags = RFlags::TRAP_FLAG | RFlags::RESUME_FLAG;
        test.domain.vcpu.vmcb.save.rflags = 0x2 | flags.bits();
        let decision = test.decide(test.exit(ExitReason::Cpuid));
        let bounce = testing::bounced(&decision);
        assert_eq!(bounce.words[0], ENTRY + 2, "after the CPUID");
        assert_eq!(
            bounce.words[2],
            0x2 | RFlags::TRAP_FLAG.bits(),
            "RF cleared"
        );
    }

    #[test]
    fn the_preview_says_what_would_happen_without_deciding() {
        let mut test = Test::long_mode();
        test.gate(6, HANDLER);
        assert!(preview(&test.guest(), 6).contains("handler 0x214000"));
        test.trap_table(&[trap(6, HANDLER)]);
        assert!(preview(&test.guest(), 6).starts_with("bounce #UD"));
        assert!(preview(&test.guest(), 13).contains("raises #GP instead"));
    }
}
