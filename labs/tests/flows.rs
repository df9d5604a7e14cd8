//! The real thing: boot QEMU with the hypervisor and a guest, and assert the exact flow of
//! events — exit code, EXITINFO fields, decision, injected vector, resume RIP.
//!
//! Each test runs QEMU under TCG (well under a second per guest here). The hypervisor and
//! the guests are built by `labs/build.rs`.

mod common;

use common::{console, ending, run};
use std::time::Duration;
use traplab_abi::event::{Action, Body, DomainState, Event, EventType};
use traplab_abi::exit::ExitReason;
use traplab_labs::{guest_elf, machine_for};
use traplab_tracer::check::StreamFault;
use traplab_tracer::qemu::{HvStatus, TraceMode};
use traplab_tracer::session::{self, Options};
use traplab_tracer::symbols::Symbols;

fn symbols(guest: &str) -> Symbols {
    Symbols::load(&guest_elf(guest)).expect("the guest ELF has symbols")
}

/// The first event at or after `from` for which `pick` returns something.
fn find<'a, T>(
    events: &'a [Event],
    from: usize,
    pick: impl Fn(&'a Event) -> Option<T>,
) -> (usize, T) {
    events[from..]
        .iter()
        .enumerate()
        .find_map(|(offset, event)| pick(event).map(|found| (from + offset, found)))
        .unwrap_or_else(|| panic!("no such event after index {from}"))
}

/// The exit event after `from` with `exitcode`.
fn exit_with(events: &[Event], from: usize, exitcode: u64) -> (usize, &traplab_abi::event::Exit) {
    find(events, from, |event| match &event.body {
        Body::Exit(exit) if exit.exitcode == exitcode => Some(exit),
        _ => None,
    })
}

/// The exit at `index` is followed by: a decision, then (maybe) emulate/inject, then a resume.
fn flow_after(events: &[Event], exit_index: usize) -> &[Event] {
    let end = events[exit_index + 1..]
        .iter()
        .position(|event| {
            matches!(
                event.body,
                Body::Resume(_) | Body::Domain(_) | Body::Exit(_)
            )
        })
        .map_or(events.len(), |position| exit_index + 1 + position + 1);
    &events[exit_index..end]
}

#[test]
fn a_data_breakpoint_on_memory_the_hypervisor_writes_traps_after_that_iteration() {
    // DR0 watches a byte for writes. The CPU's own MOV to it traps (native #DB exit); a REP
    // INSB over it exits, and the hypervisor writes the bytes, one an exit while a data
    // breakpoint is enabled: its #DB comes after the iteration that wrote the byte, RIP at
    // the INS, as a CPU's (Intel SDM vol. 3B, 17.3.1.2). The guest checks both.
    let run = run(&["data-breakpoint"]);
    let lines = console(&run.events, 1);
    assert_eq!(
        lines,
        [
            "MOV to the watched byte: #DB after it, DR6.B0 set",
            "REP INSB over the watched byte: #DB after the iteration that wrote it, DR6.B0 set (5 left, next at buffer + 3)"
        ],
        "{lines:#?}"
    );
    assert_eq!(ending(&run.events, 1).1, Some(0));
    let trapped = decisions_saying(&run.events, "hits a data breakpoint");
    assert_eq!(trapped.len(), 1, "{trapped:#?}");
    assert!(
        trapped[0].contains("after this iteration of the REP string instruction"),
        "{}",
        trapped[0]
    );
    assert_eq!(
        debug_exceptions_synthetic(&run.events),
        [false, true],
        "the CPU's #DB, then the hypervisor's"
    );
}

/// The reasons of the decisions that say `text`.
fn decisions_saying<'a>(events: &'a [Event], text: &str) -> Vec<&'a str> {
    events
        .iter()
        .filter_map(|event| match &event.body {
            Body::Decide(decide) if decide.why.contains(text) => Some(decide.why.as_ref()),
            _ => None,
        })
        .collect()
}

/// Each #DB injected, in order: made up by the hypervisor (synthetic), or the CPU's.
fn debug_exceptions_synthetic(events: &[Event]) -> Vec<bool> {
    events
        .iter()
        .filter_map(|event| match &event.body {
            Body::Inject(inject) if inject.vector == 1 => Some(inject.synthetic),
            _ => None,
        })
        .collect()
}

