//! When a node sends its next publish batch, how big it may be, and what each answer of
//! the edge means for the events in it: a sans-IO policy, time and randomness passed in.
//!
//! - The first unsent event waits up to `linger_ms` for others to share its request;
//!   a full batch or the end of a run goes at once.
//! - After a failure the next try waits for the edge's `Retry-After`, else for the
//!   backoff (full jitter); a success resets it.
//! - A refusal naming event `i > 0` of the batch sends the `i` events before it alone;
//!   the refused event then heads a batch and, refused again, is dropped for good.

use crate::backoff::Backoff;
use crate::limits::MAX_EVENTS_PER_BATCH;

/// The policy's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendConfig {
    /// How long the first unsent event waits for others to share its request.
    pub linger_ms: u64,
    /// Retry schedule after a failed batch.
    pub backoff: Backoff,
    /// Most events in one batch.
    pub max_batch: usize,
}

impl Default for SendConfig {
    fn default() -> Self {
        Self {
            // at most this much later on screen, for far fewer requests
            linger_ms: 50,
            // a cap short enough that a node notices a recovered edge within seconds
            backoff: Backoff {
                base_ms: 250,
                cap_ms: 5_000,
            },
            max_batch: MAX_EVENTS_PER_BATCH,
        }
    }
}

/// How the edge answered a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Stored (or already stored): every event of the batch is confirmed.
    Stored,
    /// Refused for good (400, 409, 413); `index` names the offending event when known.
    Refused { index: Option<u32> },
    /// Not now (network, 429, 5xx, or a local failure around the send): try again.
    Failed { retry_after_ms: Option<u64> },
}

/// What to do with the batch's events after an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The first `n` events are confirmed: remove them.
    Confirmed(usize),
    /// The first event will never be taken: remove it and count it as refused.
    DropFirst,
    /// Send the first `n` events alone next, at once.
    SendFirst(usize),
    /// Keep them all and send again at this time (ms).
    RetryAt(u64),
}

/// The state of one publication's sending.
#[derive(Debug, Clone, PartialEq)]
pub struct SendPolicy {
    config: SendConfig,
    /// Failed tries in a row.
    attempt: u32,
    retry_at: Option<u64>,
    /// When the oldest unsent event may go.
    linger_until: Option<u64>,
    limit: usize,
}

impl SendPolicy {
    pub fn new(config: SendConfig) -> Self {
        Self {
            limit: config.max_batch,
            config,
            attempt: 0,
            retry_at: None,
            linger_until: None,
        }
    }

    /// When the next batch should go (ms, on the clock `now_ms` is read from), given the
    /// events waiting; `None` while nothing waits. `urgent`: the run ended, so nothing
    /// more will join the batch.
    pub fn send_at(&mut self, now_ms: u64, pending: usize, urgent: bool) -> Option<u64> {
        if pending == 0 {
            self.linger_until = None;
            return None;
        }
        let linger = *self
            .linger_until
            .get_or_insert(now_ms + self.config.linger_ms);
        let at = if urgent || pending >= self.config.max_batch {
            now_ms
        } else {
            linger
        };
        Some(self.retry_at.map_or(at, |retry| retry.max(at)))
    }

    /// The most events the next batch may hold.
    pub fn batch_limit(&self) -> usize {
        self.limit
    }

    /// Failed tries in a row so far.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The edge's answer to a batch of `count` events, received at `now_ms`; `jitter` is
    /// uniform in [0, 1) and spreads the retries of many nodes.
    pub fn on_answer(&mut self, answer: Answer, count: usize, now_ms: u64, jitter: f64) -> Step {
        self.retry_at = None;
        match answer {
            Answer::Stored => {
                self.reset();
                Step::Confirmed(count)
            }
            Answer::Refused { index: Some(i) } if i > 0 && (i as usize) < count => {
                self.limit = i as usize;
                Step::SendFirst(i as usize)
            }
            Answer::Refused { .. } => {
                self.reset();
                Step::DropFirst
            }
            Answer::Failed { retry_after_ms } => {
                self.attempt = self.attempt.saturating_add(1);
                let wait = retry_after_ms
                    .unwrap_or_else(|| self.config.backoff.delay_ms(self.attempt, jitter));
                let at = now_ms + wait;
                self.retry_at = Some(at);
                Step::RetryAt(at)
            }
        }
    }

