//! Reading the history and index streams: from a point in time up to "now" (a marker appended
//! when the read starts), or on, live.
//!
//! It hands raw deliveries to the caller; what they mean is `history`'s business.

use std::time::Duration;

use runway_broker::topology::{MARKER_KIND, Topology};
use runway_broker::{Connection, ConsumeOptions, Consumer, Delivery, StreamOffset};

/// Deliveries to take before acknowledging, for a stream of small messages (the index, the
/// cancels): large, since a stream read is a bulk read.
pub const SMALL_PREFETCH: u16 = 2000;
/// The same for the history, whose log batches can be 128 KiB each: bounds the reader's memory.
pub const LARGE_PREFETCH: u16 = 64;

/// Streams seek by chunk and clocks differ a little: a read for a job starts this much before
/// the job was created.
pub const SEEK_SLACK_MS: u64 = 5_000;

/// Before catching up, a read that gets nothing for this long appends its marker again and
/// says so: a stream read must end, never hang.
const STALL: Duration = Duration::from_secs(5);

/// Stalls in a row after which the read fails instead: on a cluster, a node whose replica of
/// the stream is not running accepts the consumer and then delivers nothing, however often the
/// marker is appended. The caller connects again (to another node, with a server list).
const STALLS_BEFORE_FAILING: u32 = 6;

/// A reader of one stream.
#[derive(Debug)]
pub struct StreamReader {
    consumer: Consumer,
    /// To append the marker again if the read stalls.
    conn: Connection,
    topology: Topology,
    stream: String,
    /// Deliveries read so far, for the stall report.
    read: u64,
    /// Stalls since the last delivery.
    stalls: u32,
    marker: Option<String>,
    /// Set once the marker went by: everything stored before the read began has been seen.
    pub caught_up: bool,
    /// The marker's offset, once it went by: where the stream ended when the read began.
    pub end_offset: Option<u64>,
    /// Deliveries taken since the last acknowledgement, and the acker of the latest.
    unacked: u16,
    last: Option<runway_broker::Acker>,
    /// Acknowledge every this many deliveries (a quarter of the prefetch).
    ack_every: u16,
}

impl StreamReader {
    /// Start reading `stream` at `offset`; the reader reports `caught_up` once it has seen
    /// everything stored before this call.
    /// `prefetch` bounds the deliveries in flight: [`SMALL_PREFETCH`] or [`LARGE_PREFETCH`].
    pub async fn open(
        conn: &Connection,
        topology: &Topology,
        stream: &str,
        offset: StreamOffset,
        prefetch: u16,
    ) -> runway_broker::Result<StreamReader> {
        let options = ConsumeOptions { offset: Some(offset), ..ConsumeOptions::with_prefetch(prefetch.max(4)) };
        let consumer = consume_when_replicated(conn, stream, &options).await?;
        let marker = topology.mark_stream(conn, stream).await?;
        let ack_every = (prefetch / 4).max(1);
        Ok(StreamReader {
            consumer,
            conn: conn.clone(),
            topology: topology.clone(),
            stream: stream.to_owned(),
            read: 0,
            stalls: 0,
            marker: Some(marker),
            caught_up: false,
            end_offset: None,
            unacked: 0,
            last: None,
            ack_every,
        })
    }

    /// The next stored message that is not a marker, `Read::CaughtUp` when our own marker went
    /// by, or `None` when the stream ends (the connection closed).
    ///
    /// Cancel-safe, so it can race a timer in `select!`: a delivery is only taken from the
    /// consumer in the last step, and the batch acknowledgement happens before it.
    pub async fn next(&mut self) -> runway_broker::Result<Option<Read>> {
        loop {
            if self.unacked >= self.ack_every {
                // Taken out first: if this future is cancelled mid-ack, the next batch's
                // acknowledgement (AMQP `multiple`) covers these deliveries anyway.
                if let Some(acker) = self.last.take() {
                    acker.ack_through().await?;
                }
                self.unacked = 0;
            }
            let next = if self.caught_up {
                self.consumer.next().await
            } else {
                match tokio::time::timeout(STALL, self.consumer.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        self.stalls += 1;
                        if self.stalls >= STALLS_BEFORE_FAILING {
                            return Err(runway_broker::Error::ConnectionClosed(format!(
                                "the stream `{}` delivered nothing for {}s before its end (read {} messages): \
                                 the node's replica of it may not be running",
                                self.stream,
                                STALL.as_secs() * u64::from(self.stalls),
                                self.read
                            )));
                        }
                        self.nudge().await;
                        continue;
                    }
                }
            };
            let Some(delivery) = next else { return Ok(None) };
            let mut delivery = delivery?;
            self.read += 1;
            self.stalls = 0;
            // Acknowledging returns credit and cannot lose anything on a stream: keep the acker
            // and acknowledge a batch at a time (one frame), well before the prefetch runs out.
            self.last = Some(std::mem::replace(&mut delivery.acker, runway_broker::Acker::None));
            self.unacked += 1;
            if delivery.properties.kind.as_deref() == Some(MARKER_KIND) {
                if delivery.properties.message_id.is_some() && delivery.properties.message_id == self.marker {
                    self.caught_up = true;
                    self.end_offset = delivery.stream_offset;
                    return Ok(Some(Read::CaughtUp));
                }
                continue;
            }
            return Ok(Some(Read::Message(Box::new(delivery))));
        }
    }
}

impl StreamReader {
    /// Nothing came for [`STALL`] before the marker: say so, and append the marker again.
    async fn nudge(&mut self) {
        let Some(marker) = self.marker.clone() else { return };
        tracing::warn!(
            stream = %self.stream,
            read = self.read,
            "reading the stream: nothing arrived for {}s before its end; marking the end again",
            STALL.as_secs()
        );
        if let Err(err) = self.topology.mark_stream_again(&self.conn, &self.stream, &marker).await {
            tracing::warn!(stream = %self.stream, error = %err, "marking the end of the stream again failed");
        }
    }
}

/// One step of a stream read.
#[derive(Debug)]
pub enum Read {
    // Boxed: a delivery is large, and a read returns one per message.
    Message(Box<Delivery>),
    /// Everything stored before the read began has been delivered.
    CaughtUp,
}

/// How long a read waits for the stream's replica on its node to run again (after a node of a
/// cluster died, its replicas restart once a new leader is elected: seconds).
const REPLICA_PATIENCE: Duration = Duration::from_secs(30);

/// Consume `stream`, trying again while the node says its replica of it is not running yet
/// (RabbitMQ refuses a stream consumer on a node whose replica restarts), with a growing pause,
/// for up to [`REPLICA_PATIENCE`]; any other error is returned at once.
async fn consume_when_replicated(
    conn: &Connection,
    stream: &str,
    options: &ConsumeOptions,
) -> runway_broker::Result<runway_broker::Consumer> {
    let deadline = tokio::time::Instant::now() + REPLICA_PATIENCE;
    let mut pause = Duration::from_millis(100);
    loop {
        match conn.consume(stream, options).await {
            Err(err) if is_replica_down(&err) && tokio::time::Instant::now() + pause < deadline => {
                tracing::info!(stream, error = %err, "the stream's replica on this node is not running yet; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

/// RabbitMQ's refusal of a stream read on a node whose replica is not running (its text is all
/// that tells it apart from other refusals).
fn is_replica_down(err: &runway_broker::Error) -> bool {
    err.to_string().contains("replica")
}
