//! What the two OpenAPI documents (`docs/openapi/edge.json` and `node.json`, written by the
//! edge's and the node's tests) share: the bearer scheme, the error answers of the
//! contract, and the check that a committed document is the one the code generates.

use std::collections::BTreeMap;
use std::path::Path;

use utoipa::ToSchema;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, Response};

use crate::api::{ErrorBody, ErrorCode};

/// The name of the `Authorization: Bearer <JWT>` scheme in both documents.
pub const BEARER: &str = "bearer";

/// The token's refusals (docs/protocol.md §3); a route with an analysis in its URL adds
/// `analysis_not_granted`.
pub const TOKEN_ERRORS: [ErrorCode; 4] = [
    ErrorCode::MissingToken,
    ErrorCode::InvalidToken,
    ErrorCode::TokenExpired,
    ErrorCode::InsufficientScope,
];

/// `Authorization: Bearer <JWT>`.
pub fn bearer_scheme(description: &str) -> SecurityScheme {
    SecurityScheme::Http(
        HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT")
            .description(Some(description))
            .build(),
    )
}

/// The wire name of a code, e.g. `invalid_json`.
pub fn code_name(code: ErrorCode) -> String {
    match serde_json::to_value(code) {
        Ok(serde_json::Value::String(name)) => name,
        other => unreachable!("an error code serializes as a string, got {other:?}"),
    }
}

/// The error answers of an operation, one per status (from `ErrorCode::status`), each an
/// `ErrorBody` whose description names the codes it may carry.
pub fn error_responses(codes: &[ErrorCode]) -> BTreeMap<String, Response> {
    let mut by_status: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for &code in codes {
        let names = by_status.entry(code.status()).or_default();
        let name = format!("`{}`", code_name(code));
        if !names.contains(&name) {
            names.push(name);
        }
    }
    by_status
        .into_iter()
        .map(|(status, names)| {
            let mut response = ResponseBuilder::new()
                .description(format!(
                    "Refused: {} (docs/protocol.md §10).",
                    names.join(", ")
                ))
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                        .build(),
                );
            if matches!(status, 429 | 503) {
                response = response.header("Retry-After", retry_after());
            }
            (status.to_string(), response.build())
        })
        .collect()
}

fn retry_after() -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1)),
        ))
        .description(Some("Whole seconds to wait before trying again."))
        .build()
}

/// A document as committed: pretty JSON and a trailing newline.
pub fn committed_json(document: &OpenApi) -> serde_json::Result<String> {
    Ok(document.to_pretty_json()? + "\n")
}

/// Why a committed generated file does not match its generator.
#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    #[error(
        "{path} is out of date with the Rust types.\nRegenerate it with: STAGECAST_BLESS=1 {regenerate}"
    )]
    OutOfDate { path: String, regenerate: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// The committed `path` must hold `generated`; with `STAGECAST_BLESS` set it is written
/// instead. `regenerate` is the test command that does it.
pub fn check_committed(path: &Path, generated: &str, regenerate: &str) -> Result<(), DriftError> {
    if std::env::var_os("STAGECAST_BLESS").is_some() {
        return std::fs::write(path, generated).map_err(|source| DriftError::Write {
            path: path.display().to_string(),
            source,
        });
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    if committed == generated {
        Ok(())
    } else {
        Err(DriftError::OutOfDate {
            path: path.display().to_string(),
            regenerate: regenerate.to_owned(),
        })
    }
}
