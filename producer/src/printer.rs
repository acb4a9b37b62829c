//! Printing one job's events, decoded once by the caller: human (the job's stdout and stderr,
//! runway's status lines) or `--json`; it skips what it printed already and says how the job ended.
//!
//! It reads nothing from the broker and queues or cancels nothing: `attach` and `logs` feed it.

use std::collections::BTreeMap;
use std::io::{self, Write};

use runway_broker::protocol::{self, Completed, Event, EventBody, Status, Stream};
use runway_worker::history::JobRecord;

use crate::format;

/// How events are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// The job's stdout to stdout, stderr to stderr, and status lines on stderr.
    Human { quiet: bool },
    /// One event per line on stdout, as received.
    Json,
}

/// Prints the events of one job and keeps what the end needs.
#[derive(Debug)]
pub struct Printer {
    style: Style,
    operation: String,
    stdout: io::BufWriter<io::Stdout>,
    stderr: io::Stderr,
    /// The `(attempt, seq)` of the last runner event printed.
    last_seen: (u32, u64),
    outputs: BTreeMap<String, String>,
    /// Set once stdout is gone (a closed pipe): stop writing, keep following.
    stdout_closed: bool,
    /// Prefix each line with the time the runner read it.
    timestamps: bool,
    /// A lost attempt is not the end: another runner runs the job again (`retry_on_lost`).
    retry_on_lost: bool,
    /// The events printed, folded: what a completion alone does not say (how long a lost
    /// attempt ran).
    record: Option<JobRecord>,
    /// Warnings (events not believed) are said: not with `--quiet`, even where status lines
    /// are off.
    warn: bool,
    /// Colour the outcome line (a terminal, no `NO_COLOR`).
    colour: bool,
}

impl Printer {
    pub fn new(style: Style, operation: &str) -> Printer {
        Printer {
            style,
            operation: operation.to_owned(),
            stdout: io::BufWriter::with_capacity(256 * 1024, io::stdout()),
            stderr: io::stderr(),
            last_seen: (0, 0),
            outputs: BTreeMap::new(),
            stdout_closed: false,
            timestamps: false,
            retry_on_lost: false,
            record: None,
            warn: style != Style::Human { quiet: true },
            colour: crate::colour::on_stderr(),
        }
    }

    /// Whether a lost attempt is followed by another (the job's `retry_on_lost`).
    pub fn set_retry_on_lost(&mut self, retry_on_lost: bool) {
        self.retry_on_lost = retry_on_lost;
    }

    pub fn set_timestamps(&mut self, timestamps: bool) {
        self.timestamps = timestamps;
    }

    /// Keep the job's output but drop runway's own status lines.
    pub fn set_status_quiet(&mut self, quiet: bool) {
        if let Style::Human { .. } = self.style {
            self.style = Style::Human { quiet };
        }
    }

    fn stamp(&self, t: u64) -> Option<String> {
        self.timestamps.then(|| format!("{} ", runway_worker::times::rfc3339_millis(t)))
    }

    /// A status line on stderr (human style only).
    pub fn status(&mut self, line: &str) {
        if self.style == (Style::Human { quiet: false }) {
            let _ = self.stdout.flush();
            let _ = writeln!(self.stderr, "runway: {line}");
        }
    }

    /// An event that could not be decoded: said, and otherwise skipped.
    pub fn undecodable(&mut self, err: &protocol::DecodeError) {
        self.status(&format!("ignoring an event that cannot be read: {err}"));
    }

    /// Print one event sent by the broker-verified `sender`; `body` is the event as received,
    /// which `--json` prints as it is. An event the job's history does not believe (not sent by
    /// the attempt's runner, an attempt that cannot be) is counted and not printed. Returns the
    /// completion once the job ended.
    pub fn event(&mut self, event: &Event, body: &[u8], sender: Option<&str>) -> Option<Completed> {
        let record = self.record.get_or_insert_with(|| JobRecord::new(event.job));
        if !record.apply(event, sender) {
            return None;
        }
        // Seq 0 is the producer's own record (queued, cancel requested); a runner's events count
        // from 1 in each attempt.
        if event.seq > 0 {
            // A runner publishes again what the broker had not confirmed when its connection
            // dropped, and a reconnected follower reads the history again: skip what was printed.
            if (event.attempt, event.seq) <= self.last_seen {
                return None;
            }
            let expected = if event.attempt > self.last_seen.0 { 1 } else { self.last_seen.1 + 1 };
            if event.seq != expected {
                self.status(&format!("event {} arrived where {expected} was expected", event.seq));
            }
            self.last_seen = (event.attempt, event.seq);
        }
        if self.style == Style::Json {
            self.json_line(body);
        }
        let record = self.record.as_ref().expect("the record was just made");
        // The fold's completion of the attempt: the first one, with a lost attempt's run time.
        let folded = record.attempts.get(&event.attempt).and_then(|attempt| attempt.completed.clone());
        match &event.body {
            EventBody::Queued(_) | EventBody::CancelRequested { .. } => None,
            EventBody::Accepted { hostname, .. } if event.attempt > 1 => {
                let (operation, attempt) = (&self.operation, event.attempt);
                self.status(&format!(
                    "{operation} attempt {attempt} accepted by runner {} on {hostname}",
                    event.runner
                ));
                None
            }
            EventBody::Accepted { hostname, .. } => {
                self.status(&format!("{} accepted by runner {} on {hostname}", self.operation, event.runner));
                None
            }
            EventBody::Started { pid, .. } => {
                self.status(&format!("{} started (pid {pid}, attempt {})", self.operation, event.attempt));
                None
            }
            EventBody::Log { lines } => {
                if matches!(self.style, Style::Human { .. }) {
                    self.lines(lines);
                }
                None
            }
            EventBody::Heartbeat { .. } => None,
            EventBody::Output { key, value } => {
                self.outputs.insert(key.clone(), value.clone());
                None
            }
            EventBody::Completed(completed) => {
                let completed = folded.unwrap_or_else(|| completed.clone());
                if let Some(line) = retry_line(event.attempt, &completed) {
                    self.status(&line);
                    return None;
                }
                if completed.status == Status::Lost && self.retry_on_lost {
                    let error = completed.error.as_deref().unwrap_or("its runner went silent");
                    let took = format::duration(completed.duration_ms);
                    self.status(&format!(
                        "attempt {} was lost after {took}: {error}; following the next attempt",
                        event.attempt
                    ));
                    return None;
                }
                self.finished(&completed);
                Some(completed)
            }
            EventBody::Unknown { kind, .. } => {
                self.status(&format!("ignoring an event of a kind this runway does not know: `{kind}`"));
                None
            }
        }
    }

