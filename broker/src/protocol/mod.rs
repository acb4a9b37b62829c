//! The wire protocol: the job and event bodies that travel through the broker, and their codec.
//!
//! Every body is JSON with a `v` field (docs/PROTOCOL.md). This module only turns values into bytes
//! and back; it does not know queues, exchanges or how a message is routed.
//!
//! The bodies are here; `codec` turns them into bytes and back (the version check, the bound on a
//! job's size, the lenient reads); `tests` round-trips them.

mod codec;

pub use codec::{DecodeError, decode, decode_event, decode_job, encode, probe_job_id};

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The protocol version this build writes and reads.
pub const VERSION: u32 = 1;

/// The AMQP `type` property of a job message.
pub const KIND_JOB: &str = "job";
/// The AMQP `type` property of a control message.
pub const KIND_CONTROL: &str = "control";
/// The AMQP `type` property of a runner's answer to a ping.
pub const KIND_RUNNER: &str = "runner";

/// Milliseconds since the Unix epoch, the unit of every timestamp on the wire.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

/// What to execute: a shell string (run under `sh -c`) or an argv.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "WireCommand", into = "WireCommand")]
pub enum Command {
    Shell(String),
    Argv(Vec<String>),
    /// Done by the runner itself, without a process.
    Builtin(Builtin),
    /// A builtin this build does not know (a later version's): shown by name, never run.
    UnknownBuiltin(String),
    /// A kind of command this build does not know, kept as it came: shown, never run.
    Unknown(serde_json::Value),
}

/// [`Command`] as it is on the wire: decoding never fails on a builtin or kind of command
/// from a later version (PROTOCOL.md promises forward compatibility); `decode_job` refuses to
/// run them.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum WireCommand {
    Shell(String),
    Argv(Vec<String>),
    Builtin(String),
    #[serde(untagged)]
    Other(serde_json::Value),
}

impl From<WireCommand> for Command {
    fn from(wire: WireCommand) -> Command {
        match wire {
            WireCommand::Shell(script) => Command::Shell(script),
            WireCommand::Argv(argv) => Command::Argv(argv),
            WireCommand::Builtin(name) => match Builtin::ALL.into_iter().find(|builtin| builtin.name() == name) {
                Some(builtin) => Command::Builtin(builtin),
                None => Command::UnknownBuiltin(name),
            },
            WireCommand::Other(value) => Command::Unknown(value),
        }
    }
}

impl From<Command> for WireCommand {
    fn from(command: Command) -> WireCommand {
        match command {
            Command::Shell(script) => WireCommand::Shell(script),
            Command::Argv(argv) => WireCommand::Argv(argv),
            Command::Builtin(builtin) => WireCommand::Builtin(builtin.name().to_owned()),
            Command::UnknownBuiltin(name) => WireCommand::Builtin(name),
            Command::Unknown(value) => WireCommand::Other(value),
        }
    }
}

/// The operations a runner does itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Builtin {
    /// Nothing: completes with success at once. It measures runway's own cost per job (no
    /// process is spawned), and checks that a runner answers.
    Noop,
}

impl Builtin {
    pub const ALL: [Builtin; 1] = [Builtin::Noop];

    pub fn name(self) -> &'static str {
        match self {
            Builtin::Noop => "noop",
        }
    }
}

impl Command {
    /// The argv to execute, with the job's extra `args` appended.
    ///
    /// A shell string becomes `sh -c <string> <operation> <args...>`, so the args are `$1...` in
    /// the script; an argv simply gets them appended; a builtin is shown as `builtin:<name>`.
    pub fn to_argv(&self, operation: &str, args: &[String]) -> Vec<String> {
        match self {
            Command::Shell(script) => {
                let mut argv = vec!["sh".to_owned(), "-c".to_owned(), script.clone()];
                if !args.is_empty() {
                    argv.push(operation.to_owned());
                    argv.extend(args.iter().cloned());
                }
                argv
            }
            Command::Argv(argv) => argv.iter().chain(args).cloned().collect(),
            Command::Builtin(builtin) => vec![format!("builtin:{}", builtin.name())],
            Command::UnknownBuiltin(name) => vec![format!("builtin:{name}")],
            Command::Unknown(value) => vec![format!("unknown:{}", unknown_kind(value))],
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Command::Shell(script) => script.trim().is_empty(),
            Command::Argv(argv) => argv.first().is_none_or(|program| program.is_empty()),
            Command::Builtin(_) | Command::UnknownBuiltin(_) | Command::Unknown(_) => false,
        }
    }

