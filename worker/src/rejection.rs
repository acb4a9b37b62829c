//! A job message the runner cannot run (not a job, an empty command, an unknown builtin, too
//! large): tell its followers with a `completed` of status `rejected` when the message says whose
//! it is, then move it to the dead letters as it came, and only then acknowledge it.
//!
//! It does not decide what is runnable (the protocol's `decode_job` does).

use runway_broker::protocol::{self, Completed, DecodeError, Event, EventBody, Status};
use runway_broker::topology::Topology;
use runway_broker::{Connection, Delivery};
use uuid::Uuid;

use crate::job::settle;

/// Reject `delivery`, which did not decode for `why`. If the event or the dead letter cannot be published, the
/// message goes back to its queue rather than being lost (a quorum queue's delivery limit ends
/// that loop). Whether it went to the dead letters.
pub(crate) async fn reject(
    conn: &Connection,
    topology: &Topology,
    runner: &str,
    delivery: Delivery,
    why: &DecodeError,
) -> bool {
    let reason = why.to_string();
    let reason = reason.as_str();
    let whose = job_of(&delivery, why);
    tracing::warn!(
        job = whose.map(|(id, _)| id.to_string()).as_deref().unwrap_or("unknown"),
        routing_key = %delivery.routing_key,
        %reason,
        "rejecting a job message: dead-lettering it"
    );
    if let Some((job, attempt)) = whose
        && let Err(err) = publish_rejected(conn, topology, runner, job, attempt, reason).await
    {
        tracing::warn!(%job, error = %err, "publishing the rejection failed; handing the message back");
        settle(delivery.acker.nack(true).await);
        return false;
    }
    match topology.dead_letter(conn, delivery.body, &delivery.properties, reason, &delivery.queue).await {
        Ok(()) => {
            settle(delivery.acker.ack().await);
            true
        }
        // Keep it where it is rather than lose it.
        Err(err) => {
            tracing::warn!(error = %err, "dead-lettering failed");
            settle(delivery.acker.nack(true).await);
            false
        }
    }
}

/// Whose job the message is: the id in its body, or failing that its `correlation_id` or
/// `message_id` (a job message carries its id in both). A body over the size bound is not read.
fn job_of(delivery: &Delivery, why: &DecodeError) -> Option<(Uuid, u32)> {
    let from_body = match why {
        DecodeError::TooLarge { .. } => None,
        _ => protocol::probe_job_id(&delivery.body),
    };
    from_body.or_else(|| {
        let properties = &delivery.properties;
        [&properties.correlation_id, &properties.message_id]
            .into_iter()
            .flatten()
            .find_map(|id| Uuid::parse_str(id).ok())
            .map(|id| (id, 1))
    })
}

/// Record the rejection in the job's events (`seq` 0, like every event not of a running attempt)
/// and wait for the broker's confirm.
async fn publish_rejected(
    conn: &Connection,
    topology: &Topology,
    runner: &str,
    job: Uuid,
    attempt: u32,
    reason: &str,
) -> runway_broker::Result<()> {
    let completed = Completed::without_exit(Status::Rejected, format!("runner {runner} cannot run it: {reason}"));
    let event = Event {
        v: protocol::VERSION,
        job,
        seq: 0,
        ts: protocol::now_ms(),
        runner: runner.to_owned(),
        attempt,
        body: EventBody::Completed(completed),
    };
    topology.publish_event(conn, &event).await?.wait().await
}
