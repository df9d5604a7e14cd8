//! `traplab list`: the labs, one line each, or as JSON (with each lab's guests, d1 first,
//! its control domain, when its domains start, and its disk).

use crate::cli::ListArgs;
use std::io::Write;
use std::process::ExitCode;

pub fn run(args: &ListArgs) -> Result<ExitCode, super::Failure> {
    let labs = traplab_labs::all().map_err(|error| error.to_string())?;
    // A closed pipe (`traplab list | head`) ends the output quietly, as `trace` does.
    let mut out = std::io::stdout().lock();
    if args.json {
        let list: Vec<serde_json::Value> = labs
            .iter()
            .map(|lab| {
                serde_json::json!({
                    "id": lab.id,
                    "title": lab.title,
                    "part": lab.part,
                    "classes": lab.classes,
                    "guests": lab.guests,
                    "dom0": lab.dom0,
                    "start": lab.start,
                    "disk": lab.disk,
                })
            })
            .collect();
        let _ = writeln!(out, "{}", serde_json::Value::Array(list));
    } else {
        // The id, then the title, each title at one column; the trap classes last, after
        // it, where a long list (cr-write's, the Linux labs') pushes nothing out of line.
        let width = labs
            .iter()
            .map(|lab| lab.id.chars().count())
            .max()
            .unwrap_or(0);
        let rows = labs
            .iter()
            .map(|lab| (lab.id.as_str(), lab.classes.join(" "), lab.title.as_str()));
        for (id, classes, title) in rows {
            if writeln!(out, "{id:<width$}  {title}  [{classes}]").is_err() {
                break;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
