//! Bounds on published events, and parsing of a publish body.
//!
//! A violation names the field path (`events[3].regions[7].w`) and the rule it breaks.
//! These checks are stateless; whether an event is allowed *now* is the state machine's
//! business ([`crate::machine`]).

use std::collections::HashSet;

use thiserror::Error;

use crate::api::{ApiError, ErrorCode, PublishRequest};
use crate::event::{AnalysisResult, Event, EventKind, Metrics, Region, Units};
use crate::ids::{IdError, check_id};
use crate::limits::*;

/// A rule a field breaks.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum Rule {
    #[error("{0} (ids are 1 to {MAX_ID_LEN} characters of [A-Za-z0-9_-])")]
    Id(IdError),
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} characters, got {len}")]
    TooLong { max: usize, len: usize },
    #[error("must hold at least {min} items")]
    TooFew { min: usize },
    #[error("must hold at most {max} items, got {len}")]
    TooMany { max: usize, len: usize },
    #[error("must be a finite number")]
    NotFinite,
    #[error("must be >= 0, got {value}")]
    Negative { value: f64 },
    #[error("must be in {min}..={max}, got {value}")]
    OutOfRange { min: f64, max: f64, value: f64 },
    #[error("must be > 0 and <= {max}, got {value}")]
    NotPositive { max: f64, value: f64 },
    #[error("must be an absolute http:// or https:// URL with a host")]
    NotHttpUrl,
    #[error("stage name {name:?} appears twice")]
    DuplicateStage { name: String },
    #[error("must not exceed {other} ({limit}), got {value}")]
    Exceeds {
        other: &'static str,
        limit: u64,
        value: u64,
    },
}

/// A field that breaks a rule.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("{path}: {rule}")]
pub struct ValidationError {
    /// E.g. `events[3].regions[7].w`.
    pub path: String,
    pub rule: Rule,
    /// The index of the offending event, when the error is inside one.
    pub index: Option<usize>,
}

impl ApiError for ValidationError {
    fn code(&self) -> ErrorCode {
        ErrorCode::InvalidEvent
    }

    fn index(&self) -> Option<u32> {
        self.index.and_then(|i| u32::try_from(i).ok())
    }
}

/// Why a publish body was refused: 413 for size, 400 otherwise.
#[derive(Debug, Error)]
pub enum PublishError {
    #[error("body of {len} bytes is over the {max} byte limit", max = MAX_BODY_BYTES)]
    TooLarge { len: usize },
    /// Not JSON, a missing or mistyped field, or an unknown event `type`.
    #[error("body is not a valid publish request: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

impl ApiError for PublishError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::TooLarge { .. } => ErrorCode::PayloadTooLarge,
            Self::Json(_) => ErrorCode::InvalidJson,
            Self::Invalid(_) => ErrorCode::InvalidEvent,
        }
    }

    fn index(&self) -> Option<u32> {
        match self {
            Self::Invalid(e) => e.index(),
            _ => None,
        }
    }
}

/// Parses and checks a publish body: size, then JSON, then every bound.
pub fn parse_publish_body(body: &[u8]) -> Result<PublishRequest, PublishError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(PublishError::TooLarge { len: body.len() });
    }
    let request: PublishRequest = serde_json::from_slice(body)?;
    validate_request(&request)?;
    Ok(request)
}

/// Checks the batch size (1..=[`MAX_EVENTS_PER_BATCH`]) and every event.
pub fn validate_request(request: &PublishRequest) -> Result<(), ValidationError> {
    let len = request.events.len();
    let rule = if len == 0 {
        Some(Rule::TooFew { min: 1 })
    } else if len > MAX_EVENTS_PER_BATCH {
        Some(Rule::TooMany {
            max: MAX_EVENTS_PER_BATCH,
            len,
        })
    } else {
        None
    };
    if let Some(rule) = rule {
        return Err(ValidationError {
            path: "events".into(),
            rule,
            index: None,
        });
    }
    request
        .events
        .iter()
        .enumerate()
        .try_for_each(|(index, event)| validate_event(event, index))
}

/// Checks one event's bounds; `index` is its place in the batch (for the path).
pub fn validate_event(event: &Event, index: usize) -> Result<(), ValidationError> {
    Checker { index }.event(event)
}

