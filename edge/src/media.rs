//! The Worker's side of media (docs/protocol.md §15): uploads streamed into the bucket,
//! the leased node's input fetch and artifact reads. Whether each may happen is the
//! analysis object's decision; the bytes go between the client and R2 here, never through
//! an object (but artifacts, which are small and whose event the object appends).

use std::cell::RefCell;
use std::rc::Rc;

use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use stagecast_shared::api::{ApiError, ErrorBody, ErrorCode};
use stagecast_shared::ids::AnalysisId;
use stagecast_shared::media::{
    ArtifactName, ArtifactQuery, InputRecord, MAX_ARTIFACT_BYTES, MediaError, MediaKeys,
    byte_range, check_length, none_match, upload_content_type,
};
use worker::{
    Bucket, Conditional, Env, FixedLengthStream, Headers, HttpMetadata, Method, Range, Request,
    Response, Result,
};

use crate::auth::Principal;
use crate::call::to_analysis;
use crate::clock::now_ms;
use crate::config::Limits;
use crate::digest::{hex, random_hex};
use crate::forward::{Forwarded, Op};
use crate::respond::error_response;

/// The R2 binding (`wrangler.toml`).
pub const BUCKET: &str = "MEDIA";

/// Artifacts are written once, so a browser may keep them; `private` keeps shared caches
/// (which would serve them without the token) out.
const ARTIFACT_CACHE: &str = "private, max-age=86400";

pub fn bucket(env: &Env) -> Result<Bucket> {
    env.bucket(BUCKET)
}

/// A request on one analysis' media, authorized by the Worker.
pub struct MediaRequest {
    pub analysis_id: AnalysisId,
    pub principal: Principal,
}

impl MediaRequest {
    fn keys(&self) -> MediaKeys {
        MediaKeys::new(&self.principal.tenant, self.analysis_id.as_str())
    }

    async fn ask(&self, env: &Env, op: Op, body: Option<&[u8]>) -> Result<Response> {
        let fwd = Forwarded {
            analysis_id: self.analysis_id.clone(),
            principal: self.principal.clone(),
            op,
        };
        to_analysis(env, &fwd, body, false).await
    }
}

fn refuse(e: &impl ApiError) -> Result<Response> {
    error_response(&e.body())
}

fn declared_length(headers: &Headers) -> Result<Option<u64>> {
    Ok(headers
        .get("content-length")?
        .and_then(|v| v.trim().parse::<u64>().ok()))
}

