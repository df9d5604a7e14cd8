//! MOVS, STOS and LODS that reach a device: a nested page fault in the middle of a string
//! instruction (`memcpy_toio`, `memset_io`, a copy out of a frame buffer). The hypervisor
//! does the instruction's elements itself, the device's through the device bus and RAM's
//! through the guest's page tables, and steps RSI, RDI and RCX as the CPU does.
//!
//! A REP string instruction may stop between two elements, with RCX, RSI and RDI telling
//! how far it got, and run again for the rest: that is how a CPU takes an interrupt in the
//! middle of one (AMD APM vol. 3, "REP"). The hypervisor uses it: it does at most
//! [`ELEMENTS_PER_EXIT`] elements at an exit (one while a data breakpoint watches bytes they
//! span: its #DB comes after the iteration that hit it) and leaves RIP at the instruction
//! while some are left. The CPU then moves the elements in RAM itself, and the next one on a device
//! exits again.
//!
//! Each element's address is checked as the CPU checks it (canonical, translated, allowed
//! at the guest's CPL, aligned while the CPU checks alignment: `ioio::string_element`)
//! before anything moves; the first that fails
//! stops the instruction before it. When that is the first element, the hypervisor raises
//! the fault the CPU would have; after others, the CPU meets it itself when it runs the
//! instruction again.

use super::super::ioio::{Steps, between_iterations, string_element};
use crate::decision::{Decision, Effect, MemoryString, StringElement, StringSide};
use crate::delivery::{DataAccess, Progress};
use crate::domain::Guest;
use crate::instruction;
use crate::vmcb::segment;
use crate::{decide, delivery, here};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use iced_x86::{Instruction, Mnemonic, OpKind};
use traplab_abi::event::Action;

/// The most elements one exit does. Each element on a device is a line of the trace
/// (what the device did), and a student reads them: a `rep stosd` of a kilobyte to a
/// device is 16 exits of 16 lines, not one of 256.
pub const ELEMENTS_PER_EXIT: u64 = 16;

/// RCX, RSI and RDI by their numbers (our `Vcpu::gpr` numbering).
const RCX: u8 = 1;
const RSI: u8 = 6;
const RDI: u8 = 7;

/// The string instructions that move memory and may reach a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// MOVS: from seg:RSI to ES:RDI.
    Move,
    /// STOS: from RAX to ES:RDI.
    Store,
    /// LODS: from seg:RSI to RAX.
    Load,
}

/// Which of them `instruction` is, if one. (SSE's MOVSD has the same mnemonic as the string
/// MOVSD: the operands tell them apart.)
fn kind(instruction: &Instruction) -> Option<Kind> {
    use Mnemonic::*;
    let string = matches!(
        instruction.op0_kind(),
        OpKind::MemoryESDI | OpKind::MemoryESEDI | OpKind::MemoryESRDI
    ) || matches!(
        instruction.op1_kind(),
        OpKind::MemorySegSI | OpKind::MemorySegESI | OpKind::MemorySegRSI
    );
    if !string {
        return None;
    }
    match instruction.mnemonic() {
        Movsb | Movsw | Movsd | Movsq => Some(Kind::Move),
        Stosb | Stosw | Stosd | Stosq => Some(Kind::Store),
        Lodsb | Lodsw | Lodsd | Lodsq => Some(Kind::Load),
        _ => None,
    }
}

