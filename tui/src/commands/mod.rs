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
pub mod progress;
pub mod replay;
pub mod run;
pub mod stats;
pub mod status;
pub mod trace;

use crate::cli::AccelChoice;
use std::path::Path;
use traplab_tracer::qemu::Accel;

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

/// How every command says that a trace broke one of its promises (`SCHEMA.md`, "What a
/// complete trace promises"), or that a recording has a line that is not an event: events
/// lost, a gap, no end event, a broken ring, a recording that lacks events, a bad line. Live
/// (`trace`, `run`, the screen's status line) or read back (`stats`, `export`, `diff`,
/// `replay`), the same words: `TRACE FAULT: ` and what is wrong.
pub fn trace_fault(fault: impl std::fmt::Display) -> String {
    format!("TRACE FAULT: {fault}")
}

/// Say [`trace_fault`] on stderr, as `traplab: TRACE FAULT: …`.
pub fn say_trace_fault(fault: impl std::fmt::Display) {
    eprintln!("traplab: {}", trace_fault(fault));
}

/// The trace fault of a `--record FILE` that could not write every event (a full disk):
/// `unrecorded` of the `events` events failed, and `unflushed` is the error of the last
/// write, of what was still buffered. `None` when the recording has every event. `trace`
/// and `run` both say it as a `TRACE FAULT` and exit with [`status::TRACE_INCOMPLETE`].
pub fn recording_fault(
    unrecorded: u64,
    events: u64,
    unflushed: Option<&std::io::Error>,
) -> Option<String> {
    if unrecorded == 0 && unflushed.is_none() {
        return None;
    }
    let last = match unflushed {
        Some(error) => format!(", and the last ones buffered could not be written ({error})"),
        None => String::new(),
    };
    Some(format!(
        "the recording is incomplete: writing {unrecorded} of the {events} events failed{last}"
    ))
}

/// What a command does when the hypervisor and the guests cannot be built here (no cargo).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OlderBuild {
    /// Nothing: a check never grades an older build.
    Refuse,
    /// Run what was built before, and say so.
    Run,
}

/// Bring the hypervisor and the guests of the traplab tree up to date before a command runs
/// them: the same cargo build `cargo build` runs (`traplab_labs::bare`), which rebuilds what
/// changed since the last build and nothing else (a fraction of a second when nothing did).
/// A lab runs the code as it is now, never the programs of an older build: a student who
/// edits a guest and runs `traplab trace` sees the change, as `cargo run` would show it.
pub fn bring_up_to_date(older: OlderBuild) -> Result<(), Failure> {
    use traplab_labs::bare::{self, BuildError};
    let tree = traplab_labs::tree::tree();
    // cargo is quiet here (its errors come back in the error): the line says what waits.
    let mut progress = progress::ProgressLine::stderr();
    progress.show("building what changed in hv/ and guests/ (cargo build --release) …");
    let built = bare::build_tree(&tree.root, true);
    progress.clear();
    match built {
        Ok(()) => Ok(()),
        Err(error @ BuildError::Failed { .. }) => Err(Failure::new(
            status::BUILD_FAILED,
            match older {
                OlderBuild::Refuse => {
                    format!("{error}\nFix it and check again: nothing was graded.")
                }
                OlderBuild::Run => format!("{error}\nFix it and run it again: nothing ran."),
            },
        )),
        Err(error @ BuildError::CannotRun { .. }) if older == OlderBuild::Run => {
            eprintln!(
                "traplab: note: {error}: running the hypervisor and guests built before, in {}",
                bare::target_dir(&tree.root).display()
            );
            Ok(())
        }
        Err(error @ BuildError::CannotRun { .. }) => {
            let target_dir = bare::target_dir(&tree.root);
            let commands: Vec<String> = bare::WORKSPACES
                .iter()
                .map(|workspace| {
                    format!(
                        "  {}",
                        bare::command_line(&tree.root.join(workspace), &target_dir)
                    )
                })
                .collect();
            Err(Failure::new(
                status::BUILD_FAILED,
                format!(
                    "{error}, so the hypervisor and the guests of {} cannot be brought up to date, and a check never grades an older build: nothing was graded. Build them with\n{}\nand check again.",
                    tree.describe(),
                    commands.join("\n")
                ),
            ))
        }
    }
}

