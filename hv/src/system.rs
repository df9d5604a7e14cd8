//! Everything the hypervisor runs: the domains, side by side, and what they share.
//!
//! A handler sees its own domain and, read-only, the others ([`Others`]): an event channel
//! names a remote domain and its port, a grant the granter's table. Only `apply.rs` changes
//! any of them ([`OthersMut`]), and the run loop (`run.rs`) decides, with the scheduler
//! (`schedule.rs`), whose vCPU runs.

use crate::domain::vcpu::RunState;
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

impl System {
    pub fn new(domains: Vec<Domain>, start: Start) -> System {
        System {
            domains,
            store: Store::default(),
            start,
        }
    }

    pub fn domain(&self, id: u16) -> Option<&Domain> {
        self.domains.iter().find(|domain| domain.id == id)
    }

    pub fn domain_mut(&mut self, id: u16) -> Option<&mut Domain> {
        self.domains.iter_mut().find(|domain| domain.id == id)
    }

    /// Domain `id`, and the rest of the system as its handlers see it.
    pub fn split(&self, id: u16) -> Option<(&Domain, Others<'_>)> {
        let index = self.domains.iter().position(|domain| domain.id == id)?;
        let (before, rest) = self.domains.split_at(index);
        let (domain, after) = rest.split_first()?;
        Some((domain, Others::around(before, after, &self.store)))
    }

    /// Domain `id`, and the rest of the system, to change both (`apply.rs`).
    pub fn split_mut(&mut self, id: u16) -> Option<(&mut Domain, OthersMut<'_>)> {
        let index = self.domains.iter().position(|domain| domain.id == id)?;
        let (before, rest) = self.domains.split_at_mut(index);
        let (domain, after) = rest.split_first_mut()?;
        Some((domain, OthersMut::around(before, after, &mut self.store)))
    }

    /// Is any domain still to run or running (not every one has ended)?
    pub fn alive(&self) -> bool {
        self.domains
            .iter()
            .any(|domain| domain.vcpu.run_state != RunState::Ended)
    }
}
