//! `stagecast-node submit`: what a user runs to have a file analysed by the fleet. A local
//! file is uploaded to the edge first (streamed from disk, with a progress bar), then the
//! analysis is submitted to a pool, its dashboard URL printed, and it is followed like
//! `watch` does.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use futures_util::TryStreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use sha2::{Digest, Sha256};
use stagecast_compute::clock::now_s;
use stagecast_shared::api::ErrorBody;
use stagecast_shared::dispatch::job::{DEFAULT_MAX_ATTEMPTS, MAX_ATTEMPTS, MAX_PRIORITY};
use stagecast_shared::ids::{AnalysisId, PoolName};
use stagecast_shared::media::{UPLOAD_INPUT, UploadReceipt};
use stagecast_shared::token::{ALL_ANALYSES, Scope};
use tokio_util::io::ReaderStream;

use super::edge::EdgeArgs;
use super::watch::{self, WatchArgs};

/// Lifetime of the tokens minted for the upload and the submission.
const SUBMIT_TTL_S: i64 = 600;
/// Lifetime of the dashboard's viewer token.
const VIEWER_TTL_S: i64 = 86_400;

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// A local video or image (uploaded to the edge first) or an http(s) URL the node fetches
    pub input: String,
    /// Pool to queue it in
    #[arg(long, default_value = "default")]
    pub pool: String,
    /// Analysis id [default: 128 random bits, hex]
    #[arg(long)]
    pub analysis_id: Option<String>,
    /// Model to run [default: the node's default]
    #[arg(long)]
    pub model: Option<String>,
    /// Video frames sampled per second [default: the node's]
    #[arg(long)]
    pub fps: Option<f64>,
    /// Frames per inference call [default: the node's]
    #[arg(long)]
    pub batch_size: Option<u32>,
    /// 0..=9, higher goes first
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=MAX_PRIORITY as i64))]
    pub priority: u8,
    /// Attempts the analysis may lose to node loss before it fails
    #[arg(long, default_value_t = DEFAULT_MAX_ATTEMPTS, value_parser = clap::value_parser!(u8).range(1..=MAX_ATTEMPTS as i64))]
    pub max_attempts: u8,
    /// Content type of the file [default: from its extension]
    #[arg(long)]
    pub content_type: Option<String>,
    /// A `submit` token for the upload and submission [default: one signed with this node's key]
    #[arg(long, env = "STAGECAST_SUBMIT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the dashboard URL and exit instead of following the analysis
    #[arg(long)]
    pub no_follow: bool,
}

pub async fn run(edge: &EdgeArgs, args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let base = edge.edge_url().context("submit needs --edge")?.to_owned();
    let base = reqwest::Url::parse(&base).context("--edge")?;
    let pool = PoolName::parse(&args.pool).context("--pool")?;
    let id = match &args.analysis_id {
        Some(id) => AnalysisId::parse(id).context("--analysis-id")?,
        None => AnalysisId::parse(&random_id()).expect("hex is an id"),
    };
    let remote = args.input.starts_with("http://") || args.input.starts_with("https://");
    let file = (!remote).then(|| PathBuf::from(&args.input));
    let content_type = match &file {
        Some(path) => Some(content_type(path, args.content_type.as_deref())?),
        None => None,
    };
    let token = match &args.token {
        Some(t) => t.clone(),
        None => edge
            .identity()?
            .token(&[Scope::Submit], &[ALL_ANALYSES], now_s(), SUBMIT_TTL_S)?,
    };
    let http = reqwest::Client::new();
    let input = match (&file, &content_type) {
        (Some(path), Some(ct)) => {
            upload(&http, &base, &id, &token, path, ct).await?;
            UPLOAD_INPUT.to_owned()
        }
        _ => args.input.clone(),
    };
    let mut options = serde_json::Map::new();
    if let Some(fps) = args.fps {
        options.insert("fps".into(), fps.into());
    }
    if let Some(batch) = args.batch_size {
        options.insert("batch_size".into(), batch.into());
    }
    let mut body = json!({
        "analysis_id": id, "pool": pool, "input": input, "options": options,
        "priority": args.priority, "max_attempts": args.max_attempts,
    });
    if let Some(model) = &args.model {
        body["model"] = model.as_str().into();
    }
    let response = http
        .post(base.join("v1/analyses")?)
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("cannot reach the edge at {base}"))?;
    refused("the submission", response).await?;
    eprintln!("submitted analysis {id} to pool {pool}");
    let viewer = edge.identity()?.token(
        &[Scope::Subscribe, Scope::Cancel],
        &[id.as_str()],
        now_s(),
        VIEWER_TTL_S,
    );
    match viewer {
        Ok(viewer) => println!(
            "{}",
            base.join(&format!("analysis?id={id}#token={viewer}"))?
        ),
        Err(_) => println!("{}", base.join(&format!("analysis?id={id}"))?),
    }
    if args.no_follow {
        return Ok(ExitCode::SUCCESS);
    }
    let watch = WatchArgs {
        analysis_id: id.to_string(),
        token: None,
        json: false,
    };
    watch::run(edge, watch).await
}

