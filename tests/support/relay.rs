//! A TCP relay to the local RabbitMQ that can cut every connection through it and refuse new
//! ones: a broker connection lost for real, while the broker itself stays up.

use tokio::io::AsyncWriteExt as _;
use tokio::sync::watch;

use super::amqp_url;

/// A TCP relay to the broker that can cut every connection through it and refuse new ones.
pub struct Relay {
    pub addr: String,
    open: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// A relay to the broker of `AMQP_URL`.
    pub async fn start() -> Relay {
        let broker = broker_addr();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a relay port");
        let addr = listener.local_addr().expect("relay address").to_string();
        let (open, _) = watch::channel(true);
        let opened = open.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !*opened.borrow() {
                    let _ = client.shutdown().await;
                    continue;
                }
                let broker = broker.clone();
                let mut cut = opened.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&broker).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.wait_for(|open| !open) => {}
                    }
                });
            }
        });
        Relay { addr, open, task }
    }

    /// Cut every connection through the relay and refuse new ones (`false`), or accept again.
    pub fn set_open(&self, open: bool) {
        self.open.send_replace(open);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    /// `AMQP_URL` through the relay.
    pub fn url(&self) -> String {
        let url = amqp_url();
        let (login, rest) = url.split_once('@').expect("AMQP_URL has a login");
        let (_, vhost) = rest.split_once('/').expect("AMQP_URL has a vhost");
        format!("{login}@{}/{vhost}", self.addr)
    }
}

/// The `host:port` of `AMQP_URL`.
fn broker_addr() -> String {
    let url = amqp_url();
    let rest = url.split_once('@').map_or(url.as_str(), |(_, rest)| rest);
    rest.split_once('/').map_or(rest, |(addr, _)| addr).to_owned()
}
