//! Plate tracks across frames, without I/O: reads of the same vehicle in
//! successive frames are gathered into one track (by text, or by position when the
//! text wavers but could still be a misread of it), their texts are voted on, and a track yields one [`Vehicle`] when it
//! ends — when the plate has not been read for `timeout` of capture time and in at
//! least [`MIN_MISSED`] frames read since (reading may lag capture by more than
//! `timeout` on a slow device; a missed frame is evidence, elapsed time alone is
//! not), or, when no frame is being read at all, for `timeout` of wall-clock time. A vehicle that stays
//! longer than `max_duration` (parked in view) is reported then, once, and followed
//! silently until it leaves.
//!
//! `S` is whatever the caller keeps of the frame of the best read (the stage keeps
//! the frame, for the snapshot).

/// Frames read without the plate before its track may end.
pub const MIN_MISSED: u32 = 2;

/// One plate read in one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub text: String,
    pub confidence: f32,
    /// `[x, y, width, height]` in frame pixels.
    pub bbox: [u32; 4],
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackerParams {
    /// A track ends when its plate has not been read for this long.
    pub timeout_ms: i64,
    /// A track still going after this long is reported then (once).
    pub max_duration_ms: i64,
    /// Tracks with fewer reads are discarded when they end (counted by the caller).
    pub min_reads: u32,
    /// Farthest a plate moves between two reads of it, in plate widths.
    pub max_jump: f32,
}

/// Where the plate went in the picture, from its first read to its last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Left,
    Right,
    Up,
    Down,
}

/// Another text read on the same vehicle.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Alternate {
    pub text: String,
    /// The best single-read confidence of this text.
    pub confidence: f32,
    pub reads: u32,
}

/// What a finished track reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Vehicle<S> {
    pub track: u64,
    /// The text with the most votes (sum of confidences).
    pub text: String,
    /// The best single-read confidence of that text.
    pub confidence: f32,
    /// Reads of that text, and of all texts.
    pub text_reads: u32,
    pub reads: u32,
    /// Other texts, most votes first (at most four).
    pub alternates: Vec<Alternate>,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    /// The box of the best read of the chosen text.
    pub bbox: [u32; 4],
    pub direction: Option<Direction>,
    /// True when reported at `max_duration` while still in view.
    pub still_present: bool,
    /// The caller's keepsake of the best read's frame.
    pub snapshot: Option<S>,
}

/// Why a track ended without a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discarded {
    pub track: u64,
    pub text: String,
    pub reads: u32,
}

#[derive(Debug, Clone)]
struct Vote {
    text: String,
    sum: f32,
    best: f32,
    reads: u32,
    bbox: [u32; 4],
    at_ms: i64,
}

#[derive(Debug)]
struct Track<S> {
    id: u64,
    votes: Vec<Vote>,
    first_seen_ms: i64,
    last_seen_ms: i64,
    first_box: [u32; 4],
    last_box: [u32; 4],
    /// Frames read since the plate was last read.
    missed: u32,
    reported: bool,
    /// The frame of the best read so far and that read's confidence.
    snapshot: Option<(f32, S)>,
}

impl<S> Track<S> {
    fn leader(&self) -> &Vote {
        self.votes
            .iter()
            .max_by(|a, b| a.sum.total_cmp(&b.sum).then(b.at_ms.cmp(&a.at_ms)))
            .expect("a track has at least one read")
    }

    fn reads(&self) -> u32 {
        self.votes.iter().map(|v| v.reads).sum()
    }

    /// Edit distance from `text` to the closest text of the track.
    fn text_distance(&self, text: &str) -> usize {
        self.votes
            .iter()
            .map(|v| edit_distance(&v.text, text))
            .min()
            .unwrap_or(usize::MAX)
    }
}

/// What one step of the tracker produced.
#[derive(Debug)]
pub struct Step<S> {
    pub vehicles: Vec<Vehicle<S>>,
    pub discarded: Vec<Discarded>,
}

impl<S> Default for Step<S> {
    fn default() -> Self {
        Self {
            vehicles: Vec::new(),
            discarded: Vec::new(),
        }
    }
}

pub struct Tracker<S> {
    params: TrackerParams,
    tracks: Vec<Track<S>>,
    next_id: u64,
}

fn centre(b: [u32; 4]) -> (f32, f32) {
    (
        b[0] as f32 + b[2] as f32 / 2.0,
        b[1] as f32 + b[3] as f32 / 2.0,
    )
}

