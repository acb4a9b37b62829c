//! One job's task on a runner: resolve a redelivery from the history, wait for a free slot,
//! publish `accepted`, execute, publish `completed`, and only then acknowledge the delivery.
//!
//! It does not decide which deliveries to take or track credit (the serving loop does), nor
//! run the process itself (`execute` does).

use std::sync::Arc;
use std::time::Instant;

use runway_broker::protocol::{self, Completed, Event, EventBody, Job, Retrying, Status};
use runway_broker::topology::Topology;
use runway_broker::{Connection, Delivery};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::events::EventSink;
use crate::execute::{Context, Stop, execute};
use crate::link::Link;
use crate::openers::Openers;
use crate::redelivery::{self, Decision};
use crate::retry;
use crate::runner::{RunnerConfig, Shutdown};

/// What one job's task needs.
pub(crate) struct JobRun {
    pub(crate) shutdown: watch::Receiver<Option<Shutdown>>,
    /// The connection the job came on (to read the history), and the link its events go out on.
    pub(crate) conn: Connection,
    pub(crate) link: Link,
    pub(crate) topology: Topology,
    pub(crate) config: Arc<RunnerConfig>,
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) hostname: String,
    /// Who opened each attempt first (`None` with `--at-most-once runner`).
    pub(crate) openers: Option<Arc<Openers>>,
}

/// Run `job`, which came in `delivery`, until it completed (or was handed back), obeying `stops`;
/// say whether this runner ran it (accepted it, or ended it rejected), rather than dropping it
/// as done elsewhere or handing it back.
pub(crate) async fn run_job(
    run: JobRun,
    mut job: Job,
    delivery: Delivery,
    stops: mpsc::UnboundedReceiver<Stop>,
) -> bool {
    // A redelivery, or a copy its producer published again not knowing whether the first
    // arrived: the history says whether it ran (or runs) elsewhere.
    let copy = delivery.properties.headers.contains_key(runway_broker::topology::COPY_HEADER);
    if delivery.redelivered || delivery.delivery_count > 0 || copy {
        match resolve_redelivery(&run, &job).await {
            Redelivered::Run(attempt) => job.attempt = attempt,
            Redelivered::Drop => {
                settle(delivery.acker.ack().await);
                return false;
            }
            Redelivered::HandBack => {
                settle(delivery.acker.nack(true).await);
                return false;
            }
        }
    }
    run_attempt(&run, job, delivery, stops).await
}

/// Whether this runner's `accepted` opened the attempt (see `openers`).
enum Opened {
    /// It did, or nothing is checked (`--at-most-once runner`): run it.
    Here,
    /// Another runner's did: that runner runs it; settle this copy.
    Elsewhere,
    /// The index could not say: hand the copy back, never run blind.
    Unknown,
}

/// Whether this runner's `accepted` of attempt `attempt` of `job`, confirmed, opened it.
async fn opened_here(run: &JobRun, job: &Job) -> Opened {
    let Some(openers) = &run.openers else { return Opened::Here };
    let conn = run.link.current().map_or_else(|| run.conn.clone(), |(conn, _)| conn);
    match openers.first(&conn, &run.topology, job, job.attempt).await {
        Ok(Some(opener)) if opener.is(&run.config.id, &conn.login()) => Opened::Here,
        Ok(Some(opener)) => {
            tracing::warn!(job = %job.id, attempt = job.attempt, runner = %opener.runner, "dropping a copy of a job another runner has claimed (its `accepted` came first)");
            Opened::Elsewhere
        }
        Ok(None) => {
            tracing::warn!(job = %job.id, attempt = job.attempt, "the index shows no `accepted` of this attempt; handing the job back");
            Opened::Unknown
        }
        Err(err) => {
            tracing::warn!(job = %job.id, attempt = job.attempt, error = %err, "cannot read who accepted the job first; handing it back");
            Opened::Unknown
        }
    }
}

/// Settle the copy of a job another runner opened first. A group's copy holds its group, so it
/// stays unacknowledged until the job ended there (read from the history, as a redelivery is);
/// if the history then says to run it again, the broker gets it back to decide afresh.
async fn settle_copy(run: &JobRun, job: &Job, delivery: Delivery) {
    if job.group.is_none() {
        settle(delivery.acker.ack().await);
        return;
    }
    tracing::info!(job = %job.id, "another runner runs this group job: holding its group until it ends there");
    match resolve_redelivery(run, job).await {
        Redelivered::Drop => settle(delivery.acker.ack().await),
        Redelivered::Run(_) | Redelivered::HandBack => settle(delivery.acker.nack(true).await),
    }
}

