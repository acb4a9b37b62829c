//! Test support: locate the built binaries, make a temporary project, run `runway` in it and
//! capture what it printed.
//!
//! The binaries are built by `make test` (cargo builds only this crate's own binaries for its
//! tests); a missing binary fails with that instruction rather than a confusing error.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

pub mod relay;
pub mod scrape;
pub mod users;

/// How long one CLI run may take before the test fails instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// A built binary of the workspace, next to this test executable's directory.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    let dir = exe.parent().and_then(Path::parent).expect("test binaries live in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`, as `make test` does)",
        path.display()
    );
    path
}

/// A project file with one operation `name` that runs `run` in a shell.
pub fn op(name: &str, run: &str) -> String {
    format!("[operations.{name}]\nrun = {run:?}\n")
}

/// A `runway` command line: `flags` (a namespace's, see [`Namespace::flags`]) and then `rest`.
pub fn args<'a>(flags: &'a [String], rest: &[&'a str]) -> Vec<&'a str> {
    flags.iter().map(String::as_str).chain(rest.iter().copied()).collect()
}

/// A temporary project directory with a runway.toml.
pub struct Project {
    dir: PathBuf,
    _owned: Option<tempfile::TempDir>,
}

impl Project {
    pub fn new(toml: &str) -> Project {
        let temp = tempfile::tempdir().expect("temp dir");
        std::fs::write(temp.path().join("runway.toml"), toml).expect("write runway.toml");
        Project { dir: temp.path().to_path_buf(), _owned: Some(temp) }
    }

    /// A directory with no project file in it.
    pub fn empty() -> Project {
        let temp = tempfile::tempdir().expect("temp dir");
        Project { dir: temp.path().to_path_buf(), _owned: Some(temp) }
    }

    /// Another handle on a project directory someone else owns.
    pub fn at(dir: PathBuf) -> Project {
        Project { dir, _owned: None }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Start `runway` with `args` and return at once, to interact with it while it runs.
    pub fn spawn_runway(&self, args: &[&str]) -> Cli {
        let mut child = tokio::process::Command::new(binary("runway"))
            .args(args)
            .current_dir(self.path())
            .env_remove("RUNWAY_SERVER")
            .env_remove("RUNWAY_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn runway");
        let stdout = read_all(child.stdout.take().expect("piped stdout"));
        let stderr = child.stderr.take().expect("piped stderr");
        Cli { child, stdout: Some(stdout), stderr: tokio::io::BufReader::new(stderr), seen: Vec::new() }
    }

    /// Run `runway` with `args` in the project directory.
    pub async fn runway(&self, args: &[&str]) -> Run {
        self.runway_env(args, &[]).await
    }

    pub async fn runway_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut command = tokio::process::Command::new(binary("runway"));
        command
            .args(args)
            .current_dir(self.path())
            .env_remove("RUNWAY_SERVER")
            .env_remove("RUNWAY_NAMESPACE")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("runway runs");
        let stdout = read_all(child.stdout.take().expect("piped stdout"));
        let stderr = read_all(child.stderr.take().expect("piped stderr"));
        let status = match tokio::time::timeout(PATIENCE, child.wait()).await {
            Ok(status) => status.expect("wait for runway"),
            Err(_) => {
                // Say what it printed before it hung.
                let _ = child.kill().await;
                let stderr = String::from_utf8_lossy(&stderr.await.unwrap_or_default()).into_owned();
                let stdout = String::from_utf8_lossy(&stdout.await.unwrap_or_default()).into_owned();
                panic!(
                    "runway {args:?} did not finish within {PATIENCE:?}; its stdout:\n{stdout}\nits stderr:\n{stderr}"
                );
            }
        };
        Run {
            code: status.code(),
            stdout: stdout.await.unwrap_or_default(),
            stderr: String::from_utf8_lossy(&stderr.await.unwrap_or_default()).into_owned(),
        }
    }
}

/// Everything a pipe gives until it closes, read in the background.
fn read_all(pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static) -> tokio::task::JoinHandle<Vec<u8>> {
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut bytes = Vec::new();
        let mut pipe = pipe;
        let _ = pipe.read_to_end(&mut bytes).await;
        bytes
    })
}

