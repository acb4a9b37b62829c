//! The runner policy on the real RabbitMQ: a worker runs only the jobs of the submitters it
//! allows, by the broker-verified `user_id`, and rejects the others saying why.

use crate::support::users::User;
use crate::support::{Namespace, Project, args, op};

#[tokio::test]
async fn a_worker_rejects_the_jobs_of_a_submitter_its_policy_does_not_allow() {
    let ns = Namespace::new().await;
    let alice = User::with_role(&ns.name, "submitter");
    let mallory = User::with_role(&ns.name, "submitter");
    let allow = format!("{}:*/build", alice.name);
    let _worker = ns.worker("w-policy", &["--allow", &allow]).await;
    let project = Project::new(&op("build", "echo built"));
    let run = project.runway(&args(&alice.flags(&ns.name), &["run", "build", "--remote"])).await;
    run.assert_code(0);
    // Mallory's job reaches the same worker and is refused: it never runs.
    let refused = project.runway(&args(&mallory.flags(&ns.name), &["run", "build", "--remote"])).await;
    refused.assert_code(76);
    assert!(!refused.stdout().contains("built"), "{}", refused.stdout());
    assert!(
        refused.stderr.contains(&format!("does not allow user `{}` to run `build`", mallory.name)),
        "{}",
        refused.stderr
    );
    let dead = ns.conn().queue_info(&ns.topology.dead_queue()).await.expect("info").expect("dead queue");
    assert_eq!(dead.messages, 1, "the rejected job is dead-lettered");
    ns.cleanup().await;
}
