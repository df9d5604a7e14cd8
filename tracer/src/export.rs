//! A trace as Chrome trace-event JSON, the format <https://ui.perfetto.dev> (and
//! `chrome://tracing`) opens: one track per domain and one for the hypervisor, one slice per
//! trap flow (two when its domain was switched out in the middle of it), with its steps
//! (decide, emulate, inject, …) as slices nested inside, the guests' console lines and the
//! hypervisor's `schedule` switches as instant events, an arrow from each delivered event
//! to its handler's return, and an arrow from each `notify` to the upcall it caused in the
//! other domain's track.
//!
//! Format: "Trace Event Format" (Google, 2016): `ph` `X` is a complete slice (`ts` and
//! `dur` in µs), `i` an instant, `M` metadata (track names), `s`/`f` the two ends of an arrow.
//!
//! A slice's `dur` is never negative. The hypervisor's TSC only goes up, but a recording
//! may say otherwise (edited by hand, or made on a machine whose TSC was not steady): a
//! slice whose end has a smaller TSC than its start is shown lasting 0, its `args` say by
//! how many ticks the TSC went back (`tsc_went_back`), and [`perfetto`] counts such slices
//! (`traplab export` says how many on stderr).

use crate::flows::{FlowEnd, Kind, NO_EVENT};
use crate::store::{NO_DOM, Trace};
use serde_json::{Value, json};
use std::io::{self, Write};
use traplab_abi::event::{Body, domain_label};

/// The one process all tracks belong to.
const PID: u32 = 1;
/// The hypervisor's own track (boot, end, lost and schedule events).
const HV_TID: u32 = 0;

fn tid(dom: u16) -> u32 {
    if dom == NO_DOM {
        HV_TID
    } else {
        dom as u32 + 1
    }
}

