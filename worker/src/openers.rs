//! Who opened each attempt first: the rule by which a job id runs at most once, cluster-wide.
//!
//! Every reader of the history believes an attempt's events only from the runner whose
//! `accepted` opened it (the first in the stream; `JobRecord::apply`), and every reader sees the
//! stream in the same order. So a runner runs an attempt only once the index shows that its own
//! `accepted` opened it: of two runners that took copies of the same job message at the same
//! moment, exactly one finds its `accepted` first, the one the history believes, and the other
//! drops its copy without running it. No broker object per job: one live read of the index per
//! runner ([`Openers`]), at a few microseconds of broker CPU per event, where the exclusive queue
//! per attempt this replaces cost about 2.6 ms (see docs/ARCHITECTURE.md).
//!
//! It does not decide what a redelivery is (`redelivery` does, from the history); it only says
//! whose `accepted` came first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use runway_broker::protocol::{EventBody, Job, Status};
use runway_broker::topology::Topology;
use runway_broker::{Connection, Delivery, StreamOffset};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::history::uuid_ms;
use crate::link::Link;
use crate::streams::{Read, SEEK_SLACK_MS, SMALL_PREFETCH, StreamReader};

/// How a runner keeps a job id from running twice (`runway-worker --at-most-once`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AtMostOnce {
    /// Run an attempt only once the index shows this runner's `accepted` opened it (a live read
    /// of the index stream): a copy of the job message that reached another runner meanwhile is
    /// dropped there.
    #[default]
    Cluster,
    /// Drop only the copies that reach this runner (its `taken` memory), reading nothing.
    Runner,
}

/// Attempts remembered; the oldest is forgotten first (about 100 bytes each).
const KEEP: usize = 100_000;

/// How long a runner waits for the live read to show its own `accepted` before reading the
/// job's part of the index itself (the live read may be reconnecting).
const PATIENCE: Duration = Duration::from_secs(15);

/// Pause before reading the index again after a read failed on a connection still up.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// The runner (and its verified broker user) whose event opened an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Opener {
    pub(crate) runner: String,
    pub(crate) sender: Option<String>,
}

impl Opener {
    /// Whether this opener is `runner` publishing as `login`. An opener without a verified
    /// sender (a broker that does not say) is judged by its runner id alone.
    pub(crate) fn is(&self, runner: &str, login: &str) -> bool {
        self.runner == runner && self.sender.as_deref().is_none_or(|sender| sender == login)
    }
}

/// The openers read live from the index since the runner started, the latest [`KEEP`].
#[derive(Debug)]
pub(crate) struct Openers {
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Debug)]
struct State {
    first: HashMap<(Uuid, u32), Opener>,
    /// The attempts in `first`, oldest first, with the stream time of their opener.
    order: VecDeque<((Uuid, u32), u64)>,
    /// Every opener stored at or after this time (ms) is in `first`, or was forgotten before a
    /// later one: a job created after this (less the slack) is known in full.
    since_ms: u64,
    /// Where the live read goes on from after a reconnect.
    resume: Option<u64>,
}

impl Openers {
    /// Start reading the index live on `link`'s connections, from now.
    pub(crate) fn start(link: Link, topology: Topology) -> Arc<Openers> {
        let since_ms = runway_broker::protocol::now_ms().saturating_sub(SEEK_SLACK_MS);
        let openers = Arc::new(Openers {
            state: Mutex::new(State { first: HashMap::new(), order: VecDeque::new(), since_ms, resume: None }),
            changed: Notify::new(),
        });
        tokio::spawn(watch(Arc::downgrade(&openers), link, topology));
        openers
    }

