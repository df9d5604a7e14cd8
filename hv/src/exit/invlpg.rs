//! INVLPG (exit code 0x79): the guest drops one page's translation from its TLB.
//!
//! Without decode assists EXITINFO1 does not hold the address, so we decode the operand.
//! The hypervisor does the flush with INVLPGA, which invalidates a page in a chosen address
//! space: the guest's ASID (AMD APM vol. 2, 15.16.3).

use super::{Exit, undecodable};
use crate::decide;
use crate::decision::{Decision, Effect};
use crate::domain::Guest;
use alloc::format;
use traplab_abi::event::Action;

pub fn handle(exit: &Exit, guest: &Guest) -> Decision {
    let Some(instruction) = exit.decode_instruction(guest) else {
        return undecodable(exit, guest);
    };
    let next = guest.vcpu.rip_after(instruction.len() as u64);
    let Some(address) = crate::instruction::memory_address(&instruction, guest) else {
        return undecodable(exit, guest);
    };
    let asid = guest.vcpu.vmcb.control.guest_asid;
    decide!(
        Action::Emulate,
        "INVLPG {address:#x}: the hypervisor flushes that page in the guest's address space (INVLPGA, ASID {asid})"
    )
    .with(Effect::InvalidatePage { address, asid })
    .with(Effect::Rip(next))
    .describe(format!("flushed the TLB entry of {address:#x}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, ENTRY, Test};
    use traplab_abi::exit::ExitReason;

    const ASID: u32 = 1;

    /// The decision for the INVLPG `bytes` at RIP, in a guest with ASID 1.
    fn invlpg(test: &mut Test, bytes: &[u8]) -> Decision {
        test.code(bytes);
        test.domain.vcpu.vmcb.control.guest_asid = ASID;
        test.decide(test.exit(ExitReason::Invlpg))
    }

    #[test]
    fn invlpg_rax_flushes_that_address_in_the_guest_s_asid() {
        // INVLPGA takes the address in RAX and the ASID in ECX (AMD APM vol. 3, INVLPGA):
        // the hypervisor flushes the guest's entry, not its own.
        let mut test = Test::long_mode();
        test.set_gpr(0, 0x0040_1234);
        let decision = invlpg(&mut test, &[0x0f, 0x01, 0x38]); // invlpg [rax]
        assert_eq!(decision.action, Action::Emulate);
        assert_eq!(
            decision.effects,
            [
                Effect::InvalidatePage {
                    address: 0x0040_1234,
                    asid: ASID
                },
                Effect::Rip(ENTRY + 3)
            ]
        );
        test.run(test.exit(ExitReason::Invlpg));
        assert_eq!(test.machine.calls, ["invlpga 0x401234 asid 1"]);
        assert_eq!(test.rip(), ENTRY + 3);
    }

    #[test]
    fn a_rip_relative_operand_is_relative_to_the_next_instruction() {
        // `invlpg [rip + 0x100]` (7 bytes): RIP-relative addressing adds the displacement
        // to the RIP of the *next* instruction (AMD APM vol. 3, "RIP-Relative Addressing").
        let mut test = Test::long_mode();
        let decision = invlpg(&mut test, &[0x0f, 0x01, 0x3d, 0x00, 0x01, 0x00, 0x00]);
        assert!(decision.effects.contains(&Effect::InvalidatePage {
            address: ENTRY + 7 + 0x100,
            asid: ASID
        }));
    }

    #[test]
    fn base_index_scale_and_displacement_are_all_added() {
        // `invlpg [rax + rbx*4 + 0x10]`: ModRM 0x7c (SIB, disp8), SIB 0x98.
        let mut test = Test::long_mode();
        test.set_gpr(0, 0x1000);
        test.set_gpr(3, 0x20);
        let decision = invlpg(&mut test, &[0x0f, 0x01, 0x7c, 0x98, 0x10]);
        assert!(decision.effects.contains(&Effect::InvalidatePage {
            address: 0x1000 + 0x20 * 4 + 0x10,
            asid: ASID
        }));
    }

    #[test]
    fn an_fs_override_adds_the_fs_base() {
        // In 64-bit mode segment bases are 0 except FS and GS (APM vol. 2, 4.5.3).
        let mut test = Test::long_mode();
        test.domain.vcpu.vmcb.save.fs.base = 0x7000_0000;
        test.set_gpr(0, 0x123);
        let decision = invlpg(&mut test, &[0x64, 0x0f, 0x01, 0x38]); // invlpg fs:[rax]
        assert!(decision.effects.contains(&Effect::InvalidatePage {
            address: 0x7000_0123,
            asid: ASID
        }));
    }

    #[test]
    fn outside_64_bit_mode_the_data_segment_s_base_counts() {
        // Protected mode: the linear address is DS's base plus the offset.
        let mut test = Test::protected_mode();
        test.domain.vcpu.vmcb.save.ds.base = 0x1000_0000;
        test.set_gpr(0, 0x123);
        let decision = invlpg(&mut test, &[0x0f, 0x01, 0x38]); // invlpg [eax]
        assert!(decision.effects.contains(&Effect::InvalidatePage {
            address: 0x1000_0123,
            asid: ASID
        }));
        // A linear address has 32 bits there: base + offset wraps at 4 GiB.
        test.domain.vcpu.vmcb.save.ds.base = 0xf000_0000;
        test.set_gpr(0, 0x2000_0123);
        let decision = invlpg(&mut test, &[0x0f, 0x01, 0x38]);
        assert!(decision.effects.contains(&Effect::InvalidatePage {
            address: 0x1000_0123,
            asid: ASID
        }));
    }

    #[test]
    fn invlpg_at_an_unmapped_rip_kills_the_domain() {
        let test = Test::long_mode();
        let decision = test.decide(testing::exit(ExitReason::Invlpg, &[]));
        assert_eq!(
            testing::killed(&decision),
            "undecodable instruction at the exit"
        );
    }
}
