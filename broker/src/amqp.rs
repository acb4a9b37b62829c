//! The broker interface on RabbitMQ: AMQP 0-9-1 over lapin, with publisher confirms and
//! RabbitMQ's classic, quorum and stream queues.
//!
//! One [`Connection`] is one AMQP connection, dialled for its owner and closed when its last clone
//! drops, so RabbitMQ does what the interface promises: the connection's exclusive queues vanish
//! and its unacknowledged deliveries are requeued. That is why deadpool-lapin is not used: a pool
//! hands a dropped connection to the next user instead of closing it, and every channel of one
//! runway connection has to live on the same AMQP connection, since an exclusive queue can only be
//! used by the connection that declared it.
//!
//! Inside a connection: one channel in confirm mode carries every publish (pipelined: confirms
//! come back in order); each consumer has a channel of its own; each declaration, binding, deletion
//! or passive check opens a short-lived channel. A refused declaration closes its channel, so it
//! cannot break anything else; and lapin's recovery replays the topology declared on a long-lived
//! channel, which would resurrect queues deleted since.
//!
//! This module does not choose names or topology (`topology.rs` does), keeps no messages, and does
//! not reconnect: lapin's automatic recovery is wired up but switched off ([`AUTO_RECOVER`] says
//! why), so a dropped connection ends its consumers and fails its operations with a retryable
//! error, and the owner connects again.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    BasicRejectOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::protocol::{AMQPError, AMQPErrorKind, AMQPSoftError};
use lapin::tcp::{AMQPUriTcpExt, TLSConfig};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Confirmation, ConnectionProperties, ErrorKind, PublisherConfirm};

use crate::message::{
    ConsumeOptions, ExchangeKind, HeaderValue, Message, Properties, QueueInfo, QueueKind, QueueOptions, StreamOffset,
};
use crate::{Delivery, Error, Result};

/// Whether lapin reconnects a dropped connection by itself and replays its channels, consumers
/// and publisher confirms (`enable_auto_recover`), with the waiting and resending below.
///
/// Off, because lapin 4.12.3's recovery is not safe for runway (reproduced against RabbitMQ 3.10
/// through a TCP relay whose connections are cut):
/// - a channel opened around the moment the connection drops (any declaration, consume or queue
///   check) never gets its channel.open answered; when lapin then recovers that channel it drops
///   the lost open's reply while holding the channel's status lock, and the recovering thread and
///   the caller's runtime thread deadlock on it (5 runs out of 6);
/// - replaying a consumer of a queue that died with the old connection (exclusive, auto-delete:
///   every runner's control queue, every attached CLI's event queue) fails, which aborts the
///   recovery of the connection's other channels and makes lapin reconnect again, during which
///   opening a channel hits the deadlock above.
///
/// Off, a dropped connection fails every operation with [`Error::ConnectionClosed`] (retryable),
/// consumers end, and the owner connects again and sets up its queues, as it must anyway for
/// exclusive ones. The recovery handling stays, exercised by turning this on.
const AUTO_RECOVER: bool = false;
/// Seconds between heartbeats, unless the URL says otherwise (`?heartbeat=N`).
const HEARTBEAT_SECS: u16 = 10;
/// How long an operation that failed because the connection dropped waits for lapin to reconnect.
const RECOVERY_PATIENCE: Duration = Duration::from_secs(30);
/// How often to look whether a reconnect finished, where lapin offers nothing to wait on.
const RECONNECT_POLL: Duration = Duration::from_millis(100);
/// How long opening a channel may take before the connection is deemed stuck.
const CHANNEL_OPEN_PATIENCE: Duration = Duration::from_secs(10);
/// How many times one message is sent before its failure is final.
const PUBLISH_ATTEMPTS: u32 = 3;
/// The prefetch of a stream consumer that asked for no limit: RabbitMQ requires one for streams.
const STREAM_PREFETCH: u16 = 100;
/// The reply text of our own connection close.
const CLOSE_TEXT: &str = "bye";
/// How long closing a connection waits for the broker's close-ok.
const CLOSE_PATIENCE: Duration = Duration::from_secs(5);

/// A RabbitMQ broker, by URL. Nothing is dialled until [`AmqpBroker::connect`].
#[derive(Clone)]
pub struct AmqpBroker {
    /// Holds the credentials: never print it.
    uri: AMQPUri,
    display_name: String,
    connect_timeout: Duration,
}

impl fmt::Debug for AmqpBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpBroker")
            .field("url", &self.display_name)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl AmqpBroker {
    /// Parse and check `url` (`amqp://` or `amqps://`); heartbeats default to 10 s.
    pub fn new(url: &str, connect_timeout: Duration) -> Result<AmqpBroker> {
        let mut uri: AMQPUri = url.parse().map_err(|reason: String| invalid_url(url, &reason))?;
        if uri.authority.host.is_empty() {
            return Err(invalid_url(url, "no host"));
        }
        uri.query.heartbeat.get_or_insert(HEARTBEAT_SECS);
        let display_name = display_name(&uri);
        Ok(AmqpBroker { uri, display_name, connect_timeout })
    }

    /// `scheme://host:port/vhost`, without user or password.
    pub fn display_name(&self) -> String {
        self.display_name.clone()
    }

    /// Dial a new connection of its own, within the connect timeout.
    pub async fn connect(&self) -> Result<Connection> {
        let host = self.display_name.clone();
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::NotSupported(format!("connecting to {host} outside a tokio runtime")));
        }
        let runtime = lapin::runtime::default_runtime()
            .map_err(|err| Error::Unreachable { host: host.clone(), reason: err.to_string() })?;
        let mut properties = ConnectionProperties::default().with_connection_name("runway".into());
        if AUTO_RECOVER {
            properties = properties
                // Reconnect within 5 s of the broker coming back, for about two minutes; jitter
                // keeps many runners from reconnecting in lockstep. Set before
                // `enable_auto_recover`, which would otherwise pick its own.
                .configure_backoff(|backoff| {
                    backoff
                        .with_min_delay(Duration::from_millis(500))
                        .with_max_delay(Duration::from_secs(5))
                        .with_max_times(24)
                        .with_jitter()
                })
                .enable_auto_recover();
        }

        // With recovery on, lapin retries a failed dial with the backoff above, the first dial
        // included, so a refused connection would only fail at the timeout, and lapin's thread
        // would keep dialling after that. So the first dial (TCP, and TLS for amqps) is made here
        // and its stream handed to lapin; lapin dials itself only to reconnect.
        let deadline = tokio::time::Instant::now() + self.connect_timeout;
        let timed_out = || Error::ConnectTimeout { host: host.clone(), after: self.connect_timeout };
        let stream =
            tokio::time::timeout_at(deadline, self.uri.connect_with_config_async(TLSConfig::default(), &runtime))
                .await
                .map_err(|_| timed_out())?
                .map_err(|err| Error::Unreachable { host: host.clone(), reason: err.to_string() })?;
        let first = StdMutex::new(Some(stream));
        let abandoned = Arc::new(AtomicBool::new(false));
        let given_up = Arc::clone(&abandoned);
        let connecting = lapin::Connection::connector(
            self.uri.clone(),
            runtime,
            async move |uri, runtime| {
                if let Some(stream) = lock(&first).take() {
                    return Ok(stream);
                }
                // With recovery on, lapin also redials after a failed handshake (a refused login):
                // not once we gave up.
                if given_up.load(Ordering::Acquire) {
                    return Err(std::io::Error::other("connection attempt abandoned").into());
                }
                Ok(uri.connect_with_config_async(TLSConfig::default(), &runtime).await?)
            },
            properties,
        );
        match tokio::time::timeout_at(deadline, connecting).await {
            Ok(Ok(conn)) => Ok(Connection {
                inner: Arc::new(Inner {
                    conn: Arc::new(conn),
                    host,
                    publisher: tokio::sync::Mutex::new(None),
                    broker: self.clone(),
                }),
            }),
            Ok(Err(err)) => {
                abandoned.store(true, Ordering::Release);
                Err(connect_error(&host, &err))
            }
            Err(_elapsed) => {
                abandoned.store(true, Ordering::Release);
                Err(timed_out())
            }
        }
    }
}

/// One AMQP connection; clones share it, and dropping the last clone closes it.
#[derive(Debug, Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

