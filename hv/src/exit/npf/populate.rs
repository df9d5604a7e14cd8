//! The first touch of RAM the domain has not used yet (setting `lazy-memory`): map a frame.
//!
//! With lazy memory the nested page tables start empty: each page of guest RAM gets a host
//! frame only when the guest first touches it, as a hypervisor that overcommits memory (or
//! a balloon driver's host) does. The faulting instruction then runs again and works.
//! (The hypervisor's own accesses to guest memory — loading the image, reading a hypercall's
//! buffer — populate pages silently.)

use super::super::Exit;
use crate::decide;
use crate::decision::{Decision, Effect};
use crate::domain::Guest;
use traplab_abi::event::Action;

pub fn handle(_exit: &Exit, _guest: &Guest, gpa: u64) -> Decision {
    let page = gpa & !0xfff;
    // EXERCISE lazy-memory.1: map the next page too, if it is RAM that is not mapped yet
    // (`guest.memory.is_mapped`, with the parameter renamed `guest`): a sequential toucher
    // then takes half the exits. Say so in the emulation (`.describe(…)`, which the
    // machine's report of the frames follows): `… and 0x… ahead …`.
    // The nested page tables change: flush the guest's TLB at VMRUN (a cached "not mapped"
    // is not kept, but a clean slate is the rule whenever the tables change).
    decide!(
        Action::Emulate,
        "guest-physical {page:#x} is this domain's RAM, not touched before: the hypervisor gives it a frame now, and the access runs again"
    )
    .with(Effect::Populate(page))
    .with(Effect::FlushTlb)
}

#[cfg(test)]
mod tests {
    use crate::decision::Effect;
    use crate::testing::{ENTRY, Test};
    use traplab_abi::event::Action;
    use traplab_abi::exit::ExitReason;
    use traplab_abi::svm::NpfInfo;

    #[test]
    fn the_first_touch_of_lazy_ram_maps_its_page_and_the_access_runs_again() {
        let mut test = Test::lazy();
        assert!(!test.domain.memory.is_mapped(0x50_0000));
        let exit = test.exit(ExitReason::Npf {
            gpa: 0x50_0abc,
            info: NpfInfo::decode(0b10),
        });
        let run = test.run(exit);
        assert_eq!(run.decision.action, Action::Emulate);
        assert!(
            run.decision.effects.contains(&Effect::Populate(0x50_0000)),
            "the whole page"
        );
        assert!(test.domain.memory.is_mapped(0x50_0000));
        assert!(
            run.emulate()
                .what
                .contains("mapped guest-physical 0x500000 to host frame 0x40500000"),
            "{}",
            run.emulate().what
        );
        // No RIP change: the faulting instruction runs again, and now it works.
        assert_eq!(test.rip(), ENTRY);
        // The nested page tables changed: flush the guest's TLB (AMD APM vol. 2, 15.16).
        assert_eq!(test.domain.vcpu.vmcb.control.tlb_control, 1);
    }

    #[test]
    fn a_debugger_s_look_at_an_untouched_page_reads_zeros_and_maps_nothing() {
        // gdb's `x` (`Domain::look_virtual_prefix`): the page stays for the guest's first
        // touch, whose NPF the lab shows. The hypervisor's own read maps it.
        let test = Test::lazy();
        let mut bytes = [0xaau8; 8];
        assert_eq!(test.domain.look_virtual_prefix(0x50_0abc, &mut bytes), 8);
        assert_eq!(bytes, [0; 8]);
        assert!(!test.domain.memory.is_mapped(0x50_0000), "only looked");
        assert!(test.domain.read_virtual(0x50_0abc, &mut bytes).is_ok());
        assert!(test.domain.memory.is_mapped(0x50_0000), "read, so mapped");
    }
}
