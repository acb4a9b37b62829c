//! The history figures, through the real `runway` binary: `job list` (the newest 20, and
//! `--since 7d --state failed`) and `job inspect` of the oldest job as the history grows from
//! 1,000 to 10,000 to 100,000 jobs and 10,000,000 log lines, each beside its time at 1,000 jobs
//! (how it grows); and `job logs` of a 1,000,000-line job.
//!
//! A read of the index is bound by how fast RabbitMQ hands out stream messages over AMQP 0-9-1
//! (one consumer): the plain client reading the whole index of 10,000 jobs is printed beside
//! `job list --since 24h` for scale.
//!
//! The history is written synthetically (the events a runner would publish), which is far faster
//! than running the jobs and reads the same.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use runway_broker::protocol::{
    self, Command as JobCommand, Completed, Event, EventBody, LogLine, Queued, Status, Stream, Target, VERSION,
};
use runway_broker::topology::{Retention, Topology};
use runway_broker::{Broker, Confirm, Connection};
use uuid::Uuid;

use crate::Figure;

/// The sizes of the history the figures are taken at, in jobs.
const SCALES: [usize; 3] = [1_000, 10_000, 100_000];
/// The first job's lines (the `job logs` figure).
const LINES: usize = 1_000_000;
/// Every [`LOUD_EVERY`]th other job prints this many lines: 10,000,000 lines in all at 100,000 jobs.
const LOUD_LINES: usize = 9_000;
const LOUD_EVERY: usize = 100;
/// Every [`FAILED_EVERY`]th job failed (the others succeeded).
const FAILED_EVERY: usize = 100;
const LINES_PER_BATCH: usize = 4096;

struct Writer {
    conn: Connection,
    topology: Topology,
    in_flight: Vec<Confirm>,
}

