//! The runner's HTTP endpoints (`runway-worker --metrics-addr`): `/metrics` in the Prometheus
//! text format, `/healthz` (200 while the process lives) and `/readyz` (200 when connected and
//! consuming, else 503 with the reason in plain text).
//!
//! It does not bind the address (the binary does, so that a bad one is a usage error before
//! anything else starts) and counts nothing itself (`metrics` does).

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// What Prometheus is told the body of `/metrics` is.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serve the endpoints on `listener` until the process ends.
pub async fn serve_metrics(listener: TcpListener, metrics: Metrics) -> std::io::Result<()> {
    let router = Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(metrics);
    axum::serve(listener, router).await
}

async fn scrape(State(metrics): State<Metrics>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, OPENMETRICS)], metrics.encode())
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(metrics): State<Metrics>) -> (StatusCode, String) {
    match metrics.readiness() {
        Ok(()) => (StatusCode::OK, "ready: connected and consuming\n".to_owned()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
    }
}
