//! Stage 1: bring the input to a local file. Paths are used in place; http(s) URLs are
//! streamed to a temporary file that lives as long as the analysis. What a caller may
//! name, and what the node connects to for it, is its [`InputPolicy`]'s to say.

mod address;
mod guard;
mod policy;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use reqwest::header::LOCATION;
use reqwest::{StatusCode, Url};
use tempfile::TempPath;
use tokio::io::AsyncWriteExt;

pub use policy::{DEFAULT_INPUT_TIMEOUT, DEFAULT_MAX_INPUT_BYTES, InputPolicy};

use super::report::{Reporter, megabytes};
use super::update::Stage;
use crate::error::Error;

/// Downloads are `stagecast-input-*` files in the temporary folder (TMPDIR).
pub const DOWNLOAD_PREFIX: &str = "stagecast-input-";

/// What to analyse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A local file, read in place.
    Path(PathBuf),
    Url(Remote),
}

/// An http(s) URL and the policy it is fetched under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    url: Url,
    policy: Arc<InputPolicy>,
}

impl Source {
    /// `http://` and `https://` are URLs, fetched under `policy`; another `scheme://` is
    /// refused; anything else is a local path, where `policy` takes them.
    pub fn parse(input: &str, policy: &Arc<InputPolicy>) -> Result<Self, Error> {
        if input.starts_with("http://") || input.starts_with("https://") {
            let url =
                Url::parse(input).map_err(|e| Error::UnsupportedInput(format!("{input}: {e}")))?;
            Ok(Self::Url(Remote {
                url,
                policy: policy.clone(),
            }))
        } else if input.trim().is_empty() {
            Err(Error::UnsupportedInput("the input is empty".into()))
        } else if let Some((scheme, _)) = input.split_once("://")
            && !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            if scheme.eq_ignore_ascii_case("file") && !policy.local_paths {
                return Err(Error::InputForbidden(format!(
                    "{input}: local files are not taken here; use an http(s) URL"
                )));
            }
            Err(Error::UnsupportedInput(format!(
                "{input}: {scheme}:// is not supported; use http(s):// or a local path"
            )))
        } else if policy.local_paths {
            Ok(Self::Path(PathBuf::from(input)))
        } else {
            Err(Error::InputForbidden(format!(
                "{input}: local paths are not taken here; use an http(s) URL"
            )))
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Path(p) => p.display().fmt(f),
            Self::Url(r) => r.url.fmt(f),
        }
    }
}

/// The input as a local file; a downloaded one is deleted on drop.
pub(crate) enum Local {
    InPlace(PathBuf),
    Downloaded(TempPath),
}

impl Local {
    pub(crate) fn path(&self) -> &Path {
        match self {
            Self::InPlace(p) => p,
            Self::Downloaded(t) => t,
        }
    }
}

pub(crate) async fn fetch(source: &Source, report: &mut Reporter) -> Result<Local, Error> {
    match source {
        Source::Path(path) => {
            if !tokio::fs::metadata(path).await.is_ok_and(|m| m.is_file()) {
                return Err(Error::InputNotFound(path.display().to_string()));
            }
            report.finish(Stage::Fetch, None, Some("local file".into()));
            Ok(Local::InPlace(path.clone()))
        }
        Source::Url(remote) => {
            let timeout = remote.policy.timeout;
            match tokio::time::timeout(timeout, download(remote, report)).await {
                Ok(downloaded) => downloaded.map(Local::Downloaded),
                // dropping the download deleted what it had written
                Err(_) => Err(Error::InputUnavailable {
                    message: format!(
                        "{}: not downloaded within {} s",
                        remote.url,
                        timeout.as_secs_f64()
                    ),
                    retryable: true,
                }),
            }
        }
    }
}

async fn download(remote: &Remote, report: &mut Reporter) -> Result<TempPath, Error> {
    let Remote { url, policy } = remote;
    let forbidden = |refused: &guard::Refused| Error::InputForbidden(format!("{url}: {refused}"));
    let network = |e: reqwest::Error| match guard::refusal(&e) {
        Some(refused) => forbidden(refused),
        None => Error::InputUnavailable {
            message: format!("{url}: {}", causes(&e)),
            // a redirect loop stays one
            retryable: !e.is_redirect(),
        },
    };
    guard::check(url, policy).map_err(|r| forbidden(&r))?;
    let client = guard::client(policy).map_err(|e| Error::Internal(format!("HTTP client: {e}")))?;
    let mut response = client.get(url.clone()).send().await.map_err(network)?;
    let status = response.status();
    // reqwest follows every redirect to http(s) that the guard lets through: one left
    // over points elsewhere (file://, ...)
    let followed = [301, 302, 303, 307, 308].contains(&status.as_u16());
    if let Some(location) = response.headers().get(LOCATION).filter(|_| followed) {
        return Err(Error::InputForbidden(format!(
            "{url}: redirected to {location:?}, which is not fetched"
        )));
    }
    if !status.is_success() {
        let retryable = status.is_server_error()
            || matches!(
                status,
                StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS
            );
        return Err(Error::InputUnavailable {
            message: format!("{url}: HTTP {status}"),
            retryable,
        });
    }
    let max = policy.max_bytes;
    let too_large = |size: String| {
        Error::InputTooLarge(format!(
            "{url}: {size}, over this node's cap of {max} bytes"
        ))
    };
    let total = response.content_length();
    if let Some(total) = total.filter(|&t| t > max) {
        return Err(too_large(format!("{total} bytes")));
    }
    let local = |e: std::io::Error| Error::Internal(format!("temporary file for {url}: {e}"));
    // named, for whoever clears what a killed node left in the temporary folder
    let (file, path) = tempfile::Builder::new()
        .prefix(DOWNLOAD_PREFIX)
        .tempfile()
        .map_err(local)?
        .into_parts();
    let mut file = tokio::fs::File::from_std(file);
    let mut done = 0u64;
    let mut reported_percent = 0;
    while let Some(chunk) = response.chunk().await.map_err(network)? {
        done += chunk.len() as u64;
        // `path` deletes the partial file on the way out
        if done > max {
            return Err(too_large(format!("more than {max} bytes")));
        }
        file.write_all(&chunk).await.map_err(local)?;
        // one update per percent at most
        let percent = total.map_or(0, |t| done * 100 / t.max(1));
        if percent > reported_percent {
            reported_percent = percent;
            report.bytes(done, total);
        }
    }
    file.flush().await.map_err(local)?;
    if total.is_some_and(|t| t != done) {
        return Err(Error::InputUnavailable {
            message: format!("{url}: got {done} of {total:?} bytes"),
            retryable: true,
        });
    }
    let message = format!("downloaded {} MB", megabytes(done));
    report.finish(Stage::Fetch, None, Some(message));
    Ok(path)
}

/// `e` and what caused it: reqwest's own message does not say why a connection failed.
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
