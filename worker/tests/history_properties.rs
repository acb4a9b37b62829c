//! Property tests for the fold of a job's events into a `JobRecord`: no sequence of decodable
//! events (any job id, attempt, seq, timestamp, kind or size) panics the fold or anything that
//! reads or prints the record, and a well-formed history folds to the same record in any order.
//!
//! Printing a record for a user lives in the CLI (runway-producer); these tests cover what the
//! runner library itself derives. The fuzz targets in `fuzz/` cover the same ground from bytes.

use std::collections::BTreeMap;

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use runway_broker::protocol::{
    self, Builtin, Command, Completed, Event, EventBody, LogLine, Queued, Retrying, Status, Stream, Target, VERSION,
};
use runway_worker::history::{JobRecord, State, uuid_ms};
use uuid::Uuid;

/// The first millisecond of the year 10000: the far future no RFC 3339 printer can show.
const YEAR_10000_MS: u64 = 253_402_300_800_000;

/// A timestamp as a peer might send one: zero, small, about now, far in the future, or at the
/// very end of `u64`.
fn timestamp() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0),
        0..100_000u64,
        1_700_000_000_000..1_900_000_000_000u64,
        YEAR_10000_MS - 1_000..YEAR_10000_MS + 1_000,
        YEAR_10000_MS..u64::MAX,
        (0..1_000u64).prop_map(|back| u64::MAX - back),
        any::<u64>(),
    ]
}

/// A duration or interval in ms, including zero and absurd ones.
fn millis() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0), 0..100_000u64, (0..1_000u64).prop_map(|back| u64::MAX - back), any::<u64>()]
}

fn attempt_number() -> impl Strategy<Value = u32> {
    prop_oneof![0..4u32, Just(u32::MAX), any::<u32>()]
}

fn seq() -> impl Strategy<Value = u64> {
    prop_oneof![0..8u64, Just(u64::MAX), any::<u64>()]
}

/// Any version of UUID: a v1 or v6 id carries a time that decodes far in the future.
fn job_id() -> impl Strategy<Value = Uuid> {
    prop_oneof![any::<u128>().prop_map(Uuid::from_u128), Just(Uuid::nil()), Just(Uuid::max()), Just(Uuid::now_v7())]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![4 => "\\PC{0,12}", 1 => (0..70_000usize).prop_map(|len| "x".repeat(len))]
}

fn short_text() -> impl Strategy<Value = String> {
    "\\PC{0,8}"
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        text().prop_map(Command::Shell),
        vec(short_text(), 0..4).prop_map(Command::Argv),
        Just(Command::Builtin(Builtin::Noop)),
    ]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        Just(Target::Any),
        short_text().prop_map(Target::Runner),
        btree_map(short_text(), short_text(), 0..4).prop_map(Target::Labels),
    ]
}

fn status() -> impl Strategy<Value = Status> {
    prop_oneof![
        Just(Status::Success),
        Just(Status::Failed),
        Just(Status::Cancelled),
        Just(Status::TimedOut),
        Just(Status::Lost),
        Just(Status::Rejected),
    ]
}

/// Boxed, as `queued` is: the strategy types nest deep enough to overflow a test thread's stack.
fn completed() -> BoxedStrategy<Completed> {
    (
        status(),
        any::<Option<i32>>(),
        any::<Option<i32>>(),
        millis(),
        btree_map(short_text(), text(), 0..3),
        proptest::option::of(text()),
        proptest::option::of((any::<u32>(), timestamp(), millis())),
    )
        .prop_map(|(status, exit_code, signal, duration_ms, outputs, error, retrying)| Completed {
            status,
            exit_code,
            signal,
            duration_ms,
            outputs,
            error,
            retrying: retrying.map(|(attempt, at_ms, delay_ms)| Retrying { attempt, at_ms, delay_ms }),
        })
        .boxed()
}

/// Boxed: see `completed`.
fn queued() -> BoxedStrategy<Queued> {
    (
        (short_text(), short_text(), command(), vec(short_text(), 0..3), vec(short_text(), 0..3)),
        (target(), proptest::option::of(millis()), any::<bool>(), short_text(), timestamp()),
        (proptest::option::of(short_text()), proptest::option::of(timestamp())),
    )
        .prop_map(
            |(
                (operation, project, command, args, env_keys),
                (target, timeout_ms, retry_on_lost, queued_by, created_at_ms),
                (group, not_before_ms),
            )| Queued {
                operation,
                project,
                command,
                args,
                env_keys,
                target,
                timeout_ms,
                retry_on_lost,
                queued_by,
                created_at_ms,
                group,
                secrets: Vec::new(),
                not_before_ms,
                retry: None,
            },
        )
        .boxed()
}

