//! A job's process environment: which of the runner's own variables a job gets (an allow-list
//! for a daemon, the developer's environment for a runner inside the CLI), and the whole
//! environment of one job's process in the order that decides who wins.
//!
//! It never passes the runner's connection settings (`RUNWAY_*`, `AMQP_URL`), whatever the
//! operator asks; it does not resolve secrets (`secrets` does) or log any value.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::Path;

use runway_broker::protocol::Job;

/// The runner's variables every job gets, when the runner has them: what a program needs to
/// find its tools, its user, its language and time zone, and a place for temporary files.
const ALLOWED: &[&str] =
    &["PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "SHELL", "TERM", "TMPDIR", "HOSTNAME"];

/// Prefixes of allowed families of variables (the locale's categories).
const ALLOWED_PREFIXES: &[&str] = &["LC_"];

/// Whether `name` is one of the runner's connection settings or runway's own variables: never
/// passed to a job, even on request (a job that needs the broker is given its own credentials
/// as a secret, under another name).
pub fn is_withheld(name: &str) -> bool {
    name.starts_with("RUNWAY_") || name == "AMQP_URL"
}

/// Why a variable cannot be passed to jobs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PassEnvError {
    #[error("--pass-env {name}: the runner's connection settings and runway's own variables are never passed to jobs")]
    Withheld { name: String },
    #[error("--pass-env `{name}`: not a variable name (empty, or has `=` or NUL)")]
    InvalidName { name: String },
}

/// The runner's own variables a daemon's jobs get: the allow-list and the names the operator
/// passes on purpose (`--pass-env`), those of them that `vars` has.
pub fn allowed(vars: impl IntoIterator<Item = (OsString, OsString)>, pass: &[String]) -> BTreeMap<OsString, OsString> {
    vars.into_iter()
        .filter(|(name, _)| {
            name.to_str().is_some_and(|name| {
                !is_withheld(name)
                    && (ALLOWED.contains(&name)
                        || ALLOWED_PREFIXES.iter().any(|prefix| name.starts_with(prefix))
                        || pass.iter().any(|passed| passed == name))
            })
        })
        .collect()
}

/// Check the names given with `--pass-env`.
pub fn check_pass_env(pass: &[String]) -> Result<(), PassEnvError> {
    for name in pass {
        if !is_variable_name(name) {
            return Err(PassEnvError::InvalidName { name: name.clone() });
        }
        if is_withheld(name) {
            return Err(PassEnvError::Withheld { name: name.clone() });
        }
    }
    Ok(())
}

/// A name a variable can have: non-empty, without `=` or NUL.
pub fn is_variable_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['=', '\0'])
}

/// The variables a runner inside the CLI passes to its jobs: the developer's whole environment
/// but the connection settings, as `make` or `cargo run` would (see docs/SECURITY.md).
pub fn in_process(vars: impl IntoIterator<Item = (OsString, OsString)>) -> BTreeMap<OsString, OsString> {
    vars.into_iter().filter(|(name, _)| !name.to_str().is_some_and(is_withheld)).collect()
}

/// What else a job's process is told besides its env and secrets.
#[derive(Debug)]
pub(crate) struct JobVars<'a> {
    pub(crate) runner: &'a str,
    pub(crate) output: &'a Path,
}

/// The whole environment of `job`'s process, later entries winning: the runner's variables
/// (`base`), the job's env, runway's own variables, and the secrets.
pub(crate) fn job_environment(
    base: &BTreeMap<OsString, OsString>,
    job: &Job,
    vars: &JobVars<'_>,
    secrets: &[(String, String)],
) -> BTreeMap<OsString, OsString> {
    let mut env = base.clone();
    // The job's own env is the producer's choice, not the runner's: a job may be given a
    // RUNWAY_SERVER of its own to run `runway` itself.
    env.extend(job.env.iter().map(|(name, value)| (name.into(), value.into())));
    env.insert("RUNWAY_JOB_ID".into(), job.id.to_string().into());
    env.insert("RUNWAY_ATTEMPT".into(), job.attempt.to_string().into());
    env.insert("RUNWAY_RUNNER_ID".into(), vars.runner.into());
    env.insert("RUNWAY_OUTPUT".into(), OsStr::new(vars.output).to_owned());
    for (name, value) in secrets {
        env.insert(name.into(), value.into());
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs.iter().map(|(k, v)| (OsString::from(k), OsString::from(v))).collect()
    }

    fn names(env: &BTreeMap<OsString, OsString>) -> Vec<&str> {
        env.keys().filter_map(|name| name.to_str()).collect()
    }

    #[test]
    fn a_daemon_passes_the_allow_list_and_what_the_operator_passes() {
        let worker = vars(&[
            ("PATH", "/bin"),
            ("LC_ALL", "C"),
            ("RUNWAY_SERVER", "amqp://u:pw@h"),
            ("AMQP_URL", "amqp://u:pw@h"),
            ("FOO_SECRET", "s3cret"),
            ("FOO", "1"),
        ]);
        assert_eq!(names(&allowed(worker.clone(), &[])), ["LC_ALL", "PATH"]);
        assert_eq!(names(&allowed(worker, &["FOO".to_owned(), "RUNWAY_SERVER".to_owned()])), ["FOO", "LC_ALL", "PATH"]);
    }

    #[test]
    fn connection_settings_cannot_be_passed_on_purpose() {
        assert!(matches!(check_pass_env(&["RUNWAY_SERVER".to_owned()]), Err(PassEnvError::Withheld { .. })));
        assert!(matches!(check_pass_env(&["AMQP_URL".to_owned()]), Err(PassEnvError::Withheld { .. })));
        assert!(matches!(check_pass_env(&["A=B".to_owned()]), Err(PassEnvError::InvalidName { .. })));
        assert!(check_pass_env(&["FOO".to_owned()]).is_ok());
    }

    #[test]
    fn a_runner_in_the_cli_passes_all_but_the_connection_settings() {
        let cli = vars(&[("CARGO_HOME", "/c"), ("RUNWAY_SERVER", "local"), ("RUNWAY_NAMESPACE", "x")]);
        assert_eq!(names(&in_process(cli)), ["CARGO_HOME"]);
    }
}
