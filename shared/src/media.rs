//! Media at the edge (docs/protocol.md §15): an analysis' uploaded input and its
//! artifacts, kept in R2 under keys built from the verified tenant and the analysis id.
//! Names, content types, sizes, keys, byte ranges and the answers; the decisions that
//! need the analysis' state are [`crate::machine`]'s.

use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::api::{ApiError, ErrorCode};
use crate::ids::{IdError, check_id};

/// The submission's `input` that names the analysis' upload.
pub const UPLOAD_INPUT: &str = "upload";
/// `STAGECAST_MAX_UPLOAD_BYTES` when unset: 100 MiB, the Workers request limit on most plans.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 100 * 1024 * 1024;
/// Largest artifact.
pub const MAX_ARTIFACT_BYTES: u64 = 5 * 1024 * 1024;
/// Artifacts one analysis may hold.
pub const MAX_ARTIFACTS: u32 = 64;
/// The `kind` of a key frame of a partial result, and of the result.
pub const KIND_KEY_FRAME: &str = "key_frame";
pub const KIND_RESULT: &str = "result";

/// Why an upload, an artifact or an input fetch is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MediaError {
    #[error("Content-Length is required (uploads are streamed into storage at a known length)")]
    LengthRequired,
    #[error("{what} of {bytes} bytes is over the {max} byte limit; nothing was stored")]
    TooLarge {
        what: &'static str,
        bytes: u64,
        max: u64,
    },
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("content type {found:?}: {rule}")]
    ContentType { found: String, rule: &'static str },
    #[error("artifact name {name:?}: {rule}")]
    Name { name: String, rule: String },
    #[error("{field}: {rule}")]
    Query { field: &'static str, rule: String },
    #[error("the analysis was submitted: its input can no longer change")]
    AlreadySubmitted,
    #[error(
        "`input` is \"upload\" but nothing was uploaded for this analysis (PUT /v1/analyses/{{id}}/input first)"
    )]
    InputMissing,
    #[error("no input was uploaded for this analysis")]
    NoInput,
    #[error("node {node:?} does not hold this analysis' lease")]
    NotHolder { node: String },
    #[error("the analysis holds {MAX_ARTIFACTS} artifacts, the most it may")]
    TooManyArtifacts,
    #[error("artifact {name:?} exists with other bytes (artifacts are written once)")]
    ArtifactExists { name: String },
    #[error("the analysis has ended: it takes no more artifacts")]
    Finished,
    #[error("range {range:?} is not satisfiable for {size} bytes")]
    Range { range: String, size: u64 },
}

impl ApiError for MediaError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::LengthRequired => ErrorCode::LengthRequired,
            Self::TooLarge { .. } => ErrorCode::PayloadTooLarge,
            Self::Empty { .. }
            | Self::ContentType { .. }
            | Self::Name { .. }
            | Self::Query { .. } => ErrorCode::InvalidMedia,
            Self::AlreadySubmitted => ErrorCode::AlreadySubmitted,
            Self::InputMissing => ErrorCode::InputMissing,
            Self::NoInput => ErrorCode::NotFound,
            Self::NotHolder { .. } => ErrorCode::NotLeaseHolder,
            Self::TooManyArtifacts => ErrorCode::TooManyArtifacts,
            Self::ArtifactExists { .. } => ErrorCode::ArtifactExists,
            Self::Finished => ErrorCode::AnalysisFinished,
            Self::Range { .. } => ErrorCode::RangeNotSatisfiable,
        }
    }
}

/// Checks a declared body length against `max` (`what` names the body in the error).
pub fn check_length(
    declared: Option<u64>,
    max: u64,
    what: &'static str,
) -> Result<u64, MediaError> {
    let bytes = declared.ok_or(MediaError::LengthRequired)?;
    if bytes == 0 {
        return Err(MediaError::Empty { what });
    }
    if bytes > max {
        return Err(MediaError::TooLarge { what, bytes, max });
    }
    Ok(bytes)
}

