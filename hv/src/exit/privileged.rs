//! A PV kernel's privileged instructions: #GP at CPL 3, decoded and emulated.
//!
//! A Xen PV kernel on x86-64 runs at CPL 3, like its own user programs: the hypervisor
//! alone has CPL 0. Every privileged instruction it executes raises #GP(0) (AMD APM vol. 2,
//! 4.9 and 8.2.14), and since the hypervisor intercepts #GP it sees each one first. As
//! Xen's `do_general_protection` does (via `emulate_privileged_op`), it decodes the
//! instruction and decides:
//!
//! | instruction             | what the hypervisor does                                   |
//! |-------------------------|------------------------------------------------------------|
//! | MOV CR3, reg            | checks the new root (page-aligned, no reserved bits, in the guest's RAM), writes CR3, flushes the guest's TLB |
//! | MOV reg, CR0/CR2/CR3/CR4 | reads the guest's register from the VMCB                  |
//! | MOV CR0/CR4, reg        | refuses: a PV kernel does not run the MMU, the hypervisor does |
//! | HLT                     | waits for an interrupt (`hlt.rs`), on the virtual interrupt flag |
//! | IN, OUT (not string)    | the guest's ports (`ioio.rs`)                               |
//! | RDMSR, WRMSR            | the guest's MSRs (`msr.rs`)                                 |
//! | CLI, STI                | clear or set the kernel's *virtual* interrupt flag; an STI that sets it leaves the next instruction in its interrupt shadow, as a CPU's |
//! | anything else           | the guest's own fault: the #GP is delivered to it           |
//!
//! Why CLI/STI need this: at CPL 3 with IOPL 0 they fault, while POPF silently leaves IF
//! alone — the famous x86 hole in Popek and Goldberg's terms, and the reason a PV kernel
//! uses a virtual flag instead of RFLAGS.IF.
//!
//! A #GP with an error code (a segment selector) or from CPL 0, or in a domain that did not
//! ask for PV mode (`set_pv_mode`), is not a privileged instruction: it is delivered.

use super::{Exit, cr, hlt, ioio, msr};
use crate::decide;
use crate::decision::{Decision, Effect};
use crate::domain::Guest;
use alloc::format;
use alloc::string::String;
use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};
use traplab_abi::event::Action;
use traplab_abi::x86::pte;

/// What became of a #GP.
pub enum PrivilegedOp {
    /// Not a PV kernel's privileged instruction: deliver the #GP as usual.
    NotPv,
    /// Emulated.
    Done(Decision),
    /// A PV kernel's #GP that is its own fault, with the reason: deliver it.
    GuestsFault(String),
}

