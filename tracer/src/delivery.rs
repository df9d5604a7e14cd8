//! What a guest's handler starts with after the hypervisor injected an event: the exception
//! frame the CPU pushed, and the registers the handler's first instruction sees.
//!
//! The trace records the state *before* the delivery: the hypervisor writes EVENTINJ and the
//! CPU delivers the event during VMRUN, after the `resume` event was recorded (AMD APM vol.
//! 2, 15.20 "Event Injection"). So the `resume` event's RSP is the interrupted code's, and
//! its RFLAGS are what the CPU pushes. What the delivery changes is worked out here, from
//! the facts the flow holds and the architecture (APM vol. 2, 8.9.3 "Interrupt Stack Frame"):
//!
//! ```text
//!   long mode (always 8-byte slots)         legacy mode, no privilege change (4-byte slots)
//!   +0x28  SS                               +0x08  EFLAGS
//!   +0x20  RSP   (the interrupted code's)   +0x04  CS
//!   +0x18  RFLAGS                           +0x00  EIP          (+0x04 each with an error code)
//!   +0x10  CS
//!   +0x08  RIP   (the faulting instruction, or the next one for a trap)
//!   +0x00  error code (when the vector has one)  ◀── RSP as the handler starts
//! ```
//!
//! Where the frame is cannot be read from the exit alone: the gate may switch stacks (an
//! IST slot of the TSS in long mode, the TSS's ring-0 stack on a privilege change). The
//! handler's own IRET tells: at the intercepted IRET, RSP points at the RIP slot, so the
//! frame began one error code below it.

use traplab_abi::event::{Body, Event, EventType, Exit, Inject, Registers, Resume, ReturnPath};
use traplab_abi::x86::{EferFlags, RFlags};

/// The frame the CPU pushed for an injected event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// `#PF`.
    pub name: String,
    /// An interrupt (a timer tick, an upcall), not an exception: it interrupted no
    /// instruction, so the RIP pushed is simply where the code goes on.
    pub interrupt: bool,
    /// 8-byte slots (long mode) or 4-byte ones.
    pub long_mode: bool,
    pub error_code: Option<u32>,
    /// The RIP pushed: where the handler's IRET goes back to.
    pub rip: u64,
    /// Is that the trapping instruction (a fault: IRET runs it again), not the next one (a
    /// trap, or an instruction the hypervisor completed first)?
    pub restarts: bool,
    pub cs: u16,
    pub rflags: u64,
    /// The interrupted code's RSP: pushed in long mode, and in legacy mode on a change of
    /// privilege (with SS).
    pub rsp: Option<u64>,
    /// Where the frame is (the handler's RSP at its first instruction), and the `seq` of
    /// the IRET exit that told; `None` when the trace has no IRET of this handler.
    pub at: Option<(u64, u64)>,
}

