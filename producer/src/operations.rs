//! `runway run|build|deploy|release|up`: plan the jobs, open a session, then queue each job and
//! attach to it (or, with `--detach`, print its id), stopping at the first that fails.
//!
//! One code path for every mode: local mode only swaps in the in-memory broker and an
//! in-process runner; the job is queued and followed through the broker interface all the same.

use crate::attach::{self, Interrupts};
use crate::cli::{Cli, JobArgs};
use crate::exit::{self, CliError};
use crate::group_wait;
use crate::plan;
use crate::printer::Style;
use crate::project::Pending;
use crate::session::Session;
use crate::settings::{self, Settings};

/// Run `operations` (names and their flags) of the project file; `json` prints events as JSON.
pub async fn run(
    cli: &Cli,
    operations: Operations,
    json: bool,
    interrupts: &mut impl Interrupts,
) -> Result<u8, CliError> {
    let project = settings::load_project(cli.file.as_deref())?;
    let operations = match operations {
        Operations::Named(operations) => operations,
        Operations::Up => plan::up_operations(&project, cli.quiet || json)?,
    };
    let settings = Settings::merge(cli, Some(&project));
    // Resolve everything before connecting, so bad input fails fast and changes nothing.
    let mut planned = Vec::new();
    for (name, args) in &operations {
        let operation = plan::find_operation(&project, name)?;
        let target = plan::remote_target(args, operation, settings.server.is_some())?;
        let group = plan::concurrency_group(&project, operation, args, target.as_ref())?;
        let due = plan::due_at_ms(operation, args, runway_broker::protocol::now_ms())?;
        planned.push((operation, args, target, group, due));
    }
    let needs_runner = planned.iter().any(|(_, _, target, _, _)| target.is_none());
    let mut session = Session::open(&settings, needs_runner).await?;
    let style = if json { Style::Json } else { Style::Human { quiet: cli.quiet } };
    let mut code = exit::SUCCESS;
    for (operation, args, target, group, due) in planned {
        let target = target.unwrap_or_else(|| session.own_target());
        let job = runway_broker::protocol::Job {
            group,
            not_before_ms: due,
            ..plan::build_job(&project, operation, args, target)
        };
        if let (Some(group), Pending::Cancel) = (&job.group, operation.concurrency_pending) {
            for id in group_wait::cancel_pending(session.conn(), session.topology(), group, job.id).await? {
                if !cli.quiet && !json {
                    eprintln!(
                        "runway: cancelled job {id}, waiting in group {group} (concurrency_pending = \"cancel\")"
                    );
                }
            }
        }
        if args.detach {
            session.submit(&job).await?;
            println!("{}", job.id);
            continue;
        }
        let completed = attach::submit_and_follow(&mut session, &job, style, interrupts).await?;
        code = exit::for_job(&completed);
        if code != exit::SUCCESS {
            break;
        }
    }
    session.close().await;
    Ok(code)
}

/// Which operations a command runs.
#[derive(Debug)]
pub enum Operations {
    /// These, with their flags, in order.
    Named(Vec<(String, JobArgs)>),
    /// `up`: build, deploy and release, those the project file defines.
    Up,
}
