//! `runway-worker --metrics-addr`: the Prometheus metrics, `/healthz` and `/readyz` of a real
//! runner, scraped while it runs real jobs over RabbitMQ, through a broker connection that is
//! cut, and while it drains; a bad address is a usage error.

use nix::sys::signal::Signal;
use runway_broker::Message;
use runway_broker::protocol::Target;

use crate::support::relay::Relay;
use crate::support::scrape::{get, get_until, metrics_addr, scrape, scrape_until};
use crate::support::{Namespace, Project, amqp_url, args, binary};

/// How the worker names the node of `url`: without its login.
fn node_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (_, place) = rest.rsplit_once('@').expect("AMQP_URL has a login");
    format!("{scheme}://{place}")
}

/// A job that prints three lines, says one on stderr, then waits for `gate` to exist.
fn gated(gate: &std::path::Path) -> String {
    format!(
        "echo one; echo two; echo three; echo warn >&2; while [ ! -e {} ]; do sleep 0.02; done; echo done",
        gate.display()
    )
}

#[tokio::test]
async fn metrics_move_with_real_jobs_and_readyz_says_ready_then_draining() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    let gates = tempfile::tempdir().expect("temp dir");
    let toml = format!(
        "[operations.gated]\nrun = {:?}\n[operations.second]\nrun = {:?}\n[operations.broken]\nrun = \"echo oops >&2; exit 3\"\n",
        gated(&gates.path().join("first")),
        gated(&gates.path().join("second")),
    );
    let project = Project::new(&toml);
    let mut worker = ns.worker("w-metrics", &["--concurrency", "2", "--metrics-addr", "127.0.0.1:0"]).await;
    let addr = metrics_addr(&worker);

    // Serving: alive, ready, two free slots, the node in use named without the password.
    assert_eq!(get(&addr, "/healthz").await.status, 200);
    let ready = get(&addr, "/readyz").await;
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready: connected and consuming\n"));
    let idle = scrape(&addr).await;
    assert_eq!(idle.value("runway_slots", &[]), Some(2.0), "{}", idle.text);
    assert_eq!(idle.value("runway_slots_free", &[]), Some(2.0), "{}", idle.text);
    assert_eq!(idle.value("runway_jobs_running", &[]), Some(0.0), "{}", idle.text);
    assert_eq!(idle.value("runway_ready", &[]), Some(1.0), "{}", idle.text);
    assert_eq!(idle.value("runway_broker_node_info", &[("node", &node_of(&amqp_url()))]), Some(1.0), "{}", idle.text);
    assert!(!idle.text.contains("guest@") && !idle.text.contains(":guest"), "no login in the metrics: {}", idle.text);

    // A job running: taken, accepted after a wait, one running, one slot free, its lines counted.
    let run = project.runway(&args(&flags, &["run", "gated", "--remote", "--detach"])).await;
    run.assert_code(0);
    let running = scrape_until(&addr, "the job running and its four lines", |scrape| {
        scrape.value("runway_jobs_running", &[]) == Some(1.0)
            && scrape.value("runway_log_lines_total", &[("stream", "out")]) == Some(3.0)
            && scrape.value("runway_log_lines_total", &[("stream", "err")]) == Some(1.0)
    })
    .await;
    assert_eq!(running.value("runway_jobs_taken_total", &[("operation", "gated")]), Some(1.0), "{}", running.text);
    assert_eq!(running.value("runway_slots_free", &[]), Some(1.0), "{}", running.text);
    assert_eq!(running.value("runway_queue_wait_seconds_count", &[("operation", "gated")]), Some(1.0));
    assert_eq!(running.value("runway_job_duration_seconds_count", &[("operation", "gated")]), None);
    // "one\ntwo\nthree\n" without the newlines, and "warn".
    assert_eq!(running.value("runway_log_bytes_total", &[("stream", "out")]), Some(11.0), "{}", running.text);
    assert_eq!(running.value("runway_log_bytes_total", &[("stream", "err")]), Some(4.0), "{}", running.text);

    // It ends: completed by status, its duration observed, nothing running, every event confirmed.
    std::fs::write(gates.path().join("first"), "").expect("open the gate");
    let ended = scrape_until(&addr, "the job completed and every event confirmed", |scrape| {
        scrape.value("runway_jobs_completed_total", &[("operation", "gated"), ("status", "success")]) == Some(1.0)
            && scrape.value("runway_events_unconfirmed", &[]) == Some(0.0)
    })
    .await;
    assert_eq!(ended.value("runway_jobs_running", &[]), Some(0.0), "{}", ended.text);
    assert_eq!(ended.value("runway_slots_free", &[]), Some(2.0), "{}", ended.text);
    assert_eq!(ended.value("runway_job_duration_seconds_count", &[("operation", "gated")]), Some(1.0));
    assert_eq!(ended.value("runway_log_lines_total", &[("stream", "out")]), Some(4.0), "{}", ended.text);

    // A failing job is counted under its own status.
    let failed = project.runway(&args(&flags, &["--quiet", "run", "broken", "--remote"])).await;
    failed.assert_code(3);
    let counted = scrape_until(&addr, "the failed job", |scrape| {
        scrape.value("runway_jobs_completed_total", &[("operation", "broken"), ("status", "failed")]) == Some(1.0)
    })
    .await;
    assert_eq!(counted.value("runway_jobs_completed_total", &[("status", "success")]), Some(1.0), "{}", counted.text);
    assert_eq!(counted.value("runway_jobs_taken_total", &[]), Some(2.0), "{}", counted.text);

    // A message that is not a job goes to the dead letters, and is counted there.
    let mut poison = Message::json(b"{this is not json".to_vec(), "job");
    poison.properties.persistent = true;
    let queue = ns.topology.job_queue(&Target::Any);
    ns.conn().publish_confirmed("", &queue, &poison, true).await.expect("publish a poison message");
    scrape_until(&addr, "the dead letter", |scrape| {
        scrape.value("runway_dead_letters_total", &[("reason", "invalid")]) == Some(1.0)
    })
    .await;

    // SIGTERM with a job running: alive, but no longer ready, and it says why.
    let run = project.runway(&args(&flags, &["run", "second", "--remote", "--detach"])).await;
    run.assert_code(0);
    scrape_until(&addr, "the second job running", |scrape| scrape.value("runway_jobs_running", &[]) == Some(1.0)).await;
    worker.signal(Signal::SIGTERM);
    let draining = get_until(&addr, "/readyz", "not ready", |answer| answer.status == 503).await;
    assert_eq!(draining.body, "not ready: draining: taking no new jobs\n");
    assert_eq!(get(&addr, "/healthz").await.status, 200);
    assert_eq!(scrape(&addr).await.value("runway_ready", &[]), Some(0.0));
    std::fs::write(gates.path().join("second"), "").expect("open the second gate");
    assert_eq!(worker.exit_code().await, Some(0), "{}", worker.log());
    ns.cleanup().await;
}

