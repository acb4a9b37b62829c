//! The growing pause between tries of something that failed (dialling the broker, consuming a
//! queue again): doubling from a first pause up to [`MAX_PAUSE`], without end; with jitter for
//! dialling, so runners cut off at once do not all dial again at once.
//!
//! It does not sleep or retry: the caller owns its loop, since what it waits on beside the
//! pause (a stop request, a closed link) differs.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// The longest pause between two tries.
pub const MAX_PAUSE: Duration = Duration::from_secs(5);

/// The pauses to take between tries, `first` first; start a new one after a success.
pub(crate) fn pauses(first: Duration) -> impl Iterator<Item = Duration> {
    ExponentialBuilder::new()
        .with_min_delay(first)
        .with_max_delay(MAX_PAUSE)
        .with_factor(2.0)
        .without_max_times()
        .build()
}

/// As [`pauses`], each lengthened by a random part of up to itself: runners that lost the same
/// node spread their dialling over the others.
pub(crate) fn jittered_pauses(first: Duration) -> impl Iterator<Item = Duration> {
    ExponentialBuilder::new()
        .with_min_delay(first)
        .with_max_delay(MAX_PAUSE)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_five_seconds_and_go_on() {
        let millis: Vec<u128> = pauses(Duration::from_millis(200)).take(8).map(|pause| pause.as_millis()).collect();
        assert_eq!(millis, [200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
    }

    #[test]
    fn jittered_pauses_lie_between_the_pause_and_twice_it() {
        let plain: Vec<Duration> = pauses(Duration::from_millis(200)).take(8).collect();
        for _ in 0..20 {
            for (jittered, pause) in jittered_pauses(Duration::from_millis(200)).zip(&plain) {
                assert!(jittered >= *pause && jittered <= *pause * 2, "{jittered:?} against {pause:?}");
            }
        }
    }
}