fn log_line() -> impl Strategy<Value = LogLine> {
    (prop_oneof![Just(Stream::Stdout), Just(Stream::Stderr)], timestamp(), text(), any::<bool>(), any::<bool>())
        .prop_map(|(s, t, l, b64, p)| LogLine { s, t, l, b64, p })
}

/// Every kind of event body, with any values its fields can carry.
fn body() -> impl Strategy<Value = EventBody> {
    prop_oneof![
        queued().prop_map(EventBody::Queued),
        (short_text(), any::<bool>(), proptest::option::of(short_text()))
            .prop_map(|(by, force, reason)| EventBody::CancelRequested { by, force, reason }),
        (short_text(), millis()).prop_map(|(hostname, heartbeat_ms)| EventBody::Accepted { hostname, heartbeat_ms }),
        (any::<u32>(), vec(short_text(), 0..3)).prop_map(|(pid, argv)| EventBody::Started { pid, argv }),
        vec(log_line(), 0..8).prop_map(|lines| EventBody::Log { lines }),
        millis().prop_map(|interval_ms| EventBody::Heartbeat { interval_ms }),
        (short_text(), text()).prop_map(|(key, value)| EventBody::Output { key, value }),
        completed().prop_map(EventBody::Completed),
    ]
}

fn event(job: Uuid) -> impl Strategy<Value = Event> {
    (seq(), timestamp(), short_text(), attempt_number(), body())
        .prop_map(move |(seq, ts, runner, attempt, body)| Event { v: VERSION, job, seq, ts, runner, attempt, body })
}

/// A job id and events of that job (a few of another job, as a stream holds them).
fn history() -> impl Strategy<Value = (Uuid, Vec<Event>)> {
    (job_id(), job_id())
        .prop_flat_map(|(job, other)| (Just(job), vec(prop_oneof![9 => event(job), 1 => event(other)], 0..24)))
}