/// Levenshtein distance over characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diag + (ca != cb) as usize)
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// Where a box went from `first` to `last` (`[x, y, width, height]`); `None` when it
/// moved less than half its width.
pub fn direction(first: [u32; 4], last: [u32; 4]) -> Option<Direction> {
    let ((x0, y0), (x1, y1)) = (centre(first), centre(last));
    let (dx, dy) = (x1 - x0, y1 - y0);
    // Less than half a plate's width: it did not visibly go anywhere.
    let width = (first[2] + last[2]) as f32 / 2.0;
    if dx.abs().max(dy.abs()) < width / 2.0 {
        return None;
    }
    Some(match (dx.abs() >= dy.abs(), dx > 0.0, dy > 0.0) {
        (true, true, _) => Direction::Right,
        (true, false, _) => Direction::Left,
        (false, _, true) => Direction::Down,
        (false, _, false) => Direction::Up,
    })
}

impl<S: Clone> Tracker<S> {
    pub fn new(params: TrackerParams) -> Self {
        Self {
            params,
            tracks: Vec::new(),
            next_id: 1,
        }
    }

    /// Active tracks.
    pub fn active(&self) -> usize {
        self.tracks.len()
    }

    /// The track an observation belongs to: the same or a close text (up to two
    /// characters off) nearby, or any text where the plate was just seen.
    fn matching(&self, o: &Observation, taken: &[u64], t_ms: i64) -> Option<usize> {
        let (ox, oy) = centre(o.bbox);
        self.tracks
            .iter()
            .enumerate()
            .filter(|(_, tr)| !taken.contains(&tr.id))
            .filter_map(|(i, tr)| {
                let (tx, ty) = centre(tr.last_box);
                let width = tr.last_box[2].max(o.bbox[2]).max(1) as f32;
                let jump = ((ox - tx).powi(2) + (oy - ty).powi(2)).sqrt() / width;
                // A plate moves further the longer it went unread.
                let gaps = ((t_ms - tr.last_seen_ms) as f32 / 1000.0).max(1.0);
                let near = jump <= self.params.max_jump * gaps;
                let d = tr.text_distance(&o.text);
                let same_text = d == 0 || (d <= 2 && near);
                // Where the plate just was, a text that could be a misread of it;
                // a plainly different plate there is the next vehicle.
                let similar = d * 2 <= o.text.chars().count();
                let same_place = near && jump <= 0.5 && similar;
                (same_text || same_place).then_some((i, d, jump))
            })
            .min_by(|a, b| a.1.cmp(&b.1).then(a.2.total_cmp(&b.2)))
            .map(|(i, _, _)| i)
    }

    /// Adds the reads of one frame captured at `t_ms`; `frame` is kept (cloned)
    /// when a read is its track's best so far. Ends the tracks that timed out.
    pub fn observe(&mut self, t_ms: i64, reads: &[Observation], frame: &S) -> Step<S> {
        for tr in &mut self.tracks {
            tr.missed += 1;
        }
        // Tracks that ended before this frame do not take its reads.
        let mut step = self.expire(t_ms, MIN_MISSED);
        let mut taken = Vec::new();
        let mut order: Vec<&Observation> = reads.iter().collect();
        order.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
        for o in order {
            let i = match self.matching(o, &taken, t_ms) {
                Some(i) => i,
                None => {
                    self.tracks.push(Track {
                        id: self.next_id,
                        votes: Vec::new(),
                        first_seen_ms: t_ms,
                        last_seen_ms: t_ms,
                        first_box: o.bbox,
                        last_box: o.bbox,
                        missed: 0,
                        reported: false,
                        snapshot: None,
                    });
                    self.next_id += 1;
                    self.tracks.len() - 1
                }
            };
            let tr = &mut self.tracks[i];
            taken.push(tr.id);
            tr.missed = 0;
            tr.last_seen_ms = tr.last_seen_ms.max(t_ms);
            tr.last_box = o.bbox;
            match tr.votes.iter_mut().find(|v| v.text == o.text) {
                Some(v) => {
                    v.sum += o.confidence;
                    v.reads += 1;
                    if o.confidence > v.best {
                        v.best = o.confidence;
                        v.bbox = o.bbox;
                        v.at_ms = t_ms;
                    }
                }
                None => tr.votes.push(Vote {
                    text: o.text.clone(),
                    sum: o.confidence,
                    best: o.confidence,
                    reads: 1,
                    bbox: o.bbox,
                    at_ms: t_ms,
                }),
            }
            if tr.snapshot.as_ref().is_none_or(|(c, _)| o.confidence > *c) {
                tr.snapshot = Some((o.confidence, frame.clone()));
            }
        }
        let later = self.expire(t_ms, MIN_MISSED);
        step.vehicles.extend(later.vehicles);
        step.discarded.extend(later.discarded);
        step
    }

