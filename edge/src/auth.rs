//! Decides who a request is and whether it may use a route, before any object wakes.

use serde::{Deserialize, Serialize};
use stagecast_shared::token::{self, KeySet, Need, Scope, TokenError};

use crate::route::Route;

/// The verified facts the Worker hands to an analysis's object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub tenant: String,
    pub sub: String,
    pub can_cancel: bool,
    /// When the token stops being accepted (ms since the epoch): sockets close with 4010 then.
    pub expires_at_ms: i64,
}

/// The scope each route needs.
pub fn required_scope(route: &Route) -> Option<Scope> {
    match route {
        Route::Health | Route::OpenApi | Route::Page(_) => None,
        Route::Snapshot(_) | Route::Events(_) | Route::Subscribe(_) | Route::Stream(_) => {
            Some(Scope::Subscribe)
        }
        Route::Publish(_) | Route::PublishSocket(_) => Some(Scope::Publish),
        Route::Cancel(_) => Some(Scope::Cancel),
        Route::Submit | Route::Upload(_) => Some(Scope::Submit),
        Route::PutArtifact(..) => Some(Scope::Publish),
        Route::Artifact(..) => Some(Scope::Subscribe),
        // `node` (no grant: the object checks the lease) or `publish` with the grant
        Route::Input(_) => None,
        Route::PoolConnect(_) => Some(Scope::Node),
        Route::PoolView(_) | Route::PoolAnalyses(_) | Route::PoolWatch(_) => Some(Scope::Admin),
    }
}

/// Verifies `token` at `now_ms` and checks the route's scope and, where the route has
/// one, the analysis grant.
pub fn authorize(
    token: Option<&str>,
    keys: &KeySet,
    route: &Route,
    analysis_id: Option<&str>,
    now_ms: i64,
) -> Result<Principal, TokenError> {
    let need = Need {
        scope: required_scope(route),
        analysis: analysis_id,
    };
    let verified = if matches!(route, Route::Input(_)) {
        let verified = token::authorize(token, keys, now_ms / 1000, Need::default())?;
        if !verified.claims.has_scope(Scope::Node) {
            verified.require_scope(Scope::Publish)?;
            verified.require_analysis(analysis_id.unwrap_or_default())?;
        }
        verified
    } else {
        token::authorize(token, keys, now_ms / 1000, need)?
    };
    Ok(Principal {
        can_cancel: verified.claims.has_scope(Scope::Cancel),
        expires_at_ms: verified.expires_at_ms(),
        tenant: verified.tenant,
        sub: verified.claims.sub,
    })
}

/// A Durable Object's name: the verified tenant and the analysis id (or, in the pool
/// namespace, the pool name), so a token of one tenant can never reach another tenant's
/// objects whatever the URL says.
pub fn object_name(tenant: &str, analysis_id: &str) -> String {
    // Neither a tenant id nor an analysis id may hold '/', so the name is unambiguous.
    format!("{tenant}/{analysis_id}")
}

/// The tenant and analysis id back from an object's name.
pub fn parse_object_name(name: &str) -> Option<(&str, &str)> {
    name.split_once('/')
        .filter(|(tenant, id)| !tenant.is_empty() && !id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use stagecast_shared::token::{Claims, SigningKey, mint};

    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const NOW_S: i64 = 1_800_000_000;

    fn token(scopes: &[Scope], analyses: &[&str]) -> String {
        let claims = Claims::new("dev", "alice", scopes, analyses, NOW_S, 600);
        mint(&claims, &SigningKey::dev(SECRET).unwrap()).unwrap()
    }

    #[test]
    fn a_subscriber_may_read_but_not_publish() {
        let keys = KeySet::dev(SECRET).unwrap();
        let t = token(&[Scope::Subscribe], &["a1"]);
        let p = authorize(
            Some(&t),
            &keys,
            &Route::Subscribe("a1".into()),
            Some("a1"),
            NOW_S * 1000,
        )
        .unwrap();
        assert_eq!(
            (p.tenant.as_str(), p.sub.as_str(), p.can_cancel),
            ("dev", "alice", false)
        );
        let err = authorize(
            Some(&t),
            &keys,
            &Route::Publish("a1".into()),
            Some("a1"),
            NOW_S * 1000,
        );
        assert!(matches!(err, Err(TokenError::MissingScope(Scope::Publish))));
    }

    #[test]
    fn the_analysis_grant_and_a_missing_token_are_checked() {
        let keys = KeySet::dev(SECRET).unwrap();
        let t = token(&[Scope::Subscribe], &["a1"]);
        let err = authorize(
            Some(&t),
            &keys,
            &Route::Snapshot("a2".into()),
            Some("a2"),
            NOW_S * 1000,
        );
        assert!(matches!(err, Err(TokenError::AnalysisNotGranted(_))));
        let err = authorize(
            None,
            &keys,
            &Route::Snapshot("a1".into()),
            Some("a1"),
            NOW_S * 1000,
        );
        assert!(matches!(err, Err(TokenError::Missing)));
    }

    #[test]
    fn object_names_separate_tenants() {
        assert_ne!(object_name("a", "x"), object_name("b", "x"));
        assert_eq!(
            parse_object_name(&object_name("acme", "a-1")),
            Some(("acme", "a-1"))
        );
        assert_eq!(parse_object_name("no-slash"), None);
        assert_eq!(parse_object_name("/x"), None);
    }
}
