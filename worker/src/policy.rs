//! The runner policy: whose jobs a runner runs, by the job's verified submitter (the delivery's
//! `user_id`), its project and its operation; and the rejection of every other job.
//!
//! It trusts only the broker's `user_id`, never the body's `queued_by`. It does not decide how a
//! job runs.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use std::collections::BTreeMap;

use runway_broker::protocol::{self, Completed, Event, EventBody, Job, Status, Target};
use runway_broker::topology::Topology;
use runway_broker::{Connection, Delivery, identity};

use uuid::Uuid;

use crate::job::settle;

/// One `--allow USER[:PROJECT[/OPERATION]]` rule; `*` in a part matches anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow {
    user: String,
    project: String,
    operation: String,
}

impl Allow {
    /// Parse `USER[:PROJECT[/OPERATION]]`; a missing part is `*`.
    pub fn parse(text: &str) -> Result<Allow, String> {
        let (user, rest) = text.split_once(':').unwrap_or((text, "*"));
        let (project, operation) = rest.split_once('/').unwrap_or((rest, "*"));
        if [user, project, operation].iter().any(|part| part.is_empty()) {
            return Err(format!("`{text}` is not USER[:PROJECT[/OPERATION]] (use `*` for any)"));
        }
        Ok(Allow { user: user.to_owned(), project: project.to_owned(), operation: operation.to_owned() })
    }

    fn allows(&self, user: &str, job: &Job) -> bool {
        let part = |rule: &str, value: &str| rule == "*" || rule == value;
        part(&self.user, user) && part(&self.project, &job.project) && part(&self.operation, &job.operation)
    }
}

/// The ids of the jobs a CLI submitted, shared with the runner inside it.
#[derive(Debug, Clone, Default)]
pub struct SubmittedHere(Arc<Mutex<HashSet<Uuid>>>);

impl SubmittedHere {
    /// Note a job before it is published, so its runner knows it when it arrives.
    pub fn insert(&self, job: Uuid) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).insert(job);
    }

    fn contains(&self, job: Uuid) -> bool {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).contains(&job)
    }
}

/// Whose jobs a runner runs.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Empty: every verified submitter (the broker's permissions decide who may submit).
    pub allow: Vec<Allow>,
    /// Run jobs that carry no verified submitter (local development against a broker that does
    /// not set `user_id`). Off unless `--insecure-allow-anonymous`.
    pub allow_anonymous: bool,
    /// Who may cancel anyone's job (`*`: every verified user); a job's submitter always may.
    pub cancellers: Vec<String>,
    /// For the runner inside a CLI: run only the jobs that CLI submitted.
    pub only: Option<SubmittedHere>,
}

impl Policy {
    /// Whether `canceller` may cancel a job sent by `submitter`.
    pub fn may_cancel(&self, canceller: Option<&str>, submitter: Option<&str>) -> bool {
        match canceller {
            None => self.allow_anonymous,
            Some(user) => {
                Some(user) == submitter || self.cancellers.iter().any(|allowed| allowed == "*" || allowed == user)
            }
        }
    }

    /// `Ok` to run `job`, sent by `submitter`; otherwise why not.
    pub fn check(&self, submitter: Option<&str>, job: &Job) -> Result<(), String> {
        if let Some(only) = &self.only
            && !only.contains(job.id)
        {
            return Err("the runner inside a runway CLI runs only the jobs that CLI submitted".to_owned());
        }
        let Some(user) = submitter else {
            if self.allow_anonymous {
                return Ok(());
            }
            return Err(
                "the job carries no verified submitter (AMQP user_id); this runner refuses anonymous jobs".to_owned()
            );
        };
        if self.allow.is_empty() || self.allow.iter().any(|rule| rule.allows(user, job)) {
            return Ok(());
        }
        Err(format!(
            "this runner's policy does not allow user `{user}` to run `{}` of project `{}`",
            job.operation, job.project
        ))
    }
}

/// The verified submitter of a job delivery.
/// Whether a job for `target` is one this runner (`id`, holding `labels`) may run: a job that
/// reached it by a routing key its body does not match (published past the jobs exchange's
/// routing, or a target changed in transit) is refused with why, never run on the wrong runner.
///
/// A job for any runner fits every runner: a concurrency group's jobs are all `any`, also when a
/// runner inside the CLI (which takes only its own job ids, see [`Policy`]) runs them.
pub(crate) fn target_fits(target: &Target, id: &str, labels: &BTreeMap<String, String>) -> Result<(), String> {
    match target {
        Target::Runner(wanted) if wanted == id => Ok(()),
        Target::Runner(wanted) => {
            Err(format!("bad target: the job is for runner `{wanted}`, and this is runner `{id}`"))
        }
        Target::Any => Ok(()),
        Target::Labels(wanted) => match wanted.iter().find(|(key, value)| labels.get(*key) != Some(*value)) {
            None => Ok(()),
            Some((key, value)) => {
                Err(format!("bad target: the job needs label `{key}={value}`, which runner `{id}` does not have"))
            }
        },
    }
}

