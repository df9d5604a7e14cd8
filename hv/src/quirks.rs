//! Where QEMU's TCG differs from a real CPU, and how the hypervisor restores the hardware's
//! behaviour. Measured on QEMU 7.2 (see ../README.md); each correction is a decision in the
//! trace with its own line here, and the event it delivers is marked synthetic.
//!
//! | TCG does                                        | a real CPU does            |
//! |-------------------------------------------------|----------------------------|
//! | `icebp` (0xF1) raises #UD (QEMU builds without ICEBP support) | #DB after the instruction |
//! | a non-canonical *stack* access raises #GP(0)    | #SS(0)                     |
//! | in long mode, a fault on an IDT gate reports error code `vector * 16 + 2` (QEMU's `do_interrupt64`) | `vector * 8 + 2`: the index field holds the vector |
//! | a #TS, #NP, #SS or #GP raised while delivering an interrupt, an NMI or an exception has EXT (bit 0) clear (QEMU never sets it) | EXT set: the event came from outside the program (AMD APM vol. 2, 8.4.1; Intel SDM vol. 3A, 6.13); clear only while delivering INT n, INT3 or INTO |
//! | a guest's MOV to CR4 with a bit QEMU deems reserved (OSXSAVE, even with `+xsave`) ends in VMEXIT_INVALID, exit code 0xffffffff | #GP(0) in the guest. (CR4 writes exit, below: on `qemu64`, which has no XSAVE, `exit/cr.rs` refuses OSXSAVE itself; with `+xsave` it emulates the MOV, and the VMRUN after it fails, a case this correction does not cover. The correction stays for CR3's writes, which exit only with `intercept-cr` or pinned page tables: measured, a CR3 with bit 40 or bit 62 set gets VMEXIT_INVALID at the MOV, and the guest this #GP) |
//! | `lock int n` (`f0 cd n`; also INT3, INTO, and RDTSC, HLT, WBINVD, PAUSE, IN, OUT, IRET…) exits as for the plain instruction: QEMU ignores the LOCK prefix there (measured for `lock in`, `lock out` and `lock iretq`: the port access emulated, the IRET executed) | #UD before any intercept: LOCK on an instruction that is not a read-modify-write of memory (AMD APM vol. 3, 1.2.5). Corrected in every handler that cannot decode the instruction it must complete (`exit::undecodable`), and in the two that need not decode it: a port's (`exit/ioio.rs`) and IRET's (`exit/iret.rs`), through `locked` here |
//! | a guest's RDTSCP exits as RDTSC (QEMU's `helper_rdtscp` checks only the RDTSC intercept), and INVD as WBINVD | exit codes 0x87 and 0x76: the hypervisor takes the instruction's own mnemonic (`exit/rdtsc.rs`, `exit/wbinvd.rs`), so RDTSCP gets the #UD of the CPU the guest is shown, which has no RDTSCP, and the trace names INVD |
//! | an exception injected with EVENTINJ gets an error code only for vectors 8, 10–14 and 17 (QEMU's `exception_has_error_code`; EVENTINJ.EV is ignored, "FIXME: need to implement valid_err") | #CP (21), #VC (29) and #SX (30) push one too: the hypervisor injects them without one, and says so, so that the trace shows what the guest's handler finds |
//! | MOV to CR0 with PG but not PE, with NW but not CD, or clearing PG in 64-bit mode is taken, and one with a bit of 63:32 loses the bit and is taken (measured on a lab guest without the CR0 intercept: after PG without PE, a VMEXIT_INVALID two exits later, the domain killed; after PG cleared, a #PF at RIP 0, the guest lost) | #GP(0) at the MOV (AMD APM vol. 2, 3.1.1 and 14.7): corrected by intercepting, in every domain, the CR0 writes that change more than TS and MP (the selective intercept, `intercepts.rs`) and checking them in `exit/cr.rs`, whose refusal says what TCG would have done. Not corrected: a write that changes bits 63:32 and nothing else beyond TS and MP does not exit (TCG's selective intercept compares bits 31:0; a CPU's takes it), and the bit is dropped (the `cr-write` lab shows it). Read in QEMU's source, not measured: a MOV to CR0 that sets PG with EFER.LME set but CR4.PAE clear is ignored whole (`cpu_x86_update_cr0` returns, "XXX: generate an exception"), where a CPU raises #GP(0); the intercept corrects it too |
//! | MOV to CR8 with bits 63:4 set keeps bits 3:0 (QEMU's `helper_write_crN`) | #GP(0): corrected by intercepting every CR8 write (`intercepts.rs`) and checking it in `exit/cr.rs` |
//! | MOV to CR4 that clears PAE in long mode is taken (QEMU's `helper_write_crN` checks only reserved bits and LA57): the guest's next access walks its tables as 32-bit ones (here a #PF at the next instruction), and a later VMRUN fails (VMEXIT_INVALID, the domain killed) | #GP(0) at the MOV (AMD APM vol. 2, 3.1.3): corrected by intercepting every CR4 write (`intercepts.rs`) and checking it in `exit/cr.rs` |
//! | WRMSR of a non-canonical FS_BASE is accepted (QEMU's `helper_wrmsr` checks nothing) | #GP(0): corrected in `exit/msr.rs` for every MSR the hypervisor intercepts; *not* with the setting `passthrough-fs-base`, which hands FS_BASE to TCG on purpose |
//! | in legacy PAE paging, sets the accessed bit (bit 5) in the page-directory pointer a walk used, as in a long-mode entry | leaves the pointer alone (bit 5 is reserved there; an Intel CPU checks it when it loads the four pointers, SDM vol. 3A, 4.4.1): `traplab_abi::x86::translate` counts only a pointer's high reserved bits in a walk |
//! | a single-step trap (RFLAGS.TF) after STI comes only after the next instruction has run too: TCG's translator holds it back as for MOV SS (fixed in QEMU 9.2.4 and 10.0.1, "target/i386: do not block singlestep for STI") | the #DB right after the STI: only MOV SS and POP SS hold the single-step trap back. Not corrected: gdb's step over an STI runs two instructions, and its stop says so (`gdb/mod.rs`); a guest's own TF over STI gets its #DB one instruction late |
//! | an IOIO exit of INS or OUTS leaves EXITINFO1's address-size bits (A16, A32, A64: bits 9:7) clear (QEMU's `gen_check_io` sets only the type, STR, REP, the size and the port) | sets the one of the instruction's address size (AMD APM vol. 2, 15.10.2): the hypervisor takes it from the decoded instruction (`exit/ioio.rs`), as it takes the segment, which only decode assists report |
//! | a MOV to or from a debug register while DR7.GD is set runs (QEMU's `helper_get_dr` and `helper_set_dr` do not implement general detect) | #DB before the MOV, DR6.BD set, GD cleared (AMD APM vol. 2, 13.1.1.5): corrected in `exit/dr.rs` in every domain: a MOV to DR7 always exits, and while GD is set every MOV with a debug register does (`Vcpu::debug_register_intercepts`; the `other-intercepts` lab shows it) |
//! | a long-mode walk ignores bit 8 of a PML4E and of a PDPE that points to a page directory (QEMU's `mmu_translate` checks PS and the address bits only), as an Intel CPU does | #PF with RSVD: AMD reserves that bit (AMD APM vol. 2, 5.3.3). Not corrected in the guest's own accesses (they never exit); the hypervisor's walks in the CPU's place (`traplab_abi::x86::translate`: an instruction's bytes, a frame, a string element) fault as AMD's CPU does |
//! | VMRUN does not restore the interrupt shadow the #VMEXIT saved in the VMCB (QEMU's `helper_vmrun` never reads `int_state`), so after an exit between `sti` and the next instruction a pending virtual interrupt is taken *before* that instruction | the shadow holds until the instruction has run (AMD APM vol. 2, 15.21.5): for `sti; hlt` the HLT runs first and the interrupt wakes it. Corrected in `exit/vintr.rs` for HLT (the HLT is done, then the interrupt delivered after it); for any other instruction the early delivery is said in the decision |