pub fn handle(exit: &Exit, guest: &Guest, error_code: u32) -> PrivilegedOp {
    if !guest.pv.enabled || guest.vcpu.vmcb.save.cpl != 3 || error_code != 0 {
        return PrivilegedOp::NotPv;
    }
    let Some(instruction) = exit.decode_instruction(guest) else {
        return PrivilegedOp::GuestsFault(
            "a PV kernel's #GP at an instruction the hypervisor cannot decode".into(),
        );
    };
    let next = guest.vcpu.rip_after(instruction.len() as u64);
    let context = "a PV kernel at CPL 3 raised #GP; the hypervisor decodes it: ";
    match instruction.mnemonic() {
        Mnemonic::Mov if instruction.code() == Code::Mov_cr_r64 => {
            write_cr(guest, &instruction, next, context)
        }
        Mnemonic::Mov if instruction.code() == Code::Mov_r64_cr => {
            read_cr(guest, &instruction, next, context)
        }
        Mnemonic::Hlt => PrivilegedOp::Done(hlt::halt(guest, next, context)),
        Mnemonic::In | Mnemonic::Out => port_io(exit, guest, &instruction, next, context),
        Mnemonic::Rdmsr => PrivilegedOp::Done(msr::emulate(exit, guest, false, next, context)),
        Mnemonic::Wrmsr => PrivilegedOp::Done(msr::emulate(exit, guest, true, next, context)),
        Mnemonic::Cli | Mnemonic::Sti => {
            let enable = instruction.mnemonic() == Mnemonic::Sti;
            let name = if enable { "STI" } else { "CLI" };
            // STI that turns the flag on has an interrupt shadow: a CPU recognises interrupts
            // only after the next instruction (AMD APM vol. 3, STI). In `sti; hlt`, the idiom
            // of waiting for an interrupt, that makes the HLT run first, woken at once by an
            // interrupt already pending; delivered before it, the handler would return onto
            // the HLT, which would then wait for the next one. So the hypervisor runs both.
            // (Not with TF set: a CPU would trap after the STI, before the HLT.)
            let stepping =
                guest.vcpu.vmcb.save.rflags & traplab_abi::x86::RFlags::TRAP_FLAG.bits() != 0;
            // The instruction after the STI, in the bytes the exit read.
            let in_shadow = || {
                let rest = exit.instruction.as_slice().get(instruction.len()..)?;
                crate::instruction::decode(rest, guest.vcpu.vmcb.code_bits(), next)
            };
            if enable
                && !guest.pv.virtual_interrupt_flag
                && !stepping
                && let Some(vector) = guest.pending_interrupt()
                && let Some(hlt) = in_shadow().filter(|next| next.mnemonic() == Mnemonic::Hlt)
            {
                return PrivilegedOp::Done(
                    decide!(
                        Action::Emulate,
                        "{context}STI, then the HLT in its interrupt shadow: on a CPU the HLT runs first and the pending interrupt {vector:#x} wakes it at once, so the hypervisor runs both; the interrupt is delivered after the HLT"
                    )
                    .with(Effect::VirtualInterruptFlag(true))
                    .with(Effect::Rip(
                        guest.vcpu.rip_after((instruction.len() + hlt.len()) as u64),
                    ))
                    .describe("STI; HLT: virtual interrupt flag = 1, the HLT woken at once"),
                );
            }
            let decision = decide!(
                Action::Emulate,
                "{context}{name} changes the kernel's virtual interrupt flag, not RFLAGS.IF"
            )
            .with(Effect::VirtualInterruptFlag(enable))
            .with(Effect::Rip(next))
            .describe(format!("{name}: virtual interrupt flag = {}", enable as u8));
            // An STI that turns the flag on leaves the next instruction in its shadow: an
            // interrupt pending now is delivered after it, through the window the shadow
            // makes the hypervisor ask for (`domain/interrupts.rs`), as a CPU would. (QEMU's
            // TCG opens that window one instruction early, and the VINTR exit says so:
            // `quirks.rs`.)
            match enable && !guest.pv.virtual_interrupt_flag {
                true => PrivilegedOp::Done(decision.with(Effect::BeginInterruptShadow)),
                false => PrivilegedOp::Done(decision),
            }
        }
        // EXERCISE pv-privop.1: emulate CLTS (clear the kernel's CR0.TS), as Xen does for its
        // PV kernels' lazy FPU switching.
        other => PrivilegedOp::GuestsFault(format!(
            "{context}{}, which is not a privileged instruction the hypervisor emulates for a PV kernel: the #GP is the guest's",
            format!("{other:?}").to_uppercase()
        )),
    }
}

/// The control register number of `register` (CR0 → 0 …).
fn cr_number(register: Register) -> u8 {
    (register as u32).wrapping_sub(Register::CR0 as u32) as u8
}

