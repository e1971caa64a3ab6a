//! Time left, from a smoothed rate of overall progress, the way tqdm does it.
//!
//! Between two receive times the estimator sees `dp` (progress gained) and `dt`
//! (milliseconds elapsed). It keeps an exponential moving average of each, with weight
//! [`SMOOTHING`] on the newest interval, and the rate is `ema(dp) / ema(dt)`. Averaging
//! `dp` and `dt` separately (rather than `dp/dt`) keeps one short, lucky interval from
//! dominating. ETA = (1 − p) / rate: `None` until one interval has been measured, or
//! while the smoothed rate is 0.
//!
//! Times are the edge's receive times, so a node with a skewed clock cannot distort it.
//! Events of one batch share a receive time: they count as one sample (the latest
//! progress at that time), whether they arrive in one batch or are replayed one by one.

use serde::{Deserialize, Serialize};

/// Weight of the newest interval in the moving averages: 0 = average speed since the
/// start, 1 = instantaneous speed. tqdm's default.
pub const SMOOTHING: f64 = 0.3;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Sample {
    t: i64,
    p: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Averages {
    dp: f64,
    dt: f64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub(super) struct Eta {
    /// The latest sample before `current.t`.
    previous: Option<Sample>,
    /// The latest sample.
    current: Option<Sample>,
    /// The averages before `current.t`, so a later sample at the same time replaces,
    /// rather than adds to, that time's interval.
    before: Option<Averages>,
    /// The averages including `current`.
    now: Option<Averages>,
}

impl Eta {
    /// Records overall progress `p` at receive time `t` (never earlier than the last).
    pub(super) fn observe(&mut self, t: i64, p: f64) {
        match self.current {
            Some(current) if t > current.t => {
                self.previous = Some(current);
                self.before = self.now;
            }
            _ => {}
        }
        let current = Sample { t, p };
        self.current = Some(current);
        let Some(previous) = self.previous else {
            return;
        };
        // Receive times may repeat, never go back: dt > 0 here.
        let dt = (current.t - previous.t) as f64;
        let dp = current.p - previous.p;
        self.now = Some(match self.before {
            None => Averages { dp, dt },
            Some(a) => Averages {
                dp: SMOOTHING * dp + (1.0 - SMOOTHING) * a.dp,
                dt: SMOOTHING * dt + (1.0 - SMOOTHING) * a.dt,
            },
        });
    }

    /// Milliseconds left at overall progress `p`, once there is a positive rate.
    pub(super) fn eta_ms(&self, p: f64) -> Option<u64> {
        let a = self.now?;
        if a.dp <= 0.0 || a.dt <= 0.0 {
            return None;
        }
        let left = (1.0 - p).max(0.0) * a.dt / a.dp;
        // `as` saturates: an absurdly slow rate reads as u64::MAX rather than wrapping.
        Some(left.round() as u64)
    }
}
