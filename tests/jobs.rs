//! Job history and control on the real RabbitMQ: list, inspect, logs (--follow), cancel,
//! Ctrl-C, runner list, and `lost` when a runner dies.

use std::collections::BTreeMap;

use nix::sys::signal::Signal;

use crate::support::{Namespace, Project, args, op};

/// A job script that waits until `gate` exists (so the test decides when it ends).
fn gated(gate: &std::path::Path, before: &str, after: &str) -> String {
    format!("{before}; while [ ! -e {} ]; do sleep 0.02; done; {after}", gate.display())
}

/// Whether any live (not zombie) process is in the process group.
fn group_alive(pgid: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else { return false };
    entries.flatten().any(|entry| {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { return false };
        // After the `(comm)` field: state, ppid, pgrp.
        let Some(rest) = stat.rsplit_once(") ").map(|(_, rest)| rest) else { return false };
        let fields: Vec<&str> = rest.split(' ').collect();
        fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
    })
}

fn pid_from_started(line: &str) -> i32 {
    let rest = line.split("pid ").nth(1).expect("a pid in the started line");
    rest.split(|c: char| !c.is_ascii_digit()).next().expect("digits").parse().expect("pid")
}

#[tokio::test]
async fn logs_follow_from_another_process_prints_every_line_and_exits_with_the_job_code() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    let _worker = ns.worker("w-logs", &[]).await;
    let gate = tempfile::tempdir().expect("temp dir");
    let gate_file = gate.path().join("open");
    let script = gated(&gate_file, "for i in $(seq 1 300); do echo line$i; echo err$i >&2; done", "echo done; exit 3");
    let project = Project::new(&op("deploy", &script));
    let run = project.runway(&args(&flags, &["deploy", "--detach"])).await;
    run.assert_code(0);
    let job = run.stdout().trim().to_owned();
    let follower = project.spawn_runway(&args(&flags, &["job", "logs", &job, "--follow"]));
    std::fs::write(&gate_file, "").expect("open the gate");
    let followed = follower.finish().await;
    followed.assert_code(3);
    let mut expected: String = (1..=300).map(|i| format!("line{i}\n")).collect();
    expected.push_str("done\n");
    assert_eq!(followed.stdout(), expected);
    let errors: Vec<&str> = followed.stderr.lines().filter(|line| line.starts_with("err")).collect();
    assert_eq!(errors, (1..=300).map(|i| format!("err{i}")).collect::<Vec<_>>());
    // After the end, the same log, from the history alone; a prefix of the id is enough.
    let again = project.runway(&args(&flags, &["job", "logs", &job[..13]])).await;
    again.assert_code(0);
    assert_eq!(again.stdout(), expected);
    let stamped = project.runway(&args(&flags, &["job", "logs", &job, "--timestamps"])).await;
    let first = stamped.stdout().lines().next().expect("a line").to_owned();
    assert!(first.ends_with(" line1") && first.starts_with("20"), "{first}");
    ns.cleanup().await;
}

#[tokio::test]
async fn job_list_shows_states_and_filters() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    let _worker = ns.worker("w-list", &[]).await;
    let toml = format!(
        "{}{}{}",
        op("good", "echo fine"),
        op("bad", "exit 2"),
        "[operations.slow]\nrun = \"sleep 30\"\ntimeout = \"200ms\"\n"
    );
    let project = Project::new(&toml);
    project.runway(&args(&flags, &["run", "good", "--remote"])).await.assert_code(0);
    project.runway(&args(&flags, &["run", "bad", "--remote"])).await.assert_code(2);
    project.runway(&args(&flags, &["run", "slow", "--remote"])).await.assert_code(124);
    let list = project.runway(&args(&flags, &["job", "list", "--json"])).await;
    list.assert_code(0);
    let jobs = list.events();
    let states: BTreeMap<String, String> = jobs
        .iter()
        .map(|job| {
            (job["operation"].as_str().expect("op").to_owned(), job["state"].as_str().expect("state").to_owned())
        })
        .collect();
    assert_eq!(states.get("good").map(String::as_str), Some("success"), "{jobs:?}");
    assert_eq!(states.get("bad").map(String::as_str), Some("failed"));
    assert_eq!(states.get("slow").map(String::as_str), Some("timed_out"));
    assert_eq!(jobs.len(), 3);
    assert_eq!(jobs[0]["operation"], "slow", "newest first");
    assert!(jobs.iter().all(|job| job["runner"] == "w-list" && job["attempt"] == 1));
    let failed = project.runway(&args(&flags, &["job", "list", "--state", "failed", "--json"])).await;
    let failed = failed.events();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["operation"], "bad");
    assert_eq!(failed[0]["exit_code"], 2);
    // --since reaches the filter (which jobs it keeps is `list::select`'s unit test in producer).
    let recent = project.runway(&args(&flags, &["job", "list", "--since", "1h", "--json"])).await;
    assert_eq!(recent.events().len(), 3, "{:?}", recent.events());
    // The newest job was queued at least its 200 ms timeout ago.
    let none = project.runway(&args(&flags, &["job", "list", "--since", "100ms", "--json"])).await;
    assert_eq!(none.events().len(), 0, "{:?}", none.events());
    let human = project.runway(&args(&flags, &["job", "list"])).await;
    human.assert_code(0);
    assert!(human.stdout().starts_with("ID"), "{}", human.stdout());
    assert_eq!(human.stdout().lines().count(), 4);
    ns.cleanup().await;
}

