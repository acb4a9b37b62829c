//! One-shot runners over RabbitMQ: `runway-worker --once` takes exactly one job and exits 0;
//! `--idle-timeout` ends a worker that had no job for that long.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use runway_broker::protocol::Target;

use crate::support::{Namespace, Project, args, op};

/// Queue `count` jobs for any runner, detached; their ids.
async fn queue_jobs(ns: &Namespace, project: &Project, count: usize) -> Vec<String> {
    let flags = ns.flags();
    let mut ids = Vec::new();
    for _ in 0..count {
        let run = project.runway(&args(&flags, &["run", "job", "--remote", "--detach"])).await;
        run.assert_code(0);
        ids.push(run.stdout().trim().to_owned());
    }
    ids
}

#[tokio::test]
async fn a_once_worker_under_a_queue_of_ten_takes_one_job_and_exits_0() {
    let ns = Namespace::new().await;
    let project = Project::new(&op("job", "echo ran"));
    queue_jobs(&ns, &project, 10).await;
    let mut worker = ns.worker("once-1", &["--once"]).await;
    assert_eq!(worker.exit_code().await, Some(0), "{}", worker.log());
    // It exited, so nothing is held unacknowledged: what is ready is what it did not take.
    let any = ns.topology.job_queue_info(ns.conn(), &Target::Any).await.expect("queue info").expect("declared");
    assert_eq!(any.messages, 9, "the one-shot worker took one job: {}", worker.log());
    assert_eq!(worker.log().matches("job ended").count(), 1, "{}", worker.log());
    ns.cleanup().await;
}

#[tokio::test]
async fn ten_once_workers_started_together_take_ten_different_jobs() {
    let ns = Arc::new(Namespace::new().await);
    let project = Project::new(&op("job", "sleep 0.2; echo ran"));
    let ids = queue_jobs(&ns, &project, 10).await;
    let mut starting = tokio::task::JoinSet::new();
    for i in 0..10 {
        let ns = Arc::clone(&ns);
        starting.spawn(async move { ns.worker(&format!("once-{i}"), &["--once"]).await });
    }
    let mut workers = Vec::new();
    while let Some(worker) = starting.join_next().await {
        workers.push(worker.expect("worker start"));
    }
    for worker in &mut workers {
        assert_eq!(worker.exit_code().await, Some(0), "{}", worker.log());
    }
    let wanted: HashSet<String> = ids.into_iter().collect();
    let mut runners = BTreeMap::new();
    ns.read_history(|event| {
        let job = event["job"].as_str().unwrap_or_default().to_owned();
        if wanted.contains(&job) && event["body"]["kind"] == "completed" {
            assert_eq!(event["body"]["data"]["status"], "success", "{event}");
            runners.insert(job, event["runner"].as_str().unwrap_or_default().to_owned());
        }
        runners.len() == 10
    })
    .await;
    let distinct: HashSet<&String> = runners.values().collect();
    assert_eq!(distinct.len(), 10, "each worker ran exactly one job: {runners:?}");
    ns.cleanup().await;
}

#[tokio::test]
async fn a_worker_with_an_idle_timeout_exits_0_after_it_had_no_job_for_that_long() {
    let ns = Namespace::new().await;
    let project = Project::new(&op("job", "echo ran"));
    queue_jobs(&ns, &project, 1).await;
    let mut worker = ns.worker("idle-1", &["--idle-timeout", "1s"]).await;
    assert_eq!(worker.exit_code().await, Some(0), "{}", worker.log());
    let log = worker.log();
    assert_eq!(log.matches("job ended").count(), 1, "it ran the queued job first: {log}");
    assert!(log.contains("idle timeout"), "{log}");
    ns.cleanup().await;
}
