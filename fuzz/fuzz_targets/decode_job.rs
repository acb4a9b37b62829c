//! Fuzz the job decoder from raw bytes: any input is decoded or refused, never a panic; a job
//! that decodes encodes back to itself, and its `queued` record folds.

#![no_main]

use libfuzzer_sys::fuzz_target;
use runway_broker::protocol::{self, Event, EventBody, Queued, VERSION};
use runway_fuzz::record_reading::read_record;
use runway_worker::history::JobRecord;

/// The runner's default bound on a job message.
const LIMIT: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let job = match protocol::decode_job(data, LIMIT) {
        Ok(job) => job,
        Err(err) => {
            let _ = err.to_string();
            return;
        }
    };
    let bytes = protocol::encode(&job);
    assert_eq!(protocol::decode_job(&bytes, usize::MAX).as_ref(), Ok(&job), "a decoded job encodes back to itself");
    assert!(!job.command.is_empty(), "the decoder refuses an empty command");
    let _ = job.command.to_argv(&job.operation, &job.args);
    let queued = Event {
        v: VERSION,
        job: job.id,
        seq: 0,
        ts: job.created_at_ms,
        runner: String::new(),
        attempt: job.attempt,
        body: EventBody::Queued(Queued::of(&job)),
    };
    let mut record = JobRecord::new(job.id);
    record.apply(&queued, None);
    read_record(&record, job.created_at_ms);
});
