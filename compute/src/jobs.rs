//! The daemon's analyses: a bounded queue in front of a fixed number of slots, each
//! analysis' state as the edge would show it (the shared state machine, fed the same
//! events), cancellation, and publishing through the outbox. Runs the pool leased
//! ([`Jobs::run_leased`]) share the slots; their inputs are untrusted whatever the node
//! API may name, and they publish under their lease's attempt.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use stagecast_shared::api::{ApiError, ErrorCode};
use stagecast_shared::dispatch::Job as LeasedJob;
use stagecast_shared::event::EventKind;
use stagecast_shared::ids::AnalysisId;
use stagecast_shared::media::UPLOAD_INPUT;
use stagecast_shared::snapshot::Snapshot;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;

use crate::config::PipelineOptions;
use crate::error::Error;
use crate::model::{DEFAULT_MODEL, Model};
use crate::pipeline::{self, InputPolicy, Outcome, Source, Stage, Update, Upload};
use crate::publish::{
    self, Delivered, EdgeClient, Fence, Fencing, Outbox, OutboxError, Publication, StaleReason,
};
use crate::tracker::Tracker;

/// Finished analyses kept for `GET /v1/analyses/{id}`; older ones are forgotten.
const FINISHED_KEPT: usize = 1000;

/// `POST /v1/analyses`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(utoipa::ToSchema))]
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
#[cfg_attr(test, derive(utoipa::ToSchema))]
pub enum JobState {
    Queued,
    Running,
    /// The pipeline is done; `snapshot.status` says how.
    Finished,
}

/// `GET /v1/analyses/{id}`.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(test, derive(utoipa::ToSchema))]
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
#[cfg_attr(test, derive(utoipa::ToSchema))]
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

/// A run the pool leased to this node.
#[derive(Debug, Clone)]
pub struct Leased {
    pub analysis_id: AnalysisId,
    /// Every publish of the run carries it.
    pub attempt: u32,
    pub job: LeasedJob,
}

/// Why a leased run cannot start here.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("analysis {0} still runs or publishes on this node")]
    Busy(AnalysisId),
    #[error("the node has no edge to publish to")]
    Unpublished,
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
    /// A leased run's: fired when its attempt is no longer current.
    fence: Option<Fence>,
    tracker: Tracker,
    delivered: Option<Delivered>,
}

/// What a run does once it has its slot.
enum Work {
    Run {
        model: Arc<Model>,
        source: Source,
        options: PipelineOptions,
    },
    /// A lease this node cannot run as asked (unknown model, refused input): it ends
    /// `failed` at once, published under its attempt like any other end.
    Fail { model: String, error: Error },
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
    /// Leases come from a pool's submitters: never local paths, whatever the API takes.
    leased_inputs: Arc<InputPolicy>,
    /// The names of the loaded models, sorted, for the pool's `ready`.
    loaded: watch::Sender<Vec<String>>,
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
        let leased_inputs = InputPolicy {
            local_paths: false,
            ..inputs.clone()
        };
        Self {
            models: RwLock::default(),
            defaults,
            inputs: Arc::new(inputs),
            leased_inputs: Arc::new(leased_inputs),
            loaded: watch::Sender::new(Vec::new()),
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
        let mut names: Vec<String> = models.keys().cloned().collect();
        names.sort();
        self.loaded.send_replace(names);
    }

