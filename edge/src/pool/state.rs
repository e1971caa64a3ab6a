//! The pool object's state: the machine loaded from storage on first use (its node
//! sockets reconciled), every change written before its effects go out, the effects
//! carried (updates to analyses first, then node and live-view messages), and the alarm.

use std::cell::RefMut;

use stagecast_shared::api::{ErrorBody, ErrorCode};
use stagecast_shared::dispatch::{DispatchUpdate, Effect, Pool, PoolMessage};
use stagecast_shared::ids::{NodeId, PoolName};
use stagecast_shared::snapshot::Status;
use worker::{Result, ScheduledTime, WebSocket};

use super::PoolObject;
use super::store::PoolStore;
use crate::auth::{Principal, parse_object_name};
use crate::call::{json_answer, to_analysis};
use crate::clock::now_ms;
use crate::config::Limits;
use crate::forward::{DispatchReply, Forwarded, Op};
use crate::node_socket::{NODE_TAG, NodeSocket, ViewerSocket, WATCH_TAG, next_expiry};
use crate::respond::broadcast;

/// Queue positions reach analyses at most this often (they change with every lease).
const POSITIONS_EVERY_MS: i64 = 1_000;
/// Rounds of delivery per operation: an analysis that ended frees a slot, which leases
/// another analysis, which has an update of its own.
const DELIVERY_ROUNDS: usize = 4;

impl PoolObject {
    pub(super) fn store(&self) -> PoolStore {
        PoolStore::new(self.state.storage().sql())
    }

    /// `tenant/pool`, as the Worker named the object.
    pub(super) fn object_name(&self) -> String {
        self.state.id().name().unwrap_or_default()
    }

    pub(super) fn limits(&self) -> std::result::Result<Limits, ErrorBody> {
        Limits::from_vars(|name| self.env.var(name).ok().map(|v| v.to_string())).map_err(|e| {
            tracing::error!(error = %e, "edge misconfigured");
            ErrorBody::new(ErrorCode::Internal, "the edge is misconfigured")
        })
    }