#[test]
fn a_single_step_over_an_instruction_the_hypervisor_completes_traps_right_after_it() {
    // RFLAGS.TF over an intercepted CPUID and IN: the hypervisor answers each, and raises
    // the #DB (DR6.BS) a CPU raises after it, with RIP at the next instruction. The guest
    // checks where each #DB came and says so.
    let run = run(&["single-step"]);
    let lines = console(&run.events, 1);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    for (line, what) in lines.iter().zip(["CPUID", "IN"]) {
        assert!(
            line.starts_with(&format!("{what}: #DB at "))
                && line.ends_with("DR6.BS 1: right after it, as on a CPU"),
            "{line}"
        );
    }
    assert_eq!(ending(&run.events, 1).1, Some(0));
    // In the trace: the emulation and the #DB in one decision, the #DB synthetic (the CPU
    // never ran the instruction, so the hypervisor raises it).
    let stepped = decisions_saying(&run.events, "RFLAGS.TF was set");
    assert_eq!(stepped.len(), 2, "{stepped:#?}");
    assert!(
        stepped[0].starts_with("CPUID is intercepted"),
        "{}",
        stepped[0]
    );
    assert_eq!(debug_exceptions_synthetic(&run.events), [true, true]);
}

#[test]
fn an_nmi_held_back_by_its_handler_comes_right_after_the_handler_s_iret() {
    // The handler asks for a second NMI (held back: NMIs are blocked until its IRET). The
    // hypervisor single-steps the IRET (TF), the #DB exits right after it, and the NMI goes
    // in there: the guest counts 2 NMIs before its next exit.
    let run = run(&["nmi-window"]);
    let lines = console(&run.events, 1);
    assert_eq!(
        lines,
        [
            "raise_event returned 0; the handler's own raise_event returned 0",
            "NMIs taken by the time the first handler had returned: 2 (the second right after the IRET, as on a CPU)",
        ]
    );
    assert_eq!(ending(&run.events, 1).1, Some(0));
    // In the trace: the IRET's decision sets the step, the #DB's takes it back, and the NMI
    // is injected in the #DB's flow.
    let index_of = |needle: &str| {
        run.events
            .iter()
            .position(
                |event| matches!(&event.body, Body::Decide(decide) if decide.why.contains(needle)),
            )
            .unwrap_or_else(|| panic!("no decision saying {needle:?}"))
    };
    let step = index_of("sets RFLAGS.TF to single-step the IRET");
    let trap = index_of("the trap is the hypervisor's, not the guest's");
    assert!(step < trap);
    let exit = trap - 1;
    assert!(
        matches!(&run.events[exit].body, Body::Exit(exit) if exit.exitcode == 0x41),
        "{:?}",
        run.events[exit].body
    );
    let injected: Vec<u8> = flow_after(&run.events, exit)
        .iter()
        .filter_map(|event| match &event.body {
            Body::Inject(inject) => Some(inject.vector),
            _ => None,
        })
        .collect();
    assert_eq!(injected, [2], "the NMI, in the #DB's flow");
}

/// Every instruction form the hypervisor emulates on a device register comes out as the
/// CPU's own on RAM (`guests/src/bin/mmio-forms.rs`): the memory, the registers and the
/// flags the manual defines, under QEMU's TCG. A bit test whose bit number reaches past its
/// operand is done on the operand that holds the bit: BTS of bit 73 from 8 bytes before
/// SCRATCH is bit 9 of SCRATCH, BTC of bit 17 of the word at SCRATCH is bit 1 two bytes on.
#[test]
fn every_mmio_form_the_hypervisor_emulates_does_what_the_cpu_does_on_ram() {
    let run = run(&["mmio-forms"]);
    let lines = console(&run.events, 1);
    let forms = [
        "ADC",
        "SBB",
        "BTS",
        "BTS 73 bits on",
        "BTR",
        "BTC",
        "BT",
        "CMPXCHG equal",
        "CMPXCHG not equal",
        "XADD",
        "SETC",
        "MOV from DS",
        "REP STOSB",
        "REP STOSB backwards",
        "REP MOVSB",
        "MOVSQ",
        "LODSQ",
    ];
    assert_eq!(lines.len(), forms.len(), "{lines:#?}");
    for (line, form) in lines.iter().zip(forms) {
        assert!(
            line.starts_with(&format!("{form}: the same on the device: ")),
            "{line}"
        );
    }
    assert_eq!(ending(&run.events, 1).1, Some(0));
    let whys: Vec<&str> = run
        .events
        .iter()
        .filter_map(|event| match &event.body {
            Body::Decide(decide) if event.dom == Some(1) => Some(decide.why.as_ref()),
            _ => None,
        })
        .filter(|why| {
            why.contains("guest-physical 0xfeb0000")
                && !why.contains("byte write of")
                && !why.contains("byte read of")
        })
        .collect();
    let expected = [
        "a 8-byte ADC of guest-physical 0xfeb00008 with 0x8000000000000000",
        "a 4-byte SBB of guest-physical 0xfeb00008 with 0x1",
        "a 8-byte BTS of bit 5 of guest-physical 0xfeb00008",
        "a 8-byte BTS of bit 9 of guest-physical 0xfeb00008",
        "a 8-byte BTR of bit 63 of guest-physical 0xfeb00008",
        "a 2-byte BTC of bit 1 of guest-physical 0xfeb0000a",
        "a 4-byte BT of bit 4 of guest-physical 0xfeb00008",
        "a 8-byte CMPXCHG of guest-physical 0xfeb00008, 0x1234 expected, 0xabcd to write",
        "a 8-byte CMPXCHG of guest-physical 0xfeb00008, 0x1235 expected, 0xabcd to write",
        "a 4-byte XADD of guest-physical 0xfeb00008 with r",
        "REP STOSB reaches guest-physical 0xfeb00008",
        "REP STOSB reaches guest-physical 0xfeb0000f",
        "REP MOVSB reaches guest-physical 0xfeb00008",
        "MOVSQ reaches guest-physical 0xfeb00008",
        "LODSQ reaches guest-physical 0xfeb00008",
    ];
    assert_eq!(whys.len(), expected.len(), "{whys:#?}");
    for (why, start) in whys.iter().zip(expected) {
        assert!(why.starts_with(start), "{why}\nshould start with\n{start}");
    }
}

