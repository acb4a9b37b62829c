//! Jobs a runner cannot run (an empty command, an unknown builtin, a body that is not JSON, one
//! for another runner, one too large) end their followers as `rejected` and keep their properties in the dead letters.

use runway_broker::protocol::{self, Command, Event, EventBody, Job, Queued, Target};
use runway_broker::{ConsumeOptions, Message};
use uuid::Uuid;

use crate::support::{Namespace, PATIENCE, Project, args};

fn job(id: Uuid, operation: &str, command: Command) -> Job {
    Job { id, ..Job::new(operation, "rejections", command, "tests@rejections") }
}

#[tokio::test]
async fn a_job_the_runner_cannot_run_ends_its_follower_as_rejected_and_keeps_its_properties() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    let _worker = ns.worker("w-reject", &[]).await;
    let project = Project::empty();
    let unknown_builtin = {
        let mut value = serde_json::to_value(job(Uuid::nil(), "x", Command::Builtin(protocol::Builtin::Noop)))
            .expect("a job is JSON");
        value["command"] = serde_json::json!({"builtin": "frobnicate"});
        value
    };
    // (operation, body given the id, what the reason says)
    type Body = Box<dyn Fn(Uuid) -> Vec<u8>>;
    let cases: Vec<(&str, Body, &str)> = vec![
        ("empty", Box::new(|id| protocol::encode(&job(id, "empty", Command::Shell("  ".into())))), "empty command"),
        (
            "frobnicate",
            Box::new(move |id| {
                let mut value = unknown_builtin.clone();
                value["id"] = id.to_string().into();
                serde_json::to_vec(&value).expect("JSON")
            }),
            "frobnicate",
        ),
        ("garbled", Box::new(|_| b"{this is not json".to_vec()), "not valid JSON"),
        (
            "misrouted",
            Box::new(|id| {
                let misrouted = Job {
                    target: Target::Runner("w-elsewhere".into()),
                    ..job(id, "misrouted", Command::Shell("true".into()))
                };
                protocol::encode(&misrouted)
            }),
            "bad target",
        ),
    ];
    let queue = ns.topology.job_queue(&Target::Any);
    let mut sent = Vec::new();
    for (operation, body, reason) in &cases {
        let id = Uuid::now_v7();
        let record = job(id, operation, Command::Shell("true".into()));
        // What a client does first: the `queued` record, so that the job can be looked up.
        let queued = Event {
            v: protocol::VERSION,
            job: id,
            seq: 0,
            ts: protocol::now_ms(),
            runner: String::new(),
            attempt: 1,
            body: EventBody::Queued(Queued::of(&record)),
        };
        ns.topology.publish_event(ns.conn(), &queued).await.expect("publish").wait().await.expect("confirm");
        let follower = project.spawn_runway(&args(&flags, &["job", "logs", &id.to_string(), "--follow"]));
        let mut message = Message::json(body(id), "job");
        message.properties.persistent = true;
        message.properties.message_id = Some(id.to_string());
        message.properties.correlation_id = Some(id.to_string());
        message.properties.timestamp_ms = Some(record.created_at_ms);
        ns.conn().publish_confirmed("", &queue, &message, true).await.expect("publish the bad job");
        let followed = follower.finish().await;
        followed.assert_code(76);
        let inspect = project.runway(&args(&flags, &["job", "inspect", &id.to_string()])).await;
        inspect.assert_code(0);
        assert!(inspect.stdout().contains("rejected"), "{}", inspect.stdout());
        assert!(inspect.stdout().contains(reason), "inspect should say `{reason}`: {}", inspect.stdout());
        assert!(inspect.stdout().contains("w-reject"), "inspect should name the runner: {}", inspect.stdout());
        sent.push((id, record.created_at_ms, *reason));
    }
    let list = project.runway(&args(&flags, &["job", "list", "--json"])).await;
    list.assert_code(0);
    for (id, _, _) in &sent {
        let line = list.stdout().lines().find(|line| line.contains(&id.to_string())).map(str::to_owned);
        let line = line.unwrap_or_else(|| panic!("job list shows {id}: {}", list.stdout()));
        assert!(line.contains(r#""state":"rejected""#), "{line}");
    }
    let mut dead =
        ns.conn().consume(&ns.topology.dead_queue(), &ConsumeOptions::with_prefetch(10)).await.expect("consume");
    for (id, created_at_ms, reason) in &sent {
        let letter = tokio::time::timeout(PATIENCE, dead.next())
            .await
            .expect("a dead letter")
            .expect("consumer open")
            .expect("delivery");
        let id = id.to_string();
        assert_eq!(letter.properties.message_id.as_deref(), Some(id.as_str()));
        assert_eq!(letter.properties.correlation_id.as_deref(), Some(id.as_str()));
        // AMQP timestamps are whole seconds.
        assert_eq!(letter.properties.timestamp_ms.map(|ms| ms / 1000), Some(created_at_ms / 1000));
        let header = letter.properties.header_str("x-runway-reason").expect("a reason header");
        assert!(header.contains(reason), "{header}");
        letter.acker.ack().await.expect("ack");
    }
    drop(dead);
    ns.cleanup().await;
}

#[tokio::test]
async fn an_attached_cli_whose_job_is_too_large_for_the_runner_says_rejected_and_exits_76() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    let _worker = ns.worker("w-small", &[]).await;
    // Over the runner's bound of 1 MiB: the runner does not read it, and finds the job's id in the
    // message's correlation_id.
    let toml = format!("[operations.huge]\nrun = \"echo {}\"\n", "x".repeat(1100 * 1024));
    let project = Project::new(&toml);
    let run = project.runway(&args(&flags, &["run", "huge", "--remote"])).await;
    run.assert_code(76);
    assert!(run.stderr.contains("huge rejected: "), "{}", run.stderr);
    assert!(run.stderr.contains("larger than the bound"), "{}", run.stderr);
    ns.cleanup().await;
}
