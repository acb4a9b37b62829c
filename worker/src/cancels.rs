//! The cancels stream as a runner reads it: every cancel request so far (read from the start up
//! to a marker when the runner wires up), then each new one as it comes.
//!
//! It only says which jobs were cancelled; stopping a running job is the serving loop's part.

use std::collections::HashSet;

use runway_broker::protocol::{self, ControlBody};
use runway_broker::topology::Topology;
use runway_broker::{Connection, ConsumeOptions, Consumer, StreamOffset};
use uuid::Uuid;

/// Deliveries of the cancels stream in flight while reading it.
const PREFETCH: u16 = 1000;

/// Read the cancels stream up to now; returns the cancelled job ids and the consumer, which
/// goes on delivering new cancels.
pub(crate) async fn read_cancels(
    conn: &Connection,
    topology: &Topology,
) -> runway_broker::Result<(HashSet<Uuid>, Consumer)> {
    let stream = topology.cancels_queue();
    let options = ConsumeOptions { offset: Some(StreamOffset::First), ..ConsumeOptions::with_prefetch(PREFETCH) };
    let mut consumer = conn.consume(&stream, &options).await?;
    let marker = topology.mark_stream(conn, &stream).await?;
    let mut cancelled = HashSet::new();
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery?;
        delivery.acker.ack().await?;
        if delivery.properties.message_id.as_deref() == Some(marker.as_str()) {
            return Ok((cancelled, consumer));
        }
        if let Some(job) = cancelled_job(&delivery.body) {
            cancelled.insert(job);
        }
    }
    Err(runway_broker::Error::ConnectionClosed(format!("the stream `{stream}` ended while reading it")))
}

/// The job a cancels-stream message asks to cancel; `None` for anything else (a marker, a
/// message this version does not read).
pub(crate) fn cancelled_job(body: &[u8]) -> Option<Uuid> {
    match protocol::decode::<protocol::Control>(body, "control message") {
        Ok(protocol::Control { body: ControlBody::Cancel { job, .. }, .. }) => Some(job),
        _ => None,
    }
}