fn write_cr(guest: &Guest, instruction: &Instruction, next: u64, context: &str) -> PrivilegedOp {
    let number = cr_number(instruction.op0_register());
    let Some((source, _)) = crate::instruction::gpr(instruction.op1_register()) else {
        return PrivilegedOp::GuestsFault(format!(
            "{context}MOV CR{number} from a register it cannot name"
        ));
    };
    let value = guest.gpr(source);
    if number != 3 {
        return PrivilegedOp::GuestsFault(format!(
            "{context}MOV CR{number}, {value:#x}: a PV kernel may not change CR{number} (the hypervisor runs the MMU), so the #GP is the guest's"
        ));
    }
    let root = value & pte::ADDRESS;
    // The CPU's own rule (`cr.rs`): a value it would refuse is the guest's #GP.
    if let Some(why) = cr::long_mode_cr3_refusal(value, guest.memory.physical_address_bits()) {
        return PrivilegedOp::GuestsFault(format!(
            "{context}MOV CR3, {value:#x} {why}: refused, the #GP is the guest's"
        ));
    }
    if root
        .checked_add(4096)
        .is_none_or(|end| end > guest.memory.size())
    {
        return PrivilegedOp::GuestsFault(format!(
            "{context}MOV CR3, {value:#x}: the new root is outside the guest's memory: refused, the #GP is the guest's"
        ));
    }
    // A kernel that pins its page tables has every write to them checked: a root it did not
    // pin would let it map them writable and change them unseen. Xen takes only a root it
    // can make a validated top-level table (`new_guest_cr3`: "Bad CR3" and #GP otherwise);
    // traplab validates by pinning, so the root must be one of the pinned ones (or, during
    // its first pin, the one being walked: `Domain::may_run_on`).
    if !guest.may_run_on(root) {
        return PrivilegedOp::GuestsFault(format!(
            "{context}MOV CR3, {value:#x}: the kernel pins its page tables, and {root:#x} is no root it pinned (pin_page_table): refused, as Xen refuses a root it cannot validate, and the #GP is the guest's"
        ));
    }
    // A new address space: flush the guest's TLB at the next VMRUN (APM vol. 2, 15.16).
    PrivilegedOp::Done(
        decide!(
            Action::Emulate,
            "{context}MOV CR3, {value:#x}: the new root is in the guest's memory, so the hypervisor switches its page tables"
        )
        .with(Effect::ControlRegister(3, value))
        .with(Effect::FlushTlb)
        .with(Effect::Rip(next))
        .describe(format!("CR3 = {value:#x}")),
    )
}

fn read_cr(guest: &Guest, instruction: &Instruction, next: u64, context: &str) -> PrivilegedOp {
    let number = cr_number(instruction.op1_register());
    let save = &guest.vcpu.vmcb.save;
    let value = match number {
        0 => save.cr0,
        2 => save.cr2,
        3 => save.cr3,
        4 => save.cr4,
        // CR8, the task priority, exists in 64-bit mode; Xen's PV emulation reads CR0, CR2,
        // CR3 and CR4 only (`pv_emul_read_cr`), and so does traplab's.
        8 => {
            return PrivilegedOp::GuestsFault(format!(
                "{context}MOV from CR8, which a PV kernel's emulation does not read (CR0, CR2, CR3 and CR4 only, as Xen's)"
            ));
        }
        _ => {
            return PrivilegedOp::GuestsFault(format!(
                "{context}MOV from CR{number}, which does not exist"
            ));
        }
    };
    let Some((target, _)) = crate::instruction::gpr(instruction.op0_register()) else {
        return PrivilegedOp::GuestsFault(format!(
            "{context}MOV from CR{number} to a register it cannot name"
        ));
    };
    PrivilegedOp::Done(
        decide!(
            Action::Emulate,
            "{context}MOV from CR{number}: the hypervisor reads the guest's CR{number} = {value:#x}"
        )
        .with(Effect::Gpr(target, value))
        .with(Effect::Rip(next))
        .describe(format!("read CR{number} = {value:#x}")),
    )
}