struct Inner {
    /// In an `Arc` so that `Drop` can hand it to the task that closes it.
    conn: Arc<lapin::Connection>,
    host: String,
    /// The confirm-mode channel every publish goes through; opened on first use and reopened when
    /// the broker closed it (a publish to a missing exchange does). The lock also keeps a publish's
    /// sequence number and its frames together, which lapin does not do for concurrent callers.
    publisher: tokio::sync::Mutex<Option<lapin::Channel>>,
    /// Where it was dialled, to dial again.
    broker: AmqpBroker,
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
        let status = self.conn.status();
        if !(status.connected() || status.reconnecting()) {
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

/// Close `conn`, waiting out a reconnect in progress first (a reconnecting connection cannot be
/// closed, and would come back to life).
async fn shut(conn: &lapin::Connection) {
    if conn.status().reconnecting() {
        wait_connected(conn).await;
    }
    if conn.status().connected() {
        // A broker that does not answer close-ok must not keep its client from ending.
        match tokio::time::timeout(CLOSE_PATIENCE, conn.close(200, CLOSE_TEXT.into())).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::debug!(%err, "closing the broker connection"),
            Err(_) => tracing::warn!("the broker did not answer the connection close within {CLOSE_PATIENCE:?}"),
        }
    }
}

/// Wait (boundedly) while `conn` reconnects; whether it is connected at the end.
async fn wait_connected(conn: &lapin::Connection) -> bool {
    // lapin signals the end of a reconnect only to an operation that failed because of it (the
    // error carries a notifier); a connection-level waiter has nothing but the status to look at.
    let deadline = Instant::now() + RECOVERY_PATIENCE;
    while conn.status().reconnecting() && Instant::now() < deadline {
        tokio::time::sleep(RECONNECT_POLL).await;
    }
    conn.status().connected()
}

/// Wait (boundedly) for lapin to recover `channel` after `error`; false if recovery does not
/// apply to the error (a channel closed by the broker, a closed connection) or took too long.
async fn recovered(channel: &lapin::Channel, error: lapin::Error) -> bool {
    matches!(tokio::time::timeout(RECOVERY_PATIENCE, channel.wait_for_recovery(error)).await, Ok(Ok(())))
}

impl Inner {
    /// A new channel, after waiting out a reconnect in progress. Not retried: a channel opened
    /// while lapin recovers can be lost, which wedges the recovery (see `give_up`).
    async fn open_channel(&self) -> Result<lapin::Channel> {
        if self.conn.status().reconnecting() {
            wait_connected(&self.conn).await;
        }
        match tokio::time::timeout(CHANNEL_OPEN_PATIENCE, self.conn.create_channel()).await {
            Ok(Ok(channel)) => Ok(channel),
            Ok(Err(err)) => Err(self.closed(&err)),
            Err(_elapsed) => Err(self.give_up("opening a channel got no answer")),
        }
    }

    /// Close a connection on which opening a channel got no answer, so that its owner sees it
    /// closed and reconnects instead of waiting on it (with recovery on, see [`AUTO_RECOVER`],
    /// such a channel would also deadlock lapin's next recovery of it).
    fn give_up(&self, what: &str) -> Error {
        let conn = Arc::clone(&self.conn);
        tokio::spawn(async move { shut(&conn).await });
        Error::ConnectionClosed(format!(
            "{}: {what} within {}s; the connection is closed, connect again",
            self.host,
            CHANNEL_OPEN_PATIENCE.as_secs()
        ))
    }

    fn closed(&self, error: &lapin::Error) -> Error {
        Error::ConnectionClosed(format!("{}: {error}", self.host))
    }

    /// Run `op` on a fresh channel, once more on another if a reconnect interrupted it.
    async fn on_fresh_channel<T, F, Fut>(&self, subject: Subject<'_>, op: F) -> Result<T>
    where
        F: Fn(lapin::Channel) -> Fut,
        Fut: Future<Output = lapin::Result<T>>,
    {
        let mut waited = false;
        loop {
            let channel = self.open_channel().await?;
            // Dropping the channel afterwards closes it (lapin sends the close in the background).
            match op(channel.clone()).await {
                Ok(value) => return Ok(value),
                Err(err) if !waited && recovered(&channel, err.clone()).await => waited = true,
                Err(err) => return Err(map_error(&self.host, subject, &err)),
            }
        }
    }

    /// Send `outgoing` on the confirm channel, opening or reopening it as needed and waiting out a
    /// reconnect; the confirm is still to come.
    async fn send(&self, outgoing: &Outgoing) -> Result<(lapin::Channel, PublisherConfirm)> {
        let subject = Subject::Exchange(outgoing.exchange.as_str());
        let mut attempt = 1;
        loop {
            let mut slot = self.publisher.lock().await;
            let channel = match slot.as_ref() {
                Some(channel) if channel.status().connected() || channel.status().reconnecting() => channel.clone(),
                _ => {
                    let channel = self.open_channel().await?;
                    channel
                        .confirm_select(ConfirmSelectOptions::default())
                        .await
                        .map_err(|err| map_error(&self.host, subject, &err))?;
                    *slot = Some(channel.clone());
                    channel
                }
            };
            let sent = channel
                .basic_publish(
                    outgoing.exchange.clone(),
                    outgoing.routing_key.clone(),
                    BasicPublishOptions { mandatory: outgoing.mandatory, immediate: false },
                    &outgoing.body,
                    outgoing.properties.clone(),
                )
                .await;
            drop(slot);
            match sent {
                Ok(confirm) => return Ok((channel, confirm)),
                Err(err) if attempt < PUBLISH_ATTEMPTS => {
                    attempt += 1;
                    // A reconnect in progress: wait for it. A channel the broker closed under an
                    // earlier publish: the next round opens another.
                    if !recovered(&channel, err.clone()).await && channel.status().reconnecting() {
                        return Err(map_error(&self.host, subject, &err));
                    }
                }
                Err(err) => return Err(map_error(&self.host, subject, &err)),
            }
        }
    }
}

impl Connection {
    /// Dial a new connection to the same broker, with the same settings (after this one dropped).
    pub async fn redial(&self) -> Result<Connection> {
        self.inner.broker.connect().await
    }

    /// `scheme://host:port/vhost`, without user or password.
    pub fn display_name(&self) -> String {
        self.inner.host.clone()
    }

    pub async fn declare_exchange(&self, name: &str, kind: ExchangeKind, durable: bool) -> Result<()> {
        let exchange = short("exchange name", name)?;
        let kind = match kind {
            ExchangeKind::Direct => lapin::ExchangeKind::Direct,
            ExchangeKind::Topic => lapin::ExchangeKind::Topic,
            ExchangeKind::Fanout => lapin::ExchangeKind::Fanout,
        };
        let options = ExchangeDeclareOptions { durable, ..ExchangeDeclareOptions::default() };
        self.inner
            .on_fresh_channel(Subject::Exchange(name), |channel| {
                let (exchange, kind) = (exchange.clone(), kind.clone());
                async move { channel.exchange_declare(exchange, kind, options, FieldTable::default()).await }
            })
            .await
    }

