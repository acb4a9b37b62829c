//! At `RUNWAY_LOG=trace`, neither the CLI nor the worker prints the broker password (as text, as
//! the byte array of the AMQP login, or in base64) or a job's env value.

use std::process::Stdio;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use tokio::io::AsyncBufReadExt;

use crate::support::{Namespace, PATIENCE, Project, args, binary, op};

/// A RabbitMQ user of this test alone, deleted when dropped (a failed test too).
struct BrokerUser {
    name: String,
}

fn rabbitmqctl(arguments: &[&str]) {
    let output = std::process::Command::new("rabbitmqctl").args(arguments).output().expect("run rabbitmqctl");
    assert!(output.status.success(), "rabbitmqctl {arguments:?}: {}", String::from_utf8_lossy(&output.stderr));
}

impl BrokerUser {
    fn create(name: &str, password: &str) -> BrokerUser {
        rabbitmqctl(&["add_user", name, password]);
        let user = BrokerUser { name: name.to_owned() };
        rabbitmqctl(&["set_permissions", "-p", "/", name, ".*", ".*", ".*"]);
        user
    }
}

impl Drop for BrokerUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl").args(["delete_user", &self.name]).output();
    }
}

/// Every rendering of `secret` a log line could hold.
fn renderings(secret: &str) -> Vec<String> {
    let bytes = secret.as_bytes();
    let base64 = base64::engine::general_purpose::STANDARD;
    vec![
        secret.to_owned(),
        format!("{bytes:?}"),
        // The start of the byte array, in case a frame is printed in pieces.
        bytes[..8].iter().map(u8::to_string).collect::<Vec<_>>().join(", "),
        base64.encode(bytes),
        // SASL PLAIN's response, as the AMQP login sends it.
        base64.encode(format!("\0{secret}")),
    ]
}

#[tokio::test]
async fn trace_logs_of_the_cli_and_the_worker_show_no_password_and_no_env_value() {
    let ns = Namespace::new().await;
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let password = format!("pw{}", &uuid::Uuid::now_v7().simple().to_string()[12..]);
    let token = format!("tk{}", &uuid::Uuid::now_v7().simple().to_string()[12..]);
    let user = BrokerUser::create(&format!("runway-test-{tag}"), &password);
    let url = format!("amqp://{}:{password}@127.0.0.1:5672/%2f", user.name);

    let mut worker = tokio::process::Command::new(binary("runway-worker"))
        .args(["--server", &url, "--namespace", &ns.name, "--id", "w-trace", "--heartbeat", "1s"])
        .env("RUNWAY_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn runway-worker");
    let printed = Arc::new(Mutex::new(String::new()));
    let (serving_tx, mut serving) = tokio::sync::watch::channel(false);
    let mut readers = Vec::new();
    for (pipe, is_stderr) in [
        (Box::new(worker.stdout.take().expect("piped")) as Box<dyn tokio::io::AsyncRead + Unpin + Send>, false),
        (Box::new(worker.stderr.take().expect("piped")), true),
    ] {
        let printed = Arc::clone(&printed);
        let serving_tx = serving_tx.clone();
        readers.push(tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if is_stderr && line.contains("serving") {
                    let _ = serving_tx.send(true);
                }
                let mut printed = printed.lock().expect("lock");
                printed.push_str(&line);
                printed.push('\n');
            }
        }));
    }
    drop(serving_tx);
    tokio::time::timeout(PATIENCE, serving.wait_for(|serving| *serving))
        .await
        .expect("the worker serves in time")
        .unwrap_or_else(|_| panic!("the worker exited before serving: {}", printed.lock().expect("lock")));

    let project = Project::new(&op("ok", "true"));
    let flags = vec!["--server".to_owned(), url.clone(), "--namespace".to_owned(), ns.name.clone()];
    let env = format!("TOKEN={token}");
    let run =
        project.runway_env(&args(&flags, &["run", "ok", "--remote", "--env", &env]), &[("RUNWAY_LOG", "trace")]).await;
    run.assert_code(0);
    worker.start_kill().expect("stop the worker");
    let _ = worker.wait().await;
    for reader in readers {
        reader.await.expect("reader");
    }

    let worker_output = printed.lock().expect("lock").clone();
    let cli_output = format!("{}\n{}", run.stdout(), run.stderr);
    // What is searched is the whole log (runway's own lines pass at every level).
    assert!(worker_output.contains("job ended"), "the worker's log was read: {worker_output}");
    for (who, output) in [("worker", &worker_output), ("cli", &cli_output)] {
        for secret in [&password, &token] {
            for rendering in renderings(secret) {
                let at = output.find(&rendering);
                assert!(
                    at.is_none(),
                    "the {who} printed a secret as `{rendering}`: ...{}...",
                    at.map(|at| &output[at.saturating_sub(200)..(at + 100).min(output.len())]).unwrap_or_default()
                );
            }
        }
    }
    drop(user);
    ns.cleanup().await;
}