/// Answers of the edge that are not a success, as "edge refused ...: 413 payload_too_large: ...".
async fn refused(what: &str, response: reqwest::Response) -> anyhow::Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let text = response.text().await.unwrap_or_default();
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => {
            let code = serde_json::to_value(body.error.code)?;
            bail!(
                "the edge refused {what}: {} {}: {}",
                status.as_u16(),
                code.as_str().unwrap_or_default(),
                body.error.message
            )
        }
        Err(_) => bail!(
            "the edge refused {what}: {status}: {}",
            text.chars().take(200).collect::<String>()
        ),
    }
}

/// Streams `path` to `PUT /v1/analyses/{id}/input` and checks the edge's sha256.
async fn upload(
    http: &reqwest::Client,
    base: &reqwest::Url,
    id: &AnalysisId,
    token: &str,
    path: &Path,
    content_type: &str,
) -> anyhow::Result<()> {
    let file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("{}: cannot open it", path.display()))?;
    let len = file.metadata().await?.len();
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new(len)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>11} [{bar:32}] {bytes}/{total_bytes} {bytes_per_sec}",
        )
        .expect("the template is valid")
        .progress_chars("=> "),
    );
    bar.set_prefix("upload");
    let (hashing, shown) = (
        std::sync::Arc::new(std::sync::Mutex::new(Sha256::new())),
        bar.clone(),
    );
    let hasher = hashing.clone();
    let stream = ReaderStream::new(file).inspect_ok(move |chunk| {
        hasher.lock().expect("hasher lock").update(chunk);
        shown.inc(chunk.len() as u64);
    });
    let response = http
        .put(base.join(&format!("v1/analyses/{id}/input"))?)
        .bearer_auth(token)
        .header("content-type", content_type)
        .header("content-length", len)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .with_context(|| format!("cannot upload to the edge at {base}"))?;
    let response = refused("the upload", response).await?;
    bar.finish_and_clear();
    let receipt: UploadReceipt = response.json().await.context("the upload's answer")?;
    let ours =
        base16ct::lower::encode_string(&hashing.lock().expect("hasher lock").clone().finalize());
    if receipt.sha256 != ours {
        bail!(
            "the edge stored other bytes than {} (sha256 {} against {ours}); submit again",
            path.display(),
            receipt.sha256
        );
    }
    eprintln!(
        "uploaded {} ({} bytes, {}, sha256 {})",
        path.display(),
        receipt.bytes,
        receipt.content_type,
        receipt.sha256
    );
    Ok(())
}

/// The content type to upload `path` as: `given`, or one its extension names.
fn content_type(path: &Path, given: Option<&str>) -> anyhow::Result<String> {
    if !path.is_file() {
        bail!(
            "{}: no such file (give a local video or image, or an http(s) URL)",
            path.display()
        );
    }
    if let Some(given) = given {
        return Ok(given.to_owned());
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let known = match ext.as_str() {
        "mp4" | "m4v" => "video/mp4",
        "webm" => "video/webm",
        "mov" => "video/quicktime",
        "mkv" => "video/x-matroska",
        "avi" => "video/x-msvideo",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "bmp" => "image/bmp",
        _ => bail!(
            "{}: cannot tell its content type from the extension {ext:?}; pass --content-type (video/* or image/*)",
            path.display()
        ),
    };
    Ok(known.to_owned())
}

fn random_id() -> String {
    let bytes: [u8; 16] = std::array::from_fn(|_| fastrand::u8(..));
    base16ct::lower::encode_string(&bytes)
}
