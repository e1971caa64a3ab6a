//! Tenant keys: the verifying side (`KeySet`, from the `STAGECAST_TENANTS` JSON) and the
//! signing side (`SigningKey`, for nodes, tests and the CLI).

use std::collections::HashMap;
use std::fmt;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ids::{IdError, check_id};

/// The tenant of local development.
pub const DEV_TENANT: &str = "dev";
/// The key id of the dev tenant's only key.
pub const DEV_KID: &str = "dev";
/// Shortest HS256 secret accepted: HMAC-SHA256 is only as strong as its key.
pub const MIN_HS256_SECRET_BYTES: usize = 32;

/// The algorithms a key may be pinned to. `none` is not one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Alg {
    HS256,
    EdDSA,
}

impl Alg {
    /// The `alg` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HS256 => "HS256",
            Self::EdDSA => "EdDSA",
        }
    }

    pub(super) fn from_header(alg: &str) -> Option<Self> {
        match alg {
            "HS256" => Some(Self::HS256),
            "EdDSA" => Some(Self::EdDSA),
            _ => None,
        }
    }

    pub(super) fn jwt(self) -> Algorithm {
        match self {
            Self::HS256 => Algorithm::HS256,
            Self::EdDSA => Algorithm::EdDSA,
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why tenant keys (or a signing key) could not be loaded.
#[derive(Debug, Error)]
pub enum KeySetError {
    #[error("tenants JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("tenant id {tenant:?}: {source}")]
    BadTenantId {
        tenant: String,
        #[source]
        source: IdError,
    },
    #[error("tenant {tenant:?} lists kid {kid:?} twice")]
    DuplicateKid { tenant: String, kid: String },
    #[error("key {kid:?}: HS256 secret of {len} bytes, at least {MIN_HS256_SECRET_BYTES} needed")]
    SecretTooShort { kid: String, len: usize },
    #[error("key {kid:?}: not an Ed25519 PEM key: {source}")]
    BadPem {
        kid: String,
        #[source]
        source: jsonwebtoken::errors::Error,
    },
}

#[derive(Deserialize)]
struct TenantsConfig {
    tenants: HashMap<String, TenantConfig>,
}

#[derive(Deserialize)]
struct TenantConfig {
    keys: Vec<KeyConfig>,
}

#[derive(Deserialize)]
#[serde(tag = "alg")]
enum KeyConfig {
    HS256 { kid: String, secret: String },
    EdDSA { kid: String, public_key_pem: String },
}

pub(super) struct VerifyingKey {
    pub(super) alg: Alg,
    pub(super) key: DecodingKey,
}

/// Every tenant's verifying keys, by tenant id (the JWT `iss`) then `kid`.
pub struct KeySet {
    tenants: HashMap<String, HashMap<String, VerifyingKey>>,
}

impl KeySet {
    /// Parses `{"tenants": {"<id>": {"keys": [{"kid", "alg": "HS256", "secret"} |
    /// {"kid", "alg": "EdDSA", "public_key_pem"}]}}}`. Tenant ids follow the id rule
    /// (they name Durable Objects); HS256 secrets need [`MIN_HS256_SECRET_BYTES`].
    pub fn from_json(json: &str) -> Result<Self, KeySetError> {
        let config: TenantsConfig = serde_json::from_str(json)?;
        let mut tenants = HashMap::with_capacity(config.tenants.len());
        for (tenant, tenant_config) in config.tenants {
            if let Err(source) = check_id(&tenant) {
                return Err(KeySetError::BadTenantId { tenant, source });
            }
            let mut keys = HashMap::with_capacity(tenant_config.keys.len());
            for key in tenant_config.keys {
                let (kid, key) = match key {
                    KeyConfig::HS256 { kid, secret } => {
                        check_secret(&kid, secret.as_bytes())?;
                        let key = DecodingKey::from_secret(secret.as_bytes());
                        (
                            kid,
                            VerifyingKey {
                                alg: Alg::HS256,
                                key,
                            },
                        )
                    }
                    KeyConfig::EdDSA {
                        kid,
                        public_key_pem,
                    } => match DecodingKey::from_ed_pem(public_key_pem.as_bytes()) {
                        Ok(key) => (
                            kid,
                            VerifyingKey {
                                alg: Alg::EdDSA,
                                key,
                            },
                        ),
                        Err(source) => return Err(KeySetError::BadPem { kid, source }),
                    },
                };
                if keys.contains_key(&kid) {
                    return Err(KeySetError::DuplicateKid { tenant, kid });
                }
                keys.insert(kid, key);
            }
            tenants.insert(tenant, keys);
        }
        Ok(Self { tenants })
    }

    /// The local-development key set: tenant `dev`, kid `dev`, HS256 with `secret`.
    pub fn dev(secret: &str) -> Result<Self, KeySetError> {
        Self::hs256(DEV_TENANT, DEV_KID, secret)
    }

    /// One tenant with one HS256 key (a node that shares its tenant's secret).
    pub fn hs256(tenant: &str, kid: &str, secret: &str) -> Result<Self, KeySetError> {
        if let Err(source) = check_id(tenant) {
            return Err(KeySetError::BadTenantId {
                tenant: tenant.to_owned(),
                source,
            });
        }
        check_secret(kid, secret.as_bytes())?;
        let key = VerifyingKey {
            alg: Alg::HS256,
            key: DecodingKey::from_secret(secret.as_bytes()),
        };
        let keys = HashMap::from([(kid.to_owned(), key)]);
        Ok(Self {
            tenants: HashMap::from([(tenant.to_owned(), keys)]),
        })
    }

    /// Whether `tenant` is configured.
    pub fn has_tenant(&self, tenant: &str) -> bool {
        self.tenants.contains_key(tenant)
    }

    pub(super) fn tenant(&self, tenant: &str) -> Option<&HashMap<String, VerifyingKey>> {
        self.tenants.get(tenant)
    }
}

/// Lists tenants and kids, never key material.
impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (tenant, keys) in &self.tenants {
            let kids: Vec<String> = keys
                .iter()
                .map(|(kid, key)| format!("{kid} ({})", key.alg))
                .collect();
            map.entry(tenant, &kids);
        }
        map.finish()
    }
}

