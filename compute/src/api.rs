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
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
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

/// Submit an analysis
///
/// Queues it for a free slot; `input` is a local path (where the node takes them) or an
/// http(s) URL. With `analysis_id` the token must grant it, without it `"*"`. The body is
/// at most 64 KiB and unknown fields are refused (docs/protocol.md §13).
#[cfg_attr(test, utoipa::path(
    post,
    path = "/v1/analyses",
    tag = "analyses",
    operation_id = "submitAnalysis",
    request_body(content = JobRequest, description = "The submission."),
    responses(
        (status = 202, description = "Queued.", body = crate::jobs::Accepted),
        refusals::Submit,
    ),
    security(("bearer" = ["admin"])),
))]
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

/// The analysis on this node
///
/// Its state, input, model and snapshot (computed by the same state machine as the
/// edge's), and once every event was sent, what the edge confirmed. The node keeps the
/// last 1000 finished analyses.
#[cfg_attr(test, utoipa::path(
    get,
    path = "/v1/analyses/{id}",
    tag = "analyses",
    operation_id = "getAnalysis",
    params(("id" = String, Path, description = "The analysis id.")),
    responses(
        (status = 200, description = "The job view.", body = crate::jobs::JobView),
        refusals::Granted,
    ),
    security(("bearer" = ["admin"])),
))]
async fn status(
    State(state): State<Arc<ServeState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, Failure> {
    authorize(&state, &headers, Scope::Admin, Some(&id))?;
    state.jobs.get(&id).map(Json).ok_or_else(|| not_found(&id))
}

/// Ask to cancel
///
/// The run stops and publishes `cancelled`.
#[cfg_attr(test, utoipa::path(
    post,
    path = "/v1/analyses/{id}/cancel",
    tag = "analyses",
    operation_id = "cancelAnalysis",
    params(("id" = String, Path, description = "The analysis id.")),
    responses(
        (status = 202, description = "The cancel was recorded.", body = CancelResponse),
        refusals::Granted,
    ),
    security(("bearer" = ["admin"])),
))]
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

/// Readiness
///
/// 200 once a model is loaded and the edge (when one is configured) answers; needs no
/// token.
#[cfg_attr(test, utoipa::path(
    get,
    path = "/readyz",
    tag = "meta",
    operation_id = "ready",
    responses(
        (status = 200, description = "The text `ready`.", body = String, content_type = "text/plain"),
        refusals::NotReady,
    ),
    security(),
))]
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

/// Prometheus metrics
///
/// The text exposition format; needs no token. The metrics are listed in
/// docs/protocol.md §13.
#[cfg_attr(test, utoipa::path(
    get,
    path = "/metrics",
    tag = "meta",
    operation_id = "metrics",
    responses(
        (status = 200, description = "The metrics.", body = String, content_type = "text/plain; version=0.0.4"),
    ),
    security(),
))]
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

/// Liveness
///
/// 200 while the process runs, models loaded or not; needs no token.
#[cfg_attr(test, utoipa::path(
    get,
    path = "/healthz",
    tag = "meta",
    operation_id = "health",
    responses(
        (status = 200, description = "The text `ok`.", body = String, content_type = "text/plain"),
    ),
    security(),
))]
async fn healthz() -> &'static str {
    "ok\n"
}

/// This document
///
/// The node API's OpenAPI document, `docs/openapi/node.json`; needs no token.
#[cfg_attr(test, utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    operation_id = "openapiDocument",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document.", body = Object, content_type = "application/json"),
    ),
    security(),
))]
async fn openapi() -> impl IntoResponse {
    // the committed file: its test keeps it equal to what the handlers' annotations say
    (
        [(CONTENT_TYPE, "application/json")],
        include_str!("../../docs/openapi/node.json"),
    )
}

/// The refusals of each operation in the OpenAPI document, by code.
#[cfg(test)]
mod refusals {
    use std::collections::BTreeMap;

    use stagecast_shared::api::ErrorCode::{self, *};
    use stagecast_shared::openapi::{TOKEN_ERRORS, error_responses};
    use utoipa::IntoResponses;
    use utoipa::openapi::{RefOr, Response};

    fn answers(codes: &[ErrorCode]) -> BTreeMap<String, RefOr<Response>> {
        error_responses(codes)
            .into_iter()
            .map(|(status, response)| (status, response.into()))
            .collect()
    }

    fn with_token(codes: &[ErrorCode]) -> BTreeMap<String, RefOr<Response>> {
        answers(&[&TOKEN_ERRORS[..], &[AnalysisNotGranted], codes].concat())
    }

