//! Concurrency groups as a runner serves them: the group names announced so far (read from the
//! groups stream up to a marker when the runner wires up; later ones come as control messages),
//! and one consumer per group queue, prefetch 1, on a queue with a single active consumer.
//!
//! The broker holds the lock: only the group queue's active consumer receives anything, and with
//! prefetch 1 it holds at most one job, acknowledged only after `completed`, so at most one job
//! of a group is out at a time, in queue order. A group job runs outside the runner's slots (the
//! group bounds it to one) and is not counted against them by the credit rule: a busy active
//! consumer would otherwise block the whole group. It does not run jobs or decide credit.

use std::collections::{HashMap, HashSet};

use runway_broker::protocol::{self, ControlBody};
use runway_broker::topology::Topology;
use runway_broker::{Connection, ConsumeOptions, StreamOffset};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::consumers::{Forward, Tagged, forward, job_consume_options};

/// Deliveries of the groups stream in flight while reading it.
const PREFETCH: u16 = 1000;

/// Read the groups stream up to now: every group name announced (within its retention).
pub(crate) async fn read_groups(conn: &Connection, topology: &Topology) -> runway_broker::Result<HashSet<String>> {
    let stream = topology.groups_queue();
    let options = ConsumeOptions { offset: Some(StreamOffset::First), ..ConsumeOptions::with_prefetch(PREFETCH) };
    let mut consumer = conn.consume(&stream, &options).await?;
    let marker = topology.mark_stream(conn, &stream).await?;
    let mut groups = HashSet::new();
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery?;
        delivery.acker.ack().await?;
        if delivery.properties.message_id.as_deref() == Some(marker.as_str()) {
            return Ok(groups);
        }
        if let Some(name) = announced_group(&delivery.body) {
            groups.insert(name);
        }
    }
    Err(runway_broker::Error::ConnectionClosed(format!("the stream `{stream}` ended while reading it")))
}

/// The group a control message announces; `None` for anything else.
pub(crate) fn announced_group(body: &[u8]) -> Option<String> {
    match protocol::decode::<protocol::Control>(body, "control message") {
        Ok(protocol::Control { body: ControlBody::Group { name }, .. }) => Some(name),
        _ => None,
    }
}

/// The group queues a runner consumes, and its group jobs here.
#[derive(Default)]
pub(crate) struct Groups {
    /// Group name → the consumer instance of its queue on the current connection.
    consumed: HashMap<String, u64>,
    /// Every group known, consumed or not (to consume again on a new connection).
    known: HashSet<String>,
    forwarders: JoinSet<()>,
    /// Group jobs here (waiting, running): outside the runner's slots.
    jobs: HashSet<Uuid>,
}

impl Groups {
    /// Consume the queue of each group in `names` not consumed yet on `conn`.
    pub(crate) async fn consume(
        &mut self,
        conn: &Connection,
        topology: &Topology,
        names: impl IntoIterator<Item = String>,
        instances: &mut u64,
        tx: &mpsc::Sender<Tagged>,
    ) -> runway_broker::Result<()> {
        for name in names {
            self.known.insert(name.clone());
            if self.consumed.contains_key(&name) {
                continue;
            }
            let queue = topology.declare_group(conn, &name).await?;
            let options = job_consume_options(1);
            let consumer = conn.consume(&queue, &options).await?;
            *instances += 1;
            let instance = *instances;
            tracing::debug!(group = %name, %queue, "consuming a concurrency group");
            self.consumed.insert(name, instance);
            let group_queue = Forward { conn: conn.clone(), queue, options, consumer, instance };
            self.forwarders.spawn(forward(group_queue, tx.clone(), None));
        }
        Ok(())
    }

    /// The connection is gone: its consumers are too. Returns every group known, to consume again.
    pub(crate) fn unplug(&mut self) -> Vec<String> {
        self.forwarders.abort_all();
        self.consumed.clear();
        self.known.iter().cloned().collect()
    }

    /// Stop consuming (after the runner's jobs ended, so a group job still running keeps the
    /// group held until it completed).
    pub(crate) async fn stop(&mut self) {
        self.forwarders.abort_all();
        while self.forwarders.join_next().await.is_some() {}
    }

    /// Whether deliveries of consumer `instance` are group jobs.
    pub(crate) fn is_group_consumer(&self, instance: u64) -> bool {
        self.consumed.values().any(|&consumer| consumer == instance)
    }

    pub(crate) fn took(&mut self, job: Uuid) {
        self.jobs.insert(job);
    }

    pub(crate) fn ended(&mut self, job: Uuid) {
        self.jobs.remove(&job);
    }

    /// Group jobs here: the credit rule does not count them against the slots.
    pub(crate) fn jobs_here(&self) -> usize {
        self.jobs.len()
    }
}
