//! Fault tests on a real three-node RabbitMQ cluster (`scripts/rabbitmq-cluster`, on ports
//! 5681-5683; the system broker on 5672 is not touched): a node SIGKILLed under runners and
//! under an attached CLI, and a rolling restart under a steady stream of jobs. Each asserts its
//! outcome from the history and prints a `figure:` line.
//!
//! A binary of its own with its own `main` (no libtest harness): the cluster takes minutes to
//! start, so it is started once, the scenarios run one after another on it (each in a namespace
//! of its own), and a guard stops it at the end, also when a scenario fails or panics. Give
//! scenario names as arguments to run only those.

#![allow(unreachable_pub)]

#[allow(dead_code)]
#[path = "support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runway_broker::protocol::{self, Command as JobCommand, Job};
use runway_broker::topology::{Retention, Topology};
use runway_broker::{Broker, Connection, ConsumeOptions, StreamOffset};
use tokio::io::AsyncBufReadExt;

use crate::support::{Project, args, binary, op};

/// A bound on anything a scenario waits for.
const PATIENCE: Duration = Duration::from_secs(180);

/// The cluster's nodes, by short name.
const NODES: [&str; 3] = ["c1", "c2", "c3"];

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/rabbitmq-cluster")
}

/// Run the cluster script; its stdout. Panics (naming what it printed) when it fails.
fn cluster(args: &[&str]) -> String {
    let output = std::process::Command::new(script()).args(args).output().expect("run scripts/rabbitmq-cluster");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "scripts/rabbitmq-cluster {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The AMQP URL of node `node` (c1..c3), with the guest user (allowed from loopback).
fn url(node: &str) -> String {
    let index: u16 = node[1..].parse().expect("c1..c3");
    format!("amqp://guest:guest@127.0.0.1:{}/%2f", 5680 + index)
}

/// The port in a display name or log line that names a node, as its short name.
fn node_named_in(text: &str) -> Option<&'static str> {
    NODES
        .iter()
        .copied()
        .find(|node| text.contains(&format!("127.0.0.1:{}", 5680 + node[1..].parse::<u16>().unwrap_or(0))))
}

/// Every node's URL, `first` first (for a worker that should start on a node of its own).
fn list_from(first: &str) -> String {
    let mut urls = vec![url(first)];
    urls.extend(NODES.iter().filter(|node| **node != first).map(|node| url(node)));
    urls.join(",")
}

fn all_urls() -> String {
    NODES.iter().map(|node| url(node)).collect::<Vec<_>>().join(",")
}

/// Stops the cluster when dropped: at the end of the run, and when a scenario panicked.
struct ClusterGuard;

impl Drop for ClusterGuard {
    fn drop(&mut self) {
        let output = std::process::Command::new(script()).arg("stop").output();
        match output {
            Ok(output) => print!("{}", String::from_utf8_lossy(&output.stdout)),
            Err(err) => eprintln!("cluster: stopping the cluster failed: {err}"),
        }
    }
}

/// A namespace of one scenario on the cluster, declared through `node` (so that the queues'
/// and streams' leaders are there: RabbitMQ places a new leader on the declaring client's node).
struct Namespace {
    name: String,
    topology: Topology,
}

impl Namespace {
    async fn on(node: &str) -> Namespace {
        let name = format!("cl-{}", uuid::Uuid::now_v7().simple());
        let topology = Topology::new(&name).expect("valid namespace");
        let conn = connect(&url(node)).await;
        topology.declare(&conn, &Retention::default()).await.expect("declare topology");
        conn.close().await;
        let namespace = Namespace { name, topology };
        namespace.await_stream_replicas().await;
        namespace
    }

