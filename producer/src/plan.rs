//! From the command line and the project file to the jobs to queue: which operations, the
//! target each asks for (flags beat the file), and the job itself (env and timeout merged).
//!
//! Pure but for the clock and the job id: it checks everything before anything connects.

use std::collections::BTreeMap;

use runway_broker::protocol::{self, Job, Target, VERSION, now_ms};
use uuid::Uuid;

use crate::cli::JobArgs;
use crate::exit::CliError;
use crate::identity;
use crate::project::{Concurrency, Operation, Project};

/// The operation `name` of the project file.
pub fn find_operation<'a>(project: &'a Project, name: &str) -> Result<&'a Operation, CliError> {
    project.operations.get(name).ok_or_else(|| CliError::UnknownOperation {
        name: name.to_owned(),
        defined: project.operations.keys().cloned().collect(),
    })
}

/// The operations of `up`: build, deploy, release, skipping (with a note) those not defined.
pub fn up_operations(project: &Project, quiet: bool) -> Result<Vec<(String, JobArgs)>, CliError> {
    let mut operations = Vec::new();
    for name in ["build", "deploy", "release"] {
        if project.operations.contains_key(name) {
            operations.push((name.to_owned(), JobArgs::default()));
        } else if !quiet {
            eprintln!("runway: skipping {name}: not defined in {}", project.path.display());
        }
    }
    if operations.is_empty() {
        return Err(CliError::Usage(format!(
            "`up` runs build, deploy and release, and {} defines none of them",
            project.path.display()
        )));
    }
    Ok(operations)
}

/// The remote target a job asks for (flags beat the project file), or `None` for the runner
/// inside this CLI.
pub fn remote_target(args: &JobArgs, operation: &Operation, has_server: bool) -> Result<Option<Target>, CliError> {
    let flagged = if args.remote {
        Some(Target::Any)
    } else if let Some(id) = &args.runner {
        runway_broker::topology::check_runner_id(id).map_err(|err| CliError::Usage(err.to_string()))?;
        Some(Target::Runner(id.clone()))
    } else if !args.labels.is_empty() {
        let labels: BTreeMap<String, String> = args.labels.iter().cloned().collect();
        runway_broker::topology::check_labels(&labels).map_err(|err| CliError::Usage(err.to_string()))?;
        Some(Target::Labels(labels))
    } else {
        None
    };
    let target = flagged.or_else(|| operation.target.clone());
    let target = match (target, args.detach) {
        // A detached job must outlive this CLI, so it cannot run inside it.
        (None, true) => Some(Target::Any),
        (target, _) => target,
    };
    if target.is_some() && !has_server {
        let why = if args.detach { "--detach" } else { "a remote target (--remote, --runner, --label or `target`)" };
        return Err(CliError::Usage(format!(
            "{why} needs a server: set [server] url in runway.toml, RUNWAY_SERVER, or --server URL (operation `{}`)",
            operation.name
        )));
    }
    Ok(target)
}

/// When a job of `operation` is due, if later than now: `--at`, `--delay`, else the file's
/// `delay`. A time that has passed is an error (exit 64), not a job run at once.
pub fn due_at_ms(operation: &Operation, args: &JobArgs, now: u64) -> Result<Option<u64>, CliError> {
    if let Some(at) = args.at {
        let at_ms = at.duration_since(std::time::UNIX_EPOCH).map(protocol::to_ms).unwrap_or(0);
        if at_ms <= now {
            return Err(CliError::Usage(format!(
                "--at {} is in the past (it is {} now); expected a time to come, or no --at to run it now",
                humantime::format_rfc3339_seconds(at),
                humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
            )));
        }
        return Ok(Some(at_ms));
    }
    Ok(args.delay.or(operation.delay).map(|delay| now.saturating_add(protocol::to_ms(delay))))
}

/// The job for `operation`: flags beat the project file for env and timeout; its secrets are
/// the file's and the flags', by name only.
pub fn build_job(project: &Project, operation: &Operation, args: &JobArgs, target: Target) -> Job {
    let mut env = operation.env.clone();
    env.extend(args.env.iter().cloned());
    let mut secrets = operation.secrets.clone();
    for name in &args.secrets {
        if !secrets.contains(name) {
            secrets.push(name.clone());
        }
    }
    Job {
        v: VERSION,
        id: Uuid::now_v7(),
        operation: operation.name.clone(),
        project: project.name.clone(),
        command: operation.command.clone(),
        args: args.args.clone(),
        env,
        secrets,
        workdir: Some(project.dir.display().to_string()),
        timeout_ms: args.timeout.or(operation.timeout).map(protocol::to_ms),
        kill_grace_ms: operation.kill_grace.map(protocol::to_ms),
        target,
        retry_on_lost: operation.retry_on_lost,
        attempt: 1,
        created_at_ms: now_ms(),
        queued_by: identity::user_at_host(),
        group: None,
        not_before_ms: None,
        retry: operation.retry.clone(),
    }
}

