//! runway's topology: the names of its exchanges and queues under a namespace prefix, their
//! idempotent declarations, and the publish helpers that know which exchange a message goes to.
//!
//! Everyone declares what they need (declarations are idempotent), so no setup step is required.
//! This module decides names and routing; it does not decide what a job means or when to run it.

use std::collections::BTreeMap;
use std::time::Duration;

use uuid::Uuid;

mod delay;
mod event_message;

pub use delay::{DELAY_STEP_MS, holding_delay};
pub use event_message::EventMessage;

use crate::message::{ExchangeKind, Lane, Message, Properties, QueueInfo, QueueKind, QueueOptions};
use crate::protocol::{self, Control, Event, Job, RunnerInfo, Target};
use crate::{Confirm, Connection, Error, HeaderValue, Result};

/// The default namespace prefix.
pub const DEFAULT_NAMESPACE: &str = "runway";

/// The event kinds the index stream keeps: everything but log lines and outputs.
const INDEX_KINDS: [&str; 6] = ["queued", "cancel_requested", "accepted", "started", "heartbeat", "completed"];

/// The header of a job message published again by a producer that does not know whether the
/// first copy arrived ([`Topology::publish_job_again`]): its runner reads the history first.
pub const COPY_HEADER: &str = "x-runway-copy";

/// The AMQP `type` of a stream marker (see [`Topology::mark_stream`]).
pub const MARKER_KIND: &str = "marker";

/// At most this many labels per runner: it consumes one queue per subset (2^n).
pub const MAX_LABELS: usize = 6;

/// Deliveries of one job before it is dead-lettered (a job that keeps killing its runners).
pub const DELIVERY_LIMIT: u32 = 5;

/// Nodes each quorum queue and stream is replicated to when created: RabbitMQ takes the
/// cluster's size when it is smaller (a single node takes 3 and makes one replica).
pub const REPLICAS: u16 = 3;

/// How long an idle daemon's own queue outlives the daemon (x-expires).
pub const RUNNER_QUEUE_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why a name cannot be used.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameError {
    #[error("invalid {what} `{value}`: use 1 to 100 characters of letters, digits, `-`, `_` and `.`")]
    Invalid { what: &'static str, value: String },
    #[error("too many labels ({count}): a runner holds at most {MAX_LABELS}")]
    TooManyLabels { count: usize },
}

fn check_name(what: &'static str, value: &str) -> Result<(), NameError> {
    let ok = !value.is_empty()
        && value.len() <= 100
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok { Ok(()) } else { Err(NameError::Invalid { what, value: value.to_owned() }) }
}

/// Check a runner id.
pub fn check_runner_id(id: &str) -> Result<(), NameError> {
    check_name("runner id", id)
}

/// Check a label set.
pub fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), NameError> {
    if labels.len() > MAX_LABELS {
        return Err(NameError::TooManyLabels { count: labels.len() });
    }
    for (key, value) in labels {
        check_name("label key", key)?;
        check_name("label value", value)?;
    }
    Ok(())
}

/// The canonical form of a label set: sorted `k=v` joined by commas.
pub fn canonical_labels(labels: &BTreeMap<String, String>) -> String {
    labels.iter().map(|(key, value)| format!("{key}={value}")).collect::<Vec<_>>().join(",")
}

/// Every subset of a label set, the empty one included, in a stable order.
pub fn label_subsets(labels: &BTreeMap<String, String>) -> Vec<BTreeMap<String, String>> {
    let items: Vec<(&String, &String)> = labels.iter().collect();
    (0u32..(1u32 << items.len()))
        .map(|mask| {
            items
                .iter()
                .enumerate()
                .filter(|(bit, _)| mask & (1 << bit) != 0)
                .map(|(_, (key, value))| ((*key).clone(), (*value).clone()))
                .collect()
        })
        .collect()
}

/// History retention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    pub max_age: Duration,
    pub max_bytes: u64,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention { max_age: Duration::from_secs(7 * 24 * 3600), max_bytes: 5_000_000_000 }
    }
}

/// What a runner consumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerQueues {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    pub by_id_only: bool,
    /// A runner inside the CLI: its queue is exclusive to its connection and dies with it.
    pub in_process: bool,
}

/// The names of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    ns: String,
}

