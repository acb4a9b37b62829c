//! Running one job's command: spawn it in its own process group, stream its output as batched
//! log events, send heartbeats, enforce the timeout and cancellation with SIGTERM then SIGKILL to
//! the whole group, read its outputs, and say how it ended. Its output and outputs pass through
//! the job's masker before they are published.
//!
//! It does not touch deliveries or queues: the runner decides what to run and settles the message.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use runway_broker::protocol::{Builtin, Command, Completed, EventBody, Job, LogLine, Status, Stream, ms, to_ms};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use crate::environment::{JobVars, job_environment};
use crate::events::EventSink;
use crate::lines::{Chunk, read_lines};
use crate::masking::Masker;

/// Limits and pacing for executing jobs.
#[derive(Debug, Clone)]
pub struct Limits {
    /// How often a running job says it is alive.
    pub heartbeat: Duration,
    /// SIGTERM to SIGKILL, unless the job sets its own.
    pub kill_grace: Duration,
    /// Longest piece of a line before it is split.
    pub max_line: usize,
    /// A log batch is published at this many lines...
    pub batch_lines: usize,
    /// ...or this many bytes...
    pub batch_bytes: usize,
    /// ...or this long after its first line, whichever comes first.
    pub batch_delay: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            heartbeat: Duration::from_secs(5),
            kill_grace: Duration::from_secs(10),
            max_line: 64 * 1024,
            batch_lines: 4096,
            batch_bytes: 128 * 1024,
            batch_delay: Duration::from_millis(5),
        }
    }
}

/// A request to stop a running job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stop {
    /// SIGKILL at once instead of SIGTERM and a grace period.
    pub(crate) force: bool,
}

/// How long output may keep arriving after the job's process group was killed, from a process
/// that left the group but still holds the pipes.
const DRAIN_IDLE: Duration = Duration::from_millis(500);

/// The environment and place a job runs in.
#[derive(Debug)]
pub(crate) struct Context<'a> {
    pub(crate) runner: &'a str,
    pub(crate) workdir: Option<&'a Path>,
    pub(crate) limits: &'a Limits,
    /// The runner's variables the job gets.
    pub(crate) env: &'a BTreeMap<OsString, OsString>,
    /// The job's secrets, resolved: injected into its environment and masked in its output.
    pub(crate) secrets: &'a [(String, String)],
}

/// The program to spawn for `name`: a bare name is looked up in the job's own `PATH` here, so
/// the spawn gets a full path and the standard library can use `posix_spawn` (a `vfork`) rather
/// than `fork`, which copies the runner's page tables (a large share of a short job's cost). A
/// name with a `/`, or one not found, is passed on as it is: the spawn then searches or fails
/// as it always did (127, command not found).
fn program(name: &str, env: &BTreeMap<OsString, OsString>, dir: Option<&Path>) -> PathBuf {
    if name.contains('/') {
        return PathBuf::from(name);
    }
    let Some(path) = env.get(OsStr::new("PATH")) else { return PathBuf::from(name) };
    let cwd = match dir {
        Some(dir) => dir.to_path_buf(),
        None => std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
    };
    which::which_in(name, Some(path), cwd).unwrap_or_else(|_| PathBuf::from(name))
}

