//! Maps a method and path onto the contract's routes, before anything is authenticated.

use crate::pages::{self, Page};

/// One of the contract's routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Health,
    Snapshot(String),
    Events(String),
    Publish(String),
    /// `GET /v1/analyses/{id}/publish`: a node's publish socket.
    PublishSocket(String),
    Cancel(String),
    Subscribe(String),
    /// `GET /v1/analyses/{id}/stream`: the socket's Server-Sent Events fallback.
    Stream(String),
    /// `GET /openapi.json`: the edge's OpenAPI document.
    OpenApi,
    /// `POST /v1/analyses`: the id, if any, is in the body.
    Submit,
    /// `GET /v1/pools/{pool}`.
    PoolView(String),
    /// `GET /v1/pools/{pool}/analyses`.
    PoolAnalyses(String),
    /// `GET /v1/pools/{pool}/connect`: a node's socket.
    PoolConnect(String),
    /// `GET /v1/pools/{pool}/ws`: the live pool view.
    PoolWatch(String),
    /// `PUT /v1/analyses/{id}/input`.
    Upload(String),
    /// `GET /v1/analyses/{id}/input`: the leased node's fetch.
    Input(String),
    /// `PUT /v1/analyses/{id}/artifacts/{name}` (name unvalidated).
    PutArtifact(String, String),
    /// `GET /v1/analyses/{id}/artifacts/{name}`.
    Artifact(String, String),
    /// `GET /`, `/analysis`, `/pool` and their scripts: a page the Worker serves.
    Page(&'static Page),
}

/// Why a request matched no route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("no such route")]
    NotFound,
    #[error("{0} is not allowed on this route")]
    MethodNotAllowed(String),
}

impl Route {
    /// The analysis id in the path, unvalidated (validation names the field and the rule).
    pub fn analysis_id(&self) -> Option<&str> {
        match self {
            Route::Snapshot(id)
            | Route::Events(id)
            | Route::Publish(id)
            | Route::PublishSocket(id)
            | Route::Cancel(id)
            | Route::Subscribe(id)
            | Route::Stream(id)
            | Route::Upload(id)
            | Route::Input(id)
            | Route::PutArtifact(id, _)
            | Route::Artifact(id, _) => Some(id),
            _ => None,
        }
    }

    /// The pool name in the path, unvalidated.
    pub fn pool(&self) -> Option<&str> {
        match self {
            Route::PoolView(pool)
            | Route::PoolAnalyses(pool)
            | Route::PoolConnect(pool)
            | Route::PoolWatch(pool) => Some(pool),
            _ => None,
        }
    }

    /// The artifact name in the path, unvalidated.
    pub fn artifact_name(&self) -> Option<&str> {
        match self {
            Route::PutArtifact(_, name) | Route::Artifact(_, name) => Some(name),
            _ => None,
        }
    }

    /// Whether a plain HTTP request may carry its token as `?token=` (an `<img>` and an
    /// `EventSource` cannot send a header).
    pub fn takes_query_token(&self) -> bool {
        matches!(self, Route::Artifact(..) | Route::Stream(_))
    }

    /// Whether the route is a WebSocket.
    pub fn is_websocket(&self) -> bool {
        matches!(
            self,
            Route::Subscribe(_)
                | Route::PublishSocket(_)
                | Route::PoolConnect(_)
                | Route::PoolWatch(_)
        )
    }