/// The string instruction `instruction` reached the device at `gpa` (`device` names it):
/// `None` when it is not a MOVS, STOS or LODS.
pub fn handle(
    guest: &Guest,
    instruction: &Instruction,
    gpa: u64,
    device: &str,
) -> Option<Decision> {
    let kind = kind(instruction)?;
    let size = instruction.memory_size().size() as u8;
    let address_bits = instruction::string_address_bits(instruction);
    // F3 repeats; so does F2 on an instruction that compares nothing, as QEMU's TCG does.
    let repeats = instruction.has_rep_prefix() || instruction.has_repne_prefix();
    // The source is seg:RSI (DS unless a prefix says otherwise), the destination ES:RDI
    // (never another segment).
    let source_segment =
        instruction::segment_number(instruction.memory_segment()).unwrap_or(segment::DS);
    // The bytes the elements of an exit span, for the data breakpoints: MOVS and LODS read
    // seg:RSI, MOVS and STOS write ES:RDI.
    let spans = |steps: &Steps| -> Vec<DataAccess> {
        let read = steps.span(guest, source_segment, guest.gpr(RSI), false);
        let written = steps.span(guest, segment::ES, guest.gpr(RDI), true);
        match kind {
            Kind::Move => alloc::vec![read, written],
            Kind::Store => alloc::vec![written],
            Kind::Load => alloc::vec![read],
        }
    };
    // With a data breakpoint on those bytes, one element an exit: its #DB comes after the
    // iteration whose element it watches (Intel SDM vol. 3B, 17.3.1.2).
    let watched = delivery::watches_data(guest)
        && delivery::hits_data_breakpoint(
            guest,
            &spans(&Steps::new(
                guest,
                address_bits,
                size,
                repeats,
                ELEMENTS_PER_EXIT,
            )),
        );
    let most = match watched {
        true => 1,
        false => ELEMENTS_PER_EXIT,
    };
    let steps = Steps::new(guest, address_bits, size, repeats, most);
    // A side in memory, checked as the CPU checks it: the fault there, if it fails.
    let side = |through: u8, offset: u64, write: bool| {
        let address = steps.linear(guest, through, offset);
        let stack = through == segment::SS;
        if let Some(error) = steps.segment_fault(guest, through, offset, size as u64, write) {
            return Err((address, error, stack));
        }
        string_element(guest, address, size as usize, write)
            .map(StringSide::Memory)
            .map_err(|error| (address, error, stack))
    };
    let (mut source, mut destination) = (guest.gpr(RSI), guest.gpr(RDI));
    let mut pairs = Vec::new();
    let mut fault = None;
    while (pairs.len() as u64) < steps.count {
        let from = match kind {
            Kind::Store => Ok(StringSide::Accumulator),
            Kind::Move | Kind::Load => side(source_segment, source, false),
        };
        let to = match kind {
            Kind::Load => Ok(StringSide::Accumulator),
            Kind::Move | Kind::Store => side(segment::ES, destination, true),
        };
        match (from, to) {
            (Ok(from), Ok(to)) => pairs.push((from, to)),
            (Err(error), _) | (_, Err(error)) => {
                fault = Some(error);
                break;
            }
        }
        source = source.wrapping_add(steps.step);
        destination = destination.wrapping_add(steps.step);
    }
    let moved = pairs.len() as u64;
    let name = format!("{:?}", instruction.mnemonic()).to_ascii_uppercase();
    let repeated = if repeats { "REP " } else { "" };
    if let (0, Some((address, error, stack))) = (moved, &fault) {
        let decision = delivery::access_fault(
            guest,
            Vec::new(),
            error,
            *stack,
            format_args!("{repeated}{name} reaches {address:#x}"),
            here!(),
        );
        return Some(decision.unwrap_or_else(|| {
            let reason = format!(
                "{repeated}{name} reaches {address:#x}, outside the memory the guest owns: {error:?}"
            );
            decide!(Action::Kill, "{reason}").killing(reason)
        }));
    }
    let on_devices = pairs
        .iter()
        .flat_map(|(from, to)| [from, to])
        .filter(|side| matches!(side, StringSide::Memory(StringElement::Device { .. })))
        .count();
    let string = MemoryString {
        size,
        elements: pairs,
    };
    let left = steps.total - moved;
    let stepped = match (kind, repeats) {
        (Kind::Move, true) => "RSI, RDI and RCX",
        (Kind::Move, false) => "RSI and RDI",
        (Kind::Store, true) => "RDI and RCX",
        (Kind::Store, false) => "RDI",
        (Kind::Load, true) => "RSI and RCX",
        (Kind::Load, false) => "RSI",
    };
    let pace = match most {
        1 => String::from("one an exit while a data breakpoint watches them"),
        _ => format!("at most {ELEMENTS_PER_EXIT} an exit"),
    };
    let mut decision = decide!(
        Action::Emulate,
        "{repeated}{name} reaches guest-physical {gpa:#x}: not RAM but {device}, so the hypervisor does the string's elements itself, {pace}, and steps {stepped} as the CPU does"
    )
    .with(Effect::MemoryString(string));
    if kind != Kind::Store {
        decision = decision.with(steps.written(guest, RSI, source));
    }
    if kind != Kind::Load {
        decision = decision.with(steps.written(guest, RDI, destination));
    }
    if repeats {
        decision = decision.with(steps.written(guest, RCX, left));
    }
    let mut what = format!(
        "{repeated}{name}: {moved} element(s) of {size} byte(s), {on_devices} access(es) on the device bus"
    );
    if fault.is_some() {
        what.push_str(
            ", then the next element faults: the CPU raises it when it runs the instruction again",
        );
    } else if left > 0 {
        what.push_str(&format!(
            ", {left} left: the instruction runs again for them"
        ));
    }
    let done = match fault.is_none() && left == 0 {
        true => {
            decision = decision.with(Effect::Rip(guest.vcpu.rip_after(instruction.len() as u64)));
            Progress::Completed
        }
        false => {
            decision = decision.with(between_iterations());
            Progress::BetweenIterations
        }
    };
    // Watched, one element moved (above): its accesses.
    let accesses = match watched && moved == 1 {
        true => spans(&steps),
        false => Vec::new(),
    };
    Some(delivery::with_breakpoints(
        guest,
        None,
        &accesses,
        decision.describe(what),
        done,
    ))
}

