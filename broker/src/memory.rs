//! The in-memory broker of local mode: exchanges, queues, streams and consumers in one process,
//! with the AMQP 0-9-1 semantics runway relies on.
//!
//! It is a product feature held to the same contract tests as RabbitMQ, not a test double. It does
//! not persist anything, replicate, or speak a wire protocol: it lives and dies with its process.
//!
//! All state sits behind one `std::sync::Mutex`. Every critical section is short and never awaits,
//! so a blocking mutex is both correct and cheaper than an async one (the reasoning of mini-redis
//! `db.rs`). Deliveries leave the lock through unbounded channels whose depth is bounded by each
//! consumer's prefetch.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::mpsc;

use crate::message::{
    ConsumeOptions, ExchangeKind, HeaderValue, Message, QueueInfo, QueueKind, QueueOptions, StreamOffset,
};
use crate::protocol::now_ms;
use crate::{Acker as AnyAcker, Delivery, Error, Result};

/// An in-memory broker; clones share the same state.
#[derive(Debug, Clone, Default)]
pub struct MemoryBroker {
    state: Arc<Mutex<State>>,
}

impl MemoryBroker {
    pub fn new() -> MemoryBroker {
        MemoryBroker::default()
    }

    pub fn connect(&self) -> Connection {
        let id = lock(&self.state).next_id();
        Connection { inner: Arc::new(ConnectionInner { id, state: Arc::clone(&self.state) }) }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock leaves plain data behind; keep serving rather than cascade.
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Debug, Default)]
struct State {
    exchanges: HashMap<String, Exchange>,
    queues: HashMap<String, Queue>,
    counter: u64,
}

#[derive(Debug)]
struct Exchange {
    kind: ExchangeKind,
    durable: bool,
    bindings: Vec<Binding>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Binding {
    queue: String,
    routing_key: String,
}

#[derive(Debug)]
struct Queue {
    options: QueueOptions,
    owner: Option<u64>,
    ready: VecDeque<Stored>,
    log: StreamLog,
    consumers: Vec<Slot>,
    next_consumer: usize,
    unacked: HashMap<u64, Unacked>,
    had_consumer: bool,
}

/// A stream queue's append-only log; empty for other kinds.
#[derive(Debug, Default)]
struct StreamLog {
    entries: VecDeque<Stored>,
    first_offset: u64,
    bytes: u64,
}

impl StreamLog {
    fn next_offset(&self) -> u64 {
        self.first_offset + self.entries.len() as u64
    }

