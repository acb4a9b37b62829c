//! The growing pause between tries of something that failed (dialling the broker, consuming a
//! queue again): doubling from a first pause up to [`MAX_PAUSE`], without end, without jitter.
//!
//! It does not sleep or retry: the caller owns its loop, since what it waits on beside the
//! pause (a stop request, a closed link) differs.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// The longest pause between two tries.
pub(crate) const MAX_PAUSE: Duration = Duration::from_secs(5);

/// The pauses to take between tries, `first` first; start a new one after a success.
pub(crate) fn pauses(first: Duration) -> impl Iterator<Item = Duration> {
    ExponentialBuilder::new()
        .with_min_delay(first)
        .with_max_delay(MAX_PAUSE)
        .with_factor(2.0)
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
}