#[cfg(test)]
mod tests {
    use crate::device::lab_device::BASE;
    use crate::testing::{DATA, ENTRY, PDPT, Test};
    use traplab_abi::event::Action;
    use traplab_abi::x86::pte;

    const SCRATCH: u64 = BASE + 0x08;
    const DOORBELL: u64 = BASE + 0x18;
    const DF: u64 = 1 << 10;

    /// A long-mode guest whose page tables reach the lab device.
    fn guest() -> Test {
        let mut test = Test::long_mode();
        test.map_devices();
        test
    }

    #[test]
    fn rep_stosb_to_the_doorbell_rings_it_once_an_element_and_clears_rcx() {
        let mut test = guest();
        test.set_gpr(0, 0x2a);
        test.set_gpr(1, 3);
        test.set_gpr(7, DOORBELL);
        let run = test.mmio(&[0xf3, 0xaa], DOORBELL); // rep stosb
        assert_eq!(run.decision.action, Action::Emulate);
        assert_eq!(
            run.decision.why,
            "REP STOSB reaches guest-physical 0xfeb00018: not RAM but the lab device's MMIO window, so the hypervisor does the string's elements itself, at most 16 an exit, and steps RDI and RCX as the CPU does"
        );
        // A byte string steps RDI by one: the doorbell, then the bytes after it (DOORBELL's
        // other bytes: each write of one rings it with that byte).
        assert_eq!(run.console(), ["doorbell 42", "doorbell 42", "doorbell 42"]);
        assert!(
            run.emulate().what.starts_with(
                "REP STOSB: 3 element(s) of 1 byte(s), 3 access(es) on the device bus:"
            ),
            "{}",
            run.emulate().what
        );
        assert_eq!((test.gpr(1), test.gpr(7)), (0, DOORBELL + 3));
        assert_eq!(test.rip(), ENTRY + 2);
        // The CPU's walk to the device's page sets A and D as for RAM: here the 1 GiB page's
        // entry, which maps it.
        let bits = pte::ACCESSED | pte::DIRTY;
        assert_eq!(test.read_u64(PDPT + 3 * 8) & bits, bits);
    }

