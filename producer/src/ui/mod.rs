//! `runway ui`: a web view of the server's jobs, runners and queues, with a job's log live and
//! a cancel button, served by axum on the same connection, history reads (`lookup`, `list`) and
//! cancel request (`cancel`) the CLI uses.
//!
//! It has no accounts: it binds loopback by default, warns when told to bind anything else, and
//! offers cancelling only when it may (not with `--read-only`, nor once the broker refused this
//! login a cancel: an observer's). HTML is rendered here on the server (`pages`); the little
//! JavaScript a job's page needs is embedded, and the live log is server-sent events (`live`).

mod live;
mod pages;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use runway_broker::Connection;
use runway_broker::protocol::{Target, now_ms};
use runway_broker::roles::Role;
use runway_broker::topology::Topology;
use runway_worker::history::State as JobState;
use runway_worker::streams::SEEK_SLACK_MS;

use crate::attach::Interrupts;
use crate::exit::{self, CliError};
use crate::list::{self, ListFilter};
use crate::{cancel, lookup, roles, runners};

/// What `runway ui` was asked for.
#[derive(Debug, Clone, Copy)]
pub struct UiOptions {
    pub listen: SocketAddr,
    /// Never offer or accept a cancel.
    pub read_only: bool,
}

/// What every request shares.
#[derive(Debug)]
struct Ui {
    conn: Connection,
    topology: Topology,
    /// The server as it may be shown (never a password).
    server: String,
    /// `--read-only`, or the broker refused this login a cancel (an observer).
    read_only: AtomicBool,
}

impl Ui {
    fn can_cancel(&self) -> bool {
        !self.read_only.load(Ordering::Relaxed)
    }
}

/// Serve the web view on `options.listen` until an interrupt.
pub async fn serve(
    conn: Connection,
    topology: Topology,
    options: UiOptions,
    interrupts: &mut impl Interrupts,
) -> Result<u8, CliError> {
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|err| CliError::Usage(format!("cannot listen on {}: {err}", options.listen)))?;
    let address = listener
        .local_addr()
        .map_err(|err| CliError::Internal(format!("cannot read the address listened on: {err}")))?;
    let server = conn.display_name();
    eprintln!("runway ui: serving http://{address}/ (namespace `{}` on {server})", topology.namespace());
    if address.ip().is_loopback() {
        eprintln!("runway ui: listening on loopback only: reachable from this machine alone");
    } else {
        eprintln!(
            "runway ui: warning: listening on {address}, which is not loopback: runway ui has no accounts, so anyone \
             who can reach it sees every job{}",
            if options.read_only { "" } else { " and can cancel them (pass --read-only to prevent it)" }
        );
    }
    let ui = Arc::new(Ui { conn, topology, server, read_only: AtomicBool::new(options.read_only) });
    let app = Router::new()
        .route("/", get(jobs))
        .route("/jobs", get(jobs))
        .route("/jobs/{id}", get(job))
        .route("/jobs/{id}/events", get(live::job_events))
        .route("/jobs/{id}/cancel", post(cancel_job))
        .route("/runners", get(runners_page))
        .route("/queues", get(queues_page))
        .with_state(Arc::clone(&ui));
    tokio::select! {
        served = axum::serve(listener, app).into_future() => {
            served.map_err(|err| CliError::Internal(format!("the web server stopped: {err}")))?;
        }
        () = interrupts.next() => eprintln!("runway ui: interrupted; stopping"),
    }
    Ok(exit::SUCCESS)
}

/// An error as a page, with the status it deserves.
struct PageError(CliError);

impl From<CliError> for PageError {
    fn from(err: CliError) -> PageError {
        PageError(err)
    }
}

impl From<runway_broker::Error> for PageError {
    fn from(err: runway_broker::Error) -> PageError {
        PageError(err.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = match &self.0 {
            CliError::NoSuchJob(_) => StatusCode::NOT_FOUND,
            CliError::Usage(_) => StatusCode::BAD_REQUEST,
            CliError::Broker(runway_broker::Error::AccessRefused { .. }) | CliError::Refused { .. } => {
                StatusCode::FORBIDDEN
            }
            _ => StatusCode::BAD_GATEWAY,
        };
        (status, pages::error(&self.0.to_string())).into_response()
    }
}

/// A filter field as given, unless it is empty.
fn nonempty(field: &Option<String>) -> Option<&str> {
    field.as_deref().map(str::trim).filter(|text| !text.is_empty())
}

/// The jobs page's filters, from its query string.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct JobsQuery {
    state: Option<String>,
    operation: Option<String>,
    project: Option<String>,
    since: Option<String>,
    limit: Option<usize>,
}

