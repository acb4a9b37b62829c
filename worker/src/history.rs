//! Job state derived from events: fold a job's events (from the index or history stream, or
//! live) into a record, and tell its state, including `lost` when its runner went silent.
//!
//! Nothing else stores job state. This module is pure: reading the streams is in `streams`.
//! It lives in the runner library because runners resolve redelivered jobs with it too.

use std::collections::{BTreeMap, BTreeSet};

use runway_broker::protocol::{Command, Completed, Event, EventBody, Retry, Status, Target};
use uuid::Uuid;

/// A job's state as an observer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Queued for later: a delayed job, or a retry waiting out its delay.
    Scheduled,
    Queued,
    Running,
    Success,
    Failed,
    Cancelled,
    TimedOut,
    Lost,
    Rejected,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Scheduled => "scheduled",
            State::Queued => "queued",
            State::Running => "running",
            State::Success => "success",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
            State::TimedOut => "timed_out",
            State::Lost => "lost",
            State::Rejected => "rejected",
        }
    }

    pub fn parse(text: &str) -> Option<State> {
        [
            State::Scheduled,
            State::Queued,
            State::Running,
            State::Success,
            State::Failed,
            State::Cancelled,
            State::TimedOut,
            State::Lost,
            State::Rejected,
        ]
        .into_iter()
        .find(|state| state.as_str() == text)
    }

    pub fn is_final(self) -> bool {
        match self {
            State::Scheduled | State::Queued | State::Running => false,
            State::Success | State::Failed | State::Cancelled | State::TimedOut | State::Lost | State::Rejected => true,
        }
    }

    fn of(status: Status) -> State {
        match status {
            Status::Success => State::Success,
            Status::Failed => State::Failed,
            Status::Cancelled => State::Cancelled,
            Status::TimedOut => State::TimedOut,
            Status::Lost => State::Lost,
            Status::Rejected => State::Rejected,
        }
    }
}

/// One attempt at running a job, on one runner.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attempt {
    pub number: u32,
    pub runner: String,
    pub hostname: String,
    pub accepted_at_ms: Option<u64>,
    pub started_at_ms: Option<u64>,
    pub pid: Option<u32>,
    /// The time of the latest event of this attempt: a heartbeat, or any other.
    pub last_seen_ms: u64,
    pub heartbeat_ms: u64,
    pub completed: Option<Completed>,
    pub finished_at_ms: Option<u64>,
    /// The broker-verified user who accepted this attempt: only its events about the attempt
    /// are believed (`None` where the broker does not say, as with EXTERNAL logins).
    pub sender: Option<String>,
}

/// Everything known about one job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobRecord {
    pub id: Uuid,
    pub operation: Option<String>,
    pub project: Option<String>,
    pub command: Option<Command>,
    pub args: Vec<String>,
    pub env_keys: Vec<String>,
    /// The names of the secrets the job asked its runner for.
    pub secrets: Vec<String>,
    pub target: Option<Target>,
    pub queued_by: Option<String>,
    pub timeout_ms: Option<u64>,
    /// A lost attempt is run again (the operation sets `retry_on_lost`).
    pub retry_on_lost: bool,
    pub queued_at_ms: Option<u64>,
    /// A delayed job: no runner takes it before this time.
    pub not_before_ms: Option<u64>,
    /// Its automatic retries.
    pub retry: Option<Retry>,
    pub cancel_requested: Option<(u64, String)>,
    /// Why it was cancelled, when that was not its canceller's own request.
    pub cancel_reason: Option<String>,
    /// Its concurrency group.
    pub group: Option<String>,
    pub attempts: BTreeMap<u32, Attempt>,
    pub outputs: BTreeMap<String, String>,
    /// Kinds of events this build does not know (a later version's) that the job had.
    pub unknown_kinds: BTreeSet<String>,
    /// Events not believed: sent by someone other than the attempt's runner, or about an
    /// attempt the history does not allow (see [`JobRecord::apply`]).
    pub ignored: u64,
}

/// Why a job counts as lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Silence {
    pub runner: String,
    pub last_seen_ms: u64,
}

impl JobRecord {
    pub fn new(id: Uuid) -> JobRecord {
        JobRecord { id, ..JobRecord::default() }
    }

