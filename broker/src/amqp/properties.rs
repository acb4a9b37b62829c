//! Message properties both ways: runway's [`Properties`] to lapin's `BasicProperties` for a
//! publish, and back for a delivery, headers included.
//!
//! Only what runway reads comes back: headers of other types than strings and integers are
//! left out. AMQP timestamps are whole seconds, so milliseconds are rounded down on the way out.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

use super::short;
use crate::Result;
use crate::message::{HeaderValue, Properties};

/// A broker integer as a count: below zero is 0, beyond `u32` is `u32::MAX`.
pub(super) fn clamp_u32(value: i64) -> u32 {
    u32::try_from(value.max(0)).unwrap_or(u32::MAX)
}

pub(super) fn basic_properties(properties: &Properties) -> Result<BasicProperties> {
    let mut basic = BasicProperties::default();
    if let Some(id) = &properties.message_id {
        basic = basic.with_message_id(short("message_id", id)?);
    }
    if let Some(id) = &properties.correlation_id {
        basic = basic.with_correlation_id(short("correlation_id", id)?);
    }
    if let Some(kind) = &properties.kind {
        basic = basic.with_type(short("message type", kind)?);
    }
    if let Some(content_type) = &properties.content_type {
        basic = basic.with_content_type(short("content_type", content_type)?);
    }
    if let Some(ms) = properties.timestamp_ms {
        basic = basic.with_timestamp(ms / 1000);
    }
    if let Some(reply_to) = &properties.reply_to {
        basic = basic.with_reply_to(short("reply_to", reply_to)?);
    }
    if let Some(user_id) = &properties.user_id {
        basic = basic.with_user_id(short("user_id", user_id)?);
    }
    if properties.persistent {
        basic = basic.with_delivery_mode(2);
    }
    if !properties.headers.is_empty() {
        let mut headers = FieldTable::default();
        for (key, value) in &properties.headers {
            let value = match value {
                HeaderValue::Str(text) => AMQPValue::LongString(LongString::from(text.as_str())),
                HeaderValue::Int(number) => AMQPValue::LongLongInt(*number),
                HeaderValue::List(items) => AMQPValue::FieldArray(
                    items
                        .iter()
                        .map(|item| AMQPValue::LongString(LongString::from(item.as_str())))
                        .collect::<Vec<_>>()
                        .into(),
                ),
            };
            headers.insert(short("header name", key)?, value);
        }
        basic = basic.with_headers(headers);
    }
    Ok(basic)
}

/// The properties runway reads; headers of other types than strings and integers are left out.
pub(super) fn properties(basic: &BasicProperties) -> Properties {
    let text = |value: &Option<ShortString>| value.as_ref().map(ToString::to_string);
    let headers = basic
        .headers()
        .as_ref()
        .map(|table| {
            table.inner().iter().filter_map(|(key, value)| Some((key.to_string(), header_value(value)?))).collect()
        })
        .unwrap_or_default();
    Properties {
        message_id: text(basic.message_id()),
        correlation_id: text(basic.correlation_id()),
        kind: text(basic.kind()),
        content_type: text(basic.content_type()),
        timestamp_ms: basic.timestamp().map(|secs| secs.saturating_mul(1000)),
        reply_to: text(basic.reply_to()),
        user_id: text(basic.user_id()),
        persistent: *basic.delivery_mode() == Some(2),
        headers,
    }
}

fn header_value(value: &AMQPValue) -> Option<HeaderValue> {
    match value {
        AMQPValue::LongString(text) => Some(HeaderValue::Str(text.to_string())),
        AMQPValue::ShortString(text) => Some(HeaderValue::Str(text.to_string())),
        AMQPValue::ShortShortInt(number) => Some(HeaderValue::Int(i64::from(*number))),
        AMQPValue::ShortShortUInt(number) => Some(HeaderValue::Int(i64::from(*number))),
        AMQPValue::ShortInt(number) => Some(HeaderValue::Int(i64::from(*number))),
        AMQPValue::ShortUInt(number) => Some(HeaderValue::Int(i64::from(*number))),
        AMQPValue::LongInt(number) => Some(HeaderValue::Int(i64::from(*number))),
        AMQPValue::LongUInt(number) => Some(HeaderValue::Int(i64::from(*number))),
        AMQPValue::LongLongInt(number) => Some(HeaderValue::Int(*number)),
        AMQPValue::Timestamp(stamp) => i64::try_from(*stamp).ok().map(HeaderValue::Int),
        // An array of strings only (a `CC` header); `x-death`'s array of tables is not read.
        AMQPValue::FieldArray(items) => items
            .as_slice()
            .iter()
            .map(|item| match item {
                AMQPValue::LongString(text) => Some(text.to_string()),
                AMQPValue::ShortString(text) => Some(text.to_string()),
                _ => None,
            })
            .collect::<Option<Vec<String>>>()
            .map(HeaderValue::List),
        AMQPValue::Boolean(_)
        | AMQPValue::Float(_)
        | AMQPValue::Double(_)
        | AMQPValue::DecimalValue(_)
        | AMQPValue::FieldTable(_)
        | AMQPValue::ByteArray(_)
        | AMQPValue::Void => None,
    }
}

pub(super) fn header_int(headers: Option<&FieldTable>, key: &str) -> Option<i64> {
    match header_value(headers?.inner().get(key)?)? {
        HeaderValue::Int(number) => Some(number),
        HeaderValue::Str(_) | HeaderValue::List(_) => None,
    }
}
