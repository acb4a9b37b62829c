//! The runner's intake: a delivered job taken (decoded, checked against the target and the
//! policy, told from a copy or a next attempt, and spawned as a job task) and a control message
//! obeyed (cancel, group, ping). It runs no job itself (`job`) and decides no credit (`credit`).

use std::sync::Arc;

use runway_broker::Delivery;
use runway_broker::protocol::{self, ControlBody, RunnerInfo};
use runway_broker::topology::Topology;
use tokio::sync::{Semaphore, mpsc};

use super::Serving;
use crate::execute::Stop;
use crate::job::{JobRun, run_job, settle};
use crate::metrics::DeadLetter;
use crate::policy;
use crate::rejection::reject;

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

    /// Decode a delivered job and start it, or reject it (`rejection`).
    pub(super) async fn take(&mut self, instance: u64, delivery: Delivery) {
        let job = match protocol::decode_job(&delivery.body, self.config.max_job_bytes) {
            Ok(job) => job,
            Err(err) => {
                if reject(&self.conn, &self.topology, &self.config.id, delivery, &err).await {
                    self.config.metrics.dead_lettered(DeadLetter::Invalid);
                }
                return;
            }
        };
        let config = &self.config;
        let checked = policy::target_fits(&job.target, &config.id, &config.labels)
            .and_then(|()| config.policy.check(policy::submitter(&delivery), &job));
        if let Err(why) = checked {
            if policy::reject(&self.conn, &self.topology, &self.config.id, &job, delivery, &why).await {
                self.config.metrics.dead_lettered(DeadLetter::Refused);
            }
            return;
        }
        if self.attempts.get(&job.id).is_some_and(|&here| job.attempt > here) {
            // Its next attempt, queued before this runner settled the last one.
            self.next_attempts.insert(job.id, (instance, delivery));
            return;
        }
        if self.running.contains_key(&job.id) || !self.taken.take(job.id, job.attempt) {
            // A copy of a job this runner runs or ran: the broker handed back a running job
            // (its connection dropped and came back), or someone published the job again.
            tracing::warn!(job = %job.id, attempt = job.attempt, "dropping a copy of a job this runner took already");
            settle(delivery.acker.ack().await);
            return;
        }
        self.config.metrics.job_taken(&job.operation);
        let (stop_tx, stop_rx) = mpsc::unbounded_channel();
        let submitter = policy::submitter(&delivery).map(str::to_owned);
        if self.cancelled.honoured(job.id, submitter.as_deref(), &self.config.policy) {
            // Cancelled while it was queued: it ends without running.
            let _ = stop_tx.send(Stop { force: true });
        }
        self.running.insert(job.id, stop_tx);
        self.attempts.insert(job.id, job.attempt);
        self.submitters.insert(job.id, submitter);
        self.ledger.took(job.id, instance);
        // A group job runs outside the slots: the group bounds it to one (see `groups`).
        let slots = if self.groups.is_group_consumer(instance) {
            self.groups.took(job.id);
            Arc::new(Semaphore::new(1))
        } else {
            Arc::clone(&self.slots)
        };
        let run = JobRun {
            shutdown: self.shutdown.clone(),
            conn: self.conn.clone(),
            link: self.link.clone(),
            topology: self.topology.clone(),
            config: Arc::clone(&self.config),
            slots,
            hostname: self.hostname.clone(),
            openers: self.openers.clone(),
        };
        self.jobs.spawn(async move {
            let (id, attempt) = (job.id, job.attempt);
            let ran = run_job(run, job, delivery, stop_rx).await;
            (id, attempt, ran)
        });
    }

    pub(super) async fn control(&mut self, message: &Delivery) {
        match protocol::decode::<protocol::Control>(&message.body, "control message") {
            Ok(control) => match control.body {
                ControlBody::Cancel { job, force } => {
                    let by = runway_broker::identity::sender(message);
                    let Some(submitter) = self.submitters.get(&job) else { return };
                    if !self.config.policy.may_cancel(by, submitter.as_deref()) {
                        tracing::warn!(%job, by = by.unwrap_or("(unverified)"), "ignoring a cancel from a user who may not cancel this job");
                        return;
                    }
                    if let Some(stop) = self.running.get(&job) {
                        tracing::info!(%job, force, "cancelling");
                        let _ = stop.send(Stop { force });
                    }
                }
                ControlBody::Group { name } => self.consume_groups([name]).await,
                ControlBody::Ping { reply_to } if !Topology::is_reply_queue(&reply_to) => {
                    tracing::warn!(%reply_to, "ignoring a ping whose reply_to is not a reply queue");
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