/// A `runway` process still running.
pub struct Cli {
    pub child: tokio::process::Child,
    stdout: Option<tokio::task::JoinHandle<Vec<u8>>>,
    stderr: tokio::io::BufReader<tokio::process::ChildStderr>,
    seen: Vec<String>,
}

impl Cli {
    /// Read stderr until a line contains `needle`; that line.
    pub async fn stderr_line_containing(&mut self, needle: &str) -> String {
        use tokio::io::AsyncBufReadExt;
        let found = tokio::time::timeout(PATIENCE, async {
            loop {
                let mut line = String::new();
                let read = self.stderr.read_line(&mut line).await.expect("read runway stderr");
                if read == 0 {
                    panic!("runway exited without printing `{needle}`; stderr: {:?}", self.seen);
                }
                let line = line.trim_end().to_owned();
                self.seen.push(line.clone());
                if line.contains(needle) {
                    return line;
                }
            }
        })
        .await;
        // What it printed says where it stood.
        found.unwrap_or_else(|_| panic!("runway never printed `{needle}`; stderr so far: {:?}", self.seen))
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id().expect("running")).expect("pid fits")
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).expect("signal runway");
    }

    pub async fn kill(&mut self) {
        self.child.kill().await.expect("kill runway");
    }

    /// Wait for the end; what it printed (stderr from where the reading stopped).
    pub async fn finish(mut self) -> Run {
        use tokio::io::AsyncReadExt;
        let mut rest = String::new();
        let status = tokio::time::timeout(PATIENCE, async {
            let _ = self.stderr.read_to_string(&mut rest).await;
            self.child.wait().await
        })
        .await
        .expect("runway did not finish")
        .expect("wait");
        let stdout = self.stdout.take().expect("stdout reader").await.expect("stdout task");
        let mut stderr = self.seen.join("\n");
        stderr.push('\n');
        stderr.push_str(&rest);
        Run { code: status.code(), stdout, stderr }
    }
}

/// What one run printed and how it exited.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// The events of a `--json` run.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.stdout()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}")))
            .collect()
    }

    #[track_caller]
    /// The line of `job list`'s table (this run's stdout) that shows job `id` by its short id.
    #[allow(dead_code, reason = "only the e2e binary lists jobs")]
    pub fn list_line(&self, id: &str) -> String {
        let line = self
            .stdout()
            .lines()
            .find(|line| id.ends_with(line.split_whitespace().next().unwrap_or("-")))
            .map(str::to_owned);
        line.unwrap_or_else(|| panic!("job {id} in the list:\n{}", self.stdout()))
    }

    pub fn assert_code(&self, code: i32) {
        assert_eq!(self.code, Some(code), "exit code; stderr:\n{}", self.stderr);
    }
}

/// The RabbitMQ the tests use.
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// A namespace of one test on the real RabbitMQ: unique names, deleted at the end.
pub struct Namespace {
    pub name: String,
    pub topology: runway_broker::topology::Topology,
    conn: runway_broker::Connection,
    runners: std::sync::Mutex<Vec<runway_broker::topology::RunnerQueues>>,
    /// Set by `cleanup`; otherwise dropping the namespace (a failed test) deletes it.
    cleaned: std::sync::atomic::AtomicBool,
}

