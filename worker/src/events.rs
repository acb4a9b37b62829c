//! Publishing one job's events: gap-free `seq`, pipelined publisher confirms, and a bound on
//! how many may be unconfirmed at once (the runner's back-pressure toward the broker).
//!
//! An event is kept (encoded) until the broker confirmed it. When the connection drops, the
//! unconfirmed events wait (at most [`MAX_IN_FLIGHT`] of them, [`MAX_IN_FLIGHT_BYTES`] in all:
//! past that the job's output is no longer read,
//! so the job slows down instead of memory growing) and are published again, in order, on the
//! next connection. Readers drop the duplicates this can make by `(attempt, seq)`. Events are
//! lost only when the runner stops while the broker is away; then the log says how many.
//!
//! It does not decide what to publish or when; `execute` does.

use std::collections::VecDeque;

use runway_broker::protocol::{Event, EventBody, VERSION, now_ms};
use runway_broker::topology::{EventMessage, Topology};
use runway_broker::{Confirm, Connection};
use uuid::Uuid;

use crate::link::Link;

/// Unconfirmed events allowed in flight before publishing waits for the oldest confirm...
const MAX_IN_FLIGHT: usize = 64;
/// ...and their encoded bytes: a log batch can be 128 KiB, and each waits in this runner (and in
/// the AMQP client's buffers) until confirmed. 2 MiB keeps the pipe to the broker full.
const MAX_IN_FLIGHT_BYTES: usize = 2 * 1024 * 1024;
/// How long a confirm may take before the event is published again on the same connection. A
/// confirm normally comes in milliseconds, and within seconds of a queue or stream leader's
/// election; one that never comes (a leader that went away with the publish, a node restarted
/// under it) must not hold the job for ever. Readers drop the copy this can make by `seq`.
const CONFIRM_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// An event not yet confirmed, and the confirm to wait for (with the generation of the
/// connection it went out on) if it went out.
#[derive(Debug)]
struct Pending {
    /// Kept encoded, not as the event: a log batch is several times larger decoded.
    event: EventMessage,
    confirm: Option<(Confirm, u64)>,
}

/// The events of one attempt of one job.
#[derive(Debug)]
pub(crate) struct EventSink {
    link: Link,
    topology: Topology,
    job: Uuid,
    runner: String,
    attempt: u32,
    seq: u64,
    in_flight: VecDeque<Pending>,
    /// The encoded bytes of `in_flight`.
    in_flight_bytes: usize,
    /// The connection events go out on, and its generation; `None` while it is down.
    conn: Option<(Connection, u64)>,
    /// The newest generation used, to wait for a newer one.
    generation: u64,
    /// The first failure that lost events; later events are still attempted.
    failed: Option<runway_broker::Error>,
}

impl EventSink {
    pub(crate) fn new(link: Link, topology: Topology, job: Uuid, runner: String, attempt: u32) -> EventSink {
        let conn = link.current();
        let generation = conn.as_ref().map_or(0, |(_, generation)| *generation);
        EventSink {
            link,
            topology,
            job,
            runner,
            attempt,
            seq: 0,
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
            conn,
            generation,
            failed: None,
        }
    }

    /// Publish the next event. A failure is never fatal to the job: the process keeps running,
    /// and the event goes out again once the broker is back.
    pub(crate) async fn emit(&mut self, body: EventBody) {
        self.seq += 1;
        let event = Event {
            v: VERSION,
            job: self.job,
            seq: self.seq,
            ts: now_ms(),
            runner: self.runner.clone(),
            attempt: self.attempt,
            body,
        };
        let lines = match &event.body {
            EventBody::Log { lines } => Some(lines),
            _ => None,
        };
        let encoded = EventMessage::of(&event);
        // Lifecycle events and the rest go out on different channels (`runway_broker::Lane`),
        // and the broker keeps order only within one: the events of the other lane are
        // confirmed (stored, and in followers' queues) before this one goes out, so a follower
        // never sees `completed` before the job's last lines.
        if self.in_flight.back().is_some_and(|last| last.event.lane() != encoded.lane()) {
            while !self.in_flight.is_empty() {
                self.settle_oldest().await;
            }
        }
        self.in_flight_bytes += encoded.len();
        self.in_flight.push_back(Pending { event: encoded, confirm: None });
        self.link.metrics().events_unconfirmed(1);
        if self.conn.is_none()
            && let Some((conn, generation)) = self.link.current()
            && generation > self.generation
        {
            // Back: what waited goes out first, in order.
            self.generation = generation;
            self.conn = Some((conn, generation));
        }
        self.send_pending().await;
        if let Some(lines) = lines {
            self.link.metrics().log_published(lines);
        }
        while self.in_flight.len() > MAX_IN_FLIGHT
            || (self.in_flight_bytes > MAX_IN_FLIGHT_BYTES && self.in_flight.len() > 1)
        {
            self.settle_oldest().await;
        }
    }

