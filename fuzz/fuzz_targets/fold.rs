//! Fuzz the fold of a job's events into a `JobRecord` with structured input: any sequence of
//! events (any attempt, seq, timestamp, kind, size; a few of another job) folds without a panic,
//! and the record reads consistently at any now.

#![no_main]

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use runway_fuzz::event_input::{event, job_id, timestamp};
use runway_fuzz::record_reading::read_record;
use runway_worker::history::JobRecord;

/// Enough events for several attempts; libFuzzer's input size bounds it too.
const MAX_EVENTS: usize = 64;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(job) = job_id(&mut u) else { return };
    let Ok(other) = job_id(&mut u) else { return };
    let mut record = JobRecord::new(job);
    for _ in 0..MAX_EVENTS {
        if u.is_empty() {
            break;
        }
        let of = if u.ratio(1, 10).unwrap_or(false) { other } else { job };
        let Ok(event) = event(&mut u, of) else { break };
        record.apply(&event, None);
        read_record(&record, event.ts);
    }
    for _ in 0..3 {
        let Ok(now) = timestamp(&mut u) else { break };
        read_record(&record, now);
    }
    read_record(&record, u64::MAX);
});
