//! What a runner counts for Prometheus (jobs, their durations and queue waits, slots, log
//! output, unconfirmed events, reconnects, the broker node, dead letters) and whether it is
//! ready (connected and consuming), behind one cheap, cloneable handle.
//!
//! It does not serve anything over HTTP (`metrics_server` does) and formats nothing by hand:
//! the `prometheus-client` registry encodes it. Every name starts with `runway_`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use runway_broker::protocol::{LogLine, Status, Stream};

/// A runner's metrics and readiness; clones share them.
#[derive(Debug, Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
    /// Holds clones of `inner`'s metrics (each is a handle to shared atomics), to encode them.
    registry: Arc<Registry>,
}

#[derive(Debug)]
struct Inner {
    jobs_taken: Family<OperationLabels, Counter>,
    jobs_completed: Family<CompletedLabels, Counter>,
    job_duration: Family<OperationLabels, Histogram, fn() -> Histogram>,
    queue_wait: Family<OperationLabels, Histogram, fn() -> Histogram>,
    jobs_running: Gauge,
    slots: Gauge,
    slots_free: Gauge,
    log_lines: Family<StreamLabels, Counter>,
    log_bytes: Family<StreamLabels, Counter>,
    events_unconfirmed: Gauge,
    reconnects: Counter,
    broker_node: Family<NodeLabels, Gauge>,
    dead_letters: Family<ReasonLabels, Counter>,
    ready: Gauge,
    /// Written on a handful of transitions, read per `/readyz`: a std mutex, never held across
    /// an await.
    state: Mutex<State>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CompletedLabels {
    operation: String,
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    stream: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

/// Why a job message went to the dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeadLetter {
    /// Not a job this runner can read (see `rejection`).
    Invalid,
    /// A job the runner policy refuses (see `policy`).
    Refused,
}

/// Where the runner is, as `/readyz` tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Starting,
    Consuming,
    Reconnecting,
    /// Took its one job (`--once`): consumes nothing more.
    Done,
    Draining,
}

impl State {
    fn not_ready_because(self) -> Option<&'static str> {
        match self {
            State::Consuming => None,
            State::Starting => Some("starting: connecting to the broker and setting up the runner's queues"),
            State::Reconnecting => Some("reconnecting: the broker connection was lost"),
            State::Done => Some("took its one job (--once): consuming no more jobs"),
            State::Draining => Some("draining: taking no new jobs"),
        }
    }
}

/// 10 ms to about 5.8 h, doubling: jobs run from a `noop` to a long build.
fn seconds_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 22))
}

