//! The analysis object's state: the state machine loaded from storage on first use, each
//! commit of events and state with its fan-out to the sockets, and the one alarm.

use std::cell::RefMut;
use std::collections::HashSet;
use std::rc::Rc;

use stagecast_shared::Analysis;
use stagecast_shared::api::{ErrorBody, ErrorCode};
use stagecast_shared::ids::AnalysisId;
use stagecast_shared::stored::StoredEvent;
use stagecast_shared::ws::ServerMessage;
use worker::{Result, ScheduledTime, WebSocket};

use super::{AnalysisObject, VIEWER};
use crate::auth::parse_object_name;
use crate::config::Limits;
use crate::deadline::next_alarm;
use crate::respond::broadcast;
use crate::store::{CHECKPOINT_EVERY, Store};

impl AnalysisObject {
    pub(super) fn store(&self) -> Store {
        Store::new(self.state.storage().sql(), self.usage.clone())
    }

    /// The tenant this object belongs to: from a request, the object's name
    /// (`tenant/analysis`) or storage; "unknown" only if all of them fail.
    pub(super) fn tenant(&self) -> String {
        let mut cell = self.tenant.borrow_mut();
        if cell.is_none() {
            *cell = (self.state.id().name())
                .and_then(|name| parse_object_name(&name).map(|(t, _)| t.to_owned()))
                .or_else(|| self.store().load_tenant().ok().flatten());
        }
        cell.clone().unwrap_or_else(|| "unknown".to_owned())
    }

    pub(super) fn limits(&self) -> std::result::Result<Limits, ErrorBody> {
        if let Some(limits) = self.limits.borrow().as_ref() {
            return Ok(limits.clone());
        }
        let limits = Limits::from_vars(|name| self.env.var(name).ok().map(|v| v.to_string()))
            .map_err(|e| {
                tracing::error!(error = %e, "edge misconfigured");
                ErrorBody::new(ErrorCode::Internal, "the edge is misconfigured")
            })?;
        *self.limits.borrow_mut() = Some(limits.clone());
        Ok(limits)
    }