/// The media type of a `Content-Type` header, lowercased and without parameters.
fn essence(header: &str) -> String {
    header
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// An upload's content type: a video or an image (`video/*`, `image/*`), kept as sent
/// minus parameters.
pub fn upload_content_type(header: Option<&str>) -> Result<String, MediaError> {
    let found = header.map(essence).unwrap_or_default();
    let subtype = found
        .strip_prefix("video/")
        .or_else(|| found.strip_prefix("image/"));
    match subtype {
        Some(sub) if !sub.is_empty() && sub.chars().all(token_char) => Ok(found),
        _ => Err(MediaError::ContentType {
            found,
            rule: "an upload is a video/* or image/* file",
        }),
    }
}

fn token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$&-^_.+".contains(c)
}

/// An artifact's name: an id, a dot and one of the known extensions, which fixes its
/// content type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[cfg_attr(test, derive(ts_rs::TS), ts(type = "string"))]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    schema(pattern = "^[A-Za-z0-9_-]{1,64}\\.(jpg|jpeg|png|webp|json)$")
)]
pub struct ArtifactName(String);

/// Extensions and the content type each one is served with.
const ARTIFACT_TYPES: [(&str, &str); 5] = [
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("png", "image/png"),
    ("webp", "image/webp"),
    ("json", "application/json"),
];

impl ArtifactName {
    pub fn parse(name: &str) -> Result<Self, MediaError> {
        let bad = |rule: String| MediaError::Name {
            name: name.chars().take(80).collect(),
            rule,
        };
        let (stem, ext) = name.rsplit_once('.').ok_or_else(|| {
            bad("must be an id, a dot and an extension (jpg, jpeg, png, webp, json)".into())
        })?;
        check_id(stem).map_err(|e: IdError| {
            bad(format!(
                "{e} (the part before the extension is an id: [A-Za-z0-9_-], at most 64)"
            ))
        })?;
        if !ARTIFACT_TYPES.iter().any(|(known, _)| *known == ext) {
            return Err(bad(format!(
                "extension {ext:?} is not one of jpg, jpeg, png, webp, json"
            )));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The content type its extension stands for.
    pub fn content_type(&self) -> &'static str {
        let ext = self.0.rsplit_once('.').map(|(_, e)| e).unwrap_or_default();
        ARTIFACT_TYPES
            .iter()
            .find(|(known, _)| *known == ext)
            .map_or("application/octet-stream", |(_, ct)| ct)
    }

    /// Checks the request's `Content-Type` against the name's.
    pub fn check_content_type(&self, header: Option<&str>) -> Result<&'static str, MediaError> {
        let want = self.content_type();
        let found = header.map(essence).unwrap_or_default();
        if found == want {
            Ok(want)
        } else {
            Err(MediaError::ContentType {
                found,
                rule: "must match the artifact name's extension (jpg/jpeg: image/jpeg, png: image/png, webp: image/webp, json: application/json)",
            })
        }
    }
}

impl TryFrom<String> for ArtifactName {
    type Error = MediaError;
    fn try_from(s: String) -> Result<Self, MediaError> {
        Self::parse(&s)
    }
}

impl From<ArtifactName> for String {
    fn from(n: ArtifactName) -> String {
        n.0
    }
}

impl std::fmt::Display for ArtifactName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an artifact upload says of itself in its query: `frame` and `kind`, both optional,
/// and the lease's `attempt` (required for a submitted analysis, as on publishes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArtifactQuery {
    pub attempt: Option<u32>,
    pub frame: Option<u64>,
    pub kind: Option<String>,
}

