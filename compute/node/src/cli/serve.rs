//! `stagecast-node serve`: the daemon.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use stagecast_compute::CancellationToken;
use stagecast_compute::api::{ServeState, router};
use stagecast_compute::jobs::{Jobs, QueueLimits};
use stagecast_compute::model::DEFAULT_MODEL;
use stagecast_compute::pool::{PoolConfig, PoolError, PoolLink};
use stagecast_compute::{Catalog, Model};
use stagecast_shared::dispatch::wire::MAX_SLOTS;
use stagecast_shared::ids::PoolName;
use stagecast_shared::token::KeySet;

use super::edge::EdgeArgs;
use super::input::InputArgs;
use super::{NodeArgs, PipelineArgs, count};

/// Seconds; the figures of a CPU or GPU node fall in this range.
const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the node API
    #[arg(long, env = "STAGECAST_NODE_LISTEN", default_value = "127.0.0.1:8788")]
    pub listen: SocketAddr,
    /// Analyses running at once; with --pool also the slots it declares (at most 256)
    #[arg(long, env = "STAGECAST_CONCURRENCY", default_value_t = 1, value_parser = count)]
    pub concurrency: usize,
    /// Analyses waiting for a slot; beyond it submissions get 429 with Retry-After
    #[arg(long, env = "STAGECAST_QUEUE", default_value_t = 16)]
    pub queue: usize,
    /// Models loaded at start, comma-separated (see `stagecast-node models`)
    #[arg(long, env = "STAGECAST_MODELS", default_value = DEFAULT_MODEL, value_delimiter = ',')]
    pub models: Vec<String>,
    /// ONNX Runtime sessions per model, so this many batches can run at once (with
    /// --concurrency above 1; each session holds its own copy of the model)
    #[arg(long, env = "STAGECAST_SESSIONS", default_value_t = 1, value_parser = count)]
    pub sessions: usize,
    /// Tenants and keys that may call the node API, as the edge's STAGECAST_TENANTS JSON
    /// [default: this node's own HS256 key]
    #[arg(long, env = "STAGECAST_TENANTS", hide_env_values = true)]
    pub tenants: Option<String>,
    /// Let node API callers (admin tokens) name local paths as inputs: any file this node
    /// can read. Without it the API takes http(s) URLs only; `analyze` always takes paths
    #[arg(long, env = "STAGECAST_ALLOW_LOCAL_INPUTS")]
    pub allow_local_inputs: bool,
    /// Join this pool at the edge (needs --edge): take its leases over one outbound
    /// WebSocket, next to the node API. Its inputs are untrusted: http(s) URLs only, on
    /// public addresses unless --allow-input-host names the host
    #[arg(long, env = "STAGECAST_POOL", value_parser = pool_name)]
    pub pool: Option<PoolName>,
    /// Seconds the pool's running analyses get to finish after SIGTERM; the rest are
    /// released back to the pool (no attempt used up) and stopped
    #[arg(long, env = "STAGECAST_DRAIN_TIMEOUT", default_value_t = 60)]
    pub drain_timeout: u64,
    #[command(flatten)]
    pub fetch: InputArgs,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

fn pool_name(s: &str) -> Result<PoolName, String> {
    PoolName::parse(s).map_err(|e| e.to_string())
}

pub async fn run(node: &NodeArgs, edge: &EdgeArgs, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let metrics = PrometheusBuilder::new()
        .set_buckets(DURATION_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full("stagecast_inference_batch_size".into()),
            BATCH_BUCKETS,
        )?
        .install_recorder()
        .context("installing the metrics recorder")?;
    stagecast_compute::api::describe_metrics();
    let keys = match &args.tenants {
        Some(json) => KeySet::from_json(json).context("--tenants")?,
        None => edge.own_key_set()?,
    };
    let publishing = edge.publishing()?;
    if publishing.is_none() {
        if args.pool.is_some() {
            bail!("--pool needs --edge (STAGECAST_EDGE_URL): the pool is at the edge");
        }
        tracing::warn!("no --edge: analyses run here and are published nowhere");
    }
    let slots = u32::try_from(args.concurrency).unwrap_or(u32::MAX);
    if args.pool.is_some() && slots > MAX_SLOTS {
        bail!("--concurrency is at most {MAX_SLOTS} with --pool (the slots a node may declare)");
    }
    let edge_client = publishing.as_ref().map(|p| p.edge.clone());
    let limits = QueueLimits {
        concurrency: args.concurrency,
        capacity: args.queue,
    };
    let inputs = args.fetch.policy(args.allow_local_inputs);
    tracing::info!(
        local_paths = inputs.local_paths,
        allowed_hosts = ?inputs.allowed_hosts,
        max_bytes = inputs.max_bytes,
        timeout_s = inputs.timeout.as_secs(),
        "input policy"
    );
    let jobs = Arc::new(Jobs::new(
        args.pipeline.options(),
        inputs,
        limits,
        publishing,
    ));
    let resumed = jobs.resume_outboxes()?;
    if resumed > 0 {
        tracing::info!(resumed, "sending what an earlier run left in the outbox");
    }

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(listen = %listener.local_addr()?, edge = ?edge.edge, "node API up; models loading");

    // /healthz answers while the models load; /readyz waits for them
    let mut runtime = node.runtime(args.pipeline.threads);
    runtime.sessions = args.sessions;
    let catalog = Catalog::load(&runtime.models_dir)?;
    for name in args.models.clone() {
        let (catalog, runtime, jobs) = (catalog.clone(), runtime.clone(), jobs.clone());
        tokio::task::spawn_blocking(move || match Model::load(&catalog, &name, &runtime) {
            Ok(model) => jobs.add_model(Arc::new(model)),
            Err(e) => tracing::error!(model = %name, code = e.code(), "model not loaded: {e}"),
        });
    }

    // SIGTERM (or Ctrl-C) drains the pool link first; the node API serves until it is done
    let shutdown = CancellationToken::new();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("shutting down");
            shutdown.cancel();
        }
    });
    let link = match (args.pool, &edge_client) {
        (Some(pool), Some(client)) => {
            let config = PoolConfig {
                pool,
                slots,
                drain_timeout: Duration::from_secs(args.drain_timeout),
            };
            Some(PoolLink::new(config, jobs.clone(), client.clone()))
        }
        _ => None,
    };

    let state = Arc::new(ServeState::new(jobs, keys, edge_client, metrics));
    let stop = CancellationToken::new();
    let server = tokio::spawn(
        axum::serve(listener, router(state))
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .into_future(),
    );
    let code = match link {
        None => {
            shutdown.cancelled().await;
            ExitCode::SUCCESS
        }
        Some(link) => match link.run(shutdown.clone()).await {
            Ok(()) => ExitCode::SUCCESS,
            // don't fight the process that took the node id, nor exit for a supervisor
            // to restart this one into it: serve the node API until told to stop
            Err(PoolError::Replaced { .. }) => {
                shutdown.cancelled().await;
                ExitCode::SUCCESS
            }
            // logged by the link; a refused token or request needs the operator
            Err(_) => ExitCode::FAILURE,
        },
    };
    stop.cancel();
    server.await.context("the node API task")??;
    tracing::info!("stopped; unsent events stay in the outbox for the next start");
    Ok(code)
}
