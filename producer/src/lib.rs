//! runway-producer: the `runway` CLI as a library: the project file, the command line, queuing
//! a job, following its events, the history commands, and the exit codes.
//!
//! The binary in `bin/runway.rs` only parses flags, sets up tracing and calls [`commands::run`].
//! A job's path through it: `commands` (dispatch) → `operations` → `settings` and `plan` →
//! `session` (open, submit) → `attach` (follow, rejoin) → `printer`.

pub mod attach;
pub mod cancel;
pub mod cli;
pub mod colour;
pub mod commands;
pub mod connect;
pub mod exit;
pub mod format;
pub mod group_wait;
pub mod identity;
pub mod init;
pub mod inspect;
pub mod list;
pub mod logs;
pub mod lookup;
pub mod operations;
pub mod plan;
pub mod printer;
pub mod project;
pub mod roles;
pub mod runners;
pub mod session;
pub mod settings;
pub mod shell;
pub mod stdout;
pub mod submit;
pub mod table;
pub mod ui;
pub mod view;
pub mod waiting;
