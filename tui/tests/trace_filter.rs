//! `traplab trace --only CLASS` and `--hide CLASS`, run for real: what is printed is
//! filtered by the class of the trap flow each event is in; what is recorded is not.

use std::process::{Command, Output, Stdio};
use traplab_abi::event::Body;
use traplab_tracer::json;

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_traplab"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("traplab runs")
}

/// The events a `trace --json` run printed, once it ended with status 0.
fn events_printed(output: Output) -> Vec<traplab_abi::event::Event> {
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("UTF-8")
        .lines()
        .map(|line| json::from_line(line).expect("every line is an event"))
        .collect()
}

#[test]
fn only_prints_the_flows_of_a_class_and_the_recording_keeps_every_event() {
    let record = std::env::temp_dir().join(format!(
        "traplab-trace-filter-{}-pf.jsonl",
        std::process::id()
    ));
    let output = run(&[
        "trace",
        "page-fault",
        "--json",
        "--only",
        "EXCP_PF",
        "--record",
        record.to_str().unwrap(),
    ]);
    let printed = events_printed(output);
    let exits: Vec<&str> = printed
        .iter()
        .filter_map(|event| match &event.body {
            Body::Exit(exit) => Some(&*exit.reason),
            _ => None,
        })
        .collect();
    assert_eq!(exits, ["EXCP_PF"], "the one #PF, no console OUT");
    assert!(
        printed
            .iter()
            .any(|event| matches!(&event.body, Body::Inject(inject) if inject.vector == 14))
    );
    // What frames the run is always there: the boot, the guest's lines, the end.
    assert!(matches!(
        printed.first().map(|e| &e.body),
        Some(Body::Boot(_))
    ));
    assert!(matches!(
        printed.last().map(|e| &e.body),
        Some(Body::End(_))
    ));
    assert!(
        printed
            .iter()
            .any(|event| matches!(&event.body, Body::Console(line)
        if line.text.contains("read back 42")))
    );
    // The recording has every event, seq without a gap.
    let recorded = traplab_tracer::recording::read(&record).expect("the recording reads");
    assert!(recorded.events.len() > printed.len() + 100);
    for (seq, event) in recorded.events.iter().enumerate() {
        assert_eq!(event.seq, seq as u64);
    }
    std::fs::remove_file(record).unwrap();

    // --hide, in the TUI's words: the text output has no IOIO exit left.
    let output = run(&["trace", "page-fault", "--hide", "ioio"]);
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains("exit     IOIO"), "{stdout}");
    assert!(stdout.contains("exit     EXCP_PF"), "{stdout}");
    assert!(stdout.contains("console  | the write was retried and worked"));
}

#[test]
fn an_unknown_class_is_a_usage_error() {
    let output = run(&["trace", "page-fault", "--only", "IOOI"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no trap class “IOOI”"), "{stderr}");
}

#[test]
fn an_exception_a_flow_delivered_names_the_flow() {
    // The double-fault lab has no #DF exit: its second #PF exit delivers #DF (the CPU's
    // rule for a #PF met while delivering a #PF). `--only '#DF'` prints that flow.
    let output = run(&["trace", "double-fault", "--json", "--only", "#DF"]);
    let printed = events_printed(output);
    let flow: Vec<&str> = printed
        .iter()
        .filter(|event| {
            !matches!(
                event.body,
                Body::Boot(_)
                    | Body::Domain(_)
                    | Body::Schedule(_)
                    | Body::Console(_)
                    | Body::End(_)
            )
        })
        .map(|event| event.body.kind())
        .collect();
    assert_eq!(flow, ["exit", "decide", "inject", "resume"], "one flow");
    assert!(
        printed
            .iter()
            .any(|event| matches!(&event.body, Body::Inject(inject) if inject.vector == 8)),
        "the #DF it delivered"
    );
    // The order is the trace's.
    assert!(printed.windows(2).all(|pair| pair[0].seq < pair[1].seq));
}
