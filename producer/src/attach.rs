//! Attaching to a job: queue it and print its events to its end. Until a runner takes it, say
//! where it waits; once it runs, call it lost when its runner goes silent; Ctrl-C cancels it
//! (twice kills it); a dropped connection is dialled again and the job's history caught up.
//!
//! Each event is decoded once, here, and handed to the printer; printing is `printer`'s.

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use runway_broker::protocol::{self, Completed, Job, Status};
use runway_broker::topology::Topology;
use runway_broker::{Connection, ConsumeOptions, Consumer};
use runway_worker::history::JobRecord;

use crate::cancel;
use crate::exit::CliError;
use crate::format;
use crate::group_wait;
use crate::lookup::{JobEvents, JobRead};
use crate::printer::{Printer, Style};
use crate::runners;
use crate::session::Session;
use crate::waiting::{Due, Waiting};

/// Events delivered ahead to an attached CLI: a log batch can be 128 KiB, so this bounds the
/// CLI's memory (8 MiB) while keeping the stream flowing.
const EVENTS_PREFETCH: u16 = 64;

/// How long an attached CLI tries to connect again after its connection dropped.
const REJOIN_PATIENCE: Duration = Duration::from_secs(300);

/// The pauses between two tries to connect again: 200 ms, doubling to 5 s, each with a random
/// part of up to as much again. Each try dials every node of the server list once, the one
/// lost last.
const REJOIN_PAUSES: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(200))
    .with_factor(2.0)
    .with_max_delay(Duration::from_secs(5))
    .with_jitter()
    .without_max_times();

/// A source of Ctrl-C presses.
pub trait Interrupts: Send {
    fn next(&mut self) -> impl Future<Output = ()> + Send;
}

