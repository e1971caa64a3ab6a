//! An analysis' media in its object (docs/protocol.md §15): whether an upload may set the
//! input, which node may read it, and artifacts, stored and announced in order.

use stagecast_shared::api::{ApiError, ErrorBody, ErrorCode};
use stagecast_shared::ids::AnalysisId;
use stagecast_shared::machine::ArtifactCheck;
use stagecast_shared::media::{ArtifactRecord, InputRecord, MediaKeys};
use worker::{HttpMetadata, Request, Response, Result};

use super::AnalysisObject;
use crate::clock::now_ms;
use crate::config::Limits;
use crate::digest::sha256_hex;
use crate::forward::Op;
use crate::media::bucket;
use crate::respond::{error_response, json_response};

/// What to do with an artifact upload, given what is stored.
enum Verdict {
    Store,
    /// The same bytes under the same name: answered as before.
    Same(ArtifactRecord),
    Refused(ErrorBody),
}

impl AnalysisObject {
    fn keys(&self, id: &AnalysisId) -> MediaKeys {
        MediaKeys::new(&self.tenant(), id.as_str())
    }

    pub(super) fn upload_check(&self, id: &AnalysisId) -> Result<Response> {
        match self.with_analysis(id, |a| a.check_upload())? {
            Ok(()) => json_response(&serde_json::json!({}), 200),
            Err(e) => error_response(&e.body()),
        }
    }

    /// Records a stored upload and deletes the one it replaces.
    pub(super) async fn input_stored(
        &self,
        id: &AnalysisId,
        input: InputRecord,
        limits: &Limits,
    ) -> Result<Response> {
        let receipt = input.receipt();
        let replaced = match self.with_analysis(id, |a| a.record_input(input))? {
            Ok(replaced) => replaced,
            Err(e) => return error_response(&e.body()),
        };
        self.commit_state(&[], limits)?;
        // an upload never submitted is deleted a retention period later
        self.schedule(limits, None).await?;
        if let Some(old) = replaced {
            bucket(&self.env)?
                .delete(self.keys(id).input(&old.upload_id))
                .await?;
        }
        json_response(&receipt, 201)
    }

    pub(super) fn input_for(&self, id: &AnalysisId, node: &str) -> Result<Response> {
        match self.with_analysis(id, |a| a.input_for(node).cloned())? {
            Ok(input) => json_response(&input, 200),
            Err(e) => {
                tracing::info!(node, error = %e, "input refused");
                error_response(&e.body())
            }
        }
    }

    /// Stores an artifact in the bucket, then its record and `artifact` event together.
    pub(super) async fn put_artifact(
        &self,
        mut req: Request,
        id: &AnalysisId,
        op: &Op,
        limits: &Limits,
    ) -> Result<Response> {
        let Op::PutArtifact {
            name,
            content_type,
            attempt,
            frame,
            kind,
        } = op
        else {
            unreachable!("put_artifact is only called for Op::PutArtifact");
        };
        let body = req.bytes().await?;
        let record = ArtifactRecord {
            name: name.clone(),
            content_type: content_type.clone(),
            bytes: body.len() as u64,
            sha256: sha256_hex(&body),
            frame: *frame,
            kind: kind.clone(),
        };
        match self.artifact_verdict(id, &record, *attempt)? {
            Verdict::Refused(body) => return error_response(&body),
            Verdict::Same(existing) => return json_response(&existing.receipt(), 200),
            Verdict::Store => {}
        }
        // one upload per name at a time, so the key below is this request's alone
        if !self.artifacts_in_flight.borrow_mut().insert(name.clone()) {
            let body = ErrorBody::new(
                ErrorCode::Unavailable,
                format!("another upload of {name} is in flight; retry"),
            );
            return error_response(&body);
        }
        let stored = self.store_artifact(id, &record, body).await;
        self.artifacts_in_flight.borrow_mut().remove(name);
        if let Err(e) = stored {
            tracing::error!(error = %e, %name, "artifact not stored");
            let body = ErrorBody::new(
                ErrorCode::Unavailable,
                "the artifact could not be stored; try again",
            );
            return error_response(&body);
        }
        // other requests ran while R2 stored it: check again before it counts
        match self.artifact_verdict(id, &record, *attempt)? {
            Verdict::Store => {}
            Verdict::Same(existing) => return json_response(&existing.receipt(), 200),
            Verdict::Refused(body) => {
                bucket(&self.env)?
                    .delete(self.keys(id).artifact(name))
                    .await?;
                return error_response(&body);
            }
        }
        let stored = self.with_analysis(id, |a| a.record_artifact(&record, now_ms()))?;
        // no await between the two writes: they commit together
        self.store().insert_artifact(&record)?;
        self.commit(&[stored], limits)?;
        json_response(&record.receipt(), 201)
    }

    fn artifact_verdict(
        &self,
        id: &AnalysisId,
        record: &ArtifactRecord,
        attempt: Option<u32>,
    ) -> Result<Verdict> {
        let existing = self.store().artifact(&record.name)?;
        let stored_sha = existing.as_ref().map(|e| e.sha256.as_str());
        let check = self.with_analysis(id, |a| {
            a.check_artifact(&record.name, attempt, &record.sha256, stored_sha)
        })?;
        Ok(match (check, existing) {
            (Err(e), _) => Verdict::Refused(e.body()),
            (Ok(ArtifactCheck::Repeat), Some(existing)) => Verdict::Same(existing),
            _ => Verdict::Store,
        })
    }

    async fn store_artifact(
        &self,
        id: &AnalysisId,
        record: &ArtifactRecord,
        body: Vec<u8>,
    ) -> Result<()> {
        let metadata = HttpMetadata {
            content_type: Some(record.content_type.clone()),
            ..HttpMetadata::default()
        };
        bucket(&self.env)?
            .put(self.keys(id).artifact(&record.name), body)
            .http_metadata(metadata)
            .execute()
            .await?;
        Ok(())
    }

    /// Retention: every object of the analysis in the bucket.
    pub(super) async fn delete_media(&self, id: &AnalysisId) -> Result<()> {
        let deleted = crate::media::delete_all(&bucket(&self.env)?, self.keys(id).prefix()).await?;
        tracing::info!(deleted, "media deleted");
        Ok(())
    }
}
