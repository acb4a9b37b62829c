//! Broker URLs as runway shows them: the address without user or password, and parse errors
//! with the password replaced.
//!
//! It does not parse URLs itself (lapin's `AMQPUri` does); it only decides what is safe to print.

use lapin::uri::AMQPUri;

use crate::Error;

/// `scheme://host:port/vhost` with the vhost percent-encoded, as in the URL.
pub(super) fn display_name(uri: &AMQPUri) -> String {
    let mut vhost = String::new();
    for byte in uri.vhost.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            vhost.push(char::from(byte));
        } else {
            vhost.push_str(&format!("%{byte:02x}"));
        }
    }
    format!("{}://{}:{}/{vhost}", uri.scheme, uri.authority.host, uri.authority.port)
}

pub(super) fn invalid_url(url: &str, reason: &str) -> Error {
    let redacted = redact(url);
    // The parser may quote the URL it refused: never repeat a password.
    let reason = reason.replace(url, &redacted);
    Error::Protocol(format!(
        "invalid broker URL `{redacted}`: {reason} (expected amqp://user:password@host:port/vhost)"
    ))
}

/// `url` with any password replaced by `***`. It errs on the side of hiding: everything between
/// the scheme and the last `@` is user info, even if the URL is malformed; with no `@`, a
/// `user:rest` right after the scheme may be `user:password` cut short (`amqp://guest:pw`),
/// unless `rest` is only a port.
pub(super) fn redact(url: &str) -> String {
    let (prefix, rest) = match url.find("://") {
        Some(at) => url.split_at(at + 3),
        None => ("", url),
    };
    let Some(at) = rest.rfind('@') else {
        return match rest.split_once(':') {
            Some((user, after)) if !prefix.is_empty() && !is_port_and_path(after) => format!("{prefix}{user}:***"),
            _ => url.to_owned(),
        };
    };
    let (userinfo, host) = rest.split_at(at);
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{prefix}{user}:***{host}"),
        None if prefix.is_empty() => format!("***{host}"),
        None => url.to_owned(),
    }
}

/// `5672`, `5672/vhost`: what follows a host's colon, nothing to hide.
fn is_port_and_path(after_colon: &str) -> bool {
    let port = after_colon.split('/').next().unwrap_or_default();
    !port.is_empty() && port.bytes().all(|byte| byte.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::AmqpBroker;

    #[test]
    fn urls_are_checked_and_never_shown_with_their_password() {
        let broker = AmqpBroker::new("amqp://guest:s3cret@127.0.0.1:5672/%2f", Duration::from_secs(1)).expect("valid");
        assert_eq!(broker.display_name(), "amqp://127.0.0.1:5672/%2f");
        assert!(!format!("{broker:?}").contains("s3cret"));
        let broker = AmqpBroker::new("amqps://u:p@rabbit.example/prod", Duration::from_secs(1)).expect("valid");
        assert_eq!(broker.display_name(), "amqps://rabbit.example:5671/prod");
        for bad in [
            "http://u:s3cret@host/",
            "amqp://u:s3cret@host:notaport/",
            "amqp://u:s3/cret@host:99999/",
            "amqp//u:s3cret@host",
            "amqp://guest:s3cret",
            "amqp://guest:s3cret/vhost",
        ] {
            let err = AmqpBroker::new(bad, Duration::from_secs(1)).expect_err(bad);
            let message = err.to_string();
            assert!(!message.contains("s3cret") && !message.contains("cret@"), "{message}");
            assert!(message.contains("invalid broker URL"), "{message}");
        }
    }

    #[test]
    fn redaction_hides_a_password_without_an_at_and_keeps_a_port() {
        assert_eq!(super::redact("amqp://guest:pw"), "amqp://guest:***");
        assert_eq!(super::redact("amqp://u:p@w@host/"), "amqp://u:***@host/");
        assert_eq!(super::redact("amqp://host:99999/vhost"), "amqp://host:99999/vhost");
        assert_eq!(super::redact("amqp://host"), "amqp://host");
    }
}
