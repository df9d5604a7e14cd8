//! Reading the catalogue (`labs/catalogue/*.toml`).

use crate::expect::Step;
use serde::{Deserialize, Serialize};

/// The embedded catalogue files: `(file name, TOML text)`.
const FILES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/catalogue.rs"));

/// One lab.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lab {
    /// The name on the command line: `traplab trace page-fault`.
    pub id: String,
    pub title: String,
    /// The part of the course it belongs to.
    pub part: String,
    /// The trap classes it shows: exception mnemonics (`#PF`) and exit names (`IOIO`).
    pub classes: Vec<String>,
    /// The guest programs it runs, domain 0 first (`guests/src/bin/<name>.rs`).
    pub guests: Vec<String>,
    /// What happens, in two or three sentences.
    pub summary: String,
    /// Hypervisor settings this lab turns on (`traplab_abi::settings`: extra intercepts,
    /// lazy memory).
    #[serde(default)]
    pub settings: Vec<String>,
    /// The exit status of the lab's guests (and of `traplab trace`) when all goes right.
    #[serde(default)]
    pub status: i32,
    /// The domains (indexes into `guests`) the hypervisor kills when all goes right: a lab
    /// about a fatal fault. The others must exit with `status`; `traplab trace` then exits
    /// with 137 (a domain was killed).
    #[serde(default)]
    pub killed: Vec<u16>,
    /// The events that must appear, in this order (other events may come between).
    #[serde(default)]
    pub expect: Vec<Step>,
}

/// A catalogue file that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("labs/catalogue/{file}: {message}")]
pub struct CatalogueError {
    pub file: String,
    pub message: String,
}

/// Every lab, in catalogue order (sorted by file name).
pub fn all() -> Result<Vec<Lab>, CatalogueError> {
    let labs: Vec<Lab> = FILES
        .iter()
        .map(|(file, text)| {
            let lab: Lab = toml::from_str(text)
                .map_err(|error| CatalogueError { file: file.to_string(), message: error.to_string() })?;
            if format!("{}.toml", lab.id) != *file {
                return Err(CatalogueError { file: file.to_string(), message: format!("id \"{}\" does not match the file name", lab.id) });
            }
            if let Some(unknown) = lab.settings.iter().find(|name| !traplab_abi::settings::is_known(name)) {
                return Err(CatalogueError { file: file.to_string(), message: format!("unknown setting \"{unknown}\"") });
            }
            Ok(lab)
        })
        .collect::<Result<_, _>>()?;
    Ok(labs)
}

/// The lab called `id`.
pub fn find(id: &str) -> Result<Option<Lab>, CatalogueError> {
    Ok(all()?.into_iter().find(|lab| lab.id == id))
}
