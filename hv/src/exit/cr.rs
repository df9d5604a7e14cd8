//! MOV to CR0, CR3, CR4, CR8 (exit codes 0x10–0x1F WRITE_CRn, 0x65 CR0_SEL_WRITE): emulate,
//! or answer #GP(0) as the CPU would for an invalid value.
//!
//! The exit happens before the write (AMD APM vol. 2, 15.9). Without decode assists
//! EXITINFO1 does not name the source register, so we decode the MOV. The checks are the
//! CPU's own (APM vol. 2, 3.1.1–3.1.3; Intel SDM vol. 3A, 2.5 and the MOV CR reference):
//!
//! | register | #GP(0) when the new value…                                        |
//! |----------|-------------------------------------------------------------------|
//! | CR0      | sets a bit in 63:32; sets PG without PE; sets NW without CD; clears PG in 64-bit mode; sets PG with EFER.LME but not CR4.PAE |
//! | CR3      | sets a bit in 63:52 (reserved in long mode), or above the physical-address width |
//! | CR4      | sets a bit the emulated CPU does not have; clears PAE in long mode |
//! | CR8      | sets a bit in 63:4 (CR8 is the 4-bit task priority, APM vol. 2, 3.1.5) |
//!
//! Two refusals are the hypervisor's own, not the CPU's, both for a domain that has page
//! tables pinned (or a pin under way), which has taken Xen's PV page-table rules: a CR0 write
//! that clears WP or PG, and a CR3 write of a root it did not pin, get #GP(0) too. At CPL 0
//! read-only pages hold only with WP set, and the pinned tables are protected by being
//! read-only (`ptwr.rs`); without paging its stores would reach them at their physical
//! addresses; and tables it did not pin could map the pinned ones writable
//! (`Domain::may_run_on`). Xen keeps a PV guest's CR0 its own, and loads only a validated
//! root into its CR3, the same way.
//!
//! CR0 writes that change more than TS and MP (the selective intercept), and CR4 and CR8
//! writes, exit in every domain, because QEMU's TCG takes values a CPU refuses with #GP(0)
//! (`quirks.rs`, measured: a CR0 with PG but not PE, with NW but not CD, without PG in
//! 64-bit mode, or with a bit of 63:32, which TCG drops; a CR4 that clears PAE in long mode;
//! a CR8 with bits 63:4): the guest then derails, or its next VMRUN fails and the domain
//! dies, where on a CPU its #GP handler runs. Those refusals say so in the trace. (A change
//! of CR0's bits 63:32 alone does not even exit under TCG: there the bit is lost.) CR3 writes
//! exit with the setting `intercept-cr`, and in a domain that pins page tables
//! (`pin_page_table` turns the CR3 write intercept on).
//! Setting CR0.PG with EFER.LME set activates long mode, clearing it (in compatibility
//! mode) leaves it: the CPU sets or clears EFER.LMA then, and so does the hypervisor, because
//! the intercepted write never reaches the CPU (APM vol. 2, 14.6.1 and 14.7).
//! Changing how the guest translates addresses (CR3, CR0.PG/WP, CR4.PAE/PGE/PSE) flushes
//! the guest's TLB at the next VMRUN. LMSW reaches here too (the selective CR0 intercept takes
//! every LMSW on a CPU, AMD APM vol. 2, 15.9.2; QEMU's TCG only one that changes a bit), and
//! CLTS, which only the full CR0 write intercept (0x10) takes, one the hypervisor does not set
//! (the selective intercept never takes CLTS: it changes only TS); an
//! `lmsw [m16]` has its word read through the guest's page tables, and an address the CPU
//! could not read gets the guest the #PF or #GP(0) the CPU would raise; a data breakpoint
//! that watches the word for reads traps after the LMSW (`delivery::with_breakpoints`), as the
//! CPU's own read would have.

use super::{Exit, undecodable};
use crate::decision::{Decision, Effect};
use crate::delivery::{DataAccess, Progress};
use crate::domain::Guest;
use crate::{decide, deliver, delivery, here};
use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use iced_x86::{Instruction, Mnemonic, OpKind};
use traplab_abi::event::Action;
use traplab_abi::x86::{Cr0Flags, Cr4Flags, EferFlags, pte};

// EXERCISE cr-write.1: the CPU this hypervisor shows the guest (its CPUID) has no FSGSBASE:
// a guest that sets CR4.FSGSBASE must get #GP(0), as on such a CPU.
/// CR4 bits the emulated CPU has: VME … OSXMMEXCPT (10:0), FSGSBASE (16), OSXSAVE (18).
const CR4_SUPPORTED: u64 = 0x7ff | (1 << 16) | (1 << 18);
/// CR0 bits whose change affects address translation.
const CR0_PAGING: Cr0Flags = Cr0Flags::PAGING
    .union(Cr0Flags::WRITE_PROTECT)
    .union(Cr0Flags::PROTECTED_MODE_ENABLE);
/// CR4 bits whose change affects address translation.
const CR4_PAGING: Cr4Flags = Cr4Flags::PHYSICAL_ADDRESS_EXTENSION
    .union(Cr4Flags::PAGE_SIZE_EXTENSION)
    .union(Cr4Flags::PAGE_GLOBAL);

