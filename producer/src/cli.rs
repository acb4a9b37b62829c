//! The command line: flags and subcommands of `runway`, parsed with clap.
//!
//! Parsing only; `commands` sends each command to the module that does it.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// runway: run build, deploy, release or any named operation on runners, over RabbitMQ.
#[derive(Debug, Parser)]
#[command(name = "runway", version, about, long_about = None)]
pub struct Cli {
    /// Broker URL (amqp:// or amqps://), the nodes of a cluster comma-separated, or `local` for
    /// the embedded in-memory broker.
    #[arg(long, global = true, env = "RUNWAY_SERVER", hide_env_values = true, value_name = "URL[,URL...]|local")]
    pub server: Option<String>,
    /// Namespace prefix of every exchange and queue (default `runway`).
    #[arg(long, global = true, env = "RUNWAY_NAMESPACE", hide_env_values = true, value_name = "NS")]
    pub namespace: Option<String>,
    /// PEM file of CAs to trust for amqps://, besides the system's.
    #[arg(long, global = true, env = "RUNWAY_TLS_CA", hide_env_values = true, value_name = "PATH")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for amqps://; logs in with EXTERNAL unless the URL names a mechanism.
    #[arg(long, global = true, env = "RUNWAY_TLS_CERT", hide_env_values = true, value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM, unencrypted).
    #[arg(long, global = true, env = "RUNWAY_TLS_KEY", hide_env_values = true, value_name = "PATH")]
    pub tls_key: Option<PathBuf>,
    /// The project file (default: runway.toml in this directory or the nearest parent).
    #[arg(long, short = 'f', global = true, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// More diagnostics on stderr (-v, -vv).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// No status lines: only the job's own output.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an operation of the project file.
    Run {
        /// The operation, as named under [operations] in runway.toml.
        operation: String,
        #[command(flatten)]
        job: JobArgs,
    },
    /// The same as `run build`.
    Build(JobArgs),
    /// The same as `run deploy`.
    Deploy(JobArgs),
    /// The same as `run release`.
    Release(JobArgs),
    /// Run build, deploy and release in order, stopping at the first failure.
    Up {
        /// One event per line, as JSON, instead of human output.
        #[arg(long)]
        json: bool,
    },
    /// Find, inspect, read and cancel jobs (from the server's history).
    Job {
        #[command(subcommand)]
        command: JobCommand,
    },
    /// Queue many jobs at once for remote runners: one JSON job per line on stdin
    /// (`{"operation": "build", "args": [], "env": {}, "target": "any", "timeout": "10m"}`),
    /// one job id per line out, in input order. Nothing is queued if any line is bad.
    Submit,
    /// The runners serving the server.
    Runner {
        #[command(subcommand)]
        command: RunnerCommand,
    },
    /// Print the rabbitmqctl commands that give USER a role's rights in the namespace.
    Roles {
        /// submitter, runner, observer or admin.
        #[arg(value_parser = parse_role)]
        role: runway_broker::roles::Role,
        /// The RabbitMQ user to grant the role.
        #[arg(long)]
        user: String,
        /// The RabbitMQ virtual host.
        #[arg(long, default_value = "/")]
        vhost: String,
        /// Run the commands through rabbitmqctl (on the broker's host, as root or rabbitmq).
        #[arg(long)]
        apply: bool,
    },
    /// Serve a web view of the server's jobs, runners and queues (a job's log live, cancel).
    ///
    /// It has no accounts: it listens on loopback unless told otherwise, and warns then.
    Ui {
        /// The address to listen on (port 0: any free port; the address is printed).
        #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Show only: no cancel button, and cancels sent to it are refused.
        #[arg(long)]
        read_only: bool,
    },
    /// Write a commented runway.toml for this directory (or --file PATH).
    ///
    /// It never overwrites one: an existing file is an error (exit 73).
    Init,
    /// Print a completion script for bash, zsh or fish.
    ///
    /// `runway completions bash > /etc/bash_completion.d/runway`,
    /// `runway completions zsh > ~/.zfunc/_runway`, `runway completions fish > ~/.config/fish/completions/runway.fish`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print runway's man page (roff) on stdout: `runway man | man -l -`.
    #[command(hide = true)]
    Man,
}