/// Queue `job` and print its events until it completes. The first interrupt cancels the job
/// and keeps following it to its end; the second kills it at once.
pub async fn submit_and_follow(
    session: &mut Session,
    job: &Job,
    style: Style,
    interrupts: &mut impl Interrupts,
) -> Result<Completed, CliError> {
    let mut printer = Printer::new(style, &job.operation);
    // A lost attempt of a job that sets retry_on_lost is followed by the next one, to its end.
    printer.set_retry_on_lost(job.retry_on_lost);
    if session.several_nodes() {
        printer.status(&format!("connected to {}", session.conn().display_name()));
    }
    // Bind before publishing, so not even the first event can be missed.
    let mut events = bind_events(session.conn(), session.topology(), job).await?;
    session.submit(job).await?;
    printer.status(&format!("queued {} as job {}", job.operation, job.id));
    let mut interrupted = 0;
    // A delayed job waits for its time first.
    let until_due = match job.not_before_ms {
        Some(due) => {
            let now = protocol::now_ms();
            printer.status(&format!(
                "scheduled for {} (in {})",
                format::time(Some(due)),
                format::wait(due.saturating_sub(now))
            ));
            Duration::from_millis(due.saturating_sub(now))
        }
        None => Duration::ZERO,
    };
    // Until a runner accepts the job, say after a while where it waits and who could take it
    // (and on a terminal, show a spinner meanwhile). A job of a concurrency group says sooner
    // who holds its group, and again whenever another job takes it over.
    let mut waiting = Waiting::queued(style, until_due, job.group.is_some());
    let mut said_waiting: Option<String> = None;
    // Once it runs, its runner must be heard from: three heartbeat intervals of silence is `lost`.
    let mut record = JobRecord::new(job.id);
    let mut last_heard = tokio::time::Instant::now();
    let mut silence_check = tokio::time::interval(Duration::from_millis(250));
    let mut announced_silence: Option<u32> = None;
    loop {
        let next = tokio::select! {
            delivery = events.next() => Some(delivery),
            () = interrupts.next() => None,
            due = waiting.due(), if waiting.is_waiting() => {
                match due {
                    Due::Spinner => waiting.show_spinner(),
                    Due::Notice => {
                        let notice = why_waiting(session, job).await;
                        // The same holder again (only its running time grew) is not news.
                        let gist = notice.split(" (").next().unwrap_or_default().to_owned();
                        if said_waiting.as_deref() == Some(gist.as_str()) {
                            waiting.reason(&notice);
                        } else {
                            waiting.notice(&notice, &mut printer);
                            said_waiting = Some(gist);
                        }
                    }
                    Due::Reason => waiting.reason(&why_waiting(session, job).await),
                }
                continue;
            }
            _ = silence_check.tick(), if !record.attempts.is_empty() => {
                if let Some(lost) = lost(&record, last_heard) {
                    let attempt = record.last_attempt().map_or(0, |attempt| attempt.number);
                    if !retries_lost(job, attempt) {
                        printer.status(&lost.error.clone().unwrap_or_default());
                        return Ok(lost);
                    }
                    // Another runner will take it up as the next attempt: keep following.
                    if announced_silence != Some(attempt) {
                        announced_silence = Some(attempt);
                        printer.status(&format!(
                            "{}; retry_on_lost is set, so it runs again when a runner takes it up",
                            lost.error.unwrap_or_default()
                        ));
                    }
                }
                continue;
            }
        };
        match next {
            Some(Some(Ok(delivery))) => {
                let completed = match runway_broker::identity::decode_event(&delivery) {
                    Ok(event) => {
                        // Only a runner's events say the job left its queue (not our own record).
                        if !event.runner.is_empty() {
                            waiting.taken();
                            last_heard = tokio::time::Instant::now();
                        }
                        let sender = runway_broker::identity::sender(&delivery);
                        record.apply(&event, sender);
                        printer.event(&event, &delivery.body, sender)
                    }
                    Err(err) => {
                        printer.undecodable(&err);
                        None
                    }
                };
                if let Err(err) = delivery.acker.ack().await {
                    tracing::debug!(error = %err, "acknowledging an event failed");
                }
                if let Some(completed) = completed {
                    return Ok(completed);
                }
            }
            Some(Some(Err(err))) if !err.is_unreachable() => return Err(CliError::Broker(err)),
            // The connection dropped (a broker restart): connect again and pick up the job's
            // events where they were, from the history.
            Some(Some(Err(_)) | None) => {
                waiting.taken();
                match rejoin(session, job, &mut printer, &mut record, interrupts).await? {
                    Rejoined::Following(again) => events = again,
                    Rejoined::Ended(completed) => return Ok(completed),
                }
                // The runner lost the broker too, and dials again with pauses of up to
                // `RECONNECT_MAX_PAUSE` (and jitter): give it two such pauses to be heard from
                // again before its silence counts, or a restart would make every running job lost.
                last_heard = tokio::time::Instant::now() + runway_worker::RECONNECT_MAX_PAUSE * 2;
            }
            None => {
                interrupted += 1;
                let force = interrupted > 1;
                waiting.suspend(|| {
                    printer.status(if force {
                        "interrupted again: killing the job"
                    } else {
                        "interrupted: cancelling the job (Ctrl-C again to kill it)"
                    })
                });
                cancel::request_cancel(session.conn(), session.topology(), job.id, force, job.attempt).await?;
            }
        }
    }
}

/// Whether another attempt follows attempt `attempt` of `job` when it is lost.
fn retries_lost(job: &Job, attempt: u32) -> bool {
    let lost = Completed::without_exit(Status::Lost, String::new());
    job.retry_on_lost || job.retry.as_ref().is_some_and(|retry| retry.next_attempt(attempt, &lost).is_some())
}

/// Why `job` still waits: who holds its concurrency group, or else where it waits for a runner.
async fn why_waiting(session: &Session, job: &Job) -> String {
    if let Some(group) = &job.group
        && let Some(held) = group_wait::waiting_notice(session.conn(), session.topology(), group, job.id).await
    {
        return held;
    }
    runners::waiting_notice(session.conn(), session.topology(), &job.target).await
}

/// A queue bound to the events of `job`, consumed.
async fn bind_events(conn: &Connection, topology: &Topology, job: &Job) -> Result<Consumer, CliError> {
    let queue = topology.declare_job_events_queue(conn, job.id).await?;
    Ok(conn.consume(&queue, &ConsumeOptions::with_prefetch(EVENTS_PREFETCH)).await?)
}

/// What following a job is after a reconnect.
enum Rejoined {
    Following(Consumer),
    /// It ended while the connection was down.
    Ended(Completed),
}

