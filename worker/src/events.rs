//! Publishing one job's events: gap-free `seq`, pipelined publisher confirms, and a bound on
//! how many may be unconfirmed at once (the runner's back-pressure toward the broker).
//!
//! It does not decide what to publish or when; `execute` does.

use std::collections::VecDeque;

use runway_broker::protocol::{Event, EventBody, VERSION, now_ms};
use runway_broker::topology::Topology;
use runway_broker::{Confirm, Connection};
use uuid::Uuid;

/// Unconfirmed events allowed in flight before publishing waits for the oldest confirm.
const MAX_IN_FLIGHT: usize = 64;

/// The events of one attempt of one job.
#[derive(Debug)]
pub(crate) struct EventSink {
    conn: Connection,
    topology: Topology,
    job: Uuid,
    runner: String,
    attempt: u32,
    seq: u64,
    in_flight: VecDeque<Confirm>,
    /// The first publish failure; later events are still attempted, so the log shows what it can.
    failed: Option<runway_broker::Error>,
}

impl EventSink {
    pub(crate) fn new(conn: Connection, topology: Topology, job: Uuid, runner: String, attempt: u32) -> EventSink {
        EventSink { conn, topology, job, runner, attempt, seq: 0, in_flight: VecDeque::new(), failed: None }
    }

    /// Publish the next event. A failure is recorded and logged, never fatal to the job: the
    /// process keeps running and its exit is still reported if the broker comes back.
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
        match self.topology.publish_event(&self.conn, &event).await {
            Ok(confirm) => self.in_flight.push_back(confirm),
            Err(err) => self.record(err),
        }
        while self.in_flight.len() > MAX_IN_FLIGHT {
            if let Some(confirm) = self.in_flight.pop_front()
                && let Err(err) = confirm.wait().await
            {
                self.record(err);
            }
        }
    }

    /// Wait until every event published so far is confirmed.
    pub(crate) async fn flush(&mut self) -> Result<(), runway_broker::Error> {
        while let Some(confirm) = self.in_flight.pop_front() {
            if let Err(err) = confirm.wait().await {
                self.record(err);
            }
        }
        match self.failed.take() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    fn record(&mut self, err: runway_broker::Error) {
        tracing::warn!(job = %self.job, seq = self.seq, error = %err, "publishing an event failed");
        if self.failed.is_none() {
            self.failed = Some(err);
        }
    }
}