/// Run `job` to its end, publishing `started`, `log`, `heartbeat` and `output` events (not
/// `accepted` or `completed`: the caller owns those). Returns what `completed` should say.
pub(crate) async fn execute(
    job: &Job,
    context: &Context<'_>,
    sink: &mut EventSink,
    mut stops: mpsc::UnboundedReceiver<Stop>,
) -> Completed {
    let started = Instant::now();
    if let Command::Builtin(builtin) = job.command {
        return builtin_job(builtin, started);
    }
    let argv = job.command.to_argv(&job.operation, &job.args);
    let output_file = match tempfile::Builder::new().prefix("runway-output-").tempfile() {
        Ok(file) => file,
        Err(err) => return failed_to_start(started, format!("cannot create the RUNWAY_OUTPUT file: {err}"), 126),
    };
    let vars = JobVars { runner: context.runner, output: output_file.path() };
    let env = job_environment(context.env, job, &vars, context.secrets);
    let dir = context.workdir.map(Path::to_path_buf).or_else(|| existing_dir(job.workdir.as_deref()));
    let mut command = tokio::process::Command::new(program(&argv[0], &env, dir.as_deref()));
    command
        .args(&argv[1..])
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(err) => {
            // The shell's conventions: 127 for a command not found, 126 for one that cannot run.
            let code = if err.kind() == io::ErrorKind::NotFound { 127 } else { 126 };
            return failed_to_start(started, format!("cannot run `{}`: {err}", argv[0]), code);
        }
    };
    let Some(pid) = child.id() else {
        return failed_to_start(started, "the process exited before its pid was known".to_owned(), 126);
    };
    let group = Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
    sink.emit(EventBody::Started { pid, argv }).await;

    let (tx, mut chunks) = mpsc::channel::<Chunk>(16);
    let mut readers = tokio::task::JoinSet::new();
    if let Some(stdout) = child.stdout.take() {
        readers.spawn(read_lines(Stream::Stdout, stdout, context.limits.max_line, tx.clone()));
    }
    if let Some(stderr) = child.stderr.take() {
        readers.spawn(read_lines(Stream::Stderr, stderr, context.limits.max_line, tx.clone()));
    }
    drop(tx);

    let limits = context.limits;
    let grace = job.kill_grace_ms.map_or(limits.kill_grace, ms);
    let timeout_at = job.timeout_ms.map(|timeout| started + ms(timeout));
    let mut batch = Batch::default();
    let mut masker = Masker::new(context.secrets.iter().map(|(_, value)| value.as_str()));
    let mut heartbeat = tokio::time::interval_at(started + limits.heartbeat, limits.heartbeat);
    let mut ending: Option<Ending> = None;
    let mut kill_at: Option<Instant> = None;
    let mut stops_open = true;
    let mut output_open = true;

    enum Step {
        Exited(io::Result<ExitStatus>),
        Output(Option<Chunk>),
        Flush,
        Heartbeat,
        TimedOut,
        Stop(Option<Stop>),
        Kill,
    }
    let status = loop {
        let step = tokio::select! {
            status = child.wait() => Step::Exited(status),
            chunk = chunks.recv(), if output_open => Step::Output(chunk),
            _ = sleep_until(batch.flush_at.unwrap_or(started)), if batch.flush_at.is_some() => Step::Flush,
            _ = heartbeat.tick() => Step::Heartbeat,
            _ = sleep_until(timeout_at.unwrap_or(started)), if timeout_at.is_some() && ending.is_none() => Step::TimedOut,
            stop = stops.recv(), if stops_open => Step::Stop(stop),
            _ = sleep_until(kill_at.unwrap_or(started)), if kill_at.is_some() => Step::Kill,
        };
        match step {
            Step::Exited(status) => break status,
            Step::Output(Some(chunk)) => {
                if batch.add(mask(&mut masker, chunk), limits) {
                    batch.publish(sink).await;
                }
            }
            Step::Output(None) => output_open = false,
            Step::Flush => batch.publish(sink).await,
            Step::Heartbeat => sink.emit(EventBody::Heartbeat { interval_ms: to_ms(limits.heartbeat) }).await,
            Step::TimedOut => {
                ending = Some(Ending::TimedOut);
                signal_group(group, Signal::SIGTERM);
                kill_at = Some(Instant::now() + grace);
            }
            Step::Stop(Some(stop)) => {
                if ending.is_none() {
                    ending = Some(Ending::Cancelled);
                }
                if stop.force {
                    signal_group(group, Signal::SIGKILL);
                } else if kill_at.is_none() {
                    signal_group(group, Signal::SIGTERM);
                    kill_at = Some(Instant::now() + grace);
                }
            }
            Step::Stop(None) => stops_open = false,
            Step::Kill => {
                signal_group(group, Signal::SIGKILL);
                kill_at = None;
            }
        }
    };
    let duration = started.elapsed();
    // The job is over when its process is; whatever it left in its group goes with it, as CI
    // runners do, so that a background child holding the pipes cannot keep the job open.
    signal_group(group, Signal::SIGKILL);
    while output_open {
        match tokio::time::timeout(DRAIN_IDLE, chunks.recv()).await {
            Ok(Some(chunk)) => {
                if batch.add(mask(&mut masker, chunk), limits) {
                    batch.publish(sink).await;
                }
            }
            Ok(None) | Err(_) => output_open = false,
        }
    }
    readers.abort_all();
    let held_back = masker.finish(runway_broker::protocol::now_ms());
    if !held_back.is_empty() {
        batch.add(Chunk { lines: held_back, bytes: 0 }, limits);
    }
    batch.publish(sink).await;

    let outputs: BTreeMap<String, String> =
        read_outputs(output_file.path()).into_iter().map(|(key, value)| (key, masker.mask_text(&value))).collect();
    for (key, value) in &outputs {
        sink.emit(EventBody::Output { key: key.clone(), value: value.clone() }).await;
    }
    let (exit_code, signal) = match &status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => (Some(code), None),
            (None, Some(signal)) => (Some(128 + signal), Some(signal)),
            (None, None) => (None, None),
        },
        Err(_) => (None, None),
    };
    let (status, error) = match (ending, &status) {
        (Some(Ending::TimedOut), _) => (
            Status::TimedOut,
            Some(format!("timed out after {}", humantime::format_duration(ms(job.timeout_ms.unwrap_or(0))))),
        ),
        (Some(Ending::Cancelled), _) => (Status::Cancelled, Some("cancelled".to_owned())),
        (None, Err(err)) => (Status::Failed, Some(format!("waiting for the process failed: {err}"))),
        (None, Ok(_)) if exit_code == Some(0) => (Status::Success, None),
        (None, Ok(_)) => (Status::Failed, signal.map(|signal| format!("killed by signal {}", signal_name(signal)))),
    };
    Completed { status, exit_code, signal, duration_ms: to_ms(duration), outputs, error, retrying: None }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    TimedOut,
    Cancelled,
}

