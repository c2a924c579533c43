//! The admin HTTP listener: `/healthz`, `/readyz`, `/metrics`, and the admin actions
//! (`/rules/reload`, `/rules/preview`, `/rebucket`, `/tables/forget`).
//!
//! The admin actions change what every client receives, so when a token is configured they need
//! it as a bearer token ([`crate::pipeline::admin_auth`]); health, readiness and metrics stay
//! open for probes and scrapers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;
use tracing::{info, warn};

use crate::pipeline::Handles;
use crate::pipeline::Health;
use crate::pipeline::admin_auth::{AdminToken, AuthError};
use crate::pipeline::forget::ForgetOutcome;
use crate::pipeline::preview::{PreviewOptions, PreviewOutcome};
use crate::pipeline::rebucket::RebucketOutcome;
use crate::pipeline::reload::{ReloadOutcome, Trigger};
use crate::pipeline::replay::{ReplayFilter, ReplayOutcome};

/// Why the admin listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "cannot listen on admin address {addr}: {source}. Choose a free address with --admin-addr"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot install the metrics recorder: {0}")]
    Recorder(String),
    #[error(transparent)]
    Auth(#[from] AuthError),
}

#[derive(Clone)]
struct AdminState {
    health: Arc<Health>,
    metrics: PrometheusHandle,
    handles: Handles,
    token: Option<AdminToken>,
}

/// Body of `POST /rules/reload`; both fields optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadBody {
    /// A new module path (default: the current one).
    pub module: Option<std::path::PathBuf>,
    /// New rules configuration text (default: the current one).
    pub rules_config: Option<String>,
}

/// Installs the Prometheus recorder (process-wide; call once).
///
/// Durations and sizes are histograms with fixed buckets rather than summaries: they aggregate
/// across instances, and recording or rendering one costs no quantile computation.
pub fn install_recorder() -> Result<PrometheusHandle, AdminError> {
    use crate::pipeline::metrics::{BATCH_ROWS, BATCH_SECONDS, RULE_SECONDS};
    use metrics_exporter_prometheus::Matcher;
    const SECONDS: &[f64] = &[
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    const ROWS: &[f64] = &[
        1.0, 10.0, 100.0, 500.0, 1_000.0, 2_500.0, 5_000.0, 10_000.0, 25_000.0, 50_000.0,
    ];
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(BATCH_SECONDS.into()), SECONDS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(RULE_SECONDS.into()), SECONDS))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_ROWS.into()), ROWS))
        .map_err(|e| AdminError::Recorder(e.to_string()))?;
    builder
        .install_recorder()
        .map_err(|e| AdminError::Recorder(e.to_string()))
}

/// Binds the listener and serves it on a thread and runtime of its own, so that health,
/// readiness and metrics answer promptly whatever the pipeline's thread is doing (a long
/// snapshot chunk, a rule running to its deadline). Returns the bound address (useful with
/// port 0).
///
/// Refuses to listen on a non-loopback address without a token.
pub fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    metrics: PrometheusHandle,
    handles: Handles,
    token: Option<AdminToken>,
) -> Result<SocketAddr, AdminError> {
    crate::pipeline::admin_auth::check_exposure(addr, token.as_ref())?;
    let bind_err = |source| AdminError::Bind { addr, source };
    let listener = std::net::TcpListener::bind(addr).map_err(bind_err)?;
    listener.set_nonblocking(true).map_err(bind_err)?;
    let local = listener.local_addr().map_err(bind_err)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(bind_err)?;
    let guarded = token.is_some();
    let state = AdminState {
        health,
        metrics,
        handles,
        token,
    };
    // route_layer: the token is checked only for these routes, and an unknown path still
    // answers 404 rather than 401.
    let actions = Router::new()
        .route("/rules/reload", post(reload_rules))
        // Guarded although it changes nothing: it loads a module file from the host.
        .route("/rules/preview", post(preview_rules))
        .route("/rebucket", post(rebucket))
        .route("/tables/forget", post(forget_table))
        .route("/failures/replay", post(replay_failures))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_page))
        .merge(actions)
        .with_state(state);
    std::thread::Builder::new()
        .name("sluice-admin".into())
        .spawn(move || {
            runtime.block_on(async move {
                let served = match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => axum::serve(listener, app).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = served {
                    tracing::error!(error = %e, "admin listener stopped");
                }
            });
        })
        .map_err(bind_err)?;
    let actions = if guarded {
        "need the admin token"
    } else {
        "open to local processes (no admin token configured; loopback only)"
    };
    info!(addr = %local, "admin listener ready: /healthz /readyz /metrics; POST /rules/reload, POST /rules/preview, POST /rebucket, POST /tables/forget, POST /failures/replay {actions}");
    Ok(local)
}

