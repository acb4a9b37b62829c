//! runway-broker: the broker interface runway speaks, its two implementations (RabbitMQ over
//! AMQP, and an in-memory broker for local mode), the topology, and the wire protocol.
//!
//! This crate is the only one that knows AMQP, lapin, and exchange or queue names; the runner and
//! the CLI speak [`Connection`] and the [`protocol`] types. It does not decide what a job means.

pub mod amqp;
pub mod client_logs;
mod error;
pub mod identity;
pub mod memory;
mod message;
pub mod protocol;
pub mod roles;
pub mod topology;

use std::time::Duration;

pub use amqp::TlsFiles;
pub use error::{Error, Result, TlsProblem};
pub use message::{
    ConsumeOptions, ExchangeKind, HeaderValue, Lane, Message, Properties, QueueInfo, QueueKind, QueueOptions,
    StreamOffset,
};

/// A tracing directive that silences the AMQP client library's own logs: it logs a dropped
/// connection as errors, and runway says what that means itself. For binaries' default filters.
/// The TLS verifier logs a refused certificate as an error, and runway says which and why.
pub const QUIET_CLIENT_LOGS: &str = "lapin=off,rustls_platform_verifier=off";

/// A broker to connect to: RabbitMQ, or the in-memory one of local mode.
#[derive(Debug, Clone)]
pub enum Broker {
    Memory(memory::MemoryBroker),
    Amqp(amqp::AmqpBroker),
}

impl Broker {
    /// An in-memory broker, empty.
    pub fn memory() -> Broker {
        Broker::Memory(memory::MemoryBroker::new())
    }

    /// A RabbitMQ broker at `url` (`amqp://` or `amqps://`), or at any of the nodes of a
    /// comma-separated list, tried in a random order; nothing is dialled until `connect`.
    pub fn amqp(url: &str, connect_timeout: Duration) -> Result<Broker> {
        Ok(Broker::Amqp(amqp::AmqpBroker::new(url, connect_timeout)?))
    }

    /// A RabbitMQ broker at `urls` (one node, or several comma-separated, tried in a random
    /// order), dialled with the TLS files `tls` (read and checked here).
    pub fn amqp_with_tls(urls: &str, connect_timeout: Duration, tls: &TlsFiles) -> Result<Broker> {
        Ok(Broker::Amqp(amqp::AmqpBroker::new_with_tls(urls, connect_timeout, tls)?))
    }

    /// As [`Broker::amqp_with_tls`], with the nodes tried in `order`.
    pub fn amqp_in_order(
        urls: &str,
        connect_timeout: Duration,
        order: amqp::ServerOrder,
        tls: &TlsFiles,
    ) -> Result<Broker> {
        Ok(Broker::Amqp(amqp::AmqpBroker::in_order(urls, connect_timeout, order, tls)?))
    }

    /// Where the broker is, safe to print: the host, never the password.
    pub fn display_name(&self) -> String {
        match self {
            Broker::Memory(_) => "local (in-memory)".to_owned(),
            Broker::Amqp(broker) => broker.display_name(),
        }
    }

    /// How many nodes it may connect to: 1, or the length of a server list.
    pub fn nodes(&self) -> usize {
        match self {
            Broker::Memory(_) => 1,
            Broker::Amqp(broker) => broker.nodes(),
        }
    }

    pub async fn connect(&self) -> Result<Connection> {
        match self {
            Broker::Memory(broker) => Ok(Connection::Memory(broker.connect())),
            Broker::Amqp(broker) => Ok(Connection::Amqp(broker.connect().await?)),
        }
    }
}

/// One connection. Dropping the last clone closes it as AMQP does: its exclusive queues vanish
/// and its unacknowledged deliveries are requeued, marked redelivered.
#[derive(Debug, Clone)]
pub enum Connection {
    Memory(memory::Connection),
    Amqp(amqp::Connection),
}

impl Connection {
    /// Dial a new connection to the same broker with the same settings: how an owner whose
    /// connection dropped (a broker restart) connects again.
    pub async fn redial(&self) -> Result<Connection> {
        match self {
            Connection::Memory(conn) => Ok(Connection::Memory(conn.redial())),
            Connection::Amqp(conn) => Ok(Connection::Amqp(conn.redial().await?)),
        }
    }

    /// The user this connection logged in as: the `user_id` of everything it publishes.
    pub fn login(&self) -> String {
        match self {
            Connection::Memory(conn) => conn.login(),
            Connection::Amqp(conn) => conn.login().unwrap_or("the user of the client certificate").to_owned(),
        }
    }

