//! Waiting on a concurrency group: a job queued behind a running one says who holds the group
//! (attached and in `job inspect`); `concurrency_pending = "cancel"` cancels the waiting jobs.

use crate::support::{Namespace, Project, args};

/// Runs until the file `release` (or `release-<its job id>`) exists.
const HOLD: &str = "echo started; while [ ! -e release ] && [ ! -e release-$RUNWAY_JOB_ID ]; do sleep 0.05; done";

fn shop(extra: &str) -> Project {
    Project::new(&format!("[project]\nname = \"shop\"\n\n[operations.deploy]\nrun = {HOLD:?}\n{extra}"))
}

async fn detached_deploy(ns: &Namespace, project: &Project) -> String {
    let run = project.runway(&args(&ns.flags(), &["deploy", "--remote", "--detach"])).await;
    run.assert_code(0);
    run.stdout().trim().to_owned()
}

async fn wait_started(ns: &Namespace, id: &str) {
    ns.read_history(|event| event["job"] == id && event["body"]["kind"] == "started").await;
}

fn short(id: &str) -> &str {
    &id[id.len() - 12..]
}

#[tokio::test]
async fn a_job_waiting_on_its_group_says_who_holds_it_attached_and_in_job_inspect() {
    let ns = Namespace::new().await;
    let _worker = ns.worker("w-hold", &["--concurrency", "4"]).await;
    let project = shop("");
    let holder = detached_deploy(&ns, &project).await;
    wait_started(&ns, &holder).await;
    let next = detached_deploy(&ns, &project).await;
    let mut attached = project.spawn_runway(&args(&ns.flags(), &["deploy", "--remote"]));
    let queued = attached.stderr_line_containing("as job ").await;
    let waiting_id = queued.rsplit(' ').next().expect("job id").to_owned();
    let line = attached.stderr_line_containing("waiting: ").await;
    let expected = format!("runway: waiting: shop.deploy is held by job {} (", short(&holder));
    assert!(line.starts_with(&expected), "{line}");
    assert!(line.contains(", running ") && line.ends_with("(1 more ahead)"), "{line}");
    let inspect = project.runway(&args(&ns.flags(), &["job", "inspect", &waiting_id])).await;
    inspect.assert_code(0);
    assert!(inspect.stdout().contains("state      queued"), "{}", inspect.stdout());
    let says = format!("waiting    shop.deploy is held by job {} (", short(&holder));
    assert!(inspect.stdout().contains(&says), "{}", inspect.stdout());
    // The first one ends, the next takes the group over: the waiting job says so.
    std::fs::write(project.path().join(format!("release-{holder}")), "").expect("release the first");
    let line = attached.stderr_line_containing(&format!("held by job {}", short(&next))).await;
    assert!(line.starts_with("runway: waiting: shop.deploy is held by job "), "{line}");
    std::fs::write(project.path().join("release"), "").expect("release");
    let run = attached.finish().await;
    run.assert_code(0);
    ns.cleanup().await;
}

#[tokio::test]
async fn concurrency_pending_cancel_cancels_the_waiting_jobs_of_the_group_but_not_the_running_one() {
    let ns = Namespace::new().await;
    let _worker = ns.worker("w-pending", &["--concurrency", "4"]).await;
    let project = shop("concurrency_pending = \"cancel\"\n");
    let running = detached_deploy(&ns, &project).await;
    wait_started(&ns, &running).await;
    // Queued behind it with the default (the flag-free CLI of an older habit): they wait.
    let plain = shop("");
    std::fs::copy(plain.path().join("runway.toml"), project.path().join("waiting.toml")).expect("copy");
    let mut waiting = Vec::new();
    for _ in 0..2 {
        let run =
            project.runway(&args(&ns.flags(), &["--file", "waiting.toml", "deploy", "--remote", "--detach"])).await;
        run.assert_code(0);
        waiting.push(run.stdout().trim().to_owned());
    }
    let newest = project.runway(&args(&ns.flags(), &["deploy", "--remote", "--detach"])).await;
    newest.assert_code(0);
    let newest_id = newest.stdout().trim().to_owned();
    for id in &waiting {
        assert!(
            newest.stderr.contains(&format!("cancelled job {id}, waiting in group shop.deploy")),
            "{}",
            newest.stderr
        );
        let inspect = project.runway(&args(&ns.flags(), &["job", "inspect", id])).await;
        assert!(inspect.stdout().contains("state      cancelled"), "{}", inspect.stdout());
        let why = format!("superseded by job {} in concurrency group shop.deploy", short(&newest_id));
        assert!(inspect.stdout().contains(&why), "{}", inspect.stdout());
    }
    let inspect = project.runway(&args(&ns.flags(), &["job", "inspect", &running])).await;
    assert!(inspect.stdout().contains("state      running"), "the running one goes on: {}", inspect.stdout());
    std::fs::write(project.path().join("release"), "").expect("release");
    for (id, status) in
        [(&running, "success"), (&waiting[0], "cancelled"), (&waiting[1], "cancelled"), (&newest_id, "success")]
    {
        let events = ns.completed_events(id).await;
        let completed = events.last().expect("completed");
        assert_eq!(completed["body"]["data"]["status"], status, "{id}: {completed}");
        if status == "cancelled" {
            assert!(events.iter().all(|event| event["body"]["kind"] != "started"), "never ran: {events:?}");
        }
    }
    ns.cleanup().await;
}
