//! Who is acting: `user@host`, as recorded in a job's `queued_by` and in cancel requests.
//!
//! It names a person and a machine for the history; it authenticates nothing.

/// `$USER@hostname`, with `unknown` for either part that cannot be read.
pub fn user_at_host() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".to_owned());
    let host = runway_worker::hostname().unwrap_or_else(|| "unknown".to_owned());
    format!("{user}@{host}")
}
