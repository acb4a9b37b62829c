//! Reading jobs back from the streams: records folded from the index over a window of time, one
//! job found by its id or a unique prefix or suffix of it (the short id is the suffix), and one
//! job's events from the history.
//!
//! It prints nothing; the commands decide what to show. The seek slack is the one the runners
//! use too (`runway_worker::streams::SEEK_SLACK_MS`).

use std::collections::HashMap;

use runway_broker::protocol::{DecodeError, Event};
use runway_broker::topology::Topology;
use runway_broker::{Connection, StreamOffset};
use runway_worker::history::{JobRecord, uuid_ms};
use runway_worker::streams::{LARGE_PREFETCH, Read, SEEK_SLACK_MS, SMALL_PREFETCH, StreamReader};
use uuid::Uuid;

use crate::exit::CliError;

/// Read the index from `from_ms` up to now, folding the events of every job `wanted` keeps.
pub async fn read_index(
    conn: &Connection,
    topology: &Topology,
    from_ms: u64,
    wanted: impl FnMut(&Uuid) -> bool,
) -> Result<HashMap<Uuid, JobRecord>, CliError> {
    read_index_until(conn, topology, from_ms, wanted, |_| false).await
}

/// [`read_index`], ending early once `enough` says the records read so far are all it takes.
pub async fn read_index_until(
    conn: &Connection,
    topology: &Topology,
    from_ms: u64,
    wanted: impl FnMut(&Uuid) -> bool,
    enough: impl Fn(&HashMap<Uuid, JobRecord>) -> bool,
) -> Result<HashMap<Uuid, JobRecord>, CliError> {
    Ok(fold_index(conn, topology, StreamOffset::Timestamp(from_ms), wanted, enough).await?.records)
}

/// What a read of the index from an offset found.
#[derive(Debug, Default)]
pub struct IndexRead {
    /// The records of the jobs wanted, folded from the events read (a job whose `queued` came
    /// before the read has only its later events).
    pub records: HashMap<Uuid, JobRecord>,
    /// The offset of the first event read and the time it says it was made, if any was read.
    pub first: Option<(u64, u64)>,
}

/// Read the index from `offset` up to now, folding the events of every job `wanted` keeps.
pub async fn read_index_at(
    conn: &Connection,
    topology: &Topology,
    offset: u64,
    wanted: impl FnMut(&Uuid) -> bool,
) -> Result<IndexRead, CliError> {
    fold_index(conn, topology, StreamOffset::Offset(offset), wanted, |_| false).await
}

/// The offset the next message appended to the index will have: where the index ends now.
pub async fn index_end(conn: &Connection, topology: &Topology) -> Result<u64, CliError> {
    let mut reader =
        StreamReader::open(conn, topology, &topology.index_queue(), StreamOffset::Next, SMALL_PREFETCH).await?;
    loop {
        match reader.next().await? {
            Some(Read::Message(_)) => {}
            // The marker went by: its own offset is the end, as far as a reader is concerned.
            Some(Read::CaughtUp) => return Ok(reader.end_offset.unwrap_or(0)),
            None => return Err(stream_ended()),
        }
    }
}

async fn fold_index(
    conn: &Connection,
    topology: &Topology,
    offset: StreamOffset,
    mut wanted: impl FnMut(&Uuid) -> bool,
    enough: impl Fn(&HashMap<Uuid, JobRecord>) -> bool,
) -> Result<IndexRead, CliError> {
    let mut reader = StreamReader::open(conn, topology, &topology.index_queue(), offset, SMALL_PREFETCH).await?;
    let mut read = IndexRead::default();
    loop {
        match reader.next().await? {
            Some(Read::Message(delivery)) => {
                let Ok(event) = runway_broker::identity::decode_event(&delivery) else { continue };
                if read.first.is_none() {
                    read.first = delivery.stream_offset.map(|offset| (offset, event.ts));
                }
                if wanted(&event.job) {
                    let sender = runway_broker::identity::sender(&delivery);
                    read.records.entry(event.job).or_insert_with(|| JobRecord::new(event.job)).apply(&event, sender);
                    if enough(&read.records) {
                        return Ok(read);
                    }
                }
            }
            Some(Read::CaughtUp) => return Ok(read),
            None => return Err(stream_ended()),
        }
    }
}

/// The error for a stream read that ended before it caught up.
pub fn stream_ended() -> CliError {
    CliError::Broker(runway_broker::Error::ConnectionClosed("the stream ended while reading it".to_owned()))
}

/// Find a job by its full id, or a unique prefix or suffix of at least 6 hex characters (the
/// short id `job list` shows is the suffix).
pub async fn resolve(conn: &Connection, topology: &Topology, text: &str) -> Result<JobRecord, CliError> {
    if let Ok(id) = Uuid::parse_str(text) {
        let from = uuid_ms(id).saturating_sub(SEEK_SLACK_MS);
        // An old job's read ends at its end, not at today: what comes after cannot change it.
        let ended = |records: &HashMap<Uuid, JobRecord>| {
            records.get(&id).and_then(JobRecord::completed).is_some_and(|completed| completed.retrying.is_none())
        };
        let mut records = read_index_until(conn, topology, from, |job| *job == id, ended).await?;
        return records.remove(&id).ok_or_else(|| CliError::NoSuchJob(format!("no job {id} in the history")));
    }
    let hex = id_part(text)?;
    let mut records = find_part(conn, topology, &hex).await?;
    match records.len() {
        0 => Err(CliError::NoSuchJob(format!("no job id starts or ends with `{text}`"))),
        1 => Ok(records.drain().map(|(_, record)| record).next().expect("one record, just counted")),
        n => {
            let mut ids: Vec<String> = records.keys().map(Uuid::to_string).collect();
            ids.sort();
            Err(CliError::Usage(format!("`{text}` matches {n} jobs: {}; give more of the id", ids.join(", "))))
        }
    }
}

