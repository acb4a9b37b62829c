//! Odd and hostile input on the real RabbitMQ (issue #11): events from a later version, values
//! no clock can reach, a reader that goes away, ids given short, secrets in the environment,
//! and an attached CLI whose runner is killed while `retry_on_lost` is set.

use std::process::Stdio;

use nix::sys::signal::Signal;
use runway_broker::protocol::{self, Command, Event, EventBody, LogLine, Queued, Stream, Target};
use uuid::Uuid;

use crate::support::{Namespace, Project, args, binary};

/// A `queued` record of job `id`, as the CLI publishes it.
fn queued(id: Uuid, command: Command, created_at_ms: u64) -> Event {
    let body = EventBody::Queued(Queued {
        operation: "frob".to_owned(),
        project: "odd".to_owned(),
        command,
        args: Vec::new(),
        env_keys: Vec::new(),
        target: Target::Any,
        timeout_ms: None,
        retry_on_lost: false,
        queued_by: "someone@elsewhere".to_owned(),
        created_at_ms,
        group: None,
        not_before_ms: None,
        retry: None,
        secrets: Vec::new(),
    });
    Event { v: protocol::VERSION, job: id, seq: 0, ts: protocol::now_ms(), runner: String::new(), attempt: 1, body }
}

async fn publish(ns: &Namespace, event: &Event) {
    let confirm = ns.topology.publish_event(ns.conn(), event).await.expect("publish");
    confirm.wait().await.expect("confirmed");
}

/// The short id `job list` shows: the last 12 hex digits.
fn short(id: Uuid) -> String {
    let digits = id.simple().to_string();
    digits[digits.len() - 12..].to_owned()
}

#[tokio::test]
async fn a_job_with_an_unknown_builtin_or_event_kind_is_listed_and_inspected_not_dropped() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    let project = Project::empty();
    let id = Uuid::now_v7();
    publish(&ns, &queued(id, Command::UnknownBuiltin("frobnicate".to_owned()), protocol::now_ms())).await;
    // An event of a kind from a later version, routed (as that version might) to the index.
    let later = serde_json::json!({
        "v": 1, "job": id, "seq": 1, "ts": protocol::now_ms(), "runner": "w-later", "attempt": 1,
        "body": {"kind": "paused", "data": {"why": "later"}},
    });
    let mut message = runway_broker::Message::json(serde_json::to_vec(&later).expect("json"), "paused");
    message.properties.correlation_id = Some(id.to_string());
    let exchange = format!("{}.events", ns.name);
    let routing_key = format!("job.{id}.heartbeat");
    ns.conn().publish_confirmed(&exchange, &routing_key, &message, true).await.expect("publish a later kind");
    let list = project.runway(&args(&flags, &["job", "list", "--json"])).await;
    list.assert_code(0);
    assert_eq!(list.events().len(), 1, "{:?}", list.events());
    assert_eq!(list.events()[0]["id"], id.to_string());
    let inspect = project.runway(&args(&flags, &["job", "inspect", &id.to_string()])).await;
    inspect.assert_code(0);
    let text = inspect.stdout();
    assert!(text.contains("unknown builtin `frobnicate`"), "{text}");
    assert!(text.contains("events of kinds this runway does not know: paused"), "{text}");
    assert!(text.contains("state      queued"), "{text}");
    ns.cleanup().await;
}

#[tokio::test]
async fn far_future_and_maximal_timestamps_are_printed_never_a_panic() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    let project = Project::empty();
    let id = Uuid::now_v7();
    publish(&ns, &queued(id, Command::Shell("true".to_owned()), u64::MAX)).await;
    let mut accepted = queued(id, Command::Shell("true".to_owned()), 0);
    accepted.seq = 1;
    accepted.ts = u64::MAX;
    accepted.runner = "w-future".to_owned();
    accepted.body = EventBody::Accepted { hostname: "h".to_owned(), heartbeat_ms: u64::MAX };
    publish(&ns, &accepted).await;
    let mut log = accepted.clone();
    log.seq = 2;
    log.body = EventBody::Log { lines: vec![LogLine::from_bytes(Stream::Stdout, u64::MAX, b"from the future", false)] };
    publish(&ns, &log).await;
    for command in [&["job", "list"][..], &["job", "list", "--json"], &["job", "inspect", &id.to_string()]] {
        let run = project.runway(&args(&flags, command)).await;
        assert_eq!(run.code, Some(0), "{command:?}: {}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{command:?}: {}", run.stderr);
    }
    let inspect = project.runway(&args(&flags, &["job", "inspect", &id.to_string()])).await;
    assert!(inspect.stdout().contains(&format!("{} ms after the epoch", u64::MAX)), "{}", inspect.stdout());
    let logs = project.runway(&args(&flags, &["job", "logs", "--timestamps", &id.to_string()])).await;
    assert_eq!(logs.code, Some(0), "{}", logs.stderr);
    assert_eq!(logs.stdout(), format!("{} ms after the epoch from the future\n", u64::MAX));
    ns.cleanup().await;
}

