//! A concurrency group seen from the jobs queued in it, read from the index: which job holds
//! the group (`deploy-prod is held by job 3f9c8e1d2a7b (alice, running 2m)`), and which wait,
//! that `concurrency_pending = "cancel"` cancels when a new job comes.
//!
//! It holds no lock and decides nothing: the group's queue does (see worker/src/groups.rs).

use runway_broker::Connection;
use runway_broker::protocol::now_ms;
use runway_broker::topology::Topology;
use runway_worker::history::{JobRecord, State};
use uuid::Uuid;

use crate::cancel;
use crate::exit::CliError;
use crate::format;
use crate::lookup;

/// How far back the index is read for a group's jobs: a job that holds a group was queued
/// within this long, as far as anyone waiting cares.
const LOOK_BACK_MS: u64 = 24 * 3600 * 1000;

/// The jobs of one group that have not ended.
#[derive(Debug, Default)]
pub struct GroupJobs {
    /// The job running, if one is.
    pub holder: Option<JobRecord>,
    /// The jobs waiting for their turn (queued or scheduled), oldest first.
    pub waiting: Vec<JobRecord>,
}

/// The unfinished jobs of `group` other than `except`, from the index.
pub async fn group_jobs(
    conn: &Connection,
    topology: &Topology,
    group: &str,
    except: Uuid,
) -> Result<GroupJobs, CliError> {
    let now = now_ms();
    let records = lookup::read_index(conn, topology, now.saturating_sub(LOOK_BACK_MS), |id| *id != except).await?;
    let mut jobs = GroupJobs::default();
    let mut records: Vec<JobRecord> =
        records.into_values().filter(|record| record.group.as_deref() == Some(group)).collect();
    records.sort_by_key(|record| record.id);
    for record in records {
        match record.state(now) {
            State::Running => jobs.holder = Some(record),
            State::Queued | State::Scheduled => jobs.waiting.push(record),
            State::Success | State::Failed | State::Cancelled | State::TimedOut | State::Lost | State::Rejected => {}
        }
    }
    Ok(jobs)
}

/// "deploy-prod is held by job 3f9c8e1d2a7b (alice, running 2m)".
pub fn held_by(group: &str, holder: &JobRecord, now: u64) -> String {
    let since = holder.last_attempt().and_then(|attempt| attempt.started_at_ms.or(attempt.accepted_at_ms));
    let running = since
        .map_or_else(|| "starting".to_owned(), |since| format!("running {}", format::age(now.saturating_sub(since))));
    format!(
        "{group} is held by job {} ({}, {running})",
        format::short_id(holder.id),
        holder.queued_by.as_deref().unwrap_or("someone")
    )
}

/// What a job waiting on `group` says: who holds it, how many wait ahead, or else where it waits
/// for a runner; `None` when even its queue cannot be read.
pub async fn waiting_notice(conn: &Connection, topology: &Topology, group: &str, job: Uuid) -> Option<String> {
    let jobs = match group_jobs(conn, topology, group, job).await {
        Ok(jobs) => jobs,
        Err(err) => return Some(format!("waiting for group {group} (cannot read who holds it: {err})")),
    };
    let ahead = jobs.waiting.iter().filter(|record| record.id < job).count();
    match (&jobs.holder, ahead) {
        (Some(holder), 0) => Some(format!("waiting: {}", held_by(group, holder, now_ms()))),
        (Some(holder), n) => Some(format!("waiting: {} ({n} more ahead)", held_by(group, holder, now_ms()))),
        (None, 0) => queue_notice(conn, topology, group).await,
        (None, n) => Some(format!("waiting: {n} job(s) of {group} ahead")),
    }
}

/// The group is free but the job is not taken: where it waits, and how many runners consume it.
async fn queue_notice(conn: &Connection, topology: &Topology, group: &str) -> Option<String> {
    let queue = topology.group_queue(group);
    let info = conn.queue_info(&queue).await.ok()??;
    Some(format!(
        "still waiting for a runner: the job is in queue `{queue}` of group {group} ({} waiting there), which {} \
         consume (one job of the group at a time)",
        info.messages,
        match info.consumers {
            1 => "1 runner".to_owned(),
            n => format!("{n} runners"),
        }
    ))
}

/// `concurrency_pending = "cancel"`: cancel every job waiting in `group` (not the one running),
/// recorded as cancelled by this user, for the job `by_job` that replaces them. Returns the ids.
pub async fn cancel_pending(
    conn: &Connection,
    topology: &Topology,
    group: &str,
    by_job: Uuid,
) -> Result<Vec<Uuid>, CliError> {
    let jobs = group_jobs(conn, topology, group, by_job).await?;
    let mut cancelled = Vec::new();
    for record in jobs.waiting {
        let reason = format!(
            "superseded by job {} in concurrency group {group} (concurrency_pending = \"cancel\")",
            format::short_id(by_job)
        );
        cancel::request_cancel_for(conn, topology, record.id, false, record.attempt_count(), Some(reason)).await?;
        cancelled.push(record.id);
    }
    Ok(cancelled)
}
