//! Getting what a lab needs: QEMU. When it is missing, say exactly how to install it and,
//! on a terminal, offer to run that command (asking first, unless `--yes`).

use std::io::{BufRead, IsTerminal, Write};
use std::process::Command;
use traplab_tracer::qemu;

/// Make sure QEMU is there; `Err` with the message to print when it is not.
pub fn ensure_qemu(yes: bool) -> Result<(), String> {
    if qemu::find().is_some() {
        return Ok(());
    }
    let install = qemu::install_command();
    let command_text = install.join(" ");
    eprintln!("traplab needs {}, which is not installed.", qemu::PROGRAM);
    let interactive = std::io::stdin().is_terminal();
    if !yes {
        if !interactive {
            return Err(format!(
                "install it with: {command_text}   (or run traplab with --yes to let it do that)"
            ));
        }
        eprint!("Install it now with `{command_text}`? [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err(format!("not installed. Install it with: {command_text}"));
        }
    }
    eprintln!("running: {command_text}");
    let status = Command::new(&install[0])
        .args(&install[1..])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map_err(|error| format!("cannot run `{command_text}`: {error}"))?;
    if !status.success() || qemu::find().is_none() {
        return Err(format!(
            "`{command_text}` did not install {}; try it by hand",
            qemu::PROGRAM
        ));
    }
    Ok(())
}
