//! The controller's HTTP API: health and readiness probes, Prometheus metrics, status and
//! events (as JSON and as a live server-sent event stream), a sync trigger, git push webhooks,
//! and a dashboard page.
//!
//! Reads are open to anyone who can reach the listener (by default loopback only); the two
//! endpoints that make the controller act need a credential, and are disabled when none is
//! configured. Credentials are compared in constant time and never logged.

mod attach;
mod auth;
mod error;
mod events;
mod runs;
mod webhook;

use std::future::{Future, IntoFuture};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use steward_controller::metrics::Metrics;
use steward_controller::{Wake, META_ROLLOUT};
use steward_store::Store;
use tokio::sync::{mpsc, watch};

pub use attach::{attach, AfterPass, Attached, PassObserver};
pub use error::ApiError;

/// Where the API listens by default. Loopback, because reads are not authenticated.
/// 9469 sits in the 9100-9999 range that Prometheus exporters conventionally take (the
/// node_exporter 9100 family), so firewall rules and scrape configs written for exporters cover
/// it, yet it is none of the ports commonly taken on a Swarm node (9090 Prometheus, 9093
/// Alertmanager, 9100 node_exporter, 9323 the Docker engine's own metrics); `--listen` moves it
/// when it clashes anyway.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9469";

/// How long [`serve`] lets requests in flight finish after shutdown was asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// GitHub caps push payloads at 25 MB, but a push of a few hundred commits is well under this;
/// anything larger is refused before it is buffered.
const WEBHOOK_BODY_LIMIT: usize = 5 * 1024 * 1024;

/// Everything the API reads and the one channel through which it makes the controller act.
#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    pub wake: mpsc::Sender<Wake>,
    /// Bearer token for `POST /api/v1/sync` (from `STEWARD_API_TOKEN`); `None` disables it.
    pub api_token: Option<String>,
    /// Shared secret of git webhooks (from `STEWARD_WEBHOOK_SECRET`); `None` disables them.
    pub webhook_secret: Option<String>,
    /// Set by the controller once its first pass has finished.
    pub ready: Arc<AtomicBool>,
}

impl std::fmt::Debug for ApiState {
    // Written by hand so that the credentials can never reach a log through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |o: &Option<String>| if o.is_some() { "<set>" } else { "<unset>" };
        f.debug_struct("ApiState")
            .field("store", &self.store)
            .field("api_token", &set(&self.api_token))
            .field("webhook_secret", &set(&self.webhook_secret))
            .field("ready", &self.ready.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct AppState {
    api: ApiState,
    /// Turns true when the server is shutting down: open event streams end, or graceful
    /// shutdown would wait on them forever.
    stop: watch::Receiver<bool>,
}

/// Serves the API on `listener` until `shutdown` completes; then lets requests in flight finish
/// for a few seconds (open event streams are ended at once) and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, sync = state.api_token.is_some(), webhooks = state.webhook_secret.is_some(), "API listening");
    }
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let mut graceful = stop_rx.clone();
    let server = axum::serve(listener, app(state, stop_rx.clone())).with_graceful_shutdown(async move {
        let _ = graceful.wait_for(|&s| s).await;
    });
    let mut deadline = stop_rx;
    tokio::select! {
        r = server.into_future() => r,
        _ = async move {
            let _ = deadline.wait_for(|&s| s).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!("API requests still in flight {SHUTDOWN_GRACE:?} after shutdown; dropping them");
            Ok(())
        }
    }
}

/// The API as a router, for embedding or testing. Its event streams end only when their
/// client goes away; [`serve`] also ends them at shutdown.
pub fn router(state: ApiState) -> Router {
    // The sender is dropped here: streams treat a closed channel as "never stopping".
    let (_, stop) = watch::channel(false);
    app(state, stop)
}

fn app(api: ApiState, stop: watch::Receiver<bool>) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status))
        .route("/api/v1/events", get(events::list))
        .route("/api/v1/events/stream", get(events::stream))
        .route("/api/v1/runs", get(runs::list))
        .route("/api/v1/sync", post(sync))
        .route(
            "/api/v1/webhooks/git",
            post(webhook::git).layer(DefaultBodyLimit::max(WEBHOOK_BODY_LIMIT)),
        )
        .with_state(AppState { api, stop })
}

const DASHBOARD: &str = include_str!("dashboard.html");

async fn dashboard() -> Response {
    let mut res = Html(DASHBOARD).into_response();
    let h = res.headers_mut();
    // The page is self-contained: it may run its own inline script and style and talk to this
    // origin, nothing else; so injected markup could neither load nor send anything elsewhere.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(s): State<AppState>) -> (StatusCode, &'static str) {
    if s.api.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the first reconcile pass has not finished",
        )
    }
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, steward_controller::metrics::CONTENT_TYPE)],
        s.api.metrics.encode(),
    )
}

async fn status(State(s): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let store = s.api.store.clone();
    let (items, rollout, applied, attempted) = blocking(move || {
        Ok((
            store.statuses()?,
            store.get_meta(META_ROLLOUT)?,
            store.get_meta(steward_controller::META_SOURCE_APPLIED_DESCRIBE)?,
            store.get_meta(steward_controller::META_SOURCE_ATTEMPTED_DESCRIBE)?,
        ))
    })
    .await?;
    // A record that does not parse is reported as no rollout rather than failing the whole
    // status: the controller drops such a record too.
    let rollout = rollout
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .unwrap_or(serde_json::Value::Null);
    let source = serde_json::json!({ "applied": applied, "attempted": attempted });
    Ok(Json(
        serde_json::json!({ "items": items, "rollout": rollout, "source": source }),
    ))
}

async fn sync(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    auth::bearer(s.api.api_token.as_deref(), &headers)?;
    wake(&s.api.wake, Wake::Sync)?;
    tracing::info!("sync requested through the API");
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "accepted": true, "wake": "sync" })),
    )
        .into_response())
}

/// Asks the loop to look again. A full channel means a wake is already queued, which serves
/// this request too.
fn wake(tx: &mpsc::Sender<Wake>, w: Wake) -> Result<(), ApiError> {
    match tx.try_send(w) {
        Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => Ok(()),
        Err(mpsc::error::TrySendError::Closed(_)) => {
            Err(ApiError::Unavailable("the controller loop is not running".into()))
        }
    }
}

/// Runs a store call off the async workers: SQLite may wait on the writer's lock.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, steward_store::StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("store task failed: {e}")))?
        .map_err(ApiError::from)
}

#[cfg(test)]
mod tests;
