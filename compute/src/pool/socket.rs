//! The pool socket itself: its URL, the handshake with the node's token, and what each
//! close (or refused handshake) means for the link.

use std::time::Duration;

use reqwest::Url;
use stagecast_shared::close::CloseCode;
use stagecast_shared::ids::PoolName;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A handshake that takes longer is network trouble: back off and try again.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// `{edge}/v1/pools/{pool}/connect`, ws:// for an http:// edge and wss:// for https://.
pub(super) fn connect_url(edge: &Url, pool: &PoolName) -> Url {
    let mut url = edge
        .join(&format!("v1/pools/{pool}/connect"))
        .expect("paths of the contract join");
    let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
    url.set_scheme(scheme)
        .expect("http(s) URLs take a ws(s) scheme");
    url
}

/// Why a handshake did not open a socket.
#[derive(Debug)]
pub(super) enum DialError {
    /// The edge answered the upgrade with this HTTP status.
    Refused(u16),
    /// No answer: the network, TLS, a timeout.
    Failed(String),
}

/// Opens the socket, the token in `Authorization: Bearer`.
pub(super) async fn dial(url: &Url, token: &str) -> Result<Ws, DialError> {
    let failed = |e: &dyn std::fmt::Display| DialError::Failed(e.to_string());
    let mut request = url.as_str().into_client_request().map_err(|e| failed(&e))?;
    let bearer = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| failed(&e))?;
    request.headers_mut().insert(AUTHORIZATION, bearer);
    match tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(request)).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => {
            Err(DialError::Refused(response.status().as_u16()))
        }
        Ok(Err(e)) => Err(failed(&e)),
        Err(_) => Err(failed(&"the handshake timed out")),
    }
}

/// What the link does after the socket closed or a handshake was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// Network trouble or a busy edge: reconnect after the backoff.
    Backoff,
    /// 4010: the token expired while connected; a new one, then reconnect.
    Expired,
    /// 4001 or 401: a new token once; refused again, the link gives up.
    Unauthorized,
    /// 4409: another process joined as this node id and holds its leases now.
    Replaced,
    /// 4003, 4400 or another 4xx: retrying cannot help.
    Fatal,
}

/// The close code of a socket that closed (`None`: no close frame).
pub(super) fn after_close(code: Option<u16>) -> Next {
    match code.and_then(CloseCode::from_code) {
        Some(CloseCode::Replaced) => Next::Replaced,
        Some(CloseCode::TokenExpired) => Next::Expired,
        Some(CloseCode::InvalidToken) => Next::Unauthorized,
        Some(CloseCode::Forbidden | CloseCode::BadRequest) => Next::Fatal,
        // 4008, 4009, 1012, 1013, 1006 and the rest; a pool is never deleted, so even a
        // normal close (1000) is an edge going away
        _ => Next::Backoff,
    }
}

/// The HTTP status of a refused upgrade (the edge closes refused sockets with a code
/// instead, but a proxy or an older edge may answer plainly).
pub(super) fn after_status(status: u16) -> Next {
    match status {
        401 => Next::Unauthorized,
        408 | 429 => Next::Backoff,
        400..=499 => Next::Fatal,
        _ => Next::Backoff,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_url_follows_the_edge_scheme() {
        let pool = PoolName::parse("gpu").unwrap();
        let url = |edge: &str| connect_url(&Url::parse(edge).unwrap(), &pool).to_string();
        assert_eq!(
            url("http://127.0.0.1:8787"),
            "ws://127.0.0.1:8787/v1/pools/gpu/connect"
        );
        assert_eq!(
            url("https://edge.example/"),
            "wss://edge.example/v1/pools/gpu/connect"
        );
    }

    #[test]
    fn closes_and_refusals_map_to_what_the_contract_says() {
        let cases = [
            (Some(4409), Next::Replaced),
            (Some(4010), Next::Expired),
            (Some(4001), Next::Unauthorized),
            (Some(4003), Next::Fatal),
            (Some(4400), Next::Fatal),
            (Some(4008), Next::Backoff),
            (Some(4009), Next::Backoff),
            (Some(1012), Next::Backoff),
            (Some(1000), Next::Backoff),
            (Some(4999), Next::Backoff),
            (None, Next::Backoff),
        ];
        for (code, next) in cases {
            assert_eq!(after_close(code), next, "{code:?}");
        }
        let statuses = [
            (401, Next::Unauthorized),
            (403, Next::Fatal),
            (404, Next::Fatal),
            (429, Next::Backoff),
            (502, Next::Backoff),
        ];
        for (status, next) in statuses {
            assert_eq!(after_status(status), next, "{status}");
        }
    }
}
