//! Requests between the Worker and objects, and between objects: the operation goes in
//! [`OP_HEADER`], the answer comes back as JSON.

use serde::de::DeserializeOwned;
use stagecast_shared::ids::AnalysisId;
use worker::{Env, Headers, Method, Request, RequestInit, Response, Result, Stub};

use crate::auth::object_name;
use crate::forward::{Forwarded, OP_HEADER, PoolForwarded};

/// The analysis object `analysis_id` of `tenant`.
pub fn analysis_stub(env: &Env, tenant: &str, analysis_id: &AnalysisId) -> Result<Stub> {
    env.durable_object("ANALYSIS")?
        .get_by_name(&object_name(tenant, analysis_id.as_str()))
}

/// The pool object of `fwd`'s tenant and pool.
pub fn pool_stub(env: &Env, fwd: &PoolForwarded) -> Result<Stub> {
    env.durable_object("POOL")?
        .get_by_name(&object_name(&fwd.tenant, fwd.pool.as_str()))
}

/// The internal request carrying `op` (JSON) and `body`; a WebSocket upgrade when asked.
pub fn internal_request(op: &str, body: Option<&[u8]>, websocket: bool) -> Result<Request> {
    let headers = Headers::new();
    headers.set(OP_HEADER, op)?;
    if websocket {
        headers.set("upgrade", "websocket")?;
    }
    let mut init = RequestInit::new();
    init.with_headers(headers).with_method(if body.is_some() {
        Method::Post
    } else {
        Method::Get
    });
    if let Some(body) = body {
        init.with_body(Some(js_sys::Uint8Array::from(body).into()));
    }
    Request::new_with_init("https://object.internal/", &init)
}

/// Sends `fwd` to its analysis object and returns the answer as it is.
pub async fn to_analysis(
    env: &Env,
    fwd: &Forwarded,
    body: Option<&[u8]>,
    websocket: bool,
) -> Result<Response> {
    let request = internal_request(&serde_json::to_string(fwd)?, body, websocket)?;
    analysis_stub(env, &fwd.principal.tenant, &fwd.analysis_id)?
        .fetch_with_request(request)
        .await
}

/// Sends `fwd` to its pool object and returns the answer as it is.
pub async fn to_pool(env: &Env, fwd: &PoolForwarded, websocket: bool) -> Result<Response> {
    let request = internal_request(&serde_json::to_string(fwd)?, None, websocket)?;
    pool_stub(env, fwd)?.fetch_with_request(request).await
}

/// A JSON answer from another object; anything but a 200 is an error.
pub async fn json_answer<T: DeserializeOwned>(mut response: Response) -> Result<T> {
    if response.status_code() != 200 {
        let text = response.text().await.unwrap_or_default();
        return Err(worker::Error::RustError(format!(
            "object answered {}: {text}",
            response.status_code()
        )));
    }
    response.json().await
}
