//! Automatic retries as a runner carries them out: after an attempt ended in a way the job's
//! `retry` names, the same job (same id) is queued again as the next attempt, through a holding
//! queue of the broker's when it waits first (`topology`'s delays), before the attempt's
//! `completed` says so and before its delivery is acknowledged.
//!
//! It decides nothing about what counts for a retry (`protocol::Retry::next_attempt` does) and
//! does not run the next attempt: whichever runner the broker hands it to does.

use runway_broker::protocol::{self, Completed, Job, Retrying};
use runway_broker::topology::Topology;
use runway_broker::{Connection, Result};

/// The attempt to queue after `job`'s attempt ended as `completed`, if its retries say so.
pub(crate) fn next_attempt(job: &Job, completed: &Completed) -> Option<u32> {
    job.retry.as_ref()?.next_attempt(job.attempt, completed)
}

/// `job` as its attempt `attempt`, due after the retry delay, and what the ended attempt's
/// `completed` says of it. The `completed` goes out (confirmed) before the next attempt is
/// queued, so no reader meets attempt N+1 before attempt N's end (readers believe an attempt
/// only after the one before it ended: `JobRecord::apply`).
pub(crate) fn plan(job: &Job, attempt: u32) -> (Job, Retrying) {
    let delay_ms = job.retry.as_ref().map_or(0, |retry| retry.delay_ms);
    let at_ms = protocol::now_ms().saturating_add(delay_ms);
    let next = Job { attempt, not_before_ms: (delay_ms > 0).then_some(at_ms), ..job.clone() };
    (next, Retrying { attempt, at_ms, delay_ms })
}

/// Queue the next attempt `next` (from [`plan`]) and wait for the broker's confirm.
pub(crate) async fn queue_again(conn: &Connection, topology: &Topology, next: &Job) -> Result<()> {
    topology.publish_job(conn, next).await
}