impl Namespace {
    pub async fn new() -> Namespace {
        let name = format!("t-{}", uuid::Uuid::now_v7().simple());
        let topology = runway_broker::topology::Topology::new(&name).expect("valid namespace");
        let broker = runway_broker::Broker::amqp(&amqp_url(), Duration::from_secs(10)).expect("AMQP_URL is valid");
        let conn = broker.connect().await.unwrap_or_else(|err| {
            panic!("RabbitMQ is required for this test and cannot be reached ({err}); `make test` starts it")
        });
        topology.declare(&conn, &runway_broker::topology::Retention::default()).await.expect("declare topology");
        Namespace {
            name,
            topology,
            conn,
            runners: std::sync::Mutex::new(Vec::new()),
            cleaned: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Dial the namespace's connection again (after a broker restart dropped it).
    #[allow(dead_code, reason = "for the restart binary; the e2e binary has no use for it")]
    pub async fn reconnect(&mut self) {
        self.conn = self.conn.redial().await.expect("connect to RabbitMQ again");
    }

    pub fn conn(&self) -> &runway_broker::Connection {
        &self.conn
    }

    /// The flags that point `runway` at this namespace.
    pub fn flags(&self) -> Vec<String> {
        vec!["--server".into(), amqp_url(), "--namespace".into(), self.name.clone()]
    }

    /// Start a `runway-worker` in this namespace and wait until it serves.
    pub async fn worker(&self, id: &str, extra: &[&str]) -> Worker {
        self.worker_with(&amqp_url(), id, extra, &[]).await
    }

    /// [`Namespace::worker`] with variables added to the worker's environment.
    pub async fn worker_env(&self, id: &str, extra: &[&str], env: &[(&str, &str)]) -> Worker {
        self.worker_with(&amqp_url(), id, extra, env).await
    }

    /// Start a `runway-worker` that logs in with `url` (another user's account).
    pub async fn worker_as(&self, url: &str, id: &str, extra: &[&str]) -> Worker {
        self.worker_with(url, id, extra, &[]).await
    }

    async fn worker_with(&self, url: &str, id: &str, extra: &[&str], env: &[(&str, &str)]) -> Worker {
        let labels: std::collections::BTreeMap<String, String> = extra
            .windows(2)
            .filter(|pair| pair[0] == "--label")
            .filter_map(|pair| pair[1].split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        self.runners.lock().expect("lock").push(runway_broker::topology::RunnerQueues {
            id: id.to_owned(),
            labels,
            by_id_only: false,
            in_process: false,
        });
        Worker::start(url, &self.name, id, extra, env).await
    }

    /// Every event of `job` from the history, waiting until `completed` arrives.
    pub async fn completed_events(&self, job: &str) -> Vec<serde_json::Value> {
        let mut found = Vec::new();
        self.read_history(|event| {
            if event["job"] == job {
                found.push(event.clone());
                return event["body"]["kind"] == "completed";
            }
            false
        })
        .await;
        found
    }

    /// Read the history from its start, event by event, until `done` says so.
    pub async fn read_history(&self, mut done: impl FnMut(&serde_json::Value) -> bool) {
        let options = runway_broker::ConsumeOptions {
            offset: Some(runway_broker::StreamOffset::First),
            ..runway_broker::ConsumeOptions::with_prefetch(500)
        };
        let mut consumer = self.conn.consume(&self.topology.history_queue(), &options).await.expect("consume history");
        tokio::time::timeout(PATIENCE, async {
            while let Some(delivery) = consumer.next().await {
                let delivery = delivery.expect("history delivery");
                let event: serde_json::Value = serde_json::from_slice(&delivery.body).expect("event is JSON");
                delivery.acker.ack().await.expect("ack");
                if done(&event) {
                    return;
                }
            }
            panic!("the history stream ended");
        })
        .await
        .expect("the awaited events did not arrive in the history");
    }

    /// Delete this namespace's queues and exchanges.
    pub async fn cleanup(&self) {
        self.cleaned.store(true, std::sync::atomic::Ordering::Relaxed);
        let runners = self.runners.lock().expect("lock").clone();
        delete_namespace(&self.conn, &self.topology, &runners).await;
    }
}

async fn delete_namespace(
    conn: &runway_broker::Connection,
    topology: &runway_broker::topology::Topology,
    runners: &[runway_broker::topology::RunnerQueues],
) {
    for runner in runners {
        let _ = topology.delete_runner(conn, runner).await;
    }
    let _ = topology.delete_shared(conn).await;
}

/// A test that failed (or forgot) leaves no queues and streams behind on the shared broker:
/// each stream holds files open there, and they add up over a run.
impl Drop for Namespace {
    fn drop(&mut self) {
        if self.cleaned.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let topology = self.topology.clone();
        let runners = self.runners.lock().map(|runners| runners.clone()).unwrap_or_default();
        // On a thread of its own: this may run inside the test's runtime, which cannot block.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            runtime.block_on(async {
                let Ok(broker) = runway_broker::Broker::amqp(&amqp_url(), Duration::from_secs(5)) else { return };
                let Ok(conn) = broker.connect().await else { return };
                delete_namespace(&conn, &topology, &runners).await;
                conn.close().await;
            });
        })
        .join();
    }
}