    /// Take one event, sent by the broker-verified `sender`, into account, in the order the
    /// history stored them; say whether it was believed.
    ///
    /// A runner's event about attempt N is believed only from whoever accepted attempt N (the
    /// same verified user and runner name), and attempt N only where the history allows it: the
    /// first, or the one after an attempt that ended lost, failed or timed out (run again). A
    /// `lost` completion by another runner is believed only if the attempt was silent by then,
    /// and a `rejected` one only before anyone accepted the attempt. A second `queued` that
    /// differs from the first is not believed either. What is not believed is counted in
    /// `ignored` and changes nothing.
    pub fn apply(&mut self, event: &Event, sender: Option<&str>) -> bool {
        let believed = self.believe(event, sender);
        if !believed {
            self.ignored = self.ignored.saturating_add(1);
        }
        believed
    }

    fn believe(&mut self, event: &Event, sender: Option<&str>) -> bool {
        match &event.body {
            EventBody::Queued(queued) => {
                if let Some(queued_at_ms) = self.queued_at_ms {
                    // The same event read again (a follower catching up) is no news.
                    return queued_at_ms == queued.created_at_ms
                        && self.queued_by.as_deref() == Some(queued.queued_by.as_str())
                        && self.operation.as_deref() == Some(queued.operation.as_str());
                }
                self.operation = Some(queued.operation.clone());
                self.project = Some(queued.project.clone());
                self.command = Some(queued.command.clone());
                self.args = queued.args.clone();
                self.env_keys = queued.env_keys.clone();
                self.secrets = queued.secrets.clone();
                self.target = Some(queued.target.clone());
                self.queued_by = Some(queued.queued_by.clone());
                self.timeout_ms = queued.timeout_ms;
                self.retry_on_lost = queued.retry_on_lost;
                self.queued_at_ms = Some(queued.created_at_ms);
                self.not_before_ms = queued.not_before_ms;
                self.retry = queued.retry.as_deref().cloned();
                self.group = queued.group.clone();
                return true;
            }
            EventBody::CancelRequested { by, reason, .. } => {
                // The first request counts, but one by the submitter over one by someone else.
                let kept_is_submitters =
                    self.cancel_requested.as_ref().is_some_and(|(_, kept)| self.is_submitter(kept));
                if self.cancel_requested.is_none() || (!kept_is_submitters && self.is_submitter(by)) {
                    self.cancel_requested = Some((event.ts, by.clone()));
                    self.cancel_reason = reason.clone();
                }
                return true;
            }
            // Not knowing what it means, it says nothing of the attempt: noted, nothing more.
            EventBody::Unknown { kind, .. } => {
                self.unknown_kinds.insert(kind.clone());
                return true;
            }
            _ => {}
        }
        let sender = sender.map(str::to_owned);
        let Some(attempt) = self.attempts.get(&event.attempt) else {
            return self.open_attempt(event, sender);
        };
        let from_its_runner = attempt.sender == sender && attempt.runner == event.runner;
        if !from_its_runner && !Self::is_believable_lost(attempt, event) {
            return false;
        }
        let attempt = self.attempts.get_mut(&event.attempt).expect("the attempt was just found");
        let seen_before = attempt.last_seen_ms;
        attempt.last_seen_ms = attempt.last_seen_ms.max(event.ts);
        match &event.body {
            EventBody::Accepted { hostname, heartbeat_ms } => {
                attempt.accepted_at_ms.get_or_insert(event.ts);
                attempt.hostname.clone_from(hostname);
                attempt.heartbeat_ms = *heartbeat_ms;
            }
            EventBody::Started { pid, .. } => {
                attempt.started_at_ms = Some(event.ts);
                attempt.pid = Some(*pid);
            }
            EventBody::Output { key, value } => {
                self.outputs.insert(key.clone(), value.clone());
            }
            EventBody::Completed(completed) => {
                // The first completion of an attempt is the one that counts.
                if attempt.completed.is_none() {
                    let mut completed = completed.clone();
                    // Whoever records a lost attempt cannot know how long it ran (0): it ran
                    // from when it was taken up until its runner was last heard from.
                    if completed.status == Status::Lost && completed.duration_ms == 0 {
                        let began = attempt.started_at_ms.or(attempt.accepted_at_ms).unwrap_or(seen_before);
                        completed.duration_ms = seen_before.saturating_sub(began);
                    }
                    self.outputs.extend(completed.outputs.clone());
                    attempt.completed = Some(completed);
                    attempt.finished_at_ms = Some(event.ts);
                }
            }
            EventBody::Log { .. }
            | EventBody::Heartbeat { .. }
            | EventBody::Queued(_)
            | EventBody::CancelRequested { .. }
            | EventBody::Unknown { .. } => {}
        }
        true
    }

