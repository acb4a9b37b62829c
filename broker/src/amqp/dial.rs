//! Dialling RabbitMQ: [`AmqpBroker`] holds a checked URL and makes each [`Connection`] within the
//! connect timeout.
//!
//! It dials once per call and never again by itself: lapin's automatic recovery stays off (see
//! `mod.rs`), and an owner whose connection dropped dials anew with [`Connection::redial`].

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lapin::ConnectionProperties;
use lapin::tcp::{AMQPUriTcpExt, TLSConfig};
use lapin::uri::AMQPUri;

use super::error_map::connect_error;
use super::url::{display_name, invalid_url};
use super::{Connection, Inner};
use crate::{Error, Result};

/// Seconds between heartbeats, unless the URL says otherwise (`?heartbeat=N`).
const HEARTBEAT_SECS: u16 = 10;

/// A RabbitMQ broker, by URL. Nothing is dialled until [`AmqpBroker::connect`].
#[derive(Clone)]
pub struct AmqpBroker {
    /// Holds the credentials: never print it.
    uri: AMQPUri,
    display_name: String,
    connect_timeout: Duration,
}

impl fmt::Debug for AmqpBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpBroker")
            .field("url", &self.display_name)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl AmqpBroker {
    /// Parse and check `url` (`amqp://` or `amqps://`); heartbeats default to 10 s.
    pub fn new(url: &str, connect_timeout: Duration) -> Result<AmqpBroker> {
        let mut uri: AMQPUri = url.parse().map_err(|reason: String| invalid_url(url, &reason))?;
        if uri.authority.host.is_empty() {
            return Err(invalid_url(url, "no host"));
        }
        uri.query.heartbeat.get_or_insert(HEARTBEAT_SECS);
        let display_name = display_name(&uri);
        Ok(AmqpBroker { uri, display_name, connect_timeout })
    }

    /// `scheme://host:port/vhost`, without user or password.
    pub fn display_name(&self) -> String {
        self.display_name.clone()
    }

    /// The user the URL logs in as: what RabbitMQ expects in every publish's `user_id`.
    pub fn login(&self) -> &str {
        &self.uri.authority.userinfo.username
    }

    /// Dial a new connection of its own, within the connect timeout.
    pub async fn connect(&self) -> Result<Connection> {
        let host = self.display_name.clone();
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
        let stream =
            tokio::time::timeout_at(deadline, self.uri.connect_with_config_async(TLSConfig::default(), &runtime))
                .await
                .map_err(|_| timed_out())?
                .map_err(|err| Error::Unreachable { host: host.clone(), reason: err.to_string() })?;
        let dialled = Mutex::new(Some(stream));
        let connecting = lapin::Connection::connector(
            self.uri.clone(),
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
                    publisher: tokio::sync::Mutex::new(None),
                    broker: self.clone(),
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
