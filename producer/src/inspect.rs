//! `runway job inspect`: everything known about one job (target, attempts, exit code, outputs,
//! and where it waits if it is queued), as text or JSON.
//!
//! Derived from the index and the job's queue; nothing here changes the job.

use runway_broker::Connection;
use runway_broker::protocol::{Command, now_ms};
use runway_broker::topology::Topology;
use runway_worker::history::State;
use runway_worker::times::heard_at;

use crate::exit::{self, CliError};
use crate::format::{self, time};
use crate::group_wait;
use crate::lookup;
use crate::runners;
use crate::stdout;
use crate::view::{self, JobView};

/// `job inspect`.
pub async fn inspect(conn: &Connection, topology: &Topology, id: &str, json: bool) -> Result<u8, CliError> {
    let record = lookup::resolve(conn, topology, id).await?;
    let now = now_ms();
    let state = record.state(now);
    // A job of a concurrency group waits on the group: say who holds it.
    let held = match (&record.group, state) {
        (Some(group), State::Queued) => group_wait::waiting_notice(conn, topology, group, record.id).await,
        _ => None,
    };
    let waiting = match (&record.target, state, &held) {
        (Some(target), State::Queued, None) => topology.job_queue_info(conn, target).await?,
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
        let mut view = JobView::new(&record, now).held(held.as_deref());
        if let Some(info) = &waiting {
            view = view.waiting(info, why.as_deref());
        }
        stdout::line(&view::line(&view))?;
        return Ok(exit::SUCCESS);
    }
    let mut out = String::new();
    // One line of the answer, written whole at the end (see `stdout`).
    macro_rules! say {
        ($($arg:tt)*) => {{
            out.push_str(&format!($($arg)*));
            out.push('\n');
        }};
    }
    say!("job        {}", record.id);
    say!("operation  {}", record.operation.as_deref().unwrap_or("?"));
    say!("project    {}", record.project.as_deref().unwrap_or("?"));
    say!("state      {}", state.as_str());
    if let Some(unknown) = record.command.as_ref().and_then(Command::unknown) {
        say!("command    {unknown}: this runway cannot run it (a later version's)");
    }
    if !record.unknown_kinds.is_empty() {
        let kinds: Vec<&str> = record.unknown_kinds.iter().map(String::as_str).collect();
        say!("unknown    events of kinds this runway does not know: {}", kinds.join(", "));
    }
    if let Some(target) = &record.target {
        say!("target     {}", format::target(target));
    }
    if let Some(by) = &record.queued_by {
        say!("queued by  {by}");
    }
    say!("queued at  {}", time(Some(record.created_at_ms())));
    if let Some(due) = record.due_at_ms(now) {
        say!("scheduled  for {} (in {})", time(Some(due)), format::wait(due.saturating_sub(now)));
    }
    if let Some(retry) = &record.retry {
        let on: Vec<&str> = retry.on.iter().map(|status| status.as_str()).collect();
        say!(
            "retry      {} attempts in all, on {}, {} apart",
            retry.attempts,
            on.join(", "),
            format::wait(retry.delay_ms)
        );
    }
    if !record.env_keys.is_empty() {
        say!("env        {} (values are never recorded)", record.env_keys.join(", "));
    }
    if !record.secrets.is_empty() {
        say!("secrets    {} (from the runner's store)", record.secrets.join(", "));
    }
    if let Some(group) = &record.group {
        say!("group      {group}");
    }
    if let Some((at, by)) = &record.cancel_requested {
        match &record.cancel_reason {
            Some(reason) => say!("cancel     requested by {by} at {}: {reason}", time(Some(*at))),
            None => say!("cancel     requested by {by} at {}", time(Some(*at))),
        }
        if !record.is_submitter(by) && record.completed().is_none() {
            say!("           not its submitter: a runner ends it only if its policy lets {by} cancel it");
        }
    }
    if let Some(held) = held.as_deref().and_then(|notice| notice.strip_prefix("waiting: ")) {
        say!("waiting    {held}");
    }
    if let Some(info) = &waiting {
        say!(
            "waiting    in queue `{}` ({} messages), consumed by {} runner(s)",
            info.name,
            info.messages,
            info.consumers
        );
        if let Some(why) = &why {
            say!("           {why}");
        }
    }
    if let Some(silence) = record.silence(now) {
        say!(
            "lost       runner {} went silent (last heard from {})",
            silence.runner,
            heard_at(silence.last_seen_ms, now)
        );
    }
    if record.ignored > 0 {
        say!("ignored    {} events not sent by the job's runner", record.ignored);
    }
    for attempt in record.attempts.values() {
        let user = attempt.sender.as_deref().unwrap_or(runway_broker::identity::UNVERIFIED);
        say!("attempt {}  runner {} on {} (as {user})", attempt.number, attempt.runner, attempt.hostname);
        say!("  started  {}", time(attempt.started_at_ms));
        match &attempt.completed {
            Some(completed) => {
                say!("  ended    {} at {}", completed.status, time(attempt.finished_at_ms));
                say!("  exit     {}", completed.exit_code.map_or("-".to_owned(), |code| code.to_string()));
                say!("  duration {}", format::duration(completed.duration_ms));
                if let Some(error) = &completed.error {
                    say!("  error    {error}");
                }
                if let Some(next) = completed.retrying {
                    say!("  retried  as attempt {}, due {}", next.attempt, time(Some(next.at_ms)));
                }
            }
            None => say!("  running  last seen {}", time(Some(attempt.last_seen_ms))),
        }
    }
    for (key, value) in &record.outputs {
        say!("output     {key}={value}");
    }
    stdout::write(&out)?;
    Ok(exit::SUCCESS)
}