    pub(crate) fn metrics(&self) -> &crate::metrics::Metrics {
        self.link.metrics()
    }

    /// Wait until every event published so far is confirmed (or, the runner having stopped
    /// with the broker away, given up on).
    pub(crate) async fn flush(&mut self) -> Result<(), runway_broker::Error> {
        while !self.in_flight.is_empty() {
            self.settle_oldest().await;
        }
        match self.failed.take() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// Publish, on the current connection, every pending event that has not gone out on it.
    /// Returns false (and reports the connection lost) if it is gone.
    async fn send_pending(&mut self) -> bool {
        let Some((conn, generation)) = self.conn.clone() else { return false };
        let mut refused = Vec::new();
        for (at, pending) in self.in_flight.iter_mut().enumerate() {
            if pending.confirm.as_ref().is_some_and(|(_, sent_on)| *sent_on == generation) {
                continue;
            }
            match self.topology.publish_event_message(&conn, &pending.event).await {
                Ok(confirm) => pending.confirm = Some((confirm, generation)),
                Err(err) if err.is_unreachable() => {
                    tracing::debug!(error = %err, "the broker connection is gone; events wait for it");
                    self.link.report_lost(generation);
                    self.conn = None;
                    return false;
                }
                Err(err) => refused.push((at, err)),
            }
        }
        for (at, err) in refused.into_iter().rev() {
            if let Some(refused) = self.in_flight.remove(at) {
                self.in_flight_bytes -= refused.event.len();
                self.link.metrics().events_unconfirmed(-1);
            }
            self.record(err, 1);
        }
        true
    }

    /// Settle the oldest pending event: its confirm, or, with the connection gone, wait for a
    /// new connection and publish every pending event again on it.
    async fn settle_oldest(&mut self) {
        let Some(oldest) = self.in_flight.front_mut() else { return };
        let current = self.conn.as_ref().map(|(_, generation)| *generation);
        match oldest.confirm.take() {
            Some((confirm, sent_on)) if Some(sent_on) == current => match self.wait_confirm(confirm).await {
                None => self.reconnect().await,
                Some(Ok(())) => self.pop_oldest(),
                Some(Err(err)) if err.is_unreachable() => {
                    self.link.report_lost(sent_on);
                    self.conn = None;
                    self.reconnect().await;
                }
                Some(Err(err)) => {
                    self.pop_oldest();
                    self.record(err, 1);
                }
            },
            // Not out on the current connection: out again once there is one.
            Some(_) | None => self.reconnect().await,
        }
    }

    /// The confirm of the oldest pending event; `None` if it did not come within
    /// [`CONFIRM_PATIENCE`]: the event is then due to go out again (on the same connection).
    async fn wait_confirm(&mut self, confirm: Confirm) -> Option<Result<(), runway_broker::Error>> {
        match tokio::time::timeout(CONFIRM_PATIENCE, confirm.wait()).await {
            Ok(confirmed) => Some(confirmed),
            Err(_) => {
                let seq = (self.seq + 1).saturating_sub(u64::try_from(self.in_flight.len()).unwrap_or(u64::MAX));
                tracing::warn!(job = %self.job, seq, waited = ?CONFIRM_PATIENCE, "no confirm came for an event of the job: publishing it again");
                None
            }
        }
    }

    /// Until every pending event is out on a live connection: wait for a connection newer
    /// than the last one used, and publish again; give the events up if the link closed.
    async fn reconnect(&mut self) {
        loop {
            if self.conn.is_none() {
                let Some((conn, generation)) = self.link.newer_than(self.generation).await else {
                    let lost = self.in_flight.len();
                    self.link.metrics().events_unconfirmed(-i64::try_from(lost).unwrap_or(i64::MAX));
                    self.in_flight.clear();
                    self.in_flight_bytes = 0;
                    let why = "the runner stopped while the broker was away".to_owned();
                    self.record(runway_broker::Error::ConnectionClosed(why), lost);
                    return;
                };
                self.generation = generation;
                self.conn = Some((conn, generation));
            }
            if self.send_pending().await {
                return;
            }
        }
    }

    fn pop_oldest(&mut self) {
        if let Some(oldest) = self.in_flight.pop_front() {
            self.in_flight_bytes -= oldest.event.len();
            self.link.metrics().events_unconfirmed(-1);
        }
    }

    fn record(&mut self, err: runway_broker::Error, events: usize) {
        tracing::warn!(job = %self.job, seq = self.seq, events, error = %err, "events of the job were lost");
        if self.failed.is_none() {
            self.failed = Some(err);
        }
    }
}

/// Events given up with the sink (a job task that ended without a flush) are no longer waiting.
impl Drop for EventSink {
    fn drop(&mut self) {
        if !self.in_flight.is_empty() {
            self.link.metrics().events_unconfirmed(-i64::try_from(self.in_flight.len()).unwrap_or(i64::MAX));
        }
    }
}
