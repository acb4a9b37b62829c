//! The `runway-worker` daemon: parse flags, set up tracing, connect to the broker, turn
//! SIGTERM/SIGINT into stop requests, and serve (runway_worker::daemon::run).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use runway_broker::amqp::ServerOrder;
use runway_broker::client_logs::client_log_cap;
use runway_broker::topology::Topology;
use runway_broker::{Broker, TlsFiles};
use runway_worker::daemon::{self, DaemonConfig, DaemonError};
use runway_worker::environment;
use runway_worker::interval;
use runway_worker::metrics_server::serve_metrics;
use runway_worker::policy::{Allow, Policy};
use runway_worker::secrets::Secrets;
use runway_worker::{AtMostOnce, Lifetime, Limits, RunnerConfig};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tracing_subscriber::filter::FilterExt as _;
use tracing_subscriber::layer::{Layer as _, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;

/// Exit code for bad flags.
const USAGE: u8 = 64;
/// Exit code when the broker cannot be reached.
const UNAVAILABLE: u8 = 69;
/// Exit code for a secrets store that cannot be used (EX_CONFIG): unreadable, readable by
/// others, malformed, or naming a variable the worker does not have.
const CONFIG: u8 = 78;
/// Exit code for anything else that stopped the daemon.
const FAILURE: u8 = 70;
/// How long dialling the broker may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// runway-worker: a runner daemon that takes runway jobs from RabbitMQ and runs them.
#[derive(Debug, Parser)]
#[command(name = "runway-worker", version, about)]
struct Flags {
    /// Broker URL (amqp:// or amqps://), or the nodes of a cluster, comma-separated.
    #[arg(long, env = "RUNWAY_SERVER", hide_env_values = true, value_name = "URL[,URL...]")]
    server: String,
    /// The order the nodes of --server are tried in: shuffled (spreads runners), or listed
    /// (the first is preferred).
    #[arg(long, env = "RUNWAY_SERVER_ORDER", value_enum, hide_env_values = true, default_value_t = Order::Shuffled)]
    server_order: Order,
    /// PEM file of CAs to trust for amqps://, besides the system's.
    #[arg(long, env = "RUNWAY_TLS_CA", hide_env_values = true, value_name = "PATH")]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for amqps://; logs in with EXTERNAL unless the URL names a mechanism.
    #[arg(long, env = "RUNWAY_TLS_CERT", hide_env_values = true, value_name = "PATH")]
    tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM, unencrypted).
    #[arg(long, env = "RUNWAY_TLS_KEY", hide_env_values = true, value_name = "PATH")]
    tls_key: Option<PathBuf>,
    /// This runner's id (default: the host name).
    #[arg(long, env = "RUNWAY_RUNNER_ID", hide_env_values = true)]
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
    #[arg(long, env = "RUNWAY_NAMESPACE", hide_env_values = true, default_value = "runway")]
    namespace: String,
    /// Take only jobs addressed to this runner's id.
    #[arg(long)]
    by_id_only: bool,
    /// After SIGTERM, how long running jobs may take to finish before they are cancelled.
    #[arg(long, default_value = "10m", value_parser = |text: &str| interval::DRAIN_TIMEOUT.parse(text))]
    drain_timeout: Duration,
    /// How often a running job sends a heartbeat.
    #[arg(long, default_value = "5s", value_parser = |text: &str| interval::HEARTBEAT.parse(text))]
    heartbeat: Duration,
    /// SIGTERM-to-SIGKILL grace period for cancelled and timed-out jobs (unless the job sets one).
    #[arg(long, default_value = "10s", value_parser = |text: &str| interval::KILL_GRACE.parse(text))]
    kill_grace: Duration,
    /// Take exactly one job, run it, and exit (0, whatever the job's outcome).
    #[arg(long)]
    once: bool,
    /// Exit (0) after this long with no job (e.g. 10m).
    #[arg(long, value_name = "D", value_parser = humantime::parse_duration)]
    idle_timeout: Option<Duration>,
    /// Also give jobs this variable of the worker's environment (repeatable); never RUNWAY_* or AMQP_URL.
    #[arg(long = "pass-env", value_name = "NAME")]
    pass_env: Vec<String>,
    /// Secrets for jobs: a file of NAME=value lines, readable only by this user (chmod 600).
    #[arg(long, value_name = "PATH")]
    secrets_file: Option<PathBuf>,
    /// A secret for jobs from this variable of the worker's environment (repeatable).
    #[arg(long = "secret-env", value_name = "NAME")]
    secret_env: Vec<String>,
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
    /// How a job id is kept from running twice: `cluster` runs an attempt only once the index
    /// shows this runner's `accepted` opened it (the one every reader believes), so a copy of
    /// the job message that reaches another runner is dropped there (one live read of the index
    /// per runner); `runner` only drops copies reaching this runner, for fleets whose producers
    /// never publish a job twice (docs/SECURITY.md).
    #[arg(long, value_enum, default_value_t = AtMostOnce::Cluster)]
    at_most_once: AtMostOnce,
    /// Also run jobs that carry no verified submitter (user_id). For local development only.
    #[arg(long)]
    insecure_allow_anonymous: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics, with /healthz and /readyz (e.g.
    /// 127.0.0.1:9464; port 0 picks a free one). No authentication: bind to a private address.
    #[arg(long, env = "RUNWAY_METRICS_ADDR", hide_env_values = true, value_name = "ADDR", value_parser = parse_listen_addr)]
    metrics_addr: Option<SocketAddr>,
}

/// `--server-order`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Order {
    Shuffled,
    Listed,
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() && !value.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("`{text}` is not K=V")),
    }
}

