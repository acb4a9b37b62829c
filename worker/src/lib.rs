//! runway-worker: the runner library (consume jobs, execute them, stream their events, obey
//! cancels, drain) and, in `bin/`, the `runway-worker` daemon around it.
//!
//! It speaks the broker interface and the protocol types of runway-broker; it never names a
//! queue or an exchange itself.

mod backoff;
mod cancels;
mod consumers;
mod credit;
pub mod daemon;
pub mod environment;
mod events;
mod execute;
mod groups;
pub mod history;
pub mod interval;
mod job;
mod lifetime;
mod lines;
mod link;
mod masking;
pub mod metrics;
pub mod metrics_server;
mod openers;
pub mod policy;
mod redelivery;
mod rejection;
mod retry;
mod runner;
pub mod secrets;
pub mod streams;
mod taken;
pub mod times;

/// The longest pause a runner takes between two tries to reach the broker again.
pub use backoff::MAX_PAUSE as RECONNECT_MAX_PAUSE;
pub use execute::Limits;
pub use lifetime::Lifetime;
pub use metrics::Metrics;
pub use openers::AtMostOnce;
pub use runner::{Runner, RunnerConfig, RunnerError, Shutdown, hostname, start};
