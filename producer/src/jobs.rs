//! `runway job list|inspect|logs|cancel` and `runway runner list`: everything about jobs is
//! derived from the index and history streams (and live events); nothing else stores it.
//!
//! These commands talk to the server only; they never start a runner.

use std::collections::HashMap;
use std::time::Duration;

use runway_broker::protocol::{self, ControlBody, Event, EventBody, RunnerInfo, Target, VERSION, now_ms};
use runway_broker::topology::Topology;
use runway_broker::{Connection, ConsumeOptions, StreamOffset};
use uuid::Uuid;

use crate::exit::{self, CliError};
use crate::follow::{Printer, Style, format_duration};
use runway_worker::history::{JobRecord, State, uuid_ms};
use runway_worker::streams::{LARGE_PREFETCH, Read, SEEK_SLACK_MS, SMALL_PREFETCH, StreamReader};

/// How long `runner list` waits for answers.
const PING_DEADLINE: Duration = Duration::from_millis(1500);

/// What `job list` shows.
#[derive(Debug, Clone)]
pub struct ListFilter {
    pub state: Option<State>,
    pub since: Duration,
    pub limit: usize,
}

/// Read the index from `from_ms` up to now, folding every job's events.
async fn read_index(
    conn: &Connection,
    topology: &Topology,
    from_ms: u64,
    mut wanted: impl FnMut(&Uuid) -> bool,
) -> Result<HashMap<Uuid, JobRecord>, CliError> {
    let mut reader =
        StreamReader::open(conn, topology, &topology.index_queue(), StreamOffset::Timestamp(from_ms), SMALL_PREFETCH)
            .await?;
    let mut records: HashMap<Uuid, JobRecord> = HashMap::new();
    loop {
        match reader.next().await? {
            Some(Read::Message(delivery)) => {
                let Ok(event) = protocol::decode::<Event>(&delivery.body, "event") else { continue };
                if wanted(&event.job) {
                    records.entry(event.job).or_insert_with(|| JobRecord::new(event.job)).apply(&event);
                }
            }
            Some(Read::CaughtUp) => return Ok(records),
            None => return Err(closed()),
        }
    }
}

fn closed() -> CliError {
    CliError::Broker(runway_broker::Error::ConnectionClosed("the stream ended while reading it".to_owned()))
}

/// `job list`.
pub async fn list(conn: &Connection, topology: &Topology, filter: &ListFilter, json: bool) -> Result<u8, CliError> {
    let now = now_ms();
    let since_ms = now.saturating_sub(protocol::to_ms(filter.since));
    let records = read_index(conn, topology, since_ms.saturating_sub(SEEK_SLACK_MS), |_| true).await?;
    let mut records: Vec<JobRecord> = records
        .into_values()
        .filter(|record| record.created_at_ms() >= since_ms)
        .filter(|record| filter.state.is_none_or(|state| record.state(now) == state))
        .collect();
    // UUID v7 ids sort by creation time: newest first.
    records.sort_by_key(|record| std::cmp::Reverse(record.id));
    records.truncate(filter.limit);
    if json {
        for record in &records {
            println!("{}", record_json(record, now));
        }
        return Ok(exit::SUCCESS);
    }
    println!(
        "{:<36}  {:<12} {:<12} {:<10} {:<16} {:>3}  {:<20} {:<20} {:>9}",
        "ID", "OPERATION", "PROJECT", "STATE", "RUNNER", "TRY", "QUEUED", "FINISHED", "DURATION"
    );
    for record in &records {
        let attempt = record.last_attempt();
        println!(
            "{:<36}  {:<12} {:<12} {:<10} {:<16} {:>3}  {:<20} {:<20} {:>9}",
            record.id,
            record.operation.as_deref().unwrap_or("?"),
            record.project.as_deref().unwrap_or("?"),
            record.state(now).as_str(),
            attempt.map_or("-", |attempt| attempt.runner.as_str()),
            attempt.map_or(0, |attempt| attempt.number),
            time(Some(record.created_at_ms())),
            time(record.finished_at_ms()),
            record.completed().map_or_else(|| "-".to_owned(), |completed| format_duration(completed.duration_ms)),
        );
    }
    Ok(exit::SUCCESS)
}

fn time(ms: Option<u64>) -> String {
    ms.map_or_else(
        || "-".to_owned(),
        |ms| humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string(),
    )
}