fn check_secret(kid: &str, secret: &[u8]) -> Result<(), KeySetError> {
    if secret.len() < MIN_HS256_SECRET_BYTES {
        return Err(KeySetError::SecretTooShort {
            kid: kid.to_owned(),
            len: secret.len(),
        });
    }
    Ok(())
}

/// A key that signs tokens ([`super::mint`]): its `kid`, pinned algorithm and secret.
pub struct SigningKey {
    pub(super) kid: String,
    pub(super) alg: Alg,
    pub(super) key: EncodingKey,
}

impl SigningKey {
    /// An HS256 key (at least [`MIN_HS256_SECRET_BYTES`] bytes of secret).
    pub fn hs256(kid: &str, secret: &[u8]) -> Result<Self, KeySetError> {
        check_secret(kid, secret)?;
        Ok(Self {
            kid: kid.to_owned(),
            alg: Alg::HS256,
            key: EncodingKey::from_secret(secret),
        })
    }

    /// An EdDSA key from an Ed25519 private key in PKCS#8 PEM
    /// (`openssl genpkey -algorithm ed25519`).
    pub fn ed25519_pem(kid: &str, private_key_pem: &[u8]) -> Result<Self, KeySetError> {
        let key =
            EncodingKey::from_ed_pem(private_key_pem).map_err(|source| KeySetError::BadPem {
                kid: kid.to_owned(),
                source,
            })?;
        Ok(Self {
            kid: kid.to_owned(),
            alg: Alg::EdDSA,
            key,
        })
    }

    /// The dev tenant's key (kid `dev`, HS256).
    pub fn dev(secret: &str) -> Result<Self, KeySetError> {
        Self::hs256(DEV_KID, secret.as_bytes())
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn alg(&self) -> Alg {
        self.alg
    }
}

/// Shows the kid and algorithm, never the key.
impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}