/// `PUT /v1/analyses/{id}/input`: checked, streamed into its own key while hashed, then
/// recorded by the object (or deleted, when the object refuses it).
pub async fn upload(mut req: Request, env: &Env, at: &MediaRequest) -> Result<Response> {
    let limits = match Limits::from_vars(|name| env.var(name).ok().map(|v| v.to_string())) {
        Ok(limits) => limits,
        Err(e) => {
            tracing::error!(error = %e, "edge misconfigured");
            return error_response(&ErrorBody::new(
                ErrorCode::Internal,
                "the edge is misconfigured",
            ));
        }
    };
    let headers = req.headers();
    let content_type = match upload_content_type(headers.get("content-type")?.as_deref()) {
        Ok(ct) => ct,
        Err(e) => return refuse(&e),
    };
    let length = match check_length(declared_length(headers)?, limits.max_upload_bytes, "upload") {
        Ok(n) => n,
        Err(e) => return refuse(&e),
    };
    // a refused upload is never streamed
    let check = at.ask(env, Op::UploadCheck, None).await?;
    if check.status_code() != 200 {
        return Ok(check);
    }
    let upload_id = random_hex()?;
    let key = at.keys().input(&upload_id);
    let hashed = Rc::new(RefCell::new((Sha256::new(), 0u64)));
    let tap = hashed.clone();
    let body = req.stream()?.map(move |chunk| {
        let chunk = chunk?;
        let mut tap = tap.borrow_mut();
        tap.0.update(&chunk);
        tap.1 += chunk.len() as u64;
        Ok(chunk)
    });
    let metadata = HttpMetadata {
        content_type: Some(content_type.clone()),
        ..HttpMetadata::default()
    };
    let stored = bucket(env)?
        .put(&key, FixedLengthStream::wrap(body, length))
        .http_metadata(metadata)
        .execute()
        .await;
    let (hasher, received) = Rc::try_unwrap(hashed)
        .map(RefCell::into_inner)
        .unwrap_or_else(|shared| shared.borrow().clone());
    if let Err(e) = stored {
        // R2 stores nothing of a put that failed
        if received != length {
            tracing::info!(received, length, "upload cut short");
            return error_response(&ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!(
                    "the body ended after {received} of the {length} bytes Content-Length declared; nothing was stored"
                ),
            ));
        }
        tracing::error!(error = %e, "upload not stored");
        return error_response(&ErrorBody::new(
            ErrorCode::Unavailable,
            "the upload could not be stored; try again",
        ));
    }
    // the isolate's linear memory, in the log: it must not grow with the file
    let heap = core::arch::wasm32::memory_size(0) * 65536;
    tracing::info!(bytes = length, wasm_memory_bytes = heap, "upload stored");
    let input = InputRecord {
        upload_id,
        bytes: length,
        sha256: hex(&hasher.finalize()),
        content_type,
        uploaded_ts: now_ms(),
    };
    let answer = at.ask(env, Op::InputStored { input }, None).await?;
    if answer.status_code() != 201 {
        // lost the race with its submission: the input a node reads stays as it was
        bucket(env)?.delete(&key).await?;
    }
    Ok(answer)
}

/// `GET /v1/analyses/{id}/input`: the lease holder's fetch, whole or from a `Range`.
pub async fn input(req: Request, env: &Env, at: &MediaRequest) -> Result<Response> {
    let node = at.principal.sub.clone();
    let mut answer = at.ask(env, Op::InputFor { node }, None).await?;
    if answer.status_code() != 200 {
        return Ok(answer);
    }
    let input: InputRecord = answer.json().await?;
    let headers = req.headers();
    let etag = input.etag();
    // a resume against other bytes gets the whole input again
    let same = headers.get("if-range")?.is_none_or(|v| v.trim() == etag);
    let asked = if same { headers.get("range")? } else { None };
    let range = match byte_range(asked.as_deref(), input.bytes) {
        Ok(range) => range,
        Err(e) => {
            let mut response = refuse(&e)?;
            response
                .headers_mut()
                .set("content-range", &format!("bytes */{}", input.bytes))?;
            return Ok(response);
        }
    };
    let bucket = bucket(env)?;
    let mut get = bucket.get(at.keys().input(&input.upload_id));
    if let Some(r) = &range {
        get = get.range(Range::OffsetWithLength {
            offset: *r.start(),
            length: r.end() - r.start() + 1,
        });
    }
    let Some(object) = get.execute().await? else {
        tracing::error!(upload = %input.upload_id, "recorded input missing from the bucket");
        return refuse(&MediaError::NoInput);
    };
    let out = Headers::new();
    out.set("content-type", &input.content_type)?;
    out.set("etag", &etag)?;
    out.set("accept-ranges", "bytes")?;
    out.set("cache-control", "private, no-store")?;
    let (status, length) = match &range {
        Some(r) => {
            out.set(
                "content-range",
                &format!("bytes {}-{}/{}", r.start(), r.end(), input.bytes),
            )?;
            (206, r.end() - r.start() + 1)
        }
        None => (200, input.bytes),
    };
    out.set("content-length", &length.to_string())?;
    body_response(&req, &object, status, out)
}

/// The object's bytes handed to the runtime to stream (no copy through the Worker); none
/// for `HEAD`.
fn body_response(
    req: &Request,
    object: &worker::Object,
    status: u16,
    headers: Headers,
) -> Result<Response> {
    let response = match object.body() {
        Some(body) if req.method() != Method::Head => Response::from_body(body.response_body()?)?,
        _ => Response::empty()?,
    };
    Ok(response.with_status(status).with_headers(headers))
}