use crate::decision::{Decision, Delivery, Effect};
use crate::deliver;
use crate::domain::Guest;
use alloc::format;
use alloc::string::String;
use iced_x86::{Instruction, Mnemonic, Register};
use traplab_abi::event::InstructionBytes;
use traplab_abi::svm::{Event, EventType};
use traplab_abi::x86::{self, EferFlags};

/// The error code a real CPU reports for fault `vector`, raised as it delivered
/// `interrupted` (from EXITINTINFO), when TCG reported another one, and what differs. Two
/// things may, both in the selector format of #TS, #NP, #SS and #GP (Intel SDM vol. 3A,
/// 6.13; AMD APM vol. 2, 8.4.1):
/// - EXT (bit 0) says the exception came from an event external to the program (the
///   80386's manual, 9.7; Intel's "such as an interrupt or an earlier exception"; AMD's
///   shorter "external to the processor"): an interrupt, an NMI or an exception being
///   delivered sets it, a software interrupt (INT n, INT3, INTO) does not. Bochs, which
///   models both vendors' CPUs, does the same. TCG never sets it (QEMU's `do_interrupt64`
///   and `do_interrupt_protected`).
/// - In long mode, an error code that names an IDT gate (bit 1, IDT) has the vector in its
///   index field (bits 15:3), and TCG writes twice the vector there.
pub fn error_code(
    guest: &Guest,
    interrupted: Option<Event>,
    vector: u8,
    error_code: u32,
) -> Option<(u32, &'static str)> {
    const EXTERNAL: u32 = 1 << 0;
    const IDT: u32 = 1 << 1;
    let interrupted = interrupted?;
    if !matches!(vector, 10..=13) {
        return None;
    }
    let long_mode = EferFlags::from_bits_truncate(guest.vcpu.vmcb.save.efer)
        .contains(EferFlags::LONG_MODE_ACTIVE);
    let gate = (interrupted.vector as u32) << 3 | IDT;
    let index_doubled =
        long_mode && error_code & IDT != 0 && error_code & !3 == (interrupted.vector as u32) << 4;
    let selector = match index_doubled {
        true => gate,
        false => error_code & !EXTERNAL,
    };
    let external = match interrupted.kind {
        EventType::Interrupt | EventType::Nmi | EventType::Exception => EXTERNAL,
        EventType::Software => 0,
    };
    let corrected = selector | external;
    let what = match (index_doubled, corrected & EXTERNAL != error_code & EXTERNAL) {
        (false, false) => return None,
        (true, false) => "the IDT index of the gate",
        (false, true) => "EXT set: the event being delivered came from outside the program",
        (true, true) => {
            "the IDT index of the gate, EXT set: the event being delivered came from outside the program"
        }
    };
    Some((corrected, what))
}

