//! An analysis' media (docs/protocol.md §15): its uploaded input, which may change only
//! until it is submitted and is read only by the node holding its lease, and its
//! artifacts, written once each, at most [`MAX_ARTIFACTS`], while it runs.

use thiserror::Error;

use super::{Analysis, StaleAttempt};
use crate::api::{ApiError, ErrorCode};
use crate::dispatch::Job;
use crate::media::{
    ArtifactName, ArtifactRecord, InputRecord, MAX_ARTIFACTS, MediaError, UPLOAD_INPUT,
};
use crate::stored::{EdgeEventKind, StoredEvent};

/// Why an artifact is refused: its own fault, or a stale lease.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ArtifactRefused {
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error(transparent)]
    Stale(#[from] StaleAttempt),
}

impl ApiError for ArtifactRefused {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Media(e) => e.code(),
            Self::Stale(e) => e.code(),
        }
    }
}

/// What to do with an artifact that passed the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactCheck {
    /// Store it and append its event.
    New,
    /// The same bytes under the same name again (a retried upload): answer as before.
    Repeat,
}

impl Analysis {
    /// Whether an upload may (still) set the input: not once submitted or publishing.
    pub fn check_upload(&self) -> Result<(), MediaError> {
        if self.dispatch.is_some() || self.last_seq > 0 {
            return Err(MediaError::AlreadySubmitted);
        }
        Ok(())
    }

    /// Records a stored upload; the input it replaces, if any, is returned for deletion.
    pub fn record_input(&mut self, input: InputRecord) -> Result<Option<InputRecord>, MediaError> {
        self.check_upload()?;
        Ok(self.input.replace(input))
    }

    pub fn input(&self) -> Option<&InputRecord> {
        self.input.as_ref()
    }

    /// A submission of `job` may name the upload only once there is one.
    pub fn check_submitted_input(&self, job: &Job) -> Result<(), MediaError> {
        if job.input == UPLOAD_INPUT && self.input.is_none() {
            return Err(MediaError::InputMissing);
        }
        Ok(())
    }

    /// The input, for node `node`: only the holder of the current lease reads it.
    pub fn input_for(&self, node: &str) -> Result<&InputRecord, MediaError> {
        let input = self.input.as_ref().ok_or(MediaError::NoInput)?;
        let holds = self
            .dispatch
            .as_ref()
            .and_then(|d| d.node.as_ref())
            .is_some_and(|holder| holder.as_str() == node);
        if !holds || self.status.is_terminal() {
            return Err(MediaError::NotHolder {
                node: node.to_owned(),
            });
        }
        Ok(input)
    }

    /// Checks an artifact upload of `attempt` whose bytes hash to `sha256`; `existing` is
    /// the hash stored under its name, if any.
    pub fn check_artifact(
        &self,
        name: &ArtifactName,
        attempt: Option<u32>,
        sha256: &str,
        existing: Option<&str>,
    ) -> Result<ArtifactCheck, ArtifactRefused> {
        if let Some(existing) = existing {
            return if existing == sha256 {
                Ok(ArtifactCheck::Repeat)
            } else {
                Err(MediaError::ArtifactExists {
                    name: name.to_string(),
                }
                .into())
            };
        }
        if self.status.is_terminal() {
            return Err(MediaError::Finished.into());
        }
        self.check_attempt(attempt)?;
        if self.artifacts >= MAX_ARTIFACTS {
            return Err(MediaError::TooManyArtifacts.into());
        }
        Ok(ArtifactCheck::New)
    }

    /// Appends the `artifact` event of a stored artifact, at `now_ms`.
    pub fn record_artifact(&mut self, artifact: &ArtifactRecord, now_ms: i64) -> StoredEvent {
        self.artifacts += 1;
        self.record_edge(artifact_event(artifact), now_ms)
    }

    /// How many artifacts the analysis holds.
    pub fn artifacts(&self) -> u32 {
        self.artifacts
    }
}