impl ArtifactQuery {
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, MediaError> {
        let mut query = Self::default();
        for (key, value) in pairs {
            let number = |field: &'static str| {
                value.parse::<u64>().map_err(|_| MediaError::Query {
                    field,
                    rule: format!("must be a non-negative integer, got {value:?}"),
                })
            };
            match key.as_str() {
                "attempt" => {
                    let n = number("attempt")?;
                    query.attempt = Some(u32::try_from(n).map_err(|_| MediaError::Query {
                        field: "attempt",
                        rule: format!("must be at most {}", u32::MAX),
                    })?);
                }
                "frame" => query.frame = Some(number("frame")?),
                "kind" => {
                    check_id(value).map_err(|e| MediaError::Query {
                        field: "kind",
                        rule: e.to_string(),
                    })?;
                    query.kind = Some(value.clone());
                }
                _ => {}
            }
        }
        Ok(query)
    }
}

/// Where an analysis' objects live in the bucket. Built from the verified tenant and the
/// analysis id (neither may hold `/`), never from the URL, so one tenant's keys are out of
/// another's reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaKeys {
    prefix: String,
}

impl MediaKeys {
    pub fn new(tenant: &str, analysis_id: &str) -> Self {
        Self {
            prefix: format!("{tenant}/{analysis_id}/"),
        }
    }

    /// Everything of the analysis starts with this (retention deletes it all).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// An upload: each one its own key, so one that loses the race with a submission
    /// never replaces the input a node is reading.
    pub fn input(&self, upload_id: &str) -> String {
        format!("{}input/{upload_id}", self.prefix)
    }

    pub fn artifact(&self, name: &ArtifactName) -> String {
        format!("{}artifacts/{name}", self.prefix)
    }
}

/// An uploaded input, as the analysis records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputRecord {
    pub upload_id: String,
    pub bytes: u64,
    /// Hex; the input's `ETag` is this, quoted.
    pub sha256: String,
    pub content_type: String,
    /// When it was stored (ms): an input never submitted is deleted a retention period later.
    pub uploaded_ts: i64,
}

impl InputRecord {
    /// The strong `ETag` the input is served with.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.sha256)
    }

    pub fn receipt(&self) -> UploadReceipt {
        UploadReceipt {
            bytes: self.bytes,
            sha256: self.sha256.clone(),
            content_type: self.content_type.clone(),
        }
    }
}

/// 201 answer to `PUT /v1/analyses/{id}/input`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UploadReceipt {
    pub bytes: u64,
    pub sha256: String,
    pub content_type: String,
}

/// An artifact as stored: its event's fields and its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    pub name: ArtifactName,
    pub content_type: String,
    pub bytes: u64,
    pub sha256: String,
    pub frame: Option<u64>,
    pub kind: Option<String>,
}

/// 201 (stored) or 200 (the same bytes again) answer to `PUT .../artifacts/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ArtifactReceipt {
    pub name: ArtifactName,
    pub bytes: u64,
    pub sha256: String,
    pub content_type: String,
}

impl ArtifactRecord {
    pub fn receipt(&self) -> ArtifactReceipt {
        ArtifactReceipt {
            name: self.name.clone(),
            bytes: self.bytes,
            sha256: self.sha256.clone(),
            content_type: self.content_type.clone(),
        }
    }
}

/// The part of an object a `Range` header asks for: `None` for the whole object (no
/// header), else one satisfiable range (several ranges are answered with the first).
pub fn byte_range(
    header: Option<&str>,
    size: u64,
) -> Result<Option<RangeInclusive<u64>>, MediaError> {
    let Some(header) = header else {
        return Ok(None);
    };
    let unsatisfiable = || MediaError::Range {
        range: header.chars().take(80).collect(),
        size,
    };
    let ranges = http_range_header::parse_range_header(header)
        .map_err(|_| unsatisfiable())?
        .validate(size)
        .map_err(|_| unsatisfiable())?;
    Ok(ranges.into_iter().next())
}

