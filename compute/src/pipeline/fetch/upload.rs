//! An input uploaded to the edge (15 of the contract), fetched from the edge the node is
//! connected to with a token of its own: streamed to a temporary file, resumed with `Range`
//! and `If-Range` after a cut, its bytes checked against the SHA-256 the edge sends as ETag.
//! The edge is the node's own, so no address guard applies; the size and time caps do.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, ETAG};
use stagecast_shared::ids::AnalysisId;
use tempfile::TempPath;

use super::file::Download;
use super::{InputPolicy, causes};
use crate::error::Error;
use crate::pipeline::report::Reporter;
use crate::publish::client::{EdgeClient, PublishError, refusal};

/// Requests for one input, the first included, before it fails.
pub const TRIES: u32 = 5;
/// The first wait between requests; it doubles.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// The uploaded input of `analysis`, on `edge`.
#[derive(Clone)]
pub struct Upload {
    edge: Arc<EdgeClient>,
    analysis: AnalysisId,
    policy: Arc<InputPolicy>,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Upload({self})")
    }
}

impl std::fmt::Display for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = format!("v1/analyses/{}/input", self.analysis);
        write!(
            f,
            "{}",
            self.edge.base().join(&path).map_err(|_| std::fmt::Error)?
        )
    }
}

/// Why one request did not bring the rest of the input.
enum Try {
    /// Try again (after a wait), from where the file is.
    Again(String),
    Failed(Error),
}

impl Upload {
    /// Fetched under `policy`'s size and time caps.
    pub fn new(edge: Arc<EdgeClient>, analysis: AnalysisId, policy: Arc<InputPolicy>) -> Self {
        Self {
            edge,
            analysis,
            policy,
        }
    }

    pub(super) fn timeout(&self) -> Duration {
        self.policy.timeout
    }

    pub(super) async fn fetch(&self, report: &mut Reporter) -> Result<TempPath, Error> {
        let mut download = Download::create(self.to_string(), self.policy.max_bytes)?;
        let mut etag = None;
        let (mut tried, mut backoff) = (1, FIRST_BACKOFF);
        loop {
            match self.request(&mut download, &mut etag, report).await {
                Ok(()) => return self.check(download, etag, report).await,
                Err(Try::Failed(e)) => return Err(e),
                Err(Try::Again(why)) if tried == TRIES => {
                    return Err(Error::InputUnavailable {
                        message: format!("{self}: {why} ({TRIES} tries)"),
                        retryable: true,
                    });
                }
                Err(Try::Again(why)) => {
                    tracing::warn!(input = %self, tried, at = download.written(), "input fetch cut, resuming: {why}");
                    tokio::time::sleep(backoff).await;
                    (tried, backoff) = (tried + 1, backoff * 2);
                }
            }
        }
    }

    /// One request, from where `download` is: the rest of the input, or why not.
    async fn request(
        &self,
        download: &mut Download,
        etag: &mut Option<String>,
        report: &mut Reporter,
    ) -> Result<(), Try> {
        let failed = |e| Try::Failed(e);
        let resume = etag
            .as_deref()
            .filter(|_| download.written() > 0)
            .map(|tag| (download.written(), tag));
        let mut response = match self
            .edge
            .input(&self.analysis, resume, self.policy.timeout)
            .await
        {
            Ok(response) => response,
            Err(PublishError::Transport(e)) => return Err(Try::Again(causes(&e))),
            Err(e) => return Err(failed(Error::Internal(format!("{self}: {e}")))),
        };
        let tag = response
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match response.status() {
            // the whole input: first, or again because it changed (If-Range) or the
            // range was not honoured
            StatusCode::OK => {
                download.restart().await.map_err(failed)?;
                download.expect(response.content_length()).map_err(failed)?;
                *etag = tag;
            }
            StatusCode::PARTIAL_CONTENT => {
                let range = response
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(content_range);
                match range {
                    Some((start, size)) if start == download.written() && tag == *etag => {
                        download.expect(Some(size)).map_err(failed)?;
                    }
                    _ => {
                        download.restart().await.map_err(failed)?;
                        *etag = None;
                        return Err(Try::Again(format!(
                            "a range that does not go on from byte {}",
                            download.written()
                        )));
                    }
                }
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                download.restart().await.map_err(failed)?;
                *etag = None;
                return Err(Try::Again("416: starting again".into()));
            }
            _ => return Err(self.refused(refusal(response).await)),
        }
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => download.write(&chunk, report).await.map_err(failed)?,
                Ok(None) => break,
                Err(e) => return Err(Try::Again(causes(&e))),
            }
        }
        match download.total() {
            Some(total) if total != download.written() => Err(Try::Again(format!(
                "got {} of {total} bytes",
                download.written()
            ))),
            _ => Ok(()),
        }
    }

    /// What an answer other than the bytes means for the run.
    fn refused(&self, error: PublishError) -> Try {
        let PublishError::Refused { status, .. } = &error else {
            return Try::Again(error.to_string());
        };
        match status {
            403 => Try::Failed(Error::InputForbidden(format!("{self}: {error}"))),
            408 | 429 | 500.. => Try::Again(error.to_string()),
            _ => Try::Failed(Error::InputUnavailable {
                message: format!("{self}: {error}"),
                retryable: false,
            }),
        }
    }

    /// The file, once its SHA-256 is the one the edge announced.
    async fn check(
        &self,
        download: Download,
        etag: Option<String>,
        report: &mut Reporter,
    ) -> Result<TempPath, Error> {
        let (path, sha256) = download.finish(report).await?;
        let announced = etag
            .as_deref()
            .map(|t| t.trim_start_matches("W/").trim_matches('"'));
        if announced != Some(sha256.as_str()) {
            return Err(Error::InputUnavailable {
                message: format!(
                    "{self}: the bytes' sha256 {sha256} is not the edge's {}",
                    announced.unwrap_or("(no ETag)")
                ),
                retryable: true,
            });
        }
        Ok(path)
    }
}

/// `bytes START-END/SIZE`: the first byte and the whole size.
fn content_range(value: &str) -> Option<(u64, u64)> {
    let (range, size) = value.strip_prefix("bytes ")?.split_once('/')?;
    let (start, _) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, size.trim().parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::content_range;

    #[test]
    fn content_ranges_give_their_start_and_size() {
        assert_eq!(content_range("bytes 100-199/1000"), Some((100, 1000)));
        assert_eq!(content_range("bytes */1000"), None);
        assert_eq!(content_range("items 0-1/2"), None);
    }
}
