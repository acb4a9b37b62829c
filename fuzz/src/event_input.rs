//! Protocol events built from fuzz bytes with `arbitrary`, with timestamps and sizes biased
//! toward the edges (zero, now, the year 10000, the end of `u64`).
//!
//! The wire types derive no `Arbitrary` (only broker/ derives anything for them), so the
//! building is spelled out here; the decoders are fuzzed from raw bytes by their own targets.

use std::collections::BTreeMap;

use arbitrary::{Result, Unstructured};
use runway_broker::protocol::{
    Builtin, Command, Completed, Event, EventBody, LogLine, Queued, Retrying, Status, Stream, Target, VERSION,
};
use uuid::Uuid;

/// The first millisecond of the year 10000, past which no RFC 3339 printer can show a time.
pub const YEAR_10000_MS: u64 = 253_402_300_800_000;

/// A timestamp in ms as a peer might send one.
pub fn timestamp(u: &mut Unstructured<'_>) -> Result<u64> {
    Ok(match u.int_in_range(0..=6u8)? {
        0 => 0,
        1 => u.int_in_range(0..=100_000)?,
        2 => u.int_in_range(1_700_000_000_000..=1_900_000_000_000)?,
        3 => u.int_in_range(YEAR_10000_MS - 1_000..=YEAR_10000_MS + 1_000)?,
        4 => u64::MAX - u.int_in_range(0..=1_000)?,
        _ => u.arbitrary()?,
    })
}

/// A duration or interval in ms, zero and absurd ones included.
pub fn millis(u: &mut Unstructured<'_>) -> Result<u64> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 => 0,
        1 => u.int_in_range(0..=100_000)?,
        2 => u64::MAX - u.int_in_range(0..=1_000)?,
        _ => u.arbitrary()?,
    })
}

/// Any UUID, of any version: a v1 or v6 id carries a time that reads far in the future.
pub fn job_id(u: &mut Unstructured<'_>) -> Result<Uuid> {
    Ok(Uuid::from_u128(u.arbitrary()?))
}

/// Text up to 32 characters, or now and then a long run (a long output value or line).
fn text(u: &mut Unstructured<'_>) -> Result<String> {
    if u.ratio(1, 32)? {
        let len = u.int_in_range(0..=70_000usize)?;
        return Ok("x".repeat(len));
    }
    let text: String = u.arbitrary()?;
    Ok(text.chars().take(32).collect())
}

fn list<T>(
    u: &mut Unstructured<'_>,
    max: usize,
    mut item: impl FnMut(&mut Unstructured<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let len = u.int_in_range(0..=max)?;
    (0..len).map(|_| item(u)).collect()
}

fn map(u: &mut Unstructured<'_>, max: usize) -> Result<BTreeMap<String, String>> {
    Ok(list(u, max, |u| Ok((text(u)?, text(u)?)))?.into_iter().collect())
}

fn command(u: &mut Unstructured<'_>) -> Result<Command> {
    Ok(match u.int_in_range(0..=2u8)? {
        0 => Command::Shell(text(u)?),
        1 => Command::Argv(list(u, 4, text)?),
        _ => Command::Builtin(Builtin::Noop),
    })
}

fn target(u: &mut Unstructured<'_>) -> Result<Target> {
    Ok(match u.int_in_range(0..=2u8)? {
        0 => Target::Any,
        1 => Target::Runner(text(u)?),
        _ => Target::Labels(map(u, 4)?),
    })
}

fn status(u: &mut Unstructured<'_>) -> Result<Status> {
    u.choose(&[Status::Success, Status::Failed, Status::Cancelled, Status::TimedOut, Status::Lost, Status::Rejected])
        .copied()
}

fn completed(u: &mut Unstructured<'_>) -> Result<Completed> {
    Ok(Completed {
        status: status(u)?,
        exit_code: u.arbitrary()?,
        signal: u.arbitrary()?,
        duration_ms: millis(u)?,
        outputs: map(u, 3)?,
        error: if u.arbitrary()? { Some(text(u)?) } else { None },
        retrying: if u.arbitrary()? {
            Some(Retrying { attempt: u.arbitrary()?, at_ms: timestamp(u)?, delay_ms: millis(u)? })
        } else {
            None
        },
    })
}

fn queued(u: &mut Unstructured<'_>) -> Result<Queued> {
    Ok(Queued {
        operation: text(u)?,
        project: text(u)?,
        command: command(u)?,
        args: list(u, 3, text)?,
        env_keys: list(u, 3, text)?,
        target: target(u)?,
        timeout_ms: if u.arbitrary()? { Some(millis(u)?) } else { None },
        retry_on_lost: u.arbitrary()?,
        queued_by: text(u)?,
        created_at_ms: timestamp(u)?,
        group: if u.arbitrary()? { Some(text(u)?) } else { None },
        secrets: list(u, 3, text)?,
        not_before_ms: if u.arbitrary()? { Some(timestamp(u)?) } else { None },
        retry: None,
    })
}

fn log_line(u: &mut Unstructured<'_>) -> Result<LogLine> {
    Ok(LogLine {
        s: if u.arbitrary()? { Stream::Stdout } else { Stream::Stderr },
        t: timestamp(u)?,
        l: text(u)?,
        b64: u.arbitrary()?,
        p: u.arbitrary()?,
    })
}

/// Any event body, of every kind.
pub fn body(u: &mut Unstructured<'_>) -> Result<EventBody> {
    Ok(match u.int_in_range(0..=7u8)? {
        0 => EventBody::Queued(queued(u)?),
        1 => EventBody::CancelRequested { by: text(u)?, force: u.arbitrary()?, reason: None },
        2 => EventBody::Accepted { hostname: text(u)?, heartbeat_ms: millis(u)? },
        3 => EventBody::Started { pid: u.arbitrary()?, argv: list(u, 3, text)? },
        4 => EventBody::Log { lines: list(u, 8, log_line)? },
        5 => EventBody::Heartbeat { interval_ms: millis(u)? },
        6 => EventBody::Output { key: text(u)?, value: text(u)? },
        _ => EventBody::Completed(completed(u)?),
    })
}

/// One event of `job`, with any attempt, seq, timestamp and runner.
pub fn event(u: &mut Unstructured<'_>, job: Uuid) -> Result<Event> {
    let seq = match u.int_in_range(0..=2u8)? {
        0 => u.int_in_range(0..=8)?,
        1 => u64::MAX,
        _ => u.arbitrary()?,
    };
    let attempt = match u.int_in_range(0..=2u8)? {
        0 => u.int_in_range(0..=4)?,
        1 => u32::MAX,
        _ => u.arbitrary()?,
    };
    Ok(Event { v: VERSION, job, seq, ts: timestamp(u)?, runner: text(u)?, attempt, body: body(u)? })
}