    fn get(&self, offset: u64) -> Option<&Stored> {
        let index = usize::try_from(offset.checked_sub(self.first_offset)?).ok()?;
        self.entries.get(index)
    }
}

#[derive(Debug, Clone)]
struct Stored {
    message: Arc<Message>,
    exchange: String,
    routing_key: String,
    redelivered: bool,
    delivery_count: u32,
    stored_at_ms: u64,
}

#[derive(Debug)]
struct Unacked {
    connection: u64,
    consumer: u64,
    stored: Stored,
}

#[derive(Debug)]
struct Slot {
    id: u64,
    connection: u64,
    prefetch: u16,
    no_ack: bool,
    in_flight: u32,
    /// For a stream consumer: the next offset to deliver.
    cursor: Option<u64>,
    tx: mpsc::UnboundedSender<Delivery>,
}

impl Slot {
    fn has_credit(&self) -> bool {
        self.no_ack || self.prefetch == 0 || self.in_flight < u32::from(self.prefetch)
    }
}

impl State {
    fn next_id(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    fn queue(&self, name: &str) -> Result<&Queue> {
        self.queues.get(name).ok_or_else(|| Error::NotFound { what: format!("queue `{name}`") })
    }

    fn queue_mut(&mut self, name: &str) -> Result<&mut Queue> {
        self.queues.get_mut(name).ok_or_else(|| Error::NotFound { what: format!("queue `{name}`") })
    }

    /// The queues a message published to `exchange` with `routing_key` lands in.
    fn route(&self, exchange: &str, routing_key: &str) -> Result<Vec<String>> {
        if exchange.is_empty() {
            // The default exchange routes by queue name.
            return Ok(self.queues.contains_key(routing_key).then(|| routing_key.to_owned()).into_iter().collect());
        }
        let found =
            self.exchanges.get(exchange).ok_or_else(|| Error::NotFound { what: format!("exchange `{exchange}`") })?;
        let mut seen = HashSet::new();
        Ok(found
            .bindings
            .iter()
            .filter(|binding| match found.kind {
                ExchangeKind::Direct => binding.routing_key == routing_key,
                ExchangeKind::Fanout => true,
                ExchangeKind::Topic => topic_matches(&binding.routing_key, routing_key),
            })
            .filter(|binding| seen.insert(binding.queue.as_str()))
            .map(|binding| binding.queue.clone())
            .collect())
    }

    fn enqueue(&mut self, queue_name: &str, stored: Stored) {
        let Some(queue) = self.queues.get_mut(queue_name) else { return };
        if queue.options.kind == QueueKind::Stream {
            queue.log.bytes += stored.message.body.len() as u64;
            queue.log.entries.push_back(stored);
            apply_retention(queue);
        } else {
            queue.ready.push_back(stored);
        }
        self.dispatch(queue_name);
    }

    /// Hand ready messages to consumers with credit, round robin.
    fn dispatch(&mut self, queue_name: &str) {
        let mut dead = Vec::new();
        if let Some(queue) = self.queues.get_mut(queue_name) {
            if queue.options.kind == QueueKind::Stream {
                dispatch_stream(queue_name, queue);
            } else {
                dispatch_queue(queue_name, queue, &mut self.counter);
            }
            // Messages in a queue whose consumers all vanished mid-dispatch stay ready.
            dead.extend(queue.consumers.iter().filter(|slot| slot.tx.is_closed()).map(|slot| slot.id));
        }
        for id in dead {
            self.cancel_consumer(queue_name, id);
        }
    }

    fn cancel_consumer(&mut self, queue_name: &str, consumer: u64) {
        let Some(queue) = self.queues.get_mut(queue_name) else { return };
        queue.consumers.retain(|slot| slot.id != consumer);
        if queue.options.auto_delete && queue.had_consumer && queue.consumers.is_empty() {
            self.delete_queue(queue_name);
        }
    }

    /// Put a delivery back at the head of its queue, or dead-letter it if it ran out of deliveries.
    fn requeue(&mut self, queue_name: &str, mut stored: Stored) {
        let Some(queue) = self.queues.get_mut(queue_name) else { return };
        stored.redelivered = true;
        stored.delivery_count += 1;
        if queue.options.delivery_limit.is_some_and(|limit| stored.delivery_count > limit) {
            let exchange = queue.options.dead_letter_exchange.clone();
            self.dead_letter(exchange.as_deref(), queue_name, stored, "delivery_limit");
            return;
        }
        // RabbitMQ puts a returned message back at the head of a classic queue and at the back
        // of a quorum queue.
        if queue.options.kind == QueueKind::Quorum {
            queue.ready.push_back(stored);
        } else {
            queue.ready.push_front(stored);
        }
    }

    fn dead_letter(&mut self, exchange: Option<&str>, queue_name: &str, stored: Stored, reason: &str) {
        let Some(exchange) = exchange else { return };
        let mut message = Message::clone(&stored.message);
        let headers = &mut message.properties.headers;
        headers.entry("x-first-death-reason".to_owned()).or_insert_with(|| HeaderValue::Str(reason.to_owned()));
        headers.entry("x-first-death-queue".to_owned()).or_insert_with(|| HeaderValue::Str(queue_name.to_owned()));
        headers.entry("x-first-death-exchange".to_owned()).or_insert_with(|| HeaderValue::Str(stored.exchange.clone()));
        // Dead-lettering keeps the original routing key, as RabbitMQ does.
        if let Ok(queues) = self.route(exchange, &stored.routing_key) {
            let message = Arc::new(message);
            for queue in queues {
                let stored = Stored {
                    message: Arc::clone(&message),
                    exchange: exchange.to_owned(),
                    routing_key: stored.routing_key.clone(),
                    redelivered: false,
                    delivery_count: 0,
                    stored_at_ms: now_ms(),
                };
                self.enqueue(&queue, stored);
            }
        }
    }

    fn delete_queue(&mut self, name: &str) {
        // Dropping the queue drops its consumers' senders, which ends their streams.
        self.queues.remove(name);
        for exchange in self.exchanges.values_mut() {
            exchange.bindings.retain(|binding| binding.queue != name);
        }
    }

    /// What an AMQP connection close does: cancel its consumers, requeue its unacked deliveries,
    /// delete its exclusive queues.
    fn close_connection(&mut self, connection: u64) {
        let names: Vec<String> = self.queues.keys().cloned().collect();
        for name in names {
            let Some(queue) = self.queues.get_mut(&name) else { continue };
            if queue.owner == Some(connection) {
                self.delete_queue(&name);
                continue;
            }
            queue.consumers.retain(|slot| slot.connection != connection);
            let mut returned: Vec<(u64, Stored)> = Vec::new();
            queue.unacked.retain(|tag, unacked| {
                if unacked.connection == connection {
                    returned.push((*tag, unacked.stored.clone()));
                    false
                } else {
                    true
                }
            });
            let is_stream = queue.options.kind == QueueKind::Stream;
            let orphaned = queue.options.auto_delete && queue.had_consumer && queue.consumers.is_empty();
            if !is_stream {
                // Newest first onto the head of a classic queue, so the oldest ends up first again;
                // oldest first onto the back of a quorum queue, for the same reason.
                if queue.options.kind == QueueKind::Quorum {
                    returned.sort_by_key(|(tag, _)| *tag);
                } else {
                    returned.sort_by_key(|(tag, _)| std::cmp::Reverse(*tag));
                }
                for (_, stored) in returned {
                    self.requeue(&name, stored);
                }
            }
            if orphaned {
                self.delete_queue(&name);
            } else {
                self.dispatch(&name);
            }
        }
    }
}

fn dispatch_queue(queue_name: &str, queue: &mut Queue, counter: &mut u64) {
    while !queue.ready.is_empty() && !queue.consumers.is_empty() {
        let count = queue.consumers.len();
        let Some(index) =
            (0..count).map(|i| (queue.next_consumer + i) % count).find(|&i| queue.consumers[i].has_credit())
        else {
            return;
        };
        let Some(stored) = queue.ready.pop_front() else { return };
        *counter += 1;
        let tag = *counter;
        let slot = &mut queue.consumers[index];
        let acker = if slot.no_ack {
            AnyAcker::None
        } else {
            AnyAcker::Memory(Acker { state: Weak::new(), queue: queue_name.to_owned(), tag, offset: None })
        };
        let delivery = to_delivery(&stored, None, acker);
        if slot.tx.send(delivery).is_err() {
            // The consumer is gone; the message stays at the head for the next one.
            queue.ready.push_front(stored);
            queue.consumers.remove(index);
            continue;
        }
        if !slot.no_ack {
            slot.in_flight += 1;
            queue.unacked.insert(tag, Unacked { connection: slot.connection, consumer: slot.id, stored });
        }
        queue.next_consumer = (index + 1) % count;
    }
}

fn dispatch_stream(queue_name: &str, queue: &mut Queue) {
    let next_offset = queue.log.next_offset();
    for slot in &mut queue.consumers {
        while let Some(cursor) = slot.cursor {
            if cursor >= next_offset || !slot.has_credit() {
                break;
            }
            let Some(stored) = queue.log.get(cursor) else { break };
            let acker = if slot.no_ack {
                AnyAcker::None
            } else {
                // Stream acks only return credit; the tag is the consumer id.
                AnyAcker::Memory(Acker {
                    state: Weak::new(),
                    queue: queue_name.to_owned(),
                    tag: slot.id,
                    offset: Some(cursor),
                })
            };
            let delivery = to_delivery(stored, Some(cursor), acker);
            if slot.tx.send(delivery).is_err() {
                break;
            }
            if !slot.no_ack {
                slot.in_flight += 1;
            }
            slot.cursor = Some(cursor + 1);
        }
    }
}

fn apply_retention(queue: &mut Queue) {
    let log = &mut queue.log;
    let oldest_allowed = queue.options.max_age.map(|age| now_ms().saturating_sub(age.as_millis() as u64));
    while let Some(front) = log.entries.front() {
        let too_big = queue.options.max_length_bytes.is_some_and(|limit| log.bytes > limit) && log.entries.len() > 1;
        let too_old = oldest_allowed.is_some_and(|oldest| front.stored_at_ms < oldest) && log.entries.len() > 1;
        if !too_big && !too_old {
            break;
        }
        log.bytes -= front.message.body.len() as u64;
        log.entries.pop_front();
        log.first_offset += 1;
    }
    let first = log.first_offset;
    for slot in &mut queue.consumers {
        if let Some(cursor) = slot.cursor.as_mut() {
            *cursor = (*cursor).max(first);
        }
    }
}

fn to_delivery(stored: &Stored, offset: Option<u64>, acker: AnyAcker) -> Delivery {
    Delivery {
        body: stored.message.body.clone(),
        properties: stored.message.properties.clone(),
        exchange: stored.exchange.clone(),
        routing_key: stored.routing_key.clone(),
        redelivered: stored.redelivered,
        delivery_count: stored.delivery_count,
        stream_offset: offset,
        stream_timestamp_ms: offset.map(|_| stored.stored_at_ms),
        acker,
    }
}

/// Whether a topic binding pattern matches a routing key (`*` one word, `#` zero or more).
pub(crate) fn topic_matches(pattern: &str, key: &str) -> bool {
    fn matches(pattern: &[&str], key: &[&str]) -> bool {
        match pattern.split_first() {
            None => key.is_empty(),
            Some((&"#", rest)) => (0..=key.len()).any(|skip| matches(rest, &key[skip..])),
            Some((&word, rest)) => match key.split_first() {
                Some((&first, key_rest)) => (word == "*" || word == first) && matches(rest, key_rest),
                None => false,
            },
        }
    }
    let pattern: Vec<&str> = pattern.split('.').collect();
    let key: Vec<&str> = if key.is_empty() { Vec::new() } else { key.split('.').collect() };
    matches(&pattern, &key)
}

/// A connection to the in-memory broker. Dropping the last clone closes it.
#[derive(Debug, Clone)]
pub struct Connection {
    inner: Arc<ConnectionInner>,
}

impl Connection {
    /// A new connection to the same broker.
    pub fn redial(&self) -> Connection {
        MemoryBroker { state: Arc::clone(&self.inner.state) }.connect()
    }
}

#[derive(Debug)]
struct ConnectionInner {
    id: u64,
    state: Arc<Mutex<State>>,
}

impl Drop for ConnectionInner {
    fn drop(&mut self) {
        lock(&self.state).close_connection(self.id);
    }
}

impl Connection {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    pub fn exchange_exists(&self, name: &str) -> bool {
        self.state().exchanges.contains_key(name)
    }