fn record_json(record: &JobRecord, now: u64) -> serde_json::Value {
    let attempts: Vec<serde_json::Value> = record
        .attempts
        .values()
        .map(|attempt| {
            serde_json::json!({
                "attempt": attempt.number,
                "runner": attempt.runner,
                "hostname": attempt.hostname,
                "accepted_at_ms": attempt.accepted_at_ms,
                "started_at_ms": attempt.started_at_ms,
                "pid": attempt.pid,
                "last_seen_ms": attempt.last_seen_ms,
                "finished_at_ms": attempt.finished_at_ms,
                "status": attempt.completed.as_ref().map(|c| c.status.as_str()),
                "exit_code": attempt.completed.as_ref().and_then(|c| c.exit_code),
                "error": attempt.completed.as_ref().and_then(|c| c.error.clone()),
            })
        })
        .collect();
    let completed = record.completed();
    serde_json::json!({
        "id": record.id.to_string(),
        "operation": record.operation,
        "project": record.project,
        "state": record.state(now).as_str(),
        "runner": record.last_attempt().map(|attempt| attempt.runner.clone()),
        "attempt": record.last_attempt().map(|attempt| attempt.number),
        "target": record.target.as_ref().map(|target| serde_json::to_value(target).unwrap_or_default()),
        "queued_by": record.queued_by,
        "queued_at_ms": record.created_at_ms(),
        "finished_at_ms": record.finished_at_ms(),
        "duration_ms": completed.map(|c| c.duration_ms),
        "exit_code": completed.and_then(|c| c.exit_code),
        "signal": completed.and_then(|c| c.signal),
        "error": completed.and_then(|c| c.error.clone()),
        "outputs": record.outputs,
        "env_keys": record.env_keys,
        "cancel_requested": record.cancel_requested.is_some(),
        "attempts": attempts,
    })
}

/// Find a job by its full id or a unique prefix of at least 8 hex characters.
pub async fn resolve(conn: &Connection, topology: &Topology, text: &str) -> Result<JobRecord, CliError> {
    if let Ok(id) = Uuid::parse_str(text) {
        let from = uuid_ms(id).saturating_sub(SEEK_SLACK_MS);
        let mut records = read_index(conn, topology, from, |job| *job == id).await?;
        return records.remove(&id).ok_or_else(|| CliError::NoSuchJob(format!("no job {id} in the history")));
    }
    let hex: String = text.chars().filter(|c| *c != '-').collect::<String>().to_ascii_lowercase();
    if hex.len() < 8 || hex.len() > 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(CliError::Usage(format!(
            "`{text}` is not a job id: give the full id or a prefix of at least 8 hex characters"
        )));
    }
    // A UUID v7 starts with its creation time in ms (48 bits): a prefix bounds when it was made.
    let time_digits = hex.len().min(12);
    let shift = 4 * (12 - time_digits);
    let start = u64::from_str_radix(&hex[..time_digits], 16).unwrap_or(0) << shift;
    let mut records = read_index(conn, topology, start.saturating_sub(SEEK_SLACK_MS), |job| {
        job.simple().to_string().starts_with(&hex)
    })
    .await?;
    match records.len() {
        0 => Err(CliError::NoSuchJob(format!("no job id starts with `{text}`"))),
        1 => Ok(records.drain().map(|(_, record)| record).next().expect("one record, just counted")),
        n => {
            let mut ids: Vec<String> = records.keys().map(Uuid::to_string).collect();
            ids.sort();
            Err(CliError::Usage(format!("`{text}` matches {n} jobs: {}; give more of the id", ids.join(", "))))
        }
    }
}