    /// Whether an exchange exists: a passive declaration, on a channel of its own since a
    /// missing exchange closes it.
    pub async fn exchange_exists(&self, name: &str) -> Result<bool> {
        let exchange = short("exchange name", name)?;
        let options = ExchangeDeclareOptions { passive: true, ..ExchangeDeclareOptions::default() };
        let declared = self
            .inner
            .on_fresh_channel(Subject::Exchange(name), |channel| {
                let exchange = exchange.clone();
                async move {
                    channel
                        .exchange_declare(exchange, lapin::ExchangeKind::Direct, options, FieldTable::default())
                        .await
                }
            })
            .await;
        match declared {
            Ok(()) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Declare a queue; an empty name asks the broker to choose one (returned in the info).
    pub async fn declare_queue(&self, name: &str, options: &QueueOptions) -> Result<QueueInfo> {
        let queue = short("queue name", name)?;
        let arguments = queue_arguments(options)?;
        let flags = QueueDeclareOptions {
            passive: false,
            durable: options.durable,
            exclusive: options.exclusive,
            auto_delete: options.auto_delete,
            nowait: false,
        };
        let declared = self
            .inner
            .on_fresh_channel(Subject::Queue(name), |channel| {
                let (queue, arguments) = (queue.clone(), arguments.clone());
                async move { channel.queue_declare(queue, flags, arguments).await }
            })
            .await?;
        Ok(queue_info(&declared))
    }

    /// What a queue holds, or `None` if it does not exist. Another connection's exclusive queue
    /// shows as existing with 0 messages and 0 consumers: RabbitMQ tells nothing more about it.
    pub async fn queue_info(&self, name: &str) -> Result<Option<QueueInfo>> {
        let queue = short("queue name", name)?;
        let flags = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        let declared = self
            .inner
            .on_fresh_channel(Subject::Queue(name), |channel| {
                let queue = queue.clone();
                async move { channel.queue_declare(queue, flags, FieldTable::default()).await }
            })
            .await;
        match declared {
            Ok(declared) => Ok(Some(queue_info(&declared))),
            Err(Error::NotFound { .. }) => Ok(None),
            // RabbitMQ answers a passive declaration of another connection's exclusive queue with
            // RESOURCE_LOCKED, not its counts: it exists, holding and serving who knows what.
            Err(Error::ResourceLocked { queue }) => Ok(Some(QueueInfo { name: queue, messages: 0, consumers: 0 })),
            Err(err) => Err(err),
        }
    }

    pub async fn bind_queue(&self, queue: &str, exchange: &str, routing_key: &str) -> Result<()> {
        let names =
            (short("queue name", queue)?, short("exchange name", exchange)?, short("routing key", routing_key)?);
        self.inner
            .on_fresh_channel(Subject::Binding { queue, exchange }, |channel| {
                let (queue, exchange, routing_key) = names.clone();
                async move {
                    channel
                        .queue_bind(queue, exchange, routing_key, QueueBindOptions::default(), FieldTable::default())
                        .await
                }
            })
            .await
    }

    /// Remove a binding; one that is not there (or whose queue or exchange is gone) is no error.
    pub async fn unbind_queue(&self, queue: &str, exchange: &str, routing_key: &str) -> Result<()> {
        let names =
            (short("queue name", queue)?, short("exchange name", exchange)?, short("routing key", routing_key)?);
        let unbound = self
            .inner
            .on_fresh_channel(Subject::Binding { queue, exchange }, |channel| {
                let (queue, exchange, routing_key) = names.clone();
                async move { channel.queue_unbind(queue, exchange, routing_key, FieldTable::default()).await }
            })
            .await;
        match unbound {
            Err(Error::NotFound { .. }) => Ok(()),
            other => other,
        }
    }

    /// Delete a queue, with whatever it holds; a missing queue is no error.
    pub async fn delete_queue(&self, name: &str) -> Result<()> {
        let queue = short("queue name", name)?;
        let deleted = self
            .inner
            .on_fresh_channel(Subject::Queue(name), |channel| {
                let queue = queue.clone();
                async move { channel.queue_delete(queue, QueueDeleteOptions::default()).await }
            })
            .await;
        match deleted {
            Ok(_) | Err(Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Delete an exchange and its bindings; a missing exchange is no error.
    pub async fn delete_exchange(&self, name: &str) -> Result<()> {
        let exchange = short("exchange name", name)?;
        let deleted = self
            .inner
            .on_fresh_channel(Subject::Exchange(name), |channel| {
                let exchange = exchange.clone();
                async move { channel.exchange_delete(exchange, ExchangeDeleteOptions::default()).await }
            })
            .await;
        match deleted {
            Err(Error::NotFound { .. }) => Ok(()),
            other => other,
        }
    }

    /// Send a message on the confirm channel; the returned confirm resolves once the broker has
    /// taken responsibility for it (or refused it).
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        message: &Message,
        mandatory: bool,
    ) -> Result<PendingConfirm> {
        let outgoing = Outgoing {
            exchange: short("exchange name", exchange)?,
            routing_key: short("routing key", routing_key)?,
            body: message.body.clone(),
            properties: basic_properties(&message.properties)?,
            mandatory,
        };
        let (channel, confirm) = self.inner.send(&outgoing).await?;
        Ok(PendingConfirm { connection: Arc::downgrade(&self.inner), outgoing, channel, confirm, attempt: 1 })
    }

    /// Consume `queue` on a channel of its own. An `offset` means `queue` is a stream.
    pub async fn consume(&self, queue: &str, options: &ConsumeOptions) -> Result<Consumer> {
        let queue_name = short("queue name", queue)?;
        let mut arguments = FieldTable::default();
        let mut prefetch = options.prefetch;
        if let Some(offset) = options.offset {
            arguments.insert("x-stream-offset".into(), stream_offset(offset));
            if prefetch == 0 {
                prefetch = STREAM_PREFETCH;
            }
        }
        if let Some(timeout) = options.consumer_timeout {
            arguments.insert("x-consumer-timeout".into(), AMQPValue::LongLongInt(millis(timeout)));
        }
        let consume = BasicConsumeOptions { no_ack: options.no_ack, ..BasicConsumeOptions::default() };
        let (channel, deliveries) = self
            .inner
            .on_fresh_channel(Subject::Queue(queue), |channel| {
                let (queue_name, arguments) = (queue_name.clone(), arguments.clone());
                async move {
                    // Before basic.consume, or the broker may push more than the prefetch allows.
                    if prefetch > 0 {
                        channel.basic_qos(prefetch, BasicQosOptions { global: false }).await?;
                    }
                    let deliveries = channel.basic_consume(queue_name, "".into(), consume, arguments).await?;
                    Ok((channel, deliveries))
                }
            })
            .await?;
        Ok(Consumer {
            channel,
            deliveries,
            queue: queue.to_owned(),
            host: self.inner.host.clone(),
            no_ack: options.no_ack,
            ended: false,
        })
    }

    /// Close the connection now (idempotent); its consumers end and its exclusive queues go.
    pub async fn close(&self) {
        shut(&self.inner.conn).await;
    }
}

/// A message on its way, kept to be sent again if a reconnect loses its confirm.
struct Outgoing {
    exchange: ShortString,
    routing_key: ShortString,
    body: Vec<u8>,
    properties: BasicProperties,
    mandatory: bool,
}

/// The broker's confirm of one publish, still to come.
pub struct PendingConfirm {
    /// Weak: a confirm in flight does not keep its connection open.
    connection: Weak<Inner>,
    outgoing: Outgoing,
    /// The channel the message went out on, to wait for its recovery.
    channel: lapin::Channel,
    confirm: PublisherConfirm,
    attempt: u32,
}

impl fmt::Debug for PendingConfirm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingConfirm")
            .field("exchange", &self.outgoing.exchange)
            .field("routing_key", &self.outgoing.routing_key)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl PendingConfirm {
    /// Wait for the confirm. A message whose confirm a reconnect lost is sent again (so the broker
    /// may hold it twice: delivery is at least once).
    pub async fn wait(self) -> Result<()> {
        let PendingConfirm { connection, outgoing, mut channel, mut confirm, mut attempt } = self;
        let exchange = outgoing.exchange.as_str();
        loop {
            let error = match confirm.await {
                Ok(Confirmation::Ack(None) | Confirmation::NotRequested) => return Ok(()),
                // RabbitMQ returns a mandatory message it could route nowhere, then acks it.
                Ok(Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_))) => {
                    return Err(Error::Unroutable {
                        exchange: exchange.to_owned(),
                        routing_key: outgoing.routing_key.to_string(),
                    });
                }
                Ok(Confirmation::Nack(None)) => return Err(Error::Nacked { exchange: exchange.to_owned() }),
                Err(error) => error,
            };
            let Some(inner) = connection.upgrade() else {
                return Err(Error::ConnectionClosed(format!(
                    "the connection of a publish to exchange `{exchange}` was dropped before its confirm: {error}"
                )));
            };
            let subject = Subject::Exchange(exchange);
            if attempt >= PUBLISH_ATTEMPTS
                || !(lost_by_others(&error, exchange) || recovered(&channel, error.clone()).await)
            {
                return Err(map_error(&inner.host, subject, &error));
            }
            attempt += 1;
            (channel, confirm) = inner.send(&outgoing).await?;
        }
    }
}

/// Whether `error` closed the confirm channel because of another publish than one to `exchange`:
/// every confirm pending on a channel fails when the broker closes it, and RabbitMQ names the
/// exchange at fault ("no exchange 'x' in vhost '/'").
fn lost_by_others(error: &lapin::Error, exchange: &str) -> bool {
    match error.kind() {
        ErrorKind::ProtocolError(amqp) if matches!(amqp.kind(), AMQPErrorKind::Soft(_)) => {
            !amqp.get_message().as_str().contains(&format!("exchange '{exchange}'"))
        }
        _ => false,
    }
}

/// Deliveries from one queue, on a channel of their own.
///
/// Dropping it cancels the consumer (lapin sends basic.cancel in the background) but leaves the
/// channel open while deliveries received from it may still be settled: closing the channel would
/// requeue them. The channel closes once the consumer and every unsettled delivery's acker are gone
/// (requeuing what was never settled), or with the connection.
#[derive(Debug)]
pub struct Consumer {
    channel: lapin::Channel,
    deliveries: lapin::Consumer,
    queue: String,
    host: String,
    no_ack: bool,
    /// The stream reported an error: lapin sends nothing after one that recovery does not follow.
    ended: bool,
}

impl Consumer {
    /// The next delivery; `None` once the consumer was cancelled (by the broker, because its queue
    /// went) or its connection closed.
    pub async fn next(&mut self) -> Option<Result<Delivery>> {
        loop {
            if self.ended {
                return None;
            }
            match self.deliveries.next().await? {
                Ok(delivery) => return Some(Ok(self.delivery(delivery))),
                // After a reconnect lapin consumes again on the recovered channel: keep reading.
                Err(err) if recovered(&self.channel, err.clone()).await => {}
                Err(err) => {
                    self.ended = true;
                    return Some(Err(map_error(&self.host, Subject::Queue(&self.queue), &err)));
                }
            }
        }
    }

    /// basic.cancel: the deliveries already received still come out of `next`, then `None`.
    pub async fn cancel(&mut self) -> Result<()> {
        if self.ended {
            return Ok(());
        }
        self.channel
            .basic_cancel(self.deliveries.tag(), BasicCancelOptions::default())
            .await
            .map_err(|err| map_error(&self.host, Subject::Queue(&self.queue), &err))
    }

    fn delivery(&self, delivery: lapin::message::Delivery) -> Delivery {
        let headers = delivery.properties.headers().as_ref();
        let delivery_count = header_int(headers, "x-delivery-count").map_or(0, clamp_u32);
        let stream_offset = header_int(headers, "x-stream-offset").and_then(|offset| u64::try_from(offset).ok());
        let stream_timestamp_ms = stream_offset.and_then(|_| {
            header_int(headers, "x-stream-timestamp")
                .and_then(|ms| u64::try_from(ms).ok())
                .or_else(|| delivery.properties.timestamp().map(|secs| secs.saturating_mul(1000)))
        });
        let acker = if self.no_ack {
            crate::Acker::None
        } else {
            crate::Acker::Amqp(Acker {
                acker: delivery.acker,
                _channel: self.channel.clone(),
                queue: self.queue.clone(),
                host: self.host.clone(),
            })
        };
        Delivery {
            properties: properties(&delivery.properties),
            body: delivery.data,
            exchange: delivery.exchange.to_string(),
            routing_key: delivery.routing_key.to_string(),
            redelivered: delivery.redelivered,
            delivery_count,
            stream_offset,
            stream_timestamp_ms,
            acker,
        }
    }
}

/// Settles one delivery.
#[derive(Debug)]
pub struct Acker {
    acker: lapin::Acker,
    /// Keeps the consumer's channel open until this delivery is settled: see [`Consumer`].
    _channel: lapin::Channel,
    queue: String,
    host: String,
}

enum Settle {
    Ack,
    AckThrough,
    Nack { requeue: bool },
    Reject { requeue: bool },
}

impl Acker {
    pub async fn ack(&self) -> Result<()> {
        self.settle(Settle::Ack).await
    }

    /// Acknowledge this delivery and every earlier one of its consumer (AMQP `multiple`).
    pub async fn ack_through(&self) -> Result<()> {
        self.settle(Settle::AckThrough).await
    }

    pub async fn nack(&self, requeue: bool) -> Result<()> {
        self.settle(Settle::Nack { requeue }).await
    }

    pub async fn reject(&self, requeue: bool) -> Result<()> {
        self.settle(Settle::Reject { requeue }).await
    }

    async fn settle(&self, how: Settle) -> Result<()> {
        let sent = match how {
            Settle::Ack => self.acker.ack(BasicAckOptions { multiple: false }).await,
            Settle::AckThrough => self.acker.ack(BasicAckOptions { multiple: true }).await,
            Settle::Nack { requeue } => self.acker.nack(BasicNackOptions { multiple: false, requeue }).await,
            Settle::Reject { requeue } => self.acker.reject(BasicRejectOptions { requeue }).await,
        };
        match sent {
            Ok(true) => Ok(()),
            // lapin refuses to settle on a channel that closed or reconnected since the delivery:
            // the broker has requeued it already.
            Ok(false) if self.acker.poisoned() => Err(Error::ConnectionClosed(format!(
                "{}: the channel of a delivery from queue `{}` closed before it was settled; the broker requeued it",
                self.host, self.queue
            ))),
            Ok(false) => {
                Err(Error::PreconditionFailed(format!("a delivery from queue `{}` was already settled", self.queue)))
            }
            Err(err) => Err(map_error(&self.host, Subject::Queue(&self.queue), &err)),
        }
    }

    #[cfg(test)]
    fn channel_open(&self) -> bool {
        self._channel.status().connected()
    }
}

/// What an operation was about, to name it in errors.
#[derive(Clone, Copy)]
enum Subject<'a> {
    Queue(&'a str),
    Exchange(&'a str),
    Binding { queue: &'a str, exchange: &'a str },
}

impl fmt::Display for Subject<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Queue(queue) => write!(f, "queue `{queue}`"),
            Subject::Exchange(exchange) => write!(f, "exchange `{exchange}`"),
            Subject::Binding { queue, exchange } => write!(f, "binding of queue `{queue}` to exchange `{exchange}`"),
        }
    }
}

impl Subject<'_> {
    /// What a NOT_FOUND with this text is missing.
    fn missing(self, text: &str) -> String {
        match self {
            Subject::Binding { exchange, .. } if text.contains("no exchange") => format!("exchange `{exchange}`"),
            Subject::Binding { queue, .. } => format!("queue `{queue}`"),
            Subject::Queue(_) | Subject::Exchange(_) => self.to_string(),
        }
    }

