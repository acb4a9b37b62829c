//! The words for durations, times and targets in runway's human output.
//!
//! Formatting only: nothing here prints or reads the broker.

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

/// A moment to the second (RFC 3339, UTC), or `-` for none; any value, even past the year 9999.
pub fn time(ms: Option<u64>) -> String {
    ms.map_or_else(|| "-".to_owned(), runway_worker::times::rfc3339_seconds)
}

/// How long something has been going, coarsely: "45s", "2m", "1h 5m".
pub fn age(ms: u64) -> String {
    let secs = ms / 1000;
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        _ => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
    }
}

/// How long until something due: "30s", "10m", "1h 30m", "500ms" (whole seconds from a second
/// on).
pub fn wait(ms: u64) -> String {
    let duration = if ms >= 1000 {
        std::time::Duration::from_secs(ms.div_ceil(1000))
    } else {
        std::time::Duration::from_millis(ms)
    };
    humantime::format_duration(duration).to_string()
}

/// A job's short id: the last 12 hex digits of its UUID v7, which are random (the first ones
/// are the time, shared by every job of the same minute). `job inspect|logs|cancel` take it.
pub fn short_id(id: uuid::Uuid) -> String {
    let digits = id.simple().to_string();
    digits[digits.len() - SHORT_ID_LEN..].to_owned()
}

/// How many hex digits a short id has.
pub const SHORT_ID_LEN: usize = 12;

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
    fn a_short_id_is_the_random_end_of_the_id() {
        let id = uuid::Uuid::parse_str("0198a2b3-c4d5-7e6f-8a9b-0c1d2e3f4a5b").expect("uuid");
        assert_eq!(short_id(id), "0c1d2e3f4a5b");
    }

    #[test]
    fn times_are_to_the_second_or_a_dash() {
        assert_eq!(time(Some(1_700_000_000_123)), "2023-11-14T22:13:20Z");
        assert_eq!(time(None), "-");
    }

    proptest::proptest! {
        /// Any value a message can carry is printed, never a panic.
        #[test]
        fn any_time_or_duration_is_printed(ms in proptest::num::u64::ANY) {
            proptest::prop_assert!(!time(Some(ms)).is_empty());
            proptest::prop_assert!(!duration(ms).is_empty());
            proptest::prop_assert!(!runway_worker::times::rfc3339_millis(ms).is_empty());
            proptest::prop_assert!(!runway_worker::times::heard_at(ms, ms / 2).is_empty());
        }
    }
}
