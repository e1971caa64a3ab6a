//! Stage 4: one batch through a network of the model on a blocking thread, stoppable
//! mid-run.

use std::sync::Arc;

use ort::session::RunOptions;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::model::{Model, Tensor32};

/// Runs `batch` through network `net` of link `link` and returns its outputs; `None` when
/// `cancel` fired first, in which case ONNX Runtime is told to stop the run in flight and
/// this waits for it to let go of the session.
pub(crate) async fn infer(
    model: &Arc<Model>,
    net: (usize, usize),
    batch: Tensor32,
    cancel: &CancellationToken,
) -> Result<Option<Vec<Tensor32>>, Error> {
    let options = Arc::new(RunOptions::new().map_err(|e| Error::InferenceFailed(e.to_string()))?);
    let frames = batch.shape.first().copied().unwrap_or(0);
    let started = std::time::Instant::now();
    let mut run = tokio::task::spawn_blocking({
        let (model, options) = (model.clone(), options.clone());
        move || model.run_net(net, batch, &options)
    });
    tokio::select! {
        biased;
        _ = cancel.cancelled() => {
            if let Err(e) = options.terminate() {
                tracing::warn!("could not stop the batch in flight: {e}");
            }
            // its result no longer matters, terminated or not
            let _ = run.await;
            Ok(None)
        }
        output = &mut run => {
            let output = output??;
            metrics::histogram!("stagecast_inference_batch_size").record(frames as f64);
            metrics::histogram!("stagecast_inference_seconds").record(started.elapsed().as_secs_f64());
            Ok(Some(output))
        }
    }
}