    /// Wait until every stream of the namespace can be read on every node. On a fresh cluster a
    /// stream's replicas start in the background after it is declared, and reading one on a node
    /// whose replica is not up yet is refused ("does not have a replica on the local node", or
    /// the connection closed with INTERNAL_ERROR); the scenarios must start from a cluster that
    /// serves.
    async fn await_stream_replicas(&self) {
        let streams = [
            self.topology.history_queue(),
            self.topology.index_queue(),
            self.topology.cancels_queue(),
            self.topology.groups_queue(),
        ];
        let deadline = Instant::now() + PATIENCE;
        for node in NODES {
            for stream in &streams {
                loop {
                    let options =
                        ConsumeOptions { offset: Some(StreamOffset::First), ..ConsumeOptions::with_prefetch(1) };
                    let conn = connect(&url(node)).await;
                    let read = conn.consume(stream, &options).await;
                    let ready = read.is_ok();
                    drop(read);
                    conn.close().await;
                    if ready {
                        break;
                    }
                    assert!(Instant::now() < deadline, "stream {stream} never became readable on {node}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// The node each of the namespace's quorum queues and streams is led by.
    fn leaders(&self) -> BTreeMap<String, String> {
        let out = cluster(&["ctl", "c2", "rabbitmqctl", "-q", "list_queues", "name", "leader", "--no-table-headers"]);
        out.lines()
            .filter_map(|line| line.split_once(char::is_whitespace))
            .filter(|(queue, _)| queue.starts_with(&format!("{}.", self.name)))
            .map(|(queue, leader)| (queue.to_owned(), leader.trim().to_owned()))
            .collect()
    }

    /// Read the history from its start (through `conn`) until `done` says so.
    async fn read_history(&self, conn: &Connection, done: impl FnMut(&serde_json::Value) -> bool) {
        assert!(
            self.read_history_within(conn, PATIENCE, done).await,
            "the awaited events did not arrive in the history"
        );
    }

    /// [`Namespace::read_history`] for up to `patience`; whether `done` said so by then.
    async fn read_history_within(
        &self,
        conn: &Connection,
        patience: Duration,
        done: impl FnMut(&serde_json::Value) -> bool,
    ) -> bool {
        self.read_stream_within(conn, &self.topology.history_queue(), patience, done).await
    }

    /// [`Namespace::read_history_within`] of any of the namespace's streams.
    async fn read_stream_within(
        &self,
        conn: &Connection,
        stream: &str,
        patience: Duration,
        mut done: impl FnMut(&serde_json::Value) -> bool,
    ) -> bool {
        let options = ConsumeOptions { offset: Some(StreamOffset::First), ..ConsumeOptions::with_prefetch(500) };
        // A stream just declared on a fresh cluster may not have its replica on this node yet.
        let deadline = Instant::now() + PATIENCE;
        let mut conn = conn.clone();
        let mut consumer = loop {
            match conn.consume(stream, &options).await {
                Ok(consumer) => break consumer,
                Err(runway_broker::Error::PreconditionFailed(text))
                    if text.contains("does not have a replica") && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                // A replica still starting, or restarting, may close the whole connection
                // (INTERNAL_ERROR, or RESOURCE_ERROR "does not have a running local replica"):
                // dial again and read again.
                Err(runway_broker::Error::ConnectionClosed(text))
                    if (text.contains("INTERNAL_ERROR") || text.contains("replica")) && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    conn = conn.redial().await.expect("dial the cluster again");
                }
                Err(err) => panic!("consume history: {err}"),
            }
        };
        tokio::time::timeout(patience, async {
            while let Some(delivery) = consumer.next().await {
                let delivery = delivery.expect("history delivery");
                let event: serde_json::Value = serde_json::from_slice(&delivery.body).expect("event is JSON");
                delivery.acker.ack().await.expect("ack");
                if done(&event) {
                    return;
                }
            }
            panic!("the history stream ended");
        })
        .await
        .is_ok()
    }

    /// What the history and the dead letters hold of jobs that never completed, for a failure
    /// message.
    async fn describe_missing(&self, conn: &Connection, missing: &[&String]) -> String {
        let mut events = Vec::new();
        self.read_history_within(conn, Duration::from_secs(10), |event| {
            if missing.iter().any(|id| event["job"] == id.as_str()) {
                events.push(event.to_string());
            }
            false
        })
        .await;
        let mut indexed = Vec::new();
        self.read_stream_within(conn, &self.topology.index_queue(), Duration::from_secs(10), |event| {
            if missing.iter().any(|id| event["job"] == id.as_str()) {
                indexed.push(event.to_string());
            }
            false
        })
        .await;
        let dead = conn.queue_info(&self.topology.dead_queue()).await.ok().flatten().map_or(0, |info| info.messages);
        format!(
            "{} jobs never completed: {missing:?}; {dead} dead letters; their events in the history:\n{}\n\
             in the index:\n{}",
            missing.len(),
            events.join("\n"),
            indexed.join("\n")
        )
    }

    /// Wait until every job of `ids` completed; how many `completed` events each has.
    async fn completions(
        &self,
        conn: &Connection,
        ids: &[String],
        workers: &[Worker],
    ) -> HashMap<String, Vec<serde_json::Value>> {
        let wanted: std::collections::HashSet<&String> = ids.iter().collect();
        let mut completed: HashMap<String, Vec<serde_json::Value>> = HashMap::new();
        let all = self
            .read_history_within(conn, PATIENCE, |event| {
                let id = event["job"].as_str().unwrap_or_default().to_owned();
                if wanted.contains(&id) && event["body"]["kind"] == "completed" {
                    completed.entry(id).or_default().push(event.clone());
                }
                completed.len() == wanted.len()
            })
            .await;
        if !all {
            let missing: Vec<&String> = ids.iter().filter(|id| !completed.contains_key(*id)).collect();
            let said: Vec<String> = workers.iter().map(Worker::text).collect();
            panic!("{}\nthe workers said:\n{}", self.describe_missing(conn, &missing).await, said.join("\n----\n"));
        }
        completed
    }

    async fn publish(&self, conn: &Connection, job: &Job) {
        self.topology.publish_job(conn, job).await.expect("queue a job");
    }
}

async fn connect(urls: &str) -> Connection {
    Broker::amqp(urls, Duration::from_secs(10)).expect("valid URLs").connect().await.expect("connect to the cluster")
}

fn job(command: &str) -> Job {
    Job::new("cluster", "cluster", JobCommand::Shell(command.to_owned()), "cluster-test")
}

/// A `runway-worker` on the cluster, its stderr collected with the time each line came.
struct Worker {
    id: String,
    /// Killed when the worker is dropped.
    _child: tokio::process::Child,
    log: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Worker {
    /// Start a worker given every node, `first` first, and wait until it serves.
    async fn start(ns: &Namespace, id: &str, first: &str, concurrency: &str) -> Worker {
        let mut child = tokio::process::Command::new(binary("runway-worker"))
            .args(["--server", &list_from(first), "--server-order", "listed", "--namespace", &ns.name, "--id", id])
            .args(["--heartbeat", "1s", "--concurrency", concurrency])
            .env("RUNWAY_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn runway-worker");
        let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().expect("lock").push((Instant::now(), line));
            }
        });
        let worker = Worker { id: id.to_owned(), _child: child, log };
        worker.wait_for("serving", Instant::now()).await;
        worker
    }

    /// When the worker first logged a line containing `needle` at or after `since`.
    async fn wait_for(&self, needle: &str, since: Instant) -> Instant {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some((at, _)) =
                self.log.lock().expect("lock").iter().find(|(at, line)| *at >= since && line.contains(needle))
            {
                return *at;
            }
            assert!(Instant::now() < deadline, "the worker never logged `{needle}`: {}", self.text());
            // The log is filled by another task; looking again shortly is waiting for it.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn text(&self) -> String {
        self.log.lock().expect("lock").iter().map(|(_, line)| line.as_str()).collect::<Vec<_>>().join("\n")
    }
}

/// Wait until `count` jobs of `ids` have started (read from the history).
async fn until_started(ns: &Namespace, conn: &Connection, ids: &[String], count: usize) {
    let mut started = std::collections::HashSet::new();
    ns.read_history(conn, |event| {
        let id = event["job"].as_str().unwrap_or_default();
        if ids.iter().any(|wanted| wanted == id) && event["body"]["kind"] == "started" {
            started.insert(id.to_owned());
        }
        started.len() >= count
    })
    .await;
}

/// Whether a job's `completed` events come from more than one run (runner, attempt, seq).
fn ran_more_than_once(ends: Option<&Vec<serde_json::Value>>) -> bool {
    let runs: std::collections::HashSet<(String, u64, u64)> = ends
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|end| {
            let runner = end["runner"].as_str().unwrap_or_default().to_owned();
            (runner, end["attempt"].as_u64().unwrap_or_default(), end["seq"].as_u64().unwrap_or_default())
        })
        .collect();
    runs.len() > 1
}

/// Each job of `ids` completed, successfully, in one run: a `completed` event stored twice with
/// the same `(runner, attempt, seq)` is one event published again after a reconnect (readers
/// skip it), not a second run. Returns how many such republished copies there were.
fn assert_each_once(completed: &HashMap<String, Vec<serde_json::Value>>, ids: &[String]) -> usize {
    let mut republished = 0;
    for id in ids {
        let ends = completed.get(id).map(Vec::as_slice).unwrap_or_default();
        assert!(!ends.is_empty(), "job {id} never completed");
        let runs: std::collections::HashSet<(String, u64, u64)> = ends
            .iter()
            .map(|end| {
                let runner = end["runner"].as_str().unwrap_or_default().to_owned();
                (runner, end["attempt"].as_u64().unwrap_or_default(), end["seq"].as_u64().unwrap_or_default())
            })
            .collect();
        assert_eq!(runs.len(), 1, "job {id} ran more than once: {ends:?}");
        republished += ends.len() - 1;
        for end in ends {
            assert_eq!(end["body"]["data"]["status"], "success", "job {id}: {end}");
        }
    }
    republished
}

/// The node that leads `jobs.any` and the streams is SIGKILLed while 100 jobs are queued and 3
/// run, with a worker on each node: every job completes once, and the runners on the dead node
/// serve again from another.
async fn the_leader_is_killed_under_queued_and_running_jobs() {
    let ns = Namespace::on("c1").await;
    let leaders = ns.leaders();
    for queue in ["jobs.any", "history", "index", "cancels"] {
        let leader = &leaders[&format!("{}.{queue}", ns.name)];
        assert_eq!(leader, "runway-c1@localhost", "{queue} is led by c1: {leaders:?}");
    }
    let mut workers = Vec::new();
    for node in NODES {
        workers.push(Worker::start(&ns, &format!("w-{node}"), node, "1").await);
    }
    let running: Vec<Job> = (0..3).map(|_| job("sleep 4; echo long")).collect();
    let queued: Vec<Job> = (0..100).map(|_| job("sleep 0.05; echo short")).collect();
    // Six jobs of one concurrency group (its queue led by c1 too), each writing when it ran.
    let times = tempfile::tempdir().expect("a temp dir");
    let timed = format!(
        "s=$(date +%s%N); sleep 0.5; e=$(date +%s%N); echo \"$s $e\" > {}/$RUNWAY_JOB_ID",
        times.path().display()
    );
    let grouped: Vec<Job> = (0..6).map(|_| Job { group: Some("cl-g".to_owned()), ..job(&timed) }).collect();
    let ids: Vec<String> = running.iter().chain(&queued).chain(&grouped).map(|job| job.id.to_string()).collect();
    println!("cluster: the group's jobs: {:?}", grouped.iter().map(|job| job.id.to_string()).collect::<Vec<_>>());
    let on_c1 = connect(&url("c1")).await;
    ns.topology.declare_group(&on_c1, "cl-g").await.expect("declare the group");
    ns.topology.announce_group(&on_c1, "cl-g").await.expect("announce the group");
    let producer = connect(&url("c2")).await;
    for job in running.iter().chain(&grouped).chain(&queued) {
        ns.publish(&producer, job).await;
    }
    until_started(&ns, &producer, &ids[..3], 3).await;
    let killed = Instant::now();
    cluster(&["kill", "c1"]);
    // The worker that was on c1 serves again from another node.
    let back = workers[0].wait_for("reconnected to the broker", killed).await;
    let failover = back.duration_since(killed).as_secs_f64();
    let line = workers[0].text();
    let new_node = line.lines().rev().find(|line| line.contains("reconnected")).and_then(node_named_in);
    assert!(matches!(new_node, Some("c2" | "c3")), "moved to another node: {line}");
    let completed = ns.completions(&producer, &ids, &workers).await;
    let duplicates = assert_each_once(&completed, &ids);
    // The group's jobs never overlapped, across the kill.
    let mut intervals: Vec<(u128, u128)> = grouped
        .iter()
        .map(|job| {
            let text =
                std::fs::read_to_string(times.path().join(job.id.to_string())).expect("the group job wrote its times");
            let mut parts = text.split_whitespace().map(|part| part.parse::<u128>().expect("a time in ns"));
            (parts.next().expect("start"), parts.next().expect("end"))
        })
        .collect();
    intervals.sort_unstable();
    for pair in intervals.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "two jobs of the group overlapped across the kill: {pair:?}");
    }
    println!(
        "figure: leader kill: {} jobs each run once (0 duplicates; {duplicates} completed events published again), the group's {} never \
         overlapping; the runner on the killed node served again from {} after {failover:.1}s",
        ids.len(),
        grouped.len(),
        new_node.unwrap_or("?")
    );
    drop(workers);
    cluster(&["start-node", "c1"]);
}

