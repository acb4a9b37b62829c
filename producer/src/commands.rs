//! Dispatch: each `runway` command to the module that does it, and an error to its exit code.
//!
//! Nothing here does a command's work: see `operations` (run and friends), `list`, `inspect`,
//! `logs`, `cancel` and `runners`.

use runway_broker::Connection;
use runway_broker::roles::Role;
use runway_broker::topology::Topology;

use crate::attach::Interrupts;
use crate::cancel;
use crate::cli::{Cli, Command, JobArgs, JobCommand, RunnerCommand};
use crate::connect;
use crate::exit::CliError;
use crate::init;
use crate::inspect;
use crate::list::{self, ListFilter};
use crate::logs::{self, LogsOptions};
use crate::operations::{self, Operations};
use crate::roles::{self, RolesRequest};
use crate::runners;
use crate::settings::{self, Settings};
use crate::shell;
use crate::submit;
use crate::ui;

/// Run the parsed command line; `interrupts` yields once per Ctrl-C. Returns the exit code.
pub async fn run(cli: Cli, mut interrupts: impl Interrupts) -> u8 {
    match dispatch(&cli, &mut interrupts).await {
        Ok(code) => code,
        Err(CliError::StdoutClosed) => CliError::StdoutClosed.exit_code(),
        Err(CliError::Broker(err @ runway_broker::Error::AccessRefused { .. })) => {
            let err = roles::refused(err, role_of(&cli.command), &namespace(&cli));
            eprintln!("runway: error: {err}");
            err.exit_code()
        }
        Err(err) => {
            eprintln!("runway: error: {err}");
            err.exit_code()
        }
    }
}

/// The role whose rights a command needs.
fn role_of(command: &Command) -> Role {
    match command {
        // A job run inside this CLI (no remote target) also takes runner rights.
        Command::Run { job, .. } | Command::Build(job) | Command::Deploy(job) | Command::Release(job)
            if !job.remote && job.runner.is_none() && job.labels.is_empty() && !job.detach =>
        {
            Role::Developer
        }
        Command::Up { .. } => Role::Developer,
        Command::Run { .. }
        | Command::Build(_)
        | Command::Deploy(_)
        | Command::Release(_)
        | Command::Submit
        | Command::Job { command: JobCommand::Cancel { .. } } => Role::Submitter,
        Command::Job { .. } | Command::Runner { .. } | Command::Ui { .. } => Role::Observer,
        Command::Roles { .. } => Role::Admin,
        // These never reach a broker.
        Command::Init | Command::Completions { .. } | Command::Man => Role::Observer,
    }
}

/// The namespace the command used, for hints.
fn namespace(cli: &Cli) -> String {
    let project = settings::optional_project(cli.file.as_deref()).ok().flatten();
    Settings::merge(cli, project.as_ref()).namespace
}

async fn dispatch(cli: &Cli, interrupts: &mut impl Interrupts) -> Result<u8, CliError> {
    let named = |name: &str, job: &JobArgs| Operations::Named(vec![(name.to_owned(), job.clone())]);
    match &cli.command {
        Command::Run { operation, job } => operations::run(cli, named(operation, job), job.json, interrupts).await,
        Command::Build(job) => operations::run(cli, named("build", job), job.json, interrupts).await,
        Command::Deploy(job) => operations::run(cli, named("deploy", job), job.json, interrupts).await,
        Command::Release(job) => operations::run(cli, named("release", job), job.json, interrupts).await,
        Command::Up { json } => operations::run(cli, Operations::Up, *json, interrupts).await,
        Command::Job { command } => job_command(cli, command).await,
        Command::Submit => submit::run(cli, std::io::stdin().lock()).await,
        Command::Runner { command: RunnerCommand::List { json } } => {
            let (conn, topology) = connect_server(cli).await?;
            let code = runners::list(&conn, &topology, *json).await;
            conn.close().await;
            code
        }
        Command::Roles { role, user, vhost, apply } => {
            let namespace = cli.namespace.as_deref().unwrap_or(runway_broker::topology::DEFAULT_NAMESPACE);
            let topology = Topology::new(namespace).map_err(|err| CliError::Usage(err.to_string()))?;
            roles::roles(&topology, &RolesRequest { role: *role, user, vhost, apply: *apply })
        }
        Command::Ui { listen, read_only } => {
            let (conn, topology) = connect_server(cli).await?;
            let options = ui::UiOptions { listen: *listen, read_only: *read_only };
            let code = ui::serve(conn.clone(), topology, options, interrupts).await;
            conn.close().await;
            code
        }
        Command::Init => init::init(cli.file.as_deref()),
        Command::Completions { shell } => shell::completions(*shell),
        Command::Man => shell::man(),
    }
}

/// `runway job ...`: these read the server's history, so they need a server, not a project.
async fn job_command(cli: &Cli, command: &JobCommand) -> Result<u8, CliError> {
    let (conn, topology) = connect_server(cli).await?;
    let code = match command {
        JobCommand::List { state, since, limit, json } => {
            let filter = ListFilter { state: *state, since: *since, limit: *limit };
            list::list(&conn, &topology, &filter, *json).await
        }
        JobCommand::Inspect { id, json } => inspect::inspect(&conn, &topology, id, *json).await,
        JobCommand::Logs { id, follow, timestamps } => {
            let options = LogsOptions { follow: *follow, timestamps: *timestamps, quiet: cli.quiet };
            logs::logs(&conn, &topology, id, options).await
        }
        JobCommand::Cancel { id, force } => cancel::cancel(&conn, &topology, id, *force).await,
    };
    conn.close().await;
    code
}

/// Connect to the server that the flags, the environment or the project file (if any) name.
async fn connect_server(cli: &Cli) -> Result<(Connection, Topology), CliError> {
    let project = settings::optional_project(cli.file.as_deref())?;
    connect::connect_server(&Settings::merge(cli, project.as_ref())).await
}