    /// For when no frame is being read: ends the tracks not read for `timeout` by
    /// `now_ms` (wall clock), and reports those that have lasted `max_duration`.
    pub fn tick(&mut self, now_ms: i64) -> Step<S> {
        self.expire(now_ms, 0)
    }

    fn expire(&mut self, now_ms: i64, min_missed: u32) -> Step<S> {
        let mut step = Step::default();
        let p = self.params;
        let mut i = 0;
        while i < self.tracks.len() {
            let tr = &self.tracks[i];
            let ended = now_ms - tr.last_seen_ms > p.timeout_ms && tr.missed >= min_missed;
            let long = !tr.reported && now_ms - tr.first_seen_ms >= p.max_duration_ms;
            if ended {
                let tr = self.tracks.remove(i);
                if tr.reported {
                    continue;
                }
                if tr.reads() < p.min_reads {
                    step.discarded.push(Discarded {
                        track: tr.id,
                        text: tr.leader().text.clone(),
                        reads: tr.reads(),
                    });
                } else {
                    step.vehicles.push(Self::report(tr, false));
                }
                continue;
            }
            if long && tr.reads() >= p.min_reads {
                let tr = &mut self.tracks[i];
                tr.reported = true;
                let snapshot = tr.snapshot.clone();
                let v = Self::report_ref(tr, snapshot, true);
                step.vehicles.push(v);
            }
            i += 1;
        }
        step
    }

    /// Ends every track now (shutdown): each reported as if it had left.
    pub fn finish(&mut self) -> Step<S> {
        self.tick(i64::MAX)
    }

    fn report(mut tr: Track<S>, still_present: bool) -> Vehicle<S> {
        let snapshot = tr.snapshot.take();
        Self::report_ref(&tr, snapshot, still_present)
    }