/// IN AL/AX/EAX, imm8 or DX; OUT imm8 or DX, AL/AX/EAX (INS/OUTS are left to the guest).
fn port_io(
    exit: &Exit,
    guest: &Guest,
    instruction: &Instruction,
    next: u64,
    context: &str,
) -> PrivilegedOp {
    let input = instruction.mnemonic() == Mnemonic::In;
    let (port_operand, data_operand) = if input { (1, 0) } else { (0, 1) };
    let port = match instruction.op_kind(port_operand) {
        OpKind::Immediate8 => instruction.immediate8() as u16,
        OpKind::Register => guest.gpr(2) as u16, // DX
        _ => {
            return PrivilegedOp::GuestsFault(format!(
                "{context}a string port instruction, which the hypervisor leaves to the guest"
            ));
        }
    };
    let size = match instruction.op_register(data_operand) {
        Register::AL => 1,
        Register::AX => 2,
        Register::EAX => 4,
        _ => {
            return PrivilegedOp::GuestsFault(format!(
                "{context}a string port instruction, which the hypervisor leaves to the guest"
            ));
        }
    };
    if !input && let Some(end) = ioio::ends_the_machine(port, size, guest.gpr(0) as u32, context) {
        return PrivilegedOp::Done(end);
    }
    // As for an IOIO exit: an IRQ 8 the RTC's due tick raises comes before the access.
    let name = if input { "IN" } else { "OUT" };
    if let Some(interrupt) = ioio::rtc_interrupt_first(exit.tsc, guest, port, size, name, context) {
        return PrivilegedOp::Done(interrupt);
    }
    let device = guest.devices.port_name(port);
    let direction = if input { "IN from" } else { "OUT to" };
    let (access, what) = ioio::port_access(guest, port, size, input);
    // As for an IOIO exit: the disk controller is its owner's, never emulated (`device/ata.rs`).
    let why = guest
        .devices
        .disk
        .refusal(guest.id, port, input)
        .unwrap_or_else(|| "the hypervisor emulates the port".into());
    let decision = decide!(
        Action::Emulate,
        "{context}{direction} port {port:#x} ({device}): {why}"
    )
    .with(Effect::Port(access))
    .with(Effect::Rip(next));
    let decision = match what {
        Some(what) => decision.describe(what),
        None => decision,
    };
    // The hypervisor completed the IN or OUT: an I/O breakpoint on the port follows it, as
    // after an IOIO exit's (`delivery::with_io_breakpoints`).
    PrivilegedOp::Done(crate::delivery::with_io_breakpoints(
        guest,
        port,
        size,
        decision,
        crate::delivery::Progress::Completed,
    ))
}

#[cfg(test)]
mod tests {
    use crate::decision::{Decision, Effect, PortAccess};
    use crate::domain::interrupts::{TimerTarget, VirtualTimer};
    use crate::testing::{self, ENTRY, Run, Test};
    use traplab_abi::event::{Action, EventType};
    use traplab_abi::exit::ExitReason;
    use traplab_abi::svm::Event;

    const GP_HANDLER: u64 = 0x20_a000;

    /// A PV kernel (set_pv_mode(1)) running at CPL 3, with `bytes` at RIP.
    fn pv_kernel(bytes: &[u8]) -> Test {
        let mut test = Test::long_mode();
        test.code(bytes);
        test.domain.vcpu.vmcb.save.cpl = 3;
        test.domain.pv.enabled = true;
        test.gate(13, GP_HANDLER);
        test
    }

    /// The #GP(0) the instruction at RIP raised at CPL 3, run.
    fn general_protection(test: &mut Test) -> Run {
        test.run(test.exit(ExitReason::Exception {
            vector: 13,
            error_code: 0,
            address: 0,
        }))
    }

    /// The guest gets the #GP it raised: reflected, with its error code, not synthetic.
    fn assert_guests_own_fault(test: &Test, decision: &Decision, error_code: u32) {
        assert_eq!(decision.action, Action::Reflect, "{}", decision.why);
        let (event, handler, synthetic) = testing::injected(decision);
        assert_eq!(event, Event::exception(13, error_code));
        assert_eq!(handler, Some(GP_HANDLER));
        assert!(!synthetic, "the CPU raised it");
        assert_eq!(test.rip(), ENTRY, "a fault: RIP stays at the instruction");
    }

    #[test]
    fn without_pv_mode_a_gp_at_cpl_3_is_delivered_to_the_guest() {
        // CLI at CPL 3 with IOPL 0 raises #GP(0) (AMD APM vol. 3, CLI). A domain that did
        // not ask for PV mode gets it.
        let mut test = pv_kernel(&[0xfa]);
        test.domain.pv.enabled = false;
        let run = general_protection(&mut test);
        assert_guests_own_fault(&test, &run.decision, 0);
    }

    #[test]
    fn a_gp_at_cpl_0_is_not_a_privileged_instruction() {
        let mut test = pv_kernel(&[0xfa]);
        test.domain.vcpu.vmcb.save.cpl = 0;
        let run = general_protection(&mut test);
        assert_guests_own_fault(&test, &run.decision, 0);
    }

    #[test]
    fn a_gp_with_an_error_code_names_a_selector_and_is_delivered() {
        // A nonzero error code is a segment selector (APM vol. 2, 8.4.1): a segment
        // fault, not a privileged instruction.
        let mut test = pv_kernel(&[0x8e, 0xd8]); // mov ds, eax
        let run = test.run(test.exit(ExitReason::Exception {
            vector: 13,
            error_code: 0x18,
            address: 0,
        }));
        assert_guests_own_fault(&test, &run.decision, 0x18);
    }

