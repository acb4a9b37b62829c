//! The in-memory broker's state: exchanges, queues and stream logs, and what happens to a message
//! in them (routing, dispatch to consumers with credit, requeue, dead-lettering, a connection's close).
//!
//! Plain data behind the one lock of `mod.rs`; nothing here awaits or knows a handle.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::mpsc;

use super::Acker;
use crate::message::{ExchangeKind, HeaderValue, Message, QueueInfo, QueueKind, QueueOptions};
use crate::protocol::now_ms;
use crate::{Acker as AnyAcker, Delivery, Error, Result};

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) exchanges: HashMap<String, Exchange>,
    pub(super) queues: HashMap<String, Queue>,
    /// The connections not closed yet: what a closed one tries fails, as on RabbitMQ.
    pub(super) open: HashSet<u64>,
    pub(super) counter: u64,
    /// Queues that were given a message with a time to live since the last look: each needs a
    /// timer (`mod.rs` arms them once the lock is released).
    pub(super) expiring: Vec<(String, Duration)>,
}

#[derive(Debug)]
pub(super) struct Exchange {
    pub(super) kind: ExchangeKind,
    pub(super) durable: bool,
    pub(super) bindings: Vec<Binding>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Binding {
    pub(super) queue: String,
    pub(super) routing_key: String,
}

#[derive(Debug)]
pub(super) struct Queue {
    pub(super) options: QueueOptions,
    pub(super) owner: Option<u64>,
    pub(super) ready: VecDeque<Stored>,
    pub(super) log: StreamLog,
    pub(super) consumers: Vec<Slot>,
    pub(super) next_consumer: usize,
    pub(super) unacked: HashMap<u64, Unacked>,
    pub(super) had_consumer: bool,
}

/// A stream queue's append-only log; empty for other kinds.
#[derive(Debug, Default)]
pub(super) struct StreamLog {
    pub(super) entries: VecDeque<Stored>,
    pub(super) first_offset: u64,
    pub(super) bytes: u64,
}

impl StreamLog {
    pub(super) fn next_offset(&self) -> u64 {
        self.first_offset + self.entries.len() as u64
    }