fn artifact_event(a: &ArtifactRecord) -> EdgeEventKind {
    EdgeEventKind::Artifact {
        name: a.name.clone(),
        content_type: a.content_type.clone(),
        bytes: a.bytes,
        frame: a.frame,
        kind: a.kind.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::wire::DispatchUpdate;
    use crate::ids::{AnalysisId, NodeId, PoolName};

    fn input() -> InputRecord {
        InputRecord {
            upload_id: "u1".into(),
            bytes: 10,
            sha256: "ab".into(),
            content_type: "video/mp4".into(),
            uploaded_ts: 1,
        }
    }

    fn artifact(name: &str) -> ArtifactRecord {
        ArtifactRecord {
            name: ArtifactName::parse(name).unwrap(),
            content_type: "image/jpeg".into(),
            bytes: 3,
            sha256: "cd".into(),
            frame: Some(4),
            kind: Some("key_frame".into()),
        }
    }

    fn leased(a: &mut Analysis, node: &str) {
        a.apply_dispatch(
            &DispatchUpdate::Queued {
                pool: PoolName::default_pool(),
                position: Some(1),
                max_attempts: 3,
            },
            10,
        )
        .unwrap();
        a.apply_dispatch(
            &DispatchUpdate::Leased {
                node: NodeId::parse(node).unwrap(),
                attempt: 1,
            },
            11,
        )
        .unwrap();
    }

    #[test]
    fn the_input_changes_until_submitted_and_only_its_holder_reads_it() {
        let mut a = Analysis::new(AnalysisId::parse("a1").unwrap());
        let job = |input: &str| Job {
            input: input.into(),
            model: None,
            options: Default::default(),
        };
        assert_eq!(
            a.check_submitted_input(&job("upload")),
            Err(MediaError::InputMissing)
        );
        assert_eq!(a.check_submitted_input(&job("https://x/y.mp4")), Ok(()));
        assert_eq!(a.record_input(input()), Ok(None));
        let mut second = input();
        second.upload_id = "u2".into();
        assert_eq!(a.record_input(second).unwrap().unwrap().upload_id, "u1");
        assert_eq!(a.check_submitted_input(&job("upload")), Ok(()));
        assert_eq!(
            a.input_for("n1").unwrap_err().code(),
            ErrorCode::NotLeaseHolder
        );
        leased(&mut a, "n1");
        assert_eq!(a.record_input(input()), Err(MediaError::AlreadySubmitted));
        assert_eq!(a.input_for("n1").unwrap().upload_id, "u2");
        assert_eq!(a.input_for("n2").unwrap_err().status(), 403);
        let empty = Analysis::new(AnalysisId::parse("a2").unwrap());
        assert_eq!(empty.input_for("n1").unwrap_err().status(), 404);
    }

    #[test]
    fn artifacts_are_fenced_written_once_and_capped() {
        let mut a = Analysis::new(AnalysisId::parse("a1").unwrap());
        leased(&mut a, "n1");
        let name = ArtifactName::parse("k1.jpg").unwrap();
        assert_eq!(
            a.check_artifact(&name, None, "cd", None)
                .unwrap_err()
                .code(),
            ErrorCode::StaleAttempt
        );
        assert_eq!(
            a.check_artifact(&name, Some(1), "cd", None),
            Ok(ArtifactCheck::New)
        );
        let stored = a.record_artifact(&artifact("k1.jpg"), 20);
        assert_eq!(stored.event.type_name(), "artifact");
        assert_eq!(
            a.check_artifact(&name, Some(1), "cd", Some("cd")),
            Ok(ArtifactCheck::Repeat)
        );
        assert_eq!(
            a.check_artifact(&name, Some(1), "ef", Some("cd"))
                .unwrap_err()
                .code(),
            ErrorCode::ArtifactExists
        );
        for i in 1..MAX_ARTIFACTS {
            a.record_artifact(&artifact(&format!("k{}.jpg", i + 1)), 21);
        }
        assert_eq!(
            a.check_artifact(&name, Some(1), "cd", None)
                .unwrap_err()
                .code(),
            ErrorCode::TooManyArtifacts
        );
    }
}
