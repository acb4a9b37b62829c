//! A job's events for its page, live: server-sent events read from the history stream from the
//! job's creation (`lookup::JobEvents`), then on as the job runs, until it ends.
//!
//! Log lines go out as `log` events (stdout and stderr told apart, the ANSI escapes a job
//! printed removed), the job's state as `state` events when it changes (also to `lost` when its
//! runner goes silent), and outputs as `output` events. It changes nothing.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use runway_broker::protocol::{EventBody, LogLine, Stream as Output, now_ms};
use runway_worker::history::{JobRecord, State as JobState};

use super::{PageError, Ui};
use crate::lookup::{self, JobEvents, JobRead};

/// `/jobs/{id}/events`.
pub(super) async fn job_events(State(ui): State<Arc<Ui>>, Path(id): Path<String>) -> Result<Response, PageError> {
    let record = lookup::resolve(&ui.conn, &ui.topology, &id).await?;
    let events = JobEvents::open(&ui.conn, &ui.topology, record.id, record.created_at_ms()).await?;
    let follow = Follow { events, record: JobRecord::new(record.id), ended: false, shown: None };
    Ok(Sse::new(sse_stream(follow)).keep_alive(KeepAlive::default()).into_response())
}

/// Where following a job stands.
struct Follow {
    events: JobEvents,
    record: JobRecord,
    ended: bool,
    /// The state the page was last sent.
    shown: Option<JobState>,
}

impl Follow {
    /// A `state` event if the job's state as of `at_ms` is not the one the page shows.
    fn state_change(&mut self, at_ms: u64) -> Option<SseEvent> {
        let state = self.record.state(at_ms);
        if self.shown == Some(state) {
            return None;
        }
        self.shown = Some(state);
        self.ended = state.is_final();
        let data = serde_json::json!({ "state": state.as_str(), "final": state.is_final() });
        Some(SseEvent::default().event("state").data(data.to_string()))
    }
}

/// How long a quiet job goes before the page's state is checked against the clock (a runner
/// silent for three heartbeat intervals makes the job lost).
const QUIET_CHECK: Duration = Duration::from_secs(1);

fn sse_stream(follow: Follow) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    stream::unfold(follow, |mut follow| async move {
        if follow.ended {
            return None;
        }
        loop {
            let read = match tokio::time::timeout(QUIET_CHECK, follow.events.next()).await {
                Ok(Ok(Some(read))) => read,
                // The stream or the connection ended: the page keeps what it has.
                Ok(Ok(None) | Err(_)) => return None,
                // Nothing for a while: once the history is caught up, today's clock says whether
                // the job's runner went silent. (Reading the stream is cancel-safe.)
                Err(_) => {
                    if follow.events.caught_up()
                        && let Some(sse) = follow.state_change(now_ms())
                    {
                        return Some((Ok(sse), follow));
                    }
                    continue;
                }
            };
            let JobRead::Event(event, _, sender) = read else { continue };
            // What the job's history does not believe (not its runner's) is not shown.
            if !follow.record.apply(&event, sender.as_deref()) {
                continue;
            }
            let sse = match &event.body {
                EventBody::Log { lines } => SseEvent::default().event("log").data(log_json(lines)),
                EventBody::Output { key, value } => SseEvent::default()
                    .event("output")
                    .data(serde_json::json!({ "key": key, "value": value }).to_string()),
                EventBody::Heartbeat { .. } => continue,
                // The state as of the event: replaying an old heartbeat at today's clock would
                // call a job lost that was running then.
                _ => match follow.state_change(event.ts) {
                    Some(sse) => sse,
                    None => continue,
                },
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
