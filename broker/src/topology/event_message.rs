//! An event encoded once for the events exchange, kept so to be published again after a
//! reconnect without the decoded event: its message, routing key and lane.

use super::INDEX_KINDS;
use crate::message::{Lane, Message};
use crate::protocol::{self, Event};

/// An event encoded for the events exchange: its message, routing key and lane.
#[derive(Debug, Clone)]
pub struct EventMessage {
    pub(super) message: Message,
    pub(super) routing_key: String,
    /// A lifecycle event lands in the history and the index, any other in the history alone:
    /// each kind on a lane of its own (see [`Lane`]).
    pub(super) lane: Lane,
}

impl EventMessage {
    pub fn of(event: &Event) -> EventMessage {
        let mut message = Message::json(protocol::encode(event), event.body.kind());
        let job = event.job.to_string();
        message.properties.message_id = Some(format!("{job}.{}.{}", event.attempt, event.seq));
        message.properties.correlation_id = Some(job.clone());
        message.properties.timestamp_ms = Some(event.ts);
        message.properties.persistent = true;
        let routing_key = format!("job.{job}.{}", event.body.kind());
        let lane = if INDEX_KINDS.contains(&event.body.kind()) { Lane::Lifecycle } else { Lane::History };
        EventMessage { message, routing_key, lane }
    }

    /// The confirm channel it goes out on; the broker keeps order only within one.
    pub fn lane(&self) -> Lane {
        self.lane
    }

    /// The encoded size, in bytes.
    pub fn len(&self) -> usize {
        self.message.body.len()
    }

    pub fn is_empty(&self) -> bool {
        self.message.body.is_empty()
    }
}
