//! Cancelling a job: `runway job cancel`, and the request itself (recorded in the history, then
//! sent to every runner), which an attached CLI's Ctrl-C sends too.
//!
//! It does not wait for the job to end: whoever follows the job sees its `completed` event.

use runway_broker::Connection;
use runway_broker::protocol::{Control, ControlBody, Event, EventBody, VERSION, now_ms};
use runway_broker::topology::Topology;
use uuid::Uuid;

use crate::exit::{self, CliError};
use crate::format;
use crate::identity;
use crate::lookup;

/// `job cancel`.
pub async fn cancel(conn: &Connection, topology: &Topology, id: &str, force: bool) -> Result<u8, CliError> {
    let record = lookup::resolve(conn, topology, id).await?;
    let state = record.state(now_ms());
    if state.is_final() {
        eprintln!("runway: job {} already ended {}; nothing to cancel", format::short_id(record.id), state.as_str());
        return Ok(exit::SUCCESS);
    }
    request_cancel(conn, topology, record.id, force, record.last_attempt().map_or(1, |a| a.number)).await?;
    match record.last_attempt() {
        // Its next attempt waits for its time: it never comes.
        Some(attempt) if attempt.completed.is_some() => {
            eprintln!("runway: job {} cancelled: attempt {} will not run", record.id, attempt.number.saturating_add(1))
        }
        Some(attempt) => {
            eprintln!(
                "runway: cancel requested for job {} running on runner {}",
                format::short_id(record.id),
                attempt.runner
            )
        }
        None => eprintln!("runway: job {} cancelled: it will not run", format::short_id(record.id)),
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
    request_cancel_for(conn, topology, job, force, attempt, None).await
}

/// [`request_cancel`], saying why when it is not the canceller's own request.
pub async fn request_cancel_for(
    conn: &Connection,
    topology: &Topology,
    job: Uuid,
    force: bool,
    attempt: u32,
    reason: Option<String>,
) -> Result<(), CliError> {
    let event = Event {
        v: VERSION,
        job,
        seq: 0,
        ts: now_ms(),
        runner: String::new(),
        attempt,
        body: EventBody::CancelRequested { by: identity::user_at_host(), force, reason },
    };
    topology.publish_event(conn, &event).await?.wait().await?;
    let control = Control { v: VERSION, body: ControlBody::Cancel { job, force } };
    topology.publish_control(conn, &control).await?;
    Ok(())
}