    pub fn declare_exchange(&self, name: &str, kind: ExchangeKind, durable: bool) -> Result<()> {
        let mut state = self.state();
        match state.exchanges.get(name) {
            Some(existing) if existing.kind != kind || existing.durable != durable => {
                Err(Error::PreconditionFailed(format!(
                    "exchange `{name}` exists with other settings ({:?}, durable {}), not ({kind:?}, durable {durable})",
                    existing.kind, existing.durable
                )))
            }
            Some(_) => Ok(()),
            None => {
                state.exchanges.insert(name.to_owned(), Exchange { kind, durable, bindings: Vec::new() });
                Ok(())
            }
        }
    }

    pub fn declare_queue(&self, name: &str, options: &QueueOptions) -> Result<QueueInfo> {
        if options.kind == QueueKind::Stream && (options.exclusive || options.auto_delete || !options.durable) {
            return Err(Error::PreconditionFailed(format!(
                "stream queue `{name}` must be durable, not exclusive and not auto-delete"
            )));
        }
        if options.kind == QueueKind::Quorum && (options.exclusive || options.auto_delete || !options.durable) {
            return Err(Error::PreconditionFailed(format!(
                "quorum queue `{name}` must be durable, not exclusive and not auto-delete"
            )));
        }
        let mut state = self.state();
        let name = if name.is_empty() { format!("amq.gen-{}", uuid::Uuid::now_v7().simple()) } else { name.to_owned() };
        if let Some(existing) = state.queues.get(&name) {
            if existing.owner.is_some_and(|owner| owner != self.inner.id) {
                return Err(Error::ResourceLocked { queue: name });
            }
            if existing.options != *options {
                return Err(Error::PreconditionFailed(format!(
                    "queue `{name}` exists with other settings: {:?}",
                    existing.options
                )));
            }
            return Ok(info(&name, existing));
        }
        let queue = Queue {
            options: options.clone(),
            owner: options.exclusive.then_some(self.inner.id),
            ready: VecDeque::new(),
            log: StreamLog::default(),
            consumers: Vec::new(),
            next_consumer: 0,
            unacked: HashMap::new(),
            had_consumer: false,
        };
        let result = info(&name, &queue);
        state.queues.insert(name, queue);
        Ok(result)
    }

