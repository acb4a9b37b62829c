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
//!
//! This file holds the handles (broker, connection, consumer, acker) and what each operation
//! checks; `state.rs` holds the state they lock and what happens to messages in it.

mod state;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::mpsc;

use state::{Binding, Exchange, Queue, Slot, State, Stored, StreamLog, info};

use crate::message::{ConsumeOptions, ExchangeKind, Message, QueueInfo, QueueKind, QueueOptions, StreamOffset};
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
        let id = {
            let mut state = lock(&self.state);
            let id = state.next_id();
            state.open.insert(id);
            id
        };
        Connection { inner: Arc::new(ConnectionInner { id, state: Arc::clone(&self.state) }) }
    }
}

/// Start a timer for each queue that was given a message with a time to live: when it fires,
/// the queue's expired head messages are dead-lettered, and it sleeps again until the next
/// head is due. The timer holds the state weakly: a dropped broker ends it.
fn arm_expiry(shared: &Arc<Mutex<State>>, state: &mut State) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        // No runtime, no timers: the messages expire when the next publish arms one.
        return;
    };
    for (queue, ttl) in std::mem::take(&mut state.expiring) {
        let weak = Arc::downgrade(shared);
        runtime.spawn(async move {
            let mut wait = ttl;
            loop {
                tokio::time::sleep(wait).await;
                let Some(shared) = weak.upgrade() else { return };
                let mut state = lock(&shared);
                let next = state.expire(&queue, now_ms());
                // A message dead-lettered into another queue with a TTL needs a timer too.
                arm_expiry(&shared, &mut state);
                match next {
                    Some(next) => wait = next,
                    None => return,
                }
            }
        });
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock leaves plain data behind; keep serving rather than cascade.
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A connection to the in-memory broker. Dropping the last clone closes it.
#[derive(Debug, Clone)]
pub struct Connection {
    inner: Arc<ConnectionInner>,
}

/// The login of every in-memory connection: the OS user running the process (`$USER`, or
/// `local` where it is not set). Local mode has one user, so this names it rather than proves it.
/// Looked up once per process (every in-memory publish names it; a process's uid does not change).
pub fn os_user() -> String {
    static USER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    // The user database's name for this process's uid: `USER` is unset under cron or as root in
    // a container, and anyone may set it to anything.
    USER.get_or_init(|| match nix::unistd::User::from_uid(nix::unistd::getuid()) {
        Ok(Some(user)) => user.name,
        _ => format!("uid{}", nix::unistd::getuid()),
    })
    .clone()
}

impl Connection {
    /// The user this connection acts as: the OS user.
    pub fn login(&self) -> String {
        os_user()
    }

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
    /// The state, for an operation of this connection: none once it is closed.
    fn state(&self) -> Result<MutexGuard<'_, State>> {
        let state = lock(&self.inner.state);
        if state.open.contains(&self.inner.id) {
            Ok(state)
        } else {
            Err(Error::ConnectionClosed("the in-memory broker connection was closed".to_owned()))
        }
    }

    pub fn exchange_exists(&self, name: &str) -> Result<bool> {
        Ok(self.state()?.exchanges.contains_key(name))
    }

    pub fn declare_exchange(&self, name: &str, kind: ExchangeKind, durable: bool) -> Result<()> {
        let mut state = self.state()?;
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
        if name.starts_with("amq.") {
            // RabbitMQ answers ACCESS_REFUSED.
            return Err(Error::AccessRefused {
                what: format!("queue `{name}`"),
                reason: "the prefix `amq.` is reserved for the broker".to_owned(),
            });
        }
        let mut state = self.state()?;
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
        Ok(self.state()?.queues.get(name).map(|queue| info(name, queue)))
    }

    pub fn bind_queue(&self, queue: &str, exchange: &str, routing_key: &str) -> Result<()> {
        let mut state = self.state()?;
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
        let mut state = self.state()?;
        if let Some(found) = state.exchanges.get_mut(exchange) {
            found.bindings.retain(|binding| !(binding.queue == queue && binding.routing_key == routing_key));
        }
        Ok(())
    }

    pub fn delete_queue(&self, name: &str) -> Result<()> {
        let mut state = self.state()?;
        if let Some(queue) = state.queues.get(name)
            && queue.owner.is_some_and(|owner| owner != self.inner.id)
        {
            return Err(Error::ResourceLocked { queue: name.to_owned() });
        }
        state.delete_queue(name);
        Ok(())
    }

    pub fn delete_exchange(&self, name: &str) -> Result<()> {
        self.state()?.exchanges.remove(name);
        Ok(())
    }

    /// Route and store; the confirm is immediate because storing cannot fail here.
    pub fn publish(&self, exchange: &str, routing_key: &str, message: &Message, mandatory: bool) -> Result<()> {
        let mut state = self.state()?;
        let queues = state.route_all(exchange, routing_key, message.properties.cc())?;
        if queues.is_empty() {
            return if mandatory {
                Err(Error::Unroutable { exchange: exchange.to_owned(), routing_key: routing_key.to_owned() })
            } else {
                Ok(())
            };
        }
        let mut message = message.clone();
        // As RabbitMQ verifies `user_id`, the in-memory broker sets it: local mode is the OS user.
        message.properties.user_id = Some(os_user());
        // AMQP timestamps are whole seconds: so are they here.
        message.properties.timestamp_ms = message.properties.timestamp_ms.map(|ms| ms / 1000 * 1000);
        let message = Arc::new(message);
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
        arm_expiry(&self.inner.state, &mut state);
        Ok(())
    }

    pub fn consume(&self, queue_name: &str, options: &ConsumeOptions) -> Result<Consumer> {
        let mut state = self.state()?;
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
        lock(&self.inner.state).close_connection(self.inner.id);
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
    /// The connection of the consumer it came from: once that closed, the delivery was requeued.
    connection: u64,
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
        if !state.open.contains(&self.connection) {
            return Err(Error::ConnectionClosed(format!(
                "the connection of a delivery from queue `{}` closed before it was settled; it was requeued",
                self.queue
            )));
        }
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
