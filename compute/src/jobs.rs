//! The daemon's analyses: a bounded queue in front of a fixed number of slots, each
//! analysis' state as the edge would show it (the shared state machine, fed the same
//! events), cancellation, and publishing through the outbox.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use stagecast_shared::api::{ApiError, ErrorCode};
use stagecast_shared::event::EventKind;
use stagecast_shared::ids::AnalysisId;
use stagecast_shared::snapshot::Snapshot;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::PipelineOptions;
use crate::model::{DEFAULT_MODEL, Model};
use crate::pipeline::{self, InputPolicy, Outcome, Source};
use crate::publish::{self, Delivered, EdgeClient, Outbox, OutboxError, Publication};
use crate::tracker::Tracker;

/// Finished analyses kept for `GET /v1/analyses/{id}`; older ones are forgotten.
const FINISHED_KEPT: usize = 1000;

/// `POST /v1/analyses`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// An http(s) URL, or a local path where the node's input policy takes them.
    pub input: String,
    #[serde(default)]
    pub model: Option<String>,
    /// Honoured when given; else the node picks one.
    #[serde(default)]
    pub analysis_id: Option<String>,
    #[serde(default)]
    pub fps: Option<f64>,
    #[serde(default)]
    pub batch_size: Option<usize>,
}

/// Where a job is on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    /// The pipeline is done; `snapshot.status` says how.
    Finished,
}

/// `GET /v1/analyses/{id}`.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub analysis_id: String,
    pub state: JobState,
    pub input: String,
    pub model: String,
    pub snapshot: Snapshot,
    /// What the edge confirmed, once every event was sent (absent without an edge).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered: Option<Delivered>,
}

/// 202 answer to a submission.
#[derive(Debug, Clone, Serialize)]
pub struct Accepted {
    pub analysis_id: String,
    pub state: JobState,
    /// Analyses waiting ahead of this one, this one included.
    pub queued: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("analysis {0:?} was already submitted to this node")]
    Exists(String),
    #[error("the queue is full ({0} analyses waiting); retry later")]
    QueueFull(usize),
    #[error("the node is still loading its models; retry shortly")]
    Loading,
    #[error(transparent)]
    Outbox(#[from] OutboxError),
}

impl ApiError for SubmitError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidRequest(_) => ErrorCode::InvalidRequest,
            Self::Exists(_) => ErrorCode::AnalysisExists,
            Self::QueueFull(_) => ErrorCode::RateLimited,
            Self::Loading => ErrorCode::Unavailable,
            Self::Outbox(_) => ErrorCode::Internal,
        }
    }
}

/// Limits of the queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Analyses running at once.
    pub concurrency: usize,
    /// Analyses waiting for a slot; one more is refused with 429.
    pub capacity: usize,
}

/// Where events go: the edge, with the outbox in front of it.
#[derive(Clone)]
pub struct Publishing {
    pub edge: Arc<EdgeClient>,
    pub outbox: Outbox,
}

struct Job {
    input: String,
    model: String,
    state: JobState,
    cancel: CancellationToken,
    tracker: Tracker,
    delivered: Option<Delivered>,
}

#[derive(Default)]
struct Table {
    jobs: HashMap<String, Job>,
    finished: VecDeque<String>,
}

pub struct Jobs {
    models: RwLock<HashMap<String, Arc<Model>>>,
    defaults: PipelineOptions,
    /// Submissions come from the API's callers: what they may name as inputs.
    inputs: Arc<InputPolicy>,
    publishing: Option<Publishing>,
    slots: Arc<Semaphore>,
    capacity: usize,
    waiting: Arc<AtomicUsize>,
    table: Mutex<Table>,
}

impl Jobs {
    pub fn new(
        defaults: PipelineOptions,
        inputs: InputPolicy,
        limits: QueueLimits,
        publishing: Option<Publishing>,
    ) -> Self {
        Self {
            models: RwLock::default(),
            defaults,
            inputs: Arc::new(inputs),
            publishing,
            slots: Arc::new(Semaphore::new(limits.concurrency.max(1))),
            capacity: limits.capacity,
            waiting: Arc::default(),
            table: Mutex::default(),
        }
    }

