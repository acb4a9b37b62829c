//! The Python example client (examples/python/runway_client.py), a second client written from
//! docs/PROTOCOL.md, against a real `runway-worker`: it queues and follows a job, reads its log,
//! cancels a running job and meets a target nobody serves; `runway job list|inspect|logs` show
//! its jobs exactly as they show the CLI's own.
//!
//! It runs the venv's python that `make python` builds; it does not install anything itself.

use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdout};

use crate::support::{Namespace, PATIENCE, Project, Run};

/// The job both clients queue: output on both pipes, an output, a failing exit code.
const SCRIPT: &str = "echo hello; echo oops >&2; echo artifact=app.tar >> \"$RUNWAY_OUTPUT\"; exit 3";

fn project() -> Project {
    Project::new(&format!("[project]\nname = \"shop\"\n\n[operations.build]\nrun = {SCRIPT:?}\n"))
}

/// The python of the virtual environment `make python` makes, beside the built binaries.
fn python() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    let target = exe.ancestors().nth(3).expect("test binaries live in target/<profile>/deps");
    let python = target.join("venv/bin/python");
    assert!(python.exists(), "{} is missing: run `make python` (as `make test` does)", python.display());
    python
}

fn client_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/python/runway_client.py")
}

fn command(ns: &Namespace, project: &Project, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(python());
    command
        .arg(client_script())
        .args(ns.flags())
        .args(args)
        .current_dir(project.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Run the Python client to its end.
async fn py(ns: &Namespace, project: &Project, args: &[&str]) -> Run {
    let output = tokio::time::timeout(PATIENCE, command(ns, project, args).output())
        .await
        .unwrap_or_else(|_| panic!("the python client {args:?} did not finish within {PATIENCE:?}"))
        .expect("run the python client");
    Run {
        code: output.status.code(),
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The Python client still running, read line by line.
struct Running {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Lines<BufReader<ChildStderr>>,
    seen: Vec<String>,
}

impl Running {
    fn spawn(ns: &Namespace, project: &Project, args: &[&str]) -> Running {
        let mut child = command(ns, project, args).spawn().expect("spawn the python client");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let stderr = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        Running { child, stdout, stderr, seen: Vec::new() }
    }

    async fn stderr_line_containing(&mut self, needle: &str) -> String {
        let found = tokio::time::timeout(PATIENCE, async {
            while let Some(line) = self.stderr.next_line().await.expect("read stderr") {
                self.seen.push(line.clone());
                if line.contains(needle) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        found.ok().flatten().unwrap_or_else(|| panic!("the python client never printed `{needle}`: {:?}", self.seen))
    }

    async fn stdout_line(&mut self) -> String {
        tokio::time::timeout(PATIENCE, self.stdout.next_line())
            .await
            .expect("a line on stdout in time")
            .expect("read stdout")
            .expect("stdout ended early")
    }

    async fn finish(mut self) -> Run {
        let mut rest = String::new();
        let mut stdout = String::new();
        let status = tokio::time::timeout(PATIENCE, async {
            let mut err = self.stderr.into_inner();
            let mut out = self.stdout.into_inner();
            let _ = tokio::join!(err.read_to_string(&mut rest), out.read_to_string(&mut stdout));
            self.child.wait().await
        })
        .await
        .expect("the python client did not finish")
        .expect("wait");
        self.seen.push(rest);
        Run { code: status.code(), stdout: stdout.into_bytes(), stderr: self.seen.join("\n") }
    }
}

/// The job id of a "queued OPERATION as job ID" status line (both clients print it).
fn queued_id(stderr: &str) -> String {
    let line = stderr.lines().find(|line| line.contains(" as job ")).unwrap_or_else(|| panic!("no job id in {stderr}"));
    line.rsplit(' ').next().expect("a last word").to_owned()
}

async fn runway(ns: &Namespace, project: &Project, rest: &[&str]) -> Run {
    let flags = ns.flags();
    let args: Vec<&str> = flags.iter().map(String::as_str).chain(rest.iter().copied()).collect();
    project.runway(&args).await
}

/// What `job inspect --json` says of a job, less what differs between any two jobs.
async fn inspected(ns: &Namespace, project: &Project, job: &str) -> serde_json::Value {
    let run = runway(ns, project, &["job", "inspect", job, "--json"]).await;
    run.assert_code(0);
    let mut value: serde_json::Value = serde_json::from_str(run.stdout().trim()).expect("inspect --json is JSON");
    let object = value.as_object_mut().expect("an object");
    for key in ["id", "queued_at_ms", "finished_at_ms", "duration_ms", "queued_by"] {
        object.remove(key);
    }
    for attempt in object["attempts"].as_array_mut().expect("attempts") {
        let attempt = attempt.as_object_mut().expect("an attempt");
        for key in ["accepted_at_ms", "started_at_ms", "finished_at_ms", "last_seen_ms", "pid"] {
            attempt.remove(key);
        }
    }
    value
}

/// The `job list` row of a job from after its id to before its times: operation, project,
/// state, runner, try.
async fn listed(ns: &Namespace, project: &Project, job: &str) -> String {
    let run = runway(ns, project, &["job", "list"]).await;
    run.assert_code(0);
    let stdout = run.stdout();
    let header = stdout.lines().next().expect("a header line");
    let times = header.find("QUEUED").expect("a QUEUED column");
    // The ID column shows the short id: the last 12 hex digits.
    let digits = job.replace('-', "");
    let short = &digits[digits.len() - 12..];
    let row = stdout.lines().find(|line| line.starts_with(short));
    let row = row.unwrap_or_else(|| panic!("{job} not listed:\n{stdout}"));
    row.get(short.len()..times).expect("a full row").to_owned()
}

#[tokio::test]
async fn python_client_jobs_run_and_show_as_the_clis_do() {
    let ns = Namespace::new().await;
    let _worker = ns.worker("w-py", &[]).await;
    let project = project();

    // Queued and followed to its result by the Python client, then the same by the CLI.
    let ran = py(&ns, &project, &["submit", "--project", "shop", "build", SCRIPT]).await;
    ran.assert_code(3);
    assert_eq!(ran.stdout(), "hello\n");
    for expected in ["oops", "build failed with exit code 3", "output artifact=app.tar"] {
        assert!(ran.stderr.lines().any(|line| line.contains(expected)), "no `{expected}` in:\n{}", ran.stderr);
    }
    let py_job = queued_id(&ran.stderr);
    let cli = runway(&ns, &project, &["build", "--remote"]).await;
    cli.assert_code(3);
    let cli_job = queued_id(&cli.stderr);

    // The CLI shows both alike.
    let py_record = inspected(&ns, &project, &py_job).await;
    assert_eq!(py_record, inspected(&ns, &project, &cli_job).await);
    assert_eq!((py_record["state"].as_str(), py_record["operation"].as_str()), (Some("failed"), Some("build")));
    assert_eq!(py_record["outputs"]["artifact"], "app.tar");
    assert_eq!(listed(&ns, &project, &py_job).await, listed(&ns, &project, &cli_job).await);
    let py_logs = runway(&ns, &project, &["job", "logs", &py_job]).await;
    let cli_logs = runway(&ns, &project, &["job", "logs", &cli_job]).await;
    assert_eq!((py_logs.code, py_logs.stdout(), py_logs.stderr.as_str()), (Some(0), "hello\n".to_owned(), "oops\n"));
    assert_eq!((cli_logs.code, cli_logs.stdout(), cli_logs.stderr), (py_logs.code, py_logs.stdout(), py_logs.stderr));

    // The Python client reads a finished job's log from the history, the CLI's job too, and
    // follows a finished job to the result it had.
    for job in [&py_job, &cli_job] {
        let logs = py(&ns, &project, &["logs", job]).await;
        assert_eq!((logs.code, logs.stdout(), logs.stderr.as_str()), (Some(0), "hello\n".to_owned(), "oops\n"));
    }
    let followed = py(&ns, &project, &["follow", &py_job]).await;
    followed.assert_code(3);
    assert_eq!(followed.stdout(), "hello\n");
    assert!(followed.stderr.contains("output artifact=app.tar"), "{}", followed.stderr);

    // A running job, cancelled by the Python client.
    let mut running = Running::spawn(&ns, &project, &["submit", "--project", "shop", "build", "echo ready; sleep 60"]);
    let queued = running.stderr_line_containing(" as job ").await;
    let sleeper = queued_id(&queued);
    assert_eq!(running.stdout_line().await, "ready");
    let cancel = py(&ns, &project, &["cancel", &sleeper]).await;
    cancel.assert_code(0);
    let cancelled = running.finish().await;
    cancelled.assert_code(130);
    assert!(cancelled.stderr.contains("build ended cancelled"), "{}", cancelled.stderr);
    let record = inspected(&ns, &project, &sleeper).await;
    assert_eq!((record["state"].as_str(), record["cancel_requested"].as_bool()), (Some("cancelled"), Some(true)));

    // A runner that does not exist: the job comes back unroutable, and both clients say so.
    let nobody = py(&ns, &project, &["submit", "--project", "shop", "--runner", "nobody", "build", SCRIPT]).await;
    nobody.assert_code(68);
    assert!(nobody.stderr.contains("no runner serves runner `nobody`"), "{}", nobody.stderr);
    let cli_nobody = runway(&ns, &project, &["build", "--runner", "nobody"]).await;
    cli_nobody.assert_code(68);
    let py_rejected = job_in(&nobody.stderr);
    let cli_rejected = job_in(&cli_nobody.stderr);
    let mut py_record = inspected(&ns, &project, &py_rejected).await;
    let mut cli_record = inspected(&ns, &project, &cli_rejected).await;
    assert_eq!(py_record["state"], "rejected");
    // The reason names the job's own id.
    for (record, job) in [(&mut py_record, &py_rejected), (&mut cli_record, &cli_rejected)] {
        let error = record["error"].as_str().expect("an error").replace(job.as_str(), "JOB");
        record["error"] = error.clone().into();
        record["attempts"][0]["error"] = error.into();
    }
    assert_eq!(py_record, cli_record);
    assert_eq!(listed(&ns, &project, &py_rejected).await, listed(&ns, &project, &cli_rejected).await);
    ns.cleanup().await;
}

/// The job id in "... so job ID was not queued".
fn job_in(stderr: &str) -> String {
    let rest = stderr.split("so job ").nth(1).unwrap_or_else(|| panic!("no job id in {stderr}"));
    rest.split(' ').next().expect("an id").to_owned()
}
