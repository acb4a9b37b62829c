//! `runway submit`: JSON lines of jobs on stdin, queued with pipelined confirms against real
//! RabbitMQ and runway-workers; a job id per line out, bad input refused whole.

use std::collections::HashMap;
use std::process::Stdio;

use runway_broker::protocol::Target;
use tokio::io::AsyncWriteExt;

use crate::support::{Namespace, Project, args, binary};

/// `runway submit` with `input` on stdin: its exit code, stdout and stderr.
async fn submit(project: &Project, flags: &[String], input: &str) -> (Option<i32>, String, String) {
    let mut child = tokio::process::Command::new(binary("runway"))
        .args(args(flags, &["submit"]))
        .current_dir(project.path())
        .env_remove("RUNWAY_SERVER")
        .env_remove("RUNWAY_NAMESPACE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn runway submit");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(input.as_bytes()).await.expect("write stdin");
    drop(stdin);
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("runway submit finished")
        .expect("runway submit ran");
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).expect("UTF-8 output");
    (output.status.code(), text(output.stdout), text(output.stderr))
}

const PROJECT: &str = "[operations.greet]\nrun = \"echo hello\"\n[operations.noop]\nrun = { builtin = \"noop\" }\n";

#[tokio::test]
async fn submit_queues_every_line_and_prints_the_ids_in_input_order() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    let _worker = ns.worker("w-submit", &["--label", "os=linux"]).await;
    let project = Project::new(PROJECT);
    let input = "{\"operation\": \"greet\", \"args\": [\"one\"], \"env\": {\"N\": \"1\"}}\n\
                 \n\
                 {\"operation\": \"noop\", \"target\": {\"runner\": \"w-submit\"}}\n\
                 {\"operation\": \"greet\", \"args\": [\"three\"], \"target\": {\"labels\": {\"os\": \"linux\"}}}\n";
    let (code, stdout, stderr) = submit(&project, &flags, input).await;
    assert_eq!(code, Some(0), "{stderr}");
    let ids: Vec<String> = stdout.lines().map(str::to_owned).collect();
    assert_eq!(ids.len(), 3, "one id per job: {stdout}");
    // Each job has its `queued` record, with the arguments of its own line (it goes out before
    // the job, on another channel: readers fold a job's events in any order).
    let mut kinds: HashMap<String, Vec<String>> = HashMap::new();
    let mut args_of: HashMap<String, serde_json::Value> = HashMap::new();
    ns.read_history(|event| {
        let job = event["job"].as_str().unwrap_or_default().to_owned();
        if !ids.contains(&job) {
            return false;
        }
        let kind = event["body"]["kind"].as_str().unwrap_or_default().to_owned();
        if kind == "queued" {
            args_of.insert(job.clone(), event["body"]["data"]["args"].clone());
        }
        if kind == "completed" {
            assert_eq!(event["body"]["data"]["status"], "success", "{event}");
        }
        kinds.entry(job).or_default().push(kind);
        kinds.values().filter(|kinds| kinds.iter().any(|kind| kind == "completed")).count() == 3
    })
    .await;
    for id in &ids {
        assert_eq!(kinds[id].iter().filter(|kind| *kind == "queued").count(), 1, "{id}: {:?}", kinds[id]);
    }
    assert_eq!(args_of[&ids[0]], serde_json::json!(["one"]));
    assert_eq!(args_of[&ids[1]], serde_json::json!([]));
    assert_eq!(args_of[&ids[2]], serde_json::json!(["three"]));
    ns.cleanup().await;
}

#[tokio::test]
async fn submit_with_bad_lines_names_each_and_queues_nothing() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    let project = Project::new(PROJECT);
    let input = "{\"operation\": \"noop\"}\n{\"operation\": \"nope\"}\n{\"operation\": \"noop\"}\nnot json\n";
    let (code, stdout, stderr) = submit(&project, &flags, input).await;
    assert_eq!(code, Some(64), "{stderr}");
    assert_eq!(stdout, "", "no id: nothing was queued");
    assert!(stderr.contains("line 2: unknown operation `nope`"), "{stderr}");
    assert!(stderr.contains("line 4: not JSON"), "{stderr}");
    assert!(stderr.contains("2 bad line(s) in the input: nothing was queued"), "{stderr}");
    let any = ns.topology.job_queue_info(ns.conn(), &Target::Any).await.expect("queue info").expect("declared");
    assert_eq!(any.messages, 0, "the good lines were not queued either");
    ns.cleanup().await;
}

#[tokio::test]
async fn submit_reports_a_job_no_runner_serves_by_its_line_and_queues_the_rest() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    let project = Project::new(PROJECT);
    let input = "{\"operation\": \"noop\"}\n{\"operation\": \"noop\", \"target\": {\"runner\": \"nobody\"}}\n{\"operation\": \"noop\"}\n";
    let (code, stdout, stderr) = submit(&project, &flags, input).await;
    assert_eq!(code, Some(68), "{stderr}");
    assert_eq!(stdout.lines().count(), 2, "the two routable jobs were queued: {stdout}");
    assert!(stderr.contains("line 2: job ") && stderr.contains("no runner serves runner `nobody`"), "{stderr}");
    let any = ns.topology.job_queue_info(ns.conn(), &Target::Any).await.expect("queue info").expect("declared");
    assert_eq!(any.messages, 2);
    ns.cleanup().await;
}

#[tokio::test]
async fn submit_lines_with_a_delay_are_scheduled_and_one_in_the_past_is_refused() {
    let ns = Namespace::new().await;
    let project = Project::new(PROJECT);
    let (code, _, stderr) =
        submit(&project, &ns.flags(), "{\"operation\": \"greet\", \"at\": \"2020-01-01T00:00:00Z\"}\n").await;
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("line 1: --at 2020-01-01T00:00:00Z is in the past"), "{stderr}");
    let (code, stdout, stderr) = submit(&project, &ns.flags(), "{\"operation\": \"greet\", \"delay\": \"1h\"}\n").await;
    assert_eq!(code, Some(0), "{stderr}");
    let id = stdout.trim().to_owned();
    let inspect = project.runway(&args(&ns.flags(), &["job", "inspect", &id])).await;
    assert!(inspect.stdout().contains("state      scheduled"), "{}", inspect.stdout());
    ns.conn().delete_queue(&ns.topology.delay_queue(std::time::Duration::from_secs(3600))).await.expect("clean up");
    ns.cleanup().await;
}
