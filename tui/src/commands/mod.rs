//! One file per subcommand.

pub mod bench;
pub mod bench_ui;
pub mod book_traces;
pub mod check;
pub mod diff;
pub mod export;
pub mod list;
pub mod load;
pub mod replay;
pub mod run;
pub mod stats;
pub mod status;
pub mod trace;

/// The machine for a lab (by id) or a lone guest program, with extra hypervisor settings:
/// what `trace`, `gdb` and `run` start. Errors name what is wrong in a user's words.
pub fn machine(
    lab: &Option<String>,
    guest: &Option<String>,
    settings: &[String],
) -> Result<(String, traplab_tracer::qemu::Machine), String> {
    let (name, mut machine) = match (lab, guest) {
        (_, Some(guest)) => {
            if !traplab_labs::guest_elf(guest).is_file() {
                return Err(format!(
                    "there is no guest program called \"{guest}\" (guests/src/bin/{guest}.rs)"
                ));
            }
            (guest.clone(), traplab_labs::machine_for(&[guest.as_str()]))
        }
        (Some(id), None) => {
            let lab = traplab_labs::find(id)
                .map_err(|error| error.to_string())?
                .ok_or_else(|| {
                    format!("there is no lab called \"{id}\"; `traplab list` shows them")
                })?;
            (lab.id.clone(), lab.machine())
        }
        (None, None) => return Err("name a lab (see `traplab list`) or a --guest".into()),
    };
    for setting in settings {
        if !traplab_abi::settings::is_known(setting) {
            let known: Vec<&str> = traplab_abi::settings::SETTINGS
                .iter()
                .map(|(name, _)| *name)
                .collect();
            return Err(format!(
                "there is no setting \"{setting}\"; the settings are: {}",
                known.join(", ")
            ));
        }
        if !machine.settings.contains(setting) {
            machine.settings.push(setting.clone());
        }
    }
    Ok((name, machine))
}
