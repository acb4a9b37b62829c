//! The `runway-worker` daemon: parse flags, set up tracing, connect to the broker, turn
//! SIGTERM/SIGINT into stop requests, and serve (runway_worker::daemon::run).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use runway_broker::Broker;
use runway_broker::topology::Topology;
use runway_worker::daemon::{self, DaemonConfig, DaemonError};
use runway_worker::policy::{Allow, Policy};
use runway_worker::{Limits, RunnerConfig};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

/// Exit code for bad flags.
const USAGE: u8 = 64;
/// Exit code when the broker cannot be reached.
const UNAVAILABLE: u8 = 69;
/// Exit code for anything else that stopped the daemon.
const FAILURE: u8 = 70;
/// How long dialling the broker may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// runway-worker: a runner daemon that takes runway jobs from RabbitMQ and runs them.
#[derive(Debug, Parser)]
#[command(name = "runway-worker", version, about)]
struct Flags {
    /// Broker URL (amqp:// or amqps://).
    #[arg(long, env = "RUNWAY_SERVER", value_name = "URL")]
    server: String,
    /// This runner's id (default: the host name).
    #[arg(long, env = "RUNWAY_RUNNER_ID")]
    id: Option<String>,
    /// A label jobs can target (repeatable).
    #[arg(long = "label", value_name = "K=V", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Jobs run at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1000))]
    concurrency: u16,
    /// Run jobs in this directory (default: each job's own working directory, if it exists here).
    #[arg(long, value_name = "DIR")]
    workdir: Option<PathBuf>,
    /// Namespace prefix of every exchange and queue.
    #[arg(long, env = "RUNWAY_NAMESPACE", default_value = "runway")]
    namespace: String,
    /// Take only jobs addressed to this runner's id.
    #[arg(long)]
    by_id_only: bool,
    /// After SIGTERM, how long running jobs may take to finish before they are cancelled.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// How often a running job sends a heartbeat.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    heartbeat: Duration,
    /// SIGTERM-to-SIGKILL grace period for cancelled and timed-out jobs (unless the job sets one).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    kill_grace: Duration,
    /// More diagnostics (-v, -vv).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Run only jobs whose verified submitter matches USER[:PROJECT[/OPERATION]] (repeatable,
    /// `*` for any part); without it, every verified submitter's jobs run.
    #[arg(long = "allow", value_name = "USER[:PROJECT[/OPERATION]]", value_parser = Allow::parse)]
    allow: Vec<Allow>,
    /// Honour cancels of anyone's job from this user (repeatable, `*` for every verified user);
    /// a job's submitter may always cancel it.
    #[arg(long = "allow-cancel", value_name = "USER")]
    allow_cancel: Vec<String>,
    /// Also run jobs that carry no verified submitter (user_id). For local development only.
    #[arg(long)]
    insecure_allow_anonymous: bool,
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() && !value.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("`{text}` is not K=V")),
    }
}

fn main() -> ExitCode {
    let flags = match Flags::try_parse() {
        Ok(flags) => flags,
        Err(err) => {
            let code = if err.use_stderr() { USAGE } else { 0 };
            let _ = err.print();
            return ExitCode::from(code);
        }
    };
    // The AMQP client logs a dropped connection as errors; runway reports it itself.
    let filter = match flags.verbose {
        0 => format!("info,{}", runway_broker::QUIET_CLIENT_LOGS),
        _ => "debug".to_owned(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUNWAY_LOG").unwrap_or_else(|_| filter.as_str().into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let id = flags.id.clone().or_else(runway_worker::hostname).unwrap_or_else(|| "worker".to_owned());
    let mut runner = RunnerConfig::new(id);
    runner.labels = flags.labels.iter().cloned().collect::<BTreeMap<_, _>>();
    runner.concurrency = usize::from(flags.concurrency);
    runner.by_id_only = flags.by_id_only;
    runner.workdir = flags.workdir.clone();
    runner.policy = Policy {
        allow: flags.allow.clone(),
        allow_anonymous: flags.insecure_allow_anonymous,
        cancellers: flags.allow_cancel.clone(),
        only: None,
    };
    if flags.insecure_allow_anonymous {
        tracing::warn!("INSECURE: --insecure-allow-anonymous runs jobs whose submitter nobody verified");
    }
    runner.limits = Limits { heartbeat: flags.heartbeat, kill_grace: flags.kill_grace, ..Limits::default() };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("runway-worker: error: cannot start the async runtime: {err}");
            return ExitCode::from(FAILURE);
        }
    };
    let code = runtime.block_on(async {
        let (tx, rx) = mpsc::channel(4);
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            _ = term.recv() => {}
                            _ = int.recv() => {}
                        }
                        if tx.send(()).await.is_err() {
                            break;
                        }
                    }
                });
            }
            (Err(err), _) | (_, Err(err)) => {
                eprintln!("runway-worker: error: cannot handle signals: {err}");
                return ExitCode::from(FAILURE);
            }
        }
        match serve(&flags, runner, rx).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("runway-worker: error: {err}");
                ExitCode::from(if err.is_unreachable() { UNAVAILABLE } else { FAILURE })
            }
        }
    });
    // Jobs and connections are settled by now; what lingers does not hold the exit up.
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

/// Connect to the broker named by the flags and serve on it until told to stop.
async fn serve(flags: &Flags, runner: RunnerConfig, stops: mpsc::Receiver<()>) -> Result<(), DaemonError> {
    let topology = Topology::new(&flags.namespace)?;
    let conn = Broker::amqp(&flags.server, CONNECT_TIMEOUT)?.connect().await?;
    let config = DaemonConfig { topology, runner, drain_timeout: flags.drain_timeout };
    daemon::run(conn, config, stops).await
}
