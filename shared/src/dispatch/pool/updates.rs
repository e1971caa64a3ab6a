//! What the pool tells its analyses: queue positions and the outbox.

use super::*;

impl Pool {
    /// Tells each of the first [`EXACT_POSITIONS`] queued analyses its position when it moved.
    pub(super) fn tell_positions(&mut self) {
        let firsts: Vec<(AnalysisId, u32)> = self
            .queue
            .iter()
            .take(EXACT_POSITIONS as usize)
            .zip(1..)
            .map(|((_, _, id), position)| (id.clone(), position))
            .collect();
        for (id, position) in firsts {
            let entry = self.entries.get_mut(&id).expect("queued entries exist");
            if entry.told_position != Some(position) {
                entry.told_position = Some(position);
                self.push_update(&id, DispatchUpdate::Position { position });
            }
        }
    }

    /// Queues an update for the analysis; a newer position replaces an unsent one.
    pub(super) fn push_update(&mut self, id: &AnalysisId, update: DispatchUpdate) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        if matches!(update, DispatchUpdate::Position { .. })
            && let Some(last @ DispatchUpdate::Position { .. }) = entry.outbox.last_mut()
        {
            *last = update;
        } else {
            entry.outbox.push(update);
        }
        self.touch(id);
    }
}
