//! The cancels stream as a runner reads it: every cancel request so far (read from the start up
//! to a marker when the runner wires up), then each new one as it comes.
//!
//! It only says which jobs were cancelled, and by whom (the broker-verified `user_id`); whether
//! a request is honoured is the policy's, and stopping a running job the serving loop's part.

use std::collections::HashMap;

use runway_broker::protocol::{self, ControlBody};
use runway_broker::topology::Topology;
use runway_broker::{Connection, ConsumeOptions, Consumer, Delivery, StreamOffset, identity};
use uuid::Uuid;

use crate::policy::Policy;

/// The cancel requests seen so far: for each job, who asked (`None`: a request with no verified
/// sender).
#[derive(Debug, Default)]
pub(crate) struct Cancels {
    by: HashMap<Uuid, Vec<Option<String>>>,
}

impl Cancels {
    /// Record the request `delivery` holds, if it is one; returns the job and who asked.
    pub(crate) fn record(&mut self, delivery: &Delivery) -> Option<(Uuid, Option<String>)> {
        let job = cancelled_job(&delivery.body)?;
        let by = identity::sender(delivery).map(str::to_owned);
        self.by.entry(job).or_default().push(by.clone());
        Some((job, by))
    }

    pub(crate) fn extend(&mut self, other: Cancels) {
        for (job, by) in other.by {
            self.by.entry(job).or_default().extend(by);
        }
    }

    /// Whether someone the policy lets cancel a job of `submitter` asked to cancel `job`.
    pub(crate) fn honoured(&self, job: Uuid, submitter: Option<&str>, policy: &Policy) -> bool {
        self.by
            .get(&job)
            .is_some_and(|by| by.iter().any(|canceller| policy.may_cancel(canceller.as_deref(), submitter)))
    }
}

/// Deliveries of the cancels stream in flight while reading it.
const PREFETCH: u16 = 1000;

/// Read the cancels stream up to now; returns the cancelled job ids and the consumer, which
/// goes on delivering new cancels.
pub(crate) async fn read_cancels(conn: &Connection, topology: &Topology) -> runway_broker::Result<(Cancels, Consumer)> {
    let stream = topology.cancels_queue();
    let options = ConsumeOptions { offset: Some(StreamOffset::First), ..ConsumeOptions::with_prefetch(PREFETCH) };
    let mut consumer = conn.consume(&stream, &options).await?;
    let marker = topology.mark_stream(conn, &stream).await?;
    let mut cancelled = Cancels::default();
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery?;
        delivery.acker.ack().await?;
        if delivery.properties.message_id.as_deref() == Some(marker.as_str()) {
            return Ok((cancelled, consumer));
        }
        cancelled.record(&delivery);
    }
    Err(runway_broker::Error::ConnectionClosed(format!("the stream `{stream}` ended while reading it")))
}

/// The job a cancels-stream message asks to cancel; `None` for anything else (a marker, a
/// message this version does not read).
fn cancelled_job(body: &[u8]) -> Option<Uuid> {
    match protocol::decode::<protocol::Control>(body, "control message") {
        Ok(protocol::Control { body: ControlBody::Cancel { job, .. }, .. }) => Some(job),
        _ => None,
    }
}
