//! A trace as Chrome trace-event JSON, the format <https://ui.perfetto.dev> (and
//! `chrome://tracing`) opens: one track per domain, one slice per trap flow, with its
//! steps (decide, emulate, inject, …) as slices nested inside it, the guest's console
//! lines as instant events, and an arrow from each delivered event to its handler's return.
//!
//! Format: "Trace Event Format" (Google, 2016): `ph` `X` is a complete slice (`ts` and
//! `dur` in µs), `i` an instant, `M` metadata (track names), `s`/`f` the two ends of an arrow.

use crate::flows::{FlowEnd, Kind};
use crate::store::{NO_DOM, Trace};
use serde_json::{Value, json};
use std::io::{self, Write};
use traplab_abi::event::Body;

/// The one process all tracks belong to.
const PID: u32 = 1;
/// The hypervisor's own track (boot, end, lost events).
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
/// the process name says so).
pub fn perfetto(trace: &Trace, out: &mut impl Write) -> io::Result<()> {
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
            json!({"ph": "M", "name": "thread_name", "pid": PID, "tid": tid(*dom), "args": {"name": format!("dom{dom} {name}")}}),
        )?;
        emit(
            out,
            json!({"ph": "M", "name": "thread_sort_index", "pid": PID, "tid": tid(*dom), "args": {"sort_index": tid(*dom)}}),
        )?;
    }

    // Events outside any flow: console lines and the hypervisor's own events, as instants.
    let flows = trace.flows();
    let mut next_flow = 0;
    let mut index = 0;
    while index < trace.len() {
        if let Some(flow) = flows.get(next_flow)
            && flow.first as usize == index
        {
            emit_flow(trace, next_flow, &micros, &mut emit, out)?;
            index = flow.first as usize + flow.len as usize;
            next_flow += 1;
            continue;
        }
        let Some(entry) = trace.index_of(index) else {
            break;
        };
        let args = match trace.event(index) {
            Ok(event) => crate::text::detail(&event),
            Err(error) => error.to_string(),
        };
        let name = match entry.kind {
            Kind::Console => "console".to_string(),
            kind => kind.name().to_string(),
        };
        emit(
            out,
            json!({"ph": "i", "s": "t", "name": name, "ts": micros(entry.tsc), "pid": PID, "tid": tid(entry.dom),
                         "args": {"seq": entry.seq, "detail": args}}),
        )?;
        index += 1;
    }
    out.write_all(b"\n]}\n")
}

type Emit<'a> = dyn FnMut(&mut dyn Write, Value) -> io::Result<()> + 'a;

fn emit_flow(
    trace: &Trace,
    number: usize,
    micros: &dyn Fn(u64) -> f64,
    emit: &mut Emit,
    out: &mut dyn Write,
) -> io::Result<()> {
    let flow = &trace.flows()[number];
    let first = flow.first as usize;
    let last = flow.last() as usize;
    let end_tsc = trace.index_of(last).map_or(flow.tsc, |entry| entry.tsc);
    let track = tid(flow.dom);
    let mut args = serde_json::Map::new();
    args.insert("flow".into(), number.into());
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
    let mut steps = Vec::new();
    for index in first..=last {
        let Some(entry) = trace.index_of(index) else {
            continue;
        };
        match trace.event(index) {
            Ok(event) => {
                if let Body::Decide(decide) = &event.body {
                    args.insert("why".into(), decide.why.to_string().into());
                    args.insert("at".into(), decide.at.to_string().into());
                }
                if index == first {
                    args.insert("seq".into(), event.seq.into());
                    args.insert("exit".into(), crate::text::exit_detail_of(&event).into());
                }
                steps.push((
                    entry.tsc,
                    entry.dom,
                    event.body.kind(),
                    crate::text::detail(&event),
                    event.seq,
                ));
            }
            Err(error) => steps.push((
                entry.tsc,
                entry.dom,
                entry.kind.name(),
                error.to_string(),
                entry.seq,
            )),
        }
    }
    let name = format!("{} {}", flow.class(), flow.action_text());
    emit(
        out,
        json!({"ph": "X", "name": name, "cat": "flow", "ts": micros(flow.tsc), "dur": micros(end_tsc) - micros(flow.tsc),
                     "pid": PID, "tid": track, "args": Value::Object(args)}),
    )?;
    // Each step lasts until the next one: where the hypervisor's time went inside the trap.
    for (position, (tsc, dom, kind, detail, seq)) in steps.iter().enumerate() {
        let until = steps.get(position + 1).map_or(end_tsc, |next| next.0);
        emit(
            out,
            json!({"ph": "X", "name": kind, "cat": "step", "ts": micros(*tsc), "dur": micros(until) - micros(*tsc),
                         "pid": PID, "tid": tid(*dom), "args": {"seq": seq, "detail": detail}}),
        )?;
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
