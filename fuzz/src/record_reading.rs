//! Read everything a `JobRecord` offers at a given now (state, silence, completion, times,
//! Debug text) and assert what must hold whatever the events were.
//!
//! The CLI's own printing of a record (`job list`, `job inspect`) is in runway-producer and not
//! read here.

use runway_worker::history::{JobRecord, State, uuid_ms};

/// Panics (a finding, to libFuzzer) when a reading of `record` at `now` contradicts another.
pub fn read_record(record: &JobRecord, now: u64) {
    let state = record.state(now);
    assert_eq!(State::parse(state.as_str()), Some(state), "a state's name parses back");
    let _ = format!("{record:?} {state:?} {}", uuid_ms(record.id));
    let _ = (record.created_at_ms(), record.finished_at_ms());
    match (record.last_attempt(), record.completed()) {
        (None, _) => assert!(matches!(state, State::Queued | State::Cancelled), "no attempt, yet {state:?}"),
        (Some(_), Some(completed)) => {
            let _ = completed.status.to_string();
            assert_eq!(state.as_str(), completed.status.as_str(), "the latest completion decides");
            assert!(state.is_final(), "a completed job is final");
            assert_eq!(record.silence(now), None, "a completed job is never silent");
        }
        (Some(attempt), None) => match record.silence(now) {
            Some(silence) => {
                assert_eq!(state, State::Lost, "silence is lost");
                assert_eq!(silence.runner, attempt.runner);
                assert_eq!(silence.last_seen_ms, attempt.last_seen_ms);
                assert!(record.silence(now.saturating_add(1)).is_some(), "silence only grows");
            }
            None => assert_eq!(state, State::Running, "an attempt heard from is running"),
        },
    }
}
