//! Declarations on RabbitMQ: exchanges and queues declared, checked (passively), bound, unbound
//! and deleted, each on a short-lived channel of its own.
//!
//! A refused declaration closes its channel, so it cannot break anything else on the connection.
//! The names and options come from the caller (the topology); nothing here chooses them.

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;

use super::arguments::queue_arguments;
use super::error_map::Subject;
use super::{Connection, short};
use crate::message::{ExchangeKind, QueueInfo, QueueOptions};
use crate::{Error, Result};

impl Connection {
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
        let declare = |channel: lapin::Channel| {
            let (queue, arguments) = (queue.clone(), arguments.clone());
            async move { channel.queue_declare(queue, flags, arguments).await }
        };
        let declared = if options.exclusive {
            self.inner.on_spare_channel(Subject::Queue(name), declare).await?
        } else {
            self.inner.on_fresh_channel(Subject::Queue(name), declare).await?
        };
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
}

fn queue_info(queue: &lapin::Queue) -> QueueInfo {
    QueueInfo { name: queue.name().to_string(), messages: queue.message_count(), consumers: queue.consumer_count() }
}