    /// Makes `model` available to submissions.
    pub fn add_model(&self, model: Arc<Model>) {
        let mut models = self.models.write().expect("models lock");
        models.insert(model.name().to_owned(), model);
    }

    /// Whether any model is loaded.
    pub fn has_models(&self) -> bool {
        !self.models.read().expect("models lock").is_empty()
    }

    /// Analyses waiting for a slot.
    pub fn queue_depth(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Sends what an earlier run left in the outbox; a run it cut short ends `failed`.
    pub fn resume_outboxes(&self) -> Result<usize, OutboxError> {
        let Some(publishing) = &self.publishing else {
            return Ok(0);
        };
        let analyses = publishing.outbox.analyses()?;
        for analysis in &analyses {
            let publication = Publication::resume(
                publishing.edge.clone(),
                &publishing.outbox,
                analysis.clone(),
                self.depth_reader(),
            )?;
            let analysis = analysis.clone();
            tokio::spawn(async move {
                match publication.finish().await {
                    Ok(d) => {
                        tracing::info!(%analysis, confirmed = d.confirmed, "outbox of an earlier run sent")
                    }
                    Err(e) => tracing::error!(%analysis, "outbox of an earlier run: {e}"),
                }
            });
        }
        Ok(analyses.len())
    }

    fn depth_reader(&self) -> publish::QueueDepth {
        let waiting = self.waiting.clone();
        Arc::new(move || waiting.load(Ordering::Relaxed) as u64)
    }

    /// Queues an analysis; it starts as soon as a slot is free.
    pub fn submit(self: &Arc<Self>, request: JobRequest) -> Result<Accepted, SubmitError> {
        let invalid = |m: String| SubmitError::InvalidRequest(m);
        let id = match &request.analysis_id {
            Some(id) => AnalysisId::parse(id).map_err(|e| invalid(format!("analysis_id: {e}")))?,
            None => new_analysis_id(),
        };
        // a refused address is only known when fetching: that ends the analysis `failed`
        let source = Source::parse(&request.input, &self.inputs)
            .map_err(|e| invalid(format!("input: {e}")))?;
        let model_name = request.model.as_deref().unwrap_or(DEFAULT_MODEL);
        let model = {
            let models = self.models.read().expect("models lock");
            if models.is_empty() {
                return Err(SubmitError::Loading);
            }
            models.get(model_name).cloned().ok_or_else(|| {
                let mut known: Vec<_> = models.keys().cloned().collect();
                known.sort();
                invalid(format!(
                    "model: {model_name:?} is not loaded here; loaded: {}",
                    known.join(", ")
                ))
            })?
        };
        let options = self.options(&request)?;

        let mut table = self.table.lock().expect("jobs lock");
        let exists = table.jobs.contains_key(id.as_str())
            || self
                .publishing
                .as_ref()
                .is_some_and(|p| p.outbox.contains(&id));
        if exists {
            return Err(SubmitError::Exists(id.to_string()));
        }
        // counted under the table lock, so two racing submissions cannot both take the last place
        let queued = self.waiting.fetch_add(1, Ordering::SeqCst) + 1;
        if queued > self.capacity {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(SubmitError::QueueFull(self.capacity));
        }
        metrics::gauge!("stagecast_queue_depth").set(queued as f64);
        let cancel = CancellationToken::new();
        table.jobs.insert(
            id.to_string(),
            Job {
                input: request.input.clone(),
                model: model_name.to_owned(),
                state: JobState::Queued,
                cancel: cancel.clone(),
                tracker: Tracker::new(id.clone()),
                delivered: None,
            },
        );
        drop(table);
        tracing::info!(analysis = %id, input = %source, model = model_name, queued, "analysis queued");
        tokio::spawn(
            self.clone()
                .drive(id.clone(), model, source, options, cancel),
        );
        Ok(Accepted {
            analysis_id: id.to_string(),
            state: JobState::Queued,
            queued,
        })
    }

    fn options(&self, request: &JobRequest) -> Result<PipelineOptions, SubmitError> {
        let mut options = self.defaults.clone();
        if let Some(fps) = request.fps {
            if !(fps.is_finite() && fps > 0.0) {
                return Err(SubmitError::InvalidRequest(format!(
                    "fps: {fps} is not a positive number"
                )));
            }
            options.fps = fps;
        }
        if let Some(batch) = request.batch_size {
            if batch == 0 {
                return Err(SubmitError::InvalidRequest(
                    "batch_size: must be at least 1".into(),
                ));
            }
            options.batch_size = batch;
        }
        Ok(options)
    }

    pub fn get(&self, id: &str) -> Option<JobView> {
        let table = self.table.lock().expect("jobs lock");
        let job = table.jobs.get(id)?;
        Some(JobView {
            analysis_id: id.to_owned(),
            state: job.state,
            input: job.input.clone(),
            model: job.model.clone(),
            snapshot: job.tracker.snapshot(),
            delivered: job.delivered,
        })
    }

    /// Asks `id` to stop; `None` if no such analysis. A queued one ends without running.
    pub fn cancel(&self, id: &str) -> Option<()> {
        let table = self.table.lock().expect("jobs lock");
        let job = table.jobs.get(id)?;
        job.cancel.cancel();
        Some(())
    }

    async fn drive(
        self: Arc<Self>,
        id: AnalysisId,
        model: Arc<Model>,
        source: Source,
        options: PipelineOptions,
        cancel: CancellationToken,
    ) {
        // a job cancelled while queued still runs: the pipeline ends it at once, `cancelled`
        let permit = tokio::select! {
            permit = self.slots.clone().acquire_owned() => permit.ok(),
            _ = cancel.cancelled() => None,
        };
        let waiting = self.waiting.fetch_sub(1, Ordering::SeqCst) - 1;
        metrics::gauge!("stagecast_queue_depth").set(waiting as f64);
        self.set_state(&id, JobState::Running);

        let publication = match &self.publishing {
            Some(p) => match Publication::start(
                p.edge.clone(),
                &p.outbox,
                id.clone(),
                cancel.clone(),
                self.depth_reader(),
            ) {
                Ok(publication) => Some(publication),
                Err(e) => {
                    // running unpublished would show watchers nothing: refuse to run
                    tracing::error!(analysis = %id, "cannot open the outbox, analysis not run: {e}");
                    metrics::counter!("stagecast_analyses_total", "outcome" => "failed")
                        .increment(1);
                    self.set_state(&id, JobState::Finished);
                    return;
                }
            },
            None => None,
        };

        let record = |kind: &EventKind| self.record(&id, kind.clone());
        let ran = pipeline::drive(model, source, options, cancel, publication.as_ref(), record);
        let outcome = match ran.await {
            Ok(Outcome::Completed(_)) => "completed",
            Ok(Outcome::Cancelled) => "cancelled",
            Err(_) => "failed",
        };
        metrics::counter!("stagecast_analyses_total", "outcome" => outcome).increment(1);
        // the slot is for the model; draining the outbox does not need it
        drop(permit);
        self.set_state(&id, JobState::Finished);
        if let Some(p) = publication {
            match p.finish().await {
                Ok(d) => {
                    tracing::info!(analysis = %id, confirmed = d.confirmed, refused = d.refused, "published");
                    let mut table = self.table.lock().expect("jobs lock");
                    if let Some(job) = table.jobs.get_mut(id.as_str()) {
                        job.delivered = Some(d);
                    }
                }
                Err(e) => tracing::error!(analysis = %id, "publishing failed: {e}"),
            }
        }
    }

    fn record(&self, id: &AnalysisId, kind: EventKind) {
        let mut table = self.table.lock().expect("jobs lock");
        if let Some(job) = table.jobs.get_mut(id.as_str()) {
            job.tracker.record(kind);
        }
    }

    fn set_state(&self, id: &AnalysisId, state: JobState) {
        let mut table = self.table.lock().expect("jobs lock");
        if let Some(job) = table.jobs.get_mut(id.as_str()) {
            job.state = state;
        }
        if state == JobState::Finished {
            table.finished.push_back(id.to_string());
            while table.finished.len() > FINISHED_KEPT {
                if let Some(old) = table.finished.pop_front() {
                    table.jobs.remove(&old);
                }
            }
        }
    }
}

/// `a-` and 16 random hex digits.
pub fn new_analysis_id() -> AnalysisId {
    AnalysisId::parse(&format!("a-{:016x}", fastrand::u64(..))).expect("generated ids are valid")
}