    #[test]
    fn pv_cli_and_sti_change_the_virtual_interrupt_flag_not_rflags_if() {
        let mut test = pv_kernel(&[0xfb]); // sti
        let run = general_protection(&mut test);
        assert_eq!(run.decision.action, Action::Emulate);
        assert!(test.domain.pv.virtual_interrupt_flag);
        assert!(run.changes().contains(&("virtual IF", 0, 1)));
        assert_eq!(
            test.domain.vcpu.vmcb.save.rflags, 0x2,
            "RFLAGS.IF untouched"
        );
        assert_eq!(test.rip(), ENTRY + 1);

        test.domain.vcpu.vmcb.save.rip = ENTRY;
        test.code(&[0xfa]); // cli
        let run = general_protection(&mut test);
        assert!(!test.domain.pv.virtual_interrupt_flag);
        assert_eq!(run.emulate().what, "CLI: virtual interrupt flag = 0");
    }

    #[test]
    fn a_pv_sti_delivers_a_pending_interrupt_after_the_instruction_in_its_shadow() {
        // `sti; nop`: a CPU recognises the interrupt only after the NOP (AMD APM vol. 3,
        // STI). The shadow is set, and the window asked for: the CPU exits (VINTR) once the
        // NOP has run, and the interrupt is injected there.
        let mut test = pv_kernel(&[0xfb, 0x90]);
        test.gate(0x20, 0x20_b000);
        test.domain.vcpu.interrupts.pending = Some(0x20);
        let run = general_protection(&mut test);
        assert_eq!(run.kinds(), ["decide", "emulate", "emulate"]);
        let Some(traplab_abi::event::Body::Emulate(window)) = run.events.last() else {
            panic!("{:?}", run.kinds())
        };
        assert!(window.what.contains("the guest is in an interrupt shadow"));
        assert_eq!(test.domain.vcpu.vmcb.control.interrupt_shadow, 1);
        assert_eq!(test.rip(), ENTRY + 1);
        test.vmrun();
        test.domain.vcpu.vmcb.save.rip = ENTRY + 2; // the NOP ran
        test.domain.vcpu.vmcb.control.interrupt_shadow = 0;
        let vintr = test.run(test.exit(ExitReason::Vintr));
        let inject = vintr.injected();
        assert_eq!((inject.vector, inject.kind), (0x20, EventType::Interrupt));
        // An STI with the flag already on has no shadow (nor does it change anything).
        let mut test = pv_kernel(&[0xfb, 0x90]);
        test.domain.pv.virtual_interrupt_flag = true;
        let run = general_protection(&mut test);
        assert!(!run.decision.effects.contains(&Effect::BeginInterruptShadow));
    }

    #[test]
    fn a_pv_sti_then_hlt_with_an_interrupt_pending_runs_the_hlt_first() {
        // `sti; hlt`: the HLT is in STI's shadow, and the pending interrupt wakes it at
        // once. Delivered at the HLT instead, the handler would return onto it, and the
        // kernel would sleep until the next interrupt.
        let mut test = pv_kernel(&[0xfb, 0xf4]);
        test.gate(0x20, 0x20_b000);
        test.domain.vcpu.interrupts.pending = Some(0x20);
        let run = general_protection(&mut test);
        assert_eq!(run.kinds(), ["decide", "emulate", "inject"]);
        assert!(test.domain.pv.virtual_interrupt_flag);
        let inject = run.injected();
        assert_eq!((inject.vector, inject.kind), (0x20, EventType::Interrupt));
        assert_eq!(
            test.rip(),
            ENTRY + 2,
            "injected past the HLT, which ran: the frame's RIP"
        );
        // Without an interrupt pending the HLT has nothing to wake it: it waits, as its own
        // #GP will say.
        let mut test = pv_kernel(&[0xfb, 0xf4]);
        general_protection(&mut test);
        assert_eq!(test.rip(), ENTRY + 1);
        // With TF, a CPU traps after the STI: the HLT is not run with it.
        let mut test = pv_kernel(&[0xfb, 0xf4]);
        test.gate(1, 0x20_c000);
        test.domain.vcpu.interrupts.pending = Some(0x20);
        test.domain.vcpu.vmcb.save.rflags |= traplab_abi::x86::RFlags::TRAP_FLAG.bits();
        let run = general_protection(&mut test);
        assert_eq!(run.injected().vector, 1, "the single step's #DB");
        assert_eq!(test.rip(), ENTRY + 1, "after the STI alone");
    }