    fn queue(self) -> String {
        match self {
            Subject::Queue(name) | Subject::Exchange(name) | Subject::Binding { queue: name, .. } => name.to_owned(),
        }
    }
}

/// Map a lapin error to ours, by the broker's reply code where there is one.
fn map_error(host: &str, subject: Subject<'_>, error: &lapin::Error) -> Error {
    match error.kind() {
        ErrorKind::ProtocolError(amqp) => {
            let text = reply_text(amqp);
            match amqp.kind() {
                AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND) => Error::NotFound { what: subject.missing(&text) },
                AMQPErrorKind::Soft(AMQPSoftError::RESOURCELOCKED) => Error::ResourceLocked { queue: subject.queue() },
                AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED) => {
                    Error::PreconditionFailed(format!("{subject}: {text}"))
                }
                AMQPErrorKind::Soft(
                    AMQPSoftError::ACCESSREFUSED
                    | AMQPSoftError::CONTENTTOOLARGE
                    | AMQPSoftError::NOROUTE
                    | AMQPSoftError::NOCONSUMERS,
                ) => Error::Protocol(format!("{subject}: {}", amqp.get_message())),
                // A connection-level error: the broker closed the whole connection.
                AMQPErrorKind::Hard(_) => Error::ConnectionClosed(format!("{host}: {}", amqp.get_message())),
            }
        }
        ErrorKind::IOError(_)
        | ErrorKind::RuntimeShutdownError(_)
        | ErrorKind::MissingHeartbeatError
        | ErrorKind::InvalidChannel(_)
        | ErrorKind::InvalidChannelState(..)
        | ErrorKind::InvalidConnectionState(_) => Error::ConnectionClosed(format!("{host} ({subject}): {error}")),
        // lapin's kinds are non-exhaustive; the rest are client-side failures.
        _ => Error::Protocol(format!("{subject} on {host}: {error}")),
    }
}

/// The broker's words without the reply name RabbitMQ puts first ("NOT_FOUND - no queue ...").
fn reply_text(amqp: &AMQPError) -> String {
    let message = amqp.get_message().as_str();
    match message.split_once(" - ") {
        Some((name, rest)) if name.bytes().all(|byte| byte.is_ascii_uppercase() || byte == b'_') => rest.to_owned(),
        _ => message.to_owned(),
    }
}

/// Why a connection could not be made; lapin's text carries no credentials.
fn connect_error(host: &str, error: &lapin::Error) -> Error {
    let reason = match error.kind() {
        ErrorKind::ProtocolError(amqp) => reply_text(amqp),
        _ => error.to_string(),
    };
    Error::Unreachable { host: host.to_owned(), reason }
}

