//! `traplab stats FILE|<lab>` (or `--guest NAME`, `--kernel FILE`): the exits per reason and the hypervisor's time for them, as
//! `perf kvm stat report` shows them: for all domains, then one table per domain when
//! there are several (`--domain N` keeps one).

use super::load;
use crate::cli::StatsArgs;
use std::process::ExitCode;
use traplab_abi::event::domain_label;
use traplab_tracer::stats::{self, Stats};
use traplab_tracer::store::Trace;

pub fn run(args: &StatsArgs) -> Result<ExitCode, super::Failure> {
    let (trace, code) = match &args.what {
        Some(what) => load::file_or_lab(what, args.yes)?,
        None => {
            super::bring_up_to_date(super::OlderBuild::Run)?;
            let (name, machine) = super::machine(&None, &args.guest, &args.kernel, &[], args.yes)?;
            load::run_now(&name, &machine, args.yes)?
        }
    };
    let flows = trace.flows();
    if let Some(dom) = args.domain {
        load::has_domain(&trace, dom, "--domain")?;
    }
    let stats = match args.domain {
        Some(dom) => stats::per_domain(flows, trace.tsc_hz())
            .into_iter()
            .find(|(found, _)| *found == dom)
            .map_or_else(|| stats::compute(&[], trace.tsc_hz()), |(_, stats)| stats),
        None => stats::compute(flows, trace.tsc_hz()),
    };
    // One table per domain, when the trace has more than one and none was asked for.
    let domains = match args.domain {
        Some(_) => Vec::new(),
        None => stats::per_domain(flows, trace.tsc_hz()),
    };
    let domains = if domains.len() > 1 {
        domains
    } else {
        Vec::new()
    };
    // Written, not printed: a reader that stops early (`| head`) ends the output, and the
    // command ends as it would have, not in a panic.
    let mut text = String::new();
    if args.json {
        let per_domain: Vec<serde_json::Value> = domains
            .iter()
            .map(|(dom, stats)| {
                serde_json::json!({
                    "dom": dom, "label": domain_label(*dom), "name": trace.domain_name(*dom),
                    "exits": stats.exits, "without_exit": stats.without_exit, "reasons": reasons(stats),
                })
            })
            .collect();
        text.push_str(&format!(
            "{}\n",
            serde_json::json!({
                "trace": trace.name, "domain": args.domain, "exits": stats.exits,
                "without_exit": stats.without_exit, "tsc_hz": stats.tsc_hz,
                "reasons": reasons(&stats), "domains": per_domain,
            })
        ));
    } else {
        text.push_str(&format!(
            "Exits of {}{}, hypervisor time per exit (exit to resume):\n\n",
            trace.name,
            args.domain
                .map(|dom| format!(", {}", domain_title(&trace, dom)))
                .unwrap_or_default()
        ));
        text.push_str(&stats.render());
        for (dom, stats) in &domains {
            text.push_str(&format!("\n{}:\n\n", domain_title(&trace, *dom)));
            text.push_str(&stats.render());
        }
    }
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    Ok(ExitCode::from(code))
}

/// `d1 (page-fault)`.
fn domain_title(trace: &Trace, dom: u16) -> String {
    match trace.domain_name(dom) {
        Some(name) => format!("{} ({name})", domain_label(dom)),
        None => domain_label(dom),
    }
}

/// The rows as JSON, times in cycles.
fn reasons(stats: &Stats) -> Vec<serde_json::Value> {
    stats
        .rows
        .iter()
        .map(|row| {
            serde_json::json!({
                "reason": row.reason, "class": row.class, "count": row.count, "share": row.share,
                "time_share": row.time_share, "min_cycles": row.min, "avg_cycles": row.avg,
                "p50_cycles": row.p50, "p95_cycles": row.p95, "max_cycles": row.max,
            })
        })
        .collect()
}