    pub fn queue_info(&self, name: &str) -> Result<Option<QueueInfo>> {
        Ok(self.state().queues.get(name).map(|queue| info(name, queue)))
    }

    pub fn bind_queue(&self, queue: &str, exchange: &str, routing_key: &str) -> Result<()> {
        let mut state = self.state();
        state.queue(queue)?;
        let found = state
            .exchanges
            .get_mut(exchange)
            .ok_or_else(|| Error::NotFound { what: format!("exchange `{exchange}`") })?;
        let binding = Binding { queue: queue.to_owned(), routing_key: routing_key.to_owned() };
        if !found.bindings.contains(&binding) {
            found.bindings.push(binding);
        }
        Ok(())
    }

    pub fn unbind_queue(&self, queue: &str, exchange: &str, routing_key: &str) -> Result<()> {
        let mut state = self.state();
        if let Some(found) = state.exchanges.get_mut(exchange) {
            found.bindings.retain(|binding| !(binding.queue == queue && binding.routing_key == routing_key));
        }
        Ok(())
    }

    pub fn delete_queue(&self, name: &str) -> Result<()> {
        let mut state = self.state();
        if let Some(queue) = state.queues.get(name)
            && queue.owner.is_some_and(|owner| owner != self.inner.id)
        {
            return Err(Error::ResourceLocked { queue: name.to_owned() });
        }
        state.delete_queue(name);
        Ok(())
    }