/// One slot of a frame: its offset from the frame's start, its name, and its value (`None`
/// for SS, which the trace does not carry).
pub type Slot = (u64, &'static str, Option<u64>);

impl Frame {
    /// The slots from the lowest address up.
    pub fn slots(&self) -> Vec<Slot> {
        let size = if self.long_mode { 8 } else { 4 };
        let mut values: Vec<(&'static str, Option<u64>)> = Vec::new();
        if let Some(code) = self.error_code {
            values.push(("error code", Some(code as u64)));
        }
        values.push(("rip", Some(self.rip)));
        values.push(("cs", Some(self.cs as u64)));
        values.push(("rflags", Some(self.rflags)));
        if let Some(rsp) = self.rsp {
            values.push(("rsp", Some(rsp)));
            values.push(("ss", None));
        }
        values
            .into_iter()
            .enumerate()
            .map(|(slot, (name, value))| (slot as u64 * size, name, value))
            .collect()
    }

    /// The frame in words, for the Detail pane: where it is, then each slot from the
    /// lowest address up (label, value and meaning).
    pub fn rows(&self) -> Vec<(String, String)> {
        let size = self.size();
        let mut rows = vec![(
            "frame".to_string(),
            match self.at {
                Some((address, iret)) => format!(
                    "{size} bytes the CPU pushes at VMRUN, at {address:#x}: the handler's RSP (found at its IRET, seq {iret})"
                ),
                None => format!(
                    "{size} bytes the CPU pushes at VMRUN, on the stack the gate names (no IRET of the handler in the trace to say where)"
                ),
            },
        )];
        for (offset, name, value) in self.slots() {
            let meaning = match name {
                "error code" => "what the handler pops before its IRET",
                "rip" if self.interrupt => "where the interrupted code goes on after the IRET",
                "rip" if self.restarts => "the trapping instruction: the IRET runs it again",
                "rip" => "the next instruction: the IRET goes on after the trapping one",
                "cs" => "the interrupted code's segment",
                "rflags" => "the interrupted code's flags",
                "rsp" => "the interrupted code's stack",
                _ => "the interrupted code's stack segment (not in the trace)",
            };
            let value = value.map_or("·".to_string(), |value| format!("{value:#x}"));
            rows.push((
                format!("  +{offset:#04x}"),
                format!("{name:<10} {value:>10}  {meaning}"),
            ));
        }
        rows
    }

    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        self.slots().len() as u64 * if self.long_mode { 8 } else { 4 }
    }

    /// How many bytes the error code takes at the bottom of the frame.
    fn error_code_size(&self) -> u64 {
        match (self.error_code, self.long_mode) {
            (None, _) => 0,
            (Some(_), true) => 8,
            (Some(_), false) => 4,
        }
    }
}

/// The frame of the event `flow` injected, from its events in order (`exit` … `inject` …
/// `resume`), and `iret`: the exit event of the handler's IRET, when the trace has it.
/// `None` for a flow that injected nothing, or has no exit or no resume.
pub fn frame(flow: &[Event], iret: Option<&Event>) -> Option<Frame> {
    let exit = flow.iter().find_map(|event| match &event.body {
        Body::Exit(exit) => Some(exit),
        _ => None,
    })?;
    let inject = last_inject(flow)?;
    let resume = resume_of(flow)?;
    let long_mode = EferFlags::from_bits_truncate(exit.efer).contains(EferFlags::LONG_MODE_ACTIVE);
    // In legacy mode the CPU pushes SS:ESP only when the handler runs at a higher
    // privilege; the handlers run at CPL 0.
    let stack_pushed = long_mode || exit.cpl > 0;
    let mut frame = Frame {
        name: inject.name.to_string(),
        interrupt: matches!(inject.kind, EventType::Interrupt | EventType::Nmi),
        long_mode,
        error_code: inject.error_code,
        rip: moved(flow, "rip").unwrap_or(exit.rip),
        restarts: moved(flow, "rip").is_none_or(|rip| rip == exit.rip),
        cs: exit.cs,
        rflags: resume.rflags,
        rsp: stack_pushed.then_some(resume.regs.rsp),
        at: None,
    };
    frame.at = iret.and_then(|event| match &event.body {
        Body::Exit(at_iret) => Some((
            at_iret.regs.rsp.wrapping_sub(frame.error_code_size()),
            event.seq,
        )),
        _ => None,
    });
    Some(frame)
}

/// Where the guest goes back to when the handler of the event `flow` delivered returns
/// (the RIP the CPU, or the hypervisor for a bounce, put in the frame): the trapping
/// instruction, or the one after it when the hypervisor moved RIP first. `None` for a flow
/// that delivered nothing. A breakpoint there is how gdb's `finish` works too.
pub fn return_address(flow: &[Event]) -> Option<u64> {
    let delivered = flow
        .iter()
        .any(|event| matches!(event.body, Body::Inject(_) | Body::Bounce(_)));
    let exit = flow.iter().find_map(|event| match &event.body {
        Body::Exit(exit) => Some(exit),
        _ => None,
    })?;
    delivered.then(|| moved(flow, "rip").unwrap_or(exit.rip))
}

/// The guest's state where a flow lets it go on: what its first instruction sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoesOn {
    pub rip: u64,
    pub rflags: u64,
    pub regs: Registers,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    /// The registers whose value is unknown (`rsp` of a delivery the trace cannot place).
    pub unknown: Vec<&'static str>,
    /// Where the values that are not the `resume` event's come from, one line each.
    pub notes: Vec<String>,
}

