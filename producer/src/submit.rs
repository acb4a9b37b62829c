//! Queuing many jobs at once: `runway submit` (JSON lines of jobs on stdin, a job id per line
//! out) and [`submit_many`], the pipelined path the CLI, [`Session::submit`] and the benchmark
//! share.
//!
//! Each job costs its `queued` record (on the history and index lanes, see
//! `runway_broker::Lane`) and then the job (on the general lane), and no confirm is waited for
//! before the next publish: up to [`WINDOW`] jobs are unconfirmed at once. The record goes out
//! first, but on other channels than the job, so a runner's first event may be stored before it;
//! readers fold a job's events in any order.
//!
//! It does not follow jobs (`attach` does) nor start a runner: jobs queued here run on remote
//! runners, so `runway submit` needs a server.
//!
//! [`Session::submit`]: crate::session::Session::submit

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, Write};

use runway_broker::protocol::{Completed, Event, EventBody, Job, Queued, Status, Target, VERSION, now_ms};
use runway_broker::topology::Topology;
use runway_broker::{Confirm, Connection};
use serde::Deserialize;

use crate::cli::{self, Cli, JobArgs};
use crate::connect;
use crate::exit::{self, CliError};
use crate::format;
use crate::plan;
use crate::project::Project;
use crate::settings::{self, Settings};

/// Jobs published and not yet confirmed, at most (two confirms each): enough to keep the
/// broker busy across a round trip, few enough that a failure is reported soon.
pub const WINDOW: usize = 256;

/// One job to queue: one line of `runway submit`'s input, e.g.
/// `{"operation": "build", "args": ["--release"], "env": {"STAGE": "ci"}, "target": {"labels": {"os": "linux"}}, "timeout": "10m"}`.
/// Only `operation` is required; as on the command line, `env`, `timeout` and `target` beat the
/// project file's.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// An operation of the project file.
    pub operation: String,
    /// Appended to the operation's command.
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Where it runs; by default the operation's `target`, else any runner.
    #[serde(default)]
    pub target: Option<TargetSpec>,
    /// A human duration (`90s`, `10m`).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Run no sooner than this long after it is queued (`10m`), as `--delay`.
    #[serde(default)]
    pub delay: Option<String>,
    /// Run at this time (RFC 3339, UTC), as `--at`.
    #[serde(default)]
    pub at: Option<String>,
}

/// Where a [`JobSpec`] runs: `"any"`, `{"runner": "ID"}` or `{"labels": {"K": "V"}}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TargetSpec {
    Any,
    Runner(String),
    Labels(BTreeMap<String, String>),
}

/// A line of input that cannot become a job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct BadLine {
    /// 1-based, counting blank lines.
    pub line: usize,
    pub message: String,
}

/// The job `spec` asks for (checked as the command line's flags are); it runs on a remote
/// runner, so `has_server` must be true.
pub fn plan_job(project: &Project, spec: &JobSpec, has_server: bool) -> Result<Job, CliError> {
    let operation = plan::find_operation(project, &spec.operation)?;
    let mut env = Vec::with_capacity(spec.env.len());
    for (key, value) in &spec.env {
        if key.is_empty() || key.contains(['=', '\0']) {
            return Err(CliError::Usage(format!("`{key}` is not an environment variable name")));
        }
        env.push((key.clone(), value.clone()));
    }
    let timeout = spec.timeout.as_deref().map(cli::parse_duration).transpose().map_err(CliError::Usage)?;
    if spec.delay.is_some() && spec.at.is_some() {
        return Err(CliError::Usage("both `delay` and `at`: give one".to_owned()));
    }
    let delay = spec.delay.as_deref().map(cli::parse_duration).transpose().map_err(CliError::Usage)?;
    let at = spec.at.as_deref().map(cli::parse_time).transpose().map_err(CliError::Usage)?;
    let mut args = JobArgs { env, timeout, delay, at, detach: true, args: spec.args.clone(), ..JobArgs::default() };
    match &spec.target {
        None => {}
        Some(TargetSpec::Any) => args.remote = true,
        Some(TargetSpec::Runner(id)) => args.runner = Some(id.clone()),
        Some(TargetSpec::Labels(labels)) if labels.is_empty() => args.remote = true,
        Some(TargetSpec::Labels(labels)) => args.labels = labels.clone().into_iter().collect(),
    }
    let target = plan::remote_target(&args, operation, has_server)?.unwrap_or(Target::Any);
    let due = plan::due_at_ms(operation, &args, runway_broker::protocol::now_ms())?;
    Ok(Job { not_before_ms: due, ..plan::build_job(project, operation, &args, target) })
}

