//! The RabbitMQ figures: dispatch throughput and round-trip latency of runway jobs through real
//! `runway-worker` processes, beside a plain AMQP client doing the same messages (`runway_ceiling`).

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use runway_broker::protocol::{self, Builtin, Command as JobCommand, Job, Target};
use runway_broker::topology::{Retention, Topology};
use runway_broker::{Broker, Connection, ConsumeOptions, Consumer};

use crate::{Figure, median};
use runway_ceiling::{self as ceiling, Routing, Shape};

/// Messages a `true` job costs its runner: accepted, started, completed (no heartbeat: these
/// jobs end within the first heartbeat interval).
const EVENTS_TRUE: usize = 3;
/// A noop job has no process, so no `started`: accepted and completed.
const EVENTS_NOOP: usize = 2;

/// What a benchmark job runs.
#[derive(Debug, Clone, Copy)]
enum Kind {
    True,
    Noop,
}

impl Kind {
    fn command(self) -> JobCommand {
        match self {
            Kind::True => JobCommand::Argv(vec!["true".to_owned()]),
            Kind::Noop => JobCommand::Builtin(Builtin::Noop),
        }
    }

    fn events(self) -> usize {
        match self {
            Kind::True => EVENTS_TRUE,
            Kind::Noop => EVENTS_NOOP,
        }
    }
}

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// Worker processes, killed on drop.
struct Workers(Vec<Child>);

