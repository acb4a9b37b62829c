//! Fuzz the decoders of what runners receive and answer on the control exchange (`Control`,
//! `RunnerInfo`) from raw bytes: decoded or refused, never a panic, and what decodes encodes
//! back to itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use runway_broker::protocol::{self, Control, RunnerInfo};
use runway_broker::topology::canonical_labels;

fuzz_target!(|data: &[u8]| {
    match protocol::decode::<Control>(data, "control") {
        Ok(control) => {
            let _ = control.body.kind();
            let bytes = protocol::encode(&control);
            assert_eq!(protocol::decode::<Control>(&bytes, "control").as_ref(), Ok(&control), "control round-trips");
        }
        Err(err) => {
            let _ = err.to_string();
        }
    }
    match protocol::decode::<RunnerInfo>(data, "runner info") {
        Ok(info) => {
            let _ = canonical_labels(&info.labels);
            let bytes = protocol::encode(&info);
            assert_eq!(
                protocol::decode::<RunnerInfo>(&bytes, "runner info").as_ref(),
                Ok(&info),
                "runner info round-trips"
            );
        }
        Err(err) => {
            let _ = err.to_string();
        }
    }
});
