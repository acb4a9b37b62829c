//! The CLI's own `--json` output for `job list`, `job inspect` and `runner list`, as
//! `Serialize` view types over what the commands derived.
//!
//! These are not wire types (only broker/ derives `Serialize` for those): they are what a
//! script reads from runway's stdout. Fields are in alphabetical order, the order this output
//! has always had (it was built as a `serde_json` map, which sorts its keys); keep it so.

use std::collections::BTreeMap;

use runway_broker::QueueInfo;
use runway_broker::protocol::{RunnerInfo, Target};
use runway_worker::history::{Attempt, JobRecord};
use serde::Serialize;
use uuid::Uuid;

/// One job, as `job list --json` prints it per line and `job inspect --json` prints it.
#[derive(Debug, Serialize)]
pub struct JobView<'a> {
    attempt: Option<u32>,
    attempts: Vec<AttemptView<'a>>,
    cancel_requested: bool,
    /// Why it was cancelled, when not by its canceller's own request.
    #[serde(skip_serializing_if = "Option::is_none")]
    cancel_reason: Option<&'a str>,
    duration_ms: Option<u64>,
    env_keys: &'a [String],
    error: Option<&'a str>,
    exit_code: Option<i32>,
    finished_at_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<&'a str>,
    /// Who holds the concurrency group it waits on (`job inspect`).
    #[serde(skip_serializing_if = "Option::is_none")]
    held: Option<String>,
    id: Uuid,
    /// Events not believed (not sent by the attempt's runner).
    ignored_events: u64,
    operation: Option<&'a str>,
    outputs: &'a BTreeMap<String, String>,
    project: Option<&'a str>,
    queued_at_ms: u64,
    queued_by: Option<&'a str>,
    /// The attempts a job that retries may make in all.
    #[serde(skip_serializing_if = "Option::is_none")]
    max_attempts: Option<u32>,
    /// When a delayed job was queued to run (its `--delay` or `--at`).
    #[serde(skip_serializing_if = "Option::is_none")]
    not_before_ms: Option<u64>,
    runner: Option<&'a str>,
    /// When a scheduled job (or its next attempt) is due.
    #[serde(skip_serializing_if = "Option::is_none")]
    scheduled_for_ms: Option<u64>,
    signal: Option<i32>,
    state: &'static str,
    target: Option<&'a Target>,
    /// Only `job inspect` of a queued job says where it waits.
    #[serde(skip_serializing_if = "Option::is_none")]
    waiting: Option<WaitingView<'a>>,
}

/// One attempt of a job.
#[derive(Debug, Serialize)]
struct AttemptView<'a> {
    accepted_at_ms: Option<u64>,
    attempt: u32,
    error: Option<&'a str>,
    exit_code: Option<i32>,
    finished_at_ms: Option<u64>,
    hostname: &'a str,
    last_seen_ms: u64,
    pid: Option<u32>,
    runner: &'a str,
    /// The broker-verified user the runner logged in as.
    runner_user: Option<&'a str>,
    started_at_ms: Option<u64>,
    status: Option<&'static str>,
}

/// The queue a queued job waits in, and why no runner takes it if none consumes it.
#[derive(Debug, Serialize)]
struct WaitingView<'a> {
    consumers: u32,
    messages: u32,
    queue: &'a str,
    why: Option<&'a str>,
}

impl<'a> JobView<'a> {
    /// `record` as it stands at `now_ms`.
    pub fn new(record: &'a JobRecord, now_ms: u64) -> JobView<'a> {
        let completed = record.completed();
        let last = record.last_attempt();
        JobView {
            attempt: last.map(|attempt| attempt.number),
            attempts: record.attempts.values().map(AttemptView::new).collect(),
            cancel_requested: record.cancel_requested.is_some(),
            cancel_reason: record.cancel_reason.as_deref(),
            duration_ms: completed.map(|c| c.duration_ms),
            env_keys: &record.env_keys,
            error: completed.and_then(|c| c.error.as_deref()),
            exit_code: completed.and_then(|c| c.exit_code),
            finished_at_ms: record.finished_at_ms(),
            group: record.group.as_deref(),
            held: None,
            id: record.id,
            ignored_events: record.ignored,
            operation: record.operation.as_deref(),
            outputs: &record.outputs,
            project: record.project.as_deref(),
            queued_at_ms: record.created_at_ms(),
            queued_by: record.queued_by.as_deref(),
            max_attempts: record.retry.as_ref().map(|retry| retry.attempts),
            not_before_ms: record.not_before_ms,
            runner: last.map(|attempt| attempt.runner.as_str()),
            scheduled_for_ms: record.due_at_ms(now_ms),
            signal: completed.and_then(|c| c.signal),
            state: record.state(now_ms).as_str(),
            target: record.target.as_ref(),
            waiting: None,
        }
    }

    /// Who holds the group the job waits on, as `job inspect` says it.
    pub fn held(mut self, notice: Option<&str>) -> JobView<'a> {
        self.held = notice.map(|notice| notice.strip_prefix("waiting: ").unwrap_or(notice).to_owned());
        self
    }

