//! The pool socket itself: its URL, and what each close (or refused handshake) means for
//! the link.

use reqwest::Url;
use stagecast_shared::close::CloseCode;
use stagecast_shared::ids::PoolName;

use crate::edge_socket::ws_url;

/// `{edge}/v1/pools/{pool}/connect`.
pub(super) fn connect_url(edge: &Url, pool: &PoolName) -> Url {
    ws_url(edge, &format!("v1/pools/{pool}/connect"))
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
    fn the_pool_socket_url_names_the_pool() {
        let pool = PoolName::parse("gpu").unwrap();
        let url = connect_url(&Url::parse("https://edge.example/").unwrap(), &pool);
        assert_eq!(url.as_str(), "wss://edge.example/v1/pools/gpu/connect");
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
