//! The edge's settings, read from Worker vars and secrets. A bad value is the operator's
//! mistake, not a client's: it fails loudly with the variable's name.

use stagecast_shared::dispatch::PoolConfig;
use stagecast_shared::media::DEFAULT_MAX_UPLOAD_BYTES;
use stagecast_shared::token::{KeySet, KeySetError};

/// Defaults of the contract's "Running the edge alone" table.
pub const DEFAULT_STALL_TIMEOUT_MS: i64 = 60_000;
pub const DEFAULT_RETENTION_MS: i64 = 7 * 24 * 3_600_000;
pub const DEFAULT_MAX_SOCKETS: usize = 10_000;
/// Stored events kept per analysis for replay; older ones are dropped (their ids are kept
/// for dedupe) and a client asking for them gets `recovered: false`.
pub const DEFAULT_HISTORY_LIMIT: u64 = 10_000;
/// Publish batches a second one analysis accepts, sustained (`STAGECAST_PUBLISH_RATE`);
/// beyond it the edge answers 429 with `Retry-After`. A node coalesces progress to far
/// less than this; the limit is there for a runaway or hostile publisher.
pub const DEFAULT_PUBLISH_RATE: u64 = 50;
/// A Server-Sent Events stream ends after this long (`STAGECAST_SSE_MAX_MS`): an open
/// response keeps the object awake and billed, where a hibernated socket does not.
pub const DEFAULT_SSE_MAX_MS: u64 = 55_000;
/// The burst is this many seconds' worth of the rate (100 batches at the default rate).
pub const PUBLISH_BURST_SECONDS: u64 = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub stall_timeout_ms: i64,
    pub retention_ms: i64,
    pub max_sockets: usize,
    pub history_limit: u64,
    /// Publish batches a second per analysis, sustained.
    pub publish_rate: u64,
    /// A pool's timings and queue bound (`STAGECAST_LEASE_MS`,
    /// `STAGECAST_NODE_HEARTBEAT_MS`, `STAGECAST_QUEUE_LIMIT`).
    pub pool: PoolConfig,
    /// Largest uploaded input (`STAGECAST_MAX_UPLOAD_BYTES`).
    pub max_upload_bytes: u64,
    /// Longest Server-Sent Events stream (`STAGECAST_SSE_MAX_MS`).
    pub sse_max_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} must be a positive integer, got {value:?}")]
    NotPositive { name: &'static str, value: String },
    #[error("STAGECAST_TENANTS is invalid: {0}")]
    Tenants(#[source] KeySetError),
    #[error("STAGECAST_DEV_SECRET is invalid: {0}")]
    DevSecret(#[source] KeySetError),
    #[error("no signing keys: set the STAGECAST_TENANTS secret (or STAGECAST_DEV_SECRET locally)")]
    NoKeys,
}

fn positive(name: &'static str, value: Option<String>, default: u64) -> Result<u64, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(ConfigError::NotPositive { name, value: v }),
        },
    }
}

impl Limits {
    /// Reads the limits through `var` (a Worker var lookup).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Limits, ConfigError> {
        let get = |name: &'static str, default: u64| positive(name, var(name), default);
        let defaults = PoolConfig::default();
        Ok(Limits {
            stall_timeout_ms: get(
                "STAGECAST_STALL_TIMEOUT_MS",
                DEFAULT_STALL_TIMEOUT_MS as u64,
            )? as i64,
            retention_ms: get("STAGECAST_RETENTION_MS", DEFAULT_RETENTION_MS as u64)? as i64,
            max_sockets: get("STAGECAST_MAX_SOCKETS", DEFAULT_MAX_SOCKETS as u64)? as usize,
            history_limit: get("STAGECAST_HISTORY_LIMIT", DEFAULT_HISTORY_LIMIT)?,
            publish_rate: get("STAGECAST_PUBLISH_RATE", DEFAULT_PUBLISH_RATE)?,
            pool: PoolConfig {
                lease_ms: get("STAGECAST_LEASE_MS", defaults.lease_ms)?,
                heartbeat_ms: get("STAGECAST_NODE_HEARTBEAT_MS", defaults.heartbeat_ms)?,
                queue_limit: get("STAGECAST_QUEUE_LIMIT", defaults.queue_limit as u64)? as usize,
                ..defaults
            },
            max_upload_bytes: get("STAGECAST_MAX_UPLOAD_BYTES", DEFAULT_MAX_UPLOAD_BYTES)?,
            sse_max_ms: get("STAGECAST_SSE_MAX_MS", DEFAULT_SSE_MAX_MS)?,
        })
    }

    /// Publish batches an analysis accepts at once after a quiet spell.
    pub fn publish_burst(&self) -> u64 {
        self.publish_rate.saturating_mul(PUBLISH_BURST_SECONDS)
    }
}

