//! The fault scenarios that need the broker (or the machine) to themselves: a RabbitMQ restart
//! under load, a burst of 10,000 jobs, and a flood of output. Each prints a figure line.
//!
//! A test binary of its own: the restart stops the broker every other test talks to, and cargo
//! runs test binaries one after another, never two at once. Inside it, [`SERIAL`] runs the
//! scenarios one at a time.

#![allow(unreachable_pub)]

#[allow(dead_code)]
#[path = "support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::process::Command;
use std::time::Instant;

use runway_broker::protocol::{self, Command as JobCommand, Event, EventBody, Job, Queued, VERSION};

use support::{Namespace, Project, args};

/// Held by each scenario for its whole run.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How the broker is restarted.
#[derive(Clone, Copy, Debug)]
enum How {
    /// `rabbitmqctl stop_app`, then `start_app`: the node stays, the application restarts.
    App,
    /// `rabbitmqctl stop`, then a new node (`scripts/ensure-rabbitmq`).
    Node,
}

/// Starts the broker again when dropped, so a failing assertion cannot leave it stopped for
/// the tests after this one.
struct Restarting(How);

impl Restarting {
    fn stop(how: How) -> Restarting {
        match how {
            How::App => rabbitmqctl(&["stop_app"]),
            How::Node => rabbitmqctl(&["stop"]),
        }
        Restarting(how)
    }
}

impl Drop for Restarting {
    fn drop(&mut self) {
        match self.0 {
            How::App => rabbitmqctl(&["start_app"]),
            How::Node => {
                let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/ensure-rabbitmq");
                let status = Command::new(script).status().expect("run scripts/ensure-rabbitmq");
                assert!(status.success(), "scripts/ensure-rabbitmq could not start RabbitMQ again");
            }
        }
        rabbitmqctl(&["await_startup"]);
    }
}

fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl").args(args).output().unwrap_or_else(|err| {
        panic!("this test restarts the local RabbitMQ with `rabbitmqctl`, which cannot be run: {err}")
    });
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A shell job for any runner, as the CLI would queue it.
fn job(operation: &str, command: &str) -> Job {
    job_of(operation, JobCommand::Shell(command.to_owned()))
}

fn job_of(operation: &str, command: JobCommand) -> Job {
    Job::new(operation, "restart", command, "test")
}

