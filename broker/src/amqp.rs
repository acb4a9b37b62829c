//! RabbitMQ over AMQP 0-9-1 with lapin (STUB: being written).

use std::time::Duration;

use crate::message::{ConsumeOptions, ExchangeKind, Message, QueueInfo, QueueOptions};
use crate::{Delivery, Error, Result};

#[derive(Debug, Clone)]
pub struct AmqpBroker {
    host: String,
}

impl AmqpBroker {
    pub fn new(url: &str, _connect_timeout: Duration) -> Result<AmqpBroker> {
        Ok(AmqpBroker { host: url.to_owned() })
    }
    pub fn display_name(&self) -> String {
        self.host.clone()
    }
    pub async fn connect(&self) -> Result<Connection> {
        Err(Error::NotSupported("amqp".into()))
    }
}

#[derive(Debug, Clone)]
pub struct Connection {}

impl Connection {
    pub async fn declare_exchange(&self, _name: &str, _kind: ExchangeKind, _durable: bool) -> Result<()> {
        Err(Error::NotSupported("amqp".into()))
    }
    pub async fn declare_queue(&self, _name: &str, _options: &QueueOptions) -> Result<QueueInfo> {
        Err(Error::NotSupported("amqp".into()))
    }
    pub async fn queue_info(&self, _name: &str) -> Result<Option<QueueInfo>> {
        Err(Error::NotSupported("amqp".into()))
    }
    pub async fn bind_queue(&self, _queue: &str, _exchange: &str, _routing_key: &str) -> Result<()> {
        Err(Error::NotSupported("amqp".into()))
    }
    pub async fn unbind_queue(&self, _queue: &str, _exchange: &str, _routing_key: &str) -> Result<()> {
        Err(Error::NotSupported("amqp".into()))
    }
    pub async fn delete_queue(&self, _name: &str) -> Result<()> {
        Err(Error::NotSupported("amqp".into()))
    }
    pub async fn delete_exchange(&self, _name: &str) -> Result<()> {
        Err(Error::NotSupported("amqp".into()))
    }
    pub async fn publish(&self, _e: &str, _k: &str, _m: &Message, _mandatory: bool) -> Result<PendingConfirm> {
        Err(Error::NotSupported("amqp".into()))
    }
    pub async fn consume(&self, _queue: &str, _options: &ConsumeOptions) -> Result<Consumer> {
        Err(Error::NotSupported("amqp".into()))
    }
    pub async fn close(&self) {}
}

#[derive(Debug)]
pub struct PendingConfirm {}
impl PendingConfirm {
    pub async fn wait(self) -> Result<()> {
        Ok(())
    }
}

#[derive(Debug)]
pub struct Consumer {}
impl Consumer {
    pub async fn next(&mut self) -> Option<Result<Delivery>> {
        None
    }
}

#[derive(Debug)]
pub struct Acker {}
impl Acker {
    pub async fn ack(&self) -> Result<()> {
        Ok(())
    }
    pub async fn nack(&self, _requeue: bool) -> Result<()> {
        Ok(())
    }
    pub async fn reject(&self, _requeue: bool) -> Result<()> {
        Ok(())
    }
}