/// Every line of `input` as a job, each line a JSON [`JobSpec`]; blank lines are skipped. All
/// lines are checked before any is returned: either every job, or every bad line.
pub fn plan_lines(project: &Project, input: impl BufRead, has_server: bool) -> Result<Vec<(usize, Job)>, Vec<BadLine>> {
    let mut jobs = Vec::new();
    let mut bad = Vec::new();
    for (at, line) in input.lines().enumerate() {
        let line_number = at + 1;
        let text = match line {
            Ok(text) => text,
            Err(err) => {
                bad.push(BadLine { line: line_number, message: format!("cannot read it: {err}") });
                break;
            }
        };
        if text.trim().is_empty() {
            continue;
        }
        let planned =
            parse_line(&text).and_then(|spec| plan_job(project, &spec, has_server).map_err(|err| err.to_string()));
        match planned {
            Ok(job) => jobs.push((line_number, job)),
            Err(message) => bad.push(BadLine { line: line_number, message }),
        }
    }
    if bad.is_empty() { Ok(jobs) } else { Err(bad) }
}

/// One line as a [`JobSpec`]. No message quotes the line's `env`: serde's would quote a value
/// of the wrong type, and environment values are never printed.
fn parse_line(text: &str) -> Result<JobSpec, String> {
    const EXAMPLE: &str = "expected e.g. {\"operation\": \"build\"}";
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|err| format!("not JSON (column {}); {EXAMPLE}", err.column()))?;
    if let Some(env) = value.get("env")
        && !env.as_object().is_some_and(|env| env.values().all(serde_json::Value::is_string))
    {
        return Err("`env` is not an object of string values (the values are not shown)".to_owned());
    }
    serde_json::from_value(value).map_err(|err| format!("not a job ({err}); {EXAMPLE}"))
}

/// Queue `jobs` in order, with pipelined confirms; one result per job, in the same order. A job
/// is queued once its result is `Ok`. A job no runner serves is recorded `rejected` and its
/// result is [`CliError::NoRunner`]; over a dropped connection every later job fails with
/// [`CliError::Broker`] (nothing is published twice).
///
/// ```no_run
/// # async fn queue() -> Result<(), runway_producer::exit::CliError> {
/// use std::time::Duration;
/// use runway_broker::Broker;
/// use runway_broker::topology::Topology;
/// use runway_producer::submit::{self, JobSpec, TargetSpec};
///
/// let project = runway_producer::settings::load_project(None)?;
/// let specs = (1..=100).map(|n| JobSpec {
///     operation: "build".to_owned(),
///     args: vec![format!("--shard={n}")],
///     target: Some(TargetSpec::Any),
///     ..JobSpec::default()
/// });
/// let jobs = specs.map(|spec| submit::plan_job(&project, &spec, true)).collect::<Result<Vec<_>, _>>()?;
/// let topology = Topology::new("runway").map_err(|err| runway_producer::exit::CliError::Usage(err.to_string()))?;
/// let broker = Broker::amqp("amqp://guest:guest@127.0.0.1:5672/%2f", Duration::from_secs(10))?;
/// let conn = runway_producer::connect::connect(&broker, &topology).await?;
/// for (job, queued) in jobs.iter().zip(submit::submit_many(&conn, &topology, &jobs).await) {
///     match queued {
///         Ok(()) => println!("{}", job.id),
///         Err(err) => eprintln!("job {} was not queued: {err}", job.id),
///     }
/// }
/// conn.close().await;
/// # Ok(())
/// # }
/// ```
pub async fn submit_many(conn: &Connection, topology: &Topology, jobs: &[Job]) -> Vec<Result<(), CliError>> {
    let mut results = Vec::with_capacity(jobs.len());
    // A group's queue must exist for its jobs to route; runners learn of it from the
    // announcement and consume it. Once per group, before any of its jobs goes out.
    let mut groups = std::collections::BTreeSet::new();
    for group in jobs.iter().filter_map(|job| job.group.as_deref()) {
        if groups.insert(group) {
            let announced = async {
                topology.declare_group(conn, group).await?;
                topology.announce_group(conn, group).await
            };
            if let Err(err) = announced.await {
                let reason = format!("cannot prepare concurrency group `{group}`: {err}");
                return jobs.iter().map(|_| Err(CliError::Internal(reason.clone()))).collect();
            }
        }
    }
    let mut in_flight = VecDeque::with_capacity(WINDOW.min(jobs.len()));
    for job in jobs {
        if in_flight.len() >= WINDOW
            && let Some(oldest) = in_flight.pop_front()
        {
            results.push(settle(conn, topology, oldest).await);
        }
        in_flight.push_back(send(conn, topology, job).await);
    }
    while let Some(oldest) = in_flight.pop_front() {
        results.push(settle(conn, topology, oldest).await);
    }
    results
}

