//! The attempts a runner ran, remembered so that a copy of a job message (a replay, a client
//! that published it twice, a copy published after it finished) never runs twice here.
//!
//! Bounded: the oldest are forgotten first. It costs no broker operation: it only knows what
//! this runner ran. A copy that reaches another runner is that runner's to judge (see
//! docs/SECURITY.md, "At most once per job id"). Pure bookkeeping; the serving loop obeys it.

use std::collections::{HashSet, VecDeque};

use uuid::Uuid;

/// How many attempts a runner remembers: far more than it runs in a retention period's busy
/// hour, at about 24 bytes each.
pub(crate) const REMEMBERED: usize = 65_536;

/// The `(job, attempt)` pairs this runner started, oldest first.
#[derive(Debug)]
pub(crate) struct Taken {
    order: VecDeque<(Uuid, u32)>,
    set: HashSet<(Uuid, u32)>,
    capacity: usize,
}

impl Default for Taken {
    fn default() -> Taken {
        Taken::with_capacity(REMEMBERED)
    }
}

impl Taken {
    pub(crate) fn with_capacity(capacity: usize) -> Taken {
        Taken { order: VecDeque::new(), set: HashSet::new(), capacity: capacity.max(1) }
    }

    /// Note that attempt `attempt` of `job` was taken; false if it was taken before (a copy).
    pub(crate) fn take(&mut self, job: Uuid, attempt: u32) -> bool {
        if !self.set.insert((job, attempt)) {
            return false;
        }
        self.order.push_back((job, attempt));
        if self.order.len() > self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.set.remove(&oldest);
        }
        true
    }

    /// Forget a job this runner took but did not run (handed back to the broker, dropped as
    /// another runner's): when it comes back, it is judged afresh.
    pub(crate) fn forget(&mut self, job: Uuid, attempt: u32) {
        if self.set.remove(&(job, attempt)) {
            self.order.retain(|taken| *taken != (job, attempt));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_copy_of_an_attempt_is_refused_and_a_next_attempt_is_not() {
        let mut taken = Taken::default();
        let job = Uuid::now_v7();
        assert!(taken.take(job, 1));
        assert!(!taken.take(job, 1), "a copy");
        assert!(taken.take(job, 2), "a retry is a new attempt");
    }

    #[test]
    fn a_forgotten_attempt_is_taken_again() {
        let mut taken = Taken::default();
        let job = Uuid::now_v7();
        taken.take(job, 1);
        taken.forget(job, 1);
        assert!(taken.take(job, 1));
    }

    #[test]
    fn the_oldest_are_forgotten_first() {
        let mut taken = Taken::with_capacity(2);
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        taken.take(a, 1);
        taken.take(b, 1);
        taken.take(c, 1);
        assert!(taken.take(a, 1), "forgotten");
        assert!(!taken.take(c, 1), "remembered");
    }
}
