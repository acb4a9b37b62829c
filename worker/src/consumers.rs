//! What a runner consumes on one connection: its queues declared and its own job queue, control
//! queue and cancels stream consumed ([`wire`]), and each job consumer's deliveries forwarded to
//! the serving loop, tagged with the consumer instance they came from ([`forward`]).
//!
//! It does not decide which shared queues to consume or with what credit (`credit` does, and the
//! serving loop carries it out), nor what a delivery means.

use std::collections::HashSet;
use std::time::Duration;

use runway_broker::topology::{RunnerQueues, Topology};
use runway_broker::{Connection, ConsumeOptions, Consumer, Delivery};
use tokio::sync::{mpsc, oneshot};

use crate::backoff::{MAX_PAUSE, pauses};
use crate::cancels::{Cancels, read_cancels};
use crate::runner::RunnerConfig;

/// The acknowledgement timeout asked of the broker for job deliveries (`x-consumer-timeout`),
/// where it honours the argument (RabbitMQ 3.12 on; 3.10 ignores it and applies its global
/// `consumer_timeout`). A job running longer has its delivery taken back and handed out again;
/// the runner running it drops the copy, and any other runner resolves it from the history.
const JOB_CONSUMER_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The first pause before consuming an ended job queue again.
const FIRST_PAUSE: Duration = Duration::from_millis(100);

/// A delivery from a job consumer, with the consumer instance it came from.
pub(crate) type Tagged = (u64, runway_broker::Result<Delivery>);

/// What a runner consumes on one connection.
pub(crate) struct Wiring {
    /// The job queues to consume, the runner's own first; the rest are shared.
    pub(crate) job_queues: Vec<String>,
    pub(crate) consumers: Vec<(String, ConsumeOptions, Consumer)>,
    pub(crate) control: Consumer,
    /// Jobs cancelled so far, and the consumer of later cancels (not for an in-process runner).
    pub(crate) cancels: Option<(Cancels, Consumer)>,
    /// Concurrency groups announced so far (none for a runner that takes only its own jobs).
    pub(crate) groups: HashSet<String>,
}

/// Declare the runner's queues on `conn` and consume them.
pub(crate) async fn wire(
    conn: &Connection,
    topology: &Topology,
    config: &RunnerConfig,
) -> runway_broker::Result<Wiring> {
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
    // so holding them hoards nothing. The shared queues are consumed by the serving loop.
    let own = &job_queues[0];
    let options = job_consume_options(config.concurrency.max(1));
    let consumers = vec![(own.clone(), options.clone(), conn.consume(own, &options).await?)];
    let control =
        conn.consume(&control_queue, &ConsumeOptions { no_ack: true, ..ConsumeOptions::with_prefetch(0) }).await?;
    let groups = if config.by_id_only { HashSet::new() } else { crate::groups::read_groups(conn, topology).await? };
    Ok(Wiring { job_queues, consumers, control, cancels, groups })
}

/// How a job queue is consumed: `slots` deliveries at most, unacknowledged for up to a day.
pub(crate) fn job_consume_options(slots: usize) -> ConsumeOptions {
    let prefetch = u16::try_from(slots).unwrap_or(u16::MAX);
    ConsumeOptions { consumer_timeout: Some(JOB_CONSUMER_TIMEOUT), ..ConsumeOptions::with_prefetch(prefetch) }
}

/// One job consumer to forward.
pub(crate) struct Forward {
    pub(crate) conn: Connection,
    pub(crate) queue: String,
    pub(crate) options: ConsumeOptions,
    pub(crate) consumer: Consumer,
    /// The consumer instance its deliveries are tagged with.
    pub(crate) instance: u64,
}

/// Hand a queue's deliveries to the serving loop, tagged with the consumer instance; when the
/// broker ends the consumer (a channel closed under it, a server-sent cancel), consume again,
/// with a growing pause between tries; a queue that is gone is reported, to be declared again. A lost connection is reported to the serving loop, which wires everything
/// again on the next one. When `cancel` fires (or its sender goes), cancel the consumer, hand
/// over what was already on its way, and stop.
pub(crate) async fn forward(job_queue: Forward, tx: mpsc::Sender<Tagged>, mut cancel: Option<oneshot::Receiver<()>>) {
    let Forward { conn, queue, options, mut consumer, instance } = job_queue;
    let mut backoff = pauses(FIRST_PAUSE);
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
            backoff = pauses(FIRST_PAUSE);
            if tx.send((instance, delivery)).await.is_err() {
                return;
            }
        }
        loop {
            // The pauses start from the first again once a delivery came through.
            let pause = backoff.next().unwrap_or(MAX_PAUSE);
            tracing::debug!(%queue, retry_in = ?pause, "the job consumer ended; consuming again");
            tokio::time::sleep(pause).await;
            match conn.consume(&queue, &options).await {
                Ok(again) => {
                    consumer = again;
                    break;
                }
                // Unreachable: the serving loop wires everything again on the next connection.
                // Not found: the queue was deleted under its consumer (the broker's cancel
                // that ended it), and the same rewiring declares it again.
                Err(err) if err.is_unreachable() || matches!(err, runway_broker::Error::NotFound { .. }) => {
                    let _ = tx.send((instance, Err(err))).await;
                    return;
                }
                Err(err) => tracing::warn!(%queue, error = %err, "consuming again failed"),
            }
        }
    }
}
