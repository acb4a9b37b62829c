//! The daemon driven as a library over the in-memory broker: it serves a job published through
//! the topology's helpers, drains on the first stop request and cancels on the second.
//!
//! Its flags, signals and RabbitMQ are the end-to-end tests' part (tests/).

use std::time::Duration;

use runway_broker::protocol::{self, Command, Completed, Event, EventBody, Job, Status};
use runway_broker::topology::{Retention, Topology};
use runway_broker::{Broker, Connection, ConsumeOptions, Consumer};
use runway_worker::RunnerConfig;
use runway_worker::daemon::{self, DaemonConfig, DaemonError};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long a test waits for something the daemon should do at once.
const PATIENCE: Duration = Duration::from_secs(30);

fn job(command: &str) -> Job {
    Job::new("say", "daemon-test", Command::Shell(command.to_owned()), "daemon-test")
}

/// A daemon serving on its own connection to `broker`, and the sender of its stop requests.
struct Daemon {
    stop: mpsc::Sender<()>,
    task: JoinHandle<Result<(), DaemonError>>,
}

async fn start_daemon(broker: &Broker, topology: &Topology) -> Daemon {
    let conn = broker.connect().await.expect("connect the daemon");
    let mut runner = RunnerConfig::new("daemon-test-runner".to_owned());
    runner.concurrency = 2;
    let config = DaemonConfig { topology: topology.clone(), runner, drain_timeout: Duration::from_secs(600) };
    let (stop, stops) = mpsc::channel(4);
    Daemon { stop, task: tokio::spawn(daemon::run(conn, config, stops)) }
}

/// Declare the topology and bind a queue for `job`'s events before publishing it, as the CLI
/// does, so that no event is missed.
async fn publish(conn: &Connection, topology: &Topology, job: &Job) -> Consumer {
    topology.declare(conn, &Retention::default()).await.expect("declare the topology");
    let queue = topology.declare_job_events_queue(conn, job.id).await.expect("bind the job's events");
    let options = ConsumeOptions { no_ack: true, ..ConsumeOptions::with_prefetch(100) };
    let events = conn.consume(&queue, &options).await.expect("consume the job's events");
    topology.publish_job(conn, job).await.expect("publish the job");
    events
}

/// Read `events` until one matches `wanted`.
async fn until_event(events: &mut Consumer, wanted: impl Fn(&EventBody) -> bool) -> Event {
    loop {
        let delivery = tokio::time::timeout(PATIENCE, events.next())
            .await
            .expect("the daemon published no such event in time")
            .expect("the events queue ended")
            .expect("an event delivery");
        let event: Event = protocol::decode(&delivery.body, "event").expect("decode an event");
        if wanted(&event.body) {
            return event;
        }
    }
}

fn completed(event: Event) -> Completed {
    match event.body {
        EventBody::Completed(completed) => completed,
        other => panic!("not a completed event: {other:?}"),
    }
}

async fn stopped(daemon: Daemon) -> Result<(), DaemonError> {
    tokio::time::timeout(PATIENCE, daemon.task)
        .await
        .expect("the daemon did not stop in time")
        .expect("the daemon task")
}

#[tokio::test]
async fn the_daemon_runs_a_job_and_returns_when_told_to_stop() {
    let broker = Broker::memory();
    let topology = Topology::new("daemon-test").expect("a valid namespace");
    let conn = broker.connect().await.expect("connect");
    let job = job("echo served");
    let mut events = publish(&conn, &topology, &job).await;
    let daemon = start_daemon(&broker, &topology).await;

    let event = until_event(&mut events, |body| matches!(body, EventBody::Completed(_))).await;
    assert_eq!(event.runner, "daemon-test-runner");
    let completed = completed(event);
    assert_eq!((completed.status, completed.exit_code), (Status::Success, Some(0)));

    daemon.stop.send(()).await.expect("the daemon takes stop requests");
    stopped(daemon).await.expect("a drained daemon returns Ok");
}

#[tokio::test]
async fn a_second_stop_request_cancels_the_running_job() {
    let broker = Broker::memory();
    let topology = Topology::new("daemon-test").expect("a valid namespace");
    let conn = broker.connect().await.expect("connect");
    let job = job("sleep 600");
    let mut events = publish(&conn, &topology, &job).await;
    let daemon = start_daemon(&broker, &topology).await;
    until_event(&mut events, |body| matches!(body, EventBody::Started { .. })).await;

    // The first request drains (the job may finish: it will not for ten minutes); the second
    // cancels it.
    daemon.stop.send(()).await.expect("the daemon takes stop requests");
    daemon.stop.send(()).await.expect("the daemon takes stop requests");
    let completed = completed(until_event(&mut events, |body| matches!(body, EventBody::Completed(_))).await);
    assert_eq!(completed.status, Status::Cancelled);
    stopped(daemon).await.expect("a cancelled daemon returns Ok");
}