/// A job sent, its confirms still to come.
struct Sent<'a> {
    job: &'a Job,
    /// The `queued` record's confirm, then the job's; the job is not sent when its record
    /// could not be.
    confirms: Result<(Confirm, Confirm), CliError>,
}

/// Publish `job`'s `queued` record, then the job, without waiting for either confirm.
async fn send<'a>(conn: &Connection, topology: &Topology, job: &'a Job) -> Sent<'a> {
    let confirms = async {
        let record = topology.publish_event(conn, &producer_event(job, EventBody::Queued(Queued::of(job)))).await?;
        let published = topology.send_job(conn, job).await?;
        Ok((record, published))
    }
    .await;
    Sent { job, confirms }
}

/// Wait for a sent job's confirms; record a job no runner serves as `rejected`.
async fn settle(conn: &Connection, topology: &Topology, sent: Sent<'_>) -> Result<(), CliError> {
    let Sent { job, confirms } = sent;
    let (record, published) = confirms?;
    let recorded = record.wait().await;
    match published.wait().await {
        Ok(()) => {
            if let Err(err) = recorded {
                // The job is queued and will run: failing it would invite a second copy.
                tracing::warn!(job = %job.id, error = %err, "the job is queued, but its `queued` record was refused");
            }
            Ok(())
        }
        Err(runway_broker::Error::Unroutable { .. }) => {
            let message = format!(
                "no runner serves {}: no queue is bound for it, so job {} was not queued",
                format::target(&job.target),
                job.id
            );
            let rejected = Completed::without_exit(Status::Rejected, message.clone());
            topology.publish_event(conn, &producer_event(job, EventBody::Completed(rejected))).await?.wait().await?;
            Err(CliError::NoRunner(message))
        }
        Err(other) => Err(CliError::Broker(other)),
    }
}

/// An event about `job` on behalf of the producer (`seq` 0, no runner).
fn producer_event(job: &Job, body: EventBody) -> Event {
    Event { v: VERSION, job: job.id, seq: 0, ts: now_ms(), runner: String::new(), attempt: job.attempt, body }
}