/// The tenants' verifying keys: `STAGECAST_TENANTS` when set, else the dev tenant.
pub fn key_set(tenants: Option<&str>, dev_secret: Option<&str>) -> Result<KeySet, ConfigError> {
    match (
        tenants.filter(|t| !t.trim().is_empty()),
        dev_secret.filter(|s| !s.is_empty()),
    ) {
        (Some(json), _) => KeySet::from_json(json).map_err(ConfigError::Tenants),
        (None, Some(secret)) => KeySet::dev(secret).map_err(ConfigError::DevSecret),
        (None, None) => Err(ConfigError::NoKeys),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_to_the_contract() {
        let limits = Limits::from_vars(|_| None).unwrap();
        assert_eq!(limits.stall_timeout_ms, 60_000);
        assert_eq!(limits.retention_ms, 604_800_000);
        assert_eq!(limits.max_sockets, 10_000);
        assert_eq!(limits.sse_max_ms, 55_000);
        assert_eq!((limits.publish_rate, limits.publish_burst()), (50, 100));
        let pool = limits.pool;
        assert_eq!(
            (pool.lease_ms, pool.heartbeat_ms, pool.queue_limit),
            (30_000, 5_000, 10_000)
        );
    }

    #[test]
    fn limits_are_read_and_bad_values_named() {
        let limits =
            Limits::from_vars(|n| (n == "STAGECAST_MAX_SOCKETS").then(|| "7".to_string())).unwrap();
        assert_eq!(limits.max_sockets, 7);
        let limits =
            Limits::from_vars(|n| (n == "STAGECAST_PUBLISH_RATE").then(|| "2".to_string()))
                .unwrap();
        assert_eq!((limits.publish_rate, limits.publish_burst()), (2, 4));
        let err = Limits::from_vars(|n| (n == "STAGECAST_PUBLISH_RATE").then(|| "0".to_string()))
            .unwrap_err();
        assert!(err.to_string().contains("STAGECAST_PUBLISH_RATE"), "{err}");
        let err =
            Limits::from_vars(|n| (n == "STAGECAST_STALL_TIMEOUT_MS").then(|| "-1".to_string()))
                .unwrap_err();
        assert!(
            err.to_string().contains("STAGECAST_STALL_TIMEOUT_MS"),
            "{err}"
        );
    }

    #[test]
    fn tenants_replace_the_dev_tenant_and_no_keys_is_an_error() {
        let secret = "0123456789abcdef0123456789abcdef";
        assert!(key_set(None, Some(secret)).unwrap().has_tenant("dev"));
        let json = format!(
            r#"{{"tenants":{{"acme":{{"keys":[{{"kid":"k1","alg":"HS256","secret":"{secret}"}}]}}}}}}"#
        );
        let keys = key_set(Some(&json), Some(secret)).unwrap();
        assert!(keys.has_tenant("acme") && !keys.has_tenant("dev"));
        assert!(matches!(key_set(None, None), Err(ConfigError::NoKeys)));
    }
}