    /// Why this build cannot run the command, if it is from a later version:
    /// "unknown builtin `frobnicate`", "unknown kind of command `wasm`".
    pub fn unknown(&self) -> Option<String> {
        match self {
            Command::Shell(_) | Command::Argv(_) | Command::Builtin(_) => None,
            Command::UnknownBuiltin(name) => Some(format!("unknown builtin `{name}`")),
            Command::Unknown(value) => Some(format!("unknown kind of command `{}`", unknown_kind(value))),
        }
    }
}

/// The name of an unknown command: the key of `{"kind": ...}`, or the JSON itself.
fn unknown_kind(value: &serde_json::Value) -> String {
    match value.as_object() {
        Some(object) if object.len() == 1 => object.keys().next().cloned().unwrap_or_default(),
        _ => value.to_string(),
    }
}

/// Which runners may take a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Any runner that consumes the shared queue.
    Any,
    /// Exactly the runner with this id.
    Runner(String),
    /// Any runner holding every one of these labels.
    Labels(BTreeMap<String, String>),
}

/// One job: what to run, where, and under which limits. Its `Debug` shows env names, never values.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub v: u32,
    pub id: Uuid,
    pub operation: String,
    pub project: String,
    pub command: Command,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The names of the secrets the runner injects from its own store; values never travel.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// Where the runner should run the command when it has no working directory of its own.
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// How long a SIGTERM'd job gets before SIGKILL (timeout and cancel).
    #[serde(default)]
    pub kill_grace_ms: Option<u64>,
    pub target: Target,
    #[serde(default)]
    pub retry_on_lost: bool,
    pub attempt: u32,
    pub created_at_ms: u64,
    pub queued_by: String,
    /// The concurrency group: at most one job of a group runs at a time, in queue order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// A delayed job (or a retry that waits): no runner takes it before this time (ms since the
    /// epoch); it waits in a holding queue of the broker's until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before_ms: Option<u64>,
    /// When an attempt that ended badly is queued again as the next attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
}

/// A job's automatic retries: an attempt that ended in one of `on` (and, for `failed`, with one
/// of `exit_codes` if any are named) is queued again as the next attempt after `delay_ms`,
/// until `attempts` attempts were made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retry {
    /// Attempts in all, the first one included.
    pub attempts: u32,
    pub on: Vec<Status>,
    #[serde(default)]
    pub delay_ms: u64,
    /// Only these exit codes of a `failed` attempt are retried; empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exit_codes: Vec<i32>,
}

impl Retry {
    /// The attempt to queue after attempt `attempt` ended as `completed`, if any.
    pub fn next_attempt(&self, attempt: u32, completed: &Completed) -> Option<u32> {
        if !self.on.contains(&completed.status) || attempt >= self.attempts {
            return None;
        }
        let code_matches = completed.status != Status::Failed
            || self.exit_codes.is_empty()
            || completed.exit_code.is_some_and(|code| self.exit_codes.contains(&code));
        if !code_matches {
            return None;
        }
        attempt.checked_add(1)
    }
}

/// Set on the completion of an attempt that is queued again: which attempt comes next, and
/// when it is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retrying {
    pub attempt: u32,
    pub at_ms: u64,
    /// How long it waits before it is due (the operation's retry delay).
    #[serde(default)]
    pub delay_ms: u64,
}

impl Job {
    /// A job of this protocol version with a fresh id, created now, attempt 1, for any runner,
    /// and nothing optional set; callers set what they need with struct update syntax.
    pub fn new(operation: &str, project: &str, command: Command, queued_by: &str) -> Job {
        Job {
            v: VERSION,
            id: Uuid::now_v7(),
            operation: operation.to_owned(),
            project: project.to_owned(),
            command,
            args: Vec::new(),
            env: BTreeMap::new(),
            workdir: None,
            timeout_ms: None,
            kill_grace_ms: None,
            target: Target::Any,
            retry_on_lost: false,
            attempt: 1,
            created_at_ms: now_ms(),
            queued_by: queued_by.to_owned(),
            group: None,
            not_before_ms: None,
            retry: None,
            secrets: Vec::new(),
        }
    }
}