/// `runway submit`: plan every line of `input` (nothing is queued if any is bad: each bad line
/// is reported with its number, exit 64), queue them all, and print each queued job's id, in
/// input order. A job that could not be queued is reported with its line number and id, and the
/// exit code is that of the first such failure.
pub async fn run(cli: &Cli, input: impl BufRead) -> Result<u8, CliError> {
    let project = settings::load_project(cli.file.as_deref())?;
    let settings = Settings::merge(cli, Some(&project));
    if settings.server.is_none() {
        return Err(CliError::Usage(
            "`submit` queues jobs for remote runners and needs a server: set [server] url in runway.toml, \
             RUNWAY_SERVER, or --server URL"
                .to_owned(),
        ));
    }
    let planned = match plan_lines(&project, input, true) {
        Ok(planned) => planned,
        Err(bad) => {
            for line in &bad {
                eprintln!("runway: error: {line}");
            }
            return Err(CliError::Usage(format!("{} bad line(s) in the input: nothing was queued", bad.len())));
        }
    };
    let (lines, jobs): (Vec<usize>, Vec<Job>) = planned.into_iter().unzip();
    let topology = settings.topology()?;
    let conn = connect::connect(&connect::broker(settings.server.as_deref(), &settings.tls)?, &topology).await?;
    let results = submit_many(&conn, &topology, &jobs).await;
    conn.close().await;
    let mut code = exit::SUCCESS;
    let mut stdout = std::io::stdout().lock();
    for ((line, job), result) in lines.iter().zip(&jobs).zip(results) {
        match result {
            Ok(()) => {
                // A closed stdout (`| head`) is the reader's choice, not a failure to queue.
                let _ = writeln!(stdout, "{}", job.id);
            }
            Err(err) => {
                eprintln!("runway: error: line {line}: job {} was not queued: {err}", job.id);
                if code == exit::SUCCESS {
                    code = err.exit_code();
                }
            }
        }
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use runway_broker::topology::Retention;
    use runway_broker::{Broker, ConsumeOptions, StreamOffset};

    use super::*;

    fn project() -> Project {
        let text =
            "[operations.build]\nrun = \"make\"\ntimeout = \"1h\"\n[operations.noop]\nrun = { builtin = \"noop\" }\n";
        crate::project::parse(Path::new("/nonexistent/shop/runway.toml"), text).expect("valid project file")
    }

    #[test]
    fn every_line_becomes_a_job_with_its_target_env_and_timeout() {
        let input = "{\"operation\": \"build\", \"args\": [\"-j4\"], \"env\": {\"A\": \"1\"}, \"timeout\": \"90s\"}\n\n\
                     {\"operation\": \"noop\", \"target\": {\"runner\": \"w-1\"}}\n\
                     {\"operation\": \"noop\", \"target\": {\"labels\": {\"os\": \"linux\"}}}\n\
                     {\"operation\": \"noop\", \"target\": \"any\"}\n";
        let jobs = plan_lines(&project(), input.as_bytes(), true).expect("all lines are good");
        let lines: Vec<usize> = jobs.iter().map(|(line, _)| *line).collect();
        assert_eq!(lines, [1, 3, 4, 5], "blank lines are skipped but counted");
        let (_, build) = &jobs[0];
        assert_eq!(build.args, ["-j4"]);
        assert_eq!(build.env.get("A").map(String::as_str), Some("1"));
        assert_eq!(build.timeout_ms, Some(90_000), "the line's timeout beats the file's");
        assert_eq!(build.target, Target::Any);
        assert_eq!(jobs[1].1.target, Target::Runner("w-1".to_owned()));
        assert_eq!(jobs[2].1.target, Target::Labels([("os".to_owned(), "linux".to_owned())].into()));
        assert_eq!(jobs[3].1.target, Target::Any);
    }

    #[test]
    fn every_bad_line_is_reported_with_its_number_and_no_job_is_returned() {
        let input = "{\"operation\": \"build\"}\nnot json\n{\"operation\": \"nope\"}\n{\"operation\": \"build\", \"colour\": 1}\n\
                     {\"operation\": \"build\", \"env\": {\"A=B\": \"1\"}}\n{\"operation\": \"build\", \"timeout\": \"soon\"}\n\
                     {\"operation\": \"build\", \"target\": {\"runner\": \"bad id\"}}\n";
        let bad = plan_lines(&project(), input.as_bytes(), true).expect_err("bad lines");
        let lines: Vec<usize> = bad.iter().map(|bad| bad.line).collect();
        assert_eq!(lines, [2, 3, 4, 5, 6, 7]);
        assert!(bad[0].to_string().starts_with("line 2: not JSON"), "{}", bad[0]);
        assert!(bad[1].message.contains("unknown operation `nope`"), "{}", bad[1]);
        assert!(bad[2].message.contains("colour"), "{}", bad[2]);
        assert!(bad[3].message.contains("`A=B`"), "{}", bad[3]);
        assert!(bad[4].message.contains("`soon` is not a duration"), "{}", bad[4]);
        let secret = "{\"operation\": \"build\", \"env\": {\"TOKEN\": 12345678}}\n{\"operation\": \"build\", \"env\": \"TOKEN=hunter2\"}";
        let bad = plan_lines(&project(), secret.as_bytes(), true).expect_err("bad env");
        assert_eq!(bad.len(), 2);
        for bad in bad {
            assert!(bad.message.contains("`env` is not an object of string values"), "{bad}");
            assert!(!bad.message.contains("12345678") && !bad.message.contains("hunter2"), "a value shown: {bad}");
        }
        let no_server = plan_lines(&project(), "{\"operation\": \"build\"}".as_bytes(), false).expect_err("no server");
        assert!(no_server[0].message.contains("needs a server"), "{}", no_server[0]);
    }

    /// More jobs than the window, so confirms are waited for while later jobs go out.
    #[tokio::test]
    async fn submit_many_queues_every_job_in_order_each_after_its_record() {
        let conn = Broker::memory().connect().await.expect("in-memory broker");
        let topology = Topology::new("submit").expect("valid namespace");
        topology.declare(&conn, &Retention::default()).await.expect("declare");
        let project = project();
        let spec = JobSpec { operation: "noop".to_owned(), ..JobSpec::default() };
        let jobs: Vec<Job> = (0..WINDOW * 2 + 3).map(|_| plan_job(&project, &spec, true).expect("valid")).collect();
        let results = submit_many(&conn, &topology, &jobs).await;
        assert_eq!(results.len(), jobs.len());
        assert!(results.iter().all(Result::is_ok), "every job was queued");
        let mut queue =
            conn.consume(&topology.job_queue(&Target::Any), &ConsumeOptions::with_prefetch(0)).await.expect("consume");
        for job in &jobs {
            let delivery = queue.next().await.expect("a job").expect("delivered");
            let queued: Job = runway_broker::protocol::decode(&delivery.body, "job").expect("a job");
            assert_eq!(queued.id, job.id, "jobs are queued in input order");
        }
        let options = ConsumeOptions { offset: Some(StreamOffset::First), ..ConsumeOptions::with_prefetch(0) };
        let mut index = conn.consume(&topology.index_queue(), &options).await.expect("consume index");
        for job in &jobs {
            let delivery = index.next().await.expect("a record").expect("delivered");
            let event: Event = runway_broker::protocol::decode(&delivery.body, "event").expect("an event");
            assert_eq!(event.job, job.id);
            assert!(matches!(event.body, EventBody::Queued(_)), "{:?}", event.body);
        }
    }

    #[tokio::test]
    async fn a_job_no_runner_serves_is_recorded_rejected_and_the_others_are_queued() {
        let conn = Broker::memory().connect().await.expect("in-memory broker");
        let topology = Topology::new("submit").expect("valid namespace");
        topology.declare(&conn, &Retention::default()).await.expect("declare");
        let project = project();
        let any = JobSpec { operation: "noop".to_owned(), ..JobSpec::default() };
        let nobody = JobSpec { target: Some(TargetSpec::Runner("nobody".to_owned())), ..any.clone() };
        let jobs: Vec<Job> =
            [&any, &nobody, &any].into_iter().map(|spec| plan_job(&project, spec, true).expect("valid")).collect();
        let results = submit_many(&conn, &topology, &jobs).await;
        assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
        let Err(CliError::NoRunner(message)) = &results[1] else { panic!("not rejected: {:?}", results[1]) };
        assert!(message.contains("runner `nobody`") && message.contains(&jobs[1].id.to_string()), "{message}");
    }
}