/// A VMEXIT_INVALID caused by the guest's own MOV to a control register (TCG checks the
/// new value against the VMRUN rules instead of raising #GP): deliver the #GP.
pub fn invalid_state(guest: &Guest, instruction: &InstructionBytes) -> Option<Decision> {
    let instruction = decode(guest, instruction)?;
    if instruction.mnemonic() != iced_x86::Mnemonic::Mov || !instruction.op0_register().is_cr() {
        return None;
    }
    Some(deliver!(
        guest,
        13,
        0,
        true,
        "QEMU's TCG refused the guest's MOV to a control register with VMEXIT_INVALID; a real CPU raises #GP(0) in the guest, so the hypervisor delivers that"
    ))
}

/// An exit at an instruction with a LOCK prefix it may not have: the CPU raises #UD for
/// it (AMD APM vol. 3, 1.2.5: LOCK is allowed only on the read-modify-write instructions
/// with a memory destination), before any intercept (vol. 2, 15.9: #UD is checked before
/// an instruction's intercept); QEMU's TCG ignores the prefix on INT n, INT3, INTO, RDTSC,
/// HLT, WBINVD, PAUSE and others, and exits as for the plain instruction. Deliver the #UD,
/// at the instruction (a fault). `None` for bytes without such a prefix.
pub fn locked(guest: &Guest, instruction: &InstructionBytes) -> Option<Decision> {
    // A look at the prefixes first: this runs at every port exit and every IRET.
    if !has_lock_prefix(instruction.as_slice()) {
        return None;
    }
    // The checking decoder refuses these bytes; the lenient one says what they are.
    let vmcb = &guest.vcpu.vmcb;
    let decode = |options| {
        iced_x86::Decoder::with_ip(
            vmcb.code_bits(),
            instruction.as_slice(),
            vmcb.save.rip,
            options,
        )
        .decode()
    };
    let decoded = decode(crate::instruction::DECODER | iced_x86::DecoderOptions::NO_INVALID_CHECK);
    if decoded.is_invalid()
        || !decoded.has_lock_prefix()
        || !decode(crate::instruction::DECODER).is_invalid()
    {
        return None;
    }
    let name = format!("{:?}", decoded.mnemonic()).to_ascii_uppercase();
    Some(deliver!(
        guest,
        6,
        0,
        true,
        "a LOCK prefix on {name}: QEMU's TCG ignored it and exited as for the instruction itself; a real CPU raises #UD before any intercept, so the hypervisor delivers that"
    ))
}

