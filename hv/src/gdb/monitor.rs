//! gdb's `monitor` commands: ask the hypervisor about traps.
//!
//! | command                 | answer                                                      |
//! |-------------------------|-------------------------------------------------------------|
//! | `monitor help`          | this list (an unknown command is named, then this list)     |
//! | `monitor traps [N]`     | the last N trap flows (default 10): exit, decision, source line; timer ticks included |
//! | `monitor catch CLASS`   | stop at every exit of CLASS, before the hypervisor decides, until `monitor catch off` (a catchpoint, as gdb's own stay) (`pf`, `#GP`, `cpuid`, `ioio`, `port:0x3f8`, `hypercall:1`, `vector:14`, `exit:0x72`); `monitor catch off` |
//! | `monitor decision`      | at a `catch` stop: what the hypervisor is about to do; else its decision on the guest's last trap (timer ticks and gdb's own stops left out) |
//! | `monitor domains`       | every domain: its run state, its ports, its grants, the disk it owns; and the store |
//!
//! Parsing the command and choosing the flow are pure: `traplab_hv::gdb::{command, flows}`.

use super::Debuggee;
use alloc::format;
use alloc::string::{String, ToString};
use gdbstub::outputln;
use gdbstub::target::ext::monitor_cmd::{ConsoleOutput, MonitorCmd};
use spin::Mutex;
use traplab_abi::control::Break;
use traplab_abi::event::Action;
use traplab_abi::exit::ExitReason;
use traplab_hv::domain::evtchn::PortState;
use traplab_hv::domain::vcpu::{RunState, Wait};
use traplab_hv::gdb::command::{Command, HELP};
use traplab_hv::gdb::flows::{Flows, Kind};
use traplab_hv::{Domain, Exit, Guest};

static RECENT: Mutex<Flows> = Mutex::new(Flows::new());

/// An exit of the debugged domain happened (called only while a debugger is attached).
pub fn note_exit(domain: &Domain, exit: &Exit) {
    let kind = match exit.reason {
        ExitReason::Intr => Kind::Tick,
        _ => Kind::Trap,
    };
    let exit = format!("{} at {:#x}", exit.reason.name(), domain.vcpu.vmcb.save.rip);
    RECENT.lock().exit(exit, kind);
}

/// The hypervisor decided (every `decide!`): the first decision of a flow is its decision.
#[inline]
pub fn note_decision(action: Action, why: &str, at: &str) {
    // At every decision: without gdb, one load.
    if super::enabled() {
        RECENT.lock().decided(flow_decision(action, why, at));
    }
}

/// The last exit was gdb's own stop (a step, a breakpoint), decided so.
pub fn note_own_stop(action: Action, why: &str, at: &str) {
    RECENT.lock().gdbs_own(flow_decision(action, why, at));
}

fn flow_decision(action: Action, why: &str, at: &str) -> String {
    format!("{}: {why} [{at}]", action.name())
}

impl MonitorCmd for Debuggee {
    fn handle_monitor_cmd(
        &mut self,
        command: &[u8],
        mut out: ConsoleOutput<'_>,
    ) -> Result<(), Self::Error> {
        let text = core::str::from_utf8(command).unwrap_or("");
        match Command::parse(text) {
            Command::Traps(count) => {
                let recent = RECENT.lock();
                if recent.is_empty() {
                    outputln!(out, "no trap yet");
                }
                for flow in recent.last(count) {
                    outputln!(out, "{}", flow.exit);
                    outputln!(
                        out,
                        "    {}",
                        flow.decision.as_deref().unwrap_or("(not decided yet)")
                    );
                }
            }
            Command::Catch(argument) => {
                if argument == "off" || argument.is_empty() {
                    self.catch = None;
                    outputln!(out, "catch off");
                } else if let Some(point) = Break::parse(argument) {
                    self.catch = Some(point);
                    outputln!(
                        out,
                        "the guest will stop at every {argument} exit, before the hypervisor decides, until `monitor catch off`; `continue`"
                    );
                } else {
                    outputln!(
                        out,
                        "unknown class {argument:?}: try pf, #GP, ud, cpuid, ioio, hlt, vmmcall, npf, port:0x3f8, hypercall:1, vector:14, exit:0x72"
                    );
                }
            }
            Command::Decision => outputln!(out, "{}", decision(self)),
            Command::Domains => domains(self, &mut out),
            Command::Unknown(word) => {
                outputln!(out, "unknown monitor command {word:?}");
                help(&mut out);
            }
            Command::Help => help(&mut out),
        }
        Ok(())
    }
}