impl Writer {
    async fn emit(&mut self, job: Uuid, seq: u64, body: EventBody) -> Result<()> {
        let event = Event { v: VERSION, job, seq, ts: protocol::now_ms(), runner: "bench".into(), attempt: 1, body };
        self.in_flight.push(self.topology.publish_event(&self.conn, &event).await?);
        if self.in_flight.len() >= 256 {
            for confirm in self.in_flight.drain(..) {
                confirm.wait().await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        for confirm in self.in_flight.drain(..) {
            confirm.wait().await?;
        }
        Ok(())
    }
}

async fn write_job(writer: &mut Writer, lines: usize, status: Status) -> Result<Uuid> {
    let id = Uuid::now_v7();
    let queued = Queued {
        operation: "bench".into(),
        project: "bench".into(),
        command: JobCommand::Shell("seq".into()),
        args: vec![],
        env_keys: vec![],
        secrets: vec![],
        target: Target::Any,
        timeout_ms: None,
        retry_on_lost: false,
        queued_by: "bench".into(),
        group: None,
        not_before_ms: None,
        retry: None,
        created_at_ms: protocol::now_ms(),
    };
    writer.emit(id, 0, EventBody::Queued(queued)).await?;
    writer.emit(id, 1, EventBody::Accepted { hostname: "bench".into(), heartbeat_ms: 5000 }).await?;
    writer.emit(id, 2, EventBody::Started { pid: 1, argv: vec!["seq".into()] }).await?;
    let mut seq = 3;
    let mut written = 0;
    while written < lines {
        let count = LINES_PER_BATCH.min(lines - written);
        let t = protocol::now_ms();
        let batch = (written..written + count)
            .map(|i| LogLine::from_bytes(Stream::Stdout, t, (i + 1).to_string().as_bytes(), false))
            .collect();
        writer.emit(id, seq, EventBody::Log { lines: batch }).await?;
        seq += 1;
        written += count;
    }
    let completed = Completed {
        status,
        exit_code: Some(if status == Status::Success { 0 } else { 1 }),
        signal: None,
        duration_ms: 1,
        outputs: Default::default(),
        error: None,
        retrying: None,
    };
    writer.emit(id, seq, EventBody::Completed(completed)).await?;
    Ok(id)
}

fn timed(runway: &Path, args: &[&str], stdout: Stdio) -> Result<Duration> {
    let start = Instant::now();
    let status = Command::new(runway).args(args).env_remove("RUNWAY_SERVER").stdout(stdout).status()?;
    let elapsed = start.elapsed();
    if !status.success() {
        bail!("runway {args:?} failed: {status}");
    }
    Ok(elapsed)
}

/// The median time of three runs of `runway args`.
fn median_of_3(runway: &Path, args: &[&str]) -> Result<Duration> {
    let mut samples = Vec::new();
    for _ in 0..3 {
        samples.push(timed(runway, args, Stdio::null())?);
    }
    Ok(crate::median(samples))
}

/// The times of the history commands at one size of the history.
struct AtScale {
    list: Duration,
    failed: Duration,
    inspect: Duration,
}

pub(crate) async fn figures(bin: &Path, url: &str) -> Result<Vec<Figure>> {
    let namespace = format!("bench-history-{}", Uuid::now_v7().simple());
    let broker = Broker::amqp(url, Duration::from_secs(10))?;
    let conn = broker.connect().await.context("connect")?;
    let topology = Topology::new(&namespace)?;
    topology.declare(&conn, &Retention::default()).await?;
    let mut writer = Writer { conn: conn.clone(), topology: topology.clone(), in_flight: Vec::new() };
    let runway = bin.join("runway");
    let base = ["--server", url, "--namespace", &namespace];
    let with = |rest: &[&'static str]| -> Vec<String> {
        base.iter().copied().chain(rest.iter().copied()).map(str::to_owned).collect()
    };
    // The first job is the old one `job inspect` looks for, and the one of a million lines.
    let first = write_job(&mut writer, LINES, Status::Success).await?;
    let first_text = first.to_string();
    let mut written = 1;
    let mut scales = Vec::new();
    let mut since_24h = Duration::ZERO;
    let mut plain = Duration::ZERO;
    for scale in SCALES {
        while written < scale {
            let lines = if written % LOUD_EVERY == 0 { LOUD_LINES } else { 1 };
            let status = if written % FAILED_EVERY == FAILED_EVERY / 2 { Status::Failed } else { Status::Success };
            write_job(&mut writer, lines, status).await?;
            written += 1;
        }
        writer.flush().await?;
        let list_args = with(&["job", "list", "--limit", "20"]);
        let failed_args = with(&["job", "list", "--since", "7d", "--state", "failed"]);
        let mut inspect_args = with(&["job", "inspect"]);
        inspect_args.push(first_text.clone());
        let run = |args: &Vec<String>| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            median_of_3(&runway, &args)
        };
        scales.push(AtScale { list: run(&list_args)?, failed: run(&failed_args)?, inspect: run(&inspect_args)? });
        if scale == 10_000 {
            since_24h = run(&with(&["job", "list", "--since", "24h", "--limit", "20"]))?;
            // A plain AMQP client reading every index message of the 10,000 jobs (queued,
            // accepted, started and completed), for scale.
            let mut samples = Vec::new();
            for _ in 0..3 {
                samples.push(runway_ceiling::read_stream(url, &topology.index_queue(), scale * 4, 2000).await?);
            }
            plain = crate::median(samples);
        }
    }
    let logs_args: Vec<&str> = base.iter().copied().chain(["job", "logs", first_text.as_str()]).collect();
    let logs = timed(&runway, &logs_args, Stdio::null())?;
    let _ = topology.delete_shared(&conn).await;
    conn.close().await;
    let ms = |time: Duration| time.as_secs_f64() * 1000.0;
    let [small, middle, large] = [&scales[0], &scales[1], &scales[2]];
    let growth = |name, value: Duration, at_1k: Duration, note| Figure {
        name,
        value: ms(value),
        unit: "ms",
        ceiling: Some(ms(at_1k)),
        bare: None,
        note,
    };
    Ok(vec![
        growth(
            "job_list_10k_jobs_1m_lines_ms",
            since_24h,
            plain,
            "runway job list --since 24h (newest 20) over 10,000 jobs and 1,900,000 log lines (beside: a plain \
             AMQP client reading all 40,000 index messages, which job list no longer needs to)",
        ),
        growth("job_list_1k_jobs_ms", small.list, small.list, "runway job list (newest 20) over 1,000 jobs"),
        growth("job_list_10k_jobs_ms", middle.list, small.list, "the same over 10,000 jobs (beside: at 1,000)"),
        growth(
            "job_list_100k_jobs_10m_lines_ms",
            large.list,
            small.list,
            "the same over 100,000 jobs and 10,000,000 log lines (beside: at 1,000; target < 300 ms)",
        ),
        growth(
            "job_list_failed_1k_jobs_ms",
            small.failed,
            small.failed,
            "runway job list --since 7d --state failed over 1,000 jobs (1 in 100 failed)",
        ),
        growth("job_list_failed_10k_jobs_ms", middle.failed, small.failed, "the same over 10,000 jobs"),
        growth(
            "job_list_failed_100k_jobs_ms",
            large.failed,
            small.failed,
            "the same over 100,000 jobs (beside: at 1,000; target < 2 s)",
        ),
        growth("job_inspect_old_1k_jobs_ms", small.inspect, small.inspect, "runway job inspect of the oldest job"),
        growth("job_inspect_old_10k_jobs_ms", middle.inspect, small.inspect, "the same over 10,000 jobs"),
        growth(
            "job_inspect_old_100k_jobs_ms",
            large.inspect,
            small.inspect,
            "the same over 100,000 jobs (beside: at 1,000; target < 300 ms)",
        ),
        Figure {
            name: "job_logs_lines_per_s",
            value: LINES as f64 / logs.as_secs_f64(),
            unit: "lines/s",
            ceiling: None,
            bare: None,
            note: "runway job logs of a 1,000,000-line job, from the history",
        },
    ])
}