/// `PUT /v1/analyses/{id}/artifacts/{name}`: bounded and checked here, then the object
/// stores it and appends its event.
pub async fn put_artifact(
    mut req: Request,
    env: &Env,
    at: &MediaRequest,
    name: &str,
    pairs: &[(String, String)],
) -> Result<Response> {
    let checked = (|| {
        let name = ArtifactName::parse(name)?;
        let headers = req.headers();
        let content_type = name
            .check_content_type(headers.get("content-type").ok().flatten().as_deref())?
            .to_owned();
        let length = check_length(
            declared_length(headers).ok().flatten(),
            MAX_ARTIFACT_BYTES,
            "artifact",
        )?;
        let query = ArtifactQuery::parse(pairs)?;
        Ok::<_, MediaError>((name, content_type, length, query))
    })();
    let (name, content_type, length, query) = match checked {
        Ok(checked) => checked,
        Err(e) => return refuse(&e),
    };
    let body = req.bytes().await?;
    if body.len() as u64 != length {
        return error_response(&ErrorBody::new(
            ErrorCode::InvalidRequest,
            format!(
                "the body held {} of the {length} bytes Content-Length declared; nothing was stored",
                body.len()
            ),
        ));
    }
    let op = Op::PutArtifact {
        name,
        content_type,
        attempt: query.attempt,
        frame: query.frame,
        kind: query.kind,
    };
    at.ask(env, op, Some(&body)).await
}

/// `GET /v1/analyses/{id}/artifacts/{name}`: straight from the bucket (the key holds the
/// verified tenant), 304 when the browser has it.
pub async fn artifact(req: Request, env: &Env, at: &MediaRequest, name: &str) -> Result<Response> {
    let name = match ArtifactName::parse(name) {
        Ok(name) => name,
        Err(e) => return refuse(&e),
    };
    let if_none_match = req.headers().get("if-none-match")?;
    let not_found = || {
        error_response(&ErrorBody::new(
            ErrorCode::NotFound,
            format!("no artifact {name} for this analysis"),
        ))
    };
    let key = at.keys().artifact(&name);
    let bucket = bucket(env)?;
    let mut get = bucket.get(&key);
    if let Some(tag) = if_none_match.as_deref() {
        // R2 leaves the body out when the tag matches
        let bare = tag
            .trim()
            .trim_start_matches("W/")
            .trim_matches('"')
            .to_owned();
        get = get.only_if(Conditional {
            etag_does_not_match: Some(bare),
            ..Conditional::default()
        });
    }
    let Some(object) = get.execute().await? else {
        return not_found();
    };
    let etag = object.http_etag();
    let headers = Headers::new();
    headers.set("etag", &etag)?;
    headers.set("cache-control", ARTIFACT_CACHE)?;
    headers.set("x-content-type-options", "nosniff")?;
    headers.set("referrer-policy", "no-referrer")?;
    if object.body().is_none() || none_match(if_none_match.as_deref(), &etag) {
        return Ok(Response::empty()?.with_status(304).with_headers(headers));
    }
    let content_type = object
        .http_metadata()
        .content_type
        .unwrap_or_else(|| name.content_type().to_owned());
    headers.set("content-type", &content_type)?;
    headers.set("content-length", &object.size().to_string())?;
    body_response(&req, &object, 200, headers)
}

/// Deletes every object under `prefix` (retention).
pub async fn delete_all(bucket: &Bucket, prefix: &str) -> Result<usize> {
    let mut deleted = 0;
    loop {
        let page = bucket.list().prefix(prefix).execute().await?;
        let keys: Vec<String> = page.objects().iter().map(|o| o.key()).collect();
        if keys.is_empty() {
            return Ok(deleted);
        }
        deleted += keys.len();
        bucket.delete_multiple(keys).await?;
        if !page.truncated() {
            return Ok(deleted);
        }
    }
}
