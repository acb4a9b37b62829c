//! Tests of what a dropped connection does on RabbitMQ, through a TCP relay whose connections
//! the test cuts as a network failure would. AMQP-specific: the in-memory broker has no network.

use std::time::Duration;

use super::tests::amqp_url;
use crate::message::{ConsumeOptions, Message, QueueOptions};
use crate::{Broker, Consumer, Delivery, Error};

const PATIENCE: Duration = Duration::from_secs(20);

fn broker() -> Broker {
    Broker::amqp(&amqp_url(), Duration::from_secs(10)).expect("AMQP_URL is valid")
}

fn unique(what: &str) -> String {
    format!("test.amqp.{}.{what}", uuid::Uuid::now_v7().simple())
}

fn durable() -> QueueOptions {
    QueueOptions { durable: true, ..QueueOptions::default() }
}

fn text(body: &str) -> Message {
    Message::json(body.as_bytes().to_vec(), "test")
}

fn body(delivery: &Delivery) -> String {
    String::from_utf8(delivery.body.clone()).expect("utf-8")
}

async fn next(consumer: &mut Consumer) -> Delivery {
    tokio::time::timeout(PATIENCE, consumer.next())
        .await
        .expect("timed out waiting for a delivery")
        .expect("consumer ended")
        .expect("delivery error")
}

/// A TCP relay to RabbitMQ whose connections the test can cut, as a network failure would.
struct Relay {
    port: u16,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Relay {
    async fn start() -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let (cut, _) = tokio::sync::watch::channel(0);
        let cuts = cut.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut cut = cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect("127.0.0.1:5672").await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Relay { port, cut }
    }

    async fn connect(&self) -> crate::Connection {
        let url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port);
        Broker::amqp(&url, Duration::from_secs(10)).expect("valid").connect().await.expect("connect")
    }

    fn cut(&self) {
        self.cut.send_modify(|generation| *generation += 1);
    }
}

/// A dropped connection fails fast: its consumer ends, its publishes and acks fail with a
/// retryable error, and the broker requeues what it held.
#[tokio::test]
async fn a_dropped_connection_fails_fast() {
    let direct = broker().connect().await.expect("connect");
    let relay = Relay::start().await;
    let conn = relay.connect().await;
    let queue = unique("q");
    direct.declare_queue(&queue, &durable()).await.expect("declare");
    let mut consumer = conn.consume(&queue, &ConsumeOptions::with_prefetch(10)).await.expect("consume");
    conn.publish_confirmed("", &queue, &text("before"), true).await.expect("publish");
    let before = next(&mut consumer).await;
    assert_eq!(body(&before), "before");
    relay.cut();
    let ended = tokio::time::timeout(PATIENCE, consumer.next()).await.expect("the consumer ends");
    assert!(matches!(ended, Some(Err(Error::ConnectionClosed(_)))), "got {ended:?}");
    assert!(tokio::time::timeout(PATIENCE, consumer.next()).await.expect("ended").is_none());
    let err = conn.publish_confirmed("", &queue, &text("during"), true).await.expect_err("dropped");
    assert!(matches!(&err, Error::ConnectionClosed(_)) && err.is_retryable(), "got {err:?}");
    let err = before.acker.ack().await.expect_err("its channel was lost");
    assert!(matches!(err, Error::ConnectionClosed(_)), "got {err:?}");
    // The broker requeued what the dropped connection held.
    let again = broker().connect().await.expect("connect again");
    let mut consumer = again.consume(&queue, &ConsumeOptions::with_prefetch(10)).await.expect("consume");
    let delivery = next(&mut consumer).await;
    assert_eq!((body(&delivery), delivery.redelivered), ("before".to_owned(), true));
    drop(consumer);
    direct.delete_queue(&queue).await.expect("delete");
}

/// Regression: with lapin's recovery on, opening a channel just as the connection dropped
/// deadlocked the runtime thread (see the module doc of `amqp`). Without it, each attempt answers.
#[tokio::test]
async fn opening_channels_as_the_connection_drops_does_not_hang() {
    let relay = Relay::start().await;
    let conn = relay.connect().await;
    let queue = unique("q");
    conn.declare_queue(&queue, &durable()).await.expect("declare");
    relay.cut();
    for _ in 0..5 {
        let checked = tokio::time::timeout(PATIENCE, conn.queue_info(&queue)).await.expect("no hang");
        assert!(matches!(checked, Ok(Some(_)) | Err(Error::ConnectionClosed(_))), "got {checked:?}");
    }
    broker().connect().await.expect("connect").delete_queue(&queue).await.expect("delete");
}
