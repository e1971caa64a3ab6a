//! What a node takes as an input and how far it goes to fetch one. Inputs may come from
//! callers who must not reach the node's files or its network (a tenant's URL): by
//! default only http(s) URLs on public addresses, within a size and a time cap.

use std::net::IpAddr;
use std::time::Duration;

/// 4 GiB: a long 1080p video, far beyond any image.
pub const DEFAULT_MAX_INPUT_BYTES: u64 = 4 << 30;
/// Ten minutes for the whole download.
pub const DEFAULT_INPUT_TIMEOUT: Duration = Duration::from_secs(600);

/// The rules an input is taken and fetched under. The default is for untrusted callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputPolicy {
    /// Local paths are read in place: only for callers trusted with the node's files.
    pub local_paths: bool,
    /// Hosts (names or IP literals) fetched from whatever address they are on: the
    /// operator's own servers on loopback or private networks.
    pub allowed_hosts: Vec<String>,
    /// A larger input fails with `input_too_large`.
    pub max_bytes: u64,
    /// The whole download, from connecting to the last byte.
    pub timeout: Duration,
}

impl Default for InputPolicy {
    fn default() -> Self {
        Self {
            local_paths: false,
            allowed_hosts: Vec::new(),
            max_bytes: DEFAULT_MAX_INPUT_BYTES,
            timeout: DEFAULT_INPUT_TIMEOUT,
        }
    }
}

impl InputPolicy {
    /// Whether `host` (a URL's host, IPv6 in brackets or not, or a name being resolved)
    /// skips the address check.
    pub(crate) fn allows(&self, host: &str) -> bool {
        let host = HostKey::of(host);
        self.allowed_hosts.iter().any(|h| HostKey::of(h) == host)
    }
}

/// A host as compared: IP literals by address, names without case or a final dot.
#[derive(PartialEq)]
enum HostKey {
    Ip(IpAddr),
    Name(String),
}

impl HostKey {
    fn of(host: &str) -> Self {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        match bare.parse() {
            Ok(ip) => Self::Ip(ip),
            Err(_) => Self::Name(bare.trim_end_matches('.').to_ascii_lowercase()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_hosts_match_by_address_or_by_name() {
        let policy = InputPolicy {
            allowed_hosts: vec!["Media.Internal.".into(), "::1".into(), "10.0.0.5".into()],
            ..InputPolicy::default()
        };
        for host in [
            "media.internal",
            "MEDIA.internal.",
            "[::1]",
            "::1",
            "[0:0::1]",
            "10.0.0.5",
        ] {
            assert!(policy.allows(host), "{host}");
        }
        for host in [
            "internal",
            "media.internal.evil",
            "10.0.0.6",
            "::ffff:10.0.0.5",
            "127.0.0.1",
        ] {
            assert!(!policy.allows(host), "{host}");
        }
        assert!(!InputPolicy::default().allows("localhost"));
    }
}