/// Read everything the record offers at `now`, and check what must hold whatever the events.
fn look_at(record: &JobRecord, now: u64) -> Result<(), TestCaseError> {
    let state = record.state(now);
    prop_assert_eq!(State::parse(state.as_str()), Some(state));
    let _ = format!("{record:?} {state:?} {}", uuid_ms(record.id));
    let _ = (record.created_at_ms(), record.finished_at_ms());
    match (record.last_attempt(), record.completed()) {
        (None, _) => prop_assert!(
            matches!(state, State::Queued | State::Scheduled | State::Cancelled),
            "no attempt yet: {:?}",
            state
        ),
        // Queued again as the next attempt: waiting for it, or cancelled while it waited.
        (Some(_), Some(completed)) if completed.retrying.is_some() => prop_assert!(
            matches!(state, State::Queued | State::Scheduled | State::Cancelled),
            "retrying, yet {:?}",
            state
        ),
        (Some(_), Some(completed)) => {
            let _ = completed.status.to_string();
            prop_assert!(state.is_final(), "the latest attempt completed {}, yet {:?}", completed.status, state);
            prop_assert_eq!(state.as_str(), completed.status.as_str());
            prop_assert_eq!(record.silence(now), None, "a completed job is never silent");
        }
        (Some(attempt), None) => {
            let silence = record.silence(now);
            prop_assert_eq!(state == State::Lost, silence.is_some());
            if let Some(silence) = silence {
                prop_assert_eq!(&silence.runner, &attempt.runner);
                prop_assert_eq!(silence.last_seen_ms, attempt.last_seen_ms);
                // Silence only grows.
                prop_assert!(record.silence(now.saturating_add(1)).is_some());
                prop_assert_eq!(record.state(u64::MAX), State::Lost);
            } else {
                prop_assert_eq!(state, State::Running);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn no_sequence_of_decodable_events_panics_the_fold(
        (job, events) in history(),
        nows in vec(timestamp(), 1..4),
    ) {
        let mut record = JobRecord::new(job);
        for event in &events {
            // What a stream hands the fold: the bytes a peer published, decoded.
            let decoded: Event = protocol::decode(&protocol::encode(event), "event")
                .map_err(|err| TestCaseError::fail(format!("an encoded event does not decode: {err}")))?;
            prop_assert_eq!(&decoded, event);
            record.apply(&decoded, None);
            look_at(&record, decoded.ts)?;
        }
        for now in nows {
            look_at(&record, now)?;
        }
    }

    #[test]
    fn any_job_id_tells_a_creation_time(id in job_id()) {
        let record = JobRecord::new(id);
        prop_assert_eq!(record.created_at_ms(), uuid_ms(id));
        prop_assert_eq!(record.state(uuid_ms(id)), State::Queued);
    }
}

/// One attempt of a well-formed history: the events its runner publishes, in publish order.
fn attempt_events(job: Uuid, number: u32, start_ms: u64, ends: Option<Status>) -> impl Strategy<Value = Vec<Event>> {
    (short_text(), millis(), vec(0..3u8, 0..6), 0..1_000_000u64).prop_map(move |(runner, heartbeat_ms, middle, pid)| {
        let mut bodies = vec![
            EventBody::Accepted { hostname: "host".to_owned(), heartbeat_ms },
            EventBody::Started { pid: u32::try_from(pid).unwrap_or(0), argv: vec!["true".to_owned()] },
        ];
        let mut outputs = BTreeMap::new();
        for (index, kind) in middle.into_iter().enumerate() {
            bodies.push(match kind {
                0 => EventBody::Heartbeat { interval_ms: heartbeat_ms },
                1 => EventBody::Log { lines: vec![LogLine::from_bytes(Stream::Stdout, start_ms, b"line", false)] },
                _ => {
                    // Keys are unique across the job, so no two events disagree on a value.
                    let key = format!("k{number}_{index}");
                    outputs.insert(key.clone(), "v".to_owned());
                    EventBody::Output { key, value: "v".to_owned() }
                }
            });
        }
        if let Some(status) = ends {
            bodies.push(EventBody::Completed(Completed {
                status,
                exit_code: Some(0),
                signal: None,
                duration_ms: 1,
                outputs,
                error: None,
                retrying: None,
            }));
        }
        bodies
            .into_iter()
            .zip(1..)
            .map(|(body, seq)| Event {
                v: VERSION,
                job,
                seq,
                ts: start_ms.saturating_add(seq),
                runner: runner.clone(),
                attempt: number,
                body,
            })
            .collect()
    })
}

/// A well-formed history: the producer's `queued`, maybe a cancel request, and attempts
/// 1..=n of which only the last may still be running.
///
/// A `lost` completion recorded by another runner (seq 0, no runner) is left out: folded before
/// the attempt's own events it names the attempt's runner "", which a stream's order rules out.
fn well_formed_history() -> impl Strategy<Value = (Uuid, Vec<Event>)> {
    (any::<u128>(), 1..4u32, proptest::option::of(status()), queued(), any::<bool>(), timestamp())
        .prop_flat_map(|(id, attempts, last_status, queued, cancelled, start_ms)| {
            let job = Uuid::from_u128(id);
            let runs: Vec<_> = (1..=attempts)
                .map(|number| {
                    let ends = if number == attempts { last_status } else { Some(Status::Lost) };
                    attempt_events(job, number, start_ms.saturating_add(u64::from(number) * 1_000), ends)
                })
                .collect();
            (Just(job), Just(queued), Just(cancelled), Just(start_ms), runs)
        })
        .prop_map(|(job, queued, cancelled, start_ms, runs)| {
            let producer = |seq_ts: u64, body: EventBody| Event {
                v: VERSION,
                job,
                seq: 0,
                ts: seq_ts,
                runner: String::new(),
                attempt: 1,
                body,
            };
            let mut events = vec![producer(start_ms, EventBody::Queued(queued))];
            if cancelled {
                events.push(producer(
                    start_ms,
                    EventBody::CancelRequested { by: "me".to_owned(), force: false, reason: None },
                ));
            }
            events.extend(runs.into_iter().flatten());
            (job, events)
        })
}

fn fold(job: Uuid, events: &[Event]) -> JobRecord {
    let mut record = JobRecord::new(job);
    for event in events {
        record.apply(event, None);
    }
    record
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Readers believe only the attempt's runner, in the order the history stored the events
    /// (see `JobRecord::apply`): a well-formed history is believed whole, and read again (a
    /// follower catching up after a reconnect) it folds to the same record.
    #[test]
    fn a_well_formed_history_is_believed_and_reading_it_again_changes_nothing(
        (job, events) in well_formed_history(),
        now in timestamp(),
    ) {
        let once = fold(job, &events);
        prop_assert_eq!(once.ignored, 0, "{:?}", events);
        let twice = fold(job, &[events.clone(), events].concat());
        prop_assert_eq!(&once, &twice);
        prop_assert_eq!(once.state(now), twice.state(now));
        look_at(&twice, now)?;
    }
}