#[tokio::test]
async fn a_reader_that_closes_the_pipe_early_ends_the_command_quietly() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    let project = Project::empty();
    let id = Uuid::now_v7();
    publish(&ns, &queued(id, Command::Shell("true".to_owned()), protocol::now_ms())).await;
    let mut accepted = queued(id, Command::Shell("true".to_owned()), 0);
    accepted.seq = 1;
    accepted.runner = "w-pipe".to_owned();
    accepted.body = EventBody::Accepted { hostname: "h".to_owned(), heartbeat_ms: 1000 };
    publish(&ns, &accepted).await;
    let mut log = accepted.clone();
    log.seq = 2;
    let lines = (0..2000).map(|n| LogLine::from_bytes(Stream::Stdout, 1, format!("line {n}").as_bytes(), false));
    log.body = EventBody::Log { lines: lines.collect() };
    publish(&ns, &log).await;
    let id = id.to_string();
    for command in [&["job", "list"][..], &["job", "list", "--json"], &["job", "inspect", &id], &["job", "logs", &id]] {
        // The read end is closed before runway writes anything: every write meets a broken pipe.
        let (reader, writer) = std::io::pipe().expect("a pipe");
        drop(reader);
        let output = tokio::process::Command::new(binary("runway"))
            .args(args(&flags, command))
            .current_dir(project.path())
            .env_remove("RUNWAY_SERVER")
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .await
            .expect("runway runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{command:?}: {stderr}");
        assert!(stderr.is_empty(), "{command:?} said something: {stderr}");
    }
    ns.cleanup().await;
}

