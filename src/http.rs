//! The operator's HTTP port: `/livez`, `/readyz` and `/metrics`.
//!
//! - `/livez` answers 200 while the process serves requests: a wedged runtime stops
//!   answering, and the kubelet restarts it.
//! - `/readyz` answers 200 once this process does its job: a leader (or an operator without
//!   leader election) once the watch caches of every controller have synced, a standby
//!   once it takes part in the election. 503 while starting, syncing or shutting down.
//! - `/metrics` serves the Prometheus text format (see [`crate::metrics`]).

use crate::metrics::Metrics;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

/// What the process is doing, as readiness reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Starting = 0,
    /// Waiting for the lease, ready to take over.
    Standby = 1,
    /// Controllers started, watch caches not yet filled.
    Syncing = 2,
    /// Controllers running on synced caches.
    Ready = 3,
    Stopping = 4,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            1 => Phase::Standby,
            2 => Phase::Syncing,
            3 => Phase::Ready,
            4 => Phase::Stopping,
            _ => Phase::Starting,
        }
    }

    pub fn is_ready(self) -> bool {
        matches!(self, Phase::Standby | Phase::Ready)
    }

    fn describe(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Standby => "standby: waiting for the leader lease",
            Phase::Syncing => "leading: waiting for the watch caches to sync",
            Phase::Ready => "leading: watch caches synced",
            Phase::Stopping => "shutting down",
        }
    }
}

/// Shared readiness state.
#[derive(Clone, Default)]
pub struct Health(Arc<AtomicU8>);

impl Health {
    pub fn set(&self, phase: Phase) {
        let old = Phase::from_u8(self.0.swap(phase as u8, Ordering::SeqCst));
        if old != phase {
            tracing::debug!(from = ?old, to = ?phase, "readiness");
        }
    }

    /// Moves to `to` only from `from` (so a late "synced" cannot override "stopping").
    pub fn advance(&self, from: Phase, to: Phase) {
        let _ = self
            .0
            .compare_exchange(from as u8, to as u8, Ordering::SeqCst, Ordering::SeqCst);
    }

    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.0.load(Ordering::SeqCst))
    }
}

#[derive(Clone)]
struct AppState {
    health: Health,
    metrics: Arc<Metrics>,
}

pub fn router(health: Health, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { health, metrics })
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let phase = state.health.phase();
    let code = if phase.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, format!("{}\n", phase.describe()))
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

/// Binds `addr` (fails at once if it cannot) and returns the bound address and the server,
/// which runs until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    health: Health,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, impl Future<Output = std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let server = axum::serve(listener, router(health, metrics)).with_graceful_shutdown(shutdown);
    Ok((bound, async move { server.await }))
}
