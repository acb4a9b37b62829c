//! Consuming and settling: [`Consumer`] reads one queue on a channel of its own, and each
//! delivery's [`Acker`] acks, nacks or rejects it on that channel.
//!
//! A consumer ends (`None`, after one error) when it is cancelled, its queue goes or its
//! connection drops; it does not consume again by itself, its owner does.

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
};

use super::arguments::consume_arguments;
use super::error_map::{Subject, map_error};
use super::properties::{clamp_u32, header_int, properties};
use super::{Connection, short};
use crate::message::ConsumeOptions;
use crate::{Delivery, Error, Result};

impl Connection {
    /// Consume `queue` on a channel of its own. An `offset` means `queue` is a stream.
    pub async fn consume(&self, queue: &str, options: &ConsumeOptions) -> Result<Consumer> {
        let queue_name = short("queue name", queue)?;
        let (arguments, prefetch) = consume_arguments(options);
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
    /// The stream reported an error: lapin sends nothing after one.
    ended: bool,
}

impl Consumer {
    /// The next delivery; `None` once the consumer was cancelled (by the broker, because its queue
    /// went) or its connection closed.
    pub async fn next(&mut self) -> Option<Result<Delivery>> {
        if self.ended {
            return None;
        }
        match self.deliveries.next().await? {
            Ok(delivery) => Some(Ok(self.delivery(delivery))),
            Err(err) => {
                self.ended = true;
                Some(Err(map_error(&self.host, Subject::Queue(&self.queue), &err)))
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
            queue: self.queue.clone(),
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
            // lapin refuses to settle on a channel that closed since the delivery: the broker
            // has requeued it already.
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
}