    #[test]
    fn pv_mov_cr3_to_a_root_in_ram_switches_the_page_tables() {
        let mut test = pv_kernel(&[0x0f, 0x22, 0xd8]); // mov cr3, rax
        test.set_gpr(0, 0x4_0000);
        let run = general_protection(&mut test);
        assert_eq!(
            run.decision.effects,
            [
                Effect::ControlRegister(3, 0x4_0000),
                Effect::FlushTlb,
                Effect::Rip(ENTRY + 3)
            ]
        );
        assert_eq!(test.domain.vcpu.vmcb.save.cr3, 0x4_0000);
    }

    #[test]
    fn a_kernel_that_pins_its_tables_may_load_only_a_pinned_root() {
        // Its tables pinned, a root it did not pin could map them writable: #GP, as Xen's
        // new_guest_cr3 refuses a root it cannot validate. A pinned root is taken.
        let mut test = pv_kernel(&[0x0f, 0x22, 0xd8]); // mov cr3, rax
        test.domain.pv.pinned_tables.insert(0x5_0000, 4);
        test.domain.pv.pinned_tables.insert(0x5_1000, 3);
        for (root, taken) in [(0x4_0000, false), (0x5_1000, false), (0x5_0000, true)] {
            test.domain.vcpu.vmcb.save.rip = ENTRY;
            test.set_gpr(0, root);
            let run = general_protection(&mut test);
            assert_eq!(
                run.decision
                    .effects
                    .contains(&Effect::ControlRegister(3, root)),
                taken,
                "{root:#x}: {}",
                run.decision.why
            );
        }
        assert_eq!(test.domain.vcpu.vmcb.save.cr3, 0x5_0000);
    }

    #[test]
    fn pv_mov_cr3_to_a_root_outside_ram_is_refused_with_the_guest_s_gp() {
        let mut test = pv_kernel(&[0x0f, 0x22, 0xd8]);
        test.set_gpr(0, 0x1000_0000); // 256 MiB: the guest has 16
        let run = general_protection(&mut test);
        assert_guests_own_fault(&test, &run.decision, 0);
        assert!(run.decision.why.contains("outside the guest's memory"));
        assert_eq!(test.domain.vcpu.vmcb.save.cr3, crate::testing::PML4);
    }

    #[test]
    fn pv_mov_cr3_with_reserved_bits_is_refused() {
        let mut test = pv_kernel(&[0x0f, 0x22, 0xd8]);
        test.set_gpr(0, (1 << 60) | 0x4_0000);
        let run = general_protection(&mut test);
        assert_guests_own_fault(&test, &run.decision, 0);
        assert!(run.decision.why.contains("reserved bits 63:52"));
        // Bit 0 is reserved too, but a CPU ignores it (no #GP): so does the hypervisor.
        let mut test = pv_kernel(&[0x0f, 0x22, 0xd8]);
        test.set_gpr(0, 0x4_0001);
        let run = general_protection(&mut test);
        assert_eq!(run.decision.action, Action::Emulate, "{}", run.decision.why);
    }

    #[test]
    fn pv_mov_to_cr0_is_refused_the_hypervisor_runs_the_mmu() {
        let mut test = pv_kernel(&[0x0f, 0x22, 0xc0]); // mov cr0, rax
        let run = general_protection(&mut test);
        assert_guests_own_fault(&test, &run.decision, 0);
        assert!(run.decision.why.contains("may not change CR0"));
    }

    #[test]
    fn pv_mov_from_cr2_reads_the_guest_s_cr2() {
        // A PV kernel's #PF handler reads the faulting address this way.
        let mut test = pv_kernel(&[0x0f, 0x20, 0xd0]); // mov rax, cr2
        test.domain.vcpu.vmcb.save.cr2 = 0xdead_b000;
        let run = general_protection(&mut test);
        assert_eq!(test.gpr(0), 0xdead_b000);
        assert!(
            run.decision
                .why
                .starts_with("a PV kernel at CPL 3 raised #GP")
        );
    }