/// After the connection dropped: dial again (with a growing pause, for up to
/// [`REJOIN_PATIENCE`]), bind a new event queue for the job, then read the events missed
/// from the history; the printer skips what it printed already.
async fn rejoin(
    session: &mut Session,
    job: &Job,
    printer: &mut Printer,
    record: &mut JobRecord,
    interrupts: &mut impl Interrupts,
) -> Result<Rejoined, CliError> {
    let host = session.conn().display_name();
    printer.status(&format!("lost the connection to {host}; connecting again"));
    let started = tokio::time::Instant::now();
    let mut pauses = REJOIN_PAUSES.build();
    // Each try dials from the node after the one tried last, so a node that accepts the
    // connection but cannot serve the history (a stream replica that is not running) is left
    // for the next one rather than tried again and again.
    let mut tried_last = session.conn().clone();
    loop {
        // Connected is not yet ready: right after a restart, the broker accepts connections
        // before its streams are back ("home node ... is down"). Any failure is retried.
        let attempt = async {
            let conn = tried_last.redial().await?;
            tried_last = conn.clone();
            let events = bind_events(&conn, session.topology(), job).await?;
            let ended = catch_up(&conn, session.topology(), job, printer, record).await?;
            Ok::<_, CliError>((conn, events, ended))
        };
        let failure = tokio::select! {
            result = attempt => match result {
                Ok((conn, events, ended)) => {
                    printer.status(&format!("reconnected to {}", conn.display_name()));
                    session.replace_connection(conn);
                    return Ok(match ended {
                        Some(completed) => Rejoined::Ended(completed),
                        None => Rejoined::Following(events),
                    });
                }
                Err(err) => err,
            },
            () = interrupts.next() => {
                return Err(CliError::Broker(runway_broker::Error::ConnectionClosed(format!(
                    "interrupted while {host} was away; job {} was not cancelled (see `runway job inspect {}`)",
                    job.id, job.id
                ))));
            }
        };
        if started.elapsed() > REJOIN_PATIENCE {
            return Err(CliError::Broker(runway_broker::Error::ConnectionClosed(format!(
                "lost the connection to {host} and could not connect again ({failure}); job {} may still be \
                 running: follow it with `runway job logs --follow {}`",
                job.id, job.id
            ))));
        }
        let pause = pauses.next().unwrap_or(Duration::from_secs(5));
        tracing::debug!(error = %failure, retry_in = ?pause, "connecting again failed");
        tokio::time::sleep(pause).await;
    }
}

/// Print the events of `job` stored in the history up to now; its completion if it ended.
async fn catch_up(
    conn: &Connection,
    topology: &Topology,
    job: &Job,
    printer: &mut Printer,
    record: &mut JobRecord,
) -> Result<Option<Completed>, CliError> {
    let mut events = JobEvents::open(conn, topology, job.id, job.created_at_ms).await?;
    loop {
        match events.next().await? {
            Some(JobRead::Event(event, body, sender)) => {
                record.apply(&event, sender.as_deref());
                if let Some(completed) = printer.event(&event, &body, sender.as_deref()) {
                    return Ok(Some(completed));
                }
            }
            Some(JobRead::Undecodable(err)) => printer.undecodable(&err),
            Some(JobRead::CaughtUp) => return Ok(None),
            None => {
                return Err(CliError::Broker(runway_broker::Error::ConnectionClosed(
                    "the history stream ended while reading it".to_owned(),
                )));
            }
        }
    }
}

/// The job as lost, if its runner has been silent for three heartbeat intervals (measured on
/// this machine's clock from the last event received, so clock skew cannot fake it).
fn lost(record: &JobRecord, last_heard: tokio::time::Instant) -> Option<Completed> {
    let attempt = record.last_attempt()?;
    if attempt.completed.is_some() {
        return None;
    }
    let allowed = Duration::from_millis(attempt.heartbeat_ms.saturating_mul(3));
    if last_heard.elapsed() <= allowed {
        return None;
    }
    let heard = runway_worker::times::heard_at(attempt.last_seen_ms, protocol::now_ms());
    let mut lost = Completed::without_exit(
        Status::Lost,
        format!(
            "job {} lost: runner {} went silent (last heard from {heard}; three intervals of {})",
            format::short_id(record.id),
            attempt.runner,
            format::duration(attempt.heartbeat_ms)
        ),
    );
    // It ran from when it was taken up until its runner was last heard from.
    let began = attempt.started_at_ms.or(attempt.accepted_at_ms).unwrap_or(attempt.last_seen_ms);
    lost.duration_ms = attempt.last_seen_ms.saturating_sub(began);
    Some(lost)
}
