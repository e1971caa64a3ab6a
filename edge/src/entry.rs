//! The Worker's fetch handler: bound and authenticate the request, then hand it to the
//! analysis' object or the pool's. Everything that can be refused here is, so bad traffic
//! never wakes an object.

use std::cell::RefCell;
use std::rc::Rc;

use stagecast_shared::api::{ApiError, ErrorBody, ErrorCode};
use stagecast_shared::close::CloseCode;
use stagecast_shared::dispatch::parse_submit_body;
use stagecast_shared::ids::{AnalysisId, NodeId, PoolName};
use stagecast_shared::limits::MAX_BODY_BYTES;
use stagecast_shared::token::{ALL_ANALYSES, KeySet};
use stagecast_shared::validate::PublishError;
use stagecast_shared::ws::TOKEN_QUERY;
use tracing::Instrument;
use worker::{Context, Env, Request, Response, Result, event};

use crate::auth::{Principal, authorize};
use crate::call::{to_analysis, to_pool};
use crate::clock::now_ms;
use crate::config::{self, ConfigError};
use crate::credentials::{RequestCredentials, offers_stagecast_subprotocol};
use crate::digest::random_hex;
use crate::forward::{Forwarded, Op, PoolForwarded, PoolOp};
use crate::media::{self, MediaRequest};
use crate::query;
use crate::respond::{
    ALLOW_ORIGIN, error_response, page_response, preflight_response, refuse_websocket,
};
use crate::route::{Route, RouteError};

thread_local! {
    /// The parsed keys of this isolate.
    static KEYS: RefCell<Option<Rc<KeySet>>> = const { RefCell::new(None) };
}

fn secret_or_var(env: &Env, name: &str) -> Option<String> {
    env.secret(name)
        .map(|s| s.to_string())
        .ok()
        .or_else(|| env.var(name).map(|v| v.to_string()).ok())
}

/// The tenants' keys, parsed once per isolate: secrets and vars change only with a
/// deploy, which starts new isolates.
fn keys(env: &Env) -> std::result::Result<Rc<KeySet>, ConfigError> {
    if let Some(keys) = KEYS.with(|cell| cell.borrow().clone()) {
        return Ok(keys);
    }
    let keys = Rc::new(config::key_set(
        secret_or_var(env, "STAGECAST_TENANTS").as_deref(),
        secret_or_var(env, "STAGECAST_DEV_SECRET").as_deref(),
    )?);
    KEYS.with(|cell| *cell.borrow_mut() = Some(keys.clone()));
    Ok(keys)
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    crate::log::init();
    let url = req.url()?;
    if req.method() == worker::Method::Options {
        return preflight_response();
    }
    let route = match Route::parse(req.method().as_ref(), url.path()) {
        Ok(route) => route,
        Err(RouteError::NotFound) => {
            return error_response(&ErrorBody::new(
                ErrorCode::NotFound,
                format!("no route {}", url.path()),
            ));
        }
        Err(e @ RouteError::MethodNotAllowed(_)) => {
            return error_response(&ErrorBody::new(ErrorCode::MethodNotAllowed, e.to_string()));
        }
    };
    match route {
        Route::Health => return Response::ok("ok"),
        Route::OpenApi => return openapi(),
        Route::Page(page) => {
            return page_response(page, req.headers().get("if-none-match")?.as_deref());
        }
        _ => {}
    }
    let websocket = route.is_websocket();
    let headers = req.headers();
    // a plain HTTP request to the socket route cannot be answered with a closed socket
    let upgrade = headers.get("upgrade")?;
    if websocket && !upgrade.is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
        return error_response(&ErrorBody::new(
            ErrorCode::InvalidRequest,
            "this route is a WebSocket: open it with `Upgrade: websocket`",
        ));
    }
    let authorization = headers.get("authorization")?;
    let cookie = headers.get("cookie")?;
    let subprotocols = headers.get("sec-websocket-protocol")?;
    let offers_subprotocol = subprotocols
        .as_deref()
        .is_some_and(offers_stagecast_subprotocol);
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let creds = RequestCredentials {
        authorization: authorization.as_deref(),
        cookie: cookie.as_deref(),
        subprotocols: subprotocols.as_deref(),
        query_token: pairs
            .iter()
            .find(|(k, _)| k == TOKEN_QUERY)
            .map(|(_, v)| v.as_str()),
    };
    let found = if websocket {
        creds.websocket_token()
    } else if route.takes_query_token() {
        creds.http_token().or_else(|| creds.query_token())
    } else {
        creds.http_token()
    };
    let request = Incoming {
        route,
        token: found.map(|f| f.token),
        pairs,
        offers_subprotocol,
    };
    let keys = match keys(&env) {
        Ok(keys) => keys,
        Err(e) => {
            tracing::error!(error = %e, "edge misconfigured");
            return request.refuse(ErrorBody::new(
                ErrorCode::Internal,
                "the edge has no valid signing keys configured",
            ));
        }
    };
    match &request.route {
        Route::Submit => submit(req, env, &request, &keys).await,
        route if route.pool().is_some() => to_pool_route(env, &request, &keys).await,
        _ => to_analysis_route(req, env, &request, &keys).await,
    }
}

