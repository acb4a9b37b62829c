//! `runway job logs`: a job's whole log in order from the history; with `--follow`, live to the
//! end, exiting with the job's exit code (or `lost` when its runner goes silent).
//!
//! It reads the history only: it binds no queue and never cancels the job.

use std::time::Duration;

use runway_broker::Connection;
use runway_broker::protocol::now_ms;
use runway_broker::topology::Topology;
use runway_worker::history::{JobRecord, State};

use crate::exit::{self, CliError};
use crate::format::time;
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
    let mut events = JobEvents::open(conn, topology, job, record.created_at_ms()).await?;
    let mut printer = Printer::new(Style::Human { quiet }, record.operation.as_deref().unwrap_or("job"));
    printer.set_timestamps(timestamps);
    printer.set_status_quiet(true);
    let mut live = JobRecord::new(job);
    let mut check = tokio::time::interval(Duration::from_secs(1));
    loop {
        let read = tokio::select! {
            read = events.next() => read?,
            _ = check.tick(), if follow && events.caught_up() => {
                if let Some(silence) = live.silence(now_ms()) {
                    eprintln!(
                        "runway: job {job} lost: no heartbeat from runner {} since {}",
                        silence.runner,
                        time(Some(silence.last_seen_ms))
                    );
                    return Ok(exit::LOST);
                }
                continue;
            }
        };
        match read {
            Some(JobRead::Event(event, body)) => {
                live.apply(&event);
                if let Some(completed) = printer.event(&event, &body) {
                    return Ok(if follow { exit::for_job(&completed) } else { exit::SUCCESS });
                }
            }
            Some(JobRead::Undecodable(err)) => printer.undecodable(&err),
            Some(JobRead::CaughtUp) if !follow => return Ok(exit::SUCCESS),
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
