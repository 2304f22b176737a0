//! Pins: recordings that a pending job (an upload) still needs, so that retention
//! leaves them alone until the job ends. Held in memory; whoever owns the jobs pins
//! them again at start-up, before the video stage runs its first retention.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::segments::Segment;

/// What a job holds on to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(not(feature = "uploads"), allow(dead_code))]
pub enum Pin {
    /// Every segment that overlaps `[from, to)`.
    Range { from: SystemTime, to: SystemTime },
    /// One file.
    File(PathBuf),
}

impl Pin {
    fn holds(&self, s: &Segment) -> bool {
        match self {
            Pin::Range { from, to } => s.start < *to && s.end > *from,
            Pin::File(path) => *path == s.path,
        }
    }
}

/// The pins of every job, by the job's id. Cheap to clone; shared between the
/// stages that pin (uploads) and the one that deletes (video retention).
#[derive(Debug, Clone, Default)]
pub struct Pins(Arc<Mutex<HashMap<String, Vec<Pin>>>>);

impl Pins {
    /// Adds a pin for `owner` (a job may hold several).
    #[cfg_attr(not(feature = "uploads"), allow(dead_code))]
    pub fn pin(&self, owner: &str, pin: Pin) {
        self.lock().entry(owner.to_owned()).or_default().push(pin);
    }

    /// Releases everything `owner` held.
    #[cfg_attr(not(feature = "uploads"), allow(dead_code))]
    pub fn unpin(&self, owner: &str) {
        self.lock().remove(owner);
    }

    /// Whether any job holds this segment.
    pub fn holds(&self, s: &Segment) -> bool {
        self.lock().values().flatten().any(|p| p.holds(s))
    }

    /// Number of jobs holding pins.
    #[cfg(test)]
    pub fn owners(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Pin>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn seg(start_s: u64, len_s: u64) -> Segment {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(start_s);
        Segment {
            path: PathBuf::from(format!("/r/{start_s}.mkv")),
            start,
            end: start + Duration::from_secs(len_s),
            bytes: 1,
        }
    }

    #[test]
    fn a_range_pin_holds_the_segments_it_overlaps_until_released() {
        let pins = Pins::default();
        let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        pins.pin(
            "job-1",
            Pin::Range {
                from: t(65),
                to: t(70),
            },
        );
        assert!(!pins.holds(&seg(0, 60)));
        assert!(pins.holds(&seg(60, 60)));
        assert!(!pins.holds(&seg(120, 60)));
        pins.pin("job-2", Pin::File(PathBuf::from("/r/120.mkv")));
        assert!(pins.holds(&seg(120, 60)));
        pins.unpin("job-1");
        assert!(!pins.holds(&seg(60, 60)));
        assert_eq!(pins.owners(), 1);
    }
}
