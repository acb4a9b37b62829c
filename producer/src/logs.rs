//! `runway job logs`: a job's whole log in order from the history; with `--follow`, live to the
//! end, exiting with the job's exit code (or `lost` when its runner goes silent).
//!
//! It reads the history only: it binds no queue and never cancels the job.

use std::time::Duration;

use runway_broker::Connection;
use runway_broker::protocol::{Event, EventBody, Status, now_ms};
use runway_broker::topology::Topology;
use runway_worker::history::{JobRecord, State, uuid_ms};
use runway_worker::times::heard_at;

use crate::exit::{self, CliError};
use crate::format;
use crate::lookup::{self, JobEvents, JobRead};
use crate::printer::{Printer, Style};

/// How `job logs` prints.
#[derive(Debug, Clone, Copy)]
pub struct LogsOptions {
    /// Keep going live until the job ends.
    pub follow: bool,
    /// Prefix each line with the time the runner read it.
    pub timestamps: bool,
    /// No status lines (`--quiet`).
    pub quiet: bool,
}

/// `job logs`.
pub async fn logs(conn: &Connection, topology: &Topology, id: &str, options: LogsOptions) -> Result<u8, CliError> {
    let LogsOptions { follow, timestamps, quiet } = options;
    let record = lookup::resolve(conn, topology, id).await?;
    let job = record.id;
    // The id's own time bounds a recorded creation time that lies (a far-future one would
    // start the read after every event of the job).
    let created_at_ms = record.created_at_ms().min(uuid_ms(job));
    let mut events = JobEvents::open(conn, topology, job, created_at_ms).await?;
    let mut printer = Printer::new(Style::Human { quiet }, record.operation.as_deref().unwrap_or("job"));
    printer.set_timestamps(timestamps);
    printer.set_status_quiet(true);
    printer.set_retry_on_lost(record.retry_on_lost);
    // With retry_on_lost, a silent runner is said once per attempt, and the next one followed.
    let mut announced_silence = None;
    let mut live = JobRecord::new(job);
    let mut check = tokio::time::interval(Duration::from_secs(1));
    loop {
        let read = tokio::select! {
            read = events.next() => read?,
            _ = check.tick(), if follow && events.caught_up() => {
                if let Some(silence) = live.silence(now_ms()) {
                    let lost = format!(
                        "runway: job {} lost: runner {} went silent (last heard from {})",
                        format::short_id(job),
                        silence.runner,
                        heard_at(silence.last_seen_ms, now_ms())
                    );
                    if !retries_lost(&record, &live) {
                        eprintln!("{lost}");
                        return Ok(exit::LOST);
                    }
                    let attempt = live.last_attempt().map(|attempt| attempt.number);
                    if announced_silence != attempt {
                        announced_silence = attempt;
                        eprintln!("{lost}; retry_on_lost is set, so it runs again when a runner takes it up");
                    }
                }
                continue;
            }
        };
        match read {
            Some(JobRead::Event(event, body, sender)) => {
                if live.apply(&event, sender.as_deref()) && follow {
                    say_retried(&event, &live, quiet);
                }
                if let Some(completed) = printer.event(&event, &body, sender.as_deref()) {
                    return Ok(if follow { exit::for_job(&completed) } else { exit::SUCCESS });
                }
            }
            Some(JobRead::Undecodable(err)) => printer.undecodable(&err),
            Some(JobRead::CaughtUp) if !follow => {
                printer.say_ignored();
                return Ok(exit::SUCCESS);
            }
            Some(JobRead::CaughtUp) => {
                // A job cancelled while queued never gets a runner's events: it is over.
                if live.state(now_ms()) == State::Cancelled || record.state(now_ms()) == State::Cancelled {
                    return Ok(exit::CANCELLED);
                }
            }
            None => return Err(lookup::stream_ended()),
        }
    }
}

/// For `--follow` (status lines are otherwise off in `job logs`): an attempt lost and run again,
/// and where the next attempt runs.
fn say_retried(event: &Event, live: &JobRecord, quiet: bool) {
    if quiet {
        return;
    }
    match &event.body {
        EventBody::Completed(completed) if completed.retrying.is_some() => {
            if let Some(line) = crate::printer::retry_line(event.attempt, completed) {
                eprintln!("runway: {line}");
            }
        }
        EventBody::Completed(completed) if completed.status == Status::Lost && live.retry_on_lost => {
            let error = completed.error.as_deref().unwrap_or("its runner went silent");
            eprintln!("runway: attempt {} was lost: {error}; following the next attempt", event.attempt);
        }
        EventBody::Accepted { hostname, .. } if event.attempt > 1 && (live.retry_on_lost || live.retry.is_some()) => {
            eprintln!("runway: attempt {} accepted by runner {} on {hostname}", event.attempt, event.runner);
        }
        _ => {}
    }
}

/// Whether the latest attempt, lost, is followed by another (`retry_on_lost`, or a `retry` on
/// lost with attempts left).
fn retries_lost(record: &JobRecord, live: &JobRecord) -> bool {
    let lost = runway_broker::protocol::Completed::without_exit(Status::Lost, String::new());
    let attempt = live.attempt_count();
    record.retry_on_lost || record.retry.as_ref().is_some_and(|retry| retry.next_attempt(attempt, &lost).is_some())
}
