//! `traplab diff A B`: two recordings side by side, aligned flow by flow.
//!
//! ```text
//!   seq dom class  action   rip        ║     seq dom class  action   rip
//!   231 d1  #DE    reflect  0x200889   ≠     905 d2  #DE    bounce   0x200889
//! ```
//! `=` same class handled the same way, `≠` same class handled differently, `<` only on
//! the left, `>` only on the right. Runs of equal flows are folded unless `--all`. A flow
//! whose notification woke another domain's upcall shows `→d2` after its action; the flow
//! with that upcall shows `←d1`.

use super::load;
use crate::cli::DiffArgs;
use std::fmt::Write;
use std::process::ExitCode;
use traplab_abi::event::domain_label;
use traplab_tracer::code::GuestImage;
use traplab_tracer::diff::{self, Row, Side};
use traplab_tracer::store::Trace;
use traplab_tracer::symbols::Symbols;

/// Characters per side.
const WIDTH: usize = 46;
/// A run of equal rows longer than this is folded to its ends.
const FOLD: usize = 6;

pub fn run(args: &DiffArgs) -> Result<ExitCode, super::Failure> {
    let (left, left_code) = load::recording(&args.left)?;
    let (right, right_code) = load::recording(&args.right)?;
    if let Some(dom) = args.left_dom {
        load::has_domain(&left, dom, "--left-dom")?;
    }
    if let Some(dom) = args.right_dom {
        load::has_domain(&right, dom, "--right-dom")?;
    }
    let left_side = Side {
        trace: &left,
        dom: args.left_dom,
    };
    let right_side = Side {
        trace: &right,
        dom: args.right_dom,
    };
    let rows = diff::align(left_side, right_side);
    // A reader that closed early (`| head`) is no error of ours.
    let text = render(&left_side, &right_side, &rows, args.all);
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    Ok(ExitCode::from(super::status::of_recordings(&[
        left_code, right_code,
    ])))
}

/// Symbols of each domain's guest, when its ELF is here and is the build the trace ran
/// (`GuestImage::ran_in`): another build's would name the wrong functions, so they are left
/// out, and a note says so.
fn symbols_of(trace: &Trace) -> Vec<(u16, Symbols)> {
    trace
        .domains()
        .iter()
        .filter_map(|(dom, name)| {
            let image = GuestImage::load(&traplab_labs::recorded_guest_elf(name)?).ok()?;
            if image.ran_in(trace, *dom) == Some(false) {
                eprintln!(
                    "traplab: note: {} of {} ran another build of {name} than the one here (its code at the exits' addresses differs): its symbols are left out",
                    domain_label(*dom),
                    trace.name
                );
                return None;
            }
            Some((*dom, image.symbols().clone()))
        })
        .collect()
}

fn cell(side: &Side, symbols: &[(u16, Symbols)], flow_number: usize) -> String {
    let flow = &side.trace.flows()[flow_number];
    let seq = side
        .trace
        .index_of(flow.first as usize)
        .map_or(0, |entry| entry.seq);
    let symbol = symbols
        .iter()
        .find(|(dom, _)| *dom == flow.dom)
        .and_then(|(_, symbols)| symbols.describe(flow.rip))
        .map(|name| format!(" {}", short(&name)))
        .unwrap_or_default();
    // The action, and the flow's links across domains (→d2: it woke d2's upcall).
    let action = format!("{}{}", flow.action_text(), diff::links(side.trace, flow));
    let text = format!(
        "{seq:>6} {:<3} {:<6} {:<13} {:#x}{symbol}",
        domain_label(flow.dom),
        flow.class(),
        action,
        flow.rip
    );
    fit(&text, WIDTH)
}

/// The last path component of a Rust name: `traplab_guests::traps::entry` → `traps::entry`.
fn short(name: &str) -> &str {
    let parts: Vec<_> = name.match_indices("::").collect();
    if parts.len() >= 2 {
        &name[parts[parts.len() - 2].0 + 2..]
    } else {
        name
    }
}

fn fit(text: &str, width: usize) -> String {
    let count = text.chars().count();
    if count <= width {
        format!("{text:<width$}")
    } else {
        format!("{}…", text.chars().take(width - 1).collect::<String>())
    }
}