/// Is there a LOCK prefix (0xF0) among the prefixes `bytes` start with: the legacy ones (AMD
/// APM vol. 3, 1.2) and REX (0x40–0x4F)? Outside 64-bit mode 0x40–0x4F are INC and DEC, but
/// no instruction that exits to a caller of this starts with one there: scanning over them
/// can only send bytes to the decoder in [`locked`], which has the last word.
fn has_lock_prefix(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .take_while(|&&byte| {
            matches!(
                byte,
                0xf0 | 0xf2 | 0xf3 | 0x2e | 0x36 | 0x3e | 0x26 | 0x64 | 0x65 | 0x66 | 0x67 | 0x40
                    ..=0x4f
            )
        })
        .any(|&byte| byte == 0xf0)
}

/// An exception injected through EVENTINJ whose error code QEMU's TCG drops: TCG ignores
/// EVENTINJ.EV and pushes an error code only for the vectors its own table names (8,
/// 10–14, 17: `exception_has_error_code` in QEMU's `seg_helper.c`), where the manual also
/// gives #CP (21), #VC (29) and #SX (30) one (AMD APM vol. 2, 8.2; 15.20 for EV). A guest's
/// handler would pop an error code that is not there. TCG raises none of these three
/// itself, so only `raise_event` injects them: `decision` (its delivery) is changed to
/// inject without an error code, and its reason says why. A bounce, the hypervisor's own
/// delivery, keeps the error code the manual gives.
pub fn injected_error_code(mut decision: Decision) -> Decision {
    let Some(Delivery::Inject { event, .. }) = decision.delivery.as_deref_mut() else {
        return decision;
    };
    if event.error_code.is_none() || !matches!(event.vector, 21 | 29 | 30) {
        return decision;
    }
    event.error_code = None;
    decision.why = format!(
        "{}; QEMU's TCG pushes no error code for this vector, whatever EVENTINJ says (a real CPU pushes one), so the hypervisor injects it without one: the handler finds none",
        decision.why
    )
    .into();
    decision
}

/// If exception `vector`, raised at the instruction whose bytes are `instruction`, is one of
/// TCG's deviations, deliver what hardware would have raised instead.
pub fn correct(guest: &Guest, instruction: &InstructionBytes, vector: u8) -> Option<Decision> {
    match vector {
        6 => icebp_as_undefined_opcode(guest, instruction),
        13 => stack_fault_as_general_protection(guest, instruction),
        _ => None,
    }
}

