//! Shutdown without losing work: the node says `ready {slots: 0}`, takes no new lease
//! (one that still comes is released at once), lets what runs finish within the drain
//! timeout, then releases the rest (requeued at the edge without using up an attempt)
//! and stops them here, publishing nothing more of them.

use std::time::Duration;

use tokio::time::Instant;

use super::link::Link;

/// The drain's clock.
#[derive(Debug)]
pub(super) struct Drain {
    deadline: Instant,
    released: bool,
}

impl Drain {
    fn new(timeout: Duration) -> Self {
        Self {
            deadline: Instant::now() + timeout,
            released: false,
        }
    }

    /// When the leases still held go back; `None` once they did.
    pub(super) fn due(&self) -> Option<Instant> {
        (!self.released).then_some(self.deadline)
    }
}

impl Link {
    pub(super) async fn begin_drain(&mut self) {
        let running = self.leases.running().len();
        let timeout_s = self.config.drain_timeout.as_secs_f64();
        tracing::info!(
            running,
            timeout_s,
            "draining: no new leases; running ones may finish"
        );
        self.leases.drain();
        self.drain = Some(Drain::new(self.config.drain_timeout));
        self.send_ready().await;
    }

    pub(super) async fn end_drain(&mut self) {
        if let Some(drain) = &mut self.drain {
            drain.released = true;
        }
        let actions = self.leases.release_all();
        if !actions.is_empty() {
            tracing::warn!("drain timeout: the leases still running go back to the pool");
        }
        self.apply(actions).await;
    }
}
