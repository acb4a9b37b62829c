//! The scheduling keys of an operation: `retry = { attempts, on, delay, exit_codes }` and
//! `delay`, each checked with an error that names the key and what was expected.
//!
//! It only reads the file; the runner carries out retries, the broker holds delayed jobs.

use std::time::Duration;

use runway_broker::protocol::{self, Retry, Status};
use serde::Deserialize;
use toml::Spanned;

use super::{DURATION_EXAMPLES, DurationText, Pending, ProjectError, SourceFile};

/// Attempts in all when `retry` does not say (the first one included).
pub(super) const DEFAULT_ATTEMPTS: u32 = 3;

/// The most attempts a job may make.
const MAX_ATTEMPTS: i64 = 100;

/// What an attempt may end in to be retried, and the default of `on`.
const RETRYABLE: [Status; 3] = [Status::Failed, Status::Lost, Status::TimedOut];

/// `retry` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RetrySection {
    attempts: Option<Spanned<i64>>,
    on: Option<Vec<Spanned<String>>>,
    delay: Option<Spanned<DurationText>>,
    exit_codes: Option<Vec<Spanned<i64>>>,
}

impl SourceFile<'_> {
    /// The `retry` of operation `name`, with the defaults for what it does not say.
    pub(super) fn retry(&self, section: RetrySection, name: &str) -> Result<Retry, ProjectError> {
        let attempts = match section.attempts {
            Some(attempts) if !(1..=MAX_ATTEMPTS).contains(attempts.get_ref()) => {
                return Err(self.invalid(
                    attempts.span(),
                    format!(
                        "`retry.attempts` is {} in operation `{name}`, expected 1 to {MAX_ATTEMPTS} \
                         (attempts in all, the first one included)",
                        attempts.get_ref()
                    ),
                ));
            }
            Some(attempts) => u32::try_from(*attempts.get_ref()).unwrap_or(DEFAULT_ATTEMPTS),
            None => DEFAULT_ATTEMPTS,
        };
        let on = match section.on {
            Some(names) => {
                let mut on = Vec::new();
                for status in names {
                    let Some(found) = RETRYABLE.into_iter().find(|known| known.as_str() == status.get_ref()) else {
                        return Err(self.invalid(
                            status.span(),
                            format!(
                                "unknown status `{}` in `retry.on` of operation `{name}`, expected some of \
                                 \"failed\", \"lost\", \"timed_out\"",
                                status.get_ref().escape_debug()
                            ),
                        ));
                    };
                    if !on.contains(&found) {
                        on.push(found);
                    }
                }
                on
            }
            None => RETRYABLE.to_vec(),
        };
        let delay = match section.delay {
            Some(text) => self.duration(&text, "retry.delay")?,
            None => Duration::ZERO,
        };
        let mut exit_codes = Vec::new();
        for code in section.exit_codes.unwrap_or_default() {
            let Some(valid) = i32::try_from(*code.get_ref()).ok().filter(|code| (1..=255).contains(code)) else {
                return Err(self.invalid(
                    code.span(),
                    format!(
                        "exit code {} in `retry.exit_codes` of operation `{name}`, expected 1 to 255",
                        code.get_ref()
                    ),
                ));
            };
            exit_codes.push(valid);
        }
        Ok(Retry { attempts, on, delay_ms: protocol::to_ms(delay), exit_codes })
    }

    /// The `concurrency_pending` of operation `name`.
    pub(super) fn pending(&self, text: &Spanned<String>, name: &str) -> Result<Pending, ProjectError> {
        match text.get_ref().as_str() {
            "queue" => Ok(Pending::Queue),
            "cancel" => Ok(Pending::Cancel),
            other => Err(self.invalid(
                text.span(),
                format!(
                    "unknown `concurrency_pending` `{}` in operation `{name}`, expected \"queue\" (wait in turn) \
                     or \"cancel\" (a new job cancels the waiting ones)",
                    other.escape_debug()
                ),
            )),
        }
    }

    /// The `delay` of operation `name`: its jobs wait this long after they are queued.
    pub(super) fn delay(&self, text: &Spanned<DurationText>, name: &str) -> Result<Duration, ProjectError> {
        let delay = self.duration(text, "delay")?;
        if delay.is_zero() {
            return Err(self.invalid(
                text.span(),
                format!("zero `delay` in operation `{name}`, expected a positive duration, {DURATION_EXAMPLES}"),
            ));
        }
        Ok(delay)
    }
}