#[tokio::test]
async fn a_short_id_a_prefix_or_a_suffix_finds_a_job_and_an_ambiguous_one_lists_the_candidates() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    let project = Project::empty();
    // Two ids that end alike, as two random ends may.
    let first = Uuid::parse_str(&format!("{}abcdef", &Uuid::now_v7().simple().to_string()[..26])).expect("uuid");
    let second = Uuid::parse_str(&format!("{}abcdef", &Uuid::now_v7().simple().to_string()[..26])).expect("uuid");
    for id in [first, second] {
        publish(&ns, &queued(id, Command::Shell("true".to_owned()), protocol::now_ms())).await;
    }
    let list = project.runway(&args(&flags, &["job", "list"])).await;
    list.assert_code(0);
    assert!(list.stdout().lines().any(|line| line.starts_with(&format!("{}  ", short(first)))), "{}", list.stdout());
    for given in [short(first), first.to_string()[..30].to_owned(), first.to_string()[19..].to_owned()] {
        let inspect = project.runway(&args(&flags, &["job", "inspect", &given, "--json"])).await;
        assert_eq!(inspect.code, Some(0), "{given}: {}", inspect.stderr);
        let record: serde_json::Value = serde_json::from_slice(&inspect.stdout).expect("json");
        assert_eq!(record["id"], first.to_string(), "{given}");
    }
    let ambiguous = project.runway(&args(&flags, &["job", "inspect", "abcdef"])).await;
    ambiguous.assert_code(64);
    assert!(
        ambiguous.stderr.contains(&first.to_string()) && ambiguous.stderr.contains(&second.to_string()),
        "{}",
        ambiguous.stderr
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn help_never_shows_env_values_and_a_url_without_at_keeps_its_password_hidden() {
    let project = Project::empty();
    let secret = [("RUNWAY_SERVER", "amqp://u:s3cret@h/"), ("RUNWAY_NAMESPACE", "s3cret-ns")];
    let help = project.runway_env(&["--help"], &secret).await;
    help.assert_code(0);
    assert!(help.stdout().contains("RUNWAY_SERVER"), "{}", help.stdout());
    assert!(!help.stdout().contains("s3cret"), "{}", help.stdout());
    let worker = tokio::process::Command::new(binary("runway-worker"))
        .arg("--help")
        .envs(secret)
        .env("RUNWAY_RUNNER_ID", "s3cret-id")
        .output()
        .await
        .expect("runway-worker runs");
    let text = String::from_utf8_lossy(&worker.stdout);
    assert!(text.contains("RUNWAY_SERVER") && !text.contains("s3cret"), "{text}");
    let bad = project.runway(&["job", "list", "--server", "amqp://guest:s3cret"]).await;
    assert_ne!(bad.code, Some(0));
    assert!(!bad.stderr.contains("s3cret"), "{}", bad.stderr);
}

#[tokio::test]
async fn a_timeout_under_a_millisecond_is_refused_on_the_command_line_and_in_the_file() {
    let project = Project::new("[operations.build]\nrun = \"true\"\n");
    let flag = project.runway(&["build", "--timeout", "1ns"]).await;
    flag.assert_code(64);
    assert!(flag.stderr.contains("under a millisecond"), "{}", flag.stderr);
    let file = Project::new("[operations.build]\nrun = \"true\"\ntimeout = \"1ns\"\n");
    let run = file.runway(&["build"]).await;
    run.assert_code(65);
    assert!(run.stderr.contains("runway.toml:3:11"), "{}", run.stderr);
    assert!(run.stderr.contains("under a millisecond"), "{}", run.stderr);
}

#[tokio::test]
async fn queued_by_names_the_user_of_the_uid_even_when_user_is_unset_or_wrong() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    let project = Project::new("[operations.build]\nrun = \"true\"\n");
    let run = project.runway_env(&args(&flags, &["build", "--remote", "--detach"]), &[("USER", "")]).await;
    run.assert_code(0);
    let job = run.stdout().trim().to_owned();
    // The `queued` record's body names the OS user of the uid (and the host), for people; the
    // identity the CLI shows is the broker-verified login (issue 12), never that text.
    let name = nix::unistd::User::from_uid(nix::unistd::getuid()).expect("passwd").expect("an entry").name;
    let mut queued = serde_json::Value::Null;
    ns.read_history(|event| {
        let found = event["job"] == job.as_str() && event["body"]["kind"] == "queued";
        if found {
            queued = event.clone();
        }
        found
    })
    .await;
    let claimed = queued["body"]["data"]["queued_by"].as_str().expect("queued_by");
    assert!(claimed.starts_with(&format!("{name}@")), "{queued}");
    let inspect = project.runway(&args(&flags, &["job", "inspect", &job, "--json"])).await;
    let record: serde_json::Value = serde_json::from_slice(&inspect.stdout).expect("json");
    assert_eq!(record["queued_by"], "guest", "the verified login of AMQP_URL");
    ns.cleanup().await;
}

/// A job that says which attempt it is, then waits for `gate-<attempt>` in `dir`.
fn attempt_gated(dir: &std::path::Path) -> String {
    format!(
        "echo attempt=$RUNWAY_ATTEMPT; while [ ! -e {}/gate-$RUNWAY_ATTEMPT ]; do sleep 0.02; done; echo finished",
        dir.display()
    )
}

#[tokio::test]
async fn retry_on_lost_attached_follows_the_next_attempt_to_its_end() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    let gates = tempfile::tempdir().expect("temp dir");
    let toml = format!(
        "[operations.deploy]\nrun = {:?}\nretry_on_lost = true\n",
        format!("{}; exit 3", attempt_gated(gates.path()))
    );
    let project = Project::new(&toml);
    let doomed = ns.worker("w-doomed", &[]).await;
    let mut cli = project.spawn_runway(&args(&flags, &["deploy", "--remote"]));
    cli.stderr_line_containing("started (pid").await;
    let _survivor = ns.worker("w-survivor", &[]).await;
    doomed.signal(Signal::SIGKILL);
    std::fs::write(gates.path().join("gate-2"), "").expect("open the second attempt's gate");
    let lost = cli.stderr_line_containing("attempt 1 was lost").await;
    assert!(lost.contains("w-doomed"), "{lost}");
    let accepted = cli.stderr_line_containing("attempt 2 accepted by runner").await;
    assert!(accepted.contains("w-survivor"), "{accepted}");
    let run = cli.finish().await;
    // Attempt 2's own exit code, not 75 (lost).
    assert_eq!(run.code, Some(3), "{}", run.stderr);
    assert!(run.stdout().contains("attempt=2\nfinished\n"), "{}", run.stdout());
    // SIGKILL left attempt 1's job process behind (its gate never opens): end it.
    std::fs::write(gates.path().join("gate-1"), "").expect("open the first attempt's gate");
    ns.cleanup().await;
}

