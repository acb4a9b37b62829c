//! What the fuzz targets share: protocol events built from fuzz bytes, and a reading of a job
//! record that checks what must hold whatever events it was folded from.
//!
//! The targets themselves are in `fuzz_targets/`; nothing here talks to a broker.

pub mod event_input;
pub mod record_reading;