/// `job inspect`.
pub async fn inspect(conn: &Connection, topology: &Topology, id: &str, json: bool) -> Result<u8, CliError> {
    let record = resolve(conn, topology, id).await?;
    let now = now_ms();
    let state = record.state(now);
    let waiting = match (&record.target, state) {
        (Some(target), State::Queued) => topology.job_queue_info(conn, target).await?,
        _ => None,
    };
    // No consumer: every runner serving it is busy, or none is up.
    let why = match (&waiting, &record.target) {
        (Some(info), Some(target)) if info.consumers == 0 => Some(why_no_consumer(conn, topology, target).await),
        _ => None,
    };
    if json {
        let mut value = record_json(&record, now);
        if let Some(info) = &waiting {
            value["waiting"] = serde_json::json!({
                "queue": info.name, "consumers": info.consumers, "messages": info.messages, "why": why,
            });
        }
        println!("{value}");
        return Ok(exit::SUCCESS);
    }
    println!("job        {}", record.id);
    println!("operation  {}", record.operation.as_deref().unwrap_or("?"));
    println!("project    {}", record.project.as_deref().unwrap_or("?"));
    println!("state      {}", state.as_str());
    if let Some(target) = &record.target {
        println!("target     {}", crate::commands::describe_target(target));
    }
    if let Some(by) = &record.queued_by {
        println!("queued by  {by}");
    }
    println!("queued at  {}", time(Some(record.created_at_ms())));
    if !record.env_keys.is_empty() {
        println!("env        {} (values are never recorded)", record.env_keys.join(", "));
    }
    if let Some((at, by)) = &record.cancel_requested {
        println!("cancel     requested by {by} at {}", time(Some(*at)));
    }
    if let Some(info) = &waiting {
        println!(
            "waiting    in queue `{}` ({} messages), consumed by {} runner(s)",
            info.name, info.messages, info.consumers
        );
        if let Some(why) = &why {
            println!("           {why}");
        }
    }
    if let Some(silence) = record.silence(now) {
        println!("lost       no heartbeat from runner {} since {}", silence.runner, time(Some(silence.last_seen_ms)));
    }
    for attempt in record.attempts.values() {
        println!("attempt {}  runner {} on {}", attempt.number, attempt.runner, attempt.hostname);
        println!("  started  {}", time(attempt.started_at_ms));
        match &attempt.completed {
            Some(completed) => {
                println!("  ended    {} at {}", completed.status, time(attempt.finished_at_ms));
                println!("  exit     {}", completed.exit_code.map_or("-".to_owned(), |code| code.to_string()));
                println!("  duration {}", format_duration(completed.duration_ms));
                if let Some(error) = &completed.error {
                    println!("  error    {error}");
                }
            }
            None => println!("  running  last seen {}", time(Some(attempt.last_seen_ms))),
        }
    }
    for (key, value) in &record.outputs {
        println!("output     {key}={value}");
    }
    Ok(exit::SUCCESS)
}

/// `job logs`: the whole log in order from the history; with `follow`, live to the end.
pub async fn logs(
    conn: &Connection,
    topology: &Topology,
    id: &str,
    follow: bool,
    timestamps: bool,
    quiet: bool,
) -> Result<u8, CliError> {
    let record = resolve(conn, topology, id).await?;
    let job = record.id;
    let from = record.created_at_ms().saturating_sub(SEEK_SLACK_MS);
    let mut reader =
        StreamReader::open(conn, topology, &topology.history_queue(), StreamOffset::Timestamp(from), LARGE_PREFETCH)
            .await?;
    let mut printer = Printer::new(Style::Human { quiet }, record.operation.as_deref().unwrap_or("job"));
    printer.set_timestamps(timestamps);
    printer.set_status_quiet(true);
    let job_text = job.to_string();
    let mut live = JobRecord::new(job);
    let mut check = tokio::time::interval(Duration::from_secs(1));
    loop {
        let read = tokio::select! {
            read = reader.next() => read?,
            _ = check.tick(), if follow && reader.caught_up => {
                if let Some(silence) = live.silence(now_ms()) {
                    eprintln!(
                        "runway: job {job} lost: no heartbeat from runner {} since {}",
                        silence.runner,
                        time(Some(silence.last_seen_ms))
                    );
                    return Ok(exit::LOST);
                }
                continue;
            }
        };
        match read {
            Some(Read::Message(delivery)) => {
                if delivery.properties.correlation_id.as_deref() != Some(job_text.as_str()) {
                    continue;
                }
                let Ok(event) = protocol::decode::<Event>(&delivery.body, "event") else { continue };
                live.apply(&event);
                if let Some(completed) = printer.event(&delivery.body) {
                    return Ok(if follow { exit::for_job(&completed) } else { exit::SUCCESS });
                }
            }
            Some(Read::CaughtUp) if !follow => return Ok(exit::SUCCESS),
            Some(Read::CaughtUp) => {
                // A job cancelled while queued never gets a runner's events: it is over.
                if live.state(now_ms()) == State::Cancelled || record.state(now_ms()) == State::Cancelled {
                    return Ok(exit::CANCELLED);
                }
            }
            None => return Err(closed()),
        }
    }
}

/// `job cancel`.
pub async fn cancel(conn: &Connection, topology: &Topology, id: &str, force: bool) -> Result<u8, CliError> {
    let record = resolve(conn, topology, id).await?;
    let state = record.state(now_ms());
    if state.is_final() {
        eprintln!("runway: job {} already ended {}; nothing to cancel", record.id, state.as_str());
        return Ok(exit::SUCCESS);
    }
    request_cancel(conn, topology, record.id, force, record.last_attempt().map_or(1, |a| a.number)).await?;
    match record.last_attempt() {
        Some(attempt) => {
            eprintln!("runway: cancel requested for job {} running on runner {}", record.id, attempt.runner)
        }
        None => eprintln!("runway: job {} cancelled: it will not run", record.id),
    }
    Ok(exit::SUCCESS)
}