impl Topology {
    pub fn new(namespace: &str) -> Result<Topology, NameError> {
        check_name("namespace", namespace)?;
        Ok(Topology { ns: namespace.to_owned() })
    }

    pub fn namespace(&self) -> &str {
        &self.ns
    }

    fn jobs_exchange(&self) -> String {
        format!("{}.jobs", self.ns)
    }

    fn events_exchange(&self) -> String {
        format!("{}.events", self.ns)
    }

    fn control_exchange(&self) -> String {
        format!("{}.control", self.ns)
    }

    fn dead_exchange(&self) -> String {
        format!("{}.dead", self.ns)
    }

    /// The queue that holds dead-lettered jobs.
    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.ns)
    }

    /// The durable history stream: every event of every job.
    pub fn history_queue(&self) -> String {
        format!("{}.history", self.ns)
    }

    /// The index stream: every event but log lines and outputs, so listing jobs does not read
    /// their output.
    pub fn index_queue(&self) -> String {
        format!("{}.index", self.ns)
    }

    /// The stream of cancel requests, read by runners as they start so a job cancelled while
    /// queued never runs.
    pub fn cancels_queue(&self) -> String {
        format!("{}.cancels", self.ns)
    }

    fn any_queue(&self) -> String {
        format!("{}.jobs.any", self.ns)
    }

    fn runner_queue(&self, id: &str) -> String {
        format!("{}.runner.{id}", self.ns)
    }

    fn labels_queue(&self, labels: &BTreeMap<String, String>) -> String {
        format!("{}.jobs.labels.{}", self.ns, canonical_labels(labels))
    }

    /// The queue a job for `target` waits in.
    pub fn job_queue(&self, target: &Target) -> String {
        match target {
            Target::Any => self.any_queue(),
            Target::Labels(labels) if labels.is_empty() => self.any_queue(),
            Target::Labels(labels) => self.labels_queue(labels),
            Target::Runner(id) => self.runner_queue(id),
        }
    }

    fn job_routing_key(target: &Target) -> String {
        match target {
            Target::Any => "any".to_owned(),
            Target::Labels(labels) if labels.is_empty() => "any".to_owned(),
            Target::Labels(labels) => format!("labels.{}", canonical_labels(labels)),
            Target::Runner(id) => format!("runner.{id}"),
        }
    }

    fn shared_job_queue_options(&self) -> QueueOptions {
        QueueOptions {
            kind: QueueKind::Quorum,
            durable: true,
            delivery_limit: Some(DELIVERY_LIMIT),
            dead_letter_exchange: Some(self.dead_exchange()),
            replicas: Some(REPLICAS),
            ..QueueOptions::default()
        }
    }

    /// Declare the exchanges, the shared job queue, the dead-letter queue and the history stream.
    pub async fn declare(&self, conn: &Connection, retention: &Retention) -> Result<()> {
        conn.declare_exchange(&self.jobs_exchange(), ExchangeKind::Direct, true).await?;
        conn.declare_exchange(&self.events_exchange(), ExchangeKind::Topic, true).await?;
        conn.declare_exchange(&self.control_exchange(), ExchangeKind::Topic, true).await?;
        conn.declare_exchange(&self.dead_exchange(), ExchangeKind::Fanout, true).await?;
        let dead = QueueOptions { durable: true, ..QueueOptions::default() };
        conn.declare_queue(&self.dead_queue(), &dead).await?;
        conn.bind_queue(&self.dead_queue(), &self.dead_exchange(), "").await?;
        declare_replicated(conn, &self.any_queue(), &self.shared_job_queue_options()).await?;
        conn.bind_queue(&self.any_queue(), &self.jobs_exchange(), "any").await?;
        let history = QueueOptions {
            kind: QueueKind::Stream,
            durable: true,
            max_age: Some(retention.max_age),
            max_length_bytes: Some(retention.max_bytes),
            replicas: Some(REPLICAS),
            ..QueueOptions::default()
        };
        declare_replicated(conn, &self.history_queue(), &history).await?;
        conn.bind_queue(&self.history_queue(), &self.events_exchange(), "job.#").await?;
        declare_replicated(conn, &self.index_queue(), &history).await?;
        for kind in INDEX_KINDS {
            conn.bind_queue(&self.index_queue(), &self.events_exchange(), &format!("job.*.{kind}")).await?;
        }
        declare_replicated(conn, &self.cancels_queue(), &history).await?;
        conn.bind_queue(&self.cancels_queue(), &self.control_exchange(), "cancel").await?;
        conn.declare_queue(&self.groups_queue(), &history).await?;
        conn.bind_queue(&self.groups_queue(), &self.control_exchange(), "group").await?;
        // Last: its presence says that everything above is in place.
        conn.declare_exchange(&self.complete_marker(), ExchangeKind::Fanout, true).await?;
        Ok(())
    }

    /// Declare the topology unless it is complete already: one passive check instead of some
    /// twenty declarations, for commands that run often (the CLI). A runner starting declares
    /// it in full ([`Topology::declare`]).
    pub async fn ensure(&self, conn: &Connection, retention: &Retention) -> Result<()> {
        if conn.exchange_exists(&self.complete_marker()).await? {
            return Ok(());
        }
        self.declare(conn, retention).await
    }

    /// An exchange that routes nothing, declared after everything else: the topology of this
    /// version is complete. A version that adds to the topology names a new marker.
    fn complete_marker(&self) -> String {
        format!("{}.topology.v2", self.ns)
    }

    /// Whether the streams events and cancels go to are up. Right after a broker restart
    /// RabbitMQ accepts connections, and confirms publishes, before its streams are back
    /// ("home node ... is down"); an event published then is confirmed and stored nowhere.
    /// A publisher that must not lose events waits for this first.
    pub async fn streams_ready(&self, conn: &Connection) -> Result<()> {
        for stream in [self.history_queue(), self.index_queue(), self.cancels_queue()] {
            if conn.queue_info(&stream).await?.is_none() {
                return Err(Error::NotFound { what: format!("stream `{stream}`") });
            }
        }
        Ok(())
    }

    /// Declare and bind a runner's queues; returns the names to consume, its own queue first.
    pub async fn declare_runner(&self, conn: &Connection, runner: &RunnerQueues) -> Result<Vec<String>> {
        let own = self.runner_queue(&runner.id);
        let options = if runner.in_process {
            QueueOptions { exclusive: true, auto_delete: true, ..QueueOptions::default() }
        } else {
            QueueOptions { expires: Some(RUNNER_QUEUE_EXPIRY), ..self.shared_job_queue_options() }
        };
        declare_replicated(conn, &own, &options).await?;
        conn.bind_queue(&own, &self.jobs_exchange(), &Self::job_routing_key(&Target::Runner(runner.id.clone())))
            .await?;
        let mut queues = vec![own];
        if !runner.by_id_only {
            for subset in label_subsets(&runner.labels) {
                let target = Target::Labels(subset);
                let queue = self.job_queue(&target);
                if queue != self.any_queue() {
                    declare_replicated(conn, &queue, &self.shared_job_queue_options()).await?;
                    conn.bind_queue(&queue, &self.jobs_exchange(), &Self::job_routing_key(&target)).await?;
                }
                queues.push(queue);
            }
        }
        Ok(queues)
    }

    /// Declare a runner's exclusive control queue, bound to the control exchange.
    pub async fn declare_control_queue(&self, conn: &Connection) -> Result<String> {
        let options = QueueOptions { exclusive: true, auto_delete: true, ..QueueOptions::default() };
        let info = conn.declare_queue("", &options).await?;
        conn.bind_queue(&info.name, &self.control_exchange(), "#").await?;
        Ok(info.name)
    }

    /// Declare an exclusive queue that receives every event of one job. Bind it before the job
    /// is published, so no event can be missed.
    pub async fn declare_job_events_queue(&self, conn: &Connection, job: Uuid) -> Result<String> {
        let options = QueueOptions { exclusive: true, auto_delete: true, ..QueueOptions::default() };
        let info = conn.declare_queue("", &options).await?;
        conn.bind_queue(&info.name, &self.events_exchange(), &format!("job.{job}.#")).await?;
        Ok(info.name)
    }

    /// Declare an exclusive queue that receives the `completed` event of every job (benchmarks
    /// and tools that watch a whole namespace).
    pub async fn declare_completions_queue(&self, conn: &Connection) -> Result<String> {
        let options = QueueOptions { exclusive: true, auto_delete: true, ..QueueOptions::default() };
        let info = conn.declare_queue("", &options).await?;
        conn.bind_queue(&info.name, &self.events_exchange(), "job.*.completed").await?;
        Ok(info.name)
    }

    /// Publish a job persistently with `mandatory` and wait for the confirm. A target no queue
    /// serves comes back as [`Error::Unroutable`].
    pub async fn publish_job(&self, conn: &Connection, job: &Job) -> Result<()> {
        self.send_job(conn, job).await?.wait().await
    }

    /// Publish a job again, as a producer does that lost the first publish's confirm (its
    /// connection dropped) and cannot know whether the broker has it: the message is marked
    /// ([`COPY_HEADER`]), and a runner that gets it reads the job's history before running it,
    /// as it does for a redelivery, so a copy of a job that ran (or runs) elsewhere is dropped.
    pub async fn publish_job_again(&self, conn: &Connection, job: &Job) -> Result<()> {
        self.send_marked_job(conn, job, true).await?.wait().await
    }

    /// Publish a job as [`Topology::publish_job`] does, without waiting for the confirm: the
    /// returned confirm (in publish order with every other publish of `conn`) fails with
    /// [`Error::Unroutable`] if no queue serves its target. For pipelined submits.
    pub async fn send_job(&self, conn: &Connection, job: &Job) -> Result<Confirm> {
        self.send_marked_job(conn, job, false).await
    }

    async fn send_marked_job(&self, conn: &Connection, job: &Job, copy: bool) -> Result<Confirm> {
        let mut message = Message::json(protocol::encode(job), protocol::KIND_JOB);
        if copy {
            message.properties.headers.insert(COPY_HEADER.to_owned(), HeaderValue::Str("1".to_owned()));
        }
        let id = job.id.to_string();
        message.properties.message_id = Some(id.clone());
        message.properties.correlation_id = Some(id);
        message.properties.timestamp_ms = Some(job.created_at_ms);
        message.properties.persistent = true;
        let routing_key = match &job.group {
            Some(group) => Self::group_routing_key(group),
            None => Self::job_routing_key(&job.target),
        };
        // A job due later waits in a holding queue of the broker's (see `delay`).
        if let Some(delay) = job.not_before_ms.and_then(|due| holding_delay(due, protocol::now_ms())) {
            return self.send_delayed(conn, message, &routing_key, delay).await;
        }
        conn.publish(&self.jobs_exchange(), &routing_key, &message, true).await
    }

    /// Publish one event; the returned confirm resolves in publish order.
    pub async fn publish_event(&self, conn: &Connection, event: &Event) -> Result<Confirm> {
        self.publish_event_message(conn, &EventMessage::of(event)).await
    }

    /// Publish an event encoded earlier (to publish it again after a reconnect without keeping
    /// the decoded event around).
    pub async fn publish_event_message(&self, conn: &Connection, event: &EventMessage) -> Result<Confirm> {
        conn.publish_on(event.lane, &self.events_exchange(), &event.routing_key, &event.message, false).await
    }

    /// Broadcast a control message to every runner (and record cancels in the cancels stream).
    pub async fn publish_control(&self, conn: &Connection, control: &Control) -> Result<()> {
        let message = Message::json(protocol::encode(control), protocol::KIND_CONTROL);
        let lane = match control.body.kind() {
            "cancel" => Lane::Cancels,
            "group" => Lane::Groups,
            _ => Lane::General,
        };
        conn.publish_on(lane, &self.control_exchange(), control.body.kind(), &message, false).await?.wait().await
    }

    /// Declare an exclusive, server-named queue for answers (pings).
    pub async fn declare_reply_queue(&self, conn: &Connection) -> Result<String> {
        let options = QueueOptions { exclusive: true, auto_delete: true, ..QueueOptions::default() };
        Ok(conn.declare_queue("", &options).await?.name)
    }

    /// Whether `name` is a queue a ping may ask answers to: a server-named queue or RabbitMQ's
    /// direct reply-to, never a job queue or a stream (a runner would publish into it).
    pub fn is_reply_queue(name: &str) -> bool {
        name == "amq.rabbitmq.reply-to" || name.strip_prefix("amq.gen-").is_some_and(|rest| !rest.is_empty())
    }

    /// Answer a ping: send this runner's description to the asker's queue.
    pub async fn reply_runner_info(&self, conn: &Connection, reply_to: &str, info: &RunnerInfo) -> Result<()> {
        let message = Message::json(protocol::encode(info), protocol::KIND_RUNNER);
        // Not mandatory: an asker that gave up has deleted its queue, and that is fine.
        conn.publish_confirmed("", reply_to, &message, false).await
    }

    /// Append a marker to a stream and return its id: a reader that meets it has read
    /// everything stored before this call.
    pub async fn mark_stream(&self, conn: &Connection, stream: &str) -> Result<String> {
        let id = format!("marker.{}", Uuid::now_v7());
        self.mark_stream_again(conn, stream, &id).await?;
        Ok(id)
    }

    /// Append the marker `id` (from [`Topology::mark_stream`]) once more: a reader stops at
    /// whichever copy it meets first.
    pub async fn mark_stream_again(&self, conn: &Connection, stream: &str, id: &str) -> Result<()> {
        let mut message = Message::json(b"{}".to_vec(), MARKER_KIND);
        message.properties.message_id = Some(id.to_owned());
        let lane = match stream {
            _ if stream == self.history_queue() => Lane::History,
            _ if stream == self.index_queue() => Lane::Index,
            _ if stream == self.cancels_queue() => Lane::Cancels,
            _ if stream == self.groups_queue() => Lane::Groups,
            _ => Lane::General,
        };
        conn.publish_on(lane, "", stream, &message, true).await?.wait().await
    }

    /// Move a job that cannot be run to the dead-letter exchange: its body and `original`
    /// properties (`message_id`, `correlation_id`, `timestamp`, headers...) as they came, persistent,
    /// with the reason and the queue it came from added as headers.
    pub async fn dead_letter(
        &self,
        conn: &Connection,
        body: Vec<u8>,
        original: &Properties,
        reason: &str,
        queue: &str,
    ) -> Result<()> {
        let mut message = Message { body, properties: original.clone() };
        message.properties.persistent = true;
        message.properties.headers.insert("x-runway-reason".to_owned(), HeaderValue::Str(reason.to_owned()));
        message.properties.headers.insert("x-runway-queue".to_owned(), HeaderValue::Str(queue.to_owned()));
        conn.publish_confirmed(&self.dead_exchange(), "", &message, false).await
    }

    /// What the queue of `target` holds, or `None` if nothing ever declared it.
    pub async fn job_queue_info(&self, conn: &Connection, target: &Target) -> Result<Option<QueueInfo>> {
        conn.queue_info(&self.job_queue(target)).await
    }

    /// Delete everything of this namespace that can be deleted (tests clean up with it).
    pub async fn delete_shared(&self, conn: &Connection) -> Result<(), Error> {
        for queue in [
            self.any_queue(),
            self.history_queue(),
            self.index_queue(),
            self.cancels_queue(),
            self.groups_queue(),
            self.dead_queue(),
        ] {
            conn.delete_queue(&queue).await?;
        }
        for exchange in [
            self.complete_marker(),
            self.delays_exchange(),
            self.jobs_exchange(),
            self.events_exchange(),
            self.control_exchange(),
            self.dead_exchange(),
        ] {
            conn.delete_exchange(&exchange).await?;
        }
        Ok(())
    }

    /// Delete the queues a runner declared (tests clean up with it).
    pub async fn delete_runner(&self, conn: &Connection, runner: &RunnerQueues) -> Result<()> {
        conn.delete_queue(&self.runner_queue(&runner.id)).await?;
        for subset in label_subsets(&runner.labels) {
            if !subset.is_empty() {
                conn.delete_queue(&self.labels_queue(&subset)).await?;
            }
        }
        Ok(())
    }
}

