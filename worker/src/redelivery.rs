//! Resolving a redelivered job from the history before it runs, so a job never runs twice at
//! once: never started, run it; completed, drop it; started and its runner still heartbeating, a
//! duplicate, drop it; started and its runner silent, record `lost`, and run it again as the next
//! attempt only if the operation allows (`retry_on_lost`).
//!
//! The decision is a pure function of the job's record; reading the index is the only I/O here.

use std::time::Duration;

use runway_broker::protocol::{Job, now_ms};
use runway_broker::topology::Topology;
use runway_broker::{Connection, StreamOffset};

use crate::history::{JobRecord, uuid_ms};
use crate::streams::{Read, SEEK_SLACK_MS, SMALL_PREFETCH, StreamReader};

/// What to do with a redelivered job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Nobody started it: run it as this attempt.
    Run { attempt: u32 },
    /// It completed, or it is running elsewhere: acknowledge and forget it.
    Drop { why: &'static str },
    /// Its runner went silent mid-job: record attempt `attempt` as lost on `runner`, then run it
    /// again as `attempt + 1` if `retry`.
    Lost { attempt: u32, runner: String, last_seen_ms: u64, retry: bool },
}

/// What the history says of a redelivered job at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Decided(Decision),
    /// Its runner was heard from recently: wait until `until_ms` for a sign of life before
    /// calling it lost.
    Wait {
        until_ms: u64,
    },
}

/// Decide from what the history says at `now`.
pub(crate) fn decide(record: &JobRecord, job: &Job, now: u64) -> Verdict {
    // A retry is a new message of the next attempt: the earlier attempts in the history are
    // not this one.
    let Some(attempt) = record.last_attempt().filter(|attempt| attempt.number >= job.attempt) else {
        return Verdict::Decided(Decision::Run { attempt: job.attempt });
    };
    if let Some(completed) = &attempt.completed {
        // Its end says the next attempt is queued, but none began: the runner that ended it
        // could not queue it (and handed the job back). Run the next attempt now.
        if let Some(next) = completed.retrying.filter(|next| next.attempt > attempt.number) {
            return Verdict::Decided(Decision::Run { attempt: next.attempt });
        }
        return Verdict::Decided(Decision::Drop { why: "it already completed" });
    }
    match record.silence(now) {
        Some(silence) => Verdict::Decided(Decision::Lost {
            attempt: attempt.number,
            runner: silence.runner,
            last_seen_ms: silence.last_seen_ms,
            retry: job.retry_on_lost,
        }),
        None => Verdict::Wait {
            until_ms: attempt.last_seen_ms.saturating_add(attempt.heartbeat_ms.saturating_mul(3)).saturating_add(1),
        },
    }
}

