//! How leases are made, lost and ended, and what follows every operation.

use super::*;

impl Pool {
    /// `revoked` for a node that runs `id` without holding its lease.
    pub(super) fn revoke(&self, node_id: &NodeId, id: &AnalysisId) -> Effect {
        let entry = self.entries.get(id);
        let lease_id = entry.and_then(|e| {
            e.past
                .iter()
                .rev()
                .find(|(node, _)| node == node_id)
                .map(|(_, lease)| lease.clone())
        });
        let reason = match entry.map(|e| &e.state) {
            Some(EntryState::Finished { .. }) | None => RevokeReason::Finished,
            _ => RevokeReason::Reassigned,
        };
        Effect::ToNode {
            node: node_id.clone(),
            message: PoolMessage::Revoked {
                analysis_id: id.clone(),
                lease_id,
                reason,
            },
        }
    }

    /// `revoked` for an `accept` of a lease the node does not hold.
    pub(super) fn revoke_lease_id(&self, node_id: &NodeId, lease_id: &str) -> Option<Effect> {
        let (id, _) = lease_id.rsplit_once(':')?;
        let id = AnalysisId::parse(id).ok()?;
        match self.revoke(node_id, &id) {
            Effect::ToNode {
                node,
                message: PoolMessage::Revoked { reason, .. },
            } => Some(Effect::ToNode {
                node,
                message: PoolMessage::Revoked {
                    analysis_id: id,
                    lease_id: Some(lease_id.to_owned()),
                    reason,
                },
            }),
            _ => None,
        }
    }

    /// The earliest moment the lease of `id` is lost, and why.
    pub(super) fn deadline(&self, id: &AnalysisId) -> Option<(i64, RequeueReason)> {
        let EntryState::Leased(lease) = &self.entries.get(id)?.state else {
            return None;
        };
        let lease_ms = ms(self.config.lease_ms);
        let mut candidates = Vec::with_capacity(3);
        if !lease.accepted {
            candidates.push((
                lease.leased_ts + ms(self.config.accept_ms),
                RequeueReason::LeaseExpired,
            ));
        }
        if let Some(since) = lease.missing_since {
            candidates.push((since + lease_ms, RequeueReason::LeaseExpired));
        }
        match self.nodes.get(&lease.node_id) {
            Some(node) if node.connected => candidates.push((
                node.last_heartbeat_ts + 2 * ms(self.config.heartbeat_ms) + lease_ms,
                RequeueReason::LeaseExpired,
            )),
            Some(node) => candidates.push((
                node.lost_ts.unwrap_or(lease.leased_ts) + lease_ms,
                RequeueReason::NodeLost,
            )),
            None => candidates.push((lease.leased_ts, RequeueReason::NodeLost)),
        }
        candidates.into_iter().min_by_key(|(at, _)| *at)
    }

    /// The current lease of `id` ended without a result: requeue, or fail when the lost
    /// attempts reach `max_attempts`.
    pub(super) fn lose(
        &mut self,
        id: &AnalysisId,
        reason: RequeueReason,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        let EntryState::Leased(lease) = &entry.state else {
            return;
        };
        let node = lease.node_id.clone();
        entry.past.push((node.clone(), lease.lease_id.clone()));
        if entry.past.len() > PAST_LEASES {
            entry.past.remove(0);
        }
        if reason.is_charged() {
            entry.lost += 1;
        }
        let attempt = entry.attempt;
        let exhausted = entry.lost >= u32::from(entry.submission.max_attempts);
        if let Some(held) = self.held.get_mut(&node) {
            held.remove(id);
        }
        if exhausted {
            self.end(id, Status::Failed, now_ms, effects);
            self.push_update(id, DispatchUpdate::Exhausted { attempt });
        } else {
            self.meta.next_front -= 1;
            self.dirty_meta = true;
            let order = self.meta.next_front;
            let entry = self.entries.get_mut(id).expect("checked above");
            entry.order = order;
            entry.state = EntryState::Queued;
            entry.told_position = None;
            let priority = entry.submission.priority;
            self.queue.insert((Reverse(priority), order, id.clone()));
            self.push_update(
                id,
                DispatchUpdate::Requeued {
                    attempt,
                    reason,
                    node,
                },
            );
        }
        self.touch(id);
    }

    /// Ends `id` with `status` wherever it is.
    pub(super) fn end(
        &mut self,
        id: &AnalysisId,
        status: Status,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
        self.set_finished(id, status, now_ms);
        effects.push(Effect::Watch(PoolEvent::Finished {
            analysis_id: id.clone(),
            status,
        }));
    }

