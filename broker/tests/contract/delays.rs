//! The contract of what delayed jobs are built on: `CC` routing keys, message TTL, and expired
//! messages dead-lettered with their routing keys (see broker/src/topology/delay.rs).

use std::time::{Duration, Instant};

use runway_broker::protocol::{Command, Job, now_ms};
use runway_broker::topology::Topology;
use runway_broker::{Broker, ConsumeOptions, ExchangeKind, HeaderValue, QueueOptions};

use super::{Names, amqp, body, cleanup, durable, memory, next, text};

contract!(
    a_publish_with_cc_routes_by_every_key,
    an_expired_message_is_dead_lettered_by_its_cc_keys_no_sooner_than_its_ttl,
    a_delayed_job_reaches_its_queue_no_sooner_than_it_is_due,
);

async fn a_publish_with_cc_routes_by_every_key(broker: Broker, test: &str) {
    let names = Names::new(test);
    let conn = broker.connect().await.expect("connect");
    let (exchange, a, b, c) = (names.name("x"), names.name("a"), names.name("b"), names.name("c"));
    conn.declare_exchange(&exchange, ExchangeKind::Direct, true).await.expect("exchange");
    for (queue, key) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        conn.declare_queue(queue, &durable()).await.expect("queue");
        conn.bind_queue(queue, &exchange, key).await.expect("bind");
    }
    let mut message = text("both");
    message.properties.headers.insert("CC".to_owned(), HeaderValue::List(vec!["b".to_owned()]));
    conn.publish_confirmed(&exchange, "a", &message, true).await.expect("publish");
    for queue in [&a, &b] {
        let mut consumer = conn.consume(queue, &ConsumeOptions::with_prefetch(1)).await.expect("consume");
        let delivery = next(&mut consumer).await;
        assert_eq!(body(&delivery), "both");
        assert_eq!(delivery.properties.headers.get("CC"), Some(&HeaderValue::List(vec!["b".to_owned()])));
        delivery.acker.ack().await.expect("ack");
    }
    let info = conn.queue_info(&c).await.expect("info").expect("queue c exists");
    assert_eq!(info.messages, 0, "a key in no CC header routes nothing");
    cleanup(&conn, &[&a, &b, &c], &[&exchange]).await;
}

async fn an_expired_message_is_dead_lettered_by_its_cc_keys_no_sooner_than_its_ttl(broker: Broker, test: &str) {
    let names = Names::new(test);
    let conn = broker.connect().await.expect("connect");
    let (holding_exchange, target_exchange) = (names.name("delays"), names.name("jobs"));
    let (holding, target, other) = (names.name("hold"), names.name("target"), names.name("other"));
    conn.declare_exchange(&holding_exchange, ExchangeKind::Direct, true).await.expect("exchange");
    conn.declare_exchange(&target_exchange, ExchangeKind::Direct, true).await.expect("exchange");
    let ttl = Duration::from_millis(400);
    let options = QueueOptions {
        message_ttl: Some(ttl),
        dead_letter_exchange: Some(target_exchange.clone()),
        expires: Some(Duration::from_secs(60)),
        ..durable()
    };
    conn.declare_queue(&holding, &options).await.expect("holding queue");
    conn.bind_queue(&holding, &holding_exchange, "400").await.expect("bind");
    for (queue, key) in [(&target, "target"), (&other, "400")] {
        conn.declare_queue(queue, &durable()).await.expect("queue");
        conn.bind_queue(queue, &target_exchange, key).await.expect("bind");
    }
    let mut consumer = conn.consume(&target, &ConsumeOptions::with_prefetch(10)).await.expect("consume");
    let published = Instant::now();
    for n in ["first", "second"] {
        let mut message = text(n);
        message.properties.headers.insert("CC".to_owned(), HeaderValue::List(vec!["target".to_owned()]));
        conn.publish_confirmed(&holding_exchange, "400", &message, true).await.expect("publish");
    }
    let first = next(&mut consumer).await;
    assert!(published.elapsed() >= ttl, "dead-lettered after {:?}, before its TTL of {ttl:?}", published.elapsed());
    assert_eq!(body(&first), "first", "expired in the order they were held");
    assert_eq!(body(&next(&mut consumer).await), "second");
    let holding_info = conn.queue_info(&holding).await.expect("info").expect("holding queue exists");
    assert_eq!(holding_info.messages, 0, "both left the holding queue");
    // Its own routing key went along too: a queue bound to it in the dead-letter exchange got it.
    let other_info = conn.queue_info(&other).await.expect("info").expect("queue exists");
    assert_eq!(other_info.messages, 2);
    first.acker.ack().await.expect("ack");
    drop(consumer);
    cleanup(&conn, &[&holding, &target, &other], &[&holding_exchange, &target_exchange]).await;
}

async fn a_delayed_job_reaches_its_queue_no_sooner_than_it_is_due(broker: Broker, test: &str) {
    let ns = format!("ct-{}", uuid::Uuid::now_v7().simple());
    let _ = test;
    let topology = Topology::new(&ns).expect("valid namespace");
    let conn = broker.connect().await.expect("connect");
    topology.declare(&conn, &Default::default()).await.expect("declare");
    let queue = topology.job_queue(&runway_broker::protocol::Target::Any);
    let mut consumer = conn.consume(&queue, &ConsumeOptions::with_prefetch(1)).await.expect("consume");
    let due = now_ms() + 500;
    let job = Job { not_before_ms: Some(due), ..Job::new("op", "p", Command::Shell("true".to_owned()), "t") };
    topology.publish_job(&conn, &job).await.expect("a delayed job is confirmed");
    let delivery = next(&mut consumer).await;
    assert!(now_ms() >= due, "the job arrived {} ms before it was due", due - now_ms());
    assert_eq!(delivery.properties.message_id, Some(job.id.to_string()));
    assert!(!delivery.redelivered, "a job out of a holding queue is a first delivery");
    delivery.acker.ack().await.expect("ack");
    drop(consumer);
    conn.delete_queue(&topology.delay_queue(Duration::from_millis(500))).await.expect("clean up");
    conn.delete_exchange(&format!("{ns}.delays")).await.expect("clean up");
    topology.delete_shared(&conn).await.expect("clean up");
}
