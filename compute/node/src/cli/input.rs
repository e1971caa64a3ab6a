//! Flags of the inputs the node fetches: which hosts may be on non-public addresses, and
//! the size and time caps of a download.

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use clap::Args;
use stagecast_compute::InputPolicy;
use stagecast_compute::pipeline::{DEFAULT_INPUT_TIMEOUT, DEFAULT_MAX_INPUT_BYTES};

#[derive(Debug, Args)]
pub struct InputArgs {
    /// Host (a name or an IP address, no scheme or port) whose URLs are fetched though it is
    /// on a loopback, private or link-local address, which are refused otherwise
    /// (input_forbidden); repeat, or separate with commas, for several
    #[arg(long, env = "STAGECAST_ALLOW_INPUT_HOSTS", value_delimiter = ',', value_parser = host)]
    pub allow_input_host: Vec<String>,
    /// Largest input downloaded, in bytes; a larger one fails with input_too_large
    #[arg(long, env = "STAGECAST_MAX_INPUT_BYTES", default_value_t = DEFAULT_MAX_INPUT_BYTES,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_input_bytes: u64,
    /// Seconds a whole download may take, from connecting to its last byte; past it the
    /// analysis fails with input_unavailable (retryable)
    #[arg(long, env = "STAGECAST_INPUT_TIMEOUT", default_value_t = DEFAULT_INPUT_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub input_timeout: u64,
}

impl InputArgs {
    /// The policy of these flags; `local_paths` says whether inputs may be local files.
    pub fn policy(&self, local_paths: bool) -> InputPolicy {
        InputPolicy {
            local_paths,
            allowed_hosts: self.allow_input_host.clone(),
            max_bytes: self.max_input_bytes,
            timeout: Duration::from_secs(self.input_timeout),
        }
    }
}

/// A host name or an IP address (IPv6 with or without brackets).
fn host(s: &str) -> Result<String, String> {
    let ok = match s.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().is_ok(),
        None => {
            s.parse::<IpAddr>().is_ok()
                || (!s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'))
        }
    };
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a host name or an IP address (give no scheme, port or path)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::host;

    #[test]
    fn hosts_are_names_or_addresses_only() {
        for ok in [
            "media.internal",
            "localhost",
            "10.0.0.5",
            "::1",
            "[fd00::7]",
        ] {
            assert!(host(ok).is_ok(), "{ok}");
        }
        for bad in ["", "http://x", "x:8080", "x/y", "[x]", "a b"] {
            assert!(host(bad).is_err(), "{bad}");
        }
    }
}
