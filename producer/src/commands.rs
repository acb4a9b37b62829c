//! What each `runway` command does: resolve the project and the mode, queue jobs, follow them.
//!
//! One code path for every mode: local mode only swaps in the in-memory broker and an in-process
//! runner; the job is queued and followed through the broker interface all the same.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use runway_broker::protocol::{self, Completed, Event, EventBody, Job, Queued, Status, Target, VERSION, now_ms};
use runway_broker::topology::{DEFAULT_NAMESPACE, Retention, Topology};
use runway_broker::{Broker, Connection, ConsumeOptions, StreamOffset};
use runway_worker::streams::{LARGE_PREFETCH, Read, StreamReader};
use runway_worker::{Runner, RunnerConfig, Shutdown};
use uuid::Uuid;

use crate::cli::{Cli, Command, JobArgs, JobCommand, RunnerCommand};
use crate::exit::{self, CliError};
use crate::follow::{Printer, Style};
use crate::jobs;
use crate::project::{self, Operation, Project};
use runway_worker::history::JobRecord;

/// How long to wait for the broker to answer a connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Events delivered ahead to an attached CLI: a log batch can be 128 KiB, so this bounds the
/// CLI's memory (8 MiB) while keeping the stream flowing.
const EVENTS_PREFETCH: u16 = 64;

/// How long an attached CLI tries to connect again after its connection dropped.
const REJOIN_PATIENCE: Duration = Duration::from_secs(300);

/// How long a job may wait for a runner before the CLI says where it waits.
const WAITING_NOTICE: Duration = Duration::from_secs(3);

/// Run the parsed command line; `interrupts` yields once per Ctrl-C. Returns the exit code.
pub async fn run(cli: Cli, interrupts: impl Interrupts) -> u8 {
    match dispatch(cli, interrupts).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("runway: error: {err}");
            err.exit_code()
        }
    }
}

/// A source of Ctrl-C presses.
pub trait Interrupts: Send {
    fn next(&mut self) -> impl Future<Output = ()> + Send;
}

async fn dispatch(cli: Cli, mut interrupts: impl Interrupts) -> Result<u8, CliError> {
    match &cli.command {
        Command::Job { command } => return job_command(&cli, command).await,
        Command::Runner { command: RunnerCommand::List { json } } => {
            let (conn, topology) = connect_server(&cli).await?;
            let code = jobs::runners(&conn, &topology, *json).await;
            conn.close().await;
            return code;
        }
        Command::Run { .. } | Command::Build(_) | Command::Deploy(_) | Command::Release(_) | Command::Up { .. } => {}
    }
    let project = load_project(cli.file.as_deref())?;
    let (operations, json): (Vec<(String, JobArgs)>, bool) = match &cli.command {
        Command::Run { operation, job } => (vec![(operation.clone(), job.clone())], job.json),
        Command::Build(job) => (vec![("build".to_owned(), job.clone())], job.json),
        Command::Deploy(job) => (vec![("deploy".to_owned(), job.clone())], job.json),
        Command::Release(job) => (vec![("release".to_owned(), job.clone())], job.json),
        Command::Up { json } => (up_operations(&project, cli.quiet || *json)?, *json),
        Command::Job { .. } | Command::Runner { .. } => unreachable!("handled above"),
    };
    let server = cli.server.clone().or_else(|| project.server.as_ref().map(|server| server.url.clone()));
    let server = server.filter(|url| url != "local");
    // Resolve everything before connecting, so bad input fails fast and changes nothing.
    let mut planned = Vec::new();
    for (name, args) in &operations {
        let operation = find_operation(&project, name)?;
        let target = remote_target(args, operation, server.is_some())?;
        planned.push((operation.clone(), args.clone(), target));
    }
    let needs_runner = planned.iter().any(|(_, _, target)| target.is_none());
    let mut session = Session::open(&cli, &project, server.as_deref(), needs_runner).await?;
    let style = if json { Style::Json } else { Style::Human { quiet: cli.quiet } };
    let mut code = exit::SUCCESS;
    for (operation, args, target) in planned {
        let target = target.unwrap_or_else(|| session.own_target());
        let job = build_job(&project, &operation, &args, target);
        if args.detach {
            session.submit(&job).await?;
            println!("{}", job.id);
            continue;
        }
        let completed = session.submit_and_follow(&job, style, &mut interrupts).await?;
        code = exit::for_job(&completed);
        if code != exit::SUCCESS {
            break;
        }
    }
    session.close().await;
    Ok(code)
}