/// A VINTR exit inside an interrupt shadow TCG forgot: the instruction it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShadowLost {
    /// A HLT (`sti; hlt`), which continues at `next`.
    AtHalt { next: u64 },
    /// Another instruction (its mnemonic), which has not run yet.
    Before(String),
}

/// Did the interrupt window open at the instruction an interrupt shadow covers? The last
/// VMRUN entered the guest in a shadow at RIP (`Vcpu::entered_in_shadow_at`, from the VMCB
/// the #VMEXIT before wrote) and the guest is still there: TCG dropped the shadow at VMRUN.
/// (For a HLT this is certain: HLT is intercepted, so it has not run. Another instruction
/// might have run and come back to itself, a jump to itself: then the note is one too many.)
pub fn window_in_lost_shadow(guest: &Guest, instruction: &InstructionBytes) -> Option<ShadowLost> {
    let vcpu = &guest.vcpu;
    if vcpu.entered_in_shadow_at != Some(vcpu.vmcb.save.rip) {
        return None;
    }
    let decoded = decode(guest, instruction)?;
    Some(match decoded.mnemonic() {
        Mnemonic::Hlt => ShadowLost::AtHalt {
            next: vcpu.rip_after(decoded.len() as u64),
        },
        mnemonic => ShadowLost::Before(format!("{mnemonic:?}").to_uppercase()),
    })
}

/// The instruction at RIP.
fn decode(guest: &Guest, bytes: &InstructionBytes) -> Option<Instruction> {
    let vmcb = &guest.vcpu.vmcb;
    crate::instruction::decode(bytes.as_slice(), vmcb.code_bits(), vmcb.save.rip)
}

fn icebp_as_undefined_opcode(guest: &Guest, instruction: &InstructionBytes) -> Option<Decision> {
    if instruction.as_slice().first() != Some(&0xf1) {
        return None;
    }
    Some(deliver!(
        guest,
        after[Effect::Rip(guest.vcpu.rip_after(1))],
        1,
        0,
        true,
        "QEMU's TCG raises #UD for ICEBP (INT1); a real CPU raises #DB after it, so the hypervisor delivers that"
    ))
}

fn stack_fault_as_general_protection(
    guest: &Guest,
    instruction: &InstructionBytes,
) -> Option<Decision> {
    if guest.vcpu.vmcb.code_bits() != 64 {
        return None;
    }
    let instruction = decode(guest, instruction)?;
    let rsp = guest.gpr(4);
    let stack_address = if instruction.stack_pointer_increment() < 0 {
        // PUSH, CALL, ENTER: the first write is below RSP.
        rsp.wrapping_add(instruction.stack_pointer_increment() as i64 as u64)
    } else if instruction.stack_pointer_increment() > 0 {
        rsp
    } else if instruction.memory_segment() == Register::SS {
        // An explicit memory operand based on RSP or RBP: compute its address.
        // EXERCISE stack-fault.1: a load through RBP at a non-canonical address comes here,
        // and yet the guest gets #GP: which address does the next line compute? (iced's
        // `virtual_address` wants the number of the *memory* operand.)
        instruction.virtual_address(0, 0, |register, _, _| Some(register_value(guest, register)))?
    } else {
        return None;
    };
    if x86::canonical(stack_address) {
        return None;
    }
    Some(deliver!(
        guest,
        12,
        0,
        true,
        "a non-canonical stack access ({stack_address:#x}): QEMU's TCG raised #GP, a real CPU raises #SS(0), so the hypervisor delivers #SS"
    ))
}

