//! The HTTP client that fetches inputs, checking every address it connects to against
//! the policy: after DNS resolution (so a name that resolves elsewhere the next time
//! cannot dodge the check), for IP-literal hosts (which reqwest does not resolve), and
//! on every redirect.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::redirect;
use reqwest::{Client, Url};

use super::address::forbidden;
use super::policy::InputPolicy;

/// The address rules said no; carried inside reqwest's errors to become `input_forbidden`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct Refused(String);

pub(super) fn client(policy: &Arc<InputPolicy>) -> reqwest::Result<Client> {
    let hops = redirect::Policy::default();
    let checked = policy.clone();
    Client::builder()
        // a proxy would connect for us, to addresses never checked
        .no_proxy()
        .dns_resolver(CheckedResolver(policy.clone()))
        .redirect(redirect::Policy::custom(move |attempt| {
            match check(attempt.url(), &checked) {
                Ok(()) => hops.redirect(attempt),
                Err(refused) => attempt.error(refused),
            }
        }))
        .connect_timeout(Duration::from_secs(10))
        // between bytes; the policy's timeout caps the whole download
        .read_timeout(Duration::from_secs(60))
        .build()
}

/// What can be checked before connecting: the scheme, and a host that is an IP literal.
/// Host names are checked by the resolver.
pub(super) fn check(url: &Url, policy: &InputPolicy) -> Result<(), Refused> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Refused(format!("{}:// is not fetched", url.scheme())));
    }
    let host = url.host_str().unwrap_or_default();
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .parse::<IpAddr>();
    match literal {
        Ok(ip) if !policy.allows(host) => match forbidden(ip) {
            Some(why) => Err(Refused(format!("{ip} is a {why} address"))),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

/// The system resolver, keeping only the addresses the policy lets the client connect to.
struct CheckedResolver(Arc<InputPolicy>);

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(resolve(self.0.clone(), name))
    }
}

async fn resolve(
    policy: Arc<InputPolicy>,
    name: Name,
) -> Result<Addrs, Box<dyn std::error::Error + Send + Sync>> {
    let host = name.as_str();
    let found: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
    if policy.allows(host) {
        return Ok(Box::new(found.into_iter()));
    }
    let (public, refused): (Vec<_>, Vec<_>) =
        found.into_iter().partition(|a| forbidden(a.ip()).is_none());
    if public.is_empty() && !refused.is_empty() {
        // the addresses stay in the node's log: the caller learns nothing of the network
        let refused: Vec<IpAddr> = refused.iter().map(SocketAddr::ip).collect();
        tracing::warn!(host, ?refused, "input host refused: no public address");
        return Err(Box::new(Refused(format!(
            "{host} has no address the node may fetch from"
        ))));
    }
    if !refused.is_empty() {
        tracing::debug!(
            host,
            skipped = refused.len(),
            "non-public addresses skipped"
        );
    }
    Ok(Box::new(public.into_iter()))
}

/// The refusal inside `e`, if the address rules are why it failed.
pub(super) fn refusal(e: &reqwest::Error) -> Option<&Refused> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(refused) = c.downcast_ref::<Refused>() {
            return Some(refused);
        }
        cause = c.source();
    }
    None
}