/// The state the guest goes on with after `flow` (its events in order): the `resume`
/// event's registers, with what happens after it — an injected event's delivery (`frame`),
/// an IRET the CPU executes — and the control registers of the exit with every change the
/// flow lists. `None` for a flow without an exit or a resume.
pub fn goes_on(flow: &[Event], frame: Option<&Frame>) -> Option<GoesOn> {
    let exit: &Exit = flow.iter().find_map(|event| match &event.body {
        Body::Exit(exit) => Some(exit),
        _ => None,
    })?;
    let resume = resume_of(flow)?;
    let mut state = GoesOn {
        rip: resume.rip,
        rflags: resume.rflags,
        regs: resume.regs,
        cr0: moved(flow, "cr0").unwrap_or(exit.cr0),
        cr2: moved(flow, "cr2").unwrap_or(exit.cr2),
        cr3: moved(flow, "cr3").unwrap_or(exit.cr3),
        cr4: moved(flow, "cr4").unwrap_or(exit.cr4),
        efer: moved(flow, "efer").unwrap_or(exit.efer),
        unknown: Vec::new(),
        notes: Vec::new(),
    };
    if let Some(inject) = last_inject(flow) {
        // An intercepted #PF does not write CR2: the hypervisor sets it for the handler.
        if let Some(cr2) = inject.cr2 {
            state.cr2 = cr2;
            state
                .notes
                .push(format!("cr2: set for the handler by the inject ({cr2:#x})"));
        }
        // The delivery clears TF, NT and RF (and VM); an interrupt gate clears IF too, a
        // trap gate leaves it (APM vol. 2, 8.9.3).
        let cleared = RFlags::TRAP_FLAG
            | RFlags::NESTED_TASK
            | RFlags::RESUME_FLAG
            | RFlags::VIRTUAL_8086_MODE;
        state.rflags &= !cleared.bits();
        state.notes.push(format!(
            "rflags: the delivery clears TF, NT and RF; an interrupt gate clears IF too (IF is {} here, as pushed)",
            if state.rflags & RFlags::INTERRUPT_FLAG.bits() != 0 {
                "1"
            } else {
                "0"
            }
        ));
        match frame.and_then(|frame| frame.at) {
            Some((address, iret_seq)) => {
                state.regs.rsp = address;
                state.notes.push(format!(
                    "rsp: on the {}-byte frame the CPU pushed at VMRUN (RSP at the handler's IRET, seq {iret_seq}, less the error code)",
                    frame.map_or(0, Frame::size),
                ));
            }
            None => {
                state.unknown.push("rsp");
                state.notes.push(
                    "rsp: below the frame the CPU pushes at VMRUN, on a stack the gate may switch to (IST, TSS); this trace has no IRET of the handler to tell where".into(),
                );
            }
        }
    }
    if let Some(ret) = flow.iter().find_map(|event| match &event.body {
        Body::Return(ret) if ret.via == ReturnPath::Iret => Some(ret),
        _ => None,
    }) {
        // The hypervisor lets the CPU execute the IRET after VMRUN: it pops the frame.
        state.rflags = ret.rflags;
        state.regs.rsp = ret.rsp;
        state
            .notes
            .push("rsp, rflags: popped by the IRET the CPU executes after VMRUN".into());
    }
    Some(state)
}

/// The last `inject` of a flow: the event in EVENTINJ at the VMRUN.
fn last_inject(flow: &[Event]) -> Option<&Inject> {
    flow.iter().rev().find_map(|event| match &event.body {
        Body::Inject(inject) => Some(inject),
        _ => None,
    })
}