#[tokio::test]
async fn job_inspect_shows_outputs_exit_code_runner_and_attempt() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    let _worker = ns.worker("w-inspect", &[]).await;
    let project = Project::new(&op("release", "echo version=2.0 >> \"$RUNWAY_OUTPUT\"; exit 7"));
    let run = project.runway(&args(&flags, &["release", "--runner", "w-inspect", "--env", "TOKEN=hunter2"])).await;
    run.assert_code(7);
    let list = project.runway(&args(&flags, &["job", "list", "--json"])).await;
    let job = list.events()[0]["id"].as_str().expect("id").to_owned();
    let inspect = project.runway(&args(&flags, &["job", "inspect", &job, "--json"])).await;
    inspect.assert_code(0);
    let record: serde_json::Value = serde_json::from_slice(&inspect.stdout).expect("json");
    assert_eq!(record["outputs"]["version"], "2.0");
    assert_eq!(record["exit_code"], 7);
    assert_eq!(record["runner"], "w-inspect");
    assert_eq!(record["attempt"], 1);
    assert_eq!(record["state"], "failed");
    assert_eq!(record["target"]["runner"], "w-inspect");
    assert_eq!(record["env_keys"], serde_json::json!(["TOKEN"]));
    let human = project.runway(&args(&flags, &["job", "inspect", &job[..8]])).await;
    human.assert_code(0);
    assert!(human.stdout().contains("output     version=2.0"), "{}", human.stdout());
    assert!(!human.stdout().contains("hunter2") && !inspect.stdout().contains("hunter2"), "an env value leaked");
    let unknown = project.runway(&args(&flags, &["job", "inspect", "01234567-89ab-7def-8123-456789abcdef"])).await;
    unknown.assert_code(67);
    assert!(unknown.stderr.contains("no job 01234567-89ab-7def-8123-456789abcdef"), "{}", unknown.stderr);
    let short = project.runway(&args(&flags, &["job", "inspect", "0123"])).await;
    short.assert_code(64);
    assert!(short.stderr.contains("at least 6"), "{}", short.stderr);
    ns.cleanup().await;
}

#[tokio::test]
async fn a_job_cancelled_while_queued_never_runs_even_when_a_worker_starts_later() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    let mut worker = ns.worker("w-later", &[]).await;
    worker.signal(Signal::SIGTERM);
    assert_eq!(worker.exit_code().await, Some(0));
    let marks = tempfile::tempdir().expect("temp dir");
    let ran = marks.path().join("ran");
    let project = Project::new(&op("deploy", &format!("touch {}", ran.display())));
    let run = project.runway(&args(&flags, &["deploy", "--runner", "w-later", "--detach"])).await;
    run.assert_code(0);
    let job = run.stdout().trim().to_owned();
    let cancel = project.runway(&args(&flags, &["job", "cancel", &job])).await;
    cancel.assert_code(0);
    assert!(cancel.stderr.contains("will not run"), "{}", cancel.stderr);
    let listed = project.runway(&args(&flags, &["job", "inspect", &job, "--json"])).await;
    let record: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("json");
    assert_eq!(record["state"], "cancelled");
    let _back = ns.worker("w-later", &[]).await;
    let events = ns.completed_events(&job).await;
    let completed = &events.last().expect("events")["body"]["data"];
    assert_eq!(completed["status"], "cancelled", "{completed}");
    assert!(!events.iter().any(|event| event["body"]["kind"] == "started"), "the job started");
    assert!(!ran.exists(), "the cancelled job ran");
    let again = project.runway(&args(&flags, &["job", "cancel", &job])).await;
    again.assert_code(0);
    assert!(again.stderr.contains("already ended cancelled"), "{}", again.stderr);
    ns.cleanup().await;
}