    /// The first event of attempt `event.attempt`: an `accepted` where the history allows that
    /// attempt, or a `rejected` completion of the first attempt nobody accepted.
    fn open_attempt(&mut self, event: &Event, sender: Option<String>) -> bool {
        let allowed = match event.attempt.checked_sub(1) {
            None => false,
            Some(0) => true,
            Some(previous) => self
                .attempts
                .get(&previous)
                .and_then(|a| a.completed.as_ref())
                .is_some_and(|c| matches!(c.status, Status::Lost | Status::Failed | Status::TimedOut)),
        };
        if !allowed || self.attempts.range(event.attempt..).next().is_some() {
            return false;
        }
        let opens = match &event.body {
            EventBody::Accepted { .. } => true,
            EventBody::Completed(c) => c.status == Status::Rejected && event.attempt == 1,
            _ => false,
        };
        if !opens {
            return false;
        }
        let attempt = Attempt {
            number: event.attempt,
            runner: event.runner.clone(),
            heartbeat_ms: 5000,
            sender,
            ..Attempt::default()
        };
        self.attempts.insert(event.attempt, attempt);
        self.believe_opened(event)
    }

    /// Apply the event that opened its attempt (now believed by construction).
    fn believe_opened(&mut self, event: &Event) -> bool {
        let sender = self.attempts.get(&event.attempt).and_then(|a| a.sender.clone());
        self.believe(event, sender.as_deref())
    }

    /// A `lost` completion written by another runner (seq 0, no runner): believed only if the
    /// attempt's runner was silent for three intervals when it was written (or the attempt
    /// already ended lost: the same event read again).
    fn is_believable_lost(attempt: &Attempt, event: &Event) -> bool {
        let EventBody::Completed(completed) = &event.body else { return false };
        let silent = match &attempt.completed {
            // Read again (a follower catching up): the attempt ended lost already.
            Some(ended) => ended.status == Status::Lost,
            None => event.ts.saturating_sub(attempt.last_seen_ms) > attempt.heartbeat_ms.saturating_mul(3),
        };
        completed.status == Status::Lost && event.seq == 0 && event.runner.is_empty() && silent
    }

    /// Whether `user` is the job's verified submitter.
    pub fn is_submitter(&self, user: &str) -> bool {
        self.queued_by.as_deref() == Some(user)
    }

    /// The latest attempt.
    pub fn last_attempt(&self) -> Option<&Attempt> {
        self.attempts.values().next_back()
    }

    /// The runner of the latest attempt has been silent for three heartbeat intervals.
    pub fn silence(&self, now_ms: u64) -> Option<Silence> {
        let attempt = self.last_attempt()?;
        if attempt.completed.is_some() {
            return None;
        }
        let allowed = attempt.heartbeat_ms.saturating_mul(3);
        (now_ms.saturating_sub(attempt.last_seen_ms) > allowed)
            .then(|| Silence { runner: attempt.runner.clone(), last_seen_ms: attempt.last_seen_ms })
    }

    pub fn state(&self, now_ms: u64) -> State {
        match self.last_attempt() {
            // Queued again as the next attempt, which no runner took yet.
            Some(Attempt { completed: Some(Completed { retrying: Some(next), .. }), .. }) => {
                self.waiting_state(Some(next.at_ms), now_ms)
            }
            Some(Attempt { completed: Some(completed), .. }) => State::of(completed.status),
            Some(_) if self.silence(now_ms).is_some() => State::Lost,
            Some(_) => State::Running,
            None => self.waiting_state(self.not_before_ms, now_ms),
        }
    }

    /// The state of a job no runner has taken (yet, or again), due at `due_ms`.
    fn waiting_state(&self, due_ms: Option<u64>, now_ms: u64) -> State {
        match due_ms {
            // Cancelled by its submitter while it waited: no runner will ever run it. Runners
            // honour a cancel from someone else only if their policy allows that user
            // (`--allow-cancel`), which readers cannot know: they wait for the runner's word.
            _ if self.cancel_requested.as_ref().is_some_and(|(_, by)| self.is_submitter(by)) => State::Cancelled,
            Some(due) if due > now_ms => State::Scheduled,
            _ => State::Queued,
        }
    }

    /// When the job (or its next attempt) is due, while it waits for its time.
    pub fn due_at_ms(&self, now_ms: u64) -> Option<u64> {
        let due = match self.last_attempt() {
            Some(attempt) => attempt.completed.as_ref()?.retrying?.at_ms,
            None => self.not_before_ms?,
        };
        (self.state(now_ms) == State::Scheduled).then_some(due)
    }