/// Write `trace` as Chrome trace-event JSON. Times are µs from the first event, from the
/// TSC and the rate in the `boot` event (without one, 1 µs stands for 1000 TSC ticks, and
/// the process name says so). Returns how many slices ended at a TSC before their start's
/// (shown lasting 0: see the module's documentation).
pub fn perfetto(trace: &Trace, out: &mut impl Write) -> io::Result<usize> {
    let start = trace.start_tsc();
    let (ticks_per_us, unit_note) = match trace.tsc_hz() {
        Some(hz) if hz > 0 => (hz as f64 / 1e6, ""),
        _ => (1000.0, " (no TSC rate: 1 µs shown = 1000 TSC ticks)"),
    };
    let micros = |tsc: u64| tsc.saturating_sub(start) as f64 / ticks_per_us;
    let mut first = true;
    let mut emit = |out: &mut dyn Write, value: Value| -> io::Result<()> {
        out.write_all(if first { b"\n" } else { b",\n" })?;
        first = false;
        serde_json::to_writer(&mut *out, &value).map_err(io::Error::other)
    };
    out.write_all(br#"{"displayTimeUnit":"ns","traceEvents":["#)?;
    emit(
        out,
        json!({"ph": "M", "name": "process_name", "pid": PID, "args": {"name": format!("traplab: {}{unit_note}", trace.name)}}),
    )?;
    emit(
        out,
        json!({"ph": "M", "name": "thread_name", "pid": PID, "tid": HV_TID, "args": {"name": "hypervisor"}}),
    )?;
    for (dom, name) in trace.domains() {
        emit(
            out,
            json!({"ph": "M", "name": "thread_name", "pid": PID, "tid": tid(*dom), "args": {"name": format!("{} {name}", domain_label(*dom))}}),
        )?;
        emit(
            out,
            json!({"ph": "M", "name": "thread_sort_index", "pid": PID, "tid": tid(*dom), "args": {"sort_index": tid(*dom)}}),
        )?;
    }

    let mut backwards = 0;
    for number in 0..trace.flows().len() {
        backwards += emit_flow(trace, number, &micros, &mut emit, out)?;
    }
    // Events outside any flow (console lines, the hypervisor's own events) and every switch
    // of the hypervisor's CPU, as instants on their track.
    for index in 0..trace.len() {
        let Some(entry) = trace.index_of(index) else {
            break;
        };
        if entry.kind != Kind::Schedule && trace.flow_of(index).is_some() {
            continue;
        }
        let args = match trace.event(index) {
            Ok(event) => crate::text::detail(&event),
            Err(error) => error.to_string(),
        };
        emit(
            out,
            json!({"ph": "i", "s": "t", "name": entry.kind.name(), "ts": micros(entry.tsc), "pid": PID, "tid": tid(entry.dom),
                         "args": {"seq": entry.seq, "detail": args}}),
        )?;
    }
    out.write_all(b"\n]}\n")?;
    Ok(backwards)
}

/// A complete slice's `dur` in µs from TSC `begin` to `end`, never negative; and by how
/// many ticks the TSC went back, when `end` is before `begin` (then the slice lasts 0).
fn duration(micros: &dyn Fn(u64) -> f64, begin: u64, end: u64) -> (f64, Option<u64>) {
    match end.checked_sub(begin) {
        // Both through `micros`, as the slice's `ts` is, so that a slice ends exactly where
        // the next step's begins.
        Some(_) => ((micros(end) - micros(begin)).max(0.0), None),
        None => (0.0, Some(begin - end)),
    }
}

type Emit<'a> = dyn FnMut(&mut dyn Write, Value) -> io::Result<()> + 'a;

/// One step of a flow: (TSC, domain, kind, detail, seq).
type StepRow = (u64, u16, &'static str, String, u64);

/// Write flow `number`'s slices and arrows; how many slices ended before they began
/// ([`duration`]).
fn emit_flow(
    trace: &Trace,
    number: usize,
    micros: &dyn Fn(u64) -> f64,
    emit: &mut Emit,
    out: &mut dyn Write,
) -> io::Result<usize> {
    let mut backwards = 0;
    let flow = &trace.flows()[number];
    let tsc_of = |index: u32| {
        trace
            .index_of(index as usize)
            .map_or(flow.tsc, |entry| entry.tsc)
    };
    let track = tid(flow.dom);
    let mut args = serde_json::Map::new();
    args.insert("flow".into(), (number + 1).into());
    args.insert("rip".into(), format!("{:#x}", flow.rip).into());
    args.insert("action".into(), flow.action_text().into());
    if let Some(cycles) = flow.cycles() {
        args.insert("cycles".into(), cycles.into());
    }
    if flow.end != FlowEnd::Resumed {
        args.insert(
            "end".into(),
            format!("{:?}", flow.end).to_lowercase().into(),
        );
    }
    // The flow's own events in its parts: one before its domain was switched out, one after.
    let mut parts: Vec<Vec<StepRow>> = vec![Vec::new()];
    let mut notify_tsc = None;
    for index in flow.events() {
        if flow.back != NO_EVENT && index == flow.back && !parts[0].is_empty() {
            parts.push(Vec::new());
        }
        let Some(entry) = trace.index_of(index as usize) else {
            continue;
        };
        // A switch is the hypervisor's: its track shows it once, as an instant.
        let row = match trace.event(index as usize) {
            Ok(event) => {
                match &event.body {
                    Body::Decide(decide) => {
                        args.insert("why".into(), decide.why.to_string().into());
                        args.insert("at".into(), decide.at.to_string().into());
                    }
                    Body::Notify(_) => notify_tsc = Some(entry.tsc),
                    _ => {}
                }
                if index == flow.first {
                    args.insert("seq".into(), event.seq.into());
                    args.insert("exit".into(), crate::text::exit_detail_of(&event).into());
                }
                (
                    entry.tsc,
                    entry.dom,
                    event.body.kind(),
                    crate::text::detail(&event),
                    event.seq,
                )
            }
            Err(error) => (
                entry.tsc,
                entry.dom,
                entry.kind.name(),
                error.to_string(),
                entry.seq,
            ),
        };
        if let Some(part) = parts.last_mut() {
            part.push(row);
        }
    }
    let name = format!("{} {}", flow.class(), flow.action_text());
    let count = parts.len();
    for (position, steps) in parts.iter().enumerate() {
        let (Some(begin), Some(end)) = (steps.first(), steps.last()) else {
            continue;
        };
        let mut part_args = args.clone();
        let (dur, went_back) = duration(micros, begin.0, end.0);
        if let Some(ticks) = went_back {
            part_args.insert("tsc_went_back".into(), ticks.into());
            backwards += 1;
        }
        if count > 1 {
            part_args.insert(
                "part".into(),
                format!(
                    "{} of {count}: its domain was switched out between",
                    position + 1
                )
                .into(),
            );
        }
        emit(
            out,
            json!({"ph": "X", "name": name, "cat": "flow", "ts": micros(begin.0), "dur": dur,
                         "pid": PID, "tid": track, "args": Value::Object(part_args)}),
        )?;
        // Each step lasts until the next one: where the hypervisor's time went inside the trap.
        for (step, (tsc, dom, kind, detail, seq)) in steps.iter().enumerate() {
            if *dom == NO_DOM {
                continue;
            }
            let until = steps.get(step + 1).map_or(end.0, |next| next.0);
            let mut step_args = json!({"seq": seq, "detail": detail});
            let (dur, went_back) = duration(micros, *tsc, until);
            if let Some(ticks) = went_back {
                step_args["tsc_went_back"] = ticks.into();
                backwards += 1;
            }
            emit(
                out,
                json!({"ph": "X", "name": kind, "cat": "step", "ts": micros(*tsc), "dur": dur,
                             "pid": PID, "tid": tid(*dom), "args": step_args}),
            )?;
        }
    }
    // The arrow from a delivery to its handler's return.
    if let Some(returning) = trace.flows().get(flow.returned_by as usize) {
        emit(
            out,
            json!({"ph": "s", "name": "handler", "cat": "delivery", "id": number, "ts": micros(flow.tsc), "pid": PID, "tid": track}),
        )?;
        emit(
            out,
            json!({"ph": "f", "bp": "e", "name": "handler", "cat": "delivery", "id": number, "ts": micros(returning.tsc),
                         "pid": PID, "tid": tid(returning.dom)}),
        )?;
    }
    // The arrow from a notification to the upcall it caused, across the domains' tracks.
    if let Some(woken) = trace.flows().get(flow.woke as usize) {
        // The delivery comes once the woken domain runs again: in a flow it woke from a
        // block, from the `schedule` that switched it back in (its first part is earlier
        // than the notification). Without one (SCHEDOP_poll wakes without an upcall), the
        // arrow ends where the domain runs again.
        let runs_again = match woken.was_away() && woken.back != NO_EVENT {
            true => woken.back,
            false => woken.first,
        };
        let upcall = woken
            .events()
            .filter(|&index| index >= runs_again)
            .find(|&index| {
                trace
                    .index_of(index as usize)
                    .is_some_and(|entry| matches!(entry.kind, Kind::Inject | Kind::Bounce))
            })
            .map_or_else(|| tsc_of(runs_again), tsc_of);
        let id = trace.flows().len() + number;
        emit(
            out,
            json!({"ph": "s", "name": "upcall", "cat": "wake", "id": id, "ts": micros(notify_tsc.unwrap_or(flow.tsc)), "pid": PID, "tid": track}),
        )?;
        emit(
            out,
            json!({"ph": "f", "bp": "e", "name": "upcall", "cat": "wake", "id": id, "ts": micros(upcall),
                         "pid": PID, "tid": tid(woken.dom)}),
        )?;
    }
    Ok(backwards)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export(trace: &Trace) -> Vec<Value> {
        let mut out = Vec::new();
        perfetto(trace, &mut out).unwrap();
        let value: Value = serde_json::from_slice(&out).unwrap();
        value["traceEvents"].as_array().unwrap().clone()
    }

    #[test]
    fn domains_side_by_side_have_their_tracks_their_switches_and_a_wake_arrow() {
        let mut trace = Trace::live("ping");
        for event in crate::sample::event_channel_ping() {
            trace.push_event(&event);
        }
        let events = export(&trace);
        let tracks: Vec<&str> = events
            .iter()
            .filter(|e| e["name"] == "thread_name")
            .filter_map(|e| e["args"]["name"].as_str())
            .collect();
        assert_eq!(tracks, ["hypervisor", "d1 ping", "d2 pong"]);
        // Every switch is an instant on the hypervisor's track, once.
        let switches = events
            .iter()
            .filter(|e| e["name"] == "schedule")
            .inspect(|e| assert_eq!((&e["ph"], &e["tid"]), (&json!("i"), &json!(HV_TID))))
            .count();
        assert_eq!(switches, 5);
        // d1's send is two slices: before d2 ran, and after.
        let send: Vec<&Value> = events
            .iter()
            .filter(|e| e["ph"] == "X" && e["name"] == "VMMCALL forward")
            .collect();
        assert_eq!(send.len(), 2);
        assert!(send.iter().all(|slice| slice["tid"] == 2));
        assert!(
            send[0]["args"]["part"]
                .as_str()
                .unwrap()
                .starts_with("1 of 2")
        );
        // The arrow goes from d1's notify to d2's upcall, across the tracks.
        let start = events
            .iter()
            .find(|e| e["ph"] == "s" && e["cat"] == "wake")
            .expect("a wake arrow");
        let finish = events
            .iter()
            .find(|e| e["ph"] == "f" && e["cat"] == "wake" && e["id"] == start["id"])
            .expect("its end");
        assert_eq!((&start["tid"], &finish["tid"]), (&json!(2), &json!(3)));
        let notify = events
            .iter()
            .find(|e| e["cat"] == "step" && e["name"] == "notify")
            .expect("the notify step");
        let upcall = events
            .iter()
            .find(|e| e["cat"] == "step" && e["name"] == "inject")
            .expect("the upcall step");
        assert_eq!(
            (&start["ts"], &finish["ts"]),
            (&notify["ts"], &upcall["ts"])
        );
        // A step never lasts across the time its domain was away.
        assert!(
            events
                .iter()
                .filter(|e| e["cat"] == "step")
                .all(|e| e["dur"].as_f64().unwrap() <= 10.0 + 1e-9),
            "20,000 ticks at 2 GHz are 10 µs"
        );
    }

    #[test]
    fn a_tsc_that_goes_back_gives_a_slice_of_no_time_never_a_negative_one() {
        // The reflected #BP's resume (seq 5), recorded at a TSC 150 ticks before its exit's
        // (seq 2, TSC 200).
        let mut events = crate::sample::breakpoint_then_out();
        assert!(
            matches!(events[2].body, Body::Exit(_)) && matches!(events[5].body, Body::Resume(_))
        );
        events[5].tsc = events[2].tsc - 150;
        let mut trace = Trace::live("backwards");
        for event in &events {
            trace.push_event(event);
        }
        let mut out = Vec::new();
        let backwards = perfetto(&trace, &mut out).unwrap();
        let value: Value = serde_json::from_slice(&out).unwrap();
        let slices: Vec<&Value> = value["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["ph"] == "X")
            .collect();
        assert!(
            slices
                .iter()
                .all(|e| e["dur"].as_f64().is_some_and(|dur| dur >= 0.0)),
            "no negative duration: {slices:?}"
        );
        let flow = slices
            .iter()
            .find(|e| e["cat"] == "flow")
            .expect("the #BP flow");
        assert_eq!(flow["dur"], 0.0);
        assert_eq!(flow["args"]["tsc_went_back"], 150);
        assert!(backwards >= 2, "the flow and its last step: {backwards}");
        assert_eq!(
            backwards,
            slices
                .iter()
                .filter(|e| !e["args"]["tsc_went_back"].is_null())
                .count(),
            "every slice that went back is counted"
        );
    }

    #[test]
    fn an_empty_trace_is_still_valid_json() {
        let trace = Trace::live("empty");
        let mut out = Vec::new();
        perfetto(&trace, &mut out).unwrap();
        let value: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            value["traceEvents"][0]["args"]["name"],
            "traplab: empty (no TSC rate: 1 µs shown = 1000 TSC ticks)"
        );
    }
}
