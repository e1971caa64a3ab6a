//! The publish rate limit of one analysis: a token bucket, pure and clocked by the caller
//! (`now_ms`), so the Durable Object only keeps one in memory and asks it.
//!
//! Tokens are counted in thousandths so the refill is exact integer arithmetic: at `rate`
//! batches a second the bucket gains `rate` milli-tokens a millisecond, and a batch costs
//! 1000. An object that is evicted and rebuilt starts with a full bucket again.

/// Milli-tokens one batch costs.
const COST: u64 = 1000;

/// A token bucket of publish batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishBucket {
    /// Batches per second, sustained.
    rate: u64,
    /// Batches that may go at once after a quiet spell.
    burst: u64,
    /// Milli-tokens available at `last_ms`.
    tokens: u64,
    last_ms: i64,
}

/// A refused batch: wait this long before the next one can pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after_ms: u64,
}

impl Limited {
    /// What the 429 says, for a bucket of `rate` batches a second and `burst`.
    pub fn message(&self, rate: u64, burst: u64) -> String {
        format!(
            "this analysis takes at most {rate} publish batches a second (bursts of {burst}): retry after {} s",
            self.retry_after_secs()
        )
    }

    /// The `Retry-After` header's value: whole seconds, rounded up, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after_ms.div_ceil(1000).max(1)
    }
}

impl PublishBucket {
    /// A full bucket at `now_ms`. `rate` and `burst` are raised to at least 1.
    pub fn new(rate: u64, burst: u64, now_ms: i64) -> Self {
        let rate = rate.max(1);
        let burst = burst.max(1);
        Self {
            rate,
            burst,
            tokens: burst.saturating_mul(COST),
            last_ms: now_ms,
        }
    }

    pub fn rate(&self) -> u64 {
        self.rate
    }

    pub fn burst(&self) -> u64 {
        self.burst
    }

    fn refill(&mut self, now_ms: i64) {
        // A clock that steps back refills nothing and does not move `last_ms` back.
        if now_ms > self.last_ms {
            let elapsed = (now_ms - self.last_ms) as u64;
            let capacity = self.burst.saturating_mul(COST);
            self.tokens = self
                .tokens
                .saturating_add(elapsed.saturating_mul(self.rate))
                .min(capacity);
            self.last_ms = now_ms;
        }
    }

    /// Takes a token from the bucket in `slot` at `now_ms`; an empty slot, or a bucket of
    /// other settings (the vars changed), starts a new full one.
    pub fn take_from(
        slot: &mut Option<Self>,
        rate: u64,
        burst: u64,
        now_ms: i64,
    ) -> Result<(), Limited> {
        let fresh = Self::new(rate, burst, now_ms);
        match slot {
            Some(b) if (b.rate, b.burst) == (fresh.rate, fresh.burst) => b.take(now_ms),
            _ => slot.insert(fresh).take(now_ms),
        }
    }

    /// Takes one batch's token at `now_ms`, or says how long until one is there.
    pub fn take(&mut self, now_ms: i64) -> Result<(), Limited> {
        self.refill(now_ms);
        if self.tokens >= COST {
            self.tokens -= COST;
            Ok(())
        } else {
            Err(Limited {
                retry_after_ms: (COST - self.tokens).div_ceil(self.rate),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000_000;

    #[test]
    fn a_full_bucket_lets_the_burst_through_then_refuses() {
        let mut b = PublishBucket::new(50, 100, T0);
        for i in 0..100 {
            assert_eq!(b.take(T0), Ok(()), "batch {i}");
        }
        // Empty: one batch's worth comes back in 1000 / 50 = 20 ms.
        assert_eq!(b.take(T0), Err(Limited { retry_after_ms: 20 }));
        assert_eq!(b.take(T0 + 19), Err(Limited { retry_after_ms: 1 }));
        assert_eq!(b.take(T0 + 20), Ok(()));
        assert!(b.take(T0 + 20).is_err());
    }

    #[test]
    fn the_sustained_rate_is_the_configured_one() {
        let mut b = PublishBucket::new(50, 100, T0);
        while b.take(T0).is_ok() {}
        // Trying every millisecond for 10 s passes exactly 50 a second.
        let passed = (1..=10_000).filter(|ms| b.take(T0 + ms).is_ok()).count();
        assert_eq!(passed, 500);
    }

    #[test]
    fn the_bucket_never_holds_more_than_the_burst() {
        let mut b = PublishBucket::new(2, 4, T0);
        let later = T0 + 3_600_000;
        let passed = (0..10).filter(|_| b.take(later).is_ok()).count();
        assert_eq!(passed, 4);
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_at_least_one() {
        let mut slow = PublishBucket::new(1, 1, T0);
        assert!(slow.take(T0).is_ok());
        let limited = slow.take(T0 + 1).unwrap_err();
        assert_eq!(limited.retry_after_ms, 999);
        assert_eq!(limited.retry_after_secs(), 1);
        assert_eq!(Limited { retry_after_ms: 1 }.retry_after_secs(), 1);
        assert_eq!(
            Limited {
                retry_after_ms: 1001
            }
            .retry_after_secs(),
            2
        );
        assert_eq!(Limited { retry_after_ms: 0 }.retry_after_secs(), 1);
    }

    #[test]
    fn waiting_retry_after_is_always_enough() {
        for rate in [1, 2, 3, 7, 50, 1000, 5000] {
            let mut b = PublishBucket::new(rate, rate * 2, T0);
            let mut now = T0;
            for _ in 0..20 {
                while b.take(now).is_ok() {}
                let limited = b.take(now).unwrap_err();
                now += limited.retry_after_ms as i64;
                assert_eq!(b.take(now), Ok(()), "rate {rate}");
                // The header's whole seconds are never shorter than the exact wait.
                assert!(limited.retry_after_secs() * 1000 >= limited.retry_after_ms);
            }
        }
    }

    #[test]
    fn a_clock_stepping_back_refills_nothing() {
        let mut b = PublishBucket::new(10, 1, T0);
        assert!(b.take(T0).is_ok());
        assert!(b.take(T0 - 5_000).is_err());
        // Refill counts from the latest time seen, not from the step back.
        assert!(b.take(T0 + 99).is_err());
        assert!(b.take(T0 + 100).is_ok());
    }

    #[test]
    fn a_slot_keeps_its_bucket_until_the_settings_change() {
        let mut slot = None;
        assert!(PublishBucket::take_from(&mut slot, 1, 1, T0).is_ok());
        assert!(PublishBucket::take_from(&mut slot, 1, 1, T0).is_err());
        // new settings: a new, full bucket
        assert!(PublishBucket::take_from(&mut slot, 2, 1, T0).is_ok());
        assert_eq!(slot.map(|b| (b.rate(), b.burst())), Some((2, 1)));
    }

    #[test]
    fn zero_settings_are_raised_to_one() {
        let b = PublishBucket::new(0, 0, T0);
        assert_eq!((b.rate(), b.burst()), (1, 1));
    }
}