    /// Attempts made or under way: the latest attempt's number (1 before any ran).
    pub fn attempt_count(&self) -> u32 {
        self.last_attempt().map_or(1, |attempt| attempt.number)
    }

    /// The completion of the latest attempt, if it ended.
    pub fn completed(&self) -> Option<&Completed> {
        self.last_attempt().and_then(|attempt| attempt.completed.as_ref())
    }

    pub fn finished_at_ms(&self) -> Option<u64> {
        self.last_attempt().and_then(|attempt| attempt.finished_at_ms)
    }

    /// When the job was queued: recorded, or else read from its UUID v7 id.
    pub fn created_at_ms(&self) -> u64 {
        self.queued_at_ms.unwrap_or_else(|| uuid_ms(self.id))
    }
}

/// The millisecond timestamp inside a UUID v7.
pub fn uuid_ms(id: Uuid) -> u64 {
    id.get_timestamp().map_or(0, |ts| {
        let (secs, nanos) = ts.to_unix();
        secs * 1000 + u64::from(nanos) / 1_000_000
    })
}

#[cfg(test)]
mod tests {
    use runway_broker::protocol::{Queued, Retrying, VERSION};

    use super::*;

    fn event(job: Uuid, seq: u64, ts: u64, attempt: u32, body: EventBody) -> Event {
        Event { v: VERSION, job, seq, ts, runner: "r1".into(), attempt, body }
    }

    fn queued(job: Uuid) -> Event {
        let body = EventBody::Queued(Queued {
            operation: "build".into(),
            project: "shop".into(),
            command: Command::Shell("make".into()),
            args: vec![],
            env_keys: vec!["SECRET".into()],
            secrets: Vec::new(),
            target: Target::Any,
            timeout_ms: None,
            retry_on_lost: false,
            queued_by: "me@host".into(),
            group: None,
            not_before_ms: None,
            retry: None,
            created_at_ms: 1_000,
        });
        Event { runner: String::new(), ..event(job, 0, 1_000, 1, body) }
    }

    fn completed(status: Status, code: i32) -> EventBody {
        EventBody::Completed(Completed {
            status,
            exit_code: Some(code),
            signal: None,
            duration_ms: 10,
            outputs: BTreeMap::from([("k".into(), "v".into())]),
            error: None,
            retrying: None,
        })
    }

    #[test]
    fn a_delayed_job_is_scheduled_until_its_time_and_a_retried_one_until_its_next_attempt_is_due() {
        let id = Uuid::now_v7();
        let mut record = JobRecord::new(id);
        let mut queued = queued(id);
        if let EventBody::Queued(body) = &mut queued.body {
            body.not_before_ms = Some(5_000);
        }
        record.apply(&queued, None);
        assert_eq!(record.state(4_999), State::Scheduled);
        assert_eq!(record.due_at_ms(4_999), Some(5_000));
        assert_eq!(record.state(5_000), State::Queued, "due: waiting for a runner");
        record.apply(&event(id, 1, 5_100, 1, EventBody::Accepted { hostname: "h".into(), heartbeat_ms: 1_000 }), None);
        let EventBody::Completed(mut failed) = completed(Status::Failed, 1) else { unreachable!() };
        failed.retrying = Some(Retrying { attempt: 2, at_ms: 8_000, delay_ms: 2_800 });
        record.apply(&event(id, 2, 5_200, 1, EventBody::Completed(failed)), None);
        assert_eq!(record.state(6_000), State::Scheduled, "its next attempt waits");
        assert_eq!(record.due_at_ms(6_000), Some(8_000));
        assert_eq!(record.attempt_count(), 1);
        record.apply(
            &Event {
                runner: String::new(),
                ..event(
                    id,
                    0,
                    6_500,
                    1,
                    EventBody::CancelRequested { by: "me@host".into(), force: false, reason: None },
                )
            },
            None,
        );
        assert_eq!(record.state(6_600), State::Cancelled, "cancelled while it waited");
        assert_eq!(record.due_at_ms(6_600), None);
    }

