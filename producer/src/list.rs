//! `runway job list`: the jobs of a window of time, read from the index, newest first, as a
//! table or one JSON object per line.
//!
//! Which jobs show is a pure function of the records and "now" ([`select`]); only reading the
//! index talks to the broker.

use std::collections::HashMap;
use std::time::Duration;

use runway_broker::Connection;
use runway_broker::protocol::{self, now_ms};
use runway_broker::topology::Topology;
use runway_worker::history::{JobRecord, State};
use runway_worker::streams::SEEK_SLACK_MS;
use uuid::Uuid;

use crate::exit::{self, CliError};
use crate::format;
use crate::lookup;
use crate::stdout;
use crate::table::{Align, Column, render};
use crate::view::{self, JobView};

/// What `job list` shows.
#[derive(Debug, Clone)]
pub struct ListFilter {
    pub state: Option<State>,
    /// Only jobs queued within this long before now.
    pub since: Duration,
    pub limit: usize,
}

impl ListFilter {
    /// The earliest creation time a job shown may have.
    fn since_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(protocol::to_ms(self.since))
    }
}

const COLUMNS: [Column; 9] = [
    Column { header: "ID", width: 12, align: Align::Left, gap: 2 },
    Column { header: "OPERATION", width: 12, align: Align::Left, gap: 1 },
    Column { header: "PROJECT", width: 12, align: Align::Left, gap: 1 },
    Column { header: "STATE", width: 10, align: Align::Left, gap: 1 },
    Column { header: "RUNNER", width: 16, align: Align::Left, gap: 1 },
    Column { header: "TRY", width: 3, align: Align::Right, gap: 2 },
    Column { header: "QUEUED", width: 20, align: Align::Left, gap: 1 },
    Column { header: "FINISHED", width: 20, align: Align::Left, gap: 1 },
    Column { header: "DURATION", width: 9, align: Align::Right, gap: 0 },
];

/// The index messages `job list` reads back from the end of the index first (at least; four
/// per job asked for if more), and how much wider each next read is: the newest jobs are in the
/// last messages of the index, so what is read grows with what is asked (`--limit`, `--state`),
/// not with the history.
const FIRST_READ: u64 = 1024;
const WIDER: u64 = 8;
/// The most the density of the matches found may widen the next read by.
const DENSEST: u64 = 64;

/// `job list`.
pub async fn list(conn: &Connection, topology: &Topology, filter: &ListFilter, json: bool) -> Result<u8, CliError> {
    let now = now_ms();
    let records = newest(conn, topology, filter, now).await?;
    if json {
        for record in &records {
            stdout::line(&view::line(&JobView::new(record, now)))?;
        }
        return Ok(exit::SUCCESS);
    }
    let rows = records.iter().map(|record| row(record, now)).collect();
    stdout::line(&render(&COLUMNS, rows))?;
    Ok(exit::SUCCESS)
}

/// The jobs `filter` shows: the last [`FIRST_READ`] messages of the index read first, then more
/// ([`next_back`]) while fewer than `limit` jobs in them match, until the read holds the
/// filter's whole window (or the whole index).
///
/// Every event of a job is appended to the index after its `queued`, so a job whose `queued` is
/// in a read has all its events there, and a job newer than one shown (made later, so queued
/// later, less a clock's skew between producers) is in the same read: the first read holding
/// `limit` matches holds the newest `limit`. Jobs whose `queued` came before the read are left
/// out of it.
async fn newest(
    conn: &Connection,
    topology: &Topology,
    filter: &ListFilter,
    now: u64,
) -> Result<Vec<JobRecord>, CliError> {
    let end = lookup::index_end(conn, topology).await?;
    let since_ms = filter.since_ms(now);
    let mut back = FIRST_READ.max(u64::try_from(filter.limit).unwrap_or(u64::MAX).saturating_mul(4));
    loop {
        let start = end.saturating_sub(back);
        let read = lookup::read_index_at(conn, topology, start, |_| true).await?;
        let whole = read.records.into_iter().filter(|(_, record)| record.queued_at_ms.is_some()).collect();
        let shown = select(whole, filter, now);
        // The read holds the filter's window once it starts at the start of the index (the
        // broker starts a read before what it keeps at what it keeps) or at an event made
        // before the window began.
        let holds_window =
            start == 0 || read.first.is_some_and(|(_, made_ms)| made_ms.saturating_add(SEEK_SLACK_MS) < since_ms);
        if shown.len() >= filter.limit || holds_window {
            return Ok(shown);
        }
        back = next_back(back, shown.len(), filter.limit);
    }
}

