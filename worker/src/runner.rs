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
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::events::EventSink;
use crate::execute::{Context, Limits, Stop, execute};
use crate::link::{Link, LinkState};
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

    /// Wait until every job has ended and the runner let go of its queues. A lost broker
    /// connection does not stop a runner: it connects again.
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
///
/// The runner outlives its connection: when the broker goes away it dials again (with a growing
/// pause, until stopped), declares its queues again and consumes again; running jobs keep
/// running, and their events wait and go out on the new connection.
pub async fn start(conn: &Connection, topology: &Topology, config: RunnerConfig) -> Result<Runner, RunnerError> {
    runway_broker::topology::check_runner_id(&config.id)?;
    runway_broker::topology::check_labels(&config.labels)?;
    let concurrency = config.concurrency.max(1);
    let wiring =
        wire(conn, topology, &config).await.map_err(|source| RunnerError::Setup { id: config.id.clone(), source })?;
    let link = Link::new(conn.clone(), topology.clone());
    tokio::spawn(link.clone().keep_up());

    let (deliveries_tx, deliveries) = mpsc::channel(concurrency);
    let (shutdown, shutdown_rx) = watch::channel(None);
    let mut state = Serving {
        conn: conn.clone(),
        generation: 1,
        link,
        topology: topology.clone(),
        config: Arc::new(config),
        slots: Arc::new(Semaphore::new(concurrency)),
        running: HashMap::new(),
        jobs: JoinSet::new(),
        hostname: hostname(),
        job_queues: wiring.job_queues.clone(),
        cancelled: HashSet::new(),
        shutdown: shutdown_rx.clone(),
        started_at_ms: protocol::now_ms(),
        deliveries_tx,
        forwarders: JoinSet::new(),
        shared: HashMap::new(),
        sources: HashMap::new(),
        outstanding: HashMap::new(),
        instances: 0,
    };
    let (control, cancels) = state.plug(wiring);
    state.reconcile().await;
    let id = state.config.id.clone();
    let task = tokio::spawn(serve(state, deliveries, control, cancels, shutdown_rx));
    Ok(Runner { id, shutdown, task })
}

/// What a runner consumes on one connection.
struct Wiring {
    job_queues: Vec<String>,
    consumers: Vec<(String, ConsumeOptions, runway_broker::Consumer)>,
    control: runway_broker::Consumer,
    /// Jobs cancelled so far, and the consumer of later cancels (not for an in-process runner).
    cancels: Option<(HashSet<Uuid>, runway_broker::Consumer)>,
}

/// Declare the runner's queues on `conn` and consume them.
async fn wire(conn: &Connection, topology: &Topology, config: &RunnerConfig) -> runway_broker::Result<Wiring> {
    let queues = RunnerQueues {
        id: config.id.clone(),
        labels: config.labels.clone(),
        by_id_only: config.by_id_only,
        in_process: config.in_process,
    };
    let job_queues = topology.declare_runner(conn, &queues).await?;
    let control_queue = topology.declare_control_queue(conn).await?;
    // Before taking any job, learn which were cancelled while queued. An in-process runner only
    // ever gets jobs its own CLI queued after it started, so it has nothing to learn.
    let cancels = if config.in_process { None } else { Some(read_cancels(conn, topology).await?) };
    // Its own queue, consumed with the full concurrency: only this runner can take those jobs,
    // so holding them hoards nothing. The shared queues are consumed by `reconcile`.
    let own = &job_queues[0];
    let options = job_consume_options(config.concurrency.max(1));
    let consumers = vec![(own.clone(), options.clone(), conn.consume(own, &options).await?)];
    let control =
        conn.consume(&control_queue, &ConsumeOptions { no_ack: true, ..ConsumeOptions::with_prefetch(0) }).await?;
    Ok(Wiring { job_queues, consumers, control, cancels })
}

/// How a job queue is consumed: `slots` deliveries at most, unacknowledged for up to a day.
fn job_consume_options(slots: usize) -> ConsumeOptions {
    let prefetch = u16::try_from(slots).unwrap_or(u16::MAX);
    ConsumeOptions { consumer_timeout: Some(JOB_CONSUMER_TIMEOUT), ..ConsumeOptions::with_prefetch(prefetch) }
}

/// A delivery from a job consumer, with the consumer instance it came from.
type Tagged = (u64, runway_broker::Result<Delivery>);