    #[test]
    fn a_job_moves_from_queued_to_running_to_done() {
        let id = Uuid::now_v7();
        let mut record = JobRecord::new(id);
        record.apply(&queued(id), None);
        assert_eq!(record.state(2_000), State::Queued);
        record.apply(&event(id, 1, 2_000, 1, EventBody::Accepted { hostname: "h".into(), heartbeat_ms: 1_000 }), None);
        record.apply(&event(id, 2, 2_001, 1, EventBody::Started { pid: 9, argv: vec![] }), None);
        assert_eq!(record.state(2_500), State::Running);
        record.apply(&event(id, 3, 2_010, 1, completed(Status::Failed, 3)), None);
        assert_eq!(record.state(99_999), State::Failed, "a finished job is never lost");
        assert_eq!(record.completed().and_then(|c| c.exit_code), Some(3));
        assert_eq!(record.outputs["k"], "v");
        assert_eq!(record.operation.as_deref(), Some("build"));
    }

    #[test]
    fn a_silent_runner_makes_the_job_lost_after_three_intervals() {
        let id = Uuid::now_v7();
        let mut record = JobRecord::new(id);
        record.apply(&event(id, 1, 10_000, 1, EventBody::Accepted { hostname: "h".into(), heartbeat_ms: 1_000 }), None);
        record.apply(&event(id, 2, 11_000, 1, EventBody::Heartbeat { interval_ms: 1_000 }), None);
        assert_eq!(record.state(14_000), State::Running, "exactly three intervals is not yet silence");
        assert_eq!(record.state(14_001), State::Lost);
        assert_eq!(record.silence(14_001), Some(Silence { runner: "r1".into(), last_seen_ms: 11_000 }));
    }

    #[test]
    fn a_cancel_by_its_submitter_before_any_runner_took_it_is_cancelled_and_anothers_is_not_yet() {
        let id = Uuid::now_v7();
        let cancel = |by: &str| Event {
            runner: String::new(),
            ..event(id, 0, 1_500, 1, EventBody::CancelRequested { by: by.into(), force: false, reason: None })
        };
        let mut record = JobRecord::new(id);
        record.apply(&queued(id), None);
        record.apply(&cancel("mallory"), None);
        assert_eq!(record.state(2_000), State::Queued, "only a runner knows whether it may");
        record.apply(&cancel("me@host"), None);
        assert_eq!(record.state(2_000), State::Cancelled);
        assert_eq!(record.cancel_requested.as_ref().map(|(_, by)| by.as_str()), Some("me@host"));
    }

    fn accepted(id: Uuid, attempt: u32, ts: u64) -> Event {
        event(id, 1, ts, attempt, EventBody::Accepted { hostname: "h".into(), heartbeat_ms: 1_000 })
    }

    #[test]
    fn the_next_attempt_follows_a_lost_one_and_decides() {
        let id = Uuid::now_v7();
        let mut record = JobRecord::new(id);
        assert!(record.apply(&accepted(id, 1, 1_000), Some("runner")));
        let lost = Completed::without_exit(Status::Lost, "silent".into());
        assert!(record.apply(
            &Event { runner: String::new(), ..event(id, 0, 9_000, 1, EventBody::Completed(lost)) },
            Some("other")
        ));
        assert!(record.apply(&accepted(id, 2, 9_001), Some("other")));
        assert!(record.apply(&event(id, 2, 9_500, 2, completed(Status::Success, 0)), Some("other")));
        assert_eq!(record.state(1_000_000), State::Success);
        assert_eq!((record.attempts.len(), record.ignored), (2, 0));
    }

    #[test]
    fn events_not_sent_by_the_attempts_runner_are_ignored_and_counted() {
        let id = Uuid::now_v7();
        let mut record = JobRecord::new(id);
        record.apply(&queued(id), Some("alice"));
        assert!(record.apply(&accepted(id, 1, 2_000), Some("runner")));
        // A forged completion from another account, and one from the same account under
        // another runner's name, change nothing.
        assert!(!record.apply(&event(id, 2, 2_100, 1, completed(Status::Success, 0)), Some("mallory")));
        let renamed = Event { runner: "r2".into(), ..event(id, 2, 2_100, 1, completed(Status::Success, 0)) };
        assert!(!record.apply(&renamed, Some("runner")));
        // Log lines with seq 0 from someone else are not the job's output.
        let log = EventBody::Log { lines: vec![] };
        assert!(!record.apply(&event(id, 0, 2_200, 1, log), Some("mallory")));
        // A phantom attempt, however large, is not an attempt.
        let phantom = EventBody::Heartbeat { interval_ms: 1_000 };
        assert!(!record.apply(&event(id, 1, 2_300, u32::MAX, phantom), Some("runner")));
        assert!(!record.apply(&accepted(id, u32::MAX, 2_300), Some("runner")));
        // A `lost` while the runner is heard from is a lie.
        let lost = Completed::without_exit(Status::Lost, "made up".into());
        assert!(!record.apply(
            &Event { runner: String::new(), ..event(id, 0, 2_400, 1, EventBody::Completed(lost)) },
            Some("mallory")
        ));
        // A second `queued` that differs from the first does not rewrite the job.
        let mut forged = queued(id);
        if let EventBody::Queued(queued) = &mut forged.body {
            queued.operation = "deploy".into();
        }
        assert!(!record.apply(&forged, Some("mallory")));
        assert!(record.apply(&queued(id), Some("alice")), "the same queued read again is believed");
        assert_eq!(record.state(2_500), State::Running);
        assert_eq!(record.operation.as_deref(), Some("build"));
        assert_eq!(record.attempts.len(), 1);
        assert_eq!(record.ignored, 7);
        assert!(record.apply(&event(id, 2, 2_600, 1, completed(Status::Failed, 3)), Some("runner")));
        assert_eq!(record.state(2_700), State::Failed);
    }