    /// With the queue the job waits in, and why no runner consumes it (if none does).
    pub fn waiting(mut self, info: &'a QueueInfo, why: Option<&'a str>) -> JobView<'a> {
        self.waiting = Some(WaitingView { consumers: info.consumers, messages: info.messages, queue: &info.name, why });
        self
    }
}

impl<'a> AttemptView<'a> {
    fn new(attempt: &'a Attempt) -> AttemptView<'a> {
        let completed = attempt.completed.as_ref();
        AttemptView {
            accepted_at_ms: attempt.accepted_at_ms,
            attempt: attempt.number,
            error: completed.and_then(|c| c.error.as_deref()),
            exit_code: completed.and_then(|c| c.exit_code),
            finished_at_ms: attempt.finished_at_ms,
            hostname: &attempt.hostname,
            last_seen_ms: attempt.last_seen_ms,
            pid: attempt.pid,
            runner: &attempt.runner,
            runner_user: attempt.sender.as_deref(),
            started_at_ms: attempt.started_at_ms,
            status: completed.map(|c| c.status.as_str()),
        }
    }
}

/// One runner, as `runner list --json` prints it per line.
#[derive(Debug, Serialize)]
pub struct RunnerView<'a> {
    by_id_only: bool,
    concurrency: u32,
    hostname: &'a str,
    id: &'a str,
    in_process: bool,
    labels: &'a BTreeMap<String, String>,
    running: u32,
    uptime_ms: u64,
    version: &'a str,
}

impl<'a> RunnerView<'a> {
    /// `info` as it stands at `now_ms`.
    pub fn new(info: &'a RunnerInfo, now_ms: u64) -> RunnerView<'a> {
        RunnerView {
            by_id_only: info.by_id_only,
            concurrency: info.concurrency,
            hostname: &info.hostname,
            id: &info.id,
            in_process: info.in_process,
            labels: &info.labels,
            running: info.running,
            uptime_ms: now_ms.saturating_sub(info.started_at_ms),
            version: &info.version,
        }
    }
}

/// One line of JSON.
pub fn line(view: &impl Serialize) -> String {
    serde_json::to_string(view).expect("view types serialise infallibly: string keys, no custom Serialize")
}

#[cfg(test)]
mod tests {
    use runway_broker::protocol::{Completed, Event, EventBody, Queued, Status, VERSION};

    use super::*;

    /// A line is in the key order a `serde_json` map gives (sorted), at every level.
    #[track_caller]
    fn assert_sorted(line: &str) {
        let value: serde_json::Value = serde_json::from_str(line).expect("a view is JSON");
        assert_eq!(line, value.to_string());
    }

    fn event(job: Uuid, seq: u64, body: EventBody) -> Event {
        Event { v: VERSION, job, seq, ts: 1_700_000_000_000 + seq, runner: "w-1".to_owned(), attempt: 1, body }
    }

    #[test]
    fn a_job_prints_its_fields_in_the_order_it_always_had() {
        let id = Uuid::now_v7();
        let mut record = JobRecord::new(id);
        let queued = Queued {
            operation: "build".to_owned(),
            project: "shop".to_owned(),
            command: runway_broker::protocol::Command::Shell("make".to_owned()),
            args: Vec::new(),
            env_keys: vec!["TOKEN".to_owned()],
            secrets: Vec::new(),
            target: Target::Labels([("env".to_owned(), "prod".to_owned())].into()),
            timeout_ms: None,
            retry_on_lost: false,
            queued_by: "me@here".to_owned(),
            group: None,
            not_before_ms: None,
            retry: None,
            created_at_ms: 1_700_000_000_000,
        };
        record.apply(&event(id, 0, EventBody::Queued(queued)), None);
        record.apply(&event(id, 1, EventBody::Accepted { hostname: "h".to_owned(), heartbeat_ms: 1000 }), None);
        let mut completed = Completed::without_exit(Status::Failed, "boom".to_owned());
        completed.exit_code = Some(2);
        record.apply(&event(id, 2, EventBody::Completed(completed)), None);
        let view = JobView::new(&record, 1_700_000_001_000);
        let text = line(&view);
        assert_sorted(&text);
        assert!(text.contains(r#""state":"failed""#) && text.contains(r#""exit_code":2"#), "{text}");
        assert!(text.contains(&format!(r#""id":"{id}""#)), "{text}");
        assert!(!text.contains("waiting"), "{text}");
        let info = QueueInfo { name: "runway.jobs.any".to_owned(), messages: 1, consumers: 0 };
        assert_sorted(&line(&view.waiting(&info, Some("no runner that serves it is up"))));
    }

    #[test]
    fn a_runner_prints_its_fields_in_the_order_it_always_had() {
        let info = RunnerInfo {
            v: VERSION,
            id: "w-1".to_owned(),
            labels: [("env".to_owned(), "prod".to_owned())].into(),
            concurrency: 2,
            running: 1,
            by_id_only: false,
            in_process: false,
            hostname: "h".to_owned(),
            version: "0.1.0".to_owned(),
            started_at_ms: 1000,
        };
        let text = line(&RunnerView::new(&info, 3500));
        assert_sorted(&text);
        assert!(text.contains(r#""uptime_ms":2500"#), "{text}");
    }
}
