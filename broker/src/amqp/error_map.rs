//! How lapin's errors become runway's [`Error`]: by the broker's reply code where there is one,
//! naming the queue, exchange or binding the operation was about.
//!
//! It decides no retries; the classification methods on [`Error`] do that.

use std::fmt;

use lapin::ErrorKind;
use lapin::protocol::{AMQPError, AMQPErrorKind, AMQPSoftError};

use crate::Error;

/// What an operation was about, to name it in errors.
#[derive(Clone, Copy)]
pub(super) enum Subject<'a> {
    Queue(&'a str),
    Exchange(&'a str),
    Binding { queue: &'a str, exchange: &'a str },
}

impl fmt::Display for Subject<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Queue(queue) => write!(f, "queue `{queue}`"),
            Subject::Exchange(exchange) => write!(f, "exchange `{exchange}`"),
            Subject::Binding { queue, exchange } => write!(f, "binding of queue `{queue}` to exchange `{exchange}`"),
        }
    }
}

impl Subject<'_> {
    /// What a NOT_FOUND with this text is missing.
    fn missing(self, text: &str) -> String {
        match self {
            Subject::Binding { exchange, .. } if text.contains("no exchange") => format!("exchange `{exchange}`"),
            Subject::Binding { queue, .. } => format!("queue `{queue}`"),
            Subject::Queue(_) | Subject::Exchange(_) => self.to_string(),
        }
    }

    fn queue(self) -> String {
        match self {
            Subject::Queue(name) | Subject::Exchange(name) | Subject::Binding { queue: name, .. } => name.to_owned(),
        }
    }
}

/// Map a lapin error to ours, by the broker's reply code where there is one.
pub(super) fn map_error(host: &str, subject: Subject<'_>, error: &lapin::Error) -> Error {
    match error.kind() {
        ErrorKind::ProtocolError(amqp) => {
            let text = reply_text(amqp);
            match amqp.kind() {
                AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND) => Error::NotFound { what: subject.missing(&text) },
                AMQPErrorKind::Soft(AMQPSoftError::RESOURCELOCKED) => Error::ResourceLocked { queue: subject.queue() },
                AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED) => {
                    Error::PreconditionFailed(format!("{subject}: {text}"))
                }
                AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) => {
                    Error::AccessRefused { what: subject.to_string(), reason: text }
                }
                AMQPErrorKind::Soft(
                    AMQPSoftError::CONTENTTOOLARGE | AMQPSoftError::NOROUTE | AMQPSoftError::NOCONSUMERS,
                ) => Error::Protocol(format!("{subject}: {}", amqp.get_message())),
                // A connection-level error: the broker closed the whole connection.
                AMQPErrorKind::Hard(_) => Error::ConnectionClosed(format!("{host}: {}", amqp.get_message())),
            }
        }
        ErrorKind::IOError(_)
        | ErrorKind::RuntimeShutdownError(_)
        | ErrorKind::MissingHeartbeatError
        | ErrorKind::InvalidChannel(_)
        | ErrorKind::InvalidChannelState(..)
        | ErrorKind::InvalidConnectionState(_) => Error::ConnectionClosed(format!("{host} ({subject}): {error}")),
        // lapin's kinds are non-exhaustive; the rest are client-side failures.
        _ => Error::Protocol(format!("{subject} on {host}: {error}")),
    }
}

/// The broker's words without the reply name RabbitMQ puts first ("NOT_FOUND - no queue ...").
fn reply_text(amqp: &AMQPError) -> String {
    let message = amqp.get_message().as_str();
    match message.split_once(" - ") {
        Some((name, rest)) if name.bytes().all(|byte| byte.is_ascii_uppercase() || byte == b'_') => rest.to_owned(),
        _ => message.to_owned(),
    }
}

/// Why a connection could not be made; lapin's text carries no credentials.
pub(super) fn connect_error(host: &str, error: &lapin::Error) -> Error {
    let reason = match error.kind() {
        ErrorKind::ProtocolError(amqp) => reply_text(amqp),
        _ => error.to_string(),
    };
    Error::Unreachable { host: host.to_owned(), reason }
}
