//! IN/OUT and INS/OUTS (exit code 0x7B IOIO): emulate the port, or refuse it.
//!
//! Every port is marked in the I/O permission map (`iopm.rs`), so every port access exits —
//! but one: the disk controller's ports, in the map of the domain that owns the controller
//! (`device/ata.rs`), go straight to the real controller. EXITINFO1 says which port, which
//! direction, how wide, and whether it is a string (INS/OUTS) or REP instruction; EXITINFO2
//! holds the RIP of the next instruction (AMD APM vol. 2, 15.10.2), so IOIO is the one exit
//! where we need no decoder to skip the instruction.
//!
//! INS and OUTS also move memory, which the hypervisor does for them, element by element,
//! as the CPU would: through ES (INS) or DS or the segment an OUTS prefix names, checked
//! against the segment and the guest's page tables, and for alignment at CPL 3 with CR0.AM
//! and RFLAGS.AC (#AC(0): QEMU's TCG never checks alignment, so the hypervisor, which makes
//! these accesses, is the one that raises it), and to or from a device when the address is
//! not RAM. An OUTS to a port that ends the machine (isa-debug-exit, ACPI soft off, the
//! reset register) ends it as an OUT does, one element an exit there, when the element is in
//! RAM (one on a device is sent to the port and ends nothing: no kernel reads a device's
//! register to write it to isa-debug-exit).
//!
//! The ports a guest has are the device bus's (`device/mod.rs`): its console UART at
//! 0x3f8–0x3ff, and nothing elsewhere, like an empty ISA bus: reads return all ones,
//! writes vanish. An access to the disk controller from a domain that does not own it is
//! refused the same way, and the decision says whose the controller is.

use super::{Exit, undecodable};
use crate::decision::{Decision, DomainEnd, Effect, PortAccess, StringElement};
use crate::delivery::{DataAccess, Progress};
use crate::device::{acpi_pm, debug_exit, rtc};
use crate::domain::Guest;
use crate::domain::memory::{AccessFault, MemoryError, PAGE_SIZE};
use crate::domain::vcpu::InstructionAt;
use crate::emulate::merge;
use crate::image::acpi;
use crate::instruction;
use crate::vmcb::{attrib, segment};
use crate::{decide, delivery, here};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use traplab_abi::boot::CONSOLE_PORT;
use traplab_abi::event::Action;
use traplab_abi::grant_table::map_area;
use traplab_abi::svm::IoioInfo;
use traplab_abi::x86::operand_mask;
use traplab_abi::x86::{Cr0Flags, RFlags};

/// An OUT of `value` (`size` bytes) to `port` that switches the machine off instead of
/// reaching a device: QEMU's isa-debug-exit, or ACPI's soft off. Here the machine is the
/// domain, which ends. Whichever way the OUT came: an IOIO exit, or a PV kernel's OUT that
/// the hypervisor emulates after its #GP (`privileged.rs`, whose `context` goes first), or
/// an OUTS whose element in RAM carries the value (`handle`).
pub fn ends_the_machine(port: u16, size: u8, value: u32, context: &str) -> Option<Decision> {
    if port == debug_exit::PORT {
        let status = debug_exit::status(value, size);
        return Some(
            decide!(
                Action::Emulate,
                "{context}OUT {status:#x} to port {port:#x} (QEMU's isa-debug-exit): the kernel ends its machine; here that machine is the domain, which ends with status {status}"
            )
            .describe(format!("OUT {status:#x} to isa-debug-exit"))
            .ending(DomainEnd::Exited {
                status,
                reason: format!("wrote {status} to isa-debug-exit (port {port:#x})"),
            }),
        );
    }
    if acpi_pm::sleep_request(port, size, value) == Some(acpi_pm::SOFT_OFF_TYPE) {
        return Some(
            decide!(
                Action::Emulate,
                "{context}OUT to port {port:#x} (ACPI PM1 control): SLP_EN with SLP_TYP {}, the DSDT's \\_S5: the kernel switches its machine off (soft off, ACPI 6.4, 16.1.4); here that machine is the domain, which ends with status 0",
                acpi_pm::SOFT_OFF_TYPE
            )
            .describe("ACPI soft off (S5)")
            .ending(DomainEnd::Exited {
                status: 0,
                reason: "ACPI soft off (S5): SLP_EN in PM1 control".into(),
            }),
        );
    }
    if port == acpi::RESET_PORT && size == 1 && value & RESET_CPU != 0 {
        return Some(
            decide!(
                Action::Emulate,
                "{context}OUT {value:#x} to port {port:#x} (the reset control register the FADT names as RESET_REG, ACPI 6.4, 4.8.3.6): bit 2 resets the machine (PIIX4 datasheet, RC); here that machine is the domain, which ends with status 0, as QEMU's -no-reboot ends the VM"
            )
            .describe("machine reset (RESET_REG)")
            .ending(DomainEnd::Exited {
                status: 0,
                reason: format!("reset: {value:#x} written to the reset control register (port {port:#x})"),
            }),
        );
    }
    None
}

/// The reset control register's RCPU bit: a write with it set resets the CPU (PIIX4
/// datasheet, "RC—Reset Control Register"), as Linux's `acpi_reboot` does with the FADT's
/// RESET_VALUE, 0x06.
const RESET_CPU: u32 = 1 << 2;

pub fn handle(exit: &Exit, guest: &Guest, info: IoioInfo, next_rip: u64) -> Decision {
    // `lock out dx, al`: QEMU's TCG exits as for OUT (measured, IN too); a CPU raises #UD
    // before any intercept.
    if let Some(undefined) = crate::quirks::locked(guest, &exit.instruction) {
        return undefined;
    }
    let instruction = match (info.input, info.string) {
        (true, false) => "IN",
        (false, false) => "OUT",
        (true, true) => "INS",
        (false, true) => "OUTS",
    };
    if let Some(interrupt) =
        rtc_interrupt_first(exit.tsc, guest, info.port, info.size, instruction, "")
    {
        return interrupt;
    }
    let device = guest.devices.port_name(info.port);
    let direction = if info.input { "IN from" } else { "OUT to" };
    // The disk controller is its owner's: the hypervisor never does I/O there for anyone.
    // The bus answers as an empty port; the reason says why (`device/ata.rs`).
    let decision = match guest.devices.disk.refusal(guest.id, info.port, info.input) {
        Some(refusal) => decide!(
            Action::Emulate,
            "{direction} port {:#x} ({device}): {refusal}",
            info.port
        ),
        None => decide!(
            Action::Emulate,
            "{direction} port {:#x} ({device}): the hypervisor emulates every port",
            info.port
        ),
    };
    if !info.input
        && !info.string
        && let Some(end) = ends_the_machine(info.port, info.size, guest.gpr(0) as u32, "")
    {
        return end;
    }
    if info.string {
        // INS writes through ES, which no prefix overrides; OUTS reads through DS or the
        // segment its prefix names (AMD APM vol. 3, INS, OUTS). Both, and the address size,
        // decoded: EXITINFO1's SEG field comes only with decode assists, which TCG does not
        // offer, and its address-size bits TCG leaves clear (`quirks.rs`).
        let Some(string_instruction) = exit.decode_instruction(guest) else {
            return undecodable(exit, guest);
        };
        let segment = match info.input {
            true => Some(segment::ES),
            false => instruction::segment_number(string_instruction.memory_segment()),
        };
        let Some(segment) = segment else {
            return undecodable(exit, guest);
        };
        let address_bits = instruction::string_address_bits(&string_instruction);
        // An I/O breakpoint on the port stops a REP INS or OUTS after each iteration (the
        // #DB comes after the first: Intel SDM vol. 3B, 17.3.1.2), and a data breakpoint
        // after the iteration whose element it watches: one element at this exit.
        // The bytes `most` elements from RDI (INS writes them) or RSI (OUTS reads them) span.
        let index = guest.gpr(if info.input { 7 } else { 6 });
        let span = |most| {
            Steps::new(guest, address_bits, info.size, info.rep, most)
                .span(guest, segment, index, info.input)
        };
        let watched = delivery::watches_data(guest)
            && delivery::hits_data_breakpoint(guest, &[span(ELEMENTS_PER_EXIT)]);
        let breakpoint =
            info.rep && (delivery::hits_io_breakpoint(guest, info.port, info.size) || watched);
        // OUTS to a port that may end the machine: one element an exit, each looked at as
        // an OUT of its value would be (the device sees the same write either way).
        let ending = !info.input && may_end_the_machine(info.port, info.size);
        let limit = if breakpoint || ending {
            1
        } else {
            ELEMENTS_PER_EXIT
        };
        let string = string_io(guest, info, segment, address_bits, limit);
        if ending
            && string.fault.is_none()
            && let Some(value) = first_value_out(guest, info, segment, address_bits)
            && let Some(end) = ends_the_machine(info.port, info.size, value, "OUTS: ")
        {
            return end;
        }
        let Some(fault) = string.fault else {
            // RIP moves on once the last element is done; until then the instruction runs
            // again, and exits again, for the next elements.
            // Left with elements to go, the instruction is interrupted between two of them:
            // RF set, so that the CPU, running it again, does not take its instruction
            // breakpoint a second time ([`between_iterations`]).
            let decision = decision
                .with_all(string.effects)
                .with(match string.done {
                    true => Effect::Rip(next_rip),
                    false => between_iterations(),
                })
                .describe(string.what);
            // No element moved (REP with RCX = 0): the port was not accessed, no breakpoint.
            let done = match string.done {
                true => Progress::Completed,
                false => Progress::BetweenIterations,
            };
            // Watched, one element moved (above): its access.
            let memory = match watched && string.moved == 1 {
                true => alloc::vec![span(1)],
                false => Vec::new(),
            };
            return match string.moved {
                0 => decision,
                _ => delivery::with_breakpoints(
                    guest,
                    Some((info.port, info.size)),
                    &memory,
                    decision,
                    done,
                ),
            };
        };
        return string_fault(guest, info, segment, string, fault);
    }
    let (access, what) = port_access(guest, info.port, info.size, info.input);
    let decision = decision
        .with(Effect::Port(access))
        .with(Effect::Rip(next_rip));
    let decision = match what {
        Some(what) => decision.describe(what),
        // An IN says what it read once the device has answered.
        None => decision,
    };
    delivery::with_io_breakpoints(guest, info.port, info.size, decision, Progress::Completed)
}

/// An access that reaches the RTC's registers (its index port 0x70 or data port 0x71), at
/// an exit where the RTC's timer is due and its tick raises IRQ 8, which the guest would take
/// now ([`Domain::rtc_interrupts_first`](crate::domain::Domain::rtc_interrupts_first)): on a
/// PC, IRQ 8 rose at the RTC's event, before this instruction, and a CPU recognises
/// interrupts at instruction boundaries (AMD APM vol. 2, 8.5; Intel SDM vol. 3A, 6.9): it
/// enters the handler before the access. The handler selects and reads status C itself, so
/// an IN that ran first would take its flag away, and an OUT to 0x70 that ran first would
/// have its register selection overwritten by the handler's (the IN after it would read
/// status C). The hypervisor noticed the event only now. So the tick comes first, and
/// nothing else: RIP stays at the instruction, the interrupt is injected before VMRUN as any
/// pending one is (`apply::before_resume`), as at the INTR exit that notices a tick
/// (`exit/intr.rs`), and the instruction exits again after the handler's IRET.
///
/// Once: back after the handler, the access runs, whatever tick is due by then
/// ([`Vcpu::rtc_access_waited_at`](crate::domain::vcpu::Vcpu::rtc_access_waited_at)), or a
/// guest whose handler outlasts the RTC's period (a traced handler under TCG can, at 8192
/// Hz) would never get past it. It is known by its RIP and RSP: the handler calls the same
/// helper deeper on the stack, and its accesses are not the one that waits. One access waits
/// at a time: while one does, another (a handler's that turned interrupts on) goes on, after
/// the tick. With the window closed (interrupts off, an interrupt shadow) the access goes on,
/// after the tick (`apply.rs`, `rtc_due_first`). (A task the handler never returns to leaves
/// its access waiting, and no other waits after it: IRQ 8 is then taken after the accesses,
/// as before this waiting was modelled.)
/// `instruction` (IN, OUT, INS, OUTS) of `size` bytes at `port`, at TSC `now`, the exit's;
/// also a PV kernel's IN or OUT (`privileged.rs`, whose `context` goes first).
pub(super) fn rtc_interrupt_first(
    now: u64,
    guest: &Guest,
    port: u16,
    size: u8,
    instruction: &str,
    context: &str,
) -> Option<Decision> {
    if !rtc::reaches_registers(port, size)
        || guest.vcpu.rtc_access_waited_at.is_some()
        || !guest.rtc_interrupts_first(now)
    {
        return None;
    }
    Some(
        decide!(
            Action::Emulate,
            "{context}{instruction} at port {port:#x} (the RTC), but the RTC's timer was due before it, and its tick raises IRQ 8: a CPU takes an interrupt between instructions, so the guest takes the interrupt first, and the {instruction} runs after its handler"
        )
        .with(Effect::RtcTick(now))
        .with(Effect::RtcAccessWaits(InstructionAt::of(&guest.vcpu)))
        .describe(format!("{instruction} waits: the RTC's interrupt comes first")),
    )
}

/// An IN or OUT (not a string one) of `size` bytes at `port`: the access, and for an OUT
/// what the trace says of it (an IN's value is known only when the device answers).
pub(super) fn port_access(
    guest: &Guest,
    port: u16,
    size: u8,
    input: bool,
) -> (PortAccess, Option<String>) {
    if input {
        return (PortAccess::In { port, size }, None);
    }
    let value = (guest.gpr(0) & operand_mask(size)) as u32;
    // A byte the UART transmits is a character; anything else is a number.
    let what = match (port, size, value) {
        (CONSOLE_PORT, 1, 0x20..=0x7e) => {
            format!("OUT {:?} to the console UART", value as u8 as char)
        }
        _ => format!(
            "OUT {:#x} to port {:#x} ({})",
            value,
            port,
            guest.devices.describe_port(port, false)
        ),
    };
    (PortAccess::Out { port, size, value }, Some(what))
}

/// A REP string instruction stopped between two iterations, RIP still at it: RFLAGS.RF is
/// set, as a CPU sets it in the RFLAGS an interrupt or a trap between iterations pushes, so
/// that the instruction, which goes on when the guest runs again, does not hit its
/// instruction breakpoint once more (an instruction breakpoint is taken before the first
/// iteration only: Intel SDM vol. 3B, 17.3.1.1; KVM's emulator sets RF for a string
/// instruction it restarts). The CPU clears RF when the instruction completes; the
/// hypervisor does when it completes it (`delivery::after_completed`).
pub fn between_iterations() -> Effect {
    Effect::SetResumeFlag
}

/// The most elements one exit moves. A REP string instruction may be interrupted between
/// two elements, with RCX, RSI and RDI telling how far it got (AMD APM vol. 3, "REP"): a
/// long one is done in pieces, one exit each, so that no exit holds the CPU (or the
/// hypervisor's heap) for long, however large the guest makes RCX.
pub const ELEMENTS_PER_EXIT: u64 = 4096;

