//! Forged runner events on the real RabbitMQ: a submitter cannot even publish them (topic
//! permissions), and what another runner account publishes about a job it did not accept is
//! ignored by every reader, counted and said; a job message published three times runs once.

use std::collections::BTreeMap;
use std::time::Duration;

use runway_broker::protocol::{Completed, Event, EventBody, LogLine, Status, Stream, VERSION, now_ms};
use runway_broker::{Broker, Connection};

use crate::support::users::User;
use crate::support::{Namespace, Project, args, op};

async fn connect(user: &User) -> Connection {
    Broker::amqp(&user.url(), Duration::from_secs(10)).expect("a valid URL").connect().await.expect("log in")
}

fn forged(job: uuid::Uuid, runner: &str, seq: u64, attempt: u32, body: EventBody) -> Event {
    Event { v: VERSION, job, seq, ts: now_ms(), runner: runner.to_owned(), attempt, body }
}

#[tokio::test]
async fn forged_runner_events_are_ignored_counted_and_said_by_every_reader() {
    let ns = Namespace::new().await;
    let alice = User::with_role(&ns.name, "submitter");
    let mallory = User::with_role(&ns.name, "runner");
    let eve = User::with_role(&ns.name, "submitter");
    let _worker = ns.worker("w-forge", &[]).await;
    let gate = tempfile::tempdir().expect("a temp dir");
    let gate_file = gate.path().join("open");
    let script =
        format!("echo begin; while [ ! -f {} ]; do sleep 0.05; done; echo done-for-real; exit 3", gate_file.display());
    let project = Project::new(&op("slow", &script));
    let mut cli = project.spawn_runway(&args(&alice.flags(&ns.name), &["run", "slow", "--remote"]));
    cli.stderr_line_containing("started").await;
    let mut id = String::new();
    ns.read_history(|event| {
        let started = event["body"]["kind"] == "started";
        if started {
            id = event["job"].as_str().expect("a job id").to_owned();
        }
        started
    })
    .await;
    let job: uuid::Uuid = id.parse().expect("a uuid");

    // A submitter may not publish a runner's event at all: the broker refuses it.
    let eve_conn = connect(&eve).await;
    let success = EventBody::Completed(Completed {
        status: Status::Success,
        exit_code: Some(0),
        signal: None,
        duration_ms: 1,
        outputs: BTreeMap::from([("forged".to_owned(), "yes".to_owned())]),
        error: None,
        retrying: None,
    });
    let refused = match ns.topology.publish_event(&eve_conn, &forged(job, "w-forge", 99, 1, success.clone())).await {
        Ok(confirm) => confirm.wait().await,
        Err(err) => Err(err),
    };
    assert!(refused.is_err(), "a submitter published a `completed` event");

    // Another runner account can publish them; no reader believes them.
    let mallory_conn = connect(&mallory).await;
    let line = LogLine { s: Stream::Stdout, t: now_ms(), l: "FORGED LINE".to_owned(), b64: false, p: false };
    for event in [
        forged(job, "w-forge", 99, 1, success),
        forged(job, "w-forge", 1, u32::MAX, EventBody::Heartbeat { interval_ms: 1000 }),
        forged(job, "w-forge", 0, 1, EventBody::Log { lines: vec![line] }),
        forged(job, "w-forge", 1, 2, EventBody::Accepted { hostname: "evil".to_owned(), heartbeat_ms: 1000 }),
    ] {
        let confirm = ns.topology.publish_event(&mallory_conn, &event).await.expect("a runner may publish events");
        confirm.wait().await.expect("confirmed");
    }
    std::fs::write(&gate_file, b"").expect("open the gate");

    let run = cli.finish().await;
    run.assert_code(3);
    assert!(run.stdout().contains("begin") && run.stdout().contains("done-for-real"), "{}", run.stdout());
    assert!(!run.stdout().contains("FORGED"), "a forged log line was printed: {}", run.stdout());
    assert!(!run.stderr.contains("succeeded"), "{}", run.stderr);
    assert!(run.stderr.contains("ignored 4 events not sent by the job's runner"), "{}", run.stderr);

    let inspect = project.runway(&args(&ns.flags(), &["job", "inspect", &id, "--json"])).await;
    inspect.assert_code(0);
    let view: serde_json::Value = serde_json::from_str(inspect.stdout().trim()).expect("inspect --json");
    assert_eq!(view["state"], "failed", "{view}");
    assert_eq!(view["exit_code"], 3, "{view}");
    // The index holds no log events: inspect counts the three others.
    assert_eq!(view["ignored_events"], 3, "{view}");
    assert_eq!(view["attempts"].as_array().map(Vec::len), Some(1), "{view}");
    assert_eq!(view["attempts"][0]["runner_user"], "guest", "{view}");
    assert!(view["outputs"].get("forged").is_none(), "{view}");
    let human = project.runway(&args(&ns.flags(), &["job", "inspect", &id])).await;
    assert!(human.stdout().contains("ignored    3 events not sent by the job's runner"), "{}", human.stdout());

    let logs = project.runway(&args(&ns.flags(), &["job", "logs", &id])).await;
    logs.assert_code(0);
    assert!(logs.stdout().contains("done-for-real") && !logs.stdout().contains("FORGED"), "{}", logs.stdout());
    assert!(logs.stderr.contains("ignored 4 events not sent by the job's runner"), "{}", logs.stderr);
    ns.cleanup().await;
}

