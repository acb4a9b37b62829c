//! The runner policy on the real RabbitMQ: a worker runs only the jobs of the submitters it
//! allows, by the broker-verified `user_id`, and rejects the others saying why.

use crate::support::users::User;
use crate::support::{Namespace, Project, args, op};

#[tokio::test]
async fn a_worker_rejects_the_jobs_of_a_submitter_its_policy_does_not_allow() {
    let ns = Namespace::new().await;
    let alice = User::with_role(&ns.name, "submitter");
    let mallory = User::with_role(&ns.name, "submitter");
    let allow = format!("{}:*/build", alice.name);
    let _worker = ns.worker("w-policy", &["--allow", &allow]).await;
    let project = Project::new(&op("build", "echo built"));
    let run = project.runway(&args(&alice.flags(&ns.name), &["run", "build", "--remote"])).await;
    run.assert_code(0);
    // Mallory's job reaches the same worker and is refused: it never runs.
    let refused = project.runway(&args(&mallory.flags(&ns.name), &["run", "build", "--remote"])).await;
    refused.assert_code(76);
    assert!(!refused.stdout().contains("built"), "{}", refused.stdout());
    assert!(
        refused.stderr.contains(&format!("does not allow user `{}` to run `build`", mallory.name)),
        "{}",
        refused.stderr
    );
    let dead = ns.conn().queue_info(&ns.topology.dead_queue()).await.expect("info").expect("dead queue");
    assert_eq!(dead.messages, 1, "the rejected job is dead-lettered");
    ns.cleanup().await;
}

#[tokio::test]
async fn a_cancel_is_honoured_only_from_the_submitter_and_a_ping_answers_only_a_reply_queue() {
    let ns = Namespace::new().await;
    let alice = User::with_role(&ns.name, "submitter");
    let mallory = User::with_role(&ns.name, "submitter");
    let mut worker = ns.worker("w-cancel", &[]).await;
    let project = Project::new(&op("wait", "sleep 30"));
    let queued = project.runway(&args(&alice.flags(&ns.name), &["run", "wait", "--detach"])).await;
    queued.assert_code(0);
    let id = queued.stdout().trim().to_owned();
    ns.read_history(|event| event["job"] == id.as_str() && event["body"]["kind"] == "started").await;
    // Mallory may publish a cancel (a submitter may cancel its own jobs), but not for this job.
    project.runway(&args(&mallory.flags(&ns.name), &["job", "cancel", &id])).await.assert_code(0);
    worker.wait_for_log("ignoring a cancel from a user who may not cancel this job").await;
    // A ping asking for answers in a job queue is ignored.
    let job_queue = ns.topology.job_queue(&runway_broker::protocol::Target::Runner("w-cancel".to_owned()));
    let ping = runway_broker::protocol::Control {
        v: runway_broker::protocol::VERSION,
        body: runway_broker::protocol::ControlBody::Ping { reply_to: job_queue.clone() },
    };
    ns.topology.publish_control(ns.conn(), &ping).await.expect("publish a ping");
    worker.wait_for_log("ignoring a ping whose reply_to is not a reply queue").await;
    let queue = ns.conn().queue_info(&job_queue).await.expect("info").expect("the runner's queue");
    assert_eq!(queue.messages, 0, "the runner published nothing into a job queue");
    // Alice's own cancel stops it.
    project.runway(&args(&alice.flags(&ns.name), &["job", "cancel", &id])).await.assert_code(0);
    let events = ns.completed_events(&id).await;
    let completed = events.last().expect("completed");
    assert_eq!(completed["body"]["data"]["status"], "cancelled", "{completed}");
    ns.cleanup().await;
}

#[tokio::test]
async fn the_runner_inside_a_cli_rejects_a_job_its_cli_did_not_submit() {
    use runway_broker::protocol::{Command, Job, Target};
    let ns = Namespace::new().await;
    // CLI-runner mode: `up` runs build, deploy and release inside this CLI, one after another,
    // so its runner is there between them (it holds one job at a time: a job published to it
    // while build runs is delivered when build ends).
    let toml = format!("{}\n{}\n{}", op("build", "sleep 2"), op("deploy", "sleep 2"), op("release", "true"));
    let project = Project::new(&toml);
    let mut cli = project.spawn_runway(&args(&ns.flags(), &["up"]));
    let mut runner = String::new();
    ns.read_history(|event| {
        if event["body"]["kind"] == "started" {
            runner = event["runner"].as_str().expect("a runner id").to_owned();
            return true;
        }
        false
    })
    .await;
    assert!(runner.starts_with("cli-"), "{runner}");
    // The same account publishes a job straight to that CLI's runner.
    let forged = Job {
        target: Target::Runner(runner),
        ..Job::new("wait", "p", Command::Shell("echo pwned".to_owned()), "mallory@nowhere")
    };
    ns.topology.publish_job(ns.conn(), &forged).await.expect("publish to the CLI's runner");
    let events = ns.completed_events(&forged.id.to_string()).await;
    let completed = events.last().expect("completed");
    assert_eq!(completed["body"]["data"]["status"], "rejected", "{completed}");
    assert!(!events.iter().any(|event| event["body"]["kind"] == "started"), "the forged job never started");
    cli.kill().await;
    ns.cleanup().await;
}