/// The edge's OpenAPI document, generated from the Rust types (its drift test keeps the
/// committed file current).
fn openapi() -> Result<Response> {
    const DOCUMENT: &str = include_str!("../../docs/openapi/edge.json");
    let headers = worker::Headers::new();
    headers.set("content-type", "application/json")?;
    headers.set(ALLOW_ORIGIN.0, ALLOW_ORIGIN.1)?;
    Ok(Response::ok(DOCUMENT)?.with_headers(headers))
}

/// What the Worker read of a request before any object wakes.
struct Incoming {
    route: Route,
    token: Option<String>,
    pairs: Vec<(String, String)>,
    offers_subprotocol: bool,
}

impl Incoming {
    /// A refused request's answer: the error body, or for a WebSocket a socket closed at
    /// once with the matching code (browsers cannot read a failed handshake's status).
    fn refuse(&self, body: ErrorBody) -> Result<Response> {
        if self.route.is_websocket() {
            let code = CloseCode::for_error(body.error.code);
            let reason = format!("{}: {}", code.reason(), body.error.message);
            refuse_websocket(code, &reason, self.offers_subprotocol)
        } else {
            error_response(&body)
        }
    }

    /// Verifies the token for this route (and `analysis`, when the route grants one).
    fn authorize(
        &self,
        keys: &KeySet,
        analysis: Option<&str>,
    ) -> std::result::Result<Principal, ErrorBody> {
        authorize(self.token.as_deref(), keys, &self.route, analysis, now_ms()).map_err(|e| {
            tracing::info!(analysis = analysis.unwrap_or(""), error = %e, "refused");
            e.body()
        })
    }
}

/// An analysis route: checked here, answered by the analysis' object.
async fn to_analysis_route(
    req: Request,
    env: Env,
    request: &Incoming,
    keys: &KeySet,
) -> Result<Response> {
    let raw_id = request.route.analysis_id().unwrap_or_default();
    let analysis_id = match AnalysisId::parse(raw_id) {
        Ok(id) => id,
        Err(e) => {
            return request.refuse(ErrorBody::new(
                ErrorCode::InvalidAnalysisId,
                format!("analysis id: {e}"),
            ));
        }
    };
    let principal = match request.authorize(keys, Some(analysis_id.as_str())) {
        Ok(p) => p,
        Err(body) => return request.refuse(body),
    };
    let last_event_id = req.headers().get("last-event-id")?;
    let media = MediaRequest {
        analysis_id,
        principal,
    };
    match &request.route {
        Route::Upload(_) => return media::upload(req, &env, &media).await,
        Route::Input(_) => return media::input(req, &env, &media).await,
        Route::PutArtifact(_, name) => {
            return media::put_artifact(req, &env, &media, name, &request.pairs).await;
        }
        Route::Artifact(_, name) => return media::artifact(req, &env, &media, name).await,
        _ => {}
    }
    let MediaRequest {
        analysis_id,
        principal,
    } = media;
    let (op, body) = match &request.route {
        // the object parses and checks the body: once, where it is applied
        Route::Publish(_) => match read_capped(req).await? {
            Ok(body) => (Op::Publish, Some(body)),
            Err(err) => return error_response(&err),
        },
        Route::PublishSocket(_) => (
            Op::PublishSocket {
                select_subprotocol: request.offers_subprotocol,
            },
            None,
        ),
        Route::Snapshot(_) => (Op::Snapshot, None),
        Route::Cancel(_) => (Op::Cancel, None),
        Route::Stream(_) => match query::stream_since(&request.pairs, last_event_id.as_deref()) {
            Ok(since) => (Op::Stream { since }, None),
            Err(e) => {
                return request.refuse(ErrorBody::new(ErrorCode::InvalidRequest, e.to_string()));
            }
        },
        Route::Events(_) => match query::events_page(&request.pairs) {
            Ok((since, limit)) => (Op::Events { since, limit }, None),
            Err(e) => {
                return request.refuse(ErrorBody::new(ErrorCode::InvalidRequest, e.to_string()));
            }
        },
        _ => match query::ws_since(&request.pairs) {
            Ok(since) => (
                Op::Subscribe {
                    since,
                    select_subprotocol: request.offers_subprotocol,
                },
                None,
            ),
            Err(e) => {
                return request.refuse(ErrorBody::new(ErrorCode::InvalidRequest, e.to_string()));
            }
        },
    };
    let span =
        tracing::info_span!("request", tenant = %principal.tenant, analysis_id = %analysis_id);
    let forwarded = Forwarded {
        analysis_id,
        principal,
        op,
    };
    to_analysis(
        &env,
        &forwarded,
        body.as_deref(),
        request.route.is_websocket(),
    )
    .instrument(span)
    .await
}

