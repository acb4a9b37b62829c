//! The history figures: `job list --since 24h` over a history of 10,000 jobs and 1,000,000 log
//! lines, and `job logs` of a 1,000,000-line job, both through the real `runway` binary.
//!
//! `job list` is bound by how fast RabbitMQ hands out stream messages over AMQP 0-9-1 (one
//! consumer): its ceiling is a plain AMQP client reading the same index messages in the same run.
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

const JOBS: usize = 10_000;
const LINES: usize = 1_000_000;
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

async fn write_job(writer: &mut Writer, lines: usize) -> Result<Uuid> {
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
        status: Status::Success,
        exit_code: Some(0),
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

pub(crate) async fn figures(bin: &Path, url: &str) -> Result<Vec<Figure>> {
    let namespace = format!("bench-history-{}", Uuid::now_v7().simple());
    let broker = Broker::amqp(url, Duration::from_secs(10))?;
    let conn = broker.connect().await.context("connect")?;
    let topology = Topology::new(&namespace)?;
    topology.declare(&conn, &Retention::default()).await?;
    let mut writer = Writer { conn: conn.clone(), topology: topology.clone(), in_flight: Vec::new() };
    // One big job of a million lines, and the other 9,999 jobs a line each.
    let big = write_job(&mut writer, LINES).await?;
    for _ in 1..JOBS {
        write_job(&mut writer, 1).await?;
    }
    writer.flush().await?;
    let runway = bin.join("runway");
    let base = ["--server", url, "--namespace", &namespace];
    let list_args: Vec<&str> = base.iter().copied().chain(["job", "list", "--since", "24h", "--limit", "20"]).collect();
    let mut samples = Vec::new();
    for _ in 0..3 {
        samples.push(timed(&runway, &list_args, Stdio::null())?);
    }
    let list = crate::median(samples);
    // The ceiling: a plain AMQP client reading the same index messages (queued, accepted, started and
    // completed of every job), as `job list` does, with nothing else.
    let mut plain = Vec::new();
    for _ in 0..3 {
        plain.push(runway_ceiling::read_stream(url, &topology.index_queue(), JOBS * 4, 2000).await?);
    }
    let plain = crate::median(plain);
    let big_text = big.to_string();
    let logs_args: Vec<&str> = base.iter().copied().chain(["job", "logs", big_text.as_str()]).collect();
    let logs = timed(&runway, &logs_args, Stdio::null())?;
    let _ = topology.delete_shared(&conn).await;
    conn.close().await;
    Ok(vec![
        Figure {
            name: "job_list_10k_jobs_1m_lines_ms",
            value: list.as_secs_f64() * 1000.0,
            unit: "ms",
            ceiling: Some(plain.as_secs_f64() * 1000.0),
            bare: None,
            note: "runway job list --since 24h over 10,000 jobs and 1,000,000 log lines (ceiling: a plain AMQP client \
                   reading the same 40,000 index messages; the target is 1 s)",
        },
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