    /// Where this connection goes, safe to print.
    pub fn display_name(&self) -> String {
        match self {
            Connection::Memory(_) => "local (in-memory)".to_owned(),
            Connection::Amqp(conn) => conn.display_name(),
        }
    }

    pub async fn declare_exchange(&self, name: &str, kind: ExchangeKind, durable: bool) -> Result<()> {
        match self {
            Connection::Memory(conn) => conn.declare_exchange(name, kind, durable),
            Connection::Amqp(conn) => conn.declare_exchange(name, kind, durable).await,
        }
    }

    /// Whether an exchange exists (a passive declaration).
    pub async fn exchange_exists(&self, name: &str) -> Result<bool> {
        match self {
            Connection::Memory(conn) => conn.exchange_exists(name),
            Connection::Amqp(conn) => conn.exchange_exists(name).await,
        }
    }

    /// Declare a queue (idempotent when the options agree); an empty name asks for a server-named one.
    pub async fn declare_queue(&self, name: &str, options: &QueueOptions) -> Result<QueueInfo> {
        match self {
            Connection::Memory(conn) => conn.declare_queue(name, options),
            Connection::Amqp(conn) => conn.declare_queue(name, options).await,
        }
    }

    /// What a queue holds, or `None` if it does not exist.
    pub async fn queue_info(&self, name: &str) -> Result<Option<QueueInfo>> {
        match self {
            Connection::Memory(conn) => conn.queue_info(name),
            Connection::Amqp(conn) => conn.queue_info(name).await,
        }
    }

    pub async fn bind_queue(&self, queue: &str, exchange: &str, routing_key: &str) -> Result<()> {
        match self {
            Connection::Memory(conn) => conn.bind_queue(queue, exchange, routing_key),
            Connection::Amqp(conn) => conn.bind_queue(queue, exchange, routing_key).await,
        }
    }

    pub async fn unbind_queue(&self, queue: &str, exchange: &str, routing_key: &str) -> Result<()> {
        match self {
            Connection::Memory(conn) => conn.unbind_queue(queue, exchange, routing_key),
            Connection::Amqp(conn) => conn.unbind_queue(queue, exchange, routing_key).await,
        }
    }

    pub async fn delete_queue(&self, name: &str) -> Result<()> {
        match self {
            Connection::Memory(conn) => conn.delete_queue(name),
            Connection::Amqp(conn) => conn.delete_queue(name).await,
        }
    }

    pub async fn delete_exchange(&self, name: &str) -> Result<()> {
        match self {
            Connection::Memory(conn) => conn.delete_exchange(name),
            Connection::Amqp(conn) => conn.delete_exchange(name).await,
        }
    }

    /// Publish and return once the broker has the message in flight; await the returned
    /// [`Confirm`] to know it is safe. Confirms of one connection resolve in publish order, so a
    /// caller may keep many in flight (pipelining). An unroutable `mandatory` message makes the
    /// confirm fail with [`Error::Unroutable`].
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        message: &Message,
        mandatory: bool,
    ) -> Result<Confirm> {
        self.publish_on(Lane::General, exchange, routing_key, message, mandatory).await
    }

    /// [`Connection::publish`] on a given lane: a publish that lands in streams goes on the lane
    /// of those streams (see [`Lane`]).
    pub async fn publish_on(
        &self,
        lane: Lane,
        exchange: &str,
        routing_key: &str,
        message: &Message,
        mandatory: bool,
    ) -> Result<Confirm> {
        match self {
            Connection::Memory(conn) => Ok(Confirm::Ready(conn.publish(exchange, routing_key, message, mandatory))),
            Connection::Amqp(conn) => conn
                .publish(lane, exchange, routing_key, message, mandatory)
                .await
                .map(|pending| Confirm::Amqp(Box::new(pending))),
        }
    }

    /// Publish and wait for the broker's confirm.
    pub async fn publish_confirmed(
        &self,
        exchange: &str,
        routing_key: &str,
        message: &Message,
        mandatory: bool,
    ) -> Result<()> {
        self.publish(exchange, routing_key, message, mandatory).await?.wait().await
    }

    pub async fn consume(&self, queue: &str, options: &ConsumeOptions) -> Result<Consumer> {
        match self {
            Connection::Memory(conn) => conn.consume(queue, options).map(Consumer::Memory),
            Connection::Amqp(conn) => {
                conn.consume(queue, options).await.map(|consumer| Consumer::Amqp(Box::new(consumer)))
            }
        }
    }

    /// Close now rather than when the last clone drops.
    pub async fn close(&self) {
        match self {
            Connection::Memory(conn) => conn.close(),
            Connection::Amqp(conn) => conn.close().await,
        }
    }
}

