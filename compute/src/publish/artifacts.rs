//! A run's artifacts on their way to the edge: best effort, beside the events.
//!
//! Pictures are not kept in the outbox: one that cannot be stored is logged and counted
//! (`stagecast_artifacts_total{outcome}`), never a reason to fail or hold up the run. A
//! short queue takes them without blocking the pipeline (a key frame that finds it full is
//! dropped); [`Uploads::finish`] waits, within [`FINISH_WITHIN`], for what is queued, so the
//! terminal event goes out after the result's picture was tried.

use std::sync::Arc;
use std::time::Duration;

use stagecast_shared::ids::AnalysisId;
use stagecast_shared::media::KIND_RESULT;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::client::{EdgeClient, PublishError, TokenCache};
use super::fence::{Fence, StaleReason};
use crate::clock::now_s;
use crate::pipeline::Artifact;

/// Pictures waiting to be sent; a key frame beyond them is dropped.
const QUEUED: usize = 4;
/// Tries of one picture that the edge did not refuse for good.
const TRIES: u32 = 4;
/// The first wait between tries; it doubles.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// How long the end of a run waits for the pictures still queued.
pub const FINISH_WITHIN: Duration = Duration::from_secs(30);

/// The uploads of one run.
pub struct Uploads {
    queue: mpsc::Sender<Artifact>,
    task: JoinHandle<()>,
}

/// How one picture ended, the label of its count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Stored,
    /// The edge will not take it (400, 409, 413): logged.
    Refused,
    /// Still failing after [`TRIES`], or the run's attempt is no longer current.
    Failed,
    /// The queue was full.
    Dropped,
}

impl Outcome {
    fn count(self) {
        let outcome = match self {
            Self::Stored => "stored",
            Self::Refused => "refused",
            Self::Failed => "failed",
            Self::Dropped => "dropped",
        };
        metrics::counter!("stagecast_artifacts_total", "outcome" => outcome).increment(1);
    }
}

impl Uploads {
    /// Sends `analysis`' artifacts under `attempt` (a leased run's); once `fence` fires,
    /// nothing more is sent.
    pub fn start(
        edge: Arc<EdgeClient>,
        analysis: AnalysisId,
        attempt: Option<u32>,
        fence: Fence,
    ) -> Self {
        let (queue, mut rx) = mpsc::channel::<Artifact>(QUEUED);
        let span = tracing::info_span!("artifacts", analysis = %analysis, attempt);
        let task = tokio::spawn(
            async move {
                let mut tokens = TokenCache::default();
                while let Some(artifact) = rx.recv().await {
                    if fence.reason().is_some() {
                        Outcome::Failed.count();
                        continue;
                    }
                    let outcome = tokio::select! {
                        outcome = send(&edge, &analysis, attempt, &fence, &mut tokens, &artifact) => outcome,
                        _ = fence.fired() => Outcome::Failed,
                    };
                    outcome.count();
                }
            }
            .instrument(span),
        );
        Self { queue, task }
    }

    /// Queues `artifact` without holding up the run: a key frame that finds the queue full
    /// is dropped; the result waits for room, as the run is about to end.
    pub async fn offer(&self, artifact: Artifact) {
        if artifact.kind == KIND_RESULT {
            let _ = self.queue.send(artifact).await;
        } else if let Err(mpsc::error::TrySendError::Full(a)) = self.queue.try_send(artifact) {
            tracing::warn!(
                name = a.name.as_str(),
                "artifact dropped: the upload queue is full"
            );
            Outcome::Dropped.count();
        }
    }

    /// Waits for what is queued, at most [`FINISH_WITHIN`]; what is left is abandoned.
    pub async fn finish(self) {
        drop(self.queue);
        let mut task = self.task;
        if tokio::time::timeout(FINISH_WITHIN, &mut task)
            .await
            .is_err()
        {
            tracing::warn!("artifacts still uploading after {FINISH_WITHIN:?}: abandoned");
            task.abort();
        }
    }
}

/// One picture, retried while the edge may yet take it.
async fn send(
    edge: &EdgeClient,
    analysis: &AnalysisId,
    attempt: Option<u32>,
    fence: &Fence,
    tokens: &mut TokenCache,
    artifact: &Artifact,
) -> Outcome {
    let name = artifact.name.as_str();
    let mut backoff = FIRST_BACKOFF;
    for tried in 1..=TRIES {
        let error = match tokens.get(edge.identity(), analysis, now_s()) {
            Ok(token) => {
                let token = token.to_owned();
                match edge.put_artifact(analysis, &token, artifact, attempt).await {
                    Ok(()) => {
                        tracing::debug!(name, bytes = artifact.bytes.len(), "artifact stored");
                        return Outcome::Stored;
                    }
                    Err(e) => e,
                }
            }
            Err(e) => PublishError::Token(e),
        };
        if error.is_stale_attempt() {
            fence.fire(StaleReason::StaleAttempt);
            return Outcome::Failed;
        }
        if error.is_permanent() {
            tracing::warn!(name, "the edge refused the artifact: {error}");
            return Outcome::Refused;
        }
        if tried == TRIES {
            tracing::warn!(name, tries = TRIES, "artifact not stored: {error}");
            break;
        }
        let wait = match &error {
            PublishError::Refused {
                retry_after: Some(after),
                ..
            } => *after,
            _ => backoff,
        };
        tracing::debug!(name, "artifact upload failed, will retry: {error}");
        tokio::time::sleep(wait).await;
        backoff *= 2;
    }
    Outcome::Failed
}