    /// Who opened attempt `attempt` of `job` first, once an opener of it is in the index (call
    /// it after this runner's `accepted` was confirmed). Read from the live read when it covers
    /// the job, else (a job older than the live read, or a live read that fell behind) from the
    /// job's part of the index. `None`: no opener was found at all.
    pub(crate) async fn first(
        &self,
        conn: &Connection,
        topology: &Topology,
        job: &Job,
        attempt: u32,
    ) -> runway_broker::Result<Option<Opener>> {
        let created = uuid_ms(job.id).min(job.created_at_ms);
        if created >= self.lock().since_ms.saturating_add(SEEK_SLACK_MS) {
            let wait = async {
                loop {
                    let changed = self.changed.notified();
                    tokio::pin!(changed);
                    changed.as_mut().enable();
                    if let Some(opener) = self.lock().first.get(&(job.id, attempt)) {
                        return opener.clone();
                    }
                    changed.await;
                }
            };
            match tokio::time::timeout(PATIENCE, wait).await {
                Ok(opener) => return Ok(Some(opener)),
                Err(_) => {
                    tracing::info!(job = %job.id, attempt, "the live read of the index is behind; reading the job's part of it")
                }
            }
        }
        first_in_history(conn, topology, job, attempt, created).await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Note the opener a delivery of the index carries, if it opens an attempt not seen yet.
    fn note(&self, delivery: &Delivery) {
        let mut state = self.lock();
        if let Some(offset) = delivery.stream_offset {
            state.resume = Some(offset.saturating_add(1));
        }
        let Some((key, opener)) = opener_of(delivery) else { return };
        if state.first.contains_key(&key) {
            return;
        }
        state.first.insert(key, opener);
        let at = delivery.stream_timestamp_ms.unwrap_or_else(runway_broker::protocol::now_ms);
        state.order.push_back((key, at));
        while state.order.len() > KEEP {
            let Some((old, at)) = state.order.pop_front() else { break };
            state.first.remove(&old);
            state.since_ms = state.since_ms.max(at);
        }
        drop(state);
        self.changed.notify_waiters();
    }
}

/// The attempt an index delivery opens and who opened it: an `accepted`, or the `rejected` end
/// of a first attempt nobody accepted (as `JobRecord` reads them). `None` for anything else.
fn opener_of(delivery: &Delivery) -> Option<((Uuid, u32), Opener)> {
    let kind = delivery.properties.kind.as_deref()?;
    if kind != "accepted" && kind != "completed" {
        return None;
    }
    let event = runway_broker::identity::decode_event(delivery).ok()?;
    let opens = match &event.body {
        EventBody::Accepted { .. } => true,
        EventBody::Completed(completed) => completed.status == Status::Rejected && event.attempt == 1,
        _ => false,
    };
    let sender = runway_broker::identity::sender(delivery).map(str::to_owned);
    opens.then_some(((event.job, event.attempt), Opener { runner: event.runner, sender }))
}

/// Read the index live on each of `link`'s connections in turn, going on where the last read
/// stopped, until the runner ends (its `Openers` dropped) or the link closes.
async fn watch(openers: Weak<Openers>, link: Link, topology: Topology) {
    let Some(mut current) = link.current() else { return };
    loop {
        let (conn, generation) = current.clone();
        let offset = {
            let Some(openers) = openers.upgrade() else { return };
            let state = openers.lock();
            state.resume.map_or(StreamOffset::Timestamp(state.since_ms), StreamOffset::Offset)
        };
        let ended = read_live(&openers, &conn, &topology, offset).await;
        if openers.strong_count() == 0 {
            return;
        }
        current = match link.current() {
            Some(newer) if newer.1 > generation => newer,
            // A refusal on a connection still up (a replica restarting): read again on it.
            Some(same) if matches!(&ended, Err(err) if !err.is_unreachable()) => {
                if let Err(err) = &ended {
                    tracing::warn!(error = %err, "reading the index live failed; reading it again");
                }
                tokio::time::sleep(RETRY_PAUSE).await;
                same
            }
            _ => match link.newer_than(generation).await {
                Some(newer) => newer,
                None => return,
            },
        };
    }
}

/// Read the index from `offset` on `conn` until the connection goes, the read fails, or the
/// runner ends.
async fn read_live(
    openers: &Weak<Openers>,
    conn: &Connection,
    topology: &Topology,
    offset: StreamOffset,
) -> runway_broker::Result<()> {
    let mut reader = StreamReader::open(conn, topology, &topology.index_queue(), offset, SMALL_PREFETCH).await?;
    loop {
        match reader.next().await? {
            None => return Ok(()),
            Some(Read::CaughtUp) => {}
            Some(Read::Message(delivery)) => match openers.upgrade() {
                Some(openers) => openers.note(&delivery),
                None => return Ok(()),
            },
        }
    }
}

/// The first opener of attempt `attempt` of `job` in the index, read from shortly before the
/// job was created (`created`, ms) up to now.
async fn first_in_history(
    conn: &Connection,
    topology: &Topology,
    job: &Job,
    attempt: u32,
    created: u64,
) -> runway_broker::Result<Option<Opener>> {
    let from = StreamOffset::Timestamp(created.saturating_sub(SEEK_SLACK_MS));
    let mut reader = StreamReader::open(conn, topology, &topology.index_queue(), from, SMALL_PREFETCH).await?;
    let job_text = job.id.to_string();
    loop {
        match reader.next().await? {
            None => {
                return Err(runway_broker::Error::ConnectionClosed("the index ended while reading it".to_owned()));
            }
            Some(Read::CaughtUp) => return Ok(None),
            Some(Read::Message(delivery)) => {
                if delivery.properties.correlation_id.as_deref() != Some(job_text.as_str()) {
                    continue;
                }
                if let Some(((id, number), opener)) = opener_of(&delivery)
                    && id == job.id
                    && number == attempt
                {
                    return Ok(Some(opener));
                }
            }
        }
    }
}
