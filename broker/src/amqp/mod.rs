//! The broker interface on RabbitMQ: AMQP 0-9-1 over lapin, with publisher confirms and
//! RabbitMQ's classic, quorum and stream queues. This file holds the [`Connection`] the other
//! files of the module work on, and how it opens channels and closes.
//!
//! One [`Connection`] is one AMQP connection, dialled for its owner and closed when its last clone
//! drops, so RabbitMQ does what the interface promises: the connection's exclusive queues vanish
//! and its unacknowledged deliveries are requeued. That is why deadpool-lapin is not used: a pool
//! hands a dropped connection to the next user instead of closing it, and every channel of one
//! runway connection has to live on the same AMQP connection, since an exclusive queue can only be
//! used by the connection that declared it.
//!
//! Inside a connection: a channel in confirm mode per [`Lane`] carries the publishes (pipelined:
//! confirms come back in order), each lane's publishes landing in the same streams; each consumer
//! has a channel of its own; each declaration, binding, deletion or passive check opens a
//! short-lived channel, except those of the connection's own exclusive queues, which reuse spare
//! channels (`Inner::on_spare_channel`). A refused declaration closes its channel, so it cannot
//! break anything else.
//!
//! This module does not choose names or topology (`topology.rs` does), keeps no messages, and does
//! not reconnect. lapin's automatic recovery is not used: lapin 4.12.3 deadlocks when a channel is
//! opened just as the connection drops (its recovery drops the lost channel.open's reply while
//! holding the channel's status lock; reproduced against RabbitMQ 3.10 through a TCP relay that
//! cuts connections, 5 runs of 6), and replaying a consumer of an exclusive queue that died with the
//! old connection (every runner's control queue, every attached CLI's event queue) always fails.
//! So a dropped connection ends its consumers and fails its operations with
//! [`Error::ConnectionClosed`] (retryable), and the owner connects again ([`Connection::redial`])
//! and sets up its queues, as it must anyway for exclusive ones.
//!
//! The files: `dial.rs` (connecting), `server_list.rs` (the nodes and their order), `url.rs` (what of a URL may be shown), `declare.rs`
//! (exchanges, queues, bindings), `publish.rs` (publishing and confirms), `consume.rs` (consuming
//! and acks), `arguments.rs` (`x-` arguments), `properties.rs` (message properties and headers),
//! `error_map.rs` (lapin's errors as ours), `tls.rs` (TLS files, and failed handshakes in words).

mod arguments;
mod consume;
mod declare;
mod dial;
#[cfg(test)]
mod dropped_connection;
mod error_map;
mod properties;
mod publish;
mod server_list;
mod tls;
mod url;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lapin::types::ShortString;

pub use crate::message::Lane;
pub use consume::{Acker, Consumer};
pub use dial::AmqpBroker;
use error_map::{Subject, map_error};
pub use publish::PendingConfirm;
pub use server_list::ServerOrder;
pub use tls::TlsFiles;

use crate::{Error, Result};

/// How many spare channels a connection keeps open for its exclusive queues' operations.
const SPARE_CHANNELS: usize = 16;
/// How long opening a channel may take before the connection is deemed stuck.
const CHANNEL_OPEN_PATIENCE: Duration = Duration::from_secs(10);
/// The reply text of our own connection close.
const CLOSE_TEXT: &str = "bye";
/// How long closing a connection waits for the broker's close-ok.
const CLOSE_PATIENCE: Duration = Duration::from_secs(5);

/// One AMQP connection; clones share it, and dropping the last clone closes it.
#[derive(Debug, Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

struct Inner {
    /// In an `Arc` so that `Drop` can hand it to the task that closes it.
    conn: Arc<lapin::Connection>,
    host: String,
    /// The confirm-mode channel of each [`Lane`]; opened on first use and reopened when the
    /// broker closed it (a publish to a missing exchange does). The lock also keeps a publish's
    /// sequence number and its frames together, which lapin does not do for concurrent callers.
    publishers: [tokio::sync::Mutex<Option<lapin::Channel>>; Lane::COUNT],
    /// Open channels that a declaration or deletion of an exclusive queue left behind, for the
    /// next such operation (see [`Inner::on_spare_channel`]).
    spare: std::sync::Mutex<Vec<lapin::Channel>>,
    /// Where it was dialled, to dial again.
    broker: AmqpBroker,
    /// The node of `broker`'s order this connection went to: dialling again starts at the next.
    endpoint: usize,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("host", &self.host)
            .field("connected", &self.conn.status().connected())
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if !self.conn.status().connected() {
            return;
        }
        // Consumers and unsettled deliveries hold channels, and lapin closes a connection only
        // when its last channel goes: close it now, as AMQP's "connection closed" means.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let conn = Arc::clone(&self.conn);
            runtime.spawn(async move { shut(&conn).await });
        }
    }
}