/// Every field but env values, so that a `?job` in a log line cannot leak one. Destructured in
/// full: a new field must be judged here (is it secret?) before it compiles.
impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Job {
            v,
            id,
            operation,
            project,
            command,
            args,
            env,
            workdir,
            timeout_ms,
            kill_grace_ms,
            target,
            retry_on_lost,
            attempt,
            created_at_ms,
            queued_by,
            group,
            secrets,
            not_before_ms,
            retry,
        } = self;
        f.debug_struct("Job")
            .field("v", v)
            .field("id", id)
            .field("operation", operation)
            .field("project", project)
            .field("command", command)
            .field("args", args)
            .field("env_keys", &env.keys().collect::<Vec<_>>())
            .field("workdir", workdir)
            .field("timeout_ms", timeout_ms)
            .field("kill_grace_ms", kill_grace_ms)
            .field("target", target)
            .field("retry_on_lost", retry_on_lost)
            .field("attempt", attempt)
            .field("created_at_ms", created_at_ms)
            .field("queued_by", queued_by)
            .field("group", group)
            .field("secrets", secrets)
            .field("not_before_ms", not_before_ms)
            .field("retry", retry)
            .finish()
    }
}

/// Which pipe a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stream {
    #[serde(rename = "out")]
    Stdout,
    #[serde(rename = "err")]
    Stderr,
}

/// One line of output (or one piece of a line longer than the runner's bound).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// The stream.
    pub s: Stream,
    /// When the runner read it, in ms since the epoch.
    pub t: u64,
    /// The text without its newline; base64 of the raw bytes when `b64` is set.
    pub l: String,
    /// The bytes were not UTF-8, so `l` holds them in base64.
    #[serde(default, skip_serializing_if = "is_false")]
    pub b64: bool,
    /// Partial: no newline followed these bytes (a split long line, or the last line of output).
    #[serde(default, skip_serializing_if = "is_false")]
    pub p: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

impl LogLine {
    /// A line from raw bytes, kept exactly: UTF-8 as text, anything else as base64.
    pub fn from_bytes(stream: Stream, t: u64, bytes: &[u8], partial: bool) -> LogLine {
        match std::str::from_utf8(bytes) {
            Ok(text) => LogLine { s: stream, t, l: text.to_owned(), b64: false, p: partial },
            Err(_) => LogLine {
                s: stream,
                t,
                l: base64::engine::general_purpose::STANDARD.encode(bytes),
                b64: true,
                p: partial,
            },
        }
    }

    /// The raw bytes of the line, without its newline.
    pub fn bytes(&self) -> Cow<'_, [u8]> {
        if self.b64 {
            // A peer that sent bad base64 gets its text shown as it is rather than dropped.
            match base64::engine::general_purpose::STANDARD.decode(&self.l) {
                Ok(bytes) => Cow::Owned(bytes),
                Err(_) => Cow::Borrowed(self.l.as_bytes()),
            }
        } else {
            Cow::Borrowed(self.l.as_bytes())
        }
    }
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Success,
    Failed,
    Cancelled,
    TimedOut,
    Lost,
    Rejected,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::TimedOut => "timed_out",
            Status::Lost => "lost",
            Status::Rejected => "rejected",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The final event of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completed {
    pub status: Status,
    /// The exit code, or 128 + signal number when a signal ended the process.
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub signal: Option<i32>,
    pub duration_ms: u64,
    #[serde(default)]
    pub outputs: BTreeMap<String, String>,
    #[serde(default)]
    pub error: Option<String>,
    /// The job is queued again: this attempt is not its end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrying: Option<Retrying>,
}

/// What the producer records when a job is queued: the job without its environment values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    pub operation: String,
    pub project: String,
    pub command: Command,
    #[serde(default)]
    pub args: Vec<String>,
    /// The names of the job's environment variables; their values are never recorded.
    #[serde(default)]
    pub env_keys: Vec<String>,
    /// The names of the secrets the job asks its runner for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    pub target: Target,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub retry_on_lost: bool,
    pub queued_by: String,
    pub created_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before_ms: Option<u64>,
    /// Boxed: most jobs have none, and every event body is as large as its largest kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Box<Retry>>,
}

