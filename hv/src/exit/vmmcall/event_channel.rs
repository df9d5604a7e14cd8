//! `event_channel_op(cmd, arg)`: event channels, as Xen's `do_event_channel_op`
//! (`xen/common/event_channel.c`; the ABI is `traplab_abi::evtchn`).
//!
//! Every command reads its structure from the guest, checks it, and decides the changes:
//! a port's state here and, for a channel's two ends, in the other domain; the outputs
//! written back. `EVTCHNOP_send` on a connected port is the one *forward* of the
//! hypervisor: the event goes to another domain, which runs because of it later.
#![allow(
    clippy::result_large_err,
    reason = "a refusal is a decision too, as big as the success it replaces, and built once"
)]

use super::{Argument, finish};
use crate::decide;
use crate::decision::{Decision, Effect};
use crate::domain::evtchn::PortState;
use crate::domain::{Domain, Guest};
use alloc::boxed::Box;
use alloc::format;
use traplab_abi::event::Action;
use traplab_abi::evtchn::{DOMID_SELF, PORTS, Port, cmd, virq};
use traplab_abi::hypercall::{self, error};

pub fn handle(guest: &Guest, next: u64, command: u64, arg: u64) -> Decision {
    // Xen's `do_event_channel_op(int cmd, …)`: the command is an int, and bits 63:32 of the
    // register are no part of it.
    let command = command as u32 as u64;
    let decision = match command {
        cmd::ALLOC_UNBOUND => alloc_unbound(guest, arg),
        cmd::BIND_INTERDOMAIN => bind_interdomain(guest, arg),
        cmd::BIND_VIRQ => bind_virq(guest, arg),
        cmd::SEND => send(guest, arg),
        cmd::CLOSE => close(guest, arg),
        cmd::UNMASK => unmask(guest, arg),
        _ => Err(refuse(
            decide!(
                Action::Emulate,
                "event_channel_op({command}): no such command, the guest gets ENOSYS"
            ),
            error::ENOSYS,
        )),
    };
    match decision {
        Ok(decision) => finish(decision, next, hypercall::EVENT_CHANNEL_OP, 0),
        Err(refused) => {
            let (decision, code) = *refused;
            finish(decision, next, hypercall::EVENT_CHANNEL_OP, code)
        }
    }
}

/// A command's outcome: the decision, or the decision and the error the guest gets.
type Outcome = Result<Decision, Refused>;

/// A refusal: the decision that explains it and the error code (boxed: it is rare, and a
/// decision is large).
type Refused = Box<(Decision, i64)>;

fn refuse(decision: Decision, code: i64) -> Refused {
    Box::new((decision, code))
}

/// The domain a `dom` field names: the caller for `DOMID_SELF` or its own id, else one of
/// the others that has not ended.
fn named<'a>(guest: &Guest<'a>, dom: u16) -> Option<&'a Domain> {
    if dom == DOMID_SELF || dom == guest.id {
        Some(guest.domain)
    } else {
        guest.others.live(dom)
    }
}

/// The structure could not be read: EFAULT.
fn unreadable(name: &str, arg: u64) -> Refused {
    refuse(
        decide!(
            Action::Emulate,
            "{name}: its argument at {arg:#x} is not memory the guest can read (and, for one with results, write): unmapped, read-only, a supervisor page at CPL 3, or not its RAM; EFAULT"
        ),
        error::EFAULT,
    )
}

/// A new port of `domain`: a free one, in a domain with a shared-info page to mark its
/// events in.
fn new_port(name: &str, domain: &Domain) -> Result<Port, Refused> {
    can_mark_pending(name, domain)?;
    free_port(name, domain)
}

/// The shared-info page a new port's events are marked pending in (`set_shared_info`):
/// without it, EINVAL, a condition of this hypervisor's (Xen's shared info always exists).
fn can_mark_pending(name: &str, domain: &Domain) -> Result<(), Refused> {
    match domain.events.shared_info {
        Some(_) => Ok(()),
        None => Err(refuse(
            decide!(
                Action::Emulate,
                "{name}: d{} has no shared-info page yet (set_shared_info), so no event could be marked pending: EINVAL",
                domain.id
            ),
            error::EINVAL,
        )),
    }
}

/// The lowest free port of `domain`; ENOSPC when every one is in use.
fn free_port(name: &str, domain: &Domain) -> Result<Port, Refused> {
    domain.events.free_port().ok_or_else(|| {
        refuse(
            decide!(
                Action::Emulate,
                "{name}: every port of d{} is in use, ENOSPC",
                domain.id
            ),
            error::ENOSPC,
        )
    })
}

/// `EVTCHNOP_alloc_unbound`: a port in `dom` that `remote_dom` may bind to.
fn alloc_unbound(guest: &Guest, arg: u64) -> Outcome {
    const NAME: &str = "EVTCHNOP_alloc_unbound";
    let argument = Argument::<8>::read_for_output(guest, arg).map_err(|_| unreadable(NAME, arg))?;
    let (dom, remote_dom) = (argument.u16(0), argument.u16(2));
    let Some(target) = named(guest, dom) else {
        return Err(refuse(
            decide!(
                Action::Emulate,
                "{NAME}: there is no domain {dom} (or it has ended), ESRCH"
            ),
            error::ESRCH,
        ));
    };
    let port = free_port(NAME, target)?;
    // Xen's default policy (XSM's dummy module), checked once a free port is found: a
    // domain allocates in itself; only the control domain may do it for another. (The
    // shared-info page after it: a domU learns nothing of another domain's shared-info page.)
    if target.id != guest.id && !guest.privileged() {
        return Err(refuse(
            decide!(
                Action::Emulate,
                "{NAME}: d{} asks for a port in d{}, which only the control domain (dom0) may do: EPERM",
                guest.id,
                target.id
            ),
            error::EPERM,
        ));
    }
    can_mark_pending(NAME, target)?;
    let remote = if remote_dom == DOMID_SELF {
        guest.id
    } else {
        remote_dom
    };
    Ok(decide!(
        Action::Emulate,
        "{NAME}: port {port} of d{} is allocated, unbound: d{remote} may bind to it",
        target.id
    )
    .with(Effect::PortState {
        domain: target.id,
        port,
        state: PortState::Unbound { remote },
    })
    .with(argument.write(4, &port.to_le_bytes()))
    .describe(format!("{NAME}: port {port} of d{}", target.id)))
}