#[tokio::test]
async fn readyz_is_503_while_the_broker_connection_is_gone_and_the_reconnect_is_counted() {
    let ns = Namespace::new().await;
    let relay = Relay::start().await;
    let through_relay = relay.url();
    let _worker = ns.worker_as(&through_relay, "w-cut", &["--metrics-addr", "127.0.0.1:0"]).await;
    let addr = metrics_addr(&_worker);
    assert_eq!(get(&addr, "/readyz").await.status, 200);
    let node = node_of(&through_relay);
    let before = scrape(&addr).await;
    assert_eq!(before.value("runway_broker_node_info", &[("node", &node)]), Some(1.0), "{}", before.text);
    assert_eq!(before.value("runway_reconnects_total", &[]), Some(0.0), "{}", before.text);

    relay.set_open(false);
    let cut = get_until(&addr, "/readyz", "not ready", |answer| answer.status == 503).await;
    assert_eq!(cut.body, "not ready: reconnecting: the broker connection was lost\n");
    assert_eq!(get(&addr, "/healthz").await.status, 200, "alive while the broker is away");
    assert_eq!(scrape(&addr).await.value("runway_ready", &[]), Some(0.0));

    relay.set_open(true);
    get_until(&addr, "/readyz", "ready again", |answer| answer.status == 200).await;
    let after = scrape(&addr).await;
    assert_eq!(after.value("runway_reconnects_total", &[]), Some(1.0), "{}", after.text);
    assert_eq!(after.value("runway_broker_node_info", &[("node", &node)]), Some(1.0), "{}", after.text);
    assert_eq!(after.value("runway_ready", &[]), Some(1.0), "{}", after.text);

    // It serves jobs again.
    let project = Project::new("[operations.ok]\nrun = \"echo back\"\n");
    let run = project.runway(&args(&ns.flags(), &["--quiet", "run", "ok", "--remote"])).await;
    run.assert_code(0);
    assert_eq!(run.stdout(), "back\n");
    ns.cleanup().await;
}