/// Hand a queue's deliveries to the serving loop, tagged with the consumer `instance`; when the
/// broker ends the consumer (a channel closed under it), consume again, with a growing pause
/// between tries. A lost connection is reported to the serving loop, which wires everything
/// again on the next one. When `cancel` fires (or its sender goes), cancel the consumer, hand
/// over what was already on its way, and stop.
async fn forward(
    conn: Connection,
    queue: String,
    options: ConsumeOptions,
    mut consumer: runway_broker::Consumer,
    tx: mpsc::Sender<Tagged>,
    instance: u64,
    mut cancel: Option<oneshot::Receiver<()>>,
) {
    let mut pause = Duration::from_millis(100);
    loop {
        loop {
            let next = tokio::select! {
                biased;
                () = async {
                    match cancel.as_mut() {
                        Some(signal) => drop(signal.await),
                        None => std::future::pending().await,
                    }
                } => {
                    if let Err(err) = consumer.cancel().await {
                        tracing::debug!(%queue, error = %err, "cancelling a job consumer failed");
                    }
                    while let Some(delivery) = consumer.next().await {
                        if tx.send((instance, delivery)).await.is_err() {
                            return;
                        }
                    }
                    return;
                }
                next = consumer.next() => next,
            };
            let Some(delivery) = next else { break };
            pause = Duration::from_millis(100);
            if tx.send((instance, delivery)).await.is_err() {
                return;
            }
        }
        loop {
            tracing::debug!(%queue, retry_in = ?pause, "the job consumer ended; consuming again");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
            match conn.consume(&queue, &options).await {
                Ok(again) => {
                    consumer = again;
                    break;
                }
                Err(err) if err.is_unreachable() => {
                    let _ = tx.send((instance, Err(err))).await;
                    return;
                }
                Err(err) => tracing::warn!(%queue, error = %err, "consuming again failed"),
            }
        }
    }
}

struct Serving {
    /// The connection the consumers run on, and its generation in the link.
    conn: Connection,
    generation: u64,
    link: Link,
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
    deliveries_tx: mpsc::Sender<Tagged>,
    forwarders: JoinSet<()>,
    /// The live consumer of each shared job queue (the `any` queue, label sets), if any.
    shared: HashMap<String, Shared>,
    /// Which consumer instance each job here came from, and how many jobs of each are here.
    sources: HashMap<Uuid, u64>,
    outstanding: HashMap<u64, usize>,
    /// Consumer instances numbered so far.
    instances: u64,
}

/// A consumer of a shared job queue, made for `prefetch` free slots.
struct Shared {
    instance: u64,
    prefetch: usize,
    cancel: oneshot::Sender<()>,
}

impl Serving {
    /// Start forwarding what `wiring` consumes; returns its control and cancels consumers.
    fn plug(&mut self, wiring: Wiring) -> (runway_broker::Consumer, Option<runway_broker::Consumer>) {
        // The shared consumers of an earlier connection are gone with it.
        self.shared.clear();
        for (name, options, consumer) in wiring.consumers {
            let instance = self.next_instance();
            let forward =
                forward(self.conn.clone(), name, options, consumer, self.deliveries_tx.clone(), instance, None);
            self.forwarders.spawn(forward);
        }
        self.job_queues = wiring.job_queues;
        let cancels = wiring.cancels.map(|(cancelled, consumer)| {
            self.cancelled.extend(cancelled);
            consumer
        });
        (wiring.control, cancels)
    }

    fn next_instance(&mut self) -> u64 {
        self.instances += 1;
        self.instances
    }

    /// Make the shared queues' consumers promise exactly the free slots. A consumer's prefetch
    /// is fixed when it starts, so a consumer promising more (this runner took jobs from
    /// elsewhere) is cancelled, and one promising less (slots freed) is replaced: a full runner
    /// holds no credit on a queue that another runner could serve, so it hoards none of its
    /// jobs, and a runner with free slots consumes every shared queue. A runner serving jobs
    /// from one shared queue only keeps its consumer: its credit follows its slots by itself.
    async fn reconcile(&mut self) {
        if self.shutdown.borrow().is_some() {
            return;
        }
        let free = self.config.concurrency.max(1).saturating_sub(self.running.len());
        let queues: Vec<String> = self.job_queues.iter().skip(1).cloned().collect();
        for queue in queues {
            if let Some(active) = self.shared.get(&queue) {
                let taken = self.outstanding.get(&active.instance).copied().unwrap_or(0);
                if active.prefetch.saturating_sub(taken) == free {
                    continue;
                }
                if let Some(active) = self.shared.remove(&queue) {
                    let _ = active.cancel.send(());
                }
            }
            if free == 0 {
                continue;
            }
            let options = job_consume_options(free);
            match self.conn.consume(&queue, &options).await {
                Ok(consumer) => {
                    let instance = self.next_instance();
                    let (cancel, cancelled) = oneshot::channel();
                    let tx = self.deliveries_tx.clone();
                    let conn = self.conn.clone();
                    self.forwarders.spawn(forward(
                        conn,
                        queue.clone(),
                        options,
                        consumer,
                        tx,
                        instance,
                        Some(cancelled),
                    ));
                    self.shared.insert(queue, Shared { instance, prefetch: free, cancel });
                }
                Err(err) if err.is_unreachable() => {
                    self.link.report_lost(self.generation);
                    return;
                }
                Err(err) => {
                    tracing::warn!(%queue, error = %err, "consuming a shared job queue failed; trying again when a job ends");
                }
            }
        }
    }