/// Record a cancel request in the history and tell every runner.
pub async fn request_cancel(
    conn: &Connection,
    topology: &Topology,
    job: Uuid,
    force: bool,
    attempt: u32,
) -> Result<(), CliError> {
    let event = Event {
        v: VERSION,
        job,
        seq: 0,
        ts: now_ms(),
        runner: String::new(),
        attempt,
        body: EventBody::CancelRequested { by: crate::commands::queued_by(), force },
    };
    topology.publish_event(conn, &event).await?.wait().await?;
    let control = protocol::Control { v: VERSION, body: ControlBody::Cancel { job, force } };
    topology.publish_control(conn, &control).await?;
    Ok(())
}

/// Ping every runner; who answers before the deadline, by id.
async fn ping(conn: &Connection, topology: &Topology) -> Result<Vec<RunnerInfo>, CliError> {
    let queue = topology.declare_reply_queue(conn).await?;
    let mut answers =
        conn.consume(&queue, &ConsumeOptions { no_ack: true, ..ConsumeOptions::with_prefetch(0) }).await?;
    let control = protocol::Control { v: VERSION, body: ControlBody::Ping { reply_to: queue.clone() } };
    topology.publish_control(conn, &control).await?;
    let mut runners: Vec<RunnerInfo> = Vec::new();
    let deadline = tokio::time::Instant::now() + PING_DEADLINE;
    while let Ok(Some(Ok(delivery))) = tokio::time::timeout_at(deadline, answers.next()).await {
        if let Ok(info) = protocol::decode::<RunnerInfo>(&delivery.body, "runner info") {
            runners.push(info);
        }
    }
    runners.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(runners)
}

/// Why a queue has no consumer: a runner consumes a shared queue only while it has a free
/// slot, so "no consumer" means either that every runner serving it is busy or that none is up.
/// Asks the runners (a ping) and says which, naming how many serve `target`.
pub(crate) async fn why_no_consumer(conn: &Connection, topology: &Topology, target: &Target) -> String {
    let runners = match ping(conn, topology).await {
        Ok(runners) => runners,
        Err(err) => return format!("no runner consumes it now (asking the runners failed: {err})"),
    };
    let serving: Vec<&RunnerInfo> = runners.iter().filter(|info| serves(info, target)).collect();
    match serving.len() {
        0 => "no runner that serves it is up".to_owned(),
        n => {
            let running: u32 = serving.iter().map(|info| info.running).sum();
            let slots: u32 = serving.iter().map(|info| info.concurrency).sum();
            format!(
                "{n} runner{} serve{} it and {} busy ({running} of {slots} slots in use): it runs when a slot frees",
                if n == 1 { "" } else { "s" },
                if n == 1 { "s" } else { "" },
                if n == 1 { "it is" } else { "all are" },
            )
        }
    }
}

/// Whether a runner takes jobs for `target`.
fn serves(info: &RunnerInfo, target: &Target) -> bool {
    match target {
        Target::Runner(id) => info.id == *id,
        Target::Any => !info.by_id_only,
        Target::Labels(labels) => {
            !info.by_id_only && labels.iter().all(|(key, value)| info.labels.get(key) == Some(value))
        }
    }
}

/// `runner list`: ping every runner and print who answers before the deadline.
pub async fn runners(conn: &Connection, topology: &Topology, json: bool) -> Result<u8, CliError> {
    let runners = ping(conn, topology).await?;
    let now = now_ms();
    if json {
        for info in &runners {
            println!(
                "{}",
                serde_json::json!({
                    "id": info.id, "labels": info.labels, "concurrency": info.concurrency, "running": info.running,
                    "by_id_only": info.by_id_only, "in_process": info.in_process, "hostname": info.hostname,
                    "version": info.version, "uptime_ms": now.saturating_sub(info.started_at_ms),
                })
            );
        }
        return Ok(exit::SUCCESS);
    }
    println!(
        "{:<24} {:<28} {:>7} {:>4}  {:<10} {:<8} {:>9}",
        "ID", "LABELS", "RUNNING", "OF", "KIND", "VERSION", "UPTIME"
    );
    for info in &runners {
        let labels = runway_broker::topology::canonical_labels(&info.labels);
        let kind = if info.in_process {
            "cli"
        } else if info.by_id_only {
            "by-id"
        } else {
            "daemon"
        };
        println!(
            "{:<24} {:<28} {:>7} {:>4}  {:<10} {:<8} {:>9}",
            info.id,
            if labels.is_empty() { "-" } else { &labels },
            info.running,
            info.concurrency,
            kind,
            info.version,
            format_duration(now.saturating_sub(info.started_at_ms)),
        );
    }
    if runners.is_empty() {
        eprintln!("runway: no runner answered within {}", format_duration(protocol::to_ms(PING_DEADLINE)));
    }
    Ok(exit::SUCCESS)
}
