//! Nested page fault (exit code 0x400 NPF): a guest-physical access the nested page tables
//! do not allow.
//!
//! EXITINFO2 holds the guest-physical address, EXITINFO1 a #PF-style error code plus two
//! bits saying whether the CPU was walking the guest's own page tables (AMD APM vol. 2,
//! 15.25.6). Each reason the hypervisor leaves a hole in the nested page tables has its
//! file here:
//!
//! | the address is…                                   | file          | the hypervisor…           |
//! |---------------------------------------------------|---------------|---------------------------|
//! | the MMIO window of the lab device                 | `mmio.rs`     | emulates the device access (a MOVS, STOS or LODS: `string.rs`) |
//! | pc-testdev's memory window (setting `pc-testdev`) | `mmio.rs`     | emulates the device access |
//! | a grant the domain mapped read-only, a write       | here          | reflects #GP(0), as Xen does |
//! | above the domain's RAM, a data access             | `mmio.rs`     | emulates an empty bus: reads all ones, writes go nowhere ("no device at …"), as on a PC (an unmapped slot of the grant-mapping area too) |
//! | RAM of the domain not touched yet (`lazy-memory`) | `populate.rs` | maps a fresh frame          |
//! | above the domain's RAM, an instruction fetch at RIP, no device there | here | reflects #UD: the CPU would decode the empty bus's `ff ff` |
//! | anything else: an instruction fetch or a page-table walk on a device, a page-table walk or an instruction's tail outside RAM, an access of an event's delivery outside RAM, RAM left unmapped | here | ends the domain |
//!
//! A fetch from an empty bus reads all ones: the CPU decodes `ff ff`, no instruction, and
//! raises #UD, which the hypervisor raises in its place. A page-table walk there would read
//! all ones as well, and the CPU find reserved bits in a page-table entry (#PF). The
//! hypervisor does not emulate that, nor a fetch or a walk on a device (it would need to
//! fetch or walk *through* the device model), and ends the domain instead, saying why. The
//! same holds for the accesses the CPU makes while it delivers an event (EXITINTINFO valid:
//! AMD APM vol. 2, 15.7.2): pushing the frame, reading the gate. No instruction made them,
//! so there is none at RIP to emulate.

mod mmio;
mod populate;
mod string;

use super::Exit;
use crate::decide;
use crate::decision::Decision;
use crate::delivery;
use crate::domain::Guest;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use traplab_abi::event::Action;
use traplab_abi::grant_table::map_area;
use traplab_abi::svm::NpfInfo;

pub fn handle(exit: &Exit, guest: &Guest, gpa: u64, info: NpfInfo) -> Decision {
    let size = guest.memory.size();
    let data_access = !info.fetch && !info.guest_page_walk;
    if data_access
        && info.present
        && info.write
        && exit.interrupted.is_none()
        && map_area().contains(&gpa)
    {
        return read_only_grant_write(guest, gpa);
    }
    let outside_ram = guest.devices.claims(gpa) || gpa >= size;
    if data_access && outside_ram && exit.interrupted.is_none() {
        return mmio::handle(exit, guest, gpa);
    }
    if gpa < size && !info.present && guest.memory.lazy() {
        return populate::handle(exit, guest, gpa);
    }
    if info.fetch && !info.guest_page_walk && exit.interrupted.is_none() && gpa >= size {
        let nothing_there = !guest.devices.claims(gpa) && !map_area().contains(&gpa);
        let rip = guest
            .memory
            .virtual_to_physical(guest.page_tables(), guest.vcpu.vmcb.linear_rip());
        if nothing_there && rip == Ok(gpa) {
            return empty_bus_fetch(guest, gpa);
        }
    }
    let access = if info.fetch {
        "instruction fetch"
    } else if info.write {
        "write"
    } else {
        "read"
    };
    let during = if info.guest_page_walk {
        " while walking its page tables"
    } else {
        ""
    };
    if let Some(event) = exit.interrupted
        && outside_ram
    {
        let event = traplab_abi::event::delivery_name(event.vector, event.kind);
        return decide!(
            Action::Kill,
            "{access} of guest-physical {gpa:#x}{during} while the CPU delivered {event}: the delivery's own access (its frame, its gate), outside the guest's RAM; no instruction made it, and the hypervisor does not deliver an event through a device or an empty bus"
        )
        .killing(format!(
            "{access} of guest-physical {gpa:#x} while delivering {event}: outside its RAM"
        ));
    }
    if guest.devices.claims(gpa) {
        // The instruction's own access would be emulated (`mmio.rs`); this one is the CPU's
        // fetch or walk, which would go through the device model.
        let device = guest.devices.mmio_name(gpa);
        return decide!(
            Action::Kill,
            "{access} of guest-physical {gpa:#x}{during}: the {device}'s registers, not memory: the hypervisor emulates a device access an instruction makes, not a fetch or a page-table walk through a device"
        )
        .killing(format!(
            "{access} of guest-physical {gpa:#x}{during}: the {device}"
        ));
    }
    decide!(
        Action::Kill,
        "{access} of guest-physical {gpa:#x}{during}: outside the {} MiB the guest owns, and no device is there",
        size >> 20
    )
    .killing(format!(
        "{access} of guest-physical {gpa:#x}, which it does not own"
    ))
}

