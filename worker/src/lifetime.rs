//! When a runner ends on its own: after one job (`--once`), or after a while without a job
//! (`--idle-timeout`). Pure bookkeeping over the serving loop's events.
//!
//! It does not stop consumers or hand deliveries back: the serving loop does, as this says.
//! A one-shot runner consumes every queue with prefetch 1 and stops all its consumers at the
//! first delivery; a second delivery that was already on its way is handed back (nack with
//! requeue). That costs the job one delivery count on RabbitMQ before 4.3, which counts
//! requeues toward the delivery limit; it only happens when two queues deliver in the same
//! instant, and the limit (5) leaves room. Consuming one queue at a time instead would leave
//! jobs of the other queues waiting while this runner is free.

use std::time::Duration;

use tokio::time::Instant;

/// How long a runner lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lifetime {
    /// Take exactly one job, then end.
    pub once: bool,
    /// End after this long with no job here.
    pub idle_timeout: Option<Duration>,
}

/// A runner's progress through its lifetime.
#[derive(Debug)]
pub(crate) struct Progress {
    lifetime: Lifetime,
    /// A one-shot runner had its one delivery.
    taken: bool,
    /// Since when no job has been here.
    idle_since: Instant,
}

impl Progress {
    pub(crate) fn new(lifetime: Lifetime) -> Progress {
        Progress { lifetime, taken: false, idle_since: Instant::now() }
    }

    /// A delivery arrived; whether to take it (otherwise hand it back). A one-shot runner takes
    /// the first only, and then must stop consuming ([`Progress::consumes`]).
    pub(crate) fn arrived(&mut self) -> bool {
        if !self.lifetime.once {
            return true;
        }
        let first = !self.taken;
        self.taken = true;
        first
    }

    /// Whether the runner should consume (it is not a one-shot runner that has its job).
    pub(crate) fn consumes(&self) -> bool {
        !(self.lifetime.once && self.taken)
    }

    /// The jobs here changed to `running`; whether the runner's life is over.
    pub(crate) fn settled(&mut self, running: usize) -> bool {
        if running == 0 {
            self.idle_since = Instant::now();
        }
        self.lifetime.once && self.taken && running == 0
    }

    /// When an idle runner ends, if it is idle (no job here) and has an idle timeout.
    pub(crate) fn idle_deadline(&self, running: usize) -> Option<Instant> {
        match self.lifetime.idle_timeout {
            Some(timeout) if running == 0 && self.consumes() => Some(self.idle_since + timeout),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_one_shot_runner_takes_the_first_delivery_only_and_ends_when_it_settled() {
        let mut progress = Progress::new(Lifetime { once: true, idle_timeout: None });
        assert!(progress.consumes());
        assert!(progress.arrived());
        assert!(!progress.consumes());
        assert!(!progress.arrived(), "a second delivery is handed back");
        assert!(!progress.settled(1));
        assert!(progress.settled(0));
    }

    #[test]
    fn a_long_lived_runner_takes_everything_and_never_ends_by_itself() {
        let mut progress = Progress::new(Lifetime::default());
        assert!(progress.arrived() && progress.arrived());
        assert!(!progress.settled(0));
        assert_eq!(progress.idle_deadline(0), None);
    }

    #[test]
    fn the_idle_deadline_counts_from_the_last_job_and_only_while_idle() {
        let mut progress = Progress::new(Lifetime { once: false, idle_timeout: Some(Duration::from_secs(5)) });
        let first = progress.idle_deadline(0).expect("idle");
        assert_eq!(progress.idle_deadline(1), None, "busy");
        progress.settled(0);
        assert!(progress.idle_deadline(0).expect("idle again") >= first);
    }
}