fn help(out: &mut ConsoleOutput<'_>) {
    outputln!(out, "traplab monitor commands:");
    for (usage, what) in HELP {
        let mut lines = what.lines();
        outputln!(out, "  {usage:<22} {}", lines.next().unwrap_or_default());
        for line in lines {
            outputln!(out, "  {:<22} {line}", "");
        }
    }
}

fn domains(debuggee: &Debuggee, out: &mut ConsoleOutput<'_>) {
    let debugged = debuggee.domain().id;
    for domain in &debuggee.system.domains {
        let marker = if domain.id == debugged {
            " (gdb's)"
        } else {
            ""
        };
        outputln!(
            out,
            "d{} {}{marker}: {}",
            domain.id,
            domain.name,
            run_state(&domain.vcpu.run_state)
        );
        if domain.devices.disk.passes_through(domain.id) {
            outputln!(
                out,
                "    owns the ATA disk controller: ports 0x1f0-0x1f7 and 0x3f6, without an exit"
            );
        }
        for (port, state) in domain.events.ports.iter().enumerate() {
            if *state != PortState::Free {
                let pending = if domain.event_pending(port as u32) {
                    ", pending"
                } else {
                    ""
                };
                outputln!(out, "    port {port}: {}{pending}", port_state(state));
            }
        }
        for (gref, entry) in domain.grants.table.iter().enumerate() {
            if entry.flags != 0 {
                outputln!(
                    out,
                    "    grant {gref}: page {:#x} for d{}, flags {:#x}, mapped {} time(s)",
                    (entry.frame as u64) << 12,
                    entry.domid,
                    entry.flags,
                    domain.grants.mapped[gref]
                );
            }
        }
        for (handle, mapping) in domain.grants.maptrack.iter().enumerate() {
            if let Some(mapping) = mapping {
                outputln!(
                    out,
                    "    maps grant {} of d{} at {:#x} (handle {handle})",
                    mapping.gref,
                    mapping.granter,
                    mapping.host_addr
                );
            }
        }
    }
    for (path, value) in debuggee.system.store.nodes() {
        outputln!(out, "store {path} = \"{value}\"");
    }
}

fn run_state(state: &RunState) -> String {
    match state {
        RunState::Waiting => "waiting to start".into(),
        RunState::Runnable => "runnable".into(),
        RunState::Blocked(Wait::Interrupt) => "blocked in HLT, until an interrupt".into(),
        RunState::Blocked(Wait::Event) => "blocked (SCHEDOP_block), until an event".into(),
        RunState::Blocked(Wait::Poll(ports)) => format!("polling ports {ports:?}"),
        RunState::Blocked(Wait::Store(path)) => format!("waiting for store node {path}"),
        RunState::Ended => "ended".into(),
    }
}

fn port_state(state: &PortState) -> String {
    match state {
        PortState::Free => "free".into(),
        PortState::Unbound { remote } => format!("unbound, for d{remote}"),
        PortState::Interdomain {
            remote,
            remote_port,
        } => format!("connected to port {remote_port} of d{remote}"),
        PortState::Virq(virq) => format!("VIRQ {virq} (the timer)"),
        PortState::Store => "the store port (its watches' events)".into(),
    }
}

/// At a `catch` stop: the exit and what will happen to it. Otherwise: the decision on the
/// guest's last trap — not on the hypervisor's timer ticks, nor on gdb's own stops, which
/// come after it (a `stepi` over a fault ends with gdb's fetch trap in the handler).
fn decision(debuggee: &Debuggee) -> String {
    if !debuggee.before_decision {
        let recent = RECENT.lock();
        let id = debuggee.domain().id;
        return match recent.last_trap() {
            Some(flow) => format!(
                "no decision pending; on d{id}'s last trap ({}; timer ticks and gdb's own stops left out): {}",
                flow.exit,
                flow.decision.as_deref().unwrap_or_default()
            ),
            None => format!("no decision pending, and none made on a trap of d{id} yet"),
        };
    }
    let Some((domain, others)) = debuggee.system.split(debuggee.domain().id) else {
        return "the domain is gone".to_string();
    };
    let control = &domain.vcpu.vmcb.control;
    let reason = ExitReason::decode(control.exitcode, control.exitinfo1, control.exitinfo2);
    let handler = traplab_hv::exit::handler_file(reason);
    let mut text = format!(
        "{} at {:#x}: {handler} decides.",
        reason.name(),
        domain.vcpu.vmcb.save.rip
    );
    if let ExitReason::Exception { vector, .. } = reason {
        let guest = Guest {
            domain,
            others,
            machine: super::hardware(),
        };
        text.push_str(&format!(
            " Unless it emulates the instruction (a pinned page-table store, a PV kernel's privileged instruction, a TCG quirk), it will {}.",
            traplab_hv::delivery::preview(&guest, vector)
        ));
    }
    text
}
