//! The runner: its configuration, its handle, and the serving loop, a `select!` over a closed
//! set of steps (deliveries, control messages, cancels, ended jobs, a new connection, a stop
//! request) that takes jobs, runs at most `concurrency` at once, keeps the shared queues' credit
//! as `credit` decides, obeys cancel requests, and drains on shutdown.
//!
//! The same runner serves the `runway-worker` daemon and the in-process runner of the CLI; only
//! its configuration differs. It knows queues only through the topology's functions. It does
//! not run a job (`job`, `execute`), decide credit (`credit`), or read a queue itself
//! (`consumers`, `cancels`); taking a delivered job and obeying a control message are in
//! `runner/intake.rs`.
//!
//! It is longer than most files because the serving loop's steps share one state (slots, credit,
//! running jobs, the connection) that a split would have to pass around piece by piece.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use runway_broker::protocol;
use runway_broker::topology::Topology;
use runway_broker::{Connection, Delivery};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::{JoinError, JoinSet};
use uuid::Uuid;

use crate::cancels::Cancels;
use crate::consumers::{Forward, Tagged, Wiring, forward, job_consume_options, wire};
use crate::credit::{self, Credit, Held, Ledger};
use crate::execute::{Limits, Stop};
use crate::groups::Groups;
use crate::job::settle;
use crate::lifetime::{Lifetime, Progress};
use crate::link::{Link, LinkState};
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::secrets::Secrets;
use crate::taken::Taken;

/// Everything that shapes a runner.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    /// Jobs run at once.
    pub concurrency: usize,
    /// Take only jobs addressed to this runner's id.
    pub by_id_only: bool,
    /// Whether an attempt runs only once the index shows this runner opened it (`openers`).
    pub at_most_once: crate::AtMostOnce,
    /// A runner inside the CLI: its queue dies with its connection.
    pub in_process: bool,
    /// Where jobs run; `None` uses each job's own working directory hint.
    pub workdir: Option<PathBuf>,
    pub limits: Limits,
    /// Larger job messages are dead-lettered unread.
    pub max_job_bytes: usize,
    /// One job only, or an idle timeout (see `lifetime`).
    pub lifetime: Lifetime,
    /// The runner's own variables its jobs get (see `environment`).
    pub env: BTreeMap<OsString, OsString>,
    /// Where the secrets a job names come from.
    pub secrets: Secrets,
    /// Whose jobs it runs; every other job is rejected.
    pub policy: Policy,
    /// What it counts, and whether it is ready (`runway-worker --metrics-addr` serves them).
    pub metrics: Metrics,
}

