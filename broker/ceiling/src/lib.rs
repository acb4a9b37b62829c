//! The benchmark's ceilings: what a careful plain-lapin client achieves on the same broker, with
//! none of runway's work in between.
//!
//! A careful client keeps many publisher confirms outstanding (a window of [`CONFIRM_WINDOW`]
//! messages), has its consumers prefetch a few hundred jobs, and acknowledges a batch of jobs at
//! once (`multiple`) after the replies of the whole batch are confirmed. Two shapes of a "job":
//! - [`Routing::Runway`]: the messages runway sends for one job, through the same kinds of
//!   exchanges, streams and queues: the `queued` record to a topic exchange (into a history and an
//!   index stream), the job persistent to a direct exchange (into a quorum queue), and per job
//!   `events` messages from the consumer to the topic exchange (each into both streams, and a
//!   `completed` also into the producer's completions queue).
//! - [`Routing::Bare`]: the job persistent into a quorum queue, one reply back into a queue.
//!
//! It speaks lapin itself, inside broker/ as the invariant asks, but as a crate of its own that only
//! bench/ depends on, so it never ships in runway: a ceiling has to be a
//! plain client, with none of runway's layers, and as measurement code it has no place in the
//! library runway ships.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind, PublisherConfirm};

/// Publishes whose confirms may be outstanding at once, on each publishing channel.
pub const CONFIRM_WINDOW: usize = 512;
/// Each consumer's prefetch.
pub const PREFETCH: u16 = 256;
/// Bytes of every message: about the size of runway's JSON jobs and events.
const BODY_BYTES: usize = 400;

/// Which messages a job costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// runway's messages: a record, the job, then `events` events (the last one `completed`).
    Runway { events: usize },
    /// The job and one reply.
    Bare,
}

/// The shape of one ceiling run.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Jobs in all.
    pub jobs: usize,
    /// Jobs published and not yet answered, at most (1 measures latency).
    pub in_flight: usize,
    pub routing: Routing,
    /// Consumers taking jobs (like runners), each on a channel of its own.
    pub consumers: usize,
    pub prefetch: u16,
}

/// What one ceiling run measured.
#[derive(Debug, Clone)]
pub struct Measured {
    pub elapsed: Duration,
    /// Published-to-answered time of each job, in completion order.
    pub round_trips: Vec<Duration>,
}

fn err(what: &str, error: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("ceiling: {what}: {error}")
}

/// The names of one run, all its own.
#[derive(Debug, Clone)]
struct Names {
    jobs_exchange: String,
    events_exchange: String,
    jobs: String,
    history: String,
    index: String,
    answers: String,
}

impl Names {
    fn new() -> Names {
        let id = uuid::Uuid::now_v7().simple().to_string();
        Names {
            jobs_exchange: format!("ceiling.jobs-x.{id}"),
            events_exchange: format!("ceiling.events-x.{id}"),
            jobs: format!("ceiling.jobs.{id}"),
            history: format!("ceiling.history.{id}"),
            index: format!("ceiling.index.{id}"),
            answers: format!("ceiling.answers.{id}"),
        }
    }
}

/// A body carrying the job's number and when it was published (ns since `started`), padded.
fn body(job: u64, at: Duration) -> Vec<u8> {
    let mut body = vec![b' '; BODY_BYTES];
    body[..8].copy_from_slice(&job.to_le_bytes());
    body[8..16].copy_from_slice(&u64::try_from(at.as_nanos()).unwrap_or(u64::MAX).to_le_bytes());
    body
}