async fn queue(ns: &Namespace, job: &Job) {
    let queued = Event {
        v: VERSION,
        job: job.id,
        seq: 0,
        ts: protocol::now_ms(),
        runner: String::new(),
        attempt: 1,
        body: EventBody::Queued(Queued::of(job)),
    };
    ns.topology.publish_event(ns.conn(), &queued).await.expect("publish").wait().await.expect("confirm");
    ns.topology.publish_job(ns.conn(), job).await.expect("queue job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runners_and_an_attached_cli_survive_a_broker_restart() {
    let _serial = SERIAL.lock().await;
    let mut ns = Namespace::new().await;
    let mut worker = ns.worker("w-restart", &["--concurrency", "3"]).await;
    survive(&mut ns, &mut worker, How::App, 200).await;
    survive(&mut ns, &mut worker, How::Node, 50).await;
    ns.cleanup().await;
}

/// Three slow jobs running (one followed by an attached CLI) and `queued` quick ones waiting;
/// restart the broker `how`; every job completes once, and the attached CLI reconnects.
async fn survive(ns: &mut Namespace, worker: &mut support::Worker, how: How, queued: usize) {
    let flags = ns.flags();
    let gates = tempfile::tempdir().expect("temp dir");
    let gate = gates.path().join("open");
    let slow = format!("echo begin; while [ ! -e {} ]; do sleep 0.02; done; echo end", gate.display());
    let project = Project::new(&format!("[operations.slow]\nrun = {slow:?}\n"));
    let from = protocol::now_ms();

    // Three slow jobs hold every slot: one followed by an attached CLI, two queued directly.
    let mut attached = project.spawn_runway(&args(&flags, &["run", "slow", "--remote"]));
    let mut slow_jobs = vec![job("slow", &slow), job("slow", &slow)];
    for job in &slow_jobs {
        queue(ns, job).await;
    }
    let mut started = 0;
    let mut attached_id = None;
    ns.read_history(|event| {
        if event["ts"].as_u64().unwrap_or(0) < from {
            return false;
        }
        if event["body"]["kind"] == "started" {
            started += 1;
        }
        if event["body"]["kind"] == "queued" && event["body"]["data"]["queued_by"] != "test" {
            attached_id = event["job"].as_str().map(str::to_owned);
        }
        started == 3
    })
    .await;
    let attached_id = attached_id.expect("the attached CLI's job is in the history");
    attached.stderr_line_containing("started").await;
    // Quick jobs wait behind them.
    let quick: Vec<Job> = (0..queued).map(|_| job("quick", "true")).collect();
    for job in &quick {
        queue(ns, job).await;
    }

    // Stop the broker; the slow jobs finish while it is away; start it again.
    let restart = Restarting::stop(how);
    std::fs::write(&gate, "").expect("open the gate");
    let restarted_at = Instant::now();
    drop(restart);

    // The attached CLI says it reconnected and ends with the job's whole output, once.
    attached.stderr_line_containing("reconnected").await;
    let run = attached.finish().await;
    if run.code != Some(0) {
        eprintln!("worker log:\n{}", worker.log.lock().expect("lock").join("\n"));
    }
    run.assert_code(0);
    assert_eq!(run.stdout(), "begin\nend\n", "stderr:\n{}", run.stderr);
    worker.wait_for_log("consuming again").await;
    worker.log.lock().expect("lock").clear();

    // Every job completed exactly once, successfully, as its first attempt.
    ns.reconnect().await;
    let mut expected: HashMap<String, &str> = quick.iter().map(|job| (job.id.to_string(), "quick")).collect();
    slow_jobs.push(job("slow", &slow));
    slow_jobs.last_mut().expect("one").id = attached_id.parse().expect("uuid");
    expected.extend(slow_jobs.iter().map(|job| (job.id.to_string(), "slow")));
    let mut completions: HashMap<String, Vec<serde_json::Value>> = HashMap::new();
    let mut done = 0;
    ns.read_history(|event| {
        let id = event["job"].as_str().unwrap_or_default().to_owned();
        if expected.contains_key(&id) && event["body"]["kind"] == "completed" {
            let seen = completions.entry(id).or_default();
            seen.push(event.clone());
            if seen.len() == 1 {
                done += 1;
            }
        }
        done == expected.len()
    })
    .await;
    let accounted = restarted_at.elapsed();
    for (id, seen) in &completions {
        let distinct: std::collections::HashSet<(u64, u64)> = seen
            .iter()
            .map(|event| (event["attempt"].as_u64().unwrap_or(0), event["seq"].as_u64().unwrap_or(0)))
            .collect();
        assert_eq!(distinct.len(), 1, "job {id} ({}) completed more than once: {seen:?}", expected[id]);
        assert_eq!(seen[0]["body"]["data"]["status"], "success", "job {id}: {seen:?}");
        assert_eq!(seen[0]["attempt"], 1, "job {id}: {seen:?}");
    }
    println!(
        "figure: broker restart ({how:?}) with {queued} jobs queued and 3 running: all {} accounted for, \
         the last {:.1}s after the restart began",
        expected.len(),
        accounted.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_ten_thousand_jobs_from_four_producers_completes_each_exactly_once() {
    const PRODUCERS: usize = 4;
    const JOBS_EACH: usize = 2_500;
    let _serial = SERIAL.lock().await;
    let ns = Namespace::new().await;
    let _workers = [
        ns.worker("w-burst-1", &["--concurrency", "4"]).await,
        ns.worker("w-burst-2", &["--concurrency", "4"]).await,
        ns.worker("w-burst-3", &["--concurrency", "4"]).await,
    ];
    let started = Instant::now();
    let mut producers = tokio::task::JoinSet::new();
    for _ in 0..PRODUCERS {
        let conn = ns.conn().redial().await.expect("a producer connects");
        let topology = ns.topology.clone();
        producers.spawn(async move {
            let mut ids = Vec::with_capacity(JOBS_EACH);
            for _ in 0..JOBS_EACH {
                let job = job_of("ping", JobCommand::Builtin(protocol::Builtin::Noop));
                topology.publish_job(&conn, &job).await.expect("queue a job");
                ids.push(job.id.to_string());
            }
            ids
        });
    }
    let mut expected = std::collections::HashSet::new();
    while let Some(ids) = producers.join_next().await {
        expected.extend(ids.expect("producer"));
    }
    assert_eq!(expected.len(), PRODUCERS * JOBS_EACH, "job ids are unique");

    // From the history: every job accepted once and completed once, successfully.
    let mut accepted: HashMap<String, usize> = HashMap::new();
    let mut completed: HashMap<String, Vec<serde_json::Value>> = HashMap::new();
    let mut runners: HashMap<String, usize> = HashMap::new();
    ns.read_history(|event| {
        let id = event["job"].as_str().unwrap_or_default();
        if !expected.contains(id) {
            return false;
        }
        match event["body"]["kind"].as_str() {
            Some("accepted") => {
                *accepted.entry(id.to_owned()).or_default() += 1;
                *runners.entry(event["runner"].as_str().unwrap_or_default().to_owned()).or_default() += 1;
            }
            Some("completed") => completed.entry(id.to_owned()).or_default().push(event["body"]["data"].clone()),
            _ => {}
        }
        completed.len() == expected.len()
    })
    .await;
    let elapsed = started.elapsed();
    for id in &expected {
        assert_eq!(accepted.get(id), Some(&1), "job {id} accepted once");
        let seen = &completed[id];
        assert_eq!(seen.len(), 1, "job {id} completed once: {seen:?}");
        assert_eq!(seen[0]["status"], "success", "job {id}: {seen:?}");
    }
    assert_eq!(runners.len(), 3, "all three workers took jobs: {runners:?}");
    println!(
        "figure: burst of {} noop jobs from {PRODUCERS} producers across 3 workers: each completed exactly once, \
         {:.0} jobs/s (queued to all completed); per worker {runners:?}",
        expected.len(),
        expected.len() as f64 / elapsed.as_secs_f64()
    );
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_output_is_slowed_down_not_buffered() {
    use tokio::io::AsyncReadExt;
    const LINES: u64 = 5_000_000;
    let _serial = SERIAL.lock().await;
    let ns = Namespace::new().await;
    let worker = ns.worker("w-flood", &[]).await;
    // `yes` prints as fast as it can: 99 characters and a newline per line, 500 MB in all.
    let flood = format!("yes {} | head -n {LINES}", "x".repeat(99));
    let project = Project::new(&format!("[operations.flood]\nrun = {flood:?}\n"));
    let started = Instant::now();
    let mut cli = tokio::process::Command::new(support::binary("runway"))
        .args(ns.flags())
        .args(["--quiet", "run", "flood", "--remote"])
        .current_dir(project.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn runway");
    let mut stdout = cli.stdout.take().expect("piped stdout");
    let mut stderr = cli.stderr.take().expect("piped stderr");
    let (lines, bytes, wrong) = tokio::time::timeout(support::PATIENCE * 3, async {
        let mut buffer = vec![0u8; 1 << 20];
        let (mut lines, mut bytes, mut wrong) = (0u64, 0u64, 0u64);
        let mut column = 0usize;
        loop {
            let read = stdout.read(&mut buffer).await.expect("read runway's stdout");
            if read == 0 {
                return (lines, bytes, wrong);
            }
            bytes += read as u64;
            for &byte in &buffer[..read] {
                if byte == b'\n' {
                    lines += 1;
                    wrong += u64::from(column != 99);
                    column = 0;
                } else {
                    column += 1;
                    wrong += u64::from(byte != b'x');
                }
            }
        }
    })
    .await
    .expect("the flood did not finish");
    let status = cli.wait().await.expect("wait for runway");
    let mut errors = String::new();
    let _ = stderr.read_to_string(&mut errors).await;
    let elapsed = started.elapsed();
    assert_eq!(status.code(), Some(0), "stderr:\n{errors}");
    assert_eq!(lines, LINES, "every line arrived");
    assert_eq!(bytes, LINES * 100, "every byte arrived");
    assert_eq!(wrong, 0, "no line was cut or changed");
    let peak_kb = peak_rss_kb(worker.pid());
    assert!(peak_kb < 200 * 1024, "the worker's peak RSS was {peak_kb} kB, over 200 MB");
    println!(
        "figure: flood of {LINES} lines (500 MB) over RabbitMQ: {:.0} lines/s at the CLI, worker peak RSS {:.1} MB",
        LINES as f64 / elapsed.as_secs_f64(),
        peak_kb as f64 / 1024.0
    );
    ns.cleanup().await;
}

/// The peak resident set (VmHWM) of a process, in kB.
fn peak_rss_kb(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// Sets RabbitMQ's `consumer_timeout` for channels opened from now on; puts the old value back
/// when dropped.
struct ConsumerTimeout(String);

impl ConsumerTimeout {
    fn set(ms: u64) -> ConsumerTimeout {
        let old = Command::new("rabbitmqctl")
            .args(["eval", "application:get_env(rabbit, consumer_timeout)."])
            .output()
            .expect("run rabbitmqctl");
        let old = String::from_utf8_lossy(&old.stdout).trim().to_owned();
        rabbitmqctl(&["eval", &format!("application:set_env(rabbit, consumer_timeout, {ms}).")]);
        ConsumerTimeout(old)
    }
}

impl Drop for ConsumerTimeout {
    fn drop(&mut self) {
        let restore = match self.0.strip_prefix("{ok,").and_then(|rest| rest.strip_suffix('}')) {
            Some(value) => format!("application:set_env(rabbit, consumer_timeout, {value})."),
            None => "application:unset_env(rabbit, consumer_timeout).".to_owned(),
        };
        rabbitmqctl(&["eval", &restore]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_longer_than_the_consumer_timeout_completes_once() {
    let _serial = SERIAL.lock().await;
    let ns = Namespace::new().await;
    // RabbitMQ checks the timeout about once a minute, so a minute is the shortest that works;
    // its channels read the setting when they open, so the worker starts after it is set.
    let timeout = ConsumerTimeout::set(60_000);
    let mut worker = ns.worker("w-timeout", &[]).await;
    let gates = tempfile::tempdir().expect("temp dir");
    let gate = gates.path().join("open");
    let long = format!("echo begin; while [ ! -e {} ]; do sleep 0.1; done; echo end", gate.display());
    let project = Project::new(&format!("[operations.long]\nrun = {long:?}\n"));
    let started = Instant::now();
    let mut attached = project.spawn_runway(&args(&ns.flags(), &["run", "long", "--remote"]));
    attached.stderr_line_containing("started").await;
    // The broker takes the unacknowledged delivery back when the timeout passes and hands it out
    // again, here: the runner sees it is running that job and drops the copy.
    // It checks once a minute: the delivery is taken back between one and two minutes in.
    let patience = std::time::Duration::from_secs(240);
    worker.wait_for_log_within("dropping a copy of a job this runner took already", patience).await;
    let taken_back = started.elapsed();
    std::fs::write(&gate, "").expect("open the gate");
    let run = attached.finish().await;
    drop(timeout);
    run.assert_code(0);
    assert_eq!(run.stdout(), "begin\nend\n", "stderr:\n{}", run.stderr);
    let job = run.stderr.split("as job ").nth(1).and_then(|rest| rest.split_whitespace().next()).expect("job id");
    let events = ns.completed_events(job).await;
    let kinds: Vec<&str> = events.iter().filter_map(|event| event["body"]["kind"].as_str()).collect();
    assert_eq!(kinds.iter().filter(|kind| **kind == "started").count(), 1, "started once: {kinds:?}");
    assert_eq!(kinds.iter().filter(|kind| **kind == "completed").count(), 1, "completed once: {kinds:?}");
    assert!(events.iter().all(|event| event["attempt"] == 1), "one attempt: {events:?}");
    println!(
        "figure: consumer timeout of 60 s: the broker took the delivery back after {:.0} s; the job completed once, \
         after {:.0} s",
        taken_back.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    ns.cleanup().await;
}