impl RunnerConfig {
    /// A configuration with the defaults for everything but identity.
    pub fn new(id: String) -> RunnerConfig {
        RunnerConfig {
            id,
            labels: BTreeMap::new(),
            concurrency: 1,
            by_id_only: false,
            at_most_once: crate::AtMostOnce::Cluster,
            in_process: false,
            workdir: None,
            limits: Limits::default(),
            max_job_bytes: 1024 * 1024,
            lifetime: Lifetime::default(),
            env: crate::environment::allowed(std::env::vars_os(), &[]),
            secrets: Secrets::default(),
            policy: Policy::default(),
            metrics: Metrics::new(),
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
    /// The serving loop panicked (or the runtime dropped it): its jobs' deliveries are left to
    /// the broker.
    #[error("the task of runner `{id}` failed: {source}")]
    Task { id: String, source: JoinError },
}

/// A started runner.
#[derive(Debug)]
pub struct Runner {
    id: String,
    shutdown: watch::Sender<Option<Shutdown>>,
    task: tokio::task::JoinHandle<()>,
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
    /// connection does not stop a runner: it connects again; only a panic in the runner's task
    /// ends it with an error.
    pub async fn wait(&mut self) -> Result<(), RunnerError> {
        (&mut self.task).await.map_err(|source| RunnerError::Task { id: self.id.clone(), source })
    }
}

/// Declare the runner's queues, start consuming, and return once it is ready to take jobs.
///
/// The runner outlives its connection: when the broker goes away it dials again (with a growing
/// pause, until stopped), declares its queues again and consumes again; running jobs keep
/// running, and their events wait and go out on the new connection.
pub async fn start(conn: &Connection, topology: &Topology, mut config: RunnerConfig) -> Result<Runner, RunnerError> {
    if config.lifetime.once {
        // Prefetch 1 on every queue it consumes.
        config.concurrency = 1;
    }
    runway_broker::topology::check_runner_id(&config.id)?;
    runway_broker::topology::check_labels(&config.labels)?;
    let concurrency = config.concurrency.max(1);
    let wiring =
        wire(conn, topology, &config).await.map_err(|source| RunnerError::Setup { id: config.id.clone(), source })?;
    let link = Link::new(conn.clone(), topology.clone(), config.metrics.clone());
    tokio::spawn(link.clone().keep_up());

    let openers = (config.at_most_once == crate::AtMostOnce::Cluster)
        .then(|| crate::openers::Openers::start(link.clone(), topology.clone()));
    let (deliveries_tx, deliveries) = mpsc::channel(concurrency);
    let config_lifetime = config.lifetime;
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
        taken: Taken::default(),
        openers,
        hostname: hostname().unwrap_or_else(|| "unknown".to_owned()),
        job_queues: wiring.job_queues.clone(),
        cancelled: Cancels::default(),
        submitters: HashMap::new(),
        attempts: HashMap::new(),
        next_attempts: HashMap::new(),
        shutdown: shutdown_rx.clone(),
        started_at_ms: protocol::now_ms(),
        deliveries_tx,
        forwarders: JoinSet::new(),
        shared: HashMap::new(),
        ledger: Ledger::default(),
        instances: 0,
        groups: Groups::default(),
        progress: Progress::new(config_lifetime),
    };
    let groups = wiring.groups.clone();
    let (control, cancels) = state.plug(wiring);
    state.consume_groups(groups).await;
    state.reconcile().await;
    state.config.metrics.consuming();
    let id = state.config.id.clone();
    let task = tokio::spawn(serve(state, deliveries, control, cancels, shutdown_rx));
    Ok(Runner { id, shutdown, task })
}

/// This machine's host name, if it has one that is UTF-8.
pub fn hostname() -> Option<String> {
    nix::unistd::gethostname().ok().and_then(|name| name.into_string().ok())
}

/// How long a stopping runner waits for an absent broker before giving up its jobs' events.
const GIVE_UP_EVENTS: Duration = Duration::from_secs(5);

/// The serving loop's state.
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
    /// Each job task ends with the attempt it was and whether it ran here.
    jobs: JoinSet<(Uuid, u32, bool)>,
    /// The attempts this runner ran: a copy of one is dropped, never run again.
    taken: Taken,
    /// Who opened each attempt first (`None` with `--at-most-once runner`).
    openers: Option<Arc<crate::openers::Openers>>,
    hostname: String,
    /// The job queues consumed, the runner's own first; the rest are shared.
    job_queues: Vec<String>,
    /// Jobs cancelled before they started: never run them.
    cancelled: Cancels,
    /// The verified submitter of each running job, to honour only its allowed cancels.
    submitters: HashMap<Uuid, Option<String>>,
    /// The attempt of each job here, to tell a redelivered copy from the next attempt.
    attempts: HashMap<Uuid, u32>,
    /// The next attempt of a job whose previous attempt is still ending here (it was queued
    /// again before that attempt's delivery was acknowledged): taken once that one ended.
    next_attempts: HashMap<Uuid, (u64, Delivery)>,
    shutdown: watch::Receiver<Option<Shutdown>>,
    started_at_ms: u64,
    deliveries_tx: mpsc::Sender<Tagged>,
    forwarders: JoinSet<()>,
    /// The live consumer of each shared job queue (the `any` queue, label sets), if any.
    shared: HashMap<String, Shared>,
    /// Which consumer instance each job here came from.
    ledger: Ledger,
    /// Consumer instances numbered so far.
    instances: u64,
    /// The concurrency groups' queues consumed, and the group jobs here.
    groups: Groups,
    /// Whether the runner ends on its own (one job, idle timeout).
    progress: Progress,
}

/// A consumer of a shared job queue, made for `prefetch` free slots.
struct Shared {
    instance: u64,
    prefetch: usize,
    cancel: oneshot::Sender<()>,
}

/// What the serving loop wakes up for.
enum Step {
    /// A stop was requested (or the runner's handle dropped).
    Shutdown,
    Delivery(Option<Tagged>),
    Control(Option<runway_broker::Result<Delivery>>),
    Cancel(Option<runway_broker::Result<Delivery>>),
    JobEnded(Uuid, u32, bool),
    /// The link is up again on a newer connection.
    Reconnected(Connection, u64),
}