/// The node an attached CLI is connected to is killed while its job prints 100,000 lines: the
/// CLI moves to another node, prints every line once and in order, and exits with the job's code.
async fn the_node_of_an_attached_cli_is_killed_while_its_job_prints() {
    let ns = Namespace::on("c2").await;
    let mut workers = Vec::new();
    for node in NODES {
        workers.push(Worker::start(&ns, &format!("w-{node}"), node, "1").await);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let half = dir.path().join("half");
    let go = dir.path().join("go");
    let command = format!(
        "seq 1 50000; touch {half}; while [ ! -e {go} ]; do sleep 0.05; done; seq 50001 100000; exit 3",
        half = half.display(),
        go = go.display()
    );
    let project = Project::new(&op("print", &command));
    let flags = ["--server".to_owned(), all_urls(), "--namespace".to_owned(), ns.name.clone()];
    let mut cli = project.spawn_runway(&args(&flags, &["run", "print"]));
    let connected = cli.stderr_line_containing("connected to").await;
    let node = node_named_in(&connected).expect("the status line names the node");
    let deadline = Instant::now() + PATIENCE;
    while !half.exists() {
        assert!(Instant::now() < deadline, "the job never printed its first half");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed = Instant::now();
    cluster(&["kill", node]);
    std::fs::write(&go, b"").expect("let the job go on");
    let reconnected = cli.stderr_line_containing("reconnected to").await;
    let seconds = killed.elapsed().as_secs_f64();
    let moved_to = node_named_in(&reconnected);
    assert!(moved_to.is_some() && moved_to != Some(node), "moved to another node: {reconnected}");
    let run = cli.finish().await;
    run.assert_code(3);
    let stdout = run.stdout();
    let mut expected = 1u32;
    let mut lost_or_doubled = 0u32;
    for line in stdout.lines() {
        let number: u32 = line.parse().unwrap_or_else(|_| panic!("not a number: {line:?}"));
        if number != expected {
            lost_or_doubled += 1;
        }
        expected = number + 1;
    }
    let lines = stdout.lines().count();
    assert_eq!((lines, lost_or_doubled), (100_000, 0), "every line once, in order");
    println!(
        "figure: CLI node kill: the CLI on {node} moved to {} in {seconds:.1}s; 100000 lines, 0 lost, 0 duplicates; \
         exit code 3",
        moved_to.unwrap_or("?")
    );
    drop(workers);
    cluster(&["start-node", node]);
}

/// Each node stopped and started in turn, as an upgrade does, under a steady stream of jobs from
/// two producers: nothing lost, nothing run twice; jobs per second during the roll against before.
async fn a_rolling_restart_under_a_steady_stream_of_jobs() {
    let ns = Namespace::on("c1").await;
    let mut workers = Vec::new();
    for node in NODES {
        workers.push(Worker::start(&ns, &format!("w-{node}"), node, "2").await);
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut producers = tokio::task::JoinSet::new();
    for first in ["c2", "c3"] {
        let stop = Arc::clone(&stop);
        let topology = ns.topology.clone();
        producers.spawn(async move {
            // A producer that loses its node dials the next; a publish cut off is tried again
            // only when its confirm never came (a second copy would be a second job).
            let mut conn = connect(&list_from(first)).await;
            let mut ids = Vec::new();
            let mut pace = tokio::time::interval(Duration::from_millis(100));
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                pace.tick().await;
                let job = job("echo steady");
                let mut again = false;
                loop {
                    // Published again, it says so: its runner reads the history first.
                    let published = if again {
                        topology.publish_job_again(&conn, &job).await
                    } else {
                        topology.publish_job(&conn, &job).await
                    };
                    match published {
                        Ok(()) => break,
                        Err(err) if err.is_retryable() => {
                            again = true;
                            conn = loop {
                                match conn.redial().await {
                                    Ok(conn) => break conn,
                                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                                }
                            };
                        }
                        Err(err) => panic!("queueing a job failed: {err}"),
                    }
                }
                ids.push((Instant::now(), job.id.to_string()));
            }
            ids
        });
    }
    let before_start = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let roll_start = Instant::now();
    for node in NODES {
        cluster(&["stop-node", node]);
        cluster(&["start-node", node]);
    }
    let roll_end = Instant::now();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut queued = Vec::new();
    while let Some(ids) = producers.join_next().await {
        queued.extend(ids.expect("producer"));
    }
    let ids: Vec<String> = queued.iter().map(|(_, id)| id.clone()).collect();
    let reader = connect(&all_urls()).await;
    // When each job completed, from the history's timestamps.
    let wanted: std::collections::HashSet<&String> = ids.iter().collect();
    let mut completed: HashMap<String, Vec<serde_json::Value>> = HashMap::new();
    let mut completed_at: Vec<u64> = Vec::new();
    let all_completed = ns
        .read_history_within(&reader, PATIENCE, |event| {
            let id = event["job"].as_str().unwrap_or_default().to_owned();
            if wanted.contains(&id) && event["body"]["kind"] == "completed" {
                completed_at.push(event["ts"].as_u64().unwrap_or_default());
                completed.entry(id).or_default().push(event.clone());
            }
            completed.len() == wanted.len()
        })
        .await;
    // A job that ran twice, like one never completed, is shown with its events and what the
    // workers said of it.
    let twice: Vec<&String> = ids.iter().filter(|id| ran_more_than_once(completed.get(*id))).collect();
    if !all_completed || !twice.is_empty() {
        let mut missing: Vec<&String> = ids.iter().filter(|id| !completed.contains_key(*id)).collect();
        if missing.is_empty() {
            eprintln!("these jobs ran more than once: {twice:?}");
            missing = twice;
        }
        let logs: Vec<String> = workers
            .iter()
            .flat_map(|worker| {
                let text = worker.text();
                text.lines()
                    .filter(|line| {
                        missing.iter().any(|id| line.contains(id.as_str()))
                            || line.contains("reconnected")
                            || line.contains("connection")
                    })
                    .map(|line| format!("{}: {line}", worker.id))
                    .collect::<Vec<_>>()
            })
            .collect();
        panic!("{}\nworkers said:\n{}", ns.describe_missing(&reader, &missing).await, logs.join("\n"));
    }
    let duplicates = assert_each_once(&completed, &ids);
    let now_ms = protocol::now_ms();
    let ms_ago = |at: Instant| now_ms - u64::try_from(at.elapsed().as_millis()).unwrap_or(0);
    let rate = |from: Instant, to: Instant| {
        let (from_ms, to_ms) = (ms_ago(from), ms_ago(to));
        let done = completed_at.iter().filter(|ts| (from_ms..to_ms).contains(ts)).count();
        done as f64 / to.duration_since(from).as_secs_f64()
    };
    println!(
        "figure: rolling restart: {} jobs from 2 producers, 0 lost, 0 run twice ({duplicates} completed events published again); {:.1} jobs/s during the \
         roll ({:.0}s) against {:.1} before",
        ids.len(),
        rate(roll_start, roll_end),
        roll_end.duration_since(roll_start).as_secs_f64(),
        rate(before_start, roll_start)
    );
    drop(workers);
}

/// The node a runner is connected to is cut off from the other two (its Erlang distribution
/// links cut; under `pause_minority` it pauses and closes its clients' connections) while jobs
/// run and more are queued: the runner moves to the majority, and every job queued before runs
/// exactly once.
async fn a_minority_node_is_cut_off_from_the_others() {
    let ns = Namespace::on("c1").await;
    let workers = [Worker::start(&ns, "w-c3", "c3", "1").await, Worker::start(&ns, "w-c1", "c1", "1").await];
    let running: Vec<Job> = (0..2).map(|_| job("sleep 3; echo long")).collect();
    let queued: Vec<Job> = (0..40).map(|_| job("sleep 0.05; echo short")).collect();
    let ids: Vec<String> = running.iter().chain(&queued).map(|job| job.id.to_string()).collect();
    let producer = connect(&url("c1")).await;
    for job in running.iter().chain(&queued) {
        ns.publish(&producer, job).await;
    }
    until_started(&ns, &producer, &ids[..2], 2).await;
    let cut = Instant::now();
    cluster(&["partition", "c3"]);
    let back = workers[0].wait_for("reconnected to the broker", cut).await;
    let failover = back.duration_since(cut).as_secs_f64();
    let text = workers[0].text();
    let new_node = text.lines().rev().find(|line| line.contains("reconnected")).and_then(node_named_in);
    assert!(matches!(new_node, Some("c1" | "c2")), "moved to the majority: {text}");
    let completed = ns.completions(&producer, &ids, &workers).await;
    let duplicates = assert_each_once(&completed, &ids);
    cluster(&["heal", "c3"]);
    println!(
        "figure: minority partition: {} jobs each run once (0 lost, 0 duplicates; {duplicates} completed events published again); the runner on \
         the cut-off node served again from {} after {failover:.1}s",
        ids.len(),
        new_node.unwrap_or("?")
    );
    drop(workers);
}

type Scenario = fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

fn main() -> std::process::ExitCode {
    let scenarios: [(&str, Scenario); 4] = [
        ("the_leader_is_killed_under_queued_and_running_jobs", || {
            Box::pin(the_leader_is_killed_under_queued_and_running_jobs())
        }),
        ("the_node_of_an_attached_cli_is_killed_while_its_job_prints", || {
            Box::pin(the_node_of_an_attached_cli_is_killed_while_its_job_prints())
        }),
        ("a_rolling_restart_under_a_steady_stream_of_jobs", || {
            Box::pin(a_rolling_restart_under_a_steady_stream_of_jobs())
        }),
        ("a_minority_node_is_cut_off_from_the_others", || Box::pin(a_minority_node_is_cut_off_from_the_others())),
    ];
    // libtest's flags (`--test-threads=1`, `--nocapture`) mean nothing here; other words filter.
    let filters: Vec<String> = std::env::args().skip(1).filter(|arg| !arg.starts_with('-')).collect();
    let chosen: Vec<&(&str, Scenario)> = scenarios
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .collect();
    if chosen.is_empty() {
        println!("cluster: no scenario matches {filters:?}");
        return std::process::ExitCode::SUCCESS;
    }
    let chosen_count = chosen.len();
    let started = Instant::now();
    let _guard = ClusterGuard;
    print!("{}", cluster(&["start"]));
    println!("cluster: started in {:.0}s", started.elapsed().as_secs_f64());
    let mut failed = Vec::new();
    for (name, scenario) in chosen {
        println!("cluster: {name} ...");
        let at = Instant::now();
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runtime.block_on(scenario())));
        runtime.shutdown_timeout(Duration::from_secs(2));
        match outcome {
            Ok(()) => println!("cluster: {name} ok in {:.0}s", at.elapsed().as_secs_f64()),
            Err(_) => {
                println!("cluster: {name} FAILED after {:.0}s", at.elapsed().as_secs_f64());
                failed.push(*name);
                // A failed scenario may leave a node down: bring every node back for the next.
                let _ = std::process::Command::new(script()).arg("start").output();
            }
        }
    }
    let ran = chosen_count;
    println!("cluster: {ran} scenarios in {:.0}s; failed: {failed:?}", started.elapsed().as_secs_f64());
    if failed.is_empty() { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::FAILURE }
}
