//! Delayed jobs: `--delay` and `--at` queue a job now, for a runner to take at its time, held
//! by the broker (a holding queue whose messages expire into the jobs exchange).

use std::time::{Duration, SystemTime};

use crate::support::{Namespace, Project, args, op};

/// The job's events in the history until its `completed`, by kind.
async fn events_until_completed(ns: &Namespace, id: &str) -> Vec<serde_json::Value> {
    ns.completed_events(id).await
}

fn of_kind<'a>(events: &'a [serde_json::Value], kind: &str) -> &'a serde_json::Value {
    events.iter().find(|event| event["body"]["kind"] == kind).unwrap_or_else(|| panic!("no {kind} in {events:?}"))
}

#[tokio::test]
async fn a_delayed_job_starts_neither_before_its_time_nor_more_than_2s_after() {
    let ns = Namespace::new().await;
    let _worker = ns.worker("w-delay", &[]).await;
    let project = Project::new(&op("job", "echo ran"));
    let run = project.runway(&args(&ns.flags(), &["run", "job", "--remote", "--detach", "--delay", "4s"])).await;
    run.assert_code(0);
    let id = run.stdout().trim().to_owned();
    // Queued (confirmed) now, and listed as scheduled with its time.
    let list = project.runway(&args(&ns.flags(), &["job", "list"])).await;
    let line = list.list_line(&id);
    assert!(line.contains(" scheduled ") && line.contains(" due "), "{line}");
    let inspect = project.runway(&args(&ns.flags(), &["job", "inspect", &id])).await;
    assert!(inspect.stdout().contains("state      scheduled"), "{}", inspect.stdout());
    assert!(inspect.stdout().contains("scheduled  for "), "{}", inspect.stdout());
    let events = events_until_completed(&ns, &id).await;
    let due =
        of_kind(&events, "queued")["body"]["data"]["not_before_ms"].as_u64().expect("the queued record says when");
    let started = of_kind(&events, "started")["ts"].as_u64().expect("ts");
    assert!(started >= due, "started {} ms before its time", due - started);
    assert!(started <= due + 2000, "started {} ms after its time", started - due);
    assert_eq!(of_kind(&events, "completed")["body"]["data"]["status"], "success");
    ns.cleanup().await;
}

#[tokio::test]
async fn a_job_at_a_time_starts_at_that_time() {
    let ns = Namespace::new().await;
    let _worker = ns.worker("w-at", &[]).await;
    let project = Project::new(&op("deploy", "echo deployed"));
    let at = SystemTime::now() + Duration::from_secs(4);
    let at_text = humantime::format_rfc3339_seconds(at).to_string();
    // An operation shortcut takes it too.
    let run = project.runway(&args(&ns.flags(), &["deploy", "--remote", "--detach", "--at", &at_text])).await;
    run.assert_code(0);
    let id = run.stdout().trim().to_owned();
    let events = events_until_completed(&ns, &id).await;
    let due = of_kind(&events, "queued")["body"]["data"]["not_before_ms"].as_u64().expect("not_before_ms");
    assert_eq!(
        due,
        runway_broker::protocol::to_ms(at.duration_since(SystemTime::UNIX_EPOCH).expect("after 1970")) / 1000 * 1000
    );
    let started = of_kind(&events, "started")["ts"].as_u64().expect("ts");
    assert!(started >= due && started <= due + 2000, "started at {started}, due at {due}");
    ns.cleanup().await;
}

#[tokio::test]
async fn a_delayed_job_cancelled_before_its_time_never_runs() {
    let ns = Namespace::new().await;
    let _worker = ns.worker("w-delay-cancel", &[]).await;
    let project = Project::new(&op("job", "touch ran"));
    let run = project.runway(&args(&ns.flags(), &["run", "job", "--remote", "--detach", "--delay", "3s"])).await;
    run.assert_code(0);
    let id = run.stdout().trim().to_owned();
    project.runway(&args(&ns.flags(), &["job", "cancel", &id])).await.assert_code(0);
    let inspect = project.runway(&args(&ns.flags(), &["job", "inspect", &id])).await;
    assert!(inspect.stdout().contains("state      cancelled"), "{}", inspect.stdout());
    // When its time comes, the runner that receives it finds the cancel and records it.
    let events = events_until_completed(&ns, &id).await;
    let completed = of_kind(&events, "completed");
    assert_eq!(completed["body"]["data"]["status"], "cancelled", "{completed}");
    assert!(events.iter().all(|event| event["body"]["kind"] != "started"), "{events:?}");
    assert!(!project.path().join("ran").exists(), "the cancelled job never ran");
    ns.cleanup().await;
}

#[tokio::test]
async fn a_delayed_job_runs_in_local_mode_after_its_delay() {
    let project = Project::new(&op("job", "echo ran"));
    let started = std::time::Instant::now();
    let run = project.runway(&["run", "job", "--delay", "1s"]).await;
    run.assert_code(0);
    assert!(started.elapsed() >= Duration::from_secs(1), "ran after {:?}", started.elapsed());
    assert_eq!(run.stdout(), "ran\n");
    assert!(run.stderr.contains("scheduled for "), "{}", run.stderr);
}

#[tokio::test]
async fn a_time_in_the_past_and_bad_durations_are_usage_errors() {
    let project = Project::new(&op("job", "true"));
    let past = project.runway(&["run", "job", "--at", "2020-01-01T00:00:00Z"]).await;
    past.assert_code(64);
    assert!(past.stderr.contains("--at 2020-01-01T00:00:00Z is in the past"), "{}", past.stderr);
    for (flag, value, says) in [
        ("--delay", "soon", "`soon` is not a duration"),
        ("--delay", "0s", "`0s` is zero"),
        ("--at", "tomorrow", "`tomorrow` is not a time"),
    ] {
        let run = project.runway(&["run", "job", flag, value]).await;
        run.assert_code(64);
        assert!(run.stderr.contains(says), "{flag} {value}: {}", run.stderr);
    }
    let both = project.runway(&["run", "job", "--delay", "1m", "--at", "2030-01-01T00:00:00Z"]).await;
    both.assert_code(64);
    let file = Project::new("[operations.job]\nrun = \"true\"\ndelay = \"later\"\n");
    let run = file.runway(&["run", "job"]).await;
    run.assert_code(65);
    assert!(run.stderr.contains("invalid duration `later` for `delay`"), "{}", run.stderr);
}
