//! A job's events for its page, live: server-sent events read from the history stream from the
//! job's creation (`lookup::JobEvents`), then on as the job runs, until it ends.
//!
//! Log lines go out as `log` events (stdout and stderr told apart, the ANSI escapes a job
//! printed removed), the job's state as `state` events after each other event, and outputs as
//! `output` events. It changes nothing.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use runway_broker::protocol::{EventBody, LogLine, Stream as Output};
use runway_worker::history::JobRecord;

use super::{PageError, Ui};
use crate::lookup::{self, JobEvents, JobRead};

/// `/jobs/{id}/events`.
pub(super) async fn job_events(State(ui): State<Arc<Ui>>, Path(id): Path<String>) -> Result<Response, PageError> {
    let record = lookup::resolve(&ui.conn, &ui.topology, &id).await?;
    let events = JobEvents::open(&ui.conn, &ui.topology, record.id, record.created_at_ms()).await?;
    let follow = Follow { events, record: JobRecord::new(record.id), ended: false };
    Ok(Sse::new(sse_stream(follow)).keep_alive(KeepAlive::default()).into_response())
}

/// Where following a job stands.
struct Follow {
    events: JobEvents,
    record: JobRecord,
    ended: bool,
}

fn sse_stream(follow: Follow) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    stream::unfold(follow, |mut follow| async move {
        if follow.ended {
            return None;
        }
        loop {
            let read = match follow.events.next().await {
                Ok(Some(read)) => read,
                // The stream or the connection ended: the page keeps what it has.
                Ok(None) | Err(_) => return None,
            };
            let JobRead::Event(event, _) = read else { continue };
            follow.record.apply(&event);
            let sse = match &event.body {
                EventBody::Log { lines } => SseEvent::default().event("log").data(log_json(lines)),
                EventBody::Output { key, value } => SseEvent::default()
                    .event("output")
                    .data(serde_json::json!({ "key": key, "value": value }).to_string()),
                EventBody::Heartbeat { .. } => continue,
                _ => {
                    // The state as of the event: replaying an old heartbeat at today's clock
                    // would call a running job lost (the page's load says lost, when it is).
                    let state = follow.record.state(event.ts);
                    follow.ended = state.is_final();
                    SseEvent::default()
                        .event("state")
                        .data(serde_json::json!({ "state": state.as_str(), "final": state.is_final() }).to_string())
                }
            };
            return Some((Ok(sse), follow));
        }
    })
}

/// A batch of log lines as the page reads them: stream, text without ANSI escapes, partial.
fn log_json(lines: &[LogLine]) -> String {
    let lines: Vec<serde_json::Value> = lines
        .iter()
        .map(|line| {
            let text = String::from_utf8_lossy(&line.bytes()).into_owned();
            serde_json::json!({
                "stream": match line.s { Output::Stdout => "stdout", Output::Stderr => "stderr" },
                "text": strip_ansi_escapes::strip_str(&text),
                "partial": line.p,
            })
        })
        .collect();
    serde_json::Value::Array(lines).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_keep_their_stream_and_lose_their_colours() {
        let lines = [
            LogLine { s: Output::Stdout, t: 1, l: "\u{1b}[32mgreen\u{1b}[0m ok".to_owned(), b64: false, p: false },
            LogLine { s: Output::Stderr, t: 2, l: "bad".to_owned(), b64: false, p: true },
        ];
        let json: serde_json::Value = serde_json::from_str(&log_json(&lines)).expect("json");
        assert_eq!(json[0]["stream"], "stdout");
        assert_eq!(json[0]["text"], "green ok");
        assert_eq!(json[1]["stream"], "stderr");
        assert_eq!(json[1]["partial"], true);
    }
}
