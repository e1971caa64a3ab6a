//! Exponential backoff with full jitter, the one retry schedule of every Stagecast client.

/// A delay ceiling that doubles per attempt from `base_ms` up to `cap_ms`; the delay is
/// uniform below it (full jitter), so many clients that failed together spread out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base_ms: u64,
    pub cap_ms: u64,
}

impl Backoff {
    /// The ceiling of the `attempt`th retry (attempt 0 waits up to `base_ms`).
    pub fn ceiling_ms(&self, attempt: u32) -> u64 {
        self.base_ms
            .saturating_mul(1u64 << attempt.min(32))
            .min(self.cap_ms)
    }

    /// The wait before the `attempt`th retry; `jitter` is uniform in [0, 1).
    pub fn delay_ms(&self, attempt: u32, jitter: f64) -> u64 {
        (self.ceiling_ms(attempt) as f64 * jitter.clamp(0.0, 1.0)) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_doubles_to_the_cap_and_the_delay_is_below_it() {
        let b = Backoff {
            base_ms: 250,
            cap_ms: 5_000,
        };
        let ceilings: Vec<u64> = (0..7).map(|a| b.ceiling_ms(a)).collect();
        assert_eq!(ceilings, [250, 500, 1_000, 2_000, 4_000, 5_000, 5_000]);
        assert_eq!(b.ceiling_ms(u32::MAX), 5_000);
        assert_eq!(b.delay_ms(3, 0.0), 0);
        assert_eq!(b.delay_ms(3, 0.5), 1_000);
        assert_eq!(b.delay_ms(3, 0.999), 1_998);
    }
}