impl JobsQuery {
    /// The filters, checked; an empty field is no filter.
    fn filter(&self) -> Result<(ListFilter, Option<&str>, Option<&str>), CliError> {
        let state = match nonempty(&self.state) {
            None => None,
            Some(text) => Some(JobState::parse(text).ok_or_else(|| {
                CliError::Usage(format!(
                    "state `{text}` is not a state; expected queued, running, success, failed, cancelled, timed_out, \
                     lost or rejected"
                ))
            })?),
        };
        let since = crate::cli::parse_duration(nonempty(&self.since).unwrap_or("7d"))
            .map_err(|err| CliError::Usage(format!("since: {err}")))?;
        let filter = ListFilter { state, since, limit: self.limit.unwrap_or(100).clamp(1, 1000) };
        Ok((filter, nonempty(&self.operation), nonempty(&self.project)))
    }
}

async fn jobs(State(ui): State<Arc<Ui>>, Query(query): Query<JobsQuery>) -> Result<Response, PageError> {
    let (filter, operation, project) = query.filter()?;
    let now = now_ms();
    let from = now.saturating_sub(runway_broker::protocol::to_ms(filter.since)).saturating_sub(SEEK_SLACK_MS);
    let records = lookup::read_index(&ui.conn, &ui.topology, from, |_| true).await?;
    let wanted = ListFilter { limit: usize::MAX, ..filter.clone() };
    let mut records = list::select(records, &wanted, now);
    records.retain(|record| {
        operation.is_none_or(|op| record.operation.as_deref() == Some(op))
            && project.is_none_or(|name| record.project.as_deref() == Some(name))
    });
    records.truncate(filter.limit);
    Ok(pages::jobs(&ui.server, &records, &query, now).into_response())
}

async fn job(State(ui): State<Arc<Ui>>, Path(id): Path<String>) -> Result<Response, PageError> {
    let record = lookup::resolve(&ui.conn, &ui.topology, &id).await?;
    Ok(pages::job(&ui.server, &record, ui.can_cancel(), now_ms()).into_response())
}

async fn cancel_job(
    State(ui): State<Arc<Ui>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    if !same_origin(&headers) {
        return Ok(
            (StatusCode::FORBIDDEN, pages::error("a cancel must come from runway ui's own page")).into_response()
        );
    }
    if !ui.can_cancel() {
        return Ok(
            (StatusCode::FORBIDDEN, pages::error("this runway ui is read-only: it cancels nothing")).into_response()
        );
    }
    let record = lookup::resolve(&ui.conn, &ui.topology, &id).await?;
    if !record.state(now_ms()).is_final() {
        let attempt = record.last_attempt().map_or(1, |attempt| attempt.number);
        match cancel::request_cancel(&ui.conn, &ui.topology, record.id, false, attempt).await {
            Ok(()) => {}
            Err(CliError::Broker(err @ runway_broker::Error::AccessRefused { .. })) => {
                // An observer's login: stop offering what the broker will not do.
                ui.read_only.store(true, Ordering::Relaxed);
                return Err(roles::refused(err, Role::Submitter, ui.topology.namespace()).into());
            }
            Err(err) => return Err(err.into()),
        }
    }
    Ok(Redirect::to(&format!("/jobs/{}", record.id)).into_response())
}

/// A browser sends `Origin` with a form post: one from another site (a page trying to cancel
/// through a loopback runway ui) is refused.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|value| value.to_str().ok()) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|value| value.to_str().ok()).unwrap_or("");
    origin.strip_prefix("http://").is_some_and(|rest| rest == host)
}

async fn runners_page(State(ui): State<Arc<Ui>>) -> Result<Response, PageError> {
    let runners = runners::ping(&ui.conn, &ui.topology).await?;
    Ok(pages::runners(&ui.server, &runners, now_ms()).into_response())
}

async fn queues_page(State(ui): State<Arc<Ui>>) -> Result<Response, PageError> {
    let runners = runners::ping(&ui.conn, &ui.topology).await?;
    // Every job queue a live runner serves, and the one for any runner.
    let mut targets = vec![Target::Any];
    for info in &runners {
        if !info.labels.is_empty() && !info.by_id_only {
            targets.push(Target::Labels(info.labels.clone()));
        }
        targets.push(Target::Runner(info.id.clone()));
    }
    let mut queues = Vec::new();
    for target in &targets {
        if let Some(info) = ui.topology.job_queue_info(&ui.conn, target).await?
            && !queues.iter().any(|known: &runway_broker::QueueInfo| known.name == info.name)
        {
            queues.push(info);
        }
    }
    if let Some(dead) = ui.conn.queue_info(&ui.topology.dead_queue()).await? {
        queues.push(dead);
    }
    Ok(pages::queues(&ui.server, &queues).into_response())
}
