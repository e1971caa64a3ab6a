//! The node's HTTP client of the edge: signed publishes of events and artifacts, the
//! fetch of an uploaded input, and a reachability probe.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, IF_RANGE, RANGE, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use stagecast_shared::api::{ErrorBody, ErrorDetail, PublishResponse};
use stagecast_shared::ids::AnalysisId;
use stagecast_shared::token::{Claims, MintError, Scope, SigningKey, mint};

use super::socket::PublishSocket;
use crate::clock::now_s;
use crate::pipeline::Artifact;

/// Lifetime of the node tokens the client signs for itself.
const TOKEN_TTL_S: i64 = 300;
/// A token is replaced this long before it expires.
const TOKEN_MARGIN_S: i64 = 60;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Who this node is to the edge, and the key it signs its tokens with.
pub struct NodeIdentity {
    /// The tenant (`iss`) the node publishes for.
    pub tenant: String,
    /// The node's name (`sub`).
    pub node_id: String,
    pub key: SigningKey,
}

impl NodeIdentity {
    /// A token of this identity with `scopes` over `analyses`, valid for `ttl_s` from `now_s`.
    pub fn token(
        &self,
        scopes: &[Scope],
        analyses: &[&str],
        now_s: i64,
        ttl_s: i64,
    ) -> Result<String, MintError> {
        let claims = Claims::new(&self.tenant, &self.node_id, scopes, analyses, now_s, ttl_s);
        mint(&claims, &self.key)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EdgeClientError {
    #[error("edge URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the edge could not be reached: {0}")]
    Transport(#[source] reqwest::Error),
    #[error("the edge answered {status}: {code}: {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
        /// The batch index of the event it refused, when it names one.
        index: Option<u32>,
        retry_after: Option<Duration>,
    },
    #[error("the publish socket failed: {0}")]
    Socket(String),
    #[error(transparent)]
    Token(#[from] MintError),
}

impl PublishError {
    /// The refusal the edge answered, with the HTTP status its code carries.
    pub fn refused(status: u16, error: ErrorDetail, retry_after: Option<Duration>) -> Self {
        let code = serde_json::to_value(error.code)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        Self::Refused {
            status,
            code,
            message: error.message,
            index: error.index,
            retry_after,
        }
    }

    /// Refused for what the batch holds (400, 409, 413): sending it again cannot work.
    /// Anything else (no connection, 5xx, 429, a token the edge does not know yet) may
    /// pass later and is retried.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Self::Refused {
                status: 400 | 409 | 413,
                ..
            }
        )
    }

    /// 409 `stale_attempt`: the batch's attempt is not the analysis' current lease, so
    /// nothing more of this run may be published.
    pub fn is_stale_attempt(&self) -> bool {
        matches!(self, Self::Refused { status: 409, code, .. } if code == "stale_attempt")
    }
}

/// A short-lived node token for one analysis, replaced before it expires.
#[derive(Default)]
pub struct TokenCache {
    current: Option<(String, i64)>,
}

impl TokenCache {
    pub fn get(
        &mut self,
        identity: &NodeIdentity,
        analysis: &AnalysisId,
        now_s: i64,
    ) -> Result<&str, MintError> {
        let fresh = self
            .current
            .as_ref()
            .is_some_and(|(_, exp)| now_s < exp - TOKEN_MARGIN_S);
        if !fresh {
            let token =
                identity.token(&[Scope::Publish], &[analysis.as_str()], now_s, TOKEN_TTL_S)?;
            self.current = Some((token, now_s + TOKEN_TTL_S));
        }
        Ok(&self.current.as_ref().expect("set above").0)
    }
}

/// How a publication sends its batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PublishOver {
    /// A socket per publication, with HTTP when it will not open.
    #[default]
    Socket,
    /// `POST /v1/analyses/{id}/events` only.
    Http,
}

impl FromStr for PublishOver {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "socket" => Ok(Self::Socket),
            "http" => Ok(Self::Http),
            other => Err(format!("unknown transport {other:?}: use socket or http")),
        }
    }
}

impl fmt::Display for PublishOver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Socket => "socket",
            Self::Http => "http",
        })
    }
}

pub struct EdgeClient {
    base: Url,
    http: reqwest::Client,
    identity: NodeIdentity,
    publish_over: PublishOver,
}