impl Queued {
    pub fn of(job: &Job) -> Queued {
        Queued {
            operation: job.operation.clone(),
            project: job.project.clone(),
            command: job.command.clone(),
            args: job.args.clone(),
            env_keys: job.env.keys().cloned().collect(),
            secrets: job.secrets.clone(),
            target: job.target.clone(),
            timeout_ms: job.timeout_ms,
            retry_on_lost: job.retry_on_lost,
            queued_by: job.queued_by.clone(),
            created_at_ms: job.created_at_ms,
            group: job.group.clone(),
            not_before_ms: job.not_before_ms,
            retry: job.retry.clone().map(Box::new),
        }
    }
}

impl Completed {
    /// A job that ended without an exit of its own (cancelled before it started, rejected,
    /// lost), and why.
    pub fn without_exit(status: Status, error: String) -> Completed {
        Completed {
            status,
            exit_code: None,
            signal: None,
            duration_ms: 0,
            outputs: BTreeMap::new(),
            error: Some(error),
            retrying: None,
        }
    }
}

/// What happened, one variant per event kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum EventBody {
    /// The producer queued the job (published by the producer, `seq` 0, `runner` empty).
    Queued(Queued),
    /// Someone asked to cancel the job (published by the canceller, `seq` 0), and why when it
    /// was not a person's own request (`concurrency_pending = "cancel"`).
    CancelRequested {
        by: String,
        force: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A runner took the job off its queue; it sends a heartbeat every `heartbeat_ms` while the
    /// job runs.
    Accepted { hostname: String, heartbeat_ms: u64 },
    /// The command is running.
    Started { pid: u32, argv: Vec<String> },
    /// A batch of output lines, in the order the runner read them.
    Log { lines: Vec<LogLine> },
    /// The job is still running (sent every heartbeat interval).
    Heartbeat { interval_ms: u64 },
    /// One key/value output, read from the `RUNWAY_OUTPUT` file.
    Output { key: String, value: String },
    /// The job ended.
    Completed(Completed),
    /// A kind of event this build does not know (a later version's), kept as it came: shown as
    /// such, never dropped. Only [`decode_event`] makes it; it is never published.
    #[serde(skip_deserializing)]
    Unknown { kind: String, data: serde_json::Value },
}

impl EventBody {
    /// The event kind, as used in routing keys.
    pub fn kind(&self) -> &'static str {
        match self {
            EventBody::Queued(_) => "queued",
            EventBody::CancelRequested { .. } => "cancel_requested",
            EventBody::Accepted { .. } => "accepted",
            EventBody::Started { .. } => "started",
            EventBody::Log { .. } => "log",
            EventBody::Heartbeat { .. } => "heartbeat",
            EventBody::Output { .. } => "output",
            EventBody::Completed(_) => "completed",
            EventBody::Unknown { .. } => "unknown",
        }
    }
}

/// One event of one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub v: u32,
    pub job: Uuid,
    /// Per job and attempt, gap-free, starting at 1.
    pub seq: u64,
    pub ts: u64,
    pub runner: String,
    pub attempt: u32,
    /// Nested rather than flattened: serde buffers a flattened body whole, which costs on every log batch.
    pub body: EventBody,
}

/// A message on the control exchange, broadcast to every runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Control {
    pub v: u32,
    pub body: ControlBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum ControlBody {
    /// Stop a job wherever it runs, and never start it later; `force` skips the SIGTERM grace.
    Cancel { job: Uuid, force: bool },
    /// Every runner answers with a [`RunnerInfo`] to the queue `reply_to`.
    Ping { reply_to: String },
    /// A job of concurrency group `name` is queued: runners consume the group's queue.
    Group { name: String },
}

impl ControlBody {
    /// The routing key on the control exchange.
    pub fn kind(&self) -> &'static str {
        match self {
            ControlBody::Cancel { .. } => "cancel",
            ControlBody::Ping { .. } => "ping",
            ControlBody::Group { .. } => "group",
        }
    }
}

/// A runner's answer to a ping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerInfo {
    pub v: u32,
    pub id: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub concurrency: u32,
    /// Jobs running (or waiting for a slot) now.
    pub running: u32,
    pub by_id_only: bool,
    /// A runner inside a `runway` CLI rather than a daemon.
    pub in_process: bool,
    pub hostname: String,
    /// The runway version of the runner.
    pub version: String,
    pub started_at_ms: u64,
}

/// A duration on the wire (ms) as a `Duration`.
pub fn ms(value: u64) -> Duration {
    Duration::from_millis(value)
}

/// A `Duration` as wire milliseconds, saturating.
pub fn to_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
