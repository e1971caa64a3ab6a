//! Fencing of a leased run: once its attempt is no longer current (the pool revoked the
//! lease, the edge answered `stale_attempt`, the node gave the lease back), nothing more
//! of it may be published, and what is unsent is dropped rather than retried forever.

use std::sync::{Arc, OnceLock};

use tokio_util::sync::CancellationToken;

/// Why a run's attempt stopped being current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleReason {
    /// The pool said `revoked`, or leased the analysis to this node again under a newer
    /// attempt.
    Revoked,
    /// A publish was answered 409 `stale_attempt`.
    StaleAttempt,
    /// The node released the lease (draining).
    Released,
    /// The pool link ended for good (replaced or refused): the node cannot hold leases.
    LinkLost,
}

impl StaleReason {
    /// The label of `stagecast_pool_revoked_runs_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Revoked => "revoked",
            Self::StaleAttempt => "stale_attempt",
            Self::Released => "released",
            Self::LinkLost => "link_lost",
        }
    }
}

/// Shared by a run's publication and whoever may learn first that its attempt is stale.
#[derive(Debug, Clone, Default)]
pub struct Fence {
    fired: CancellationToken,
    reason: Arc<OnceLock<StaleReason>>,
}

impl Fence {
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the attempt stale. Only the first call counts (and says so).
    pub fn fire(&self, reason: StaleReason) -> bool {
        if self.reason.set(reason).is_err() {
            return false;
        }
        metrics::counter!("stagecast_pool_revoked_runs_total", "reason" => reason.as_str())
            .increment(1);
        self.fired.cancel();
        true
    }

    /// Why the attempt is stale, once it is.
    pub fn reason(&self) -> Option<StaleReason> {
        self.reason.get().copied()
    }

    /// Waits until [`Fence::fire`].
    pub async fn fired(&self) {
        self.fired.cancelled().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_reason_sticks() {
        let fence = Fence::new();
        let other = fence.clone();
        assert_eq!(fence.reason(), None);
        assert!(other.fire(StaleReason::Revoked));
        assert!(!fence.fire(StaleReason::StaleAttempt));
        assert_eq!(fence.reason(), Some(StaleReason::Revoked));
    }
}