pub(crate) fn submitter(delivery: &Delivery) -> Option<&str> {
    identity::sender(delivery)
}

/// Answer a job the policy refuses: a `rejected` completion that says why, then the job to the
/// dead-letter queue, then the delivery acknowledged. Whether it went to the dead letters.
pub(crate) async fn reject(
    conn: &Connection,
    topology: &Topology,
    runner: &str,
    job: &Job,
    delivery: Delivery,
    why: &str,
) -> bool {
    tracing::warn!(job = %job.id, operation = %job.operation, why, "rejecting a job");
    let record = Event {
        v: protocol::VERSION,
        job: job.id,
        seq: 0,
        ts: protocol::now_ms(),
        runner: runner.to_owned(),
        attempt: job.attempt,
        body: EventBody::Completed(Completed::without_exit(Status::Rejected, why.to_owned())),
    };
    match topology.publish_event(conn, &record).await {
        Ok(confirm) => settle(confirm.wait().await),
        Err(err) => settle(Err(err)),
    }
    let queue = delivery.queue.clone();
    let dead_lettered = match topology.dead_letter(conn, delivery.body, &delivery.properties, why, &queue).await {
        Ok(()) => true,
        Err(err) => {
            // Dropping it is the safe side: it was refused, and must not run elsewhere by default.
            tracing::warn!(error = %err, "dead-lettering a rejected job failed; dropping it");
            false
        }
    };
    settle(delivery.acker.ack().await);
    dead_lettered
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_job_fits_only_the_runner_its_target_names() {
        use super::{BTreeMap, Target, target_fits};
        let labels = BTreeMap::from([("os".to_owned(), "linux".to_owned()), ("gpu".to_owned(), "yes".to_owned())]);
        assert!(target_fits(&Target::Any, "r1", &labels).is_ok());
        assert!(target_fits(&Target::Runner("r1".into()), "r1", &labels).is_ok());
        let other = target_fits(&Target::Runner("r2".into()), "r1", &labels).expect_err("another runner's");
        assert!(other.contains("runner `r2`"), "{other}");
        let fits = BTreeMap::from([("os".to_owned(), "linux".to_owned())]);
        assert!(target_fits(&Target::Labels(fits), "r1", &labels).is_ok());
        let mac = BTreeMap::from([("os".to_owned(), "mac".to_owned())]);
        assert!(target_fits(&Target::Labels(mac), "r1", &labels).expect_err("no such label").contains("os=mac"));
    }

    use super::*;
    use runway_broker::protocol::Command;

    fn job(project: &str, operation: &str) -> Job {
        Job { created_at_ms: 0, ..Job::new(operation, project, Command::Shell("id".into()), "alice@laptop") }
    }

    #[test]
    fn rules_match_user_project_and_operation_with_wildcards() {
        let policy = Policy {
            allow: vec![Allow::parse("ci:web/deploy").expect("rule"), Allow::parse("alice").expect("rule")],
            allow_anonymous: false,
            cancellers: vec![],
            only: None,
        };
        assert!(policy.check(Some("ci"), &job("web", "deploy")).is_ok());
        assert!(policy.check(Some("ci"), &job("web", "build")).is_err());
        assert!(policy.check(Some("alice"), &job("any", "thing")).is_ok());
        let refused = policy.check(Some("mallory"), &job("web", "deploy")).expect_err("not allowed");
        assert!(refused.contains("user `mallory`") && refused.contains("`deploy` of project `web`"), "{refused}");
        assert_eq!(
            Allow::parse("ci:*/build"),
            Ok(Allow { user: "ci".into(), project: "*".into(), operation: "build".into() })
        );
        assert!(Allow::parse(":web").is_err());
    }

    #[test]
    fn a_cli_runner_runs_only_what_its_cli_submitted() {
        let mine = job("p", "o");
        let here = SubmittedHere::default();
        here.insert(mine.id);
        let policy = Policy { only: Some(here), ..Policy::default() };
        assert!(policy.check(Some("alice"), &mine).is_ok());
        assert!(policy.check(Some("alice"), &job("p", "o")).is_err());
    }

    #[test]
    fn only_the_submitter_or_an_operator_cancels_a_job() {
        let policy = Policy { cancellers: vec!["ops".into()], ..Policy::default() };
        assert!(policy.may_cancel(Some("alice"), Some("alice")));
        assert!(policy.may_cancel(Some("ops"), Some("alice")));
        assert!(!policy.may_cancel(Some("mallory"), Some("alice")));
        assert!(!policy.may_cancel(None, Some("alice")));
    }

    #[test]
    fn a_job_without_a_verified_submitter_runs_only_where_anonymous_jobs_are_allowed() {
        assert!(Policy::default().check(None, &job("p", "o")).is_err());
        assert!(Policy::default().check(Some("guest"), &job("p", "o")).is_ok());
        assert!(Policy { allow_anonymous: true, ..Policy::default() }.check(None, &job("p", "o")).is_ok());
    }
}
