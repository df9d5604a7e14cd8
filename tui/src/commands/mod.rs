//! One file per subcommand.

pub mod bench;
pub mod bench_ui;
pub mod book_traces;
pub mod check;
pub mod diff;
pub mod export;
pub mod list;
pub mod load;
pub mod output;
pub mod replay;
pub mod run;
pub mod stats;
pub mod status;
pub mod trace;

/// Why a command did not do its job: what to tell the user, and the exit status that says
/// it (`status.rs`). Most failures are usage errors (an unknown lab, a file that cannot be
/// written), which is what a plain message converts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub status: u8,
    pub message: String,
}

impl Failure {
    pub fn new(status: u8, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
        }
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure::new(status::USAGE, message)
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Failure {
        Failure::new(status::USAGE, message)
    }
}

/// The machine for a lab (by id) or a lone guest program, with extra hypervisor settings:
/// what `trace`, `gdb` and `run` start — its control domain and when its domains start
/// come from the lab (`Lab::machine`). Errors name what is wrong in a user's words.
pub fn machine(
    lab: &Option<String>,
    guest: &Option<String>,
    settings: &[String],
) -> Result<(String, traplab_tracer::qemu::Machine), String> {
    let (name, mut machine) = match (lab, guest) {
        (_, Some(guest)) => {
            let elf = traplab_labs::guest_elf(guest);
            if !elf.is_file() {
                let names = traplab_labs::guest_names();
                let tree = traplab_labs::tree::tree();
                return Err(match names.iter().any(|name| name == guest) {
                    // Its source is there but it was never built: say where we looked.
                    true => format!(
                        "the guest program \"{guest}\" is not built: no {} in {}; `cargo build` builds it",
                        elf.display(),
                        tree.describe()
                    ),
                    false => format!(
                        "there is no guest program called \"{guest}\" (guests/src/bin/{guest}.rs){}",
                        traplab_labs::nearest::did_you_mean(
                            guest,
                            names.iter().map(String::as_str)
                        )
                        .map(|suggestion| format!("; {suggestion}"))
                        .unwrap_or_default()
                    ),
                });
            }
            (guest.clone(), traplab_labs::machine_for(&[guest.as_str()]))
        }
        (Some(id), None) => {
            let lab = traplab_labs::lab(id)?;
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

/// Serve gdb on `port` for domain `domain` of `machine` (the first guest, d1, when `None`).
/// An error names the domains there are.
pub fn attach_gdb(
    machine: &mut traplab_tracer::qemu::Machine,
    port: Option<u16>,
    domain: Option<u16>,
) -> Result<(), String> {
    let Some(port) = port else {
        return Ok(());
    };
    let dom = domain.unwrap_or(traplab_tracer::qemu::FIRST_GUEST);
    if machine.domain(dom).is_none() {
        let there: Vec<String> = machine
            .domains()
            .iter()
            .map(|(id, guest)| format!("{id} ({})", guest.name))
            .collect();
        return Err(format!(
            "--domain {dom}: this run has no domain {dom}; its domains are {}",
            there.join(", ")
        ));
    }
    machine.gdb_port = Some(port);
    machine.gdb_domain = dom;
    Ok(())
}

/// `--disk FILE`: the image behind the disk of `machine` (the lab `name`'s) is FILE, kept
/// after the run. An error when the lab has no disk.
pub fn keep_disk_image(
    machine: &mut traplab_tracer::qemu::Machine,
    name: &str,
    disk: &crate::cli::DiskImage,
) -> Result<(), String> {
    let Some(image) = &disk.image else {
        return Ok(());
    };
    match &mut machine.disk {
        Some(disk) => {
            disk.image = Some(image.clone());
            Ok(())
        }
        None => Err(format!(
            "--disk {}: {name} has no disk (a lab's catalogue file gives it one with [disk])",
            image.display()
        )),
    }
}

/// The gdb command line that attaches to the debugged domain of `machine`.
pub fn gdb_command(machine: &traplab_tracer::qemu::Machine, port: u16) -> String {
    let elf = machine
        .domain(machine.gdb_domain)
        .map_or("ELF".to_string(), |guest| guest.elf.display().to_string());
    format!("gdb -q {elf} -ex 'target remote 127.0.0.1:{port}'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdb_attaches_to_a_domain_the_machine_has() {
        let (_, mut machine) = machine(&None, &Some("hello".into()), &[]).unwrap_or_else(|_| {
            // Without the built guests, a machine made by hand says the same.
            ("hello".into(), traplab_labs::machine_for(&["hello"]))
        });
        attach_gdb(&mut machine, Some(2159), None).expect("d1 is there");
        assert_eq!((machine.gdb_port, machine.gdb_domain), (Some(2159), 1));
        assert!(gdb_command(&machine, 2159).ends_with("hello -ex 'target remote 127.0.0.1:2159'"));
        let error = attach_gdb(&mut machine, Some(2159), Some(0)).unwrap_err();
        assert_eq!(
            error,
            "--domain 0: this run has no domain 0; its domains are 1 (hello)"
        );
        let mut quiet = traplab_labs::machine_for(&["hello"]);
        attach_gdb(&mut quiet, None, None).expect("no gdb, nothing to check");
        assert_eq!(quiet.gdb_port, None);
    }

    #[test]
    fn a_disk_image_is_kept_only_for_a_lab_with_a_disk() {
        let image = crate::cli::DiskImage {
            image: Some("/tmp/disk.img".into()),
        };
        let mut without = traplab_labs::machine_for(&["hello"]);
        let error = keep_disk_image(&mut without, "hello", &image).unwrap_err();
        assert_eq!(
            error,
            "--disk /tmp/disk.img: hello has no disk (a lab's catalogue file gives it one with [disk])"
        );
        keep_disk_image(&mut without, "hello", &crate::cli::DiskImage::default())
            .expect("no --disk, nothing to check");
        let lab = traplab_labs::find("driver-domain")
            .expect("the catalogue parses")
            .expect("the lab");
        let mut machine = lab.machine();
        assert_eq!(
            machine
                .disk
                .as_ref()
                .map(|disk| (disk.image.clone(), disk.sectors, disk.owner)),
            Some((None, 2048, 1)),
            "a temporary image of the lab's size"
        );
        keep_disk_image(&mut machine, "driver-domain", &image).expect("the lab has a disk");
        assert_eq!(
            machine.disk.and_then(|disk| disk.image),
            Some("/tmp/disk.img".into())
        );
    }
}
