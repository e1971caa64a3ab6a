//! Answers in the contract's shapes: JSON bodies, the error body, and WebSocket refusals.

use stagecast_shared::api::ErrorBody;
use stagecast_shared::close::CloseCode;
use stagecast_shared::ws::SUBPROTOCOL;
use worker::wasm_bindgen::{self, JsCast, JsValue, prelude::wasm_bindgen};
use worker::{
    Headers, Response, Result, WebSocket, WebSocketIncomingMessage, WebSocketPair, web_sys,
};

use crate::pages::{CACHE_CONTROL, Page};

/// Any page may read the edge's answers: they are bought with a bearer token, never a
/// cookie alone, and a wildcard origin keeps browsers from sending credentials.
pub const ALLOW_ORIGIN: (&str, &str) = ("access-control-allow-origin", "*");

pub fn json_response<T: serde::Serialize>(value: &T, status: u16) -> Result<Response> {
    let mut response = Response::from_json(value)?.with_status(status);
    response.headers_mut().set(ALLOW_ORIGIN.0, ALLOW_ORIGIN.1)?;
    Ok(response)
}

/// A page, or 304 when `if_none_match` names its version already.
pub fn page_response(page: &Page, if_none_match: Option<&str>) -> Result<Response> {
    let headers = Headers::new();
    headers.set("etag", page.etag())?;
    headers.set("cache-control", CACHE_CONTROL)?;
    if page.not_modified(if_none_match) {
        return Ok(Response::empty()?.with_status(304).with_headers(headers));
    }
    headers.set("content-type", page.content_type)?;
    headers.set("x-content-type-options", "nosniff")?;
    Ok(Response::from_bytes(page.body.to_vec())?.with_headers(headers))
}

/// The answer to a CORS preflight: a page on another origin may send the token in
/// `Authorization` (and resume a stream with `Last-Event-ID`).
pub fn preflight_response() -> Result<Response> {
    let mut response = Response::empty()?.with_status(204);
    let headers = response.headers_mut();
    headers.set(ALLOW_ORIGIN.0, ALLOW_ORIGIN.1)?;
    headers.set("access-control-allow-methods", "GET, HEAD, POST, PUT")?;
    headers.set(
        "access-control-allow-headers",
        "authorization, content-type, last-event-id",
    )?;
    headers.set("access-control-max-age", "86400")?;
    Ok(response)
}

/// `{"error": {...}}` with the status its code carries.
pub fn error_response(body: &ErrorBody) -> Result<Response> {
    json_response(body, body.error.code.status())
}

/// An error (429 `rate_limited`, `queue_full`) with `Retry-After` in whole seconds.
pub fn retry_later_response(body: &ErrorBody, retry_after_secs: u64) -> Result<Response> {
    let mut response = error_response(body)?;
    response
        .headers_mut()
        .set("retry-after", &retry_after_secs.to_string())?;
    Ok(response)
}

/// Browsers cannot read the status of a failed handshake, so a refused WebSocket is
/// accepted and closed at once with the contract's code and a readable reason.
pub fn refuse_websocket(
    code: CloseCode,
    reason: &str,
    select_subprotocol: bool,
) -> Result<Response> {
    let pair = WebSocketPair::new()?;
    pair.server.accept()?;
    pair.server
        .close(Some(code.code()), Some(truncate_reason(reason)))?;
    websocket_response(pair.client, select_subprotocol)
}

/// Sends `text` to every socket of `sockets`, converted to a JS string once: a `&str`
/// would be copied out of wasm memory and decoded again for each socket. A socket closing
/// concurrently may refuse the frame; a viewer resumes with `since`, a node reconnects.
pub fn broadcast<'a>(sockets: impl IntoIterator<Item = &'a WebSocket>, text: &str) {
    let text = JsValue::from_str(text);
    for ws in sockets {
        let socket: &web_sys::WebSocket = ws.as_ref();
        let _ = socket.unchecked_ref::<SendTarget>().send(&text);
    }
}

#[wasm_bindgen]
extern "C" {
    /// A WebSocket seen only as what `send` takes: web-sys binds `send` for `&str` only,
    /// which makes a JS string again for each socket.
    type SendTarget;
    #[wasm_bindgen(method, catch)]
    fn send(this: &SendTarget, data: &JsValue) -> std::result::Result<(), JsValue>;
}

/// Closes `ws` with `code` and `reason` (the code's own reason when empty). A socket
/// already closing refuses; there is nothing more to do then.
pub fn close(ws: &WebSocket, code: CloseCode, reason: &str) {
    let reason = if reason.is_empty() {
        code.reason()
    } else {
        reason
    };
    let _ = ws.close(Some(code.code()), Some(truncate_reason(reason)));
}

/// The 101 answer, selecting `stagecast.v1` when the browser offered it.
pub fn websocket_response(client: WebSocket, select_subprotocol: bool) -> Result<Response> {
    let mut response = Response::from_websocket(client)?;
    if select_subprotocol {
        response
            .headers_mut()
            .set("sec-websocket-protocol", SUBPROTOCOL)?;
    }
    Ok(response)
}

/// A close reason must fit in 123 bytes.
pub fn truncate_reason(reason: &str) -> &str {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// A socket message as text: clients speak JSON text frames; a binary one is read as UTF-8
/// (lossily), so it fails to parse like any other bad message.
pub fn message_text(message: WebSocketIncomingMessage) -> String {
    match message {
        WebSocketIncomingMessage::String(text) => text,
        WebSocketIncomingMessage::Binary(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
    }
}