    fn json_line(&mut self, body: &[u8]) {
        if self.stdout_closed {
            return;
        }
        let written = self.stdout.write_all(body).and_then(|()| self.stdout.write_all(b"\n"));
        let flushed = written.and_then(|()| self.stdout.flush());
        self.check(flushed);
    }

    fn lines(&mut self, lines: &[protocol::LogLine]) {
        for line in lines {
            let bytes = line.bytes();
            let stamp = self.stamp(line.t);
            match line.s {
                Stream::Stdout if !self.stdout_closed => {
                    if let Some(stamp) = &stamp {
                        let written = self.stdout.write_all(stamp.as_bytes());
                        self.check(written);
                    }
                    let written = self
                        .stdout
                        .write_all(&bytes)
                        .and_then(|()| if line.p { Ok(()) } else { self.stdout.write_all(b"\n") });
                    self.check(written);
                }
                Stream::Stdout => {}
                Stream::Stderr => {
                    // Keep the two streams in the order the runner read them.
                    let _ = self.stdout.flush();
                    let mut err = self.stderr.lock();
                    if let Some(stamp) = &stamp {
                        let _ = err.write_all(stamp.as_bytes());
                    }
                    let _ = err.write_all(&bytes);
                    if !line.p {
                        let _ = err.write_all(b"\n");
                    }
                }
            }
        }
        let flushed = self.stdout.flush();
        self.check(flushed);
    }

    fn check(&mut self, result: io::Result<()>) {
        if result.is_err() {
            self.stdout_closed = true;
        }
    }

    /// How many events were not believed (see [`JobRecord::apply`]).
    pub fn ignored(&self) -> u64 {
        self.record.as_ref().map_or(0, |record| record.ignored)
    }

    /// Say how many events were not believed, if any (even where status lines are off: it is a
    /// warning, not a status; never on stdout, so `--json` stays one event per line).
    pub fn say_ignored(&mut self) {
        let ignored = self.ignored();
        if ignored > 0 && self.warn {
            let _ = self.stdout.flush();
            let events = if ignored == 1 { "event" } else { "events" };
            let _ = writeln!(self.stderr, "runway: ignored {ignored} {events} not sent by the job's runner");
        }
    }

    fn finished(&mut self, completed: &Completed) {
        self.say_ignored();
        let _ = self.stdout.flush();
        let took = format::duration(completed.duration_ms);
        let outcome = match (completed.status, completed.exit_code) {
            (Status::Success, _) => format!("{} succeeded in {took}", self.operation),
            (Status::Failed, Some(code)) => format!("{} failed with exit code {code} after {took}", self.operation),
            (Status::Rejected, _) => format!("{} rejected", self.operation),
            (status, _) => format!("{} ended {status} after {took}", self.operation),
        };
        let outcome = match &completed.error {
            Some(error) if completed.status != Status::Success => format!("{outcome}: {error}"),
            _ => outcome,
        };
        let style = match completed.status {
            Status::Success => anstyle::AnsiColor::Green.on_default(),
            _ => anstyle::AnsiColor::Red.on_default().bold(),
        };
        self.status(&crate::colour::paint(&outcome, style, self.colour));
        let outputs = if completed.outputs.is_empty() { &self.outputs } else { &completed.outputs };
        let lines: Vec<String> = outputs.iter().map(|(key, value)| format!("output {key}={value}")).collect();
        for line in lines {
            self.status(&line);
        }
    }
}

/// What a follower says when an attempt ended and the job was queued again: "attempt 1 failed
/// (exit 1); retrying in 30s as attempt 2"; `None` for an attempt that was the job's last.
/// The wait is the retry's delay, as the runner that queued it said.
pub fn retry_line(attempt: u32, completed: &Completed) -> Option<String> {
    let next = completed.retrying?;
    let how = match (completed.status, completed.exit_code) {
        (Status::Failed, Some(code)) => format!("failed (exit {code})"),
        (Status::TimedOut, _) => "timed out".to_owned(),
        (Status::Lost, _) => {
            format!("was lost: {}", completed.error.as_deref().unwrap_or("its runner went silent"))
        }
        (status, _) => status.as_str().to_owned(),
    };
    let when = match next.delay_ms {
        0 => "now".to_owned(),
        wait => format!("in {}", format::wait(wait)),
    };
    Some(format!("attempt {attempt} {how}; retrying {when} as attempt {}", next.attempt))
}