/// Concurrency groups: a quorum queue per group with a single active consumer and prefetch 1,
/// so at most one job of the group is out at a time, in queue order; and a stream of the
/// groups' names (announced as control messages), from which runners learn what to consume.
impl Topology {
    /// The stream of group announcements ([`protocol::ControlBody::Group`]).
    pub fn groups_queue(&self) -> String {
        format!("{}.groups", self.ns)
    }

    /// The queue the jobs of group `name` wait in.
    pub fn group_queue(&self, name: &str) -> String {
        format!("{}.group.{name}", self.ns)
    }

    fn group_routing_key(name: &str) -> String {
        format!("group.{name}")
    }

    /// A quorum queue like the shared job queues (delivery limit, replicated), with a single
    /// active consumer. A job returned by a runner that died goes back ahead of the group's
    /// other jobs (a channel close; the group SIGKILL test holds RabbitMQ to it), so the next
    /// active consumer resolves the dead one (lost) before it takes the next.
    fn group_queue_options(&self) -> QueueOptions {
        QueueOptions { single_active_consumer: true, ..self.shared_job_queue_options() }
    }

    /// Declare and bind the queue of group `name`; returns its name.
    pub async fn declare_group(&self, conn: &Connection, name: &str) -> Result<String> {
        check_group(name).map_err(|err| Error::Protocol(err.to_string()))?;
        let queue = self.group_queue(name);
        declare_replicated(conn, &queue, &self.group_queue_options()).await?;
        conn.bind_queue(&queue, &self.jobs_exchange(), &Self::group_routing_key(name)).await?;
        Ok(queue)
    }