/// The machine for a lab (by id), a lone guest program or a kernel image (`--kernel`), with
/// extra hypervisor settings: what `trace`, `gdb` and `run` start — its control domain and
/// when its domains start come from the lab (`Lab::machine`); QEMU's RAM holds what its
/// domains ask for (`Machine::fit_ram`). Errors name what is wrong in a user's words.
pub fn machine(
    lab: &Option<String>,
    guest: &Option<String>,
    kernel: &crate::cli::KernelArgs,
    settings: &[String],
    yes: bool,
) -> Result<(String, traplab_tracer::qemu::Machine), String> {
    let (name, mut machine) = match (lab, guest, &kernel.kernel) {
        (_, _, Some(image)) => {
            let guest = kernel_guest(image, kernel)?;
            let machine =
                traplab_tracer::qemu::Machine::new(traplab_labs::hv_elf(), vec![guest.clone()]);
            (guest.name, machine)
        }
        (_, Some(guest), None) => {
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
        (Some(id), None, None) => {
            let lab = traplab_labs::lab(id)?;
            // A Linux lab's kernel is fetched (asking first) before its machine names it.
            crate::setup::ensure_lab_kernel(&lab, yes)?;
            (lab.id.clone(), lab.machine()?)
        }
        (None, None, None) => {
            return Err("name a lab (see `traplab list`), a --guest or a --kernel".into());
        }
    };
    for setting in settings {
        if let Some(refused) = traplab_abi::settings::refused(setting) {
            return Err(refused);
        }
        if !machine.settings.contains(setting) {
            machine.settings.push(setting.clone());
        }
    }
    // The hypervisor is QEMU's -kernel: missing, QEMU would only say, in its own words,
    // that it cannot open a kernel file.
    if !machine.hv.is_file() {
        return Err(format!(
            "the hypervisor is not built: no {} in {}; `cargo build --release` builds it",
            machine.hv.display(),
            traplab_labs::tree::tree().describe()
        ));
    }
    machine.fit_ram();
    Ok((name, machine))
}

/// `--kernel FILE` with its options: the guest that boots FILE, named after the file. FILE
/// and the `--initrd` FILE are read here, before QEMU starts: QEMU would only say that it
/// cannot, in its own words, once it runs.
fn kernel_guest(
    image: &Path,
    kernel: &crate::cli::KernelArgs,
) -> Result<traplab_tracer::qemu::Guest, String> {
    readable_file("--kernel", image)?;
    if let Some(initrd) = &kernel.initrd {
        readable_file("--initrd", initrd)?;
    }
    // A file has a name (a path without one, `/` or `..`, is a folder, refused above).
    let name = image
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .ok_or_else(|| format!("--kernel: {} is not a file", image.display()))?;
    Ok(traplab_tracer::qemu::Guest {
        cmdline: kernel.append.clone(),
        initrd: kernel.initrd.clone(),
        memory_mib: kernel.memory,
        input: kernel.input.as_deref().map(typed_text),
        ..traplab_tracer::qemu::Guest::new(name, image)
    })
}

/// `--input TEXT` as the keys it stands for: a literal `\n` is Enter (the shell would need
/// `$'…'` to pass a real newline), `\\` a backslash.
fn typed_text(text: &str) -> String {
    let mut typed = String::with_capacity(text.len());
    let mut characters = text.chars();
    while let Some(character) = characters.next() {
        match (character, characters.clone().next()) {
            ('\\', Some('n')) => {
                typed.push('\n');
                characters.next();
            }
            ('\\', Some('\\')) => {
                typed.push('\\');
                characters.next();
            }
            _ => typed.push(character),
        }
    }
    typed
}

/// `OPTION FILE` names a file this process can open for reading; else the error names the
/// option, the path and what the OS said.
fn readable_file(option: &str, path: &Path) -> Result<(), String> {
    let cannot =
        |error: std::io::Error| format!("{option}: cannot read {}: {error}", path.display());
    let file = std::fs::File::open(path).map_err(cannot)?;
    if !file.metadata().map_err(cannot)?.is_file() {
        return Err(format!("{option}: {} is not a file", path.display()));
    }
    Ok(())
}

/// The accelerator asked for (`--accel`), for a run with the QEMU arguments `qemu_args`
/// (`--qemu-arg`): `auto` takes KVM where the host offers nested SVM, unless QEMU is to
/// count instructions (`-icount`, TCG's alone); `kvm` where it does not is refused with the
/// reason and what turns it on.
pub fn accelerator(asked: AccelChoice, qemu_args: &[String]) -> Result<Accel, Failure> {
    // QEMU takes its options with one dash or two.
    let counts_instructions = qemu_args
        .iter()
        .any(|arg| arg.trim_start_matches('-').starts_with("icount"));
    match asked {
        AccelChoice::Tcg => Ok(Accel::Tcg),
        AccelChoice::Auto if counts_instructions => Ok(Accel::Tcg),
        AccelChoice::Auto => Ok(match Accel::kvm_offers_nested_svm() {
            Ok(()) => Accel::Kvm,
            Err(_) => Accel::Tcg,
        }),
        AccelChoice::Kvm if counts_instructions => Err(Failure::new(
            status::USAGE,
            "--accel kvm: QEMU's -icount counts the instructions TCG runs; under KVM the CPU runs them, uncounted (leave out one or the other)",
        )),
        AccelChoice::Kvm => match Accel::kvm_offers_nested_svm() {
            Ok(()) => Ok(Accel::Kvm),
            Err(why) => Err(Failure::new(status::USAGE, format!("--accel kvm: {why}"))),
        },
    }
}

/// What `trace`, `gdb` and `run` say first when a lab runs under KVM: its trace is not the
/// book's, whose traces (and the labs' checks) are TCG's.
pub fn under_kvm_note(accel: Accel) -> Option<&'static str> {
    (accel == Accel::Kvm).then_some(
        "traplab: the hypervisor runs under KVM (nested SVM, -cpu host): at the hardware's speed, with the host CPU's features and without TCG's quirks, so this trace may differ from the book's, which are TCG's",
    )
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
    let symbols = machine
        .domain(machine.gdb_domain)
        .map_or("ELF".to_string(), |guest| guest.image.display().to_string());
    format!("gdb -q {symbols} -ex 'target remote 127.0.0.1:{port}'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcg_counts_instructions_and_kvm_is_refused_for_it() {
        let icount = ["--icount".to_string(), "shift=0,sleep=off".to_string()];
        // Whatever the host offers: TCG when asked, and when QEMU is to count instructions.
        assert_eq!(accelerator(AccelChoice::Tcg, &[]), Ok(Accel::Tcg));
        assert_eq!(accelerator(AccelChoice::Auto, &icount), Ok(Accel::Tcg));
        let refused = accelerator(AccelChoice::Kvm, &icount).expect_err("no KVM with -icount");
        assert_eq!(refused.status, status::USAGE);
        assert!(refused.message.contains("-icount"), "{}", refused.message);
        // `auto` and `kvm` follow the host (these machines: TCG, and a refusal that says why).
        let here = Accel::kvm_offers_nested_svm();
        let auto = accelerator(AccelChoice::Auto, &[]);
        assert_eq!(auto, Ok(if here.is_ok() { Accel::Kvm } else { Accel::Tcg }));
        match (accelerator(AccelChoice::Kvm, &[]), here) {
            (Ok(accel), Ok(())) => assert_eq!(accel, Accel::Kvm),
            (Err(refused), Err(why)) => assert_eq!(refused.message, format!("--accel kvm: {why}")),
            (asked, here) => panic!("--accel kvm gave {asked:?} where the host says {here:?}"),
        }
        assert!(under_kvm_note(Accel::Kvm).is_some() && under_kvm_note(Accel::Tcg).is_none());
    }

    #[test]
    fn a_recording_that_lacks_events_is_a_trace_fault() {
        assert_eq!(recording_fault(0, 10, None), None);
        assert_eq!(
            recording_fault(3, 10, None).as_deref(),
            Some("the recording is incomplete: writing 3 of the 10 events failed")
        );
        let full = std::io::Error::from_raw_os_error(28);
        let said = recording_fault(0, 10, Some(&full)).expect("the buffered events were lost");
        assert!(
            said.starts_with(
                "the recording is incomplete: writing 0 of the 10 events failed, and the last ones buffered could not be written (No space left on device"
            ),
            "{said}"
        );
    }

    #[test]
    fn typed_text_turns_a_literal_backslash_n_into_enter() {
        assert_eq!(typed_text("hello\\nquit\\n"), "hello\nquit\n");
        assert_eq!(
            typed_text("a\\\\nb"),
            "a\\nb",
            "an escaped backslash stays one"
        );
        assert_eq!(typed_text("real\nnewline\\"), "real\nnewline\\");
    }

    #[test]
    fn gdb_attaches_to_a_domain_the_machine_has() {
        let no_kernel = crate::cli::KernelArgs::default();
        let (_, mut machine) = machine(&None, &Some("hello".into()), &no_kernel, &[], false)
            .unwrap_or_else(|_| {
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

    /// A file of `contents` in the temporary folder, deleted when dropped.
    struct TempFile(std::path::PathBuf);

    impl TempFile {
        fn new(name: &str, contents: &[u8]) -> TempFile {
            let path = std::env::temp_dir().join(format!("traplab-{}-{name}", std::process::id()));
            std::fs::write(&path, contents).expect("a temporary file");
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn a_kernel_runs_alone_in_d1_named_after_its_file() {
        let image = TempFile::new("mb-kernel.elf", b"\x7fELF");
        let initrd = TempFile::new("mb-initrd.img", b"initrd");
        let kernel = crate::cli::KernelArgs {
            kernel: Some(image.0.clone()),
            initrd: Some(initrd.0.clone()),
            append: Some("console=ttyS0,115200 quiet".into()),
            memory: Some(512),
            input: Some("ls\\n".into()),
        };
        let (name, built) = machine(&None, &None, &kernel, &["intercept-cr".into()], false)
            .expect("a readable kernel and initrd");
        let file_name = format!("traplab-{}-mb-kernel.elf", std::process::id());
        assert_eq!(name, file_name);
        assert!(built.dom0.is_none(), "no control domain");
        assert_eq!(
            built.guests,
            [traplab_tracer::qemu::Guest {
                name: file_name,
                image: image.0.clone(),
                cmdline: Some("console=ttyS0,115200 quiet".into()),
                initrd: Some(initrd.0.clone()),
                memory_mib: Some(512),
                input: Some("ls\n".into()),
            }]
        );
        assert_eq!(built.hv, traplab_labs::hv_elf());
        assert_eq!(
            built.settings,
            ["intercept-cr"],
            "settings apply as to a lab"
        );
        assert_eq!(
            built.ram_mib,
            128 + 512,
            "QEMU's RAM holds the hypervisor and d1's"
        );
        let args: Vec<String> =
            traplab_tracer::qemu::arguments(&built, Path::new("/dev/shm/ram"), None, None)
                .into_iter()
                .filter_map(|arg| arg.into_string().ok())
                .collect();
        assert!(
            args.iter().any(
                |arg| arg == "name=opt/traplab/dom1/cmdline,string=console=ttyS0,,115200 quiet"
            ),
            "the command line reaches QEMU with its comma doubled: {args:?}"
        );
        assert!(gdb_command(&built, 2159).starts_with(&format!("gdb -q {} ", image.0.display())));

        let plain = crate::cli::KernelArgs {
            kernel: Some(image.0.clone()),
            ..Default::default()
        };
        let (_, built) = machine(&None, &None, &plain, &[], false).expect("a readable kernel");
        assert_eq!(
            built.guests,
            [traplab_tracer::qemu::Guest::new(name, image.0.clone())],
            "no command line, no initrd, the hypervisor's default RAM"
        );
        assert_eq!(built.ram_mib, 256);
    }

    #[test]
    fn a_kernel_or_initrd_that_cannot_be_read_is_a_usage_error_before_qemu() {
        let missing = std::path::PathBuf::from("/nonexistent/traplab/bzImage");
        let kernel = crate::cli::KernelArgs {
            kernel: Some(missing.clone()),
            ..Default::default()
        };
        assert_eq!(
            machine(&None, &None, &kernel, &[], false).unwrap_err(),
            "--kernel: cannot read /nonexistent/traplab/bzImage: No such file or directory (os error 2)"
        );
        let folder = crate::cli::KernelArgs {
            kernel: Some(std::env::temp_dir()),
            ..Default::default()
        };
        assert_eq!(
            machine(&None, &None, &folder, &[], false).unwrap_err(),
            format!("--kernel: {} is not a file", std::env::temp_dir().display())
        );
        let image = TempFile::new("mb-kernel-2.elf", b"\x7fELF");
        let no_initrd = crate::cli::KernelArgs {
            kernel: Some(image.0.clone()),
            initrd: Some("/nonexistent/initrd.img".into()),
            ..Default::default()
        };
        assert_eq!(
            machine(&None, &None, &no_initrd, &[], false).unwrap_err(),
            "--initrd: cannot read /nonexistent/initrd.img: No such file or directory (os error 2)"
        );
        assert_eq!(
            machine(&None, &None, &crate::cli::KernelArgs::default(), &[], false).unwrap_err(),
            "name a lab (see `traplab list`), a --guest or a --kernel"
        );
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
        let mut machine = lab.machine().expect("the lab's machine");
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
