//! The runner: declares its queues, consumes jobs, runs at most `concurrency` at once, obeys
//! cancel requests from the control exchange, and drains on shutdown.
//!
//! The same runner serves the `runway-worker` daemon and the in-process runner of the CLI; only
//! its configuration differs. It knows queues only through the topology's functions.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use runway_broker::protocol::{self, Completed, ControlBody, Event, EventBody, Job, RunnerInfo, Status};
use runway_broker::topology::{RunnerQueues, Topology};
use runway_broker::{Connection, ConsumeOptions, Delivery, StreamOffset};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::events::EventSink;
use crate::execute::{Context, Limits, Stop, execute};
use crate::redelivery::{self, Decision};

/// Everything that shapes a runner.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    /// Jobs run at once.
    pub concurrency: usize,
    /// Take only jobs addressed to this runner's id.
    pub by_id_only: bool,
    /// A runner inside the CLI: its queue dies with its connection.
    pub in_process: bool,
    /// Where jobs run; `None` uses each job's own working directory hint.
    pub workdir: Option<PathBuf>,
    pub limits: Limits,
    /// Larger job messages are dead-lettered unread.
    pub max_job_bytes: usize,
}

impl RunnerConfig {
    /// A configuration with the defaults for everything but identity.
    pub fn new(id: String) -> RunnerConfig {
        RunnerConfig {
            id,
            labels: BTreeMap::new(),
            concurrency: 1,
            by_id_only: false,
            in_process: false,
            workdir: None,
            limits: Limits::default(),
            max_job_bytes: 1024 * 1024,
        }
    }
}

/// How a runner stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Take no new jobs; let running ones finish for up to `timeout`, then cancel them.
    Drain { timeout: Duration },
    /// Cancel running jobs now (SIGTERM, then SIGKILL after their grace period).
    Cancel,
}

/// Why a runner could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunnerError {
    #[error(transparent)]
    Name(#[from] runway_broker::topology::NameError),
    #[error("runner `{id}` cannot set up its queues: {source}")]
    Setup { id: String, source: runway_broker::Error },
}

/// A started runner.
#[derive(Debug)]
pub struct Runner {
    id: String,
    shutdown: watch::Sender<Option<Shutdown>>,
    task: tokio::task::JoinHandle<Result<(), runway_broker::Error>>,
}

impl Runner {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Ask the runner to stop; `wait` tells when it has.
    pub fn shutdown(&self, how: Shutdown) {
        // Escalation wins: a cancel after a drain request replaces it.
        self.shutdown.send_if_modified(|current| {
            let replace = !matches!(current, Some(Shutdown::Cancel));
            if replace {
                *current = Some(how);
            }
            replace
        });
    }

    /// Wait until every job has ended and the runner let go of its queues. An error says the
    /// runner stopped by itself because its broker connection was lost (its jobs were cancelled:
    /// the broker hands them to other runners).
    pub async fn wait(&mut self) -> Result<(), runway_broker::Error> {
        match (&mut self.task).await {
            Ok(result) => result,
            Err(err) => {
                tracing::error!(error = %err, "runner task failed");
                Ok(())
            }
        }
    }
}