/// The concurrency group of a job for `operation` (the flag beats the file; `deploy` and
/// `release` default to `<project>.<operation>`). Groups are served by remote runners: a job
/// for this CLI's own runner or for a label set runs in none, and asking for one is an error.
pub fn concurrency_group(
    project: &Project,
    operation: &Operation,
    args: &JobArgs,
    target: Option<&Target>,
) -> Result<Option<String>, CliError> {
    let explicit = match (&args.concurrency_group, &operation.concurrency) {
        (Some(flag), _) => Some(flag.clone()),
        (None, Concurrency::Group(group)) => Some(group.clone()),
        (None, Concurrency::Off) => return Ok(None),
        (None, Concurrency::Default) => None,
    };
    let serves_groups = matches!(target, Some(Target::Any));
    match explicit {
        Some(group) if serves_groups => {
            runway_broker::topology::check_group(&group).map_err(|err| CliError::Usage(err.to_string()))?;
            Ok(Some(group))
        }
        Some(group) => Err(CliError::Usage(format!(
            "concurrency group `{group}` (operation `{}`) needs a job any remote runner may take (--remote); \
             groups are not served for label sets or single runners yet",
            operation.name
        ))),
        None if serves_groups && matches!(operation.name.as_str(), "deploy" | "release") => {
            let group = format!("{}.{}", project.name, operation.name);
            Ok(runway_broker::topology::check_group(&group).is_ok().then_some(group))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;

    fn project() -> Project {
        let text = "[operations.deploy]\nrun = \"./deploy\"\ntimeout = \"10m\"\nenv = { STAGE = \"file\", KEEP = \"1\" }\n\
                    target = { labels = { env = \"prod\" } }\n";
        crate::project::parse(Path::new("/nonexistent/shop/runway.toml"), text).expect("valid project file")
    }

    #[test]
    fn flags_beat_the_file_for_env_timeout_and_target() {
        let project = project();
        let deploy = find_operation(&project, "deploy").expect("defined");
        let args = JobArgs {
            env: vec![("STAGE".to_owned(), "flag".to_owned())],
            timeout: Some(Duration::from_secs(5)),
            runner: Some("w-1".to_owned()),
            ..JobArgs::default()
        };
        let target = remote_target(&args, deploy, true).expect("valid").expect("remote");
        assert_eq!(target, Target::Runner("w-1".to_owned()));
        let job = build_job(&project, deploy, &args, target);
        assert_eq!(job.env.get("STAGE").map(String::as_str), Some("flag"));
        assert_eq!(job.env.get("KEEP").map(String::as_str), Some("1"));
        assert_eq!(job.timeout_ms, Some(5000));
        assert!(job.secrets.is_empty());
        let from_file = remote_target(&JobArgs::default(), deploy, true).expect("valid");
        assert_eq!(from_file, Some(Target::Labels([("env".to_owned(), "prod".to_owned())].into())));
    }

    #[test]
    fn secrets_are_the_files_and_the_flags_by_name() {
        let text = "[operations.deploy]\nrun = \"./deploy\"\nsecrets = [\"DEPLOY_TOKEN\"]\n";
        let project = crate::project::parse(Path::new("/nonexistent/shop/runway.toml"), text).expect("valid");
        let deploy = find_operation(&project, "deploy").expect("defined");
        let args = JobArgs { secrets: vec!["DB".to_owned(), "DEPLOY_TOKEN".to_owned()], ..JobArgs::default() };
        let job = build_job(&project, deploy, &args, Target::Any);
        assert_eq!(job.secrets, ["DEPLOY_TOKEN", "DB"]);
        assert!(job.env.is_empty(), "a secret is never an env value");
    }

    #[test]
    fn a_remote_target_or_detach_needs_a_server() {
        let project = project();
        let deploy = find_operation(&project, "deploy").expect("defined");
        let err = remote_target(&JobArgs::default(), deploy, false).expect_err("no server");
        assert!(err.to_string().contains("needs a server"), "{err}");
        assert!(matches!(find_operation(&project, "nope"), Err(CliError::UnknownOperation { .. })));
    }

    #[test]
    fn deploy_and_release_get_a_group_per_project_unless_turned_off() {
        let text = "[operations.deploy]\nrun = \"d\"\n\n[operations.release]\nrun = \"r\"\nconcurrency = false\n\n\
                    [operations.build]\nrun = \"b\"\n";
        let project = crate::project::parse(Path::new("/nonexistent/shop/runway.toml"), text).expect("valid");
        let any = Some(&Target::Any);
        let group = |name: &str, args: &JobArgs, target: Option<&Target>| {
            concurrency_group(&project, find_operation(&project, name).expect("defined"), args, target)
        };
        let none = JobArgs::default();
        assert_eq!(group("deploy", &none, any).expect("valid"), Some("shop.deploy".to_owned()));
        assert_eq!(group("release", &none, any).expect("valid"), None, "concurrency = false");
        assert_eq!(group("build", &none, any).expect("valid"), None);
        assert_eq!(group("deploy", &none, None).expect("valid"), None, "this CLI's own runner serves no group");
        let flagged = JobArgs { concurrency_group: Some("prod".to_owned()), ..JobArgs::default() };
        assert_eq!(group("build", &flagged, any).expect("valid"), Some("prod".to_owned()));
        let err = group("build", &flagged, None).expect_err("a group needs a remote job");
        assert!(matches!(err, CliError::Usage(_)), "{err}");
    }
}
