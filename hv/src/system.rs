//! Everything the hypervisor runs: the domains, side by side, and what they share.
//!
//! A handler sees its own domain and, read-only, the others ([`Others`]): an event channel
//! names a remote domain and its port, a grant the granter's table. Only `apply.rs` changes
//! any of them ([`OthersMut`]), and the run loop (`run.rs`) decides, with the scheduler
//! (`schedule.rs`), whose vCPU runs.

use crate::domain::{Domain, Others, OthersMut};
use crate::schedule::Start;
use crate::store::Store;
use alloc::vec::Vec;

pub struct System {
    /// In domain order: dom0 first when there is one, then d1, d2, …
    pub domains: Vec<Domain>,
    pub store: Store,
    pub start: Start,
}

// The lookups are `#[inline]`: the run loop makes several at every exit, and across the
// crate boundary (the library to the program) a function this small is not inlined unless
// it says so.
impl System {
    pub fn new(domains: Vec<Domain>, start: Start) -> System {
        System {
            domains,
            store: Store::default(),
            start,
        }
    }

    #[inline]
    pub fn domain(&self, id: u16) -> Option<&Domain> {
        self.domains.iter().find(|domain| domain.id == id)
    }

    #[inline]
    pub fn domain_mut(&mut self, id: u16) -> Option<&mut Domain> {
        self.domains.iter_mut().find(|domain| domain.id == id)
    }

    /// Domain `id`, and the rest of the system as its handlers see it.
    #[inline]
    pub fn split(&self, id: u16) -> Option<(&Domain, Others<'_>)> {
        let index = self.domains.iter().position(|domain| domain.id == id)?;
        let (before, rest) = self.domains.split_at(index);
        let (domain, after) = rest.split_first()?;
        Some((domain, Others::around(before, after, &self.store)))
    }

    /// Domain `id`, and the rest of the system, to change both (`apply.rs`).
    #[inline]
    pub fn split_mut(&mut self, id: u16) -> Option<(&mut Domain, OthersMut<'_>)> {
        let index = self.domains.iter().position(|domain| domain.id == id)?;
        let (before, rest) = self.domains.split_at_mut(index);
        let (domain, after) = rest.split_first_mut()?;
        Some((domain, OthersMut::around(before, after, &mut self.store)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::vcpu::RunState;
    use crate::testing::VecMemory;
    use alloc::boxed::Box;
    use alloc::format;
    use alloc::vec;

    fn three() -> System {
        let domains = [0, 1, 2].map(|id| {
            Domain::new(
                id,
                format!("d{id}"),
                Box::new(VecMemory::new(0x1_0000, false)),
            )
        });
        System::new(domains.into_iter().collect(), Start::Together)
    }

    #[test]
    fn a_domain_s_handler_sees_every_other_domain_in_order_but_not_its_own() {
        let system = three();
        let (domain, others) = system.split(1).expect("d1");
        assert_eq!(domain.id, 1);
        assert_eq!(others.iter().map(|d| d.id).collect::<Vec<_>>(), vec![0, 2]);
        assert!(others.domain(1).is_none());
        assert_eq!(others.domain(2).map(|d| d.id), Some(2));
        assert!(system.split(7).is_none());
    }

    #[test]
    fn split_mut_changes_the_others_through_the_same_view() {
        let mut system = three();
        let (domain, mut others) = system.split_mut(2).expect("d2");
        domain.vcpu.ticks_run = 1;
        others.domain_mut(0).expect("d0").vcpu.run_state = RunState::Ended;
        others.store.write(0, "/a".into(), "b".into());
        assert!(others.domain_mut(2).is_none());
        assert_eq!(
            system.domain(0).map(|d| d.vcpu.run_state.clone()),
            Some(RunState::Ended)
        );
        assert_eq!(system.store.read("/a"), Some("b"));
    }
}