/// A running `runway-worker`, killed when dropped.
pub struct Worker {
    pub child: tokio::process::Child,
    /// Its stderr lines after "serving", collected in the background.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    lines_seen: tokio::sync::watch::Receiver<usize>,
}

impl Worker {
    /// `extra` may name a `--server` of its own instead of `url`.
    async fn start(url: &str, namespace: &str, id: &str, extra: &[&str], env: &[(&str, &str)]) -> Worker {
        use tokio::io::AsyncBufReadExt;
        let server = if extra.contains(&"--server") { Vec::new() } else { vec!["--server".to_owned(), url.to_owned()] };
        let mut child = tokio::process::Command::new(binary("runway-worker"))
            .args(&server)
            .args(["--namespace", namespace, "--id", id, "--heartbeat", "1s"])
            .args(extra)
            .env("RUNWAY_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn runway-worker");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        tokio::time::timeout(PATIENCE, async {
            loop {
                match lines.next_line().await.expect("read worker stderr") {
                    Some(line) if line.contains("serving") => return,
                    Some(line) => log.lock().expect("lock").push(line),
                    None => panic!("runway-worker {id} exited before serving: {:?}", log.lock().expect("lock")),
                }
            }
        })
        .await
        .expect("runway-worker did not start serving");
        let sink = std::sync::Arc::clone(&log);
        let (grew, lines_seen) = tokio::sync::watch::channel(0usize);
        // Keep draining its stderr so the worker never blocks on a full pipe.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let count = {
                    let mut log = sink.lock().expect("lock");
                    log.push(line);
                    log.len()
                };
                let _ = grew.send(count);
            }
        });
        Worker { child, log, lines_seen }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id().expect("running")).expect("pid fits")
    }

    /// Send a signal to the worker.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).expect("signal the worker");
    }

    /// What the worker logged so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("lock").join("\n")
    }

    /// Wait until the worker logs a line containing `needle`.
    pub async fn wait_for_log(&mut self, needle: &str) {
        self.wait_for_log_within(needle, PATIENCE).await;
    }

    /// Wait until the worker logs a line containing `needle`, for up to `patience`.
    pub async fn wait_for_log_within(&mut self, needle: &str, patience: Duration) {
        let log = std::sync::Arc::clone(&self.log);
        tokio::time::timeout(patience, async {
            loop {
                if log.lock().expect("lock").iter().any(|line| line.contains(needle)) {
                    return;
                }
                if self.lines_seen.changed().await.is_err() {
                    panic!("the worker's log ended without `{needle}`");
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the worker never logged `{needle}`"));
    }

    /// Wait until the worker logged `count` lines containing `needle`.
    #[allow(dead_code, reason = "not every test binary counts log lines")]
    pub async fn wait_for_log_lines(&mut self, needle: &str, count: usize) {
        let log = std::sync::Arc::clone(&self.log);
        tokio::time::timeout(PATIENCE, async {
            loop {
                if log.lock().expect("lock").iter().filter(|line| line.contains(needle)).count() >= count {
                    return;
                }
                if self.lines_seen.changed().await.is_err() {
                    panic!("the worker's log ended before {count} lines with `{needle}`");
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the worker never logged {count} lines with `{needle}`"));
    }

    /// Wait for the worker to exit; its exit code.
    pub async fn exit_code(&mut self) -> Option<i32> {
        tokio::time::timeout(PATIENCE, self.child.wait()).await.expect("the worker did not exit").expect("wait").code()
    }
}
