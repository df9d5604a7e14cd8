//! SHUTDOWN (exit code 0x7F): the guest triple-faulted.
//!
//! On a bare machine the CPU would enter shutdown and the board would reset. Here only
//! this domain ends: the hypervisor and every other domain carry on (AMD APM vol. 2,
//! 15.13.3 "Shutdown intercept"). Because every exception is intercepted, the events
//! before this one show the faults that led here.

use super::{DomainEnd, Next};
use crate::decide;
use crate::domain::Domain;
use traplab_abi::event::Action;

pub fn handle(domain: &mut Domain) -> Next {
    decide!(
        domain,
        Action::Kill,
        "the guest triple-faulted: a bare CPU would shut down, so only this domain ends"
    );
    Next::End(DomainEnd::Killed {
        reason: "triple fault (shutdown)".into(),
    })
}