/// Run an attempt: its secrets, a slot, `accepted`, the process, `completed`, the ack. Says
/// whether this runner ran it.
///
/// The process starts only once the broker confirmed the `accepted` and the index shows it
/// opened the attempt (`openers`; not with `--at-most-once runner`).
async fn run_attempt(run: &JobRun, job: Job, delivery: Delivery, mut stops: mpsc::UnboundedReceiver<Stop>) -> bool {
    let mut sink = EventSink::new(run.link.clone(), run.topology.clone(), job.id, run.config.id.clone(), job.attempt);
    let secrets = match run.config.secrets.resolve(&job.secrets) {
        Ok(secrets) => secrets,
        Err(missing) => {
            reject(&job, &mut sink, delivery, &missing.to_string()).await;
            return true;
        }
    };
    // Wait for a free slot; a cancel before or while waiting ends the job without running it,
    // and a shutdown before it got one hands it back to the broker for another runner.
    let mut shutdown = run.shutdown.clone();
    let permit = tokio::select! {
        biased;
        Some(_) = stops.recv() => None,
        () = async { drop(shutdown.wait_for(Option::is_some).await) } => {
            tracing::info!(job = %job.id, "stopping before it started: handing the job back");
            settle(delivery.acker.nack(true).await);
            return false;
        }
        permit = Arc::clone(&run.slots).acquire_owned() => permit.ok(),
    };
    let heartbeat_ms = protocol::to_ms(run.config.limits.heartbeat);
    let metrics = &run.config.metrics;
    let accepted = Instant::now();
    sink.emit(EventBody::Accepted { hostname: run.hostname.clone(), heartbeat_ms }).await;
    // The process starts only once the broker has the `accepted` (confirmed: on a cluster,
    // stored on a majority): a runner that later resolves a redelivery of this job then finds
    // it taken and waits for this runner's sign of life, instead of running it a second time.
    if let Err(err) = sink.flush().await {
        tracing::warn!(job = %job.id, error = %err, "the broker did not confirm that the job was accepted");
    }
    // And only if that `accepted` came first: the one every reader of the history believes.
    match opened_here(run, &job).await {
        Opened::Here => {}
        Opened::Elsewhere => {
            settle_copy(run, &job, delivery).await;
            return false;
        }
        Opened::Unknown => {
            settle(delivery.acker.nack(true).await);
            return false;
        }
    }
    metrics.job_accepted(&job.operation, job.created_at_ms, protocol::now_ms());
    let mut completed = match permit {
        Some(_permit) => {
            let _running = metrics.job_running();
            let context = Context {
                runner: &run.config.id,
                workdir: run.config.workdir.as_deref(),
                limits: &run.config.limits,
                env: &run.config.env,
                secrets: &secrets,
            };
            execute(&job, &context, &mut sink, stops).await
        }
        None => Completed::without_exit(Status::Cancelled, "cancelled before it started".to_owned()),
    };
    tracing::info!(job = %job.id, operation = %job.operation, status = %completed.status, "job ended");
    metrics.job_completed(&job.operation, completed.status, Some(accepted.elapsed()));
    let next = retry::next_attempt(&job, &completed).map(|attempt| retry::plan(&job, attempt));
    completed.retrying = next.as_ref().map(|(_, retrying)| *retrying);
    sink.emit(EventBody::Completed(completed)).await;
    if let Err(err) = sink.flush().await {
        tracing::warn!(job = %job.id, error = %err, "some events of the job were not confirmed");
    }
    if let Some((next, _)) = next
        && !queue_again(run, &next).await
    {
        // Handed back: its redelivery finds this attempt's end saying `retrying` and no next
        // attempt, and runs the next attempt then (see `redelivery::decide`).
        settle(delivery.acker.nack(true).await);
        return true;
    }
    // Acknowledge even if events were lost: the job ran, and it must not run again.
    settle(delivery.acker.ack().await);
    true
}

/// Queue the next attempt `next` (see `retry`); false when the broker did not take it.
async fn queue_again(run: &JobRun, next: &Job) -> bool {
    let conn = run.link.current().map_or_else(|| run.conn.clone(), |(conn, _)| conn);
    match retry::queue_again(&conn, &run.topology, next).await {
        Ok(()) => {
            tracing::info!(job = %next.id, attempt = next.attempt, "queued the job again");
            true
        }
        Err(err) => {
            tracing::warn!(job = %next.id, attempt = next.attempt, error = %err, "queuing the next attempt failed");
            false
        }
    }
}

