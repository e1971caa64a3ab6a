//! What a caller submits (`POST /v1/analyses`) and what a node is leased.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::api::{ApiError, ErrorCode};
use crate::ids::{AnalysisId, PoolName, check_id};
use crate::limits::{MAX_BODY_BYTES, MAX_INPUT_URL_LEN};
use crate::snapshot::Status;
use crate::validate::{Rule, ValidationError};

/// Highest `priority` (0 is the default; higher goes first).
pub const MAX_PRIORITY: u8 = 9;
/// Highest `max_attempts`.
pub const MAX_ATTEMPTS: u8 = 10;
/// `max_attempts` when the submission leaves it out.
pub const DEFAULT_MAX_ATTEMPTS: u8 = 3;
/// Highest `options.fps` and `options.batch_size`.
pub const MAX_FPS: f64 = 120.0;
pub const MAX_BATCH_SIZE: u32 = 256;

/// The work itself, as the node gets it in a lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(test, ts(optional_fields))]
pub struct Job {
    /// An http(s) URL, which the node treats as untrusted, or `upload`: the analysis'
    /// uploaded input, fetched from the edge.
    pub input: String,
    /// The model to run; a node's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default)]
    pub options: JobOptions,
}

/// Pipeline knobs a caller may set; the node's configuration fills the rest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(test, ts(optional_fields))]
pub struct JobOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fps: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
}

/// `POST /v1/analyses` body, checked by [`parse_submit_body`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(test, ts(optional_fields))]
pub struct SubmitRequest {
    /// The edge picks one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis_id: Option<String>,
    /// `default` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// An http(s) URL, or `upload` once `PUT /v1/analyses/{id}/input` stored one.
    pub input: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default)]
    pub options: JobOptions,
    /// 0..=9, higher first.
    #[serde(default)]
    pub priority: u8,
    /// 1..=10: how many attempts may be lost to node loss before the analysis fails.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u8,
}

fn default_max_attempts() -> u8 {
    DEFAULT_MAX_ATTEMPTS
}

/// A submission as the pool keeps it: everything that makes two submissions "the same".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    pub job: Job,
    pub priority: u8,
    pub max_attempts: u8,
}

/// A checked submission, as [`parse_submit_body`] returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct Submit {
    pub analysis_id: Option<AnalysisId>,
    pub pool: PoolName,
    pub submission: Submission,
}

/// 202 (queued now) or 200 (the same submission again) answer to `POST /v1/analyses`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(test, ts(optional_fields))]
pub struct SubmitResponse {
    pub analysis_id: AnalysisId,
    pub pool: PoolName,
    pub status: Status,
    /// While queued: 1 = next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<u32>,
}

/// Why a submission was refused: 413 for size, 400 otherwise.
#[derive(Debug, Error)]
pub enum SubmitError {
    #[error("body of {len} bytes is over the {max} byte limit", max = MAX_BODY_BYTES)]
    TooLarge { len: usize },
    /// Not JSON, a missing, mistyped or unknown field (the message names its path).
    #[error("body is not a valid submission: {0}")]
    Json(#[from] serde_path_to_error::Error<serde_json::Error>),
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

impl ApiError for SubmitError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::TooLarge { .. } => ErrorCode::PayloadTooLarge,
            Self::Json(_) => ErrorCode::InvalidJson,
            Self::Invalid(e) if e.path == "pool" => ErrorCode::InvalidPoolName,
            Self::Invalid(e) if e.path == "analysis_id" => ErrorCode::InvalidAnalysisId,
            Self::Invalid(_) => ErrorCode::InvalidRequest,
        }
    }
}

/// Parses and checks a submission: size, then JSON (ids and pool names included), then
/// every bound.
pub fn parse_submit_body(body: &[u8]) -> Result<Submit, SubmitError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(SubmitError::TooLarge { len: body.len() });
    }
    let request: SubmitRequest =
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(body))?;
    validate_submission(&request)?;
    let analysis_id = request
        .analysis_id
        .as_deref()
        .map(AnalysisId::parse)
        .transpose()
        .map_err(|e| invalid("analysis_id", Rule::Id(e)))?;
    let pool = match request.pool.as_deref() {
        Some(pool) => PoolName::parse(pool).map_err(|e| invalid("pool", Rule::Id(e)))?,
        None => PoolName::default_pool(),
    };
    Ok(Submit {
        analysis_id,
        pool,
        submission: Submission {
            job: Job {
                input: request.input,
                model: request.model,
                options: request.options,
            },
            priority: request.priority,
            max_attempts: request.max_attempts,
        },
    })
}

fn invalid(path: &str, rule: Rule) -> ValidationError {
    ValidationError {
        path: path.to_owned(),
        rule,
        index: None,
    }
}

fn validate_submission(request: &SubmitRequest) -> Result<(), ValidationError> {
    validate_input(&request.input)?;
    if let Some(model) = &request.model {
        check_id(model).map_err(|e| invalid("model", Rule::Id(e)))?;
    }
    if let Some(fps) = request.options.fps {
        if !fps.is_finite() {
            return Err(invalid("options.fps", Rule::NotFinite));
        }
        if !(fps > 0.0 && fps <= MAX_FPS) {
            let rule = Rule::NotPositive {
                max: MAX_FPS,
                value: fps,
            };
            return Err(invalid("options.fps", rule));
        }
    }
    if let Some(size) = request.options.batch_size
        && !(1..=MAX_BATCH_SIZE).contains(&size)
    {
        let rule = Rule::OutOfRange {
            min: 1.0,
            max: f64::from(MAX_BATCH_SIZE),
            value: f64::from(size),
        };
        return Err(invalid("options.batch_size", rule));
    }
    if request.priority > MAX_PRIORITY {
        let rule = Rule::OutOfRange {
            min: 0.0,
            max: f64::from(MAX_PRIORITY),
            value: f64::from(request.priority),
        };
        return Err(invalid("priority", rule));
    }
    if !(1..=MAX_ATTEMPTS).contains(&request.max_attempts) {
        let rule = Rule::OutOfRange {
            min: 1.0,
            max: f64::from(MAX_ATTEMPTS),
            value: f64::from(request.max_attempts),
        };
        return Err(invalid("max_attempts", rule));
    }
    Ok(())
}

/// An absolute http(s) URL with a host, no longer than [`MAX_INPUT_URL_LEN`], or
/// `upload` (the analysis' uploaded input). Whether a URL's host may be fetched is the
/// node's decision (it resolves the name).
fn validate_input(input: &str) -> Result<(), ValidationError> {
    if input == crate::media::UPLOAD_INPUT {
        return Ok(());
    }
    let len = input.chars().count();
    if len > MAX_INPUT_URL_LEN {
        let rule = Rule::TooLong {
            max: MAX_INPUT_URL_LEN,
            len,
        };
        return Err(invalid("input", rule));
    }
    let rest = input
        .strip_prefix("https://")
        .or_else(|| input.strip_prefix("http://"));
    let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or_default());
    match host {
        Some(host) if !host.is_empty() && !input.chars().any(char::is_whitespace) => Ok(()),
        _ => Err(invalid("input", Rule::NotHttpUrl)),
    }
}