#[tokio::test]
async fn a_job_published_three_more_times_before_during_and_after_its_run_runs_once() {
    use runway_broker::protocol::{Command, Job};
    let ns = Namespace::new().await;
    let mut worker = ns.worker("w-copies", &["--concurrency", "4"]).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let (runs, gate) = (dir.path().join("runs"), dir.path().join("open"));
    let script = format!("echo run >> {}; while [ ! -f {} ]; do sleep 0.05; done", runs.display(), gate.display());
    let job = Job::new("once", "copies", Command::Shell(script), "tester");
    // Before: two copies queued at once, for a runner with free slots for both.
    ns.topology.publish_job(ns.conn(), &job).await.expect("publish the job");
    ns.topology.publish_job(ns.conn(), &job).await.expect("publish a copy before it ran");
    let id = job.id.to_string();
    ns.read_history(|event| event["job"] == id.as_str() && event["body"]["kind"] == "started").await;
    // During.
    ns.topology.publish_job(ns.conn(), &job).await.expect("publish a copy while it runs");
    worker.wait_for_log_lines("dropping a copy of a job this runner took already", 2).await;
    std::fs::write(&gate, b"").expect("open the gate");
    let events = ns.completed_events(&id).await;
    assert_eq!(events.last().map(|e| e["body"]["data"]["status"].clone()), Some("success".into()), "{events:?}");
    // After.
    ns.topology.publish_job(ns.conn(), &job).await.expect("publish a copy after it finished");
    worker.wait_for_log_lines("dropping a copy of a job this runner took already", 3).await;
    let ran = std::fs::read_to_string(&runs).expect("the job ran");
    assert_eq!(ran.lines().count(), 1, "the job ran {} times", ran.lines().count());
    let accepted = events.iter().filter(|event| event["body"]["kind"] == "accepted").count();
    assert_eq!(accepted, 1, "one attempt was accepted: {events:?}");
    ns.cleanup().await;
}

#[tokio::test]
async fn a_copy_of_a_running_job_that_reaches_another_runner_is_dropped_there() {
    use runway_broker::protocol::{Command, Job};
    let ns = Namespace::new().await;
    let first = ns.worker("w-claim-1", &[]).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let (runs, gate) = (dir.path().join("runs"), dir.path().join("open"));
    let script = format!("echo run >> {}; while [ ! -f {} ]; do sleep 0.05; done", runs.display(), gate.display());
    let job = Job::new("once", "copies", Command::Shell(script), "tester");
    ns.topology.publish_job(ns.conn(), &job).await.expect("publish the job");
    let id = job.id.to_string();
    ns.read_history(|event| event["job"] == id.as_str() && event["body"]["kind"] == "started").await;
    // The first runner is full (one slot) and consumes no shared queue: the copy goes to the second.
    let mut second = ns.worker("w-claim-2", &[]).await;
    ns.topology.publish_job(ns.conn(), &job).await.expect("publish a copy");
    second.wait_for_log("dropping a copy of a job another runner has claimed").await;
    std::fs::write(&gate, b"").expect("open the gate");
    let events = ns.completed_events(&id).await;
    assert_eq!(events.last().map(|e| e["body"]["data"]["status"].clone()), Some("success".into()), "{events:?}");
    let ran = std::fs::read_to_string(&runs).expect("the job ran");
    assert_eq!(ran.lines().count(), 1, "the job ran {} times", ran.lines().count());
    assert!(!first.log().contains("dropping a copy"), "{}", first.log());
    ns.cleanup().await;
}