/// An instruction fetched from an empty bus, at its first byte: a PC reads all ones there,
/// and the CPU decodes `ff ff`, `FF /7`, which is no instruction: #UD (AMD APM vol. 3,
/// one-byte opcode map, group 5). The hypervisor raises it in the CPU's place (the nested
/// page tables have no entry there, so the fetch exited instead): the guest lives, as on a
/// PC. (A fetch that begins in RAM and runs onto the empty bus would need the instruction's
/// bytes from both: the domain still ends for that one.)
fn empty_bus_fetch(guest: &Guest, gpa: u64) -> Decision {
    delivery::exception(
        guest,
        Vec::new(),
        6,
        0,
        true,
        format_args!(
            "instruction fetch at guest-physical {gpa:#x}: no RAM and no device there, so the CPU reads all ones, `ff ff`, which is no instruction: #UD"
        ),
        crate::here!(),
    )
}

/// A write to a grant the domain mapped read-only: the nested page tables map the page
/// without write permission (`GNTTABOP_map_grant_ref` with `GNTMAP_readonly`), so the write
/// faulted there (the entry present, EXITINFO1's P and W set). Xen answers an HVM guest
/// #GP(0) (`hvm_hap_nested_page_fault`: a write to a `p2m_grant_map_ro` page): the page is
/// not the guest's to write, and the write must not be dropped silently as an empty bus
/// would drop it.
fn read_only_grant_write(guest: &Guest, gpa: u64) -> Decision {
    let grant = guest
        .grants
        .mapping_at(gpa & !0xfff)
        .map_or(String::from("a grant"), |mapping| {
            format!("grant {} of d{}", mapping.gref, mapping.granter)
        });
    delivery::exception(
        guest,
        Vec::new(),
        13,
        0,
        true,
        format_args!(
            "a write to guest-physical {gpa:#x}, {grant} mapped read-only: as Xen does for a write to a read-only grant mapping, #GP(0)"
        ),
        crate::here!(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::lab_device;
    use crate::testing::{self, ENTRY, Test};
    use traplab_abi::exit::ExitReason;
    use traplab_abi::grant_table::MAP_AREA;

    /// A nested page fault at `gpa` with EXITINFO1 `exitinfo1` (AMD APM vol. 2, 15.25.6).
    fn npf(test: &Test, gpa: u64, exitinfo1: u64) -> Decision {
        test.decide(test.exit(ExitReason::Npf {
            gpa,
            info: NpfInfo::decode(exitinfo1),
        }))
    }

    #[test]
    fn a_data_access_above_the_guest_s_ram_goes_to_the_empty_bus() {
        // No device there: a PC reads all ones and drops the write; the domain lives.
        let mut test = Test::long_mode();
        test.code(&[0x89, 0x08]); // mov [rax], ecx
        let decision = npf(&test, 0x2000_0000, 0b10); // a write
        assert_eq!(decision.action, Action::Emulate);
        assert!(
            decision.at.contains("src/exit/npf/mmio.rs:"),
            "{}",
            decision.at
        );
    }

    #[test]
    fn a_write_to_a_grant_mapped_read_only_is_a_general_protection_fault() {
        // d1 maps d2's grant 3 read-only at the first page of its grant-mapping area; a
        // write there faults in the nested page tables (present, write): #GP(0), as Xen
        // answers, not the empty bus's dropped write. A read of an unmapped slot of the
        // area is the empty bus.
        let mut test = Test::long_mode();
        test.domain
            .grants
            .maptrack
            .push(Some(crate::domain::grants::Mapping {
                granter: 2,
                gref: 3,
                host_addr: MAP_AREA,
                readonly: true,
            }));
        test.code(&[0x89, 0x08]); // mov [rax], ecx
        let decision = npf(&test, MAP_AREA + 8, 0b111); // present, write, user
        assert_eq!(decision.action, Action::Reflect);
        assert!(
            decision.why.contains("grant 3 of d2 mapped read-only"),
            "{}",
            decision.why
        );
        let (event, _, synthetic) = testing::injected(&decision);
        assert_eq!(event, traplab_abi::svm::Event::exception(13, 0));
        assert!(synthetic);
        // The CPU was pushing an interrupt's frame there: the delivery's access, which no
        // instruction made (the domain ends, as for any such access outside RAM).
        let mut delivering = test.exit(ExitReason::Npf {
            gpa: MAP_AREA + 0xff8,
            info: NpfInfo::decode(0b111),
        });
        delivering.interrupted = Some(traplab_abi::svm::Event {
            vector: 0x30,
            kind: traplab_abi::svm::EventType::Interrupt,
            error_code: None,
        });
        assert_eq!(test.decide(delivering).action, Action::Kill);
        let read = npf(&test, MAP_AREA + 0x1000, 0b100); // not present, read
        assert_eq!(read.action, Action::Emulate);
        assert!(read.at.contains("src/exit/npf/mmio.rs:"), "{}", read.at);
    }

    #[test]
    fn an_access_of_an_event_s_delivery_outside_ram_is_not_the_instruction_s_at_rip() {
        // Interrupt 0x30's frame pushed onto a stack above RAM: EXITINTINFO says the CPU
        // was delivering it. The `mov [rax], ecx` at RIP never ran: emulating it would
        // write what the guest never wrote and skip the instruction.
        let mut test = Test::long_mode();
        test.code(&[0x89, 0x08]); // mov [rax], ecx
        let exit = Exit {
            interrupted: Some(traplab_abi::svm::Event {
                vector: 0x30,
                kind: traplab_abi::svm::EventType::Interrupt,
                error_code: None,
            }),
            ..test.exit(ExitReason::Npf {
                gpa: 0x1fff_fff8,
                info: NpfInfo::decode(0b110), // a write, at CPL 3
            })
        };
        let run = test.run(exit);
        assert_eq!(run.decision.action, Action::Kill, "{}", run.decision.why);
        assert!(
            run.decision
                .why
                .contains("while the CPU delivered interrupt 0x30"),
            "{}",
            run.decision.why
        );
        assert!(
            !run.decision
                .effects
                .iter()
                .any(|effect| matches!(effect, crate::decision::Effect::Mmio(_))),
            "nothing emulated"
        );
        assert_eq!(test.rip(), crate::testing::ENTRY, "RIP stays");
    }

    #[test]
    fn a_page_table_walk_outside_the_guest_s_ram_kills_the_domain_and_names_the_address() {
        let test = Test::long_mode();
        let decision = npf(&test, 0x2000_0000, 1 << 33);
        assert_eq!(decision.action, Action::Kill);
        assert_eq!(
            testing::killed(&decision),
            "read of guest-physical 0x20000000, which it does not own"
        );
        assert!(decision.why.contains("outside the 16 MiB the guest owns"));
        assert!(decision.at.contains("src/exit/npf/mod.rs:"));
    }

    #[test]
    fn the_reason_says_when_the_cpu_was_walking_the_guest_s_page_tables() {
        // EXITINFO1 bit 33: the fault came from the guest's own page-table walk.
        let test = Test::long_mode();
        let decision = npf(&test, 0x3000_0000, 1 << 33);
        assert!(
            decision
                .why
                .contains("read of guest-physical 0x30000000 while walking its page tables")
        );
    }

    #[test]
    fn a_fetch_from_the_empty_bus_at_rip_is_an_invalid_opcode() {
        // RIP above the guest's RAM, no device there: a PC reads `ff ff`, which the CPU
        // cannot decode. #UD, raised by the hypervisor; the domain lives.
        let mut test = Test::long_mode();
        test.gate(6, 0x20_6000);
        let size = test.domain.memory.size();
        let rip = size + 0x1000;
        // The guest's page tables map the 2 MiB above its RAM, as a kernel may map anything.
        let large = traplab_abi::x86::pte::PRESENT | traplab_abi::x86::pte::HUGE;
        test.write_u64(testing::PD + (size >> 21) * 8, size | large);
        test.domain.vcpu.vmcb.save.rip = rip;
        let decision = npf(&test, rip, 0b1_0100); // a fetch, not present, user
        assert_eq!(decision.action, Action::Reflect, "{}", decision.why);
        let (event, _, synthetic) = testing::injected(&decision);
        assert_eq!(event, traplab_abi::svm::Event::exception(6, 0));
        assert!(synthetic);
        // The fetch of an instruction's tail, RIP in RAM: still the end of the domain.
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        assert_eq!(npf(&test, rip, 0b1_0100).action, Action::Kill);
    }

    #[test]
    fn an_instruction_fetch_is_named_as_one() {
        let test = Test::long_mode();
        let decision = npf(&test, 0x3000_0000, 1 << 4);
        assert!(testing::killed(&decision).starts_with("instruction fetch of"));
    }

    #[test]
    fn an_unmapped_ram_page_of_a_domain_without_lazy_memory_kills_it() {
        // Only lazy memory leaves RAM out of the nested page tables on purpose.
        let test = Test::long_mode();
        let decision = npf(&test, 0x50_0000, 0);
        assert_eq!(decision.action, Action::Kill);
    }

    #[test]
    fn the_lab_device_s_window_goes_to_mmio_and_lazy_ram_to_populate() {
        let mut test = Test::lazy();
        test.code(&[0x8b, 0x00]); // mov eax, [rax]
        let mmio = npf(&test, lab_device::BASE, 0);
        assert!(mmio.at.contains("src/exit/npf/mmio.rs:"), "{}", mmio.at);
        let populate = npf(&test, 0x50_0000, 0);
        assert!(
            populate.at.contains("src/exit/npf/populate.rs:"),
            "{}",
            populate.at
        );
    }

    #[test]
    fn a_page_table_walk_or_a_fetch_on_a_device_ends_the_domain_instead_of_emulating() {
        // A page table the guest put on the lab device's window: the fault is the CPU's walk
        // (EXITINFO1 bit 33), not the MOV's own read, which must not be done there.
        let mut test = Test::long_mode();
        test.code(&[0x8b, 0x08]); // mov ecx, [rax]
        for (info, what) in [
            (
                1 << 33,
                "read of guest-physical 0xfeb00000 while walking its page tables",
            ),
            (1 << 4, "instruction fetch of guest-physical 0xfeb00000"),
        ] {
            let decision = npf(&test, lab_device::BASE, info);
            assert_eq!(decision.action, Action::Kill);
            assert!(decision.why.starts_with(what), "{}", decision.why);
            assert!(
                decision
                    .why
                    .contains("not a fetch or a page-table walk through a device")
            );
        }
    }
}
