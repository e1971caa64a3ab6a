//! The Worker's fetch handler: bound and authenticate the request, then hand it to the
//! analysis's object. Everything that can be refused here is, so bad traffic never wakes
//! an object.

use std::cell::RefCell;
use std::rc::Rc;

use stagecast_shared::api::{ApiError, ErrorBody, ErrorCode};
use stagecast_shared::close::CloseCode;
use stagecast_shared::ids::AnalysisId;
use stagecast_shared::limits::MAX_BODY_BYTES;
use stagecast_shared::token::KeySet;
use stagecast_shared::validate::parse_publish_body;
use stagecast_shared::ws::TOKEN_QUERY;
use tracing::Instrument;
use worker::{Context, Env, Headers, Method, Request, RequestInit, Response, Result, event};

use crate::auth::{Principal, authorize, object_name};
use crate::clock::now_ms;
use crate::config::{self, ConfigError};
use crate::credentials::{RequestCredentials, offers_stagecast_subprotocol};
use crate::forward::{Forwarded, OP_HEADER, Op};
use crate::query;
use crate::respond::{error_response, refuse_websocket};
use crate::route::{Route, RouteError};

thread_local! {
    /// Parsed keys, reused while the configuration string is unchanged.
    static KEYS: RefCell<Option<(String, Rc<KeySet>)>> = const { RefCell::new(None) };
}

fn keys(env: &Env) -> std::result::Result<Rc<KeySet>, ConfigError> {
    let tenants = env
        .secret("STAGECAST_TENANTS")
        .map(|s| s.to_string())
        .ok()
        .or_else(|| env.var("STAGECAST_TENANTS").map(|v| v.to_string()).ok());
    let dev = env
        .secret("STAGECAST_DEV_SECRET")
        .map(|s| s.to_string())
        .ok()
        .or_else(|| env.var("STAGECAST_DEV_SECRET").map(|v| v.to_string()).ok());
    let fingerprint = format!(
        "{}\u{0}{}",
        tenants.as_deref().unwrap_or(""),
        dev.as_deref().unwrap_or("")
    );
    KEYS.with(|cell| {
        if let Some((seen, keys)) = cell.borrow().as_ref()
            && *seen == fingerprint
        {
            return Ok(keys.clone());
        }
        let keys = Rc::new(config::key_set(tenants.as_deref(), dev.as_deref())?);
        *cell.borrow_mut() = Some((fingerprint, keys.clone()));
        Ok(keys)
    })
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    crate::log::init();
    let url = req.url()?;
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
    let Some(analysis_id) = route.analysis_id().map(str::to_owned) else {
        return Response::ok("ok");
    };
    let websocket = matches!(route, Route::Subscribe(_));
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
    let refuse = |body: ErrorBody| refusal(body, websocket, offers_subprotocol);

    let analysis_id = match AnalysisId::parse(&analysis_id) {
        Ok(id) => id,
        Err(e) => {
            return refuse(ErrorBody::new(
                ErrorCode::InvalidAnalysisId,
                format!("analysis id: {e}"),
            ));
        }
    };
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
    } else {
        creds.http_token()
    };

    let keys = match keys(&env) {
        Ok(keys) => keys,
        Err(e) => {
            tracing::error!(error = %e, "edge misconfigured");
            return refuse(ErrorBody::new(
                ErrorCode::Internal,
                "the edge has no valid signing keys configured",
            ));
        }
    };
    let principal = match authorize(
        found.as_ref().map(|f| f.token.as_str()),
        &keys,
        &route,
        analysis_id.as_str(),
        now_ms(),
    ) {
        Ok(p) => p,
        Err(e) => {
            tracing::info!(%analysis_id, error = %e, "refused");
            return refuse(e.body());
        }
    };
    let span =
        tracing::info_span!("request", tenant = %principal.tenant, analysis_id = %analysis_id);
    forward(
        req,
        env,
        route,
        analysis_id,
        principal,
        &pairs,
        offers_subprotocol,
    )
    .instrument(span)
    .await
}

/// Hands an authorized request to its analysis's object.
async fn forward(
    req: Request,
    env: Env,
    route: Route,
    analysis_id: AnalysisId,
    principal: Principal,
    pairs: &[(String, String)],
    offers_subprotocol: bool,
) -> Result<Response> {
    let websocket = matches!(route, Route::Subscribe(_));
    let refuse = |body: ErrorBody| refusal(body, websocket, offers_subprotocol);

    let (op, body) = match &route {
        Route::Publish(_) => match read_publish_body(req).await? {
            Ok(body) => (Op::Publish, Some(body)),
            Err(err) => return error_response(&err),
        },
        Route::Snapshot(_) => (Op::Snapshot, None),
        Route::Cancel(_) => (Op::Cancel, None),
        Route::Events(_) => match query::events_page(pairs) {
            Ok((since, limit)) => (Op::Events { since, limit }, None),
            Err(e) => return refuse(ErrorBody::new(ErrorCode::InvalidRequest, e.to_string())),
        },
        Route::Subscribe(_) => match query::ws_since(pairs) {
            Ok(since) => (
                Op::Subscribe {
                    since,
                    select_subprotocol: offers_subprotocol,
                },
                None,
            ),
            Err(e) => return refuse(ErrorBody::new(ErrorCode::InvalidRequest, e.to_string())),
        },
        Route::Health => unreachable!("health has no analysis id"),
    };

    let name = object_name(&principal.tenant, analysis_id.as_str());
    let forwarded = Forwarded {
        analysis_id,
        principal,
        op,
    };
    let inner_headers = Headers::new();
    inner_headers.set(OP_HEADER, &serde_json::to_string(&forwarded)?)?;
    if websocket {
        inner_headers.set("upgrade", "websocket")?;
    }
    let mut init = RequestInit::new();
    init.with_headers(inner_headers)
        .with_method(if body.is_some() {
            Method::Post
        } else {
            Method::Get
        });
    if let Some(body) = body {
        init.with_body(Some(js_sys::Uint8Array::from(body.as_slice()).into()));
    }
    let inner = Request::new_with_init("https://analysis.internal/", &init)?;
    let stub = env.durable_object("ANALYSIS")?.get_by_name(&name)?;
    stub.fetch_with_request(inner).await
}

/// A refused request's answer: the error body, or for a WebSocket a socket closed at
/// once with the matching code (browsers cannot read a failed handshake's status).
fn refusal(body: ErrorBody, websocket: bool, offers_subprotocol: bool) -> Result<Response> {
    if websocket {
        let code = CloseCode::for_error(body.error.code);
        let reason = format!("{}: {}", code.reason(), body.error.message);
        refuse_websocket(code, &reason, offers_subprotocol)
    } else {
        error_response(&body)
    }
}

/// The publish body, bounded and validated here so a bad batch never reaches the object.
async fn read_publish_body(mut req: Request) -> Result<std::result::Result<Vec<u8>, ErrorBody>> {
    let declared = req
        .headers()
        .get("content-length")?
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Ok(Err(ErrorBody::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "body of {} bytes is over the {MAX_BODY_BYTES} byte limit",
                declared.unwrap_or(0)
            ),
        )));
    }
    let body = req.bytes().await?;
    Ok(match parse_publish_body(&body) {
        Ok(_) => Ok(body),
        Err(e) => Err(e.body()),
    })
}