/// The word `lmsw [m16]` loads, read as its CPU reads it, and the read (a data breakpoint
/// that watches it traps after the LMSW); or what the CPU raises instead (a #PF, #GP(0) or
/// #SS(0) for an address it cannot read), and the hypervisor in its place.
fn machine_status_word(
    exit: &Exit,
    guest: &Guest,
    instruction: &Instruction,
) -> Result<(u64, DataAccess), Box<Decision>> {
    let Some(address) = crate::instruction::memory_address(instruction, guest) else {
        return Err(Box::new(undecodable(exit, guest)));
    };
    let mut word = [0u8; 2];
    let Err(fault) = guest.cpu_read(address, &mut word) else {
        let read = DataAccess {
            linear: address,
            size: 2,
            write: false,
        };
        return Ok((u16::from_le_bytes(word) as u64, read));
    };
    let delivered = delivery::access_fault(
        guest,
        Vec::new(),
        &fault,
        instruction.memory_segment() == iced_x86::Register::SS,
        format_args!("LMSW reads its operand at {address:#x}"),
        here!(),
    );
    Err(Box::new(delivered.unwrap_or_else(|| {
        let reason = format!("LMSW's operand at {address:#x} is not in the guest's RAM");
        decide!(
            Action::Kill,
            "{reason} ({fault:?}): the hypervisor reads no device for it"
        )
        .killing(reason)
    })))
}

/// MOV to CR`number` (or LMSW, CLTS, which the selective CR0 intercept reports as
/// `number` 0).
pub fn handle(exit: &Exit, guest: &Guest, number: u8) -> Decision {
    let Some(instruction) = exit.decode_instruction(guest) else {
        return undecodable(exit, guest);
    };
    let save = &guest.vcpu.vmcb.save;
    let pe = Cr0Flags::PROTECTED_MODE_ENABLE.bits();
    // LMSW's read of its memory operand, which the hypervisor makes in the CPU's place.
    let mut operand_read = None;
    let value = match (instruction.mnemonic(), instruction.op1_kind()) {
        (Mnemonic::Mov, OpKind::Register) => {
            match crate::instruction::gpr(instruction.op1_register()) {
                Some((register, _)) => guest.gpr(register),
                None => return undecodable(exit, guest),
            }
        }
        // LMSW writes CR0 bits 3:0 (PE can be set, not cleared).
        (Mnemonic::Lmsw, _) => {
            let word = match instruction.op0_kind() {
                OpKind::Register => match crate::instruction::gpr(instruction.op0_register()) {
                    Some((register, _)) => guest.gpr(register),
                    None => return undecodable(exit, guest),
                },
                _ => match machine_status_word(exit, guest, &instruction) {
                    Ok((word, read)) => {
                        operand_read = Some(read);
                        word
                    }
                    Err(decision) => return *decision,
                },
            };
            let old = save.cr0;
            (old & !0xe) | (word & 0xf) | (old & pe)
        }
        (Mnemonic::Clts, _) => save.cr0 & !Cr0Flags::TASK_SWITCHED.bits(),
        _ => return undecodable(exit, guest),
    };
    let cr0 = Cr0Flags::from_bits_retain(value);
    let long_mode = guest.vcpu.long_mode();
    let paging_before = Cr0Flags::from_bits_retain(save.cr0).contains(Cr0Flags::PAGING);
    let paging_after = cr0.contains(Cr0Flags::PAGING);
    let efer = EferFlags::from_bits_retain(save.efer);
    // Setting PG with EFER.LME set activates long mode; clearing it leaves long mode (APM
    // vol. 2, 14.6.1 and 14.7): the CPU sets or clears EFER.LMA itself.
    let activates_long_mode =
        number == 0 && !paging_before && paging_after && efer.contains(EferFlags::LONG_MODE_ENABLE);
    let leaves_long_mode = number == 0 && paging_before && !paging_after && long_mode;
    let pae = save.cr4 & Cr4Flags::PHYSICAL_ADDRESS_EXTENSION.bits() != 0;
    // Which CR4 bits the CPU lacks, when it lacks some: the refusal names them.
    let unsupported: String;
    // Each refusal, and what QEMU's TCG does instead where it would not raise the #GP
    // itself (measured, `quirks.rs`): the trace says so, since the guest would see it run.
    let tcg_takes = Some("QEMU's TCG would take it");
    let invalid = match number {
        0 if value >> 32 != 0 => Some((
            "sets reserved bits 63:32",
            Some("QEMU's TCG would drop them and take the rest"),
        )),
        0 if cr0.contains(Cr0Flags::PAGING) && !cr0.contains(Cr0Flags::PROTECTED_MODE_ENABLE) => {
            Some(("sets PG without PE", tcg_takes))
        }
        0 if cr0.contains(Cr0Flags::NOT_WRITE_THROUGH)
            && !cr0.contains(Cr0Flags::CACHE_DISABLE) =>
        {
            Some(("sets NW without CD", tcg_takes))
        }
        0 if leaves_long_mode && guest.vcpu.vmcb.code_bits() == 64 => Some((
            "clears PG in 64-bit mode (long mode is left from compatibility mode)",
            tcg_takes,
        )),
        // (QEMU's `cpu_x86_update_cr0` returns early there: "XXX: generate an exception".)
        0 if activates_long_mode && !pae => Some((
            "sets PG with EFER.LME set but CR4.PAE clear (long mode needs PAE paging)",
            Some("QEMU's TCG would ignore the whole write"),
        )),
        3 if long_mode => long_mode_cr3_refusal(value, guest.memory.physical_address_bits())
            .map(|why| (why, None)),
        4 if value & !cr4_supported(guest) != 0 => {
            unsupported = format!(
                "sets a bit this CPU does not have ({})",
                bit_numbers(value & !cr4_supported(guest))
            );
            Some((unsupported.as_str(), None))
        }
        4 if long_mode && value & Cr4Flags::PHYSICAL_ADDRESS_EXTENSION.bits() == 0 => {
            Some(("clears PAE in long mode", tcg_takes))
        }
        8 if value >> 4 != 0 => Some((
            "sets reserved bits 63:4 (CR8 holds the 4-bit task priority)",
            Some("QEMU's TCG would keep bits 3:0"),
        )),
        0 | 3 | 4 | 8 => None,
        _ => Some((
            "names a control register the hypervisor does not emulate",
            None,
        )),
    };
    if let Some((why, tcg)) = invalid {
        let tcg = match tcg {
            Some(tcg) => format!(" ({tcg}: `hv/src/quirks.rs`)"),
            None => String::new(),
        };
        return deliver!(
            guest,
            13,
            0,
            true,
            "MOV CR{number}, {value:#x} {why}: the CPU would raise #GP(0), and so does the hypervisor{tcg}"
        );
    }
    if number == 0
        && let Some(why) = unprotects_pinned_tables(guest, value)
    {
        return deliver!(
            guest,
            13,
            0,
            true,
            "MOV CR0, {value:#x} {why}. The hypervisor keeps WP and PG set, as Xen keeps a PV guest's CR0 (its emulation of a privileged MOV to CR0 refuses any change but TS) and Linux pins WP once it booted: #GP(0)"
        );
    }
    if number == 3 {
        let root = value & pte::ADDRESS;
        if !guest.may_run_on(root) {
            return deliver!(
                guest,
                13,
                0,
                true,
                "MOV CR3, {value:#x}: the domain pins its page tables, and {root:#x} is no root it pinned (pin_page_table): tables it did not pin could map the pinned ones writable, and its stores through them would change them unchecked. Refused as Xen refuses a root it cannot validate (`new_guest_cr3`): #GP(0)"
            );
        }
    }
    let next = guest.vcpu.rip_after(instruction.len() as u64);
    // What CR0 holds after the write: ET is read-only and stays 1, and the other reserved
    // bits of 31:0 stay clear, what the write says of them ignored (AMD APM vol. 2, 3.1.1;
    // Intel SDM vol. 2A, "MOV—Move to/from Control Registers": "CR0.ET remains set").
    let written = value;
    let value = match number {
        0 => (value & Cr0Flags::all().bits()) | Cr0Flags::EXTENSION_TYPE.bits(),
        _ => value,
    };
    let kept = match value == written {
        true => String::new(),
        false => format!(" ({value:#x}: ET stays set, reserved bits stay clear)"),
    };
    if number == 8 {
        return decide!(
            Action::Emulate,
            "MOV CR8, {value:#x}: the hypervisor checks the value as the CPU would (QEMU's TCG does not), then writes the guest's task priority, V_TPR in the VMCB"
        )
        .with(Effect::TaskPriority(value as u8))
        .with(Effect::Rip(next))
        .describe(format!("CR8 = {value:#x}"));
    }
    let (old, paging_bits) = match number {
        0 => (save.cr0, CR0_PAGING.bits()),
        3 => (save.cr3, u64::MAX),
        _ => (save.cr4, CR4_PAGING.bits()),
    };
    let lma = EferFlags::LONG_MODE_ACTIVE.bits();
    let svme = EferFlags::SECURE_VIRTUAL_MACHINE_ENABLE.bits();
    let (long_mode_change, efer_after) = if activates_long_mode {
        (
            "; PG with EFER.LME set: the CPU activates long mode, EFER.LMA = 1 (APM vol. 2, 14.6.1), and so does the hypervisor",
            Some((save.efer & !svme) | lma),
        )
    } else if leaves_long_mode {
        (
            "; PG cleared in compatibility mode: the CPU leaves long mode, EFER.LMA = 0 (APM vol. 2, 14.7), and so does the hypervisor",
            Some(save.efer & !svme & !lma),
        )
    } else {
        ("", None)
    };
    let decision = decide!(
        Action::Emulate,
        "MOV CR{number}, {written:#x}: the hypervisor checks the value as the CPU would, then writes the guest's CR{number}{kept}{long_mode_change}"
    )
    .with(Effect::ControlRegister(number, value))
    .with_all(efer_after.map(Effect::Efer));
    // The guest's translations changed: flush its TLB at the next VMRUN (15.16).
    let flush = (old ^ value) & paging_bits != 0 || number == 3;
    let decision = decision
        .with_all(flush.then_some(Effect::FlushTlb))
        .with(Effect::Rip(next))
        .describe(format!("CR{number} = {value:#x}"));
    match operand_read {
        // The CPU never read the word, so its data breakpoints saw nothing: the #DB trap of
        // one that watches it comes from the hypervisor, after the LMSW.
        Some(read) => {
            delivery::with_breakpoints(guest, None, &[read], decision, Progress::Completed)
        }
        None => decision,
    }
}