/// `POST /v1/analyses`: the token first, then the body, then the grant of its id.
async fn submit(req: Request, env: Env, request: &Incoming, keys: &KeySet) -> Result<Response> {
    if let Err(body) = request.authorize(keys, None) {
        return error_response(&body);
    }
    let body = match read_capped(req).await? {
        Ok(body) => body,
        Err(err) => return error_response(&err),
    };
    let submit = match parse_submit_body(&body) {
        Ok(submit) => submit,
        Err(e) => return error_response(&e.body()),
    };
    // An id the edge picks is unknown to the token: only a backend's `*` grants it.
    let grant = submit
        .analysis_id
        .as_ref()
        .map_or(ALL_ANALYSES, |id| id.as_str());
    let principal = match request.authorize(keys, Some(grant)) {
        Ok(p) => p,
        Err(body) => return error_response(&body),
    };
    let analysis_id = match submit.analysis_id {
        Some(id) => id,
        None => new_analysis_id()?,
    };
    let span = tracing::info_span!("submit", tenant = %principal.tenant, analysis_id = %analysis_id, pool = %submit.pool);
    let forwarded = Forwarded {
        analysis_id,
        principal,
        op: Op::Submit {
            pool: submit.pool,
            submission: submit.submission,
        },
    };
    to_analysis(&env, &forwarded, None, false)
        .instrument(span)
        .await
}

/// A pool route: the pool object is named from the verified tenant, whatever the URL says.
async fn to_pool_route(env: Env, request: &Incoming, keys: &KeySet) -> Result<Response> {
    let pool = match PoolName::parse(request.route.pool().unwrap_or_default()) {
        Ok(pool) => pool,
        Err(e) => {
            return request.refuse(ErrorBody::new(
                ErrorCode::InvalidPoolName,
                format!("pool name: {e}"),
            ));
        }
    };
    let principal = match request.authorize(keys, None) {
        Ok(p) => p,
        Err(body) => return request.refuse(body),
    };
    let select_subprotocol = request.offers_subprotocol;
    let op = match &request.route {
        Route::PoolView(_) => PoolOp::View,
        Route::PoolAnalyses(_) => match query::pool_analyses(&request.pairs) {
            Ok((filter, limit)) => PoolOp::Analyses { filter, limit },
            Err(e) => {
                return request.refuse(ErrorBody::new(ErrorCode::InvalidRequest, e.to_string()));
            }
        },
        Route::PoolConnect(_) => match NodeId::parse(&principal.sub) {
            Ok(node_id) => PoolOp::Connect {
                node_id,
                expires_at_ms: principal.expires_at_ms,
                select_subprotocol,
            },
            Err(e) => {
                return request.refuse(ErrorBody::new(
                    ErrorCode::InvalidRequest,
                    format!("the token's sub is the node id: {e}"),
                ));
            }
        },
        _ => PoolOp::Watch {
            expires_at_ms: principal.expires_at_ms,
            select_subprotocol,
        },
    };
    let span = tracing::info_span!("pool_request", tenant = %principal.tenant, pool = %pool);
    let forwarded = PoolForwarded {
        tenant: principal.tenant,
        pool,
        op,
    };
    to_pool(&env, &forwarded, request.route.is_websocket())
        .instrument(span)
        .await
}

/// A fresh analysis id: 128 random bits, hex.
fn new_analysis_id() -> Result<AnalysisId> {
    AnalysisId::parse(&random_hex()?).map_err(|e| worker::Error::RustError(e.to_string()))
}

/// A body of at most [`MAX_BODY_BYTES`] (413 above it, before reading when declared).
/// Its parse is the caller's, or the object's, so it happens once.
async fn read_capped(mut req: Request) -> Result<std::result::Result<Vec<u8>, ErrorBody>> {
    let declared = req
        .headers()
        .get("content-length")?
        .and_then(|v| v.parse::<usize>().ok());
    let too_large = |len| PublishError::TooLarge { len }.body();
    if let Some(n) = declared.filter(|&n| n > MAX_BODY_BYTES) {
        return Ok(Err(too_large(n)));
    }
    let body = req.bytes().await?;
    Ok(if body.len() > MAX_BODY_BYTES {
        Err(too_large(body.len()))
    } else {
        Ok(body)
    })
}
