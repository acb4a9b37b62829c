//! A RabbitMQ restart under load: runners and an attached CLI survive it, and every job is
//! accounted for afterwards.
//!
//! A test binary of its own: it stops the broker every other test talks to, and cargo runs test
//! binaries one after another, never two at once. Its scenarios run in sequence inside one test.

#![allow(unreachable_pub)]

#[allow(dead_code)]
#[path = "support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::process::Command;
use std::time::Instant;

use runway_broker::protocol::{self, Command as JobCommand, Event, EventBody, Job, Queued, Target, VERSION};

use support::{Namespace, Project};

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

fn args<'a>(ns: &'a [String], rest: &[&'a str]) -> Vec<&'a str> {
    ns.iter().map(String::as_str).chain(rest.iter().copied()).collect()
}

/// A job for any runner, as the CLI would queue it.
fn job(operation: &str, command: &str) -> Job {
    Job {
        v: VERSION,
        id: uuid::Uuid::now_v7(),
        operation: operation.to_owned(),
        project: "restart".to_owned(),
        command: JobCommand::Shell(command.to_owned()),
        args: vec![],
        env: Default::default(),
        workdir: None,
        timeout_ms: None,
        kill_grace_ms: None,
        target: Target::Any,
        retry_on_lost: false,
        attempt: 1,
        created_at_ms: protocol::now_ms(),
        queued_by: "test".to_owned(),
    }
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