#[tokio::test]
async fn job_list_reads_back_from_the_end_of_the_index_until_it_has_enough_jobs() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    let project = Project::empty();
    // One failed job, then more jobs than the first read from the end of the index holds.
    let failed = Uuid::now_v7();
    publish(&ns, &queued(failed, Command::Shell("false".to_owned()), protocol::now_ms())).await;
    let event = |seq, body| Event {
        v: protocol::VERSION,
        job: failed,
        seq,
        ts: protocol::now_ms(),
        runner: "w-1".to_owned(),
        attempt: 1,
        body,
    };
    publish(&ns, &event(1, EventBody::Accepted { hostname: "h".to_owned(), heartbeat_ms: 1000 })).await;
    let completed = protocol::Completed::without_exit(protocol::Status::Failed, String::new());
    publish(&ns, &event(2, EventBody::Completed(completed))).await;
    let mut later = Vec::new();
    let mut confirms = Vec::new();
    for _ in 0..1100 {
        let id = Uuid::now_v7();
        let event = queued(id, Command::Shell("true".to_owned()), protocol::now_ms());
        confirms.push(ns.topology.publish_event(ns.conn(), &event).await.expect("publish"));
        later.push(id);
    }
    for confirm in confirms {
        confirm.wait().await.expect("confirmed");
    }
    let list = project.runway(&args(&flags, &["job", "list", "--json", "--state", "failed"])).await;
    list.assert_code(0);
    let ids: Vec<String> = list.events().iter().map(|job| job["id"].as_str().unwrap_or_default().to_owned()).collect();
    assert_eq!(ids, [failed.to_string()], "the failed job, 1,100 jobs back");
    let newest = project.runway(&args(&flags, &["job", "list", "--json", "--limit", "3"])).await;
    let ids: Vec<String> =
        newest.events().iter().map(|job| job["id"].as_str().unwrap_or_default().to_owned()).collect();
    let expected: Vec<String> = later.iter().rev().take(3).map(Uuid::to_string).collect();
    assert_eq!(ids, expected, "the three newest, newest first");
    ns.cleanup().await;
}

#[tokio::test]
async fn job_list_widens_its_window_until_it_has_enough_jobs_and_never_shows_one_from_before_since() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    let project = Project::empty();
    let made = |ago_ms: u64| {
        let at = protocol::now_ms() - ago_ms;
        let ts =
            uuid::Timestamp::from_unix(uuid::NoContext, at / 1000, u32::try_from(at % 1000).expect("ms") * 1_000_000);
        (Uuid::new_v7(ts), at)
    };
    // Three hours ago (past the first windows), and forty days ago (past `--since 7d`).
    let (old, old_at) = made(3 * 60 * 60 * 1000);
    let (ancient, ancient_at) = made(40 * 24 * 60 * 60 * 1000);
    let (new, new_at) = made(0);
    for (id, at) in [(old, old_at), (ancient, ancient_at), (new, new_at)] {
        publish(&ns, &queued(id, Command::Shell("true".to_owned()), at)).await;
    }
    let list = project.runway(&args(&flags, &["job", "list", "--json", "--since", "7d"])).await;
    list.assert_code(0);
    let ids: Vec<String> = list.events().iter().map(|job| job["id"].as_str().unwrap_or_default().to_owned()).collect();
    assert_eq!(ids, [new.to_string(), old.to_string()], "newest first, the ancient one outside --since");
    // The newest one alone is found in the first window.
    let one = project.runway(&args(&flags, &["job", "list", "--json", "--limit", "1"])).await;
    assert_eq!(one.events().len(), 1);
    assert_eq!(one.events()[0]["id"], new.to_string());
    // An old job is found by its short id, and by its full id.
    for part in [short(old), old.to_string()] {
        let inspect = project.runway(&args(&flags, &["job", "inspect", &part])).await;
        inspect.assert_code(0);
        assert!(inspect.stdout().contains(&old.to_string()), "{}", inspect.stdout());
    }
    ns.cleanup().await;
}
