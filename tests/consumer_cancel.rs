//! A consumer the broker cancels (its queue deleted, a leader gone) is consumed again, not
//! taken for the end: the runner declares the queue again and serves it.

use runway_broker::protocol::Target;

use crate::support::{Namespace, Project, args, op};

#[tokio::test]
async fn a_shared_queue_deleted_under_a_runner_is_declared_and_consumed_again() {
    let ns = Namespace::new().await;
    let mut worker = ns.worker("w-cancelled", &[]).await;
    let queue = ns.topology.job_queue(&Target::Any);
    ns.conn().delete_queue(&queue).await.expect("delete the shared queue under its consumer");
    worker.wait_for_log("reconnected to the broker").await;
    let project = Project::new(&op("job", "echo ran"));
    let run = project.runway(&args(&ns.flags(), &["run", "job"])).await;
    run.assert_code(0);
    assert_eq!(run.stdout().trim(), "ran");
    ns.cleanup().await;
}