/// How far back the next read goes after one of `back` messages found `found` of the `limit`
/// jobs asked for: as far as those matches' density says `limit` need, and a quarter more, but
/// at least twice and at most [`DENSEST`] times as far; [`WIDER`] times as far when none matched
/// (no match says little of the density).
fn next_back(back: u64, found: usize, limit: usize) -> u64 {
    let Ok(found @ 1..) = u64::try_from(found) else { return back.saturating_mul(WIDER) };
    let limit = u64::try_from(limit).unwrap_or(u64::MAX);
    let needed = back.saturating_mul(limit).saturating_mul(5) / found.saturating_mul(4);
    needed.clamp(back.saturating_mul(2), back.saturating_mul(DENSEST))
}

/// The jobs `filter` shows at `now_ms`: queued within the window, in the state asked for,
/// newest first, at most `limit`.
pub fn select(records: HashMap<Uuid, JobRecord>, filter: &ListFilter, now_ms: u64) -> Vec<JobRecord> {
    let since_ms = filter.since_ms(now_ms);
    let mut records: Vec<JobRecord> = records
        .into_values()
        .filter(|record| record.created_at_ms() >= since_ms)
        .filter(|record| filter.state.is_none_or(|state| record.state(now_ms) == state))
        .collect();
    // UUID v7 ids sort by creation time: newest first.
    records.sort_by_key(|record| std::cmp::Reverse(record.id));
    records.truncate(filter.limit);
    records
}

fn row(record: &JobRecord, now_ms: u64) -> Vec<String> {
    let attempt = record.last_attempt();
    vec![
        format::short_id(record.id),
        record.operation.as_deref().unwrap_or("?").to_owned(),
        record.project.as_deref().unwrap_or("?").to_owned(),
        record.state(now_ms).as_str().to_owned(),
        attempt.map_or("-", |attempt| attempt.runner.as_str()).to_owned(),
        attempts(record),
        format::time(Some(record.created_at_ms())),
        match record.due_at_ms(now_ms) {
            Some(due) => format!("due {}", format::time(Some(due))),
            None => format::time(record.finished_at_ms()),
        },
        record.completed().map_or_else(|| "-".to_owned(), |completed| format::duration(completed.duration_ms)),
    ]
}