/// What this CR0 write would take from the protection of the domain's pinned page tables
/// (or of a pin under way), if anything. A pinned table is read-only to the guest, and at
/// CPL 0 read-only holds only with CR0.WP set (AMD APM vol. 2, 3.1.1); and with PG clear
/// (from compatibility mode, leaving long mode, 14.7) the kernel's stores would reach the
/// tables at their physical addresses, and it would run on no pinned root. `pin_page_table`
/// needs both set, and the selective CR0 intercept, on in every domain, takes a write that
/// clears either (it changes more than TS and MP), so that such a write comes here.
fn unprotects_pinned_tables(guest: &Guest, value: u64) -> Option<&'static str> {
    let pinned = !guest.pv.pinned_tables.is_empty() || guest.pv.pinning.is_some();
    let cleared = Cr0Flags::from_bits_retain(guest.vcpu.vmcb.save.cr0 & !value);
    if !pinned {
        None
    } else if cleared.contains(Cr0Flags::WRITE_PROTECT) {
        Some(
            "clears WP while the domain has pinned page tables: with WP clear the kernel's own writes would change them without a fault, unchecked (`ptwr.rs`)",
        )
    } else if cleared.contains(Cr0Flags::PAGING) {
        Some(
            "clears PG while the domain has pinned page tables: without paging the kernel's stores would reach them at their physical addresses, unchecked (`ptwr.rs`), and it would run on no pinned root",
        )
    } else {
        None
    }
}