/// The remote target a job asks for (flags beat the project file), or `None` for the runner
/// inside this CLI.
fn remote_target(args: &JobArgs, operation: &Operation, has_server: bool) -> Result<Option<Target>, CliError> {
    let flagged = if args.remote {
        Some(Target::Any)
    } else if let Some(id) = &args.runner {
        runway_broker::topology::check_runner_id(id).map_err(|err| CliError::Usage(err.to_string()))?;
        Some(Target::Runner(id.clone()))
    } else if !args.labels.is_empty() {
        let labels: BTreeMap<String, String> = args.labels.iter().cloned().collect();
        runway_broker::topology::check_labels(&labels).map_err(|err| CliError::Usage(err.to_string()))?;
        Some(Target::Labels(labels))
    } else {
        None
    };
    let target = flagged.or_else(|| operation.target.clone());
    let target = match (target, args.detach) {
        // A detached job must outlive this CLI, so it cannot run inside it.
        (None, true) => Some(Target::Any),
        (target, _) => target,
    };
    if target.is_some() && !has_server {
        let why = if args.detach { "--detach" } else { "a remote target (--remote, --runner, --label or `target`)" };
        return Err(CliError::Usage(format!(
            "{why} needs a server: set [server] url in runway.toml, RUNWAY_SERVER, or --server URL (operation `{}`)",
            operation.name
        )));
    }
    Ok(target)
}

/// `runway job ...`: these read the server's history, so they need a server, not a project.
async fn job_command(cli: &Cli, command: &JobCommand) -> Result<u8, CliError> {
    let (conn, topology) = connect_server(cli).await?;
    let code = match command {
        JobCommand::List { state, since, limit, json } => {
            let filter = jobs::ListFilter { state: *state, since: *since, limit: *limit };
            jobs::list(&conn, &topology, &filter, *json).await
        }
        JobCommand::Inspect { id, json } => jobs::inspect(&conn, &topology, id, *json).await,
        JobCommand::Logs { id, follow, timestamps } => {
            jobs::logs(&conn, &topology, id, *follow, *timestamps, cli.quiet).await
        }
        JobCommand::Cancel { id, force } => jobs::cancel(&conn, &topology, id, *force).await,
    };
    conn.close().await;
    code
}

/// Connect to the configured server (flags, environment, then the project file if there is one).
async fn connect_server(cli: &Cli) -> Result<(Connection, Topology), CliError> {
    let project = match load_project(cli.file.as_deref()) {
        Ok(project) => Some(project),
        Err(CliError::Project(err)) if err.is_not_found() && cli.file.is_none() => None,
        Err(err) => return Err(err),
    };
    let server = cli.server.clone().or_else(|| project.as_ref().and_then(|p| p.server.as_ref().map(|s| s.url.clone())));
    let Some(url) = server.filter(|url| url != "local") else {
        return Err(CliError::Usage(
            "job history and runners live on a server, and none is configured: pass --server URL, set RUNWAY_SERVER, \
             or add [server] url to runway.toml (local mode keeps no history beyond one run)"
                .to_owned(),
        ));
    };
    let namespace = cli
        .namespace
        .clone()
        .or_else(|| project.as_ref().and_then(|p| p.server.as_ref().and_then(|s| s.namespace.clone())))
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
    let topology = Topology::new(&namespace).map_err(|err| CliError::Usage(err.to_string()))?;
    let broker = Broker::amqp(&url, CONNECT_TIMEOUT).map_err(|err| CliError::Usage(err.to_string()))?;
    let conn = broker.connect().await?;
    topology.ensure(&conn, &Retention::default()).await?;
    Ok((conn, topology))
}

