//! Who sent a message, as the broker verified it: the delivery's `user_id`, put in place of the
//! identities a body claims (`queued_by`, `cancel_requested.by`).
//!
//! Readers decode events through here, so free text in a body is never shown as an identity. It
//! does not decide whether a sender may say what it said (readers and runners do).

use crate::Delivery;
use crate::protocol::{self, DecodeError, Event, EventBody};

/// What a reader shows for a message that carries no verified `user_id` (published by a client
/// that is not runway, to a broker that does not check).
pub const UNVERIFIED: &str = "(unverified)";

/// The verified sender of `delivery`, if the broker said.
pub fn sender(delivery: &Delivery) -> Option<&str> {
    delivery.properties.user_id.as_deref().filter(|user| !user.is_empty())
}

/// Decode an event, check that its routing key names its job and kind, and replace the
/// identities its body claims with the delivery's verified sender.
///
/// RabbitMQ's topic permissions judge an event by its routing key (a submitter may publish
/// `job.<id>.queued`, only a runner `job.<id>.completed`): a body that says otherwise than its
/// routing key would slip a runner's event past them, so it is not an event.
pub fn decode_event(delivery: &Delivery) -> Result<Event, DecodeError> {
    let mut event = protocol::decode_event(&delivery.body)?;
    check_routing_key(&event, &delivery.routing_key)?;
    verify_identity(&mut event, sender(delivery));
    Ok(event)
}

/// The routing key an event must have been published with: `job.<id>.<kind>`.
///
/// A kind this build does not know may come under any kind's routing key (a later version may
/// route it to the index as one it knows): it changes no state, so only its job is checked.
fn check_routing_key(event: &Event, routing_key: &str) -> Result<(), DecodeError> {
    let kind = match &event.body {
        EventBody::Unknown { kind, .. } => kind.as_str(),
        body => body.kind(),
    };
    let job = format!("job.{}.", event.job);
    let fits = match &event.body {
        EventBody::Unknown { .. } => routing_key.strip_prefix(&job).is_some_and(|rest| !rest.contains('.')),
        body => routing_key.strip_prefix(&job) == Some(body.kind()),
    };
    if fits {
        return Ok(());
    }
    Err(DecodeError::Invalid {
        what: "event",
        detail: format!("its routing key is `{routing_key}` but its body is a `{kind}` event of job {}", event.job),
    })
}

/// Put `sender` (or [`UNVERIFIED`]) in place of every identity `event`'s body claims.
pub fn verify_identity(event: &mut Event, sender: Option<&str>) {
    let verified = sender.unwrap_or(UNVERIFIED).to_owned();
    match &mut event.body {
        EventBody::Queued(queued) => queued.queued_by = verified,
        EventBody::CancelRequested { by, .. } => *by = verified,
        EventBody::Accepted { .. }
        | EventBody::Started { .. }
        | EventBody::Log { .. }
        | EventBody::Heartbeat { .. }
        | EventBody::Output { .. }
        | EventBody::Completed(_)
        | EventBody::Unknown { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Command, Queued, Target};

    fn queued(by: &str) -> Event {
        Event {
            v: protocol::VERSION,
            job: uuid::Uuid::now_v7(),
            seq: 0,
            ts: 0,
            runner: String::new(),
            attempt: 1,
            body: EventBody::Queued(Queued {
                operation: "build".into(),
                project: "p".into(),
                command: Command::Shell("true".into()),
                args: vec![],
                env_keys: vec![],
                target: Target::Any,
                timeout_ms: None,
                retry_on_lost: false,
                queued_by: by.into(),
                created_at_ms: 0,
                group: None,
                not_before_ms: None,
                retry: None,
                secrets: Vec::new(),
            }),
        }
    }

    #[test]
    fn a_body_that_claims_an_identity_is_overruled_by_the_broker() {
        let mut event = queued("mallory@nowhere");
        verify_identity(&mut event, Some("alice"));
        assert!(matches!(&event.body, EventBody::Queued(q) if q.queued_by == "alice"));
        let mut event = queued("mallory@nowhere");
        verify_identity(&mut event, None);
        assert!(matches!(&event.body, EventBody::Queued(q) if q.queued_by == UNVERIFIED));
    }
}
