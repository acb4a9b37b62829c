//! The web view's pages, rendered on the server with maud (which escapes every value it is
//! given): the jobs list with its filters, a job, the runners, the queues, an error.
//!
//! It reads nothing from the broker; `ui` hands it what to show.

use maud::{DOCTYPE, Markup, PreEscaped, html};
use runway_broker::QueueInfo;
use runway_broker::protocol::RunnerInfo;
use runway_worker::history::JobRecord;

use super::JobsQuery;
use crate::format;

/// The page's look: small, and no request for anything outside the binary.
const STYLE: &str = r#"
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d2125; }
header { background: #24292f; color: #fff; padding: .5em 1em; display: flex; gap: 1.5em; align-items: baseline; }
header a { color: #fff; text-decoration: none; font-weight: 600; }
header .server { margin-left: auto; opacity: .7; font-size: 12px; }
main { padding: 1em; }
table { border-collapse: collapse; }
th, td { text-align: left; padding: .25em .75em .25em 0; border-bottom: 1px solid #e4e7eb; vertical-align: top; }
th { font-size: 12px; text-transform: uppercase; color: #57606a; }
code, pre, .id { font-family: ui-monospace, monospace; }
.state { font-weight: 600; padding: 0 .4em; border-radius: 3px; background: #eaeef2; }
.state.success { background: #dafbe1; color: #116329; }
.state.failed, .state.lost, .state.timed_out, .state.rejected { background: #ffebe9; color: #a40e26; }
.state.running { background: #ddf4ff; color: #0550ae; }
.state.cancelled { background: #fff8c5; color: #7d4e00; }
form.filters { margin-bottom: 1em; display: flex; gap: .5em; flex-wrap: wrap; align-items: end; }
form.filters label { display: flex; flex-direction: column; font-size: 12px; color: #57606a; }
pre#log { background: #0d1117; color: #e6edf3; padding: .75em; min-height: 4em; max-height: 60vh; overflow: auto; white-space: pre-wrap; }
pre#log .stderr { color: #ff7b72; }
pre#log .stderr::before { content: "err "; color: #8b949e; }
button.cancel { background: #cf222e; color: #fff; border: 0; padding: .4em 1em; border-radius: 4px; cursor: pointer; }
.note { color: #57606a; font-size: 12px; }
"#;

/// A job's page follows its log live: lines arrive as server-sent events.
const JOB_SCRIPT: &str = r#"
(function () {
  var page = document.getElementById("job");
  var log = document.getElementById("log");
  var state = document.getElementById("state");
  var source = new EventSource(page.dataset.events);
  source.addEventListener("log", function (message) {
    var atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    JSON.parse(message.data).forEach(function (line) {
      var span = document.createElement("span");
      span.className = line.stream;
      span.textContent = line.text + (line.partial ? "" : "\n");
      log.appendChild(span);
    });
    if (atEnd) { log.scrollTop = log.scrollHeight; }
  });
  source.addEventListener("state", function (message) {
    var now = JSON.parse(message.data);
    state.textContent = now.state;
    state.className = "state " + now.state;
    if (now.final) {
      source.close();
      var cancel = document.getElementById("cancel-form");
      if (cancel) { cancel.remove(); }
    }
  });
  source.addEventListener("output", function (message) {
    var output = JSON.parse(message.data);
    var table = document.getElementById("outputs");
    var row = table.insertRow();
    row.insertCell().textContent = output.key;
    row.insertCell().textContent = output.value;
  });
})();
"#;

/// Lists keep themselves current: every 3 s each `[data-refresh]` part of the page is fetched
/// again and replaced, only when it changed (and not while the tab is hidden).
const REFRESH_SCRIPT: &str = r#"
(function () {
  var parts = document.querySelectorAll("[data-refresh]");
  if (parts.length === 0) { return; }
  setInterval(function () {
    if (document.hidden) { return; }
    fetch(location.href, { headers: { "Accept": "text/html" } })
      .then(function (answer) { return answer.ok ? answer.text() : null; })
      .then(function (text) {
        if (!text) { return; }
        var fresh = new DOMParser().parseFromString(text, "text/html");
        parts.forEach(function (part) {
          var next = fresh.getElementById(part.id);
          if (next && next.innerHTML !== part.innerHTML) { part.innerHTML = next.innerHTML; }
        });
      })
      .catch(function () {});
  }, 3000);
})();
"#;

fn layout(title: &str, server: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " · runway" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    a href="/jobs" { "Jobs" }
                    a href="/runners" { "Runners" }
                    a href="/queues" { "Queues" }
                    span.server { (server) }
                }
                main { (body) }
                script { (PreEscaped(REFRESH_SCRIPT)) }
            }
        }
    }
}

fn state_badge(state: &str) -> Markup {
    html! { span class=(format!("state {state}")) { (state) } }
}

/// The jobs, newest first, with the filters that chose them.
pub(super) fn jobs(server: &str, records: &[JobRecord], query: &JobsQuery, now_ms: u64) -> Markup {
    let value = |field: &Option<String>| field.clone().unwrap_or_default();
    let body = html! {
        h1 { "Jobs" }
        form.filters method="get" action="/jobs" {
            label { "state"
                select name="state" {
                    option value="" { "any" }
                    @for state in ["queued", "running", "success", "failed", "cancelled", "timed_out", "lost", "rejected"] {
                        option value=(state) selected[query.state.as_deref() == Some(state)] { (state) }
                    }
                }
            }
            label { "operation" input name="operation" value=(value(&query.operation)) size="12"; }
            label { "project" input name="project" value=(value(&query.project)) size="12"; }
            label { "queued within" input name="since" value=(query.since.clone().unwrap_or_else(|| "7d".to_owned())) size="6"; }
            button type="submit" { "Filter" }
        }
        div id="jobs-list" data-refresh {
        @if records.is_empty() {
            p.note id="no-jobs" { "No job matches." }
        } @else {
            table id="jobs" {
                thead { tr { th { "id" } th { "operation" } th { "project" } th { "state" } th { "submitter" }
                    th { "runner" } th { "try" } th { "queued" } th { "finished" } th { "duration" } } }
                tbody {
                    @for record in records {
                        @let state = record.state(now_ms);
                        @let attempt = record.last_attempt();
                        tr.job data-id=(record.id) {
                            td.id { a href=(format!("/jobs/{}", record.id)) title=(record.id) { (format::short_id(record.id)) } }
                            td.operation { (record.operation.as_deref().unwrap_or("?")) }
                            td { (record.project.as_deref().unwrap_or("?")) }
                            td { (state_badge(state.as_str())) }
                            td { (record.queued_by.as_deref().unwrap_or("-")) }
                            td { (attempt.map_or("-", |attempt| attempt.runner.as_str())) }
                            td { (attempt.map_or(0, |attempt| attempt.number)) }
                            td { (format::time(Some(record.created_at_ms()))) }
                            td { (format::time(record.finished_at_ms())) }
                            td { (record.completed().map_or_else(|| "-".to_owned(), |done| format::duration(done.duration_ms))) }
                        }
                    }
                }
            }
        }
        }
    };
    layout("Jobs", server, body)
}

/// One job: its status, attempts, outputs, its log live, and a cancel button if it may.
pub(super) fn job(server: &str, record: &JobRecord, can_cancel: bool, now_ms: u64) -> Markup {
    let state = record.state(now_ms);
    let body = html! {
        div id="job" data-events=(format!("/jobs/{}/events", record.id)) {
            h1 { (record.operation.as_deref().unwrap_or("?")) " " span.id { (format::short_id(record.id)) } }
            table {
                tr { th { "state" } td { span id="state" class=(format!("state {}", state.as_str())) { (state.as_str()) } } }
                tr { th { "job" } td.id { (record.id) } }
                tr { th { "project" } td { (record.project.as_deref().unwrap_or("?")) } }
                @if let Some(target) = &record.target { tr { th { "target" } td { (format::target(target)) } } }
                tr { th { "submitter" } td { (record.queued_by.as_deref().unwrap_or("-")) } }
                tr { th { "queued" } td { (format::time(Some(record.created_at_ms()))) } }
                @if let Some((at, by)) = &record.cancel_requested {
                    tr { th { "cancel" } td { "requested by " (by) " at " (format::time(Some(*at))) } }
                }
            }
            @if !state.is_final() {
                @if can_cancel {
                    form id="cancel-form" method="post" action=(format!("/jobs/{}/cancel", record.id)) {
                        p { button.cancel id="cancel" type="submit" { "Cancel job" } }
                    }
                } @else {
                    p.note { "Read-only: this view cannot cancel jobs." }
                }
            }
            h2 { "Attempts" }
            table id="attempts" {
                thead { tr { th { "#" } th { "runner" } th { "host" } th { "started" } th { "ended" } th { "exit" } th { "duration" } th { "error" } } }
                tbody {
                    @for attempt in record.attempts.values() {
                        tr {
                            td { (attempt.number) }
                            td { (attempt.runner) }
                            td { (attempt.hostname) }
                            td { (format::time(attempt.started_at_ms.or(attempt.accepted_at_ms))) }
                            @match &attempt.completed {
                                Some(done) => {
                                    td { (state_badge(done.status.as_str())) " " (format::time(attempt.finished_at_ms)) }
                                    td { (done.exit_code.map_or("-".to_owned(), |code| code.to_string())) }
                                    td { (format::duration(done.duration_ms)) }
                                    td { (done.error.as_deref().unwrap_or("")) }
                                }
                                None => { td { "running, last heard " (format::time(Some(attempt.last_seen_ms))) } td {} td {} td {} }
                            }
                        }
                    }
                }
            }
            h2 { "Outputs" }
            table id="outputs" {
                @for (key, value) in &record.outputs { tr { td { (key) } td { (value) } } }
            }
            h2 { "Log" }
            p.note { "stdout in white, stderr in red; colours the job printed are removed." }
            pre id="log" {}
        }
        script { (PreEscaped(JOB_SCRIPT)) }
    };
    layout(&format!("job {}", format::short_id(record.id)), server, body)
}

/// The runners that answered a ping.
pub(super) fn runners(server: &str, runners: &[RunnerInfo], now_ms: u64) -> Markup {
    let body = html! {
        h1 { "Runners" }
        p.note { "Every runner that answered a ping just now; the last heartbeat is that answer." }
        div id="runners-list" data-refresh {
        @if runners.is_empty() {
            p.note id="no-runners" { "No runner answered." }
        } @else {
            table id="runners" {
                thead { tr { th { "id" } th { "labels" } th { "slots in use" } th { "kind" } th { "host" } th { "version" } th { "up" } th { "last heartbeat" } } }
                tbody {
                    @for info in runners {
                        @let labels = runway_broker::topology::canonical_labels(&info.labels);
                        tr {
                            td.id { (info.id) }
                            td { @if labels.is_empty() { "-" } @else { (labels) } }
                            td { (info.running) " of " (info.concurrency) }
                            td { @if info.in_process { "cli" } @else if info.by_id_only { "by-id" } @else { "daemon" } }
                            td { (info.hostname) }
                            td { (info.version) }
                            td { (format::duration(now_ms.saturating_sub(info.started_at_ms))) }
                            td { (format::time(Some(now_ms))) }
                        }
                    }
                }
            }
        }
        }
    };
    layout("Runners", server, body)
}

/// Job queues with their depth and consumers.
pub(super) fn queues(server: &str, queues: &[QueueInfo]) -> Markup {
    let body = html! {
        h1 { "Queues" }
        p.note { "The queue for any runner, those of the live runners and their label sets, and the dead letters. Depth counts jobs ready for a runner." }
        div id="queues-list" data-refresh {
        table id="queues" {
            thead { tr { th { "queue" } th { "depth" } th { "consumers" } } }
            tbody {
                @for queue in queues {
                    tr { td { code { (queue.name) } } td { (queue.messages) } td { (queue.consumers) } }
                }
            }
        }
        }
    };
    layout("Queues", server, body)
}

/// What went wrong, as a page.
pub(super) fn error(message: &str) -> Markup {
    layout("error", "", html! { h1 { "Error" } p id="error" { (message) } p { a href="/jobs" { "Back to the jobs" } } })
}