fn load_project(file: Option<&Path>) -> Result<Project, CliError> {
    let path = match file {
        Some(path) => path.to_path_buf(),
        None => {
            let cwd = std::env::current_dir()
                .map_err(|err| CliError::Internal(format!("cannot read the current directory: {err}")))?;
            project::find(&cwd)?
        }
    };
    Ok(project::load(&path)?)
}

fn find_operation<'a>(project: &'a Project, name: &str) -> Result<&'a Operation, CliError> {
    project.operations.get(name).ok_or_else(|| CliError::UnknownOperation {
        name: name.to_owned(),
        defined: project.operations.keys().cloned().collect(),
    })
}

/// The operations of `up`: build, deploy, release, skipping (with a note) those not defined.
fn up_operations(project: &Project, quiet: bool) -> Result<Vec<(String, JobArgs)>, CliError> {
    let mut operations = Vec::new();
    for name in ["build", "deploy", "release"] {
        if project.operations.contains_key(name) {
            operations.push((name.to_owned(), JobArgs::default()));
        } else if !quiet {
            eprintln!("runway: skipping {name}: not defined in {}", project.path.display());
        }
    }
    if operations.is_empty() {
        return Err(CliError::Usage(format!(
            "`up` runs build, deploy and release, and {} defines none of them",
            project.path.display()
        )));
    }
    Ok(operations)
}

fn build_job(project: &Project, operation: &Operation, args: &JobArgs, target: Target) -> Job {
    let mut env = operation.env.clone();
    env.extend(args.env.iter().cloned());
    Job {
        v: VERSION,
        id: Uuid::now_v7(),
        operation: operation.name.clone(),
        project: project.name.clone(),
        command: operation.command.clone(),
        args: args.args.clone(),
        env,
        workdir: Some(project.dir.display().to_string()),
        timeout_ms: args.timeout.or(operation.timeout).map(protocol::to_ms),
        kill_grace_ms: operation.kill_grace.map(protocol::to_ms),
        target,
        retry_on_lost: operation.retry_on_lost,
        attempt: 1,
        created_at_ms: now_ms(),
        queued_by: queued_by(),
    }
}

pub(crate) fn queued_by() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".to_owned());
    let host = nix_hostname();
    format!("{user}@{host}")
}

fn nix_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// A connection to the broker, and the in-process runner when the mode has one.
#[derive(Debug)]
struct Session {
    conn: Connection,
    topology: Topology,
    runner: Option<Runner>,
    /// The runner's own connection, kept so its queue lives exactly as long as the session.
    runner_conn: Option<Connection>,
}

impl Session {
    async fn open(cli: &Cli, project: &Project, server: Option<&str>, needs_runner: bool) -> Result<Session, CliError> {
        let namespace = cli
            .namespace
            .clone()
            .or_else(|| project.server.as_ref().and_then(|server| server.namespace.clone()))
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        let topology = Topology::new(&namespace).map_err(|err| CliError::Usage(err.to_string()))?;
        let broker = match server {
            None => Broker::memory(),
            Some(url) => Broker::amqp(url, CONNECT_TIMEOUT).map_err(|err| CliError::Usage(err.to_string()))?,
        };
        let conn = broker.connect().await?;
        topology.ensure(&conn, &Retention::default()).await?;
        if !needs_runner {
            return Ok(Session { conn, topology, runner: None, runner_conn: None });
        }
        // Local and CLI-runner modes: a by-id-only runner inside this process, on a connection of
        // its own so that its exclusive queue lives exactly as long as it does.
        let runner_conn = broker.connect().await?;
        let mut config = RunnerConfig::new(format!("cli-{}", &Uuid::now_v7().simple().to_string()[20..]));
        config.by_id_only = true;
        config.in_process = true;
        let runner = runway_worker::start(&runner_conn, &topology, config)
            .await
            .map_err(|err| CliError::Internal(err.to_string()))?;
        Ok(Session { conn, topology, runner: Some(runner), runner_conn: Some(runner_conn) })
    }