    /// The state machine, loaded from storage on first use.
    pub(super) fn loaded(&self) -> Result<RefMut<'_, Option<Analysis>>> {
        let mut cell = self.analysis.borrow_mut();
        if cell.is_none() {
            let restored = self.store().load_analysis()?;
            self.checkpoint_seq
                .set(restored.as_ref().map(|r| r.checkpoint_seq));
            *cell = restored.map(|r| r.analysis);
        }
        Ok(cell)
    }

    /// Which of `ids` are stored already, from the ids held in memory.
    pub(super) fn known_ids(&self, ids: &[&str]) -> Result<HashSet<String>> {
        let mut cell = self.event_ids.borrow_mut();
        if cell.is_none() {
            *cell = Some(self.store().event_ids()?);
        }
        let known = cell.as_ref().expect("loaded above");
        Ok(ids
            .iter()
            .filter(|id| known.contains(**id))
            .map(|id| (*id).to_owned())
            .collect())
    }

    /// The viewers' sockets (not the nodes' publish sockets).
    pub(super) fn viewers(&self) -> Rc<[WebSocket]> {
        let mut cached = self.viewer_sockets.borrow_mut();
        cached
            .get_or_insert_with(|| self.state.get_websockets_with_tag(VIEWER).into())
            .clone()
    }

    /// Makes the next [`Self::viewers`] ask the runtime again.
    pub(super) fn forget_viewers(&self) {
        *self.viewer_sockets.borrow_mut() = None;
    }

    /// Forgets what storage may no longer hold: the next use reads it again.
    pub(super) fn forget_state(&self) {
        *self.analysis.borrow_mut() = None;
        *self.event_ids.borrow_mut() = None;
        self.checkpoint_seq.set(None);
    }

    /// Runs `f` on the stored analysis, if there is one.
    pub(super) fn with_stored<R>(&self, f: impl FnOnce(&mut Analysis) -> R) -> Result<Option<R>> {
        Ok(self.loaded()?.as_mut().map(f))
    }

    /// Runs `f` on analysis `id`, pending if nothing is stored yet.
    pub(super) fn with_analysis<R>(
        &self,
        id: &AnalysisId,
        f: impl FnOnce(&mut Analysis) -> R,
    ) -> Result<R> {
        Ok(f(self
            .loaded()?
            .get_or_insert_with(|| Analysis::new(id.clone()))))
    }

    /// Stores new events, then sends each event to every socket, in order. The state is
    /// checkpointed when due; the log's newer events rebuild the rest on a wake.
    pub(super) fn commit(&self, stored: &[StoredEvent], limits: &Limits) -> Result<()> {
        self.commit_with(stored, false, limits)
    }

    /// As [`Self::commit`], for a state change the events do not tell (an input stored,
    /// a queue position): the state is checkpointed whatever the count.
    pub(super) fn commit_state(&self, stored: &[StoredEvent], limits: &Limits) -> Result<()> {
        self.commit_with(stored, true, limits)
    }

    /// Nothing awaits between the writes, so they commit together or not at all.
    fn commit_with(&self, stored: &[StoredEvent], untold: bool, limits: &Limits) -> Result<()> {
        let store = self.store();
        let written = (|| {
            let frames = stored
                .iter()
                .map(|event| serde_json::to_string(&ServerMessage::Event(event.clone())))
                .collect::<serde_json::Result<Vec<_>>>()?;
            store.append(stored, &frames)?;
            if !self.tenant_saved.get() {
                store.save_tenant(&self.tenant())?;
            }
            let mut checkpoint = self.checkpoint_seq.get();
            if let Some(analysis) = self.analysis.borrow().as_ref() {
                let last_seq = analysis.last_seq();
                let due = untold
                    || stored.iter().any(|e| e.event.is_terminal())
                    || checkpoint.is_none_or(|seq| last_seq - seq >= CHECKPOINT_EVERY);
                if due {
                    store.save_checkpoint(analysis)?;
                    checkpoint = Some(last_seq);
                }
                // a wake resumes from the checkpoint, so its newer frames stay
                let trim = last_seq.saturating_sub(limits.history_limit);
                store.trim_history(trim.min(checkpoint.unwrap_or(0)))?;
            }
            Ok::<_, worker::Error>((frames, checkpoint))
        })();
        let (frames, checkpoint) = written.inspect_err(|_| {
            // Reload from storage next time rather than trust a state storage did not take.
            self.forget_state();
        })?;
        self.checkpoint_seq.set(checkpoint);
        if let Some(ids) = self.event_ids.borrow_mut().as_mut() {
            ids.extend(stored.iter().map(|e| e.event.id().to_owned()));
        }
        self.tenant_saved.set(true);
        let sockets = self.viewers();
        for frame in &frames {
            broadcast(sockets.iter(), frame);
        }
        self.streams.send(stored, &frames);
        if stored.iter().any(|e| e.event.is_terminal()) {
            self.usage.log();
        }
        Ok(())
    }

    /// Makes sure the one alarm fires by the earliest pending deadline. Storage is asked
    /// for the alarm once per instance, and written only when the deadline moves earlier.
    pub(super) async fn schedule(&self, limits: &Limits, socket_expiry: Option<i64>) -> Result<()> {
        let deadline = {
            let analysis = self.analysis.borrow();
            next_alarm(analysis.as_ref(), limits, socket_expiry)
        };
        let Some(deadline) = deadline else {
            return Ok(());
        };
        let storage = self.state.storage();
        let current = match self.alarm_at.get() {
            Some(known) => known,
            None => {
                let stored = storage.get_alarm().await?;
                self.alarm_at.set(Some(stored));
                stored
            }
        };
        if current.is_none_or(|c| deadline < c) {
            let at = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(deadline as f64));
            storage.set_alarm(ScheduledTime::new(at)).await?;
            self.usage.alarm_set();
            self.alarm_at.set(Some(Some(deadline)));
        }
        Ok(())
    }
}