    fn reset(&mut self) {
        self.attempt = 0;
        self.limit = self.config.max_batch;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> SendPolicy {
        SendPolicy::new(SendConfig::default())
    }

    #[test]
    fn the_first_event_lingers_a_full_batch_or_the_end_goes_at_once() {
        let mut p = policy();
        assert_eq!(p.send_at(1_000, 0, false), None);
        assert_eq!(p.send_at(1_000, 1, false), Some(1_050));
        // later events do not push the deadline back
        assert_eq!(p.send_at(1_030, 5, false), Some(1_050));
        assert_eq!(p.send_at(1_031, 5, true), Some(1_031));
        assert_eq!(p.send_at(1_032, MAX_EVENTS_PER_BATCH, false), Some(1_032));
        // once the queue emptied, the next event lingers afresh
        assert_eq!(p.send_at(2_000, 0, false), None);
        assert_eq!(p.send_at(2_000, 1, false), Some(2_050));
    }

    #[test]
    fn retry_after_is_honoured_over_the_backoff_and_over_urgency() {
        let mut p = policy();
        let step = p.on_answer(
            Answer::Failed {
                retry_after_ms: Some(3_000),
            },
            4,
            10_000,
            0.0,
        );
        assert_eq!(step, Step::RetryAt(13_000));
        assert_eq!(p.send_at(10_001, 4, true), Some(13_000));
        assert_eq!(p.attempt(), 1);
    }

    #[test]
    fn failures_back_off_with_full_jitter_and_a_success_resets() {
        let mut p = policy();
        let fail = Answer::Failed {
            retry_after_ms: None,
        };
        // jitter 1.0 reaches the ceiling: 500, 1000, 2000, 4000, then the 5 s cap
        let waits: Vec<u64> = (0..6)
            .map(|_| match p.on_answer(fail, 1, 0, 1.0) {
                Step::RetryAt(at) => at,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(waits, [500, 1_000, 2_000, 4_000, 5_000, 5_000]);
        assert_eq!(p.on_answer(fail, 1, 0, 0.25), Step::RetryAt(1_250));
        assert_eq!(p.on_answer(Answer::Stored, 3, 0, 0.5), Step::Confirmed(3));
        assert_eq!(p.attempt(), 0);
        assert_eq!(p.on_answer(fail, 1, 0, 1.0), Step::RetryAt(500));
    }

    #[test]
    fn a_refusal_inside_the_batch_sends_the_events_before_it_then_drops_it() {
        let mut p = policy();
        assert_eq!(p.send_at(0, 10, false), Some(50));
        let step = p.on_answer(Answer::Refused { index: Some(3) }, 10, 60, 0.5);
        assert_eq!(step, Step::SendFirst(3));
        assert_eq!(p.batch_limit(), 3);
        // not a failure: the shorter batch goes now, its linger long passed
        assert_eq!(p.send_at(60, 10, false), Some(50));
        assert_eq!(p.on_answer(Answer::Stored, 3, 61, 0.5), Step::Confirmed(3));
        assert_eq!(p.batch_limit(), MAX_EVENTS_PER_BATCH);
        // the refused event now heads its batch
        let step = p.on_answer(Answer::Refused { index: Some(0) }, 7, 0, 0.5);
        assert_eq!(step, Step::DropFirst);
        assert_eq!(
            p.on_answer(Answer::Refused { index: None }, 6, 0, 0.5),
            Step::DropFirst
        );
        // an index outside the batch cannot split it
        assert_eq!(
            p.on_answer(Answer::Refused { index: Some(9) }, 2, 0, 0.5),
            Step::DropFirst
        );
    }

    #[test]
    fn a_refusal_clears_a_pending_retry() {
        let mut p = policy();
        let fail = Answer::Failed {
            retry_after_ms: Some(60_000),
        };
        p.on_answer(fail, 1, 0, 0.5);
        p.on_answer(Answer::Refused { index: None }, 1, 1, 0.5);
        assert_eq!(p.send_at(2, 1, true), Some(2));
    }
}