/// How far back a short id is looked for first, widening: most ids asked for are recent.
const SHORT_ID_WINDOWS_MS: [u64; 4] = [60 * 60 * 1000, 24 * 60 * 60 * 1000, 7 * 24 * 60 * 60 * 1000, 0];

/// The jobs whose id starts or ends with `hex`. A suffix says nothing of when the job was made.
/// A part as long as the short id (12 random hex digits, 48 bits) names one job: it is looked
/// for in the last hour of the index, then the last day, week, and the whole. A shorter part may
/// match several jobs of any age, so the whole index is read to tell.
async fn find_part(conn: &Connection, topology: &Topology, hex: &str) -> Result<HashMap<Uuid, JobRecord>, CliError> {
    if hex.len() < crate::format::SHORT_ID_LEN {
        return read_index(conn, topology, 0, |job| matches_part(job, hex)).await;
    }
    let now = runway_broker::protocol::now_ms();
    let mut records = HashMap::new();
    for back in SHORT_ID_WINDOWS_MS {
        let from = if back == 0 { 0 } else { now.saturating_sub(back) };
        records = read_index(conn, topology, from, |job| matches_part(job, hex)).await?;
        // A job made before the window shows only its later events: not found here.
        records.retain(|id, _| from == 0 || uuid_ms(*id) >= from.saturating_add(SEEK_SLACK_MS));
        if !records.is_empty() {
            break;
        }
    }
    Ok(records)
}

/// The fewest hex digits a part of an id may have.
const SHORTEST_PART: usize = 6;

/// The lowercase hex digits of a part of an id (dashes dropped), at least 6 of them.
fn id_part(text: &str) -> Result<String, CliError> {
    let hex: String = text.chars().filter(|c| *c != '-').collect::<String>().to_ascii_lowercase();
    if hex.len() < SHORTEST_PART || hex.len() > 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(CliError::Usage(format!(
            "`{text}` is not a job id: give the full id, its short id (as `job list` shows it), or a unique \
             prefix or suffix of at least {SHORTEST_PART} hex characters"
        )));
    }
    Ok(hex)
}

/// Whether the id's hex digits start or end with `hex`.
fn matches_part(id: &Uuid, hex: &str) -> bool {
    let digits = id.simple().to_string();
    digits.starts_with(hex) || digits.ends_with(hex)
}

/// One job's events from the history stream, from its creation up to now and then live.
#[derive(Debug)]
pub struct JobEvents {
    reader: StreamReader,
    /// The job's id as the correlation id of its events.
    job: String,
}

/// One step of reading a job's events.
#[derive(Debug)]
pub enum JobRead {
    /// An event of the job, decoded, its body as stored, and its broker-verified sender.
    Event(Box<Event>, Vec<u8>, Option<String>),
    /// A message of the job that is not a readable event.
    Undecodable(DecodeError),
    /// Everything stored before the read began has been delivered.
    CaughtUp,
}

impl JobEvents {
    /// Start reading the events of job `id`, created at `created_at_ms`.
    pub async fn open(
        conn: &Connection,
        topology: &Topology,
        id: Uuid,
        created_at_ms: u64,
    ) -> Result<JobEvents, CliError> {
        let from = created_at_ms.saturating_sub(SEEK_SLACK_MS);
        let reader = StreamReader::open(
            conn,
            topology,
            &topology.history_queue(),
            StreamOffset::Timestamp(from),
            LARGE_PREFETCH,
        )
        .await?;
        Ok(JobEvents { reader, job: id.to_string() })
    }

    /// Whether everything stored before the read began has been delivered.
    pub fn caught_up(&self) -> bool {
        self.reader.caught_up
    }

    /// The next step, skipping other jobs' events; `None` once the stream ended. Cancel-safe as
    /// the stream read is: nothing is awaited after a message of this job arrived.
    pub async fn next(&mut self) -> Result<Option<JobRead>, CliError> {
        loop {
            match self.reader.next().await? {
                Some(Read::Message(delivery)) => {
                    if delivery.properties.correlation_id.as_deref() != Some(self.job.as_str()) {
                        continue;
                    }
                    return Ok(Some(match runway_broker::identity::decode_event(&delivery) {
                        Ok(event) => {
                            let sender = runway_broker::identity::sender(&delivery).map(str::to_owned);
                            JobRead::Event(Box::new(event), delivery.body, sender)
                        }
                        Err(err) => JobRead::Undecodable(err),
                    }));
                }
                Some(Read::CaughtUp) => return Ok(Some(JobRead::CaughtUp)),
                None => return Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_part_needs_six_hex_digits_and_may_keep_its_dashes() {
        assert_eq!(id_part("0198A2B3-AA").expect("a part"), "0198a2b3aa");
        assert_eq!(id_part("a2b3c4").expect("six digits"), "a2b3c4");
        assert!(id_part("a2b3c").is_err());
        assert!(id_part("0198a2bz").is_err());
    }

    #[test]
    fn the_short_id_a_prefix_and_a_dashed_suffix_match() {
        let id = Uuid::now_v7();
        let short = crate::format::short_id(id);
        assert!(matches_part(&id, &id_part(&short).expect("a short id")));
        let text = id.to_string();
        assert!(matches_part(&id, &id_part(&text[..9]).expect("a prefix")));
        assert!(matches_part(&id, &id_part(&text[text.len() - 17..]).expect("a dashed suffix")));
        assert!(!matches_part(&id, "ffffffffffff") || text.ends_with("ffffffffffff"));
    }
}
