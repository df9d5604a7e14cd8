//! gdb's `monitor` commands: ask the hypervisor about traps.
//!
//! | command                 | answer                                                      |
//! |-------------------------|-------------------------------------------------------------|
//! | `monitor help`          | this list                                                   |
//! | `monitor traps [N]`     | the last N trap flows (default 10): exit, decision, source line |
//! | `monitor catch CLASS`   | stop at the next exit of CLASS, before the hypervisor decides (`pf`, `#GP`, `cpuid`, `ioio`, `port:0x3f8`, `hypercall:1`, `vector:14`, `exit:0x72`); `monitor catch off` |
//! | `monitor decision`      | at a `catch` stop: what the hypervisor is about to do; else the last decision |
//! | `monitor domains`       | every domain: its run state, its ports, its grants, the disk it owns; and the store |

use super::Debuggee;
use alloc::collections::VecDeque;
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
use traplab_hv::{Domain, Exit, Guest};

/// How many flows `monitor traps` remembers.
const KEPT: usize = 64;

/// One trap flow, as `monitor traps` shows it.
struct Flow {
    exit: String,
    decision: Option<String>,
}

static RECENT: Mutex<VecDeque<Flow>> = Mutex::new(VecDeque::new());

/// An exit happened (called only while a debugger is attached).
pub fn note_exit(domain: &Domain, exit: &Exit) {
    let exit = format!("{} at {:#x}", exit.reason.name(), domain.vcpu.vmcb.save.rip);
    let mut recent = RECENT.lock();
    if recent.len() == KEPT {
        recent.pop_front();
    }
    recent.push_back(Flow {
        exit,
        decision: None,
    });
}

/// The hypervisor decided (every `decide!`): the first decision of a flow is its decision.
pub fn note_decision(action: Action, why: &str, at: &str) {
    if !super::enabled() {
        return;
    }
    let mut recent = RECENT.lock();
    if let Some(flow) = recent.back_mut()
        && flow.decision.is_none()
    {
        flow.decision = Some(format!("{}: {why} [{at}]", action.name()));
    }
}

impl MonitorCmd for Debuggee {
    fn handle_monitor_cmd(
        &mut self,
        command: &[u8],
        mut out: ConsoleOutput<'_>,
    ) -> Result<(), Self::Error> {
        let text = core::str::from_utf8(command).unwrap_or("").trim();
        let (word, argument) = text
            .split_once(' ')
            .map_or((text, ""), |(word, rest)| (word, rest.trim()));
        match word {
            "traps" => {
                let count = argument.parse::<usize>().unwrap_or(10).max(1);
                let recent = RECENT.lock();
                if recent.is_empty() {
                    outputln!(out, "no trap yet");
                }
                for flow in recent.iter().skip(recent.len().saturating_sub(count)) {
                    outputln!(out, "{}", flow.exit);
                    outputln!(
                        out,
                        "    {}",
                        flow.decision.as_deref().unwrap_or("(not decided yet)")
                    );
                }
            }
            "catch" => {
                if argument == "off" || argument.is_empty() {
                    self.catch = None;
                    outputln!(out, "catch off");
                } else if let Some(point) = Break::parse(argument) {
                    self.catch = Some(point);
                    outputln!(
                        out,
                        "the guest will stop at the next {argument} exit, before the hypervisor decides; `continue`"
                    );
                } else {
                    outputln!(
                        out,
                        "unknown class {argument:?}: try pf, #GP, ud, cpuid, ioio, hlt, vmmcall, npf, port:0x3f8, hypercall:1, vector:14, exit:0x72"
                    );
                }
            }
            "decision" => outputln!(out, "{}", decision(self)),
            "domains" => {
                let debugged = self.domain().id;
                for domain in &self.system.domains {
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
                for (path, value) in self.system.store.nodes() {
                    outputln!(out, "store {path} = \"{value}\"");
                }
            }
            _ => {
                outputln!(out, "traplab monitor commands:");
                outputln!(
                    out,
                    "  monitor traps [N]      the last N trap flows (exit, decision, hv source line)"
                );
                outputln!(
                    out,
                    "  monitor catch CLASS    stop at the next exit of CLASS before the hypervisor decides"
                );
                outputln!(
                    out,
                    "                         (pf, #GP, ud, cpuid, ioio, hlt, vmmcall, npf, port:N, hypercall:N, vector:N, exit:N; off)"
                );
                outputln!(
                    out,
                    "  monitor domains        every domain: run state, ports, grants, the disk it owns; the store"
                );
                outputln!(
                    out,
                    "  monitor decision       what the hypervisor is about to do at this exit"
                );
                outputln!(out, "  monitor help           this text");
            }
        }
        Ok(())
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
    }
}

/// At a `catch` stop: the exit and what will happen to it. Otherwise: the last decision.
fn decision(debuggee: &Debuggee) -> String {
    if !debuggee.before_decision {
        let recent = RECENT.lock();
        return match recent
            .iter()
            .rev()
            .find_map(|flow| flow.decision.as_ref().map(|d| (flow, d)))
        {
            Some((flow, decided)) => format!(
                "no decision pending; the last one, at {}: {decided}",
                flow.exit
            ),
            None => "no decision pending, and none made yet".to_string(),
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
