//! Getting what a lab needs: QEMU, and for a Linux lab Debian's kernel. When one is missing,
//! say exactly what would get it and, on a terminal, offer to do that (asking first, unless
//! `--yes`).

use std::io::{BufRead, IsTerminal, Write};
use std::process::Command;
use traplab_tracer::qemu;

/// Make sure QEMU is there; `Err` with the message to print when it is not.
pub fn ensure_qemu(yes: bool) -> Result<(), String> {
    if qemu::find().is_some() {
        return Ok(());
    }
    let command_text = qemu::install_text();
    eprintln!("traplab needs {}, which is not installed.", qemu::PROGRAM);
    let interactive = std::io::stdin().is_terminal();
    if !yes {
        if !interactive {
            return Err(format!(
                "install it with: {command_text}   (or run traplab with --yes to let it do that)"
            ));
        }
        if !ask(&format!("Install it now with `{command_text}`?")) {
            return Err(format!("not installed. Install it with: {command_text}"));
        }
    }
    for command in qemu::install_commands() {
        let command = unattended(&command);
        let text = command.join(" ");
        eprintln!("running: {text}");
        let status = Command::new(&command[0])
            .args(&command[1..])
            .status()
            .map_err(|error| format!("cannot run `{text}`: {error}"))?;
        if !status.success() {
            return Err(format!("`{text}` failed; try `{command_text}` by hand"));
        }
    }
    if qemu::find().is_none() {
        return Err(format!(
            "`{command_text}` did not install {}; try it by hand",
            qemu::PROGRAM
        ));
    }
    Ok(())
}

/// Make sure a lab that boots Debian's Linux kernel (`[boot] kernel = "debian-linux"`) has
/// it: fetched into the tree's `target/debian/` the first time, as QEMU is installed above
/// (saying what will run, asking on a terminal, `--yes` for scripts). Other labs need
/// nothing and are not asked about.
pub fn ensure_lab_kernel(lab: &traplab_labs::Lab, yes: bool) -> Result<(), String> {
    use traplab_labs::linux;
    if !lab.boots_linux() || linux::fetched().is_some() {
        return Ok(());
    }
    let what = linux::fetch_description();
    eprintln!(
        "lab {} boots Debian's Linux kernel with busybox, which are not fetched yet (about 30 MB).",
        lab.id
    );
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(format!("run traplab with --yes to let it {what}"));
        }
        if !ask(&format!("Fetch them now ({what})?")) {
            return Err(format!(
                "not fetched. `traplab trace {} --yes` fetches them",
                lab.id
            ));
        }
    }
    eprintln!("fetching: {what}");
    linux::fetch().map(|_| ())
}

/// `command` (an `apt-get`, maybe after `sudo`) with `DEBIAN_FRONTEND=noninteractive` in
/// apt-get's own environment, so that no package's configuration stops to ask a question
/// nobody may be there to answer (`--yes` without a terminal). Set on traplab's process it
/// would not get there: sudo's `env_reset` (its default) drops it.
fn unattended(command: &[String]) -> Vec<String> {
    let Some(apt) = command.iter().position(|word| word == "apt-get") else {
        return command.to_vec();
    };
    let mut words = command[..apt].to_vec();
    words.extend(["env".into(), "DEBIAN_FRONTEND=noninteractive".into()]);
    words.extend_from_slice(&command[apt..]);
    words
}

/// Ask `question` on the terminal; only an explicit yes is one (the default is no).
fn ask(question: &str) -> bool {
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    matches!(answer.trim(), "y" | "Y" | "yes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apt_get_gets_its_frontend_through_sudo() {
        let words = |text: &str| text.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            unattended(&words("sudo apt-get install -y qemu-system-x86")),
            words("sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y qemu-system-x86")
        );
        assert_eq!(
            unattended(&words("apt-get update")),
            words("env DEBIAN_FRONTEND=noninteractive apt-get update")
        );
        // Not apt-get: left as it is (env never goes before sudo).
        assert_eq!(
            unattended(&words("sudo dnf install")),
            words("sudo dnf install")
        );
    }
}
