//! Dialling RabbitMQ: [`AmqpBroker`] holds a checked server list (one URL, or the nodes of a
//! cluster) and makes each [`Connection`] to the first node that answers within the connect
//! timeout.
//!
//! Each call tries every node once and never again by itself: lapin's automatic recovery stays
//! off (see `mod.rs`), and an owner whose connection dropped dials anew with
//! [`Connection::redial`], which starts at the node after the one it lost.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lapin::ConnectionProperties;
use lapin::tcp::AMQPUriTcpExt;
use lapin::uri::SASLMechanism;

use super::error_map::connect_error;
use super::server_list::{self, Endpoint, ServerOrder};
use super::tls::{Tls, TlsFiles};
use super::{Connection, Inner};
use crate::{Error, Result};

/// A RabbitMQ broker: one node, or the nodes of a cluster. Nothing is dialled until
/// [`AmqpBroker::connect`].
#[derive(Clone)]
pub struct AmqpBroker {
    /// In the order they are tried.
    endpoints: Arc<[Endpoint]>,
    connect_timeout: Duration,
    /// Holds the client key, if any: never print it.
    tls: Arc<Tls>,
}

impl fmt::Debug for AmqpBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpBroker")
            .field("url", &self.display_name())
            .field("connect_timeout", &self.connect_timeout)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl AmqpBroker {
    /// Parse and check `urls` (`amqp://` or `amqps://`, several separated by commas), to be
    /// tried in a random order; heartbeats default to 10 s.
    pub fn new(urls: &str, connect_timeout: Duration) -> Result<AmqpBroker> {
        AmqpBroker::in_order(urls, connect_timeout, ServerOrder::Shuffled, &TlsFiles::default())
    }

    /// As [`AmqpBroker::new`], with the TLS files `tls`, read and checked here; a client
    /// certificate makes EXTERNAL the login unless the URL names an `auth_mechanism`.
    pub fn new_with_tls(urls: &str, connect_timeout: Duration, tls: &TlsFiles) -> Result<AmqpBroker> {
        AmqpBroker::in_order(urls, connect_timeout, ServerOrder::Shuffled, tls)
    }

    /// As [`AmqpBroker::new_with_tls`], with the nodes tried in `order`. The TLS files are
    /// checked against every node's URL (TLS files with an `amqp://` node are refused).
    pub fn in_order(urls: &str, connect_timeout: Duration, order: ServerOrder, files: &TlsFiles) -> Result<AmqpBroker> {
        let mut endpoints = server_list::parse(urls, order)?;
        let mut tls = None;
        for endpoint in &mut endpoints {
            tls = Some(Tls::load(files, &mut endpoint.uri, &endpoint.display_name)?);
        }
        let tls = tls.ok_or_else(|| Error::Protocol("the server list is empty".to_owned()))?;
        Ok(AmqpBroker { endpoints: endpoints.into(), connect_timeout, tls: Arc::new(tls) })
    }

    /// `scheme://host:port/vhost` of each node, comma-separated, without user or password.
    pub fn display_name(&self) -> String {
        self.endpoints.iter().map(|endpoint| endpoint.display_name.as_str()).collect::<Vec<_>>().join(",")
    }

    /// How many nodes the server list holds.
    pub fn nodes(&self) -> usize {
        self.endpoints.len()
    }

    /// The user node `at` logs in as, when runway knows it: what RabbitMQ expects in every
    /// publish's `user_id`. With EXTERNAL the broker takes the user from the client certificate,
    /// which runway does not read, so it sets no `user_id` (see docs/SECURITY.md).
    pub(super) fn login_at(&self, at: usize) -> Option<&str> {
        let uri = &self.endpoints.get(at)?.uri;
        match uri.query.auth_mechanism {
            Some(SASLMechanism::External) => None,
            _ => Some(&uri.authority.userinfo.username),
        }
    }

    /// Dial a new connection of its own: each node in turn until one answers (each within the
    /// connect timeout); the error of the last one if none does.
    pub async fn connect(&self) -> Result<Connection> {
        self.connect_from(0).await
    }

    /// As [`AmqpBroker::connect`], starting at node `first` (of the order, wrapping around).
    pub(super) async fn connect_from(&self, first: usize) -> Result<Connection> {
        let count = self.endpoints.len();
        let mut failure = None;
        for at in (0..count).map(|step| (first + step) % count) {
            match self.dial(at).await {
                Ok(conn) => return Ok(conn),
                Err(err) => {
                    if count > 1 {
                        tracing::info!(error = %err, "a broker node did not answer; trying the next");
                    }
                    failure = Some(err);
                }
            }
        }
        Err(failure.unwrap_or_else(|| Error::Protocol("the server list is empty".to_owned())))
    }

    /// Dial node `at` (an index into the order), within the connect timeout.
    async fn dial(&self, at: usize) -> Result<Connection> {
        let Endpoint { uri, display_name } = &self.endpoints[at];
        let host = display_name.clone();
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::NotSupported(format!("connecting to {host} outside a tokio runtime")));
        }
        let runtime = lapin::runtime::default_runtime()
            .map_err(|err| Error::Unreachable { host: host.clone(), reason: err.to_string() })?;
        let properties = ConnectionProperties::default().with_connection_name("runway".into());

        // The socket (TCP, and TLS for amqps) is dialled here and handed to lapin for the AMQP
        // handshake, so that a refused or unresolvable host reads as the socket's own error.
        let deadline = tokio::time::Instant::now() + self.connect_timeout;
        let timed_out = || Error::ConnectTimeout { host: host.clone(), after: self.connect_timeout };
        let stream = tokio::time::timeout_at(deadline, uri.connect_with_config_async(self.tls.config(), &runtime))
            .await
            .map_err(|_| timed_out())?
            .map_err(|err| self.tls.dial_error(&host, &err))?;
        let dialled = Mutex::new(Some(stream));
        let connecting = lapin::Connection::connector(
            uri.clone(),
            runtime,
            async move |_uri, _runtime| {
                // lapin asks again only to recover a dropped connection, which is off.
                let stream = dialled.lock().unwrap_or_else(PoisonError::into_inner).take();
                stream.ok_or_else(|| std::io::Error::other("lapin asked to dial again; runway dials only once").into())
            },
            properties,
        );
        match tokio::time::timeout_at(deadline, connecting).await {
            Ok(Ok(conn)) => Ok(Connection {
                inner: Arc::new(Inner {
                    conn: Arc::new(conn),
                    host,
                    publishers: std::array::from_fn(|_| tokio::sync::Mutex::new(None)),
                    spare: std::sync::Mutex::new(Vec::new()),
                    broker: self.clone(),
                    endpoint: at,
                }),
            }),
            Ok(Err(err)) => Err(connect_error(&host, &err)),
            Err(_elapsed) => Err(timed_out()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::tests::amqp_url;
    use super::*;
    use crate::Broker;

    #[tokio::test]
    async fn a_refused_connection_is_unreachable_at_once() {
        let broker = Broker::amqp("amqp://guest:s3cret@127.0.0.1:1/%2f", Duration::from_secs(10)).expect("valid");
        let started = Instant::now();
        let err = broker.connect().await.expect_err("nothing listens on port 1");
        assert!(matches!(&err, Error::Unreachable { host, .. } if host == "amqp://127.0.0.1:1/%2f"), "got {err:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
        assert!(!err.to_string().contains("s3cret"));
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let silent = tokio::spawn(async move {
            let held = listener.accept().await;
            std::future::pending::<()>().await;
            drop(held);
        });
        let url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
        let broker = Broker::amqp(&url, Duration::from_millis(300)).expect("valid");
        let err = broker.connect().await.expect_err("no answer");
        assert!(
            matches!(err, Error::ConnectTimeout { after, .. } if after == Duration::from_millis(300)),
            "got {err:?}"
        );
        silent.abort();
    }

    #[tokio::test]
    async fn a_wrong_password_is_unreachable_without_the_password() {
        let url = amqp_url().replacen("guest:guest@", "guest:wrong-s3cret@", 1);
        let broker = Broker::amqp(&url, Duration::from_secs(10)).expect("valid");
        let err = broker.connect().await.expect_err("wrong password");
        assert!(matches!(err, Error::Unreachable { .. }), "got {err:?}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
}
