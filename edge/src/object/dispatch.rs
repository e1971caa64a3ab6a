//! A submitted analysis in its object: the submission (checked here, queued by the pool),
//! the pool's updates, and what the pool must hear (an end, a cancel).

use stagecast_shared::api::{ApiError, ErrorBody, ErrorCode};
use stagecast_shared::dispatch::{
    Cancelled, DispatchUpdate, Submission, SubmitRefused, SubmitResponse, Submitted,
};
use stagecast_shared::ids::{AnalysisId, PoolName};
use stagecast_shared::machine::{Applied, SubmitCheck, UpdateRefused};
use stagecast_shared::ws::ServerMessage;
use worker::{Response, Result};

use super::AnalysisObject;
use crate::call::{json_answer, to_pool};
use crate::clock::now_ms;
use crate::config::Limits;
use crate::forward::{DispatchReply, PoolForwarded, PoolOp, SubmitReply};
use crate::respond::{broadcast, error_response, json_response, retry_later_response};

/// `Retry-After` of a full queue: queues drain at the fleet's pace, not the edge's.
const QUEUE_FULL_RETRY_S: u64 = 5;

impl AnalysisObject {
    fn pool_call(&self, pool: PoolName, op: PoolOp) -> PoolForwarded {
        PoolForwarded {
            tenant: self.tenant(),
            pool,
            op,
        }
    }

    /// `POST /v1/analyses`: the pool queues it and, through its outbox, tells this object
    /// (`queued`, maybe `leased`) before it answers.
    pub(super) async fn submit(
        &self,
        id: &AnalysisId,
        pool: PoolName,
        submission: Submission,
        limits: &Limits,
    ) -> Result<Response> {
        let check = match self.with_analysis(id, |a| a.check_submit(&pool))? {
            Ok(check) => check,
            Err(e) => return error_response(&e.body()),
        };
        if let Err(e) = self.with_analysis(id, |a| a.check_submitted_input(&submission.job))? {
            return error_response(&e.body());
        }
        let max_attempts = submission.max_attempts;
        let op = PoolOp::Submit {
            analysis_id: id.clone(),
            submission,
        };
        let fwd = self.pool_call(pool.clone(), op);
        let reply: SubmitReply = json_answer(to_pool(&self.env, &fwd, false).await?).await?;
        let position = match reply {
            Err(SubmitRefused::Different) => {
                let body = ErrorBody::new(
                    ErrorCode::AnalysisExists,
                    format!("analysis {id} was submitted before with a different body"),
                );
                return error_response(&body);
            }
            Err(e @ SubmitRefused::QueueFull { .. }) => {
                tracing::info!(%pool, "queue full");
                let body = ErrorBody::new(ErrorCode::QueueFull, e.to_string());
                return retry_later_response(&body, QUEUE_FULL_RETRY_S);
            }
            Ok(Submitted::Queued { position }) => Some(position),
            Ok(Submitted::Again { position }) => position,
        };
        // Had the pool's update not landed yet, this is it (the pool's copy comes later
        // and changes nothing).
        if self.with_analysis(id, |a| a.dispatched().is_none())? {
            let update = DispatchUpdate::Queued {
                pool: pool.clone(),
                position,
                max_attempts,
            };
            self.apply_updates(id, &[update], limits)?;
        }
        let snapshot = self.with_analysis(id, |a| a.snapshot())?;
        let answer = SubmitResponse {
            analysis_id: id.clone(),
            pool,
            status: snapshot.status,
            queue_position: snapshot.queue_position,
        };
        json_response(
            &answer,
            if check == SubmitCheck::Fresh {
                202
            } else {
                200
            },
        )
    }

    /// The pool's updates, in order: each stored edge event goes out like any other.
    pub(super) fn apply_updates(
        &self,
        id: &AnalysisId,
        updates: &[DispatchUpdate],
        limits: &Limits,
    ) -> Result<DispatchReply> {
        let now = now_ms();
        let (events, changed, reply) = self.with_analysis(id, |a| {
            let (mut events, mut changed) = (Vec::new(), false);
            let mut reply = DispatchReply {
                finished: None,
                disowned: false,
            };
            for update in updates {
                match a.apply_dispatch(update, now) {
                    Ok(Applied::Event(event)) => events.push(event),
                    Ok(Applied::Changed) => changed = true,
                    Ok(Applied::Unchanged) => {}
                    Err(UpdateRefused::Finished { status }) => {
                        let attempt = a.dispatched().map_or(0, |d| d.attempt);
                        reply.finished = Some((attempt, status));
                    }
                    Err(UpdateRefused::NotSubmitted) => reply.disowned = true,
                }
            }
            (events, changed, reply)
        })?;
        if changed {
            self.commit_state(&events, limits)?;
        } else if !events.is_empty() {
            self.commit(&events, limits)?;
        }
        if changed && events.is_empty() {
            // A new queue position: viewers get a fresh snapshot.
            let snapshot = self.with_analysis(id, |a| a.snapshot())?;
            let text = serde_json::to_string(&ServerMessage::Snapshot { snapshot })?;
            broadcast(self.viewers().iter(), &text);
        }
        Ok(reply)
    }

    /// After a stored end: the pool frees the node's slot. A lost message is repaired by
    /// the pool itself (its next update for the analysis is answered "finished").
    pub(super) async fn tell_pool_finished(&self, id: &AnalysisId) {
        let Ok(Some((pool, attempt, status))) = self.with_analysis(id, |a| {
            let d = a.dispatched()?;
            a.status()
                .is_terminal()
                .then(|| (d.pool.clone(), d.attempt, a.status()))
        }) else {
            return;
        };
        let op = PoolOp::Finished {
            analysis_id: id.clone(),
            attempt,
            status,
        };
        let fwd = self.pool_call(pool, op);
        let told = match to_pool(&self.env, &fwd, false).await {
            Ok(response) => json_answer::<bool>(response).await,
            Err(e) => Err(e),
        };
        if let Err(e) = told {
            tracing::warn!(error = %e, "the pool did not hear of the end");
        }
    }

    /// After a stored cancel request: a queued analysis leaves the queue (the pool's
    /// `cancelled` update ends it), a leased one's node is told at once.
    pub(super) async fn tell_pool_cancel(&self, id: &AnalysisId) -> Result<()> {
        let Some(pool) = self.with_analysis(id, |a| {
            (!a.status().is_terminal())
                .then(|| a.dispatched().map(|d| d.pool.clone()))
                .flatten()
        })?
        else {
            return Ok(());
        };
        let fwd = self.pool_call(
            pool,
            PoolOp::Cancel {
                analysis_id: id.clone(),
            },
        );
        let outcome: Cancelled = json_answer(to_pool(&self.env, &fwd, false).await?).await?;
        tracing::info!(?outcome, "cancel told to the pool");
        Ok(())
    }
}
