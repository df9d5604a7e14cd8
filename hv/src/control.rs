//! The host's hand on the hypervisor: pause, step and break at event boundaries.
//!
//! The protocol and the mailbox are in `traplab_abi::control`. A *checkpoint* comes after
//! every event the hypervisor records (the run loop calls it, `run::record`); there it takes
//! the host's commands and decides whether to stop. Stopped, it spins on the mailbox — the guest is frozen,
//! the trace is complete up to that event — until the host lets it go on. While it spins,
//! the caller's `meanwhile` runs: the run loop answers gdb there (`gdb/mod.rs`), which may
//! attach whatever the host does.
//!
//! The host switches control on with fw_cfg `opt/traplab/control` = `run` or `pause`.
//! `pause` stops after the boot — once the run loop is ready ([`when_ready`]), so that gdb,
//! whose debugger the run loop sets up, is answered during that first stop too; nothing is
//! recorded in between unless a guest fails to load. Without control, checkpoints cost
//! nothing.
//!
//! A stop is nobody's work: `clock.rs` counts the time it lasts, for the host or for gdb,
//! and the trace's clock leaves it out.

use crate::clock::{begin_stop, end_stop};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};
use spin::Mutex;
use traplab_abi::control::{Break, BreakWatch, Command, ExitFacts, Keys, Mailbox};
use traplab_abi::event::Body;
use traplab_abi::ring;
use traplab_hv::{Domain, Exit};

/// What the hypervisor does at the next checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunState {
    /// Run until a breakpoint matches.
    Running,
    /// Stop after the next event.
    Step,
    /// Stop after the next exit event.
    NextExit,
    /// Stop at the next checkpoint.
    Paused,
}

struct Controller {
    mailbox: Mailbox,
    run_state: RunState,
    breaks: Vec<Break>,
    /// Keys the host typed, not yet taken by their domain (`take_keys`).
    keys: Vec<Keys>,
    /// The first stop waits for the run loop ([`when_ready`]).
    deferred: bool,
    /// What the breaks remember from one event to the next ([`BreakWatch`]).
    watch: BreakWatch,
}

static CONTROLLER: Mutex<Option<Controller>> = Mutex::new(None);

/// Is control on? Read at every event without the lock: when the host did not ask for
/// control, a checkpoint costs one load.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// The mailbox, reset: call before the ring's magic is published, so the host cannot post
/// into it before it is clean.
pub fn reset_mailbox() {
    // SAFETY: the ring header page at RING_PHYS belongs to the trace ring (memory.rs), and
    // the host only touches the mailbox words, atomically.
    let mailbox = unsafe { Mailbox::new(ring::RING_PHYS as *mut u8) };
    mailbox.reset();
}

/// Let the host control the hypervisor; `paused`: stop after the boot, once the run loop is
/// ready ([`when_ready`]).
pub fn enable(paused: bool) {
    // SAFETY: as in `reset_mailbox`.
    let mailbox = unsafe { Mailbox::new(ring::RING_PHYS as *mut u8) };
    let run_state = if paused {
        RunState::Paused
    } else {
        RunState::Running
    };
    ENABLED.store(true, Ordering::Relaxed);
    *CONTROLLER.lock() = Some(Controller {
        mailbox,
        run_state,
        breaks: Vec::new(),
        keys: Vec::new(),
        deferred: paused,
        watch: BreakWatch::default(),
    });
}

/// The run loop is ready (its debugger, if any, set up): take the stop the host asked for
/// at boot, after the last event, unless the host said otherwise meanwhile.
pub fn when_ready(meanwhile: &mut dyn FnMut()) {
    let stop = {
        let mut guard = CONTROLLER.lock();
        let Some(controller) = guard.as_mut() else {
            return;
        };
        controller.deferred = false;
        controller.take_commands();
        controller.run_state == RunState::Paused
    };
    if stop && let Some(seq) = crate::trace::last_seq() {
        hold(seq, meanwhile);
    }
}

/// Called after `event` was recorded. While the host holds the hypervisor stopped there,
/// `meanwhile` runs, again and again; it must not record events.
#[inline]
pub fn checkpoint(seq: u64, dom: Option<u16>, body: &Body, meanwhile: &mut dyn FnMut()) {
    // At every event: without a controller (`traplab trace`, `bench`), one load.
    if ENABLED.load(Ordering::Relaxed) {
        checkpoint_controlled(seq, dom, body, meanwhile);
    }
}

/// [`checkpoint`] when the host controls the hypervisor: take its commands, and stop if
/// it asked to stop after this event.
fn checkpoint_controlled(seq: u64, dom: Option<u16>, body: &Body, meanwhile: &mut dyn FnMut()) {
    let stop = {
        let mut guard = CONTROLLER.lock();
        let Some(controller) = guard.as_mut() else {
            return;
        };
        controller.take_commands();
        !controller.deferred && controller.stops_after(dom, body)
    };
    if stop {
        hold(seq, meanwhile);
    }
}