/// The TRY column: the latest attempt, out of how many a job that retries may make ("2/3").
fn attempts(record: &JobRecord) -> String {
    let latest = record.last_attempt().map_or(0, |attempt| attempt.number);
    match &record.retry {
        Some(retry) => format!("{latest}/{}", retry.attempts),
        None => latest.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use runway_broker::protocol::{Command, Completed, Event, EventBody, Queued, Status, Target, VERSION};

    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    /// A job queued `ago_ms` before [`NOW`], ended with `status` if given.
    fn job(ago_ms: u64, status: Option<Status>) -> JobRecord {
        let created_at_ms = NOW - ago_ms;
        let nanos = u32::try_from(created_at_ms % 1000).expect("under a second") * 1_000_000;
        let id = Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, created_at_ms / 1000, nanos));
        let mut record = JobRecord::new(id);
        let queued = Queued {
            operation: format!("op-{ago_ms}"),
            project: "shop".to_owned(),
            command: Command::Shell("true".to_owned()),
            args: Vec::new(),
            env_keys: Vec::new(),
            secrets: Vec::new(),
            target: Target::Any,
            timeout_ms: None,
            retry_on_lost: false,
            queued_by: "me@here".to_owned(),
            group: None,
            not_before_ms: None,
            retry: None,
            created_at_ms,
        };
        let event = |seq, body| Event {
            v: VERSION,
            job: id,
            seq,
            ts: created_at_ms + seq,
            runner: if seq == 0 { String::new() } else { "w-1".to_owned() },
            attempt: 1,
            body,
        };
        record.apply(&event(0, EventBody::Queued(queued)), None);
        if let Some(status) = status {
            record.apply(&event(1, EventBody::Accepted { hostname: "h".to_owned(), heartbeat_ms: 1000 }), None);
            record.apply(&event(2, EventBody::Completed(Completed::without_exit(status, String::new()))), None);
        }
        record
    }

    #[test]
    fn the_next_read_goes_as_far_back_as_the_density_of_matches_says() {
        // 2 of 20 in 1,024 messages: 10,240 needed, and a quarter more.
        assert_eq!(next_back(1024, 2, 20), 12_800);
        assert_eq!(next_back(1024, 1, 1_000_000), 1024 * DENSEST);
        // No match: the widest step; a match in nearly every message: at least twice as far.
        assert_eq!(next_back(1024, 0, 20), 1024 * WIDER);
        assert_eq!(next_back(1024, 19, 20), 2048);
        assert!(next_back(u64::MAX / 2, 1, 20) >= u64::MAX / 2, "saturates, never wraps");
    }

    fn operations(records: &[JobRecord]) -> Vec<&str> {
        records.iter().map(|record| record.operation.as_deref().unwrap_or("?")).collect()
    }

    fn by_id(records: Vec<JobRecord>) -> HashMap<Uuid, JobRecord> {
        records.into_iter().map(|record| (record.id, record)).collect()
    }

    fn filter(since: Duration) -> ListFilter {
        ListFilter { state: None, since, limit: 50 }
    }

    #[test]
    fn since_keeps_only_jobs_queued_within_the_window() {
        let records = by_id(vec![
            job(500, Some(Status::Success)),
            job(1_500, Some(Status::Success)),
            job(3_000, Some(Status::Failed)),
        ]);
        let shown = select(records, &filter(Duration::from_secs(2)), NOW);
        assert_eq!(operations(&shown), ["op-500", "op-1500"]);
    }

    #[test]
    fn a_job_queued_exactly_at_the_window_start_is_in_it() {
        let shown = select(by_id(vec![job(2_000, None)]), &filter(Duration::from_secs(2)), NOW);
        assert_eq!(operations(&shown), ["op-2000"]);
        let shown = select(by_id(vec![job(2_001, None)]), &filter(Duration::from_secs(2)), NOW);
        assert!(shown.is_empty());
    }

    #[test]
    fn state_and_limit_apply_after_the_window_newest_first() {
        let records = by_id(vec![
            job(1_000, Some(Status::Failed)),
            job(2_000, Some(Status::Success)),
            job(3_000, Some(Status::Failed)),
            job(4_000, Some(Status::Failed)),
        ]);
        let failed = ListFilter { state: Some(State::Failed), since: Duration::from_secs(60), limit: 2 };
        assert_eq!(operations(&select(records, &failed, NOW)), ["op-1000", "op-3000"]);
    }

    #[test]
    fn the_table_keeps_its_columns() {
        let record = job(1_000, Some(Status::Success));
        let table = render(&COLUMNS, vec![row(&record, NOW)]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            format!(
                "{:<12}  {:<12} {:<12} {:<10} {:<16} {:>3}  {:<20} {:<20} {:>9}",
                "ID", "OPERATION", "PROJECT", "STATE", "RUNNER", "TRY", "QUEUED", "FINISHED", "DURATION"
            )
        );
        assert_eq!(
            lines[1],
            format!(
                "{:<12}  {:<12} {:<12} {:<10} {:<16} {:>3}  {:<20} {:<20} {:>9}",
                format::short_id(record.id),
                "op-1000",
                "shop",
                "success",
                "w-1",
                1,
                format::time(Some(NOW - 1_000)),
                format::time(Some(NOW - 998)),
                "0.00s"
            )
        );
    }

    proptest::proptest! {
        /// No sequence of events, whatever their numbers, kinds and senders, panics the fold, a
        /// `job list` row or the `--json` view that `job list` and `job inspect` print.
        #[test]
        fn any_events_make_a_row_and_a_view_never_a_panic(
            events in proptest::collection::vec(
                (0u64..4, proptest::num::u64::ANY, proptest::num::u64::ANY, 0u32..4, 0usize..6, 0u8..3),
                0..24,
            ),
            now in proptest::num::u64::ANY,
        ) {
            let mut record = job(0, None);
            let id = record.id;
            for (seq, ts, number, attempt, kind, who) in events {
                let body = match kind {
                    0 => EventBody::Accepted { hostname: "h".to_owned(), heartbeat_ms: number },
                    1 => EventBody::Started { pid: 1, argv: Vec::new() },
                    2 => EventBody::Heartbeat { interval_ms: number },
                    3 => EventBody::Output { key: "k".to_owned(), value: "v".to_owned() },
                    4 => EventBody::CancelRequested { by: "me@here".to_owned(), force: false, reason: None },
                    _ => EventBody::Completed(Completed::without_exit(
                        [Status::Success, Status::Failed, Status::Lost, Status::Rejected][usize::from(who) % 4],
                        String::new(),
                    )),
                };
                let runner = if who == 0 { String::new() } else { format!("r{who}") };
                let sender = ["runner", "other", "me@here"][usize::from(who)];
                record.apply(&Event { v: VERSION, job: id, seq, ts, runner, attempt, body }, Some(sender));
            }
            let row = row(&record, now);
            proptest::prop_assert_eq!(row.len(), COLUMNS.len());
            let _ = render(&COLUMNS, vec![row]);
            let _ = view::line(&JobView::new(&record, now));
        }
    }
}
