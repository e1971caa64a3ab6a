//! The daemon's HTTP API (axum): job intake, status and cancel behind admin tokens, and
//! health, readiness and Prometheus metrics the way inference servers expose them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use stagecast_shared::api::{ApiError, CancelResponse, ErrorBody, ErrorCode};
use stagecast_shared::token::{self, KeySet, Need, Scope, TokenError, VerifiedToken};

use crate::clock::now_s;
use crate::jobs::{JobRequest, Jobs, SubmitError};
use crate::publish::EdgeClient;

/// Submissions are small JSON documents.
const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// What a full queue tells clients to wait.
const QUEUE_FULL_RETRY_S: u64 = 5;
/// How long one edge probe answers `/readyz`.
const READY_CACHE: Duration = Duration::from_secs(5);

pub struct ServeState {
    pub jobs: Arc<Jobs>,
    /// Verifies the admin tokens of the node API.
    pub keys: KeySet,
    pub edge: Option<Arc<EdgeClient>>,
    pub metrics: PrometheusHandle,
    edge_probe: Mutex<Option<(Instant, bool)>>,
}

impl ServeState {
    pub fn new(
        jobs: Arc<Jobs>,
        keys: KeySet,
        edge: Option<Arc<EdgeClient>>,
        metrics: PrometheusHandle,
    ) -> Self {
        Self {
            jobs,
            keys,
            edge,
            metrics,
            edge_probe: Mutex::new(None),
        }
    }

    async fn edge_reachable(&self, edge: &EdgeClient) -> bool {
        let cached = *self.edge_probe.lock().expect("probe lock");
        if let Some((at, ok)) = cached
            && at.elapsed() < READY_CACHE
        {
            return ok;
        }
        let ok = edge.reachable().await;
        *self.edge_probe.lock().expect("probe lock") = Some((Instant::now(), ok));
        ok
    }
}

/// Names and explains every metric, so /metrics lists them (at zero) before they move.
pub fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!("stagecast_analyses_total", "Analyses ended, by outcome");
    describe_histogram!(
        "stagecast_stage_seconds",
        Unit::Seconds,
        "Time from a stage's first report to its end"
    );
    describe_histogram!(
        "stagecast_inference_batch_size",
        Unit::Count,
        "Frames per inference call"
    );
    describe_histogram!(
        "stagecast_inference_seconds",
        Unit::Seconds,
        "Duration of one inference call"
    );
    describe_gauge!(
        "stagecast_queue_depth",
        Unit::Count,
        "Analyses waiting for a slot"
    );
    describe_gauge!(
        "stagecast_outbox_events",
        Unit::Count,
        "Events not yet confirmed by the edge"
    );
    describe_counter!(
        "stagecast_publish_retries_total",
        "Publishes that failed and will be retried"
    );
    describe_counter!(
        "stagecast_events_refused_total",
        "Events the edge refused for good (logged)"
    );
    describe_counter!(
        "stagecast_publish_stale_events_total",
        "Events of leased runs dropped unsent because their attempt was no longer current"
    );
    describe_counter!(
        "stagecast_artifacts_total",
        "Artifacts (key frames, result frames) by outcome: stored, refused, failed, dropped"
    );
    describe_counter!(
        "stagecast_pool_revoked_runs_total",
        "Leased runs stopped because their attempt was no longer current, by reason \
         (revoked, stale_attempt, released, link_lost)"
    );
    for name in [
        "stagecast_publish_retries_total",
        "stagecast_events_refused_total",
        "stagecast_publish_stale_events_total",
    ] {
        metrics::counter!(name).absolute(0);
    }
}