    /// The machine, loaded on first use; node sockets that did not survive a restart are
    /// reconciled (their nodes lost them now).
    fn loaded(&self, effects: &mut Vec<Effect>) -> Result<RefMut<'_, Pool>> {
        let mut cell = self.pool.borrow_mut();
        if cell.is_none() {
            let limits = self
                .limits()
                .map_err(|b| worker::Error::RustError(b.error.message))?;
            let name = self.object_name();
            let pool_name = parse_object_name(&name)
                .and_then(|(_, pool)| PoolName::parse(pool).ok())
                .unwrap_or_else(PoolName::default_pool);
            let rows = self.store().load()?;
            let mut pool = Pool::load(pool_name, limits.pool, rows.meta, rows.entries, rows.nodes);
            let live: Vec<(NodeId, u64)> = self
                .state
                .get_websockets_with_tag(NODE_TAG)
                .iter()
                .filter_map(|ws| ws.deserialize_attachment::<NodeSocket>().ok().flatten())
                .map(|info| (info.node_id, info.conn))
                .collect();
            pool.reconcile(&live, now_ms(), effects);
            *cell = Some(pool);
        }
        Ok(RefMut::map(cell, |p| p.as_mut().expect("loaded above")))
    }

    /// Runs `f` on the machine, writes what changed, then carries the effects.
    pub(super) async fn run<R>(
        &self,
        f: impl FnOnce(&mut Pool, &mut Vec<Effect>) -> R,
    ) -> Result<R> {
        let (result, effects) = self.commit(f)?;
        self.carry(effects, false).await?;
        Ok(result)
    }

    /// Runs `f` on the machine and writes what changed, with no await in between.
    pub(super) fn commit<R>(
        &self,
        f: impl FnOnce(&mut Pool, &mut Vec<Effect>) -> R,
    ) -> Result<(R, Vec<Effect>)> {
        let mut effects = Vec::new();
        let written = {
            let mut pool = self.loaded(&mut effects)?;
            let result = f(&mut pool, &mut effects);
            let changes = pool.take_changes();
            let written = if changes.is_empty() {
                Ok(())
            } else {
                self.store().write(&changes)
            };
            written.map(|()| result)
        };
        match written {
            Ok(result) => Ok((result, effects)),
            Err(e) => {
                // Reload from storage next time rather than trust a state storage did not take.
                *self.pool.borrow_mut() = None;
                Err(e)
            }
        }
    }

    /// Updates reach their analyses before any node hears of a lease, so a node's first
    /// publish always finds its attempt current. Then the node and live-view messages.
    pub(super) async fn carry(&self, mut effects: Vec<Effect>, positions: bool) -> Result<()> {
        for _ in 0..DELIVERY_ROUNDS {
            let more = self.deliver(positions).await?;
            if more.is_empty() {
                break;
            }
            effects.extend(more);
        }
        let nodes = self.state.get_websockets_with_tag(NODE_TAG);
        let watchers = self.state.get_websockets_with_tag(WATCH_TAG);
        for effect in effects {
            match effect {
                Effect::ToNode { node, message } => {
                    if self.lease_not_told(&message) {
                        // Its analysis has not heard of this attempt: the node's publishes
                        // would be refused. Unsent, the lease expires unaccepted and is
                        // requeued, by when the update has had its retries.
                        tracing::warn!(%node, "lease held back: its analysis has not heard of it");
                        continue;
                    }
                    let conn = self
                        .pool
                        .borrow()
                        .as_ref()
                        .and_then(|p| p.node(&node).map(|n| n.conn));
                    let text = serde_json::to_string(&message)?;
                    broadcast(
                        nodes.iter().filter(|ws| is_socket_of(ws, &node, conn)),
                        &text,
                    );
                }
                Effect::Watch(event) => {
                    let text = serde_json::to_string(&event)?;
                    broadcast(&watchers, &text);
                }
            }
        }
        self.schedule().await
    }

    /// Whether `message` is a lease whose `leased` update still waits in its analysis'
    /// outbox.
    fn lease_not_told(&self, message: &PoolMessage) -> bool {
        let PoolMessage::Lease {
            analysis_id,
            attempt,
            ..
        } = message
        else {
            return false;
        };
        self.pool
            .borrow()
            .as_ref()
            .and_then(|p| p.entry(analysis_id))
            .is_some_and(|e| {
                e.outbox
                    .iter()
                    .any(|u| matches!(u, DispatchUpdate::Leased { attempt: a, .. } if a == attempt))
            })
    }

    /// Sends each analysis its pending updates (only urgent ones unless `positions`);
    /// returns the effects of what the answers changed.
    async fn deliver(&self, positions: bool) -> Result<Vec<Effect>> {
        let pending: Vec<_> = match self.pool.borrow().as_ref() {
            Some(pool) => pool
                .undelivered()
                .filter(|e| positions || e.outbox.iter().any(is_urgent))
                .map(|e| (e.analysis_id.clone(), e.outbox.clone()))
                .collect(),
            None => return Ok(Vec::new()),
        };
        let name = self.object_name();
        let tenant = parse_object_name(&name).map_or("unknown", |(t, _)| t);
        let sends = pending.iter().map(|(analysis_id, updates)| {
            let fwd = Forwarded {
                analysis_id: analysis_id.clone(),
                principal: Principal {
                    tenant: tenant.to_owned(),
                    sub: format!("pool:{name}"),
                    can_cancel: false,
                    expires_at_ms: 0,
                },
                op: Op::Dispatch {
                    updates: updates.clone(),
                },
            };
            async move {
                match to_analysis(&self.env, &fwd, None, false).await {
                    Ok(response) => json_answer::<DispatchReply>(response).await,
                    Err(e) => Err(e),
                }
            }
        });
        // Each analysis is its own object: they take their updates side by side.
        let replies = futures_util::future::join_all(sends).await;
        let mut effects = Vec::new();
        for ((analysis_id, updates), reply) in pending.iter().zip(replies) {
            let reply = match reply {
                Ok(reply) => reply,
                Err(e) => {
                    // Kept in the outbox; the alarm tries again.
                    tracing::warn!(%analysis_id, error = %e, "update not delivered");
                    continue;
                }
            };
            let ((), more) = self.commit(|pool, effects| {
                pool.delivered(analysis_id, updates);
                let disowned = reply.disowned.then(|| {
                    let attempt = pool.entry(analysis_id).map_or(0, |e| e.attempt);
                    tracing::warn!(%analysis_id, "a node published to this submitted id directly: dropped from the pool");
                    (attempt, Status::Failed)
                });
                if let Some((attempt, status)) = reply.finished.or(disowned) {
                    pool.finished(analysis_id, attempt, status, now_ms(), effects);
                }
            })?;
            effects.extend(more);
        }
        Ok(effects)
    }

    /// Every socket with its token's expiry.
    pub(super) fn socket_expiries(&self) -> Vec<(WebSocket, i64)> {
        self.state
            .get_websockets()
            .into_iter()
            .filter_map(|ws| {
                let at = match ws.deserialize_attachment::<NodeSocket>() {
                    Ok(Some(node)) => node.expires_at_ms,
                    _ => {
                        ws.deserialize_attachment::<ViewerSocket>()
                            .ok()
                            .flatten()?
                            .expires_at_ms
                    }
                };
                Some((ws, at))
            })
            .collect()
    }

    /// One alarm: the earliest lease deadline or token expiry, or soon when updates wait.
    async fn schedule(&self) -> Result<()> {
        let now = now_ms();
        let expiry = next_expiry(self.socket_expiries().into_iter().map(|(_, at)| at), now);
        let pool = self.pool.borrow().as_ref().and_then(|p| {
            let waiting = p.undelivered().next().is_some();
            let retry = waiting.then(|| now + POSITIONS_EVERY_MS);
            p.next_deadline().into_iter().chain(retry).min()
        });
        let Some(deadline) = pool.into_iter().chain(expiry).min() else {
            return Ok(());
        };
        // The alarm as last set, kept in memory: asking storage on every message would close
        // the input gate each time. A rebuilt object asks once.
        let current = match self.alarm_at.get() {
            Some(at) => Some(at),
            None => self.state.storage().get_alarm().await?,
        };
        if current.is_none_or(|c| deadline < c || c <= now_ms()) {
            let at = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(deadline as f64));
            self.state
                .storage()
                .set_alarm(ScheduledTime::new(at))
                .await?;
            self.alarm_at.set(Some(deadline));
        } else {
            self.alarm_at.set(current);
        }
        Ok(())
    }
}

/// Anything but a queue position is delivered at once.
fn is_urgent(update: &DispatchUpdate) -> bool {
    !matches!(update, DispatchUpdate::Position { .. })
}

/// Whether `ws` is the current socket of `node` (`conn`).
fn is_socket_of(ws: &WebSocket, node: &NodeId, conn: Option<u64>) -> bool {
    ws.deserialize_attachment::<NodeSocket>()
        .ok()
        .flatten()
        .is_some_and(|info| &info.node_id == node && Some(info.conn) == conn)
}