/// VMRUN does not switch the x87/SSE state (AMD APM vol. 2, 15.5): the world switch moves
/// the XMM registers, which the hypervisor's own code uses, and leaves the rest in the CPU
/// (`hv/src/svm/fpu.rs`). A guest that leaves values in all sixteen XMM registers, in MXCSR,
/// in the FCW and on the x87 stack across a hundred exits finds them again.
#[test]
fn the_guests_x87_and_sse_registers_survive_its_exits() {
    let run = run(&["fpu-across-exits"]);
    let exits = |exitcode| {
        run.events
            .iter()
            .filter(|event| matches!(&event.body, Body::Exit(exit) if exit.exitcode == exitcode))
            .count()
    };
    assert_eq!(exits(0x72), 100, "CPUID exits");
    assert_eq!(
        exits(0x81),
        100 + 1,
        "VMMCALL exits: a yield after each CPUID, and the exit"
    );
    assert_eq!(
        console(&run.events, 1),
        ["XMM0-XMM15, MXCSR, the x87 FCW and two x87 registers intact after 100 exits"]
    );
    assert_eq!(ending(&run.events, 1).1, Some(0));
}

#[test]
fn hello_is_one_ioio_exit_per_byte() {
    let run = run(&["hello"]);
    let text = "Hello from a traplab guest!\n";
    let outs: Vec<&traplab_abi::event::Exit> = run
        .events
        .iter()
        .filter_map(|event| match &event.body {
            Body::Exit(exit) if exit.exitcode == 0x7b => Some(exit),
            _ => None,
        })
        .collect();
    assert_eq!(outs.len(), text.len(), "one IOIO exit per byte");
    for (exit, byte) in outs.iter().zip(text.bytes()) {
        // OUT (bit 0 clear), 8-bit operand (bit 4), port 0x3f8 in 31:16. (TCG leaves the
        // address-size bits 9:7 clear for IN/OUT: they only matter for INS/OUTS.)
        assert_eq!(exit.exitinfo1, 0x03f8_0010);
        assert_eq!(exit.regs.rax & 0xff, byte as u64);
        assert_eq!(exit.insn.as_slice()[0], 0xee, "out dx, al");
        // EXITINFO2 is the next RIP: `out dx, al` is one byte.
        assert_eq!(exit.exitinfo2, exit.rip + 1);
    }
    assert_eq!(console(&run.events, 1), ["Hello from a traplab guest!"]);
    let (index, hlt) = exit_with(&run.events, 0, 0x78);
    assert_eq!(hlt.rflags & (1 << 9), 0, "HLT with interrupts off");
    let flow = flow_after(&run.events, index);
    assert!(
        matches!(&flow[1].body, Body::Decide(decide) if decide.action == Action::Emulate && decide.at.starts_with("hv/src/exit/hlt.rs:"))
    );
    assert_eq!(
        ending(&run.events, 1),
        (
            DomainState::Exited,
            Some(0),
            "halted with interrupts off".into()
        )
    );
}

