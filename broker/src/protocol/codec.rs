//! The codec of the wire protocol: bodies to bytes and back, with the version check, the bound
//! on a job's size and the lenient reads of what a body that does not decode still says.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Event, EventBody, Job, VERSION};

/// Why bytes could not be decoded as a protocol message.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("unsupported protocol version {found} (this build speaks version {VERSION})")]
    Version { found: u64 },
    #[error("no protocol version: the `v` field is missing")]
    NoVersion,
    #[error("invalid {what}: {detail}")]
    Invalid { what: &'static str, detail: String },
    #[error("message of {size} bytes is larger than the bound of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
}

/// Encode any protocol value. Serialising these types cannot fail: every map key is a string.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("protocol types serialise infallibly: string keys, no custom Serialize")
}

/// Decode a protocol body, telling a bad version apart from a malformed body.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &'static str) -> Result<T, DecodeError> {
    // Fast path: a well-formed body of our version decodes in one pass.
    match serde_json::from_slice::<T>(bytes) {
        Ok(value) => {
            let version = probe_version(bytes)?;
            if version != u64::from(VERSION) {
                return Err(DecodeError::Version { found: version });
            }
            Ok(value)
        }
        Err(err) => {
            let version = probe_version(bytes)?;
            if version != u64::from(VERSION) {
                return Err(DecodeError::Version { found: version });
            }
            Err(DecodeError::Invalid { what, detail: err.to_string() })
        }
    }
}

/// The event kinds this build knows, as [`EventBody::kind`] names them.
const KNOWN_EVENT_KINDS: [&str; 8] =
    ["queued", "cancel_requested", "accepted", "started", "log", "heartbeat", "output", "completed"];

/// Decode an event; an event of a kind this build does not know becomes
/// [`EventBody::Unknown`] rather than an error, so a reader shows it instead of dropping it.
pub fn decode_event(bytes: &[u8]) -> Result<Event, DecodeError> {
    let err = match decode::<Event>(bytes, "event") {
        Ok(event) => return Ok(event),
        Err(err) => err,
    };
    // The slow path, only for bodies the typed decode refused.
    #[derive(Deserialize)]
    struct Lenient {
        job: Uuid,
        seq: u64,
        ts: u64,
        runner: String,
        attempt: u32,
        body: LenientBody,
    }
    #[derive(Deserialize)]
    struct LenientBody {
        kind: String,
        #[serde(default)]
        data: serde_json::Value,
    }
    if !matches!(err, DecodeError::Invalid { what: "event", .. }) {
        return Err(err);
    }
    match serde_json::from_slice::<Lenient>(bytes) {
        Ok(event) if !KNOWN_EVENT_KINDS.contains(&event.body.kind.as_str()) => Ok(Event {
            v: VERSION,
            job: event.job,
            seq: event.seq,
            ts: event.ts,
            runner: event.runner,
            attempt: event.attempt,
            body: EventBody::Unknown { kind: event.body.kind, data: event.body.data },
        }),
        _ => Err(err),
    }
}

/// Decode a job and check what the type system cannot: a runnable command this build knows.
pub fn decode_job(bytes: &[u8], limit: usize) -> Result<Job, DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge { size: bytes.len(), limit });
    }
    let job: Job = decode(bytes, "job")?;
    if job.command.is_empty() {
        return Err(DecodeError::Invalid { what: "job", detail: "empty command".to_owned() });
    }
    if let Some(unknown) = job.command.unknown() {
        return Err(DecodeError::Invalid { what: "job", detail: unknown });
    }
    Ok(job)
}

/// The id and attempt a job body names, read leniently: a job that does not decode as a whole
/// (an unknown builtin, an empty command) still says whose it is, so that the runner that refuses
/// it can tell the job's followers. The attempt is 1 when the body does not give a usable one.
pub fn probe_job_id(bytes: &[u8]) -> Option<(Uuid, u32)> {
    #[derive(Deserialize)]
    struct Probe {
        id: Uuid,
        attempt: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(bytes).ok()?;
    let attempt = probe.attempt.and_then(|value| value.as_u64()).and_then(|n| u32::try_from(n).ok());
    Some((probe.id, attempt.filter(|n| *n > 0).unwrap_or(1)))
}

fn probe_version(bytes: &[u8]) -> Result<u64, DecodeError> {
    #[derive(Deserialize)]
    struct Probe {
        v: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(|err| DecodeError::Json(err.to_string()))?;
    match probe.v {
        None => Err(DecodeError::NoVersion),
        Some(serde_json::Value::Number(n)) => match n.as_u64() {
            Some(v) => Ok(v),
            None => Err(DecodeError::Invalid {
                what: "version",
                detail: format!("`v` is {n}, expected a positive integer"),
            }),
        },
        Some(other) => Err(DecodeError::Invalid {
            what: "version",
            detail: format!("`v` is {other}, expected a positive integer"),
        }),
    }
}