/// `EVTCHNOP_bind_interdomain`: a new local port, connected to `remote_port` of
/// `remote_dom`, which must be unbound and allocated for the caller.
fn bind_interdomain(guest: &Guest, arg: u64) -> Outcome {
    const NAME: &str = "EVTCHNOP_bind_interdomain";
    let argument =
        Argument::<12>::read_for_output(guest, arg).map_err(|_| unreadable(NAME, arg))?;
    let (remote_dom, remote_port) = (argument.u16(0), argument.u32(4));
    let Some(remote) = named(guest, remote_dom) else {
        return Err(refuse(
            decide!(
                Action::Emulate,
                "{NAME}: there is no domain {remote_dom} to connect to (or it has ended), ESRCH"
            ),
            error::ESRCH,
        ));
    };
    // A free port of the caller's first, then the remote's port: Xen's
    // evtchn_bind_interdomain takes `get_free_port(ld)` before it looks at `rport`, so a full
    // table is ENOSPC whatever the remote port.
    let local = new_port(NAME, guest)?;
    let expected = PortState::Unbound { remote: guest.id };
    if remote.events.state(remote_port) != Some(expected) {
        let state = remote.events.state(remote_port);
        return Err(refuse(
            decide!(
                Action::Emulate,
                "{NAME}: port {remote_port} of d{} is not a port allocated for d{} to bind ({state:?}), EINVAL",
                remote.id,
                guest.id
            ),
            error::EINVAL,
        ));
    }
    // As Xen: an event sent to the remote port while it was unbound was dropped, so the
    // new local port is made pending, in case the caller missed one.
    Ok(decide!(
        Action::Emulate,
        "{NAME}: port {local} of d{} and port {remote_port} of d{} are now the two ends of one channel",
        guest.id,
        remote.id
    )
    .with(Effect::PortState {
        domain: guest.id,
        port: local,
        state: PortState::Interdomain {
            remote: remote.id,
            remote_port,
        },
    })
    .with(Effect::PortState {
        domain: remote.id,
        port: remote_port,
        state: PortState::Interdomain {
            remote: guest.id,
            remote_port: local,
        },
    })
    .with(argument.write(8, &local.to_le_bytes()))
    .with(Effect::Notify {
        to: guest.id,
        port: local,
        from_port: remote_port,
    })
    .describe(format!(
        "{NAME}: local port {local} ↔ d{} port {remote_port}",
        remote.id
    )))
}

/// `EVTCHNOP_bind_virq`: a port for the domain's timer.
fn bind_virq(guest: &Guest, arg: u64) -> Outcome {
    const NAME: &str = "EVTCHNOP_bind_virq";
    let argument =
        Argument::<12>::read_for_output(guest, arg).map_err(|_| unreadable(NAME, arg))?;
    let (number, vcpu) = (argument.u32(0), argument.u32(4));
    // Xen's order of checks (`evtchn_bind_virq`): the VIRQ's range, a domain-wide VIRQ on
    // another vCPU than 0, the vCPU, and then here the one VIRQ traplab raises.
    if number >= virq::COUNT {
        return Err(refuse(
            decide!(
                Action::Emulate,
                "{NAME}: VIRQ {number} is beyond the ABI's {} VIRQs: EINVAL (as Xen)",
                virq::COUNT
            ),
            error::EINVAL,
        ));
    }
    if virq::is_global(number) && vcpu != 0 {
        return Err(refuse(
            decide!(
                Action::Emulate,
                "{NAME}: VIRQ {number} is the domain's, bound on vCPU 0 only, not on vCPU {vcpu}: EINVAL (as Xen)"
            ),
            error::EINVAL,
        ));
    }
    if vcpu != 0 {
        return Err(refuse(
            decide!(
                Action::Emulate,
                "{NAME}: a domain has one vCPU, vCPU 0; there is no vCPU {vcpu}: ENOENT (as Xen)"
            ),
            error::ENOENT,
        ));
    }
    if number != virq::TIMER {
        return Err(refuse(
            decide!(
                Action::Emulate,
                "{NAME}: VIRQ {number}: traplab has one virtual interrupt, the timer (VIRQ 0): EINVAL"
            ),
            error::EINVAL,
        ));
    }
    if let Some(port) = guest.events.virq_port(number) {
        return Err(refuse(
            decide!(
                Action::Emulate,
                "{NAME}: the timer is bound to port {port} already, EEXIST"
            ),
            error::EEXIST,
        ));
    }
    let port = new_port(NAME, guest)?;
    Ok(decide!(
        Action::Emulate,
        "{NAME}: the timer's ticks come as events on port {port} from now on, instead of as its interrupt"
    )
    .with(Effect::PortState {
        domain: guest.id,
        port,
        state: PortState::Virq(number),
    })
    .with(argument.write(8, &port.to_le_bytes()))
    .describe(format!("{NAME}: VIRQ_TIMER on port {port}")))
}

/// Read the one port of `EVTCHNOP_send`, `close` and `unmask`, and check it is a port.
fn port_argument(guest: &Guest, name: &str, arg: u64) -> Result<Port, Refused> {
    let argument = Argument::<4>::read(guest, arg).map_err(|_| unreadable(name, arg))?;
    let port = argument.u32(0);
    if port >= PORTS {
        return Err(refuse(
            decide!(
                Action::Emulate,
                "{name}: port {port} does not exist (a domain has ports 1 to {}), EINVAL",
                PORTS - 1
            ),
            error::EINVAL,
        ));
    }
    Ok(port)
}

/// `EVTCHNOP_send`: notify the other end of the channel.
fn send(guest: &Guest, arg: u64) -> Outcome {
    const NAME: &str = "EVTCHNOP_send";
    let port = port_argument(guest, NAME, arg)?;
    match guest.events.ports[port as usize] {
        PortState::Free => Err(refuse(
            decide!(
                Action::Emulate,
                "{NAME}: port {port} was never allocated or bound: nothing to send to, EINVAL"
            ),
            error::EINVAL,
        )),
        // Xen drops the event silently: the other side has not connected yet.
        PortState::Unbound { remote } => Ok(decide!(
            Action::Emulate,
            "{NAME}: port {port} is allocated for d{remote}, which has not bound to it yet: as in Xen, the event is dropped"
        )
        .describe(format!("{NAME}: port {port} unbound, dropped"))),
        PortState::Virq(_) => Err(refuse(
            decide!(
                Action::Emulate,
                "{NAME}: port {port} is bound to the timer, which only the hypervisor notifies: EINVAL"
            ),
            error::EINVAL,
        )),
        PortState::Store => Err(refuse(
            decide!(
                Action::Emulate,
                "{NAME}: port {port} is the domain's store port, which only the store notifies: EINVAL"
            ),
            error::EINVAL,
        )),
        PortState::Interdomain {
            remote,
            remote_port,
        } if remote == guest.id => Ok(decide!(
            Action::Emulate,
            "{NAME}: port {port} is connected to port {remote_port} of the same domain: it becomes pending here"
        )
        .with(Effect::Notify {
            to: remote,
            port: remote_port,
            from_port: port,
        })),
        PortState::Interdomain {
            remote,
            remote_port,
        } => {
            let waiting = match guest.others.domain(remote) {
                Some(target) if target.vcpu.run_state.is_blocked() => {
                    " (it is blocked: the event may wake it)"
                }
                _ => "",
            };
            Ok(decide!(
                Action::Forward,
                "{NAME}: port {port} is connected to port {remote_port} of d{remote}: the hypervisor forwards the event there{waiting}; d{} goes on",
                guest.id
            )
            .with(Effect::Notify {
                to: remote,
                port: remote_port,
                from_port: port,
            }))
        }
    }
}