/// Lets a request through to an admin action only with the configured bearer token (any request
/// when none is configured, which [`serve`] allows on loopback only).
async fn require_token(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let Some(token) = &state.token else {
        return next.run(request).await;
    };
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    match token.check(header) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            // The path and the kind of refusal only: never the header, which may hold a
            // near-miss of the real token.
            warn!(path = %request.uri().path(), refusal = refusal.label(), "admin request refused");
            let body = serde_json::json!({ "status": "unauthorized", "reason": refusal.reason() });
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, r#"Bearer realm="sluice admin""#)],
                Json(body),
            )
                .into_response()
        }
    }
}

async fn readyz(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    if state.health.standby.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: standby (another sluice is active on the slot)\n",
        );
    }
    if state.health.streaming.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready: streaming\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: snapshot or connection in progress\n",
        )
    }
}

async fn metrics_page(State(state): State<AdminState>) -> String {
    crate::pipeline::lag::refresh_gauges();
    state.metrics.render()
}

/// Validates and activates a module; answers once it is active (200), or with why it was
/// rejected (422) while the old version keeps running.
async fn reload_rules(
    State(state): State<AdminState>,
    body: Option<Json<ReloadBody>>,
) -> (StatusCode, Json<ReloadOutcome>) {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let outcome = state
        .handles
        .reload
        .reload(body.module, body.rules_config, Trigger::Api)
        .await;
    let status = match outcome {
        ReloadOutcome::Rejected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::OK,
    };
    (status, Json(outcome))
}

/// Body of `POST /rules/preview`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewBody {
    /// The candidate module's path on the host.
    pub module: std::path::PathBuf,
    /// Rules configuration text for its init (default: the one sluice was started with).
    pub rules_config: Option<String>,
    /// Only this table (schema-qualified unless public).
    pub table: Option<String>,
    /// At most this many rows per table.
    pub limit: Option<u64>,
    /// Example record ids per bucket and direction.
    pub examples: Option<usize>,
    /// Failures listed.
    pub failures: Option<usize>,
}

impl PreviewBody {
    fn options(&self) -> PreviewOptions {
        let default = PreviewOptions::default();
        PreviewOptions {
            table: self.table.clone(),
            limit: self.limit,
            examples: self.examples.unwrap_or(default.examples),
            failures: self.failures.unwrap_or(default.failures),
        }
    }
}

/// Evaluates a candidate over the current rows, read-only, and answers with the report (200) or
/// why there is none (422). Runs on this listener's connections, never on the stream's.
async fn preview_rules(
    State(state): State<AdminState>,
    Json(body): Json<PreviewBody>,
) -> (StatusCode, Json<PreviewOutcome>) {
    let outcome = state
        .handles
        .preview
        .preview(&body.module, body.rules_config.clone(), &body.options())
        .await;
    let status = match outcome {
        PreviewOutcome::Rejected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        PreviewOutcome::Done(_) => StatusCode::OK,
    };
    (status, Json(outcome))
}

/// Body of `POST /rebucket`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RebucketBody {
    /// One table (schema-qualified unless public); all published tables when absent.
    pub table: Option<String>,
}

/// Re-evaluates existing rows with the active rules; answers when the pass is complete.
async fn rebucket(
    State(state): State<AdminState>,
    body: Option<Json<RebucketBody>>,
) -> (StatusCode, Json<RebucketOutcome>) {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let outcome = state.handles.rebucket.rebucket(body.table).await;
    let status = match outcome {
        RebucketOutcome::Rejected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::OK,
    };
    (status, Json(outcome))
}

/// Body of `POST /tables/forget`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForgetBody {
    /// The table that left the publication (schema-qualified unless public).
    pub table: String,
}

/// Removes the memberships of a table that left the publication, each with a changelog delete;
/// answers when they are gone (200), or why nothing was removed (422).
async fn forget_table(
    State(state): State<AdminState>,
    Json(body): Json<ForgetBody>,
) -> (StatusCode, Json<ForgetOutcome>) {
    let outcome = state.handles.forget.forget(body.table).await;
    let status = match outcome {
        ForgetOutcome::Rejected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::OK,
    };
    (status, Json(outcome))
}

/// Body of `POST /failures/replay`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    /// Only failures at or after this LSN (`16/B374D848`).
    pub since: Option<String>,
    /// Only this table (schema-qualified unless public).
    pub table: Option<String>,
}

/// Re-evaluates the current rows of unresolved dead letters with the active rules and marks
/// them resolved; answers when done (200), or why nothing ran (422).
async fn replay_failures(
    State(state): State<AdminState>,
    body: Option<Json<ReplayBody>>,
) -> (StatusCode, Json<ReplayOutcome>) {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let since = match body.since.as_deref().map(str::parse::<crate::model::Lsn>) {
        None => None,
        Some(Ok(lsn)) => Some(lsn),
        Some(Err(e)) => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(ReplayOutcome::Rejected {
                    reason: format!("since: {e}"),
                }),
            );
        }
    };
    let outcome = state
        .handles
        .replay
        .replay(ReplayFilter {
            since,
            table: body.table,
        })
        .await;
    let status = match outcome {
        ReplayOutcome::Rejected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::OK,
    };
    (status, Json(outcome))
}