#[test]
fn page_fault_is_reflected_to_the_guest_handler_and_retried() {
    let run = run(&["page-fault"]);
    let symbols = symbols("page-fault");
    let handler = symbols
        .resolve("traplab_guests::traps::exception_entries+0xe0")
        .expect("the entry table");

    let (index, exit) = exit_with(&run.events, 0, 0x4e);
    assert_eq!(exit.reason, "EXCP_PF");
    assert_eq!(
        exit.exitinfo2, 0x4000_0000,
        "EXITINFO2 is the faulting address"
    );
    assert_eq!(
        exit.exitinfo1, 0b010,
        "error code: not present (P=0), write (W=1), supervisor (U=0)"
    );
    assert_eq!(exit.cpl, 0);
    // The faulting write is in the guest's main (which the compiler may inline into the
    // runtime's `traplab_guest_main`).
    let function = symbols
        .lookup(exit.rip)
        .map(|(symbol, _)| symbol.name.clone());
    assert!(
        matches!(
            function.as_deref(),
            Some("page_fault::main" | "traplab_guest_main")
        ),
        "{function:?}"
    );
    let flow = flow_after(&run.events, index);
    let [_, decide, inject, resume] = flow else {
        panic!("exit, decide, inject, resume: {flow:#?}")
    };
    let Body::Decide(decide) = &decide.body else {
        panic!("{decide:?}")
    };
    assert_eq!(decide.action, Action::Reflect);
    assert!(
        decide.at.starts_with("hv/src/exit/exception.rs:"),
        "{}",
        decide.at
    );
    let Body::Inject(inject) = &inject.body else {
        panic!("{inject:?}")
    };
    assert_eq!(
        (inject.vector, inject.kind, inject.error_code),
        (14, EventType::Exception, Some(2))
    );
    assert_eq!(inject.cr2, Some(0x4000_0000));
    assert_eq!(inject.handler, Some(handler));
    assert!(!inject.synthetic);
    let Body::Resume(resume) = &resume.body else {
        panic!("{resume:?}")
    };
    assert_eq!(
        resume.rip, handler,
        "the guest continues in its #PF handler"
    );

    // The retried access succeeds: no second #PF, and the guest says so and exits 0.
    let faults = run
        .events
        .iter()
        .filter(|event| matches!(&event.body, Body::Exit(exit) if exit.exitcode == 0x4e))
        .count();
    assert_eq!(faults, 1);
    assert!(
        console(&run.events, 1)
            .iter()
            .any(|line| line == "the write was retried and worked: read back 42")
    );
    assert_eq!(ending(&run.events, 1).1, Some(0));
}

#[test]
fn invalid_opcode_is_reflected_and_skipped() {
    let run = run(&["invalid-opcode"]);
    let symbols = symbols("invalid-opcode");
    let (index, exit) = exit_with(&run.events, 0, 0x46);
    assert_eq!(&exit.insn.as_slice()[..2], [0x0f, 0x0b], "ud2");
    let flow = flow_after(&run.events, index);
    let Body::Inject(inject) = &flow[2].body else {
        panic!("{flow:#?}")
    };
    assert_eq!(
        (inject.vector, inject.error_code),
        (6, None),
        "#UD has no error code"
    );
    assert_eq!(
        inject.handler,
        symbols.resolve("traplab_guests::traps::exception_entries+0x60")
    );
    assert_eq!(
        console(&run.events, 1),
        [
            "executing ud2",
            &format!("#UD at {:#x}: skipping the 2-byte ud2", exit.rip),
            "back after ud2: the handler skipped it"
        ]
    );
    assert_eq!(ending(&run.events, 1).1, Some(0));
}

#[test]
fn cpuid_is_emulated_with_the_hypervisor_bit_and_signature() {
    let run = run(&["cpuid"]);
    let (index, exit) = exit_with(&run.events, 0, 0x72);
    assert_eq!(exit.regs.rax, 1);
    let flow = flow_after(&run.events, index);
    let Body::Emulate(emulate) = &flow[2].body else {
        panic!("{flow:#?}")
    };
    let rcx = emulate
        .changes
        .iter()
        .find(|change| change.name == "rcx")
        .expect("ECX changed");
    assert_ne!(rcx.new & (1 << 31), 0, "hypervisor present");
    let rip = emulate
        .changes
        .iter()
        .find(|change| change.name == "rip")
        .expect("RIP moved");
    assert_eq!(rip.new, exit.rip + 2, "CPUID is two bytes");
    let Body::Resume(resume) = &flow[3].body else {
        panic!("{flow:#?}")
    };
    assert_eq!(resume.rip, exit.rip + 2);
    assert_eq!(resume.regs.rcx, rcx.new);
    assert!(console(&run.events, 1).iter().any(
        |line| line == "CPUID.0x40000000: signature \"TrapLabSVMhv\", highest leaf 0x40000010"
    ));
    assert_eq!(ending(&run.events, 1).1, Some(0));
}