/// `EVTCHNOP_close`: free the port; the other end of a channel becomes unbound again.
fn close(guest: &Guest, arg: u64) -> Outcome {
    const NAME: &str = "EVTCHNOP_close";
    let port = port_argument(guest, NAME, arg)?;
    let free = Effect::PortState {
        domain: guest.id,
        port,
        state: PortState::Free,
    };
    match guest.events.ports[port as usize] {
        PortState::Free => Err(refuse(
            decide!(Action::Emulate, "{NAME}: port {port} is not in use, EINVAL"),
            error::EINVAL,
        )),
        // The other end becomes unbound, in another domain or in this one (a loopback
        // channel): as Xen's evtchn_close, so a send there is dropped rather than marking
        // the freed port.
        PortState::Interdomain {
            remote,
            remote_port,
        } => Ok(decide!(
            Action::Emulate,
            "{NAME}: port {port} is freed; its other end, port {remote_port} of d{remote}, is unbound again (for d{} to bind anew)",
            guest.id
        )
        .with(free)
        .with(Effect::PortState {
            domain: remote,
            port: remote_port,
            state: PortState::Unbound { remote: guest.id },
        })),
        _ => Ok(decide!(Action::Emulate, "{NAME}: port {port} is freed").with(free)),
    }
}

/// `EVTCHNOP_unmask`: clear the mask bit; an event held back is owed its upcall now.
fn unmask(guest: &Guest, arg: u64) -> Outcome {
    const NAME: &str = "EVTCHNOP_unmask";
    let port = port_argument(guest, NAME, arg)?;
    Ok(decide!(
        Action::Emulate,
        "{NAME}: port {port}'s events are let through again; one already pending gets its upcall"
    )
    .with(Effect::Unmask(port)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::evtchn::Callback;
    use crate::domain::vcpu::{RunState, Wait};
    use crate::schedule::Switch;
    use crate::testing::assert_returned;
    use crate::testing::{DATA, SHARED_INFO, Test, UNMAPPED};
    use traplab_abi::event::Notify;
    use traplab_abi::evtchn::shared_info;
    use traplab_abi::x86::RFlags;

    /// The test's domain, d1 with its shared-info page at [`SHARED_INFO`], at
    /// `event_channel_op(command, DATA)` with the command's structure `arg` at [`DATA`].
    fn op(command: u64, arg: &[u8]) -> Test {
        let mut test = Test::hypercall(hypercall::EVENT_CHANNEL_OP, command, DATA);
        test.domain.events.shared_info = Some(SHARED_INFO);
        test.write(DATA, arg);
        test
    }

    /// `struct evtchn_alloc_unbound { domid_t dom, remote_dom; evtchn_port_t port; }`.
    fn alloc_unbound(dom: u16, remote_dom: u16) -> Vec<u8> {
        [
            &dom.to_le_bytes()[..],
            &remote_dom.to_le_bytes(),
            &[0xee; 4],
        ]
        .concat()
    }

    /// `struct evtchn_bind_interdomain { domid_t remote_dom; evtchn_port_t remote_port,
    /// local_port; }`.
    fn bind_interdomain(remote_dom: u16, remote_port: Port) -> Vec<u8> {
        [
            &remote_dom.to_le_bytes()[..],
            &[0; 2],
            &remote_port.to_le_bytes(),
            &[0xee; 4],
        ]
        .concat()
    }

    /// `struct evtchn_bind_virq { uint32_t virq, vcpu; evtchn_port_t port; }`.
    fn bind_virq(number: u32, vcpu: u32) -> Vec<u8> {
        [&number.to_le_bytes()[..], &vcpu.to_le_bytes(), &[0xee; 4]].concat()
    }

    /// `struct evtchn_send` / `evtchn_close` / `evtchn_unmask`: one port.
    fn one_port(port: Port) -> Vec<u8> {
        port.to_le_bytes().to_vec()
    }

    fn read_u32(test: &Test, gpa: u64) -> u32 {
        test.read_u64(gpa) as u32
    }

    /// A byte of `domain`'s shared-info page.
    fn shared(domain: &Domain, offset: u64) -> u8 {
        domain.shared_info_byte(offset).expect("a shared-info page")
    }

    /// `vcpu_info[0].evtchn_pending_sel` of `domain`.
    fn pending_sel(domain: &Domain) -> u64 {
        domain
            .memory
            .read_u64_physical(SHARED_INFO + shared_info::PENDING_SEL)
            .expect("a shared-info page")
    }

    /// The whole shared-info page of `domain`, to see that nothing changed.
    fn page(domain: &Domain) -> Vec<u8> {
        let mut bytes = vec![0u8; 4096];
        domain
            .memory
            .read_physical(SHARED_INFO, &mut bytes)
            .expect("a shared-info page");
        bytes
    }

    /// d1's port 1 and d2's port 5, the two ends of one channel; d2 in `run_state`.
    fn connected(run_state: RunState) -> Test {
        let mut test = op(cmd::SEND, &one_port(1));
        test.domain.events.ports[1] = PortState::Interdomain {
            remote: 2,
            remote_port: 5,
        };
        let d2 = test.add_domain(2);
        d2.events.ports[5] = PortState::Interdomain {
            remote: 1,
            remote_port: 1,
        };
        d2.vcpu.run_state = run_state;
        test
    }

    // ---- EVTCHNOP_alloc_unbound -------------------------------------------------------

    #[test]
    fn alloc_unbound_in_itself_gets_port_1_and_writes_it_at_arg_plus_4() {
        // Port 0 is never allocated: xen/common/event_channel.c, evtchn_init, marks it
        // ECS_RESERVED, so get_free_port's first free port is 1.
        let mut test = op(cmd::ALLOC_UNBOUND, &alloc_unbound(DOMID_SELF, 2));
        let run = test.call();
        assert_eq!(run.decision.action, Action::Emulate);
        assert_eq!(
            run.decision.why,
            "EVTCHNOP_alloc_unbound: port 1 of d1 is allocated, unbound: d2 may bind to it"
        );
        assert_eq!(
            run.decision.effects[..2],
            [
                Effect::PortState {
                    domain: 1,
                    port: 1,
                    state: PortState::Unbound { remote: 2 },
                },
                Effect::GuestWrite {
                    address: DATA + 4,
                    bytes: vec![1, 0, 0, 0],
                },
            ]
        );
        assert_eq!(run.kinds(), ["decide", "emulate"]);
        assert_eq!(
            run.emulate().what,
            "EVTCHNOP_alloc_unbound: port 1 of d1; event_channel_op returned 0"
        );
        assert_returned(&test, 0);
        assert_eq!(read_u32(&test, DATA + 4), 1, "the port, written back");
        assert_eq!(
            test.domain.events.ports[1],
            PortState::Unbound { remote: 2 }
        );
        assert_eq!(test.domain.events.ports[2], PortState::Free);
    }

    #[test]
    fn alloc_unbound_with_its_argument_on_a_read_only_page_is_efault_and_allocates_nothing() {
        // The port would be written back there: on a read-only page (here a page table a PV
        // guest must map read-only) the guest's own store would fault, so the hypervisor
        // does not write it either (Xen's copy_to_guest). Nothing changes.
        use crate::testing::PDPT;
        let at = PDPT + 0x800; // an unused half of a read-only page table
        let mut test = Test::hypercall(hypercall::EVENT_CHANNEL_OP, cmd::ALLOC_UNBOUND, at);
        test.domain.events.shared_info = Some(SHARED_INFO);
        test.read_only_page_tables();
        test.write(at, &alloc_unbound(DOMID_SELF, 0));
        let run = test.call();
        assert_returned(&test, error::EFAULT);
        assert!(
            run.decision.why.contains("read-only"),
            "{}",
            run.decision.why
        );
        assert_eq!(test.domain.events.ports[1], PortState::Free);
        assert_eq!(test.read_u64(at + 4) as u32, 0xeeee_eeee, "nothing written");
    }

    #[test]
    fn alloc_unbound_with_remote_dom_self_is_for_the_caller_and_takes_the_lowest_free_port() {
        // `remote_dom == DOMID_SELF` means the current domain (evtchn_alloc_unbound).
        let mut test = op(cmd::ALLOC_UNBOUND, &alloc_unbound(1, DOMID_SELF));
        test.domain.events.ports[1] = PortState::Virq(virq::TIMER);
        test.call();
        assert_returned(&test, 0);
        assert_eq!(read_u32(&test, DATA + 4), 2);
        assert_eq!(
            test.domain.events.ports[2],
            PortState::Unbound { remote: 1 }
        );
    }

    #[test]
    fn alloc_unbound_in_another_domain_by_a_domu_returns_eperm() {
        // XSM's dummy policy (xen/include/xsm/dummy.h, xsm_evtchn_unbound with
        // XSM_TARGET): a domain acts on itself; only the control domain on another.
        let mut test = op(cmd::ALLOC_UNBOUND, &alloc_unbound(2, DOMID_SELF));
        test.add_domain(2);
        let run = test.call();
        assert_returned(&test, error::EPERM);
        assert_eq!(
            run.decision.why,
            "EVTCHNOP_alloc_unbound: d1 asks for a port in d2, which only the control domain (dom0) may do: EPERM"
        );
        assert_eq!(run.emulate().what, "event_channel_op returned -1 (EPERM)");
        assert_eq!(test.other(2).events.ports[1], PortState::Free);
        assert_eq!(read_u32(&test, DATA + 4), 0xeeee_eeee, "nothing written");
        // The same while d2 has no shared-info page yet: the answer says nothing of d2's
        // set-up (it was EINVAL, d2's missing page, before the policy was checked).
        let mut test = op(cmd::ALLOC_UNBOUND, &alloc_unbound(2, DOMID_SELF));
        test.add_domain(2).events.shared_info = None;
        test.call();
        assert_returned(&test, error::EPERM);
    }

    #[test]
    fn dom0_may_allocate_a_port_in_another_domain() {
        let mut test = op(cmd::ALLOC_UNBOUND, &alloc_unbound(2, DOMID_SELF));
        test.domain.id = 0;
        test.domain.events.shared_info = None; // the port is d2's: d2's page counts
        test.add_domain(2);
        let run = test.call();
        assert_returned(&test, 0);
        assert_eq!(
            run.decision.why,
            "EVTCHNOP_alloc_unbound: port 1 of d2 is allocated, unbound: d0 may bind to it"
        );
        assert_eq!(
            test.other(2).events.ports[1],
            PortState::Unbound { remote: 0 }
        );
        assert_eq!(test.domain.events.ports[1], PortState::Free);
        assert_eq!(read_u32(&test, DATA + 4), 1, "written in dom0's structure");
    }

    #[test]
    fn alloc_unbound_in_a_domain_that_does_not_exist_returns_esrch() {
        let mut test = op(cmd::ALLOC_UNBOUND, &alloc_unbound(7, DOMID_SELF));
        test.domain.id = 0;
        let run = test.call();
        assert_returned(&test, error::ESRCH);
        assert_eq!(
            run.decision.why,
            "EVTCHNOP_alloc_unbound: there is no domain 7 (or it has ended), ESRCH"
        );
        assert_eq!(read_u32(&test, DATA + 4), 0xeeee_eeee);
    }

    #[test]
    fn alloc_unbound_without_a_shared_info_page_returns_einval() {
        let mut test = op(cmd::ALLOC_UNBOUND, &alloc_unbound(DOMID_SELF, 2));
        test.domain.events.shared_info = None;
        let run = test.call();
        assert_returned(&test, error::EINVAL);
        assert!(
            run.decision
                .why
                .contains("d1 has no shared-info page yet (set_shared_info)"),
            "{}",
            run.decision.why
        );
        assert_eq!(test.domain.events.ports[1], PortState::Free);
    }

    #[test]
    fn alloc_unbound_with_every_port_in_use_returns_enospc() {
        let mut test = op(cmd::ALLOC_UNBOUND, &alloc_unbound(DOMID_SELF, 2));
        for port in 1..PORTS as usize {
            test.domain.events.ports[port] = PortState::Unbound { remote: 3 };
        }
        let before = test.domain.events.clone();
        let run = test.call();
        assert_returned(&test, error::ENOSPC);
        assert_eq!(
            run.decision.why,
            "EVTCHNOP_alloc_unbound: every port of d1 is in use, ENOSPC"
        );
        assert_eq!(test.domain.events, before);
    }

    #[test]
    fn alloc_unbound_with_an_unreadable_argument_returns_efault() {
        let mut test = op(cmd::ALLOC_UNBOUND, &[]);
        test.set_gpr(6, UNMAPPED);
        let run = test.call();
        assert_returned(&test, error::EFAULT);
        assert_eq!(
            run.decision.why,
            "EVTCHNOP_alloc_unbound: its argument at 0x40000000 is not memory the guest can read (and, for one with results, write): unmapped, read-only, a supervisor page at CPL 3, or not its RAM; EFAULT"
        );
        assert_eq!(
            run.decision.effects.len(),
            2,
            "RAX and RIP: {:?}",
            run.decision.effects
        );
    }

    // ---- EVTCHNOP_bind_interdomain ----------------------------------------------------

    #[test]
    fn bind_interdomain_connects_both_ends_and_notifies_the_new_local_port_as_xen_does() {
        // xen/common/event_channel.c, evtchn_bind_interdomain: "We may have lost
        // notifications on the remote unbound port. Fix that up here by conservatively
        // always setting a notification on the local port."
        let mut test = op(cmd::BIND_INTERDOMAIN, &bind_interdomain(2, 5));
        test.add_domain(2).events.ports[5] = PortState::Unbound { remote: 1 };
        let run = test.call();
        assert_eq!(run.decision.action, Action::Emulate);
        assert_eq!(
            run.decision.why,
            "EVTCHNOP_bind_interdomain: port 1 of d1 and port 5 of d2 are now the two ends of one channel"
        );
        assert_eq!(run.kinds(), ["decide", "notify", "emulate"]);
        assert_eq!(
            run.notifies(),
            [&Notify {
                to: 1,
                port: 1,
                from_port: 5,
                woke: false,
                masked: false,
            }]
        );
        assert_eq!(
            run.emulate().what,
            "EVTCHNOP_bind_interdomain: local port 1 ↔ d2 port 5; event_channel_op returned 0"
        );
        assert_returned(&test, 0);
        assert_eq!(read_u32(&test, DATA + 8), 1, "local_port, written back");
        assert_eq!(
            test.domain.events.ports[1],
            PortState::Interdomain {
                remote: 2,
                remote_port: 5
            }
        );
        assert_eq!(
            test.other(2).events.ports[5],
            PortState::Interdomain {
                remote: 1,
                remote_port: 1
            }
        );
        // The local port is pending in d1's own page, with its upcall.
        let d1 = &test.domain;
        assert_eq!(shared(d1, shared_info::EVTCHN_PENDING), 0b10);
        assert_eq!(pending_sel(d1), 1);
        assert_eq!(shared(d1, shared_info::UPCALL_PENDING), 1);
        assert_eq!(page(test.other(2)), vec![0; 4096], "nothing marked in d2");
    }

    #[test]
    fn bind_interdomain_to_a_port_allocated_for_another_domain_returns_einval() {
        let mut test = op(cmd::BIND_INTERDOMAIN, &bind_interdomain(2, 5));
        test.add_domain(2).events.ports[5] = PortState::Unbound { remote: 3 };
        let run = test.call();
        assert_returned(&test, error::EINVAL);
        assert_eq!(
            run.decision.why,
            "EVTCHNOP_bind_interdomain: port 5 of d2 is not a port allocated for d1 to bind (Some(Unbound { remote: 3 })), EINVAL"
        );
        assert_eq!(
            test.other(2).events.ports[5],
            PortState::Unbound { remote: 3 }
        );
        assert_eq!(test.domain.events.ports[1], PortState::Free);
        assert!(run.notifies().is_empty());
        assert_eq!(read_u32(&test, DATA + 8), 0xeeee_eeee);
    }

    #[test]
    fn bind_interdomain_to_a_free_or_nonexistent_port_returns_einval() {
        for port in [5, PORTS, u32::MAX] {
            let mut test = op(cmd::BIND_INTERDOMAIN, &bind_interdomain(2, port));
            test.add_domain(2);
            test.call();
            assert_returned(&test, error::EINVAL);
        }
    }

    #[test]
    fn bind_interdomain_with_every_port_in_use_returns_enospc_before_looking_at_the_remote_port() {
        // evtchn_bind_interdomain: `get_free_port(ld)` comes before `rchn`'s checks.
        let mut test = op(cmd::BIND_INTERDOMAIN, &bind_interdomain(2, 5));
        test.add_domain(2);
        for port in 1..PORTS as usize {
            test.domain.events.ports[port] = PortState::Unbound { remote: 3 };
        }
        let run = test.call();
        assert_returned(&test, error::ENOSPC);
        assert_eq!(
            run.decision.why,
            "EVTCHNOP_bind_interdomain: every port of d1 is in use, ENOSPC"
        );
    }

    #[test]
    fn bind_interdomain_to_a_domain_that_does_not_exist_returns_esrch() {
        let mut test = op(cmd::BIND_INTERDOMAIN, &bind_interdomain(4, 5));
        let run = test.call();
        assert_returned(&test, error::ESRCH);
        assert_eq!(
            run.decision.why,
            "EVTCHNOP_bind_interdomain: there is no domain 4 to connect to (or it has ended), ESRCH"
        );
        assert_eq!(test.domain.events.ports[1], PortState::Free);
    }

    #[test]
    fn bind_interdomain_to_a_domain_that_has_ended_returns_esrch() {
        // Its unbound port is still in its table, but nobody will ever read an event there.
        use crate::domain::vcpu::RunState;
        let mut test = op(cmd::BIND_INTERDOMAIN, &bind_interdomain(2, 5));
        let other = test.add_domain(2);
        other.events.ports[5] = PortState::Unbound { remote: 1 };
        other.vcpu.run_state = RunState::Ended;
        test.call();
        assert_returned(&test, error::ESRCH);
        assert_eq!(test.domain.events.ports[1], PortState::Free);
    }

    #[test]
    fn bind_interdomain_without_a_shared_info_page_returns_einval() {
        let mut test = op(cmd::BIND_INTERDOMAIN, &bind_interdomain(2, 5));
        test.domain.events.shared_info = None;
        test.add_domain(2).events.ports[5] = PortState::Unbound { remote: 1 };
        let run = test.call();
        assert_returned(&test, error::EINVAL);
        assert!(run.decision.why.contains("d1 has no shared-info page yet"));
        assert_eq!(
            test.other(2).events.ports[5],
            PortState::Unbound { remote: 1 },
            "still free to bind once d1 has its page"
        );
    }

    #[test]
    fn a_channel_within_one_domain_notifies_that_domain_without_a_forward() {
        // Loopback: bind to one's own unbound port (remote_dom = DOMID_SELF).
        let mut test = op(cmd::BIND_INTERDOMAIN, &bind_interdomain(DOMID_SELF, 2));
        test.domain.events.ports[2] = PortState::Unbound { remote: 1 };
        test.call();
        assert_returned(&test, 0);
        assert_eq!(
            test.domain.events.ports[1..3],
            [
                PortState::Interdomain {
                    remote: 1,
                    remote_port: 2
                },
                PortState::Interdomain {
                    remote: 1,
                    remote_port: 1
                },
            ]
        );
        test.write(SHARED_INFO, &[0; 16]);
        test.write(SHARED_INFO + shared_info::EVTCHN_PENDING, &[0]);
        test.set_gpr(0, hypercall::EVENT_CHANNEL_OP);
        test.set_gpr(7, cmd::SEND);
        test.write(DATA, &one_port(1));
        let run = test.call();
        assert_eq!(run.decision.action, Action::Emulate, "not a forward");
        assert_eq!(
            run.notifies(),
            [&Notify {
                to: 1,
                port: 2,
                from_port: 1,
                woke: false,
                masked: false,
            }]
        );
        assert_eq!(shared(&test.domain, shared_info::EVTCHN_PENDING), 0b100);
        assert_eq!(run.applied.switch, None);
    }

    // ---- EVTCHNOP_bind_virq -----------------------------------------------------------

    #[test]
    fn bind_virq_timer_gets_a_port_written_at_arg_plus_8() {
        let mut test = op(cmd::BIND_VIRQ, &bind_virq(virq::TIMER, 0));
        let run = test.call();
        assert_returned(&test, 0);
        assert_eq!(
            run.decision.why,
            "EVTCHNOP_bind_virq: the timer's ticks come as events on port 1 from now on, instead of as its interrupt"
        );
        assert_eq!(test.domain.events.ports[1], PortState::Virq(virq::TIMER));
        assert_eq!(test.domain.events.virq_port(virq::TIMER), Some(1));
        assert_eq!(read_u32(&test, DATA + 8), 1);
    }

    #[test]
    fn bind_virq_timer_twice_returns_eexist() {
        // evtchn_bind_virq: `if ( v->virq_to_evtchn[virq] != 0 ) ERROR_EXIT(-EEXIST);`
        let mut test = op(cmd::BIND_VIRQ, &bind_virq(virq::TIMER, 0));
        test.domain.events.ports[3] = PortState::Virq(virq::TIMER);
        let run = test.call();
        assert_returned(&test, error::EEXIST);
        assert_eq!(
            run.decision.why,
            "EVTCHNOP_bind_virq: the timer is bound to port 3 already, EEXIST"
        );
        assert_eq!(test.domain.events.ports[1], PortState::Free);
        assert_eq!(read_u32(&test, DATA + 8), 0xeeee_eeee);
    }

    #[test]
    fn bind_virq_of_another_virq_is_einval_and_of_another_vcpu_enoent() {
        // Xen's evtchn_bind_virq: a vCPU the domain does not have is -ENOENT; traplab has
        // one virtual interrupt, the timer, so any other is -EINVAL.
        for (number, vcpu, code, reason) in [
            (
                1,
                0,
                error::EINVAL,
                "VIRQ 1: traplab has one virtual interrupt, the timer",
            ),
            (0, 1, error::ENOENT, "there is no vCPU 1: ENOENT"),
            // A domain-wide VIRQ (VIRQ_CONSOLE, 2) on vCPU 1: refused before the vCPU is
            // looked up (`virq_is_global`).
            (
                2,
                1,
                error::EINVAL,
                "bound on vCPU 0 only, not on vCPU 1: EINVAL",
            ),
            // Beyond NR_VIRQS, Xen checks the number before the vCPU.
            (99, 1, error::EINVAL, "VIRQ 99 is beyond the ABI's 24 VIRQs"),
        ] {
            let mut test = op(cmd::BIND_VIRQ, &bind_virq(number, vcpu));
            let run = test.call();
            assert_returned(&test, code);
            assert!(run.decision.why.contains(reason), "{}", run.decision.why);
            assert_eq!(test.domain.events.ports[1], PortState::Free);
        }
    }

    // ---- EVTCHNOP_send ----------------------------------------------------------------

    #[test]
    fn send_on_a_connected_port_forwards_the_event_and_wakes_the_blocked_receiver() {
        // evtchn_send → evtchn_port_set_pending on the remote end (ECS_INTERDOMAIN);
        // the 2-level ABI (xen/common/event_2l.c, evtchn_2l_set_pending) sets the port's
        // pending bit, its word's bit in evtchn_pending_sel and evtchn_upcall_pending, in
        // the receiver's shared-info page; vcpu_mark_events_pending kicks it awake.
        let mut test = connected(RunState::Blocked(Wait::Event));
        let run = test.call();
        assert_eq!(run.decision.action, Action::Forward);
        assert_eq!(
            run.decision.why,
            "EVTCHNOP_send: port 1 is connected to port 5 of d2: the hypervisor forwards the event there (it is blocked: the event may wake it); d1 goes on"
        );
        assert_eq!(run.kinds(), ["decide", "notify", "emulate"]);
        assert_eq!(
            run.notifies(),
            [&Notify {
                to: 2,
                port: 5,
                from_port: 1,
                woke: true,
                masked: false,
            }]
        );
        assert_eq!(
            run.applied.switch,
            Some(Switch::Woke {
                to: 2,
                port: Some(5)
            }),
            "the woken domain runs first"
        );
        assert_returned(&test, 0);
        let d2 = test.other(2);
        assert_eq!(shared(d2, shared_info::EVTCHN_PENDING), 1 << 5);
        assert_eq!(pending_sel(d2), 1, "word 0 of evtchn_pending");
        assert_eq!(shared(d2, shared_info::UPCALL_PENDING), 1);
        assert_eq!(d2.vcpu.run_state, RunState::Runnable);
        assert_eq!(
            test.domain.shared_info_byte(shared_info::EVTCHN_PENDING),
            Some(0),
            "nothing marked in the sender"
        );
    }

    #[test]
    fn a_send_forwarded_to_another_domain_with_tf_set_is_followed_by_the_single_step_trap() {
        // The VMMCALL completed, as it does on a loopback channel (Emulate): a guest that
        // steps its own code gets its #DB after the instruction either way.
        for remote in [2, 1] {
            let mut test = connected(RunState::Runnable);
            if remote == 1 {
                test.domain.events.ports[1] = PortState::Interdomain {
                    remote: 1,
                    remote_port: 1,
                };
            }
            test.gate(1, 0x20_9000);
            test.domain.vcpu.vmcb.save.rflags |= RFlags::TRAP_FLAG.bits();
            let run = test.call();
            let (event, _, synthetic) = crate::testing::injected(&run.decision);
            assert_eq!((event.vector, synthetic), (1, true), "to d{remote}");
            assert_ne!(test.domain.vcpu.vmcb.save.dr6 & (1 << 14), 0, "DR6.BS");
        }
    }

    #[test]
    fn send_to_a_running_receiver_marks_the_event_without_a_switch() {
        let mut test = connected(RunState::Runnable);
        let run = test.call();
        assert_eq!(run.decision.action, Action::Forward);
        assert!(
            run.decision
                .why
                .ends_with("forwards the event there; d1 goes on"),
            "{}",
            run.decision.why
        );
        assert!(!run.notifies()[0].woke);
        assert_eq!(run.applied.switch, None);
        assert_eq!(shared(test.other(2), shared_info::UPCALL_PENDING), 1);
    }

    #[test]
    fn send_to_a_masked_port_leaves_it_pending_without_an_upcall_and_does_not_wake() {
        // evtchn_2l_set_pending: a masked port's bit is set, but not evtchn_pending_sel nor
        // evtchn_upcall_pending: the event waits until the guest unmasks it.
        let mut test = connected(RunState::Blocked(Wait::Event));
        let d2 = test.other(2);
        d2.memory
            .write_physical(SHARED_INFO + shared_info::EVTCHN_MASK, &[1 << 5])
            .expect("d2's page");
        let run = test.call();
        assert_eq!(
            run.notifies(),
            [&Notify {
                to: 2,
                port: 5,
                from_port: 1,
                woke: false,
                masked: true,
            }]
        );
        assert_eq!(run.applied.switch, None);
        let d2 = test.other(2);
        assert_eq!(shared(d2, shared_info::EVTCHN_PENDING), 1 << 5);
        assert_eq!(pending_sel(d2), 0);
        assert_eq!(shared(d2, shared_info::UPCALL_PENDING), 0);
        assert_eq!(d2.vcpu.run_state, RunState::Blocked(Wait::Event));
    }

    #[test]
    fn send_to_a_port_already_pending_merges_into_the_first_event() {
        // evtchn_2l_set_pending: `if ( guest_test_and_set_bit(d, port,
        // &shared_info(d, evtchn_pending)) ) return;` — two sends before the receiver
        // looks are one event.
        let mut test = connected(RunState::Blocked(Wait::Event));
        let d2 = test.other(2);
        d2.memory
            .write_physical(SHARED_INFO + shared_info::EVTCHN_PENDING, &[1 << 5])
            .expect("d2's page");
        let run = test.call();
        assert_returned(&test, 0);
        assert_eq!(
            run.notifies(),
            [&Notify {
                to: 2,
                port: 5,
                from_port: 1,
                woke: false,
                masked: false,
            }]
        );
        let d2 = test.other(2);
        assert_eq!(shared(d2, shared_info::EVTCHN_PENDING), 1 << 5);
        assert_eq!(pending_sel(d2), 0, "not set again");
        assert_eq!(shared(d2, shared_info::UPCALL_PENDING), 0);
        assert_eq!(d2.vcpu.run_state, RunState::Blocked(Wait::Event));
    }

    #[test]
    fn send_to_a_receiver_with_every_upcall_masked_says_masked() {
        // evtchn_upcall_mask holds back every upcall (`local_events_need_delivery`); the
        // port's bits are marked all the same.
        let mut test = connected(RunState::Runnable);
        test.other(2).set_upcall_mask(true);
        let run = test.call();
        assert!(run.notifies()[0].masked);
        assert_eq!(shared(test.other(2), shared_info::EVTCHN_PENDING), 1 << 5);
    }

    #[test]
    fn an_upcall_the_mask_holds_back_neither_interrupts_nor_wakes_a_halted_receiver() {
        // traplab_abi::evtchn: while evtchn_upcall_mask is set no upcall comes; cleared, the
        // one owed is the interrupt the guest is offered.
        let mut test = connected(RunState::Blocked(Wait::Interrupt));
        let d2 = test.other(2);
        d2.events.callback = Callback::Vector(0xf3);
        d2.vcpu.vmcb.save.rflags |= RFlags::INTERRUPT_FLAG.bits();
        d2.set_upcall_mask(true);
        let run = test.call();
        assert!(!run.notifies()[0].woke && run.notifies()[0].masked);
        let d2 = test.other(2);
        assert_eq!(d2.pending_interrupt(), None);
        d2.set_upcall_mask(false);
        assert_eq!(d2.pending_interrupt(), Some(0xf3));
    }

    #[test]
    fn send_wakes_a_receiver_halted_with_a_callback_and_interrupts_on() {
        // HLT (Xen's hvm_hlt blocks the vCPU): the upcall is an interrupt it can take.
        let mut test = connected(RunState::Blocked(Wait::Interrupt));
        let d2 = test.other(2);
        d2.events.callback = Callback::Vector(0xf3);
        d2.vcpu.vmcb.save.rflags |= RFlags::INTERRUPT_FLAG.bits();
        let run = test.call();
        assert!(run.notifies()[0].woke);
        assert_eq!(
            run.applied.switch,
            Some(Switch::Woke {
                to: 2,
                port: Some(5)
            })
        );
        assert_eq!(test.other(2).vcpu.run_state, RunState::Runnable);
    }

    #[test]
    fn send_leaves_a_receiver_halted_without_a_callback_asleep() {
        // No callback: the event is marked, but no interrupt comes of it.
        let mut test = connected(RunState::Blocked(Wait::Interrupt));
        test.other(2).vcpu.vmcb.save.rflags |= RFlags::INTERRUPT_FLAG.bits();
        let run = test.call();
        assert!(!run.notifies()[0].woke);
        assert_eq!(run.applied.switch, None);
        assert_eq!(
            test.other(2).vcpu.run_state,
            RunState::Blocked(Wait::Interrupt)
        );
        assert_eq!(shared(test.other(2), shared_info::UPCALL_PENDING), 1);
    }

    #[test]
    fn send_wakes_a_receiver_polling_that_port_even_when_it_is_masked() {
        // evtchn_2l_set_pending ends with evtchn_check_pollers(d, port), whatever the mask.
        let mut test = connected(RunState::Blocked(Wait::Poll(vec![4, 5])));
        test.other(2)
            .memory
            .write_physical(SHARED_INFO + shared_info::EVTCHN_MASK, &[1 << 5])
            .expect("d2's page");
        let run = test.call();
        let notify = run.notifies()[0];
        assert!(notify.woke && notify.masked, "{notify:?}");
        assert_eq!(test.other(2).vcpu.run_state, RunState::Runnable);
    }

    #[test]
    fn send_does_not_wake_a_receiver_polling_another_port_without_a_callback() {
        // Without a callback vector the upcall is marked in the page and goes nowhere:
        // hvm_assert_evtchn_irq kicks nobody.
        let mut test = connected(RunState::Blocked(Wait::Poll(vec![4])));
        let run = test.call();
        assert!(!run.notifies()[0].woke);
        assert_eq!(
            test.other(2).vcpu.run_state,
            RunState::Blocked(Wait::Poll(vec![4]))
        );
    }

    #[test]
    fn send_wakes_a_receiver_polling_another_port_when_it_owes_an_upcall_to_its_callback() {
        // vcpu_mark_events_pending kicks a vCPU with a callback vector, polling or not: its
        // poll returns 0. A masked port owes no upcall, and wakes nothing.
        let mut test = connected(RunState::Blocked(Wait::Poll(vec![4])));
        test.other(2).events.callback = Callback::Vector(0xf3);
        let run = test.call();
        assert!(run.notifies()[0].woke);
        assert_eq!(test.other(2).vcpu.run_state, RunState::Runnable);

        let mut test = connected(RunState::Blocked(Wait::Poll(vec![4])));
        test.other(2).events.callback = Callback::Vector(0xf3);
        test.other(2)
            .memory
            .write_physical(SHARED_INFO + shared_info::EVTCHN_MASK, &[1 << 5])
            .expect("d2's page");
        let run = test.call();
        assert!(!run.notifies()[0].woke);
    }

    #[test]
    fn send_wakes_a_receiver_polling_several_ports_even_on_another_one() {
        // do_poll notes -1 for several ports; evtchn_check_pollers wakes such a poller at
        // any port's event, masked or not: its poll returns 0 and it looks again.
        let mut test = connected(RunState::Blocked(Wait::Poll(vec![4, 6])));
        test.other(2)
            .memory
            .write_physical(SHARED_INFO + shared_info::EVTCHN_MASK, &[1 << 5])
            .expect("d2's page");
        let run = test.call();
        assert!(run.notifies()[0].woke);
        assert_eq!(test.other(2).vcpu.run_state, RunState::Runnable);
    }

    #[test]
    fn send_on_a_port_never_allocated_returns_einval_and_changes_nothing_anywhere() {
        // evtchn_send: `default: ret = -EINVAL;` for a port in no usable state.
        let mut test = connected(RunState::Blocked(Wait::Event));
        test.write(DATA, &one_port(9));
        let mine = (test.domain.events.clone(), page(&test.domain));
        let theirs = (test.other(2).events.clone(), page(test.other(2)));
        let run = test.call();
        assert_returned(&test, error::EINVAL);
        assert_eq!(run.decision.action, Action::Emulate);
        assert_eq!(
            run.decision.why,
            "EVTCHNOP_send: port 9 was never allocated or bound: nothing to send to, EINVAL"
        );
        assert_eq!(run.kinds(), ["decide", "emulate"]);
        assert_eq!(run.applied.switch, None);
        assert_eq!((test.domain.events.clone(), page(&test.domain)), mine);
        let d2 = test.other(2);
        assert_eq!((d2.events.clone(), page(d2)), theirs);
        assert_eq!(d2.vcpu.run_state, RunState::Blocked(Wait::Event));
    }

    #[test]
    fn send_on_a_port_outside_the_table_returns_einval() {
        let mut test = connected(RunState::Runnable);
        test.write(DATA, &one_port(PORTS));
        let run = test.call();
        assert_returned(&test, error::EINVAL);
        assert_eq!(
            run.decision.why,
            "EVTCHNOP_send: port 64 does not exist (a domain has ports 1 to 63), EINVAL"
        );
    }

    #[test]
    fn send_on_an_allocated_but_unbound_port_is_dropped_and_returns_0() {
        // evtchn_send: `case ECS_UNBOUND: /* silently drop the notification */`.
        let mut test = op(cmd::SEND, &one_port(1));
        test.domain.events.ports[1] = PortState::Unbound { remote: 2 };
        test.add_domain(2);
        let run = test.call();
        assert_returned(&test, 0);
        assert_eq!(run.decision.action, Action::Emulate);
        assert!(run.decision.why.contains("the event is dropped"));
        assert_eq!(run.kinds(), ["decide", "emulate"], "no notify");
        assert_eq!(
            run.emulate().what,
            "EVTCHNOP_send: port 1 unbound, dropped; event_channel_op returned 0"
        );
        assert_eq!(page(test.other(2)), vec![0; 4096]);
    }

    #[test]
    fn send_on_a_port_bound_to_the_timer_returns_einval() {
        let mut test = op(cmd::SEND, &one_port(1));
        test.domain.events.ports[1] = PortState::Virq(virq::TIMER);
        let run = test.call();
        assert_returned(&test, error::EINVAL);
        assert!(
            run.decision
                .why
                .contains("which only the hypervisor notifies")
        );
        assert!(run.notifies().is_empty());
    }

    // ---- EVTCHNOP_close and EVTCHNOP_unmask -------------------------------------------

    #[test]
    fn close_of_an_interdomain_port_leaves_the_peer_unbound_for_us() {
        // evtchn_close, ECS_INTERDOMAIN: the other end becomes ECS_UNBOUND with
        // `remote_domid = d1->domain_id`, ready for a new bind.
        let mut test = connected(RunState::Runnable);
        test.set_gpr(7, cmd::CLOSE);
        let run = test.call();
        assert_returned(&test, 0);
        assert_eq!(
            run.decision.why,
            "EVTCHNOP_close: port 1 is freed; its other end, port 5 of d2, is unbound again (for d1 to bind anew)"
        );
        assert_eq!(test.domain.events.ports[1], PortState::Free);
        assert_eq!(
            test.other(2).events.ports[5],
            PortState::Unbound { remote: 1 }
        );
    }

    #[test]
    fn close_of_one_end_of_a_channel_within_one_domain_leaves_the_other_end_unbound() {
        // evtchn_close, ECS_INTERDOMAIN, with d2 == d1: the same rule, the other end is
        // ECS_UNBOUND, so a send there is dropped instead of marking the freed port.
        let mut test = op(cmd::CLOSE, &one_port(1));
        test.domain.events.ports[1] = PortState::Interdomain {
            remote: 1,
            remote_port: 2,
        };
        test.domain.events.ports[2] = PortState::Interdomain {
            remote: 1,
            remote_port: 1,
        };
        test.call();
        assert_returned(&test, 0);
        assert_eq!(
            test.domain.events.ports[1..3],
            [PortState::Free, PortState::Unbound { remote: 1 }]
        );
    }

    #[test]
    fn close_of_a_free_port_returns_einval_and_of_a_virq_port_frees_it() {
        let mut test = op(cmd::CLOSE, &one_port(1));
        test.call();
        assert_returned(&test, error::EINVAL);

        let mut test = op(cmd::CLOSE, &one_port(1));
        test.domain.events.ports[1] = PortState::Virq(virq::TIMER);
        test.call();
        assert_returned(&test, 0);
        assert_eq!(test.domain.events.ports[1], PortState::Free);
        assert_eq!(test.domain.events.virq_port(virq::TIMER), None);
    }

    #[test]
    fn close_clears_the_port_s_pending_bit_so_a_port_allocated_there_starts_clean() {
        // Xen's evtchn_free clears the pending bit "to avoid unexpected behavior on
        // re-bind": port 1, pending, closed, is not pending any more.
        let mut test = op(cmd::CLOSE, &one_port(1));
        test.domain.events.ports[1] = PortState::Virq(virq::TIMER);
        test.write(
            SHARED_INFO + shared_info::EVTCHN_PENDING,
            &[(1 << 1) | (1 << 2)],
        );
        let run = test.call();
        assert_returned(&test, 0);
        assert!(!test.domain.event_pending(1));
        assert!(test.domain.event_pending(2), "the other ports' bits stay");
        assert!(
            run.emulate()
                .what
                .contains("d1's port 1 was pending: the bit is cleared"),
            "{}",
            run.emulate().what
        );
    }

    #[test]
    fn unmask_of_a_pending_port_owes_its_upcall() {
        // evtchn_2l_unmask: clear the mask bit; if the port is pending, set its
        // evtchn_pending_sel bit and evtchn_upcall_pending (vcpu_mark_events_pending).
        let mut test = op(cmd::UNMASK, &one_port(3));
        test.write(SHARED_INFO + shared_info::EVTCHN_PENDING, &[1 << 3]);
        test.write(SHARED_INFO + shared_info::EVTCHN_MASK, &[(1 << 3) | 1]);
        let run = test.call();
        assert_returned(&test, 0);
        assert_eq!(
            run.emulate().what,
            "event_channel_op returned 0: port 3 was pending: its upcall is owed now"
        );
        let d1 = &test.domain;
        assert_eq!(
            shared(d1, shared_info::EVTCHN_MASK),
            1,
            "only port 3's bit cleared"
        );
        assert_eq!(pending_sel(d1), 1);
        assert_eq!(shared(d1, shared_info::UPCALL_PENDING), 1);
    }

    #[test]
    fn unmask_of_a_port_that_is_not_pending_owes_nothing() {
        let mut test = op(cmd::UNMASK, &one_port(3));
        test.write(SHARED_INFO + shared_info::EVTCHN_MASK, &[1 << 3]);
        let run = test.call();
        assert_returned(&test, 0);
        assert_eq!(run.emulate().what, "event_channel_op returned 0");
        let d1 = &test.domain;
        assert_eq!(shared(d1, shared_info::EVTCHN_MASK), 0);
        assert_eq!(pending_sel(d1), 0);
        assert_eq!(shared(d1, shared_info::UPCALL_PENDING), 0);
    }

    #[test]
    fn an_unknown_command_returns_enosys() {
        let mut test = op(5, &[]);
        let run = test.call();
        assert_returned(&test, error::ENOSYS);
        assert_eq!(
            run.decision.why,
            "event_channel_op(5): no such command, the guest gets ENOSYS"
        );
        // Bits 63:32 are no part of the command (Xen's is an int).
        let mut test = op(1 << 32 | 5, &[]);
        let run = test.call();
        assert!(run.decision.why.starts_with("event_channel_op(5)"));
    }
}