    /// The target that reaches this CLI's own runner.
    fn own_target(&self) -> Target {
        match &self.runner {
            Some(runner) => Target::Runner(runner.id().to_owned()),
            None => Target::Any,
        }
    }

    /// Record `job` in the history, publish it, and wait for the broker's confirm. The record
    /// goes first so that it precedes every event of the job; a job no runner serves gets a
    /// `rejected` completion on the record, so the history does not show it waiting forever.
    async fn submit(&self, job: &Job) -> Result<(), CliError> {
        self.record(job, EventBody::Queued(Queued::of(job))).await?;
        match self.topology.publish_job(&self.conn, job).await {
            Ok(()) => Ok(()),
            Err(runway_broker::Error::Unroutable { .. }) => {
                let message = format!(
                    "no runner serves {}: no queue is bound for it, so job {} was not queued",
                    describe_target(&job.target),
                    job.id
                );
                let rejected = Completed::without_exit(Status::Rejected, message.clone());
                self.record(job, EventBody::Completed(rejected)).await?;
                Err(CliError::NoRunner(message))
            }
            Err(other) => Err(CliError::Broker(other)),
        }
    }

    /// Publish an event about `job` on behalf of the producer (`seq` 0, no runner).
    async fn record(&self, job: &Job, body: EventBody) -> Result<(), CliError> {
        let event =
            Event { v: VERSION, job: job.id, seq: 0, ts: now_ms(), runner: String::new(), attempt: job.attempt, body };
        self.topology.publish_event(&self.conn, &event).await?.wait().await?;
        Ok(())
    }

    /// Queue `job` and print its events until it completes. The first interrupt cancels the job
    /// and keeps following it to its end; the second kills it at once.
    async fn submit_and_follow(
        &mut self,
        job: &Job,
        style: Style,
        interrupts: &mut impl Interrupts,
    ) -> Result<Completed, CliError> {
        let mut printer = Printer::new(style, &job.operation);
        // Bind before publishing, so not even the first event can be missed.
        let queue = self.topology.declare_job_events_queue(&self.conn, job.id).await?;
        let mut events = self.conn.consume(&queue, &ConsumeOptions::with_prefetch(EVENTS_PREFETCH)).await?;
        self.submit(job).await?;
        printer.status(&format!("queued {} as job {}", job.operation, job.id));
        let mut interrupted = 0;
        // Until a runner accepts the job, say after a while where it waits and who could take it.
        let mut waiting_check = Some(Box::pin(tokio::time::sleep(WAITING_NOTICE)));
        // Once it runs, its runner must be heard from: three heartbeat intervals of silence is `lost`.
        let mut record = JobRecord::new(job.id);
        let mut last_heard = tokio::time::Instant::now();
        let mut silence_check = tokio::time::interval(Duration::from_millis(250));
        let mut announced_silence: Option<u32> = None;
        loop {
            let next = tokio::select! {
                delivery = events.next() => Some(delivery),
                () = interrupts.next() => None,
                () = async { if let Some(timer) = waiting_check.as_mut() { timer.await } }, if waiting_check.is_some() => {
                    waiting_check = None;
                    self.report_waiting(&job.target, &mut printer).await;
                    continue;
                }
                _ = silence_check.tick(), if !record.attempts.is_empty() => {
                    if let Some(lost) = lost(&record, last_heard) {
                        let attempt = record.last_attempt().map_or(0, |attempt| attempt.number);
                        if !job.retry_on_lost {
                            printer.status(&lost.error.clone().unwrap_or_default());
                            return Ok(lost);
                        }
                        // Another runner will take it up as the next attempt: keep following.
                        if announced_silence != Some(attempt) {
                            announced_silence = Some(attempt);
                            printer.status(&format!(
                                "{}; retry_on_lost is set, so it runs again when a runner takes it up",
                                lost.error.unwrap_or_default()
                            ));
                        }
                    }
                    continue;
                }
            };
            match next {
                Some(Some(Ok(delivery))) => {
                    if let Ok(event) = protocol::decode::<Event>(&delivery.body, "event") {
                        // Only a runner's events say the job left its queue (not our own record).
                        if !event.runner.is_empty() {
                            waiting_check = None;
                            last_heard = tokio::time::Instant::now();
                        }
                        record.apply(&event);
                    }
                    let completed = printer.event(&delivery.body);
                    if let Err(err) = delivery.acker.ack().await {
                        tracing::debug!(error = %err, "acknowledging an event failed");
                    }
                    if let Some(completed) = completed {
                        return Ok(completed);
                    }
                }
                Some(Some(Err(err))) if !err.is_unreachable() => return Err(CliError::Broker(err)),
                // The connection dropped (a broker restart): connect again and pick up the job's
                // events where they were, from the history.
                Some(Some(Err(_)) | None) => {
                    match self.rejoin(job, &mut printer, &mut record, interrupts).await? {
                        Rejoined::Following(again) => events = again,
                        Rejoined::Ended(completed) => return Ok(completed),
                    }
                    last_heard = tokio::time::Instant::now();
                }
                None => {
                    interrupted += 1;
                    let force = interrupted > 1;
                    printer.status(if force {
                        "interrupted again: killing the job"
                    } else {
                        "interrupted: cancelling the job (Ctrl-C again to kill it)"
                    });
                    jobs::request_cancel(&self.conn, &self.topology, job.id, force, job.attempt).await?;
                }
            }
        }
    }

