//! Wire times (milliseconds since the Unix epoch) in words for people: RFC 3339, or a time of
//! day and how long ago, for any `u64` a message can carry.
//!
//! Formatting only, and total: a time past what RFC 3339 can write (the year 9999) is shown as
//! its number, never a panic. Nothing here reads a clock but the caller's `now_ms`.

use std::time::{Duration, UNIX_EPOCH};

/// The last millisecond RFC 3339 can write: 9999-12-31T23:59:59.999Z.
pub const LAST_WRITABLE_MS: u64 = 253_402_300_799_999;

/// `2023-11-14T22:13:20Z`, or `N ms after the epoch` past the year 9999.
pub fn rfc3339_seconds(ms: u64) -> String {
    if ms > LAST_WRITABLE_MS {
        return beyond(ms);
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// `2023-11-14T22:13:20.123Z`, or `N ms after the epoch` past the year 9999.
pub fn rfc3339_millis(ms: u64) -> String {
    if ms > LAST_WRITABLE_MS {
        return beyond(ms);
    }
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// When something was last heard of, for a message: `21:05:24Z, 15 s ago` on the same UTC day
/// as `now_ms`, else the full time and how long ago.
pub fn heard_at(ms: u64, now_ms: u64) -> String {
    let full = rfc3339_seconds(ms);
    let same_day = ms <= LAST_WRITABLE_MS && ms / 86_400_000 == now_ms / 86_400_000;
    // The time of day is the part after the `T` of `YYYY-MM-DDTHH:MM:SSZ`.
    let shown = match full.split_once('T') {
        Some((_, time_of_day)) if same_day => time_of_day.to_owned(),
        _ => full,
    };
    format!("{shown}, {}", ago(ms, now_ms))
}

/// `15 s ago`, `3 min ago`, `2 h ago`, `4 days ago`, or `in the future` for a later time.
pub fn ago(ms: u64, now_ms: u64) -> String {
    let Some(elapsed) = now_ms.checked_sub(ms) else {
        return "in the future".to_owned();
    };
    let secs = elapsed / 1000;
    match secs {
        0..120 => format!("{secs} s ago"),
        120..7_200 => format!("{} min ago", secs / 60),
        7_200..172_800 => format!("{} h ago", secs / 3600),
        _ => format!("{} days ago", secs / 86_400),
    }
}

fn beyond(ms: u64) -> String {
    format!("{ms} ms after the epoch")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_times() {
        assert_eq!(rfc3339_seconds(1_700_000_000_123), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339_millis(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339_seconds(LAST_WRITABLE_MS), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339_seconds(LAST_WRITABLE_MS + 1), "253402300800000 ms after the epoch");
        assert_eq!(rfc3339_millis(u64::MAX), format!("{} ms after the epoch", u64::MAX));
    }

    #[test]
    fn heard_at_says_the_time_of_day_and_how_long_ago() {
        let at = 1_700_000_000_000;
        assert_eq!(heard_at(at, at + 15_000), "22:13:20Z, 15 s ago");
        assert_eq!(heard_at(at, at + 3 * 86_400_000), "2023-11-14T22:13:20Z, 3 days ago");
        assert_eq!(heard_at(at + 1, at), "22:13:20Z, in the future");
        assert_eq!(heard_at(u64::MAX, 0), format!("{} ms after the epoch, in the future", u64::MAX));
    }
}