/// Why a CPU in long mode refuses `value` for CR3 with #GP(0), if it does: bits 63:52 are
/// reserved, must be zero (AMD APM vol. 2, 3.1.2), and so is every bit at or above the
/// physical-address width (CPUID 8000_0008), the table's address being a physical one, as
/// KVM and QEMU's TCG check (whose VMRUN would refuse such a CR3: the domain would die of
/// VMEXIT_INVALID at the next instruction). Bits 11:0 but PWT and PCD are reserved as well,
/// but a CPU ignores them there: no #GP.
pub(super) fn long_mode_cr3_refusal(value: u64, address_bits: u32) -> Option<&'static str> {
    if value >> 52 != 0 {
        return Some("sets reserved bits 63:52");
    }
    if value.checked_shr(address_bits).unwrap_or(0) != 0 {
        return Some(
            "sets a bit above the CPU's physical-address width (CPUID 8000_0008), reserved",
        );
    }
    None
}

/// The CR4 bits the guest may set: [`CR4_SUPPORTED`], less OSXSAVE when the CPUID it sees
/// has no XSAVE (leaf 1, ECX bit 26; qemu64, QEMU's CPU under TCG, has none): on that CPU
/// the bit is reserved (APM vol. 2, 3.1.3), and VMRUN would refuse a CR4 that set it. The
/// features whose bit is not here are hidden from the guest's CPUID (`cpuid.rs`).
pub(super) fn cr4_supported(guest: &Guest) -> u64 {
    const XSAVE: u32 = 1 << 26;
    let [_, _, ecx, _] = guest.machine.cpuid(1, 0);
    match ecx & XSAVE {
        0 => CR4_SUPPORTED & !Cr4Flags::OSXSAVE.bits(),
        _ => CR4_SUPPORTED,
    }
}

