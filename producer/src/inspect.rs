//! `runway job inspect`: everything known about one job (target, attempts, exit code, outputs,
//! and where it waits if it is queued), as text or JSON.
//!
//! Derived from the index and the job's queue; nothing here changes the job.

use runway_broker::Connection;
use runway_broker::protocol::now_ms;
use runway_broker::topology::Topology;
use runway_worker::history::State;

use crate::exit::{self, CliError};
use crate::format::{self, time};
use crate::lookup;
use crate::runners;
use crate::view::{self, JobView};

/// `job inspect`.
pub async fn inspect(conn: &Connection, topology: &Topology, id: &str, json: bool) -> Result<u8, CliError> {
    let record = lookup::resolve(conn, topology, id).await?;
    let now = now_ms();
    let state = record.state(now);
    let waiting = match (&record.target, state) {
        (Some(target), State::Queued) => topology.job_queue_info(conn, target).await?,
        _ => None,
    };
    // No consumer: every runner serving it is busy, or none is up.
    let why = match (&waiting, &record.target) {
        (Some(info), Some(target)) if info.consumers == 0 => {
            Some(runners::why_no_consumer(conn, topology, target).await)
        }
        _ => None,
    };
    if json {
        let mut view = JobView::new(&record, now);
        if let Some(info) = &waiting {
            view = view.waiting(info, why.as_deref());
        }
        println!("{}", view::line(&view));
        return Ok(exit::SUCCESS);
    }
    println!("job        {}", record.id);
    println!("operation  {}", record.operation.as_deref().unwrap_or("?"));
    println!("project    {}", record.project.as_deref().unwrap_or("?"));
    println!("state      {}", state.as_str());
    if let Some(target) = &record.target {
        println!("target     {}", format::target(target));
    }
    if let Some(by) = &record.queued_by {
        println!("queued by  {by}");
    }
    println!("queued at  {}", time(Some(record.created_at_ms())));
    if !record.env_keys.is_empty() {
        println!("env        {} (values are never recorded)", record.env_keys.join(", "));
    }
    if !record.secrets.is_empty() {
        println!("secrets    {} (from the runner's store)", record.secrets.join(", "));
    }
    if let Some((at, by)) = &record.cancel_requested {
        println!("cancel     requested by {by} at {}", time(Some(*at)));
    }
    if let Some(info) = &waiting {
        println!(
            "waiting    in queue `{}` ({} messages), consumed by {} runner(s)",
            info.name, info.messages, info.consumers
        );
        if let Some(why) = &why {
            println!("           {why}");
        }
    }
    if let Some(silence) = record.silence(now) {
        println!("lost       no heartbeat from runner {} since {}", silence.runner, time(Some(silence.last_seen_ms)));
    }
    for attempt in record.attempts.values() {
        println!("attempt {}  runner {} on {}", attempt.number, attempt.runner, attempt.hostname);
        println!("  started  {}", time(attempt.started_at_ms));
        match &attempt.completed {
            Some(completed) => {
                println!("  ended    {} at {}", completed.status, time(attempt.finished_at_ms));
                println!("  exit     {}", completed.exit_code.map_or("-".to_owned(), |code| code.to_string()));
                println!("  duration {}", format::duration(completed.duration_ms));
                if let Some(error) = &completed.error {
                    println!("  error    {error}");
                }
            }
            None => println!("  running  last seen {}", time(Some(attempt.last_seen_ms))),
        }
    }
    for (key, value) in &record.outputs {
        println!("output     {key}={value}");
    }
    Ok(exit::SUCCESS)
}
