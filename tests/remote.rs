//! RabbitMQ as the server: CLI-runner mode, remote runners (`runway-worker`), targeting,
//! `--detach`, and the errors that must come at once rather than as a hang.

use std::collections::{BTreeMap, HashSet};

use runway_broker::protocol::Target;

use crate::support::{Namespace, Project, args, op};

#[tokio::test]
async fn cli_runner_mode_runs_the_job_inside_the_cli_and_its_queue_goes_with_it() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    let project = Project::new(&op(
        "build",
        "echo hello; echo oops >&2; echo \"$RUNWAY_RUNNER_ID\"; echo artifact=app.tar >> \"$RUNWAY_OUTPUT\"; exit 5",
    ));
    let run = project.runway(&args(&flags, &["build"])).await;
    run.assert_code(5);
    let stdout = run.stdout();
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("hello"));
    let runner = lines.next().expect("runner id line");
    assert!(runner.starts_with("cli-"), "the CLI's own runner ran it: {runner}");
    assert!(run.stderr.contains("oops"), "{}", run.stderr);
    assert!(run.stderr.contains("output artifact=app.tar"), "{}", run.stderr);
    let queue = ns.topology.job_queue(&Target::Runner(runner.to_owned()));
    assert_eq!(
        ns.conn().queue_info(&queue).await.expect("queue info"),
        None,
        "the in-process runner's queue outlived the CLI"
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn remote_jobs_from_several_clis_complete_exactly_once_across_two_workers() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    let _a = ns.worker("w-a", &["--concurrency", "2"]).await;
    let _b = ns.worker("w-b", &["--concurrency", "2"]).await;
    // Each job holds its slot until a few of its siblings run, so both workers must take some.
    let project = Project::new(&op("job", "sleep 0.2; echo ran"));
    let mut queued = Vec::new();
    let mut clis = tokio::task::JoinSet::new();
    for batch in 0..4 {
        let flags = flags.clone();
        let dir = project.path().to_path_buf();
        clis.spawn(async move {
            let project = Project::at(dir);
            let mut ids = Vec::new();
            for _ in 0..5 {
                let run = project.runway(&args(&flags, &["run", "job", "--detach"])).await;
                run.assert_code(0);
                ids.push(run.stdout().trim().to_owned());
            }
            (batch, ids)
        });
    }
    while let Some(result) = clis.join_next().await {
        queued.extend(result.expect("cli task").1);
    }
    assert_eq!(queued.len(), 20);
    assert_eq!(queued.iter().collect::<HashSet<_>>().len(), 20, "every --detach printed its own job id");
    let wanted: HashSet<String> = queued.iter().cloned().collect();
    let mut completions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    ns.read_history(|event| {
        let job = event["job"].as_str().unwrap_or_default().to_owned();
        if wanted.contains(&job) && event["body"]["kind"] == "completed" {
            assert_eq!(event["body"]["data"]["status"], "success", "{event}");
            completions.entry(job).or_default().push(event["runner"].as_str().unwrap_or_default().to_owned());
        }
        completions.len() == 20
    })
    .await;
    assert!(completions.values().all(|runners| runners.len() == 1), "a job completed twice: {completions:?}");
    let runners: HashSet<&String> = completions.values().flatten().collect();
    assert_eq!(runners.len(), 2, "both workers took jobs: {runners:?}");
    ns.cleanup().await;
}

#[tokio::test]
async fn targeting_reaches_only_the_runner_or_labels_asked_for() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    let _plain = ns.worker("w-plain", &[]).await;
    let _prod = ns.worker("w-prod", &["--label", "env=prod", "--label", "region=eu"]).await;
    let project = Project::new(&op("who", "echo \"$RUNWAY_RUNNER_ID\""));
    for _ in 0..3 {
        let run = project.runway(&args(&flags, &["--quiet", "run", "who", "--runner", "w-plain"])).await;
        run.assert_code(0);
        assert_eq!(run.stdout().trim(), "w-plain");
    }
    for labels in
        [&["--label", "env=prod"][..], &["--label", "region=eu"], &["--label", "env=prod", "--label", "region=eu"]]
    {
        let mut rest = vec!["--quiet", "run", "who"];
        rest.extend_from_slice(labels);
        let run = project.runway(&args(&flags, &rest)).await;
        run.assert_code(0);
        assert_eq!(run.stdout().trim(), "w-prod", "labels {labels:?}");
    }
    // The labelled worker also takes jobs for any runner (the empty label set).
    let prod_only = ns.worker("w-prod2", &["--label", "env=prod", "--label", "region=eu"]).await;
    drop(_plain);
    let run = project.runway(&args(&flags, &["--quiet", "run", "who", "--remote"])).await;
    run.assert_code(0);
    assert!(run.stdout().trim().starts_with("w-prod"), "{}", run.stdout());
    drop(prod_only);
    ns.cleanup().await;
}

