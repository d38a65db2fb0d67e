//! A token bucket per connection: a sustained message rate with room for bursts.

use std::time::Instant;

/// Tokens are counted in thousandths so that slow rates refill smoothly.
const MILLI: u64 = 1000;

#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Thousandths of a message available now.
    milli_tokens: u64,
    last_refill: Instant,
}

/// How a message fared against the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Over the rate: refuse this one message.
    Refused,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(burst: u32, now: Instant) -> Self {
        TokenBucket { milli_tokens: u64::from(burst) * MILLI, last_refill: now }
    }

    /// Takes one token if there is one, after adding what `rate_per_sec` earned since the last call.
    pub fn take(&mut self, rate_per_sec: u32, burst: u32, now: Instant) -> Verdict {
        let elapsed_us = now.saturating_duration_since(self.last_refill).as_micros();
        // Thousandths earned = rate * elapsed_us / 1000; computed in u128, so no overflow.
        let earned = u128::from(rate_per_sec) * elapsed_us / 1000;
        if earned > 0 {
            let capacity = u64::from(burst) * MILLI;
            let refilled = u128::from(self.milli_tokens) + earned;
            self.milli_tokens = u64::try_from(refilled).unwrap_or(u64::MAX).min(capacity);
            self.last_refill = now;
        }
        if self.milli_tokens >= MILLI {
            self.milli_tokens -= MILLI;
            Verdict::Allowed
        } else {
            Verdict::Refused
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_sustained_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(5, start);
        for _ in 0..5 {
            assert_eq!(bucket.take(10, 5, start), Verdict::Allowed);
        }
        assert_eq!(bucket.take(10, 5, start), Verdict::Refused);
        // 10 per second: one token every 100 ms.
        assert_eq!(bucket.take(10, 5, start + Duration::from_millis(99)), Verdict::Refused);
        assert_eq!(bucket.take(10, 5, start + Duration::from_millis(101)), Verdict::Allowed);
    }

    #[test]
    fn refill_never_exceeds_the_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(3, start);
        let later = start + Duration::from_secs(3600);
        let allowed = (0..10).filter(|_| bucket.take(100, 3, later) == Verdict::Allowed).count();
        assert_eq!(allowed, 3);
    }

    #[test]
    fn time_going_backwards_is_harmless() {
        let start = Instant::now() + Duration::from_secs(1);
        let mut bucket = TokenBucket::new(1, start);
        assert_eq!(bucket.take(1, 1, start - Duration::from_secs(1)), Verdict::Allowed);
        assert_eq!(bucket.take(1, 1, start - Duration::from_secs(1)), Verdict::Refused);
    }
}
