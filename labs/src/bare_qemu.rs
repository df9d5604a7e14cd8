//! A kernel under QEMU's own `-kernel`, without traplab: what the comparisons
//! (`labs/tests/{xen,linux}.rs`) and `traplab bench --linux` hold traplab's runs against.
//!
//! The PC is the one traplab's kernels see as far as QEMU lets it be: the same CPU without
//! SVM (`-cpu qemu64,-svm`: the hypervisor hides SVM from its guests), no HPET (traplab has
//! none), QEMU's isa-debug-exit at port 0xf4, COM1 on QEMU's stdout, and no reboot.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use traplab_tracer::qemu::Accel;

/// What to boot.
pub struct Kernel<'a> {
    pub image: &'a Path,
    pub initrd: Option<&'a Path>,
    pub append: &'a str,
    pub memory_mib: u32,
    /// The accelerator: the one the run it is compared with used (`traplab bench` under
    /// KVM compares KVM with KVM).
    pub accel: Accel,
}

/// QEMU's arguments for `kernel`.
fn arguments(kernel: &Kernel) -> Vec<OsString> {
    let mut arguments: Vec<OsString> = [
        "-nodefaults",
        "-machine",
        "pc,hpet=off",
        "-accel",
        kernel.accel.name(),
        "-cpu",
        "qemu64,-svm",
        "-display",
        "none",
        "-m",
        &kernel.memory_mib.to_string(),
        "-serial",
        "stdio",
        "-no-reboot",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=4",
        "-kernel",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    arguments.push(kernel.image.into());
    arguments.extend(["-append".into(), kernel.append.into()]);
    if let Some(initrd) = kernel.initrd {
        arguments.extend(["-initrd".into(), initrd.into()]);
    }
    arguments
}

/// Boot `kernel` until a console line contains `until`, within `bound`, then stop QEMU: the
/// console's lines so far (without their `\r`) and how long it took from the start. An
/// error when QEMU ends first or the bound passes, with what the console said.
pub fn boot_until(
    kernel: &Kernel,
    until: &str,
    bound: Duration,
) -> Result<(Vec<String>, Duration), String> {
    let output_file = std::env::temp_dir().join(format!(
        "traplab-bare-qemu-{}-{}.out",
        std::process::id(),
        kernel
            .image
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let output = std::fs::File::create(&output_file)
        .map_err(|error| format!("{}: {error}", output_file.display()))?;
    let started = Instant::now();
    let mut qemu = Command::new(traplab_tracer::qemu::PROGRAM)
        .args(arguments(kernel))
        .stdin(Stdio::null())
        .stdout(output)
        .stderr(Stdio::null())
        .spawn()
        .map_err(|error| format!("cannot start {}: {error}", traplab_tracer::qemu::PROGRAM))?;
    // Wait for the line, with a bound: a kernel that never prints it fails, never hangs.
    let result = loop {
        let text = std::fs::read_to_string(&output_file).unwrap_or_default();
        if text.contains(until) {
            break Ok((text, started.elapsed()));
        }
        let ended = qemu.try_wait().ok().flatten().is_some();
        if ended || started.elapsed() > bound {
            let why = if ended {
                "QEMU ended"
            } else {
                "the time ran out"
            };
            break Err(format!(
                "{why} before {until:?} under QEMU's -kernel:\n{text}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    qemu.kill().ok();
    qemu.wait().ok();
    std::fs::remove_file(&output_file).ok();
    let (text, took) = result?;
    Ok((
        text.lines().map(|line| line.replace('\r', "")).collect(),
        took,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bare_run_uses_the_accelerator_it_is_compared_under() {
        let kernel = |accel| Kernel {
            image: Path::new("/boot/vmlinuz"),
            initrd: Some(Path::new("/tmp/initrd")),
            append: "console=ttyS0",
            memory_mib: 256,
            accel,
        };
        for accel in [Accel::Tcg, Accel::Kvm] {
            let arguments = arguments(&kernel(accel));
            let at = arguments
                .iter()
                .position(|argument| argument == "-accel")
                .expect("an -accel");
            assert_eq!(arguments[at + 1], accel.name());
        }
        let arguments = arguments(&kernel(Accel::Tcg));
        let tail = &arguments[arguments.len() - 5..];
        assert_eq!(
            tail,
            [
                "/boot/vmlinuz",
                "-append",
                "console=ttyS0",
                "-initrd",
                "/tmp/initrd"
            ]
            .map(OsString::from)
        );
    }
}