/// Declare the runner's queues, start consuming, and return once it is ready to take jobs.
pub async fn start(conn: &Connection, topology: &Topology, config: RunnerConfig) -> Result<Runner, RunnerError> {
    runway_broker::topology::check_runner_id(&config.id)?;
    runway_broker::topology::check_labels(&config.labels)?;
    let setup = |source| RunnerError::Setup { id: config.id.clone(), source };
    let queues = RunnerQueues {
        id: config.id.clone(),
        labels: config.labels.clone(),
        by_id_only: config.by_id_only,
        in_process: config.in_process,
    };
    let names = topology.declare_runner(conn, &queues).await.map_err(setup)?;
    let control_queue = topology.declare_control_queue(conn).await.map_err(setup)?;
    // Before taking any job, learn which were cancelled while queued. An in-process runner only
    // ever gets jobs its own CLI queued after it started, so it has nothing to learn.
    let (cancelled, cancels) = if config.in_process {
        (HashSet::new(), None)
    } else {
        let (cancelled, consumer) = read_cancels(conn, topology).await.map_err(setup)?;
        (cancelled, Some(consumer))
    };

    let concurrency = config.concurrency.max(1);
    let prefetch = u16::try_from(concurrency).unwrap_or(u16::MAX);
    let (deliveries_tx, deliveries) = mpsc::channel(concurrency);
    let mut forwarders = JoinSet::new();
    for name in &names {
        let options = ConsumeOptions::with_prefetch(prefetch);
        let consumer = conn.consume(name, &options).await.map_err(setup)?;
        forwarders.spawn(forward(conn.clone(), name.clone(), options, consumer, deliveries_tx.clone()));
    }
    drop(deliveries_tx);
    let control = conn
        .consume(&control_queue, &ConsumeOptions { no_ack: true, ..ConsumeOptions::with_prefetch(0) })
        .await
        .map_err(setup)?;

    let (shutdown, shutdown_rx) = watch::channel(None);
    let state = Serving {
        conn: conn.clone(),
        topology: topology.clone(),
        config: Arc::new(config),
        slots: Arc::new(Semaphore::new(concurrency)),
        running: HashMap::new(),
        jobs: JoinSet::new(),
        hostname: hostname(),
        job_queues: names.clone(),
        cancelled,
        shutdown: shutdown_rx.clone(),
        started_at_ms: protocol::now_ms(),
    };
    let id = state.config.id.clone();
    let task = tokio::spawn(serve(state, deliveries, forwarders, control, cancels, shutdown_rx));
    Ok(Runner { id, shutdown, task })
}

/// Hand a queue's deliveries to the serving loop; when the broker ends the consumer (a channel
/// closed under it, a reconnect), consume again, with a growing pause between tries.
async fn forward(
    conn: Connection,
    queue: String,
    options: ConsumeOptions,
    mut consumer: runway_broker::Consumer,
    tx: mpsc::Sender<runway_broker::Result<Delivery>>,
) {
    let mut pause = Duration::from_millis(100);
    loop {
        while let Some(delivery) = consumer.next().await {
            pause = Duration::from_millis(100);
            if tx.send(delivery).await.is_err() {
                return;
            }
        }
        loop {
            tracing::warn!(%queue, retry_in = ?pause, "the job consumer ended; consuming again");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
            match conn.consume(&queue, &options).await {
                Ok(again) => {
                    consumer = again;
                    break;
                }
                Err(err) if err.is_unreachable() => {
                    // The connection is gone: tell the serving loop, which stops the runner.
                    let _ = tx.send(Err(err)).await;
                    return;
                }
                Err(err) => tracing::warn!(%queue, error = %err, "consuming again failed"),
            }
        }
    }
}

struct Serving {
    conn: Connection,
    topology: Topology,
    config: Arc<RunnerConfig>,
    slots: Arc<Semaphore>,
    /// Stop handles of the jobs running (or waiting for a slot) here.
    running: HashMap<Uuid, mpsc::UnboundedSender<Stop>>,
    jobs: JoinSet<Uuid>,
    hostname: String,
    job_queues: Vec<String>,
    /// Jobs cancelled before they started: never run them.
    cancelled: HashSet<Uuid>,
    shutdown: watch::Receiver<Option<Shutdown>>,
    started_at_ms: u64,
}

