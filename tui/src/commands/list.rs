//! `traplab list`: the labs, one line each, or as JSON.

use crate::cli::ListArgs;
use std::process::ExitCode;

pub fn run(args: &ListArgs) -> Result<ExitCode, String> {
    let labs = traplab_labs::all().map_err(|error| error.to_string())?;
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
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(list));
    } else {
        let width = labs.iter().map(|lab| lab.id.len()).max().unwrap_or(0);
        for lab in &labs {
            println!("{:<width$}  {:<28}  {}", lab.id, lab.classes.join(" "), lab.title);
        }
    }
    Ok(ExitCode::SUCCESS)
}
