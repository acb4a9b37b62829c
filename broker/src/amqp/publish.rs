//! Publishing with publisher confirms: a confirm-mode channel per [`Lane`] carries its publishes,
//! so confirms come back in publish order and a caller may keep many in flight.
//!
//! A confirm lost because the broker closed the channel over *another* publish (one to a missing
//! exchange) is not this message's failure: it is sent again. Nothing is resent over a dropped
//! connection; that fails with [`Error::ConnectionClosed`] and the owner connects again.

use std::fmt;
use std::sync::{Arc, Weak};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::protocol::AMQPErrorKind;
use lapin::types::ShortString;
use lapin::{BasicProperties, Confirmation, ErrorKind, PublisherConfirm};

use super::error_map::{Subject, map_error};
use super::properties::basic_properties;
use super::{Connection, Inner, short};
use crate::message::{Lane, Message, Properties};
use crate::{Error, Result};

/// How many times one message is sent before its failure is final.
const PUBLISH_ATTEMPTS: u32 = 3;

/// A message on its way, kept to be sent again if the broker closed the confirm channel over
/// another publish.
struct Outgoing {
    exchange: ShortString,
    routing_key: ShortString,
    body: Vec<u8>,
    properties: BasicProperties,
    mandatory: bool,
    lane: Lane,
}

impl Inner {
    /// Send `outgoing` on the confirm channel, opening it, or another if the broker closed it
    /// (a publish to a missing exchange does); the confirm is still to come.
    async fn send(&self, outgoing: &Outgoing) -> Result<PublisherConfirm> {
        let subject = Subject::Exchange(outgoing.exchange.as_str());
        let mut attempt = 1;
        loop {
            let mut slot = self.publishers[outgoing.lane as usize].lock().await;
            let channel = match slot.as_ref() {
                Some(channel) if channel.status().connected() => channel.clone(),
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
                Ok(confirm) => return Ok(confirm),
                // A channel the broker closed under an earlier publish: the next round opens
                // another (a closed connection fails there, at opening).
                Err(_) if attempt < PUBLISH_ATTEMPTS => attempt += 1,
                Err(err) => return Err(map_error(&self.host, subject, &err)),
            }
        }
    }
}

impl Connection {
    /// Send a message on the confirm channel; the returned confirm resolves once the broker has
    /// taken responsibility for it (or refused it).
    pub async fn publish(
        &self,
        lane: Lane,
        exchange: &str,
        routing_key: &str,
        message: &Message,
        mandatory: bool,
    ) -> Result<PendingConfirm> {
        // Every publish says who sent it, and RabbitMQ checks that it is this connection's user.
        let properties = Properties { user_id: self.login().map(str::to_owned), ..message.properties.clone() };
        let outgoing = Outgoing {
            exchange: short("exchange name", exchange)?,
            routing_key: short("routing key", routing_key)?,
            body: message.body.clone(),
            properties: basic_properties(&properties)?,
            mandatory,
            lane,
        };
        let confirm = self.inner.send(&outgoing).await?;
        Ok(PendingConfirm { connection: Arc::downgrade(&self.inner), outgoing, confirm, attempt: 1 })
    }
}

/// The broker's confirm of one publish, still to come.
pub struct PendingConfirm {
    /// Weak: a confirm in flight does not keep its connection open.
    connection: Weak<Inner>,
    outgoing: Outgoing,
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
    /// Wait for the confirm. A message whose confirm was lost to another publish's failure is
    /// sent again (so the broker may hold it twice: delivery is at least once).
    pub async fn wait(self) -> Result<()> {
        let PendingConfirm { connection, outgoing, mut confirm, mut attempt } = self;
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
            if attempt >= PUBLISH_ATTEMPTS || !lost_by_others(&error, exchange) {
                return Err(map_error(&inner.host, Subject::Exchange(exchange), &error));
            }
            attempt += 1;
            confirm = inner.send(&outgoing).await?;
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