/// Stay here, frozen, until a command lets us go on; `meanwhile` runs while we wait (without
/// the controller's lock: it may look at the mailbox's state, `show_stopped`).
fn hold(seq: u64, meanwhile: &mut dyn FnMut()) {
    // The host reads up to `seq` before it shows the stop: the event must be in the ring.
    crate::trace::flush();
    {
        let mut guard = CONTROLLER.lock();
        let Some(controller) = guard.as_mut() else {
            return;
        };
        controller.run_state = RunState::Paused;
        controller.mailbox.set_status(Some(seq));
    }
    begin_stop();
    loop {
        {
            let mut guard = CONTROLLER.lock();
            let Some(controller) = guard.as_mut() else {
                break;
            };
            controller.take_commands();
            if controller.run_state != RunState::Paused {
                controller.mailbox.set_status(None);
                break;
            }
        }
        meanwhile();
        core::hint::spin_loop();
    }
    end_stop();
}

/// Does the host control the hypervisor (`traplab run`)? Then it may also type keys.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Has the host typed keys that no domain has taken yet? (Takes the host's commands: the
/// hypervisor asks while it halts, when no event comes to a checkpoint.)
pub fn keys_typed() -> bool {
    if !enabled() {
        return false;
    }
    let mut guard = CONTROLLER.lock();
    let Some(controller) = guard.as_mut() else {
        return false;
    };
    controller.take_commands();
    !controller.keys.is_empty()
}

/// The keys the host typed for domain `domain`'s COM1, in order.
pub fn take_keys(domain: u16) -> Vec<u8> {
    if !enabled() {
        return Vec::new();
    }
    let mut guard = CONTROLLER.lock();
    let Some(controller) = guard.as_mut() else {
        return Vec::new();
    };
    controller.take_commands();
    let mut typed = Vec::new();
    controller.keys.retain(|keys| {
        let mine = keys.domain == domain;
        if mine {
            typed.extend_from_slice(keys.bytes());
        }
        !mine
    });
    typed
}

/// Forget the keys no domain took: typed for a domain that has ended or never was.
pub fn discard_keys() -> usize {
    let mut guard = CONTROLLER.lock();
    let Some(controller) = guard.as_mut() else {
        return 0;
    };
    let typed = controller.keys.iter().map(|keys| keys.bytes().len()).sum();
    controller.keys.clear();
    typed
}

/// The facts a breakpoint looks at, from the exit `domain` is in.
pub fn exit_facts<'a>(domain: &Domain, exit: &'a Exit) -> ExitFacts<'a> {
    ExitFacts {
        dom: Some(domain.id),
        exitcode: exit.reason.code(),
        rip: domain.vcpu.vmcb.save.rip,
        exitinfo1: domain.vcpu.vmcb.control.exitinfo1,
        rax: domain.gpr(0),
        instruction: exit.instruction.as_slice(),
    }
}

/// gdb holds the guest stopped (or let it go): the host sees the same state in the
/// mailbox as after its own pause, stopped after the last event (`gdb/mod.rs`).
pub fn show_stopped(stopped: bool) {
    if stopped {
        begin_stop();
    } else {
        end_stop();
    }
    let guard = CONTROLLER.lock();
    let Some(controller) = guard.as_ref() else {
        return;
    };
    controller.mailbox.set_status(if stopped {
        crate::trace::last_seq()
    } else {
        None
    });
}

impl Controller {
    fn take_commands(&mut self) {
        while let Some(command) = self.mailbox.take() {
            self.apply(command);
        }
    }

    /// Does the hypervisor stop after this event of domain `dom`?
    fn stops_after(&mut self, dom: Option<u16>, body: &Body) -> bool {
        let seen = self.watch.see(dom, body);
        match self.run_state {
            RunState::Paused | RunState::Step => true,
            RunState::NextExit => seen.exit.is_some(),
            RunState::Running => self.breaks.iter().any(|point| seen.hits(point)),
        }
    }

    fn apply(&mut self, command: Command) {
        match command {
            Command::Pause => self.run_state = RunState::Paused,
            Command::Continue => self.run_state = RunState::Running,
            Command::Step => self.run_state = RunState::Step,
            Command::NextExit => self.run_state = RunState::NextExit,
            Command::AddBreak(point) => {
                if !self.breaks.contains(&point) {
                    self.breaks.push(point);
                }
            }
            Command::ClearBreaks => self.breaks.clear(),
            Command::Input(keys) => self.keys.push(keys),
        }
    }
}