fn parse_role(text: &str) -> Result<runway_broker::roles::Role, String> {
    runway_broker::roles::Role::parse(text)
        .ok_or_else(|| format!("`{text}` is not a role; expected submitter, runner, observer or admin"))
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Jobs, newest first.
    List {
        /// Only jobs in this state: scheduled, queued, running, success, failed, cancelled, timed_out, lost, rejected.
        #[arg(long, value_parser = parse_state)]
        state: Option<runway_worker::history::State>,
        /// Only jobs queued within this long (e.g. 1h, 24h, 7d).
        #[arg(long, value_name = "D", value_parser = parse_duration, default_value = "7d")]
        since: Duration,
        /// At most this many jobs.
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: usize,
        /// One JSON object per job and line.
        #[arg(long)]
        json: bool,
    },
    /// Everything known about one job: target, attempts, exit code, outputs.
    Inspect {
        /// The job id, or a unique prefix of at least 8 characters.
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// A job's whole log, stdout and stderr apart, in order.
    Logs {
        /// The job id, or a unique prefix of at least 8 characters.
        id: String,
        /// Keep going live until the job ends, then exit with its exit code.
        #[arg(long)]
        follow: bool,
        /// Prefix each line with the time the runner read it.
        #[arg(long)]
        timestamps: bool,
    },
    /// Stop a job: a queued one never runs, a running one gets SIGTERM, then SIGKILL.
    Cancel {
        /// The job id, or a unique prefix of at least 8 characters.
        id: String,
        /// SIGKILL at once, without the grace period.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum RunnerCommand {
    /// Every live runner, from a broadcast ping.
    List {
        #[arg(long)]
        json: bool,
    },
}

fn parse_state(text: &str) -> Result<runway_worker::history::State, String> {
    runway_worker::history::State::parse(text).ok_or_else(|| {
        format!(
            "`{text}` is not a state; expected scheduled, queued, running, success, failed, cancelled, timed_out, lost or rejected"
        )
    })
}

/// What shapes one job.
#[derive(Debug, Args, Clone, Default)]
pub struct JobArgs {
    /// An environment variable for the job (repeatable); beats the project file. The value is
    /// sent in the job message and stored in the queue: for secrets, use --secret.
    #[arg(long = "env", value_name = "K=V", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,
    /// A secret the runner injects from its own store (repeatable): only the name is sent.
    #[arg(long = "secret", value_name = "NAME", value_parser = parse_secret_name)]
    pub secrets: Vec<String>,
    /// End the job `timed_out` after this long (e.g. 90s, 30m); beats the project file.
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// One event per line, as JSON, instead of human output.
    #[arg(long)]
    pub json: bool,
    /// Queue for any remote runner (a runway-worker), not a runner inside this CLI.
    #[arg(long, conflicts_with_all = ["runner", "labels"])]
    pub remote: bool,
    /// Queue for the remote runner with this id.
    #[arg(long, value_name = "ID", conflicts_with = "labels")]
    pub runner: Option<String>,
    /// Queue for a remote runner holding this label (repeatable: all of them).
    #[arg(long = "label", value_name = "K=V", value_parser = parse_key_value)]
    pub labels: Vec<(String, String)>,
    /// Print the job id and exit once the broker has the job; it runs on a remote runner.
    #[arg(long)]
    pub detach: bool,
    /// Run in this concurrency group: one job of the group at a time; beats the project file.
    #[arg(long, value_name = "NAME")]
    pub concurrency_group: Option<String>,
    /// Queue the job now, for a runner to take once this long has passed (e.g. 90s, 10m);
    /// beats the project file's `delay`.
    #[arg(long, value_name = "D", value_parser = parse_duration, conflicts_with = "at")]
    pub delay: Option<Duration>,
    /// Queue the job now, for a runner to take at this time (RFC 3339 in UTC, e.g.
    /// 2026-12-24T09:00:00Z).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub at: Option<std::time::SystemTime>,
    /// Arguments appended to the operation's command.
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

/// `K=V` into its parts.
pub fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() && !key.contains('\0') => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("`{text}` is not K=V")),
    }
}

/// A secret's name: a variable name.
fn parse_secret_name(text: &str) -> Result<String, String> {
    if runway_worker::environment::is_variable_name(text) {
        Ok(text.to_owned())
    } else {
        Err(format!("`{text}` is not a variable name (empty, or has `=` or NUL)"))
    }
}

/// A human duration (`90s`, `30m`, `1h 30m`) of at least a millisecond (the wire's unit).
/// A time of day in RFC 3339, UTC (`Z`).
pub fn parse_time(text: &str) -> Result<std::time::SystemTime, String> {
    humantime::parse_rfc3339(text)
        .map_err(|err| format!("`{text}` is not a time ({err}); expected RFC 3339 in UTC, e.g. 2026-12-24T09:00:00Z"))
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if duration.is_zero() => Err(format!("`{text}` is zero; expected a positive duration")),
        Ok(duration) if duration.as_millis() == 0 => {
            Err(format!("`{text}` is under a millisecond (durations are sent in whole ms); expected at least 1ms"))
        }
        Ok(duration) => Ok(duration),
        Err(err) => Err(format!("`{text}` is not a duration ({err}); expected e.g. 90s, 30m, 1h 30m")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_option_shows_its_environment_value_in_help() {
        use clap::CommandFactory;
        fn check(command: &clap::Command) {
            for arg in command.get_arguments() {
                if arg.get_env().is_some() {
                    assert!(arg.is_hide_env_values_set(), "--{:?} would print its environment value", arg.get_long());
                }
            }
            for sub in command.get_subcommands() {
                check(sub);
            }
        }
        check(&Cli::command());
    }

    #[test]
    fn key_values() {
        assert_eq!(parse_key_value("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert_eq!(parse_key_value("A="), Ok(("A".into(), String::new())));
        assert!(parse_key_value("=x").is_err());
        assert!(parse_key_value("novalue").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("1ns").unwrap_err().contains("under a millisecond"));
        assert!(parse_duration("999us").is_err());
        assert_eq!(parse_duration("1ms"), Ok(Duration::from_millis(1)));
        assert!(parse_duration("soon").unwrap_err().contains("expected e.g."));
    }

    #[test]
    fn the_cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