    /// After the connection dropped: dial again (with a growing pause, for up to
    /// [`REJOIN_PATIENCE`]), bind a new event queue for the job, then read the events missed
    /// from the history; the printer skips what it printed already.
    async fn rejoin(
        &mut self,
        job: &Job,
        printer: &mut Printer,
        record: &mut JobRecord,
        interrupts: &mut impl Interrupts,
    ) -> Result<Rejoined, CliError> {
        let host = self.conn.display_name();
        printer.status(&format!("lost the connection to {host}; connecting again"));
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(200);
        loop {
            // Connected is not yet ready: right after a restart, the broker accepts connections
            // before its streams are back ("home node ... is down"). Any failure is retried.
            let attempt = async {
                let conn = self.conn.redial().await?;
                let queue = self.topology.declare_job_events_queue(&conn, job.id).await?;
                let events = conn.consume(&queue, &ConsumeOptions::with_prefetch(EVENTS_PREFETCH)).await?;
                let ended = catch_up(&conn, &self.topology, job, printer, record).await?;
                Ok::<_, CliError>((conn, events, ended))
            };
            let failure = tokio::select! {
                result = attempt => match result {
                    Ok((conn, events, ended)) => {
                        self.conn = conn;
                        printer.status(&format!("reconnected to {host}"));
                        return Ok(match ended {
                            Some(completed) => Rejoined::Ended(completed),
                            None => Rejoined::Following(events),
                        });
                    }
                    Err(err) => err,
                },
                () = interrupts.next() => {
                    return Err(CliError::Broker(runway_broker::Error::ConnectionClosed(format!(
                        "interrupted while {host} was away; job {} was not cancelled (see `runway job inspect {}`)",
                        job.id, job.id
                    ))));
                }
            };
            if started.elapsed() > REJOIN_PATIENCE {
                return Err(CliError::Broker(runway_broker::Error::ConnectionClosed(format!(
                    "lost the connection to {host} and could not connect again ({failure}); job {} may still be \
                     running: follow it with `runway job logs --follow {}`",
                    job.id, job.id
                ))));
            }
            tracing::debug!(error = %failure, retry_in = ?pause, "connecting again failed");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    /// Say which queue a job waits in and how many runners consume it.
    async fn report_waiting(&self, target: &Target, printer: &mut Printer) {
        match self.topology.job_queue_info(&self.conn, target).await {
            Ok(Some(info)) if info.consumers == 0 => {
                let why = jobs::why_no_consumer(&self.conn, &self.topology, target).await;
                printer.status(&format!(
                    "still waiting for a runner: the job is in queue `{}` ({} waiting there), which no runner \
                     consumes now: {why}",
                    info.name, info.messages
                ));
            }
            Ok(Some(info)) => printer.status(&format!(
                "still waiting for a runner: the job is in queue `{}` ({} waiting there), which {} consume",
                info.name,
                info.messages,
                match info.consumers {
                    1 => "1 runner".to_owned(),
                    n => format!("{n} runners"),
                }
            )),
            Ok(None) => printer.status("still waiting for a runner: the job's queue is gone"),
            Err(err) => printer.status(&format!("still waiting for a runner (cannot inspect its queue: {err})")),
        }
    }

    async fn close(mut self) {
        if let Some(mut runner) = self.runner.take() {
            runner.shutdown(Shutdown::Cancel);
            if let Err(err) = runner.wait().await {
                tracing::debug!(error = %err, "the in-process runner stopped on its own");
            }
        }
        if let Some(conn) = self.runner_conn.take() {
            conn.close().await;
        }
        self.conn.close().await;
    }
}

/// What following a job is after a reconnect.
enum Rejoined {
    Following(runway_broker::Consumer),
    /// It ended while the connection was down.
    Ended(Completed),
}

/// Print the events of `job` stored in the history up to now; its completion if it ended.
async fn catch_up(
    conn: &Connection,
    topology: &Topology,
    job: &Job,
    printer: &mut Printer,
    record: &mut JobRecord,
) -> Result<Option<Completed>, CliError> {
    let from = job.created_at_ms.saturating_sub(runway_worker::streams::SEEK_SLACK_MS);
    let mut reader =
        StreamReader::open(conn, topology, &topology.history_queue(), StreamOffset::Timestamp(from), LARGE_PREFETCH)
            .await?;
    let job_text = job.id.to_string();
    loop {
        match reader.next().await? {
            Some(Read::Message(delivery)) => {
                if delivery.properties.correlation_id.as_deref() != Some(job_text.as_str()) {
                    continue;
                }
                if let Ok(event) = protocol::decode::<Event>(&delivery.body, "event") {
                    record.apply(&event);
                }
                if let Some(completed) = printer.event(&delivery.body) {
                    return Ok(Some(completed));
                }
            }
            Some(Read::CaughtUp) => return Ok(None),
            None => {
                return Err(CliError::Broker(runway_broker::Error::ConnectionClosed(
                    "the history stream ended while reading it".to_owned(),
                )));
            }
        }
    }
}

/// The job as lost, if its runner has been silent for three heartbeat intervals (measured on
/// this machine's clock from the last event received, so clock skew cannot fake it).
fn lost(record: &JobRecord, last_heard: tokio::time::Instant) -> Option<Completed> {
    let attempt = record.last_attempt()?;
    if attempt.completed.is_some() {
        return None;
    }
    let allowed = Duration::from_millis(attempt.heartbeat_ms.saturating_mul(3));
    if last_heard.elapsed() <= allowed {
        return None;
    }
    let since = humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(attempt.last_seen_ms));
    Some(Completed::without_exit(
        Status::Lost,
        format!(
            "job {} lost: no heartbeat from runner {} since {since} (three intervals of {})",
            record.id,
            attempt.runner,
            crate::follow::format_duration(attempt.heartbeat_ms)
        ),
    ))
}

pub(crate) fn describe_target(target: &Target) -> String {
    match target {
        Target::Any => "any runner".to_owned(),
        Target::Runner(id) => format!("runner `{id}`"),
        Target::Labels(labels) => format!("labels {}", runway_broker::topology::canonical_labels(labels)),
    }
}