    #[test]
    fn pv_mov_from_cr8_is_the_guest_s_gp_and_says_why_not_that_cr8_does_not_exist() {
        // CR8 exists in 64-bit mode; Xen's PV emulation (pv_emul_read_cr) reads no CR8.
        let mut test = pv_kernel(&[0x44, 0x0f, 0x20, 0xc0]); // mov rax, cr8
        let run = general_protection(&mut test);
        assert_guests_own_fault(&test, &run.decision, 0);
        assert!(
            run.decision
                .why
                .contains("MOV from CR8, which a PV kernel's emulation does not read"),
            "{}",
            run.decision.why
        );
    }

    #[test]
    fn pv_hlt_with_the_virtual_flag_clear_ends_the_domain() {
        let mut test = pv_kernel(&[0xf4]);
        // RFLAGS.IF is set, but a PV kernel's interrupt flag is the virtual one.
        test.interrupts_on();
        let run = general_protection(&mut test);
        assert_eq!(
            testing::exited(&run.decision),
            (0, "halted with interrupts off")
        );
        assert!(
            run.decision
                .why
                .starts_with("a PV kernel at CPL 3 raised #GP")
        );
    }

    #[test]
    fn pv_hlt_with_the_virtual_flag_set_waits_for_the_timer() {
        let mut test = pv_kernel(&[0xf4]);
        test.domain.pv.virtual_interrupt_flag = true;
        test.domain.vcpu.interrupts.timers.set_timer = Some(VirtualTimer {
            vector: 0x20,
            period_tsc: 10_000,
            due_tsc: test.machine.now.get() + 1_000,
            target: TimerTarget::Pending,
        });
        let run = general_protection(&mut test);
        assert!(run.decision.effects.contains(&Effect::HaltUntilInterrupt));
        assert_eq!(test.rip(), ENTRY + 1);
    }

    #[test]
    fn pv_out_to_the_console_goes_through_the_port_emulation() {
        let mut test = pv_kernel(&[0xee]); // out dx, al
        test.set_gpr(0, b'H' as u64);
        test.set_gpr(2, 0x3f8);
        let run = general_protection(&mut test);
        assert!(
            run.decision
                .effects
                .contains(&Effect::Port(PortAccess::Out {
                    port: 0x3f8,
                    size: 1,
                    value: b'H' as u32
                }))
        );
        assert_eq!(run.emulate().what, "OUT 'H' to the console UART");
        assert_eq!(test.rip(), ENTRY + 1);
    }

    #[test]
    fn a_pv_kernel_s_out_to_isa_debug_exit_ends_the_domain_as_an_ioio_exit_s_does() {
        // The same OUT at CPL 0 exits as IOIO and ends the domain (`ioio.rs`); at CPL 3 it
        // faults first, and the emulation must not send it to the device bus instead.
        let mut test = pv_kernel(&[0xee]); // out dx, al
        test.set_gpr(0, 3);
        test.set_gpr(2, 0xf4);
        let run = general_protection(&mut test);
        assert_eq!(testing::exited(&run.decision).0, 3);
        assert!(
            run.decision.why.contains("(QEMU's isa-debug-exit)"),
            "{}",
            run.decision.why
        );
    }

    #[test]
    fn pv_in_with_an_immediate_port_reads_the_device() {
        let mut test = pv_kernel(&[0xe4, 0x80]); // in al, 0x80
        general_protection(&mut test);
        assert_eq!(test.gpr(0) & 0xff, 0xff, "no device at 0x80");
        assert_eq!(test.rip(), ENTRY + 2);
    }

    #[test]
    fn a_pv_kernel_s_in_on_an_io_breakpoint_s_port_is_followed_by_its_debug_trap() {
        // DR0 = port 0x80, DR7 = L0 with R/W0 = 10b, CR4.DE: the emulated IN, then #DB.
        let mut test = pv_kernel(&[0xe4, 0x80]); // in al, 0x80
        test.gate(1, 0x20_1000);
        let save = &mut test.domain.vcpu.vmcb.save;
        save.cr4 |= traplab_abi::x86::Cr4Flags::DEBUGGING_EXTENSIONS.bits();
        save.dr7 = 0x400 | 0b10 << 16 | 1;
        test.machine.breakpoints[0] = 0x80;
        let run = general_protection(&mut test);
        assert_eq!(test.gpr(0) & 0xff, 0xff, "the IN is done first");
        assert_eq!(testing::injected(&run.decision).0.vector, 1);
        assert_ne!(test.domain.vcpu.vmcb.save.dr6 & 1, 0, "B0");
    }

