//! One job's task on a runner: resolve a redelivery from the history, wait for a free slot,
//! publish `accepted`, execute, publish `completed`, and only then acknowledge the delivery.
//!
//! It does not decide which deliveries to take or track credit (the serving loop does), nor
//! run the process itself (`execute` does).

use std::sync::Arc;

use runway_broker::protocol::{self, Completed, Event, EventBody, Job, Retrying, Status};
use runway_broker::topology::Topology;
use runway_broker::{Connection, Delivery};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::events::EventSink;
use crate::execute::{Context, Stop, execute};
use crate::link::Link;
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
}

/// Run `job`, which came in `delivery`, until it completed (or was handed back), obeying `stops`.
pub(crate) async fn run_job(run: JobRun, mut job: Job, delivery: Delivery, mut stops: mpsc::UnboundedReceiver<Stop>) {
    if delivery.redelivered || delivery.delivery_count > 0 {
        match resolve_redelivery(&run, &job).await {
            Some(attempt) => job.attempt = attempt,
            None => {
                settle(delivery.acker.ack().await);
                return;
            }
        }
    }
    let mut sink = EventSink::new(run.link.clone(), run.topology.clone(), job.id, run.config.id.clone(), job.attempt);
    let secrets = match run.config.secrets.resolve(&job.secrets) {
        Ok(secrets) => secrets,
        Err(missing) => return reject(&job, &mut sink, delivery, &missing.to_string()).await,
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
            return;
        }
        permit = Arc::clone(&run.slots).acquire_owned() => permit.ok(),
    };
    let heartbeat_ms = protocol::to_ms(run.config.limits.heartbeat);
    sink.emit(EventBody::Accepted { hostname: run.hostname.clone(), heartbeat_ms }).await;
    let mut completed = match permit {
        Some(_permit) => {
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
    if let Some(attempt) = retry::next_attempt(&job, &completed) {
        completed.retrying = queue_again(&run, &job, attempt).await;
    }
    sink.emit(EventBody::Completed(completed)).await;
    if let Err(err) = sink.flush().await {
        tracing::warn!(job = %job.id, error = %err, "some events of the job were not confirmed");
    }
    // Acknowledge even if events were lost: the job ran, and it must not run again.
    settle(delivery.acker.ack().await);
}

/// Queue `job` again as `attempt` (see `retry`); `None` when the broker did not take it, and
/// then this attempt is the job's last.
async fn queue_again(run: &JobRun, job: &Job, attempt: u32) -> Option<Retrying> {
    let conn = run.link.current().map_or_else(|| run.conn.clone(), |(conn, _)| conn);
    match retry::queue_again(&conn, &run.topology, job, attempt).await {
        Ok(retrying) => {
            tracing::info!(job = %job.id, attempt, at_ms = retrying.at_ms, "queued the job again");
            Some(retrying)
        }
        Err(err) => {
            tracing::warn!(job = %job.id, attempt, error = %err, "queuing the next attempt failed: not retried");
            None
        }
    }
}

/// End `job` `rejected` without running it: record `completed` with the reason (names only,
/// never a value), then acknowledge.
async fn reject(job: &Job, sink: &mut EventSink, delivery: Delivery, reason: &str) {
    tracing::warn!(job = %job.id, operation = %job.operation, reason, "rejecting a job");
    sink.emit(EventBody::Completed(Completed::without_exit(Status::Rejected, reason.to_owned()))).await;
    if let Err(err) = sink.flush().await {
        tracing::warn!(job = %job.id, error = %err, "the rejection of the job was not confirmed");
    }
    settle(delivery.acker.ack().await);
}

/// Decide from the history what a redelivered job is; the attempt to run it as, or `None`
/// to drop it (acknowledged, never run here).
async fn resolve_redelivery(run: &JobRun, job: &Job) -> Option<u32> {
    match redelivery::resolve(&run.conn, &run.topology, job).await {
        Ok(Decision::Run { attempt }) => Some(attempt),
        Ok(Decision::Drop { why }) => {
            tracing::info!(job = %job.id, why, "dropping a redelivered job");
            None
        }
        Ok(Decision::Lost { attempt, runner, last_seen_ms, retry }) => {
            tracing::warn!(job = %job.id, attempt, %runner, retry, "a redelivered job's runner went silent: lost");
            let heard = crate::times::heard_at(last_seen_ms, protocol::now_ms());
            let mut completed =
                Completed::without_exit(Status::Lost, format!("runner {runner} went silent (last heard from {heard})"));
            // The job's `retry` queues the next attempt afresh (after its delay); `retry_on_lost`
            // alone runs it here at once. An attempt number at the end of its range (a hostile
            // history) is not run again.
            let retried = match job.retry.as_ref().and_then(|policy| policy.next_attempt(attempt, &completed)) {
                Some(next) => {
                    let lost = Job { attempt, ..job.clone() };
                    completed.retrying = queue_again(run, &lost, next).await;
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
            retried
        }
        Err(err) => {
            // Without the history we cannot rule out that it runs elsewhere: never risk twice.
            tracing::warn!(job = %job.id, error = %err, "cannot resolve a redelivered job; dropping it");
            None
        }
    }
}

/// Log a failed settlement (an ack, a nack, a confirm) that nothing more can be done about.
pub(crate) fn settle(result: runway_broker::Result<()>) {
    if let Err(err) = result {
        tracing::warn!(error = %err, "settling a delivery failed");
    }
}
