//! Bearer tokens: JWTs signed by a tenant's key, verified against the edge's [`KeySet`].
//!
//! The key is found by the token's `iss` (the tenant) and header `kid`, and its pinned
//! algorithm must equal the header's `alg` (`none` never works). Time claims are
//! checked here against the caller's clock, not by jsonwebtoken: its clock is
//! `SystemTime::now`, which panics on wasm32-unknown-unknown.

mod keys;

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Header, Validation};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::api::{ApiError, ErrorCode};

pub use keys::{Alg, DEV_KID, DEV_TENANT, KeySet, KeySetError, MIN_HS256_SECRET_BYTES, SigningKey};

/// The only audience the edge accepts.
pub const AUDIENCE: &str = "stagecast";
/// Clock skew tolerated on `exp` and `nbf`, in seconds: node and edge clocks differ a little.
pub const CLOCK_SKEW_S: i64 = 30;
/// The `analyses` entry that grants every analysis of the tenant.
pub const ALL_ANALYSES: &str = "*";

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Read snapshots and events, open WebSockets.
    Subscribe,
    /// Ask for a cancel.
    Cancel,
    /// Publish events (nodes).
    Publish,
    /// Read pools; it does not imply the other scopes.
    Admin,
    /// Submit work to a pool (backends).
    Submit,
    /// Connect to a pool and take its work (nodes; `sub` is the node id).
    Node,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Subscribe => "subscribe",
            Self::Cancel => "cancel",
            Self::Publish => "publish",
            Self::Admin => "admin",
            Self::Submit => "submit",
            Self::Node => "node",
        }
    }

    /// The scope a word names; `None` for words this version does not know.
    pub fn parse(word: &str) -> Option<Self> {
        match word {
            "subscribe" => Some(Self::Subscribe),
            "cancel" => Some(Self::Cancel),
            "publish" => Some(Self::Publish),
            "admin" => Some(Self::Admin),
            "submit" => Some(Self::Submit),
            "node" => Some(Self::Node),
            _ => None,
        }
    }

    /// The space-separated `scope` claim for these scopes.
    pub fn join(scopes: &[Scope]) -> String {
        scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A token's claims. Times are seconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The tenant id.
    pub iss: String,
    /// The user or node.
    pub sub: String,
    /// Must be [`AUDIENCE`].
    pub aud: String,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Space-separated scopes; unknown words are ignored.
    #[serde(default)]
    pub scope: String,
    /// Analysis ids, or `["*"]` for every analysis of the tenant.
    #[serde(default)]
    pub analyses: Vec<String>,
}

impl Claims {
    /// Claims for `tenant` and `sub`, valid from `now_s` for `ttl_s` seconds.
    pub fn new(
        tenant: &str,
        sub: &str,
        scopes: &[Scope],
        analyses: &[&str],
        now_s: i64,
        ttl_s: i64,
    ) -> Self {
        Self {
            iss: tenant.to_owned(),
            sub: sub.to_owned(),
            aud: AUDIENCE.to_owned(),
            exp: now_s.saturating_add(ttl_s),
            iat: Some(now_s),
            nbf: None,
            scope: Scope::join(scopes),
            analyses: analyses.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    pub fn has_scope(&self, scope: Scope) -> bool {
        self.scope
            .split_ascii_whitespace()
            .any(|word| Scope::parse(word) == Some(scope))
    }

    /// Whether `analysis_id` (of this token's tenant) is granted.
    pub fn grants_analysis(&self, analysis_id: &str) -> bool {
        self.analyses
            .iter()
            .any(|a| a == ALL_ANALYSES || a == analysis_id)
    }
}

/// A token whose signature, algorithm, audience and times were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The tenant (the verified `iss`): with the analysis id it names the Durable Object.
    pub tenant: String,
    pub kid: String,
    pub claims: Claims,
}

impl VerifiedToken {
    /// 403 unless the token has `scope`.
    pub fn require_scope(&self, scope: Scope) -> Result<(), TokenError> {
        if self.claims.has_scope(scope) {
            Ok(())
        } else {
            Err(TokenError::MissingScope(scope))
        }
    }

    /// 403 unless the token grants `analysis_id`.
    pub fn require_analysis(&self, analysis_id: &str) -> Result<(), TokenError> {
        if self.claims.grants_analysis(analysis_id) {
            Ok(())
        } else {
            Err(TokenError::AnalysisNotGranted(analysis_id.to_owned()))
        }
    }

    /// When the token stops being accepted (ms since the Unix epoch, skew included):
    /// the moment to close a socket with 4010.
    pub fn expires_at_ms(&self) -> i64 {
        self.claims
            .exp
            .saturating_add(CLOCK_SKEW_S)
            .saturating_mul(1000)
    }
}

/// Why a token was refused: 401 (not authenticated) or 403 (not allowed).
#[derive(Debug, Error)]
pub enum TokenError {
    #[error("no token: send one as a Bearer header, `token` query, cookie or subprotocol")]
    Missing,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("algorithm {0:?} is not accepted (HS256 or EdDSA, never none)")]
    UnsupportedAlgorithm(String),
    #[error("token header has no kid")]
    MissingKid,
    #[error("unknown issuer {0:?}")]
    UnknownIssuer(String),
    #[error("issuer {iss:?} has no key {kid:?}")]
    UnknownKey { iss: String, kid: String },
    #[error("key {kid:?} is pinned to {expected}, the token says {found}")]
    AlgorithmMismatch {
        kid: String,
        expected: Alg,
        found: Alg,
    },
    #[error("bad signature")]
    BadSignature,
    #[error("invalid claims: {0}")]
    InvalidClaims(String),
    #[error("audience {0:?} is not {AUDIENCE:?}")]
    WrongAudience(String),
    #[error("token expired (exp {exp})")]
    Expired { exp: i64 },
    #[error("token not valid before {nbf}")]
    NotYetValid { nbf: i64 },
    #[error("token lacks scope {0}")]
    MissingScope(Scope),
    #[error("token does not grant analysis {0:?}")]
    AnalysisNotGranted(String),
}