    #[test]
    fn a_pv_kernel_s_in_from_the_disk_controller_is_refused_even_for_its_owner() {
        // At CPL 3 the IN faults before the I/O permission map is looked at; the hypervisor
        // does no I/O for a domain, so the owner too reads all ones, and is told why.
        for (owner, expected) in [
            (
                2,
                "the controller belongs to d2, the driver domain; d1 may not reach it",
            ),
            (1, "d1 owns the controller, but only its IN and OUT"),
        ] {
            let mut test = pv_kernel(&[0xe4, 0xf7]); // in al, 0xf7: not the controller
            test.domain.devices.disk = crate::device::ata::Assignment::Owner(owner);
            let run = general_protection(&mut test);
            assert!(
                run.decision.why.contains("(no device)"),
                "{}",
                run.decision.why
            );
            let mut test = pv_kernel(&[0xec]); // in al, dx
            test.set_gpr(2, 0x1f7);
            test.domain.devices.disk = crate::device::ata::Assignment::Owner(owner);
            let run = general_protection(&mut test);
            assert!(
                run.decision
                    .why
                    .contains("IN from port 0x1f7 (ATA disk controller): ")
                    && run.decision.why.contains(expected),
                "{}",
                run.decision.why
            );
            assert_eq!(test.gpr(0) & 0xff, 0xff);
            assert_eq!(test.rip(), ENTRY + 1);
        }
    }

    #[test]
    fn pv_rdmsr_is_emulated_as_the_msr_exit_would_be() {
        let mut test = pv_kernel(&[0x0f, 0x32]);
        test.set_gpr(1, traplab_abi::msr::LSTAR as u64);
        test.domain.vcpu.vmcb.save.lstar = 0x1234_5678;
        let run = general_protection(&mut test);
        assert_eq!(test.gpr(0), 0x1234_5678);
        assert!(run.decision.at.contains("src/exit/msr.rs:"));
    }

    #[test]
    fn pv_lidt_is_refused_with_the_guest_s_gp() {
        // The IDT is the hypervisor's business in a PV domain (its trap table instead).
        let mut test = pv_kernel(&[0x0f, 0x01, 0x18]); // lidt [rax]
        let run = general_protection(&mut test);
        assert_guests_own_fault(&test, &run.decision, 0);
        assert!(run.decision.why.contains("LIDT"), "{}", run.decision.why);
    }

    #[test]
    fn a_pv_gp_at_an_undecodable_instruction_is_the_guest_s() {
        let mut test = pv_kernel(&[0xff, 0xff]);
        let run = general_protection(&mut test);
        assert_guests_own_fault(&test, &run.decision, 0);
        assert!(run.decision.why.contains("cannot decode"));
    }

    #[test]
    fn a_pv_kernel_s_in_from_the_rtc_waits_for_the_irq_8_its_due_tick_raises() {
        // As after an IOIO exit (`ioio.rs`): its virtual flag on, IRQ 8 open, UIE on, status
        // C selected; the update's end has passed unnoticed when its IN from 0x71 raises
        // #GP. The tick comes first, its interrupt is injected, and the IN waits.
        let mut test = Test::long_mode();
        test.rtc_update_ended_due();
        test.code(&[0xe4, 0x71]); // in al, 0x71
        test.domain.vcpu.vmcb.save.cpl = 3;
        test.domain.pv.enabled = true;
        test.domain.pv.virtual_interrupt_flag = true;
        test.gate(13, GP_HANDLER);
        test.set_gpr(0, 0x5a);
        let run = general_protection(&mut test);
        assert!(
            run.decision
                .why
                .contains("the guest takes the interrupt first"),
            "{}",
            run.decision.why
        );
        assert_eq!(run.injected().vector, 0x28);
        assert_eq!((test.rip(), test.gpr(0)), (ENTRY, 0x5a), "the IN waits");
        assert_eq!(test.domain.devices.rtc.status_c(), 0x90, "for the handler");
    }
}
