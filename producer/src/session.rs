//! A session: the CLI's connection to the broker and, in local and CLI-runner modes, the runner
//! inside this process; open it, submit jobs (recorded, then published and confirmed), close it.
//!
//! It does not follow a job's events (see `attach`).

use runway_broker::Connection;
use runway_broker::protocol::{Job, Target};
use runway_broker::topology::Topology;
use runway_worker::policy::SubmittedHere;
use runway_worker::{Runner, RunnerConfig, Shutdown};
use uuid::Uuid;

use crate::connect;
use crate::exit::CliError;
use crate::settings::Settings;
use crate::submit;

/// A connection to the broker, and the in-process runner when the mode has one.
#[derive(Debug)]
pub struct Session {
    conn: Connection,
    topology: Topology,
    runner: Option<Runner>,
    /// The runner's own connection, kept so its queue lives exactly as long as the session.
    runner_conn: Option<Connection>,
    /// The server list names several nodes (a cluster): status lines say which one is in use.
    several_nodes: bool,
    /// The jobs this CLI submitted: the only ones its runner runs.
    submitted: SubmittedHere,
}

impl Session {
    /// Connect as `settings` say; with `needs_runner`, start a by-id-only runner in this process.
    pub async fn open(settings: &Settings, needs_runner: bool) -> Result<Session, CliError> {
        let topology = settings.topology()?;
        let broker = connect::broker(settings.server.as_deref(), &settings.tls)?;
        let conn = connect::connect(&broker, &topology).await?;
        let several_nodes = broker.nodes() > 1;
        if !needs_runner {
            return Ok(Session {
                conn,
                topology,
                runner: None,
                runner_conn: None,
                several_nodes,
                submitted: SubmittedHere::default(),
            });
        }
        // Local and CLI-runner modes: a by-id-only runner inside this process, on a connection of
        // its own so that its exclusive queue lives exactly as long as it does.
        let runner_conn = broker.connect().await?;
        let mut config = RunnerConfig::new(format!("cli-{}", &Uuid::now_v7().simple().to_string()[20..]));
        config.by_id_only = true;
        config.in_process = true;
        // The developer's own environment, but the connection settings (see docs/SECURITY.md).
        config.env = runway_worker::environment::in_process(std::env::vars_os());
        let utf8 =
            std::env::vars_os().filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)));
        config.secrets = runway_worker::secrets::Secrets::from_vars(utf8);
        let submitted = SubmittedHere::default();
        config.policy.only = Some(submitted.clone());
        let runner = runway_worker::start(&runner_conn, &topology, config).await.map_err(|err| match err {
            // Running a job here takes runner rights too: say which role has them (exit 77).
            runway_worker::RunnerError::Setup {
                source: source @ runway_broker::Error::AccessRefused { .. }, ..
            } => CliError::Broker(source),
            err => CliError::Internal(err.to_string()),
        })?;
        Ok(Session { conn, topology, runner: Some(runner), runner_conn: Some(runner_conn), several_nodes, submitted })
    }

    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Whether the server list names several nodes.
    pub fn several_nodes(&self) -> bool {
        self.several_nodes
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Go on with a new connection (dialled again after the old one dropped).
    pub fn replace_connection(&mut self, conn: Connection) {
        self.conn = conn;
    }

    /// The target that reaches this CLI's own runner.
    pub fn own_target(&self) -> Target {
        match &self.runner {
            Some(runner) => Target::Runner(runner.id().to_owned()),
            None => Target::Any,
        }
    }

    /// Record `job` in the history, publish it, and wait for the broker's confirm. The record
    /// goes out first (readers fold a job's events in any order); a job no runner serves gets a
    /// `rejected` completion on the record, so the history does not show it waiting forever.
    /// Both are published before either confirm is waited for (see `submit`).
    pub async fn submit(&self, job: &Job) -> Result<(), CliError> {
        self.submitted.insert(job.id);
        let results = submit::submit_many(&self.conn, &self.topology, std::slice::from_ref(job)).await;
        results.into_iter().next().unwrap_or(Ok(()))
    }

    /// Stop the in-process runner (cancelling what it still runs) and close the connections.
    pub async fn close(mut self) {
        if let Some(mut runner) = self.runner.take() {
            runner.shutdown(Shutdown::Cancel);
            if let Err(err) = runner.wait().await {
                tracing::debug!(error = %err, "the in-process runner stopped on its own");
            }
        }
        if let Some(conn) = self.runner_conn.take() {
            conn.close().await;
        }
        self.conn.close().await;
    }
}
