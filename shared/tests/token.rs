//! Token verification and minting.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use stagecast_shared::api::{ApiError, ErrorCode};
use stagecast_shared::token::{
    Alg, Claims, DEV_KID, DEV_TENANT, KeySet, KeySetError, Scope, SigningKey, TokenError, mint,
    verify,
};

const NOW: i64 = 1_800_000_000;
const SECRET: &str = "0123456789abcdef0123456789abcdef";
const OTHER_SECRET: &str = "ffffffffffffffffffffffffffffffff";
// Test-only Ed25519 keys (openssl genpkey -algorithm ed25519).
const ED_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIHxQMpwxeICJq+g6errGa2AlTHFSvOOJ9+ka46PAgoUI\n-----END PRIVATE KEY-----\n";
const ED_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAaqGxsOLFHymB1Sd3ucrJ7whrm3eNFBrj2D3wFEgTUkI=\n-----END PUBLIC KEY-----\n";
const ED_OTHER_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIFSFYuUxSKwQZC6oI4Gt4+glBCbggk4aL5epQqg7e1WY\n-----END PRIVATE KEY-----\n";

fn keys() -> KeySet {
    let config = json!({"tenants": {
        "acme": {"keys": [
            {"kid": "k1", "alg": "HS256", "secret": SECRET},
            {"kid": "node-7", "alg": "EdDSA", "public_key_pem": ED_PUBLIC},
        ]},
        "globex": {"keys": [{"kid": "k1", "alg": "HS256", "secret": OTHER_SECRET}]},
    }});
    KeySet::from_json(&config.to_string()).unwrap()
}

fn claims(tenant: &str) -> Claims {
    Claims::new(
        tenant,
        "user-1",
        &[Scope::Subscribe, Scope::Cancel],
        &["a-1", "a-2"],
        NOW,
        3600,
    )
}

fn hs(kid: &str, secret: &str) -> SigningKey {
    SigningKey::hs256(kid, secret.as_bytes()).unwrap()
}

fn acme_token() -> String {
    mint(&claims("acme"), &hs("k1", SECRET)).unwrap()
}

fn b64(v: serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// A token with a hand-made header, the claims of `acme`, and `signature`.
fn forged(header: serde_json::Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64(header),
        b64(serde_json::to_value(claims("acme")).unwrap())
    )
}

fn status(err: &TokenError) -> u16 {
    err.status()
}

#[test]
fn hs256_round_trip() {
    let v = verify(&acme_token(), &keys(), NOW).unwrap();
    assert_eq!(
        (v.tenant.as_str(), v.kid.as_str(), v.claims.sub.as_str()),
        ("acme", "k1", "user-1")
    );
    assert_eq!(v.claims, claims("acme"));
}

#[test]
fn eddsa_round_trip() {
    let key = SigningKey::ed25519_pem("node-7", ED_PRIVATE.as_bytes()).unwrap();
    assert_eq!(key.alg(), Alg::EdDSA);
    let token = mint(&claims("acme"), &key).unwrap();
    let v = verify(&token, &keys(), NOW).unwrap();
    assert_eq!((v.tenant.as_str(), v.kid.as_str()), ("acme", "node-7"));
}

#[test]
fn eddsa_signed_by_another_key_is_a_bad_signature() {
    let key = SigningKey::ed25519_pem("node-7", ED_OTHER_PRIVATE.as_bytes()).unwrap();
    let token = mint(&claims("acme"), &key).unwrap();
    assert!(matches!(
        verify(&token, &keys(), NOW),
        Err(TokenError::BadSignature)
    ));
}

#[test]
fn alg_none_is_never_accepted() {
    let token = forged(json!({"alg": "none", "typ": "JWT", "kid": "k1"}), "");
    let err = verify(&token, &keys(), NOW).unwrap_err();
    assert!(
        matches!(&err, TokenError::UnsupportedAlgorithm(a) if a == "none"),
        "{err:?}"
    );
    assert_eq!((err.code(), status(&err)), (ErrorCode::InvalidToken, 401));
}

