//! Concurrency groups over RabbitMQ: at most one job of a group runs at a time across runners,
//! in queue order.

use std::collections::{BTreeMap, HashSet};

use crate::support::relay::Relay;
use crate::support::{Namespace, Project, args};

/// Each job writes `start end` (ns since the epoch) to `times/<job id>`, keeping its slot 50 ms.
const TIMED: &str = "s=$(date +%s%N); sleep 0.05; e=$(date +%s%N); echo \"$s $e\" > \"times/$RUNWAY_JOB_ID\"";

fn grouped_project(group: &str) -> Project {
    let toml = format!(
        "[operations.a]\nrun = {TIMED:?}\nconcurrency = {group:?}\n\n[operations.b]\nrun = {TIMED:?}\nconcurrency = {group:?}\n"
    );
    let project = Project::new(&toml);
    std::fs::create_dir(project.path().join("times")).expect("times dir");
    project
}

#[tokio::test]
async fn jobs_of_one_group_never_overlap_across_three_workers_and_run_in_queue_order() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    // Plenty of slots: only the group may keep the jobs apart.
    let _workers = [
        ns.worker("w-a", &["--concurrency", "4"]).await,
        ns.worker("w-b", &["--concurrency", "4"]).await,
        ns.worker("w-c", &["--concurrency", "4"]).await,
    ];
    let project = grouped_project("deploy-prod");
    let mut clis = tokio::task::JoinSet::new();
    for producer in 0..4 {
        let flags = flags.clone();
        let dir = project.path().to_path_buf();
        clis.spawn(async move {
            let project = crate::support::Project::at(dir);
            let mut ids = Vec::new();
            for i in 0..5 {
                let operation = if (producer + i) % 2 == 0 { "a" } else { "b" };
                let run = project.runway(&args(&flags, &["run", operation, "--remote", "--detach"])).await;
                run.assert_code(0);
                ids.push(run.stdout().trim().to_owned());
            }
            ids
        });
    }
    let mut per_producer = Vec::new();
    while let Some(ids) = clis.join_next().await {
        per_producer.push(ids.expect("cli task"));
    }
    let wanted: HashSet<String> = per_producer.iter().flatten().cloned().collect();
    assert_eq!(wanted.len(), 20);
    let mut runners = BTreeMap::new();
    ns.read_history(|event| {
        let job = event["job"].as_str().unwrap_or_default().to_owned();
        if wanted.contains(&job) && event["body"]["kind"] == "completed" {
            assert_eq!(event["body"]["data"]["status"], "success", "{event}");
            runners.insert(job, event["runner"].as_str().unwrap_or_default().to_owned());
        }
        runners.len() == 20
    })
    .await;
    let interval = |job: &String| -> (u128, u128) {
        let text = std::fs::read_to_string(project.path().join("times").join(job)).expect("the job wrote its times");
        let mut parts = text.split_whitespace().map(|part| part.parse::<u128>().expect("a time in ns"));
        (parts.next().expect("start"), parts.next().expect("end"))
    };
    let mut intervals: Vec<(u128, u128, String)> = wanted
        .iter()
        .map(|job| {
            let (start, end) = interval(job);
            (start, end, job.clone())
        })
        .collect();
    intervals.sort();
    for pair in intervals.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "two jobs of the group overlapped: {pair:?}");
    }
    // Each producer queued its jobs one after another: they ran in that order.
    for ids in &per_producer {
        let starts: Vec<u128> = ids.iter().map(|job| interval(job).0).collect();
        assert!(starts.windows(2).all(|pair| pair[0] < pair[1]), "not in queue order: {ids:?} started at {starts:?}");
    }
    let used: HashSet<&String> = runners.values().collect();
    eprintln!("figure: 20 group jobs ran on {} of 3 workers, none overlapping", used.len());
    ns.conn().delete_queue(&ns.topology.group_queue("deploy-prod")).await.expect("delete the group queue");
    ns.cleanup().await;
}