    #[test]
    fn a_rep_stosb_with_a_data_breakpoint_goes_one_element_an_exit_and_traps_on_the_watched_one() {
        // DR0 watches DOORBELL + 1 for writes: one element an exit, no #DB after the first,
        // the #DB (B0) after the second, RIP at the instruction for the third.
        let mut test = guest();
        test.gate(1, 0x20_1000);
        test.watch(DOORBELL + 1, 1, false);
        test.set_gpr(0, 0x2a);
        test.set_gpr(1, 3);
        test.set_gpr(7, DOORBELL);
        let first = test.mmio(&[0xf3, 0xaa], DOORBELL);
        assert!(first.decision.delivery.is_none(), "{}", first.decision.why);
        assert_eq!((test.gpr(1), test.gpr(7)), (2, DOORBELL + 1));
        let second = test.mmio(&[0xf3, 0xaa], DOORBELL + 1);
        assert_eq!(crate::testing::injected(&second.decision).0.vector, 1);
        assert_eq!(test.domain.vcpu.vmcb.save.dr6 & 0xf, 1, "B0");
        assert_eq!((test.gpr(1), test.rip()), (1, ENTRY));
    }

    #[test]
    fn a_long_rep_movsq_from_ram_does_sixteen_elements_and_runs_again() {
        // rep movsq of 20 quadwords from RAM (DATA) to SCRATCH and on: the first lands on
        // SCRATCH, the next on COUNTER and DOORBELL, the rest where no register is (the
        // device bus all the same). The hypervisor does 16, and RIP stays for the rest.
        let mut test = guest();
        for index in 0..20u64 {
            test.write_u64(DATA + 8 * index, 0x1000 + index);
        }
        test.set_gpr(1, 20);
        test.set_gpr(6, DATA);
        test.set_gpr(7, SCRATCH);
        let run = test.mmio(&[0xf3, 0x48, 0xa5], SCRATCH); // rep movsq
        assert!(
            run.emulate().what.contains("lab device: SCRATCH = 0x1000"),
            "{}",
            run.emulate().what
        );
        assert!(
            run.emulate()
                .what
                .starts_with("REP MOVSQ: 16 element(s) of 8 byte(s), 16 access(es) on the device bus, 4 left: the instruction runs again for them"),
            "{}",
            run.emulate().what
        );
        assert_eq!(test.gpr(1), 4);
        assert_eq!(test.gpr(6), DATA + 16 * 8);
        assert_eq!(test.gpr(7), SCRATCH + 16 * 8);
        assert_eq!(test.rip(), ENTRY, "the instruction runs again for the rest");
        let resume_flag = 1 << 16;
        assert_ne!(
            test.domain.vcpu.vmcb.save.rflags & resume_flag,
            0,
            "interrupted between iterations: RF set"
        );
        test.domain.vcpu.vmcb.save.rflags &= !resume_flag;
        // Backwards (DF): LODSD from SCRATCH's upper half into EAX steps RSI down by 4.
        test.domain.vcpu.vmcb.save.rflags |= DF;
        test.set_gpr(0, u64::MAX);
        test.set_gpr(6, SCRATCH + 4);
        let run = test.mmio(&[0xad], SCRATCH + 4); // lodsd
        assert_eq!(
            run.emulate().what,
            "LODSD: 1 element(s) of 4 byte(s), 1 access(es) on the device bus: lab device: read SCRATCH = 0x0"
        );
        assert_eq!(test.gpr(0), 0, "a 32-bit write of EAX clears bits 63:32");
        assert_eq!(test.gpr(6), SCRATCH);
        assert_eq!(test.rip(), ENTRY + 1);
    }