/// A busy runner hoards no job that another could take: while w-busy (concurrency 1) runs a job
/// from its own queue, every job for any runner goes to the idle w-idle; once w-busy is free
/// again (and w-idle gone), it takes them again.
#[tokio::test]
async fn a_busy_worker_leaves_shared_jobs_to_an_idle_one() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    let _busy = ns.worker("w-busy", &["--concurrency", "1"]).await;
    let idle = ns.worker("w-idle", &["--concurrency", "1"]).await;
    let gate = tempfile::tempdir().expect("temp dir");
    let gate_file = gate.path().join("open");
    let hold = format!("while [ ! -e {} ]; do sleep 0.05; done", gate_file.display());
    let project = Project::new(&(op("hold", &hold) + &op("who", "echo \"$RUNWAY_RUNNER_ID\"")));
    let mut holding = project.spawn_runway(&args(&flags, &["run", "hold", "--runner", "w-busy"]));
    holding.stderr_line_containing("started").await;
    let mut jobs = Vec::new();
    for _ in 0..4 {
        let run = project.runway(&args(&flags, &["--quiet", "run", "who", "--remote", "--detach"])).await;
        run.assert_code(0);
        jobs.push(run.stdout().trim().to_owned());
    }
    // All four complete while w-busy still holds its job: none waits behind it.
    for job in &jobs {
        let events = ns.completed_events(job).await;
        let completed = events.last().expect("events");
        assert_eq!(completed["body"]["data"]["status"], "success", "job {job}: {completed}");
        assert_eq!(completed["runner"], "w-idle", "job {job} ran on the busy worker");
    }
    // With the idle worker gone, a job for any runner waits, and the CLI says why.
    drop(idle);
    let mut waiting = project.spawn_runway(&args(&flags, &["run", "who", "--remote"]));
    let line = waiting.stderr_line_containing("still waiting").await;
    assert!(line.contains("1 runner serves it and it is busy (1 of 1 slots in use)"), "{line}");
    // Free again, the busy worker takes it.
    std::fs::write(&gate_file, "").expect("open the gate");
    holding.finish().await.assert_code(0);
    let run = waiting.finish().await;
    run.assert_code(0);
    assert_eq!(run.stdout().trim(), "w-busy", "a worker that is free again takes shared jobs");
    ns.cleanup().await;
}

#[tokio::test]
async fn a_target_no_runner_serves_fails_at_once() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    let project = Project::new(&op("deploy", "echo never"));
    let run = project.runway(&args(&flags, &["run", "deploy", "--runner", "nosuch"])).await;
    run.assert_code(68);
    assert!(run.stderr.contains("no runner serves runner `nosuch`"), "{}", run.stderr);
    let run = project.runway(&args(&flags, &["run", "deploy", "--label", "env=nosuch"])).await;
    run.assert_code(68);
    assert!(run.stderr.contains("env"), "{}", run.stderr);
    ns.cleanup().await;
}

#[tokio::test]
async fn a_job_for_a_stopped_worker_says_it_waits_with_no_consumers() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    let mut worker = ns.worker("w-gone", &[]).await;
    worker.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(worker.exit_code().await, Some(0), "a drained worker exits 0");
    let project = Project::new(&op("deploy", "echo late"));
    let mut cli = project.spawn_runway(&args(&flags, &["run", "deploy", "--runner", "w-gone"]));
    let line = cli.stderr_line_containing("still waiting").await;
    assert!(line.contains("which no runner consumes now: no runner that serves it is up"), "{line}");
    assert!(line.contains(&format!("{}.runner.w-gone", ns.name)), "{line}");
    // Once a worker with that id comes back, the job runs.
    let _back = ns.worker("w-gone", &[]).await;
    let run = cli.finish().await;
    run.assert_code(0);
    assert_eq!(run.stdout(), "late\n");
    ns.cleanup().await;
}

#[tokio::test]
async fn detach_returns_before_the_job_ends_and_the_job_completes_after() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    let _worker = ns.worker("w-1", &[]).await;
    let gate = tempfile::tempdir().expect("temp dir");
    let gate_file = gate.path().join("open");
    let script = format!("while [ ! -e {} ]; do sleep 0.05; done; echo through", gate_file.display());
    let project = Project::new(&op("deploy", &script));
    let run = project.runway(&args(&flags, &["deploy", "--detach"])).await;
    run.assert_code(0);
    let job = run.stdout().trim().to_owned();
    uuid::Uuid::parse_str(&job).expect("--detach prints the job id");
    // The job cannot have finished: its gate is still closed.
    std::fs::write(&gate_file, "").expect("open the gate");
    let events = ns.completed_events(&job).await;
    let completed = events.last().expect("events");
    assert_eq!(completed["body"]["data"]["status"], "success");
    let logged: Vec<&str> = events
        .iter()
        .filter(|event| event["body"]["kind"] == "log")
        .flat_map(|event| event["body"]["data"]["lines"].as_array().expect("lines"))
        .map(|line| line["l"].as_str().expect("text"))
        .collect();
    assert_eq!(logged, ["through"]);
    ns.cleanup().await;
}

#[tokio::test]
async fn killing_the_cli_leaves_a_remote_job_running_to_completion() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    let _worker = ns.worker("w-1", &[]).await;
    let gate = tempfile::tempdir().expect("temp dir");
    let gate_file = gate.path().join("open");
    let script = format!("echo waiting; while [ ! -e {} ]; do sleep 0.05; done; echo finished", gate_file.display());
    let project = Project::new(&op("deploy", &script));
    let mut cli = project.spawn_runway(&args(&flags, &["deploy", "--remote"]));
    let queued = cli.stderr_line_containing("queued deploy as job").await;
    let job = queued.rsplit(' ').next().expect("job id").to_owned();
    cli.stderr_line_containing("started").await;
    cli.kill().await;
    std::fs::write(&gate_file, "").expect("open the gate");
    let events = ns.completed_events(&job).await;
    assert_eq!(events.last().expect("events")["body"]["data"]["status"], "success");
    ns.cleanup().await;
}

#[tokio::test]
async fn an_unreachable_broker_is_a_clear_error_without_the_password() {
    let project = Project::new(&op("build", "true"));
    let run = project.runway(&["--server", "amqp://admin:s3cret@127.0.0.1:1/%2f", "build"]).await;
    run.assert_code(69);
    assert!(run.stderr.contains("127.0.0.1:1"), "{}", run.stderr);
    assert!(!run.stderr.contains("s3cret"), "the password leaked: {}", run.stderr);
}
