//! The broker error type, shared by both implementations so callers handle one set of cases.
//!
//! It names the queue, exchange or host involved; it never holds a URL with its password.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// What went wrong talking to a broker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The broker could not be reached or refused the connection.
    #[error("cannot reach the broker at {host}: {reason}")]
    Unreachable { host: String, reason: String },
    /// The TLS handshake with the broker failed; `problem` says why, in words.
    #[error("cannot reach the broker at {host}: {problem}")]
    Tls { host: String, problem: TlsProblem },
    /// TLS settings that cannot work: an unreadable or empty file, a certificate without its key,
    /// TLS files for a URL without TLS, EXTERNAL authentication without a client certificate.
    #[error("{0}")]
    TlsSettings(String),
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
            // A TLS refusal is retried as a refused login is: a renewed certificate mends it.
            Error::Unreachable { .. }
            | Error::Tls { .. }
            | Error::ConnectTimeout { .. }
            | Error::ConnectionClosed(_)
            | Error::Nacked { .. } => true,
            Error::TlsSettings(_)
            | Error::Unroutable { .. }
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
            Error::Unreachable { .. }
            | Error::Tls { .. }
            | Error::ConnectTimeout { .. }
            | Error::ConnectionClosed(_) => true,
            Error::TlsSettings(_)
            | Error::Unroutable { .. }
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

/// Why a TLS handshake failed, as the user can act on it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsProblem {
    /// The server's certificate chains to no CA runway trusts; `ca` is the file given, if any.
    UnknownCa { ca: Option<PathBuf> },
    /// The host name dialled is not among the certificate's names (`names`, when known).
    WrongHost { name: String, names: Vec<String> },
    /// The server's certificate expired (at `not_after`, when known).
    Expired { not_after: Option<SystemTime> },
    /// The server's certificate is not valid yet (until `not_before`, when known).
    NotYetValid { not_before: Option<SystemTime> },
    /// The server ended the handshake with a TLS alert: most often it refused the client certificate.
    Refused { alert: String },
    /// Any other TLS failure, with the TLS library's words.
    Other(String),
}

impl fmt::Display for TlsProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsProblem::UnknownCa { ca: None } => {
                f.write_str("the server's certificate is not signed by a CA runway trusts; give the CA with --tls-ca")
            }
            TlsProblem::UnknownCa { ca: Some(ca) } => write!(
                f,
                "the server's certificate is not signed by a CA runway trusts (the system's, and those in {}); \
                 give the CA that signed it with --tls-ca",
                ca.display()
            ),
            TlsProblem::WrongHost { name, names } => {
                f.write_str("the server's certificate is not valid for the host name")?;
                if !name.is_empty() {
                    write!(f, " `{name}`")?;
                }
                if !names.is_empty() {
                    write!(f, " (it names {})", names.join(", "))?;
                }
                f.write_str("; dial a name the certificate holds, or reissue it with this one")
            }
            TlsProblem::Expired { not_after } => {
                f.write_str("the server's certificate expired")?;
                if let Some(at) = not_after {
                    write!(f, " on {}", humantime::format_rfc3339_seconds(*at))?;
                }
                f.write_str("; renew it, or check this machine's clock")
            }
            TlsProblem::NotYetValid { not_before } => {
                f.write_str("the server's certificate is not valid yet")?;
                if let Some(at) = not_before {
                    write!(f, " (from {})", humantime::format_rfc3339_seconds(*at))?;
                }
                f.write_str("; check this machine's clock")
            }
            TlsProblem::Refused { alert } => write!(
                f,
                "the server refused the TLS handshake ({alert}); if it wants a client certificate, \
                 give --tls-cert and --tls-key with one signed by a CA it trusts"
            ),
            TlsProblem::Other(reason) => write!(f, "the TLS handshake failed: {reason}"),
        }
    }
}

fn humanize(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
