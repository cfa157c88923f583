//! `weir ui`: Weir's web UI and its JSON API, served by one axum router.
//!
//! Everything comes from the Kubernetes API at the time of the request (no database, no
//! cache of its own), and every request is made with the identity of the person asking
//! (see [`auth`]): Kubernetes RBAC decides what they may see and do, and the UI relays its
//! refusals. Pages are rendered on the server ([`pages`]) from the same data the JSON API
//! ([`api`], documented in `docs/ui.md`) returns; a little plain JavaScript
//! (`assets/app.js`) applies the live updates of [`live`] (server-sent events fed from
//! watches) and asks for confirmation.
//!
//! Modules: `auth` (modes, identity, CSRF, security headers), `error` (how a failure is
//! answered), `data` (reads from Kubernetes), `view` (pure shaping of what is shown),
//! `words` (cron in words), `html` (escaping and the page frame), `pages`, `api`, `live`,
//! and `graph` (the DAG as SVG).

pub mod api;
pub mod auth;
pub mod data;
pub mod error;
pub mod graph;
pub mod html;
pub mod layout;
pub mod live;
pub mod pages;
pub mod view;
pub mod words;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use std::future::Future;
use std::sync::Arc;

pub use auth::AuthMode;

/// What the server needs to know: how people are authenticated, the cluster (a client
/// configuration; in `token` mode each person's token replaces its credentials) and the
/// namespace shown first.
pub struct Settings {
    pub mode: AuthMode,
    pub config: kube::Config,
    pub namespace: String,
    /// The kubeconfig context, for error messages (`None` in a pod).
    pub context: Option<String>,
}

/// The server's shared state.
#[derive(Clone)]
pub struct Ui(Arc<Inner>);

struct Inner {
    mode: AuthMode,
    config: kube::Config,
    /// The UI's own client (kubeconfig identity in `local` mode, the ServiceAccount in
    /// `readonly` mode); `None` in `token` mode, where nothing is done with it.
    own: Option<kube::Client>,
    namespace: String,
    context: Option<String>,
    /// Random per process: CSRF tokens are derived from it and the session.
    secret: [u8; 32],
}

impl Ui {
    pub fn new(settings: Settings) -> anyhow::Result<Ui> {
        let own = match settings.mode {
            AuthMode::Token => None,
            AuthMode::Local | AuthMode::Readonly => Some(kube::Client::try_from(settings.config.clone())?),
        };
        Ok(Ui(Arc::new(Inner {
            mode: settings.mode,
            config: settings.config,
            own,
            namespace: settings.namespace,
            context: settings.context,
            secret: auth::random_secret()?,
        })))
    }

    pub fn mode(&self) -> AuthMode {
        self.0.mode
    }

    /// The namespace shown when the request names none.
    pub fn default_namespace(&self) -> &str {
        &self.0.namespace
    }
}

/// Every page, the JSON API under `/api/v1`, the static files, with security headers and
/// the CSRF guard on every state-changing request.
pub fn router(ui: Ui) -> Router {
    Router::new()
        .merge(pages::routes())
        .nest("/api/v1", api::routes())
        .route(
            "/static/app.js",
            get(|| asset("text/javascript", include_str!("assets/app.js"))),
        )
        .route(
            "/static/graph.js",
            get(|| asset("text/javascript", include_str!("assets/graph.js"))),
        )
        .route("/static/app.css", get(|| asset("text/css", STYLESHEET.as_str())))
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(axum::middleware::from_fn_with_state(ui.clone(), auth::guard))
        .layer(axum::middleware::from_fn(auth::security_headers))
        .with_state(ui)
}

/// app.css and the graph's stylesheet: the CSP refuses the `<style>` inside the graph's SVG.
static STYLESHEET: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("{}\n{}\n", include_str!("assets/app.css"), graph::STYLE));

async fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// Serves the UI on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ui: Ui,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(ui))
        .with_graceful_shutdown(shutdown)
        .await
}
