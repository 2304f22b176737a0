//! Vehicles whose plate was never read, without I/O (`plates.unread_vehicles`).
//!
//! With the object detector, every confirmed vehicle track is followed here from
//! its first frame to its end. The plate-reading stage tells the ledger which
//! texts were read inside each vehicle's box and which plates it reported; a
//! vehicle that left the picture, moved (a parked car is not traffic) and got no
//! plate event is reported as unread — once the plate tracker has had time to
//! report it (`grace` after the vehicle's track ended, in capture time of frames
//! read). So traffic seen by the plate reader stays countable from plate events
//! alone.
//!
//! `S` is whatever the caller keeps of a frame (the stage keeps the frame, for a
//! snapshot of the vehicle at its largest).

use std::collections::BTreeMap;

use super::tracker::{direction, Alternate, Direction};

/// Why a vehicle is reported without a plate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// No text at or above `plates.min_confidence` was read in its box.
    NotRead,
    /// Texts were read, too few times for a plate track (`plates.min_reads`).
    TooFewReads,
}

/// A vehicle seen in one frame: its detector track, class and box (left, top,
/// right, bottom in frame pixels).
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub track: u64,
    pub class: &'static str,
    pub bbox: [f32; 4],
}

/// What the ledger reports of a vehicle without a plate.
#[derive(Debug, Clone, PartialEq)]
pub struct Unread<S> {
    pub track: u64,
    pub class: &'static str,
    pub reason: Reason,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    /// `[x, y, width, height]` of the vehicle in the kept frame, pixels.
    pub bbox: [u32; 4],
    pub direction: Option<Direction>,
    /// Texts read in its box, most reads first (at most four).
    pub texts: Vec<Alternate>,
    /// Reads of all texts.
    pub reads: u32,
    /// The caller's keepsake of the frame where the vehicle looked largest.
    pub snapshot: Option<S>,
}

#[derive(Debug)]
struct Entry<S> {
    class: &'static str,
    first_seen_ms: i64,
    last_seen_ms: i64,
    first_box: [u32; 4],
    last_box: [u32; 4],
    /// The largest box so far, and the keepsake of its frame.
    best: Option<(u32, [u32; 4], S)>,
    texts: Vec<Alternate>,
    plated: bool,
    /// Capture time after which an ended vehicle is settled.
    due_ms: Option<i64>,
}

/// Vehicles followed until they are settled.
#[derive(Debug)]
pub struct Ledger<S> {
    grace_ms: i64,
    entries: BTreeMap<u64, Entry<S>>,
    /// Vehicles settled without a plate that did not move (not reported) since
    /// [`Ledger::take_unmoved`] was last called.
    unmoved: u64,
}

fn xywh(b: &[f32; 4]) -> [u32; 4] {
    let (x0, y0) = (b[0].max(0.0), b[1].max(0.0));
    [
        x0 as u32,
        y0 as u32,
        (b[2] - x0).max(1.0) as u32,
        (b[3] - y0).max(1.0) as u32,
    ]
}

impl<S: Clone> Ledger<S> {
    /// `grace_ms`: how long after a vehicle's track ended its plate may still be
    /// reported (the plate tracker's timeout and a margin).
    pub fn new(grace_ms: i64) -> Self {
        Self {
            grace_ms,
            entries: BTreeMap::new(),
            unmoved: 0,
        }
    }

    /// Vehicles followed, ended or not.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    /// The confirmed vehicles seen in a frame captured at `t_ms`, and whether each
    /// track the ledger follows is still alive in the detector's tracker
    /// (`alive(track)`): one that is not has ended at `t_ms`.
    pub fn seen(&mut self, t_ms: i64, seen: &[Seen], alive: impl Fn(u64) -> bool, keep: &S) {
        for s in seen {
            let b = xywh(&s.bbox);
            let area = b[2] * b[3];
            let e = self.entries.entry(s.track).or_insert_with(|| Entry {
                class: s.class,
                first_seen_ms: t_ms,
                last_seen_ms: t_ms,
                first_box: b,
                last_box: b,
                best: None,
                texts: Vec::new(),
                plated: false,
                due_ms: None,
            });
            e.class = s.class;
            e.last_seen_ms = t_ms;
            e.last_box = b;
            e.due_ms = None;
            if e.best.as_ref().is_none_or(|(a, ..)| area > *a) {
                e.best = Some((area, b, keep.clone()));
            }
        }
        let grace = self.grace_ms;
        for (track, e) in self.entries.iter_mut() {
            if e.due_ms.is_none() && !alive(*track) {
                e.due_ms = Some(t_ms + grace);
            }
        }
    }