/// Read the cancels stream up to now; returns the cancelled job ids and the consumer, which
/// goes on delivering new cancels.
async fn read_cancels(
    conn: &Connection,
    topology: &Topology,
) -> runway_broker::Result<(HashSet<Uuid>, runway_broker::Consumer)> {
    let stream = topology.cancels_queue();
    let options = ConsumeOptions { offset: Some(StreamOffset::First), ..ConsumeOptions::with_prefetch(1000) };
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

fn cancelled_job(body: &[u8]) -> Option<Uuid> {
    match protocol::decode::<protocol::Control>(body, "control message") {
        Ok(protocol::Control { body: ControlBody::Cancel { job, .. }, .. }) => Some(job),
        _ => None,
    }
}

async fn serve(
    mut state: Serving,
    mut deliveries: mpsc::Receiver<runway_broker::Result<Delivery>>,
    mut forwarders: JoinSet<()>,
    mut control: runway_broker::Consumer,
    mut cancels: Option<runway_broker::Consumer>,
    mut shutdown: watch::Receiver<Option<Shutdown>>,
) -> Result<(), runway_broker::Error> {
    enum Step {
        Shutdown,
        Delivery(Option<runway_broker::Result<Delivery>>),
        Control(Option<runway_broker::Result<Delivery>>),
        Cancel(Option<runway_broker::Result<Delivery>>),
        JobEnded(Uuid),
    }
    let mut control_open = true;
    let mut deliveries_open = true;
    let mut lost: Option<runway_broker::Error> = None;
    loop {
        let step = tokio::select! {
            changed = shutdown.changed() => match changed {
                Ok(()) if shutdown.borrow().is_some() => Step::Shutdown,
                Ok(()) => continue,
                // The handle was dropped without a word: stop as if cancelled.
                Err(_) => Step::Shutdown,
            },
            delivery = deliveries.recv(), if deliveries_open => Step::Delivery(delivery),
            message = control.next(), if control_open => Step::Control(message),
            message = next_cancel(&mut cancels) => Step::Cancel(message),
            Some(ended) = state.jobs.join_next() => match ended {
                Ok(id) => Step::JobEnded(id),
                Err(err) => { tracing::error!(error = %err, "job task failed"); continue; }
            },
        };
        match step {
            Step::Shutdown => break,
            Step::Delivery(Some(Ok(delivery))) => state.take(delivery).await,
            Step::Delivery(Some(Err(err))) if err.is_unreachable() => {
                tracing::error!(error = %err, "lost the broker connection: cancelling running jobs and stopping");
                lost = Some(err);
                break;
            }
            Step::Delivery(Some(Err(err))) => tracing::warn!(error = %err, "consuming jobs failed"),
            Step::Delivery(None) => {
                tracing::warn!(runner = %state.config.id, queues = ?state.job_queues, "job consumers ended");
                deliveries_open = false;
            }
            Step::Control(Some(Ok(message))) => state.control(&message.body).await,
            Step::Cancel(Some(Ok(message))) => {
                settle(message.acker.ack().await);
                if let Some(job) = cancelled_job(&message.body) {
                    state.cancelled.insert(job);
                }
            }
            Step::Cancel(Some(Err(err))) => tracing::warn!(error = %err, "reading the cancels stream failed"),
            Step::Cancel(None) => cancels = None,
            Step::Control(Some(Err(err))) => tracing::warn!(error = %err, "consuming control messages failed"),
            Step::Control(None) => control_open = false,
            Step::JobEnded(id) => {
                state.running.remove(&id);
            }
        }
    }

    let how = if lost.is_some() { Shutdown::Cancel } else { (*shutdown.borrow()).unwrap_or(Shutdown::Cancel) };
    if how == Shutdown::Cancel {
        // Stop the running jobs while the consumers still exist: an in-process runner's queue is
        // auto-delete, and a job must still be able to acknowledge its delivery.
        for stop in state.running.values() {
            let _ = stop.send(Stop { force: false });
        }
        while state.jobs.join_next().await.is_some() {}
    }
    // Take no more jobs; hand back those received but not started.
    forwarders.abort_all();
    while forwarders.join_next().await.is_some() {}
    deliveries.close();
    while let Some(delivery) = deliveries.recv().await {
        if let Ok(delivery) = delivery
            && let Err(err) = delivery.acker.nack(true).await
        {
            tracing::warn!(error = %err, "returning an unstarted job failed");
        }
    }
    if let Shutdown::Drain { timeout } = how {
        tracing::info!(running = state.running.len(), "draining");
        let drained = tokio::time::timeout(timeout, async { while state.jobs.join_next().await.is_some() {} }).await;
        if drained.is_ok() {
            return Ok(());
        }
        tracing::warn!(running = state.jobs.len(), "drain timeout passed; cancelling running jobs");
    }
    for stop in state.running.values() {
        let _ = stop.send(Stop { force: false });
    }
    while state.jobs.join_next().await.is_some() {}
    match lost {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

impl Serving {
    fn info(&self) -> RunnerInfo {
        let config = &self.config;
        RunnerInfo {
            v: protocol::VERSION,
            id: config.id.clone(),
            labels: config.labels.clone(),
            concurrency: u32::try_from(config.concurrency).unwrap_or(u32::MAX),
            running: u32::try_from(self.running.len()).unwrap_or(u32::MAX),
            by_id_only: config.by_id_only,
            in_process: config.in_process,
            hostname: self.hostname.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at_ms: self.started_at_ms,
        }
    }

    /// Decode a delivered job and start it, or dead-letter it with the reason.
    async fn take(&mut self, delivery: Delivery) {
        let job = match protocol::decode_job(&delivery.body, self.config.max_job_bytes) {
            Ok(job) => job,
            Err(err) => {
                let reason = err.to_string();
                tracing::warn!(routing_key = %delivery.routing_key, %reason, "dead-lettering a job message");
                let queue = delivery.routing_key.clone();
                match self.topology.dead_letter(&self.conn, delivery.body, &reason, &queue).await {
                    Ok(()) => settle(delivery.acker.ack().await),
                    // Keep it where it is rather than lose it.
                    Err(err) => {
                        tracing::warn!(error = %err, "dead-lettering failed");
                        settle(delivery.acker.nack(true).await);
                    }
                }
                return;
            }
        };
        let (stop_tx, stop_rx) = mpsc::unbounded_channel();
        if self.cancelled.contains(&job.id) {
            // Cancelled while it was queued: it ends without running.
            let _ = stop_tx.send(Stop { force: true });
        }
        self.running.insert(job.id, stop_tx);
        let run = JobRun {
            shutdown: self.shutdown.clone(),
            conn: self.conn.clone(),
            topology: self.topology.clone(),
            config: Arc::clone(&self.config),
            slots: Arc::clone(&self.slots),
            hostname: self.hostname.clone(),
        };
        self.jobs.spawn(async move {
            let id = job.id;
            run.run(job, delivery, stop_rx).await;
            id
        });
    }

    async fn control(&mut self, body: &[u8]) {
        match protocol::decode::<protocol::Control>(body, "control message") {
            Ok(control) => match control.body {
                ControlBody::Cancel { job, force } => {
                    self.cancelled.insert(job);
                    if let Some(stop) = self.running.get(&job) {
                        tracing::info!(%job, force, "cancelling");
                        let _ = stop.send(Stop { force });
                    }
                }
                ControlBody::Ping { reply_to } => {
                    let info = self.info();
                    if let Err(err) = self.topology.reply_runner_info(&self.conn, &reply_to, &info).await {
                        tracing::warn!(error = %err, "answering a ping failed");
                    }
                }
            },
            Err(err) => tracing::warn!(error = %err, "ignoring a control message"),
        }
    }
}

/// What one job's task needs.
struct JobRun {
    shutdown: watch::Receiver<Option<Shutdown>>,
    conn: Connection,
    topology: Topology,
    config: Arc<RunnerConfig>,
    slots: Arc<Semaphore>,
    hostname: String,
}

impl JobRun {
    async fn run(self, mut job: Job, delivery: Delivery, mut stops: mpsc::UnboundedReceiver<Stop>) {
        if delivery.redelivered || delivery.delivery_count > 0 {
            match self.resolve_redelivery(&job).await {
                Some(attempt) => job.attempt = attempt,
                None => {
                    settle(delivery.acker.ack().await);
                    return;
                }
            }
        }
        let mut sink =
            EventSink::new(self.conn.clone(), self.topology.clone(), job.id, self.config.id.clone(), job.attempt);
        // Wait for a free slot; a cancel before or while waiting ends the job without running it,
        // and a shutdown before it got one hands it back to the broker for another runner.
        let mut shutdown = self.shutdown.clone();
        let permit = tokio::select! {
            biased;
            Some(_) = stops.recv() => None,
            () = async { drop(shutdown.wait_for(Option::is_some).await) } => {
                tracing::info!(job = %job.id, "stopping before it started: handing the job back");
                settle(delivery.acker.nack(true).await);
                return;
            }
            permit = Arc::clone(&self.slots).acquire_owned() => permit.ok(),
        };
        let heartbeat_ms = protocol::to_ms(self.config.limits.heartbeat);
        sink.emit(EventBody::Accepted { hostname: self.hostname.clone(), heartbeat_ms }).await;
        let completed = match permit {
            Some(_permit) => {
                let context = Context {
                    runner: &self.config.id,
                    workdir: self.config.workdir.as_deref(),
                    limits: &self.config.limits,
                };
                execute(&job, &context, &mut sink, stops).await
            }
            None => Completed::without_exit(Status::Cancelled, "cancelled before it started".to_owned()),
        };
        tracing::info!(job = %job.id, operation = %job.operation, status = %completed.status, "job ended");
        sink.emit(EventBody::Completed(completed)).await;
        if let Err(err) = sink.flush().await {
            tracing::warn!(job = %job.id, error = %err, "some events of the job were not confirmed");
        }
        // Acknowledge even if events were lost: the job ran, and it must not run again.
        settle(delivery.acker.ack().await);
    }
}

impl JobRun {
    /// Decide from the history what a redelivered job is; the attempt to run it as, or `None`
    /// to drop it (acknowledged, never run here).
    async fn resolve_redelivery(&self, job: &Job) -> Option<u32> {
        match redelivery::resolve(&self.conn, &self.topology, job).await {
            Ok(Decision::Run { attempt }) => Some(attempt),
            Ok(Decision::Drop { why }) => {
                tracing::info!(job = %job.id, why, "dropping a redelivered job");
                None
            }
            Ok(Decision::Lost { attempt, runner, last_seen_ms, retry }) => {
                tracing::warn!(job = %job.id, attempt, %runner, retry, "a redelivered job's runner went silent: lost");
                let completed = Completed::without_exit(
                    Status::Lost,
                    format!(
                        "runner {runner} went silent (last heard from at {} ms since the epoch); {}",
                        last_seen_ms,
                        if retry {
                            "running it again"
                        } else {
                            "not retried: the operation does not set retry_on_lost"
                        }
                    ),
                );
                let record = Event {
                    v: protocol::VERSION,
                    job: job.id,
                    seq: 0,
                    ts: protocol::now_ms(),
                    runner: String::new(),
                    attempt,
                    body: EventBody::Completed(completed),
                };
                match self.topology.publish_event(&self.conn, &record).await {
                    Ok(confirm) => settle(confirm.wait().await),
                    Err(err) => settle(Err(err)),
                }
                retry.then_some(attempt + 1)
            }
            Err(err) => {
                // Without the history we cannot rule out that it runs elsewhere: never risk twice.
                tracing::warn!(job = %job.id, error = %err, "cannot resolve a redelivered job; dropping it");
                None
            }
        }
    }
}

/// The next cancel from the stream, or never when there is no stream.
async fn next_cancel(cancels: &mut Option<runway_broker::Consumer>) -> Option<runway_broker::Result<Delivery>> {
    match cancels {
        Some(consumer) => consumer.next().await,
        None => std::future::pending().await,
    }
}

fn settle(result: runway_broker::Result<()>) {
    if let Err(err) = result {
        tracing::warn!(error = %err, "settling a delivery failed");
    }
}

fn hostname() -> String {
    nix::unistd::gethostname().ok().and_then(|name| name.into_string().ok()).unwrap_or_else(|| "unknown".to_owned())
}
