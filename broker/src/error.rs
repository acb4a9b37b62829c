//! The broker error type, shared by both implementations so callers handle one set of cases.
//!
//! It names the queue, exchange or host involved; it never holds a URL with its password.

use std::time::Duration;

/// What went wrong talking to a broker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The broker could not be reached or refused the connection.
    #[error("cannot reach the broker at {host}: {reason}")]
    Unreachable { host: String, reason: String },
    /// Connecting did not finish within the bound.
    #[error("cannot reach the broker at {host}: no answer within {}", humanize(*after))]
    ConnectTimeout { host: String, after: Duration },
    /// The connection or channel is gone (closed by us, the broker, or the network).
    #[error("broker connection closed: {0}")]
    ConnectionClosed(String),
    /// A `mandatory` publish matched no queue.
    #[error("no queue is bound to exchange `{exchange}` for routing key `{routing_key}`")]
    Unroutable { exchange: String, routing_key: String },
    /// A queue or exchange does not exist.
    #[error("{what} does not exist")]
    NotFound { what: String },
    /// An exclusive queue belongs to another connection.
    #[error("queue `{queue}` is exclusive to another connection")]
    ResourceLocked { queue: String },
    /// A redeclaration disagrees with what exists, or an operation's precondition failed.
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    /// The broker refused to take responsibility for a published message.
    #[error("the broker refused the message published to `{exchange}`")]
    Nacked { exchange: String },
    /// The broker does not support something runway asked for.
    #[error("the broker does not support {0}")]
    NotSupported(String),
    /// The broker refused an operation for lack of permission (ACCESS_REFUSED, 403): `what` the
    /// operation was about, `reason` the broker's words (they name the resource and the user).
    #[error("the broker refused access to {what}: {reason}")]
    AccessRefused { what: String, reason: String },
    /// Any other protocol-level failure, with the broker's words.
    #[error("broker error: {0}")]
    Protocol(String),
}

impl Error {
    /// Whether the same call may succeed if tried again after a reconnect.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Unreachable { .. }
            | Error::ConnectTimeout { .. }
            | Error::ConnectionClosed(_)
            | Error::Nacked { .. } => true,
            Error::Unroutable { .. }
            | Error::NotFound { .. }
            | Error::ResourceLocked { .. }
            | Error::PreconditionFailed(_)
            | Error::NotSupported(_)
            | Error::AccessRefused { .. }
            | Error::Protocol(_) => false,
        }
    }

    /// Whether the broker itself cannot be reached (as opposed to refusing one request).
    pub fn is_unreachable(&self) -> bool {
        match self {
            Error::Unreachable { .. } | Error::ConnectTimeout { .. } | Error::ConnectionClosed(_) => true,
            Error::Unroutable { .. }
            | Error::NotFound { .. }
            | Error::ResourceLocked { .. }
            | Error::PreconditionFailed(_)
            | Error::Nacked { .. }
            | Error::NotSupported(_)
            | Error::AccessRefused { .. }
            | Error::Protocol(_) => false,
        }
    }
}

fn humanize(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