fn queue_info(queue: &lapin::Queue) -> QueueInfo {
    QueueInfo { name: queue.name().to_string(), messages: queue.message_count(), consumers: queue.consumer_count() }
}

/// The `x-` arguments of a queue declaration. A classic queue gets no `x-queue-type`, so that it
/// matches queues declared by clients that do not send one.
fn queue_arguments(options: &QueueOptions) -> Result<FieldTable> {
    let mut arguments = FieldTable::default();
    match options.kind {
        QueueKind::Classic => {}
        QueueKind::Quorum => {
            arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        }
        QueueKind::Stream => {
            arguments.insert("x-queue-type".into(), AMQPValue::LongString("stream".into()));
        }
    }
    if let Some(expires) = options.expires {
        arguments.insert("x-expires".into(), AMQPValue::LongLongInt(millis(expires)));
    }
    if let Some(limit) = options.delivery_limit {
        arguments.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(i64::from(limit)));
    }
    if let Some(exchange) = &options.dead_letter_exchange {
        short("dead-letter exchange name", exchange)?;
        arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(exchange.as_str().into()));
    }
    if let Some(age) = options.max_age {
        arguments.insert("x-max-age".into(), AMQPValue::LongString(max_age(age).into()));
    }
    if let Some(bytes) = options.max_length_bytes {
        arguments.insert("x-max-length-bytes".into(), AMQPValue::LongLongInt(i64::try_from(bytes).unwrap_or(i64::MAX)));
    }
    Ok(arguments)
}