/// Builds paths only when something fails.
struct Checker {
    index: usize,
}

impl Checker {
    fn fail(&self, field: &str, rule: Rule) -> ValidationError {
        ValidationError {
            path: format!("events[{}]{field}", self.index),
            rule,
            index: Some(self.index),
        }
    }

    fn event(&self, event: &Event) -> Result<(), ValidationError> {
        check_id(&event.id).map_err(|e| self.fail(".id", Rule::Id(e)))?;
        if let Some(ts) = event.ts {
            self.range(".ts", ts as f64, 0.0, MAX_TS_MS as f64)?;
        }
        match &event.kind {
            EventKind::Started {
                stages,
                total_frames: _,
                model,
                node,
            } => {
                self.count(".stages", stages.len(), 1, MAX_STAGES)?;
                let mut names = HashSet::with_capacity(stages.len());
                for (i, stage) in stages.iter().enumerate() {
                    self.name(&format!(".stages[{i}].name"), &stage.name, MAX_NAME_LEN)?;
                    let w = stage.weight;
                    if !(w.is_finite() && w > 0.0 && w <= MAX_STAGE_WEIGHT) {
                        let rule = Rule::NotPositive {
                            max: MAX_STAGE_WEIGHT,
                            value: w,
                        };
                        return Err(self.fail(&format!(".stages[{i}].weight"), rule));
                    }
                    if !names.insert(stage.name.as_str()) {
                        let rule = Rule::DuplicateStage {
                            name: stage.name.clone(),
                        };
                        return Err(self.fail(&format!(".stages[{i}].name"), rule));
                    }
                }
                self.opt_text(".model", model.as_deref(), MAX_NAME_LEN)?;
                self.opt_text(".node", node.as_deref(), MAX_NAME_LEN)
            }
            EventKind::Progress {
                stage,
                stage_progress,
                frames_done,
                frames_total,
                message,
            } => {
                self.name(".stage", stage, MAX_NAME_LEN)?;
                self.range(".stage_progress", *stage_progress, 0.0, 1.0)?;
                if let (Some(done), Some(total)) = (frames_done, frames_total) {
                    self.at_most(".frames_done", *done, "frames_total", *total)?;
                }
                self.opt_text(".message", message.as_deref(), MAX_MESSAGE_LEN)
            }
            EventKind::PartialResult { regions, scores } => {
                self.regions(".regions", regions)?;
                let scores = scores.as_deref().unwrap_or_default();
                self.count(".scores", scores.len(), 0, MAX_SCORES_PER_EVENT)?;
                for (i, s) in scores.iter().enumerate() {
                    self.range(&format!(".scores[{i}].score"), s.score, 0.0, 1.0)?;
                }
                Ok(())
            }
            EventKind::Completed { result } => self.result(result),
            EventKind::Failed { error } => {
                self.name(".error.code", &error.code, MAX_CODE_LEN)?;
                self.text(".error.message", &error.message, MAX_MESSAGE_LEN)
            }
            EventKind::Cancelled { reason } => {
                self.opt_text(".reason", reason.as_deref(), MAX_MESSAGE_LEN)
            }
            EventKind::Heartbeat { metrics } => match metrics {
                Some(metrics) => self.metrics(metrics),
                None => Ok(()),
            },
        }
    }

    fn result(&self, result: &AnalysisResult) -> Result<(), ValidationError> {
        self.range(".result.score", result.score, 0.0, 1.0)?;
        self.at_most(
            ".result.frames_processed",
            result.frames_processed,
            "total_frames",
            result.total_frames,
        )?;
        self.regions(".result.regions", &result.regions)?;
        for (field, side) in [
            (".result.frame_width", result.frame_width),
            (".result.frame_height", result.frame_height),
        ] {
            if let Some(side) = side {
                self.range(field, side as f64, 1.0, MAX_FRAME_SIDE as f64)?;
            }
        }
        self.opt_text(
            ".result.summary",
            result.summary.as_deref(),
            MAX_SUMMARY_LEN,
        )
    }

