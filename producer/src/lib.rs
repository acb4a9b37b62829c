//! runway-producer: the `runway` CLI as a library: the project file, the command line, queuing
//! a job, following its events, and the exit codes.
//!
//! The binary in `bin/runway.rs` only parses flags, sets up tracing and calls [`commands::run`].

pub mod cli;
pub mod commands;
pub mod exit;
pub mod follow;
pub mod jobs;
pub mod project;
