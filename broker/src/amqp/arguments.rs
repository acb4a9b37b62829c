//! The `x-` arguments runway sends with queue declarations and consumes: queue kinds, expiry,
//! delivery limits, dead-letter exchanges, replica counts, stream retention and stream offsets.
//!
//! It only encodes options into AMQP field tables; what the options should be is the topology's
//! choice, and whether the broker accepts them is the broker's.

use std::time::Duration;

use lapin::types::{AMQPValue, FieldTable};

use super::short;
use crate::Result;
use crate::message::{ConsumeOptions, QueueKind, QueueOptions, StreamOffset};

/// The prefetch of a stream consumer that asked for no limit: RabbitMQ requires one for streams.
const STREAM_PREFETCH: u16 = 100;

/// The `x-` arguments of a queue declaration. A classic queue gets no `x-queue-type`, so that it
/// matches queues declared by clients that do not send one.
pub(super) fn queue_arguments(options: &QueueOptions) -> Result<FieldTable> {
    let mut arguments = FieldTable::default();
    match options.kind {
        QueueKind::Classic => {}
        QueueKind::Quorum => {
            arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        }
        QueueKind::Stream => {
            arguments.insert("x-queue-type".into(), AMQPValue::LongString("stream".into()));
        }
    }
    match (options.kind, options.replicas) {
        (QueueKind::Quorum, Some(replicas)) => {
            arguments.insert("x-quorum-initial-group-size".into(), AMQPValue::LongLongInt(i64::from(replicas)));
        }
        (QueueKind::Stream, Some(replicas)) => {
            arguments.insert("x-initial-cluster-size".into(), AMQPValue::LongLongInt(i64::from(replicas)));
        }
        (QueueKind::Classic, _) | (_, None) => {}
    }
    if let Some(expires) = options.expires {
        arguments.insert("x-expires".into(), AMQPValue::LongLongInt(millis(expires)));
    }
    if let Some(limit) = options.delivery_limit {
        arguments.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(i64::from(limit)));
    }
    if let Some(exchange) = &options.dead_letter_exchange {
        short("dead-letter exchange name", exchange)?;
        arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(exchange.as_str().into()));
    }
    if let Some(ttl) = options.message_ttl {
        arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(millis(ttl)));
    }
    if let Some(age) = options.max_age {
        arguments.insert("x-max-age".into(), AMQPValue::LongString(max_age(age).into()));
    }
    if let Some(bytes) = options.max_length_bytes {
        arguments.insert("x-max-length-bytes".into(), AMQPValue::LongLongInt(i64::try_from(bytes).unwrap_or(i64::MAX)));
    }
    if options.single_active_consumer {
        arguments.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    }
    Ok(arguments)
}

/// A stream retention age as RabbitMQ writes it: the largest of D, h, m, s that divides it, in whole
/// seconds rounded up. (RabbitMQ also knows Y and M, whose lengths are its own choice; not used.)
fn max_age(age: Duration) -> String {
    let secs = (age.as_secs() + u64::from(age.subsec_nanos() > 0)).max(1);
    for (unit, size) in [("D", 86_400), ("h", 3_600), ("m", 60)] {
        if secs.is_multiple_of(size) {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

/// Where a stream consumer starts (`x-stream-offset`).
fn stream_offset(offset: StreamOffset) -> AMQPValue {
    match offset {
        StreamOffset::First => AMQPValue::LongString("first".into()),
        StreamOffset::Next => AMQPValue::LongString("next".into()),
        StreamOffset::Offset(offset) => AMQPValue::LongLongInt(i64::try_from(offset).unwrap_or(i64::MAX)),
        // An AMQP timestamp, in seconds: rounding down starts under a second early, never late.
        StreamOffset::Timestamp(ms) => AMQPValue::Timestamp(ms / 1000),
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The `x-` arguments and the prefetch of a consumer. An `offset` means the queue is a stream,
/// which RabbitMQ serves only with a prefetch.
pub(super) fn consume_arguments(options: &ConsumeOptions) -> (FieldTable, u16) {
    let mut arguments = FieldTable::default();
    let mut prefetch = options.prefetch;
    if let Some(offset) = options.offset {
        arguments.insert("x-stream-offset".into(), stream_offset(offset));
        if prefetch == 0 {
            prefetch = STREAM_PREFETCH;
        }
    }
    if let Some(timeout) = options.consumer_timeout {
        arguments.insert("x-consumer-timeout".into(), AMQPValue::LongLongInt(millis(timeout)));
    }
    (arguments, prefetch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_uses_the_largest_unit_that_fits() {
        assert_eq!(max_age(Duration::from_secs(7 * 86_400)), "7D");
        assert_eq!(max_age(Duration::from_secs(3_600)), "1h");
        assert_eq!(max_age(Duration::from_secs(90 * 60)), "90m");
        assert_eq!(max_age(Duration::from_secs(61)), "61s");
        assert_eq!(max_age(Duration::from_millis(1_500)), "2s");
        assert_eq!(max_age(Duration::ZERO), "1s");
    }

    #[test]
    fn a_stream_consumer_without_a_limit_gets_one_and_a_timestamp_offset_in_seconds() {
        let options = ConsumeOptions {
            offset: Some(StreamOffset::Timestamp(1_700_000_000_999)),
            ..ConsumeOptions::with_prefetch(0)
        };
        let (arguments, prefetch) = consume_arguments(&options);
        assert_eq!(prefetch, STREAM_PREFETCH);
        assert_eq!(arguments.inner().get("x-stream-offset"), Some(&AMQPValue::Timestamp(1_700_000_000)));
        let (arguments, prefetch) = consume_arguments(&ConsumeOptions::with_prefetch(0));
        assert_eq!((arguments.inner().len(), prefetch), (0, 0), "a plain queue keeps no limit");
    }
}