#[tokio::test]
async fn cancelling_running_jobs_terms_then_kills_and_force_kills_at_once() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    let _worker = ns.worker("w-cancel", &["--concurrency", "3", "--kill-grace", "1s"]).await;
    let toml = format!(
        "{}{}",
        op("polite", "echo up; sleep 300"),
        op("stubborn", "trap 'echo got TERM' TERM; echo up; while true; do sleep 0.05; done")
    );
    let project = Project::new(&toml);
    for (operation, force, signal) in [("polite", false, 15), ("stubborn", false, 9), ("stubborn", true, 9)] {
        let mut cli = project.spawn_runway(&args(&flags, &["run", operation, "--remote"]));
        let queued = cli.stderr_line_containing("queued").await;
        let job = queued.rsplit(' ').next().expect("job id").to_owned();
        let started = cli.stderr_line_containing("started (pid").await;
        let pgid = pid_from_started(&started);
        let mut cancel_args = vec!["job", "cancel", job.as_str()];
        if force {
            cancel_args.push("--force");
        }
        project.runway(&args(&flags, &cancel_args)).await.assert_code(0);
        let run = cli.finish().await;
        run.assert_code(130);
        let events = ns.completed_events(&job).await;
        let completed = &events.last().expect("events")["body"]["data"];
        assert_eq!(completed["status"], "cancelled", "{operation}: {completed}");
        assert_eq!(completed["signal"], signal, "{operation} force={force}: {completed}");
        assert!(!group_alive(pgid), "{operation}: the job's process group survived");
    }
    ns.cleanup().await;
}

#[tokio::test]
async fn ctrl_c_on_an_attached_cli_cancels_its_job_and_its_process_group() {
    // Local mode: the runner lives in the CLI.
    let project = Project::new(&op("wait", "echo up; sleep 300"));
    let mut cli = project.spawn_runway(&["run", "wait"]);
    let started = cli.stderr_line_containing("started (pid").await;
    let pgid = pid_from_started(&started);
    assert!(group_alive(pgid));
    cli.signal(Signal::SIGINT);
    let run = cli.finish().await;
    run.assert_code(130);
    assert!(run.stderr.contains("cancelling"), "{}", run.stderr);
    assert!(!group_alive(pgid), "the job's process group survived Ctrl-C");
    // Remote: the same through RabbitMQ.
    let ns = Namespace::new().await;
    let flags = ns.flags();
    let _worker = ns.worker("w-int", &[]).await;
    let mut cli = project.spawn_runway(&args(&flags, &["run", "wait", "--remote"]));
    let started = cli.stderr_line_containing("started (pid").await;
    let pgid = pid_from_started(&started);
    cli.signal(Signal::SIGINT);
    cli.finish().await.assert_code(130);
    assert!(!group_alive(pgid), "the remote job's process group survived Ctrl-C");
    ns.cleanup().await;
}

#[tokio::test]
async fn runner_list_shows_the_workers_with_labels_and_running_jobs() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    let _a = ns.worker("w-a", &["--label", "env=prod", "--concurrency", "2"]).await;
    let _b = ns.worker("w-b", &["--label", "region=eu"]).await;
    let gate = tempfile::tempdir().expect("temp dir");
    let gate_file = gate.path().join("open");
    let project = Project::new(&op("hold", &gated(&gate_file, "echo up", "echo bye")));
    let mut cli = project.spawn_runway(&args(&flags, &["run", "hold", "--runner", "w-a"]));
    cli.stderr_line_containing("started (pid").await;
    let list = project.runway(&args(&flags, &["runner", "list", "--json"])).await;
    list.assert_code(0);
    let runners = list.events();
    let by_id: BTreeMap<&str, &serde_json::Value> =
        runners.iter().map(|runner| (runner["id"].as_str().expect("id"), runner)).collect();
    assert_eq!(by_id.len(), 2, "{runners:?}");
    assert_eq!(by_id["w-a"]["labels"]["env"], "prod");
    assert_eq!(by_id["w-a"]["running"], 1);
    assert_eq!(by_id["w-a"]["concurrency"], 2);
    assert_eq!(by_id["w-b"]["labels"]["region"], "eu");
    assert_eq!(by_id["w-b"]["running"], 0);
    let human = project.runway(&args(&flags, &["runner", "list"])).await;
    assert!(human.stdout().contains("w-a") && human.stdout().contains("env=prod"), "{}", human.stdout());
    std::fs::write(&gate_file, "").expect("open the gate");
    cli.finish().await.assert_code(0);
    ns.cleanup().await;
}

#[tokio::test]
async fn a_worker_killed_mid_job_makes_the_attached_cli_report_lost() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    let worker = ns.worker("w-doomed", &[]).await;
    let project = Project::new(&op("long", "echo up; sleep 300"));
    let mut cli = project.spawn_runway(&args(&flags, &["run", "long", "--runner", "w-doomed"]));
    let started = cli.stderr_line_containing("started (pid").await;
    let pgid = pid_from_started(&started);
    worker.signal(Signal::SIGKILL);
    let run = cli.finish().await;
    run.assert_code(75);
    assert!(run.stderr.contains("lost: runner w-doomed went silent (last heard from "), "{}", run.stderr);
    // The orphaned job is ours to clean up: its runner is gone.
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), Signal::SIGKILL);
    ns.cleanup().await;
}
