//! gdb's `monitor` commands: ask the hypervisor about traps.
//!
//! | command                 | answer                                                      |
//! |-------------------------|-------------------------------------------------------------|
//! | `monitor help`          | this list                                                   |
//! | `monitor traps [N]`     | the last N trap flows (default 10): exit, decision, source line |
//! | `monitor catch CLASS`   | stop at the next exit of CLASS, before the hypervisor decides (`pf`, `#GP`, `cpuid`, `ioio`, `port:0x3f8`, `hypercall:1`, `vector:14`, `exit:0x72`); `monitor catch off` |
//! | `monitor decision`      | at a `catch` stop: what the hypervisor is about to do; else the last decision |

use super::Debugger;
use crate::domain::Domain;
use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::{String, ToString};
use gdbstub::outputln;
use gdbstub::target::ext::monitor_cmd::{ConsoleOutput, MonitorCmd};
use spin::Mutex;
use traplab_abi::control::Break;
use traplab_abi::event::Action;
use traplab_abi::svm::exitcode;

/// How many flows `monitor traps` remembers.
const KEPT: usize = 64;

/// One trap flow, as `monitor traps` shows it.
struct Flow {
    exit: String,
    decision: Option<String>,
}

static RECENT: Mutex<VecDeque<Flow>> = Mutex::new(VecDeque::new());

/// An exit happened (called only while a debugger is attached).
pub fn note_exit(domain: &Domain) {
    let code = domain.vmcb.control.exitcode;
    let exit = format!("{} at {:#x}", traplab_abi::exit::ExitReason::from_code(code).name(), domain.vmcb.save.rip);
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

impl MonitorCmd for Domain {
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
                let Some(debugger) = self.debugger.as_mut() else {
                    return Ok(());
                };
                if argument == "off" || argument.is_empty() {
                    debugger.catch = None;
                    outputln!(out, "catch off");
                } else if let Some(point) = Break::parse(argument) {
                    debugger.catch = Some(point);
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
                    "  monitor decision       what the hypervisor is about to do at this exit"
                );
                outputln!(out, "  monitor help           this text");
            }
        }
        Ok(())
    }
}

/// At a `catch` stop: the exit and what will happen to it. Otherwise: the last decision.
fn decision(domain: &Domain) -> String {
    let stopped_before = domain
        .debugger
        .as_ref()
        .is_some_and(|debugger: &alloc::boxed::Box<Debugger>| debugger.before_decision);
    if !stopped_before {
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
    let code = domain.vmcb.control.exitcode;
    let handler = crate::exit::handler_file(code);
    let mut text = format!(
        "{} at {:#x}: {handler} decides.",
        traplab_abi::exit::ExitReason::from_code(code).name(),
        domain.vmcb.save.rip
    );
    if (exitcode::EXCP_BASE..exitcode::EXCP_BASE + 32).contains(&code) {
        let vector = (code - exitcode::EXCP_BASE) as u8;
        text.push_str(&format!(
            " Unless it emulates the instruction (a pinned page-table store, a PV kernel's privileged instruction, a TCG quirk), it will {}.",
            crate::delivery::preview(domain, vector)
        ));
    }
    text
}