/// What INS/OUTS did at one exit: its effects, in words, whether the instruction is done,
/// and the fault that stopped it, if one did.
struct StringIo {
    effects: Vec<Effect>,
    what: String,
    done: bool,
    /// The element at this guest-virtual address faults: the CPU raises this.
    fault: Option<(u64, AccessFault)>,
    /// How many elements moved before the fault (all of them without one).
    moved: u64,
}

/// INS/OUTS, with or without REP: `count` elements between the port and guest memory at
/// ES:RDI (INS) or DS:RSI (OUTS), stepping by the size, backwards when RFLAGS.DF is set, at
/// most `limit` of them now ([`ELEMENTS_PER_EXIT`], or one for an I/O or a data breakpoint). Every
/// element's address is checked as the CPU checks it (canonical, translated, the
/// page-protection checks at the guest's CPL) before it moves; the first one that fails
/// stops the instruction there, with RCX and RDI or RSI telling how far it got, as a CPU
/// leaves them when a fault interrupts a REP string instruction (AMD APM vol. 3, "REP": the
/// registers reflect the iterations completed).
/// The failing element itself is not moved (for INS: the port is not read), so the guest
/// repeats it, once, after its handler has mapped the page.
fn string_io(guest: &Guest, info: IoioInfo, segment: u8, address_bits: u8, limit: u64) -> StringIo {
    let steps = Steps::new(guest, address_bits, info.size, info.rep, limit);
    // RSI (6) for OUTS, RDI (7) for INS.
    let index_register = if info.input { 7 } else { 6 };
    let mut index = guest.gpr(index_register);
    let size = info.size as usize;
    let mut fault = None;
    let mut elements = Vec::new();
    while (elements.len() as u64) < steps.count {
        let address = steps.linear(guest, segment, index);
        // INS writes memory, OUTS reads it.
        if let Some(error) = steps.segment_fault(guest, segment, index, size as u64, info.input) {
            fault = Some((address, error));
            break;
        }
        let element = match string_element(guest, address, size, info.input) {
            Ok(element) => element,
            Err(error) => {
                fault = Some((address, error));
                break;
            }
        };
        elements.push(element);
        index = index.wrapping_add(steps.step);
    }
    let moved = elements.len() as u64;
    let devices = elements
        .iter()
        .filter(|element| matches!(element, StringElement::Device { .. }))
        .count();
    let access = if info.input {
        PortAccess::InString {
            port: info.port,
            size: info.size,
            to: elements,
        }
    } else {
        PortAccess::OutString {
            port: info.port,
            size: info.size,
            from: elements,
        }
    };
    let mut effects = Vec::new();
    if moved > 0 {
        effects.extend([
            Effect::Port(access),
            steps.written(guest, index_register, index),
        ]);
    }
    let left = steps.total - moved;
    if info.rep && moved > 0 {
        effects.push(steps.written(guest, 1, left));
    }
    let mut what = format!(
        "{}{} {} element(s) of {} byte(s) {} port {:#x} ({})",
        if info.rep { "REP " } else { "" },
        if info.input { "INS" } else { "OUTS" },
        moved,
        info.size,
        if info.input { "from" } else { "to" },
        info.port,
        guest.devices.port_name(info.port)
    );
    if devices > 0 {
        what.push_str(&format!(
            ", {devices} of them {} a device's memory instead of RAM",
            if info.input { "into" } else { "from" }
        ));
    }
    if fault.is_some() {
        what.push_str(", then the next element faulted");
    } else if left > 0 {
        what.push_str(&format!(
            ", {left} left: the instruction runs again for them"
        ));
    }
    StringIo {
        effects,
        what,
        done: fault.is_none() && left == 0,
        fault,
        moved,
    }
}

/// How a string instruction steps through its elements at one exit (INS and OUTS here;
/// MOVS, STOS and LODS in `npf/string.rs`), from its address size (16, 32 or 64 bits), its
/// element's size and whether it repeats (AMD APM vol. 3, "REP").
pub(super) struct Steps {
    address_bits: u8,
    /// The elements left in all: RCX at the address size with a REP prefix, else one.
    pub total: u64,
    /// The ones this exit does: at most the caller's limit.
    pub count: u64,
    /// What RSI and RDI move by at each element: its size, backwards when RFLAGS.DF is set.
    pub step: u64,
}

impl Steps {
    pub(super) fn new(
        guest: &Guest,
        address_bits: u8,
        size: u8,
        repeats: bool,
        most: u64,
    ) -> Steps {
        let total = match repeats {
            true => guest.gpr(1) & operand_mask(address_bits / 8),
            false => 1,
        };
        let flags = RFlags::from_bits_truncate(guest.vcpu.vmcb.save.rflags);
        // With RFLAGS.TF a CPU traps after each iteration, RIP still at the instruction
        // while elements are left (Intel SDM vol. 3B, 17.3.1.4): one element an exit, and the
        // #DB after it (`delivery::after_completed`).
        let most = match flags.contains(RFlags::TRAP_FLAG) {
            true => 1,
            false => most,
        };
        let backwards = flags.contains(RFlags::DIRECTION_FLAG);
        let step = match backwards {
            true => (size as u64).wrapping_neg(),
            false => size as u64,
        };
        Steps {
            address_bits,
            total,
            count: total.min(most),
            step,
        }
    }

    /// The bytes the elements of this exit would span from `offset` in `segment` on, as one
    /// access (a write or a read): the first element's and the last's, whichever way they
    /// step. What a data breakpoint must not meet for the elements to go more than one an
    /// exit.
    pub(super) fn span(&self, guest: &Guest, segment: u8, offset: u64, write: bool) -> DataAccess {
        let size = self.step.wrapping_neg().min(self.step);
        let first = self.linear(guest, segment, offset);
        let others = size * self.count.saturating_sub(1);
        let lowest = match self.step == size {
            true => first,
            false => first.wrapping_sub(others),
        };
        DataAccess {
            linear: lowest,
            size: others + size,
            write,
        }
    }

    /// The linear address of `offset` (RSI or RDI) in `segment`: the segment's base plus the
    /// offset at the address size, wrapping at 4 GiB outside 64-bit mode.
    pub(super) fn linear(&self, guest: &Guest, segment: u8, offset: u64) -> u64 {
        let vmcb = &guest.vcpu.vmcb;
        vmcb.segment_base(segment)
            .wrapping_add(offset & operand_mask(self.address_bits / 8))
            & vmcb.linear_address_mask()
    }

    /// What the segment says of an element of `size` bytes at `offset` (RSI or RDI) in
    /// `segment`, read or `write`n, outside 64-bit mode (where only the address's canonical
    /// form is checked, by the page walk): the CPU checks the segment before it translates
    /// the address (AMD APM vol. 2, 4.8 "Segment-Limit Checks" and 4.12 "Type Checks"), and
    /// raises #GP(0), #SS(0) through SS, for an element the segment does not allow. The
    /// intercept of INS and OUTS comes before any of it, so the hypervisor checks each
    /// element as the CPU would have (MOVS, STOS and LODS: each element after the one the
    /// CPU faulted on, `npf/string.rs`).
    pub(super) fn segment_fault(
        &self,
        guest: &Guest,
        segment: u8,
        offset: u64,
        size: u64,
        write: bool,
    ) -> Option<AccessFault> {
        let vmcb = &guest.vcpu.vmcb;
        if vmcb.code_bits() == 64 {
            return None;
        }
        let register = vmcb.segment_register(segment);
        let protected = vmcb.save.cr0 & Cr0Flags::PROTECTED_MODE_ENABLE.bits() != 0;
        let virtual_8086 = vmcb.save.rflags & RFlags::VIRTUAL_8086_MODE.bits() != 0;
        let attrib = register.attrib;
        if protected && !virtual_8086 {
            // The descriptor's type (APM vol. 2, 4.7.2): bit 3 code, bit 1 writable (data) or
            // readable (code); a null selector leaves the register unusable (P clear).
            let code = attrib & 0x8 != 0;
            let writable_or_readable = attrib & 0x2 != 0;
            if attrib & 0x80 == 0 {
                return Some(AccessFault::Segment(
                    "the segment register holds a null selector",
                ));
            }
            if write && (code || !writable_or_readable) {
                return Some(AccessFault::Segment("the segment is not writable"));
            }
            if !write && code && !writable_or_readable {
                return Some(AccessFault::Segment(
                    "the segment is an execute-only code segment",
                ));
            }
        }
        let offset = offset & operand_mask(self.address_bits / 8);
        let last = offset.checked_add(size - 1);
        let limit = register.limit as u64;
        // An expand-down data segment (type bit 2) holds the offsets above its limit, up to
        // 0xffff or 0xffff_ffff as its B bit says; any other, the offsets up to its limit.
        let expand_down = protected && !virtual_8086 && attrib & 0xc == 0x4;
        let inside = match (expand_down, last) {
            (_, None) => false,
            (false, Some(last)) => last <= limit,
            (true, Some(last)) => {
                let top = match attrib & attrib::DEFAULT_32 != 0 {
                    true => 0xffff_ffff,
                    false => 0xffff,
                };
                offset > limit && last <= top
            }
        };
        (!inside).then_some(AccessFault::Segment(
            "the element lies beyond the segment's limit",
        ))
    }

    /// RCX, RSI or RDI (`register`) as the instruction writes it, at its address size: SI,
    /// DI and CX keep the registers' upper bits; ESI, EDI and ECX clear them, as every
    /// 32-bit write of a register does in 64-bit mode (AMD APM vol. 1, 3.1.2.3).
    pub(super) fn written(&self, guest: &Guest, register: u8, value: u64) -> Effect {
        let old = guest.vcpu.gpr_64(register);
        Effect::Gpr(register, merge(old, value, self.address_bits / 8))
    }
}

/// Where one element of a string instruction is, `size` bytes at guest-virtual `address`,
/// checked as the guest's CPU checks it for a read or a `write`: in RAM, or where the CPU
/// would have sent it when it is not RAM, on the device bus (unless it straddles two pages
/// where something answers on one side, which this model does not split, or lies in the
/// grant-mapping area, whose pages the hypervisor does not reach through the guest's
/// memory: those end the domain). Else the fault the CPU raises there: a page's (the other
/// page's too, for an element that straddles two), then #AC(0) for an element not aligned
/// to its size while the CPU checks alignment (`Vcpu::alignment_checks`). Which of #PF and
/// #AC comes first is the implementation's (the Intel SDM puts them in one class, vol. 3A,
/// 6.9; Bochs checks alignment first): this model takes the pages first. QEMU's TCG never
/// checks alignment; the hypervisor, which makes the access, raises the #AC. (INS and OUTS
/// here; MOVS, STOS and LODS in `npf/string.rs`.)
pub(super) fn string_element(
    guest: &Guest,
    address: u64,
    size: usize,
    write: bool,
) -> Result<StringElement, AccessFault> {
    let misaligned = guest.vcpu.alignment_checks() && !address.is_multiple_of(size as u64);
    let element = match guest.cpu_pieces(address, size, write) {
        Ok(_) => StringElement::Ram(address),
        Err(AccessFault::Memory(MemoryError::NotGuestMemory { gpa }))
            if address % PAGE_SIZE + size as u64 <= PAGE_SIZE && !map_area().contains(&gpa) =>
        {
            StringElement::Device { address, gpa }
        }
        // Across a page boundary (or in the grant-mapping area), the first page not RAM: as
        // one access where nothing answers on either side, the CPU's fault where the other
        // page does not translate, and #AC before anything this model does not do (an
        // access across a page boundary is never aligned).
        Err(error @ AccessFault::Memory(MemoryError::NotGuestMemory { .. })) => {
            match guest.on_the_empty_bus(address, size, write)? {
                Some(gpa) => StringElement::Device { address, gpa },
                None if misaligned => return Err(AccessFault::Misaligned),
                None => return Err(error),
            }
        }
        Err(error) => return Err(error),
    };
    match misaligned {
        true => Err(AccessFault::Misaligned),
        false => Ok(element),
    }
}

/// May an OUT of `size` bytes at `port` end the machine ([`ends_the_machine`]), for some
/// value? (A string OUT to such a port goes one element an exit, each looked at.)
fn may_end_the_machine(port: u16, size: u8) -> bool {
    port == debug_exit::PORT
        || port == acpi::RESET_PORT
        || acpi_pm::sleep_request(port, size, u32::MAX).is_some()
}

/// The value of the element an OUTS sends first, when it is in RAM (a device's element is
/// read only when the OUTS is applied, which ends nothing: `apply.rs`).
fn first_value_out(guest: &Guest, info: IoioInfo, segment: u8, address_bits: u8) -> Option<u32> {
    let steps = Steps::new(guest, address_bits, info.size, info.rep, 1);
    if steps.count == 0 {
        return None;
    }
    let address = steps.linear(guest, segment, guest.gpr(6));
    let mut bytes = [0u8; 4];
    let bytes = &mut bytes[..info.size as usize];
    guest.cpu_read(address, bytes).ok()?;
    Some(
        bytes
            .iter()
            .rev()
            .fold(0, |value, &byte| value << 8 | byte as u32),
    )
}

