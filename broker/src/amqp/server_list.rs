//! A server list: the nodes of one RabbitMQ cluster as the user writes them
//! (`amqp://a:5672,amqp://b:5672`), each checked, and the order they are dialled in.
//!
//! It does not dial (`dial.rs` does) and never shows a password: an entry that does not parse is
//! named by its place in the list and its redacted text.

use lapin::uri::AMQPUri;

use super::url::{display_name, invalid_url};
use crate::{Error, Result};

/// Seconds between heartbeats, unless the URL says otherwise (`?heartbeat=N`).
const HEARTBEAT_SECS: u16 = 10;

/// The order a server list is dialled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServerOrder {
    /// A random order, drawn once per process: clients given the same list spread over its nodes.
    #[default]
    Shuffled,
    /// As written: the first entry is preferred (a client that should start on a node of its own).
    Listed,
}

/// One node of a server list.
#[derive(Clone)]
pub(super) struct Endpoint {
    /// Holds the credentials: never print it.
    pub(super) uri: AMQPUri,
    /// `scheme://host:port/vhost`, safe to print.
    pub(super) display_name: String,
}

/// Parse `urls` (one URL, or several separated by commas) into endpoints in `order`.
pub(super) fn parse(urls: &str, order: ServerOrder) -> Result<Vec<Endpoint>> {
    let entries: Vec<&str> = urls.split(',').map(str::trim).collect();
    let several = entries.len() > 1;
    let mut endpoints = Vec::with_capacity(entries.len());
    for (at, entry) in entries.iter().enumerate() {
        let place = || format!("entry {} of the server list `{}`", at + 1, redacted_list(&entries));
        if entry.is_empty() {
            return Err(Error::Protocol(format!("{}: empty (expected amqp://user:password@host:port/vhost)", place())));
        }
        match endpoint(entry) {
            Ok(endpoint) => endpoints.push(endpoint),
            Err(Error::Protocol(reason)) if several => return Err(Error::Protocol(format!("{}: {reason}", place()))),
            Err(err) => return Err(err),
        }
    }
    if order == ServerOrder::Shuffled {
        fastrand::shuffle(&mut endpoints);
    }
    Ok(endpoints)
}

/// Parse and check one URL (`amqp://` or `amqps://`); heartbeats default to 10 s.
fn endpoint(url: &str) -> Result<Endpoint> {
    let mut uri: AMQPUri = url.parse().map_err(|reason: String| invalid_url(url, &reason))?;
    if uri.authority.host.is_empty() {
        return Err(invalid_url(url, "no host"));
    }
    uri.query.heartbeat.get_or_insert(HEARTBEAT_SECS);
    let display_name = display_name(&uri);
    Ok(Endpoint { uri, display_name })
}

/// The list as it may be shown: each entry without its password.
fn redacted_list(entries: &[&str]) -> String {
    entries.iter().map(|entry| super::url::redact(entry)).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(urls: &str, order: ServerOrder) -> Vec<String> {
        parse(urls, order).expect("valid").into_iter().map(|endpoint| endpoint.display_name).collect()
    }

    #[test]
    fn one_url_is_a_list_of_one() {
        assert_eq!(names("amqp://u:p@h:5681/%2f", ServerOrder::Shuffled), ["amqp://h:5681/%2f"]);
    }

    #[test]
    fn a_listed_order_keeps_the_entries_as_written_and_spaces_do_not_matter() {
        let urls = "amqp://u:p@a:5681/%2f, amqp://u:p@b:5682/%2f ,amqps://u:p@c/prod";
        assert_eq!(names(urls, ServerOrder::Listed), ["amqp://a:5681/%2f", "amqp://b:5682/%2f", "amqps://c:5671/prod"]);
    }

    #[test]
    fn a_shuffled_order_holds_every_entry_once() {
        let urls = "amqp://a:1/%2f,amqp://b:2/%2f,amqp://c:3/%2f,amqp://d:4/%2f";
        let mut seen = names(urls, ServerOrder::Shuffled);
        seen.sort();
        assert_eq!(seen, ["amqp://a:1/%2f", "amqp://b:2/%2f", "amqp://c:3/%2f", "amqp://d:4/%2f"]);
    }

    #[test]
    fn a_bad_entry_is_named_by_its_place_without_any_password() {
        let err = parse("amqp://u:s3cret@a:5681/%2f,amqp://u:s3cret@b:notaport/", ServerOrder::Listed)
            .err()
            .expect("a bad port");
        let message = err.to_string();
        assert!(message.contains("entry 2 of the server list"), "{message}");
        assert!(message.contains("invalid broker URL `amqp://u:***@b:notaport/`"), "{message}");
        assert!(!message.contains("s3cret"), "{message}");
        let err = parse("amqp://u:s3cret@a:5681/%2f,,amqp://c/", ServerOrder::Listed).err().expect("an empty entry");
        let message = err.to_string();
        assert!(
            message.contains("entry 2 of the server list `amqp://u:***@a:5681/%2f,,amqp://c/`: empty"),
            "{message}"
        );
        let err = parse("amqp://a/,http://b/", ServerOrder::Listed).err().expect("another scheme");
        assert!(err.to_string().contains("entry 2 of the server list"), "{err}");
    }
}