/// A stream retention age as RabbitMQ writes it: the largest of D, h, m, s that divides it, in whole
/// seconds rounded up. (RabbitMQ also knows Y and M, whose lengths are its own choice; not used.)
fn max_age(age: Duration) -> String {
    let secs = (age.as_secs() + u64::from(age.subsec_nanos() > 0)).max(1);
    for (unit, size) in [("D", 86_400), ("h", 3_600), ("m", 60)] {
        if secs.is_multiple_of(size) {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

/// Where a stream consumer starts (`x-stream-offset`).
fn stream_offset(offset: StreamOffset) -> AMQPValue {
    match offset {
        StreamOffset::First => AMQPValue::LongString("first".into()),
        StreamOffset::Next => AMQPValue::LongString("next".into()),
        StreamOffset::Offset(offset) => AMQPValue::LongLongInt(i64::try_from(offset).unwrap_or(i64::MAX)),
        // An AMQP timestamp, in seconds: rounding down starts under a second early, never late.
        StreamOffset::Timestamp(ms) => AMQPValue::Timestamp(ms / 1000),
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn clamp_u32(value: i64) -> u32 {
    u32::try_from(value.max(0)).unwrap_or(u32::MAX)
}

fn basic_properties(properties: &Properties) -> Result<BasicProperties> {
    let mut basic = BasicProperties::default();
    if let Some(id) = &properties.message_id {
        basic = basic.with_message_id(short("message_id", id)?);
    }
    if let Some(id) = &properties.correlation_id {
        basic = basic.with_correlation_id(short("correlation_id", id)?);
    }
    if let Some(kind) = &properties.kind {
        basic = basic.with_type(short("message type", kind)?);
    }
    if let Some(content_type) = &properties.content_type {
        basic = basic.with_content_type(short("content_type", content_type)?);
    }
    if let Some(ms) = properties.timestamp_ms {
        basic = basic.with_timestamp(ms / 1000);
    }
    if let Some(reply_to) = &properties.reply_to {
        basic = basic.with_reply_to(short("reply_to", reply_to)?);
    }
    if properties.persistent {
        basic = basic.with_delivery_mode(2);
    }
    if !properties.headers.is_empty() {
        let mut headers = FieldTable::default();
        for (key, value) in &properties.headers {
            let value = match value {
                HeaderValue::Str(text) => AMQPValue::LongString(LongString::from(text.as_str())),
                HeaderValue::Int(number) => AMQPValue::LongLongInt(*number),
            };
            headers.insert(short("header name", key)?, value);
        }
        basic = basic.with_headers(headers);
    }
    Ok(basic)
}

/// The properties runway reads; headers of other types than strings and integers are left out.
fn properties(basic: &BasicProperties) -> Properties {
    let text = |value: &Option<ShortString>| value.as_ref().map(ToString::to_string);
    let headers = basic
        .headers()
        .as_ref()
        .map(|table| {
            table.inner().iter().filter_map(|(key, value)| Some((key.to_string(), header_value(value)?))).collect()
        })
        .unwrap_or_default();
    Properties {
        message_id: text(basic.message_id()),
        correlation_id: text(basic.correlation_id()),
        kind: text(basic.kind()),
        content_type: text(basic.content_type()),
        timestamp_ms: basic.timestamp().map(|secs| secs.saturating_mul(1000)),
        reply_to: text(basic.reply_to()),
        persistent: *basic.delivery_mode() == Some(2),
        headers,
    }
}

fn header_value(value: &AMQPValue) -> Option<HeaderValue> {
    match value {
        AMQPValue::LongString(text) => Some(HeaderValue::Str(text.to_string())),
        AMQPValue::ShortString(text) => Some(HeaderValue::Str(text.to_string())),
        AMQPValue::ShortShortInt(number) => Some(HeaderValue::Int(i64::from(*number))),
        AMQPValue::ShortShortUInt(number) => Some(HeaderValue::Int(i64::from(*number))),
        AMQPValue::ShortInt(number) => Some(HeaderValue::Int(i64::from(*number))),
        AMQPValue::ShortUInt(number) => Some(HeaderValue::Int(i64::from(*number))),
        AMQPValue::LongInt(number) => Some(HeaderValue::Int(i64::from(*number))),
        AMQPValue::LongUInt(number) => Some(HeaderValue::Int(i64::from(*number))),
        AMQPValue::LongLongInt(number) => Some(HeaderValue::Int(*number)),
        AMQPValue::Timestamp(stamp) => i64::try_from(*stamp).ok().map(HeaderValue::Int),
        AMQPValue::Boolean(_)
        | AMQPValue::Float(_)
        | AMQPValue::Double(_)
        | AMQPValue::DecimalValue(_)
        | AMQPValue::FieldArray(_)
        | AMQPValue::FieldTable(_)
        | AMQPValue::ByteArray(_)
        | AMQPValue::Void => None,
    }
}

fn header_int(headers: Option<&FieldTable>, key: &str) -> Option<i64> {
    match header_value(headers?.inner().get(key)?)? {
        HeaderValue::Int(number) => Some(number),
        HeaderValue::Str(_) => None,
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

fn lock<T>(mutex: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded values stay consistent whatever panicked while holding them.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `scheme://host:port/vhost` with the vhost percent-encoded, as in the URL.
fn display_name(uri: &AMQPUri) -> String {
    let mut vhost = String::new();
    for byte in uri.vhost.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            vhost.push(char::from(byte));
        } else {
            vhost.push_str(&format!("%{byte:02x}"));
        }
    }
    format!("{}://{}:{}/{vhost}", uri.scheme, uri.authority.host, uri.authority.port)
}

fn invalid_url(url: &str, reason: &str) -> Error {
    let redacted = redact(url);
    // The parser may quote the URL it refused: never repeat a password.
    let reason = reason.replace(url, &redacted);
    Error::Protocol(format!(
        "invalid broker URL `{redacted}`: {reason} (expected amqp://user:password@host:port/vhost)"
    ))
}

/// `url` with any password replaced by `***`. It errs on the side of hiding: everything between
/// the scheme and the last `@` is user info, even if the URL is malformed.
fn redact(url: &str) -> String {
    let (prefix, rest) = match url.find("://") {
        Some(at) => url.split_at(at + 3),
        None => ("", url),
    };
    let Some(at) = rest.rfind('@') else {
        return url.to_owned();
    };
    let (userinfo, host) = rest.split_at(at);
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{prefix}{user}:***{host}"),
        None if prefix.is_empty() => format!("***{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{Broker, Connection as AnyConnection, Consumer as AnyConsumer};

    const PATIENCE: Duration = Duration::from_secs(20);

    fn amqp_url() -> String {
        std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
    }

    fn broker() -> Broker {
        Broker::amqp(&amqp_url(), Duration::from_secs(10)).expect("AMQP_URL is valid")
    }

    fn unique(what: &str) -> String {
        format!("test.amqp.{}.{what}", uuid::Uuid::now_v7().simple())
    }

    async fn next(consumer: &mut AnyConsumer) -> Delivery {
        tokio::time::timeout(PATIENCE, consumer.next())
            .await
            .expect("timed out waiting for a delivery")
            .expect("consumer ended")
            .expect("delivery error")
    }

    fn text(body: &str) -> Message {
        Message::json(body.as_bytes().to_vec(), "test")
    }

    fn body(delivery: &Delivery) -> String {
        String::from_utf8(delivery.body.clone()).expect("utf-8")
    }

    fn durable() -> QueueOptions {
        QueueOptions { durable: true, ..QueueOptions::default() }
    }

    #[test]
    fn urls_are_checked_and_never_shown_with_their_password() {
        let broker = AmqpBroker::new("amqp://guest:s3cret@127.0.0.1:5672/%2f", Duration::from_secs(1)).expect("valid");
        assert_eq!(broker.display_name(), "amqp://127.0.0.1:5672/%2f");
        assert!(!format!("{broker:?}").contains("s3cret"));
        let broker = AmqpBroker::new("amqps://u:p@rabbit.example/prod", Duration::from_secs(1)).expect("valid");
        assert_eq!(broker.display_name(), "amqps://rabbit.example:5671/prod");
        for bad in [
            "http://u:s3cret@host/",
            "amqp://u:s3cret@host:notaport/",
            "amqp://u:s3/cret@host:99999/",
            "amqp//u:s3cret@host",
        ] {
            let err = AmqpBroker::new(bad, Duration::from_secs(1)).expect_err(bad);
            let message = err.to_string();
            assert!(!message.contains("s3cret") && !message.contains("cret@"), "{message}");
            assert!(message.contains("invalid broker URL"), "{message}");
        }
    }

    #[test]
    fn max_age_uses_the_largest_unit_that_fits() {
        assert_eq!(max_age(Duration::from_secs(7 * 86_400)), "7D");
        assert_eq!(max_age(Duration::from_secs(3_600)), "1h");
        assert_eq!(max_age(Duration::from_secs(90 * 60)), "90m");
        assert_eq!(max_age(Duration::from_secs(61)), "61s");
        assert_eq!(max_age(Duration::from_millis(1_500)), "2s");
        assert_eq!(max_age(Duration::ZERO), "1s");
    }

    #[tokio::test]
    async fn a_refused_connection_is_unreachable_at_once() {
        let broker = Broker::amqp("amqp://guest:s3cret@127.0.0.1:1/%2f", Duration::from_secs(10)).expect("valid");
        let started = Instant::now();
        let err = broker.connect().await.expect_err("nothing listens on port 1");
        assert!(matches!(&err, Error::Unreachable { host, .. } if host == "amqp://127.0.0.1:1/%2f"), "got {err:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
        assert!(!err.to_string().contains("s3cret"));
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let silent = tokio::spawn(async move {
            let held = listener.accept().await;
            std::future::pending::<()>().await;
            drop(held);
        });
        let url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
        let broker = Broker::amqp(&url, Duration::from_millis(300)).expect("valid");
        let err = broker.connect().await.expect_err("no answer");
        assert!(
            matches!(err, Error::ConnectTimeout { after, .. } if after == Duration::from_millis(300)),
            "got {err:?}"
        );
        silent.abort();
    }

    #[tokio::test]
    async fn a_wrong_password_is_unreachable_without_the_password() {
        let url = amqp_url().replacen("guest:guest@", "guest:wrong-s3cret@", 1);
        let broker = Broker::amqp(&url, Duration::from_secs(10)).expect("valid");
        let err = broker.connect().await.expect_err("wrong password");
        assert!(matches!(err, Error::Unreachable { .. }), "got {err:?}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[tokio::test]
    async fn round_trip_keeps_properties_and_ack_removes_the_message() {
        let conn = broker().connect().await.expect("connect");
        let queue = unique("q");
        let info = conn.declare_queue(&queue, &durable()).await.expect("declare");
        assert_eq!((info.name.as_str(), info.messages, info.consumers), (queue.as_str(), 0, 0));
        let properties = Properties {
            message_id: Some("m-1".to_owned()),
            correlation_id: Some("job-1".to_owned()),
            kind: Some("job".to_owned()),
            content_type: Some("application/json".to_owned()),
            timestamp_ms: Some(1_700_000_000_123),
            reply_to: Some("somewhere".to_owned()),
            persistent: true,
            headers: BTreeMap::from([
                ("text".to_owned(), HeaderValue::Str("value".to_owned())),
                ("number".to_owned(), HeaderValue::Int(-42)),
            ]),
        };
        let message = Message { body: b"{\"v\":1}".to_vec(), properties: properties.clone() };
        conn.publish_confirmed("", &queue, &message, true).await.expect("publish");
        assert_eq!(conn.queue_info(&queue).await.expect("info").expect("exists").messages, 1);
        let mut consumer = conn.consume(&queue, &ConsumeOptions::with_prefetch(1)).await.expect("consume");
        let delivery = next(&mut consumer).await;
        assert_eq!(delivery.body, message.body);
        // AMQP timestamps are whole seconds.
        assert_eq!(delivery.properties, Properties { timestamp_ms: Some(1_700_000_000_000), ..properties });
        assert_eq!((delivery.exchange.as_str(), delivery.routing_key.as_str()), ("", queue.as_str()));
        assert!(!delivery.redelivered);
        assert_eq!((delivery.delivery_count, delivery.stream_offset, delivery.stream_timestamp_ms), (0, None, None));
        delivery.acker.ack().await.expect("ack");
        let err = delivery.acker.ack().await.expect_err("second ack");
        assert!(matches!(err, Error::PreconditionFailed(_)), "got {err:?}");
        drop(consumer);
        let info = conn.queue_info(&queue).await.expect("info").expect("exists");
        assert_eq!(info.messages, 0);
        conn.delete_queue(&queue).await.expect("delete");
        assert_eq!(conn.queue_info(&queue).await.expect("info"), None);
        conn.delete_queue(&queue).await.expect("deleting a missing queue is fine");
    }

    #[tokio::test]
    async fn pipelined_publishes_all_confirm() {
        let conn = broker().connect().await.expect("connect");
        let queue = unique("q");
        conn.declare_queue(&queue, &durable()).await.expect("declare");
        let mut pending = Vec::new();
        for i in 0..50 {
            pending.push(conn.publish("", &queue, &text(&i.to_string()), true).await.expect("publish"));
        }
        for confirm in pending {
            confirm.wait().await.expect("confirm");
        }
        assert_eq!(conn.queue_info(&queue).await.expect("info").expect("exists").messages, 50);
        conn.delete_queue(&queue).await.expect("delete");
    }

    #[tokio::test]
    async fn mandatory_unroutable_is_an_error_and_publishing_goes_on() {
        let conn = broker().connect().await.expect("connect");
        let exchange = unique("x");
        conn.declare_exchange(&exchange, ExchangeKind::Topic, false).await.expect("exchange");
        let err = conn.publish_confirmed(&exchange, "no.one", &text("lost"), true).await.expect_err("unroutable");
        assert!(
            matches!(&err, Error::Unroutable { exchange: e, routing_key } if *e == exchange && routing_key == "no.one"),
            "got {err:?}"
        );
        let err = conn.publish_confirmed("", &unique("nosuchqueue"), &text("lost"), true).await.expect_err("no queue");
        assert!(matches!(err, Error::Unroutable { .. }), "got {err:?}");
        conn.publish_confirmed(&exchange, "no.one", &text("dropped"), false).await.expect("not mandatory");
        // A publish to a missing exchange closes the confirm channel; the next publish reopens it.
        let missing = unique("missing");
        let err = conn.publish_confirmed(&missing, "k", &text("x"), false).await.expect_err("missing exchange");
        assert!(matches!(&err, Error::NotFound { what } if what.contains(&missing)), "got {err:?}");
        let queue = unique("q");
        conn.declare_queue(&queue, &durable()).await.expect("declare");
        conn.bind_queue(&queue, &exchange, "some.*").await.expect("bind");
        conn.publish_confirmed(&exchange, "some.one", &text("ok"), true).await.expect("routable");
        conn.unbind_queue(&queue, &exchange, "some.*").await.expect("unbind");
        conn.unbind_queue(&queue, &exchange, "some.*").await.expect("unbinding twice is fine");
        let err = conn.bind_queue(&queue, &missing, "k").await.expect_err("missing exchange");
        assert!(matches!(&err, Error::NotFound { what } if what.starts_with("exchange")), "got {err:?}");
        conn.delete_queue(&queue).await.expect("delete");
        conn.delete_exchange(&exchange).await.expect("delete");
        conn.delete_exchange(&exchange).await.expect("deleting a missing exchange is fine");
    }

    /// One publish to a missing exchange closes the confirm channel under every publish in flight
    /// on it; the others are sent again and succeed.
    #[tokio::test]
    async fn a_bad_publish_does_not_fail_the_others_in_flight() {
        let conn = broker().connect().await.expect("connect");
        let queue = unique("q");
        conn.declare_queue(&queue, &durable()).await.expect("declare");
        let before = conn.publish("", &queue, &text("before"), true).await.expect("publish");
        let bad = conn.publish(&unique("missing"), "k", &text("bad"), false).await;
        let after = conn.publish("", &queue, &text("after"), true).await.expect("publish");
        before.wait().await.expect("before");
        // The bad publish fails either when sent or when confirmed.
        let err = match bad {
            Ok(confirm) => confirm.wait().await.expect_err("missing exchange"),
            Err(err) => err,
        };
        assert!(matches!(err, Error::NotFound { .. }), "got {err:?}");
        after.wait().await.expect("after");
        // RabbitMQ does not confirm what it took just before it closed the channel: a message may
        // be there twice (at least once), never missing.
        let messages = conn.queue_info(&queue).await.expect("info").expect("exists").messages;
        assert!((2..=3).contains(&messages), "{messages} messages");
        conn.delete_queue(&queue).await.expect("delete");
    }

    #[tokio::test]
    async fn an_exclusive_queue_of_another_connection_is_locked() {
        let owner = broker().connect().await.expect("connect");
        let other = broker().connect().await.expect("connect");
        let options = QueueOptions { exclusive: true, ..QueueOptions::default() };
        let queue = owner.declare_queue("", &options).await.expect("declare").name;
        assert!(queue.starts_with("amq.gen-"), "{queue}");
        let err = other.consume(&queue, &ConsumeOptions::with_prefetch(1)).await.expect_err("locked");
        assert!(matches!(&err, Error::ResourceLocked { queue: q } if *q == queue), "got {err:?}");
        // RabbitMQ refuses any declaration of an `amq.` name, before it looks at the owner.
        let err = other.declare_queue(&queue, &options).await.expect_err("reserved name");
        assert!(matches!(err, Error::Protocol(_)), "got {err:?}");
        let named = unique("mine");
        owner.declare_queue(&named, &options).await.expect("declare");
        let err = other.declare_queue(&named, &options).await.expect_err("locked");
        assert!(matches!(&err, Error::ResourceLocked { queue } if *queue == named), "got {err:?}");
        let err = other.delete_queue(&queue).await.expect_err("locked");
        assert!(matches!(err, Error::ResourceLocked { .. }), "got {err:?}");
        // What another connection sees of it: that it exists, no more (RabbitMQ refuses it the
        // counts).
        let seen = other.queue_info(&queue).await.expect("info").expect("exists");
        assert_eq!((seen.messages, seen.consumers), (0, 0));
        other.publish_confirmed("", &queue, &text("for you"), true).await.expect("others may publish");
        let mut consumer = owner.consume(&queue, &ConsumeOptions::with_prefetch(1)).await.expect("owner consumes");
        assert_eq!(body(&next(&mut consumer).await), "for you");
        owner.close().await;
        owner.close().await;
        assert_eq!(other.queue_info(&queue).await.expect("info"), None, "gone with its connection");
        let err = owner.declare_queue(&unique("late"), &durable()).await.expect_err("closed");
        assert!(matches!(err, Error::ConnectionClosed(_)), "got {err:?}");
        assert!(tokio::time::timeout(PATIENCE, consumer.next()).await.expect("ends").is_none());
    }

    #[tokio::test]
    async fn consuming_a_missing_queue_is_not_found() {
        let conn = broker().connect().await.expect("connect");
        let queue = unique("missing");
        let err = conn.consume(&queue, &ConsumeOptions::with_prefetch(1)).await.expect_err("missing");
        assert!(matches!(&err, Error::NotFound { what } if what.contains(&queue)), "got {err:?}");
    }

    #[tokio::test]
    async fn dropping_a_connection_requeues_its_unacked_delivery() {
        let observer = broker().connect().await.expect("connect");
        let queue = unique("q");
        observer.declare_queue(&queue, &durable()).await.expect("declare");
        observer.publish_confirmed("", &queue, &text("work"), true).await.expect("publish");
        let doomed = broker().connect().await.expect("connect");
        let mut consumer = doomed.consume(&queue, &ConsumeOptions::with_prefetch(1)).await.expect("consume");
        let delivery = next(&mut consumer).await;
        assert!(!delivery.redelivered);
        let mut survivor = observer.consume(&queue, &ConsumeOptions::with_prefetch(1)).await.expect("consume");
        // The delivery and its consumer outlive the connection handle: the close must not wait
        // for them.
        drop(doomed);
        let again = next(&mut survivor).await;
        assert_eq!(body(&again), "work");
        assert!(again.redelivered);
        again.acker.ack().await.expect("ack");
        let err = delivery.acker.ack().await.expect_err("its connection is gone");
        assert!(matches!(err, Error::ConnectionClosed(_)), "got {err:?}");
        drop((consumer, survivor));
        observer.delete_queue(&queue).await.expect("delete");
    }

    #[tokio::test]
    async fn a_dropped_consumer_leaves_its_deliveries_ackable() {
        let conn = broker().connect().await.expect("connect");
        let queue = unique("q");
        conn.declare_queue(&queue, &durable()).await.expect("declare");
        conn.publish_confirmed("", &queue, &text("held"), true).await.expect("publish");
        let mut consumer = conn.consume(&queue, &ConsumeOptions::with_prefetch(1)).await.expect("consume");
        let delivery = next(&mut consumer).await;
        drop(consumer);
        tokio::time::timeout(PATIENCE, async {
            while conn.queue_info(&queue).await.expect("info").expect("exists").consumers > 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the consumer is cancelled");
        let crate::Acker::Amqp(acker) = &delivery.acker else { panic!("an AMQP acker") };
        assert!(acker.channel_open(), "the channel stays open for the ack");
        delivery.acker.ack().await.expect("ack after the consumer went");
        drop(delivery);
        let info = conn.queue_info(&queue).await.expect("info").expect("exists");
        assert_eq!(info.messages, 0, "acked, not requeued");
        conn.delete_queue(&queue).await.expect("delete");
    }

    #[tokio::test]
    async fn streams_replay_from_first_and_from_a_timestamp() {
        let conn = broker().connect().await.expect("connect");
        let stream = unique("s");
        let options = QueueOptions {
            kind: QueueKind::Stream,
            durable: true,
            max_age: Some(Duration::from_secs(7 * 86_400)),
            max_length_bytes: Some(10_000_000),
            ..QueueOptions::default()
        };
        conn.declare_queue(&stream, &options).await.expect("declare");
        conn.declare_queue(&stream, &options).await.expect("redeclare");
        conn.publish_confirmed("", &stream, &text("old"), true).await.expect("publish");
        // RabbitMQ stamps stream chunks in ms but seeks by second: step past a second boundary.
        let start = crate::protocol::now_ms();
        let mark = (start / 1000 + 2) * 1000;
        tokio::time::sleep(Duration::from_millis(mark - start)).await;
        for i in 0..3 {
            // RabbitMQ 3.10 tells a stream consumer no store time: the publisher's timestamp is it.
            let mut message = text(&format!("new{i}"));
            message.properties.timestamp_ms = Some(crate::protocol::now_ms());
            conn.publish_confirmed("", &stream, &message, true).await.expect("publish");
        }
        let from_first = ConsumeOptions { offset: Some(StreamOffset::First), ..ConsumeOptions::with_prefetch(0) };
        let mut reader = conn.consume(&stream, &from_first).await.expect("consume");
        let mut offsets = Vec::new();
        for expected in ["old", "new0", "new1", "new2"] {
            let delivery = next(&mut reader).await;
            assert_eq!(body(&delivery), expected);
            offsets.push(delivery.stream_offset.expect("stream offset"));
            if expected != "old" {
                let stamp = delivery.stream_timestamp_ms.expect("stream timestamp");
                assert!(stamp >= mark && stamp <= crate::protocol::now_ms(), "{stamp} vs {mark}");
            }
            delivery.acker.ack().await.expect("ack");
        }
        assert!(offsets.windows(2).all(|pair| pair[0] < pair[1]), "{offsets:?}");
        let from_mark =
            ConsumeOptions { offset: Some(StreamOffset::Timestamp(mark)), ..ConsumeOptions::with_prefetch(10) };
        let mut reader = conn.consume(&stream, &from_mark).await.expect("consume");
        let mut seen = Vec::new();
        while seen.len() < 3 {
            let delivery = next(&mut reader).await;
            if body(&delivery) != "old" {
                seen.push(body(&delivery));
            }
            delivery.acker.ack().await.expect("ack");
        }
        assert_eq!(seen, ["new0", "new1", "new2"]);
        let from_offset =
            ConsumeOptions { offset: Some(StreamOffset::Offset(offsets[2])), ..ConsumeOptions::with_prefetch(10) };
        let mut reader = conn.consume(&stream, &from_offset).await.expect("consume");
        let delivery = next(&mut reader).await;
        assert_eq!((body(&delivery), delivery.stream_offset), ("new1".to_owned(), Some(offsets[2])));
        drop(reader);
        conn.delete_queue(&stream).await.expect("delete");
    }

    #[tokio::test]
    async fn quorum_queue_counts_deliveries_on_requeue() {
        let conn = broker().connect().await.expect("connect");
        let queue = unique("q");
        let options = QueueOptions {
            kind: QueueKind::Quorum,
            durable: true,
            delivery_limit: Some(5),
            expires: Some(Duration::from_secs(3_600)),
            ..QueueOptions::default()
        };
        conn.declare_queue(&queue, &options).await.expect("declare");
        conn.publish_confirmed("", &queue, &text("again"), true).await.expect("publish");
        let timeout =
            ConsumeOptions { consumer_timeout: Some(Duration::from_secs(60)), ..ConsumeOptions::with_prefetch(1) };
        let mut consumer = conn.consume(&queue, &timeout).await.expect("consume with x-consumer-timeout");
        let mut seen = Vec::new();
        for _ in 0..3 {
            let delivery = next(&mut consumer).await;
            seen.push((delivery.redelivered, delivery.delivery_count));
            delivery.acker.nack(true).await.expect("nack");
        }
        assert_eq!(seen, [(false, 0), (true, 1), (true, 2)]);
        let delivery = next(&mut consumer).await;
        delivery.acker.reject(false).await.expect("reject");
        drop(consumer);
        conn.delete_queue(&queue).await.expect("delete");
    }

    #[tokio::test]
    async fn a_refused_redeclaration_leaves_the_connection_working() {
        let conn = broker().connect().await.expect("connect");
        let queue = unique("q");
        conn.declare_queue(&queue, &durable()).await.expect("declare");
        let quorum = QueueOptions { kind: QueueKind::Quorum, ..durable() };
        let err = conn.declare_queue(&queue, &quorum).await.expect_err("other arguments");
        assert!(matches!(&err, Error::PreconditionFailed(text) if text.contains(&queue)), "got {err:?}");
        let err = conn.declare_queue(&queue, &QueueOptions::default()).await.expect_err("not durable");
        assert!(matches!(err, Error::PreconditionFailed(_)), "got {err:?}");
        let exchange = unique("x");
        conn.declare_exchange(&exchange, ExchangeKind::Direct, true).await.expect("exchange");
        let err = conn.declare_exchange(&exchange, ExchangeKind::Fanout, true).await.expect_err("other kind");
        assert!(matches!(err, Error::PreconditionFailed(_)), "got {err:?}");
        conn.declare_queue(&queue, &durable()).await.expect("still works");
        conn.publish_confirmed("", &queue, &text("ok"), true).await.expect("publishing still works");
        let mut consumer = conn.consume(&queue, &ConsumeOptions::with_prefetch(1)).await.expect("consume");
        assert_eq!(body(&next(&mut consumer).await), "ok");
        drop(consumer);
        conn.delete_queue(&queue).await.expect("delete");
        conn.delete_exchange(&exchange).await.expect("delete");
    }

    /// A TCP relay to RabbitMQ whose connections the test can cut, as a network failure would.
    struct Relay {
        port: u16,
        cut: tokio::sync::watch::Sender<u64>,
    }

    impl Relay {
        async fn start() -> Relay {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let port = listener.local_addr().expect("address").port();
            let (cut, _) = tokio::sync::watch::channel(0);
            let cuts = cut.clone();
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let mut cut = cuts.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut server) = tokio::net::TcpStream::connect("127.0.0.1:5672").await else { return };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = cut.changed() => {}
                        }
                    });
                }
            });
            Relay { port, cut }
        }

        fn cut(&self) {
            self.cut.send_modify(|generation| *generation += 1);
        }
    }

    /// What a dropped connection does to its publishes, consumers and deliveries: with lapin's
    /// recovery on, they carry on over the new connection; off, they fail at once with a
    /// retryable error.
    #[tokio::test]
    async fn a_dropped_connection_is_recovered_or_fails_fast() {
        let direct = broker().connect().await.expect("connect");
        let relay = Relay::start().await;
        let url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", relay.port);
        let conn = Broker::amqp(&url, Duration::from_secs(10)).expect("valid").connect().await.expect("connect");
        let queue = unique("q");
        direct.declare_queue(&queue, &durable()).await.expect("declare");
        let mut consumer = conn.consume(&queue, &ConsumeOptions::with_prefetch(10)).await.expect("consume");
        conn.publish_confirmed("", &queue, &text("before"), true).await.expect("publish");
        let before = next(&mut consumer).await;
        assert_eq!(body(&before), "before");
        relay.cut();
        if AUTO_RECOVER {
            // Pending when the connection dropped, or sent while it reconnects: confirmed.
            let pending = conn.publish("", &queue, &text("during"), true).await.expect("publish");
            pending.wait().await.expect("confirmed after the reconnect");
            let err = before.acker.ack().await.expect_err("its channel was lost");
            assert!(matches!(err, Error::ConnectionClosed(_)), "got {err:?}");
            // The consumer was replayed on the new connection; "before" came back, unacked.
            let mut seen = Vec::new();
            while seen.len() < 2 {
                let delivery = next(&mut consumer).await;
                seen.push(body(&delivery));
                delivery.acker.ack().await.expect("ack");
            }
            seen.sort();
            assert_eq!(seen, ["before", "during"]);
            conn.declare_queue(&queue, &durable()).await.expect("declarations work again");
        } else {
            let ended = tokio::time::timeout(PATIENCE, consumer.next()).await.expect("the consumer ends");
            assert!(matches!(ended, Some(Err(Error::ConnectionClosed(_)))), "got {ended:?}");
            assert!(tokio::time::timeout(PATIENCE, consumer.next()).await.expect("ended").is_none());
            let err = conn.publish_confirmed("", &queue, &text("during"), true).await.expect_err("dropped");
            assert!(matches!(&err, Error::ConnectionClosed(_)) && err.is_retryable(), "got {err:?}");
            let err = before.acker.ack().await.expect_err("its channel was lost");
            assert!(matches!(err, Error::ConnectionClosed(_)), "got {err:?}");
            // The broker requeued what the dropped connection held.
            let again = broker().connect().await.expect("connect again");
            let mut consumer = again.consume(&queue, &ConsumeOptions::with_prefetch(10)).await.expect("consume");
            let delivery = next(&mut consumer).await;
            assert_eq!((body(&delivery), delivery.redelivered), ("before".to_owned(), true));
        }
        drop(consumer);
        direct.delete_queue(&queue).await.expect("delete");
    }

    /// Regression: with lapin's recovery on, opening a channel just as the connection dropped
    /// deadlocked the runtime thread (see [`AUTO_RECOVER`]).
    #[tokio::test]
    async fn opening_channels_as_the_connection_drops_does_not_hang() {
        let relay = Relay::start().await;
        let url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", relay.port);
        let conn = Broker::amqp(&url, Duration::from_secs(10)).expect("valid").connect().await.expect("connect");
        let queue = unique("q");
        conn.declare_queue(&queue, &durable()).await.expect("declare");
        relay.cut();
        for _ in 0..5 {
            let checked = tokio::time::timeout(PATIENCE, conn.queue_info(&queue)).await.expect("no hang");
            assert!(matches!(checked, Ok(Some(_)) | Err(Error::ConnectionClosed(_))), "got {checked:?}");
        }
        broker().connect().await.expect("connect").delete_queue(&queue).await.expect("delete");
    }

    #[tokio::test]
    async fn the_interface_enum_dispatches_here() {
        let conn: AnyConnection = broker().connect().await.expect("connect");
        assert!(matches!(conn, AnyConnection::Amqp(_)));
        assert!(broker().display_name().starts_with("amqp://127.0.0.1:5672"));
    }
}
