//! runway's end-to-end tests: the real binaries, in temporary projects, one test binary.

// The support module is this binary's own; `pub` there just means "for the test modules".
#![allow(unreachable_pub)]

mod consumer_cancel;
mod delays;
mod deploy;
mod faults;
mod forgery;
mod group_wait;
mod groups;
mod hostile;
mod jobs;
mod local;
mod metrics;
mod once;
mod policy;
mod python_client;
mod rejections;
mod remote;
mod retries;
mod roles;
mod secret_logs;
mod secrets;
mod server_list;
mod shell;
mod submit;
mod support;
mod ui;
mod worker_flags;
