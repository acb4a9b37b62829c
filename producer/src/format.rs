//! The words for durations, times and targets in runway's human output.
//!
//! Formatting only: nothing here prints or reads the broker.

use std::time::{Duration, UNIX_EPOCH};

use runway_broker::protocol::Target;

/// `1.23s`, `2m 3s`: short and exact enough for a status line.
pub fn duration(ms: u64) -> String {
    if ms < 60_000 {
        format!("{:.2}s", ms as f64 / 1000.0)
    } else {
        let secs = ms / 1000;
        format!("{}m {}s", secs / 60, secs % 60)
    }
}

/// A moment to the second (RFC 3339, UTC), or `-` for none.
pub fn time(ms: Option<u64>) -> String {
    ms.map_or_else(
        || "-".to_owned(),
        |ms| humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string(),
    )
}

/// Who may take a job: "any runner", "runner `ID`", "labels K=V,...".
pub fn target(target: &Target) -> String {
    match target {
        Target::Any => "any runner".to_owned(),
        Target::Runner(id) => format!("runner `{id}`"),
        Target::Labels(labels) => format!("labels {}", runway_broker::topology::canonical_labels(labels)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(1234), "1.23s");
        assert_eq!(duration(123_000), "2m 3s");
    }

    #[test]
    fn times_are_to_the_second_or_a_dash() {
        assert_eq!(time(Some(1_700_000_000_123)), "2023-11-14T22:13:20Z");
        assert_eq!(time(None), "-");
    }
}