impl ApiError for TokenError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Missing => ErrorCode::MissingToken,
            Self::Expired { .. } => ErrorCode::TokenExpired,
            Self::MissingScope(_) => ErrorCode::InsufficientScope,
            Self::AnalysisNotGranted(_) => ErrorCode::AnalysisNotGranted,
            _ => ErrorCode::InvalidToken,
        }
    }
}

/// Signing failed (a key that does not fit its algorithm).
#[derive(Debug, Error)]
#[error("cannot sign token: {0}")]
pub struct MintError(#[from] jsonwebtoken::errors::Error);

/// Signs `claims` with `key`; the header carries the key's `alg` and `kid`.
pub fn mint(claims: &Claims, key: &SigningKey) -> Result<String, MintError> {
    let mut header = Header::new(key.alg.jwt());
    header.kid = Some(key.kid.clone());
    Ok(jsonwebtoken::encode(&header, claims, &key.key)?)
}

/// The parts of an unverified token needed to choose its key.
#[derive(Deserialize)]
struct PeekHeader {
    alg: String,
    kid: Option<String>,
}

#[derive(Deserialize)]
struct PeekClaims {
    iss: Option<String>,
}

fn peek<T: for<'de> Deserialize<'de>>(part: Option<&str>, what: &str) -> Result<T, TokenError> {
    let part = part.ok_or_else(|| TokenError::Malformed("not three dot-separated parts".into()))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|e| TokenError::Malformed(format!("{what}: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| TokenError::Malformed(format!("{what}: {e}")))
}

/// Verifies `token` at `now_s` (seconds since the Unix epoch, from the caller's clock).
pub fn verify(token: &str, keys: &KeySet, now_s: i64) -> Result<VerifiedToken, TokenError> {
    let mut parts = token.split('.');
    let header: PeekHeader = peek(parts.next(), "header")?;
    let payload: PeekClaims = peek(parts.next(), "payload")?;
    let found = Alg::from_header(&header.alg)
        .ok_or_else(|| TokenError::UnsupportedAlgorithm(header.alg.clone()))?;
    let kid = header.kid.ok_or(TokenError::MissingKid)?;
    let iss = payload
        .iss
        .ok_or_else(|| TokenError::InvalidClaims("no iss".into()))?;
    let tenant = keys
        .tenant(&iss)
        .ok_or_else(|| TokenError::UnknownIssuer(iss.clone()))?;
    let key = tenant.get(&kid).ok_or_else(|| TokenError::UnknownKey {
        iss: iss.clone(),
        kid: kid.clone(),
    })?;
    if key.alg != found {
        return Err(TokenError::AlgorithmMismatch {
            kid,
            expected: key.alg,
            found,
        });
    }

    // Signature and algorithm only: the claims are checked below with `now_s`.
    let mut validation = Validation::new(key.alg.jwt());
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => TokenError::BadSignature,
            ErrorKind::Json(e) => TokenError::InvalidClaims(e.to_string()),
            _ => TokenError::Malformed(e.to_string()),
        })?
        .claims;

    // The payload is now verified and its iss chose the key, so no other tenant's key
    // signed it; the two reads of iss agree unless the JSON is ambiguous.
    if claims.iss != iss {
        return Err(TokenError::InvalidClaims("iss is ambiguous".into()));
    }
    if claims.aud != AUDIENCE {
        return Err(TokenError::WrongAudience(claims.aud));
    }
    if now_s >= claims.exp.saturating_add(CLOCK_SKEW_S) {
        return Err(TokenError::Expired { exp: claims.exp });
    }
    if let Some(nbf) = claims.nbf
        && now_s.saturating_add(CLOCK_SKEW_S) < nbf
    {
        return Err(TokenError::NotYetValid { nbf });
    }
    Ok(VerifiedToken {
        tenant: iss,
        kid,
        claims,
    })
}

/// The token of an `Authorization` header value `Bearer <token>` (scheme in any case).
pub fn bearer_from_header(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// What a route asks of a token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Need<'a> {
    /// The scope it needs, if any.
    pub scope: Option<Scope>,
    /// The analysis it must grant, if any ([`ALL_ANALYSES`] for every one of the tenant).
    pub analysis: Option<&'a str>,
}

/// Verifies `token` at `now_s`, then checks the scope and the analysis grant `need` names:
/// the one check every authenticated route makes, at the edge and on the node.
pub fn authorize(
    token: Option<&str>,
    keys: &KeySet,
    now_s: i64,
    need: Need<'_>,
) -> Result<VerifiedToken, TokenError> {
    let verified = verify(token.ok_or(TokenError::Missing)?, keys, now_s)?;
    if let Some(scope) = need.scope {
        verified.require_scope(scope)?;
    }
    if let Some(analysis) = need.analysis {
        verified.require_analysis(analysis)?;
    }
    Ok(verified)
}