    /// A text read at `confidence` inside vehicle `track`'s box.
    pub fn read(&mut self, track: u64, text: &str, confidence: f32) {
        let Some(e) = self.entries.get_mut(&track) else {
            return;
        };
        match e.texts.iter_mut().find(|a| a.text == text) {
            Some(a) => {
                a.reads += 1;
                a.confidence = a.confidence.max(confidence);
            }
            None => e.texts.push(Alternate {
                text: text.to_owned(),
                confidence,
                reads: 1,
            }),
        }
    }

    /// A plate event was published: for the vehicle whose box held it (`owner`),
    /// and for every vehicle in whose box any of `texts` was read (a track that
    /// changed its number half-way keeps its plate).
    pub fn plated(&mut self, owner: Option<u64>, texts: &[&str]) {
        for (track, e) in self.entries.iter_mut() {
            if Some(*track) == owner || e.texts.iter().any(|a| texts.contains(&a.text.as_str())) {
                e.plated = true;
            }
        }
    }

    /// The vehicles settled by capture time `now_ms`: ended at least the grace
    /// ago. Those that got no plate and moved are reported; the rest forgotten.
    pub fn due(&mut self, now_ms: i64) -> Vec<Unread<S>> {
        let settled: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, e)| e.due_ms.is_some_and(|d| d <= now_ms))
            .map(|(t, _)| *t)
            .collect();
        self.take(settled)
    }

    /// Every vehicle still followed, settled now (at shutdown, after the plate
    /// tracker has reported everything it had).
    pub fn finish(&mut self) -> Vec<Unread<S>> {
        let all: Vec<u64> = self.entries.keys().copied().collect();
        self.take(all)
    }

    /// How many vehicles without a plate were left out for not moving since the
    /// last call (parked cars: counted, not reported).
    pub fn take_unmoved(&mut self) -> u64 {
        std::mem::take(&mut self.unmoved)
    }

    fn take(&mut self, tracks: Vec<u64>) -> Vec<Unread<S>> {
        let mut out = Vec::new();
        for track in tracks {
            let Some(e) = self.entries.remove(&track) else {
                continue;
            };
            let direction = direction(e.first_box, e.last_box);
            if e.plated {
                continue;
            }
            if direction.is_none() {
                self.unmoved += 1;
                continue;
            }
            let mut texts = e.texts;
            texts.sort_by(|a, b| {
                b.reads
                    .cmp(&a.reads)
                    .then(b.confidence.total_cmp(&a.confidence))
            });
            let reads = texts.iter().map(|a| a.reads).sum();
            texts.truncate(4);
            let (bbox, snapshot) = match e.best {
                Some((_, b, s)) => (b, Some(s)),
                None => (e.last_box, None),
            };
            out.push(Unread {
                track,
                class: e.class,
                reason: if reads == 0 {
                    Reason::NotRead
                } else {
                    Reason::TooFewReads
                },
                first_seen_ms: e.first_seen_ms,
                last_seen_ms: e.last_seen_ms,
                bbox,
                direction,
                texts,
                reads,
                snapshot,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn car(track: u64, x: f32) -> Seen {
        Seen {
            track,
            class: "car",
            bbox: [x, 100.0, x + 200.0, 250.0],
        }
    }

    /// A car driving right over `frames` frames 200 ms apart from `t0`.
    fn drive(l: &mut Ledger<u32>, track: u64, t0: i64, frames: i64) -> i64 {
        for i in 0..frames {
            l.seen(
                t0 + i * 200,
                &[car(track, i as f32 * 60.0)],
                |_| true,
                &(i as u32),
            );
        }
        t0 + frames * 200
    }

    #[test]
    fn a_vehicle_never_read_is_reported_once_after_the_grace() {
        let mut l = Ledger::new(3_000);
        let end = drive(&mut l, 7, 0, 10);
        l.seen(end, &[], |_| false, &99);
        assert!(l.due(end + 2_999).is_empty(), "the plate may still come");
        let u = l.due(end + 3_000);
        assert_eq!(u.len(), 1);
        let u = &u[0];
        assert_eq!((u.track, u.class, u.reason), (7, "car", Reason::NotRead));
        assert_eq!(u.direction, Some(Direction::Right));
        assert_eq!((u.first_seen_ms, u.last_seen_ms), (0, 1_800));
        assert_eq!(u.reads, 0);
        assert_eq!(u.snapshot, Some(0), "the first box is as large as any");
        assert!(l.due(end + 10_000).is_empty());
        assert_eq!(l.len(), 0);
    }

    #[test]
    fn a_vehicle_whose_plate_was_reported_is_not_unread() {
        let mut l = Ledger::new(3_000);
        let end = drive(&mut l, 1, 0, 10);
        l.read(1, "AB123CD", 0.9);
        l.plated(Some(1), &["AB123CD"]);
        l.seen(end, &[], |_| false, &0);
        assert!(l.due(end + 5_000).is_empty());
        assert_eq!(l.len(), 0, "settled and forgotten");
    }

    #[test]
    fn a_plate_reported_under_another_track_number_settles_both() {
        let mut l = Ledger::new(3_000);
        drive(&mut l, 1, 0, 5);
        l.read(1, "AB123CD", 0.9);
        // The detector lost the car and found it again as track 2.
        let end = drive(&mut l, 2, 1_000, 5);
        l.read(2, "AB123CD", 0.8);
        l.plated(Some(2), &["AB123CD", "A8123CD"]);
        l.seen(end, &[], |_| false, &0);
        assert!(l.due(end + 5_000).is_empty());
    }

    #[test]
    fn texts_read_too_few_times_are_given_with_the_reason() {
        let mut l = Ledger::new(3_000);
        let end = drive(&mut l, 3, 0, 10);
        l.read(3, "AB1", 0.6);
        l.read(3, "XY9", 0.7);
        l.read(3, "AB1", 0.55);
        l.seen(end, &[], |_| false, &0);
        let u = l.due(end + 3_000);
        assert_eq!(u[0].reason, Reason::TooFewReads);
        assert_eq!(u[0].reads, 3);
        assert_eq!(u[0].texts[0].text, "AB1");
        assert_eq!((u[0].texts[0].reads, u[0].texts[0].confidence), (2, 0.6));
    }

    #[test]
    fn a_vehicle_that_did_not_move_is_not_traffic_but_is_counted() {
        let mut l = Ledger::new(1_000);
        for i in 0..20 {
            l.seen(i * 200, &[car(4, 300.0)], |_| true, &0);
        }
        l.seen(4_000, &[], |_| false, &0);
        assert_eq!(l.take_unmoved(), 0, "not settled yet");
        assert!(l.due(10_000).is_empty());
        assert_eq!(l.len(), 0);
        assert_eq!(l.take_unmoved(), 1);
        assert_eq!(l.take_unmoved(), 0, "counted once");
    }

    #[test]
    fn a_vehicle_seen_again_before_it_is_settled_stays_open() {
        let mut l = Ledger::new(1_000);
        let end = drive(&mut l, 5, 0, 5);
        l.seen(end, &[], |_| false, &0);
        // Still the same track (the tracker re-found it): no longer ending.
        l.seen(end + 200, &[car(5, 500.0)], |_| true, &0);
        assert!(l.due(end + 5_000).is_empty());
        assert_eq!(l.finish().len(), 1, "reported at shutdown");
    }

    #[test]
    fn the_snapshot_is_where_the_vehicle_looked_largest() {
        let mut l = Ledger::new(0);
        l.seen(0, &[car(1, 0.0)], |_| true, &10);
        let mut big = car(1, 100.0);
        big.bbox[3] = 400.0;
        l.seen(200, &[big], |_| true, &20);
        l.seen(400, &[car(1, 300.0)], |_| true, &30);
        l.seen(600, &[], |_| false, &40);
        let u = l.due(600);
        assert_eq!(u[0].snapshot, Some(20));
        assert_eq!(u[0].bbox, [100, 100, 200, 300]);
    }
}
