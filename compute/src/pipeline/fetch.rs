//! Stage 1: bring the input to a local file. Paths are used in place; http(s) URLs are
//! streamed to a temporary file that lives as long as the analysis.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use tempfile::TempPath;
use tokio::io::AsyncWriteExt;

use super::report::{Reporter, megabytes};
use super::update::Stage;
use crate::error::Error;

/// What to analyse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Path(PathBuf),
    Url(reqwest::Url),
}

impl Source {
    /// `http://` and `https://` are URLs; another `scheme://` is refused; anything else
    /// is a local path.
    pub fn parse(input: &str) -> Result<Self, Error> {
        if input.starts_with("http://") || input.starts_with("https://") {
            reqwest::Url::parse(input)
                .map(Self::Url)
                .map_err(|e| Error::UnsupportedInput(format!("{input}: {e}")))
        } else if input.trim().is_empty() {
            Err(Error::UnsupportedInput("the input is empty".into()))
        } else if let Some((scheme, _)) = input.split_once("://")
            && !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            Err(Error::UnsupportedInput(format!(
                "{input}: {scheme}:// is not supported; use http(s):// or a local path"
            )))
        } else {
            Ok(Self::Path(PathBuf::from(input)))
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Path(p) => p.display().fmt(f),
            Self::Url(u) => u.fmt(f),
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
        Source::Url(url) => download(url, report).await.map(Local::Downloaded),
    }
}

async fn download(url: &reqwest::Url, report: &mut Reporter) -> Result<TempPath, Error> {
    let failed = |message: String, retryable: bool| Error::InputFetchFailed { message, retryable };
    let network = |e: reqwest::Error| failed(format!("{url}: {e}"), true);
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        // between bytes, not for the whole body: big videos take long
        .read_timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| Error::Internal(format!("HTTP client: {e}")))?;
    let mut response = client.get(url.clone()).send().await.map_err(network)?;
    let status = response.status();
    if matches!(status, StatusCode::NOT_FOUND | StatusCode::GONE) {
        return Err(Error::InputNotFound(format!("{url}: HTTP {status}")));
    }
    if !status.is_success() {
        let retryable = status.is_server_error()
            || matches!(
                status,
                StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS
            );
        return Err(failed(format!("{url}: HTTP {status}"), retryable));
    }
    let total = response.content_length();
    let local = |e: std::io::Error| Error::Internal(format!("temporary file for {url}: {e}"));
    let (file, path) = tempfile::NamedTempFile::new().map_err(local)?.into_parts();
    let mut file = tokio::fs::File::from_std(file);
    let mut done = 0u64;
    let mut reported_percent = 0;
    while let Some(chunk) = response.chunk().await.map_err(network)? {
        file.write_all(&chunk).await.map_err(local)?;
        done += chunk.len() as u64;
        // one update per percent at most
        let percent = total.map_or(0, |t| done * 100 / t.max(1));
        if percent > reported_percent {
            reported_percent = percent;
            report.bytes(done, total);
        }
    }
    file.flush().await.map_err(local)?;
    if total.is_some_and(|t| t != done) {
        return Err(failed(
            format!("{url}: got {done} of {total:?} bytes"),
            true,
        ));
    }
    let message = format!("downloaded {} MB", megabytes(done));
    report.finish(Stage::Fetch, None, Some(message));
    Ok(path)
}
