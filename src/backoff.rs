//! Exponential backoff with full jitter, without I/O: the waits between tries of
//! the MQTT connection, the video pipeline and the uploads.

use std::time::Duration;

/// Exponential backoff with full jitter: the n-th delay is uniform in
/// `[0, min(max, min_delay * 2^n)]`.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The next delay, given a uniform random number in `[0, 1)`.
    pub fn next_delay(&mut self, unit_random: f64) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(30));
        let ceiling = self.min.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        ceiling.mul_f64(unit_random.clamp(0.0, 1.0))
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// New bounds, from the next delay on.
    pub fn set_bounds(&mut self, min: Duration, max: Duration) {
        self.min = min;
        self.max = max.max(min);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_bound_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
        let delays: Vec<_> = (0..6).map(|_| b.next_delay(1.0)).collect();
        assert_eq!(
            delays,
            [1, 2, 4, 8, 10, 10].map(Duration::from_secs).to_vec()
        );
        assert!(b.next_delay(0.5) <= Duration::from_secs(5));
        b.reset();
        assert_eq!(b.next_delay(1.0), Duration::from_secs(1));
        assert_eq!(b.next_delay(0.0), Duration::ZERO);
    }
}
