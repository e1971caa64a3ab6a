//! Finds the bearer token in the places the contract allows: `Authorization: Bearer` for
//! every request, and for WebSockets also the `token` query parameter, the `stagecast_token`
//! cookie, or the `bearer.<token>` subprotocol next to `stagecast.v1`.

use stagecast_shared::token::bearer_from_header;
use stagecast_shared::ws::{SUBPROTOCOL, TOKEN_COOKIE, bearer_from_subprotocols};

/// What the request carries that may hold a token.
#[derive(Debug, Default, Clone)]
pub struct RequestCredentials<'a> {
    pub authorization: Option<&'a str>,
    pub cookie: Option<&'a str>,
    pub subprotocols: Option<&'a str>,
    pub query_token: Option<&'a str>,
}

/// A token found in the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub token: String,
}

/// Whether the browser offered `stagecast.v1`: then the handshake must select it, or the
/// browser drops the connection before it can read a close code.
pub fn offers_stagecast_subprotocol(header: &str) -> bool {
    header.split(',').any(|p| p.trim() == SUBPROTOCOL)
}

impl RequestCredentials<'_> {
    /// The bearer token of a plain HTTP request: only the Authorization header counts.
    pub fn http_token(&self) -> Option<Found> {
        let token = bearer_from_header(self.authorization?)?;
        Some(Found {
            token: token.to_string(),
        })
    }

    /// The `?token=` of a plain HTTP request, for the routes that take one.
    pub fn query_token(&self) -> Option<Found> {
        let token = self.query_token.filter(|t| !t.is_empty())?;
        Some(Found {
            token: token.to_string(),
        })
    }

    /// The token of a WebSocket handshake, from any one of the four places.
    pub fn websocket_token(&self) -> Option<Found> {
        let from_subprotocol = self.subprotocols.and_then(bearer_from_subprotocols);
        let token = self
            .query_token
            .filter(|t| !t.is_empty())
            .or_else(|| self.authorization.and_then(bearer_from_header))
            .or_else(|| self.cookie.and_then(cookie_token))
            .or(from_subprotocol)?;
        Some(Found {
            token: token.to_string(),
        })
    }
}

fn cookie_token(header: &str) -> Option<&str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == TOKEN_COOKIE && !value.is_empty())
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_takes_only_the_authorization_header() {
        let creds = RequestCredentials {
            authorization: Some("Bearer abc"),
            cookie: Some("stagecast_token=zzz"),
            ..Default::default()
        };
        assert_eq!(creds.http_token().unwrap().token, "abc");
        let cookie_only = RequestCredentials {
            cookie: Some("stagecast_token=zzz"),
            ..Default::default()
        };
        assert_eq!(cookie_only.http_token(), None);
        let basic = RequestCredentials {
            authorization: Some("Basic abc"),
            ..Default::default()
        };
        assert_eq!(basic.http_token(), None);
    }

    #[test]
    fn websocket_finds_each_of_the_four_places() {
        let query = RequestCredentials {
            query_token: Some("q"),
            ..Default::default()
        };
        assert_eq!(query.websocket_token().unwrap().token, "q");
        let header = RequestCredentials {
            authorization: Some("bearer h"),
            ..Default::default()
        };
        assert_eq!(header.websocket_token().unwrap().token, "h");
        let cookie = RequestCredentials {
            cookie: Some("a=1; stagecast_token=c; b=2"),
            ..Default::default()
        };
        assert_eq!(cookie.websocket_token().unwrap().token, "c");
        let proto = RequestCredentials {
            subprotocols: Some("stagecast.v1, bearer.p"),
            ..Default::default()
        };
        assert_eq!(proto.websocket_token(), Some(Found { token: "p".into() }));
        assert!(offers_stagecast_subprotocol("bearer.p, stagecast.v1"));
        assert!(!offers_stagecast_subprotocol("bearer.p"));
    }

    #[test]
    fn missing_or_empty_tokens_are_none() {
        assert_eq!(RequestCredentials::default().websocket_token(), None);
        let empty = RequestCredentials {
            query_token: Some(""),
            cookie: Some("stagecast_token="),
            subprotocols: Some("stagecast.v1"),
            ..Default::default()
        };
        assert_eq!(empty.websocket_token(), None);
    }
}