impl Workers {
    /// The largest of the workers' `field` (`VmRSS`, `VmHWM`) in MB.
    fn max_mb(&self, field: &str) -> Result<f64> {
        let mut max = 0.0f64;
        for child in &self.0 {
            max = max.max(crate::proc_mb(child.id(), field)?);
        }
        Ok(max)
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start_workers(bin: &Path, namespace: &str, count: usize, concurrency: usize, flags: &[&str]) -> Result<Workers> {
    let mut children = Vec::new();
    for i in 0..count {
        let child = Command::new(bin.join("runway-worker"))
            .args(["--server", &amqp_url(), "--namespace", namespace, "--id", &format!("bench-{i}")])
            .args(["--concurrency", &concurrency.to_string()])
            .args(flags)
            .env("RUNWAY_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start runway-worker")?;
        children.push(child);
    }
    Ok(Workers(children))
}

fn job(kind: Kind) -> Job {
    Job::new("bench", "bench", kind.command(), "bench")
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

    /// Queue `jobs` jobs at once through the producer library's pipelined path
    /// (`runway_producer::submit::submit_many`), reading completions meanwhile; the time until
    /// the last completed.
    async fn dispatch(&mut self, kind: Kind, jobs: usize) -> Result<Duration> {
        self.dispatch_batch((0..jobs).map(|_| job(kind)).collect()).await
    }

    /// [`Bench::dispatch`] of jobs made by the caller.
    async fn dispatch_batch(&mut self, batch: Vec<Job>) -> Result<Duration> {
        let mut pending: HashSet<uuid::Uuid> = batch.iter().map(|job| job.id).collect();
        let started = Instant::now();
        let submitted = runway_producer::submit::submit_many(&self.conn, &self.topology, &batch);
        let completions = &mut self.completions;
        let completed = async {
            while !pending.is_empty() {
                let delivery = completions.next().await.context("completions ended")??;
                let event: protocol::Event = protocol::decode(&delivery.body, "event")?;
                if !pending.remove(&event.job) && batch.iter().any(|job| job.id == event.job) {
                    bail!("a job completed twice");
                }
            }
            Ok::<_, anyhow::Error>(())
        };
        let (results, completed) = tokio::join!(submitted, completed);
        completed?;
        if let Some(Err(err)) = results.into_iter().find(Result::is_err) {
            bail!("a benchmark job was not queued: {err}");
        }
        Ok(started.elapsed())
    }

    /// `rounds` jobs one at a time, each submitted as `runway` does and followed to `completed`.
    async fn round_trips(&mut self, kind: Kind, rounds: usize) -> Result<Vec<Duration>> {
        let mut trips = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let job = job(kind);
            let started = Instant::now();
            let submitted =
                runway_producer::submit::submit_many(&self.conn, &self.topology, std::slice::from_ref(&job));
            let completions = &mut self.completions;
            let completed = async {
                loop {
                    let delivery = completions.next().await.context("completions ended")??;
                    let event: protocol::Event = protocol::decode(&delivery.body, "event")?;
                    if event.job == job.id {
                        return Ok::<_, anyhow::Error>(started.elapsed());
                    }
                }
            };
            let (results, completed) = tokio::join!(submitted, completed);
            if let Some(Err(err)) = results.into_iter().next() {
                bail!("a benchmark job was not queued: {err}");
            }
            trips.push(completed?);
        }
        Ok(trips)
    }
}

fn p99(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[(samples.len() * 99 / 100).min(samples.len() - 1)]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Jobs for the throughput figures, all queued at once.
const DISPATCH_JOBS: usize = 10_000;
/// Sequential jobs for the latency figures.
const ROUNDS: usize = 200;
/// Each worker runs this many jobs at once (`--concurrency`; the ceiling's consumers prefetch
/// `ceiling::PREFETCH`).
const CONCURRENCY: usize = 64;

/// A namespace with `workers` runway-workers serving it, and a producer.
struct Setup {
    bench: Bench,
    workers: Workers,
    count: usize,
}

impl Setup {
    async fn new(bin: &Path, count: usize) -> Result<Setup> {
        Setup::with_flags(bin, count, &[]).await
    }

    /// Workers started with `flags` besides the usual ones.
    async fn with_flags(bin: &Path, count: usize, flags: &[&str]) -> Result<Setup> {
        let namespace = format!("bench-{}", uuid::Uuid::now_v7().simple());
        let bench = Bench::new(&namespace).await?;
        let workers = start_workers(bin, &namespace, count, CONCURRENCY, flags)?;
        bench.wait_for_runners(u32::try_from(count)?).await?;
        Ok(Setup { bench, workers, count })
    }

    async fn rate(&mut self, kind: Kind, jobs: usize) -> Result<f64> {
        let elapsed = self.bench.dispatch(kind, jobs).await?;
        Ok(jobs as f64 / elapsed.as_secs_f64())
    }

    async fn cleanup(self) {
        let Setup { bench, workers, count } = self;
        drop(workers);
        let _ = bench.topology.delete_shared(&bench.conn).await;
        for i in 0..count {
            let runner = runway_broker::topology::RunnerQueues {
                id: format!("bench-{i}"),
                labels: Default::default(),
                by_id_only: false,
                in_process: false,
            };
            let _ = bench.topology.delete_runner(&bench.conn, &runner).await;
        }
    }
}

/// The two ceilings of a dispatch: runway's messages, and the bare round trip (jobs/s each).
async fn ceiling_rates(kind: Kind, jobs: usize, consumers: usize) -> Result<(f64, f64)> {
    let mut rates = [0.0; 2];
    for (at, routing) in [Routing::Runway { events: kind.events() }, Routing::Bare].into_iter().enumerate() {
        let shape = Shape { jobs, in_flight: jobs, routing, consumers, prefetch: ceiling::PREFETCH };
        rates[at] = jobs as f64 / ceiling::run(&amqp_url(), &shape).await?.elapsed.as_secs_f64();
    }
    Ok((rates[0], rates[1]))
}

/// The two ceilings' round trips, one job at a time.
async fn ceiling_trips(kind: Kind) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let shape = |routing| Shape { jobs: ROUNDS, in_flight: 1, routing, consumers: 1, prefetch: ceiling::PREFETCH };
    let runway = ceiling::run(&amqp_url(), &shape(Routing::Runway { events: kind.events() })).await?.round_trips;
    let bare = ceiling::run(&amqp_url(), &shape(Routing::Bare)).await?.round_trips;
    Ok((runway, bare))
}

fn figure(name: &'static str, value: f64, unit: &'static str, ceiling: Option<f64>, note: &'static str) -> Figure {
    Figure { name, value, unit, ceiling, bare: None, note }
}

/// A figure with both ceilings: runway's messages (a) and the bare round trip (b).
fn figure2(name: &'static str, value: f64, unit: &'static str, ceilings: (f64, f64), note: &'static str) -> Figure {
    Figure { name, value, unit, ceiling: Some(ceilings.0), bare: Some(ceilings.1), note }
}

/// The dispatch and round-trip figures, and what the rest of the group reuses.
pub(crate) struct Dispatched {
    pub(crate) figures: Vec<Figure>,
    noop: f64,
    idle_rss: f64,
    dispatch_peak: f64,
}

/// Two workers: throughput of both kinds, latency of both kinds, each beside both ceilings.
pub(crate) async fn dispatch_figures(bin: &Path) -> Result<Dispatched> {
    let mut figures = Vec::new();
    let mut two = Setup::new(bin, 2).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = two.workers.max_mb("VmRSS")?;
    let noop = two.rate(Kind::Noop, DISPATCH_JOBS).await?;
    let noop_ceilings = ceiling_rates(Kind::Noop, DISPATCH_JOBS, 2).await?;
    let truth = two.rate(Kind::True, DISPATCH_JOBS).await?;
    let true_ceilings = ceiling_rates(Kind::True, DISPATCH_JOBS, 2).await?;
    let mut spawns = Vec::new();
    for _ in 0..ROUNDS {
        let start = Instant::now();
        Command::new("true").status()?;
        spawns.push(start.elapsed());
    }
    let spawn_rate = 1.0 / median(spawns.clone()).as_secs_f64();
    let noop_trips = two.bench.round_trips(Kind::Noop, ROUNDS).await?;
    let noop_ceiling_trips = ceiling_trips(Kind::Noop).await?;
    let true_trips = two.bench.round_trips(Kind::True, ROUNDS).await?;
    let true_ceiling_trips = ceiling_trips(Kind::True).await?;
    let dispatch_peak = two.workers.max_mb("VmHWM")?;
    two.cleanup().await;

    let spawn = median(spawns);
    figures.push(figure2(
        "dispatch_noop_jobs_per_s",
        noop,
        "jobs/s",
        noop_ceilings,
        "10000 noop jobs queued at once (submit_many), 2 workers (ceiling: careful plain AMQP client, runway's \
         messages: record + job + 2 events; bare: job + 1 reply)",
    ));
    figures.push(figure2(
        "dispatch_true_jobs_per_s",
        truth,
        "jobs/s",
        true_ceilings,
        "10000 `true` jobs queued at once, 2 workers (ceiling: record + job + 3 events, no process; bare: job + reply)",
    ));
    figures.push(figure(
        "spawn_true_per_s",
        spawn_rate,
        "spawns/s",
        None,
        "`true` spawned and waited for, one at a time, by the bench itself: what a process per job costs",
    ));
    let ceiling_ms = |trips: &[Duration], p: fn(Vec<Duration>) -> Duration| ms(p(trips.to_vec()));
    for (kind, trips, (runway_like, bare)) in
        [("noop", noop_trips, noop_ceiling_trips), ("true", true_trips.clone(), true_ceiling_trips.clone())]
    {
        let (p50, p99_runway) = (median(trips.clone()), p99(trips));
        let (n50, n99, what50, what99): (&'static str, &'static str, &'static str, &'static str) = match kind {
            "noop" => (
                "rtt_noop_p50_ms",
                "rtt_noop_p99_ms",
                "one noop job at a time, submitted to completed (ceilings: plain AMQP, runway's messages; bare)",
                "as above, 99th percentile",
            ),
            _ => (
                "rtt_true_p50_ms",
                "rtt_true_p99_ms",
                "one `true` job at a time, submitted to completed (ceilings: plain AMQP, runway's messages; bare)",
                "as above, 99th percentile",
            ),
        };
        let c50 = (ceiling_ms(&runway_like, median), ceiling_ms(&bare, median));
        let c99 = (ceiling_ms(&runway_like, p99), ceiling_ms(&bare, p99));
        figures.push(figure2(n50, ms(p50), "ms", c50, what50));
        figures.push(figure2(n99, ms(p99_runway), "ms", c99, what99));
    }
    let c50 = (ceiling_ms(&true_ceiling_trips.0, median), ceiling_ms(&true_ceiling_trips.1, median));
    figures.push(figure2(
        "rtt_true_less_spawn_p50_ms",
        ms(median(true_trips).saturating_sub(spawn)),
        "ms",
        c50,
        "median `true` round trip less the median spawn of `true` (target: within 3x the ceiling)",
    ));
    Ok(Dispatched { figures, noop, idle_rss, dispatch_peak })
}

pub(crate) async fn figures(bin: &Path) -> Result<Vec<Figure>> {
    let Dispatched { mut figures, noop, idle_rss, dispatch_peak } = dispatch_figures(bin).await?;

    // Scaling with the number of workers (noop, so runway's cost shows, not spawning).
    let scale_jobs = DISPATCH_JOBS / 2;
    for (count, name, note) in [
        (
            1,
            "dispatch_noop_1w_jobs_per_s",
            "5000 noop jobs queued at once, 1 worker (ceiling: the same with 2 workers)",
        ),
        (
            4,
            "dispatch_noop_4w_jobs_per_s",
            "5000 noop jobs queued at once, 4 workers (ceiling: the same with 2 workers)",
        ),
    ] {
        let mut setup = Setup::new(bin, count).await?;
        let rate = setup.rate(Kind::Noop, scale_jobs).await?;
        setup.cleanup().await;
        figures.push(figure(name, rate, "jobs/s", Some(noop), note));
    }

    // Scaling with the work queued up front: all published at once, then drained by 2 workers.
    let mut rates = Vec::new();
    for jobs in [100, 10_000] {
        let mut setup = Setup::new(bin, 2).await?;
        rates.push(setup.rate(Kind::Noop, jobs).await?);
        setup.cleanup().await;
    }
    figures.push(figure(
        "queued_100_noop_jobs_per_s",
        rates[0],
        "jobs/s",
        None,
        "100 noop jobs queued at once (pipelined), 2 workers, until the last completed",
    ));
    figures.push(figure(
        "queued_10000_noop_jobs_per_s",
        rates[1],
        "jobs/s",
        Some(rates[0]),
        "10000 noop jobs queued at once, 2 workers (ceiling: the 100-job rate; target: not slower per job)",
    ));
    figures.push(figure(
        "worker_idle_rss_mb",
        idle_rss,
        "MB",
        None,
        "runway-worker RSS once serving, before any job (target: under 20 MB)",
    ));
    figures.push(figure(
        "worker_dispatch_peak_rss_mb",
        dispatch_peak,
        "MB",
        None,
        "runway-worker peak RSS (VmHWM) after the dispatch and latency runs",
    ));

    figures.extend(feature_costs(bin, noop).await?);

    // Log streaming through a worker to the attached CLI.
    let streamed = log_streaming(bin).await?;
    figures.push(figure(
        "log_lines_per_s_amqp",
        streamed.rate,
        "lines/s",
        Some(streamed.ceiling),
        "seq 1 2000000 on a runway-worker, printed by the attached CLI into a file (ceiling: seq > file)",
    ));
    figures.push(figure(
        "worker_peak_rss_mb",
        dispatch_peak.max(streamed.worker_peak_mb),
        "MB",
        None,
        "runway-worker peak RSS over the dispatch, latency and log streaming runs (target: under 100 MB)",
    ));
    figures.push(figure(
        "cli_peak_rss_mb",
        streamed.cli_peak_mb,
        "MB",
        None,
        "the attached runway CLI's peak RSS while streaming 2,000,000 lines",
    ));
    Ok(figures)
}

/// What the log streaming run measured.
struct Streamed {
    rate: f64,
    ceiling: f64,
    worker_peak_mb: f64,
    cli_peak_mb: f64,
}

/// `seq 1 N` run by a worker and printed by an attached CLI into a file, checked line for line
/// against `seq 1 N > file`.
async fn log_streaming(bin: &Path) -> Result<Streamed> {
    let lines: u64 = 2_000_000;
    let setup = Setup::new(bin, 1).await?;
    let namespace = setup.bench.topology.namespace().to_owned();
    let work = tempfile::tempdir().context("temp dir")?;
    std::fs::write(work.path().join("runway.toml"), format!("[operations.seq]\nrun = \"seq 1 {lines}\"\n"))?;
    let direct_file = work.path().join("direct.txt");
    let through_file = work.path().join("through.txt");
    let start = Instant::now();
    let status =
        Command::new("seq").args(["1", &lines.to_string()]).stdout(std::fs::File::create(&direct_file)?).status()?;
    let direct = start.elapsed();
    if !status.success() {
        bail!("seq failed");
    }
    let start = Instant::now();
    let mut cli = Command::new(bin.join("runway"))
        .args(["--server", &amqp_url(), "--namespace", &namespace, "--quiet", "run", "seq", "--remote"])
        .current_dir(work.path())
        .stdout(std::fs::File::create(&through_file)?)
        .stderr(Stdio::null())
        .spawn()
        .context("start runway")?;
    let mut cli_peak_mb = 0.0f64;
    let status = loop {
        if let Some(status) = cli.try_wait()? {
            break status;
        }
        if let Ok(mb) = crate::proc_mb(cli.id(), "VmHWM") {
            cli_peak_mb = cli_peak_mb.max(mb);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let through = start.elapsed();
    if !status.success() {
        bail!("runway run seq --remote failed: {status}");
    }
    if std::fs::read(&direct_file)? != std::fs::read(&through_file)? {
        bail!("the streamed log differs from seq's output: a line is missing or out of order");
    }
    let worker_peak_mb = setup.workers.max_mb("VmHWM")?;
    setup.cleanup().await;
    let rate = |elapsed: Duration| lines as f64 / elapsed.as_secs_f64();
    Ok(Streamed { rate: rate(through), ceiling: rate(direct), worker_peak_mb, cli_peak_mb })
}

/// Concurrency groups the group cost's jobs are spread over.
const COST_GROUPS: usize = 64;

/// What each feature costs dispatch: `noop` dispatch (10,000 jobs, 2 workers) with the feature
/// against without it, in the same run. `with_everything` is the default run's rate (the claim
/// on, no `--allow` policy, no group). Masking's cost is `log_lines_per_s_local_masked`.
async fn feature_costs(bin: &Path, with_everything: f64) -> Result<Vec<Figure>> {
    let rate_with = |flags: &'static [&'static str]| async move {
        let mut setup = Setup::with_flags(bin, 2, flags).await?;
        let rate = setup.rate(Kind::Noop, DISPATCH_JOBS).await?;
        setup.cleanup().await;
        Ok::<_, anyhow::Error>(rate)
    };
    let without_claim = rate_with(&["--at-most-once", "runner"]).await?;
    let with_policy = rate_with(&["--allow", "nobody:x/y", "--allow", "guest:bench/*", "--allow", "ci:*"]).await?;
    let mut setup = Setup::new(bin, 2).await?;
    let grouped = (0..DISPATCH_JOBS)
        .map(|at| Job { group: Some(format!("bench-{}", at % COST_GROUPS)), ..job(Kind::Noop) })
        .collect();
    let elapsed = setup.bench.dispatch_batch(grouped).await?;
    setup.cleanup().await;
    let in_groups = DISPATCH_JOBS as f64 / elapsed.as_secs_f64();
    Ok(vec![
        figure(
            "cost_at_most_once_jobs_per_s",
            with_everything,
            "jobs/s",
            Some(without_claim),
            "noop dispatch with the per-attempt claim (the default) (ceiling: --at-most-once runner, no claim; \
             target: ratio 0.9 or more)",
        ),
        figure(
            "cost_trust_policy_jobs_per_s",
            with_policy,
            "jobs/s",
            Some(with_everything),
            "noop dispatch with a 3-rule --allow policy (ceiling: no policy; the broker checks user_id in both)",
        ),
        figure(
            "cost_groups_jobs_per_s",
            in_groups,
            "jobs/s",
            Some(with_everything),
            "noop dispatch, the jobs spread over 64 concurrency groups (ceiling: no group)",
        ),
    ])
}