    pub(super) fn get(&self, offset: u64) -> Option<&Stored> {
        let index = usize::try_from(offset.checked_sub(self.first_offset)?).ok()?;
        self.entries.get(index)
    }
}

#[derive(Debug, Clone)]
pub(super) struct Stored {
    pub(super) message: Arc<Message>,
    pub(super) exchange: String,
    pub(super) routing_key: String,
    pub(super) redelivered: bool,
    pub(super) delivery_count: u32,
    pub(super) stored_at_ms: u64,
}

#[derive(Debug)]
pub(super) struct Unacked {
    pub(super) connection: u64,
    pub(super) consumer: u64,
    pub(super) stored: Stored,
}

#[derive(Debug)]
pub(super) struct Slot {
    pub(super) id: u64,
    pub(super) connection: u64,
    pub(super) prefetch: u16,
    pub(super) no_ack: bool,
    pub(super) in_flight: u32,
    /// For a stream consumer: the next offset to deliver.
    pub(super) cursor: Option<u64>,
    pub(super) tx: mpsc::UnboundedSender<Delivery>,
}

impl Slot {
    pub(super) fn has_credit(&self) -> bool {
        self.no_ack || self.prefetch == 0 || self.in_flight < u32::from(self.prefetch)
    }
}

impl State {
    pub(super) fn next_id(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    pub(super) fn queue(&self, name: &str) -> Result<&Queue> {
        self.queues.get(name).ok_or_else(|| Error::NotFound { what: format!("queue `{name}`") })
    }

    pub(super) fn queue_mut(&mut self, name: &str) -> Result<&mut Queue> {
        self.queues.get_mut(name).ok_or_else(|| Error::NotFound { what: format!("queue `{name}`") })
    }

    /// The queues a message lands in when published to `exchange` with `routing_key` and the
    /// routing keys of its `CC` header, each queue once.
    pub(super) fn route_all(&self, exchange: &str, routing_key: &str, cc: &[String]) -> Result<Vec<String>> {
        let mut queues = self.route(exchange, routing_key)?;
        for key in cc {
            for queue in self.route(exchange, key)? {
                if !queues.contains(&queue) {
                    queues.push(queue);
                }
            }
        }
        Ok(queues)
    }

    /// The queues a message published to `exchange` with `routing_key` lands in.
    pub(super) fn route(&self, exchange: &str, routing_key: &str) -> Result<Vec<String>> {
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

    pub(super) fn enqueue(&mut self, queue_name: &str, stored: Stored) {
        let Some(queue) = self.queues.get_mut(queue_name) else { return };
        if queue.options.kind == QueueKind::Stream {
            queue.log.bytes += stored.message.body.len() as u64;
            queue.log.entries.push_back(stored);
            apply_retention(queue);
        } else {
            if let Some(ttl) = queue.options.message_ttl {
                self.expiring.push((queue_name.to_owned(), ttl));
            }
            queue.ready.push_back(stored);
        }
        self.dispatch(queue_name);
    }

    /// Take the expired messages off the head of a queue with a message TTL, dead-lettering
    /// them; returns how long until its new head expires, if it has one. As on RabbitMQ, only
    /// the head expires: every message of a queue has the same TTL, so the head is the oldest.
    pub(super) fn expire(&mut self, queue_name: &str, now: u64) -> Option<Duration> {
        let queue = self.queues.get_mut(queue_name)?;
        let ttl = queue.options.message_ttl?;
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let exchange = queue.options.dead_letter_exchange.clone();
        let mut expired = Vec::new();
        while let Some(head) = queue.ready.front() {
            let due = head.stored_at_ms.saturating_add(ttl_ms);
            if due > now {
                break;
            }
            expired.extend(queue.ready.pop_front());
        }
        let next = queue.ready.front().map(|head| head.stored_at_ms.saturating_add(ttl_ms).saturating_sub(now));
        for stored in expired {
            self.dead_letter(exchange.as_deref(), queue_name, stored, "expired");
        }
        next.map(Duration::from_millis)
    }

    /// Hand ready messages to consumers with credit, round robin.
    pub(super) fn dispatch(&mut self, queue_name: &str) {
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

    pub(super) fn cancel_consumer(&mut self, queue_name: &str, consumer: u64) {
        let Some(queue) = self.queues.get_mut(queue_name) else { return };
        queue.consumers.retain(|slot| slot.id != consumer);
        if queue.options.auto_delete && queue.had_consumer && queue.consumers.is_empty() {
            self.delete_queue(queue_name);
        }
    }

    /// Put a delivery back at the head of its queue, or dead-letter it if it ran out of deliveries.
    pub(super) fn requeue(&mut self, queue_name: &str, mut stored: Stored) {
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

    pub(super) fn dead_letter(&mut self, exchange: Option<&str>, queue_name: &str, stored: Stored, reason: &str) {
        let Some(exchange) = exchange else { return };
        let mut message = Message::clone(&stored.message);
        let headers = &mut message.properties.headers;
        headers.entry("x-first-death-reason".to_owned()).or_insert_with(|| HeaderValue::Str(reason.to_owned()));
        headers.entry("x-first-death-queue".to_owned()).or_insert_with(|| HeaderValue::Str(queue_name.to_owned()));
        headers.entry("x-first-death-exchange".to_owned()).or_insert_with(|| HeaderValue::Str(stored.exchange.clone()));
        // Dead-lettering keeps the original routing keys (its own and its `CC` header's), as
        // RabbitMQ does.
        if let Ok(queues) = self.route_all(exchange, &stored.routing_key, message.properties.cc()) {
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

    pub(super) fn delete_queue(&mut self, name: &str) {
        // Dropping the queue drops its consumers' senders, which ends their streams.
        self.queues.remove(name);
        for exchange in self.exchanges.values_mut() {
            exchange.bindings.retain(|binding| binding.queue != name);
        }
    }

    /// What an AMQP connection close does: cancel its consumers, requeue its unacked deliveries,
    /// delete its exclusive queues.
    pub(super) fn close_connection(&mut self, connection: u64) {
        self.open.remove(&connection);
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

pub(super) fn dispatch_queue(queue_name: &str, queue: &mut Queue, counter: &mut u64) {
    while !queue.ready.is_empty() && !queue.consumers.is_empty() {
        let count = queue.consumers.len();
        // With a single active consumer only the oldest one (the first, since consumers leave
        // the list in order) receives anything.
        let eligible = if queue.options.single_active_consumer { 1 } else { count };
        let start = if queue.options.single_active_consumer { 0 } else { queue.next_consumer };
        let Some(index) = (0..eligible).map(|i| (start + i) % count).find(|&i| queue.consumers[i].has_credit()) else {
            return;
        };
        let Some(stored) = queue.ready.pop_front() else { return };
        *counter += 1;
        let tag = *counter;
        let slot = &mut queue.consumers[index];
        let acker = if slot.no_ack {
            AnyAcker::None
        } else {
            AnyAcker::Memory(Acker {
                state: Weak::new(),
                connection: slot.connection,
                queue: queue_name.to_owned(),
                tag,
                offset: None,
            })
        };
        let delivery = to_delivery(queue_name, &stored, None, acker);
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

pub(super) fn dispatch_stream(queue_name: &str, queue: &mut Queue) {
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
                    connection: slot.connection,
                    queue: queue_name.to_owned(),
                    tag: slot.id,
                    offset: Some(cursor),
                })
            };
            let delivery = to_delivery(queue_name, stored, Some(cursor), acker);
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

pub(super) fn apply_retention(queue: &mut Queue) {
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

pub(super) fn to_delivery(queue_name: &str, stored: &Stored, offset: Option<u64>, acker: AnyAcker) -> Delivery {
    Delivery {
        body: stored.message.body.clone(),
        properties: stored.message.properties.clone(),
        queue: queue_name.to_owned(),
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
pub(super) fn topic_matches(pattern: &str, key: &str) -> bool {
    pub(super) fn matches(pattern: &[&str], key: &[&str]) -> bool {
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

pub(super) fn info(name: &str, queue: &Queue) -> QueueInfo {
    let messages = if queue.options.kind == QueueKind::Stream { queue.log.entries.len() } else { queue.ready.len() };
    QueueInfo {
        name: name.to_owned(),
        messages: u32::try_from(messages).unwrap_or(u32::MAX),
        consumers: u32::try_from(queue.consumers.len()).unwrap_or(u32::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::topic_matches;

    #[test]
    pub(super) fn topic_patterns() {
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
