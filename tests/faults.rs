//! Faults on the real RabbitMQ: a worker killed mid-job (with and without `retry_on_lost`),
//! poison messages in a job queue, and draining a worker. Each scenario prints one figure line.

use std::collections::BTreeMap;
use std::time::Instant;

use nix::sys::signal::Signal;
use runway_broker::protocol::Target;
use runway_broker::{ConsumeOptions, Message};

use crate::support::{Namespace, Project, args};

/// A job that says which attempt it is, then waits for `gate-<attempt>` in `dir`.
fn attempt_gated(dir: &std::path::Path) -> String {
    format!(
        "echo attempt=$RUNWAY_ATTEMPT; while [ ! -e {}/gate-$RUNWAY_ATTEMPT ]; do sleep 0.02; done; echo finished",
        dir.display()
    )
}

async fn worker_killed_mid_job(retry: bool) {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    let gates = tempfile::tempdir().expect("temp dir");
    let toml = format!("[operations.deploy]\nrun = {:?}\nretry_on_lost = {retry}\n", attempt_gated(gates.path()));
    let project = Project::new(&toml);
    let doomed = ns.worker("w-doomed", &[]).await;
    let run = project.runway(&args(&flags, &["deploy", "--remote", "--detach"])).await;
    run.assert_code(0);
    let job = run.stdout().trim().to_owned();
    // Wait until the doomed worker runs it, then take a second worker up and kill the first.
    let mut first_pid = 0;
    ns.read_history(|event| {
        if event["job"] == job.as_str() && event["body"]["kind"] == "started" {
            first_pid = event["body"]["data"]["pid"].as_i64().expect("pid") as i32;
            return true;
        }
        false
    })
    .await;
    let _survivor = ns.worker("w-survivor", &[]).await;
    let killed_at = Instant::now();
    doomed.signal(Signal::SIGKILL);
    std::fs::write(gates.path().join("gate-2"), "").expect("open the second attempt's gate");
    let events = ns.completed_events(&job).await;
    let mut completions: BTreeMap<u64, serde_json::Value> = BTreeMap::new();
    // Keep reading until the last word: with a retry, attempt 2's completion follows attempt 1's lost.
    if retry {
        ns.read_history(|event| {
            if event["job"] == job.as_str() && event["body"]["kind"] == "completed" {
                completions.insert(event["attempt"].as_u64().expect("attempt"), event["body"]["data"].clone());
            }
            completions.len() == 2
        })
        .await;
        assert_eq!(completions[&1]["status"], "lost", "{completions:?}");
        assert_eq!(completions[&2]["status"], "success", "{completions:?}");
    } else {
        let last = &events.last().expect("events")["body"]["data"];
        assert_eq!(last["status"], "lost", "{last}");
        assert!(last["error"].as_str().expect("error").contains("w-doomed"), "{last}");
    }
    let list = project.runway(&args(&flags, &["job", "inspect", &job, "--json"])).await;
    let record: serde_json::Value = serde_json::from_slice(&list.stdout).expect("json");
    assert_eq!(record["state"], if retry { "success" } else { "lost" });
    println!(
        "figure: worker SIGKILL mid-job, retry_on_lost={retry}: resolved in {:.1}s after the kill",
        killed_at.elapsed().as_secs_f64()
    );
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(first_pid), Signal::SIGKILL);
    ns.cleanup().await;
}

#[tokio::test]
async fn worker_sigkill_mid_job_without_retry_ends_lost() {
    worker_killed_mid_job(false).await;
}

#[tokio::test]
async fn worker_sigkill_mid_job_with_retry_on_lost_runs_it_again() {
    worker_killed_mid_job(true).await;
}

