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
mod events;
mod execute;
pub mod history;
mod job;
mod lines;
mod link;
pub mod policy;
mod redelivery;
mod runner;
pub mod streams;

pub use execute::Limits;
pub use runner::{Runner, RunnerConfig, RunnerError, Shutdown, hostname, start};