impl Metrics {
    /// A fresh set, every counter at zero, not ready.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("runway");
        let inner = Inner {
            jobs_taken: Family::default(),
            jobs_completed: Family::default(),
            job_duration: Family::new_with_constructor(seconds_buckets),
            queue_wait: Family::new_with_constructor(seconds_buckets),
            jobs_running: Gauge::default(),
            slots: Gauge::default(),
            slots_free: Gauge::default(),
            log_lines: Family::default(),
            log_bytes: Family::default(),
            events_unconfirmed: Gauge::default(),
            reconnects: Counter::default(),
            broker_node: Family::default(),
            dead_letters: Family::default(),
            ready: Gauge::default(),
            state: Mutex::new(State::Starting),
        };
        registry.register("jobs_taken", "Jobs this runner took from a queue, by operation", inner.jobs_taken.clone());
        registry.register(
            "jobs_completed",
            "Jobs this runner completed, by operation and final status",
            inner.jobs_completed.clone(),
        );
        registry.register_with_unit(
            "job_duration",
            "From a job's accepted to its completed, by operation",
            Unit::Seconds,
            inner.job_duration.clone(),
        );
        registry.register_with_unit(
            "queue_wait",
            "From a job's creation (queued) to its accepted on this runner, by operation",
            Unit::Seconds,
            inner.queue_wait.clone(),
        );
        registry.register("jobs_running", "Jobs executing on this runner now", inner.jobs_running.clone());
        registry.register("slots", "Jobs this runner runs at once (--concurrency)", inner.slots.clone());
        registry.register("slots_free", "Slots no job here holds or waits for", inner.slots_free.clone());
        registry.register("log_lines", "Log lines published, by stream (out, err)", inner.log_lines.clone());
        registry.register_with_unit(
            "log",
            "Log text published (after masking), by stream (out, err)",
            Unit::Bytes,
            inner.log_bytes.clone(),
        );
        registry.register(
            "events_unconfirmed",
            "Job events published but not yet confirmed by the broker (or waiting for it)",
            inner.events_unconfirmed.clone(),
        );
        registry.register(
            "reconnects",
            "Times the runner connected again after losing the broker",
            inner.reconnects.clone(),
        );
        registry.register(
            "broker_node_info",
            "The broker node in use (scheme://host:port/vhost, never a user or password): 1",
            inner.broker_node.clone(),
        );
        registry.register(
            "dead_letters",
            "Job messages this runner rejected to the dead letters, by reason (invalid, refused)",
            inner.dead_letters.clone(),
        );
        registry.register("ready", "1 while connected and consuming (what /readyz says)", inner.ready.clone());
        Metrics { inner: Arc::new(inner), registry: Arc::new(registry) }
    }

    /// Everything in the Prometheus text format (OpenMetrics).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// `Ok` when connected and consuming; otherwise why not.
    pub fn readiness(&self) -> Result<(), &'static str> {
        match self.state().not_ready_because() {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }

    fn state(&self) -> State {
        *self.inner.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Move to `to` if the current state is one of `from`.
    fn transition(&self, from: &[State], to: State) {
        let mut state = self.inner.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if from.contains(&state) {
            *state = to;
            self.inner.ready.set(i64::from(to == State::Consuming));
        }
    }

    /// The runner's queues are consumed (again).
    pub(crate) fn consuming(&self) {
        self.transition(&[State::Starting, State::Reconnecting], State::Consuming);
    }

    pub(crate) fn connection_lost(&self) {
        self.transition(&[State::Starting, State::Consuming], State::Reconnecting);
    }

    /// A `--once` runner has its job.
    pub(crate) fn done_consuming(&self) {
        self.transition(&[State::Starting, State::Consuming, State::Reconnecting], State::Done);
    }

    /// The runner was asked to stop: it takes no new jobs, whatever else happens.
    pub fn draining(&self) {
        let all = [State::Starting, State::Consuming, State::Reconnecting, State::Done, State::Draining];
        self.transition(&all, State::Draining);
    }

    pub(crate) fn job_taken(&self, operation: &str) {
        self.inner.jobs_taken.get_or_create(&operation_labels(operation)).inc();
    }

    /// A job got a slot and said `accepted`; it was created at `created_at_ms`.
    pub(crate) fn job_accepted(&self, operation: &str, created_at_ms: u64, now_ms: u64) {
        let waited = Duration::from_millis(now_ms.saturating_sub(created_at_ms));
        self.inner.queue_wait.get_or_create(&operation_labels(operation)).observe(waited.as_secs_f64());
    }

    /// A job is executing until the returned guard drops.
    pub(crate) fn job_running(&self) -> RunningJob {
        self.inner.jobs_running.inc();
        RunningJob { running: self.inner.jobs_running.clone() }
    }

    /// A job ended with `status`; `ran` is how long since its `accepted`, if it got that far.
    pub(crate) fn job_completed(&self, operation: &str, status: Status, ran: Option<Duration>) {
        let labels = CompletedLabels { operation: operation.to_owned(), status: status.as_str().to_owned() };
        self.inner.jobs_completed.get_or_create(&labels).inc();
        if let Some(ran) = ran {
            self.inner.job_duration.get_or_create(&operation_labels(operation)).observe(ran.as_secs_f64());
        }
    }

    pub(crate) fn slots(&self, concurrency: usize, free: usize) {
        self.inner.slots.set(i64::try_from(concurrency).unwrap_or(i64::MAX));
        self.inner.slots_free.set(i64::try_from(free).unwrap_or(i64::MAX));
    }

    /// A batch of log lines went out (it may still wait for its confirm).
    pub(crate) fn log_published(&self, lines: &[LogLine]) {
        for line in lines {
            let labels = StreamLabels {
                stream: match line.s {
                    Stream::Stdout => "out",
                    Stream::Stderr => "err",
                }
                .to_owned(),
            };
            self.inner.log_lines.get_or_create(&labels).inc();
            self.inner.log_bytes.get_or_create(&labels).inc_by(u64::try_from(line.l.len()).unwrap_or(u64::MAX));
        }
    }

    /// Events waiting for their confirm went up (positive) or down (negative) by `change`.
    pub(crate) fn events_unconfirmed(&self, change: i64) {
        self.inner.events_unconfirmed.inc_by(change);
    }

    /// The broker node in use is now `node` (a display name, with no user or password).
    pub(crate) fn broker_node(&self, node: &str) {
        self.inner.broker_node.clear();
        self.inner.broker_node.get_or_create(&NodeLabels { node: node.to_owned() }).set(1);
    }

    pub(crate) fn reconnected(&self, node: &str) {
        self.inner.reconnects.inc();
        self.broker_node(node);
    }

    pub(crate) fn dead_lettered(&self, why: DeadLetter) {
        let reason = match why {
            DeadLetter::Invalid => "invalid",
            DeadLetter::Refused => "refused",
        };
        self.inner.dead_letters.get_or_create(&ReasonLabels { reason: reason.to_owned() }).inc();
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

fn operation_labels(operation: &str) -> OperationLabels {
    OperationLabels { operation: operation.to_owned() }
}

/// One job counted in `runway_jobs_running` while it lives.
#[derive(Debug)]
pub(crate) struct RunningJob {
    running: Gauge,
}

impl Drop for RunningJob {
    fn drop(&mut self) {
        self.running.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_the_runner_and_a_drain_is_final() {
        let metrics = Metrics::new();
        assert!(metrics.readiness().unwrap_err().starts_with("starting"));
        metrics.consuming();
        assert_eq!(metrics.readiness(), Ok(()));
        metrics.connection_lost();
        assert!(metrics.readiness().unwrap_err().starts_with("reconnecting"));
        metrics.consuming();
        metrics.draining();
        metrics.consuming();
        assert!(metrics.readiness().unwrap_err().starts_with("draining"));
    }

    #[test]
    fn names_are_prefixed_and_counters_and_histograms_get_their_suffixes() {
        let metrics = Metrics::new();
        metrics.job_taken("build");
        metrics.job_completed("build", Status::Success, Some(Duration::from_millis(30)));
        metrics.broker_node("amqp://10.0.0.1:5672/%2f");
        metrics.broker_node("amqp://10.0.0.2:5672/%2f");
        let text = metrics.encode();
        assert!(text.contains("runway_jobs_taken_total{operation=\"build\"} 1"), "{text}");
        assert!(text.contains("runway_jobs_completed_total{operation=\"build\",status=\"success\"} 1"), "{text}");
        assert!(text.contains("runway_job_duration_seconds_count{operation=\"build\"} 1"), "{text}");
        assert!(text.contains("runway_broker_node_info{node=\"amqp://10.0.0.2:5672/%2f\"} 1"), "{text}");
        assert!(!text.contains("10.0.0.1"), "only the node in use is shown: {text}");
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            assert!(line.starts_with("runway_"), "{line}");
        }
    }
}
