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
use alloc::format;
use traplab_abi::event::Action;
use traplab_abi::evtchn::{DOMID_SELF, PORTS, Port, cmd, virq};
use traplab_abi::hypercall::{self, error};

pub fn handle(guest: &Guest, next: u64, command: u64, arg: u64) -> Decision {
    let decision = match command {
        cmd::ALLOC_UNBOUND => alloc_unbound(guest, arg),
        cmd::BIND_INTERDOMAIN => bind_interdomain(guest, arg),
        cmd::BIND_VIRQ => bind_virq(guest, arg),
        cmd::SEND => send(guest, arg),
        cmd::CLOSE => close(guest, arg),
        cmd::UNMASK => unmask(guest, arg),
        _ => Err((
            decide!(
                Action::Emulate,
                "event_channel_op({command}): no such command, the guest gets ENOSYS"
            ),
            error::ENOSYS,
        )),
    };
    match decision {
        Ok(decision) => finish(decision, next, hypercall::EVENT_CHANNEL_OP, 0),
        Err((decision, code)) => finish(decision, next, hypercall::EVENT_CHANNEL_OP, code),
    }
}

/// A command's outcome: the decision, or the decision and the error the guest gets.
type Outcome = Result<Decision, (Decision, i64)>;

/// The domain a `dom` field names: the caller for `DOMID_SELF` or its own id, else one of
/// the others.
fn named<'a>(guest: &Guest<'a>, dom: u16) -> Option<&'a Domain> {
    if dom == DOMID_SELF || dom == guest.id {
        Some(guest.domain)
    } else {
        guest.others.domain(dom)
    }
}

/// The structure could not be read: EFAULT.
fn unreadable(name: &str, arg: u64) -> (Decision, i64) {
    (
        decide!(
            Action::Emulate,
            "{name}: its argument at {arg:#x} is not in the guest's memory, EFAULT"
        ),
        error::EFAULT,
    )
}

/// A port that events reach must have a shared-info page to mark them in.
fn without_shared_info(name: &str, domain: &Domain) -> Option<(Decision, i64)> {
    domain.events.shared_info.is_none().then(|| {
        (
            decide!(
                Action::Emulate,
                "{name}: d{} has no shared-info page yet (set_shared_info), so no event could be marked pending: EINVAL",
                domain.id
            ),
            error::EINVAL,
        )
    })
}

/// `EVTCHNOP_alloc_unbound`: a port in `dom` that `remote_dom` may bind to.
fn alloc_unbound(guest: &Guest, arg: u64) -> Outcome {
    const NAME: &str = "EVTCHNOP_alloc_unbound";
    let argument = Argument::<8>::read(guest, arg).map_err(|_| unreadable(NAME, arg))?;
    let (dom, remote_dom) = (argument.u16(0), argument.u16(2));
    let Some(target) = named(guest, dom) else {
        return Err((
            decide!(Action::Emulate, "{NAME}: there is no domain {dom}, ESRCH"),
            error::ESRCH,
        ));
    };
    // Xen's default policy (XSM's dummy module): a domain allocates in itself; only the
    // control domain may do it for another.
    if target.id != guest.id && !guest.privileged() {
        return Err((
            decide!(
                Action::Emulate,
                "{NAME}: d{} asks for a port in d{}, which only the control domain (dom0) may do: EPERM",
                guest.id,
                target.id
            ),
            error::EPERM,
        ));
    }
    if let Some(refused) = without_shared_info(NAME, target) {
        return Err(refused);
    }
    let remote = if remote_dom == DOMID_SELF {
        guest.id
    } else {
        remote_dom
    };
    let Some(port) = target.events.free_port() else {
        return Err((
            decide!(
                Action::Emulate,
                "{NAME}: every port of d{} is in use, ENOSPC",
                target.id
            ),
            error::ENOSPC,
        ));
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
    let argument = Argument::<12>::read(guest, arg).map_err(|_| unreadable(NAME, arg))?;
    let (remote_dom, remote_port) = (argument.u16(0), argument.u32(4));
    let Some(remote) = named(guest, remote_dom) else {
        return Err((
            decide!(
                Action::Emulate,
                "{NAME}: there is no domain {remote_dom} to connect to, ESRCH"
            ),
            error::ESRCH,
        ));
    };
    let expected = PortState::Unbound { remote: guest.id };
    if remote.events.state(remote_port) != Some(expected) {
        let state = remote.events.state(remote_port);
        return Err((
            decide!(
                Action::Emulate,
                "{NAME}: port {remote_port} of d{} is not a port allocated for d{} to bind ({state:?}), EINVAL",
                remote.id,
                guest.id
            ),
            error::EINVAL,
        ));
    }
    if let Some(refused) = without_shared_info(NAME, guest) {
        return Err(refused);
    }
    let Some(local) = guest.events.free_port() else {
        return Err((
            decide!(Action::Emulate, "{NAME}: every port is in use, ENOSPC"),
            error::ENOSPC,
        ));
    };
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
    let argument = Argument::<12>::read(guest, arg).map_err(|_| unreadable(NAME, arg))?;
    let (number, vcpu) = (argument.u32(0), argument.u32(4));
    if number != virq::TIMER || vcpu != 0 {
        return Err((
            decide!(
                Action::Emulate,
                "{NAME}: VIRQ {number} of vCPU {vcpu}: traplab has the timer (VIRQ 0) of vCPU 0 only, EINVAL"
            ),
            error::EINVAL,
        ));
    }
    if let Some(port) = guest.events.virq_port(number) {
        return Err((
            decide!(
                Action::Emulate,
                "{NAME}: the timer is bound to port {port} already, EEXIST"
            ),
            error::EEXIST,
        ));
    }
    if let Some(refused) = without_shared_info(NAME, guest) {
        return Err(refused);
    }
    let Some(port) = guest.events.free_port() else {
        return Err((
            decide!(Action::Emulate, "{NAME}: every port is in use, ENOSPC"),
            error::ENOSPC,
        ));
    };
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
fn port_argument(guest: &Guest, name: &str, arg: u64) -> Result<Port, (Decision, i64)> {
    let argument = Argument::<4>::read(guest, arg).map_err(|_| unreadable(name, arg))?;
    let port = argument.u32(0);
    if port >= PORTS {
        return Err((
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
        PortState::Free => Err((
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
        PortState::Virq(_) => Err((
            decide!(
                Action::Emulate,
                "{NAME}: port {port} is bound to the timer, which only the hypervisor notifies: EINVAL"
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
        PortState::Free => Err((
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
