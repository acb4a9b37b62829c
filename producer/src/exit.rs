//! Exit codes and the errors that map to them: one documented code per kind of failure, so a
//! script can tell a bad flag from a failed deploy.
//!
//! The table is in the README; keep the two in step.

use runway_broker::protocol::{Completed, Status};

use crate::project::ProjectError;

/// The job succeeded.
pub const SUCCESS: u8 = 0;
/// A flag, argument or operation name is wrong.
pub const USAGE: u8 = 64;
/// The project file is invalid.
pub const PROJECT_INVALID: u8 = 65;
/// No project file was found.
pub const PROJECT_NOT_FOUND: u8 = 66;
/// No job has that id.
pub const NO_SUCH_JOB: u8 = 67;
/// No runner serves the job's target.
pub const NO_RUNNER: u8 = 68;
/// The broker cannot be reached, or the connection to it was lost.
pub const BROKER_UNAVAILABLE: u8 = 69;
/// A bug or an unexpected broker answer.
pub const INTERNAL: u8 = 70;
/// A file runway was asked to create cannot be (`runway init`: it exists already).
pub const CANNOT_CREATE: u8 = 73;
/// The broker refused an operation: the account lacks a role's rights.
pub const NO_PERMISSION: u8 = 77;
/// The job's runner went silent.
pub const LOST: u8 = 75;
/// A runner refused the job.
pub const REJECTED: u8 = 76;
/// The job hit its timeout.
pub const TIMED_OUT: u8 = 124;
/// The job was cancelled.
pub const CANCELLED: u8 = 130;

/// The exit code for a finished job.
pub fn for_job(completed: &Completed) -> u8 {
    match completed.status {
        Status::Success => SUCCESS,
        Status::Failed => completed.exit_code.and_then(|code| u8::try_from(code).ok()).filter(|&c| c != 0).unwrap_or(1),
        Status::Cancelled => CANCELLED,
        Status::TimedOut => TIMED_OUT,
        Status::Lost => LOST,
        Status::Rejected => REJECTED,
    }
}

/// Everything that stops the CLI before a job could finish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Project(#[from] ProjectError),
    #[error("{}", unknown_operation(name, defined))]
    UnknownOperation { name: String, defined: Vec<String> },
    #[error("{0}")]
    NoRunner(String),
    #[error("{0}")]
    NoSuchJob(String),
    #[error(transparent)]
    Broker(#[from] runway_broker::Error),
    /// The broker refused an operation; `hint` names the role that has the right.
    #[error("{source}: {hint}")]
    Refused { source: runway_broker::Error, hint: String },
    #[error("{0}")]
    Internal(String),
    /// A file to create exists already, or cannot be written.
    #[error("{0}")]
    CannotCreate(String),
    /// Whoever read stdout went away (a closed pipe): not a failure, and nothing to say.
    #[error("stdout was closed")]
    StdoutClosed,
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::UnknownOperation { .. } => USAGE,
            CliError::Project(err) if err.is_not_found() => PROJECT_NOT_FOUND,
            CliError::Project(_) => PROJECT_INVALID,
            CliError::NoRunner(_) => NO_RUNNER,
            CliError::NoSuchJob(_) => NO_SUCH_JOB,
            CliError::Broker(err) if err.is_unreachable() => BROKER_UNAVAILABLE,
            CliError::Broker(runway_broker::Error::AccessRefused { .. }) | CliError::Refused { .. } => NO_PERMISSION,
            CliError::Broker(runway_broker::Error::Unroutable { .. }) => NO_RUNNER,
            CliError::Broker(_) | CliError::Internal(_) => INTERNAL,
            CliError::CannotCreate(_) => CANNOT_CREATE,
            CliError::StdoutClosed => SUCCESS,
        }
    }
}

/// The message of [`CliError::UnknownOperation`].
fn unknown_operation(name: &str, defined: &[String]) -> String {
    if defined.is_empty() {
        format!("unknown operation `{name}`: the project file defines no operations")
    } else {
        format!("unknown operation `{name}`; defined: {}", defined.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn completed(status: Status, exit_code: Option<i32>) -> Completed {
        Completed {
            status,
            exit_code,
            signal: None,
            duration_ms: 0,
            outputs: BTreeMap::new(),
            error: None,
            retrying: None,
        }
    }

    #[test]
    fn job_codes() {
        assert_eq!(for_job(&completed(Status::Success, Some(0))), 0);
        assert_eq!(for_job(&completed(Status::Failed, Some(3))), 3);
        assert_eq!(for_job(&completed(Status::Failed, Some(137))), 137);
        assert_eq!(for_job(&completed(Status::Failed, None)), 1);
        assert_eq!(for_job(&completed(Status::TimedOut, Some(143))), TIMED_OUT);
        assert_eq!(for_job(&completed(Status::Cancelled, Some(143))), CANCELLED);
    }
}
