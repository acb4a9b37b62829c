//! A server list (`--server a,b`): a worker and a CLI given a dead node besides a live one
//! connect to the live one, and say which node they use.

use crate::support::{Namespace, Project, amqp_url, args, op};

/// A URL nothing listens on, with a password that must never be shown.
const DEAD_NODE: &str = "amqp://guest:s3cret@127.0.0.1:1/%2f";

#[tokio::test]
async fn a_server_list_whose_first_node_is_dead_still_serves_and_runs_jobs() {
    let ns = Namespace::new().await;
    let list = format!("{DEAD_NODE},{}", amqp_url());
    // Listed order: the worker dials the dead node first, every time.
    let worker = ns.worker("w-list", &["--server", &list, "--server-order", "listed"]).await;
    let log = worker.log();
    assert!(log.contains("amqp://127.0.0.1:1/%2f") && log.contains("trying the next"), "{log}");
    assert!(!log.contains("s3cret"), "{log}");
    // The CLI shuffles: either order must work.
    let project = Project::new(&op("job", "echo ran"));
    let flags = ["--server".to_owned(), list.clone(), "--namespace".to_owned(), ns.name.clone()];
    let run = project.runway(&args(&flags, &["run", "job"])).await;
    run.assert_code(0);
    assert_eq!(run.stdout().trim(), "ran");
    assert!(run.stderr.contains("connected to amqp://127.0.0.1:5672/%2f"), "{}", run.stderr);
    assert!(!run.stderr.contains("s3cret"), "{}", run.stderr);
    ns.cleanup().await;
}

#[tokio::test]
async fn a_bad_entry_of_a_server_list_is_a_usage_error_naming_it() {
    let project = Project::new(&op("job", "echo ran"));
    let list = format!("{},amqp://guest:s3cret@127.0.0.1:notaport/", amqp_url());
    let run = project.runway(&["--server", &list, "job", "list"]).await;
    run.assert_code(64);
    assert!(run.stderr.contains("entry 2 of the server list"), "{}", run.stderr);
    assert!(!run.stderr.contains("s3cret"), "{}", run.stderr);
}
