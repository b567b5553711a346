//! The operator's HTTP endpoints: `/metrics` (Prometheus), `/healthz` (the process runs) and `/readyz`
//! (start-up checks passed: the CRDs are established and the watches are about to start; and the installed
//! CRDs are this operator's, else the body says which differ and how to fix them).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::{Router, extract::State, http::StatusCode, routing::get};

use crate::metrics::Metrics;

/// Shared state of the endpoints.
#[derive(Clone)]
pub struct Health {
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
    /// Whether the installed CRDs are this operator's.
    pub crd_skew: crate::controller::crd_skew::CrdSkew,
}

pub fn router(health: Health) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(health)
}

async fn metrics(State(h): State<Health>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        h.metrics.render(),
    )
}

async fn readyz(State(h): State<Health>) -> (StatusCode, String) {
    if !h.ready.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting".into());
    }
    match h.crd_skew.problem() {
        Some(problem) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("CRD version skew: {problem}\n"),
        ),
        None => (StatusCode::OK, "ok".into()),
    }
}