/// `--metrics-addr`: an IP address and port, or a host name (such as localhost) and port.
fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    let expected = "expected IP:PORT or HOST:PORT, such as 127.0.0.1:9464";
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    match std::net::ToSocketAddrs::to_socket_addrs(text) {
        Ok(mut addrs) => addrs.next().ok_or_else(|| format!("`{text}` names no address; {expected}")),
        Err(err) => Err(format!("`{text}` is not an address to listen on ({err}); {expected}")),
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
    // Whatever `RUNWAY_LOG` says, the AMQP client's debug and trace (frames with the login's
    // password bytes, job bodies with env values) never pass.
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUNWAY_LOG").unwrap_or_else(|_| filter.as_str().into());
    let output = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    tracing_subscriber::registry().with(output.with_filter(filter.and(client_log_cap()))).init();
    let id = flags.id.clone().or_else(runway_worker::hostname).unwrap_or_else(|| "worker".to_owned());
    let mut runner = RunnerConfig::new(id);
    runner.labels = flags.labels.iter().cloned().collect::<BTreeMap<_, _>>();
    runner.concurrency = usize::from(flags.concurrency);
    runner.by_id_only = flags.by_id_only;
    runner.at_most_once = flags.at_most_once;
    if flags.at_most_once == AtMostOnce::Runner {
        tracing::warn!("--at-most-once runner: a copy of a job message that reaches another runner may run there too");
    }
    runner.workdir = flags.workdir.clone();
    runner.lifetime = Lifetime { once: flags.once, idle_timeout: flags.idle_timeout };
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
    if let Err(err) = environment::check_pass_env(&flags.pass_env) {
        eprintln!("runway-worker: error: {err}");
        return ExitCode::from(USAGE);
    }
    runner.env = environment::allowed(std::env::vars_os(), &flags.pass_env);
    runner.secrets =
        match Secrets::load(flags.secrets_file.as_deref(), &flags.secret_env, |name| std::env::var(name).ok()) {
            Ok(secrets) => secrets,
            Err(err) => {
                eprintln!("runway-worker: error: {err}");
                return ExitCode::from(CONFIG);
            }
        };
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
        if let Some(addr) = flags.metrics_addr {
            // Bound before the broker is dialled: /healthz answers, and /readyz says why not
            // ready, while the runner connects.
            let listener = match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => listener,
                Err(err) => {
                    eprintln!("runway-worker: error: --metrics-addr {addr}: cannot listen there: {err}");
                    return ExitCode::from(USAGE);
                }
            };
            let bound = listener.local_addr().map_or_else(|_| addr.to_string(), |bound| bound.to_string());
            tracing::info!(metrics = %format!("http://{bound}/metrics"), "listening: /metrics, /healthz, /readyz");
            let metrics = runner.metrics.clone();
            tokio::spawn(async move {
                if let Err(err) = serve_metrics(listener, metrics).await {
                    tracing::error!(error = %err, "the metrics endpoint stopped");
                }
            });
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
    let order = match flags.server_order {
        Order::Shuffled => ServerOrder::Shuffled,
        Order::Listed => ServerOrder::Listed,
    };
    let tls = TlsFiles { ca: flags.tls_ca.clone(), cert: flags.tls_cert.clone(), key: flags.tls_key.clone() };
    let conn = Broker::amqp_in_order(&flags.server, CONNECT_TIMEOUT, order, &tls)?.connect().await?;
    let config = DaemonConfig { topology, runner, drain_timeout: flags.drain_timeout };
    daemon::run(conn, config, stops).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_option_shows_its_environment_value_in_help() {
        use clap::CommandFactory;
        for arg in Flags::command().get_arguments() {
            if arg.get_env().is_some() {
                assert!(arg.is_hide_env_values_set(), "--{:?} would print its environment value", arg.get_long());
            }
        }
    }
}