/// `runway-worker` with `flags` and a server that is never dialled: its exit code and stderr.
async fn worker_refuses(flags: &[&str]) -> (Option<i32>, String) {
    let output = tokio::process::Command::new(binary("runway-worker"))
        .args(["--server", "amqp://127.0.0.1:1/%2f"])
        .args(flags)
        .output()
        .await
        .expect("run runway-worker");
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test]
async fn a_bad_metrics_address_is_a_usage_error_that_names_the_flag() {
    let (code, stderr) = worker_refuses(&["--metrics-addr", "nowhere"]).await;
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("--metrics-addr") && stderr.contains("expected IP:PORT"), "{stderr}");

    let (code, stderr) = worker_refuses(&["--metrics-addr", "127.0.0.1:70000"]).await;
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("--metrics-addr"), "{stderr}");

    // An address taken already: said before the broker is dialled.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let addr = taken.local_addr().expect("its address").to_string();
    let (code, stderr) = worker_refuses(&["--metrics-addr", &addr]).await;
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains(&format!("--metrics-addr {addr}: cannot listen there")), "{stderr}");

    // The same from the environment.
    let output = tokio::process::Command::new(binary("runway-worker"))
        .args(["--server", "amqp://127.0.0.1:1/%2f"])
        .env("RUNWAY_METRICS_ADDR", &addr)
        .output()
        .await
        .expect("run runway-worker");
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot listen there"));
}

#[tokio::test]
async fn a_job_the_policy_refuses_is_counted_as_a_dead_letter_not_as_taken() {
    let ns = Namespace::new().await;
    let worker = ns.worker("w-strict", &["--allow", "nobody-at-all", "--metrics-addr", "127.0.0.1:0"]).await;
    let addr = metrics_addr(&worker);
    let project = Project::new("[operations.ok]\nrun = \"echo never\"\n");
    let run = project.runway(&args(&ns.flags(), &["--quiet", "run", "ok", "--remote"])).await;
    run.assert_code(76);
    let refused = scrape_until(&addr, "the refused job", |scrape| {
        scrape.value("runway_dead_letters_total", &[("reason", "refused")]) == Some(1.0)
    })
    .await;
    assert_eq!(refused.value("runway_jobs_taken_total", &[]), None, "{}", refused.text);
    assert_eq!(refused.value("runway_dead_letters_total", &[("reason", "invalid")]), None, "{}", refused.text);
    ns.cleanup().await;
}

#[tokio::test]
async fn a_once_worker_that_has_its_job_is_alive_but_not_ready() {
    let ns = Namespace::new().await;
    let gates = tempfile::tempdir().expect("temp dir");
    let gate = gates.path().join("gate");
    let project = Project::new(&format!("[operations.gated]\nrun = {:?}\n", gated(&gate)));
    let mut worker = ns.worker("w-once", &["--once", "--metrics-addr", "127.0.0.1:0"]).await;
    let addr = metrics_addr(&worker);
    assert_eq!(get(&addr, "/readyz").await.status, 200);
    project.runway(&args(&ns.flags(), &["run", "gated", "--remote", "--detach"])).await.assert_code(0);
    let done = get_until(&addr, "/readyz", "not ready", |answer| answer.status == 503).await;
    assert_eq!(done.body, "not ready: took its one job (--once): consuming no more jobs\n");
    assert_eq!(get(&addr, "/healthz").await.status, 200);
    scrape_until(&addr, "its job running", |scrape| scrape.value("runway_jobs_running", &[]) == Some(1.0)).await;
    std::fs::write(&gate, "").expect("open the gate");
    assert_eq!(worker.exit_code().await, Some(0), "{}", worker.log());
    ns.cleanup().await;
}