/// A publisher confirm still to come.
#[derive(Debug)]
#[must_use = "a publish is only safe once its confirm resolved"]
pub enum Confirm {
    Ready(Result<()>),
    // Boxed: lapin's confirm future is large, and the in-memory variant is the common one in local mode.
    Amqp(Box<amqp::PendingConfirm>),
}

impl Confirm {
    pub async fn wait(self) -> Result<()> {
        match self {
            Confirm::Ready(result) => result,
            Confirm::Amqp(pending) => pending.wait().await,
        }
    }
}

/// A stream of deliveries from one queue. Dropping it cancels the consumer; deliveries already
/// received stay unacknowledged until acked or until their connection closes.
#[derive(Debug)]
pub enum Consumer {
    Memory(memory::Consumer),
    Amqp(Box<amqp::Consumer>),
}

impl Consumer {
    /// The next delivery; `None` once the consumer is cancelled or its connection closed.
    /// Cancel-safe: dropping the future before it resolves loses no delivery.
    pub async fn next(&mut self) -> Option<Result<Delivery>> {
        match self {
            Consumer::Memory(consumer) => consumer.next().await.map(Ok),
            Consumer::Amqp(consumer) => consumer.next().await,
        }
    }

    /// Ask the broker to send it nothing more (basic.cancel). Deliveries already on their way
    /// still come out of [`Consumer::next`], then it returns `None`; they stay unacknowledged
    /// until settled, like any other. Unlike dropping the consumer, nothing already delivered is
    /// left unread.
    pub async fn cancel(&mut self) -> Result<()> {
        match self {
            Consumer::Memory(consumer) => {
                consumer.cancel();
                Ok(())
            }
            Consumer::Amqp(consumer) => consumer.cancel().await,
        }
    }
}

/// One message handed to a consumer.
#[derive(Debug)]
pub struct Delivery {
    pub body: Vec<u8>,
    pub properties: Properties,
    /// The queue it was consumed from (AMQP deliveries do not say; the consumer knows).
    pub queue: String,
    pub exchange: String,
    pub routing_key: String,
    /// The broker delivered this message before and it came back unacknowledged.
    pub redelivered: bool,
    /// How many times it came back before (quorum queues count; others report 0 or 1).
    pub delivery_count: u32,
    /// For a stream queue: the message's offset.
    pub stream_offset: Option<u64>,
    /// For a stream queue: when it was stored, ms since the epoch.
    pub stream_timestamp_ms: Option<u64>,
    pub acker: Acker,
}

/// Settles one delivery.
#[derive(Debug)]
pub enum Acker {
    Memory(memory::Acker),
    Amqp(amqp::Acker),
    /// The delivery was consumed with `no_ack`: there is nothing to settle.
    None,
}

impl Acker {
    pub async fn ack(&self) -> Result<()> {
        match self {
            Acker::Memory(acker) => acker.settle(memory::Settle::Ack),
            Acker::Amqp(acker) => acker.ack().await,
            Acker::None => Ok(()),
        }
    }

    /// Acknowledge this delivery and every earlier one of the same consumer (AMQP `multiple`):
    /// one frame for a whole batch, which a bulk reader of a stream needs.
    pub async fn ack_through(&self) -> Result<()> {
        match self {
            Acker::Memory(acker) => acker.settle(memory::Settle::AckThrough),
            Acker::Amqp(acker) => acker.ack_through().await,
            Acker::None => Ok(()),
        }
    }

    /// Negative acknowledgement; with `requeue` the message goes back to the queue, marked
    /// redelivered, otherwise it is dead-lettered (or dropped without a dead-letter exchange).
    pub async fn nack(&self, requeue: bool) -> Result<()> {
        match self {
            Acker::Memory(acker) => acker.settle(memory::Settle::Nack { requeue }),
            Acker::Amqp(acker) => acker.nack(requeue).await,
            Acker::None => Ok(()),
        }
    }

    /// Like `nack` for one message (basic.reject).
    pub async fn reject(&self, requeue: bool) -> Result<()> {
        match self {
            Acker::Memory(acker) => acker.settle(memory::Settle::Nack { requeue }),
            Acker::Amqp(acker) => acker.reject(requeue).await,
            Acker::None => Ok(()),
        }
    }
}