    /// `POST /v1/analyses`.
    pub struct Submit;
    impl IntoResponses for Submit {
        fn responses() -> BTreeMap<String, RefOr<Response>> {
            with_token(&[
                InvalidRequest,
                InvalidJson,
                AnalysisExists,
                PayloadTooLarge,
                RateLimited,
                Internal,
                Unavailable,
            ])
        }
    }

    /// The routes of one analysis.
    pub struct Granted;
    impl IntoResponses for Granted {
        fn responses() -> BTreeMap<String, RefOr<Response>> {
            with_token(&[AnalysisNotFound])
        }
    }

    /// `GET /readyz`.
    pub struct NotReady;
    impl IntoResponses for NotReady {
        fn responses() -> BTreeMap<String, RefOr<Response>> {
            answers(&[Unavailable])
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use metrics_exporter_prometheus::PrometheusBuilder;
    use stagecast_shared::openapi::{self as doc, BEARER};
    use utoipa::OpenApi;
    use utoipa::openapi::security::SecurityScheme;

    use super::*;
    use crate::jobs::QueueLimits;
    use crate::{InputPolicy, PipelineOptions};

    /// The node API's document: the handlers' annotations, and the admin bearer token.
    #[derive(OpenApi)]
    #[openapi(
        info(
            title = "Stagecast node",
            description = "The HTTP API of `stagecast-node serve` (docs/protocol.md §13), \
                           generated from the handlers of compute/src/api.rs. Every error answers \
                           with `ErrorBody`; an unknown path is 404 `not_found` and a known path \
                           with another method 405 `method_not_allowed`. Request bodies are at \
                           most 64 KiB (413).",
            license(name = "Apache-2.0", identifier = "Apache-2.0"),
        ),
        servers((url = "http://127.0.0.1:8788", description = "The default `STAGECAST_NODE_LISTEN`.")),
        paths(healthz, readyz, metrics, openapi, submit, status, cancel),
        components(schemas(ErrorBody)),
        modifiers(&AdminToken),
        tags(
            (name = "analyses", description = "Analyses run on this node."),
            (name = "meta", description = "Health, readiness, metrics and this document."),
        ),
    )]
    struct NodeApi;

    struct AdminToken;
    impl utoipa::Modify for AdminToken {
        fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
            let scheme: SecurityScheme = doc::bearer_scheme(
                "A JWT with scope `admin`, verified against `--tenants` or the node's own \
                 signing key (docs/protocol.md §3, §13).",
            );
            if let Some(components) = openapi.components.as_mut() {
                components.add_security_scheme(BEARER, scheme);
            }
        }
    }

    #[test]
    fn the_committed_openapi_document_is_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi/node.json");
        let json = doc::committed_json(&NodeApi::openapi()).expect("the document serializes");
        if let Err(e) = doc::check_committed(
            &path,
            &json,
            "cargo test -p stagecast-compute --lib openapi",
        ) {
            panic!("{e}");
        }
    }

    /// The router on a free port, with no model and no edge.
    async fn serve() -> String {
        let limits = QueueLimits {
            concurrency: 1,
            capacity: 1,
        };
        let jobs = Jobs::new(
            PipelineOptions::default(),
            InputPolicy::default(),
            limits,
            None,
        );
        let keys = KeySet::dev("a dev secret of at least thirty-two bytes").unwrap();
        let metrics = PrometheusBuilder::new().build_recorder().handle();
        let state = Arc::new(ServeState::new(Arc::new(jobs), keys, None, metrics));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router(state)).await });
        base
    }

    #[tokio::test]
    async fn serves_its_openapi_document_and_every_operation_in_it_is_routed() {
        let base = serve().await;
        let http = reqwest::Client::new();
        let answer = http
            .get(format!("{base}/openapi.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.headers()[CONTENT_TYPE], "application/json");
        let served: serde_json::Value = answer.json().await.unwrap();
        assert!(served["openapi"].as_str().unwrap().starts_with("3.1"));
        assert!(served["paths"]["/metrics"]["get"].is_object());
        // an operation the router lacks would meet its fallbacks (404, 405)
        for (path, item) in served["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                let url = format!("{base}{}", path.replace("{id}", "a1"));
                let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                let status = http
                    .request(method.clone(), url)
                    .send()
                    .await
                    .unwrap()
                    .status();
                assert!(
                    ![404, 405].contains(&status.as_u16()),
                    "{method} {path}: {status}"
                );
            }
        }
    }
}
