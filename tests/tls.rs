//! runway over TLS, with the real binaries, against a RabbitMQ node of the tests' own with a TLS
//! listener (`scripts/rabbitmq-tls`: its own ports, a CA and certificates made with openssl):
//! the CA given, not given, a wrong host name, an expired certificate, a client certificate for
//! EXTERNAL, and a worker running a job over TLS.
//!
//! A test binary of its own with one test: the node takes most of a minute to start, so the test
//! starts it once, runs every case on it in turn, and stops it at the end, also when a case fails.

#![allow(unreachable_pub)]

#[allow(dead_code)]
#[path = "support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use support::{PATIENCE, Project, binary, op};

/// The words that say the server's certificate has no trusted CA behind it.
const UNKNOWN_CA: &str = "the server's certificate is not signed by a CA runway trusts; give the CA with --tls-ca";

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/rabbitmq-tls")
}

/// The TLS node, started by `scripts/rabbitmq-tls start` and stopped when dropped.
struct TlsNode {
    env: HashMap<String, String>,
}

impl TlsNode {
    fn start() -> TlsNode {
        let started = Command::new(script()).arg("start").stdin(Stdio::null()).output().expect("run rabbitmq-tls");
        // From here on the node may run: the guard stops it, whatever happens next.
        let mut node = TlsNode { env: HashMap::new() };
        assert!(
            started.status.success(),
            "scripts/rabbitmq-tls start failed (it needs rabbitmq-server and openssl):\n{}{}",
            String::from_utf8_lossy(&started.stdout),
            String::from_utf8_lossy(&started.stderr)
        );
        let env = Command::new(script()).arg("env").output().expect("run rabbitmq-tls env");
        assert!(env.status.success(), "scripts/rabbitmq-tls env: {}", String::from_utf8_lossy(&env.stderr));
        node.env = String::from_utf8_lossy(&env.stdout)
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect();
        node
    }

    fn get(&self, key: &str) -> &str {
        self.env.get(key).unwrap_or_else(|| panic!("scripts/rabbitmq-tls env gives no {key}"))
    }
}

impl Drop for TlsNode {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("stop").stdin(Stdio::null()).stdout(Stdio::null()).status();
    }
}

/// `runway` with `args` in `project`, with a fresh namespace; its exit code and stderr.
async fn runway(project: &Project, args: &[&str], env: &[(&str, &str)]) -> support::Run {
    let namespace = format!("t-{}", uuid::Uuid::now_v7().simple());
    let mut all = vec!["--namespace", namespace.as_str()];
    all.extend_from_slice(args);
    project.runway_env(&all, env).await
}

