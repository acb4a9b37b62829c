//! A runner's claim on one attempt of a job: an exclusive queue named for it, which the broker
//! lets one connection hold at a time, cluster-wide. The claim that makes a copy of a job message
//! (a producer that published again when a confirm was lost, a replay) harmless when it reaches
//! another runner at the same moment.
//!
//! It holds no messages; it is never consumed. It dies with its connection (a runner that dies
//! lets go of its claims, and the redelivery rule takes over), or when the runner lets it go.

use uuid::Uuid;

use crate::message::{QueueKind, QueueOptions};
use crate::topology::Topology;
use crate::{Connection, Error, Result};

/// How a claim went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This connection holds it now (or held it already).
    Held,
    /// Another connection holds it: another runner has this attempt.
    Taken,
}

/// The claim queue's name: `NS.claim.<job>.<attempt>`.
pub fn claim_queue(topology: &Topology, job: Uuid, attempt: u32) -> String {
    format!("{}.claim.{job}.{attempt}", topology.namespace())
}

/// Claim attempt `attempt` of `job` on `conn`: one queue declaration.
pub async fn claim(conn: &Connection, topology: &Topology, job: Uuid, attempt: u32) -> Result<Claim> {
    let options = QueueOptions { kind: QueueKind::Classic, exclusive: true, ..QueueOptions::default() };
    match conn.declare_queue(&claim_queue(topology, job, attempt), &options).await {
        Ok(_) => Ok(Claim::Held),
        Err(Error::ResourceLocked { .. }) => Ok(Claim::Taken),
        Err(err) => Err(err),
    }
}

/// Let go of a claim this connection holds (a claim it does not hold is left alone).
pub async fn release(conn: &Connection, topology: &Topology, job: Uuid, attempt: u32) -> Result<()> {
    match conn.delete_own_queue(&claim_queue(topology, job, attempt)).await {
        Ok(()) | Err(Error::NotFound { .. } | Error::ResourceLocked { .. }) => Ok(()),
        Err(err) => Err(err),
    }
}
