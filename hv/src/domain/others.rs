//! The rest of the system, as one domain's handler sees it: the other domains and the
//! store, read-only ([`Others`]); and as `apply.rs` changes it ([`OthersMut`]). The run
//! loop makes both from the [`System`](crate::system::System) with `split` and
//! `split_mut`; a host test, from the domains it set up beside its own.

use super::Domain;
use super::vcpu::RunState;
use crate::store::Store;

/// The domains other than the one that exited, and the store: what its handler may read of
/// the rest of the system.
#[derive(Clone, Copy)]
pub struct Others<'a> {
    before: &'a [Domain],
    after: &'a [Domain],
    pub store: &'a Store,
}

impl<'a> Others<'a> {
    /// The other domains are `domains`; the store is `store`.
    pub fn new(domains: &'a [Domain], store: &'a Store) -> Others<'a> {
        Others {
            before: &[],
            after: domains,
            store,
        }
    }

    /// The domains before and after the one that exited, in domain order.
    pub fn around(before: &'a [Domain], after: &'a [Domain], store: &'a Store) -> Others<'a> {
        Others {
            before,
            after,
            store,
        }
    }

    /// Domain `id`, if it is one of the others.
    pub fn domain(&self, id: u16) -> Option<&'a Domain> {
        self.iter().find(|domain| domain.id == id)
    }

    /// Domain `id`, if it is one of the others and has not ended: one a hypercall may still
    /// connect to or map from (Xen refuses a dying domain: `-ESRCH`, `GNTST_bad_domain`).
    pub fn live(&self, id: u16) -> Option<&'a Domain> {
        self.domain(id)
            .filter(|domain| domain.vcpu.run_state != RunState::Ended)
    }

    pub fn iter(&self) -> impl Iterator<Item = &'a Domain> + use<'a> {
        self.before.iter().chain(self.after.iter())
    }
}

/// The other domains and the store, to change (`apply.rs`).
pub struct OthersMut<'a> {
    before: &'a mut [Domain],
    after: &'a mut [Domain],
    pub store: &'a mut Store,
}

impl<'a> OthersMut<'a> {
    pub fn new(domains: &'a mut [Domain], store: &'a mut Store) -> OthersMut<'a> {
        OthersMut {
            before: &mut [],
            after: domains,
            store,
        }
    }

    /// The domains before and after the one that exited, in domain order.
    pub fn around(
        before: &'a mut [Domain],
        after: &'a mut [Domain],
        store: &'a mut Store,
    ) -> OthersMut<'a> {
        OthersMut {
            before,
            after,
            store,
        }
    }

    pub fn domain_mut(&mut self, id: u16) -> Option<&mut Domain> {
        self.before
            .iter_mut()
            .chain(self.after.iter_mut())
            .find(|domain| domain.id == id)
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Domain> {
        self.before.iter_mut().chain(self.after.iter_mut())
    }

    /// The same, read-only.
    pub fn as_others(&self) -> Others<'_> {
        Others {
            before: self.before,
            after: self.after,
            store: self.store,
        }
    }
}
