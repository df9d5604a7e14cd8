//! `traplab stats FILE|<lab>`: the exits per reason and the hypervisor's time for them, as
//! `perf kvm stat report` shows them.

use super::load;
use crate::cli::StatsArgs;
use std::process::ExitCode;
use traplab_tracer::stats;

pub fn run(args: &StatsArgs) -> Result<ExitCode, String> {
    let (trace, code) = load::file_or_lab(&args.what, args.yes)?;
    let flows: Vec<_> = match args.dom {
        Some(dom) => trace
            .flows()
            .iter()
            .filter(|flow| flow.dom == dom)
            .cloned()
            .collect(),
        None => trace.flows().to_vec(),
    };
    let stats = stats::compute(&flows, trace.tsc_hz());
    if args.json {
        let rows: Vec<serde_json::Value> = stats
            .rows
            .iter()
            .map(|row| {
                serde_json::json!({
                    "reason": row.reason, "class": row.class, "count": row.count, "share": row.share,
                    "time_share": row.time_share, "min_cycles": row.min, "avg_cycles": row.avg,
                    "p50_cycles": row.p50, "p95_cycles": row.p95, "max_cycles": row.max,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({"trace": trace.name, "exits": stats.exits, "tsc_hz": stats.tsc_hz, "reasons": rows})
        );
    } else {
        println!(
            "Exits of {}{}, hypervisor time per exit (exit to resume):\n",
            trace.name,
            args.dom
                .map(|dom| format!(", domain {dom}"))
                .unwrap_or_default()
        );
        print!("{}", stats.render());
    }
    Ok(ExitCode::from(code))
}