    /// A job from consumer `instance` ended here (or was never started).
    fn settled(&mut self, id: Uuid) {
        if let Some(instance) = self.sources.remove(&id)
            && let Some(count) = self.outstanding.get_mut(&instance)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.outstanding.remove(&instance);
            }
        }
    }
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
    mut deliveries: mpsc::Receiver<Tagged>,
    control: runway_broker::Consumer,
    cancels: Option<runway_broker::Consumer>,
    mut shutdown: watch::Receiver<Option<Shutdown>>,
) -> Result<(), runway_broker::Error> {
    enum Step {
        Shutdown,
        Delivery(Option<Tagged>),
        Control(Option<runway_broker::Result<Delivery>>),
        Cancel(Option<runway_broker::Result<Delivery>>),
        JobEnded(Uuid),
        Reconnected(Connection, u64),
    }
    let mut control = Some(control);
    let mut cancels = cancels;
    let mut link = state.link.subscribe();
    loop {
        let step = tokio::select! {
            changed = shutdown.changed() => match changed {
                Ok(()) if shutdown.borrow().is_some() => Step::Shutdown,
                Ok(()) => continue,
                // The handle was dropped without a word: stop as if cancelled.
                Err(_) => Step::Shutdown,
            },
            delivery = deliveries.recv() => Step::Delivery(delivery),
            message = next_message(&mut control) => Step::Control(message),
            message = next_message(&mut cancels) => Step::Cancel(message),
            Some(ended) = state.jobs.join_next() => match ended {
                Ok(id) => Step::JobEnded(id),
                Err(err) => { tracing::error!(error = %err, "job task failed"); continue; }
            },
            Ok(()) = link.changed() => match &*link.borrow_and_update() {
                LinkState::Up(conn, generation) if *generation > state.generation => {
                    Step::Reconnected(conn.clone(), *generation)
                }
                _ => continue,
            },
        };
        match step {
            Step::Shutdown => break,
            Step::Delivery(Some((instance, Ok(delivery)))) => {
                state.take(instance, delivery).await;
                state.reconcile().await;
            }
            Step::Delivery(Some((_, Err(err)))) if err.is_unreachable() => state.link.report_lost(state.generation),
            Step::Delivery(Some((_, Err(err)))) => tracing::warn!(error = %err, "consuming jobs failed"),
            // The serving loop holds a sender itself: the channel does not close.
            Step::Delivery(None) => {}
            Step::Reconnected(conn, generation) => {
                state.forwarders.abort_all();
                state.conn = conn;
                state.generation = generation;
                match wire(&state.conn, &state.topology, &state.config).await {
                    Ok(wiring) => {
                        let (new_control, new_cancels) = state.plug(wiring);
                        control = Some(new_control);
                        cancels = new_cancels;
                        state.reconcile().await;
                        tracing::info!(runner = %state.config.id, queues = ?state.job_queues, "consuming again");
                    }
                    // Right after a restart the broker takes connections before its queues are
                    // back ("home node ... is down"): drop this connection and dial again.
                    Err(err) => {
                        tracing::warn!(error = %err, "setting up the runner's queues again failed; retrying");
                        state.link.report_lost(generation);
                    }
                }
            }
            Step::Control(Some(Ok(message))) => state.control(&message.body).await,
            Step::Cancel(Some(Ok(message))) => {
                settle(message.acker.ack().await);
                if let Some(job) = cancelled_job(&message.body) {
                    state.cancelled.insert(job);
                }
            }
            Step::Cancel(Some(Err(err))) => tracing::warn!(error = %err, "reading the cancels stream failed"),
            Step::Control(Some(Err(err))) => tracing::warn!(error = %err, "consuming control messages failed"),
            // Ended with their connection (or the broker cancelled them): wired again on the next.
            Step::Cancel(None) => cancels = None,
            Step::Control(None) => control = None,
            Step::JobEnded(id) => {
                state.running.remove(&id);
                state.settled(id);
                state.reconcile().await;
            }
        }
    }

    let how = (*shutdown.borrow()).unwrap_or(Shutdown::Cancel);
    if how == Shutdown::Cancel {
        state.cancel_running().await;
    }
    // Take no more jobs; hand back those received but not started.
    state.forwarders.abort_all();
    while state.forwarders.join_next().await.is_some() {}
    deliveries.close();
    while let Ok((_, delivery)) = deliveries.try_recv() {
        if let Ok(delivery) = delivery
            && let Err(err) = delivery.acker.nack(true).await
        {
            tracing::warn!(error = %err, "returning an unstarted job failed");
        }
    }
    if let Shutdown::Drain { timeout } = how {
        tracing::info!(running = state.running.len(), "draining");
        let drained = tokio::time::timeout(timeout, async { while state.jobs.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(running = state.jobs.len(), "drain timeout passed; cancelling running jobs");
            state.cancel_running().await;
        }
    }
    state.link.close();
    Ok(())
}

/// Wait until the link is (or is not) up.
async fn until(state: &mut watch::Receiver<LinkState>, up: bool) {
    let reached = state.wait_for(|state| matches!(state, LinkState::Up(..)) == up).await.is_ok();
    if !reached {
        std::future::pending::<()>().await;
    }
}

/// The next message of a consumer, or never when there is none.
async fn next_message(consumer: &mut Option<runway_broker::Consumer>) -> Option<runway_broker::Result<Delivery>> {
    match consumer {
        Some(consumer) => consumer.next().await,
        None => std::future::pending().await,
    }
}

impl Serving {
    /// Stop every running job and wait for them to end. Their events wait for the broker if it
    /// is away; if it stays away for [`GIVE_UP_EVENTS`], the events are given up so that the
    /// jobs can see the stop.
    async fn cancel_running(&mut self) {
        for stop in self.running.values() {
            let _ = stop.send(Stop { force: false });
        }
        let jobs = &mut self.jobs;
        let link = &self.link;
        let ended = async { while jobs.join_next().await.is_some() {} };
        let give_up = async {
            let mut state = link.subscribe();
            loop {
                until(&mut state, false).await;
                let away = tokio::time::sleep(GIVE_UP_EVENTS);
                tokio::pin!(away);
                tokio::select! {
                    () = &mut away => {
                        tracing::warn!("the broker is still away: giving up the events of the cancelled jobs");
                        link.close();
                        std::future::pending::<()>().await;
                    }
                    () = until(&mut state, true) => {}
                }
            }
        };
        tokio::select! {
            () = ended => {}
            () = give_up => {}
        }
    }

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
    async fn take(&mut self, instance: u64, delivery: Delivery) {
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
        if self.running.contains_key(&job.id) {
            // The broker handed back a job this runner is running (its connection dropped and
            // came back): the copy is a duplicate.
            tracing::info!(job = %job.id, "dropping a redelivered copy of a job running here");
            settle(delivery.acker.ack().await);
            return;
        }
        let (stop_tx, stop_rx) = mpsc::unbounded_channel();
        if self.cancelled.contains(&job.id) {
            // Cancelled while it was queued: it ends without running.
            let _ = stop_tx.send(Stop { force: true });
        }
        self.running.insert(job.id, stop_tx);
        self.sources.insert(job.id, instance);
        *self.outstanding.entry(instance).or_default() += 1;
        let run = JobRun {
            shutdown: self.shutdown.clone(),
            conn: self.conn.clone(),
            link: self.link.clone(),
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

/// The acknowledgement timeout asked of the broker for job deliveries (`x-consumer-timeout`),
/// where it honours the argument (RabbitMQ 3.12 on; 3.10 ignores it and applies its global
/// `consumer_timeout`). A job running longer has its delivery taken back and handed out again;
/// the runner running it drops the copy, and any other runner resolves it from the history.
const JOB_CONSUMER_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// How long a stopping runner waits for an absent broker before giving up its jobs' events.
const GIVE_UP_EVENTS: Duration = Duration::from_secs(5);

/// What one job's task needs.
struct JobRun {
    shutdown: watch::Receiver<Option<Shutdown>>,
    /// The connection the job came on (to read the history), and the link its events go out on.
    conn: Connection,
    link: Link,
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
            EventSink::new(self.link.clone(), self.topology.clone(), job.id, self.config.id.clone(), job.attempt);
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

fn settle(result: runway_broker::Result<()>) {
    if let Err(err) = result {
        tracing::warn!(error = %err, "settling a delivery failed");
    }
}

fn hostname() -> String {
    nix::unistd::gethostname().ok().and_then(|name| name.into_string().ok()).unwrap_or_else(|| "unknown".to_owned())
}