/// The numbers of the bits set in `bits`, as the reason says them: "bit 16", "bits 16 and 30".
fn bit_numbers(bits: u64) -> String {
    let numbers: Vec<String> = (0..64)
        .filter(|bit| bits & (1 << bit) != 0)
        .map(|bit| bit.to_string())
        .collect();
    match numbers.as_slice() {
        [one] => format!("bit {one}"),
        [rest @ .., last] => format!("bits {} and {last}", rest.join(", ")),
        [] => "no bit".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, ENTRY, PML4, Run, Test, UNMAPPED};
    use traplab_abi::exit::ExitReason;
    use traplab_abi::svm::Event;

    const MOV_CR0_RAX: [u8; 3] = [0x0f, 0x22, 0xc0];
    const MOV_CR3_RAX: [u8; 3] = [0x0f, 0x22, 0xd8];
    const MOV_CR4_RAX: [u8; 3] = [0x0f, 0x22, 0xe0];

    /// `bytes` at RIP with RAX = `value`, exiting as a write to CR`number`.
    fn write(test: &mut Test, bytes: &[u8], number: u8, value: u64) -> Run {
        test.code(bytes);
        test.set_gpr(0, value);
        let exit = test.exit(ExitReason::CrWrite { number });
        test.run(exit)
    }

    /// The decision is the #GP(0) a CPU raises for an invalid control-register value, made
    /// up by the hypervisor (synthetic) and reflected; nothing else changes.
    fn assert_general_protection(test: &Test, run: &Run, why: &str) {
        assert_eq!(run.decision.action, Action::Reflect);
        assert!(run.decision.why.contains(why), "{}", run.decision.why);
        assert!(run.decision.at.contains("src/exit/cr.rs:"));
        let (event, _, synthetic) = testing::injected(&run.decision);
        assert_eq!(event, Event::exception(13, 0));
        assert!(
            synthetic,
            "the CPU raised nothing: the hypervisor makes the #GP up"
        );
        assert_eq!(test.rip(), ENTRY, "a fault: RIP stays at the MOV");
    }

    const MOV_CR8_RAX: [u8; 4] = [0x44, 0x0f, 0x22, 0xc0];

    #[test]
    fn lock_mov_cr0_is_amd_s_mov_cr8() {
        // AltMovCr8 (AMD APM vol. 3, "MOV (CRn)"): in 32-bit code, where no REX.R reaches
        // CR8, `f0 0f 22 c0` writes CR8; the CPU exits as a CR8 write (#UD is checked before
        // the intercept, so the exit says the CPU took it so).
        let mut test = Test::protected_mode();
        let run = write(&mut test, &[0xf0, 0x0f, 0x22, 0xc0], 8, 5);
        assert_eq!(run.decision.action, Action::Emulate, "{}", run.decision.why);
        assert_eq!(test.domain.vcpu.vmcb.control.virtual_interrupt & 0xf, 5);
        assert_eq!(test.rip(), ENTRY + 4);
    }

    #[test]
    fn cr0_et_stays_set_and_its_reserved_low_bits_stay_clear() {
        // A write that clears ET (bit 4) and sets reserved bit 6: the CPU keeps ET and
        // ignores bit 6 (AMD APM vol. 2, 3.1.1); no #GP, which a bit of 63:32 would get.
        let mut test = Test::long_mode();
        let cr0 = test.domain.vcpu.vmcb.save.cr0;
        assert_ne!(cr0 & Cr0Flags::EXTENSION_TYPE.bits(), 0);
        let run = write(&mut test, &MOV_CR0_RAX, 0, (cr0 & !0x10) | 1 << 6);
        assert_eq!(run.decision.action, Action::Emulate, "{}", run.decision.why);
        assert_eq!(test.domain.vcpu.vmcb.save.cr0, cr0);
        assert!(
            run.decision
                .why
                .contains("ET stays set, reserved bits stay clear"),
            "{}",
            run.decision.why
        );
    }

    #[test]
    fn mov_cr0_setting_pg_with_efer_lme_activates_long_mode() {
        // A kernel's way into long mode (APM vol. 2, 14.6.1): PAE on, EFER.LME on, then
        // CR0.PG. The write is the hypervisor's, so LMA is too.
        let mut test = Test::protected_mode();
        let save = &mut test.domain.vcpu.vmcb.save;
        save.cr4 |= Cr4Flags::PHYSICAL_ADDRESS_EXTENSION.bits();
        save.efer |= EferFlags::LONG_MODE_ENABLE.bits();
        let paging = save.cr0 | Cr0Flags::PAGING.bits();
        let run = write(&mut test, &MOV_CR0_RAX, 0, paging);
        assert_eq!(run.decision.action, Action::Emulate, "{}", run.decision.why);
        assert!(run.decision.why.contains("activates long mode"));
        assert!(test.domain.vcpu.long_mode(), "EFER.LMA is set");
        assert_eq!(test.domain.vcpu.vmcb.save.cr0, paging);
    }

    #[test]
    fn mov_cr0_setting_pg_with_efer_lme_but_without_pae_is_a_gp() {
        let mut test = Test::protected_mode();
        test.domain.vcpu.vmcb.save.efer |= EferFlags::LONG_MODE_ENABLE.bits();
        let paging = test.domain.vcpu.vmcb.save.cr0 | Cr0Flags::PAGING.bits();
        let run = write(&mut test, &MOV_CR0_RAX, 0, paging);
        assert_general_protection(&test, &run, "CR4.PAE clear");
        assert!(
            run.decision
                .why
                .contains("QEMU's TCG would ignore the whole write")
        );
        assert!(!test.domain.vcpu.long_mode());
    }

    #[test]
    fn mov_cr0_setting_pg_without_efer_lme_is_32_bit_paging() {
        let mut test = Test::protected_mode();
        let paging = test.domain.vcpu.vmcb.save.cr0 | Cr0Flags::PAGING.bits();
        let run = write(&mut test, &MOV_CR0_RAX, 0, paging);
        assert_eq!(run.decision.action, Action::Emulate, "{}", run.decision.why);
        assert!(!test.domain.vcpu.long_mode());
        assert!(!run.decision.why.contains("long mode"));
    }

    #[test]
    fn mov_cr8_with_bits_63_4_set_is_a_gp() {
        // CR8 holds the 4-bit task priority; bits 63:4 are reserved (AMD APM vol. 2,
        // 3.1.5): MOV CR8 with one set raises #GP(0). QEMU's TCG would keep bits 3:0.
        let mut test = Test::long_mode();
        let run = write(&mut test, &MOV_CR8_RAX, 8, 16);
        assert_general_protection(&test, &run, "sets reserved bits 63:4");
        assert!(run.decision.why.contains("QEMU's TCG would keep bits 3:0"));
        assert_eq!(test.domain.vcpu.vmcb.control.virtual_interrupt & 0xff, 0);
    }

    #[test]
    fn mov_cr8_with_a_priority_writes_v_tpr_and_skips_the_mov() {
        let mut test = Test::long_mode();
        let before = test.domain.vcpu.vmcb.control.virtual_interrupt;
        let run = write(&mut test, &MOV_CR8_RAX, 8, 15);
        assert_eq!(run.decision.action, Action::Emulate);
        let control = &test.domain.vcpu.vmcb.control;
        assert_eq!(
            control.virtual_interrupt,
            before | 15,
            "V_TPR; the rest kept"
        );
        assert_eq!(run.changes(), [("cr8", 0, 15), ("rip", ENTRY, ENTRY + 4)]);
    }

    #[test]
    fn cr8_is_the_local_apic_s_task_priority() {
        // CR8 = TPR[7:4] (Intel SDM vol. 3A, 11.8.6.1): after MOV CR8, 15 the APIC holds
        // back a requested interrupt of class 4, and its TPR reads 0xf0.
        let mut test = Test::long_mode();
        test.domain.devices.lapic.svr = 0x1ff;
        test.domain.devices.lapic.request(0x40);
        assert_eq!(test.domain.devices.lapic.next_to_deliver(), Some(0x40));
        write(&mut test, &MOV_CR8_RAX, 8, 15);
        assert_eq!(test.domain.devices.lapic.tpr, 0xf0);
        assert_eq!(test.domain.devices.lapic.next_to_deliver(), None);
    }

    #[test]
    fn mov_cr3_with_a_valid_root_is_emulated_flushes_the_tlb_and_skips_the_mov() {
        let mut test = Test::long_mode();
        let run = write(&mut test, &MOV_CR3_RAX, 3, 0x0004_0000);
        assert_eq!(run.decision.action, Action::Emulate);
        assert_eq!(
            run.decision.effects,
            [
                Effect::ControlRegister(3, 0x0004_0000),
                Effect::FlushTlb,
                Effect::Rip(ENTRY + 3)
            ]
        );
        let save = &test.domain.vcpu.vmcb.save;
        assert_eq!(save.cr3, 0x0004_0000);
        // TLB_CONTROL = 1: flush the guest's TLB at the next VMRUN (AMD APM vol. 2, 15.16).
        assert_eq!(test.domain.vcpu.vmcb.control.tlb_control, 1);
        assert!(run.changes().contains(&("cr3", PML4, 0x0004_0000)));
    }

    #[test]
    fn mov_cr3_with_reserved_bits_63_52_in_long_mode_is_a_gp() {
        let mut test = Test::long_mode();
        let run = write(&mut test, &MOV_CR3_RAX, 3, (1 << 60) | 0x0004_0000);
        assert_general_protection(&test, &run, "reserved bits 63:52");
        // Without the intercept QEMU's TCG refuses it too, with a VMEXIT_INVALID at the MOV
        // that `quirks::invalid_state` turns into the #GP (measured): nothing to say here.
        assert!(
            !run.decision.why.contains("QEMU's TCG"),
            "{}",
            run.decision.why
        );
        assert_eq!(test.domain.vcpu.vmcb.save.cr3, PML4);
        // Bit 40, above qemu64's 40-bit physical addresses: reserved too (the domain used
        // to be killed, by the VMRUN that refused it, one instruction later).
        let run = write(&mut test, &MOV_CR3_RAX, 3, (1 << 40) | 0x0004_0000);
        assert_general_protection(&test, &run, "above the CPU's physical-address width");
        assert_eq!(test.domain.vcpu.vmcb.save.cr3, PML4);
    }

    #[test]
    fn setting_cr0_pg_without_pe_is_a_gp() {
        // AMD APM vol. 2, 3.1.1: "setting PG=1 while PE=0 causes a #GP". A 32-bit guest
        // running with paging off tries it: `mov cr0, eax`.
        let mut test = Test::protected_mode();
        let run = write(&mut test, &MOV_CR0_RAX, 0, 1 << 31);
        assert_general_protection(&test, &run, "sets PG without PE");
        // QEMU's TCG takes it (`quirks.rs`): the trace says so.
        assert!(
            run.decision
                .why
                .contains("(QEMU's TCG would take it: `hv/src/quirks.rs`)")
        );
    }

    #[test]
    fn setting_a_cr0_bit_of_63_32_is_a_gp() {
        // APM vol. 2, 3.1.1: writing a 1 to any of CR0's upper 32 bits raises #GP(0). QEMU's
        // TCG drops the bit and takes the rest, and the trace says so.
        let mut test = Test::long_mode();
        let cr0 = test.domain.vcpu.vmcb.save.cr0;
        let run = write(&mut test, &MOV_CR0_RAX, 0, cr0 | 1 << 32);
        assert_general_protection(&test, &run, "sets reserved bits 63:32");
        assert!(run.decision.why.contains("QEMU's TCG would drop them"));
        assert_eq!(test.domain.vcpu.vmcb.save.cr0, cr0);
    }

    #[test]
    fn setting_cr0_nw_without_cd_is_a_gp() {
        // APM vol. 2, 3.1.1: NW = 1 with CD = 0 is an invalid combination: #GP(0).
        let mut test = Test::long_mode();
        let cr0 = test.domain.vcpu.vmcb.save.cr0 | Cr0Flags::NOT_WRITE_THROUGH.bits();
        let run = write(&mut test, &MOV_CR0_RAX, 0, cr0);
        assert_general_protection(&test, &run, "sets NW without CD");
        assert!(run.decision.why.contains("QEMU's TCG would take it"));
    }

    #[test]
    fn clearing_cr0_pg_in_64_bit_mode_is_a_gp() {
        // APM vol. 2, 14.7: paging can be turned off only from compatibility mode.
        let mut test = Test::long_mode();
        let cr0 = test.domain.vcpu.vmcb.save.cr0 & !Cr0Flags::PAGING.bits();
        let run = write(&mut test, &MOV_CR0_RAX, 0, cr0);
        assert_general_protection(&test, &run, "clears PG in 64-bit mode");
        assert!(run.decision.why.contains("QEMU's TCG would take it"));
    }

    #[test]
    fn a_cr0_write_that_changes_wp_is_emulated_and_flushes_the_tlb() {
        // WP decides whether supervisor writes honour read-only pages: the guest's
        // translations change.
        let mut test = Test::long_mode();
        let cr0 = test.domain.vcpu.vmcb.save.cr0 & !Cr0Flags::WRITE_PROTECT.bits();
        let run = write(&mut test, &MOV_CR0_RAX, 0, cr0);
        assert_eq!(run.decision.action, Action::Emulate);
        assert!(run.decision.effects.contains(&Effect::FlushTlb));
        assert_eq!(test.domain.vcpu.vmcb.save.cr0, cr0);
        assert_eq!(test.rip(), ENTRY + 3);
    }

    #[test]
    fn once_page_tables_are_pinned_cr3_takes_only_a_pinned_root() {
        // Tables the domain did not pin could map the pinned ones writable: a MOV to CR3 of
        // such a root is a #GP, as Xen's `new_guest_cr3` refuses a root it cannot validate.
        const UNPINNED: u64 = 0x4_0000;
        let mut test = Test::long_mode();
        test.pin_page_tables();
        let run = write(&mut test, &MOV_CR3_RAX, 3, UNPINNED);
        assert_general_protection(&test, &run, "0x40000 is no root it pinned");
        assert_eq!(test.domain.vcpu.vmcb.save.cr3, PML4, "CR3 unchanged");
        // A pinned root, its PWT and PCD bits set too, is the CPU's MOV as before.
        let run = write(&mut test, &MOV_CR3_RAX, 3, PML4 | 0x18);
        assert_eq!(run.decision.action, Action::Emulate, "{}", run.decision.why);
        assert_eq!(test.domain.vcpu.vmcb.save.cr3, PML4 | 0x18);
        // While a first pin is under way, the root being pinned is taken, and no other.
        let under_way = || {
            Some(Box::new(crate::domain::page_tables::Pinning {
                root: UNPINNED,
                ..Default::default()
            }))
        };
        let mut test = Test::long_mode();
        test.domain.pv.pinning = under_way();
        let run = write(&mut test, &MOV_CR3_RAX, 3, 0x5_0000);
        assert_general_protection(&test, &run, "is no root it pinned");
        let run = write(&mut test, &MOV_CR3_RAX, 3, UNPINNED);
        assert_eq!(run.decision.action, Action::Emulate, "{}", run.decision.why);
        // With tables pinned, not even that one: its walk may yet be refused, and leave the
        // domain on tables that map the pinned ones writable.
        let mut test = Test::long_mode();
        test.pin_page_tables();
        test.domain.pv.pinning = under_way();
        let run = write(&mut test, &MOV_CR3_RAX, 3, UNPINNED);
        assert_general_protection(&test, &run, "is no root it pinned");
        // Before any pin, any root (`mov_cr3_with_a_valid_root…`).
    }

    #[test]
    fn clearing_pg_from_compatibility_mode_over_pinned_page_tables_is_a_gp() {
        // Without paging, a kernel's stores would reach its pinned tables at their physical
        // addresses, unchecked: the hypervisor keeps PG set once tables are pinned. Without
        // pinned tables the same write leaves long mode, as the CPU's (APM vol. 2, 14.7).
        use crate::vmcb::attrib;
        let compatibility_mode = |test: &mut Test| {
            let cs = &mut test.domain.vcpu.vmcb.save.cs;
            cs.attrib = (cs.attrib & !attrib::LONG_MODE) | attrib::DEFAULT_32;
        };
        let mut test = Test::long_mode();
        compatibility_mode(&mut test);
        let cr0 = test.domain.vcpu.vmcb.save.cr0;
        let run = write(&mut test, &MOV_CR0_RAX, 0, cr0 & !Cr0Flags::PAGING.bits());
        assert_eq!(run.decision.action, Action::Emulate, "{}", run.decision.why);
        assert!(!test.domain.vcpu.long_mode(), "long mode left");

        let mut test = Test::long_mode();
        test.pin_page_tables();
        compatibility_mode(&mut test);
        let run = write(&mut test, &MOV_CR0_RAX, 0, cr0 & !Cr0Flags::PAGING.bits());
        assert_general_protection(
            &test,
            &run,
            "clears PG while the domain has pinned page tables",
        );
        assert_eq!(test.domain.vcpu.vmcb.save.cr0, cr0, "PG stays set");
        assert!(test.domain.vcpu.long_mode(), "still in long mode");
    }

    #[test]
    fn clearing_wp_over_pinned_page_tables_is_a_gp_and_other_cr0_writes_go_on() {
        // With WP clear, the kernel's own stores would reach its read-only pinned tables
        // without a fault: the hypervisor keeps WP set once tables are pinned.
        let mut test = Test::long_mode();
        test.pin_page_tables();
        let cr0 = test.domain.vcpu.vmcb.save.cr0;
        let wp = Cr0Flags::WRITE_PROTECT.bits();
        assert_ne!(cr0 & wp, 0, "the boot state has WP set");
        // The selective CR0 intercept's exit, on in every domain.
        test.code(&MOV_CR0_RAX);
        test.set_gpr(0, cr0 & !wp);
        let run = test.run(test.exit(ExitReason::Cr0SelectiveWrite));
        assert_general_protection(
            &test,
            &run,
            "clears WP while the domain has pinned page tables",
        );
        assert_eq!(test.domain.vcpu.vmcb.save.cr0, cr0, "WP stays set");
        // Any other change to CR0 is the CPU's as before (here AM, which keeps WP).
        let am = Cr0Flags::ALIGNMENT_MASK.bits();
        let run = write(&mut test, &MOV_CR0_RAX, 0, cr0 | am);
        assert_eq!(run.decision.action, Action::Emulate, "{}", run.decision.why);
        assert_eq!(test.domain.vcpu.vmcb.save.cr0, cr0 | am);
        // A pin under way holds WP too: the tables its walk found so far must not be written.
        let mut test = Test::long_mode();
        test.domain.pv.pinning = Some(Default::default());
        let run = write(&mut test, &MOV_CR0_RAX, 0, cr0 & !wp);
        assert_general_protection(&test, &run, "clears WP");
    }

    #[test]
    fn setting_a_cr4_bit_the_emulated_cpu_does_not_have_is_a_gp() {
        // Bit 23 (CET) is not in the emulated CPU: a reserved bit to the guest, #GP(0)
        // (APM vol. 2, 3.1.3).
        let mut test = Test::long_mode();
        let cr4 = test.domain.vcpu.vmcb.save.cr4 | (1 << 23);
        let run = write(&mut test, &MOV_CR4_RAX, 4, cr4);
        assert_general_protection(&test, &run, "a bit this CPU does not have (bit 23)");
        // Several: the reason names each.
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        let cr4 = test.domain.vcpu.vmcb.save.cr4 | (1 << 23) | (1 << 30) | (1 << 24);
        let run = write(&mut test, &MOV_CR4_RAX, 4, cr4);
        assert_general_protection(&test, &run, "(bits 23, 24 and 30)");
    }

    #[test]
    fn setting_cr4_osxsave_on_a_cpu_without_xsave_is_a_gp() {
        // The fake CPU is qemu64's: CPUID 1 has no XSAVE (ECX bit 26), so OSXSAVE is reserved.
        let mut test = Test::long_mode();
        let cr4 = test.domain.vcpu.vmcb.save.cr4 | Cr4Flags::OSXSAVE.bits();
        let run = write(&mut test, &MOV_CR4_RAX, 4, cr4);
        assert_general_protection(&test, &run, "a bit this CPU does not have");
        assert_eq!(test.domain.vcpu.vmcb.save.cr4 & Cr4Flags::OSXSAVE.bits(), 0);
    }

    #[test]
    fn clearing_cr4_pae_in_long_mode_is_a_gp() {
        // APM vol. 2, 3.1.3: long mode requires PAE; clearing it while LMA = 1 is #GP(0).
        let mut test = Test::long_mode();
        let cr4 = test.domain.vcpu.vmcb.save.cr4 & !Cr4Flags::PHYSICAL_ADDRESS_EXTENSION.bits();
        let run = write(&mut test, &MOV_CR4_RAX, 4, cr4);
        assert_general_protection(&test, &run, "clears PAE in long mode");
        assert!(run.decision.why.contains("QEMU's TCG would take it"));
    }

    #[test]
    fn a_cr4_write_flushes_the_tlb_only_when_it_changes_a_paging_bit() {
        let mut test = Test::long_mode();
        let cr4 = test.domain.vcpu.vmcb.save.cr4;
        let global = write(
            &mut test,
            &MOV_CR4_RAX,
            4,
            cr4 | Cr4Flags::PAGE_GLOBAL.bits(),
        );
        assert!(global.decision.effects.contains(&Effect::FlushTlb), "PGE");
        let mut test = Test::long_mode();
        let tsd = write(
            &mut test,
            &MOV_CR4_RAX,
            4,
            cr4 | Cr4Flags::TIMESTAMP_DISABLE.bits(),
        );
        assert_eq!(tsd.decision.action, Action::Emulate);
        assert!(!tsd.decision.effects.contains(&Effect::FlushTlb), "TSD");
    }

    #[test]
    fn clts_clears_only_cr0_ts() {
        // CLTS (`0f 06`) clears TS, the lazy FPU switch's flag; TS is no paging bit.
        let mut test = Test::long_mode();
        let save = &mut test.domain.vcpu.vmcb.save;
        save.cr0 |= Cr0Flags::TASK_SWITCHED.bits();
        let before = save.cr0;
        let run = write(&mut test, &[0x0f, 0x06], 0, 0);
        let after = before & !Cr0Flags::TASK_SWITCHED.bits();
        assert_eq!(
            run.decision.effects,
            [Effect::ControlRegister(0, after), Effect::Rip(ENTRY + 2)]
        );
        assert_eq!(test.domain.vcpu.vmcb.save.cr0, after);
    }

    #[test]
    fn lmsw_sets_the_low_four_bits_but_cannot_clear_pe() {
        // APM vol. 3, LMSW: it loads CR0 bits 3:0, "but cannot clear PE". `lmsw ax` with
        // AX = 0 clears MP, EM and TS and leaves PE set. The selective CR0 intercept
        // (15.9.2) reports it.
        let mut test = Test::long_mode();
        let before = test.domain.vcpu.vmcb.save.cr0;
        assert_ne!(before & 0b11, 0, "PE and MP are set at boot");
        test.code(&[0x0f, 0x01, 0xf0]);
        test.set_gpr(0, 0);
        let exit = test.exit(ExitReason::Cr0SelectiveWrite);
        test.run(exit);
        let cr0 = test.domain.vcpu.vmcb.save.cr0;
        assert_eq!(cr0 & 1, 1, "PE stays set");
        assert_eq!(cr0 & 0b1110, 0, "MP, EM, TS take AX's bits");
        assert_eq!(
            cr0 & !0xf,
            before & !0xf,
            "LMSW touches nothing above bit 3"
        );
        assert_eq!(test.rip(), ENTRY + 3);
    }

    #[test]
    fn lmsw_from_memory_reads_its_word_there_and_faults_where_the_cpu_would() {
        // `lmsw [rax]`: the word at DATA (TS, bit 3) goes into CR0's bits 3:0.
        use crate::testing::{DATA, UNMAPPED};
        let mut test = Test::long_mode();
        test.write(DATA, &0x0009u16.to_le_bytes());
        test.code(&[0x0f, 0x01, 0x30]);
        test.set_gpr(0, DATA);
        test.run(test.exit(ExitReason::Cr0SelectiveWrite));
        let cr0 = test.domain.vcpu.vmcb.save.cr0;
        assert_eq!(cr0 & 0xf, 0x9, "PE and TS from the word");
        assert_eq!(test.rip(), ENTRY + 3);
        // From an address no page table maps: the guest's #PF, CR2 there, RIP unmoved.
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        test.gate(14, 0x20_c000);
        test.set_gpr(0, UNMAPPED);
        let run = test.run(test.exit(ExitReason::Cr0SelectiveWrite));
        assert_eq!(run.injected().vector, 14, "{}", run.decision.why);
        assert_eq!(test.domain.vcpu.vmcb.save.cr2, UNMAPPED);
        assert_eq!(test.domain.vcpu.vmcb.save.cr0, cr0, "CR0 unchanged");
    }

    #[test]
    fn lmsw_from_a_watched_word_writes_cr0_and_then_traps() {
        // DR0 watches DATA's two bytes for reads and writes: the CPU never read the operand
        // (the intercept came first), so the hypervisor raises the #DB trap after the LMSW.
        use crate::testing::DATA;
        let mut test = Test::long_mode();
        test.write(DATA, &0x0009u16.to_le_bytes());
        test.code(&[0x0f, 0x01, 0x30]);
        test.set_gpr(0, DATA);
        test.gate(1, 0x20_1000);
        test.watch(DATA, 2, true);
        let run = test.run(test.exit(ExitReason::Cr0SelectiveWrite));
        assert_eq!(test.domain.vcpu.vmcb.save.cr0 & 0xf, 0x9, "written");
        assert_eq!(run.injected().vector, 1, "{}", run.decision.why);
        assert_eq!(test.domain.vcpu.vmcb.save.dr6 & 0xf, 1, "B0");
        assert_eq!(test.rip(), ENTRY + 3, "after the LMSW");
        // A breakpoint on writes only does not see a read.
        let mut test = Test::long_mode();
        test.write(DATA, &0x0009u16.to_le_bytes());
        test.code(&[0x0f, 0x01, 0x30]);
        test.set_gpr(0, DATA);
        test.watch(DATA, 2, false);
        let run = test.run(test.exit(ExitReason::Cr0SelectiveWrite));
        assert_eq!(run.decision.action, Action::Emulate, "{}", run.decision.why);
    }

    #[test]
    fn a_32_bit_guest_writes_cr3_from_eax() {
        // In protected mode the MOV's source is EAX: the upper half of RAX is not the
        // guest's (it does not exist for it).
        let mut test = Test::protected_mode();
        let run = write(&mut test, &MOV_CR3_RAX, 3, 0xdead_0000_0004_0000);
        assert!(
            run.decision
                .effects
                .contains(&Effect::ControlRegister(3, 0x0004_0000))
        );
    }

    #[test]
    fn a_cr_write_at_an_unmapped_rip_kills_the_domain() {
        let mut test = Test::long_mode();
        test.domain.vcpu.vmcb.save.rip = UNMAPPED;
        let decision = test.decide(test.exit(ExitReason::CrWrite { number: 3 }));
        assert_eq!(
            testing::killed(&decision),
            "undecodable instruction at the exit"
        );
    }
}
