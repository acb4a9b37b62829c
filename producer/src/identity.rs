//! Who is acting: `user@host`, as recorded in a job's `queued_by` and in cancel requests.
//!
//! It names a person and a machine for the history; it authenticates nothing.

/// `user@hostname`: the user of this process's user id (as `id -un` says), else `$USER`, with
/// `unknown` for either part that cannot be read.
pub fn user_at_host() -> String {
    let host = runway_worker::hostname().unwrap_or_else(|| "unknown".to_owned());
    format!("{}@{host}", user_name())
}

/// The name of the real user id: `USER` is unset under cron and for root in many containers,
/// and a user may set it to anything, so the user database goes first.
fn user_name() -> String {
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => user.name,
        // A uid with no entry (a container's arbitrary uid): its number says who it is.
        Ok(None) => std::env::var("USER").unwrap_or_else(|_| format!("uid{uid}")),
        Err(_) => std::env::var("USER").unwrap_or_else(|_| "unknown".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_user_is_the_one_of_this_process_uid() {
        let expected = nix::unistd::User::from_uid(nix::unistd::getuid()).expect("passwd").expect("an entry").name;
        assert_eq!(super::user_name(), expected);
    }
}