    #[test]
    fn movs_from_the_device_into_ram_writes_what_the_device_read() {
        let mut test = guest();
        test.set_gpr(6, BASE); // ID, "trap"
        test.set_gpr(7, DATA);
        let run = test.mmio(&[0xa5], BASE); // movsd
        assert_eq!(
            run.emulate().what,
            "MOVSD: 1 element(s) of 4 byte(s), 1 access(es) on the device bus: lab device: read ID = 0x70617274"
        );
        assert_eq!(test.read_u64(DATA) & 0xffff_ffff, 0x7061_7274);
        assert_eq!((test.gpr(6), test.gpr(7)), (BASE + 4, DATA + 4));
        // Read from the device: A on its page's entry, no D.
        let device_page = test.read_u64(PDPT + 3 * 8);
        assert_eq!(device_page & (pte::ACCESSED | pte::DIRTY), pte::ACCESSED);
    }

    #[test]
    fn a_32_bit_address_size_writes_edi_and_ecx_and_repne_repeats_as_rep() {
        // `67 f2 aa`: REPNE STOSB with 32-bit addresses. EDI and ECX are written, which
        // clears bits 63:32 of RDI and RCX (a 32-bit write, AMD APM vol. 1, 3.1.2.3); the
        // address is EDI, not RDI. F2 repeats a STOS as F3 does.
        let mut test = guest();
        test.set_gpr(0, 0x2a);
        test.set_gpr(1, 0xffff_ffff_0000_0002);
        test.set_gpr(7, 0xdead_beef_0000_0000 | DOORBELL);
        let run = test.mmio(&[0x67, 0xf2, 0xaa], DOORBELL);
        assert_eq!(run.console(), ["doorbell 42", "doorbell 42"]);
        assert_eq!((test.gpr(1), test.gpr(7)), (0, DOORBELL + 2));
        assert_eq!(test.rip(), ENTRY + 3);
    }

    #[test]
    fn a_segment_prefix_moves_the_source_and_never_the_destination() {
        // `64 a4`: MOVSB from FS:RSI to ES:RDI. In 64-bit mode FS has a base, ES none.
        let mut test = guest();
        test.domain.vcpu.vmcb.save.fs.base = BASE;
        test.domain.vcpu.vmcb.save.es.base = 0x1000;
        test.set_gpr(6, 0); // FS:0 is the device's ID register
        test.set_gpr(7, DATA);
        let run = test.mmio(&[0x64, 0xa4], BASE);
        assert_eq!(
            run.emulate().what,
            "MOVSB: 1 element(s) of 1 byte(s), 1 access(es) on the device bus: lab device: read ID = 0x74"
        );
        assert_eq!(test.read_u64(DATA) & 0xff, 0x74, "'t', at DATA itself");
    }

    #[test]
    fn an_element_the_cpu_cannot_reach_first_is_its_fault_and_after_others_the_cpu_s() {
        // rep movsq from the device into a page no table maps: the first element's
        // destination faults (a synthetic #PF, reflected), nothing moves, RIP stays.
        let mut test = guest();
        test.gate(14, 0x20_c000);
        test.set_gpr(1, 2);
        test.set_gpr(6, BASE);
        test.set_gpr(7, crate::testing::UNMAPPED);
        let run = test.mmio(&[0xf3, 0x48, 0xa5], BASE); // rep movsq
        assert_eq!(run.decision.action, Action::Reflect);
        assert_eq!(test.gpr(1), 2, "nothing moved");
        // From RAM to the last quadword of the mapped 4th GiB (the empty bus), then past it
        // (unmapped): one element moves, and the CPU meets the fault when it runs again.
        let mut test = guest();
        test.set_gpr(1, 2);
        test.set_gpr(6, DATA);
        test.set_gpr(7, 0xffff_fff8); // the last quadword of the 4th GiB, then 4 GiB: unmapped
        let run = test.mmio(&[0xf3, 0x48, 0xa5], 0xffff_fff8);
        assert!(
            run.emulate().what.contains("1 element(s)")
                && run.emulate().what.contains("then the next element faults"),
            "{}",
            run.emulate().what
        );
        assert_eq!(test.gpr(1), 1);
        assert_eq!(test.rip(), ENTRY);
    }
}
