//! Decisions without I/O: whether a failed attempt is retried and when, and when a
//! progress message is due.

use std::time::Duration;

use crate::backoff::Backoff;

/// How an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The network, the server, an expired credential: worth another attempt.
    Transient,
    /// The source is gone, the destination refused the request (403, 400): final.
    Permanent,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    RetryIn(Duration),
    GiveUp,
}

/// Retry policy of one job.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub min: Duration,
    pub max: Duration,
    pub max_attempts: u32,
}

impl Retry {
    /// After `attempts` failed attempts (this one included); `jitter` in [0, 1).
    pub fn next(&self, attempts: u32, failure: Failure, jitter: f64) -> Next {
        if failure == Failure::Permanent || attempts >= self.max_attempts {
            return Next::GiveUp;
        }
        let mut backoff = Backoff::new(self.min, self.max);
        let mut delay = Duration::ZERO;
        for _ in 0..attempts.clamp(1, 32) {
            delay = backoff.next_delay(jitter);
        }
        Next::RetryIn(delay.max(self.min / 2))
    }
}

/// Paces progress messages: the first at once, then at most one per `interval`,
/// and never two for the same byte count.
#[derive(Debug, Clone)]
pub struct Progress {
    interval: Duration,
    last: Option<(Duration, u64)>,
}

impl Progress {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
        }
    }

    /// Whether a message for `bytes` sent at `elapsed` (since the job started) is due.
    pub fn due(&mut self, elapsed: Duration, bytes: u64) -> bool {
        let due = match self.last {
            None => true,
            Some((at, b)) => b != bytes && elapsed.saturating_sub(at) >= self.interval,
        };
        if due {
            self.last = Some((elapsed, bytes));
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RETRY: Retry = Retry {
        min: Duration::from_secs(2),
        max: Duration::from_secs(60),
        max_attempts: 5,
    };

    #[test]
    fn transient_failures_retry_with_growing_delays_until_the_attempts_run_out() {
        let d = |n| match RETRY.next(n, Failure::Transient, 0.999) {
            Next::RetryIn(d) => d,
            Next::GiveUp => panic!("gave up after {n}"),
        };
        assert!(
            d(1) <= d(3) && d(3) <= Duration::from_secs(60),
            "{:?} {:?}",
            d(1),
            d(3)
        );
        assert_eq!(RETRY.next(5, Failure::Transient, 0.5), Next::GiveUp);
    }

    #[test]
    fn permanent_failures_are_final_at_once() {
        assert_eq!(RETRY.next(1, Failure::Permanent, 0.5), Next::GiveUp);
    }

    #[test]
    fn progress_is_sent_at_most_once_per_interval() {
        let mut p = Progress::new(Duration::from_secs(5));
        let s = Duration::from_secs;
        assert!(p.due(s(0), 0));
        assert!(!p.due(s(3), 100));
        assert!(p.due(s(5), 200));
        assert!(!p.due(s(11), 200), "nothing new to say");
        assert!(p.due(s(12), 300));
    }
}
