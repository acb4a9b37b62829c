//! The no-hoarding rule for shared job queues, as pure functions: from the free slots and each
//! shared queue's live consumer (its prefetch, its jobs still here), what to do with that
//! consumer: keep it, cancel it, or consume (anew, or in its place) with the free slots.
//!
//! It does no I/O and holds no consumer: the serving loop (`runner`) carries the decisions out.
//! A consumer's prefetch is fixed at `basic.consume`, so the credit it still holds on its queue
//! is *prefetch − its jobs still here*; the rule keeps that equal to the free slots on every
//! shared queue, so a full runner holds no credit where another runner could take the job.

use std::collections::HashMap;

use uuid::Uuid;

/// What the serving loop knows of one shared queue's live consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Held {
    /// The prefetch it was made with: the slots free when it started.
    pub(crate) prefetch: usize,
    /// Its jobs still here (waiting for a slot or running).
    pub(crate) outstanding: usize,
}

/// What to do with one shared queue's consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Credit {
    /// Leave the queue as it is: its consumer's credit is the free slots already (each ack
    /// returns one, so a runner fed from one queue keeps its consumer), or it has no consumer
    /// and there is no free slot to offer.
    Keep,
    /// Cancel the consumer, which promises slots that are not free, and consume no more: the
    /// runner is full.
    Cancel,
    /// No consumer yet: consume with this prefetch.
    Consume { prefetch: usize },
    /// The consumer promises more or less than is free: cancel it and consume with this prefetch.
    Replace { prefetch: usize },
}

/// Decide for one shared queue, given the slots free now and its live consumer, if any.
pub(crate) fn decide(free: usize, held: Option<Held>) -> Credit {
    match held {
        Some(held) if held.prefetch.saturating_sub(held.outstanding) == free => Credit::Keep,
        Some(_) if free == 0 => Credit::Cancel,
        Some(_) => Credit::Replace { prefetch: free },
        None if free == 0 => Credit::Keep,
        None => Credit::Consume { prefetch: free },
    }
}

/// Which consumer instance each job here came from, and how many jobs of each instance are
/// here: the `outstanding` of [`Held`].
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    sources: HashMap<Uuid, u64>,
    outstanding: HashMap<u64, usize>,
}

impl Ledger {
    /// Job `id` arrived from consumer `instance`.
    pub(crate) fn took(&mut self, id: Uuid, instance: u64) {
        self.sources.insert(id, instance);
        *self.outstanding.entry(instance).or_default() += 1;
    }

    /// Job `id` ended here (or was never started); a job not taken is ignored.
    pub(crate) fn settled(&mut self, id: Uuid) {
        if let Some(instance) = self.sources.remove(&id)
            && let Some(count) = self.outstanding.get_mut(&instance)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.outstanding.remove(&instance);
            }
        }
    }

    /// Jobs of consumer `instance` still here.
    pub(crate) fn outstanding(&self, instance: u64) -> usize {
        self.outstanding.get(&instance).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(prefetch: usize, outstanding: usize) -> Option<Held> {
        Some(Held { prefetch, outstanding })
    }

    #[test]
    fn one_shared_queue_whose_credit_follows_the_slots_keeps_its_consumer() {
        // Concurrency 4, fed only from `jobs.any`: the consumer was made with 4, and whatever it
        // delivered is what took the slots.
        for outstanding in 0..=4 {
            assert_eq!(decide(4 - outstanding, held(4, outstanding)), Credit::Keep, "{outstanding} jobs here");
        }
    }

    #[test]
    fn a_consumer_promising_more_than_the_free_slots_is_replaced_or_cancelled() {
        // A job from the runner's own queue took one of 4 slots: 3 free, the consumer promises 4.
        assert_eq!(decide(3, held(4, 0)), Credit::Replace { prefetch: 3 });
        // Every slot taken from elsewhere: no credit may stay.
        assert_eq!(decide(0, held(4, 1)), Credit::Cancel);
    }

    #[test]
    fn a_consumer_promising_less_than_the_free_slots_is_replaced() {
        // Made while 1 slot was free; jobs from elsewhere ended and freed 3 more.
        assert_eq!(decide(4, held(1, 0)), Credit::Replace { prefetch: 4 });
    }

    #[test]
    fn a_full_runner_holds_no_credit() {
        assert_eq!(decide(0, None), Credit::Keep, "nothing to consume with");
        assert_eq!(decide(0, held(2, 0)), Credit::Cancel);
        assert_eq!(decide(0, held(2, 1)), Credit::Cancel);
        // A consumer whose every delivery is still here holds no credit: it may stay.
        assert_eq!(decide(0, held(2, 2)), Credit::Keep);
    }

    #[test]
    fn free_slots_start_a_consumer_where_there_is_none() {
        assert_eq!(decide(2, None), Credit::Consume { prefetch: 2 });
    }

    #[test]
    fn several_label_set_queues_each_promise_the_free_slots() {
        // Concurrency 3; queues `any`, `os=linux`, `os=linux,arch=x86`. One job from `os=linux`
        // runs, so 2 slots are free.
        let queues = [("any", held(3, 0)), ("os=linux", held(3, 1)), ("os=linux,arch=x86", None)];
        let decisions: Vec<(&str, Credit)> = queues.iter().map(|(name, held)| (*name, decide(2, *held))).collect();
        assert_eq!(
            decisions,
            [
                ("any", Credit::Replace { prefetch: 2 }),
                ("os=linux", Credit::Keep),
                ("os=linux,arch=x86", Credit::Consume { prefetch: 2 }),
            ]
        );
    }

    #[test]
    fn the_ledger_counts_each_consumers_jobs_until_they_settle() {
        let mut ledger = Ledger::default();
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        ledger.took(a, 1);
        ledger.took(b, 1);
        ledger.took(c, 2);
        assert_eq!((ledger.outstanding(1), ledger.outstanding(2)), (2, 1));
        ledger.settled(a);
        ledger.settled(c);
        ledger.settled(c);
        ledger.settled(Uuid::now_v7());
        assert_eq!((ledger.outstanding(1), ledger.outstanding(2), ledger.outstanding(3)), (1, 0, 0));
    }
}
