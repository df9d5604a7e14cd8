//! An access to the lab device's MMIO window, or to where no device is (above the domain's
//! RAM): emulate it.
//!
//! The access did not happen: the CPU exited before it. So the hypervisor decodes the
//! instruction (its width, its direction, its register or immediate), performs the
//! device's side of it (`device/lab_device.rs`), puts a read's value in the destination
//! register, and moves RIP past the instruction — all that a device emulator in QEMU or
//! Xen's ioreq server does for an MMIO exit. Unless the CPU would have refused the access
//! first: an operand across a page boundary whose other page does not translate (#PF, or
//! #GP/#SS), or a misaligned one at CPL 3 with alignment checks on (#AC(0), which QEMU's
//! TCG never raises): the guest gets that exception, and the device sees nothing.

use super::super::{Exit, undecodable};
use crate::decision::{Decision, Effect, MmioAccess};
use crate::delivery::{self, DataAccess, Progress};
use crate::domain::Guest;
use crate::domain::memory::AccessFault;
use crate::emulate::{self, Access};
use crate::instruction;
use crate::{decide, here};
use alloc::format;
use alloc::vec::Vec;
use traplab_abi::event::Action;
use traplab_abi::x86::GPR_NAMES;

pub fn handle(exit: &Exit, guest: &Guest, gpa: u64) -> Decision {
    let Some(instruction) = exit.decode_instruction(guest) else {
        return undecodable(exit, guest);
    };
    let device = guest.devices.mmio_name(gpa);
    if let Some(decision) = super::string::handle(guest, &instruction, gpa, device) {
        return decision;
    }
    let width = instruction.memory_size().size() as u64;
    let access =
        emulate::memory_access(guest, &instruction, gpa).filter(|_| emulate::plain(&instruction));
    let Some((gpa, access)) = access else {
        // The mnemonic alone, or this form of one the hypervisor emulates in others (a MOV
        // that loads a segment register, a bit test whose bit lies in another page).
        let mnemonic = format!("{:?}", instruction.mnemonic()).to_ascii_uppercase();
        let what = match emulate::emulates(instruction.mnemonic()) {
            true => "this form of ",
            false => "",
        };
        return decide!(
            Action::Kill,
            "an access to guest-physical {gpa:#x} ({device}) by {what}{mnemonic}, which the hypervisor does not emulate (it emulates moves, MOVS, STOS, LODS, XCHG, CMPXCHG, XADD, SETcc, BT, BTS, BTR, BTC, and ADD, ADC, SUB, SBB, AND, OR, XOR, INC, DEC, NEG, NOT, CMP and TEST, with a register or an immediate)"
        )
        .killing(format!(
            "unemulated MMIO instruction at {:#x}",
            guest.vcpu.vmcb.save.rip
        ));
    };
    // An operand that straddles a page boundary: the CPU does the bytes on each page where
    // that page is (the exit names only the page that faulted). The hypervisor does not
    // split an access between a device and what lies beside it; on the empty bus on both
    // sides every byte reads as all ones and a write goes nowhere, so the access is done as
    // one (`Domain::on_the_empty_bus`). The other page's walk is checked for the access's
    // direction, and where it fails the guest gets the CPU's fault there (a CPU translates
    // every page of an access before it makes it). (A bit test numbered by a register
    // accesses another operand than the one it names: `emulate::bit_access`.)
    let mut not_split = None;
    if let Some(linear) = instruction::memory_address(&instruction, guest)
        && !emulate::bit_test_by_register(&instruction)
        && (linear & 0xfff) + width > 0x1000
    {
        match guest.on_the_empty_bus(linear, width as usize, access.writes_memory()) {
            Ok(Some(_)) => {}
            Ok(None) => not_split = Some(linear),
            Err(fault) => {
                let stack = instruction.memory_segment() == iced_x86::Register::SS;
                let access =
                    format_args!("a {width}-byte access at {linear:#x} across a page boundary");
                // (`on_the_empty_bus` fails with a fault the guest can take, never another:
                // should it, the domain ends, nothing is done silently.)
                return delivery::access_fault(guest, Vec::new(), &fault, stack, access, here!())
                    .unwrap_or_else(|| {
                        let reason = format!(
                            "a {width}-byte access at {linear:#x} across a page boundary: {fault:?}"
                        );
                        decide!(Action::Kill, "{reason}").killing(reason)
                    });
            }
        }
    }
    // Aligned as the CPU checks it (CPL 3, CR0.AM, RFLAGS.AC): the check is on the linear
    // address, before any access, so the device sees nothing. (After the pages: this
    // model's order, `AccessFault::Misaligned`. QEMU's TCG never checks alignment: the
    // hypervisor, which makes the access, raises the #AC.)
    if guest.vcpu.alignment_checks()
        && let Some(linear) = emulate::accessed_linear(guest, &instruction)
        && !linear.is_multiple_of(width.max(1))
    {
        let access = format_args!("a {width}-byte access at {linear:#x}");
        if let Some(fault) = delivery::access_fault(
            guest,
            Vec::new(),
            &AccessFault::Misaligned,
            false,
            access,
            here!(),
        ) {
            return fault;
        }
    }
    if let Some(linear) = not_split {
        return decide!(
            Action::Kill,
            "a {width}-byte access at {linear:#x} crosses a page boundary, and one of its pages is guest-physical {gpa:#x} ({device}): the CPU would do the bytes on each page where that page is; the hypervisor does not split an access between a device and what lies beside it"
        )
        .killing(format!(
            "an MMIO access across a page boundary at {:#x}",
            guest.vcpu.vmcb.save.rip
        ));
    }
    let next = guest.vcpu.rip_after(instruction.len() as u64);
    // A register's name for the reason: `ah` or `ecx` as the instruction wrote it would be
    // longer to find than the register it is part of.
    let name = |register: u8| GPR_NAMES[(register & 15) as usize];
    // The device says what it did when the access is applied (`device/mod.rs`).
    let decision = match access {
        Access::Read { width, .. } => decide!(
            Action::Emulate,
            "a {width}-byte read of guest-physical {gpa:#x}: not RAM but {device}, emulated by the hypervisor"
        ),
        Access::Write { width, value } => decide!(
            Action::Emulate,
            "a {width}-byte write of {value:#x} to guest-physical {gpa:#x}: not RAM but {device}, emulated by the hypervisor"
        ),
        Access::Arithmetic {
            width,
            operation,
            operand,
            into,
        } => {
            let operation_name = operation.name();
            let steps = match into {
                _ if !operation.writes_result() => "a read, and the flags",
                None => "a read, then the result written back, and the flags",
                Some(_) => "a read, the result into the register, and the flags",
            };
            match (operation.unary(), into) {
                _ if operation.tests_a_bit() => decide!(
                    Action::Emulate,
                    "a {width}-byte {operation_name} of bit {operand} of guest-physical {gpa:#x}: not RAM but {device}, emulated by the hypervisor ({steps}: CF is the bit)"
                ),
                (true, _) => decide!(
                    Action::Emulate,
                    "a {width}-byte {operation_name} of guest-physical {gpa:#x}: not RAM but {device}, emulated by the hypervisor ({steps})"
                ),
                (false, None) => decide!(
                    Action::Emulate,
                    "a {width}-byte {operation_name} of guest-physical {gpa:#x} with {operand:#x}: not RAM but {device}, emulated by the hypervisor ({steps})"
                ),
                (false, Some(register)) => decide!(
                    Action::Emulate,
                    "a {width}-byte {operation_name} of {} with guest-physical {gpa:#x}: not RAM but {device}, emulated by the hypervisor ({steps})",
                    name(register.register)
                ),
            }
        }
        Access::Exchange {
            width,
            register,
            value,
        } => decide!(
            Action::Emulate,
            "a {width}-byte XCHG of guest-physical {gpa:#x} with {} ({value:#x}): not RAM but {device}, emulated by the hypervisor (a read, then a write, and the register gets what was read)",
            name(register.register)
        ),
        Access::CompareExchange {
            width,
            accumulator,
            source,
        } => decide!(
            Action::Emulate,
            "a {width}-byte CMPXCHG of guest-physical {gpa:#x}, {accumulator:#x} expected, {source:#x} to write: not RAM but {device}, emulated by the hypervisor (a read, the flags of a compare with rax, then a write: the new value if equal, else what was read, into rax too)"
        ),
        Access::ExchangeAdd {
            width,
            register,
            value,
        } => decide!(
            Action::Emulate,
            "a {width}-byte XADD of guest-physical {gpa:#x} with {} ({value:#x}): not RAM but {device}, emulated by the hypervisor (a read, the sum written back, and the flags; the register gets what was read)",
            name(register.register)
        ),
    };
    // A data breakpoint on the operand: the CPU never made this access, the hypervisor did
    // (`delivery::with_breakpoints`). A read-modify-write is a write to it.
    let writes = access.writes_memory();
    let memory = emulate::accessed_linear(guest, &instruction).map(|linear| DataAccess {
        linear,
        size: width,
        write: writes,
    });
    let decision = decision
        .with(Effect::Mmio(MmioAccess { gpa, access }))
        .with(Effect::Rip(next));
    delivery::with_breakpoints(
        guest,
        None,
        memory.as_slice(),
        decision,
        Progress::Completed,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::lab_device::BASE;
    use crate::testing::{self, ENTRY, Run, Test};
    use traplab_abi::exit::ExitReason;
    use traplab_abi::svm::NpfInfo;

    const ID: u64 = BASE;
    const DOORBELL: u64 = BASE + 0x18;

    #[test]
    fn a_write_to_a_watched_device_register_traps_after_the_instruction() {
        // `mov [rax], ecx` to SCRATCH with DR0 watching SCRATCH for writes: the CPU exited
        // before the access and never checked the breakpoint; the hypervisor, which does
        // the write, raises the #DB trap after it (AMD APM vol. 2, 13.1.1.5), RIP past it.
        let scratch = BASE + 0x08;
        let mut test = Test::long_mode();
        test.gate(1, 0x20_1000);
        test.watch(scratch, 4, false);
        test.set_gpr(0, scratch);
        test.set_gpr(1, 40);
        let run = test.mmio(&[0x89, 0x08], scratch);
        assert_eq!(testing::injected(&run.decision).0.vector, 1);
        assert_eq!(test.domain.vcpu.vmcb.save.dr6 & 0xf, 1, "B0");
        assert_eq!(test.rip(), ENTRY + 2, "a trap: after the MOV");
        // A read of it does not: R/W0 = 01b watches writes only.
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        let run = test.mmio(&[0x8b, 0x10], scratch); // mov edx, [rax]
        assert!(run.decision.delivery.is_none(), "{}", run.decision.why);
        assert_eq!(test.gpr(2), 40);
    }

    #[test]
    fn a_bit_test_by_register_is_watched_where_its_bit_lies() {
        // `bts dword [rax], ecx` with ECX = 36: the operand that holds bit 36 is the dword
        // after SCRATCH (AMD APM vol. 3, BTS), which is what a data breakpoint sees written.
        let scratch = BASE + 0x08;
        for (watched, traps) in [(scratch + 4, true), (scratch, false)] {
            let mut test = Test::long_mode();
            test.gate(1, 0x20_1000);
            test.watch(watched, 1, false);
            test.set_gpr(0, scratch);
            test.set_gpr(1, 36);
            let run = test.mmio(&[0x0f, 0xab, 0x08], scratch + 4);
            assert_ne!(run.decision.action, Action::Kill, "{}", run.decision.why);
            assert_eq!(
                run.decision.delivery.is_some(),
                traps,
                "DR0 at {watched:#x}: {}",
                run.decision.why
            );
        }
    }

    #[test]
    fn a_rep_prefix_on_a_mov_or_an_add_is_ignored_as_the_cpu_ignores_it() {
        // `rep mov [rax], ecx` and `repne add [rax], ecx` to SCRATCH: the prefix means
        // nothing on them (XRELEASE/XACQUIRE hints without HLE).
        let scratch = BASE + 0x08;
        let mut test = Test::long_mode();
        test.set_gpr(0, scratch);
        test.set_gpr(1, 40);
        let run = test.mmio(&[0xf3, 0x89, 0x08], scratch);
        assert_eq!(run.decision.action, Action::Emulate, "{}", run.decision.why);
        assert_eq!(test.rip(), ENTRY + 3);
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        test.set_gpr(1, 2);
        test.mmio(&[0xf2, 0x01, 0x08], scratch);
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        test.mmio(&[0x8b, 0x10], scratch); // mov edx, [rax]
        assert_eq!(test.gpr(2), 42);
    }

    #[test]
    fn an_access_across_a_page_boundary_on_the_empty_bus_reads_all_ones() {
        // `mov rax, [rbx]` 4 bytes below a page boundary where no device is on either side
        // (0xfed00000, where a PC's HPET would be): all ones, as a CPU reads there, not the
        // end of the domain.
        let mut test = Test::long_mode();
        test.map_devices();
        test.set_gpr(3, 0xfed0_0ffc);
        let run = test.mmio(&[0x48, 0x8b, 0x03], 0xfed0_0ffc);
        assert_eq!(run.decision.action, Action::Emulate, "{}", run.decision.why);
        assert_eq!(test.gpr(0), u64::MAX);
        assert_eq!(test.rip(), ENTRY + 3);
    }

    #[test]
    fn a_write_across_into_a_page_it_may_not_write_is_the_cpu_s_page_fault() {
        // `mov [rbx], rax` 4 bytes below 0xfe800000, on the empty bus on both sides; the
        // second page is mapped read-only (CR0.WP set), or not at all: the CPU translates
        // both pages for the write, and raises #PF for the second, writing nothing.
        use crate::testing::PDPT;
        use traplab_abi::x86::pte;
        let read_only = pte::PRESENT | pte::HUGE;
        for (second, error_code) in [(read_only, 0b011), (0, 0b010)] {
            let mut test = Test::long_mode();
            let pd = 0x80_0000u64;
            test.write_u64(PDPT + 3 * 8, pd | pte::PRESENT | pte::WRITABLE);
            let entry = |gpa: u64| pd + ((gpa - 0xc000_0000) >> 21) * 8;
            test.write_u64(entry(0xfe60_0000), 0xfe60_0000 | read_only | pte::WRITABLE);
            let second_entry = match second {
                0 => 0,
                flags => 0xfe80_0000 | flags,
            };
            test.write_u64(entry(0xfe80_0000), second_entry);
            test.gate(14, 0x20_c000);
            test.set_gpr(3, 0xfe7f_fffc);
            let run = test.mmio(&[0x48, 0x89, 0x03], 0xfe7f_fffc);
            assert_eq!(run.decision.action, Action::Reflect, "{}", run.decision.why);
            assert_eq!(run.injected().vector, 14);
            assert_eq!(run.injected().error_code, Some(error_code));
            assert_eq!(test.domain.vcpu.vmcb.save.cr2, 0xfe80_0000);
            assert_eq!(test.rip(), ENTRY, "a fault: RIP stays");
        }
    }

    #[test]
    fn the_other_page_is_checked_for_the_access_s_direction() {
        // CMP only reads, so a read-only second page is no fault: all ones are compared.
        // CMPXCHG writes, whatever it finds (Intel SDM vol. 2A, CMPXCHG), so it faults there.
        use crate::testing::PDPT;
        use traplab_abi::x86::pte;
        for (code, action) in [
            (&[0x48, 0x39, 0x03][..], Action::Emulate),
            (&[0x48, 0x0f, 0xb1, 0x0b][..], Action::Reflect),
        ] {
            let mut test = Test::long_mode();
            let pd = 0x80_0000u64;
            test.write_u64(PDPT + 3 * 8, pd | pte::PRESENT | pte::WRITABLE);
            let entry = |gpa: u64| pd + ((gpa - 0xc000_0000) >> 21) * 8;
            let huge = pte::PRESENT | pte::HUGE;
            test.write_u64(entry(0xfe60_0000), 0xfe60_0000 | huge | pte::WRITABLE);
            test.write_u64(entry(0xfe80_0000), 0xfe80_0000 | huge);
            test.gate(14, 0x20_c000);
            test.set_gpr(3, 0xfe7f_fffc);
            let run = test.mmio(code, 0xfe7f_fffc);
            assert_eq!(
                run.decision.action, action,
                "{code:x?}: {}",
                run.decision.why
            );
        }
    }

    #[test]
    fn a_misaligned_device_access_at_cpl_3_with_alignment_checks_on_is_an_alignment_check() {
        // The check is on the linear address, before the access: the device sees nothing.
        let mut test = Test::long_mode();
        test.gate(17, 0x20_1000);
        test.check_alignment();
        test.set_gpr(0, BASE + 2);
        let run = test.mmio(&[0x8b, 0x08], BASE + 2); // mov ecx, [rax]
        assert_eq!(run.decision.action, Action::Reflect, "{}", run.decision.why);
        assert_eq!(run.injected().vector, 17);
        assert!(
            run.decision
                .effects
                .iter()
                .all(|effect| !matches!(effect, Effect::Mmio(_)))
        );
        // Across the device's first page boundary, which the model does not split: the CPU's
        // #AC still comes first (an access across a page boundary is never aligned).
        use crate::testing::PDPT;
        use traplab_abi::x86::pte;
        let mut test = Test::long_mode();
        let user_devices = pte::PRESENT | pte::WRITABLE | pte::HUGE | pte::USER;
        test.write_u64(PDPT + 3 * 8, 0xc000_0000 | user_devices);
        test.gate(17, 0x20_1000);
        test.check_alignment();
        test.set_gpr(0, BASE - 2);
        let run = test.mmio(&[0x8b, 0x08], BASE);
        assert_eq!(run.decision.action, Action::Reflect, "{}", run.decision.why);
        assert_eq!(run.injected().vector, 17);
    }

    #[test]
    fn an_access_across_the_device_s_first_page_boundary_ends_the_domain() {
        // `mov ecx, [rax]` with RAX 2 bytes below the window: 2 bytes of empty bus, then 2
        // of the ID register. Whichever page the exit names, the 4-byte access is refused,
        // not done wholly on one side.
        for gpa in [BASE - 0x1000, BASE] {
            let mut test = Test::long_mode();
            test.map_devices();
            test.set_gpr(0, BASE - 2);
            let run = test.mmio(&[0x8b, 0x08], gpa);
            assert_eq!(run.decision.action, Action::Kill, "{}", run.decision.why);
            assert!(
                run.decision.why.starts_with(&format!(
                    "a 4-byte access at {:#x} crosses a page boundary",
                    BASE - 2
                )),
                "{}",
                run.decision.why
            );
            assert_eq!(test.gpr(1), 0, "nothing read");
        }
    }

    #[test]
    fn mov_eax_from_the_id_register_reads_0x70617274_into_eax() {
        // The access did not happen (the CPU exited before it): the hypervisor performs
        // it, writes EAX (zero-extending into RAX) and skips the MOV.
        let mut test = Test::long_mode();
        test.set_gpr(0, ID);
        let run = test.mmio(&[0x8b, 0x00], ID); // mov eax, [rax]
        assert_eq!(run.decision.action, Action::Emulate);
        assert_eq!(test.gpr(0), 0x7061_7274, "\"trap\" in ASCII, little-endian");
        assert_eq!(run.emulate().what, "lab device: read ID = 0x70617274");
        assert!(run.changes().contains(&("rax", ID, 0x7061_7274)));
        assert_eq!(test.rip(), ENTRY + 2);
    }

    #[test]
    fn a_16_bit_read_keeps_the_upper_bits_of_the_register() {
        // `mov ax, [rax]`: a 16-bit destination keeps bits 63:16 (AMD APM vol. 1, 3.1.2.3).
        let mut test = Test::long_mode();
        test.set_gpr(0, ID);
        test.mmio(&[0x66, 0x8b, 0x00], ID);
        assert_eq!(test.gpr(0), (ID & !0xffff) | 0x7274);
        assert_eq!(test.rip(), ENTRY + 3);
    }

    #[test]
    fn movzx_of_one_byte_zero_extends_it() {
        let mut test = Test::long_mode();
        test.set_gpr(0, ID);
        test.set_gpr(1, u64::MAX);
        test.mmio(&[0x0f, 0xb6, 0x08], ID); // movzx ecx, byte [rax]
        assert_eq!(test.gpr(1), 0x74);
    }

    #[test]
    fn where_no_device_is_a_read_returns_all_ones_and_a_write_goes_nowhere() {
        // 0xfed00000 (where a PC has its HPET) is above the 16 MiB of RAM and no device of
        // this platform answers there: as on a PC's empty bus, the domain lives on.
        const HOLE: u64 = 0xfed0_0000;
        let mut test = Test::long_mode();
        test.set_gpr(0, HOLE);
        let run = test.mmio(&[0x8b, 0x08], HOLE); // mov ecx, [rax]
        assert_eq!(run.decision.action, Action::Emulate);
        assert_eq!(
            run.decision.why,
            "a 4-byte read of guest-physical 0xfed00000: not RAM but no device, emulated by the hypervisor"
        );
        assert_eq!(test.gpr(1), 0xffff_ffff);
        assert_eq!(
            run.emulate().what,
            "no device at 0xfed00000: the read returns all ones (0xffffffff)"
        );
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        let run = test.mmio(&[0x88, 0x08], HOLE); // mov [rax], cl
        assert!(run.decision.end.is_none());
        assert_eq!(
            run.emulate().what,
            "no device at 0xfed00000: the write of 0xff goes nowhere"
        );
        assert_eq!(test.rip(), ENTRY + 2);
    }

    #[test]
    fn a_write_to_the_doorbell_puts_a_line_on_the_console() {
        let mut test = Test::long_mode();
        test.set_gpr(0, DOORBELL);
        test.set_gpr(1, 42);
        let run = test.mmio(&[0x89, 0x08], DOORBELL); // mov [rax], ecx
        assert_eq!(run.kinds(), ["decide", "console", "emulate"]);
        assert_eq!(run.console(), ["doorbell 42"]);
        assert!(run.emulate().what.contains("DOORBELL rung with 42"));
        assert_eq!(test.rip(), ENTRY + 2);
    }

    #[test]
    fn a_write_of_an_immediate_is_emulated_too() {
        let mut test = Test::long_mode();
        test.set_gpr(0, DOORBELL);
        // mov dword [rax], 7
        let run = test.mmio(&[0xc7, 0x00, 0x07, 0x00, 0x00, 0x00], DOORBELL);
        assert_eq!(run.console(), ["doorbell 7"]);
        assert_eq!(test.rip(), ENTRY + 6);
    }

    #[test]
    fn an_instruction_the_hypervisor_does_not_emulate_kills_the_domain() {
        // `shr dword [rax], 1`: a CPU would shift the device register; this hypervisor does
        // not emulate shifts of memory, and says so.
        let mut test = Test::long_mode();
        test.set_gpr(0, DOORBELL);
        let run = test.mmio(&[0xd1, 0x28], DOORBELL);
        assert_eq!(run.decision.action, Action::Kill);
        assert!(
            run.decision
                .why
                .contains("by SHR, which the hypervisor does not emulate"),
            "{}",
            run.decision.why
        );
        assert_eq!(
            testing::killed(&run.decision),
            "unemulated MMIO instruction at 0x200000"
        );
        assert!(run.console().is_empty(), "the doorbell did not ring");
    }

    /// RFLAGS' status bits: CF, PF, AF, ZF, SF, OF (AMD APM vol. 1, 3.1.4).
    const CF: u64 = 1;
    const PF: u64 = 1 << 2;
    const ZF: u64 = 1 << 6;
    const SF: u64 = 1 << 7;
    const OF: u64 = 1 << 11;

    /// SCRATCH holds `value`: `mov [rax], rcx` to it, from the start.
    fn fill_scratch(test: &mut Test, value: u64) {
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        test.set_gpr(0, SCRATCH);
        test.set_gpr(1, value);
        test.mmio(&[0x48, 0x89, 0x08], SCRATCH);
        test.domain.vcpu.vmcb.save.rip = ENTRY;
    }

    const SCRATCH: u64 = BASE + 0x08;
    const COUNTER: u64 = BASE + 0x10;

    #[test]
    fn an_or_into_a_device_register_reads_it_writes_the_result_back_and_sets_the_flags() {
        // `*scratch |= 1 << 31` through a volatile pointer: a compiler may emit one OR. The
        // device sees a read, then a write; the flags are the OR's.
        let mut test = Test::long_mode();
        fill_scratch(&mut test, 0x1122_3344_5566_7788);
        test.domain.vcpu.vmcb.save.rflags = 0x2 | CF | OF | ZF;
        // lock or dword [rax], 0x80000000
        let run = test.mmio(&[0xf0, 0x81, 0x08, 0x00, 0x00, 0x00, 0x80], SCRATCH);
        assert_eq!(run.decision.action, Action::Emulate);
        assert_eq!(
            run.decision.why,
            "a 4-byte OR of guest-physical 0xfeb00008 with 0x80000000: not RAM but the lab device's MMIO window, emulated by the hypervisor (a read, then the result written back, and the flags)"
        );
        assert_eq!(
            run.emulate().what,
            "lab device: read SCRATCH = 0x55667788, lab device: SCRATCH = 0x11223344d5667788"
        );
        // 0xd5667788: negative at 32 bits, not zero; OR clears CF and OF; PF: 0x88 has
        // two ones.
        let flags = test.domain.vcpu.vmcb.save.rflags;
        assert_eq!(flags & (CF | PF | ZF | SF | OF), PF | SF);
        assert!(
            run.changes()
                .contains(&("rflags", 0x2 | CF | OF | ZF, flags))
        );
        assert_eq!(test.rip(), ENTRY + 7);
    }

    #[test]
    fn a_cmp_reads_the_register_once_and_writes_nothing() {
        // COUNTER counts its reads: `cmp dword [rax], 1` reads 1 (ZF), and the next read 2.
        let mut test = Test::long_mode();
        test.set_gpr(0, COUNTER);
        let run = test.mmio(&[0x83, 0x38, 0x01], COUNTER);
        assert_eq!(run.emulate().what, "lab device: read COUNTER = 0x1");
        assert_eq!(test.domain.vcpu.vmcb.save.rflags & (ZF | CF), ZF);
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        let run = test.mmio(&[0x83, 0x38, 0x01], COUNTER);
        assert_eq!(run.emulate().what, "lab device: read COUNTER = 0x2");
        assert_eq!(test.domain.vcpu.vmcb.save.rflags & (ZF | CF), 0, "2 - 1");
        assert_eq!(test.rip(), ENTRY + 3);
    }

    #[test]
    fn a_cmp_retried_with_rf_set_keeps_its_flags_and_clears_rf() {
        // RF=1 (an IRET from a fault handler onto the CMP): the CMP's flags, worked out as
        // it is applied, stay; only RF goes.
        let mut test = Test::long_mode();
        let resume = traplab_abi::x86::RFlags::RESUME_FLAG.bits();
        test.domain.vcpu.vmcb.save.rflags |= resume;
        test.set_gpr(0, COUNTER);
        test.mmio(&[0x83, 0x38, 0x01], COUNTER);
        let rflags = test.domain.vcpu.vmcb.save.rflags;
        assert_eq!((rflags & (ZF | CF), rflags & resume), (ZF, 0));
    }

    #[test]
    fn xchg_swaps_a_register_with_a_device_register() {
        let mut test = Test::long_mode();
        fill_scratch(&mut test, 0x1122_3344_5566_7788);
        test.set_gpr(1, 0xaa);
        let run = test.mmio(&[0x48, 0x87, 0x08], SCRATCH); // xchg [rax], rcx
        assert_eq!(
            run.decision.why,
            "a 8-byte XCHG of guest-physical 0xfeb00008 with rcx (0xaa): not RAM but the lab device's MMIO window, emulated by the hypervisor (a read, then a write, and the register gets what was read)"
        );
        assert_eq!(test.gpr(1), 0x1122_3344_5566_7788);
        assert_eq!(
            run.emulate().what,
            "lab device: read SCRATCH = 0x1122334455667788, lab device: SCRATCH = 0xaa"
        );
    }

    #[test]
    fn arithmetic_into_a_register_and_unary_arithmetic_on_the_device() {
        let mut test = Test::long_mode();
        fill_scratch(&mut test, 0xffff_ffff);
        // add ecx, [rax]: ECX = 1 + 0xffffffff = 0 with a carry, bits 63:32 cleared.
        test.set_gpr(1, 0xdead_0000_0000_0001);
        test.mmio(&[0x03, 0x08], SCRATCH);
        assert_eq!(test.gpr(1), 0);
        assert_eq!(test.domain.vcpu.vmcb.save.rflags & (CF | ZF), CF | ZF);
        // inc dword [rax]: SCRATCH's low half wraps to 0 (ZF); INC keeps CF, set by the ADD.
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        let run = test.mmio(&[0xff, 0x00], SCRATCH);
        assert_eq!(
            run.decision.why,
            "a 4-byte INC of guest-physical 0xfeb00008: not RAM but the lab device's MMIO window, emulated by the hypervisor (a read, then the result written back, and the flags)"
        );
        assert!(
            run.emulate().what.ends_with("SCRATCH = 0x0"),
            "{}",
            run.emulate().what
        );
        assert_eq!(test.domain.vcpu.vmcb.save.rflags & (CF | ZF), CF | ZF);
        // dec dword [rax] with CF clear: 0 - 1 borrows, but DEC leaves CF clear.
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        test.domain.vcpu.vmcb.save.rflags = 0x2;
        test.mmio(&[0xff, 0x08], SCRATCH);
        assert_eq!(test.domain.vcpu.vmcb.save.rflags & (CF | SF), SF);
    }

    #[test]
    fn movsx_sign_extends_and_the_high_byte_registers_are_operands_too() {
        // The hole's all ones, sign-extended from a byte into ECX (then zero-extended).
        const HOLE: u64 = 0xfed0_0000;
        let mut test = Test::long_mode();
        test.set_gpr(0, HOLE);
        test.mmio(&[0x0f, 0xbe, 0x08], HOLE); // movsx ecx, byte [rax]
        assert_eq!(test.gpr(1), 0xffff_ffff);
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        test.mmio(&[0x48, 0x63, 0x08], HOLE); // movsxd rcx, dword [rax]
        assert_eq!(test.gpr(1), u64::MAX);
        // mov ah, [rax] from ID's low byte ('t'), the rest of RAX kept.
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        test.set_gpr(0, ID);
        test.mmio(&[0x8a, 0x20], ID);
        assert_eq!(test.gpr(0), (ID & !0xff00) | 0x7400);
        // mov [rax], ch rings the doorbell with bits 15:8 of RCX.
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        test.set_gpr(0, DOORBELL);
        test.set_gpr(1, 0x2a00);
        let run = test.mmio(&[0x88, 0x28], DOORBELL);
        assert_eq!(run.console(), ["doorbell 42"]);
    }

    #[test]
    fn a_form_the_hypervisor_does_not_emulate_is_named_as_such() {
        // `mov ds, [rax]`: a MOV, but a segment load (a descriptor to read and check).
        let mut test = Test::long_mode();
        test.set_gpr(0, DOORBELL);
        let run = test.mmio(&[0x8e, 0x18], DOORBELL);
        assert_eq!(run.decision.action, Action::Kill);
        assert!(
            run.decision.why.contains("by this form of MOV, which"),
            "{}",
            run.decision.why
        );
    }

    #[test]
    fn adc_and_sbb_carry_cf_into_the_device_register() {
        // `adc dword [rax], 0` with CF set: SCRATCH's low half 0xffffffff + 0 + 1 wraps to 0
        // (ZF, CF); `sbb dword [rax], 0` with CF set then borrows back to 0xffffffff.
        let mut test = Test::long_mode();
        fill_scratch(&mut test, 0xffff_ffff);
        test.domain.vcpu.vmcb.save.rflags = 0x2 | CF;
        let run = test.mmio(&[0x83, 0x10, 0x00], SCRATCH);
        assert_eq!(
            run.decision.why,
            "a 4-byte ADC of guest-physical 0xfeb00008 with 0x0: not RAM but the lab device's MMIO window, emulated by the hypervisor (a read, then the result written back, and the flags)"
        );
        assert!(
            run.emulate().what.ends_with("SCRATCH = 0x0"),
            "{}",
            run.emulate().what
        );
        assert_eq!(test.domain.vcpu.vmcb.save.rflags & (CF | ZF), CF | ZF);
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        let run = test.mmio(&[0x83, 0x18, 0x00], SCRATCH);
        assert!(
            run.emulate().what.ends_with("SCRATCH = 0xffffffff"),
            "{}",
            run.emulate().what
        );
        assert_eq!(test.domain.vcpu.vmcb.save.rflags & (CF | ZF | SF), CF | SF);
    }

    #[test]
    fn cmpxchg_writes_the_new_value_when_rax_matches_and_the_old_one_back_when_not() {
        let mut test = Test::long_mode();
        fill_scratch(&mut test, 0x10);
        // lock cmpxchg [rdx], rcx with RAX = 0x10: equal, SCRATCH = RCX, ZF set.
        test.set_gpr(2, SCRATCH);
        test.set_gpr(0, 0x10);
        test.set_gpr(1, 0x20);
        let run = test.mmio(&[0xf0, 0x48, 0x0f, 0xb1, 0x0a], SCRATCH);
        assert_eq!(
            run.decision.why,
            "a 8-byte CMPXCHG of guest-physical 0xfeb00008, 0x10 expected, 0x20 to write: not RAM but the lab device's MMIO window, emulated by the hypervisor (a read, the flags of a compare with rax, then a write: the new value if equal, else what was read, into rax too)"
        );
        assert_eq!(
            run.emulate().what,
            "lab device: read SCRATCH = 0x10, lab device: SCRATCH = 0x20"
        );
        assert_eq!(test.domain.vcpu.vmcb.save.rflags & ZF, ZF);
        assert_eq!(test.gpr(0), 0x10, "RAX is not written when equal");
        assert_eq!(test.rip(), ENTRY + 5);
        // Again, RAX still 0x10: not equal (0x20), so the device gets its own value back
        // (the CPU's write cycle) and RAX what was read.
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        let run = test.mmio(&[0xf0, 0x48, 0x0f, 0xb1, 0x0a], SCRATCH);
        assert_eq!(
            run.emulate().what,
            "lab device: read SCRATCH = 0x20, lab device: SCRATCH = 0x20"
        );
        assert_eq!(test.domain.vcpu.vmcb.save.rflags & ZF, 0);
        assert_eq!(test.gpr(0), 0x20);
        assert!(run.changes().contains(&("rax", 0x10, 0x20)));
    }

    /// CMPXCHG or XADD of `memory` with `register` (RAX = `accumulator`) at `width` bytes on
    /// this machine's CPU, the memory a variable on the stack: (memory, RAX, the register,
    /// RFLAGS) after it.
    fn exchange_on_this_cpu(
        mnemonic: iced_x86::Mnemonic,
        width: u8,
        memory: u64,
        accumulator: u64,
        register: u64,
        flags: u64,
    ) -> (u64, u64, u64, u64) {
        let mut memory = memory;
        let (mut rax, mut register) = (accumulator, register);
        let after: u64;
        let at = &raw mut memory;
        macro_rules! run {
            ($instruction:literal, $pointer:literal, $size:literal) => {
                // SAFETY: `at` points to a live u64 on our stack; the PUSH/POPF pairs are
                // balanced.
                unsafe {
                    core::arch::asm!(
                        "push {flags}",
                        "popfq",
                        concat!($instruction, " ", $pointer, " ptr [{at}], {register:", $size, "}"),
                        "pushfq",
                        "pop {after}",
                        at = in(reg) at,
                        register = inout(reg) register,
                        flags = in(reg) flags,
                        after = out(reg) after,
                        inout("rax") rax,
                    )
                }
            };
        }
        macro_rules! sized {
            ($instruction:literal) => {
                match width {
                    1 => run!($instruction, "byte", "l"),
                    2 => run!($instruction, "word", "x"),
                    4 => run!($instruction, "dword", "e"),
                    _ => run!($instruction, "qword", "r"),
                }
            };
        }
        match mnemonic {
            iced_x86::Mnemonic::Cmpxchg => sized!("cmpxchg"),
            _ => sized!("xadd"),
        }
        (memory, rax, register, after)
    }

    #[test]
    fn cmpxchg_and_xadd_on_the_device_do_what_this_cpu_does_on_memory() {
        // The real path (decode, decision, apply, the lab device) against this machine's
        // CPU doing the same instruction on a quadword of its stack: the memory, RAX, the
        // register and the status flags after it, at every width, equal and not equal.
        use iced_x86::Mnemonic;
        let values = [
            0,
            1,
            0x7f,
            0x80,
            0xff,
            0x8000,
            0xffff_ffff,
            0x8000_0000_0000_0000,
            u64::MAX,
            0x1234_5678_9abc_def0,
        ];
        // `cmpxchg [rdx], rcx` and `xadd [rdx], rcx` at 1, 2, 4 and 8 bytes (CL, CX, ECX, RCX).
        let encodings = |mnemonic: Mnemonic, width: u8| -> Vec<u8> {
            let opcode = match mnemonic {
                Mnemonic::Cmpxchg => 0xb0,
                _ => 0xc0,
            };
            match width {
                1 => vec![0x0f, opcode, 0x0a],
                2 => vec![0x66, 0x0f, opcode + 1, 0x0a],
                4 => vec![0x0f, opcode + 1, 0x0a],
                _ => vec![0x48, 0x0f, opcode + 1, 0x0a],
            }
        };
        let status = CF | PF | 1 << 4 | ZF | SF | OF;
        let mut test = Test::long_mode();
        let mut checked = 0;
        for mnemonic in [Mnemonic::Cmpxchg, Mnemonic::Xadd] {
            for width in [1u8, 2, 4, 8] {
                for memory in values {
                    // The accumulator equal to the memory, and not.
                    for accumulator in [memory, memory ^ 0x80, 0xdead_0000_0000_0001] {
                        for register in values {
                            fill_scratch(&mut test, memory);
                            test.set_gpr(0, accumulator);
                            test.set_gpr(1, register);
                            test.set_gpr(2, SCRATCH);
                            test.domain.vcpu.vmcb.save.rflags = 0x2;
                            test.mmio(&encodings(mnemonic, width), SCRATCH);
                            let rflags = test.domain.vcpu.vmcb.save.rflags & status;
                            let (rax, rcx) = (test.gpr(0), test.gpr(1));
                            // SCRATCH read back: `mov rbx, [rdx]`.
                            test.domain.vcpu.vmcb.save.rip = ENTRY;
                            test.mmio(&[0x48, 0x8b, 0x1a], SCRATCH);
                            let device = (test.gpr(3), rax, rcx, rflags);
                            let cpu = exchange_on_this_cpu(
                                mnemonic,
                                width,
                                memory,
                                accumulator,
                                register,
                                0x2,
                            );
                            assert_eq!(
                                device,
                                (cpu.0, cpu.1, cpu.2, cpu.3 & status),
                                "{mnemonic:?} at {width} bytes: memory {memory:#x}, rax {accumulator:#x}, register {register:#x}"
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 2 * 4 * 10 * 3 * 10);
    }

    #[test]
    fn xadd_adds_into_the_device_and_gives_the_register_the_old_value() {
        let mut test = Test::long_mode();
        fill_scratch(&mut test, 5);
        // lock xadd dword [rax], ecx with ECX = 3: SCRATCH = 8, ECX = 5.
        test.set_gpr(0, SCRATCH);
        test.set_gpr(1, 3);
        let run = test.mmio(&[0xf0, 0x0f, 0xc1, 0x08], SCRATCH);
        assert_eq!(
            run.emulate().what,
            "lab device: read SCRATCH = 0x5, lab device: SCRATCH = 0x8"
        );
        assert_eq!(test.gpr(1), 5);
        assert_eq!(test.domain.vcpu.vmcb.save.rflags & (CF | ZF), 0);
    }

    #[test]
    fn a_bit_test_sets_cf_and_bts_writes_the_bit_in_the_operand_that_holds_it() {
        let mut test = Test::long_mode();
        fill_scratch(&mut test, 0);
        // lock bts dword [rax], ecx with ECX = 36: the bit is in the dword 4 bytes on (36 /
        // 32), SCRATCH + 4, where the CPU went (the exit says so); there, bit 36 % 32 = 4.
        test.set_gpr(0, SCRATCH);
        test.set_gpr(1, 36);
        let run = test.mmio(&[0xf0, 0x0f, 0xab, 0x08], SCRATCH + 4);
        assert_eq!(
            run.decision.why,
            "a 4-byte BTS of bit 4 of guest-physical 0xfeb0000c: not RAM but the lab device's MMIO window, emulated by the hypervisor (a read, then the result written back, and the flags: CF is the bit)"
        );
        assert_eq!(
            run.emulate().what,
            "lab device: read SCRATCH = 0x0, lab device: SCRATCH = 0x1000000000"
        );
        assert_eq!(
            test.domain.vcpu.vmcb.save.rflags & CF,
            0,
            "the bit was clear"
        );
        // bt dword [rax], 4 at SCRATCH + 4: set now, CF; nothing written.
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        test.set_gpr(0, SCRATCH + 4);
        let run = test.mmio(&[0x0f, 0xba, 0x20, 0x04], SCRATCH + 4);
        assert_eq!(run.emulate().what, "lab device: read SCRATCH = 0x10");
        assert_eq!(test.domain.vcpu.vmcb.save.rflags & CF, CF);
    }

    #[test]
    fn a_bit_number_beyond_the_operand_finds_its_word_whichever_access_the_cpu_made() {
        // btc word [rax], cx with CX = 17: the bit is bit 1 of the word at SCRATCH + 2. A CPU
        // may have read 4 bytes at SCRATCH instead (Intel SDM vol. 2A, BT): the exit says
        // SCRATCH, and the hypervisor still flips the right bit.
        let mut test = Test::long_mode();
        fill_scratch(&mut test, 0xffff_0002);
        test.set_gpr(0, SCRATCH);
        test.set_gpr(1, 17);
        let run = test.mmio(&[0x66, 0x0f, 0xbb, 0x08], SCRATCH);
        assert!(
            run.decision
                .why
                .starts_with("a 2-byte BTC of bit 1 of guest-physical 0xfeb0000a:"),
            "{}",
            run.decision.why
        );
        assert!(
            run.emulate().what.ends_with("SCRATCH = 0xfffd0002"),
            "{}",
            run.emulate().what
        );
        assert_eq!(test.domain.vcpu.vmcb.save.rflags & CF, CF, "bit 17 was set");
        // bts qword [rax], rcx with RCX = -1, RAX = SCRATCH + 8: the bit before the operand,
        // bit 63 of the quadword before it, SCRATCH.
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        test.set_gpr(0, SCRATCH + 8);
        test.set_gpr(1, u64::MAX);
        let run = test.mmio(&[0x48, 0x0f, 0xab, 0x08], SCRATCH);
        assert!(
            run.emulate().what.ends_with("SCRATCH = 0x80000000fffd0002"),
            "{}",
            run.emulate().what
        );
    }

    #[test]
    fn setcc_writes_the_condition_and_mov_writes_a_selector() {
        let mut test = Test::long_mode();
        fill_scratch(&mut test, 0xffff);
        // setz byte [rax] with ZF set: a write of 1.
        test.set_gpr(0, SCRATCH);
        test.domain.vcpu.vmcb.save.rflags = 0x2 | ZF;
        let run = test.mmio(&[0x0f, 0x94, 0x00], SCRATCH);
        assert_eq!(run.emulate().what, "lab device: SCRATCH = 0xff01");
        // mov [rax], ds: the selector's two bytes.
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        test.domain.vcpu.vmcb.save.ds.selector = 0x2b;
        let run = test.mmio(&[0x8c, 0x18], SCRATCH);
        assert_eq!(run.emulate().what, "lab device: SCRATCH = 0x2b");
        assert_eq!(test.rip(), ENTRY + 2);
    }

    #[test]
    fn a_string_compare_with_the_device_is_not_emulated() {
        // `repe cmpsb` compares as it goes (MOVS, STOS and LODS are emulated: `string.rs`).
        let mut test = Test::long_mode();
        let run = test.mmio(&[0xf3, 0xa6], DOORBELL);
        assert_eq!(run.decision.action, Action::Kill);
        assert!(
            run.decision.why.contains("by CMPSB, which"),
            "{}",
            run.decision.why
        );
    }

    #[test]
    fn pc_testdev_s_memory_window_keeps_what_a_mov_writes() {
        // With the setting `pc-testdev`, 0xff000000 is its 64 KiB window, a RAM-like buffer.
        use crate::device::pc_testdev::{IOMEM_BASE, PcTestdev};
        let mut test = Test::long_mode();
        test.domain.devices.testdev = Some(PcTestdev::default());
        let at = IOMEM_BASE + 0x40;
        test.set_gpr(0, at);
        test.set_gpr(1, 0x1234_5678);
        let run = test.mmio(&[0x89, 0x08], at); // mov [rax], ecx
        assert_eq!(
            run.decision.why,
            "a 4-byte write of 0x12345678 to guest-physical 0xff000040: not RAM but pc-testdev's memory window, emulated by the hypervisor"
        );
        assert_eq!(
            run.emulate().what,
            "pc-testdev: 0x12345678 kept in its memory at offset 0x40"
        );
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        let run = test.mmio(&[0x66, 0x8b, 0x50, 0x02], at + 2); // mov dx, [rax + 2]
        assert_eq!(test.gpr(2) & 0xffff, 0x1234);
        assert_eq!(
            run.emulate().what,
            "pc-testdev: read 0x1234 from its memory at offset 0x42"
        );
    }

    // ---- The local APIC at 0xfee00000 -------------------------------------------------

    use crate::device::lapic::{self, reg};
    use crate::domain::interrupts::{TimerTarget, VirtualTimer};

    /// `mov [rax], ecx` of `value` to APIC register `offset`, from the start.
    fn apic_write(test: &mut Test, offset: u64, value: u32) -> Run {
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        test.set_gpr(0, lapic::BASE + offset);
        test.set_gpr(1, value as u64);
        test.mmio(&[0x89, 0x08], lapic::BASE + offset)
    }

    /// The local APIC enabled, its timer dividing by 1 at vector 0x30 in `mode` (LVT bits
    /// 18:17), a gate for 0x30.
    fn apic_timer_at_0x30(mode: u32) -> Test {
        let mut test = Test::long_mode();
        test.gate(0x30, 0x21_0000);
        apic_write(&mut test, reg::SVR, 0x1ff);
        apic_write(&mut test, reg::TIMER_DIVIDE, 0xb); // divide by 1
        apic_write(&mut test, reg::LVT_TIMER, mode | 0x30);
        test
    }

    /// The master PIC at vector 0x20 with only IRQ 0 open, and PIT channel 0 at 100 Hz
    /// (mode 2, count 11932), as a PC kernel programs them: OUTs, as the guest makes them.
    fn pit_at_100_hz_through_the_pic(test: &mut Test) {
        for (port, value) in [
            (0x20, 0x11),
            (0x21, 0x20),
            (0x21, 0x04),
            (0x21, 0x01),
            (0x21, 0xfe),
            (0x43, 0x34),
            (0x40, 0x9c),
            (0x40, 0x2e),
        ] {
            test.out(port, value);
        }
    }

    #[test]
    fn a_write_of_the_apic_s_tpr_is_cr8_too() {
        // CR8 is TPR[7:4] (Intel SDM vol. 3A, 11.8.6.1): the guest's MOV from CR8 reads V_TPR,
        // which follows the TPR written through MMIO.
        let mut test = Test::long_mode();
        let run = apic_write(&mut test, reg::TPR, 0x5a);
        assert_eq!(test.domain.devices.lapic.tpr, 0x5a);
        assert_eq!(test.domain.vcpu.vmcb.control.virtual_interrupt & 0xff, 5);
        assert!(run.changes().contains(&("cr8", 0, 5)));
    }

    #[test]
    fn the_local_apic_answers_at_0xfee00000() {
        let mut test = Test::long_mode();
        test.set_gpr(0, lapic::BASE + reg::VERSION);
        let run = test.mmio(&[0x8b, 0x08], lapic::BASE + reg::VERSION); // mov ecx, [rax]
        assert!(
            run.decision
                .why
                .ends_with("not RAM but the local APIC, emulated by the hypervisor")
        );
        assert_eq!(test.gpr(1), 0x50014);
        assert_eq!(run.emulate().what, "local APIC: read version = 0x50014");
    }

    #[test]
    fn the_apic_timer_becomes_the_guest_s_timer_and_its_tick_is_delivered_until_eoi() {
        let mut test = apic_timer_at_0x30(0x2_0000); // periodic
        let run = apic_write(&mut test, reg::TIMER_INITIAL, 1_000_000);
        assert!(
            run.emulate().what.contains(
                "the guest's timer: the local APIC's timer every 1000 µs, at vector 0x30"
            ),
            "{}",
            run.emulate().what
        );
        assert!(
            test.machine
                .calls
                .contains(&"quicken_timer 1000".to_string()),
            "a guest timer every 1 ms: the hypervisor looks 1000 times a second: {:?}",
            test.machine.calls
        );
        let now = test.machine.now.get();
        let period = 1_000_000 * crate::testing::TSC_HZ / lapic::BUS_HZ;
        assert_eq!(
            test.domain.vcpu.interrupts.timers.local_apic,
            Some(VirtualTimer {
                vector: 0x30,
                period_tsc: period,
                due_tsc: now + period,
                target: TimerTarget::LocalApic,
            })
        );
        // The tick, at the hypervisor's next INTR exit after the deadline: requested in the
        // APIC, delivered through the guest's IDT, in service.
        test.interrupts_on();
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        let mut exit = test.exit(ExitReason::Intr);
        exit.tsc = now + period;
        let run = test.run(exit);
        assert!(
            run.decision
                .effects
                .contains(&Effect::LocalApicRequest(0x30))
        );
        assert_eq!(run.injected().vector, 0x30);
        let apic = &test.domain.devices.lapic;
        assert!(apic.in_service.contains(0x30) && !apic.requested.contains(0x30));
        test.vmrun();
        // The next tick waits while 0x30 is in service; the EOI lets it through.
        test.domain.devices.lapic.request(0x30);
        assert_eq!(test.domain.pending_interrupt(), None);
        let run = apic_write(&mut test, reg::EOI, 0);
        assert_eq!(
            run.emulate().what,
            "local APIC: EOI: interrupt 0x30 is no longer in service"
        );
        assert_eq!(
            run.injected().vector,
            0x30,
            "the merged tick, delivered after the EOI"
        );
    }

    #[test]
    fn a_one_shot_shorter_than_the_hypervisor_s_own_work_still_fires() {
        // Linux arms the APIC's one-shot with counts of a few dozen (62 bus clocks: 62 ns
        // here), and the hypervisor's work after the write takes longer than that. The
        // deadline has passed when the guest's timer is worked out, but the tick was never
        // requested: it must still come (it was lost, and Linux's `poweroff` halted for
        // ever waiting for it).
        let mut test = apic_timer_at_0x30(0); // one-shot
        // 1 µs passes at every look at the clock from now on.
        test.machine.now_step.set(1_000);
        let written_at = test.machine.now.get();
        let run = apic_write(&mut test, reg::TIMER_INITIAL, 62);
        // Armed, at a deadline the clock has passed already.
        let timer = test.domain.vcpu.interrupts.timers.local_apic;
        let after = test.machine.now.get();
        assert!(
            timer.is_some_and(
                |timer| timer.vector == 0x30 && (written_at..after).contains(&timer.due_tsc)
            ),
            "{timer:?}, written at {written_at}, now {after}: {}",
            run.emulate().what
        );
        // The hypervisor's next look (its timer's INTR exit) requests and delivers it.
        test.interrupts_on();
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        let exit = test.exit(ExitReason::Intr);
        let run = test.run(exit);
        assert_eq!(run.injected().vector, 0x30);
        assert_eq!(
            test.domain.vcpu.interrupts.timers.local_apic, None,
            "a one-shot fires once"
        );
    }

    #[test]
    fn the_pit_s_timer_counts_on_beside_an_apic_one_shot() {
        // PIT channel 0 at 100 Hz through the PIC's unmasked IRQ 0; then the kernel arms a
        // one-shot of the APIC's (a delay, a calibration). On a PC both count: the one-shot's
        // tick is the APIC's, and the PIT's edges go on reaching IRQ 0 all along. (With one
        // timer a domain, the one-shot replaced the PIT's, and its ticks stopped, until the
        // one-shot had fired.)
        use crate::domain::interrupts::Tick;
        let mut test = apic_timer_at_0x30(0);
        pit_at_100_hz_through_the_pic(&mut test);
        let pit = test.domain.vcpu.interrupts.timers.pit.expect("the PIT's");
        assert_eq!((pit.vector, pit.target), (0x20, TimerTarget::Irq0));
        apic_write(&mut test, reg::TIMER_INITIAL, 1_000);
        let timers = test.domain.vcpu.interrupts.timers;
        let once = timers.local_apic.expect("the one-shot");
        assert_eq!(
            (once.vector, once.period_tsc),
            (0x30, crate::domain::interrupts::ONCE)
        );
        assert_eq!(timers.pit, Some(pit), "the PIT counts on, untouched");
        assert!(once.due_tsc < pit.due_tsc);
        let tick = test.domain.timer_tick(once.due_tsc);
        let Tick::Requested { what, .. } = tick else {
            panic!("{tick:?}");
        };
        assert!(what.contains("interrupt 0x30 requested"), "{what}");
        let timers = test.domain.vcpu.interrupts.timers;
        assert_eq!((timers.local_apic, timers.pit), (None, Some(pit)));
        // Its next tick is IRQ 0's edge, in the PIC.
        let tick = test.domain.timer_tick(pit.due_tsc);
        assert!(matches!(tick, Tick::Requested { .. }), "{tick:?}");
        assert_ne!(test.domain.devices.pic.master.requests & 1, 0, "IRQ 0");
    }

    #[test]
    fn a_pit_tick_and_an_apic_tick_due_at_the_same_look_both_come() {
        // Both timers due by the hypervisor's timer interrupt: one INTR exit ticks both, each
        // through its device, the earlier deadline first.
        let mut test = apic_timer_at_0x30(1 << 17); // periodic
        pit_at_100_hz_through_the_pic(&mut test);
        apic_write(&mut test, reg::TIMER_INITIAL, 1_000);
        let timers = test.domain.vcpu.interrupts.timers;
        let (pit, apic) = (timers.pit.expect("PIT"), timers.local_apic.expect("APIC"));
        test.machine.now.set(pit.due_tsc.max(apic.due_tsc));
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        let run = test.run(test.exit(ExitReason::Intr));
        let why = &run.decision.why;
        assert!(why.contains("interrupt 0x30 is requested"), "{why}");
        assert!(why.contains("PIT channel 0 is due"), "{why}");
        assert!(test.domain.devices.lapic.requested.contains(0x30));
        assert_ne!(test.domain.devices.pic.master.requests & 1, 0, "IRQ 0");
        let after = test.domain.vcpu.interrupts.timers;
        assert!(after.pit.expect("periodic").due_tsc > pit.due_tsc);
        assert!(after.local_apic.expect("periodic").due_tsc > apic.due_tsc);
    }

    #[test]
    fn an_nmi_ipi_to_itself_is_an_nmi_held_back_until_the_handler_s_iret() {
        // Xen patches its alternatives from an NMI it sends itself: ICR = shorthand self,
        // delivery mode NMI (0x4_0400). IF = 0 does not hold an NMI back.
        use traplab_abi::event::EventType;
        let mut test = Test::long_mode();
        test.gate(2, 0x21_0000);
        apic_write(&mut test, reg::SVR, 0x1ff);
        let run = apic_write(&mut test, reg::ICR_LOW, 0x4_0400);
        assert!(
            run.emulate().what.contains("NMI to itself"),
            "{}",
            run.emulate().what
        );
        assert_eq!(
            (run.injected().vector, run.injected().kind),
            (2, EventType::Nmi)
        );
        assert!(test.domain.vcpu.nmi_blocked);
        test.vmrun();
        // A second NMI while the handler runs waits for its IRET.
        let run = apic_write(&mut test, reg::ICR_LOW, 0x4_0400);
        assert!(
            run.events
                .iter()
                .all(|event| !matches!(event, traplab_abi::event::Body::Inject(_)))
        );
        assert!(test.domain.devices.lapic.nmi_requested);
        test.vmrun();
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        test.code(&[0x48, 0xcf]); // iretq
        // The intercept comes before the IRET runs: the NMI still waits (else it would
        // enter its handler with the first one's IRET not yet run).
        let run = test.run(test.exit(ExitReason::Iret));
        assert!(
            run.events
                .iter()
                .all(|event| !matches!(event, traplab_abi::event::Body::Inject(_)))
        );
        assert!(test.domain.vcpu.nmi_blocked);
        // The CPU runs the IRET (the guest is elsewhere at the next exit): now it comes.
        test.domain.vcpu.vmcb.save.rip = 0x20_0400;
        test.vmrun();
        assert!(!test.domain.vcpu.nmi_blocked);
        let run = test.run(test.exit(ExitReason::Intr));
        assert_eq!(
            (run.injected().vector, run.injected().kind),
            (2, EventType::Nmi),
            "the IRET unblocked NMIs: the waiting one is delivered"
        );
    }

    #[test]
    fn an_nmi_waits_out_an_interrupt_shadow() {
        // After MOV SS (or STI) the next instruction runs before any NMI, as Xen's and
        // KVM's SVM code block it.
        use traplab_abi::event::EventType;
        let mut test = Test::long_mode();
        test.gate(2, 0x21_0000);
        apic_write(&mut test, reg::SVR, 0x1ff);
        // An NMI is asked for, and the hypervisor's timer exits in a shadow (the instruction
        // after a MOV SS has not run yet).
        test.domain.devices.lapic.nmi_requested = true;
        test.domain.vcpu.vmcb.control.interrupt_shadow |= crate::vmcb::INTERRUPT_SHADOW;
        let run = test.run(test.exit(ExitReason::Intr));
        assert!(!run.kinds().contains(&"inject"), "{:?}", run.kinds());
        assert!(test.domain.devices.lapic.nmi_requested);
        test.domain.vcpu.vmcb.control.interrupt_shadow = 0;
        let run = test.run(test.exit(ExitReason::Intr));
        assert_eq!(
            (run.injected().vector, run.injected().kind),
            (2, EventType::Nmi)
        );
    }

    #[test]
    fn the_pit_through_the_io_apic_reaches_the_local_apic_at_pin_2_s_vector() {
        use crate::device::ioapic;
        let mut test = Test::long_mode();
        // PIT channel 0 at 100 Hz (mode 2), the PIC left masked (as after power-on), the
        // local APIC enabled.
        let (now, tsc_hz) = (test.machine.now.get(), crate::testing::TSC_HZ);
        let pit = &mut test.domain.devices.pit;
        for (port, value) in [(0x43, 0x34), (0x40, 0x9c), (0x40, 0x2e)] {
            pit.write(port, value, now, tsc_hz);
        }
        apic_write(&mut test, reg::SVR, 0x1ff);
        assert_eq!(
            test.domain.vcpu.interrupts.timers.pit, None,
            "pin 2 is masked"
        );
        // IOREGSEL = 0x14 (pin 2, low half), then IOWIN = vector 0x22, fixed, unmasked.
        for (offset, value) in [(ioapic::REGISTER_SELECT, 0x14), (ioapic::WINDOW, 0x22)] {
            test.domain.vcpu.vmcb.save.rip = ENTRY;
            test.set_gpr(0, ioapic::BASE + offset);
            test.set_gpr(1, value);
            test.mmio(&[0x89, 0x08], ioapic::BASE + offset); // mov [rax], ecx
        }
        let timer = test
            .domain
            .vcpu
            .interrupts
            .timers
            .pit
            .expect("the PIT is the guest's timer");
        assert_eq!((timer.vector, timer.target), (0x22, TimerTarget::LocalApic));
        // Its tick is requested in the local APIC, which delivers it.
        test.interrupts_on();
        test.gate(0x22, 0x21_0000);
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        let mut exit = test.exit(ExitReason::Intr);
        exit.tsc = timer.due_tsc;
        let run = test.run(exit);
        assert_eq!(run.injected().vector, 0x22);
        assert!(test.domain.devices.lapic.in_service.contains(0x22));
    }

    #[test]
    fn a_narrow_write_to_the_apic_is_dropped_and_a_narrow_read_takes_its_bytes() {
        let mut test = Test::long_mode();
        test.set_gpr(0, lapic::BASE + reg::SVR);
        let run = test.mmio(&[0x88, 0x08], lapic::BASE + reg::SVR); // mov [rax], cl
        assert!(run.emulate().what.contains("only aligned 32-bit writes"));
        assert_eq!(test.domain.devices.lapic.svr, 0xff);
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        test.set_gpr(0, lapic::BASE + reg::VERSION + 2);
        test.mmio(&[0x0f, 0xb6, 0x08], lapic::BASE + reg::VERSION + 2); // movzx ecx, byte [rax]
        assert_eq!(test.gpr(1), 0x05, "byte 2 of 0x50014");
    }

    #[test]
    fn an_mmio_access_at_an_unmapped_rip_kills_the_domain() {
        let test = Test::long_mode();
        let decision = test.decide(testing::exit(
            ExitReason::Npf {
                gpa: ID,
                info: NpfInfo::decode(0),
            },
            &[],
        ));
        assert_eq!(
            testing::killed(&decision),
            "undecodable instruction at the exit"
        );
    }
}
