//! Stage 1: bring the input to a local file. Paths are used in place; http(s) URLs are
//! streamed to a temporary file that lives as long as the analysis. What a caller may
//! name, and what the node connects to for it, is its [`InputPolicy`]'s to say.

mod address;
mod file;
mod guard;
mod policy;
mod upload;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use reqwest::header::LOCATION;
use reqwest::{StatusCode, Url};
use tempfile::TempPath;

use file::Download;
pub use policy::{DEFAULT_INPUT_TIMEOUT, DEFAULT_MAX_INPUT_BYTES, InputPolicy};
pub use upload::Upload;

use super::report::Reporter;
use super::update::Stage;
use crate::error::Error;

/// Downloads are `stagecast-input-*` files in the temporary folder (TMPDIR).
pub const DOWNLOAD_PREFIX: &str = "stagecast-input-";

/// What to analyse.
#[derive(Debug, Clone)]
pub enum Source {
    /// A local file, read in place.
    Path(PathBuf),
    Url(Remote),
    /// What was uploaded to the edge for a leased analysis.
    Upload(Upload),
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
            Self::Upload(u) => u.fmt(f),
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
            within(remote.policy.timeout, source, download(remote, report)).await
        }
        Source::Upload(upload) => within(upload.timeout(), source, upload.fetch(report)).await,
    }
}

/// `download`, within the policy's time cap.
async fn within(
    timeout: std::time::Duration,
    source: &Source,
    download: impl Future<Output = Result<TempPath, Error>>,
) -> Result<Local, Error> {
    match tokio::time::timeout(timeout, download).await {
        Ok(downloaded) => downloaded.map(Local::Downloaded),
        // dropping the download deleted what it had written
        Err(_) => Err(Error::InputUnavailable {
            message: format!(
                "{source}: not downloaded within {} s",
                timeout.as_secs_f64()
            ),
            retryable: true,
        }),
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
    let mut download = Download::create(url.to_string(), policy.max_bytes)?;
    download.expect(response.content_length())?;
    while let Some(chunk) = response.chunk().await.map_err(network)? {
        download.write(&chunk, report).await?;
    }
    if let Some(total) = download.total().filter(|&t| t != download.written()) {
        return Err(Error::InputUnavailable {
            message: format!("{url}: got {} of {total} bytes", download.written()),
            retryable: true,
        });
    }
    Ok(download.finish(report).await?.0)
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
