//! `traplab export FILE --format perfetto`: the trace as Chrome trace-event JSON, for
//! <https://ui.perfetto.dev>: one track per domain, one slice per trap flow.

use super::load;
use crate::cli::{ExportArgs, ExportFormat};
use std::io::Write;
use std::process::ExitCode;

pub fn run(args: &ExportArgs) -> Result<ExitCode, super::Failure> {
    let (trace, code) = load::recording(&args.file)?;
    let written = match &args.output {
        Some(path) => {
            let file = std::fs::File::create(path)
                .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
            let mut out = std::io::BufWriter::new(file);
            match args.format {
                ExportFormat::Perfetto => traplab_tracer::export::perfetto(&trace, &mut out),
            }
            .and_then(|backwards| out.flush().map(|()| backwards))
        }
        None => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            match args.format {
                ExportFormat::Perfetto => traplab_tracer::export::perfetto(&trace, &mut out),
            }
            .and_then(|backwards| out.flush().map(|()| backwards))
        }
    };
    let backwards = match written {
        // The reader stopped reading (`traplab export r.jsonl | head`): what it took was
        // written, as a pipe's writer expects.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => 0,
        written => written.map_err(|error| format!("cannot write the export: {error}"))?,
    };
    if backwards > 0 {
        eprintln!(
            "traplab: note: in {backwards} slice(s) the TSC went back (the end's is before the start's): each is shown lasting 0 µs, its args say by how many ticks (tsc_went_back)"
        );
    }
    if let Some(path) = &args.output {
        eprintln!(
            "traplab: wrote {} ({} flows); open it at https://ui.perfetto.dev",
            path.display(),
            trace.flows().len()
        );
    }
    Ok(ExitCode::from(code))
}