    pub fn delete_exchange(&self, name: &str) -> Result<()> {
        self.state().exchanges.remove(name);
        Ok(())
    }

    /// Route and store; the confirm is immediate because storing cannot fail here.
    pub fn publish(&self, exchange: &str, routing_key: &str, message: &Message, mandatory: bool) -> Result<()> {
        let mut state = self.state();
        let queues = state.route(exchange, routing_key)?;
        if queues.is_empty() {
            return if mandatory {
                Err(Error::Unroutable { exchange: exchange.to_owned(), routing_key: routing_key.to_owned() })
            } else {
                Ok(())
            };
        }
        let message = Arc::new(message.clone());
        let stored_at_ms = now_ms();
        for queue in queues {
            let stored = Stored {
                message: Arc::clone(&message),
                exchange: exchange.to_owned(),
                routing_key: routing_key.to_owned(),
                redelivered: false,
                delivery_count: 0,
                stored_at_ms,
            };
            state.enqueue(&queue, stored);
        }
        Ok(())
    }

    pub fn consume(&self, queue_name: &str, options: &ConsumeOptions) -> Result<Consumer> {
        let mut state = self.state();
        let id = state.next_id();
        let queue = state.queue_mut(queue_name)?;
        if queue.owner.is_some_and(|owner| owner != self.inner.id) {
            return Err(Error::ResourceLocked { queue: queue_name.to_owned() });
        }
        let cursor = match (queue.options.kind, options.offset) {
            (QueueKind::Stream, offset) => {
                let log = &queue.log;
                Some(match offset.unwrap_or(StreamOffset::Next) {
                    StreamOffset::First => log.first_offset,
                    StreamOffset::Next => log.next_offset(),
                    StreamOffset::Offset(offset) => offset.max(log.first_offset),
                    StreamOffset::Timestamp(ms) => log
                        .entries
                        .iter()
                        .position(|stored| stored.stored_at_ms >= ms)
                        .map_or(log.next_offset(), |index| log.first_offset + index as u64),
                })
            }
            (_, Some(_)) => {
                return Err(Error::PreconditionFailed(format!("queue `{queue_name}` is not a stream: no offset")));
            }
            (_, None) => None,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        queue.consumers.push(Slot {
            id,
            connection: self.inner.id,
            prefetch: options.prefetch,
            no_ack: options.no_ack,
            in_flight: 0,
            cursor,
            tx,
        });
        queue.had_consumer = true;
        state.dispatch(queue_name);
        Ok(Consumer { rx, state: Arc::downgrade(&self.inner.state), queue: queue_name.to_owned(), id })
    }

    pub fn close(&self) {
        let mut state = self.state();
        state.close_connection(self.inner.id);
    }
}

fn info(name: &str, queue: &Queue) -> QueueInfo {
    let messages = if queue.options.kind == QueueKind::Stream { queue.log.entries.len() } else { queue.ready.len() };
    QueueInfo {
        name: name.to_owned(),
        messages: u32::try_from(messages).unwrap_or(u32::MAX),
        consumers: u32::try_from(queue.consumers.len()).unwrap_or(u32::MAX),
    }
}

/// Deliveries of one consumer.
#[derive(Debug)]
pub struct Consumer {
    rx: mpsc::UnboundedReceiver<Delivery>,
    state: Weak<Mutex<State>>,
    queue: String,
    id: u64,
}

impl Consumer {
    pub async fn next(&mut self) -> Option<Delivery> {
        let mut delivery = self.rx.recv().await?;
        // The acker is built under the lock without a handle to the state; attach it here.
        if let AnyAcker::Memory(acker) = &mut delivery.acker {
            acker.state = self.state.clone();
        }
        Some(delivery)
    }
}

impl Consumer {
    /// Deliver nothing more; what was delivered already stays readable.
    pub fn cancel(&mut self) {
        if let Some(state) = self.state.upgrade() {
            lock(&state).cancel_consumer(&self.queue, self.id);
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if let Some(state) = self.state.upgrade() {
            lock(&state).cancel_consumer(&self.queue, self.id);
        }
    }
}

/// How a delivery is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    Ack,
    /// This delivery and every earlier one of the same consumer.
    AckThrough,
    Nack {
        requeue: bool,
    },
}

/// Settles one delivery of the in-memory broker.
#[derive(Debug)]
pub struct Acker {
    state: Weak<Mutex<State>>,
    queue: String,
    tag: u64,
    /// For a stream delivery: its offset (the tag is then the consumer's id).
    offset: Option<u64>,
}

impl Acker {
    pub fn settle(&self, how: Settle) -> Result<()> {
        let Some(state) = self.state.upgrade() else {
            return Err(Error::ConnectionClosed("the in-memory broker is gone".to_owned()));
        };
        let mut state = lock(&state);
        let queue = state.queue_mut(&self.queue)?;
        if queue.options.kind == QueueKind::Stream {
            // A stream delivery's tag is its consumer id: settling only returns credit.
            if let Some(slot) = queue.consumers.iter_mut().find(|slot| slot.id == self.tag) {
                slot.in_flight = match (how, self.offset, slot.cursor) {
                    // Everything delivered up to this offset is settled: what is left is after it.
                    (Settle::AckThrough, Some(offset), Some(cursor)) => {
                        u32::try_from(cursor.saturating_sub(offset + 1)).unwrap_or(u32::MAX).min(slot.in_flight)
                    }
                    _ => slot.in_flight.saturating_sub(1),
                };
            }
            state.dispatch(&self.queue);
            return Ok(());
        }
        let Some(unacked) = queue.unacked.remove(&self.tag) else {
            return Err(Error::PreconditionFailed(format!(
                "unknown delivery tag {} on queue `{}` (already settled, or its connection closed)",
                self.tag, self.queue
            )));
        };
        if let Some(slot) = queue.consumers.iter_mut().find(|slot| slot.id == unacked.consumer) {
            slot.in_flight = slot.in_flight.saturating_sub(1);
        }
        if how == Settle::AckThrough {
            // Every earlier unacknowledged delivery of the same consumer, too.
            let consumer = unacked.consumer;
            let earlier: Vec<u64> = queue
                .unacked
                .iter()
                .filter(|(tag, other)| **tag < self.tag && other.consumer == consumer)
                .map(|(tag, _)| *tag)
                .collect();
            for tag in earlier {
                queue.unacked.remove(&tag);
                if let Some(slot) = queue.consumers.iter_mut().find(|slot| slot.id == consumer) {
                    slot.in_flight = slot.in_flight.saturating_sub(1);
                }
            }
        }
        match how {
            Settle::Ack | Settle::AckThrough => {}
            Settle::Nack { requeue: true } => state.requeue(&self.queue, unacked.stored),
            Settle::Nack { requeue: false } => {
                let exchange = queue.options.dead_letter_exchange.clone();
                state.dead_letter(exchange.as_deref(), &self.queue, unacked.stored, "rejected");
            }
        }
        state.dispatch(&self.queue);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::topic_matches;

    #[test]
    fn topic_patterns() {
        assert!(topic_matches("job.*.log", "job.1.log"));
        assert!(!topic_matches("job.*.log", "job.1.2.log"));
        assert!(topic_matches("job.1.#", "job.1.log"));
        assert!(topic_matches("job.1.#", "job.1"));
        assert!(topic_matches("#", "anything.at.all"));
        assert!(topic_matches("#", ""));
        assert!(topic_matches("a.#.z", "a.b.c.z"));
        assert!(!topic_matches("job.2.#", "job.1.log"));
        assert!(!topic_matches("job.*", "job"));
    }
}
