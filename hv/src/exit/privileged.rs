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
//! | CLI, STI                | clear or set the kernel's *virtual* interrupt flag          |
//! | anything else           | the guest's own fault: the #GP is delivered to it           |
//!
//! Why CLI/STI need this: at CPL 3 with IOPL 0 they fault, while POPF silently leaves IF
//! alone — the famous x86 hole in Popek and Goldberg's terms, and the reason a PV kernel
//! uses a virtual flag instead of RFLAGS.IF.
//!
//! A #GP with an error code (a segment selector) or from CPL 0, or in a domain that did not
//! ask for PV mode (`set_pv_mode`), is not a privileged instruction: it is delivered.

use super::{Exit, hlt, ioio, msr};
use crate::decide;
use crate::decision::{Decision, Effect};
use crate::device::Devices;
use crate::domain::Guest;
use alloc::format;
use alloc::string::String;
use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};
use traplab_abi::event::Action;

/// What became of a #GP.
pub enum PrivilegedOp {
    /// Not a PV kernel's privileged instruction: deliver the #GP as usual.
    NotPv,
    /// Emulated.
    Done(Decision),
    /// A PV kernel's #GP that is its own fault, with the reason: deliver it.
    GuestsFault(String),
}

/// CR3 bits 3 (PWT) and 4 (PCD) are flags; the rest of 11:0 must be 0 without PCIDE, and
/// bits 63:52 are reserved in long mode (APM vol. 2, 3.1.2).
const CR3_FLAGS: u64 = (1 << 3) | (1 << 4);
const CR3_RESERVED: u64 = (0xfff & !CR3_FLAGS) | (0xfff << 52);

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
        Mnemonic::In | Mnemonic::Out => port_io(guest, &instruction, next, context),
        Mnemonic::Rdmsr => PrivilegedOp::Done(msr::emulate(exit, guest, false, next, context)),
        Mnemonic::Wrmsr => PrivilegedOp::Done(msr::emulate(exit, guest, true, next, context)),
        Mnemonic::Cli | Mnemonic::Sti => {
            let enable = instruction.mnemonic() == Mnemonic::Sti;
            let name = if enable { "STI" } else { "CLI" };
            // With the flag set, a pending interrupt is delivered after this exit (`apply.rs`).
            PrivilegedOp::Done(
                decide!(
                    Action::Emulate,
                    "{context}{name} changes the kernel's virtual interrupt flag, not RFLAGS.IF"
                )
                .with(Effect::VirtualInterruptFlag(enable))
                .with(Effect::Rip(next))
                .describe(format!("{name}: virtual interrupt flag = {}", enable as u8)),
            )
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
    let root = value & !0xfff & !(0xfff << 52);
    if value & CR3_RESERVED != 0 {
        return PrivilegedOp::GuestsFault(format!(
            "{context}MOV CR3, {value:#x} sets reserved bits: refused, the #GP is the guest's"
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
fn port_io(guest: &Guest, instruction: &Instruction, next: u64, context: &str) -> PrivilegedOp {
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
    let device = Devices::port_name(port);
    let direction = if input { "IN from" } else { "OUT to" };
    let (access, what) = ioio::port_access(guest, port, size, input);
    let decision = decide!(
        Action::Emulate,
        "{context}{direction} port {port:#x} ({device}): the hypervisor emulates the port"
    )
    .with(Effect::Port(access))
    .with(Effect::Rip(next));
    PrivilegedOp::Done(match what {
        Some(what) => decision.describe(what),
        None => decision,
    })
}