/// Close `conn` if it is open.
async fn shut(conn: &lapin::Connection) {
    if conn.status().connected() {
        // A broker that does not answer close-ok must not keep its client from ending.
        match tokio::time::timeout(CLOSE_PATIENCE, conn.close(200, CLOSE_TEXT.into())).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::debug!(%err, "closing the broker connection"),
            Err(_) => tracing::warn!("the broker did not answer the connection close within {CLOSE_PATIENCE:?}"),
        }
    }
}

impl Inner {
    /// A new channel, within [`CHANNEL_OPEN_PATIENCE`].
    async fn open_channel(&self) -> Result<lapin::Channel> {
        match tokio::time::timeout(CHANNEL_OPEN_PATIENCE, self.conn.create_channel()).await {
            Ok(Ok(channel)) => Ok(channel),
            Ok(Err(err)) => Err(Error::ConnectionClosed(format!("{}: {err}", self.host))),
            Err(_elapsed) => Err(self.give_up("opening a channel got no answer")),
        }
    }

    /// Close a connection on which opening a channel got no answer (a channel.open sent as the
    /// connection dropped is never answered), so that its owner sees it closed and connects again
    /// instead of waiting on it.
    fn give_up(&self, what: &str) -> Error {
        let conn = Arc::clone(&self.conn);
        tokio::spawn(async move { shut(&conn).await });
        Error::ConnectionClosed(format!(
            "{}: {what} within {}s; the connection is closed, connect again",
            self.host,
            CHANNEL_OPEN_PATIENCE.as_secs()
        ))
    }

    /// Run `op` on a fresh channel, which closes when `op` is done with it.
    async fn on_fresh_channel<T, F, Fut>(&self, subject: Subject<'_>, op: F) -> Result<T>
    where
        F: FnOnce(lapin::Channel) -> Fut,
        Fut: Future<Output = lapin::Result<T>>,
    {
        let channel = self.open_channel().await?;
        // Dropping the channel afterwards closes it (lapin sends the close in the background).
        op(channel).await.map_err(|err| map_error(&self.host, subject, &err))
    }

    /// Run `op` on a spare channel (one a like operation left open) or a new one, and keep the
    /// channel for the next if it is still open after `op` succeeded; a refused operation
    /// closes its channel, and that channel is dropped. For the declarations and deletions of
    /// this connection's own exclusive queues (reply and event queues, one per followed job),
    /// which have no consumer or quorum queue to disturb: opening and closing a channel around
    /// each cost two more round trips and two broker processes.
    async fn on_spare_channel<T, F, Fut>(&self, subject: Subject<'_>, op: F) -> Result<T>
    where
        F: FnOnce(lapin::Channel) -> Fut,
        Fut: Future<Output = lapin::Result<T>>,
    {
        let spare = {
            let mut spare = self.spare.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            spare.retain(|channel| channel.status().connected());
            spare.pop()
        };
        let channel = match spare {
            Some(channel) => channel,
            None => self.open_channel().await?,
        };
        let done = op(channel.clone()).await;
        if done.is_ok() && channel.status().connected() {
            let mut spare = self.spare.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if spare.len() < SPARE_CHANNELS {
                spare.push(channel);
            }
        }
        done.map_err(|err| map_error(&self.host, subject, &err))
    }
}

impl Connection {
    /// Dial a new connection to the same broker, with the same settings (after this one dropped):
    /// the next node of the server list first, this one last.
    pub async fn redial(&self) -> Result<Connection> {
        self.inner.broker.connect_from(self.inner.endpoint + 1).await
    }

    /// The user this connection logged in as, when runway knows it (not with EXTERNAL).
    pub fn login(&self) -> Option<&str> {
        self.inner.broker.login_at(self.inner.endpoint)
    }

    /// `scheme://host:port/vhost` of the node in use, without user or password.
    pub fn display_name(&self) -> String {
        self.inner.host.clone()
    }

    /// Close the connection now (idempotent); its consumers end and its exclusive queues go.
    pub async fn close(&self) {
        shut(&self.inner.conn).await;
    }
}

/// An AMQP short string (names, keys, most properties): at most 255 bytes.
fn short(what: &str, value: &str) -> Result<ShortString> {
    ShortString::try_new(value).map_err(|_| {
        let mut end = 64;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        Error::Protocol(format!("{what} `{}...` is {} bytes long; AMQP allows 255", &value[..end], value.len()))
    })
}

#[cfg(test)]
pub(crate) mod tests {
    //! What the AMQP tests of this module share.

    pub(crate) fn amqp_url() -> String {
        std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
    }
}
