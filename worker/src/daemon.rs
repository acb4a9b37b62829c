//! The `runway-worker` daemon as a library: on a connected broker, declare the topology, serve
//! as one runner until told to stop, then drain.
//!
//! It does not parse flags, dial the broker or install signal handlers itself: the binary does,
//! and passes the connection and a channel of stop requests in, so tests can drive it directly
//! (over the in-memory broker, too).

use std::time::Duration;

use runway_broker::Connection;
use runway_broker::topology::{Retention, Topology};
use tokio::sync::mpsc;

use crate::runner::{RunnerConfig, RunnerError, Shutdown, start};

/// Everything the daemon needs besides its connection.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// The namespace the runner serves.
    pub topology: Topology,
    pub runner: RunnerConfig,
    /// How long running jobs may take to finish after the first stop request.
    pub drain_timeout: Duration,
}

/// Why the daemon could not serve.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    #[error(transparent)]
    Broker(#[from] runway_broker::Error),
    #[error(transparent)]
    Runner(#[from] RunnerError),
    #[error(transparent)]
    Name(#[from] runway_broker::topology::NameError),
}

impl DaemonError {
    /// Whether the broker could not be reached (as opposed to a bad configuration).
    pub fn is_unreachable(&self) -> bool {
        match self {
            DaemonError::Broker(err) => err.is_unreachable(),
            DaemonError::Runner(RunnerError::Setup { source, .. }) => source.is_unreachable(),
            DaemonError::Runner(RunnerError::Name(_) | RunnerError::Task { .. }) | DaemonError::Name(_) => false,
        }
    }
}

/// Declare the topology in full, so that a deleted piece comes back; an account with only the
/// runner role may not, and then the topology must be there already (an admin declared it).
async fn declare_topology(conn: &Connection, topology: &Topology) -> Result<(), runway_broker::Error> {
    match topology.declare(conn, &Retention::default()).await {
        Err(runway_broker::Error::AccessRefused { .. }) => {
            tracing::info!("this account may not declare the topology; checking that an admin did");
            topology.ensure(conn, &Retention::default()).await
        }
        result => result,
    }
}

/// Serve on `conn` until the first message on `stops` (drain), and stop running jobs at the
/// second; closes `conn` when the runner has stopped.
pub async fn run(conn: Connection, config: DaemonConfig, mut stops: mpsc::Receiver<()>) -> Result<(), DaemonError> {
    let topology = &config.topology;
    declare_topology(&conn, topology).await?;
    let mut runner = start(&conn, topology, config.runner.clone()).await?;
    tracing::info!(
        runner = %runner.id(),
        broker = %conn.display_name(),
        concurrency = config.runner.concurrency,
        labels = ?config.runner.labels,
        "serving"
    );
    // Serve until the first stop request (or until nobody can send one). A lost broker
    // connection does not end it: the runner connects again and goes on.
    tokio::select! {
        result = runner.wait() => {
            conn.close().await;
            return result.map_err(DaemonError::Runner);
        }
        _ = stops.recv() => {}
    }
    config.runner.metrics.draining();
    tracing::info!(timeout = ?config.drain_timeout, "draining: no new jobs, running ones may finish");
    runner.shutdown(Shutdown::Drain { timeout: config.drain_timeout });
    let mut stops_open = true;
    loop {
        tokio::select! {
            result = runner.wait() => {
                conn.close().await;
                return result.map_err(DaemonError::Runner);
            }
            stop = stops.recv(), if stops_open => match stop {
                Some(()) => {
                    tracing::warn!("stopping again: cancelling running jobs now");
                    runner.shutdown(Shutdown::Cancel);
                }
                None => stops_open = false,
            },
        }
    }
}