#[test]
fn hypercalls_write_the_console_refuse_bad_pointers_and_exit() {
    let run = run(&["hypercall"]);
    let (first, _) = exit_with(&run.events, 0, 0x81);
    let flow = flow_after(&run.events, first);
    assert!(
        matches!(&flow[2].body, Body::Console(console) if console.text == "Hello through the console_write hypercall")
    );
    let (bad, exit) = find(&run.events, first + 1, |event| match &event.body {
        Body::Exit(exit) if exit.exitcode == 0x81 && exit.regs.rdi == 0xdead_0000_0000 => {
            Some(exit)
        }
        _ => None,
    });
    assert_eq!(&exit.insn.as_slice()[..3], [0x0f, 0x01, 0xd9], "vmmcall");
    let flow = flow_after(&run.events, bad);
    let Body::Emulate(emulate) = &flow[2].body else {
        panic!("{flow:#?}")
    };
    let rax = emulate
        .changes
        .iter()
        .find(|change| change.name == "rax")
        .expect("RAX has the result");
    assert_eq!(rax.new as i64, -14, "EFAULT");
    assert_eq!(
        ending(&run.events, 1),
        (DomainState::Exited, Some(0), "exit hypercall".into())
    );
}

#[test]
fn an_unknown_hypercall_gets_enosys_and_the_guest_goes_on() {
    let run = run(&["bad-hypercall"]);
    let (index, exit) = exit_with(&run.events, 0, 0x81);
    assert_eq!(exit.regs.rax, 0x1234);
    let flow = flow_after(&run.events, index);
    let Body::Emulate(emulate) = &flow[2].body else {
        panic!("{flow:#?}")
    };
    assert_eq!(
        emulate
            .changes
            .iter()
            .find(|change| change.name == "rax")
            .map(|change| change.new as i64),
        Some(-38)
    );
    assert_eq!(console(&run.events, 1), ["hypercall 0x1234 returned -38"]);
    assert_eq!(ending(&run.events, 1).1, Some(0));
}

#[test]
fn vmrun_in_a_guest_gets_a_synthetic_ud() {
    let run = run(&["bad-vmrun"]);
    let (index, exit) = exit_with(&run.events, 0, 0x80);
    assert_eq!(exit.reason, "VMRUN");
    let flow = flow_after(&run.events, index);
    assert!(
        matches!(&flow[1].body, Body::Decide(decide) if decide.action == Action::Reflect && decide.at.starts_with("hv/src/exit/svm_instruction.rs:"))
    );
    let inject = flow.iter().find_map(|event| match &event.body {
        Body::Inject(inject) => Some(inject),
        _ => None,
    });
    let inject = inject.expect("an injected #UD");
    assert_eq!((inject.vector, inject.synthetic), (6, true));
    assert_eq!(
        ending(&run.events, 1).1,
        Some(0),
        "the guest's #UD handler ran"
    );
}