/// `chunk` with the job's secrets masked.
fn mask(masker: &mut Masker, chunk: Chunk) -> Chunk {
    Chunk { lines: masker.mask_lines(chunk.lines), bytes: chunk.bytes }
}

/// Lines waiting to be published as one `log` event.
#[derive(Debug, Default)]
struct Batch {
    lines: Vec<LogLine>,
    bytes: usize,
    flush_at: Option<Instant>,
}

impl Batch {
    /// Add a chunk; true when the batch is full and should be published now.
    fn add(&mut self, chunk: Chunk, limits: &Limits) -> bool {
        if self.flush_at.is_none() {
            self.flush_at = Some(Instant::now() + limits.batch_delay);
        }
        self.bytes += chunk.bytes;
        if self.lines.is_empty() {
            self.lines = chunk.lines;
        } else {
            self.lines.extend(chunk.lines);
        }
        self.lines.len() >= limits.batch_lines || self.bytes >= limits.batch_bytes
    }

    async fn publish(&mut self, sink: &mut EventSink) {
        self.flush_at = None;
        self.bytes = 0;
        if !self.lines.is_empty() {
            sink.emit(EventBody::Log { lines: std::mem::take(&mut self.lines) }).await;
        }
    }
}

/// A builtin operation: done here, with no process and no `started` event.
fn builtin_job(builtin: Builtin, started: Instant) -> Completed {
    match builtin {
        Builtin::Noop => Completed {
            status: Status::Success,
            exit_code: Some(0),
            signal: None,
            duration_ms: to_ms(started.elapsed()),
            outputs: BTreeMap::new(),
            error: None,
            retrying: None,
        },
    }
}

fn failed_to_start(started: Instant, error: String, exit_code: i32) -> Completed {
    Completed {
        status: Status::Failed,
        exit_code: Some(exit_code),
        signal: None,
        duration_ms: to_ms(started.elapsed()),
        outputs: BTreeMap::new(),
        error: Some(error),
        retrying: None,
    }
}

fn existing_dir(hint: Option<&str>) -> Option<std::path::PathBuf> {
    let path = Path::new(hint?);
    path.is_dir().then(|| path.to_path_buf())
}

fn signal_group(group: Pid, signal: Signal) {
    // ESRCH means the group is already gone, which is what we want.
    if let Err(err) = killpg(group, signal)
        && err != nix::errno::Errno::ESRCH
    {
        tracing::warn!(pgid = group.as_raw(), ?signal, error = %err, "signalling the job's process group failed");
    }
}

fn signal_name(signal: i32) -> String {
    Signal::try_from(signal).map_or_else(|_| signal.to_string(), |signal| signal.as_str().to_owned())
}

/// Parse the `RUNWAY_OUTPUT` file: one `key=value` per line; later keys win. Lines without `=`
/// are skipped with a warning.
pub(crate) fn parse_outputs(text: &str) -> BTreeMap<String, String> {
    let mut outputs = BTreeMap::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        match line.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                outputs.insert(key.trim().to_owned(), value.to_owned());
            }
            _ => tracing::warn!(line, "RUNWAY_OUTPUT line is not key=value; skipped"),
        }
    }
    outputs
}

fn read_outputs(path: &Path) -> BTreeMap<String, String> {
    match std::fs::read(path) {
        Ok(bytes) => parse_outputs(&String::from_utf8_lossy(&bytes)),
        Err(err) => {
            tracing::warn!(error = %err, "cannot read the RUNWAY_OUTPUT file");
            BTreeMap::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::ffi::OsString;
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};

    use super::{parse_outputs, program};

    #[test]
    fn a_bare_program_is_looked_up_in_the_jobs_own_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        let tool = dir.path().join("only-here");
        std::fs::write(&tool, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let env: BTreeMap<OsString, OsString> =
            [(OsString::from("PATH"), OsString::from(format!("/nonexistent:{}", dir.path().display())))].into();
        assert_eq!(program("only-here", &env, None), tool);
        // A path is taken as it is; a name not found, or with no PATH, is left for the spawn to
        // fail on (127), as before.
        assert_eq!(program("./only-here", &env, None), PathBuf::from("./only-here"));
        assert_eq!(program("not-anywhere", &env, None), PathBuf::from("not-anywhere"));
        assert_eq!(program("only-here", &BTreeMap::new(), Some(Path::new("/"))), PathBuf::from("only-here"));
    }

    #[test]
    fn outputs_are_key_value_lines() {
        let outputs = parse_outputs("version=1.2\n\nurl=http://x?a=b\nnot a pair\nversion=1.3\n");
        assert_eq!(outputs.get("version").map(String::as_str), Some("1.3"));
        assert_eq!(outputs.get("url").map(String::as_str), Some("http://x?a=b"));
        assert_eq!(outputs.len(), 2);
    }
}
