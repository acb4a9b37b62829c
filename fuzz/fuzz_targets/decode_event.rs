//! Fuzz the event decoder from raw bytes: any input is decoded or refused, never a panic; an
//! event that decodes encodes back to itself, and folds into a record that reads consistently.

#![no_main]

use libfuzzer_sys::fuzz_target;
use runway_broker::protocol::{self, Event, EventBody};
use runway_fuzz::record_reading::read_record;
use runway_worker::history::JobRecord;

fuzz_target!(|data: &[u8]| {
    let event: Event = match protocol::decode(data, "event") {
        Ok(event) => event,
        Err(err) => {
            let _ = err.to_string();
            return;
        }
    };
    let bytes = protocol::encode(&event);
    assert_eq!(
        protocol::decode::<Event>(&bytes, "event").as_ref(),
        Ok(&event),
        "a decoded event encodes back to itself"
    );
    let _ = event.body.kind();
    if let EventBody::Log { lines } = &event.body {
        for line in lines {
            let _ = line.bytes();
        }
    }
    let mut record = JobRecord::new(event.job);
    record.apply(&event, None);
    for now in [0, event.ts, event.ts.saturating_add(1), u64::MAX] {
        read_record(&record, now);
    }
});
