//! Opening a WebSocket to the edge (the pool socket, a publish socket): its URL and the
//! handshake with the node's token.

use std::fmt;
use std::time::Duration;

use reqwest::Url;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A handshake that takes longer is network trouble: back off and try again.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// `{edge}/{path}`, ws:// for an http:// edge and wss:// for https://.
pub fn ws_url(edge: &Url, path: &str) -> Url {
    let mut url = edge.join(path).expect("paths of the contract join");
    let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
    url.set_scheme(scheme)
        .expect("http(s) URLs take a ws(s) scheme");
    url
}

/// Why a handshake did not open a socket.
#[derive(Debug)]
pub enum DialError {
    /// The edge answered the upgrade with this HTTP status.
    Refused(u16),
    /// No answer: the network, TLS, a timeout.
    Failed(String),
}

impl fmt::Display for DialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused(status) => write!(f, "the edge answered the handshake with {status}"),
            Self::Failed(e) => f.write_str(e),
        }
    }
}

/// Opens the socket, the token in `Authorization: Bearer`.
pub async fn dial(url: &Url, token: &str) -> Result<Ws, DialError> {
    let failed = |e: &dyn fmt::Display| DialError::Failed(e.to_string());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_url_follows_the_edge_scheme() {
        let url =
            |edge: &str| ws_url(&Url::parse(edge).unwrap(), "v1/pools/gpu/connect").to_string();
        assert_eq!(
            url("http://127.0.0.1:8787"),
            "ws://127.0.0.1:8787/v1/pools/gpu/connect"
        );
        assert_eq!(
            url("https://edge.example/"),
            "wss://edge.example/v1/pools/gpu/connect"
        );
    }
}