/// End `job` `rejected` without running it: record `completed` with the reason (names only,
/// never a value), then acknowledge.
async fn reject(job: &Job, sink: &mut EventSink, delivery: Delivery, reason: &str) {
    tracing::warn!(job = %job.id, operation = %job.operation, reason, "rejecting a job");
    sink.metrics().job_completed(&job.operation, Status::Rejected, None);
    sink.emit(EventBody::Completed(Completed::without_exit(Status::Rejected, reason.to_owned()))).await;
    if let Err(err) = sink.flush().await {
        tracing::warn!(job = %job.id, error = %err, "the rejection of the job was not confirmed");
    }
    settle(delivery.acker.ack().await);
}

/// What to do with a redelivered job, once the history was read.
enum Redelivered {
    /// Run it as this attempt.
    Run(u32),
    /// Acknowledge it without running it: it completed, runs elsewhere, or was resolved lost
    /// without a retry.
    Drop,
    /// The history could not be read: give it back to the broker, to be decided again (by this
    /// runner or another, perhaps through another node) rather than run blind or dropped.
    HandBack,
}

/// Decide from the history what a redelivered job is.
async fn resolve_redelivery(run: &JobRun, job: &Job) -> Redelivered {
    match redelivery::resolve(&run.conn, &run.topology, job).await {
        Ok(Decision::Run { attempt }) => Redelivered::Run(attempt),
        Ok(Decision::Drop { why }) => {
            tracing::info!(job = %job.id, why, "dropping a redelivered job");
            Redelivered::Drop
        }
        Ok(Decision::Lost { attempt, runner, last_seen_ms, retry }) => {
            tracing::warn!(job = %job.id, attempt, %runner, retry, "a redelivered job's runner went silent: lost");
            let heard = crate::times::heard_at(last_seen_ms, protocol::now_ms());
            let mut completed =
                Completed::without_exit(Status::Lost, format!("runner {runner} went silent (last heard from {heard})"));
            // The job's `retry` queues the next attempt afresh (after its delay); `retry_on_lost`
            // alone runs it here at once. An attempt number at the end of its range (a hostile
            // history) is not run again.
            let mut queue_next = None;
            let retried = match job.retry.as_ref().and_then(|policy| policy.next_attempt(attempt, &completed)) {
                Some(next) => {
                    let (next_job, retrying) = retry::plan(&Job { attempt, ..job.clone() }, next);
                    completed.retrying = Some(retrying);
                    queue_next = Some(next_job);
                    None
                }
                None if retry => attempt.checked_add(1).inspect(|next| {
                    completed.retrying = Some(Retrying { attempt: *next, at_ms: protocol::now_ms(), delay_ms: 0 });
                }),
                None => None,
            };
            // A retry says so itself (`retrying`); only its absence needs words.
            if completed.retrying.is_none() {
                let why = "not retried: the operation sets neither retry_on_lost nor a retry on lost";
                completed.error = completed.error.map(|error| format!("{error}; {why}"));
            }
            let record = Event {
                v: protocol::VERSION,
                job: job.id,
                seq: 0,
                ts: protocol::now_ms(),
                runner: String::new(),
                attempt,
                body: EventBody::Completed(completed),
            };
            match run.topology.publish_event(&run.conn, &record).await {
                Ok(confirm) => settle(confirm.wait().await),
                Err(err) => settle(Err(err)),
            }
            // After the lost attempt's end is stored (see `retry::plan`); if the broker does not
            // take it, the job is handed back and its next redelivery runs the next attempt.
            if let Some(next) = queue_next
                && !queue_again(run, &next).await
            {
                return Redelivered::HandBack;
            }
            match retried {
                Some(next) => Redelivered::Run(next),
                None => Redelivered::Drop,
            }
        }
        Err(err) => {
            // Without the history we cannot rule out that it runs elsewhere: never run it blind.
            // Nor drop it: a job must never be lost because a stream could not be read. The
            // broker's delivery limit bounds how often it comes back (then it is dead-lettered).
            tracing::warn!(job = %job.id, error = %err, "cannot read the history of a redelivered job; handing it back");
            Redelivered::HandBack
        }
    }
}

/// Log a failed settlement (an ack, a nack, a confirm) that nothing more can be done about.
pub(crate) fn settle(result: runway_broker::Result<()>) {
    if let Err(err) = result {
        tracing::warn!(error = %err, "settling a delivery failed");
    }
}
