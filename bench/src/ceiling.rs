//! The benchmark's ceiling: what plain lapin achieves on the same broker for the same shape of
//! traffic as a runway job, with none of runway's work in between.
//!
//! A "job" here is: a persistent, confirmed publish into a quorum queue; a consumer takes and
//! acknowledges it and publishes `replies` reply messages (as a runner publishes events); the
//! producer consumes the replies. It speaks lapin itself, the one exception to "only broker/ knows
//! lapin": a ceiling has to be a plain client, with none of runway's layers, and as measurement code
//! it has no place in the library runway ships.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};

/// The shape of one ceiling run.
#[derive(Debug, Clone)]
pub(crate) struct Shape {
    /// Jobs in all.
    pub(crate) jobs: usize,
    /// Jobs published before waiting for their replies (1 measures latency).
    pub(crate) in_flight: usize,
    /// Reply messages per job, like a runner's events.
    pub(crate) replies: usize,
    /// Consumers taking jobs (like runners), each with this prefetch.
    pub(crate) consumers: usize,
    pub(crate) prefetch: u16,
}

/// What one ceiling run measured.
#[derive(Debug, Clone)]
pub(crate) struct Measured {
    pub(crate) elapsed: Duration,
    /// Queued-to-last-reply time of each job, in completion order.
    pub(crate) round_trips: Vec<Duration>,
}

fn err(what: &str, error: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("ceiling: {what}: {error}")
}

/// Run the plain-lapin equivalent of `shape.jobs` runway jobs on the broker at `url`.
pub(crate) async fn run(url: &str, shape: &Shape) -> anyhow::Result<Measured> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await.map_err(|e| err("connect", e))?;
    let id = uuid::Uuid::now_v7().simple().to_string();
    let jobs_queue = format!("ceiling.jobs.{id}");
    let replies_queue = format!("ceiling.replies.{id}");
    let admin = conn.create_channel().await.map_err(|e| err("channel", e))?;
    let mut quorum = FieldTable::default();
    quorum.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    admin.queue_declare(jobs_queue.as_str().into(), durable, quorum).await.map_err(|e| err("declare", e))?;
    let exclusive = QueueDeclareOptions { exclusive: true, ..QueueDeclareOptions::default() };
    admin
        .queue_declare(replies_queue.as_str().into(), exclusive, FieldTable::default())
        .await
        .map_err(|e| err("declare", e))?;

    // The "runners": take a job, publish its replies, acknowledge it.
    let mut workers = Vec::new();
    for _ in 0..shape.consumers {
        let channel = conn.create_channel().await.map_err(|e| err("channel", e))?;
        channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| err("confirm", e))?;
        channel.basic_qos(shape.prefetch, BasicQosOptions::default()).await.map_err(|e| err("qos", e))?;
        let mut deliveries = channel
            .basic_consume(jobs_queue.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .map_err(|e| err("consume", e))?;
        let replies = shape.replies;
        let reply_to = replies_queue.clone();
        workers.push(tokio::spawn(async move {
            while let Some(Ok(delivery)) = deliveries.next().await {
                let mut confirms = Vec::with_capacity(replies);
                for _ in 0..replies {
                    let properties = BasicProperties::default().with_delivery_mode(2);
                    if let Ok(confirm) = channel
                        .basic_publish(
                            "".into(),
                            reply_to.as_str().into(),
                            BasicPublishOptions::default(),
                            &delivery.data,
                            properties,
                        )
                        .await
                    {
                        confirms.push(confirm);
                    }
                }
                for confirm in confirms {
                    let _ = confirm.await;
                }
                let _ = delivery.ack(BasicAckOptions::default()).await;
            }
        }));
    }

    let publisher = conn.create_channel().await.map_err(|e| err("channel", e))?;
    publisher.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| err("confirm", e))?;
    let reader = conn.create_channel().await.map_err(|e| err("channel", e))?;
    let mut replies = reader
        .basic_consume(
            replies_queue.as_str().into(),
            "".into(),
            BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() },
            FieldTable::default(),
        )
        .await
        .map_err(|e| err("consume", e))?;

    let started = Instant::now();
    let mut sent_at = vec![started; shape.jobs];
    let mut remaining = vec![shape.replies; shape.jobs];
    let mut round_trips = Vec::with_capacity(shape.jobs);
    let mut next = 0;
    let mut done = 0;
    while done < shape.jobs {
        while next < shape.jobs && next - done < shape.in_flight.max(1) {
            let body = (next as u64).to_le_bytes();
            sent_at[next] = Instant::now();
            let properties = BasicProperties::default().with_delivery_mode(2);
            publisher
                .basic_publish("".into(), jobs_queue.as_str().into(), BasicPublishOptions::default(), &body, properties)
                .await
                .map_err(|e| err("publish", e))?
                .await
                .map_err(|e| err("confirm", e))?;
            next += 1;
        }
        let Some(Ok(reply)) = replies.next().await else {
            return Err(err("replies", "the reply consumer ended"));
        };
        let index = reply.data.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes).unwrap_or(0) as usize;
        if let Some(left) = remaining.get_mut(index) {
            *left -= 1;
            if *left == 0 {
                round_trips.push(sent_at[index].elapsed());
                done += 1;
            }
        }
    }
    let elapsed = started.elapsed();
    for worker in workers {
        worker.abort();
    }
    let _ = admin.queue_delete(jobs_queue.as_str().into(), QueueDeleteOptions::default()).await;
    let _ = conn.close(200, "bye".into()).await;
    Ok(Measured { elapsed, round_trips })
}

/// Read the first `count` messages of `stream` with plain lapin, as `job list` reads the index:
/// one consumer from the first offset, `prefetch` credit, acknowledged a quarter at a time.
/// Returns the time from connecting to the last message.
pub(crate) async fn read_stream(url: &str, stream: &str, count: usize, prefetch: u16) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let conn = Connection::connect(url, ConnectionProperties::default()).await.map_err(|e| err("connect", e))?;
    let channel = conn.create_channel().await.map_err(|e| err("channel", e))?;
    channel.basic_qos(prefetch, BasicQosOptions::default()).await.map_err(|e| err("qos", e))?;
    let mut arguments = FieldTable::default();
    arguments.insert("x-stream-offset".into(), AMQPValue::LongString("first".into()));
    let mut deliveries = channel
        .basic_consume(stream.into(), "".into(), BasicConsumeOptions::default(), arguments)
        .await
        .map_err(|e| err("consume", e))?;
    let ack_every = usize::from((prefetch / 4).max(1));
    let mut read = 0;
    while read < count {
        let delivery = match deliveries.next().await {
            Some(Ok(delivery)) => delivery,
            Some(Err(e)) => return Err(err("read", e)),
            None => return Err(err("read", format!("the stream ended after {read} of {count} messages"))),
        };
        read += 1;
        if read % ack_every == 0 || read == count {
            delivery.acker.ack(BasicAckOptions { multiple: true }).await.map_err(|e| err("ack", e))?;
        }
    }
    let elapsed = started.elapsed();
    let _ = conn.close(0, "done".into()).await;
    Ok(elapsed)
}