/// Whether an `If-None-Match` header matches `etag` (weak comparison, `*` matches all).
pub fn none_match(header: Option<&str>, etag: &str) -> bool {
    let bare = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    header.is_some_and(|h| {
        h.split(',')
            .any(|t| t.trim() == "*" || bare(t) == bare(etag))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_names_fix_their_content_type() {
        let n = ArtifactName::parse("frame-000120.jpg").unwrap();
        assert_eq!(n.content_type(), "image/jpeg");
        assert_eq!(n.check_content_type(Some("image/jpeg")), Ok("image/jpeg"));
        assert!(n.check_content_type(Some("image/png")).is_err());
        assert!(n.check_content_type(None).is_err());
        assert_eq!(
            ArtifactName::parse("report.json").unwrap().content_type(),
            "application/json"
        );
        for bad in [
            "x", "../x.jpg", "a b.png", "x.exe", ".jpg", "x.JPG", "a/b.png",
        ] {
            let err = ArtifactName::parse(bad).unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidMedia, "{bad}");
        }
    }

    #[test]
    fn uploads_are_videos_or_images() {
        assert_eq!(
            upload_content_type(Some("Video/MP4; codecs=avc1")).unwrap(),
            "video/mp4"
        );
        assert_eq!(upload_content_type(Some("image/png")).unwrap(), "image/png");
        for bad in [
            None,
            Some("text/html"),
            Some("video/"),
            Some("application/json"),
        ] {
            assert_eq!(
                upload_content_type(bad).unwrap_err().code(),
                ErrorCode::InvalidMedia
            );
        }
    }

    #[test]
    fn lengths_are_declared_and_capped() {
        assert_eq!(check_length(Some(10), 10, "upload"), Ok(10));
        assert_eq!(
            check_length(Some(0), 10, "upload").unwrap_err().status(),
            400
        );
        assert_eq!(check_length(None, 10, "upload").unwrap_err().status(), 411);
        let err = check_length(Some(11), 10, "upload").unwrap_err();
        assert_eq!(err.status(), 413);
        assert!(err.to_string().contains("nothing was stored"), "{err}");
    }

    #[test]
    fn keys_start_with_tenant_and_analysis() {
        let keys = MediaKeys::new("acme", "a1");
        let name = ArtifactName::parse("k.jpg").unwrap();
        assert_eq!(keys.input("u1"), "acme/a1/input/u1");
        assert_eq!(keys.artifact(&name), "acme/a1/artifacts/k.jpg");
        assert!(keys.artifact(&name).starts_with(keys.prefix()));
        assert!(!"acme/a10/input/u".starts_with(keys.prefix()));
    }

    #[test]
    fn ranges_resume_and_refuse() {
        assert_eq!(byte_range(None, 100), Ok(None));
        assert_eq!(byte_range(Some("bytes=50-"), 100), Ok(Some(50..=99)));
        assert_eq!(byte_range(Some("bytes=0-9"), 100), Ok(Some(0..=9)));
        assert_eq!(byte_range(Some("bytes=-10"), 100), Ok(Some(90..=99)));
        for bad in ["bytes=100-", "bytes=x", "items=0-1"] {
            assert_eq!(
                byte_range(Some(bad), 100).unwrap_err().status(),
                416,
                "{bad}"
            );
        }
    }

    #[test]
    fn artifact_queries_are_checked() {
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let q = ArtifactQuery::parse(&pairs(&[
            ("attempt", "2"),
            ("frame", "30"),
            ("kind", "key_frame"),
        ]))
        .unwrap();
        assert_eq!(
            (q.attempt, q.frame, q.kind.as_deref()),
            (Some(2), Some(30), Some("key_frame"))
        );
        assert!(ArtifactQuery::parse(&pairs(&[("frame", "-1")])).is_err());
        assert!(ArtifactQuery::parse(&pairs(&[("kind", "a b")])).is_err());
        assert!(ArtifactQuery::parse(&pairs(&[("attempt", "99999999999")])).is_err());
    }

    #[test]
    fn if_none_match_compares_weakly() {
        assert!(none_match(Some("\"abc\""), "\"abc\""));
        assert!(none_match(Some("W/\"abc\", \"x\""), "\"abc\""));
        assert!(none_match(Some("*"), "\"abc\""));
        assert!(!none_match(Some("\"abd\""), "\"abc\""));
        assert!(!none_match(None, "\"abc\""));
    }
}