#[tokio::test]
async fn a_group_stays_held_across_a_worker_sigkill_until_the_dead_job_is_resolved_lost() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    let workers = [ns.worker("w-a", &["--concurrency", "2"]).await, ns.worker("w-b", &["--concurrency", "2"]).await];
    let toml = "[operations.slow]\nrun = \"sleep 5\"\nconcurrency = \"g\"\n\n\
                [operations.quick]\nrun = \"echo quick\"\nconcurrency = \"g\"\n";
    let project = Project::new(toml);
    let slow = project.runway(&args(&flags, &["run", "slow", "--remote", "--detach"])).await;
    slow.assert_code(0);
    let slow = slow.stdout().trim().to_owned();
    let mut holder = String::new();
    ns.read_history(|event| {
        if event["job"] == slow.as_str() && event["body"]["kind"] == "started" {
            holder = event["runner"].as_str().unwrap_or_default().to_owned();
            return true;
        }
        false
    })
    .await;
    let quick = project.runway(&args(&flags, &["run", "quick", "--remote", "--detach"])).await;
    quick.assert_code(0);
    let quick = quick.stdout().trim().to_owned();
    let index = if holder == "w-a" { 0 } else { 1 };
    workers[index].signal(nix::sys::signal::Signal::SIGKILL);
    let (mut lost_at, mut quick_started_at) = (None, None);
    ns.read_history(|event| {
        let kind = event["body"]["kind"].as_str().unwrap_or_default();
        if event["job"] == slow.as_str() && kind == "completed" {
            assert_eq!(event["body"]["data"]["status"], "lost", "{event}");
            lost_at = event["ts"].as_u64();
        }
        if event["job"] == quick.as_str() && kind == "accepted" {
            quick_started_at = event["ts"].as_u64();
        }
        event["job"] == quick.as_str() && kind == "completed"
    })
    .await;
    let (lost_at, quick_started_at) =
        (lost_at.expect("the slow job was resolved lost"), quick_started_at.expect("quick ran"));
    assert!(
        lost_at <= quick_started_at,
        "the next job of the group was taken ({quick_started_at}) before the dead one was resolved lost ({lost_at})"
    );
    eprintln!("figure: the group was free {} ms after the dead job was resolved lost", quick_started_at - lost_at);
    ns.conn().delete_queue(&ns.topology.group_queue("g")).await.expect("delete the group queue");
    ns.cleanup().await;
}

/// The runner holding a group loses its broker connection but goes on running the job: the
/// broker hands the job to the group's next consumer, which must hold the group until the job
/// ends (it still runs), not take the group's next job beside it.
#[tokio::test]
async fn a_group_stays_held_while_its_runner_reconnects_and_still_runs_the_job() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    let relay = Relay::start().await;
    let mut cut_off = ns.worker_as(&relay.url(), "w-cut", &[]).await;
    let gate = tempfile::tempdir().expect("a temp dir");
    let open = gate.path().join("open");
    let long = format!("while [ ! -f {} ]; do sleep 0.05; done; {TIMED}", open.display());
    let toml = format!(
        "[operations.long]\nrun = {long:?}\nconcurrency = \"g-cut\"\n\n[operations.short]\nrun = {TIMED:?}\nconcurrency = \"g-cut\"\n"
    );
    let project = Project::new(&toml);
    std::fs::create_dir(project.path().join("times")).expect("times dir");
    let queued = project.runway(&args(&flags, &["run", "long", "--remote", "--detach"])).await;
    queued.assert_code(0);
    let long_id = queued.stdout().trim().to_owned();
    ns.read_history(|event| event["job"] == long_id.as_str() && event["body"]["kind"] == "started").await;
    let queued = project.runway(&args(&flags, &["run", "short", "--remote", "--detach"])).await;
    queued.assert_code(0);
    let short_id = queued.stdout().trim().to_owned();
    // A second runner, waiting behind the first on the group's queue (single active consumer).
    let _next = ns.worker("w-next", &[]).await;
    // The holder's connection is cut and it connects again at once; its job runs on.
    let cut_at = runway_broker::protocol::now_ms();
    relay.set_open(false);
    cut_off.wait_for_log("lost the broker connection").await;
    relay.set_open(true);
    cut_off.wait_for_log("reconnected to the broker").await;
    // A heartbeat of the long job from after the cut: the runner the broker handed the job to
    // has seen its runner alive, and decided what to do with the group.
    ns.read_history(|event| {
        event["job"] == long_id.as_str()
            && event["body"]["kind"] == "heartbeat"
            && event["ts"].as_u64().is_some_and(|ts| ts > cut_at + 1000)
    })
    .await;
    std::fs::write(&open, b"").expect("open the gate");
    for id in [&long_id, &short_id] {
        let events = ns.completed_events(id).await;
        let end = events.last().expect("completed");
        assert_eq!(end["body"]["data"]["status"], "success", "{end}");
    }
    let times = |id: &str| -> (u128, u128) {
        let text = std::fs::read_to_string(project.path().join("times").join(id)).expect("the job wrote its times");
        let mut parts = text.split_whitespace().map(|part| part.parse::<u128>().expect("a time in ns"));
        (parts.next().expect("start"), parts.next().expect("end"))
    };
    let (long_times, short_times) = (times(&long_id), times(&short_id));
    assert!(
        long_times.1 <= short_times.0,
        "the group's next job started ({}) before the job its cut-off runner still ran ended ({})",
        short_times.0,
        long_times.1
    );
    ns.conn().delete_queue(&ns.topology.group_queue("g-cut")).await.expect("delete the group queue");
    ns.cleanup().await;
}
