//! The claims a runner holds on the attempts it ran (`runway_broker::claims`), kept for a while
//! after each ends, so that a copy of the job message published soon after still finds the
//! attempt claimed on another runner; the oldest is let go when more than [`KEEP`] are held.
//!
//! Each claim is an empty exclusive queue on the broker (a few KiB there), hence the bound; on a
//! runner's own deliveries the `taken` set remembers far more.

use std::collections::VecDeque;
use std::sync::Mutex;

use runway_broker::Connection;
use uuid::Uuid;

/// How a runner keeps a job id from running twice (`runway-worker --at-most-once`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AtMostOnce {
    /// Claim each attempt on the broker before running it (`runway_broker::claims`): a copy of
    /// the job message that reaches another runner meanwhile is dropped there.
    #[default]
    Cluster,
    /// Drop only the copies that reach this runner (its `taken` memory), at no broker cost.
    Runner,
}

/// Claims held after their attempt ended.
pub(crate) const KEEP: usize = 256;

/// Ended attempts whose claims are still held, oldest first, with the connection holding each.
#[derive(Debug, Default)]
pub(crate) struct Claimed {
    held: Mutex<VecDeque<(Connection, Uuid, u32)>>,
}

impl Claimed {
    /// Keep the claim of an ended attempt; the claim to let go of, if more than [`KEEP`] are held.
    pub(crate) fn keep(&self, conn: Connection, job: Uuid, attempt: u32) -> Option<(Connection, Uuid, u32)> {
        let mut held = self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        held.push_back((conn, job, attempt));
        (held.len() > KEEP).then(|| held.pop_front()).flatten()
    }
}