/// The `inject` event of the flow after the exit at `index`.
fn injected_after(events: &[Event], index: usize) -> &traplab_abi::event::Inject {
    flow_after(events, index)
        .iter()
        .find_map(|event| match &event.body {
            Body::Inject(inject) => Some(inject),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no inject after exit {index}"))
}

#[test]
fn hostile_instructions_get_the_exceptions_a_cpu_raises_and_the_guest_lives() {
    // Issue 16: `lock int 0x52` exits as SWINT under TCG, where a CPU raises #UD; INSB into
    // an unmapped page must raise #PF, as the CPU would had the hypervisor not done the INS.
    let run = run(&["bad-hostile"]);
    let (index, exit) = exit_with(&run.events, 0, 0x75);
    assert_eq!(exit.insn.as_slice()[..3], [0xf0, 0xcd, 0x52]);
    let flow = flow_after(&run.events, index);
    assert!(
        matches!(&flow[1].body, Body::Decide(decide) if decide.action == Action::Reflect && decide.at.starts_with("hv/src/quirks.rs:")),
        "{flow:#?}"
    );
    let inject = injected_after(&run.events, index);
    assert_eq!((inject.vector, inject.synthetic), (6, true));

    // The INSB's IOIO exit (the #UD handler printed in between, one OUT a byte).
    let (index, exit) = find(&run.events, index, |event| match &event.body {
        Body::Exit(exit)
            if exit.exitcode == 0x7b && exit.insn.as_slice().first() == Some(&0x6c) =>
        {
            Some(exit)
        }
        _ => None,
    });
    assert_ne!(exit.exitinfo1 & (1 << 2), 0, "a string instruction");
    assert_eq!(exit.exitinfo1 >> 16, 0x80, "port 0x80");
    let inject = injected_after(&run.events, index);
    assert_eq!(
        (
            inject.vector,
            inject.error_code,
            inject.cr2,
            inject.synthetic
        ),
        (14, Some(0b010), Some(0x4000_0000), true)
    );
    assert_eq!(
        console(&run.events, 1).last().map(String::as_str),
        Some("lock int: #UD true; insb: #PF code 0x2 at 0x40000000")
    );
    assert_eq!(
        ending(&run.events, 1),
        (DomainState::Exited, Some(0), "exit hypercall".into())
    );
}

/// A lab with one guest keeps the shape it had before domains side by side
/// (`tracer/SCHEMA.md`): its guest is d1, one `schedule` starts it, and no trap is ever
/// switched out.
#[test]
fn a_single_guest_lab_is_started_once_and_never_switched_out() {
    use traplab_abi::event::{Schedule, ScheduleWhy};
    let run = run(&["page-fault"]);
    let switches: Vec<&Schedule> = run
        .events
        .iter()
        .filter_map(|event| match &event.body {
            Body::Schedule(schedule) => Some(schedule),
            _ => None,
        })
        .collect();
    assert!(
        matches!(
            switches.first(),
            Some(Schedule {
                from: None,
                to: Some(1),
                why: ScheduleWhy::Start,
                ..
            })
        ),
        "{switches:?}"
    );
    let first_exit = run
        .events
        .iter()
        .position(|event| matches!(event.body, Body::Exit(_)))
        .expect("an exit");
    let start = run
        .events
        .iter()
        .position(|event| matches!(event.body, Body::Schedule(_)))
        .expect("a switch");
    assert!(start < first_exit, "d1 starts before it traps");
    let mut trace = traplab_tracer::store::Trace::live("page-fault");
    for event in &run.events {
        trace.push_event(event);
    }
    assert!(
        trace
            .flows()
            .iter()
            .all(|flow| flow.dom == 1 && !flow.was_away())
    );
    assert!(trace.open_flows().is_empty(), "every trap ended");
}

#[test]
fn a_triple_fault_kills_only_its_domain() {
    // The broken guest first, then a healthy one in the same machine.
    let run = run(&["bad-triple-fault", "hello"]);
    // The broken guest is d1, the first unprivileged domain.
    let d1: Vec<Event> = run
        .events
        .iter()
        .filter(|event| event.dom == Some(1))
        .cloned()
        .collect();
    // #UD cannot be delivered (empty IDT): #GP while delivering #UD, then #GP while
    // delivering #GP (-> #DF), then #GP while delivering #DF (-> shutdown).
    let (ud, _) = exit_with(&d1, 0, 0x46);
    let (gp1, first) = exit_with(&d1, ud + 1, 0x4d);
    assert_eq!(first.exitintinfo & 0xff, 6, "interrupted delivery of #UD");
    // QEMU reports 6 * 16 + 2; the hypervisor delivers what a real CPU reports (quirks.rs):
    // the gate's index, 6, and EXT, since an exception's delivery faulted.
    assert_eq!(
        first.exitinfo1,
        6 * 16 + 2,
        "TCG: #GP error code IDT (bit 1), index 12"
    );
    let flow = flow_after(&d1, gp1);
    assert!(
        matches!(&flow[2].body, Body::Inject(inject) if inject.vector == 13 && inject.error_code == Some(6 * 8 + 3)),
        "corrected: {flow:#?}"
    );
    let (gp2, second) = exit_with(&d1, gp1 + 1, 0x4d);
    assert_eq!(second.exitintinfo & 0xff, 13, "interrupted delivery of #GP");
    let flow = flow_after(&d1, gp2);
    assert!(
        matches!(&flow[2].body, Body::Inject(inject) if inject.vector == 8),
        "#DF: {flow:#?}"
    );
    let (gp3, third) = exit_with(&d1, gp2 + 1, 0x4d);
    assert_eq!(third.exitintinfo & 0xff, 8, "interrupted delivery of #DF");
    assert!(matches!(&d1[gp3 + 1].body, Body::Decide(decide) if decide.action == Action::Kill));
    let (state, _, reason) = ending(&run.events, 1);
    assert_eq!(state, DomainState::Killed);
    assert!(reason.contains("triple fault"), "{reason}");
    // The hypervisor lives on and runs the next domain.
    assert_eq!(ending(&run.events, 2).1, Some(0));
    assert!(
        console(&run.events, 2)
            .iter()
            .any(|line| line == "Hello from a traplab guest!")
    );
}

/// Run catalogue lab `id` and grade it as `traplab check` does.
fn produces_its_expected_flow(id: &str) {
    let lab = traplab_labs::find(id)
        .expect("the catalogue parses")
        .unwrap_or_else(|| panic!("no lab {id}"));
    if lab.boots_linux() && traplab_labs::linux::fetched().is_none() {
        // As `traplab trace <lab> --yes` would: the first run fetches Debian's packages.
        traplab_labs::linux::fetch()
            .unwrap_or_else(|why| panic!("Debian's kernel and busybox: {why}"));
    }
    let machine = lab
        .machine()
        .unwrap_or_else(|why| panic!("lab {id}: {why}"));
    let run = common::run_machine(&machine);
    let symbols = lab
        .symbols()
        .unwrap_or_else(|why| panic!("lab {id}: {why}"));
    let verdict = traplab_labs::grade::grade(&lab, None, &run, &symbols);
    let problems: Vec<&str> = verdict
        .problems
        .iter()
        .map(|problem| problem.explanation())
        .collect();
    assert!(verdict.passed, "lab {id}:\n{}", problems.join("\n"));
    // The trap classes `traplab list` and the chapter's facts name are in the trace.
    for class in &lab.classes {
        assert!(
            shows_class(&run.events, class),
            "lab {id} lists the trap class {class}, which its trace never shows"
        );
    }
}

/// Does the trace show trap class `class`: an exit of that name (`CPUID`, `EXCP_PF`,
/// `CR0_SEL_WRITE`), or for an exception mnemonic (`#PF`) an exit, injection or bounce of
/// that vector, or for `NMI` an NMI injected?
fn shows_class(events: &[Event], class: &str) -> bool {
    let vector = (0..32u8).find(|&vector| traplab_abi::x86::exception(vector).mnemonic == class);
    events.iter().any(|event| match &event.body {
        Body::Exit(exit) => {
            let reason = ExitReason::decode(exit.exitcode, exit.exitinfo1, exit.exitinfo2);
            reason.name() == class
                || matches!(reason, ExitReason::Exception { vector: found, .. } if Some(found) == vector)
        }
        Body::Inject(inject) => {
            // INT3 and INTO come as software interrupts under QEMU's TCG (`exit/
            // software_interrupt.rs`), reflected as such: #BP and #OF all the same.
            (class == "NMI" && inject.kind == EventType::Nmi)
                || (matches!(inject.kind, EventType::Exception | EventType::Software)
                    && Some(inject.vector) == vector)
        }
        Body::Bounce(bounce) => Some(bounce.vector) == vector,
        _ => false,
    })
}

/// One test per catalogue lab (a failure names its lab, and the labs run in parallel), and
/// the list of them.
macro_rules! every_lab {
    ($($test:ident => $id:literal,)*) => {
        /// The labs that have a test here.
        const TESTED: &[&str] = &[$($id),*];
        mod lab {
            $(
                #[test]
                fn $test() {
                    super::produces_its_expected_flow($id);
                }
            )*
        }
    };
}

every_lab! {
    alignment_check => "alignment-check",
    bad_blkif => "bad-blkif",
    bad_sharing => "bad-sharing",
    bound_range => "bound-range",
    breakpoint => "breakpoint",
    cpuid => "cpuid",
    cr_write => "cr-write",
    debug => "debug",
    device_not_available => "device-not-available",
    divide_error => "divide-error",
    double_fault => "double-fault",
    driver_domain => "driver-domain",
    event_channel => "event-channel",
    general_protection => "general-protection",
    hello => "hello",
    hypercall => "hypercall",
    invalid_opcode => "invalid-opcode",
    invalid_tss => "invalid-tss",
    lazy_memory => "lazy-memory",
    linux_boot => "linux-boot",
    linux_boot_apic => "linux-boot-apic",
    machine_check => "machine-check",
    mmio => "mmio",
    multiboot_hello => "multiboot-hello",
    msr => "msr",
    nmi => "nmi",
    other_intercepts => "other-intercepts",
    overflow => "overflow",
    page_fault_kinds => "page-fault-kinds",
    page_fault => "page-fault",
    pt_write => "pt-write",
    pv_privop => "pv-privop",
    reflect_vs_bounce => "reflect-vs-bounce",
    segment_not_present => "segment-not-present",
    serial_echo => "serial-echo",
    shared_page => "shared-page",
    simd_exception => "simd-exception",
    stack_fault => "stack-fault",
    swap_in_dom0 => "swap-in-dom0",
    swap_in => "swap-in",
    timer_irq => "timer-irq",
    triple_fault => "triple-fault",
    x87_error => "x87-error",
}

#[test]
fn every_catalogue_lab_has_its_flow_test_here() {
    let catalogue: Vec<String> = traplab_labs::all()
        .expect("the catalogue parses")
        .into_iter()
        .map(|lab| lab.id)
        .collect();
    let missing: Vec<&String> = catalogue
        .iter()
        .filter(|id| !TESTED.contains(&id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "add these labs to `every_lab!`: {missing:?}"
    );
    assert_eq!(
        TESTED.len(),
        catalogue.len(),
        "a listed lab is not in the catalogue"
    );
}

#[test]
fn a_loss_is_reported_as_a_gap_and_a_lost_event() {
    // The smallest ring (16 KiB), read every 250 ms: it fills between reads however slowly a
    // loaded machine runs the guest (it holds about 170 traced CPUIDs, one event a ring
    // record; the guest makes 20,000), and the hypervisor, in lossy mode, drops what does
    // not fit and says so once there is room again.
    let mut machine = machine_for(&["cpuid-loop"]);
    machine.trace = TraceMode::Lossy;
    machine.ring_kib = Some(16);
    let options = Options {
        timeout: Some(Duration::from_secs(120)),
        read_interval: Some(Duration::from_millis(250)),
        ..Options::default()
    };
    let run = session::collect(&machine, options).expect("QEMU starts");
    assert_eq!(run.finish.hv_status, Some(HvStatus::Done));
    let lost: Vec<(u64, u64)> = run
        .events
        .iter()
        .filter_map(|event| match &event.body {
            Body::Lost(lost) => Some((event.seq, lost.count)),
            _ => None,
        })
        .collect();
    assert!(!lost.is_empty(), "a lost event");
    let gaps: Vec<&StreamFault> = run
        .faults
        .iter()
        .filter(|fault| matches!(fault, StreamFault::Gap { .. }))
        .collect();
    assert!(!gaps.is_empty(), "a gap in seq");
    // The first lost event counts exactly the seq numbers skipped before it.
    let (seq, count) = lost[0];
    let StreamFault::Gap { expected, found } = gaps[0] else {
        unreachable!()
    };
    assert_eq!(*found, seq, "the lost event closes the gap");
    assert_eq!(count, found - expected, "and counts the missing events");
    assert!(run.faults.contains(&StreamFault::Lost { count, seq }));
    // The end event may itself have been dropped (the ring can be full at power-off): then
    // the stream says it is truncated. Either way nothing is hidden.
    let ended = matches!(run.events.last().map(|e| &e.body), Some(Body::End(_)));
    assert_eq!(ended, !run.faults.contains(&StreamFault::Truncated));
}

#[test]
fn a_guest_cannot_reach_memory_outside_its_own() {
    let run = run(&["bad-physical"]);
    // The read: a nested page fault on the final guest-physical address, answered as an
    // empty bus answers (all ones), never with memory the guest was not given.
    let (index, exit) = exit_with(&run.events, 0, 0x400);
    assert_eq!(exit.reason, "NPF");
    assert_eq!(
        exit.exitinfo2, 0x2000_0000,
        "EXITINFO2: the guest-physical address"
    );
    assert_ne!(
        exit.exitinfo1 & (1 << 32),
        0,
        "the fault is on the final guest-physical address"
    );
    assert!(
        matches!(&run.events[index + 1].body, Body::Decide(decide) if decide.action == Action::Emulate && decide.why.contains("not RAM but no device"))
    );
    assert!(
        console(&run.events, 1)
            .contains(&"read 0xffffffffffffffff: all ones, nothing is there".to_string())
    );
    // The jump: an instruction fetched there reads the empty bus's all ones, `ff ff`,
    // which the CPU cannot decode: #UD, raised by the hypervisor, taken by the guest's
    // handler, which ends it.
    let (index, fetch) = exit_with(&run.events, index + 1, 0x400);
    assert_ne!(fetch.exitinfo1 & (1 << 4), 0, "an instruction fetch");
    assert!(
        matches!(&run.events[index + 1].body, Body::Decide(decide) if decide.action == Action::Reflect && decide.why.contains("`ff ff`"))
    );
    assert_eq!(injected_after(&run.events, index).vector, 6);
    assert!(
        console(&run.events, 1)
            .contains(&"unhandled #UD (invalid opcode) at 0x50000000, error code 0x0".to_string())
    );
    let (state, status, _) = ending(&run.events, 1);
    assert_eq!((state, status), (DomainState::Exited, Some(134)));
    assert!(
        !console(&run.events, 1)
            .iter()
            .any(|line| line.contains("let us out"))
    );
}
