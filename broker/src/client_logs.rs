//! Keeping the AMQP client's own tracing out of runway's logs below `info`, whatever filter the
//! user asks for: at `debug` and `trace`, lapin and amq-protocol print frames whole, among them
//! `connection.start-ok` with the login's password bytes, and message bodies with job env values.
//!
//! It only decides which events pass; the binaries build their subscribers themselves.

use tracing::{Level, Metadata};
use tracing_subscriber::filter::FilterFn;

/// The crates under runway that see the connection's bytes: the AMQP client and its transport.
const CLIENT_TARGETS: [&str; 5] = ["lapin", "amq_protocol", "tcp_stream", "rustls", "async_rs"];

/// Whether `target` (a module path) belongs to one of [`CLIENT_TARGETS`].
pub fn is_client_target(target: &str) -> bool {
    CLIENT_TARGETS.iter().any(|client| {
        target
            .strip_prefix(client)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::") || rest.starts_with('_'))
    })
}

/// A filter that drops the client crates' events and spans below `info`. Binaries apply it on
/// top of the user's filter (`RUNWAY_LOG`), so that no filter can let them through.
pub fn client_log_cap() -> FilterFn<fn(&Metadata<'_>) -> bool> {
    FilterFn::new(passes as fn(&Metadata<'_>) -> bool)
}

fn passes(metadata: &Metadata<'_>) -> bool {
    *metadata.level() <= Level::INFO || !is_client_target(metadata.target())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_crates_and_their_modules_are_told_apart_from_runway() {
        for target in
            ["lapin", "lapin::channel", "amq_protocol", "amq_protocol_types::flags", "tcp_stream", "rustls::conn"]
        {
            assert!(is_client_target(target), "{target}");
        }
        for target in ["runway_broker::amqp", "runway_worker", "lapinx", "tokio::net"] {
            assert!(!is_client_target(target), "{target}");
        }
    }
}