fn side_title(side: &Side) -> String {
    let dom = side
        .dom
        .map(|dom| format!(" {}", domain_label(dom)))
        .unwrap_or_default();
    fit(
        &format!("{}{dom}: {} flows", side.trace.name, side.flows().len()),
        WIDTH,
    )
}

pub fn render(left: &Side, right: &Side, rows: &[Row], all: bool) -> String {
    let (left_symbols, right_symbols) = (symbols_of(left.trace), symbols_of(right.trace));
    let blank = " ".repeat(WIDTH);
    let line = |row: Row| -> String {
        let (a, b) = match row {
            Row::Same(a, b) | Row::Differs(a, b) => {
                (cell(left, &left_symbols, a), cell(right, &right_symbols, b))
            }
            Row::OnlyLeft(a) => (cell(left, &left_symbols, a), blank.clone()),
            Row::OnlyRight(b) => (blank.clone(), cell(right, &right_symbols, b)),
        };
        format!("{a} {} {}", row.marker(), b.trim_end())
    };
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{} │ {}",
        side_title(left),
        side_title(right).trim_end()
    );
    let _ = writeln!(
        text,
        "{}",
        fit(
            &format!(
                "{:>6} {:<3} {:<6} {:<13} rip",
                "seq", "dom", "class", "action"
            ),
            WIDTH
        ) + " │ "
            + &format!(
                "{:>6} {:<3} {:<6} {:<13} rip",
                "seq", "dom", "class", "action"
            )
    );
    let mut index = 0;
    while index < rows.len() {
        let run = rows[index..]
            .iter()
            .take_while(|row| matches!(row, Row::Same(..)))
            .count();
        if !all && run > FOLD {
            for &row in &rows[index..index + 2] {
                let _ = writeln!(text, "{}", line(row));
            }
            let folded = format!(
                "{:^width$}",
                format!("… {} more flows handled the same way …", run - 4),
                width = 2 * WIDTH + 3
            );
            let _ = writeln!(text, "{}", folded.trim_end());
            for &row in &rows[index + run - 2..index + run] {
                let _ = writeln!(text, "{}", line(row));
            }
            index += run;
            continue;
        }
        let _ = writeln!(text, "{}", line(rows[index]));
        index += 1;
    }
    let (same, differs, only_left, only_right) = diff::summary(rows);
    let _ = writeln!(
        text,
        "\n{same} flows handled the same way, {differs} handled differently, {only_left} only on the left, {only_right} only on the right."
    );
    // For each difference, the two decisions in the hypervisor's words.
    let differing: Vec<(usize, usize)> = rows
        .iter()
        .filter_map(|row| {
            if let Row::Differs(a, b) = row {
                Some((*a, *b))
            } else {
                None
            }
        })
        .collect();
    for (a, b) in differing.iter().take(12) {
        let _ = writeln!(
            text,
            "\n≠ {} flow at left seq {}, right seq {}:",
            left.trace.flows()[*a].class(),
            seq_of(left.trace, *a),
            seq_of(right.trace, *b)
        );
        let _ = writeln!(text, "  left:  {}", why(left.trace, *a));
        let _ = writeln!(text, "  right: {}", why(right.trace, *b));
    }
    if differing.len() > 12 {
        let _ = writeln!(text, "\n… and {} more differences.", differing.len() - 12);
    }
    text
}

fn seq_of(trace: &Trace, flow: usize) -> u64 {
    trace
        .index_of(trace.flows()[flow].first as usize)
        .map_or(0, |entry| entry.seq)
}

/// The flow's decisions, in the hypervisor's words.
fn why(trace: &Trace, flow: usize) -> String {
    let flow = &trace.flows()[flow];
    let mut whys = Vec::new();
    for index in flow.events() {
        if let Ok(event) = trace.event(index as usize)
            && let traplab_abi::event::Body::Decide(decide) = &event.body
        {
            whys.push(format!("{}: {}", decide.action.name(), decide.why));
        }
    }
    if whys.is_empty() {
        "(no decision)".into()
    } else {
        whys.join("; then ")
    }
}
