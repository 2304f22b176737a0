//! The broker's ceilings as pure state machines: a sliding-window rate limiter for
//! publishes and bytes, and the batch size that wastes no billing step.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Enforces "at most `max_msgs` publishes and `max_bytes` bytes in any window of
/// `window`" exactly, by remembering what was sent within the last window.
#[derive(Debug)]
pub struct RateLimiter {
    window: Duration,
    max_msgs: usize,
    max_bytes: u64,
    sent: VecDeque<(Instant, u64)>,
    bytes_in_window: u64,
}

/// The per-second ceilings are enforced over windows this much longer than a second,
/// so that a few milliseconds of jitter on the way to the broker cannot make two
/// bursts one second apart look like one second's traffic over the limit. Costs
/// about 3% of the bandwidth ceiling.
pub const WINDOW_MARGIN: Duration = Duration::from_millis(30);

impl RateLimiter {
    /// Per-second ceilings (with [`WINDOW_MARGIN`]).
    pub fn new(max_msgs: u32, max_bytes: u64) -> Self {
        Self::with_window(Duration::from_secs(1) + WINDOW_MARGIN, max_msgs, max_bytes)
    }

    pub fn with_window(window: Duration, max_msgs: u32, max_bytes: u64) -> Self {
        Self {
            window,
            max_msgs: max_msgs.max(1) as usize,
            max_bytes,
            sent: VecDeque::new(),
            bytes_in_window: 0,
        }
    }

    /// New ceilings, from the next check on; what was sent stays counted.
    pub fn set_limits(&mut self, max_msgs: u32, max_bytes: u64) {
        self.max_msgs = max_msgs.max(1) as usize;
        self.max_bytes = max_bytes;
    }

    fn prune(&mut self, now: Instant) {
        while let Some(&(t, b)) = self.sent.front() {
            if t + self.window <= now {
                self.sent.pop_front();
                self.bytes_in_window -= b;
            } else {
                break;
            }
        }
    }

    /// `Ok` if a message of `bytes` may go now; else the instant it may.
    pub fn check(&mut self, now: Instant, bytes: u64) -> Result<(), Instant> {
        self.prune(now);
        let mut wait_until: Option<Instant> = None;
        if self.sent.len() >= self.max_msgs {
            let (t, _) = self.sent[self.sent.len() - self.max_msgs];
            wait_until = Some(t + self.window);
        }
        if self.bytes_in_window + bytes > self.max_bytes {
            let mut freed = 0;
            for &(t, b) in &self.sent {
                freed += b;
                if self.bytes_in_window - freed + bytes <= self.max_bytes {
                    let at = t + self.window;
                    wait_until = Some(wait_until.map_or(at, |w| w.max(at)));
                    break;
                }
            }
        }
        match wait_until {
            Some(at) if at > now => Err(at),
            _ => Ok(()),
        }
    }

    /// Records a message sent at `now`.
    pub fn record(&mut self, now: Instant, bytes: u64) {
        self.sent.push_back((now, bytes));
        self.bytes_in_window += bytes;
    }
}

/// The largest batch payload to build: the message ceiling rounded down to a whole
/// number of billing steps, so a full batch never pays for a partial step.
pub fn pack_limit(max_message_bytes: usize, billing_step: usize) -> usize {
    if billing_step == 0 || billing_step > max_message_bytes {
        return max_message_bytes;
    }
    (max_message_bytes / billing_step) * billing_step
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_allows_exactly_max_msgs_per_window() {
        let t0 = Instant::now();
        let mut l = RateLimiter::with_window(Duration::from_secs(1), 3, 1 << 20);
        for i in 0..3 {
            let now = t0 + Duration::from_millis(i * 10);
            assert_eq!(l.check(now, 10), Ok(()));
            l.record(now, 10);
        }
        let now = t0 + Duration::from_millis(30);
        assert_eq!(l.check(now, 10), Err(t0 + Duration::from_secs(1)));
        assert_eq!(l.check(t0 + Duration::from_secs(1), 10), Ok(()));
    }

    #[test]
    fn limiter_waits_until_enough_bytes_leave_the_window() {
        let t0 = Instant::now();
        let mut l = RateLimiter::with_window(Duration::from_secs(1), 100, 1000);
        l.record(t0, 600);
        l.record(t0 + Duration::from_millis(100), 300);
        // 900 in the window; 200 more needs the first 600 to leave.
        assert_eq!(
            l.check(t0 + Duration::from_millis(200), 200),
            Err(t0 + Duration::from_secs(1))
        );
        assert_eq!(l.check(t0 + Duration::from_millis(200), 100), Ok(()));
    }

    #[test]
    fn limiter_never_exceeds_ceilings_in_any_window() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(5, 5000);
        let mut log = Vec::new();
        let mut now = t0;
        while now < t0 + Duration::from_secs(5) {
            match l.check(now, 1300) {
                Ok(()) => {
                    l.record(now, 1300);
                    log.push(now);
                }
                Err(at) => now = at,
            }
        }
        for (i, &t) in log.iter().enumerate() {
            let in_window = log[i..]
                .iter()
                .take_while(|&&u| u < t + Duration::from_secs(1))
                .count();
            assert!(
                in_window <= 3,
                "{in_window} messages of 1300 bytes in one second"
            );
        }
    }

    #[test]
    fn pack_limit_is_a_whole_number_of_billing_steps() {
        assert_eq!(pack_limit(131072, 5120), 128000);
        assert_eq!(pack_limit(4000, 5120), 4000);
        assert_eq!(pack_limit(10240, 5120), 10240);
    }
}