pub fn router(state: Arc<ServeState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/analyses", post(submit))
        .route("/v1/analyses/{id}", get(status))
        .route("/v1/analyses/{id}/cancel", post(cancel))
        .fallback(|| async { Failure::new(ErrorCode::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            Failure::new(
                ErrorCode::MethodNotAllowed,
                "this route does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(state)
}

/// Every failure answers with the contract's error body.
#[derive(Debug)]
pub struct Failure {
    body: ErrorBody,
    retry_after_s: Option<u64>,
}

impl Failure {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            body: ErrorBody::new(code, message),
            retry_after_s: None,
        }
    }

    fn from_api(e: &dyn ApiError) -> Self {
        Self {
            body: e.body(),
            retry_after_s: None,
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.body.error.code.status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(self.body)).into_response();
        if let Some(s) = self.retry_after_s {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(s));
        }
        response
    }
}

impl From<TokenError> for Failure {
    fn from(e: TokenError) -> Self {
        Self::from_api(&e)
    }
}

impl From<SubmitError> for Failure {
    fn from(e: SubmitError) -> Self {
        let mut failure = Self::from_api(&e);
        match e {
            SubmitError::QueueFull(_) => failure.retry_after_s = Some(QUEUE_FULL_RETRY_S),
            SubmitError::Loading => failure.retry_after_s = Some(1),
            SubmitError::Outbox(e) => tracing::error!("{e}"),
            _ => {}
        }
        failure
    }
}

impl From<JsonRejection> for Failure {
    fn from(e: JsonRejection) -> Self {
        let code = match e.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
            _ => ErrorCode::InvalidJson,
        };
        Self::new(code, e.body_text())
    }
}

/// The bearer token of `headers`, verified, with `scope` and, when given, a grant for
/// `analysis`.
fn authorize(
    state: &ServeState,
    headers: &HeaderMap,
    scope: Scope,
    analysis: Option<&str>,
) -> Result<VerifiedToken, Failure> {
    let token = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(token::bearer_from_header);
    let need = Need {
        scope: Some(scope),
        analysis,
    };
    Ok(token::authorize(token, &state.keys, now_s(), need)?)
}

async fn submit(
    State(state): State<Arc<ServeState>>,
    headers: HeaderMap,
    body: Result<Json<JobRequest>, JsonRejection>,
) -> Result<impl IntoResponse, Failure> {
    // who asks comes before what they sent
    let who = authorize(&state, &headers, Scope::Admin, None)?;
    let Json(request) = body?;
    // a node-chosen id needs a token for every analysis of the tenant
    who.require_analysis(
        request
            .analysis_id
            .as_deref()
            .unwrap_or(token::ALL_ANALYSES),
    )?;
    let accepted = state.jobs.submit(request)?;
    tracing::info!(analysis = %accepted.analysis_id, sub = %who.claims.sub, "submitted");
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

async fn status(
    State(state): State<Arc<ServeState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, Failure> {
    authorize(&state, &headers, Scope::Admin, Some(&id))?;
    state.jobs.get(&id).map(Json).ok_or_else(|| not_found(&id))
}

async fn cancel(
    State(state): State<Arc<ServeState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, Failure> {
    let who = authorize(&state, &headers, Scope::Admin, Some(&id))?;
    state.jobs.cancel(&id).ok_or_else(|| not_found(&id))?;
    tracing::info!(analysis = %id, sub = %who.claims.sub, "cancel requested");
    Ok((
        StatusCode::ACCEPTED,
        Json(CancelResponse {
            cancel_requested: true,
        }),
    ))
}

fn not_found(id: &str) -> Failure {
    Failure::new(
        ErrorCode::AnalysisNotFound,
        format!("no analysis {id:?} on this node"),
    )
}

/// 200 once a model is loaded and the edge (when one is configured) answers.
async fn readyz(State(state): State<Arc<ServeState>>) -> Result<&'static str, Failure> {
    if !state.jobs.has_models() {
        return Err(Failure::new(ErrorCode::Unavailable, "models are loading"));
    }
    if let Some(edge) = &state.edge
        && !state.edge_reachable(edge).await
    {
        return Err(Failure::new(
            ErrorCode::Unavailable,
            format!("the edge at {} does not answer", edge.base()),
        ));
    }
    Ok("ready\n")
}

async fn metrics(State(state): State<Arc<ServeState>>) -> impl IntoResponse {
    metrics::gauge!("stagecast_queue_depth").set(state.jobs.queue_depth() as f64);
    if let Some(gpu) = crate::gpu::sample() {
        metrics::gauge!("stagecast_gpu_utilization").set(gpu.util);
        metrics::gauge!("stagecast_gpu_memory_used_bytes").set(gpu.mem_used_bytes as f64);
        metrics::gauge!("stagecast_gpu_memory_total_bytes").set(gpu.mem_total_bytes as f64);
    }
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
