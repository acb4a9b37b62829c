//! One job's task on a runner: resolve a redelivery from the history, wait for a free slot,
//! publish `accepted`, execute, publish `completed`, and only then acknowledge the delivery.
//!
//! It does not decide which deliveries to take or track credit (the serving loop does), nor
//! run the process itself (`execute` does).

use std::sync::Arc;
use std::time::Instant;

use runway_broker::claims::{self, Claim};
use runway_broker::protocol::{self, Completed, Event, EventBody, Job, Retrying, Status};
use runway_broker::topology::Topology;
use runway_broker::{Connection, Delivery};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::claimed::{AtMostOnce, Claimed};
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
    /// The link's generation of `conn`.
    pub(crate) generation: u64,
    pub(crate) link: Link,
    pub(crate) topology: Topology,
    pub(crate) config: Arc<RunnerConfig>,
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) hostname: String,
    /// The claims of ended attempts, held a while longer.
    pub(crate) claimed: Arc<Claimed>,
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
    // arrived: the history says whether it ran (or runs) elsewhere, even where no claim is left
    // to say so (claims go with their runner's connection).
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
    if run.config.at_most_once == AtMostOnce::Runner {
        return run_claimed(&run, job, delivery, stops, None).await.0;
    }
    // One runner per attempt, cluster-wide: a copy of the message that reached another runner
    // at the same time finds the attempt claimed there, and is dropped here.
    let claim = loop {
        match claims::claim(&run.conn, &run.topology, job.id, job.attempt).await {
            Ok(Claim::Held) => break Some((run.conn.clone(), run.generation)),
            // A group's copy: its delivery holds the group, so it stays unacknowledged until the
            // job ended where it was claimed (or the claim came free).
            Ok(Claim::Taken) if job.group.is_some() => match hold_group_copy(&run, &job).await {
                GroupCopy::Ended => {
                    settle(delivery.acker.ack().await);
                    return false;
                }
                GroupCopy::Gone => return false,
                GroupCopy::Claimed => match resolve_redelivery(&run, &job).await {
                    Redelivered::Run(attempt) if attempt == job.attempt => {
                        break Some((run.conn.clone(), run.generation));
                    }
                    Redelivered::Run(attempt) => {
                        let _ = claims::release(&run.conn, &run.topology, job.id, job.attempt).await;
                        job.attempt = attempt;
                    }
                    Redelivered::Drop => {
                        settle(delivery.acker.ack().await);
                        return false;
                    }
                    Redelivered::HandBack => {
                        settle(delivery.acker.nack(true).await);
                        return false;
                    }
                },
            },
            Ok(Claim::Taken) => {
                tracing::warn!(job = %job.id, attempt = job.attempt, "dropping a copy of a job another runner has claimed");
                settle(delivery.acker.ack().await);
                return false;
            }
            // The connection went before the claim was made: so did the delivery, which the
            // broker holds again and hands to a runner (maybe this one) whose claim can be
            // made. Running it here anyway ran it twice (rolling-restart test: the other runner
            // resolved the redelivery before this one's `accepted` was stored).
            Err(err) if err.is_unreachable() => {
                tracing::info!(job = %job.id, error = %err, "the connection went before the job was claimed: leaving it to the broker");
                return false;
            }
            // Without a claim the job runs as it would have before claims: never lost for it.
            Err(err) => {
                tracing::warn!(job = %job.id, error = %err, "could not claim the job; running it unclaimed");
                break None;
            }
        }
    };
    let (ran, claim) = run_claimed(&run, job.clone(), delivery, stops, claim).await;
    if let Some(conn) = claim
        && let Some((conn, old_job, old_attempt)) = run.claimed.keep(conn, job.id, job.attempt)
        && let Err(err) = claims::release(&conn, &run.topology, old_job, old_attempt).await
    {
        tracing::debug!(job = %old_job, error = %err, "letting go of an old claim failed");
    }
    ran
}

/// How long a group's copy waits between two looks at a claim another runner holds.
const GROUP_COPY_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// How holding a group's copy ended.
enum GroupCopy {
    /// The job ended where it was claimed: acknowledge the copy.
    Ended,
    /// The claim came free (its runner's connection went) with the job not ended: this runner
    /// holds it now.
    Claimed,
    /// This runner's connection went: the broker has the copy back.
    Gone,
}

/// Keep a copy of a group's job whose attempt another runner claimed until the job ended there
/// (read from the history, as a redelivery is), or until the claim comes free.
async fn hold_group_copy(run: &JobRun, job: &Job) -> GroupCopy {
    tracing::info!(job = %job.id, "another runner claimed this group job: holding its group until it ends there");
    loop {
        if let Ok(Decision::Drop { why }) = redelivery::resolve(&run.conn, &run.topology, job).await {
            tracing::info!(job = %job.id, why, "dropping a copy of a group job another runner ran");
            return GroupCopy::Ended;
        }
        tokio::time::sleep(GROUP_COPY_POLL).await;
        match claims::claim(&run.conn, &run.topology, job.id, job.attempt).await {
            Ok(Claim::Held) => return GroupCopy::Claimed,
            Ok(Claim::Taken) => {}
            Err(_) => return GroupCopy::Gone,
        }
    }
}

