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
        // Columns as wide as their longest entry: every title starts at one column.
        let rows: Vec<(&str, String, &str)> = labs
            .iter()
            .map(|lab| (lab.id.as_str(), lab.classes.join(" "), lab.title.as_str()))
            .collect();
        let id_width = rows.iter().map(|(id, ..)| id.chars().count()).max();
        let classes_width = rows
            .iter()
            .map(|(_, classes, _)| classes.chars().count())
            .max();
        let (id_width, classes_width) = (id_width.unwrap_or(0), classes_width.unwrap_or(0));
        for (id, classes, title) in &rows {
            if writeln!(out, "{id:<id_width$}  {classes:<classes_width$}  {title}").is_err() {
                break;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