fn resume_of(flow: &[Event]) -> Option<&Resume> {
    flow.iter().rev().find_map(|event| match &event.body {
        Body::Resume(resume) => Some(resume),
        _ => None,
    })
}

/// The last value the flow's emulation gave `name`, if it changed it.
fn moved(flow: &[Event], name: &str) -> Option<u64> {
    flow.iter()
        .filter_map(|event| match &event.body {
            Body::Emulate(emulate) => Some(emulate),
            _ => None,
        })
        .flat_map(|emulate| emulate.changes.iter())
        .rfind(|change| change.name == name)
        .map(|change| change.new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording;
    use std::path::Path;

    /// The page-fault recording: the #PF's flow (seq 187–190) and its handler's IRET (440).
    fn page_fault() -> (Vec<Event>, Event) {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tui/tests/recordings/page-fault.jsonl");
        let events = recording::read(&path).expect("the recording reads").events;
        (events[187..=190].to_vec(), events[440].clone())
    }

    #[test]
    fn the_page_fault_s_frame_is_found_from_the_handler_s_iret() {
        let (flow, iret) = page_fault();
        let frame = frame(&flow, Some(&iret)).expect("an injected #PF");
        assert_eq!(
            frame,
            Frame {
                name: "#PF".into(),
                interrupt: false,
                long_mode: true,
                error_code: Some(2),
                rip: 0x2000b6,
                restarts: true,
                cs: 8,
                rflags: 0x6,
                rsp: Some(0x21fe60),
                // RSP at the IRET, 0x20ffd8, less the 8-byte error code.
                at: Some((0x20ffd0, 440)),
            }
        );
        assert_eq!(
            frame.slots(),
            [
                (0x00, "error code", Some(2)),
                (0x08, "rip", Some(0x2000b6)),
                (0x10, "cs", Some(8)),
                (0x18, "rflags", Some(0x6)),
                (0x20, "rsp", Some(0x21fe60)),
                (0x28, "ss", None),
            ]
        );
        // Six 8-byte slots from 0x20ffd0: the frame ends at the IST stack's top.
        assert_eq!(0x20ffd0 + frame.size(), 0x210000);
        let rows = frame.rows();
        assert_eq!(
            rows[0].1,
            "48 bytes the CPU pushes at VMRUN, at 0x20ffd0: the handler's RSP (found at its IRET, seq 440)"
        );
        assert_eq!(
            rows[2],
            (
                "  +0x08".to_string(),
                "rip          0x2000b6  the trapping instruction: the IRET runs it again"
                    .to_string()
            )
        );
    }

    #[test]
    fn the_handler_starts_on_its_frame_with_cr2_set() {
        let (flow, iret) = page_fault();
        let frame = frame(&flow, Some(&iret));
        let state = goes_on(&flow, frame.as_ref()).expect("the flow resumes");
        assert_eq!(state.rip, 0x200240, "the handler");
        assert_eq!(
            return_address(&flow),
            Some(0x2000b6),
            "the faulting write, retried"
        );
        assert_eq!(
            state.regs.rsp, 0x20ffd0,
            "on its frame, not the faulting code's stack"
        );
        assert_eq!(state.cr2, 0x4000_0000, "set by the inject");
        assert_eq!(state.cr3, 0x10000, "unchanged from the exit");
        assert!(state.unknown.is_empty());
        // Without the IRET the trace cannot place the frame: RSP is unknown, not wrong.
        let state = goes_on(&flow, None).expect("the flow resumes");
        assert_eq!(state.unknown, ["rsp"]);
    }

    #[test]
    fn after_the_iret_the_guest_goes_on_with_what_it_popped() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tui/tests/recordings/page-fault.jsonl");
        let events = recording::read(&path).expect("the recording reads").events;
        // exit IRET, decide, return, resume: seq 440–443.
        let state = goes_on(&events[440..=443], None).expect("the flow resumes");
        assert_eq!((state.rip, state.regs.rsp), (0x2000b6, 0x21fe60));
        assert!(
            frame(&events[440..=443], None).is_none(),
            "nothing injected"
        );
    }
}
