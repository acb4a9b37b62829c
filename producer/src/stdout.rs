//! A command's answer on stdout: written whole, and a reader that went away early
//! (`runway job list | head -1`) ends the command quietly, as it does for other tools.
//!
//! Only the answer of `job list|inspect` and `runner list` goes here; a followed job's output
//! is the printer's, which keeps following when stdout closes.

use std::io::Write;

use crate::exit::CliError;

/// Write `text` to stdout and flush it.
pub fn write(text: &str) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()).map_err(|err| match err.kind() {
        std::io::ErrorKind::BrokenPipe => CliError::StdoutClosed,
        _ => CliError::Internal(format!("cannot write to stdout: {err}")),
    })
}

/// Write `text` and a newline.
pub fn line(text: &str) -> Result<(), CliError> {
    write(&format!("{text}\n"))
}