fn read_body(body: &[u8]) -> Option<(u64, Duration)> {
    let job = u64::from_le_bytes(body.get(..8)?.try_into().ok()?);
    let at = u64::from_le_bytes(body.get(8..16)?.try_into().ok()?);
    Some((job, Duration::from_nanos(at)))
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

async fn declare(channel: &Channel, names: &Names, routing: Routing) -> anyhow::Result<()> {
    let mut quorum = FieldTable::default();
    quorum.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(names.jobs.as_str().into(), durable, quorum).await.map_err(|e| err("declare", e))?;
    let exclusive = QueueDeclareOptions { exclusive: true, ..QueueDeclareOptions::default() };
    channel
        .queue_declare(names.answers.as_str().into(), exclusive, FieldTable::default())
        .await
        .map_err(|e| err("declare", e))?;
    if routing == Routing::Bare {
        return Ok(());
    }
    let exchange = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    channel
        .exchange_declare(names.jobs_exchange.as_str().into(), ExchangeKind::Direct, exchange, FieldTable::default())
        .await
        .map_err(|e| err("declare", e))?;
    channel
        .exchange_declare(names.events_exchange.as_str().into(), ExchangeKind::Topic, exchange, FieldTable::default())
        .await
        .map_err(|e| err("declare", e))?;
    let bind = |queue: &str, exchange: &str, key: &str| {
        let (queue, exchange, key) = (queue.to_owned(), exchange.to_owned(), key.to_owned());
        let channel = channel.clone();
        async move {
            channel
                .queue_bind(
                    queue.as_str().into(),
                    exchange.as_str().into(),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| err("bind", e))
        }
    };
    bind(&names.jobs, &names.jobs_exchange, "any").await?;
    for stream in [&names.history, &names.index] {
        let mut arguments = FieldTable::default();
        arguments.insert("x-queue-type".into(), AMQPValue::LongString("stream".into()));
        channel.queue_declare(stream.as_str().into(), durable, arguments).await.map_err(|e| err("declare", e))?;
    }
    bind(&names.history, &names.events_exchange, "job.#").await?;
    for kind in ["queued", "accepted", "started", "completed"] {
        bind(&names.index, &names.events_exchange, &format!("job.*.{kind}")).await?;
    }
    bind(&names.answers, &names.events_exchange, "job.*.completed").await?;
    Ok(())
}

/// Publish on a confirm channel keeping at most [`CONFIRM_WINDOW`] confirms outstanding.
struct Confirms(VecDeque<PublisherConfirm>);

impl Confirms {
    async fn publish(
        &mut self,
        channel: &Channel,
        exchange: &str,
        key: &str,
        body: &[u8],
        mandatory: bool,
    ) -> anyhow::Result<()> {
        if self.0.len() >= CONFIRM_WINDOW
            && let Some(oldest) = self.0.pop_front()
        {
            oldest.await.map_err(|e| err("confirm", e))?;
        }
        let options = BasicPublishOptions { mandatory, ..BasicPublishOptions::default() };
        let confirm = channel
            .basic_publish(exchange.into(), key.into(), options, body, persistent())
            .await
            .map_err(|e| err("publish", e))?;
        self.0.push_back(confirm);
        Ok(())
    }

    async fn drain(&mut self) -> anyhow::Result<()> {
        while let Some(oldest) = self.0.pop_front() {
            oldest.await.map_err(|e| err("confirm", e))?;
        }
        Ok(())
    }
}

/// A consumer ("runner"): take what is there (up to its prefetch), publish each job's answers,
/// wait for their confirms, acknowledge the batch at once.
async fn serve(channel: Channel, names: Arc<Names>, routing: Routing, prefetch: u16) -> anyhow::Result<()> {
    channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| err("confirm", e))?;
    channel.basic_qos(prefetch, BasicQosOptions::default()).await.map_err(|e| err("qos", e))?;
    let mut deliveries = channel
        .basic_consume(names.jobs.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .map_err(|e| err("consume", e))?;
    let mut confirms = Confirms(VecDeque::new());
    while let Some(Ok(first)) = deliveries.next().await {
        let mut batch = vec![first];
        while batch.len() < usize::from(prefetch) {
            match deliveries.next().now_or_never() {
                Some(Some(Ok(delivery))) => batch.push(delivery),
                _ => break,
            }
        }
        for delivery in &batch {
            let job = read_body(&delivery.data).map_or(0, |(job, _)| job);
            match routing {
                Routing::Bare => {
                    confirms.publish(&channel, "", &names.answers, &delivery.data, false).await?;
                }
                Routing::Runway { events } => {
                    // The kinds runway's runner sends: `started` only for a process.
                    let kinds: &[&str] =
                        if events >= 3 { &["accepted", "started", "completed"] } else { &["accepted", "completed"] };
                    for kind in kinds {
                        let key = format!("job.{job}.{kind}");
                        confirms.publish(&channel, &names.events_exchange, &key, &delivery.data, false).await?;
                    }
                }
            }
        }
        confirms.drain().await?;
        if let Some(last) = batch.last() {
            last.ack(BasicAckOptions { multiple: true }).await.map_err(|e| err("ack", e))?;
        }
    }
    Ok(())
}

/// Run the plain-lapin equivalent of `shape.jobs` runway jobs on the broker at `url`.
pub async fn run(url: &str, shape: &Shape) -> anyhow::Result<Measured> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await.map_err(|e| err("connect", e))?;
    let names = Arc::new(Names::new());
    let admin = conn.create_channel().await.map_err(|e| err("channel", e))?;
    declare(&admin, &names, shape.routing).await?;
    let mut workers = Vec::new();
    for _ in 0..shape.consumers {
        let channel = conn.create_channel().await.map_err(|e| err("channel", e))?;
        workers.push(tokio::spawn(serve(channel, Arc::clone(&names), shape.routing, shape.prefetch)));
    }
    let reader = conn.create_channel().await.map_err(|e| err("channel", e))?;
    reader.basic_qos(PREFETCH, BasicQosOptions::default()).await.map_err(|e| err("qos", e))?;
    let mut answers = reader
        .basic_consume(names.answers.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .map_err(|e| err("consume", e))?;
    let publisher = conn.create_channel().await.map_err(|e| err("channel", e))?;
    publisher.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| err("confirm", e))?;

    // The producer publishes while the answers are read: a permit per job in flight.
    let started = Instant::now();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(shape.in_flight.max(1)));
    let producer = {
        let (names, in_flight, jobs, routing) = (Arc::clone(&names), Arc::clone(&in_flight), shape.jobs, shape.routing);
        tokio::spawn(async move {
            let mut confirms = Confirms(VecDeque::new());
            for job in 0..jobs as u64 {
                in_flight.acquire().await.map_err(|e| err("in flight", e))?.forget();
                let body = body(job, started.elapsed());
                match routing {
                    Routing::Bare => confirms.publish(&publisher, "", &names.jobs, &body, false).await?,
                    Routing::Runway { .. } => {
                        let record = format!("job.{job}.queued");
                        confirms.publish(&publisher, &names.events_exchange, &record, &body, false).await?;
                        confirms.publish(&publisher, &names.jobs_exchange, "any", &body, true).await?;
                    }
                }
                // Latency runs (one job at a time) wait for the confirm as runway's submit does.
                if in_flight.available_permits() == 0 {
                    confirms.drain().await?;
                }
            }
            confirms.drain().await
        })
    };
    let mut round_trips = Vec::with_capacity(shape.jobs);
    let mut unacked = 0;
    while round_trips.len() < shape.jobs {
        let answer = match answers.next().await {
            Some(Ok(answer)) => answer,
            Some(Err(e)) => return Err(err("answers", e)),
            None => return Err(err("answers", "the answer consumer ended")),
        };
        let (_, at) = read_body(&answer.data).ok_or_else(|| err("answers", "a short body"))?;
        round_trips.push(started.elapsed().saturating_sub(at));
        in_flight.add_permits(1);
        unacked += 1;
        if unacked >= usize::from(PREFETCH / 4) || round_trips.len() == shape.jobs {
            answer.ack(BasicAckOptions { multiple: true }).await.map_err(|e| err("ack", e))?;
            unacked = 0;
        }
    }
    let elapsed = started.elapsed();
    producer.await.map_err(|e| err("producer", e))??;
    for worker in workers {
        worker.abort();
    }
    for queue in [&names.jobs, &names.history, &names.index] {
        let _ = admin.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
    }
    for exchange in [&names.jobs_exchange, &names.events_exchange] {
        let _ = admin.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default()).await;
    }
    let _ = conn.close(200, "bye".into()).await;
    Ok(Measured { elapsed, round_trips })
}

/// Read the first `count` messages of `stream` with plain lapin, as `job list` reads the index:
/// one consumer from the first offset, `prefetch` credit, acknowledged a quarter at a time.
/// Returns the time from connecting to the last message.
pub async fn read_stream(url: &str, stream: &str, count: usize, prefetch: u16) -> anyhow::Result<Duration> {
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
