//! The durations `runway-worker`'s flags accept: parsed with humantime, then held to a range in
//! whole milliseconds (the protocol's unit), so that a zero or absurd interval is refused at start
//! rather than breaking every job later.
//!
//! It only checks values; the flags themselves are the binary's.

use std::time::Duration;

/// The range a duration flag accepts, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    pub min: Duration,
    pub max: Duration,
}

/// `--heartbeat`: a zero interval panics every job's heartbeat timer; under 100 ms each running
/// job floods the event streams; over an hour, a dead runner goes unnoticed for three hours.
pub const HEARTBEAT: Interval = Interval { min: Duration::from_millis(100), max: Duration::from_secs(3600) };
/// `--kill-grace`: from SIGTERM to SIGKILL.
pub const KILL_GRACE: Interval = Interval { min: Duration::from_millis(1), max: Duration::from_secs(3600) };
/// `--drain-timeout`: how long a stopping daemon waits for its jobs.
pub const DRAIN_TIMEOUT: Interval = Interval { min: Duration::from_millis(1), max: Duration::from_secs(7 * 24 * 3600) };

impl Interval {
    /// Parse `text` (humantime: `5s`, `1m 30s`, `250ms`) and check it lies in the range once
    /// rounded down to whole milliseconds; the error says what is expected.
    pub fn parse(self, text: &str) -> Result<Duration, String> {
        let expected = format!(
            "expected a duration from {} to {}",
            humantime::format_duration(self.min),
            humantime::format_duration(self.max)
        );
        let duration = humantime::parse_duration(text).map_err(|err| format!("{err}; {expected}"))?;
        // The protocol carries milliseconds: 1ns would be sent (and used) as 0.
        let whole_ms = Duration::from_millis(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
        if whole_ms < self.min || whole_ms > self.max {
            return Err(format!("`{text}` is out of range; {expected}"));
        }
        Ok(duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_and_what_rounds_to_zero_ms_are_refused() {
        for text in ["0s", "0ms", "1ns", "999us"] {
            let err = KILL_GRACE.parse(text).expect_err(text);
            assert!(err.contains("out of range") && err.contains("expected a duration from 1ms to 1h"), "{err}");
        }
    }

    #[test]
    fn the_ends_of_the_range_are_accepted() {
        assert_eq!(HEARTBEAT.parse("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(HEARTBEAT.parse("1h"), Ok(Duration::from_secs(3600)));
        assert!(HEARTBEAT.parse("99ms").is_err());
        assert!(HEARTBEAT.parse("1h 1ms").is_err());
        assert_eq!(DRAIN_TIMEOUT.parse("10m"), Ok(Duration::from_secs(600)));
        assert!(DRAIN_TIMEOUT.parse("8days").is_err());
    }

    #[test]
    fn text_that_is_not_a_duration_says_what_is_expected() {
        let err = HEARTBEAT.parse("soon").expect_err("not a duration");
        assert!(err.contains("expected a duration from 100ms to 1h"), "{err}");
    }
}
