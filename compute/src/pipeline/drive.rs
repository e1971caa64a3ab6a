//! One analysis run to its end with each update's event handed on, in order: the one
//! loop that the daemon's jobs, `analyze` and the node benchmark share.

use std::sync::Arc;

use stagecast_shared::event::EventKind;
use tokio_util::sync::CancellationToken;

use super::{Outcome, Source, Update, run};
use crate::config::PipelineOptions;
use crate::error::Error;
use crate::model::Model;
use crate::publish::Publication;

/// Runs the pipeline on `source`; every event goes first to `watch` (bars, a tracker, a
/// recording) and then to `publication`, when there is one, with the run's artifacts
/// (without one they are dropped). The terminal event waits until the artifacts before it
/// were tried.
pub async fn drive(
    model: Arc<Model>,
    source: Source,
    options: PipelineOptions,
    cancel: CancellationToken,
    publication: Option<&Publication>,
    mut watch: impl FnMut(&EventKind),
) -> Result<Outcome, Error> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let analysis = tokio::spawn(async move { run(model, &source, &options, cancel, tx).await });
    let mut uploads = publication.map(Publication::artifact_uploads);
    while let Some(update) = rx.recv().await {
        if let Update::Artifact(artifact) = update {
            if let Some(u) = &uploads {
                u.offer(artifact).await;
            }
            continue;
        }
        if update.is_terminal()
            && let Some(u) = uploads.take()
        {
            u.finish().await;
        }
        let Some(event) = update.to_event() else {
            continue;
        };
        watch(&event);
        if let Some(p) = publication {
            p.send(event);
        }
    }
    analysis
        .await
        .map_err(|e| Error::Internal(format!("the analysis task failed: {e}")))?
}