    fn regions(&self, field: &str, regions: &[Region]) -> Result<(), ValidationError> {
        self.count(field, regions.len(), 0, MAX_REGIONS_PER_EVENT)?;
        for (i, region) in regions.iter().enumerate() {
            let normalized = region.units == Some(Units::Normalized);
            for (name, value) in [
                ("x", region.x),
                ("y", region.y),
                ("w", region.w),
                ("h", region.h),
            ] {
                let path = format!("{field}[{i}].{name}");
                if normalized {
                    self.range(&path, value, 0.0, 1.0)?;
                } else {
                    self.non_negative(&path, value)?;
                }
            }
            self.range(&format!("{field}[{i}].score"), region.score, 0.0, 1.0)?;
            self.opt_text(
                &format!("{field}[{i}].label"),
                region.label.as_deref(),
                MAX_LABEL_LEN,
            )?;
            let points = region.points.as_deref().unwrap_or_default();
            let path = format!("{field}[{i}].points");
            self.count(&path, points.len(), 0, MAX_POINTS_PER_REGION)?;
            for (j, point) in points.iter().enumerate() {
                for value in point {
                    if normalized {
                        self.range(&format!("{path}[{j}]"), *value, 0.0, 1.0)?;
                    } else {
                        self.non_negative(&format!("{path}[{j}]"), *value)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn metrics(&self, metrics: &Metrics) -> Result<(), ValidationError> {
        for (name, value) in [
            (".metrics.gpu_util", metrics.gpu_util),
            (".metrics.cpu_util", metrics.cpu_util),
        ] {
            if let Some(value) = value {
                self.range(name, value, 0.0, 1.0)?;
            }
        }
        if let (Some(used), Some(total)) = (metrics.gpu_mem_used_bytes, metrics.gpu_mem_total_bytes)
        {
            self.at_most(
                ".metrics.gpu_mem_used_bytes",
                used,
                "gpu_mem_total_bytes",
                total,
            )?;
        }
        Ok(())
    }

    fn count(
        &self,
        field: &str,
        len: usize,
        min: usize,
        max: usize,
    ) -> Result<(), ValidationError> {
        if len < min {
            return Err(self.fail(field, Rule::TooFew { min }));
        }
        if len > max {
            return Err(self.fail(field, Rule::TooMany { max, len }));
        }
        Ok(())
    }

    /// A name or code: non-empty text.
    fn name(&self, field: &str, value: &str, max: usize) -> Result<(), ValidationError> {
        if value.is_empty() {
            return Err(self.fail(field, Rule::Empty));
        }
        self.text(field, value, max)
    }

    fn text(&self, field: &str, value: &str, max: usize) -> Result<(), ValidationError> {
        // Byte length bounds the char count from above: skip counting short strings.
        if value.len() > max {
            let len = value.chars().count();
            if len > max {
                return Err(self.fail(field, Rule::TooLong { max, len }));
            }
        }
        Ok(())
    }

    fn opt_text(
        &self,
        field: &str,
        value: Option<&str>,
        max: usize,
    ) -> Result<(), ValidationError> {
        value.map_or(Ok(()), |v| self.text(field, v, max))
    }

    fn finite(&self, field: &str, value: f64) -> Result<(), ValidationError> {
        if value.is_finite() {
            Ok(())
        } else {
            Err(self.fail(field, Rule::NotFinite))
        }
    }

    fn non_negative(&self, field: &str, value: f64) -> Result<(), ValidationError> {
        self.finite(field, value)?;
        if value < 0.0 {
            return Err(self.fail(field, Rule::Negative { value }));
        }
        Ok(())
    }

    fn range(&self, field: &str, value: f64, min: f64, max: f64) -> Result<(), ValidationError> {
        self.finite(field, value)?;
        if !(min..=max).contains(&value) {
            return Err(self.fail(field, Rule::OutOfRange { min, max, value }));
        }
        Ok(())
    }

    fn at_most(
        &self,
        field: &str,
        value: u64,
        other: &'static str,
        limit: u64,
    ) -> Result<(), ValidationError> {
        if value > limit {
            return Err(self.fail(
                field,
                Rule::Exceeds {
                    other,
                    limit,
                    value,
                },
            ));
        }
        Ok(())
    }
}
