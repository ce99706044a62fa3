//! Jittered exponential backoff, bounded by a deadline.
//!
//! The n-th wait is drawn uniformly from the upper half of `min * 2^n`, capped at `max`: with
//! `min` 20 ms and `max` 1 s, 10–20 ms, then 20–40 ms, 40–80 ms, ... and finally 0.5–1 s. A wait
//! never runs past the deadline, and [`Backoff::wait`] says whether any time is left after it, so
//! every retry loop written as `while backoff.wait(deadline).await { ... }` ends.

use std::time::Duration;

use tokio::time::Instant;

/// The smallest wait, whatever the options say: a retry loop must never spin.
const MIN_WAIT: Duration = Duration::from_millis(1);

/// The state of one retry loop's backoff.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// A backoff whose first wait is at most `min` and whose waits never exceed `max`.
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(MIN_WAIT);
        Backoff { next: min, max: max.max(min) }
    }

    /// The next wait, and doubles the one after it.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = self.next;
        self.next = (self.next * 2).min(self.max);
        ceiling.mul_f64(rand::random_range(0.5..=1.0)).max(MIN_WAIT)
    }

    /// Sleeps the next wait, or until `deadline` if that comes first. Returns whether time is
    /// left before the deadline.
    pub(crate) async fn wait(&mut self, deadline: Instant) -> bool {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        tokio::time::sleep_until((now + self.next_delay()).min(deadline)).await;
        Instant::now() < deadline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_within_their_upper_half_up_to_the_cap() {
        let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(100));
        for ceiling in [20, 40, 80, 100, 100] {
            let d = backoff.next_delay();
            let ceiling = Duration::from_millis(ceiling);
            assert!(d >= ceiling / 2 && d <= ceiling, "{d:?} not in the upper half of {ceiling:?}");
        }
    }

    #[test]
    fn a_zero_minimum_still_waits() {
        let mut backoff = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert!(backoff.next_delay() >= MIN_WAIT);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_stops_at_the_deadline() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        let deadline = Instant::now() + Duration::from_millis(10);
        assert!(!backoff.wait(deadline).await);
        assert_eq!(Instant::now(), deadline);
        assert!(!backoff.wait(deadline).await);
    }
}