impl Serving {
    /// Start forwarding what `wiring` consumes; returns its control and cancels consumers.
    fn plug(&mut self, wiring: Wiring) -> (runway_broker::Consumer, Option<runway_broker::Consumer>) {
        // The shared consumers of an earlier connection are gone with it.
        self.shared.clear();
        for (queue, options, consumer) in wiring.consumers {
            let instance = self.next_instance();
            let job_queue = Forward { conn: self.conn.clone(), queue, options, consumer, instance };
            self.forwarders.spawn(forward(job_queue, self.deliveries_tx.clone(), None));
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

    /// Make the shared queues' consumers promise exactly the free slots, as [`credit::decide`]
    /// says: a full runner holds no credit on a queue that another runner could serve, so it
    /// hoards none of its jobs, and a runner with free slots consumes every shared queue.
    async fn reconcile(&mut self) {
        let in_slots = self.running.len().saturating_sub(self.groups.jobs_here());
        let free = self.config.concurrency.max(1).saturating_sub(in_slots);
        self.config.metrics.slots(self.config.concurrency.max(1), free);
        if self.shutdown.borrow().is_some() || !self.progress.consumes() {
            return;
        }
        let queues: Vec<String> = self.job_queues.iter().skip(1).cloned().collect();
        for queue in queues {
            let held = self.shared.get(&queue).map(|active| Held {
                prefetch: active.prefetch,
                outstanding: self.ledger.outstanding(active.instance),
            });
            let prefetch = match credit::decide(free, held) {
                Credit::Keep => continue,
                Credit::Cancel => {
                    self.cancel_shared(&queue);
                    continue;
                }
                Credit::Replace { prefetch } => {
                    self.cancel_shared(&queue);
                    prefetch
                }
                Credit::Consume { prefetch } => prefetch,
            };
            let options = job_consume_options(prefetch);
            match self.conn.consume(&queue, &options).await {
                Ok(consumer) => {
                    let instance = self.next_instance();
                    let (cancel, cancelled) = oneshot::channel();
                    let job_queue =
                        Forward { conn: self.conn.clone(), queue: queue.clone(), options, consumer, instance };
                    self.forwarders.spawn(forward(job_queue, self.deliveries_tx.clone(), Some(cancelled)));
                    self.shared.insert(queue, Shared { instance, prefetch, cancel });
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

    /// Consume the queues of concurrency groups (see `groups`); a runner that takes only its
    /// own jobs consumes none.
    async fn consume_groups(&mut self, names: impl IntoIterator<Item = String>) {
        if self.config.by_id_only || self.shutdown.borrow().is_some() || !self.progress.consumes() {
            return;
        }
        let (conn, topology) = (self.conn.clone(), self.topology.clone());
        match self.groups.consume(&conn, &topology, names, &mut self.instances, &self.deliveries_tx).await {
            Ok(()) => {}
            Err(err) if err.is_unreachable() => self.link.report_lost(self.generation),
            Err(err) => tracing::warn!(error = %err, "consuming a concurrency group's queue failed"),
        }
    }

    /// Cancel the live consumer of a shared queue; its forwarder still hands over what the
    /// broker had sent (see docs/ARCHITECTURE.md, "Job consumers and credit").
    fn cancel_shared(&mut self, queue: &str) {
        if let Some(active) = self.shared.remove(queue) {
            let _ = active.cancel.send(());
        }
    }
}

/// Serve until a stop request: take deliveries, obey control messages and cancels, account for
/// ended jobs, and wire up again on each new connection; then stop as asked.
async fn serve(
    mut state: Serving,
    mut deliveries: mpsc::Receiver<Tagged>,
    control: runway_broker::Consumer,
    cancels: Option<runway_broker::Consumer>,
    mut shutdown: watch::Receiver<Option<Shutdown>>,
) {
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
                Ok((id, attempt, ran)) => Step::JobEnded(id, attempt, ran),
                Err(err) => { tracing::error!(error = %err, "job task failed"); continue; }
            },
            () = idle(state.progress.idle_deadline(state.running.len())) => {
                tracing::info!("no job for the idle timeout: stopping");
                Step::Shutdown
            }
            Ok(()) = link.changed() => match &*link.borrow_and_update() {
                LinkState::Up(conn, generation) if *generation > state.generation => {
                    Step::Reconnected(conn.clone(), *generation)
                }
                _ => continue,
            },
        };
        match step {
            Step::Shutdown => break,
            Step::Delivery(Some((_, Ok(delivery)))) if !state.progress.arrived() => {
                tracing::info!("handing back a second job: this runner takes one (--once)");
                settle(delivery.acker.nack(true).await);
            }
            Step::Delivery(Some((instance, Ok(delivery)))) => {
                state.take(instance, delivery).await;
                if !state.progress.consumes() {
                    // A one-shot runner has its job: consume nothing more.
                    state.config.metrics.done_consuming();
                    state.forwarders.abort_all();
                    state.shared.clear();
                    state.groups.unplug();
                    if state.running.is_empty() {
                        break;
                    }
                }
                state.reconcile().await;
            }
            // A queue deleted under its consumer is declared again as after a lost connection.
            Step::Delivery(Some((_, Err(err))))
                if err.is_unreachable() || matches!(err, runway_broker::Error::NotFound { .. }) =>
            {
                state.link.report_lost(state.generation)
            }
            Step::Delivery(Some((_, Err(err)))) => tracing::warn!(error = %err, "consuming jobs failed"),
            // The serving loop holds a sender itself: the channel does not close.
            Step::Delivery(None) => {}
            Step::Reconnected(conn, generation) => {
                state.forwarders.abort_all();
                let groups = state.groups.unplug();
                state.conn = conn;
                state.generation = generation;
                match wire(&state.conn, &state.topology, &state.config).await {
                    Ok(wiring) => {
                        let groups: Vec<String> = groups.into_iter().chain(wiring.groups.clone()).collect();
                        let (new_control, new_cancels) = state.plug(wiring);
                        state.consume_groups(groups).await;
                        control = Some(new_control);
                        cancels = new_cancels;
                        state.reconcile().await;
                        state.config.metrics.consuming();
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
            Step::Control(Some(Ok(message))) => state.control(&message).await,
            Step::Cancel(Some(Ok(message))) => {
                settle(message.acker.ack().await);
                state.cancelled.record(&message);
            }
            Step::Cancel(Some(Err(err))) => tracing::warn!(error = %err, "reading the cancels stream failed"),
            Step::Control(Some(Err(err))) => tracing::warn!(error = %err, "consuming control messages failed"),
            // Ended with their connection (or the broker cancelled them): wired again on the next.
            Step::Cancel(None) => cancels = None,
            Step::Control(None) => control = None,
            Step::JobEnded(id, attempt, ran) => {
                if !ran {
                    state.taken.forget(id, attempt);
                }
                state.running.remove(&id);
                state.groups.ended(id);
                state.submitters.remove(&id);
                state.attempts.remove(&id);
                state.ledger.settled(id);
                if let Some((instance, delivery)) = state.next_attempts.remove(&id) {
                    state.take(instance, delivery).await;
                }
                if state.progress.settled(state.running.len()) {
                    break;
                }
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
    for (_, (_, delivery)) in state.next_attempts.drain() {
        settle(delivery.acker.nack(true).await);
    }
    while let Ok((_, delivery)) = deliveries.try_recv() {
        if let Ok(delivery) = delivery
            && let Err(err) = delivery.acker.nack(true).await
        {
            tracing::warn!(error = %err, "returning an unstarted job failed");
        }
    }
    if let Shutdown::Drain { timeout } = how {
        tracing::info!(running = state.running.len(), "draining");
        // A cancel request while draining (the daemon's second stop request) ends the drain too;
        // `wait_for` sees one that came before this point as well.
        let escalated = async {
            if shutdown.wait_for(|how| matches!(how, Some(Shutdown::Cancel))).await.is_err() {
                // The handle is gone: nobody can ask any more, so drain until the timeout.
                std::future::pending::<()>().await;
            }
        };
        let drained = tokio::select! {
            drained = tokio::time::timeout(timeout, async { while state.jobs.join_next().await.is_some() {} }) => {
                if drained.is_err() {
                    tracing::warn!(running = state.jobs.len(), "drain timeout passed; cancelling running jobs");
                }
                drained.is_ok()
            }
            () = escalated => {
                tracing::warn!(running = state.jobs.len(), "cancelled while draining; cancelling running jobs");
                false
            }
        };
        if !drained {
            state.cancel_running().await;
        }
    }
    // Only now: a group job still running keeps its group held until it completed.
    state.groups.stop().await;
    state.link.close();
}

/// Wait until the link is (or is not) up.
async fn until(state: &mut watch::Receiver<LinkState>, up: bool) {
    let reached = state.wait_for(|state| matches!(state, LinkState::Up(..)) == up).await.is_ok();
    if !reached {
        std::future::pending::<()>().await;
    }
}

/// Resolve at `deadline`, or never without one.
async fn idle(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
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
}

mod intake;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_reports_a_panicked_runner_task() {
        let (shutdown, _) = watch::channel(None);
        let task = tokio::spawn(async { panic!("the serving loop broke") });
        let mut runner = Runner { id: "r1".to_owned(), shutdown, task };
        let err = runner.wait().await.expect_err("a panicked runner task is an error");
        assert!(matches!(err, RunnerError::Task { .. }), "{err:?}");
        assert!(err.to_string().contains("runner `r1`") && err.to_string().contains("panicked"), "{err}");
    }
}
