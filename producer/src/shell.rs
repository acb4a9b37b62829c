//! What runway gives the shell: completion scripts (`runway completions bash|zsh|fish`, with
//! clap_complete) and the man page (`runway man`, with clap_mangen; `make man` writes it to
//! `target/man/runway.1`), both generated from the clap definitions, so they never drift.
//!
//! Both print to stdout and touch nothing else.

use clap::CommandFactory as _;

use crate::cli::Cli;
use crate::exit::{self, CliError};

/// Print the completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Result<u8, CliError> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "runway", &mut script);
    write_stdout(&script)
}

/// Print the man page (roff) of `runway` and its subcommands.
pub fn man() -> Result<u8, CliError> {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut page)
        .map_err(|err| CliError::Internal(format!("cannot render the man page: {err}")))?;
    write_stdout(&page)
}

/// Write generated text (UTF-8 by construction) through the command's answer on stdout.
fn write_stdout(bytes: &[u8]) -> Result<u8, CliError> {
    crate::stdout::write(&String::from_utf8_lossy(bytes))?;
    Ok(exit::SUCCESS)
}
