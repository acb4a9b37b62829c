//! The broker-neutral shapes of what goes in and comes out: options, properties, messages, deliveries.
//!
//! These mirror AMQP 0-9-1 closely enough that each implementation maps them one to one;
//! they carry no behaviour of their own.

use std::collections::BTreeMap;
use std::time::Duration;

/// Which of a connection's confirm channels a publish goes on. On each lane but the general
/// one, every publish lands in the same streams as every other (and nothing else but queues).
///
/// RabbitMQ before 4.0 (Debian's 3.10 included) loses stream messages after a stream's leader
/// changes (rabbitmq-server#12236, fixed in 4.0.0): the channel then sends its unconfirmed stream
/// messages again under its own publish sequence numbers instead of the stream writer's, the
/// stream drops the writer's later messages as duplicates of those, and confirms them all. The
/// two numbers agree, and the resend is harmless, on a channel each of whose publishes lands in
/// the same streams. Found by the rolling-restart test (docs/ARCHITECTURE.md, "Stream lanes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Jobs, pings, replies, dead letters: nothing that lands in a stream.
    General = 0,
    /// Events that land in the history stream alone (`log`, `output`), and its read markers.
    History = 1,
    /// Lifecycle events: each lands in the history and the index streams.
    Lifecycle = 2,
    /// The index stream's read markers.
    Index = 3,
    /// Cancel requests (each lands in the cancels stream, and in runners' control queues), and
    /// that stream's read markers.
    Cancels = 4,
    /// Concurrency group announcements (each lands in the groups stream, and in runners'
    /// control queues), and that stream's read markers.
    Groups = 5,
}

impl Lane {
    /// How many lanes there are.
    pub const COUNT: usize = 6;
}

/// The routing behaviour of an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    /// Routes to queues bound with exactly the routing key.
    Direct,
    /// Routes by dotted pattern: `*` matches one word, `#` zero or more.
    Topic,
    /// Routes to every bound queue.
    Fanout,
}

/// How a queue stores messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueKind {
    #[default]
    Classic,
    /// Replicated; supports a delivery limit.
    Quorum,
    /// Append-only log read from an offset; consuming does not remove messages.
    Stream,
}

/// Everything a queue declaration can say. `Default` is a classic, transient, shared queue.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueueOptions {
    pub kind: QueueKind,
    pub durable: bool,
    /// Owned by the declaring connection and deleted with it; no other connection may consume it.
    pub exclusive: bool,
    /// Deleted when its last consumer goes away (after it had one).
    pub auto_delete: bool,
    /// Deleted after this long unused (`x-expires`).
    pub expires: Option<Duration>,
    /// Messages are dead-lettered after this many returns (`x-delivery-limit`, quorum only).
    pub delivery_limit: Option<u32>,
    /// Where rejected, over-limit and expired messages go (`x-dead-letter-exchange`), with
    /// their own routing keys (the one they were published with and their `CC` header's).
    pub dead_letter_exchange: Option<String>,
    /// How long a message may wait in the queue before it expires (`x-message-ttl`): expired
    /// messages leave from the head, dead-lettered if the queue has a dead-letter exchange.
    pub message_ttl: Option<Duration>,
    /// Stream retention by age (`x-max-age`).
    pub max_age: Option<Duration>,
    /// Retention by size (`x-max-length-bytes`).
    pub max_length_bytes: Option<u64>,
    /// Only one consumer at a time receives anything, the oldest; when it goes, the next
    /// (`x-single-active-consumer`).
    pub single_active_consumer: bool,
    /// Nodes a quorum queue or a stream is replicated to when it is created
    /// (`x-quorum-initial-group-size`, `x-initial-cluster-size`); RabbitMQ caps it at the
    /// cluster's size. Only creation reads it: redeclaring with another count is no conflict.
    pub replicas: Option<u16>,
}

/// What a queue holds right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueInfo {
    pub name: String,
    /// Messages ready for delivery (not counting unacknowledged ones).
    pub messages: u32,
    pub consumers: u32,
}

/// Where a stream consumer starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamOffset {
    /// The oldest message still retained.
    First,
    /// Only messages published after the consumer starts.
    Next,
    /// This offset (or the first retained one, if it is older).
    Offset(u64),
    /// The first message stored at or after this time (ms since the epoch). A real broker
    /// may start somewhat earlier (it seeks by chunk), never later.
    Timestamp(u64),
}

/// How to consume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumeOptions {
    /// Unacknowledged deliveries this consumer may hold; 0 means no limit.
    pub prefetch: u16,
    /// Required for a stream queue, meaningless for others.
    pub offset: Option<StreamOffset>,
    /// Deliveries count as acknowledged when sent (no `ack` needed or possible).
    pub no_ack: bool,
    /// Ask the broker for a per-consumer acknowledgement timeout (`x-consumer-timeout`) where it
    /// supports one.
    pub consumer_timeout: Option<Duration>,
}

impl ConsumeOptions {
    pub fn with_prefetch(prefetch: u16) -> ConsumeOptions {
        ConsumeOptions { prefetch, offset: None, no_ack: false, consumer_timeout: None }
    }
}

/// A header value; runway only ever needs these three.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue {
    Str(String),
    Int(i64),
    /// An array of strings, as the `CC` header (more routing keys for the same message).
    List(Vec<String>),
}

/// The header whose strings are routing keys too, when a message is published and when it is
/// dead-lettered (AMQP's sender-selected distribution).
pub(crate) const CC_HEADER: &str = "CC";

/// AMQP basic properties that runway sets or reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Properties {
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    /// The AMQP `type` property: the message kind.
    pub kind: Option<String>,
    pub content_type: Option<String>,
    /// Seconds resolution on AMQP; ms since the epoch here.
    pub timestamp_ms: Option<u64>,
    pub reply_to: Option<String>,
    /// The publisher's login, as the broker verified it (AMQP `user_id`). runway's publish path
    /// sets it from the connection and ignores whatever a caller put here; RabbitMQ refuses a
    /// publish whose `user_id` is not the connection's user, so on a delivery it is an identity.
    pub user_id: Option<String>,
    /// Delivery mode 2: written to disk by a durable queue.
    pub persistent: bool,
    pub headers: BTreeMap<String, HeaderValue>,
}

impl Properties {
    pub fn header_str(&self, key: &str) -> Option<&str> {
        match self.headers.get(key) {
            Some(HeaderValue::Str(value)) => Some(value),
            _ => None,
        }
    }

    /// The routing keys a message carries besides its own (the `CC` header).
    pub fn cc(&self) -> &[String] {
        match self.headers.get(CC_HEADER) {
            Some(HeaderValue::List(keys)) => keys,
            _ => &[],
        }
    }
}

/// A message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub body: Vec<u8>,
    pub properties: Properties,
}

impl Message {
    /// A JSON protocol message of the given kind.
    pub fn json(body: Vec<u8>, kind: &str) -> Message {
        Message {
            body,
            properties: Properties {
                kind: Some(kind.to_owned()),
                content_type: Some("application/json".to_owned()),
                ..Properties::default()
            },
        }
    }
}