    fn report_ref(tr: &Track<S>, snapshot: Option<(f32, S)>, still_present: bool) -> Vehicle<S> {
        let leader = tr.leader().clone();
        let mut others: Vec<&Vote> = tr.votes.iter().filter(|v| v.text != leader.text).collect();
        others.sort_by(|a, b| b.sum.total_cmp(&a.sum));
        Vehicle {
            track: tr.id,
            text: leader.text,
            confidence: leader.best,
            text_reads: leader.reads,
            reads: tr.reads(),
            alternates: others
                .into_iter()
                .take(4)
                .map(|v| Alternate {
                    text: v.text.clone(),
                    confidence: v.best,
                    reads: v.reads,
                })
                .collect(),
            first_seen_ms: tr.first_seen_ms,
            last_seen_ms: tr.last_seen_ms,
            bbox: leader.bbox,
            direction: direction(tr.first_box, tr.last_box),
            still_present,
            snapshot: snapshot.map(|(_, s)| s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: TrackerParams = TrackerParams {
        timeout_ms: 2_000,
        max_duration_ms: 60_000,
        min_reads: 2,
        max_jump: 4.0,
    };

    fn read(text: &str, confidence: f32, x: u32) -> Observation {
        Observation {
            text: text.into(),
            confidence,
            bbox: [x, 400, 100, 30],
        }
    }

    #[test]
    fn edit_distance_counts_changes() {
        assert_eq!(edit_distance("ABC1234", "ABC1234"), 0);
        assert_eq!(edit_distance("ABC1234", "A8C1234"), 1);
        assert_eq!(edit_distance("ABC1234", "BC1234"), 1);
        assert_eq!(edit_distance("", "AB"), 2);
    }

    #[test]
    fn a_passing_vehicle_gives_one_report_with_the_most_voted_text() {
        let mut t = Tracker::new(P);
        let mut out = Vec::new();
        for (i, (text, c)) in [("ABC1234", 0.9), ("A8C1234", 0.95), ("ABC1234", 0.8)]
            .iter()
            .enumerate()
        {
            let s = t.observe(i as i64 * 500, &[read(text, *c, 100 + 150 * i as u32)], &i);
            out.extend(s.vehicles);
        }
        assert!(out.is_empty(), "still in view");
        let s = t.tick(1_000 + 2_001);
        assert_eq!(s.vehicles.len(), 1);
        let v = &s.vehicles[0];
        assert_eq!(v.text, "ABC1234");
        assert_eq!((v.text_reads, v.reads), (2, 3));
        assert_eq!(v.confidence, 0.9);
        assert_eq!(v.alternates[0].text, "A8C1234");
        assert_eq!((v.first_seen_ms, v.last_seen_ms), (0, 1_000));
        assert_eq!(v.direction, Some(Direction::Right));
        assert_eq!(v.bbox[0], 100, "the box of the best read of that text");
        assert_eq!(v.snapshot, Some(1), "the frame of the best read overall");
        assert_eq!(t.active(), 0);
    }

    #[test]
    fn two_vehicles_at_once_stay_apart() {
        let mut t = Tracker::new(P);
        for i in 0..3 {
            t.observe(
                i * 400,
                &[read("ABC1234", 0.9, 100), read("XYZ9876", 0.9, 900)],
                &(),
            );
        }
        let s = t.finish();
        let mut texts: Vec<_> = s.vehicles.iter().map(|v| v.text.clone()).collect();
        texts.sort();
        assert_eq!(texts, ["ABC1234", "XYZ9876"]);
        assert!(s.vehicles.iter().all(|v| v.direction.is_none()));
    }

    #[test]
    fn the_same_plate_after_a_gap_is_a_new_vehicle() {
        let mut t = Tracker::new(P);
        t.observe(0, &[read("ABC1234", 0.9, 100)], &());
        t.observe(300, &[read("ABC1234", 0.9, 110)], &());
        t.observe(5_000, &[], &());
        let s = t.observe(10_000, &[read("ABC1234", 0.9, 100)], &());
        assert_eq!(s.vehicles.len(), 1, "the first visit ended");
        t.observe(10_300, &[read("ABC1234", 0.9, 100)], &());
        assert_eq!(t.finish().vehicles.len(), 1);
    }

    #[test]
    fn a_track_outlives_the_timeout_until_frames_read_without_it() {
        // Reading lags: frames captured 2.5 s apart are read one after the other.
        let mut t = Tracker::new(P);
        t.observe(0, &[read("ABC1234", 0.9, 100)], &());
        let s = t.observe(2_500, &[read("ABC1234", 0.9, 200)], &());
        assert!(s.vehicles.is_empty());
        assert_eq!(t.active(), 1, "one track, not two");
        t.observe(5_000, &[], &());
        assert_eq!(t.active(), 1, "one frame without it is not enough");
        assert_eq!(t.observe(7_500, &[], &()).vehicles.len(), 1);
    }

    #[test]
    fn a_single_read_is_discarded_and_said_so() {
        let mut t = Tracker::new(P);
        t.observe(0, &[read("SIGN12", 0.7, 100)], &());
        let s = t.tick(5_000);
        assert!(s.vehicles.is_empty());
        assert_eq!(s.discarded[0].reads, 1);
    }

    #[test]
    fn a_different_text_far_away_is_another_track() {
        let mut t = Tracker::new(P);
        t.observe(0, &[read("ABC1234", 0.9, 0)], &());
        t.observe(200, &[read("QWE5678", 0.9, 1100)], &());
        assert_eq!(t.active(), 2);
        // A misread in place of the first plate joins it.
        t.observe(400, &[read("A8C1Z34", 0.5, 10)], &());
        assert_eq!(t.active(), 2);
    }

    #[test]
    fn the_next_vehicle_where_the_last_one_left_is_a_new_track() {
        let mut t = Tracker::new(P);
        t.observe(0, &[read("ABC1234", 0.9, 800)], &());
        t.observe(500, &[read("ABC1234", 0.9, 900)], &());
        // A second later another plate appears at the same spot.
        t.observe(1_500, &[read("BRA2E19", 0.9, 900)], &());
        t.observe(2_000, &[read("BRA2E19", 0.9, 800)], &());
        assert_eq!(t.active(), 2);
        let mut texts: Vec<_> = t.finish().vehicles.into_iter().map(|v| v.text).collect();
        texts.sort();
        assert_eq!(texts, ["ABC1234", "BRA2E19"]);
    }

    #[test]
    fn a_parked_vehicle_is_reported_once_at_max_duration() {
        let mut t = Tracker::new(P);
        let mut reports = 0;
        for i in 0..200 {
            reports += t
                .observe(i * 500, &[read("ABC1234", 0.9, 100)], &())
                .vehicles
                .iter()
                .filter(|v| v.still_present)
                .count();
        }
        assert_eq!(reports, 1);
        assert!(t.finish().vehicles.is_empty(), "already reported");
    }
}