impl EdgeClient {
    pub fn new(base: &str, identity: NodeIdentity) -> Result<Self, EdgeClientError> {
        let bad = |reason: &str| EdgeClientError::BadUrl {
            url: base.to_owned(),
            reason: reason.to_owned(),
        };
        let base = Url::parse(base).map_err(|e| bad(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(bad("use an http:// or https:// URL"));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        Ok(Self {
            base,
            http,
            identity,
            publish_over: PublishOver::default(),
        })
    }

    /// Publishes over `over` rather than the default (a socket).
    pub fn with_publish_over(mut self, over: PublishOver) -> Self {
        self.publish_over = over;
        self
    }

    /// A publication's socket to `analysis`, unless this client publishes over HTTP only.
    pub fn publish_socket(&self, analysis: &AnalysisId) -> Option<PublishSocket> {
        (self.publish_over == PublishOver::Socket).then(|| PublishSocket::new(&self.base, analysis))
    }

    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    fn url(&self, path: &str) -> Url {
        self.base.join(path).expect("paths of the contract join")
    }

    /// Posts one `{"attempt"?: k, "events": [...]}` body.
    pub async fn publish(
        &self,
        analysis: &AnalysisId,
        token: &str,
        body: String,
    ) -> Result<PublishResponse, PublishError> {
        let response = self
            .http
            .post(self.url(&format!("v1/analyses/{analysis}/events")))
            .bearer_auth(token)
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(PublishError::Transport)?;
        if response.status() == StatusCode::OK {
            return response.json().await.map_err(PublishError::Transport);
        }
        Err(refusal(response).await)
    }

    /// `PUT /v1/analyses/{id}/artifacts/{name}` with `bytes`, under the lease's `attempt`
    /// when the run has one; `frame` and `kind` say what it shows.
    pub async fn put_artifact(
        &self,
        analysis: &AnalysisId,
        token: &str,
        artifact: &Artifact,
        attempt: Option<u32>,
    ) -> Result<(), PublishError> {
        let mut url = self.url(&format!(
            "v1/analyses/{analysis}/artifacts/{}",
            artifact.name.as_str()
        ));
        {
            let mut query = url.query_pairs_mut();
            if let Some(attempt) = attempt {
                query.append_pair("attempt", &attempt.to_string());
            }
            query
                .append_pair("frame", &artifact.frame.to_string())
                .append_pair("kind", artifact.kind);
        }
        let response = self
            .http
            .put(url)
            .bearer_auth(token)
            .header(CONTENT_TYPE, artifact.name.content_type())
            .body(artifact.bytes.clone())
            .send()
            .await
            .map_err(PublishError::Transport)?;
        if response.status().is_success() {
            return Ok(());
        }
        Err(refusal(response).await)
    }

    /// Starts `GET /v1/analyses/{id}/input` with a node token of its own; `resume` is the
    /// byte to go on from and the ETag the bytes so far came with. `timeout` bounds the
    /// whole transfer (an input is larger than a publish).
    pub async fn input(
        &self,
        analysis: &AnalysisId,
        resume: Option<(u64, &str)>,
        timeout: Duration,
    ) -> Result<reqwest::Response, PublishError> {
        let token = self.identity.token(
            &[Scope::Publish],
            &[analysis.as_str()],
            now_s(),
            TOKEN_TTL_S,
        )?;
        let mut request = self
            .http
            .get(self.url(&format!("v1/analyses/{analysis}/input")))
            .bearer_auth(token)
            .timeout(timeout);
        if let Some((from, etag)) = resume {
            request = request
                .header(RANGE, format!("bytes={from}-"))
                .header(IF_RANGE, etag);
        }
        request.send().await.map_err(PublishError::Transport)
    }

    /// Whether the edge answers `GET /healthz`.
    pub async fn reachable(&self) -> bool {
        self.http
            .get(self.url("healthz"))
            .timeout(PROBE_TIMEOUT)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }
}

/// The contract's error body of a refusal (or what a proxy answered instead).
pub(crate) async fn refusal(response: reqwest::Response) -> PublishError {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .map(Duration::from_secs);
    let text = response.text().await.unwrap_or_default();
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => PublishError::refused(status.as_u16(), body.error, retry_after),
        // not the contract's body: a proxy or a wrong URL
        Err(_) => PublishError::Refused {
            status: status.as_u16(),
            code: "unexpected_response".to_owned(),
            message: clip(&text),
            index: None,
            retry_after,
        },
    }
}

fn clip(text: &str) -> String {
    text.chars().take(200).collect()
}
