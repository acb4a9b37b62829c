//! The runner's broker connection, dialled again when it drops (a broker restart, a network cut).
//!
//! The AMQP client's own recovery is off (see `runway_broker::amqp`), so the runner reconnects itself: the
//! first user that sees the connection gone reports it, [`Link::keep_up`] dials a new one with a
//! growing pause (the next node of a cluster first), and everyone waiting for a newer connection
//! gets it. Each connection has a
//! generation number, so a report about an old connection cannot tear down a new one.
//!
//! A new connection is announced only once the broker's streams are back: right after a restart
//! RabbitMQ confirms events routed to a stream that is not up yet, and stores them nowhere.
//!
//! It does not re-create consumers or queues: the serving loop does that when the generation
//! changes; event sinks republish what was not confirmed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use runway_broker::Connection;
use runway_broker::topology::Topology;
use tokio::sync::watch;

use crate::backoff::jittered_pauses;
use crate::metrics::Metrics;

/// The first pause before dialling again, doubled on each failure up to 5 s
/// ([`crate::backoff::MAX_PAUSE`]), each with a random part of up to as much again. Each try
/// dials every node of the server list once, the one lost last.
const FIRST_PAUSE: Duration = Duration::from_millis(200);
/// A connection that lived less than this before it was reported lost ...
const SHORT_LIVED: Duration = Duration::from_secs(2);
/// ... is dialled again only after this pause.
const SHORT_LIVED_PAUSE: Duration = Duration::from_millis(500);

/// Where the connection is at.
#[derive(Debug, Clone)]
pub(crate) enum LinkState {
    Up(Connection, u64),
    /// Reported gone; being dialled again. Keeps the dead connection to redial its broker.
    Down(Connection, u64),
    /// The runner stopped: nothing will come back.
    Closed,
}

/// A shared, replaceable connection. Clones share it.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    state: Arc<watch::Sender<LinkState>>,
    /// To tell whether a new connection is ready for events.
    topology: Topology,
    /// Told of each loss and reconnect.
    metrics: Metrics,
}

impl Link {
    pub(crate) fn new(conn: Connection, topology: Topology, metrics: Metrics) -> Link {
        metrics.broker_node(&conn.display_name());
        Link { state: Arc::new(watch::Sender::new(LinkState::Up(conn, 1))), topology, metrics }
    }

    /// The connection, if it is up, and its generation.
    pub(crate) fn current(&self) -> Option<(Connection, u64)> {
        match &*self.state.borrow() {
            LinkState::Up(conn, generation) => Some((conn.clone(), *generation)),
            LinkState::Down(..) | LinkState::Closed => None,
        }
    }

    /// The runner's metrics, which the link's users count into too.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<LinkState> {
        self.state.subscribe()
    }

    /// Say that connection `generation` is gone; a no-op if a newer one is up already.
    pub(crate) fn report_lost(&self, generation: u64) {
        self.state.send_if_modified(|state| match state {
            LinkState::Up(conn, current) if *current == generation => {
                tracing::warn!(broker = %conn.display_name(), "lost the broker connection; connecting again");
                *state = LinkState::Down(conn.clone(), generation);
                self.metrics.connection_lost();
                true
            }
            _ => false,
        });
    }

    /// Wait for a connection newer than `generation`; `None` once the link is closed.
    pub(crate) async fn newer_than(&self, generation: u64) -> Option<(Connection, u64)> {
        let mut rx = self.state.subscribe();
        loop {
            match &*rx.borrow_and_update() {
                LinkState::Up(conn, current) if *current > generation => return Some((conn.clone(), *current)),
                LinkState::Closed => return None,
                LinkState::Up(..) | LinkState::Down(..) => {}
            }
            if rx.changed().await.is_err() {
                return None;
            }
        }
    }

    /// Give up on the connection for good: waiters get `None`, and nothing is dialled again.
    pub(crate) fn close(&self) {
        self.state.send_replace(LinkState::Closed);
    }

    async fn until_closed(&self) {
        let mut rx = self.state.subscribe();
        if rx.wait_for(|state| matches!(state, LinkState::Closed)).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Dial again whenever the connection is reported lost, until the link is closed.
    pub(crate) async fn keep_up(self) {
        let mut rx = self.state.subscribe();
        let mut last_up: Option<Instant> = None;
        loop {
            let (dead, generation) = loop {
                match &*rx.borrow_and_update() {
                    LinkState::Down(conn, generation) => break (conn.clone(), *generation),
                    LinkState::Closed => return,
                    LinkState::Up(..) => {}
                }
                if rx.changed().await.is_err() {
                    return;
                }
            };
            dead.close().await;
            // A connection that dropped soon after it was made (its owner could not set up on
            // it) is not dialled again at once.
            if last_up.is_some_and(|at: Instant| at.elapsed() < SHORT_LIVED) {
                tokio::select! {
                    () = tokio::time::sleep(SHORT_LIVED_PAUSE) => {}
                    () = self.until_closed() => return,
                }
            }
            let mut tries = 0u32;
            // The pause to take if this try fails: they never run out.
            for pause in jittered_pauses(FIRST_PAUSE) {
                if matches!(&*self.state.borrow(), LinkState::Closed) {
                    return;
                }
                tries += 1;
                let dialled = match dead.redial().await {
                    Ok(conn) => match self.topology.streams_ready(&conn).await {
                        Ok(()) => Ok(conn),
                        Err(err) => {
                            conn.close().await;
                            Err(err)
                        }
                    },
                    Err(err) => Err(err),
                };
                match dialled {
                    Ok(conn) => {
                        tracing::info!(broker = %conn.display_name(), tries, "reconnected to the broker");
                        last_up = Some(Instant::now());
                        self.metrics.reconnected(&conn.display_name());
                        self.state.send_if_modified(|state| match state {
                            LinkState::Down(..) => {
                                *state = LinkState::Up(conn.clone(), generation + 1);
                                true
                            }
                            _ => false,
                        });
                        break;
                    }
                    Err(err) => {
                        if err.is_unreachable() {
                            tracing::warn!(error = %err, retry_in = ?pause, tries, "connecting to the broker again failed");
                        } else {
                            tracing::warn!(error = %err, retry_in = ?pause, tries, "connected, but the broker's streams are not back yet");
                        }
                        tokio::select! {
                            () = tokio::time::sleep(pause) => {}
                            () = self.until_closed() => return,
                        }
                    }
                }
            }
        }
    }
}