/// Whether the connection a claim was made on (`generation`) is still the link's.
fn still_claimed(run: &JobRun, generation: u64) -> bool {
    run.link.current().is_some_and(|(_, current)| current == generation)
}

/// The claim went with its connection, and the broker has the delivery back: claim the attempt
/// again on the link's next connection, so that this runner goes on only if no other runner
/// claimed it meanwhile. `None`: leave the job to the other runner (or to the broker).
async fn reclaim(run: &JobRun, job: &Job, lost: u64) -> Option<(Connection, u64)> {
    tracing::info!(job = %job.id, attempt = job.attempt, "the job's claim went with its connection: claiming it again on the next");
    let mut after = lost;
    loop {
        let Some((conn, generation)) = run.link.newer_than(after).await else {
            tracing::info!(job = %job.id, attempt = job.attempt, "the runner's link closed before the job was claimed again: leaving it to the broker");
            return None;
        };
        match claims::claim(&conn, &run.topology, job.id, job.attempt).await {
            Ok(Claim::Held) => {
                tracing::info!(job = %job.id, attempt = job.attempt, "claimed the job again after reconnecting");
                return Some((conn, generation));
            }
            Ok(Claim::Taken) => {
                tracing::warn!(job = %job.id, attempt = job.attempt, "another runner claimed the job while this one reconnected: leaving it to that runner");
                return None;
            }
            Err(err) if err.is_unreachable() => after = generation,
            Err(err) => {
                tracing::warn!(job = %job.id, error = %err, "could not claim the job again after reconnecting: leaving it to the broker");
                return None;
            }
        }
    }
}

/// Run a claimed job: its secrets, a slot, `accepted`, the process, `completed`, the ack. Says
/// whether this runner ran it, and the connection its claim is on at the end (`claim`: the
/// connection and its generation, `None` when unclaimed).
///
/// Nothing of the attempt goes out without the claim: if the claim's connection went before
/// `accepted` was confirmed, the attempt is claimed again on the next connection first, and left
/// to another runner if that one claimed it meanwhile (its delivery went back to the broker).
async fn run_claimed(
    run: &JobRun,
    job: Job,
    delivery: Delivery,
    mut stops: mpsc::UnboundedReceiver<Stop>,
    mut claim: Option<(Connection, u64)>,
) -> (bool, Option<Connection>) {
    let mut sink = EventSink::new(run.link.clone(), run.topology.clone(), job.id, run.config.id.clone(), job.attempt);
    let secrets = match run.config.secrets.resolve(&job.secrets) {
        Ok(secrets) => secrets,
        Err(missing) => {
            reject(&job, &mut sink, delivery, &missing.to_string()).await;
            return (true, claim.map(|(conn, _)| conn));
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
            return (false, claim.map(|(conn, _)| conn));
        }
        permit = Arc::clone(&run.slots).acquire_owned() => permit.ok(),
    };
    let heartbeat_ms = protocol::to_ms(run.config.limits.heartbeat);
    let metrics = &run.config.metrics;
    metrics.job_accepted(&job.operation, job.created_at_ms, protocol::now_ms());
    let accepted = Instant::now();
    if let Some((_, generation)) = &claim
        && !still_claimed(run, *generation)
    {
        match reclaim(run, &job, *generation).await {
            Some(again) => claim = Some(again),
            None => return (false, None),
        }
    }
    sink.emit(EventBody::Accepted { hostname: run.hostname.clone(), heartbeat_ms }).await;
    // The process starts only once the broker has the `accepted` (confirmed: on a cluster,
    // stored on a majority): a runner that later resolves a redelivery of this job then finds
    // it taken and waits for this runner's sign of life, instead of running it a second time.
    while let Some((_, generation)) = &claim {
        if sink.confirm_here().await && still_claimed(run, *generation) {
            break;
        }
        match reclaim(run, &job, *generation).await {
            Some(again) => claim = Some(again),
            None => {
                sink.discard();
                return (false, None);
            }
        }
    }
    if let Err(err) = sink.flush().await {
        tracing::warn!(job = %job.id, error = %err, "the broker did not confirm that the job was accepted");
    }
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
        return (true, claim.map(|(conn, _)| conn));
    }
    // Acknowledge even if events were lost: the job ran, and it must not run again.
    settle(delivery.acker.ack().await);
    (true, claim.map(|(conn, _)| conn))
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
