//! Roles on the real RabbitMQ: real users with exactly a role's rights run the commands of that
//! role, and a command beyond them fails saying which role it needs.

use crate::support::users::User;
use crate::support::{Namespace, Project, args, op};

#[tokio::test]
async fn a_submitter_runs_a_job_on_a_worker_that_logs_in_as_a_runner() {
    let ns = Namespace::new().await;
    let submitter = User::with_role(&ns.name, "submitter");
    let runner = User::with_role(&ns.name, "runner");
    let _worker = ns.worker_as(&runner.url(), "w-runner", &[]).await;
    let project = Project::new(&op("build", "echo built"));
    let flags = submitter.flags(&ns.name);
    let run = project.runway(&args(&flags, &["run", "build", "--remote"])).await;
    run.assert_code(0);
    assert_eq!(run.stdout().trim(), "built");
    // The history names the verified submitter, not the body's text.
    let inspect = project.runway(&args(&flags, &["job", "list", "--json"])).await;
    inspect.assert_code(0);
    assert!(inspect.stdout().contains(&submitter.name), "{}", inspect.stdout());
    ns.cleanup().await;
}

#[tokio::test]
async fn a_submitter_queues_a_delayed_job_that_a_runner_retries() {
    let ns = Namespace::new().await;
    let submitter = User::with_role(&ns.name, "submitter");
    let runner = User::with_role(&ns.name, "runner");
    let _worker = ns.worker_as(&runner.url(), "w-runner-retry", &[]).await;
    let flaky = "n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; [ $n -ge 2 ]";
    let project =
        Project::new(&format!("[operations.flaky]\nrun = {flaky:?}\nretry = {{ attempts = 2, delay = \"1s\" }}\n"));
    let flags = submitter.flags(&ns.name);
    // The submitter declares the holding queue; the runner queues the next attempt through one.
    let run = project.runway(&args(&flags, &["run", "flaky", "--remote", "--delay", "1s"])).await;
    run.assert_code(0);
    assert!(run.stderr.contains("retrying in 1s as attempt 2"), "{}", run.stderr);
    ns.cleanup().await;
}

#[tokio::test]
async fn an_observer_reads_the_history_and_lists_runners_but_cannot_queue_or_cancel() {
    let ns = Namespace::new().await;
    let observer = User::with_role(&ns.name, "observer");
    let _worker = ns.worker("w-obs", &[]).await;
    let project = Project::new(&op("build", "echo built"));
    let queued = project.runway(&args(&ns.flags(), &["run", "build", "--remote"])).await;
    queued.assert_code(0);
    let flags = observer.flags(&ns.name);
    project.runway(&args(&flags, &["job", "list"])).await.assert_code(0);
    let list = project.runway(&args(&flags, &["job", "list", "--json"])).await;
    let id = list.stdout().lines().next().and_then(|line| {
        let value: serde_json::Value = serde_json::from_str(line).ok()?;
        value["id"].as_str().map(str::to_owned)
    });
    let id = id.expect("the observer sees the job");
    project.runway(&args(&flags, &["job", "inspect", &id])).await.assert_code(0);
    project.runway(&args(&flags, &["job", "logs", &id])).await.assert_code(0);
    let runners = project.runway(&args(&flags, &["runner", "list"])).await;
    runners.assert_code(0);
    assert!(runners.stdout().contains("w-obs"), "{}", runners.stdout());
    // Queueing is beyond an observer: the broker refuses, and the CLI says which role it takes.
    let refused = project.runway(&args(&flags, &["run", "build", "--remote"])).await;
    refused.assert_code(77);
    assert!(refused.stderr.contains("the broker refused"), "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains(&format!("it needs the submitter role (runway roles submitter --user {}", observer.name)),
        "{}",
        refused.stderr
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn only_an_admin_declares_the_topology() {
    let ns = Namespace::new().await;
    // A namespace nobody declared yet.
    let fresh = format!("{}-fresh", ns.name);
    let observer = User::with_role(&fresh, "observer");
    let project = Project::empty();
    let refused = project.runway(&args(&observer.flags(&fresh), &["job", "list"])).await;
    refused.assert_code(77);
    assert!(refused.stderr.contains(&format!("namespace `{fresh}` is not set up")), "{}", refused.stderr);
    assert!(refused.stderr.contains("it needs the admin role"), "{}", refused.stderr);
    let admin = User::with_role(&fresh, "admin");
    project.runway(&args(&admin.flags(&fresh), &["job", "list"])).await.assert_code(0);
    project.runway(&args(&observer.flags(&fresh), &["job", "list"])).await.assert_code(0);
    let topology = runway_broker::topology::Topology::new(&fresh).expect("valid");
    topology.delete_shared(ns.conn()).await.expect("delete the fresh namespace");
    ns.cleanup().await;
}

#[tokio::test]
async fn a_developer_runs_a_job_inside_its_cli_and_a_submitter_is_told_it_needs_the_developer_role() {
    let ns = Namespace::new().await;
    let developer = User::with_role(&ns.name, "developer");
    let submitter = User::with_role(&ns.name, "submitter");
    let project = Project::new(&op("build", "echo built here"));
    let run = project.runway(&args(&developer.flags(&ns.name), &["run", "build"])).await;
    run.assert_code(0);
    assert_eq!(run.stdout().trim(), "built here");
    let refused = project.runway(&args(&submitter.flags(&ns.name), &["run", "build"])).await;
    refused.assert_code(77);
    assert!(
        refused
            .stderr
            .contains(&format!("it needs the developer role (runway roles developer --user {}", submitter.name)),
        "{}",
        refused.stderr
    );
    ns.cleanup().await;
}
