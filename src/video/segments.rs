//! The recording ring buffer on disk: which segments exist (the index: time range →
//! file), which cover a time range, where the recording has gaps, and which to delete
//! to stay within the disk budget and the maximum age (oldest first; the segment
//! being written and pinned segments are never deleted).
//!
//! The index is the directory itself: a segment's start is in its name, its end is
//! the time it was last written (its modification time). Nothing else is stored, so
//! there is nothing to get out of step after a crash.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// One recorded segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub path: PathBuf,
    /// UTC start, from the file name.
    pub start: SystemTime,
    /// When it was last written (its modification time): its end, to within a frame
    /// for closed segments; about now for the one being written.
    pub end: SystemTime,
    pub bytes: u64,
}

/// The segments that overlap `[from, to)`, oldest first.
pub fn covering(segments: &[Segment], from: SystemTime, to: SystemTime) -> Vec<Segment> {
    segments
        .iter()
        .filter(|s| s.start < to && s.end > from)
        .cloned()
        .collect()
}

/// A stretch without recording between two segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub from: SystemTime,
    pub to: SystemTime,
}

/// Between two segments of one pipeline run the next one opens within milliseconds
/// of the last write to the previous one; a longer pause is a gap (a lost source, a
/// rebuilt pipeline, a stopped daemon).
pub const GAP_TOLERANCE: Duration = Duration::from_millis(300);

/// Gaps longer than `tolerance` between consecutive segments (source lost, daemon
/// stopped, pipeline rebuilt).
pub fn gaps(segments: &[Segment], tolerance: Duration) -> Vec<Gap> {
    segments
        .windows(2)
        .filter_map(|w| {
            let (a, b) = (&w[0], &w[1]);
            let silent = b.start.duration_since(a.end).ok()?;
            (silent > tolerance).then_some(Gap {
                from: a.end,
                to: b.start,
            })
        })
        .collect()
}

/// The UTC start encoded in a segment name (`20261122T050912.023Z.mkv`).
pub fn parse_start(name: &str) -> Option<SystemTime> {
    let stem = name.strip_suffix(".mkv")?;
    if stem.len() != 20 || !stem.ends_with('Z') {
        return None;
    }
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}",
        &stem[0..4],
        &stem[4..6],
        &stem[6..8],
        &stem[9..11],
        &stem[11..13],
        &stem[13..]
    );
    humantime::parse_rfc3339(&rfc3339).ok()
}

/// The segments in `dir`, oldest first; files with other names are left alone.
pub fn scan(dir: &Path) -> std::io::Result<Vec<Segment>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(start) = name.to_str().and_then(parse_start) else {
            continue;
        };
        let meta = entry.metadata()?;
        if meta.is_file() {
            let end = meta.modified().unwrap_or(start).max(start);
            out.push(Segment {
                path: entry.path(),
                start,
                end,
                bytes: meta.len(),
            });
        }
    }
    out.sort_by_key(|s| s.start);
    Ok(out)
}

/// The limits of the ring buffer.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_bytes: u64,
    pub max_age: Duration,
    pub segment_duration: Duration,
}

/// Which segments to delete, oldest first: those older than `max_age`, then as many
/// of the oldest as needed to bring the total within `max_bytes`. The newest segment
/// (being written) and pinned ones stay whatever the limits say.
pub fn plan(
    segments: &[Segment],
    limits: Retention,
    now: SystemTime,
    pinned: impl Fn(&Segment) -> bool,
) -> Vec<PathBuf> {
    let mut total: u64 = segments.iter().map(|s| s.bytes).sum();
    let Some((_writing, closed)) = segments.split_last() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for s in closed {
        if pinned(s) {
            continue;
        }
        let end = s.end.max(s.start + limits.segment_duration);
        let too_old = !limits.max_age.is_zero()
            && now
                .duration_since(end)
                .is_ok_and(|age| age > limits.max_age);
        if too_old || total > limits.max_bytes {
            total -= s.bytes;
            out.push(s.path.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(n: u64, bytes: u64) -> Segment {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + n * 60);
        Segment {
            path: PathBuf::from(format!("/r/{n}.mkv")),
            start,
            end: start + Duration::from_secs(60),
            bytes,
        }
    }

    fn none(_: &Segment) -> bool {
        false
    }

    fn limits(max_bytes: u64, max_age_s: u64) -> Retention {
        Retention {
            max_bytes,
            max_age: Duration::from_secs(max_age_s),
            segment_duration: Duration::from_secs(60),
        }
    }

    #[test]
    fn names_parse_back_to_their_utc_start() {
        let t = parse_start("20261122T050912.023Z.mkv").unwrap();
        assert_eq!(
            humantime::format_rfc3339_millis(t).to_string(),
            "2026-11-22T05:09:12.023Z"
        );
        for bad in [
            "x.mkv",
            "20261122T050912.023Z.mp4",
            "20261122T050912Z.mkv",
            "notes.txt",
        ] {
            assert!(parse_start(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn over_budget_deletes_the_oldest_first_but_never_the_one_being_written() {
        let segs: Vec<_> = (0..5).map(|n| seg(n, 100)).collect();
        let now = segs[4].start;
        let out = plan(&segs, limits(250, 0), now, none);
        assert_eq!(
            out,
            vec![
                PathBuf::from("/r/0.mkv"),
                PathBuf::from("/r/1.mkv"),
                PathBuf::from("/r/2.mkv")
            ]
        );
        let out = plan(&segs[4..], limits(10, 0), now, none);
        assert!(out.is_empty(), "the segment being written stays");
    }

    #[test]
    fn pinned_segments_survive_and_the_next_oldest_go_instead() {
        let segs: Vec<_> = (0..4).map(|n| seg(n, 100)).collect();
        let pinned = |s: &Segment| s.path == Path::new("/r/0.mkv");
        let out = plan(&segs, limits(200, 0), segs[3].start, pinned);
        assert_eq!(
            out,
            vec![PathBuf::from("/r/1.mkv"), PathBuf::from("/r/2.mkv")]
        );
    }

    #[test]
    fn segments_past_max_age_go_even_within_budget() {
        let segs: Vec<_> = (0..4).map(|n| seg(n, 1)).collect();
        // Three minutes after the last start: segment 0 ended 5 min ago, 1 ended 4.
        let now = segs[3].start + Duration::from_secs(180);
        let out = plan(&segs, limits(1 << 30, 250), now, none);
        assert_eq!(out, vec![PathBuf::from("/r/0.mkv")]);
    }

    #[test]
    fn a_range_is_covered_by_every_segment_it_touches() {
        let segs: Vec<_> = (0..5).map(|n| seg(n, 1)).collect();
        let at = |s: u64| segs[0].start + Duration::from_secs(s);
        let names = |v: Vec<Segment>| v.into_iter().map(|s| s.path).collect::<Vec<_>>();
        assert_eq!(
            names(covering(&segs, at(90), at(150))),
            vec![PathBuf::from("/r/1.mkv"), PathBuf::from("/r/2.mkv")]
        );
        assert_eq!(
            names(covering(&segs, at(60), at(120))),
            vec![PathBuf::from("/r/1.mkv")]
        );
        assert!(covering(&segs, at(400), at(500)).is_empty());
    }

    #[test]
    fn a_pause_between_segments_shows_as_a_gap() {
        let mut segs: Vec<_> = (0..3).map(|n| seg(n, 1)).collect();
        segs[2].start += Duration::from_secs(7);
        let g = gaps(&segs, Duration::from_secs(2));
        assert_eq!(
            g,
            vec![Gap {
                from: segs[1].end,
                to: segs[2].start
            }]
        );
    }
}
