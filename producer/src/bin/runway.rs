//! The `runway` binary: parse flags, set up tracing, run the command, exit with its code.

use std::process::ExitCode;

use clap::Parser;
use runway_broker::client_logs::client_log_cap;
use runway_producer::attach::Interrupts;
use runway_producer::cli::Cli;
use runway_producer::commands;
use runway_producer::exit;
use tracing_subscriber::filter::FilterExt as _;
use tracing_subscriber::layer::{Layer as _, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;

/// Ctrl-C presses, from the terminal or a SIGINT. One listener for the whole run, so a press
/// that arrives while an event is being printed is kept, not lost.
struct CtrlC(Option<tokio::signal::unix::Signal>);

impl CtrlC {
    fn listen() -> CtrlC {
        CtrlC(tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok())
    }
}

impl Interrupts for CtrlC {
    async fn next(&mut self) {
        if let Some(signal) = self.0.as_mut()
            && signal.recv().await.is_some()
        {
            return;
        }
        // No signal handling available: never report an interrupt.
        std::future::pending::<()>().await;
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let code = if err.use_stderr() { exit::USAGE } else { exit::SUCCESS };
            let _ = err.print();
            return ExitCode::from(code);
        }
    };
    // The AMQP client logs a dropped connection as errors; runway reports it itself.
    let filter = match cli.verbose {
        0 => format!("warn,{}", runway_broker::QUIET_CLIENT_LOGS),
        1 => "info,runway=debug".to_owned(),
        _ => "debug".to_owned(),
    };
    // Whatever `RUNWAY_LOG` says, the AMQP client's debug and trace (frames with the login's
    // password bytes, job bodies with env values) never pass.
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUNWAY_LOG").unwrap_or_else(|_| filter.as_str().into());
    let output =
        tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(runway_producer::colour::on_stderr());
    tracing_subscriber::registry().with(output.with_filter(filter.and(client_log_cap()))).init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("runway: error: cannot start the async runtime: {err}");
            return ExitCode::from(exit::INTERNAL);
        }
    };
    let code = runtime.block_on(async { commands::run(cli, CtrlC::listen()).await });
    // Whatever is still running in the background (a connection's last frames) gets a moment,
    // not a say in when the CLI exits.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    ExitCode::from(code)
}