    /// Tell every runner, now and later, that group `name` has jobs: they consume its queue.
    pub async fn announce_group(&self, conn: &Connection, name: &str) -> Result<()> {
        let control = Control { v: protocol::VERSION, body: protocol::ControlBody::Group { name: name.to_owned() } };
        self.publish_control(conn, &control).await
    }
}

/// Check a concurrency group's name.
pub fn check_group(name: &str) -> Result<(), NameError> {
    check_name("concurrency group", name)
}

/// Declare a queue whose options ask for a replica count. RabbitMQ compares the count when the
/// queue exists, and namespaces made before runway asked for one hold queues declared without:
/// such a queue is declared again without a count (which checks every other argument), since
/// the count only matters when a queue is created.
async fn declare_replicated(conn: &Connection, name: &str, options: &QueueOptions) -> Result<QueueInfo> {
    match conn.declare_queue(name, options).await {
        Err(Error::PreconditionFailed(first)) if options.replicas.is_some() => {
            let unreplicated = QueueOptions { replicas: None, ..options.clone() };
            // If that fails too, the queue differs in more than its count: say what this
            // version asked for.
            conn.declare_queue(name, &unreplicated).await.map_err(|_| Error::PreconditionFailed(first))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn canonical_labels_are_sorted() {
        assert_eq!(canonical_labels(&labels(&[("region", "eu"), ("env", "prod")])), "env=prod,region=eu");
    }

    #[test]
    fn subsets_include_empty_and_full() {
        let subsets = label_subsets(&labels(&[("env", "prod"), ("region", "eu")]));
        assert_eq!(subsets.len(), 4);
        assert!(subsets.contains(&BTreeMap::new()));
        assert!(subsets.contains(&labels(&[("env", "prod")])));
        assert!(subsets.contains(&labels(&[("region", "eu")])));
        assert!(subsets.contains(&labels(&[("env", "prod"), ("region", "eu")])));
    }

    #[test]
    fn empty_label_set_is_the_any_queue() {
        let topology = Topology::new("ns").expect("valid");
        assert_eq!(topology.job_queue(&Target::Labels(BTreeMap::new())), topology.job_queue(&Target::Any));
        assert_eq!(topology.job_queue(&Target::Labels(labels(&[("a", "b")]))), "ns.jobs.labels.a=b");
    }

    #[test]
    fn a_ping_may_ask_answers_only_to_a_reply_queue() {
        assert!(Topology::is_reply_queue("amq.gen-Xa1"));
        assert!(Topology::is_reply_queue("amq.rabbitmq.reply-to"));
        assert!(!Topology::is_reply_queue("ns.runner.r1"));
        assert!(!Topology::is_reply_queue("ns.history"));
        assert!(!Topology::is_reply_queue("amq.gen-"));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_runner_id("worker-1.eu").is_ok());
        assert!(check_runner_id("").is_err());
        assert!(check_runner_id("a b").is_err());
        assert!(check_labels(&labels(&[("env", "pr,od")])).is_err());
        let many: BTreeMap<String, String> = (0..7).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        assert_eq!(check_labels(&many), Err(NameError::TooManyLabels { count: 7 }));
    }
}