    pub(super) fn set_finished(&mut self, id: &AnalysisId, status: Status, ts: i64) {
        let Some(entry) = self.entries.get(id) else {
            return;
        };
        let key = (Reverse(entry.submission.priority), entry.order, id.clone());
        self.queue.remove(&key);
        if let EntryState::Leased(lease) = &entry.state
            && let Some(held) = self.held.get_mut(&lease.node_id)
        {
            held.remove(id);
        }
        let entry = self.entries.get_mut(id).expect("checked above");
        entry.state = EntryState::Finished { status, ts };
        entry.told_position = None;
        self.finished.insert((ts, id.clone()));
        self.touch(id);
    }

    /// Runs after every operation: leases what it can, forgets what it may, keeps the
    /// first positions exact, tells viewers how the queue stands.
    pub(super) fn after(&mut self, now_ms: i64, effects: &mut Vec<Effect>) {
        let (queued, leased) = (self.queue.len(), self.leased());
        self.schedule(now_ms, effects);
        self.forget_nodes(effects);
        self.prune();
        self.tell_positions();
        if (queued, leased) != (self.queue.len(), self.leased()) {
            effects.push(Effect::Watch(PoolEvent::QueueChanged {
                queued: self.queue.len() as u64,
                leased: self.leased() as u64,
            }));
        }
    }

    /// Leases queued analyses to free slots, in queue order.
    pub(super) fn schedule(&mut self, now_ms: i64, effects: &mut Vec<Effect>) {
        let mut free: Vec<(NodeId, u32)> = self
            .nodes
            .values()
            .filter(|n| n.connected)
            .filter_map(|n| {
                let held = self.held.get(&n.node_id).map_or(0, BTreeSet::len);
                let free = (n.slots as usize).saturating_sub(held);
                (free > 0).then(|| (n.node_id.clone(), free as u32))
            })
            .collect();
        let mut picks = Vec::new();
        for (_, _, id) in &self.queue {
            if free.is_empty() {
                break;
            }
            let model = self.entries[id].submission.job.model.as_deref();
            let best = free
                .iter_mut()
                .filter(|(node, _)| {
                    model.is_none_or(|m| self.nodes[node].models.iter().any(|n| n == m))
                })
                .max_by_key(|(node, free)| (*free, Reverse(node.clone())));
            if let Some((node, slots)) = best {
                *slots -= 1;
                picks.push((id.clone(), node.clone()));
            }
            free.retain(|(_, slots)| *slots > 0);
        }
        for (id, node) in picks {
            self.lease(&id, node, now_ms, effects);
        }
    }

    pub(super) fn lease(
        &mut self,
        id: &AnalysisId,
        node_id: NodeId,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
        let entry = self.entries.get_mut(id).expect("queued entries exist");
        self.queue
            .remove(&(Reverse(entry.submission.priority), entry.order, id.clone()));
        entry.attempt += 1;
        let attempt = entry.attempt;
        let lease_id = format!("{id}:{attempt}");
        entry.state = EntryState::Leased(Lease {
            lease_id: lease_id.clone(),
            node_id: node_id.clone(),
            leased_ts: now_ms,
            accepted: false,
            missing_since: None,
        });
        entry.told_position = None;
        let job = entry.submission.job.clone();
        self.held
            .entry(node_id.clone())
            .or_default()
            .insert(id.clone());
        self.push_update(
            id,
            DispatchUpdate::Leased {
                node: node_id.clone(),
                attempt,
            },
        );
        self.touch(id);
        effects.push(Effect::ToNode {
            node: node_id.clone(),
            message: PoolMessage::Lease {
                lease_id,
                analysis_id: id.clone(),
                attempt,
                job,
                expires_ts: now_ms + ms(self.config.accept_ms),
            },
        });
        effects.push(Effect::Watch(PoolEvent::Leased {
            analysis_id: id.clone(),
            node: node_id,
            attempt,
        }));
    }

    /// Drops nodes that are gone and hold nothing.
    pub(super) fn forget_nodes(&mut self, effects: &mut Vec<Effect>) {
        let gone: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|n| !n.connected && self.held.get(&n.node_id).is_none_or(BTreeSet::is_empty))
            .map(|n| n.node_id.clone())
            .collect();
        for node_id in gone {
            self.nodes.remove(&node_id);
            self.held.remove(&node_id);
            self.dirty_nodes.insert(node_id.clone());
            effects.push(Effect::Watch(PoolEvent::NodeLeft { node_id }));
        }
    }

    /// Forgets the oldest finished analyses beyond `keep_finished` once they have their
    /// updates.
    pub(super) fn prune(&mut self) {
        while self.finished.len() > self.config.keep_finished {
            let Some(oldest) = self
                .finished
                .iter()
                .find(|(_, id)| self.entries.get(id).is_none_or(|e| e.outbox.is_empty()))
                .cloned()
            else {
                return;
            };
            self.finished.remove(&oldest);
            self.entries.remove(&oldest.1);
            self.dirty_entries.insert(oldest.1);
        }
    }
}

fn ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX / 4)
}