/// INS/OUTS stopped at an element the guest's CPU cannot reach: the exception the CPU
/// raises there, after the elements before it. The IOIO intercept comes before any memory
/// access, so the CPU raised nothing itself: the hypervisor, doing the access, raises what
/// the CPU would have (a synthetic event), and RIP stays at the instruction (a fault).
fn string_fault(
    guest: &Guest,
    info: IoioInfo,
    segment: u8,
    string: StringIo,
    fault: (u64, AccessFault),
) -> Decision {
    let (address, fault) = fault;
    let (instruction, access) = match info.input {
        true => ("INS", "writes to"),
        false => ("OUTS", "reads from"),
    };
    let before = string.moved;
    // Only a stack reference raises #SS: OUTS with an SS prefix.
    let Some(decision) = delivery::access_fault(
        guest,
        string.effects,
        &fault,
        segment == segment::SS,
        format_args!("{instruction} {access} {address:#x} ({before} element(s) done before it)"),
        here!(),
    ) else {
        let reason = format!(
            "{instruction} {access} {address:#x}, outside the memory the guest owns: {fault:?}"
        );
        return decide!(Action::Kill, "{reason}").killing(reason);
    };
    match before {
        0 => decision,
        _ => decision.describe(string.what),
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Effect;
    use crate::device::ata::Assignment;
    use crate::device::pc_testdev::{self, PcTestdev};
    use crate::domain::interrupts::{Tick, TimerTarget, VirtualTimer};
    use crate::testing::{self, DATA, ENTRY, Run, Test, UNMAPPED};
    use traplab_abi::exit::ExitReason;
    use traplab_abi::svm::Event;
    use traplab_abi::x86::pte;

    const OUT_DX_AL: [u8; 1] = [0xee];
    const IN_AL_DX: [u8; 1] = [0xec];

    /// EXITINFO1 of an IN or OUT of `size` bytes at `port` (AMD APM vol. 2, 15.10.2).
    fn port(port: u16, input: bool, size: u8) -> IoioInfo {
        IoioInfo {
            port,
            input,
            string: false,
            rep: false,
            size,
            address_bits: 64,
            segment: 0,
        }
    }

    /// EXITINFO1 of INS/OUTS of bytes at `port`, with or without REP.
    fn string(port: u16, input: bool, rep: bool) -> IoioInfo {
        IoioInfo {
            string: true,
            rep,
            ..self::port(port, input, 1)
        }
    }

    /// The `length`-byte instruction `bytes` at RIP exits with `info`; EXITINFO2 holds the
    /// next RIP, so no decoding is needed to skip it.
    fn io(test: &mut Test, bytes: &[u8], info: IoioInfo) -> Run {
        test.code(bytes);
        let exit = test.exit(ExitReason::Ioio {
            info,
            next_rip: ENTRY + bytes.len() as u64,
        });
        test.run(exit)
    }

    /// `OUT DX, AL` of `byte` to the console UART's transmit register, then back at ENTRY.
    fn out_byte(test: &mut Test, byte: u8) -> Run {
        test.set_gpr(0, byte as u64);
        test.set_gpr(2, 0x3f8);
        let run = io(test, &OUT_DX_AL, port(0x3f8, false, 1));
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        run
    }

    /// The next deadline of the PIT's timer, which the test armed.
    fn pit_due(test: &Test) -> u64 {
        test.domain
            .vcpu
            .interrupts
            .timers
            .pit
            .expect("the PIT's timer armed")
            .due_tsc
    }

    #[test]
    fn initialising_the_pic_keeps_a_set_timer_timer() {
        // A guest with a `set_timer` timer (its tick made pending, no device's) remaps its
        // 8259A: no device timer runs after it, and the guest's timer goes on. Before, the
        // write replaced it with the devices' none, and its ticks stopped unsaid.
        let mut test = Test::long_mode();
        let timer = VirtualTimer {
            vector: 0x40,
            period_tsc: 1_000_000,
            due_tsc: 5_000_000,
            target: TimerTarget::Pending,
        };
        test.domain.vcpu.interrupts.timers.set_timer = Some(timer);
        for (port, value) in [
            (0x20, 0x11),
            (0x21, 0x20),
            (0x21, 0x04),
            (0x21, 0x01),
            (0x21, 0xff),
        ] {
            test.out(port, value);
        }
        assert_eq!(test.domain.vcpu.interrupts.timers.set_timer, Some(timer));
    }

    #[test]
    fn an_outs_to_isa_debug_exit_ends_the_domain_as_an_out_does() {
        // `outsb` of 42 to port 0xf4: the device sees the same write as an OUT's.
        let mut test = Test::long_mode();
        test.write(DATA, &[42]);
        test.set_gpr(6, DATA);
        test.set_gpr(2, 0xf4);
        let run = io(&mut test, &[0x6e], string(0xf4, false, false));
        assert_eq!(
            testing::exited(&run.decision),
            (42, "wrote 42 to isa-debug-exit (port 0xf4)"),
            "{}",
            run.decision.why
        );
        // REP: one element an exit, each looked at; the first here ends nothing (ACPI PM1
        // control without SLP_EN), the second switches the machine off (SLP_EN with the
        // DSDT's S5 type, 0).
        let mut test = Test::long_mode();
        test.write(DATA, &[0x01, 0x00, 0x00, 0x20]);
        test.set_gpr(6, DATA);
        test.set_gpr(1, 2);
        test.set_gpr(2, 0x604);
        let info = IoioInfo {
            size: 2,
            ..string(0x604, false, true)
        };
        let run = io(&mut test, &[0x66, 0xf3, 0x6f], info);
        assert_eq!(run.decision.action, Action::Emulate, "{}", run.decision.why);
        assert!(run.decision.end.is_none());
        assert_eq!((test.gpr(1), test.gpr(6)), (1, DATA + 2));
        let run = io(&mut test, &[0x66, 0xf3, 0x6f], info);
        assert!(
            run.decision.why.contains("ACPI PM1 control"),
            "{}",
            run.decision.why
        );
        assert!(run.decision.end.is_some());
        // The reset register (0xcf9) with bit 2: a reset, which ends the domain too.
        let mut test = Test::long_mode();
        test.write(DATA, &[0x06]);
        test.set_gpr(6, DATA);
        let run = io(&mut test, &[0x6e], string(0xcf9, false, false));
        assert!(run.decision.end.is_some(), "{}", run.decision.why);
        // REP with RCX = 0 sends nothing: nothing ends, and RIP moves on.
        let mut test = Test::long_mode();
        test.write(DATA, &[42]);
        test.set_gpr(6, DATA);
        test.set_gpr(1, 0);
        let run = io(&mut test, &[0xf3, 0x6e], string(0xf4, false, true));
        assert!(run.decision.end.is_none(), "{}", run.decision.why);
        assert_eq!(test.rip(), ENTRY + 2);
        // An element the CPU cannot read: its #PF, and nothing ends.
        let mut test = Test::long_mode();
        test.gate(14, 0x20_1000);
        test.set_gpr(6, UNMAPPED);
        let run = io(&mut test, &[0x6e], string(0xf4, false, false));
        assert!(run.decision.end.is_none());
        assert_eq!(run.injected().vector, 14);
    }

    #[test]
    fn an_ins_element_from_the_empty_bus_into_an_unmapped_page_is_a_page_fault() {
        // The element's first byte is at 0xffffffff (no device there), its second on the
        // next page, which no page table maps: the CPU translates both before the access,
        // and raises #PF for the second.
        let mut test = Test::long_mode();
        test.map_devices();
        test.gate(14, 0x21_0000);
        test.set_gpr(7, 0xffff_ffff);
        let info = IoioInfo {
            size: 2,
            ..string(0x80, true, false)
        };
        let run = io(&mut test, &[0x66, 0x6d], info);
        assert_eq!(run.decision.action, Action::Reflect, "{}", run.decision.why);
        assert_eq!(run.injected().vector, 14);
        assert_eq!(test.domain.vcpu.vmcb.save.cr2, 0x1_0000_0000);
    }

    #[test]
    fn a_misaligned_ins_element_at_cpl_3_with_alignment_checks_on_is_an_alignment_check() {
        // CPL 3, CR0.AM and RFLAGS.AC: a word at an odd address is #AC(0), which the CPU
        // would raise at the access the hypervisor makes in its place. Aligned, it moves.
        // Each of the three conditions missing, the CPU checks nothing: the word moves.
        // (Linux sets RFLAGS.AC at CPL 0, with CR0.AM set, around its copies from user
        // memory: no #AC there.) On an unmapped page, the page's fault comes first (this
        // model's order, `AccessFault::Misaligned`).
        use traplab_abi::x86::{Cr0Flags, RFlags};
        let (am, ac) = (
            Cr0Flags::ALIGNMENT_MASK.bits(),
            RFlags::ALIGNMENT_CHECK.bits(),
        );
        for (at, cpl, cr0, rflags, vector) in [
            (DATA + 1, 3, am, ac, Some(17)),
            (DATA + 2, 3, am, ac, None),
            (DATA + 1, 0, am, ac, None),
            (DATA + 1, 3, 0, ac, None),
            (DATA + 1, 3, am, 0, None),
            (UNMAPPED + 1, 3, am, ac, Some(14)),
        ] {
            let mut test = Test::long_mode();
            test.gate(14, 0x20_1000);
            test.gate(17, 0x20_1000);
            let save = &mut test.domain.vcpu.vmcb.save;
            save.cpl = cpl;
            save.cr0 = save.cr0 & !am | cr0;
            save.rflags = save.rflags & !ac | rflags;
            test.set_gpr(7, at);
            test.set_gpr(2, 0x3f8);
            let info = IoioInfo {
                size: 2,
                ..string(0x3f8, true, false)
            };
            let run = io(&mut test, &[0x66, 0x6d], info);
            let case = format!("{at:#x} CPL {cpl} AM {cr0:#x} AC {rflags:#x}");
            let injected = run
                .decision
                .delivery
                .is_some()
                .then(|| run.injected().vector);
            assert_eq!(injected, vector, "{case}: {}", run.decision.why);
            match vector {
                Some(17) => {
                    assert_eq!(run.injected().error_code, Some(0), "{case}");
                    assert_eq!(test.gpr(7), at, "{case}: nothing moved");
                }
                Some(_) => {}
                None => assert_eq!(test.gpr(7), at + 2, "{case}: the word moved"),
            }
        }
    }

    #[test]
    fn an_ins_element_across_a_page_boundary_on_the_empty_bus_goes_nowhere() {
        // `insw` at RDI one byte below a page boundary where nothing answers on either side
        // (0xfed00fff): the word goes nowhere, as on a CPU. Before, the domain was killed.
        let mut test = Test::long_mode();
        test.map_devices();
        test.set_gpr(7, 0xfed0_0fff);
        let info = IoioInfo {
            size: 2,
            ..string(0x80, true, false)
        };
        let run = io(&mut test, &[0x66, 0x6d], info); // insw
        assert_eq!(run.decision.action, Action::Emulate, "{}", run.decision.why);
        assert_eq!(test.gpr(7), 0xfed0_1001);
        assert_eq!(test.rip(), ENTRY + 2);
    }

    /// What a PC kernel does for its timer: the master PIC at vector 0x20 with `mask` (OCW1),
    /// then whatever `devices` writes (COM1's registers, say), then PIT channel 0 in mode 2
    /// at 100 Hz (count 11932), which arms the guest's timer.
    fn pic_and_pit(test: &mut Test, mask: u8, devices: &[(u16, u8)]) {
        let pic = [
            (0x20, 0x11),
            (0x21, 0x20),
            (0x21, 0x04),
            (0x21, 0x01),
            (0x21, mask),
        ];
        let pit = [(0x43, 0x34), (0x40, 0x9c), (0x40, 0x2e)];
        for &(port_number, value) in pic.iter().chain(devices).chain(&pit) {
            test.out(port_number, value);
        }
    }

    /// `IN AL, DX` from `port_number`: the byte read.
    fn in_byte(test: &mut Test, port_number: u16) -> u8 {
        test.set_gpr(2, port_number as u64);
        let rip = test.domain.vcpu.vmcb.save.rip;
        io(test, &IN_AL_DX, port(port_number, true, 1));
        test.domain.vcpu.vmcb.save.rip = rip;
        test.gpr(0) as u8
    }

    #[test]
    fn the_rtc_s_periodic_interrupt_comes_on_irq_8_and_reading_c_acknowledges_it() {
        // A PC kernel's RTC: both 8259As (vectors 0x20 and 0x28, the slave on IR2), only
        // IRQ 2 open at the master and IRQ 8 at the slave; status A at 1024 Hz, as a BIOS
        // leaves it; status B's PIE on. The RTC's timer is armed for its next tick; at the
        // INTR exit that finds it due, PF is set, IRQ 8 rises, and the slave's vector is
        // injected. The handler reads status C: IRQF and PF, and the line falls, so the
        // next tick is an edge again (MC146818 datasheet, register C).
        let mut test = Test::long_mode();
        test.interrupts_on();
        test.gate(0x28, 0x20_0000);
        test.initialise_the_pics(0xfb, 0xfe);
        for (port_number, value) in [(0x70, 0x0a), (0x71, 0x26), (0x70, 0x0b)] {
            test.out(port_number, value);
        }
        assert_eq!(
            test.domain.vcpu.interrupts.timers.rtc, None,
            "nothing enabled"
        );
        let run = test.out(0x71, 0x42); // PIE, 24-hour
        let timer = test
            .domain
            .vcpu
            .interrupts
            .timers
            .rtc
            .expect("the RTC's timer");
        assert_eq!((timer.vector, timer.target), (0x28, TimerTarget::Rtc));
        assert!(
            run.emulate()
                .what
                .contains("the RTC's next interrupt event (periodic at 1024 Hz), once, in 977 µs, on IRQ 8 (vector 0x28)"),
            "{}",
            run.emulate().what
        );
        assert!(
            test.machine.calls.contains(&"quicken_timer 1025".into()),
            "{:?}",
            test.machine.calls
        );
        assert_eq!(test.domain.pending_interrupt(), None, "not before its tick");
        // The hypervisor's timer interrupts the guest at the deadline.
        for tick in 0..2 {
            let due = test
                .domain
                .vcpu
                .interrupts
                .timers
                .rtc
                .expect("armed")
                .due_tsc;
            test.machine.now.set(due);
            let run = test.run(test.exit(ExitReason::Intr));
            assert!(
                run.decision.why.contains("the RTC's timer is due"),
                "{}",
                run.decision.why
            );
            assert!(
                run.emulate()
                    .what
                    .contains("RTC: status C's PF set; the RTC raises IRQ 8: requested at the PIC"),
                "{}",
                run.emulate().what
            );
            assert_eq!(
                run.injected().vector,
                0x28,
                "tick {tick}: the slave's IRQ 0"
            );
            test.vmrun();
            let next = test.domain.vcpu.interrupts.timers.rtc.expect("armed again");
            assert!(next.due_tsc > due, "the next tick's");
            // The handler: status C, then EOI to the slave and the master.
            test.out(0x70, 0x0c);
            assert_eq!(in_byte(&mut test, 0x71), 0xc0, "IRQF and PF");
            assert_eq!(test.domain.devices.lines & (1 << 8), 0, "IRQ 8 falls");
            assert_eq!(in_byte(&mut test, 0x71), 0, "read: cleared");
            test.out(0xa0, 0x20);
            test.out(0x20, 0x20);
        }
        // Unread, status C keeps IRQ 8 high: the next tick sets PF again but makes no edge,
        // and the RTC's timer cannot wake a halted CPU.
        let due = test
            .domain
            .vcpu
            .interrupts
            .timers
            .rtc
            .expect("armed")
            .due_tsc;
        test.machine.now.set(due);
        let run = test.run(test.exit(ExitReason::Intr));
        assert_eq!(run.injected().vector, 0x28);
        test.vmrun();
        test.out(0xa0, 0x20);
        test.out(0x20, 0x20);
        let timer = test.domain.vcpu.interrupts.timers.rtc.expect("armed");
        assert!(
            test.domain
                .timer_held_back(&timer)
                .is_some_and(|why| why.contains("IRQ 8 is high already")),
        );
        test.machine.now.set(timer.due_tsc);
        let run = test.run(test.exit(ExitReason::Intr));
        assert!(
            run.emulate()
                .what
                .contains("no new flag (each was set already); IRQ 8 stays high"),
            "{}",
            run.emulate().what
        );
        assert_eq!(test.domain.pending_interrupt(), None);
        // Disabled, the timer stops.
        test.out(0x70, 0x0b);
        let run = test.out(0x71, 0x02);
        assert_eq!(test.domain.vcpu.interrupts.timers.rtc, None);
        assert!(run.emulate().what.contains("the guest's timer stops: no periodic, alarm or update-ended interrupt of the RTC's is enabled"), "{}", run.emulate().what);
    }

    #[test]
    fn a_read_of_status_c_after_the_rtc_s_event_comes_after_its_edge() {
        // The update-ended event has passed, but the hypervisor's timer has not looked yet
        // when the kernel reads status C: on an MC146818, IRQ 8 rose at the event and the
        // PIC latched it; the read finds UF and IRQF, and lowers the line. Here the RTC's
        // tick, due, comes first.
        let mut test = Test::long_mode();
        for (port_number, value) in [
            (0xa0, 0x11),
            (0xa1, 0x28),
            (0xa1, 0x02),
            (0xa1, 0x01),
            (0xa1, 0xfe),
            (0x70, 0x0a),
            (0x71, 0x20), // no periodic rate: UF alone
            (0x70, 0x0b),
            (0x71, 0x12), // UIE, 24-hour
            (0x70, 0x0c),
        ] {
            test.out(port_number, value);
        }
        let due = test
            .domain
            .vcpu
            .interrupts
            .timers
            .rtc
            .expect("armed")
            .due_tsc;
        test.machine.now.set(due);
        assert_eq!(in_byte(&mut test, 0x71), 0x90, "IRQF and UF");
        assert_eq!(
            test.domain.devices.pic.slave.requests, 0b1,
            "the edge, latched"
        );
        assert_eq!(test.domain.devices.lines & (1 << 8), 0, "and the line down");
        let timer = test.domain.vcpu.interrupts.timers.rtc.expect("armed again");
        assert_eq!(
            timer.due_tsc,
            due + 1_000_000_000,
            "the next second's update"
        );
    }

    #[test]
    fn an_irq_8_the_due_tick_raises_is_taken_before_the_in_that_reads_status_c() {
        // Interrupts on, IRQ 8 open through the slave's cascade, UIE on; the kernel has
        // selected status C. The update-ended event passes, but the hypervisor's timer has
        // not looked yet when the guest's IN from 0x71 exits. On an MC146818 IRQ 8 rose at
        // the event, and a CPU, which recognises interrupts between instructions, took it
        // before the IN: the handler reads UF and IRQF, and the IN, after its IRET, reads
        // what is left. So: the tick, IRQ 8's vector injected, the IN not run (RIP at it,
        // AL and status C untouched); it runs again after the handler.
        let mut test = Test::long_mode();
        test.interrupts_on();
        test.rtc_update_ended_due();
        test.set_gpr(0, 0x5a);
        test.set_gpr(2, 0x71);
        let run = io(&mut test, &IN_AL_DX, port(0x71, true, 1));
        assert_eq!(run.injected().vector, 0x28, "IRQ 8, before the IN");
        assert_eq!(run.applied.resume_at, Some(0x20_0000), "in its handler");
        assert_eq!(
            test.rip(),
            ENTRY,
            "the IN runs again after the handler's IRET"
        );
        assert_eq!(test.gpr(0), 0x5a, "AL untouched: the IN did not run");
        assert_eq!(
            test.domain.devices.rtc.status_c(),
            0x90,
            "IRQF and UF, for the handler"
        );
        assert_eq!(
            test.domain.devices.pic.slave.in_service, 0b1,
            "IRQ 8 in service"
        );
        assert!(
            run.decision
                .why
                .contains("the guest takes the interrupt first"),
            "{}",
            run.decision.why
        );
        test.vmrun();
        // The handler: status C, EOIs. Then its IRET, and the IN again: the flags are gone.
        assert_eq!(in_byte(&mut test, 0x71), 0x90);
        test.out(0xa0, 0x20);
        test.out(0x20, 0x20);
        assert_eq!(in_byte(&mut test, 0x71), 0, "read by the handler");
        assert_eq!(
            test.domain.pending_interrupt(),
            None,
            "no interrupt after it"
        );
    }

    /// The IRQ 8 handler a kernel runs, as the hypervisor sees it: with interrupts off (the
    /// gate cleared IF), deeper on the stack, it reads status C through the kernel's own CMOS
    /// helper, the instruction at `ENTRY` the kernel waits at, and sends both EOIs; then its
    /// IRET returns to `ENTRY`, on the kernel's stack, with interrupts on.
    fn rtc_handler_runs(test: &mut Test) {
        let save = &mut test.domain.vcpu.vmcb.save;
        let kernel_rsp = save.rsp;
        save.rip = ENTRY;
        save.rsp = kernel_rsp - 0x80;
        save.rflags &= !RFlags::INTERRUPT_FLAG.bits();
        test.out(0x70, 0x0c);
        in_byte(test, 0x71);
        test.out(0xa0, 0x20);
        test.out(0x20, 0x20);
        test.domain.vcpu.vmcb.save.rsp = kernel_rsp;
        test.interrupts_on();
    }

    #[test]
    fn an_out_that_selects_an_rtc_register_waits_for_the_irq_8_due_before_it() {
        // `out 0x70, al` (AL = 0: the seconds), then `in al, 0x71`, with the update's end
        // passed unnoticed: a CPU takes IRQ 8 before the OUT, and its handler selects status
        // C. Were the OUT to run first, the handler's selection would stand, and the kernel's
        // IN would read status C for the seconds.
        let mut test = Test::long_mode();
        test.interrupts_on();
        test.rtc_update_ended_due();
        test.set_gpr(0, 0x00);
        test.set_gpr(2, 0x70);
        let run = io(&mut test, &OUT_DX_AL, port(0x70, false, 1));
        assert_eq!(run.injected().vector, 0x28, "IRQ 8, before the OUT");
        assert_eq!(test.rip(), ENTRY, "the OUT runs after the handler");
        assert_eq!(
            test.domain.vcpu.rtc_access_waited_at.map(|at| at.rip),
            Some(ENTRY)
        );
        test.vmrun();
        rtc_handler_runs(&mut test);
        // Back from the handler: the OUT selects the seconds, and the IN reads them.
        test.set_gpr(0, 0x00);
        test.set_gpr(2, 0x70);
        let run = io(&mut test, &OUT_DX_AL, port(0x70, false, 1));
        assert!(!run.kinds().contains(&"inject"));
        assert_eq!(test.rip(), ENTRY + 1);
        assert_eq!(test.domain.vcpu.rtc_access_waited_at, None, "it ran");
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        let seconds = in_byte(&mut test, 0x71);
        assert_ne!(seconds & 0x80, 0x80, "not status C's IRQF: {seconds:#x}");
        assert_eq!(test.domain.devices.rtc.status_c(), 0, "the handler read it");
    }

    #[test]
    fn an_rtc_access_waits_for_the_rtc_s_interrupt_once_then_runs_whatever_is_due() {
        // A handler that outlasts the RTC's period (under TCG, traced, at 8192 Hz it can):
        // when the IN comes back, the next tick is due already. A CPU would make progress
        // (its handler takes a few µs); here the IN runs, after that tick, whose IRQ 8 the
        // PIC latches, to be taken after the IN.
        let mut test = Test::long_mode();
        test.interrupts_on();
        test.rtc_update_ended_due();
        test.set_gpr(2, 0x71);
        let run = io(&mut test, &IN_AL_DX, port(0x71, true, 1));
        assert_eq!(run.injected().vector, 0x28);
        test.vmrun();
        rtc_handler_runs(&mut test);
        let next = test.domain.vcpu.interrupts.timers.rtc.expect("armed again");
        test.machine.now.set(next.due_tsc);
        test.set_gpr(2, 0x71);
        let run = io(&mut test, &IN_AL_DX, port(0x71, true, 1));
        assert_eq!(test.rip(), ENTRY + 1, "the IN ran: {}", run.decision.why);
        assert_eq!(test.gpr(0) as u8, 0x90, "after the tick: IRQF and UF");
        assert_eq!(test.domain.vcpu.rtc_access_waited_at, None);
        assert_eq!(
            run.injected().vector,
            0x28,
            "the latched IRQ 8, after the IN"
        );
        test.vmrun();
        rtc_handler_runs(&mut test);
        // The next access that finds a tick due waits again.
        let next = test.domain.vcpu.interrupts.timers.rtc.expect("armed again");
        test.machine.now.set(next.due_tsc);
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        let run = io(&mut test, &IN_AL_DX, port(0x71, true, 1));
        assert_eq!(test.rip(), ENTRY, "it waits: {}", run.decision.why);
    }

    #[test]
    fn with_interrupts_off_the_due_tick_comes_first_and_the_in_reads_its_flag() {
        // The same, with RFLAGS.IF = 0: nothing interrupts the CPU before the IN, which
        // reads UF and IRQF (the tick came first, and the PIC latched IRQ 8's edge, to be
        // taken when the kernel turns interrupts on) and moves RIP on.
        let mut test = Test::long_mode();
        test.rtc_update_ended_due();
        test.set_gpr(2, 0x71);
        let run = io(&mut test, &IN_AL_DX, port(0x71, true, 1));
        assert_eq!(test.gpr(0) as u8, 0x90, "IRQF and UF");
        assert_eq!(test.rip(), ENTRY + 1);
        assert!(!run.kinds().contains(&"inject"));
        assert_eq!(
            test.domain.devices.pic.slave.requests, 0b1,
            "the edge, latched"
        );
    }

    #[test]
    fn a_pit_tick_waits_in_the_pic_s_irr_and_masking_irq_0_holds_it_back() {
        // A kernel leaving the PIC for the IO-APIC masks IRQ 0 while a tick waits (its
        // interrupts off): a real 8259A keeps the request in its IRR but no longer presents
        // it, so no interrupt comes; unmasked again, it does.
        let mut test = Test::long_mode();
        pic_and_pit(&mut test, 0xfe, &[]);
        let timer = test
            .domain
            .vcpu
            .interrupts
            .timers
            .pit
            .expect("PIT through the PIC");
        assert_eq!((timer.vector, timer.target), (0x20, TimerTarget::Irq0));
        let what = test.domain.devices.pit_tick();
        assert_eq!(
            what,
            "PIT channel 0 raises IRQ 0, latched in the PIC's IRR: the PIC presents it to the CPU"
        );
        assert_eq!(test.domain.pending_interrupt(), Some(0x20));
        let run = test.out(0x21, 0xff);
        assert_eq!(test.domain.devices.pic.master.requests, 0b1, "still in IRR");
        assert_eq!(test.domain.pending_interrupt(), None, "masked");
        // IRR holds a request already: a tick more would change nothing, so none comes.
        assert_eq!(test.domain.vcpu.interrupts.timers.pit, None);
        assert!(run.emulate().what.contains("the guest's timer stops"));
        test.out(0x21, 0xfe);
        assert_eq!(test.domain.pending_interrupt(), Some(0x20));
    }

    #[test]
    fn a_tick_while_irq_0_is_masked_is_latched_for_the_unmask() {
        // Linux's XT-PIC timer (handle_level_irq): mask IRQ 0 and EOI it, run the handler,
        // unmask. A PIT edge in between is latched in IRR, whatever the mask, and comes
        // once unmasked: a one-shot (mode 4) reprogrammed by the handler must not be lost.
        let mut test = Test::long_mode();
        pic_and_pit(&mut test, 0xfe, &[]);
        test.machine.calls.clear();
        test.out(0x21, 0xff);
        assert!(
            !test
                .machine
                .calls
                .iter()
                .any(|call| call.starts_with("quicken_timer")),
            "nothing looks for a masked edge before the unmask: {:?}",
            test.machine.calls
        );
        let timer = test
            .domain
            .vcpu
            .interrupts
            .timers
            .pit
            .expect("the next edge only");
        assert_eq!(timer.target, TimerTarget::Irq0);
        assert_eq!(timer.period_tsc, crate::domain::interrupts::ONCE);
        // The handler's next event: mode 4, 1000 PIT clocks; it passes while masked, and
        // before the hypervisor's own timer looks, the kernel unmasks. Its edge is 1002
        // clocks after the write (840 µs): the count loads on the next clock, the strobe is
        // at terminal count and OUT rises a clock after it (82C54 datasheet, mode 4).
        test.out(0x43, 0x38);
        test.out(0x40, 0xe8);
        let run = test.out(0x40, 0x03);
        assert!(
            run.emulate()
                .what
                .contains("PIT channel 0's next edge, once, in 840 µs, latched in the PIC's IRR behind IRQ 0's mask"),
            "{}",
            run.emulate().what
        );
        let due = pit_due(&test);
        test.machine.now.set(due + 1);
        let run = test.out(0x21, 0xfe);
        assert!(
            run.emulate().what.contains(
                "the guest's timer was due before this write: PIT channel 0 raises IRQ 0, latched in the PIC's IRR: the PIC presents it to the CPU"
            ),
            "{}",
            run.emulate().what
        );
        assert_eq!(
            test.domain.pending_interrupt(),
            Some(0x20),
            "unmasked: it comes"
        );
    }

    #[test]
    fn a_key_from_the_host_is_irq_4_through_the_pic_in_service_until_eoi() {
        // A kernel's serial driver: the PICs at 0x20/0x28 with only IRQ 4 open, COM1's
        // received-data interrupt enabled, OUT2 set (it gates IRQ 4 onto the bus).
        let mut test = Test::long_mode();
        test.interrupts_on();
        test.gate(0x24, 0x21_0000);
        for (port_number, value) in [
            (0x20, 0x11),
            (0x21, 0x20),
            (0x21, 0x04),
            (0x21, 0x01),
            (0x21, 0xef),
            (0x3f9, 0x01),
        ] {
            test.out(port_number, value);
        }
        assert_eq!(
            test.domain.devices.serial_input(b"k"),
            None,
            "OUT2 is clear"
        );
        let run = test.out(0x3fc, 0x0b); // MCR: DTR, RTS, OUT2
        assert!(
            run.emulate()
                .what
                .contains("COM1 raises IRQ 4: requested at the PIC"),
            "{}",
            run.emulate().what
        );
        assert_eq!(
            run.injected().vector,
            0x24,
            "the CPU takes it at once (IF = 1)"
        );
        assert_eq!(test.domain.devices.pic.master.in_service, 1 << 4);
        test.vmrun();
        // The handler reads the byte: the line drops; its EOI ends the interrupt.
        test.set_gpr(2, 0x3f8);
        let run = io(&mut test, &IN_AL_DX, port(0x3f8, true, 1));
        assert_eq!(test.gpr(0) & 0xff, b'k' as u64);
        assert!(
            run.emulate().what.contains("IRQ 4) drops"),
            "{}",
            run.emulate().what
        );
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        test.domain.devices.serial_input(b"!");
        assert_eq!(test.domain.pending_interrupt(), None, "IRQ 4 is in service");
        let run = test.out(0x20, 0x20); // EOI
        assert_eq!(
            run.emulate().what,
            "OUT 0x20 to port 0x20 (8259A interrupt controller): OCW2: end of interrupt: IRQ 4 is no longer in service"
        );
        assert_eq!(
            run.injected().vector,
            0x24,
            "the next key's, once IRQ 4 ended"
        );
    }

    #[test]
    fn out_of_a_printable_byte_to_the_uart_says_which_character() {
        let mut test = Test::long_mode();
        let run = out_byte(&mut test, b'H');
        assert_eq!(run.decision.action, Action::Emulate);
        assert_eq!(run.emulate().what, "OUT 'H' to the console UART");
        assert!(
            run.console().is_empty(),
            "no line yet: it ends at a newline"
        );
        assert!(run.changes().contains(&("rip", ENTRY, ENTRY + 1)));
    }

    #[test]
    fn the_newline_completes_a_console_line() {
        let mut test = Test::long_mode();
        out_byte(&mut test, b'H');
        out_byte(&mut test, b'i');
        let run = out_byte(&mut test, b'\n');
        assert_eq!(run.kinds(), ["decide", "console", "emulate"]);
        assert_eq!(run.console(), ["Hi"]);
        assert_eq!(run.emulate().what, "OUT 0xa to port 0x3f8 (console UART)");
    }

    #[test]
    fn in_from_the_uart_line_status_register_puts_0x60_in_al_and_keeps_the_rest_of_rax() {
        // LSR = 0x60: THRE and TEMT, the transmitter is always empty. An 8-bit destination
        // keeps RAX's other bits (AMD APM vol. 1, 3.1.2.3).
        let mut test = Test::long_mode();
        test.set_gpr(0, 0x1122_3344_5566_7788);
        test.set_gpr(2, 0x3fd);
        let run = io(&mut test, &IN_AL_DX, port(0x3fd, true, 1));
        assert_eq!(test.gpr(0), 0x1122_3344_5566_7760);
        assert_eq!(run.emulate().what, "IN 0x60 from port 0x3fd (console UART)");
        assert!(
            run.changes()
                .contains(&("rax", 0x1122_3344_5566_7788, 0x1122_3344_5566_7760))
        );
    }

    #[test]
    fn in_from_a_port_with_no_device_reads_all_ones() {
        // As on an empty ISA bus: nothing drives the data lines.
        let mut test = Test::long_mode();
        test.set_gpr(0, 0);
        let run = io(&mut test, &[0xe4, 0x80], port(0x80, true, 1)); // in al, 0x80
        assert_eq!(test.gpr(0), 0xff);
        assert_eq!(run.emulate().what, "IN 0xff from port 0x80 (no device)");
        assert_eq!(test.rip(), ENTRY + 2);
    }

    #[test]
    fn a_write_to_isa_debug_exit_ends_the_domain_with_the_byte_written() {
        // `out 0xf4, al` with AL = 3: QEMU would exit with (3 << 1) | 1 = 7; the domain
        // ends with 3, and only it.
        let mut test = Test::protected_mode();
        test.set_gpr(0, 0x1234_5603);
        let run = io(&mut test, &[0xe6, 0xf4], port(0xf4, false, 1));
        assert_eq!(
            testing::exited(&run.decision),
            (3, "wrote 3 to isa-debug-exit (port 0xf4)")
        );
        assert_eq!(run.emulate().what, "OUT 0x3 to isa-debug-exit");
        // A read is an empty port's, as QEMU's write-only device gives.
        let run = io(&mut test, &[0xe4, 0xf4], port(0xf4, true, 1));
        assert!(run.decision.end.is_none());
        assert_eq!(
            run.emulate().what,
            "IN 0xff from port 0xf4 (isa-debug-exit)"
        );
    }

    #[test]
    fn ins_beyond_es_s_limit_outside_64_bit_mode_is_a_general_protection_fault() {
        // 32-bit code, ES limited to 4 KiB: the element at EDI = DATA (1 MiB) is beyond it.
        // The CPU checks the segment before the page; the intercept came before either, so
        // the hypervisor raises the #GP(0), and the port is not read.
        let mut test = Test::protected_mode();
        test.gate(13, 0x20_d000);
        test.domain.vcpu.vmcb.save.es.limit = 0xfff;
        test.set_gpr(7, DATA);
        let info = IoioInfo {
            address_bits: 32,
            ..string(0x3f8, true, false)
        };
        let run = io(&mut test, &[0x6c], info);
        let (event, _, synthetic) = testing::injected(&run.decision);
        assert_eq!(
            (event.vector, event.error_code, synthetic),
            (13, Some(0), true)
        );
        assert!(
            run.decision.why.contains("beyond the segment's limit"),
            "{}",
            run.decision.why
        );
        assert_eq!(test.gpr(7), DATA, "no element moved");
        // The same through a read-only ES: #GP(0), not writable.
        test.domain.vcpu.vmcb.save.es.limit = u32::MAX;
        test.domain.vcpu.vmcb.save.es.attrib &= !0x2;
        let run = io(&mut test, &[0x6c], info);
        assert!(
            run.decision.why.contains("not writable"),
            "{}",
            run.decision.why
        );
    }

    #[test]
    fn outs_through_ss_beyond_its_limit_is_a_stack_fault() {
        // `outsb` with an SS prefix: beyond SS's limit, #SS(0).
        let mut test = Test::protected_mode();
        test.gate(12, 0x20_c000);
        test.domain.vcpu.vmcb.save.ss.limit = 0xfff;
        test.set_gpr(6, DATA);
        let info = IoioInfo {
            address_bits: 32,
            segment: segment::SS,
            ..string(0x3f8, false, false)
        };
        let run = io(&mut test, &[0x36, 0x6e], info);
        let (event, _, _) = testing::injected(&run.decision);
        assert_eq!((event.vector, event.error_code), (12, Some(0)));
    }

    #[test]
    fn an_out_to_a_port_of_an_io_breakpoint_is_followed_by_its_debug_trap() {
        // CR4.DE, DR0 = the UART's 0x3f8, DR7 = L0 with R/W0 = 10b (I/O), LEN0 = 1 byte: the
        // OUT is done, then #DB, DR6.B0 set, RIP after the OUT (AMD APM vol. 2, 13.1.1.5).
        let mut test = Test::long_mode();
        test.gate(1, 0x20_1000);
        let save = &mut test.domain.vcpu.vmcb.save;
        save.cr4 |= traplab_abi::x86::Cr4Flags::DEBUGGING_EXTENSIONS.bits();
        save.dr7 = 0x400 | 0b10 << 16 | 1;
        save.dr6 = 0xffff_0ff0;
        // The guest's own MOV to DR0, which reached the CPU (DR accesses are not intercepted).
        test.machine.breakpoints[0] = 0x3f8;
        let run = out_byte(&mut test, b'k');
        assert!(
            run.decision
                .effects
                .contains(&Effect::Port(PortAccess::Out {
                    port: 0x3f8,
                    size: 1,
                    value: u32::from(b'k')
                })),
            "the OUT is done first"
        );
        let (event, _, synthetic) = testing::injected(&run.decision);
        assert_eq!((event.vector, synthetic), (1, true));
        assert_eq!(test.domain.vcpu.vmcb.save.dr6, 0xffff_0ff1, "B0");
        // RF=1 when the OUT began: cleared before the #DB's frame, as after any instruction.
        let resume = RFlags::RESUME_FLAG.bits();
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        test.domain.vcpu.vmcb.save.rflags |= resume;
        out_byte(&mut test, b'k');
        assert_eq!(test.domain.vcpu.vmcb.save.rflags & resume, 0);
        // Another port: no breakpoint.
        test.set_gpr(2, 0x3f9);
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        let run = io(&mut test, &OUT_DX_AL, port(0x3f9, false, 1));
        assert!(run.decision.delivery.is_none());
        // Without CR4.DE, R/W = 10b is no I/O breakpoint.
        test.domain.vcpu.vmcb.save.cr4 &= !traplab_abi::x86::Cr4Flags::DEBUGGING_EXTENSIONS.bits();
        let run = out_byte(&mut test, b'k');
        assert!(run.decision.delivery.is_none());
    }

    #[test]
    fn icw1_clears_an_edge_that_fell_due_before_it() {
        // The tick was due but not yet noticed when the kernel starts the PIC over: ICW1
        // resets the edge sense (8259A datasheet) and clears IRR (QEMU's `pic_init_reset`),
        // so the edge from before it must not survive.
        let mut test = Test::long_mode();
        pic_and_pit(&mut test, 0xfe, &[]);
        let due = pit_due(&test);
        test.machine.now.set(due + 1);
        let run = test.out(0x20, 0x11);
        assert!(
            run.emulate().what.contains(
                "the PIT's edge due before this write is gone: ICW1 cleared the PIC's IRR"
            ),
            "{}",
            run.emulate().what
        );
        assert_eq!(test.domain.devices.pic.master.requests, 0);
    }

    #[test]
    fn a_hlt_after_the_pit_s_one_shot_has_fired_ends_the_domain() {
        // Mode 4 strobes once; its tick taken and ended, nothing can interrupt a HLT any
        // more (the hypervisor used to wait for a deadline beyond any run).
        let mut test = Test::long_mode();
        test.interrupts_on();
        test.gate(0x20, 0x20_0000);
        pic_and_pit(&mut test, 0xfe, &[]);
        for (port_number, value) in [(0x43, 0x38), (0x40, 0xe8), (0x40, 0x03)] {
            test.out(port_number, value);
        }
        let due = pit_due(&test);
        assert!(test.domain.timer_tick(due).interrupts());
        assert_eq!(test.domain.vcpu.interrupts.timers.pit, None, "over");
        assert_eq!(test.domain.devices.pic.acknowledge(), Some(0x20));
        test.out(0x20, 0x20);
        test.code(&[0xf4]);
        let decision = test.decide(test.exit(ExitReason::Hlt));
        assert_eq!(
            testing::exited(&decision),
            (0, "halted waiting for an interrupt that no device sends")
        );
    }

    #[test]
    fn the_pit_s_tick_is_irq_0_in_service_until_eoi_and_holds_back_irq_4() {
        // A PC kernel's timer handler ends its interrupt with a non-specific EOI: the 8259A
        // ends the highest-priority IRQ in service, IRQ 0 (8259A datasheet, OCW2). While the
        // handler runs, IRQ 0 in service holds back IRQ 4 (fully nested mode) and a second
        // tick waits in IRR.
        let mut test = Test::long_mode();
        test.interrupts_on();
        test.gate(0x20, 0x20_0000);
        test.gate(0x24, 0x21_0000);
        // IRQ 0 and IRQ 4 open; COM1's received-data interrupt on, and OUT2 and RTS (the
        // host sends only while the guest asks to be sent to).
        pic_and_pit(&mut test, 0xee, &[(0x3f9, 0x01), (0x3fc, 0x0a)]);
        let tick = |test: &mut Test| {
            let due = pit_due(test);
            test.machine.now.set(due);
            let run = test.run(test.exit(ExitReason::Intr));
            test.domain.vcpu.vmcb.save.rip = ENTRY;
            run
        };
        let run = tick(&mut test);
        assert!(run.decision.effects.contains(&Effect::PitTick));
        assert!(
            run.emulate()
                .what
                .contains("PIT channel 0 raises IRQ 0, latched in the PIC's IRR: the PIC presents it to the CPU"),
            "{}",
            run.emulate().what
        );
        assert_eq!(run.injected().vector, 0x20);
        assert_eq!(test.domain.devices.pic.master.in_service, 0b1, "INTA");
        test.vmrun();
        // In the handler: a key (IRQ 4) and the next tick both wait.
        test.domain.devices.serial_input(b"k");
        assert_eq!(test.domain.pending_interrupt(), None, "IRQ 0 is in service");
        let run = tick(&mut test);
        assert!(
            run.emulate().what.contains(
                "IRQ 0 is still in service (no EOI since the last tick): the request waits in IRR"
            ),
            "{}",
            run.emulate().what
        );
        assert!(!run.kinds().contains(&"inject"));
        assert_eq!(test.domain.devices.pic.master.requests, 0b1_0001);
        // The handler's EOI ends IRQ 0, not IRQ 4; the waiting tick goes first.
        let run = test.out(0x20, 0x20);
        assert_eq!(run.injected().vector, 0x20);
        assert_eq!(test.domain.devices.pic.master.in_service, 0b1);
        test.vmrun();
        let run = test.out(0x20, 0x20);
        assert_eq!(run.injected().vector, 0x24, "then the key");
        assert_eq!(test.domain.devices.pic.master.in_service, 0b1_0000);
    }

    #[test]
    fn two_ticks_the_cpu_has_not_taken_are_one_request() {
        // IRR holds one request an IRQ: with interrupts off, a second tick merges.
        let mut test = Test::long_mode();
        pic_and_pit(&mut test, 0x00, &[]);
        let tick = |test: &mut Test| {
            let due = pit_due(test);
            test.domain.timer_tick(due)
        };
        let first = tick(&mut test);
        assert!(first.interrupts(), "{first:?}");
        assert_eq!(test.domain.vcpu.interrupts.pending, None, "in the PIC");
        let Tick::Requested { presented, what } = tick(&mut test) else {
            panic!("requested at the PIC");
        };
        assert!(
            presented && what.contains("the two ticks are one"),
            "{what}"
        );
        assert_eq!(test.domain.devices.pic.acknowledge(), Some(0x20));
        assert_eq!(test.domain.pending_interrupt(), None, "one interrupt");
        // In service now: the next tick waits, and wakes no halted vCPU.
        let Tick::Requested { presented, what } = tick(&mut test) else {
            panic!("requested at the PIC");
        };
        assert!(
            !presented && what.contains("IRQ 0 is still in service"),
            "{what}"
        );
    }

    #[test]
    fn with_automatic_eoi_a_tick_is_never_in_service() {
        // ICW4 0x03: 8086 mode and AEOI, as Linux's init_8259A(1) for its virtual-wire
        // timer test: the CPU's INTA ends the interrupt, and the kernel sends no EOI.
        let mut test = Test::long_mode();
        for (port_number, value) in [(0x20, 0x11), (0x21, 0x20), (0x21, 0x04)] {
            test.out(port_number, value);
        }
        let run = test.out(0x21, 0x03);
        assert!(run.emulate().what.contains("with automatic EOI"));
        for _ in 0..2 {
            test.domain.devices.pit_tick();
            assert_eq!(test.domain.devices.pic.acknowledge(), Some(0x20));
            assert_eq!(test.domain.devices.pic.master.in_service, 0);
        }
    }

    #[test]
    fn programming_the_pic_and_the_pit_arms_the_guest_s_timer() {
        // What a PC kernel does: remap the master PIC to 0x20 (IRQ 0 unmasked by ICW1),
        // then PIT channel 0, mode 2, count 11932 (100 Hz). The last OUT arms the timer
        // the hypervisor delivers (and starts its own timer, to notice when it is due).
        let mut test = Test::protected_mode();
        let out = |test: &mut Test, port: u16, value: u8| {
            test.set_gpr(0, value as u64);
            test.set_gpr(2, port as u64);
            test.domain.vcpu.vmcb.save.rip = ENTRY;
            io(test, &OUT_DX_AL, self::port(port, false, 1))
        };
        for (port, value) in [(0x20, 0x11), (0x21, 0x20), (0x21, 0x04), (0x21, 0x01)] {
            out(&mut test, port, value);
        }
        assert_eq!(
            test.domain.vcpu.interrupts.timers.pit, None,
            "the PIT is not counting"
        );
        out(&mut test, 0x43, 0x34);
        out(&mut test, 0x40, 0x9c);
        let run = out(&mut test, 0x40, 0x2e);
        let timer = test.domain.vcpu.interrupts.timers.pit.expect("armed");
        assert_eq!(timer.vector, 0x20);
        assert_eq!(
            timer.period_tsc,
            11_932 * testing::TSC_HZ / crate::device::pit::HZ
        );
        assert!(test.machine.calls.contains(&"start_timer".to_string()));
        assert!(
            run.emulate()
                .what
                .contains("the guest's timer: PIT channel 0 every 10000 µs, IRQ 0 at vector 0x20"),
            "{}",
            run.emulate().what
        );
        // Masking IRQ 0: its next edge is latched in IRR, and after it nothing changes.
        let run = out(&mut test, 0x21, 0xff);
        assert_eq!(
            test.domain
                .vcpu
                .interrupts
                .timers
                .pit
                .map(|timer| timer.period_tsc),
            Some(crate::domain::interrupts::ONCE)
        );
        assert!(
            run.emulate()
                .what
                .contains("PIT channel 0's next edge, once"),
            "{}",
            run.emulate().what
        );
        // Mode 0, unmasked again: one interrupt, at terminal count of 1000, 1001 PIT clocks
        // after the write (the clock that loads the count does not decrement it: 82C54
        // datasheet, mode 0).
        out(&mut test, 0x21, 0xfe);
        out(&mut test, 0x43, 0x30);
        out(&mut test, 0x40, 0xe8);
        let run = out(&mut test, 0x40, 0x03);
        assert!(
            run.emulate().what.contains("PIT channel 0 once, in 839 µs"),
            "{}",
            run.emulate().what
        );
        // Reloaded before it fired: the new count's deadline, not the old one's.
        let first = pit_due(&test);
        test.machine.now.set(test.machine.now.get() + 1_000);
        out(&mut test, 0x40, 0x10);
        out(&mut test, 0x40, 0x00);
        let second = pit_due(&test);
        assert_ne!(first, second);
        // Mode 4, Linux's one-shot clock event: once too, a PIT clock after terminal count
        // (1002 clocks after the write: the load clock, 1000, the strobe's clock).
        out(&mut test, 0x43, 0x38);
        out(&mut test, 0x40, 0xe8);
        let run = out(&mut test, 0x40, 0x03);
        assert!(
            run.emulate().what.contains("PIT channel 0 once, in 840 µs"),
            "{}",
            run.emulate().what
        );
    }

    #[test]
    fn a_32_bit_in_zero_extends_into_rax() {
        // A 32-bit destination clears bits 63:32 (AMD APM vol. 1, 3.1.2.3).
        let mut test = Test::long_mode();
        test.set_gpr(0, 0xdead_beef_0000_0000);
        test.set_gpr(2, 0x80);
        io(&mut test, &[0xed], port(0x80, true, 4)); // in eax, dx
        assert_eq!(test.gpr(0), 0xffff_ffff);
    }

    #[test]
    fn a_pc_testdev_line_is_an_interrupt_and_its_data_register_reads_back() {
        // kvm-unit-tests under `-device pc-testdev` (the setting `pc-testdev`): the PICs at
        // 0x20/0x28 with only IRQ 5 open; OUT 1 to port 0x2005 raises line 5.
        let mut test = Test::long_mode();
        test.domain.devices.testdev = Some(PcTestdev::default());
        test.interrupts_on();
        test.gate(0x25, 0x21_0000);
        for (port_number, value) in [
            (0x20, 0x11),
            (0x21, 0x20),
            (0x21, 0x04),
            (0x21, 0x01),
            (0x21, 0xdf),
        ] {
            test.out(port_number, value);
        }
        let run = test.out(pc_testdev::IRQ_LINES + 5, 1);
        assert_eq!(
            run.emulate().what,
            "OUT 0x1 to port 0x2005 (pc-testdev interrupt line 5): pc-testdev raises IRQ 5: requested at the PIC"
        );
        assert_eq!(
            run.injected().vector,
            0x25,
            "the CPU takes it at once (IF = 1)"
        );
        test.vmrun();
        // `out dx, eax` then `in eax, dx` at port 0xe0.
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        test.set_gpr(0, 0xfeed_f00d);
        test.set_gpr(2, pc_testdev::DATA as u64);
        io(&mut test, &[0xef], port(pc_testdev::DATA, false, 4));
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        test.set_gpr(0, 0);
        let run = io(&mut test, &[0xed], port(pc_testdev::DATA, true, 4));
        assert_eq!(test.gpr(0), 0xfeed_f00d);
        assert_eq!(
            run.emulate().what,
            "IN 0xfeedf00d from port 0xe0 (pc-testdev data register)"
        );
    }

    #[test]
    fn out_to_a_port_with_no_device_vanishes() {
        let mut test = Test::long_mode();
        test.set_gpr(0, 1);
        let run = io(&mut test, &[0xe6, 0x80], port(0x80, false, 1)); // out 0x80, al
        assert_eq!(run.emulate().what, "OUT 0x1 to port 0x80 (no device)");
        assert!(run.console().is_empty());
    }

    #[test]
    fn the_acpi_pm_timer_reads_the_tsc_and_a_sleep_request_is_ignored_but_soft_off() {
        let mut test = Test::long_mode();
        // `in eax, dx` one second after the TSC's 0: 3,579,545 counts.
        test.machine.now.set(testing::TSC_HZ);
        test.set_gpr(2, 0x608);
        let run = io(&mut test, &[0xed], port(0x608, true, 4));
        assert_eq!(test.gpr(0), 3_579_545);
        assert_eq!(
            run.emulate().what,
            "IN 0x369e99 from port 0x608 (ACPI PM timer: 24 bits counting at 3.579545 MHz)"
        );
        // `out dx, ax`: SLP_TYP 5 with SLP_EN. The domain runs on, and the trace says why.
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        test.set_gpr(0, 0x3400);
        test.set_gpr(2, 0x604);
        let run = io(&mut test, &[0x66, 0xef], port(0x604, false, 2));
        assert!(run.decision.end.is_none());
        assert_eq!(
            run.emulate().what,
            "OUT 0x3400 to port 0x604 (ACPI PM1 control): PM1 control = 0x1401: SCI_EN stays 1 (no SMI_CMD: always in ACPI mode); SLP_EN with SLP_TYP 5: a sleep request, ignored (the DSDT defines only \\_S5, SLP_TYP 0): the domain runs on"
        );
        assert_eq!(test.domain.devices.acpi_pm.control(), 0x1401);
        // SLP_EN with SLP_TYP 0, the DSDT's \_S5, as Linux's `poweroff` writes it: the
        // machine switches off, and the domain ends with status 0.
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        test.set_gpr(0, 0x2000);
        let decision = test.decide(test.exit(ExitReason::Ioio {
            info: port(0x604, false, 2),
            next_rip: ENTRY + 2,
        }));
        assert_eq!(
            testing::exited(&decision),
            (0, "ACPI soft off (S5): SLP_EN in PM1 control")
        );
        assert!(
            decision.why.contains("the DSDT's \\_S5"),
            "{}",
            decision.why
        );
    }

    #[test]
    fn the_fadt_s_reset_value_at_its_reset_register_ends_the_domain() {
        // Linux's `reboot` writes the FADT's RESET_VALUE, 0x06, to RESET_REG, port 0xcf9
        // (`acpi_reboot`). Before, the write went nowhere, and Linux went on to the
        // keyboard controller's reset, polling an empty port a million times.
        let mut test = Test::long_mode();
        test.set_gpr(0, 0x06);
        test.set_gpr(2, 0xcf9);
        let run = io(&mut test, &[0xee], port(0xcf9, false, 1)); // out dx, al
        assert_eq!(
            testing::exited(&run.decision),
            (
                0,
                "reset: 0x6 written to the reset control register (port 0xcf9)"
            )
        );
        assert_eq!(run.emulate().what, "machine reset (RESET_REG)");
        // Without RCPU (bit 2) it resets nothing: SRST alone chooses the kind of reset.
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        test.set_gpr(0, 0x02);
        let run = io(&mut test, &[0xee], port(0xcf9, false, 1));
        assert!(run.decision.end.is_none());
    }

    /// The test's domain, d1, on a machine whose disk controller belongs to d2.
    fn beside_the_driver_domain() -> Test {
        let mut test = Test::long_mode();
        test.domain.devices.disk = Assignment::Owner(2);
        test
    }

    #[test]
    fn in_from_the_disk_controller_of_another_domain_reads_all_ones_and_names_its_owner() {
        let mut test = beside_the_driver_domain();
        test.set_gpr(0, 0x1234_5600);
        test.set_gpr(2, 0x1f7);
        let run = io(&mut test, &IN_AL_DX, port(0x1f7, true, 1));
        assert_eq!(
            run.decision.action,
            Action::Emulate,
            "refused, never killed"
        );
        assert_eq!(
            run.decision.why,
            "IN from port 0x1f7 (ATA disk controller): the controller belongs to d2, the driver domain; d1 may not reach it: reads all ones"
        );
        assert_eq!(
            test.gpr(0),
            0x1234_56ff,
            "AL is all ones, as from an empty bus"
        );
        assert_eq!(
            run.emulate().what,
            "IN 0xff from port 0x1f7 (ATA disk controller)"
        );
        assert_eq!(test.rip(), ENTRY + 1, "the guest goes on");
        assert!(run.decision.end.is_none());

        // The 16-bit data port: all ones in AX.
        let mut test = beside_the_driver_domain();
        test.set_gpr(0, 0);
        io(&mut test, &[0x66, 0xed], port(0x1f0, true, 2)); // in ax, dx
        assert_eq!(test.gpr(0), 0xffff);
    }

    #[test]
    fn out_to_the_disk_controller_of_another_domain_is_dropped_and_names_its_owner() {
        let mut test = beside_the_driver_domain();
        test.set_gpr(0, 0x02); // nIEN
        test.set_gpr(2, 0x3f6);
        let run = io(&mut test, &OUT_DX_AL, port(0x3f6, false, 1));
        assert_eq!(run.decision.action, Action::Emulate);
        assert_eq!(
            run.decision.why,
            "OUT to port 0x3f6 (ATA disk controller): the controller belongs to d2, the driver domain; d1 may not reach it: the write is dropped"
        );
        assert_eq!(
            run.emulate().what,
            "OUT 0x2 to port 0x3f6 (ATA disk controller)"
        );
        assert!(run.console().is_empty());
        assert_eq!(test.rip(), ENTRY + 1);
        // Nothing of the access stays behind: the next read is all ones again.
        test.set_gpr(2, 0x3f6);
        io(&mut test, &IN_AL_DX, port(0x3f6, true, 1));
        assert_eq!(test.gpr(0) & 0xff, 0xff);
    }

    #[test]
    fn rep_insb_of_4096_bytes_into_a_device_says_what_the_first_did_and_counts_the_rest() {
        // Into the lab device's window, where no register is: 4,096 writes that go nowhere,
        // each a device's line. The trace keeps the first lines and counts the rest, so
        // that the event still fits a ring record (8 KiB) and is not lost whole.
        let mut test = Test::long_mode();
        test.map_devices();
        test.set_gpr(7, crate::device::lab_device::BASE + 0x100);
        test.set_gpr(1, 4096);
        test.set_gpr(2, 0x80);
        let run = io(&mut test, &[0xf3, 0x6c], string(0x80, true, true)); // rep insb
        let what = &run.emulate().what;
        assert!(what.len() < 4096 + 200, "{} bytes", what.len());
        assert!(
            what.starts_with("REP INS 4096 element(s) of 1 byte(s) from port 0x80"),
            "{what}"
        );
        assert!(
            what.ends_with(" more, left out of the trace (an event's words stay under 4096 bytes)"),
            "{what}"
        );
        assert_eq!(test.gpr(1), 0);
    }

    #[test]
    fn rep_insw_from_the_disk_controller_of_another_domain_fills_the_buffer_with_ones() {
        let mut test = beside_the_driver_domain();
        test.set_gpr(7, DATA);
        test.set_gpr(1, 4);
        test.set_gpr(2, 0x1f0);
        let info = IoioInfo {
            size: 2,
            ..string(0x1f0, true, true)
        };
        let run = io(&mut test, &[0x66, 0xf3, 0x6d], info); // rep insw
        assert!(
            run.decision.why.contains("belongs to d2"),
            "{}",
            run.decision.why
        );
        assert_eq!(test.read_u64(DATA), u64::MAX);
        assert_eq!((test.gpr(1), test.gpr(7)), (0, DATA + 8));
    }

    #[test]
    fn without_a_disk_the_controller_s_ports_are_no_device() {
        let mut test = Test::long_mode();
        test.set_gpr(2, 0x1f7);
        let run = io(&mut test, &IN_AL_DX, port(0x1f7, true, 1));
        assert_eq!(
            run.decision.why,
            "IN from port 0x1f7 (no device): the hypervisor emulates every port"
        );
        assert_eq!(run.emulate().what, "IN 0xff from port 0x1f7 (no device)");
    }

    #[test]
    fn rep_outsb_writes_the_string_advances_rsi_and_clears_rcx() {
        // REP OUTSB: RCX bytes from DS:RSI, RSI stepping up (DF = 0), RCX counting down to
        // 0 (AMD APM vol. 3, OUTS and REP).
        let mut test = Test::long_mode();
        test.write(DATA, b"ok\n");
        test.set_gpr(6, DATA);
        test.set_gpr(1, 3);
        let run = io(&mut test, &[0xf3, 0x6e], string(0x3f8, false, true));
        assert_eq!(run.console(), ["ok"]);
        assert_eq!(test.gpr(6), DATA + 3);
        assert_eq!(test.gpr(1), 0);
        assert_eq!(test.rip(), ENTRY + 2);
        assert!(run.emulate().what.starts_with("REP OUTS 3 element(s)"));
    }

    #[test]
    fn a_rep_outsb_to_a_port_of_an_io_breakpoint_traps_after_each_iteration() {
        // Intel SDM vol. 3B, 17.3.1.2: a REP INS or OUTS that hits an I/O breakpoint raises
        // #DB after its first iteration. The handler returns to the instruction, whose next
        // iteration hits the port again: a #DB after each of the three bytes, the first two
        // between iterations (RIP at the OUTS, RF set in the frame), the last after the
        // instruction (RIP past it, RF clear).
        let mut test = Test::long_mode();
        test.gate(1, 0x20_1000);
        let save = &mut test.domain.vcpu.vmcb.save;
        save.cr4 |= traplab_abi::x86::Cr4Flags::DEBUGGING_EXTENSIONS.bits();
        save.dr7 = 0x400 | 0b10 << 16 | 1;
        test.machine.breakpoints[0] = 0x3f8;
        test.write(DATA, b"ok\n");
        test.set_gpr(6, DATA);
        test.set_gpr(1, 3);
        let resume = RFlags::RESUME_FLAG.bits();
        for done in 1..=3u64 {
            test.domain.vcpu.vmcb.save.dr6 = 0xffff_0ff0;
            let run = io(&mut test, &[0xf3, 0x6e], string(0x3f8, false, true));
            assert!(
                run.emulate().what.starts_with("REP OUTS 1 element(s)"),
                "{}",
                run.emulate().what
            );
            let (event, _, _) = testing::injected(&run.decision);
            assert_eq!(event.vector, 1, "#DB after iteration {done}");
            let save = &test.domain.vcpu.vmcb.save;
            assert_eq!(save.dr6, 0xffff_0ff1, "B0 after iteration {done}");
            assert_eq!((test.gpr(6), test.gpr(1)), (DATA + done, 3 - done));
            // The #DB is injected: the CPU pushes RIP and RFLAGS as the VMCB has them.
            let (rip, rf) = (test.rip(), test.domain.vcpu.vmcb.save.rflags & resume);
            match done {
                3 => assert_eq!((rip, rf), (ENTRY + 2, 0), "the instruction is over"),
                _ => assert_eq!((rip, rf), (ENTRY, resume), "between iterations"),
            }
        }
        // REP with RCX = 0 does no iteration: no port access, no #DB.
        let run = io(&mut test, &[0xf3, 0x6e], string(0x3f8, false, true));
        assert!(run.decision.delivery.is_none(), "{}", run.decision.why);
    }

    #[test]
    fn a_rep_insb_traps_after_the_iteration_that_writes_a_watched_byte() {
        // The CPU checks its data breakpoints as it writes each element; the hypervisor does
        // the INS in its place, so it checks them, one element an exit while one is enabled:
        // the #DB comes after the iteration that wrote DATA + 1 (Intel SDM vol. 3B,
        // 17.3.1.2), RIP at the instruction with RF set, two elements still to go.
        let mut test = Test::long_mode();
        test.gate(1, 0x20_1000);
        test.watch(DATA + 1, 1, false);
        test.set_gpr(7, DATA);
        test.set_gpr(1, 4);
        let first = io(&mut test, &[0xf3, 0x6c], string(0x80, true, true)); // rep insb
        assert!(
            first.decision.delivery.is_none(),
            "DATA itself is not watched"
        );
        assert_eq!((test.gpr(1), test.gpr(7)), (3, DATA + 1), "one element");
        let second = io(&mut test, &[0xf3, 0x6c], string(0x80, true, true));
        assert_eq!(second.injected().vector, 1);
        assert!(
            second.decision.why.contains("data breakpoint"),
            "{}",
            second.decision.why
        );
        assert_eq!(test.domain.vcpu.vmcb.save.dr6 & 0xf, 1, "B0");
        assert_eq!((test.gpr(1), test.gpr(7)), (2, DATA + 2));
        assert_eq!(test.rip(), ENTRY, "between iterations");
    }

    #[test]
    fn a_data_breakpoint_elsewhere_leaves_a_rep_insb_its_whole_pace() {
        // Only a watch on the bytes the elements span slows the instruction to one an exit;
        // here DR0 watches the byte just past them (and, backwards with DF, just before).
        for backwards in [false, true] {
            let mut test = Test::long_mode();
            test.gate(1, 0x20_1000);
            let (start, beside) = match backwards {
                false => (DATA, DATA + 4),
                true => (DATA + 3, DATA - 1),
            };
            if backwards {
                test.domain.vcpu.vmcb.save.rflags |= RFlags::DIRECTION_FLAG.bits();
            }
            test.watch(beside, 1, false);
            test.set_gpr(7, start);
            test.set_gpr(1, 4);
            let run = io(&mut test, &[0xf3, 0x6c], string(0x80, true, true)); // rep insb
            assert!(run.decision.delivery.is_none(), "{}", run.decision.why);
            assert_eq!(test.gpr(1), 0, "four elements at one exit (DF {backwards})");
        }
    }

    #[test]
    fn an_insb_into_a_byte_gdb_watches_stops_for_gdb_and_gives_the_guest_no_db() {
        // gdb's `watch` in slot 3 (L3, R/W3 = 01b, LEN3 = 00b): the hypervisor's write of the
        // element is one the CPU never saw, so it tells gdb (`gdb::after_handling` stops).
        let mut test = Test::long_mode();
        test.gate(1, 0x20_1000);
        test.domain.vcpu.vmcb.save.dr7 = 0x400;
        test.domain.vcpu.lend_slot(3, DATA + 1, 1 << 6 | 0b01 << 28);
        test.set_gpr(7, DATA);
        test.set_gpr(1, 4);
        let first = io(&mut test, &[0xf3, 0x6c], string(0x80, true, true)); // rep insb
        assert!(
            !first
                .decision
                .effects
                .contains(&Effect::DebuggerWatchpoint(3))
        );
        assert_eq!(test.domain.vcpu.debugger_watchpoint, None);
        let second = io(&mut test, &[0xf3, 0x6c], string(0x80, true, true));
        assert!(
            second.decision.delivery.is_none(),
            "{}",
            second.decision.why
        );
        assert!(
            second.decision.why.contains("hits gdb's watchpoint (DR3"),
            "{}",
            second.decision.why
        );
        assert_eq!(test.domain.vcpu.debugger_watchpoint, Some(3));
        assert_eq!(
            (test.gpr(1), test.gpr(7)),
            (2, DATA + 2),
            "stopped after it"
        );
    }

    #[test]
    fn gdb_s_hit_and_the_guest_s_own_come_apart() {
        // The guest watches DATA in slot 0, gdb DATA too in slot 3; the guest also enabled a
        // breakpoint in slot 3 before gdb took it (it waits for the slot). One OUTSB read of
        // DATA with both R/W = 11b: the guest's #DB says B0 alone, gdb gets its stop.
        let mut test = Test::long_mode();
        test.gate(1, 0x20_1000);
        test.watch(DATA, 1, true);
        test.domain.vcpu.vmcb.save.dr7 |= 1 << 6 | 0b11 << 28;
        test.domain.vcpu.debug_registers[3] = DATA;
        test.domain.vcpu.lend_slot(3, DATA, 1 << 6 | 0b11 << 28);
        test.write(DATA, b"x");
        test.set_gpr(6, DATA);
        let run = io(&mut test, &[0x6e], string(0x80, false, false)); // outsb
        assert_eq!(run.injected().vector, 1);
        assert_eq!(
            test.domain.vcpu.vmcb.save.dr6 & 0xf,
            0b0001,
            "the guest's B0 only"
        );
        assert_eq!(test.domain.vcpu.debugger_watchpoint, Some(3));
        // gdb gives the slot back before it stopped: no stop for a slot it no longer has.
        test.domain.vcpu.take_back_slot(3);
        assert_eq!(test.domain.vcpu.debugger_watchpoint, None);
    }

    #[test]
    fn outs_reads_memory_so_only_a_read_and_write_breakpoint_sees_it() {
        // R/W = 01b breaks on writes only; OUTS reads its element: no #DB. With 11b it does.
        for (reads_too, traps) in [(false, false), (true, true)] {
            let mut test = Test::long_mode();
            test.gate(1, 0x20_1000);
            test.watch(DATA, 4, reads_too);
            test.write(DATA, b"x");
            test.set_gpr(6, DATA);
            let run = io(&mut test, &[0x6e], string(0x80, false, false)); // outsb
            assert_eq!(
                run.decision.delivery.is_some(),
                traps,
                "{}",
                run.decision.why
            );
            assert_eq!(test.gpr(6), DATA + 1, "the element moved");
        }
    }

    #[test]
    fn a_lock_prefixed_in_or_out_is_a_ud_and_no_port_is_touched() {
        // QEMU's TCG exits for `lock out dx, al` as for OUT (measured): a CPU raises #UD
        // before any intercept (AMD APM vol. 3, 1.2.5).
        for (bytes, input) in [([0xf0, 0xee], false), ([0xf0, 0xec], true)] {
            let mut test = Test::long_mode();
            test.gate(6, 0x20_1000);
            let run = io(&mut test, &bytes, port(0x3f8, input, 1));
            assert_eq!(run.injected().vector, 6, "{bytes:02x?}");
            assert!(
                run.decision.why.contains("LOCK prefix on"),
                "{}",
                run.decision.why
            );
            assert!(run.console().is_empty(), "nothing sent");
            assert_eq!(test.rip(), ENTRY, "a fault");
        }
    }

    #[test]
    fn with_tf_an_io_breakpoint_between_iterations_reports_bs_with_b0() {
        // One #DB reports every cause it has (AMD APM vol. 2, 13.1.1.3): between two
        // iterations of a REP OUTSB that hits an I/O breakpoint with TF set, B0 for the
        // breakpoint and BS for the single step, as after the last iteration.
        let mut test = Test::long_mode();
        test.gate(1, 0x20_1000);
        let save = &mut test.domain.vcpu.vmcb.save;
        save.cr4 |= traplab_abi::x86::Cr4Flags::DEBUGGING_EXTENSIONS.bits();
        save.dr7 = 0x400 | 0b10 << 16 | 1;
        save.rflags |= RFlags::TRAP_FLAG.bits();
        test.machine.breakpoints[0] = 0x3f8;
        test.write(DATA, b"ok\n");
        test.set_gpr(6, DATA);
        test.set_gpr(1, 3);
        for done in 1..=3u64 {
            test.domain.vcpu.vmcb.save.dr6 = 0xffff_0ff0;
            let run = io(&mut test, &[0xf3, 0x6e], string(0x3f8, false, true));
            assert_eq!(run.injected().vector, 1, "#DB after iteration {done}");
            assert_eq!(
                test.domain.vcpu.vmcb.save.dr6,
                0xffff_0ff0 | 1 << 14 | 1,
                "BS and B0 after iteration {done}"
            );
        }
    }

    #[test]
    fn the_hypervisor_s_string_accesses_set_accessed_and_dirty_bits_as_the_cpu_s_walk_does() {
        // OUTS reads DATA: the walk's entries get A, the page's entry no D. INS writes it:
        // D on the page's entry (a 2 MiB page: the PD entry). A kernel that pages out clean
        // pages must see the page as written (AMD APM vol. 2, 5.4.2).
        use crate::testing::{PD, PDPT, PML4, PT};
        use traplab_abi::x86::pte::{ACCESSED, DIRTY};
        let mut test = Test::long_mode();
        let entries = [PML4, PDPT, PD];
        for entry in entries {
            let value = test.read_u64(entry);
            test.write_u64(entry, value & !(ACCESSED | DIRTY));
        }
        test.write(DATA, b"ok\n");
        test.set_gpr(6, DATA);
        test.set_gpr(1, 3);
        io(&mut test, &[0xf3, 0x6e], string(0x3f8, false, true)); // rep outsb
        let bits = |test: &Test| entries.map(|entry| test.read_u64(entry) & (ACCESSED | DIRTY));
        assert_eq!(
            bits(&test),
            [ACCESSED, ACCESSED, ACCESSED],
            "a read: A only"
        );
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        test.set_gpr(7, DATA);
        test.set_gpr(1, 2);
        io(&mut test, &[0xf3, 0x6c], string(0x80, true, true)); // rep insb
        assert_eq!(
            bits(&test),
            [ACCESSED, ACCESSED, ACCESSED | DIRTY],
            "a write: D on the page's entry"
        );
        // Through a 4 KiB page table (the first 2 MiB, read-only tables): D on the PTE,
        // only A on the directory entry that points to it.
        test.read_only_page_tables();
        let pte = PT + 8 * (DATA >> 12);
        let value = test.read_u64(pte);
        test.write_u64(pte, value & !(ACCESSED | DIRTY));
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        test.set_gpr(7, DATA);
        test.set_gpr(1, 1);
        io(&mut test, &[0xf3, 0x6c], string(0x80, true, true));
        assert_eq!(test.read_u64(pte) & (ACCESSED | DIRTY), ACCESSED | DIRTY);
        assert_eq!(
            test.read_u64(PD) & (ACCESSED | DIRTY),
            ACCESSED,
            "a directory entry is not the page's: no D"
        );
    }

    /// Map the 2 MiB from [`DEVICE_WINDOW`] (linear) to the lab device's guest-physical
    /// 2 MiB: not RAM, so the CPU's accesses there go to the device bus.
    fn map_the_lab_device(test: &mut Test) {
        use crate::testing::PD;
        use traplab_abi::x86::pte;
        let large = crate::device::lab_device::BASE & !0x1f_ffff;
        let entry = large | pte::PRESENT | pte::WRITABLE | pte::HUGE;
        test.write_u64(PD + 8 * (DEVICE_WINDOW >> 21), entry);
    }

    /// Where [`map_the_lab_device`] puts the lab device's ID register (16 MiB and up is
    /// past the test guest's RAM).
    const DEVICE_WINDOW: u64 = 0x0100_0000 + 0x10_0000;

    #[test]
    fn outs_from_a_device_s_memory_reads_the_device_as_the_cpu_would() {
        // OUTSB with RSI at the lab device's ID: the CPU reads the device (byte 0 of ID:
        // 't') and writes it to the port. It used to end the domain.
        let mut test = Test::long_mode();
        map_the_lab_device(&mut test);
        test.set_gpr(6, DEVICE_WINDOW);
        let run = io(&mut test, &[0x6e], string(0x3f8, false, false));
        assert_eq!(run.decision.action, Action::Emulate, "{}", run.decision.why);
        let what = &run.emulate().what;
        assert!(
            what.starts_with("OUTS 1 element(s) of 1 byte(s) to port 0x3f8 (console UART), 1 of them from a device's memory instead of RAM"),
            "{what}"
        );
        assert!(what.contains("lab device: read ID = 0x74"), "{what}");
        assert_eq!(test.gpr(6), DEVICE_WINDOW + 1);
        assert_eq!(test.rip(), ENTRY + 1);
        // The byte is on the console's line: a newline completes it.
        let run = out_byte(&mut test, b'\n');
        assert_eq!(run.console(), ["t"]);
    }

    #[test]
    fn ins_into_a_device_s_memory_writes_the_device() {
        // REP INSB of two bytes from a port where nothing answers (all ones) to the
        // doorbell (0x18) and the byte after it, both inside the 4-byte register: two
        // writes of one byte each, and the doorbell rings twice with 255.
        let mut test = Test::long_mode();
        map_the_lab_device(&mut test);
        test.set_gpr(7, DEVICE_WINDOW + 0x18);
        test.set_gpr(1, 2);
        let run = io(&mut test, &[0xf3, 0x6c], string(0x2f0, true, true));
        assert_eq!(run.console(), ["doorbell 255", "doorbell 255"]);
        assert_eq!((test.gpr(7), test.gpr(1)), (DEVICE_WINDOW + 0x1a, 0));
        assert_eq!(test.rip(), ENTRY + 2);
    }

    #[test]
    fn outs_with_an_fs_prefix_reads_through_fs() {
        // In 64-bit mode FS keeps its base (APM vol. 2, 4.5.3): `fs outsb` reads FS:RSI.
        let mut test = Test::long_mode();
        test.write(DATA, b"f");
        test.domain.vcpu.vmcb.save.fs.base = DATA - 0x10;
        test.domain.vcpu.vmcb.save.ds.base = 0x10_0000_0000; // ignored in 64-bit mode
        test.set_gpr(6, 0x10);
        io(&mut test, &[0x64, 0x6e], string(0x3f8, false, false));
        assert_eq!(test.gpr(6), 0x11);
        let run = out_byte(&mut test, b'\n');
        assert_eq!(run.console(), ["f"]);
    }

    #[test]
    fn ins_in_protected_mode_writes_through_es_s_base() {
        // A 32-bit kernel with a based ES: INSB writes ES:EDI, the byte the UART's line
        // status register reads (0x60: transmitter empty).
        let mut test = Test::protected_mode();
        test.domain.vcpu.vmcb.save.es.base = DATA - 0x100;
        test.set_gpr(7, 0x100);
        let info = IoioInfo {
            address_bits: 32,
            ..string(0x3fd, true, false)
        };
        io(&mut test, &[0x6c], info);
        assert_eq!(test.read_u64(DATA) & 0xff, 0x60);
        assert_eq!(test.gpr(7), 0x101);
    }

    #[test]
    fn rep_outsb_writes_esi_and_ecx_at_a_32_bit_address_size_and_si_and_cx_at_16() {
        // With the address-size prefix (0x67) in 64-bit mode the instruction counts with
        // ECX and walks ESI: writing them clears bits 63:32 (AMD APM vol. 1, 3.1.2.3). In
        // 32-bit code the prefix makes it 16 bits, CX and SI: the registers' upper bits
        // stay. The address size is the instruction's, decoded: the exit's EXITINFO1, as
        // QEMU's TCG gives it, says none (`quirks.rs`).
        for (address_bits, rsi_after, rcx_after) in [
            (32, DATA + 3, 0),
            (
                16,
                ((0xdead_0000_0000_0000 | DATA) & !0xffff) | ((DATA + 3) & 0xffff),
                0x1234_0000_0000_0000,
            ),
        ] {
            let mut test = match address_bits {
                32 => Test::long_mode(),
                _ => Test::protected_mode(),
            };
            test.write(DATA, b"ok\n");
            test.set_gpr(6, 0xdead_0000_0000_0000 | DATA);
            test.set_gpr(1, 0x1234_0000_0000_0003);
            let info = string(0x3f8, false, true);
            let run = io(&mut test, &[0x67, 0xf3, 0x6e], info);
            if address_bits == 32 {
                assert_eq!(run.console(), ["ok"]);
            }
            assert_eq!(
                test.gpr(6),
                rsi_after,
                "RSI at {address_bits}-bit addresses"
            );
            assert_eq!(
                test.gpr(1),
                rcx_after,
                "RCX at {address_bits}-bit addresses"
            );
        }
    }

    #[test]
    fn a_long_rep_outsb_is_done_in_pieces_and_the_instruction_runs_again() {
        // A guest may ask for 10,000 bytes, or 2^64 - 1: one exit moves at most
        // ELEMENTS_PER_EXIT, leaves RCX and RSI where the CPU would after an interruption,
        // and keeps RIP on the instruction, which exits again for the rest.
        let mut test = Test::long_mode();
        test.set_gpr(6, DATA);
        test.set_gpr(1, 10_000);
        let run = io(&mut test, &[0xf3, 0x6e], string(0x80, false, true));
        assert_eq!(test.gpr(1), 10_000 - ELEMENTS_PER_EXIT);
        assert_eq!(test.gpr(6), DATA + ELEMENTS_PER_EXIT);
        assert_eq!(test.rip(), ENTRY, "the instruction runs again");
        // Interrupted between two iterations: RF, so that the instruction's breakpoint is
        // not taken again when it goes on.
        let rflags = test.domain.vcpu.vmcb.save.rflags;
        assert_ne!(rflags & RFlags::RESUME_FLAG.bits(), 0, "{rflags:#x}");
        let what = &run.emulate().what;
        assert!(
            what.contains("4096 element(s)") && what.contains("5904 left"),
            "{what}"
        );
        // Its last piece completes it: RIP moves on, and RF is cleared.
        test.set_gpr(1, 3);
        let run = io(&mut test, &[0xf3, 0x6e], string(0x80, false, true));
        assert_eq!(test.rip(), ENTRY + 2);
        assert_eq!(
            test.domain.vcpu.vmcb.save.rflags & RFlags::RESUME_FLAG.bits(),
            0
        );
        assert_eq!(run.decision.action, Action::Emulate);

        let mut test = Test::long_mode();
        test.set_gpr(6, DATA);
        test.set_gpr(1, u64::MAX);
        io(&mut test, &[0xf3, 0x6e], string(0x80, false, true));
        assert_eq!(test.gpr(1), u64::MAX - ELEMENTS_PER_EXIT);
    }

    #[test]
    fn with_tf_a_rep_outsb_moves_one_element_an_exit_and_traps_after_each() {
        // A CPU single-steps a REP string iteration by iteration: the #DB after each, RIP
        // still on the instruction while elements are left, on the next one after the last.
        let mut test = Test::long_mode();
        test.gate(1, 0x21_1000);
        test.set_gpr(6, DATA);
        test.set_gpr(1, 3);
        test.domain.vcpu.vmcb.save.rflags |= RFlags::TRAP_FLAG.bits();
        let run = io(&mut test, &[0xf3, 0x6e], string(0x80, false, true));
        assert_eq!((test.gpr(1), test.gpr(6)), (2, DATA + 1), "one element");
        assert_eq!(run.injected().vector, 1);
        assert_eq!(
            test.rip(),
            ENTRY,
            "the #DB frame's RIP: the instruction, not done"
        );
        // The last element: the trap's RIP is the next instruction.
        test.set_gpr(1, 1);
        let run = io(&mut test, &[0xf3, 0x6e], string(0x80, false, true));
        assert_eq!(test.gpr(1), 0);
        assert_eq!(run.injected().vector, 1);
        assert_eq!(test.rip(), ENTRY + 2);
    }

    #[test]
    fn outsb_with_the_direction_flag_set_walks_the_string_backwards() {
        let mut test = Test::long_mode();
        test.write(DATA, b"\nko");
        test.domain.vcpu.vmcb.save.rflags |= RFlags::DIRECTION_FLAG.bits();
        test.set_gpr(6, DATA + 2);
        test.set_gpr(1, 3);
        let run = io(&mut test, &[0xf3, 0x6e], string(0x3f8, false, true));
        assert_eq!(run.console(), ["ok"]);
        assert_eq!(test.gpr(6), DATA - 1);
    }

    #[test]
    fn insb_stores_the_port_s_byte_at_rdi_and_advances_rdi() {
        let mut test = Test::long_mode();
        test.set_gpr(7, DATA);
        test.set_gpr(2, 0x3fd);
        io(&mut test, &[0x6c], string(0x3fd, true, false)); // insb
        assert_eq!(
            test.read_u64(DATA) & 0xff,
            0x60,
            "the LSR's value, in memory"
        );
        assert_eq!(test.gpr(7), DATA + 1);
    }

    /// The #PF (error code, CR2) a decision delivers, checked to be synthetic: the IOIO
    /// intercept came before the access, so the CPU itself raised nothing.
    fn page_fault(run: &Run) -> (u32, u64) {
        let (event, _, synthetic) = testing::injected(&run.decision);
        assert_eq!(event.vector, 14, "{}", run.decision.why);
        assert!(synthetic);
        let inject = run.injected();
        (
            event.error_code.expect("#PF has an error code"),
            inject.cr2.expect("#PF names CR2"),
        )
    }

    #[test]
    fn ins_to_an_unmapped_page_raises_a_page_fault_with_w_and_cr2() {
        // A CPU that cannot write INS's element raises #PF (AMD APM vol. 3, INS): not
        // present (P = 0), a write (W/R = 1), supervisor (U/S = 0); CR2 = the address. RIP
        // stays at the INS (a fault), RDI where it was.
        let mut test = Test::long_mode();
        test.gate(14, 0x21_0000);
        test.set_gpr(7, UNMAPPED);
        let run = io(&mut test, &[0x6c], string(0x3f8, true, false)); // insb
        assert_eq!(run.decision.action, Action::Reflect);
        assert_eq!(page_fault(&run), (0b010, UNMAPPED));
        assert_eq!(test.domain.vcpu.vmcb.save.cr2, UNMAPPED);
        assert_eq!((test.rip(), test.gpr(7)), (ENTRY, UNMAPPED));
        assert!(run.decision.end.is_none(), "the domain lives");
        assert!(
            run.decision
                .why
                .starts_with("INS writes to 0x40000000 (0 element(s) done before it): its page tables do not map it, so the CPU raises #PF with error code 0x2 and CR2 = 0x40000000"),
            "{}",
            run.decision.why
        );
        assert_eq!(
            run.kinds(),
            ["decide", "inject"],
            "the inject event names CR2"
        );
    }

    #[test]
    fn ins_through_an_entry_with_a_reserved_bit_is_a_page_fault_with_rsvd() {
        // The PD entry of 8–10 MiB names a page at bit 48, beyond qemu64's 40 address bits:
        // a CPU raises #PF with P, W/R and RSVD (AMD APM vol. 2, 8.4.2) and reads nothing
        // through the entry; the hypervisor, doing the access for it, does the same instead
        // of following the entry out of the guest's RAM (which would end the domain).
        let mut test = Test::long_mode();
        test.gate(14, 0x21_0000);
        let address = 0x80_0000;
        test.write_u64(
            crate::testing::PD + 4 * 8,
            (1 << 48) | address | pte::PRESENT | pte::WRITABLE | pte::HUGE,
        );
        test.set_gpr(7, address);
        let run = io(&mut test, &[0x6c], string(0x3f8, true, false)); // insb
        assert_eq!(page_fault(&run), (0b1011, address));
        assert!(
            run.decision.why.contains("sets a reserved bit"),
            "{}",
            run.decision.why
        );
        assert!(run.decision.end.is_none(), "the domain lives");
    }

    #[test]
    fn ins_at_cpl_3_sets_the_user_bit_of_the_error_code() {
        let mut test = Test::long_mode();
        test.domain.vcpu.vmcb.save.cpl = 3;
        test.set_gpr(7, UNMAPPED);
        let run = io(&mut test, &[0x6c], string(0x3f8, true, false));
        assert_eq!(page_fault(&run), (0b110, UNMAPPED));
    }

    #[test]
    fn rep_insb_into_an_unmapped_page_does_the_elements_before_it_then_faults() {
        // A fault in a REP string instruction leaves RCX and RDI as the completed
        // iterations left them (AMD APM vol. 3, REP); RIP stays, so the guest's handler maps
        // the page and the INS goes on from there. The test's RAM ends at 16 MiB.
        let end = 0x100_0000;
        let mut test = Test::long_mode();
        test.set_gpr(7, end - 2);
        test.set_gpr(1, 4);
        let run = io(&mut test, &[0xf3, 0x6c], string(0x3fd, true, true)); // rep insb
        assert_eq!(page_fault(&run), (0b010, end));
        assert_eq!((test.gpr(1), test.gpr(7)), (2, end), "two elements done");
        assert_eq!(
            test.read_u64(end - 8) >> 48,
            0x6060,
            "the LSR twice, in memory"
        );
        assert_eq!(test.rip(), ENTRY);
        assert_eq!(
            run.emulate().what,
            "REP INS 2 element(s) of 1 byte(s) from port 0x3fd (console UART), then the next element faulted"
        );
    }

    #[test]
    fn a_word_ins_across_into_an_unmapped_page_faults_at_the_page_boundary() {
        // CR2 is the first byte of the access on the page that failed.
        let end = 0x100_0000;
        let mut test = Test::long_mode();
        test.set_gpr(7, end - 1);
        let info = IoioInfo {
            size: 2,
            ..string(0x3f8, true, false)
        };
        let run = io(&mut test, &[0x66, 0x6d], info); // insw
        assert_eq!(page_fault(&run), (0b010, end));
        assert_eq!(test.gpr(7), end - 1);
    }

    #[test]
    fn ins_into_a_read_only_page_table_is_a_protection_fault_not_a_write_past_ptwr() {
        // A pinned page table is mapped read-only; with CR0.WP a supervisor write there
        // faults (AMD APM vol. 2, 5.6): P = 1, W/R = 1. Without the check, INS would write
        // an unchecked entry behind `ptwr.rs`'s back.
        let mut test = Test::long_mode();
        test.pin_page_tables();
        let pml4 = test.read_u64(crate::testing::PML4);
        test.set_gpr(7, crate::testing::PML4);
        let run = io(&mut test, &[0x6c], string(0x3f8, true, false));
        assert_eq!(page_fault(&run), (0b011, crate::testing::PML4));
        assert!(run.decision.why.contains("a read-only page"));
        assert_eq!(test.read_u64(crate::testing::PML4), pml4, "untouched");
    }

    #[test]
    fn outs_at_cpl_3_from_a_supervisor_page_is_a_protection_fault_with_u() {
        // P = 1 (present), W/R = 0 (a read), U/S = 1 (CPL 3).
        let mut test = Test::long_mode();
        test.read_only_page_tables();
        let entry = crate::testing::PT + 8 * (DATA >> 12);
        let supervisor = test.read_u64(entry) & !traplab_abi::x86::pte::USER;
        test.write_u64(entry, supervisor);
        test.domain.vcpu.vmcb.save.cpl = 3;
        test.set_gpr(6, DATA);
        let run = io(&mut test, &[0x6e], string(0x3f8, false, false)); // outsb
        assert_eq!(page_fault(&run), (0b101, DATA));
        assert!(
            run.decision.why.contains("a supervisor page"),
            "{}",
            run.decision.why
        );
    }

    #[test]
    fn outs_from_a_non_canonical_address_is_a_gp_and_changes_nothing() {
        // A non-canonical address raises #GP(0) before any page is walked (AMD APM vol. 2,
        // 5.3.1); nothing moved, so RCX and RSI stay.
        let mut test = Test::long_mode();
        test.set_gpr(6, 0x8000_0000_0000_0000);
        test.set_gpr(1, 2);
        let run = io(&mut test, &[0xf3, 0x6e], string(0x3f8, false, true));
        let (event, _, synthetic) = testing::injected(&run.decision);
        assert_eq!((event, synthetic), (Event::exception(13, 0), true));
        assert_eq!((test.rip(), test.gpr(1)), (ENTRY, 2));
        assert_eq!(run.kinds(), ["decide", "inject"]);
    }

    #[test]
    fn an_element_whose_last_byte_is_past_the_canonical_hole_is_a_gp_not_a_pf() {
        // `outsd` at 0x7fff_ffff_fffe: its first bytes are on an unmapped page, its last two
        // past the canonical hole. The CPU checks every byte's address before it walks a
        // page: #GP(0), not #PF (QEMU's TCG raises the #PF first).
        let mut test = Test::long_mode();
        test.set_gpr(6, 0x7fff_ffff_fffe);
        let info = IoioInfo {
            size: 4,
            ..string(0x3f8, false, false)
        };
        let run = io(&mut test, &[0x6f], info);
        assert_eq!(testing::injected(&run.decision).0, Event::exception(13, 0));
    }

    #[test]
    fn outs_through_ss_from_a_non_canonical_address_is_a_stack_fault() {
        // A stack reference raises #SS(0) instead (AMD APM vol. 2, 8.2.13).
        let mut test = Test::long_mode();
        test.set_gpr(6, 0x8000_0000_0000_0000);
        let run = io(&mut test, &[0x36, 0x6e], string(0x3f8, false, false)); // ss outsb
        assert_eq!(testing::injected(&run.decision).0, Event::exception(12, 0));
    }

    #[test]
    fn ins_through_page_tables_outside_the_guest_s_ram_still_kills_the_domain() {
        // The guest's PD names a page table beyond its RAM: a CPU would exit with a nested
        // page fault on the walk, which ends the domain (`npf/mod.rs`); no fault the guest
        // could handle.
        let mut test = Test::long_mode();
        test.write_u64(
            crate::testing::PD + 8 * 8,
            0x2000_0000 | traplab_abi::x86::pte::PRESENT,
        );
        test.code(&[0x6c]);
        test.set_gpr(7, 0x100_0000);
        let decision = test.decide(test.exit(ExitReason::Ioio {
            info: string(0x3f8, true, false),
            next_rip: ENTRY + 1,
        }));
        assert_eq!(decision.action, Action::Kill);
        assert!(
            testing::killed(&decision)
                .starts_with("INS writes to 0x1000000, outside the memory the guest owns"),
            "{}",
            testing::killed(&decision)
        );
    }
}
