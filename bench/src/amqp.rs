//! The RabbitMQ figures: dispatch throughput and round-trip latency of runway jobs through real
//! `runway-worker` processes, beside a plain AMQP client doing the same messages (`runway_broker::ceiling`).

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use runway_broker::protocol::{self, Command as JobCommand, Job, Target, VERSION};
use runway_broker::topology::{Retention, Topology};
use runway_broker::{Broker, Connection, ConsumeOptions, Consumer};

use crate::{Figure, median};

/// Messages a `true` job costs after the job itself: accepted, started, completed.
const EVENTS_PER_JOB: usize = 3;

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// Worker processes, killed on drop.
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start_workers(bin: &Path, namespace: &str, count: usize, concurrency: usize) -> Result<Workers> {
    let mut children = Vec::new();
    for i in 0..count {
        let child = Command::new(bin.join("runway-worker"))
            .args(["--server", &amqp_url(), "--namespace", namespace, "--id", &format!("bench-{i}")])
            .args(["--concurrency", &concurrency.to_string()])
            .env("RUNWAY_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start runway-worker")?;
        children.push(child);
    }
    Ok(Workers(children))
}

fn job(argv: &[&str]) -> Job {
    Job {
        v: VERSION,
        id: uuid::Uuid::now_v7(),
        operation: "bench".into(),
        project: "bench".into(),
        command: JobCommand::Argv(argv.iter().map(|s| (*s).to_owned()).collect()),
        args: Vec::new(),
        env: Default::default(),
        workdir: None,
        timeout_ms: None,
        kill_grace_ms: None,
        target: Target::Any,
        retry_on_lost: false,
        attempt: 1,
        created_at_ms: protocol::now_ms(),
        queued_by: "bench".into(),
    }
}

struct Bench {
    conn: Connection,
    topology: Topology,
    completions: Consumer,
}

impl Bench {
    async fn new(namespace: &str) -> Result<Bench> {
        let broker = Broker::amqp(&amqp_url(), Duration::from_secs(10))?;
        let conn = broker.connect().await.context("connect to RabbitMQ (make bench starts it)")?;
        let topology = Topology::new(namespace)?;
        topology.declare(&conn, &Retention::default()).await?;
        let queue = topology.declare_completions_queue(&conn).await?;
        let completions =
            conn.consume(&queue, &ConsumeOptions { no_ack: true, ..ConsumeOptions::with_prefetch(0) }).await?;
        Ok(Bench { conn, topology, completions })
    }

    /// Wait until a runner consumes the shared queue (the workers are up).
    async fn wait_for_runners(&self, count: u32) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let info = self.topology.job_queue_info(&self.conn, &Target::Any).await?;
            if info.is_some_and(|info| info.consumers >= count) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the benchmark's workers did not start consuming");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Queue `jobs` jobs keeping `in_flight` unfinished; per-job round trips and the total time.
    async fn dispatch(&mut self, argv: &[&str], jobs: usize, in_flight: usize) -> Result<(Duration, Vec<Duration>)> {
        let started = Instant::now();
        let mut pending: std::collections::HashMap<String, Instant> = Default::default();
        let mut trips = Vec::with_capacity(jobs);
        let mut sent = 0;
        let mut seen = HashSet::new();
        while trips.len() < jobs {
            while sent < jobs && pending.len() < in_flight {
                let job = job(argv);
                pending.insert(job.id.to_string(), Instant::now());
                self.topology.publish_job(&self.conn, &job).await?;
                sent += 1;
            }
            let delivery = self.completions.next().await.context("completions ended")??;
            let event: protocol::Event = protocol::decode(&delivery.body, "event")?;
            let id = event.job.to_string();
            if let Some(at) = pending.remove(&id) {
                if !seen.insert(id) {
                    bail!("a job completed twice");
                }
                trips.push(at.elapsed());
            }
        }
        Ok((started.elapsed(), trips))
    }
}

fn p99(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[(samples.len() * 99 / 100).min(samples.len() - 1)]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

pub(crate) async fn figures(bin: &Path) -> Result<Vec<Figure>> {
    let namespace = format!("bench-{}", uuid::Uuid::now_v7().simple());
    let mut bench = Bench::new(&namespace).await?;
    let _workers = start_workers(bin, &namespace, 2, 8)?;
    bench.wait_for_runners(2).await?;
    let jobs = 1000;
    let in_flight = 64;

    // Throughput: many in flight, a process per job.
    let (elapsed, _) = bench.dispatch(&["true"], jobs, in_flight).await?;
    let runway_rate = jobs as f64 / elapsed.as_secs_f64();
    let shape = runway_broker::ceiling::Shape { jobs, in_flight, replies: EVENTS_PER_JOB, consumers: 2, prefetch: 8 };
    let ceiling = runway_broker::ceiling::run(&amqp_url(), &shape).await?;
    let ceiling_rate = jobs as f64 / ceiling.elapsed.as_secs_f64();

    // Latency: one job at a time.
    let rounds = 200;
    let (_, trips) = bench.dispatch(&["true"], rounds, 1).await?;
    let shape = runway_broker::ceiling::Shape {
        jobs: rounds,
        in_flight: 1,
        replies: EVENTS_PER_JOB,
        consumers: 1,
        prefetch: 1,
    };
    let ceiling_trips = runway_broker::ceiling::run(&amqp_url(), &shape).await?.round_trips;
    let mut spawns = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        Command::new("true").status()?;
        spawns.push(start.elapsed());
    }
    let spawn = median(spawns);
    let (p50, p99_runway) = (median(trips.clone()), p99(trips));
    let (c50, c99) = (median(ceiling_trips.clone()), p99(ceiling_trips));
    let _ = bench.topology.delete_shared(&bench.conn).await;
    for i in 0..2 {
        let runner = runway_broker::topology::RunnerQueues {
            id: format!("bench-{i}"),
            labels: Default::default(),
            by_id_only: false,
            in_process: false,
        };
        let _ = bench.topology.delete_runner(&bench.conn, &runner).await;
    }
    Ok(vec![
        Figure {
            name: "dispatch_true_jobs_per_s",
            value: runway_rate,
            unit: "jobs/s",
            ceiling: Some(ceiling_rate),
            note: "1000 `true` jobs, 64 in flight, 2 workers (ceiling: plain AMQP client, same messages)",
        },
        Figure {
            name: "rtt_true_p50_ms",
            value: ms(p50),
            unit: "ms",
            ceiling: Some(ms(c50)),
            note: "one `true` job at a time, queued to completed (ceiling: plain AMQP client round trip)",
        },
        Figure {
            name: "rtt_true_p99_ms",
            value: ms(p99_runway),
            unit: "ms",
            ceiling: Some(ms(c99)),
            note: "as above, 99th percentile",
        },
        Figure {
            name: "rtt_true_less_spawn_p50_ms",
            value: ms(p50.saturating_sub(spawn)),
            unit: "ms",
            ceiling: Some(ms(c50)),
            note: "median round trip less the median spawn of `true` (target: within 3x the ceiling)",
        },
    ])
}