#[tokio::test]
async fn poison_messages_are_dead_lettered_with_their_reason_and_a_valid_job_still_runs() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    let queue = ns.topology.job_queue(&Target::Any);
    let oversized = format!("{{\"v\":1,\"pad\":\"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let poison: Vec<(&str, Vec<u8>)> = vec![
        ("not valid JSON", b"{this is not json".to_vec()),
        ("unsupported protocol version 99", br#"{"v":99,"id":"x"}"#.to_vec()),
        ("invalid job", br#"{"v":1,"operation":"build"}"#.to_vec()),
        ("larger than the bound", oversized.into_bytes()),
    ];
    for (_, body) in &poison {
        let mut message = Message::json(body.clone(), "job");
        message.properties.persistent = true;
        ns.conn().publish_confirmed("", &queue, &message, true).await.expect("publish poison");
    }
    let started = Instant::now();
    let _worker = ns.worker("w-poison", &[]).await;
    let project = Project::new("[operations.ok]\nrun = \"echo healthy\"\n");
    let run = project.runway(&args(&flags, &["--quiet", "run", "ok", "--remote"])).await;
    run.assert_code(0);
    assert_eq!(run.stdout(), "healthy\n");
    let mut dead = ns
        .conn()
        .consume(&ns.topology.dead_queue(), &ConsumeOptions::with_prefetch(10))
        .await
        .expect("consume dead letters");
    let mut reasons = Vec::new();
    for _ in 0..poison.len() {
        let delivery = tokio::time::timeout(crate::support::PATIENCE, dead.next())
            .await
            .expect("a dead letter")
            .expect("consumer open")
            .expect("delivery");
        reasons.push(delivery.properties.header_str("x-runway-reason").expect("a reason header").to_owned());
        delivery.acker.ack().await.expect("ack");
    }
    for ((expected, _), reason) in poison.iter().zip(&reasons) {
        assert!(reason.contains(expected), "reason `{reason}` should say `{expected}`");
    }
    println!(
        "figure: {} poison messages dead-lettered and a valid job run in {:.2}s",
        poison.len(),
        started.elapsed().as_secs_f64()
    );
    drop(dead);
    ns.cleanup().await;
}

#[tokio::test]
async fn drain_lets_the_running_job_finish_and_another_worker_takes_new_jobs() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    let gates = tempfile::tempdir().expect("temp dir");
    let gate = gates.path().join("gate-1");
    let toml = format!(
        "[operations.long]\nrun = {:?}\n[operations.next]\nrun = \"echo $RUNWAY_RUNNER_ID\"\n",
        attempt_gated(gates.path())
    );
    let project = Project::new(&toml);
    let mut draining = ns.worker("w-drain", &[]).await;
    let _other = ns.worker("w-other", &[]).await;
    let mut cli = project.spawn_runway(&args(&flags, &["run", "long", "--runner", "w-drain"]));
    cli.stderr_line_containing("started (pid").await;
    let started = Instant::now();
    draining.signal(Signal::SIGTERM);
    draining.wait_for_log("draining").await;
    // The draining worker takes nothing new: a job for any runner goes to the other one.
    let next = project.runway(&args(&flags, &["--quiet", "run", "next", "--remote"])).await;
    next.assert_code(0);
    assert_eq!(next.stdout().trim(), "w-other");
    std::fs::write(&gate, "").expect("open the gate");
    let run = cli.finish().await;
    run.assert_code(0);
    assert!(run.stdout().contains("finished"), "{}", run.stdout());
    assert_eq!(draining.exit_code().await, Some(0), "a drained worker exits 0: {}", draining.log());
    assert!(draining.log().contains("draining"), "{}", draining.log());
    println!(
        "figure: drain: running job finished and worker exited 0 {:.2}s after SIGTERM",
        started.elapsed().as_secs_f64()
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn a_job_that_keeps_killing_its_runners_is_dead_lettered_after_the_delivery_limit() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    // The job kills the worker that runs it (its shell's parent); retry_on_lost makes every
    // next worker run it again, until RabbitMQ's delivery limit dead-letters it.
    let project = Project::new("[operations.crash]\nrun = \"kill -KILL $PPID\"\nretry_on_lost = true\n");
    let run = project.runway(&args(&flags, &["run", "crash", "--remote", "--detach"])).await;
    run.assert_code(0);
    let job = run.stdout().trim().to_owned();
    let mut dead = ns
        .conn()
        .consume(&ns.topology.dead_queue(), &ConsumeOptions::with_prefetch(10))
        .await
        .expect("consume dead letters");
    let started = Instant::now();
    let mut killed = 0;
    let letter = loop {
        assert!(killed <= 10, "the job was not dead-lettered after {killed} killed workers");
        let mut worker = ns.worker(&format!("w-crash-{killed}"), &[]).await;
        tokio::select! {
            status = worker.child.wait() => {
                assert_eq!(status.expect("wait").code(), None, "the job kills its worker: {}", worker.log());
                killed += 1;
            }
            letter = dead.next() => break letter.expect("consumer open").expect("dead letter"),
        }
    };
    assert_eq!(letter.properties.message_id.as_deref(), Some(job.as_str()), "the dead letter is the job");
    assert_eq!(letter.properties.header_str("x-first-death-reason"), Some("delivery_limit"));
    assert!(killed >= 5, "dead-lettered only after the delivery limit, not after {killed} deliveries");
    letter.acker.ack().await.expect("ack");
    println!(
        "figure: a job that killed {killed} workers was dead-lettered (delivery_limit) after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    drop(dead);
    ns.cleanup().await;
}