    /// The names of the loaded models, sorted; changes as models load.
    pub fn loaded_models(&self) -> watch::Receiver<Vec<String>> {
        self.loaded.subscribe()
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
                fence: None,
                tracker: Tracker::new(id.clone()),
                delivered: None,
            },
        );
        drop(table);
        tracing::info!(analysis = %id, input = %source, model = model_name, queued, "analysis queued");
        let work = Work::Run {
            model,
            source,
            options,
        };
        tokio::spawn(self.clone().drive(id.clone(), work, cancel, None));
        Ok(Accepted {
            analysis_id: id.to_string(),
            state: JobState::Queued,
            queued,
        })
    }

    /// Takes a run the pool leased; the returned future runs it to its end (published,
    /// or dropped as stale), waiting for a slot like any submission. Its input is parsed
    /// under the untrusted policy (an `upload` is fetched from the edge); a model not loaded here, or a refused input, ends it
    /// `failed` (`unknown_model`, `input_forbidden`, ...) under its attempt.
    pub fn run_leased(
        self: &Arc<Self>,
        leased: Leased,
    ) -> Result<impl Future<Output = ()> + Send + 'static, LeaseError> {
        if self.publishing.is_none() {
            return Err(LeaseError::Unpublished);
        }
        let Leased {
            analysis_id: id,
            attempt,
            job,
        } = leased;
        let model_name = job.model.as_deref().unwrap_or(DEFAULT_MODEL).to_owned();
        let model = {
            let models = self.models.read().expect("models lock");
            models.get(&model_name).cloned().ok_or_else(|| {
                let mut known: Vec<_> = models.keys().cloned().collect();
                known.sort();
                Error::UnknownModel {
                    name: model_name.clone(),
                    known: known.join(", "),
                }
            })
        };
        let mut options = self.defaults.clone();
        // the edge checked the bounds already; anything else keeps the node's own
        if let Some(fps) = job.options.fps.filter(|f| f.is_finite() && *f > 0.0) {
            options.fps = fps;
        }
        if let Some(batch) = job.options.batch_size.filter(|b| *b > 0) {
            options.batch_size = batch as usize;
        }
        let publishing = self.publishing.as_ref().expect("checked above");
        // an upload is fetched from the edge the lease came through
        let source = if job.input == UPLOAD_INPUT {
            let upload = Upload::new(
                publishing.edge.clone(),
                id.clone(),
                self.leased_inputs.clone(),
            );
            Ok(Source::Upload(upload))
        } else {
            Source::parse(&job.input, &self.leased_inputs)
        };
        let work = match (model, source) {
            (Ok(model), Ok(source)) => Work::Run {
                model,
                source,
                options,
            },
            (Err(error), _) | (_, Err(error)) => Work::Fail {
                model: model_name.clone(),
                error,
            },
        };

        let mut table = self.table.lock().expect("jobs lock");
        let running = table
            .jobs
            .get(id.as_str())
            .is_some_and(|j| j.state != JobState::Finished);
        if running || publishing.outbox.contains(&id) {
            return Err(LeaseError::Busy(id));
        }
        // an earlier attempt's view gives way to this one
        table.finished.retain(|f| f != id.as_str());
        if matches!(work, Work::Run { .. }) {
            let queued = self.waiting.fetch_add(1, Ordering::SeqCst) + 1;
            metrics::gauge!("stagecast_queue_depth").set(queued as f64);
        }
        let (cancel, fence) = (CancellationToken::new(), Fence::new());
        table.jobs.insert(
            id.to_string(),
            Job {
                input: job.input.clone(),
                model: model_name.clone(),
                state: JobState::Queued,
                cancel: cancel.clone(),
                fence: Some(fence.clone()),
                tracker: Tracker::new(id.clone()),
                delivered: None,
            },
        );
        drop(table);
        tracing::info!(analysis = %id, attempt, input = %job.input, model = %model_name, "leased run queued");
        let fencing = Fencing { attempt, fence };
        Ok(self.clone().drive(id, work, cancel, Some(fencing)))
    }

    /// Stops a leased run whose attempt is no longer current: it is cancelled and
    /// publishes nothing more. Whether there was such a run.
    pub fn revoke(&self, id: &str, reason: StaleReason) -> bool {
        let table = self.table.lock().expect("jobs lock");
        let Some((job, fence)) = table
            .jobs
            .get(id)
            .and_then(|j| Some((j, j.fence.as_ref()?)))
        else {
            return false;
        };
        fence.fire(reason);
        job.cancel.cancel();
        true
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
        work: Work,
        cancel: CancellationToken,
        fencing: Option<Fencing>,
    ) {
        let mut permit = None;
        if let Work::Run { .. } = work {
            // a job cancelled while queued still runs: the pipeline ends it at once, `cancelled`
            permit = tokio::select! {
                permit = self.slots.clone().acquire_owned() => permit.ok(),
                _ = cancel.cancelled() => None,
            };
            let waiting = self.waiting.fetch_sub(1, Ordering::SeqCst) - 1;
            metrics::gauge!("stagecast_queue_depth").set(waiting as f64);
        }
        self.set_state(&id, JobState::Running);

        let publication = match &self.publishing {
            Some(p) => match self.publication(p, &id, &cancel, fencing) {
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
        let ran = match work {
            Work::Run {
                model,
                source,
                options,
            } => {
                pipeline::drive(model, source, options, cancel, publication.as_ref(), record).await
            }
            Work::Fail { model, error } => {
                tracing::warn!(analysis = %id, code = error.code(), "leased run failed before it started: {error}");
                let updates = [
                    Update::Started {
                        model,
                        stages: Stage::ONE_MODEL.to_vec(),
                    },
                    Update::Failed(error.to_info()),
                ];
                for event in updates.iter().filter_map(Update::to_event) {
                    record(&event);
                    if let Some(p) = &publication {
                        p.send(event);
                    }
                }
                Err(error)
            }
        };
        let outcome = match ran {
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
                    tracing::info!(analysis = %id, confirmed = d.confirmed, refused = d.refused, stale = d.stale, "published");
                    let mut table = self.table.lock().expect("jobs lock");
                    if let Some(job) = table.jobs.get_mut(id.as_str()) {
                        job.delivered = Some(d);
                    }
                }
                Err(e) => tracing::error!(analysis = %id, "publishing failed: {e}"),
            }
        }
    }

    fn publication(
        &self,
        p: &Publishing,
        id: &AnalysisId,
        cancel: &CancellationToken,
        fencing: Option<Fencing>,
    ) -> Result<Publication, OutboxError> {
        let (edge, id, cancel, depth) = (
            p.edge.clone(),
            id.clone(),
            cancel.clone(),
            self.depth_reader(),
        );
        match fencing {
            Some(fencing) => Publication::start_leased(edge, &p.outbox, id, cancel, depth, fencing),
            None => Publication::start(edge, &p.outbox, id, cancel, depth),
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