/// Read the job's events from the index and decide; waits (reading live) while its runner might
/// still be alive.
pub(crate) async fn resolve(conn: &Connection, topology: &Topology, job: &Job) -> runway_broker::Result<Decision> {
    let from = uuid_ms(job.id).min(job.created_at_ms).saturating_sub(SEEK_SLACK_MS);
    let mut reader =
        StreamReader::open(conn, topology, &topology.index_queue(), StreamOffset::Timestamp(from), SMALL_PREFETCH)
            .await?;
    let mut record = JobRecord::new(job.id);
    let job_text = job.id.to_string();
    let mut deadline: Option<u64> = None;
    loop {
        let read = match deadline {
            None => reader.next().await?,
            Some(until) => {
                let wait = Duration::from_millis(until.saturating_sub(now_ms()));
                match tokio::time::timeout(wait, reader.next()).await {
                    Ok(read) => read?,
                    // Nothing from its runner within three intervals: decide again, now silent.
                    Err(_) => {
                        let now = now_ms().max(until);
                        return Ok(match decide(&record, job, now) {
                            Verdict::Decided(decision) => decision,
                            Verdict::Wait { .. } => Decision::Drop { why: "undecided" },
                        });
                    }
                }
            }
        };
        match read {
            Some(Read::Message(delivery)) => {
                if delivery.properties.correlation_id.as_deref() != Some(job_text.as_str()) {
                    continue;
                }
                let Ok(event) = runway_broker::identity::decode_event(&delivery) else { continue };
                let before = record.last_attempt().map(|attempt| attempt.last_seen_ms);
                record.apply(&event, runway_broker::identity::sender(&delivery));
                if deadline.is_some() && record.last_attempt().map(|attempt| attempt.last_seen_ms) > before {
                    // A sign of life (or its end) after we started waiting.
                    // Its timestamp may be old (published late, after a reconnect): that it
                    // arrived at all is what counts.
                    match decide(&record, job, now_ms()) {
                        Verdict::Decided(Decision::Lost { .. }) | Verdict::Wait { .. } if job.group.is_some() => {
                            // A concurrency group's job: this unacknowledged delivery now holds
                            // its group (the runner still running it lost its own, with its
                            // connection), so keep it until the job ends or its runner goes
                            // silent; dropping it now would let the group's next job start
                            // beside this one.
                            let interval = record.last_attempt().map_or(0, |attempt| attempt.heartbeat_ms);
                            deadline = Some(now_ms().saturating_add(interval.saturating_mul(3)).saturating_add(1));
                        }
                        Verdict::Decided(Decision::Lost { .. }) | Verdict::Wait { .. } => {
                            return Ok(Decision::Drop { why: "its runner is still running it" });
                        }
                        Verdict::Decided(decision) => return Ok(decision),
                    }
                }
            }
            Some(Read::CaughtUp) => {
                // Silent in the history is not yet silent: after a broker restart, a runner that
                // is still running the job (or ended it while the broker was away) publishes what
                // it could not only once it has connected again. So listen for three intervals
                // from now, not from its last heartbeat, before calling it lost.
                let interval = record.last_attempt().map_or(0, |attempt| attempt.heartbeat_ms);
                let grace = now_ms().saturating_add(interval.saturating_mul(3)).saturating_add(1);
                match decide(&record, job, now_ms()) {
                    Verdict::Decided(Decision::Lost { .. }) => deadline = Some(grace),
                    Verdict::Decided(decision) => return Ok(decision),
                    Verdict::Wait { until_ms } => deadline = Some(until_ms.max(grace)),
                }
            }
            None => {
                return Err(runway_broker::Error::ConnectionClosed(
                    "the index stream ended while reading it".to_owned(),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use runway_broker::protocol::{Command, Completed, Event, EventBody, Status, Target, VERSION};
    use uuid::Uuid;

    use super::*;

    fn job(retry_on_lost: bool) -> Job {
        Job {
            v: VERSION,
            id: Uuid::now_v7(),
            operation: "deploy".into(),
            project: "p".into(),
            command: Command::Shell("true".into()),
            args: vec![],
            env: BTreeMap::new(),
            secrets: Vec::new(),
            workdir: None,
            timeout_ms: None,
            kill_grace_ms: None,
            target: Target::Any,
            retry_on_lost,
            attempt: 1,
            created_at_ms: 0,
            queued_by: "t".into(),
            group: None,
            not_before_ms: None,
            retry: None,
        }
    }

    fn event(job: &Job, ts: u64, body: EventBody) -> Event {
        Event { v: VERSION, job: job.id, seq: 1, ts, runner: "old".into(), attempt: 1, body }
    }

    #[test]
    fn never_started_runs() {
        let job = job(false);
        assert_eq!(decide(&JobRecord::new(job.id), &job, 10), Verdict::Decided(Decision::Run { attempt: 1 }));
    }

    #[test]
    fn completed_is_dropped() {
        let job = job(false);
        let mut record = JobRecord::new(job.id);
        record.apply(&event(&job, 1, EventBody::Accepted { hostname: "h".into(), heartbeat_ms: 1000 }), None);
        let completed = Completed {
            status: Status::Success,
            exit_code: Some(0),
            signal: None,
            duration_ms: 1,
            outputs: BTreeMap::new(),
            error: None,
            retrying: None,
        };
        record.apply(&event(&job, 2, EventBody::Completed(completed)), None);
        assert!(matches!(decide(&record, &job, 1_000_000), Verdict::Decided(Decision::Drop { .. })));
        // The next attempt of a retried job is not the attempt that completed.
        let next = Job { attempt: 2, ..job.clone() };
        assert_eq!(decide(&record, &next, 1_000_000), Verdict::Decided(Decision::Run { attempt: 2 }));
    }

    #[test]
    fn a_heartbeating_runner_is_a_wait_verdict_not_an_error_then_a_silent_one_means_lost() {
        let job = job(true);
        let mut record = JobRecord::new(job.id);
        record.apply(&event(&job, 10_000, EventBody::Accepted { hostname: "h".into(), heartbeat_ms: 1000 }), None);
        assert_eq!(
            decide(&record, &job, 11_000),
            Verdict::Wait { until_ms: 13_001 },
            "recently heard from: wait until three intervals passed"
        );
        assert_eq!(
            decide(&record, &job, 13_001),
            Verdict::Decided(Decision::Lost { attempt: 1, runner: "old".into(), last_seen_ms: 10_000, retry: true })
        );
    }

    #[test]
    fn a_far_future_heartbeat_waits_until_the_end_of_time_instead_of_overflowing() {
        let job = job(false);
        let mut record = JobRecord::new(job.id);
        record.apply(
            &event(&job, u64::MAX - 1, EventBody::Accepted { hostname: "h".into(), heartbeat_ms: u64::MAX / 2 }),
            None,
        );
        assert_eq!(decide(&record, &job, 10), Verdict::Wait { until_ms: u64::MAX });
    }
}