/// The value of a 64-bit general register iced names (RIP for RIP-relative operands).
fn register_value(guest: &Guest, register: Register) -> u64 {
    if register == Register::RIP {
        return guest.vcpu.vmcb.save.rip;
    }
    crate::instruction::gpr(register).map_or(0, |(number, _)| guest.gpr(number))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, ENTRY, Test};
    use traplab_abi::event::Action;
    use traplab_abi::exit::ExitReason;

    const NON_CANONICAL: u64 = 0x8000_0000_0000_0000;

    /// The exception `vector` (error code 0) at the instruction `bytes`, decided.
    fn fault(test: &mut Test, bytes: &[u8], vector: u8) -> Decision {
        test.code(bytes);
        test.decide(test.exit(ExitReason::Exception {
            vector,
            error_code: 0,
            address: 0,
        }))
    }

    #[test]
    fn tcg_s_ud_for_icebp_becomes_a_db_after_the_instruction() {
        // ICEBP raises #DB as a trap (AMD APM vol. 3, INT1); QEMU built without ICEBP
        // raises #UD. The hypervisor delivers what hardware would, marked synthetic.
        let mut test = Test::long_mode();
        let decision = fault(&mut test, &[0xf1], 6);
        assert_eq!(decision.action, Action::Reflect);
        assert!(decision.at.contains("src/quirks.rs:"));
        let (event, _, synthetic) = testing::injected(&decision);
        assert_eq!(event, Event::exception(1, 0));
        assert!(synthetic);
        assert_eq!(decision.effects, [Effect::Rip(ENTRY + 1)]);
    }

    #[test]
    fn tcg_s_swint_for_lock_int_becomes_a_ud_at_the_instruction() {
        // `lock int 0x52`: LOCK on INT raises #UD (AMD APM vol. 3, 1.2.5); TCG exits as
        // SWINT. The #UD is a fault: RIP stays, no software interrupt is delivered.
        for bytes in [
            &[0xf0, 0xcd, 0x52][..],
            &[0xf0, 0xcc],
            &[0x66, 0xf0, 0xcd, 0x80],
        ] {
            let mut test = Test::long_mode();
            test.gate(6, 0x21_0000);
            test.code(bytes);
            let run = test.run(test.exit(ExitReason::SoftwareInterrupt));
            assert_eq!(run.decision.action, Action::Reflect, "{bytes:x?}");
            assert!(
                run.decision.at.contains("src/quirks.rs:"),
                "{}",
                run.decision.at
            );
            let (event, handler, synthetic) = testing::injected(&run.decision);
            assert_eq!(event, Event::exception(6, 0));
            assert_eq!(handler, Some(0x21_0000));
            assert!(synthetic);
            assert!(
                run.decision.why.contains("a real CPU raises #UD"),
                "{}",
                run.decision.why
            );
            assert_eq!(test.rip(), ENTRY, "a fault: RIP stays at the instruction");
            assert_eq!(test.domain.vcpu.software_interrupt_rip, None);
            assert!(run.applied.end.is_none(), "the domain lives");
        }
    }

    #[test]
    fn a_plain_int_is_not_a_lock_quirk() {
        let test = Test::long_mode();
        let int = InstructionBytes::new(&[0xcd, 0x52]);
        assert!(locked(&test.guest(), &int).is_none());
        let undecodable = InstructionBytes::new(&[0xf0]);
        assert!(locked(&test.guest(), &undecodable).is_none());
        // A LOCK the CPU allows (`lock add [rax], ecx`) is no quirk either.
        let allowed = InstructionBytes::new(&[0xf0, 0x01, 0x08]);
        assert!(locked(&test.guest(), &allowed).is_none());
    }

    #[test]
    fn a_synthetic_cp_vc_or_sx_is_injected_without_the_error_code_tcg_would_not_push() {
        // raise_event(21, 0): the manual gives #CP an error code, QEMU's TCG pushes none
        // whatever EVENTINJ.EV says. EVENTINJ and the inject event say what the handler gets.
        for vector in [21, 29, 30] {
            let mut test = Test::hypercall(traplab_abi::hypercall::RAISE_EVENT, vector, 0);
            test.gate(vector as u8, 0x21_0000);
            let run = test.call();
            let (event, _, synthetic) = testing::injected(&run.decision);
            assert!(synthetic);
            assert_eq!(event.error_code, None, "vector {vector}");
            assert_eq!(
                test.domain.vcpu.vmcb.control.eventinj & (1 << 11),
                0,
                "EVENTINJ.EV clear"
            );
            assert_eq!(run.injected().error_code, None);
            assert!(
                run.decision.why.contains("QEMU's TCG pushes no error code"),
                "{}",
                run.decision.why
            );
        }
    }

    #[test]
    fn other_error_codes_are_injected_as_the_manual_says() {
        // #GP and #AC: TCG pushes their error codes, and so EVENTINJ carries them. (#AC in
        // the state where a CPU raises it, CPL 3 with CR0.AM and RFLAGS.AC, AMD APM vol. 2,
        // 8.2.17: the alignment-check lab's exercise refuses it anywhere else.)
        for vector in [13u64, 17] {
            let mut test = Test::hypercall(traplab_abi::hypercall::RAISE_EVENT, vector, 0);
            if vector == 17 {
                test.check_alignment();
            }
            let run = test.call();
            assert_eq!(run.injected().error_code, Some(0), "vector {vector}");
            assert!(!run.decision.why.contains("QEMU's TCG pushes no error code"));
        }
        // A bounce is the hypervisor's own delivery: #CP's frame has its error code.
        let mut test = Test::hypercall(traplab_abi::hypercall::RAISE_EVENT, 21, 5);
        test.trap_table(&[testing::trap(21, 0x21_0000)]);
        let run = test.call();
        assert_eq!(run.bounced().error_code, Some(5));
    }

    #[test]
    fn a_ud_at_another_instruction_is_not_a_quirk() {
        let test = Test::long_mode();
        let ud2 = InstructionBytes::new(&[0x0f, 0x0b]);
        assert!(correct(&test.guest(), &ud2, 6).is_none());
    }

    #[test]
    fn a_push_to_a_non_canonical_stack_gets_ss_not_gp() {
        // A non-canonical stack reference raises #SS(0) (AMD APM vol. 2, 8.2.13); TCG
        // raises #GP(0). `push rax` writes at RSP - 8.
        let mut test = Test::long_mode();
        test.set_gpr(4, NON_CANONICAL + 8);
        let decision = fault(&mut test, &[0x50], 13);
        let (event, _, synthetic) = testing::injected(&decision);
        assert_eq!(event, Event::exception(12, 0));
        assert!(synthetic);
        assert!(
            decision.why.contains("0x8000000000000000"),
            "{}",
            decision.why
        );
    }

    #[test]
    fn a_store_through_rsp_to_a_non_canonical_address_gets_ss() {
        // `mov [rsp], rax`: the memory operand is on the stack segment.
        let mut test = Test::long_mode();
        test.set_gpr(4, NON_CANONICAL);
        let decision = fault(&mut test, &[0x48, 0x89, 0x04, 0x24], 13);
        assert_eq!(testing::injected(&decision).0.vector, 12);
    }

    #[test]
    fn a_non_canonical_data_access_keeps_its_gp() {
        // `mov [rax], rcx` with RAX non-canonical: DS, not SS, so #GP is right.
        let mut test = Test::long_mode();
        test.set_gpr(0, NON_CANONICAL);
        let decision = fault(&mut test, &[0x48, 0x89, 0x08], 13);
        assert_eq!(testing::injected(&decision).0, Event::exception(13, 0));
        assert!(decision.at.contains("src/exit/exception.rs:"));
    }

    #[test]
    fn a_gp_with_a_canonical_stack_is_not_corrected() {
        let mut test = Test::long_mode();
        let push = InstructionBytes::new(&[0x50]);
        test.set_gpr(4, 0x7_ff00);
        assert!(correct(&test.guest(), &push, 13).is_none());
    }

    /// An event of `kind` whose delivery faulted (EXITINTINFO).
    fn delivering(kind: EventType, vector: u8) -> Option<Event> {
        Some(Event {
            vector,
            kind,
            error_code: None,
        })
    }

    /// An external interrupt whose delivery faulted.
    fn interrupt(vector: u8) -> Option<Event> {
        delivering(EventType::Interrupt, vector)
    }

    /// The corrected error code alone.
    fn corrected(guest: &Guest, interrupted: Option<Event>, vector: u8, code: u32) -> Option<u32> {
        error_code(guest, interrupted, vector, code).map(|(code, _)| code)
    }

    #[test]
    fn tcg_s_long_mode_idt_error_code_is_corrected_to_the_gate_s_index_with_ext() {
        // Error code for an IDT gate: index = vector (bits 15:3), IDT (bit 1), EXT (bit 0),
        // set for an external interrupt, which TCG never sets.
        let test = Test::long_mode();
        let guest = test.guest();
        assert_eq!(corrected(&guest, interrupt(0x20), 11, 0x202), Some(0x103));
        let (_, what) = error_code(&guest, interrupt(0x20), 11, 0x202).unwrap();
        assert!(
            what.contains("IDT index") && what.contains("EXT set"),
            "{what}"
        );
        // INT 0x20: a software interrupt, EXT clear.
        let int_n = delivering(EventType::Software, 0x20);
        assert_eq!(corrected(&guest, int_n, 11, 0x202), Some(0x102));
    }

    #[test]
    fn ext_is_set_for_an_interrupt_an_nmi_or_an_exception_and_clear_for_int_n() {
        // Intel SDM vol. 3A, 6.13: EXT, "the exception occurred during delivery of an event
        // external to the program, such as an interrupt or an earlier exception". In 32-bit
        // protected mode TCG's index is right, and only EXT is missing.
        let test = Test::protected_mode();
        let guest = test.guest();
        for kind in [EventType::Interrupt, EventType::Nmi, EventType::Exception] {
            let event = delivering(kind, 0x20);
            assert_eq!(corrected(&guest, event, 11, 0x102), Some(0x103), "{kind:?}");
            let (_, what) = error_code(&guest, event, 11, 0x102).unwrap();
            assert_eq!(
                what,
                "EXT set: the event being delivered came from outside the program"
            );
        }
        // A bad code-segment selector in the gate: #GP(selector | EXT).
        assert_eq!(corrected(&guest, interrupt(0x20), 13, 0x28), Some(0x29));
        // INT n: no change.
        let int_n = delivering(EventType::Software, 0x20);
        assert_eq!(corrected(&guest, int_n, 11, 0x102), None);
    }

    #[test]
    fn an_error_code_that_is_already_right_or_not_a_delivery_s_is_left_alone() {
        let test = Test::long_mode();
        let guest = test.guest();
        assert_eq!(
            corrected(&guest, interrupt(0x20), 11, 0x103),
            None,
            "hardware's"
        );
        assert_eq!(
            corrected(&guest, None, 13, 0x202),
            None,
            "nothing was delivered"
        );
        assert_eq!(
            corrected(&guest, interrupt(0x20), 14, 0x2),
            None,
            "a #PF's error code is not a selector's"
        );
        let protected = Test::protected_mode();
        assert_eq!(
            corrected(
                &protected.guest(),
                delivering(EventType::Software, 0x20),
                13,
                0x202
            ),
            None,
            "only long mode's 16-byte gates have the doubled index"
        );
    }

    #[test]
    fn vmexit_invalid_for_a_mov_to_a_control_register_becomes_a_gp() {
        let test = Test::long_mode();
        let mov_cr4 = InstructionBytes::new(&[0x0f, 0x22, 0xe0]);
        let decision = invalid_state(&test.guest(), &mov_cr4).expect("a MOV to CR4");
        assert_eq!(
            testing::injected(&decision),
            (Event::exception(13, 0), None, true)
        );
    }

    #[test]
    fn vmexit_invalid_at_any_other_instruction_is_not_a_quirk() {
        let test = Test::long_mode();
        for bytes in [&[0x0f, 0x20, 0xe0][..], &[0x90], &[]] {
            // mov rax, cr4 reads a control register: no VMRUN check involved.
            let instruction = InstructionBytes::new(bytes);
            assert!(
                invalid_state(&test.guest(), &instruction).is_none(),
                "{bytes:x?}"
            );
        }
    }
}