    #[test]
    fn a_rejection_counts_only_before_anyone_accepted() {
        let id = Uuid::now_v7();
        let rejected = || Event {
            runner: "r9".into(),
            ..event(id, 0, 3_000, 1, EventBody::Completed(Completed::without_exit(Status::Rejected, "policy".into())))
        };
        let mut record = JobRecord::new(id);
        assert!(record.apply(&rejected(), Some("runner")));
        assert_eq!(record.state(3_000), State::Rejected);
        let mut record = JobRecord::new(id);
        record.apply(&accepted(id, 1, 2_000), Some("runner"));
        assert!(!record.apply(&rejected(), Some("mallory")));
        assert_eq!(record.state(2_500), State::Running);
    }

    #[test]
    fn a_lost_attempt_ran_until_its_runner_was_last_heard_from() {
        let id = Uuid::now_v7();
        let mut record = JobRecord::new(id);
        record.apply(&event(id, 1, 10_000, 1, EventBody::Accepted { hostname: "h".into(), heartbeat_ms: 1_000 }), None);
        record.apply(&event(id, 2, 10_500, 1, EventBody::Started { pid: 9, argv: vec![] }), None);
        record.apply(&event(id, 3, 14_500, 1, EventBody::Heartbeat { interval_ms: 1_000 }), None);
        let lost = Completed::without_exit(Status::Lost, "runner r1 went silent".into());
        record.apply(&Event { runner: String::new(), ..event(id, 0, 30_000, 1, EventBody::Completed(lost)) }, None);
        assert_eq!(record.completed().map(|c| c.duration_ms), Some(4_000));
    }

    #[test]
    fn an_unknown_event_kind_is_noted_and_changes_no_state() {
        let id = Uuid::now_v7();
        let mut record = JobRecord::new(id);
        record.apply(&queued(id), None);
        let unknown = EventBody::Unknown { kind: "paused".into(), data: serde_json::Value::Null };
        record.apply(&event(id, 1, 2_000, 1, unknown), None);
        assert_eq!(record.state(2_000), State::Queued);
        assert!(record.unknown_kinds.contains("paused"));
    }

    proptest::proptest! {
        /// No event, whatever its numbers, makes the fold or the state panic.
        #[test]
        fn any_numbers_fold_without_a_panic(
            seq in proptest::num::u64::ANY,
            ts in proptest::num::u64::ANY,
            attempt in proptest::num::u32::ANY,
            heartbeat_ms in proptest::num::u64::ANY,
            now in proptest::num::u64::ANY,
        ) {
            let id = Uuid::now_v7();
            let mut record = JobRecord::new(id);
            record.apply(&queued(id), None);
            record.apply(&event(id, seq, ts, attempt, EventBody::Accepted { hostname: "h".into(), heartbeat_ms }), None);
            record.apply(&event(id, seq, ts, attempt, EventBody::Heartbeat { interval_ms: heartbeat_ms }), None);
            let _ = record.state(now);
            let lost = Completed::without_exit(Status::Lost, String::new());
            record.apply(&event(id, 0, now, attempt, EventBody::Completed(lost)), None);
            let _ = (record.state(now), record.created_at_ms(), record.finished_at_ms());
        }
    }

    #[test]
    fn uuid_v7_carries_its_creation_time() {
        let before = runway_broker::protocol::now_ms();
        let id = Uuid::now_v7();
        let at = uuid_ms(id);
        assert!(at >= before && at <= before + 1_000, "{at} vs {before}");
    }
}