    pub fn parse(method: &str, path: &str) -> Result<Route, RouteError> {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let (route, allowed) = match segments.as_slice() {
            ["healthz"] => (Route::Health, "GET"),
            ["openapi.json"] => (Route::OpenApi, "GET"),
            ["v1", "analyses"] => (Route::Submit, "POST"),
            ["v1", "pools", pool] => (Route::PoolView(pool.to_string()), "GET"),
            ["v1", "pools", pool, "analyses"] => (Route::PoolAnalyses(pool.to_string()), "GET"),
            ["v1", "pools", pool, "connect"] => (Route::PoolConnect(pool.to_string()), "GET"),
            ["v1", "pools", pool, "ws"] => (Route::PoolWatch(pool.to_string()), "GET"),
            ["v1", "analyses", id] => (Route::Snapshot(id.to_string()), "GET"),
            ["v1", "analyses", id, "events"] if method == "POST" => {
                (Route::Publish(id.to_string()), "POST")
            }
            ["v1", "analyses", id, "events"] => (Route::Events(id.to_string()), "GET"),
            ["v1", "analyses", id, "cancel"] => (Route::Cancel(id.to_string()), "POST"),
            ["v1", "analyses", id, "ws"] => (Route::Subscribe(id.to_string()), "GET"),
            ["v1", "analyses", id, "publish"] => (Route::PublishSocket(id.to_string()), "GET"),
            ["v1", "analyses", id, "stream"] => (Route::Stream(id.to_string()), "GET"),
            ["v1", "analyses", id, "input"] if method == "PUT" => {
                (Route::Upload(id.to_string()), "PUT")
            }
            ["v1", "analyses", id, "input"] => (Route::Input(id.to_string()), "GET"),
            ["v1", "analyses", id, "artifacts", name] if method == "PUT" => {
                (Route::PutArtifact(id.to_string(), name.to_string()), "PUT")
            }
            ["v1", "analyses", id, "artifacts", name] => {
                (Route::Artifact(id.to_string(), name.to_string()), "GET")
            }
            _ => match pages::find(path) {
                Some(page) => (Route::Page(page), "GET"),
                None => return Err(RouteError::NotFound),
            },
        };
        if method == allowed || (method == "HEAD" && allowed == "GET") {
            Ok(route)
        } else {
            Err(RouteError::MethodNotAllowed(method.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contract_route_parses() {
        assert_eq!(Route::parse("GET", "/healthz"), Ok(Route::Health));
        assert_eq!(
            Route::parse("GET", "/v1/analyses/a1"),
            Ok(Route::Snapshot("a1".into()))
        );
        assert_eq!(
            Route::parse("GET", "/v1/analyses/a1/events"),
            Ok(Route::Events("a1".into()))
        );
        assert_eq!(
            Route::parse("POST", "/v1/analyses/a1/events"),
            Ok(Route::Publish("a1".into()))
        );
        assert_eq!(
            Route::parse("POST", "/v1/analyses/a1/cancel"),
            Ok(Route::Cancel("a1".into()))
        );
        assert_eq!(
            Route::parse("GET", "/v1/analyses/a1/ws"),
            Ok(Route::Subscribe("a1".into()))
        );
        let publish = Route::parse("GET", "/v1/analyses/a1/publish").unwrap();
        assert_eq!(publish, Route::PublishSocket("a1".into()));
        assert!(publish.is_websocket() && publish.analysis_id() == Some("a1"));
        let stream = Route::parse("GET", "/v1/analyses/a1/stream").unwrap();
        assert_eq!(stream, Route::Stream("a1".into()));
        assert!(stream.takes_query_token() && !stream.is_websocket());
        assert_eq!(Route::parse("GET", "/openapi.json"), Ok(Route::OpenApi));
        assert_eq!(Route::parse("POST", "/v1/analyses"), Ok(Route::Submit));
        assert_eq!(
            Route::parse("PUT", "/v1/analyses/a1/input"),
            Ok(Route::Upload("a1".into()))
        );
        assert_eq!(
            Route::parse("GET", "/v1/analyses/a1/input"),
            Ok(Route::Input("a1".into()))
        );
        let put = Route::parse("PUT", "/v1/analyses/a1/artifacts/k.jpg").unwrap();
        assert_eq!(
            (put.analysis_id(), put.artifact_name()),
            (Some("a1"), Some("k.jpg"))
        );
        let get = Route::parse("HEAD", "/v1/analyses/a1/artifacts/k.jpg").unwrap();
        assert!(get.takes_query_token() && !put.takes_query_token());
        assert_eq!(
            Route::parse("GET", "/v1/pools/gpu"),
            Ok(Route::PoolView("gpu".into()))
        );
        assert_eq!(
            Route::parse("GET", "/v1/pools/gpu/analyses"),
            Ok(Route::PoolAnalyses("gpu".into()))
        );
        let connect = Route::parse("GET", "/v1/pools/gpu/connect").unwrap();
        assert_eq!(
            (connect.pool(), connect.is_websocket()),
            (Some("gpu"), true)
        );
        assert_eq!(
            Route::parse("GET", "/v1/pools/gpu/ws"),
            Ok(Route::PoolWatch("gpu".into()))
        );
    }

    #[test]
    fn pages_are_routes_for_get_and_head_only() {
        let dashboard = pages::find("/analysis").unwrap();
        assert_eq!(Route::parse("GET", "/analysis"), Ok(Route::Page(dashboard)));
        assert_eq!(
            Route::parse("HEAD", "/client/v1/stagecast.js"),
            Ok(Route::Page(pages::find("/client/v1/stagecast.js").unwrap()))
        );
        assert!(matches!(Route::parse("GET", "/"), Ok(Route::Page(p)) if p.path == "/"));
        assert_eq!(
            Route::parse("POST", "/analysis"),
            Err(RouteError::MethodNotAllowed("POST".into()))
        );
        assert_eq!(
            Route::parse("GET", "/analysis.html"),
            Err(RouteError::NotFound)
        );
    }

    #[test]
    fn unknown_paths_and_wrong_methods_are_refused() {
        assert_eq!(
            Route::parse("GET", "/v1/analyses"),
            Err(RouteError::MethodNotAllowed("GET".into()))
        );
        assert_eq!(Route::parse("GET", "/v1/pools"), Err(RouteError::NotFound));
        assert_eq!(
            Route::parse("GET", "/v1/analyses/a/b/c"),
            Err(RouteError::NotFound)
        );
        assert_eq!(
            Route::parse("DELETE", "/v1/analyses/a1"),
            Err(RouteError::MethodNotAllowed("DELETE".into()))
        );
        assert_eq!(
            Route::parse("GET", "/v1/analyses/a1/cancel"),
            Err(RouteError::MethodNotAllowed("GET".into()))
        );
    }
}