#[test]
fn other_algorithms_are_not_accepted() {
    let token = forged(json!({"alg": "RS256", "kid": "k1"}), "c2ln");
    assert!(matches!(
        verify(&token, &keys(), NOW),
        Err(TokenError::UnsupportedAlgorithm(_))
    ));
}

#[test]
fn alg_must_match_the_pinned_key_algorithm() {
    // An EdDSA header on the HS256 key k1...
    let ed = SigningKey::ed25519_pem("k1", ED_PRIVATE.as_bytes()).unwrap();
    let token = mint(&claims("acme"), &ed).unwrap();
    let err = verify(&token, &keys(), NOW).unwrap_err();
    assert!(
        matches!(
            err,
            TokenError::AlgorithmMismatch {
                expected: Alg::HS256,
                found: Alg::EdDSA,
                ..
            }
        ),
        "{err:?}"
    );
    // ...and an HS256 header on the EdDSA key (the classic "sign with the public key" attack).
    let token = mint(&claims("acme"), &hs("node-7", ED_PUBLIC)).unwrap();
    let err = verify(&token, &keys(), NOW).unwrap_err();
    assert!(
        matches!(
            err,
            TokenError::AlgorithmMismatch {
                expected: Alg::EdDSA,
                found: Alg::HS256,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(status(&err), 401);
}

#[test]
fn tampered_payload_fails_the_signature() {
    let token = acme_token();
    let parts: Vec<&str> = token.split('.').collect();
    let mut c = claims("acme");
    c.analyses = vec!["*".into()];
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(serde_json::to_value(c).unwrap()),
        parts[2]
    );
    assert!(matches!(
        verify(&tampered, &keys(), NOW),
        Err(TokenError::BadSignature)
    ));
}

#[test]
fn tampered_signature_fails() {
    let mut token = acme_token();
    let last = token.pop().unwrap();
    token.push(if last == 'A' { 'B' } else { 'A' });
    assert!(matches!(
        verify(&token, &keys(), NOW),
        Err(TokenError::BadSignature)
    ));
}

#[test]
fn wrong_secret_fails() {
    let token = mint(&claims("acme"), &hs("k1", OTHER_SECRET)).unwrap();
    assert!(matches!(
        verify(&token, &keys(), NOW),
        Err(TokenError::BadSignature)
    ));
}

#[test]
fn a_tenant_cannot_sign_for_another() {
    // globex's k1 signs a token that claims iss = acme: acme's k1 checks it and refuses.
    let token = mint(&claims("acme"), &hs("k1", OTHER_SECRET)).unwrap();
    assert!(verify(&token, &keys(), NOW).is_err());
    let token = mint(&claims("globex"), &hs("k1", OTHER_SECRET)).unwrap();
    assert_eq!(verify(&token, &keys(), NOW).unwrap().tenant, "globex");
}

#[test]
fn wrong_audience_is_refused() {
    let mut c = claims("acme");
    c.aud = "someone-else".into();
    let token = mint(&c, &hs("k1", SECRET)).unwrap();
    let err = verify(&token, &keys(), NOW).unwrap_err();
    assert!(matches!(err, TokenError::WrongAudience(_)));
    assert_eq!(status(&err), 401);
}

#[test]
fn expired_token_is_refused() {
    let token = acme_token();
    let err = verify(&token, &keys(), NOW + 3600 + 30).unwrap_err();
    assert!(matches!(err, TokenError::Expired { exp } if exp == NOW + 3600));
    assert_eq!((err.code(), status(&err)), (ErrorCode::TokenExpired, 401));
    // Within the tolerated skew it is still accepted.
    assert!(verify(&token, &keys(), NOW + 3600 + 29).is_ok());
}

#[test]
fn exp_is_required() {
    let payload =
        json!({"iss": "acme", "sub": "u", "aud": "stagecast", "scope": "", "analyses": []});
    let header = json!({"alg": "HS256", "kid": "k1"});
    let message = format!("{}.{}", b64(header), b64(payload));
    // Sign it properly so that only the missing claim is wrong.
    let signed = {
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
        let sig =
            jsonwebtoken::crypto::sign(message.as_bytes(), &key, jsonwebtoken::Algorithm::HS256)
                .unwrap();
        format!("{message}.{sig}")
    };
    let err = verify(&signed, &keys(), NOW).unwrap_err();
    assert!(
        matches!(&err, TokenError::InvalidClaims(m) if m.contains("exp")),
        "{err:?}"
    );
}

#[test]
fn future_nbf_is_refused() {
    let mut c = claims("acme");
    c.nbf = Some(NOW + 600);
    let token = mint(&c, &hs("k1", SECRET)).unwrap();
    assert!(matches!(
        verify(&token, &keys(), NOW),
        Err(TokenError::NotYetValid { .. })
    ));
    assert!(verify(&token, &keys(), NOW + 600).is_ok());
}

#[test]
fn unknown_issuer_is_refused() {
    let token = mint(&claims("initech"), &hs("k1", SECRET)).unwrap();
    let err = verify(&token, &keys(), NOW).unwrap_err();
    assert!(matches!(&err, TokenError::UnknownIssuer(i) if i == "initech"));
    assert_eq!(status(&err), 401);
}

#[test]
fn unknown_kid_is_refused() {
    let token = mint(&claims("acme"), &hs("k9", SECRET)).unwrap();
    let err = verify(&token, &keys(), NOW).unwrap_err();
    assert!(matches!(err, TokenError::UnknownKey { .. }));
    assert_eq!(status(&err), 401);
}

#[test]
fn missing_kid_is_refused() {
    let token = forged(json!({"alg": "HS256"}), "c2ln");
    assert!(matches!(
        verify(&token, &keys(), NOW),
        Err(TokenError::MissingKid)
    ));
}

#[test]
fn garbage_is_malformed() {
    for token in ["", "abc", "a.b", "!!.!!.!!", "e30.e30.e30"] {
        let err = verify(token, &keys(), NOW).unwrap_err();
        assert_eq!(status(&err), 401, "{token}: {err:?}");
    }
}

#[test]
fn scopes_are_checked() {
    let v = verify(&acme_token(), &keys(), NOW).unwrap();
    assert!(v.require_scope(Scope::Subscribe).is_ok());
    assert!(v.require_scope(Scope::Cancel).is_ok());
    let err = v.require_scope(Scope::Publish).unwrap_err();
    assert_eq!(
        (err.code(), status(&err)),
        (ErrorCode::InsufficientScope, 403)
    );
    assert!(
        v.require_scope(Scope::Admin).is_err(),
        "admin is not implied"
    );
}

#[test]
fn scope_claim_is_space_separated_and_ignores_unknown_words() {
    let mut c = claims("acme");
    c.scope = "  publish   telepathy subscribe ".into();
    assert!(c.has_scope(Scope::Publish) && c.has_scope(Scope::Subscribe));
    assert!(!c.has_scope(Scope::Cancel));
    assert_eq!(
        Scope::join(&[Scope::Publish, Scope::Admin]),
        "publish admin"
    );
}

#[test]
fn analysis_grants_are_checked() {
    let v = verify(&acme_token(), &keys(), NOW).unwrap();
    assert!(v.require_analysis("a-1").is_ok());
    let err = v.require_analysis("a-3").unwrap_err();
    assert_eq!(
        (err.code(), status(&err)),
        (ErrorCode::AnalysisNotGranted, 403)
    );
}

#[test]
fn star_grants_every_analysis_of_the_tenant() {
    let c = Claims::new("acme", "node", &[Scope::Publish], &["*"], NOW, 60);
    let v = verify(&mint(&c, &hs("k1", SECRET)).unwrap(), &keys(), NOW).unwrap();
    assert!(v.require_analysis("anything").is_ok());
    assert_eq!(
        v.tenant, "acme",
        "the grant never leaves the verified tenant"
    );
}

#[test]
fn dev_tenant_round_trip() {
    let keys = KeySet::dev(SECRET).unwrap();
    assert!(keys.has_tenant(DEV_TENANT));
    let token = mint(&claims(DEV_TENANT), &SigningKey::dev(SECRET).unwrap()).unwrap();
    let v = verify(&token, &keys, NOW).unwrap();
    assert_eq!((v.tenant.as_str(), v.kid.as_str()), (DEV_TENANT, DEV_KID));
}

#[test]
fn single_hs256_key_set_verifies_only_its_tenant_and_kid() {
    let keys = KeySet::hs256("acme", "node-key", SECRET).unwrap();
    let token = mint(
        &claims("acme"),
        &SigningKey::hs256("node-key", SECRET.as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(verify(&token, &keys, NOW).unwrap().tenant, "acme");
    let other_kid = mint(
        &claims("acme"),
        &SigningKey::hs256("k2", SECRET.as_bytes()).unwrap(),
    )
    .unwrap();
    assert!(matches!(
        verify(&other_kid, &keys, NOW),
        Err(TokenError::UnknownKey { .. })
    ));
    assert!(matches!(
        KeySet::hs256("bad tenant", "k", SECRET),
        Err(KeySetError::BadTenantId { .. })
    ));
}

#[test]
fn short_hs256_secrets_are_refused() {
    assert!(matches!(
        KeySet::dev("short"),
        Err(KeySetError::SecretTooShort { len: 5, .. })
    ));
    assert!(SigningKey::hs256("k", b"0123456789abcdef0123456789abcde").is_err());
    let config = json!({"tenants": {"t": {"keys": [{"kid": "k", "alg": "HS256", "secret": "x"}]}}});
    assert!(matches!(
        KeySet::from_json(&config.to_string()),
        Err(KeySetError::SecretTooShort { .. })
    ));
}

#[test]
fn keyset_config_errors() {
    let bad_alg =
        json!({"tenants": {"t": {"keys": [{"kid": "k", "alg": "none", "secret": SECRET}]}}});
    assert!(matches!(
        KeySet::from_json(&bad_alg.to_string()),
        Err(KeySetError::Json(_))
    ));
    let bad_pem = json!({"tenants": {"t": {"keys": [{"kid": "k", "alg": "EdDSA", "public_key_pem": "nope"}]}}});
    assert!(matches!(
        KeySet::from_json(&bad_pem.to_string()),
        Err(KeySetError::BadPem { .. })
    ));
    let dup = json!({"tenants": {"t": {"keys": [
        {"kid": "k", "alg": "HS256", "secret": SECRET}, {"kid": "k", "alg": "HS256", "secret": SECRET}]}}});
    assert!(matches!(
        KeySet::from_json(&dup.to_string()),
        Err(KeySetError::DuplicateKid { .. })
    ));
    let bad_tenant = json!({"tenants": {"a/b": {"keys": []}}});
    assert!(matches!(
        KeySet::from_json(&bad_tenant.to_string()),
        Err(KeySetError::BadTenantId { .. })
    ));
}

#[test]
fn debug_output_hides_key_material() {
    let shown = format!("{:?} {:?}", keys(), hs("k1", SECRET));
    assert!(!shown.contains(SECRET) && shown.contains("acme"), "{shown}");
}

#[test]
fn expiry_instant_for_sockets() {
    let v = verify(&acme_token(), &keys(), NOW).unwrap();
    assert_eq!(v.expires_at_ms(), (NOW + 3600 + 30) * 1000);
}

#[test]
fn missing_token_is_401() {
    assert_eq!(
        (TokenError::Missing.code(), TokenError::Missing.status()),
        (ErrorCode::MissingToken, 401)
    );
}