#[tokio::test]
async fn tls_connects_with_the_ca_and_a_client_certificate_and_says_what_failed() {
    let node = TlsNode::start();
    let project = Project::empty();
    let ca = node.get("RUNWAY_TLS_CA");
    let cert = node.get("RUNWAY_TLS_CERT");
    let key = node.get("RUNWAY_TLS_KEY");
    let url = node.get("RUNWAY_TLS_URL");

    // With the CA: connects.
    let run = runway(&project, &["--server", url, "--tls-ca", ca, "job", "list"], &[]).await;
    run.assert_code(0);

    // Without it: the words about the CA, broker unavailable.
    let run = runway(&project, &["--server", url, "job", "list"], &[]).await;
    run.assert_code(69);
    assert!(run.stderr.contains(UNKNOWN_CA), "{}", run.stderr);
    assert!(!run.stderr.contains("guest:guest"), "{}", run.stderr);

    // With a CA that did not sign the server's certificate: the same, naming the file given.
    let other = node.get("RUNWAY_TLS_OTHER_CA");
    let run = runway(&project, &["--server", url, "--tls-ca", other, "job", "list"], &[]).await;
    run.assert_code(69);
    assert!(run.stderr.contains("not signed by a CA runway trusts") && run.stderr.contains(other), "{}", run.stderr);

    // A name the certificate does not hold (it names localhost and 127.0.0.1 only).
    let wrong = node.get("RUNWAY_TLS_WRONG_HOST_URL");
    let run = runway(&project, &["--server", wrong, "--tls-ca", ca, "job", "list"], &[]).await;
    run.assert_code(69);
    assert!(
        run.stderr.contains(
            "the server's certificate is not valid for the host name `127.0.0.2` (it names localhost, 127.0.0.1)"
        ),
        "{}",
        run.stderr
    );

    // An expired server certificate.
    let expired = node.get("RUNWAY_TLS_EXPIRED_URL");
    let run = runway(&project, &["--server", expired, "--tls-ca", ca, "job", "list"], &[]).await;
    run.assert_code(69);
    assert!(run.stderr.contains("the server's certificate expired on 2020-01-02"), "{}", run.stderr);

    // A client certificate, given in the environment, and no user or password in the URL:
    // EXTERNAL logs in as the certificate's CN.
    let external = url.replacen("guest:guest@", "", 1);
    let run = runway(
        &project,
        &["--server", &external, "job", "list"],
        &[("RUNWAY_TLS_CA", ca), ("RUNWAY_TLS_CERT", cert), ("RUNWAY_TLS_KEY", key)],
    )
    .await;
    run.assert_code(0);

    // EXTERNAL asked for in the URL without a certificate: a usage error that says what to give.
    let run =
        runway(&project, &["--server", node.get("RUNWAY_TLS_EXTERNAL_URL"), "--tls-ca", ca, "job", "list"], &[]).await;
    run.assert_code(64);
    assert!(run.stderr.contains("needs a client certificate: give --tls-cert and --tls-key"), "{}", run.stderr);

    // [server] in runway.toml, with the CA path relative to the project file.
    let dir = Project::new(&format!("[server]\nurl = \"{url}\"\ntls_ca = \"certs/ca.pem\"\n"));
    std::fs::create_dir(dir.path().join("certs")).expect("certs dir");
    std::fs::copy(ca, dir.path().join("certs/ca.pem")).expect("copy the CA");
    let run = runway(&dir, &["job", "list"], &[]).await;
    run.assert_code(0);

    // A worker without the CA stops at once with the same words.
    let worker = Command::new(binary("runway-worker"))
        .args(["--server", node.get("RUNWAY_TLS_EXTERNAL_URL"), "--tls-cert", cert, "--tls-key", key])
        .env_remove("RUNWAY_TLS_CA")
        .stdin(Stdio::null())
        .output()
        .expect("run runway-worker");
    assert_eq!(worker.status.code(), Some(69), "{}", String::from_utf8_lossy(&worker.stderr));
    assert!(
        String::from_utf8_lossy(&worker.stderr).contains(UNKNOWN_CA),
        "{}",
        String::from_utf8_lossy(&worker.stderr)
    );

    a_worker_over_tls_runs_a_job(&node).await;
}

/// A worker logged in by its certificate (EXTERNAL) runs a job a CLI sent over TLS with a password.
async fn a_worker_over_tls_runs_a_job(node: &TlsNode) {
    use tokio::io::AsyncBufReadExt;

    let namespace = format!("t-{}", uuid::Uuid::now_v7().simple());
    let ca = node.get("RUNWAY_TLS_CA");
    let mut worker = tokio::process::Command::new(binary("runway-worker"))
        .args(["--server", node.get("RUNWAY_TLS_EXTERNAL_URL"), "--namespace", &namespace, "--id", "w-tls"])
        .args(["--tls-ca", ca, "--tls-cert", node.get("RUNWAY_TLS_CERT"), "--tls-key", node.get("RUNWAY_TLS_KEY")])
        .env("RUNWAY_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn runway-worker");
    let mut lines = tokio::io::BufReader::new(worker.stderr.take().expect("piped stderr")).lines();
    let mut seen = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        loop {
            match lines.next_line().await.expect("read worker stderr") {
                Some(line) if line.contains("serving") => return,
                Some(line) => seen.push(line),
                None => panic!("runway-worker exited before serving: {seen:?}"),
            }
        }
    })
    .await
    .expect("runway-worker did not start serving over TLS");
    // Keep its stderr drained.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let project = Project::new(&op("hello", "echo \"hello over tls from $RUNWAY_RUNNER_ID\""));
    let url = node.get("RUNWAY_TLS_URL");
    let run = project
        .runway(&[
            "--server",
            url,
            "--tls-ca",
            ca,
            "--namespace",
            &namespace,
            "--quiet",
            "run",
            "hello",
            "--runner",
            "w-tls",
        ])
        .await;
    run.assert_code(0);
    assert_eq!(run.stdout().trim(), "hello over tls from w-tls");
    worker.kill().await.expect("kill the worker");
}
