//! Automatic retries: an attempt that ends in what the operation's `retry` names is queued
//! again as the next attempt (same job id) after its delay, and followers follow it.

use crate::support::{Namespace, Project, args};

/// Fails (exit 1) until its third run, counting runs in `count`.
const FLAKY: &str = "n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; echo run $n; [ $n -ge 3 ]";

fn flaky_project(retry: &str) -> Project {
    Project::new(&format!("[operations.flaky]\nrun = {FLAKY:?}\nretry = {retry}\n"))
}

fn runs(project: &Project) -> u32 {
    std::fs::read_to_string(project.path().join("count")).map_or(0, |text| text.trim().parse().expect("a count"))
}

#[tokio::test]
async fn a_job_failing_twice_then_succeeding_on_attempt_3_ends_the_attached_cli_with_0() {
    let ns = Namespace::new().await;
    let _worker = ns.worker("w-retry", &[]).await;
    let project = flaky_project(r#"{ attempts = 3, delay = "1s" }"#);
    let run = project.runway(&args(&ns.flags(), &["run", "flaky", "--remote"])).await;
    run.assert_code(0);
    assert!(run.stderr.contains("attempt 1 failed (exit 1); retrying in 1s as attempt 2"), "{}", run.stderr);
    assert!(run.stderr.contains("attempt 2 failed (exit 1); retrying in 1s as attempt 3"), "{}", run.stderr);
    assert!(run.stderr.contains("flaky succeeded"), "{}", run.stderr);
    assert_eq!(runs(&project), 3);
    assert_eq!(run.stdout(), "run 1\nrun 2\nrun 3\n", "the output of every attempt, in order");
    // One job, three attempts in its history, each a runner's, the first two queued again.
    let id = run.stderr.split("as job ").nth(1).and_then(|rest| rest.split_whitespace().next()).expect("job id");
    let (mut completions, mut accepted) = (Vec::new(), Vec::new());
    ns.read_history(|event| {
        if event["job"] == id && event["body"]["kind"] == "completed" {
            completions.push(event.clone());
        }
        if event["job"] == id && event["body"]["kind"] == "accepted" {
            accepted.push(event.clone());
        }
        completions.len() == 3
    })
    .await;
    let attempts: Vec<u64> = completions.iter().map(|event| event["attempt"].as_u64().expect("attempt")).collect();
    assert_eq!(attempts, [1, 2, 3]);
    for (event, next) in completions.iter().zip([Some(2), Some(3), None]) {
        assert_eq!(event["body"]["data"]["retrying"]["attempt"].as_u64(), next, "{event}");
    }
    // Each next attempt waited the retry delay, and was taken no sooner than it was due.
    for (ended, taken) in completions.iter().zip(&accepted[1..]) {
        let due = ended["body"]["data"]["retrying"]["at_ms"].as_u64().expect("at_ms");
        assert_eq!(ended["body"]["data"]["retrying"]["delay_ms"], 1000, "{ended}");
        assert!(taken["ts"].as_u64().expect("ts") >= due, "taken before its time: {taken} (due {due})");
    }
    // `job logs --follow` follows every attempt too, says why, and exits with the last one's code.
    let logs = project.runway(&args(&ns.flags(), &["job", "logs", "--follow", id])).await;
    logs.assert_code(0);
    assert_eq!(logs.stdout(), "run 1\nrun 2\nrun 3\n");
    assert!(logs.stderr.contains("runway: attempt 1 failed (exit 1); retrying in 1s as attempt 2"), "{}", logs.stderr);
    let list = project.runway(&args(&ns.flags(), &["job", "list"])).await;
    list.assert_code(0);
    let line = list.list_line(id);
    assert!(line.contains(" success ") && line.contains(" 3/3 "), "{line}");
    ns.cleanup().await;
}

#[tokio::test]
async fn retries_run_in_local_mode_too() {
    let project = flaky_project("{ attempts = 3 }");
    let run = project.runway(&["run", "flaky"]).await;
    run.assert_code(0);
    assert!(run.stderr.contains("attempt 2 failed (exit 1); retrying now as attempt 3"), "{}", run.stderr);
    assert_eq!(runs(&project), 3);
}

#[tokio::test]
async fn the_last_attempt_decides_the_exit_code_and_exit_codes_limit_what_is_retried() {
    let ns = Namespace::new().await;
    let _worker = ns.worker("w-retry-codes", &[]).await;
    let project = Project::new(
        "[operations.always]\nrun = \"echo x >> runs; exit 75\"\nretry = { attempts = 2, exit_codes = [75] }\n\n\
         [operations.other]\nrun = \"echo x >> runs-other; exit 1\"\nretry = { attempts = 3, exit_codes = [75] }\n",
    );
    let run = project.runway(&args(&ns.flags(), &["run", "always", "--remote"])).await;
    run.assert_code(75);
    assert!(run.stderr.contains("attempt 1 failed (exit 75); retrying now as attempt 2"), "{}", run.stderr);
    assert!(!run.stderr.contains("as attempt 3"), "two attempts in all: {}", run.stderr);
    assert_eq!(std::fs::read_to_string(project.path().join("runs")).expect("runs").lines().count(), 2);
    let other = project.runway(&args(&ns.flags(), &["run", "other", "--remote"])).await;
    other.assert_code(1);
    assert!(!other.stderr.contains("retrying"), "exit 1 is not in exit_codes: {}", other.stderr);
    assert_eq!(std::fs::read_to_string(project.path().join("runs-other")).expect("runs").lines().count(), 1);
    ns.cleanup().await;
}

#[tokio::test]
async fn job_cancel_stops_the_retries_of_a_job_waiting_for_its_next_attempt() {
    let ns = Namespace::new().await;
    let _worker = ns.worker("w-retry-cancel", &[]).await;
    let project = Project::new(
        "[operations.failing]\nrun = \"echo x >> runs; exit 1\"\nretry = { attempts = 5, delay = \"3s\" }\n",
    );
    let run = project.runway(&args(&ns.flags(), &["run", "failing", "--remote", "--detach"])).await;
    run.assert_code(0);
    let id = run.stdout().trim().to_owned();
    // Attempt 1 failed and attempt 2 waits for its time.
    ns.read_history(|event| event["job"] == id && event["body"]["kind"] == "completed").await;
    let list = project.runway(&args(&ns.flags(), &["job", "list"])).await;
    assert!(list.stdout().contains("scheduled"), "waiting for its next attempt:\n{}", list.stdout());
    project.runway(&args(&ns.flags(), &["job", "cancel", &id])).await.assert_code(0);
    // The runner that receives attempt 2 finds it cancelled and never runs it.
    let mut second = None;
    ns.read_history(|event| {
        if event["job"] == id && event["body"]["kind"] == "completed" && event["attempt"] == 2 {
            second = Some(event.clone());
        }
        second.is_some()
    })
    .await;
    let second = second.expect("attempt 2 completed");
    assert_eq!(second["body"]["data"]["status"], "cancelled", "{second}");
    assert!(second["body"]["data"].get("retrying").is_none(), "no attempt 3: {second}");
    assert_eq!(std::fs::read_to_string(project.path().join("runs")).expect("runs").lines().count(), 1);
    let inspect = project.runway(&args(&ns.flags(), &["job", "inspect", &id])).await;
    assert!(inspect.stdout().contains("state      cancelled"), "{}", inspect.stdout());
    ns.cleanup().await;
}

#[tokio::test]
async fn bad_retry_values_are_errors_naming_the_key() {
    for (retry, says) in [
        ("{ attempts = 0 }", "`retry.attempts` is 0"),
        (r#"{ on = ["success"] }"#, "unknown status `success` in `retry.on`"),
        (r#"{ delay = "soon" }"#, "invalid duration `soon` for `retry.delay`"),
        ("{ exit_codes = [300] }", "exit code 300 in `retry.exit_codes`"),
        ("{ tries = 3 }", "unknown key `tries` in [operations.x], expected one of `attempts`"),
    ] {
        let project = Project::new(&format!("[operations.x]\nrun = \"true\"\nretry = {retry}\n"));
        let run = project.runway(&["run", "x"]).await;
        run.assert_code(65);
        assert!(run.stderr.contains(says), "{retry}: {}", run.stderr);
        assert!(run.stderr.contains("runway.toml:3:"), "{retry}: {}", run.stderr);
    }
}

#[tokio::test]
async fn a_lost_attempt_is_queued_again_after_the_delay_and_the_attached_cli_follows_it() {
    let ns = Namespace::new().await;
    let gates = tempfile::tempdir().expect("temp dir");
    let run = format!(
        "echo attempt=$RUNWAY_ATTEMPT; while [ ! -e {}/gate-$RUNWAY_ATTEMPT ]; do sleep 0.02; done",
        gates.path().display()
    );
    let project =
        Project::new(&format!("[operations.deploy]\nrun = {run:?}\nretry = {{ on = [\"lost\"], delay = \"1s\" }}\n"));
    let doomed = ns.worker("w-doomed-retry", &[]).await;
    let mut attached = project.spawn_runway(&args(&ns.flags(), &["deploy", "--remote"]));
    let queued = attached.stderr_line_containing("as job ").await;
    let id = queued.rsplit(' ').next().expect("job id").to_owned();
    let mut first_pid = 0;
    ns.read_history(|event| {
        if event["job"] == id.as_str() && event["body"]["kind"] == "started" {
            first_pid = event["body"]["data"]["pid"].as_i64().expect("pid") as i32;
            return true;
        }
        false
    })
    .await;
    let _survivor = ns.worker("w-survivor-retry", &[]).await;
    doomed.signal(nix::sys::signal::Signal::SIGKILL);
    std::fs::write(gates.path().join("gate-2"), "").expect("open the second attempt's gate");
    let line = attached.stderr_line_containing("retrying").await;
    assert!(line.contains("attempt 1 was lost: runner w-doomed-retry went silent"), "{line}");
    assert!(line.ends_with("; retrying in 1s as attempt 2"), "{line}");
    let done = attached.finish().await;
    done.assert_code(0);
    assert!(done.stdout().contains("attempt=2"), "{}", done.stdout());
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(first_pid), nix::sys::signal::Signal::SIGKILL);
    ns.cleanup().await;
}

#[tokio::test]
async fn a_timed_out_attempt_is_retried() {
    let ns = Namespace::new().await;
    let _worker = ns.worker("w-retry-timeout", &[]).await;
    let run = "n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; [ $n -ge 2 ] || sleep 30";
    let project = Project::new(&format!(
        "[operations.slow]\nrun = {run:?}\ntimeout = \"500ms\"\nkill_grace = \"0s\"\nretry = {{ on = [\"timed_out\"] }}\n"
    ));
    let done = project.runway(&args(&ns.flags(), &["run", "slow", "--remote"])).await;
    done.assert_code(0);
    assert!(done.stderr.contains("attempt 1 timed out; retrying now as attempt 2"), "{}", done.stderr);
    ns.cleanup().await;
}
