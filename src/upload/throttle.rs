//! The bandwidth cap shared by every upload: a token bucket of bytes refilled at
//! `upload.max_bytes_per_sec` with one second of burst. Zero means no cap.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct Throttle {
    /// Tokens, when they were counted, and the rate (shared: a new rate applies
    /// to the uploads already running).
    bucket: Arc<Mutex<(f64, Instant, u64)>>,
}

impl Throttle {
    pub fn new(bytes_per_sec: u64) -> Self {
        Self {
            bucket: Arc::new(Mutex::new((
                bytes_per_sec as f64,
                Instant::now(),
                bytes_per_sec,
            ))),
        }
    }

    /// A new cap for every upload, running or not (0: none).
    pub fn set_rate(&self, bytes_per_sec: u64) {
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        if b.2 != bytes_per_sec {
            *b = (bytes_per_sec as f64, Instant::now(), bytes_per_sec);
        }
    }

    /// How long to wait before sending `n` bytes at `now` (and takes them).
    fn reserve(&self, n: u64, now: Instant) -> Duration {
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, at, rate) = &mut *b;
        if *rate == 0 {
            return Duration::ZERO;
        }
        let rate = *rate as f64;
        let refill = now.saturating_duration_since(*at).as_secs_f64() * rate;
        *tokens = (*tokens + refill).min(rate) - n as f64;
        *at = now;
        if *tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-*tokens / rate)
        }
    }

    /// Waits until `n` more bytes may go.
    pub async fn take(&self, n: u64) {
        let wait = self.reserve(n, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_one_second_then_the_rate() {
        let t = Throttle::new(1000);
        let now = Instant::now();
        assert_eq!(t.reserve(1000, now), Duration::ZERO);
        assert_eq!(t.reserve(500, now), Duration::from_millis(500));
        // Half a second later the debt is paid; 250 more bytes wait 250 ms.
        let later = now + Duration::from_millis(500);
        assert_eq!(t.reserve(250, later), Duration::from_millis(250));
    }

    #[test]
    fn zero_means_no_cap() {
        let t = Throttle::new(0);
        assert_eq!(t.reserve(1 << 40, Instant::now()), Duration::ZERO);
    }

    #[test]
    fn a_new_rate_applies_at_once_to_every_holder() {
        let t = Throttle::new(1000);
        let running = t.clone();
        let now = Instant::now();
        assert_eq!(running.reserve(1000, now), Duration::ZERO);
        t.set_rate(0);
        assert_eq!(running.reserve(1_000_000, now), Duration::ZERO, "no cap");
        t.set_rate(100);
        let now = Instant::now();
        assert_eq!(running.reserve(100, now), Duration::ZERO);
        assert_eq!(running.reserve(50, now), Duration::from_millis(500));
    }
}