/// `runway-worker --at-most-once runner` does not check who accepted an attempt first: a copy of
/// a running job that reaches another runner runs there too, as its help and docs/SECURITY.md say. (The
/// default, `cluster`, drops it: the test above.)
#[tokio::test]
async fn with_at_most_once_runner_a_copy_that_reaches_another_runner_runs_there_too() {
    use runway_broker::protocol::{Command, Job};
    let ns = Namespace::new().await;
    let first = ns.worker("w-local-1", &["--at-most-once", "runner"]).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let (runs, gate) = (dir.path().join("runs"), dir.path().join("open"));
    let script = format!("echo run >> {}; while [ ! -f {} ]; do sleep 0.05; done", runs.display(), gate.display());
    let job = Job::new("once", "copies", Command::Shell(script), "tester");
    ns.topology.publish_job(ns.conn(), &job).await.expect("publish the job");
    let id = job.id.to_string();
    ns.read_history(|event| event["job"] == id.as_str() && event["body"]["kind"] == "started").await;
    let second = ns.worker("w-local-2", &["--at-most-once", "runner"]).await;
    ns.topology.publish_job(ns.conn(), &job).await.expect("publish a copy");
    // Both copies run (each waits at the gate): two `started` from two runners.
    let mut starters = std::collections::BTreeSet::new();
    ns.read_history(|event| {
        if event["job"] == id.as_str() && event["body"]["kind"] == "started" {
            starters.insert(event["runner"].as_str().unwrap_or_default().to_owned());
        }
        starters.len() == 2
    })
    .await;
    std::fs::write(&gate, b"").expect("open the gate");
    ns.completed_events(&id).await;
    assert!(first.log().contains("--at-most-once runner"), "the worker warns at start: {}", first.log());
    drop(second);
    ns.cleanup().await;
}

/// A copy a producer published again (`Topology::publish_job_again`, marked `x-runway-copy`)
/// is checked against the history, as a redelivery is: a copy of a job that completed is
/// dropped before it is accepted, even by a runner that does not check who accepted an attempt
/// first (`--at-most-once runner`).
#[tokio::test]
async fn a_copy_published_again_of_a_job_that_completed_is_dropped_without_a_claim() {
    use runway_broker::protocol::{Command, Job};
    let ns = Namespace::new().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let runs = dir.path().join("runs");
    let job = Job::new("once", "copies", Command::Shell(format!("echo run >> {}", runs.display())), "tester");
    let id = job.id.to_string();
    let first = ns.worker("w-copy-1", &["--at-most-once", "runner"]).await;
    ns.topology.publish_job(ns.conn(), &job).await.expect("publish the job");
    ns.completed_events(&id).await;
    drop(first);
    let mut second = ns.worker("w-copy-2", &["--at-most-once", "runner"]).await;
    ns.topology.publish_job_again(ns.conn(), &job).await.expect("publish it again");
    second.wait_for_log("dropping a redelivered job").await;
    let ran = std::fs::read_to_string(&runs).expect("the job ran");
    assert_eq!(ran.lines().count(), 1, "the job ran {} times", ran.lines().count());
    ns.cleanup().await;
}

/// Two copies of one job message reach two idle runners at once: both accept the attempt, the
/// index orders their `accepted`, and only the runner whose `accepted` came first runs it; the
/// other drops its copy. The history believes the same runner.
#[tokio::test]
async fn two_copies_taken_at_once_by_two_runners_run_once() {
    use runway_broker::protocol::{Command, Job};
    let ns = Namespace::new().await;
    let first = ns.worker("w-race-1", &[]).await;
    let second = ns.worker("w-race-2", &[]).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let (runs, gate) = (dir.path().join("runs"), dir.path().join("open"));
    let script = format!("echo run >> {}; while [ ! -f {} ]; do sleep 0.05; done", runs.display(), gate.display());
    let job = Job::new("once", "copies", Command::Shell(script), "tester");
    let id = job.id.to_string();
    let (a, b) = tokio::join!(ns.topology.publish_job(ns.conn(), &job), ns.topology.publish_job(ns.conn(), &job));
    a.expect("publish the job");
    b.expect("publish its copy");
    let mut accepted = std::collections::BTreeSet::new();
    ns.read_history(|event| {
        if event["job"] == id.as_str() && event["body"]["kind"] == "accepted" {
            accepted.insert(event["runner"].as_str().unwrap_or_default().to_owned());
        }
        accepted.len() == 2
    })
    .await;
    let dropped = |log: &str| log.contains("dropping a copy of a job another runner has claimed");
    let (mut first, mut second) = (first, second);
    tokio::select! {
        () = first.wait_for_log("dropping a copy of a job another runner has claimed") => {}
        () = second.wait_for_log("dropping a copy of a job another runner has claimed") => {}
    }
    std::fs::write(&gate, b"").expect("open the gate");
    let events = ns.completed_events(&id).await;
    assert_eq!(events.last().map(|e| e["body"]["data"]["status"].clone()), Some("success".into()), "{events:?}");
    let ran = std::fs::read_to_string(&runs).expect("the job ran");
    assert_eq!(ran.lines().count(), 1, "the job ran {} times", ran.lines().count());
    assert!(dropped(&first.log()) != dropped(&second.log()), "exactly one runner dropped its copy");
    // The runner that ran it is the one whose `accepted` came first, and the one that completed.
    let opener = events.iter().find(|e| e["body"]["kind"] == "accepted").map(|e| e["runner"].clone());
    let completer = events.iter().find(|e| e["body"]["kind"] == "completed").map(|e| e["runner"].clone());
    assert_eq!(opener, completer, "{events:?}");
    ns.cleanup().await;
}
