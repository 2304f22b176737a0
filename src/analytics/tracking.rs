//! Multi-object tracking of the detector's boxes (ByteTrack-style), shared by
//! people counting and vehicles. Pure: detections and a time in, tracks out.
//!
//! Each update, in order:
//! 1. every track's box is predicted to the frame's time: its centre moves at the
//!    track's velocity, its size stays (a person half hidden does not shrink);
//! 2. confident detections (`score >= high`) are matched to all tracks by IoU
//!    with the predicted boxes, best pairs first;
//! 3. the weak ones (`low <= score < high`) are matched to the confirmed tracks
//!    still unmatched: an occluded person scores low, but is still that person;
//! 4. confident detections still unmatched re-find a track by the distance from
//!    its predicted centre (in track heights) when their sizes agree: after an
//!    occlusion the box is seldom where IoU wants it, and a new track has no
//!    velocity yet, so a fast walker's second box may not overlap its first;
//! 5. confident detections left start tentative tracks; a tentative track is
//!    confirmed after `confirm_hits` matches and forgotten when it misses one;
//!    a confirmed track is forgotten after `max_lost` unseen.
//!
//! Detections match tracks of the same kind only: persons with persons, and any
//! vehicle (car, bus, truck, motorcycle) with any vehicle, since the detector
//! often changes its mind between car and truck; a track's class is the one with
//! the highest summed score. A match much shorter than its track (less than
//! [`PARTIAL`] of its height) is taken as partly hidden: its top and width are
//! used, the track keeps its height, so a foot point behind a car stays put.

use super::detector::{iou, Detection};

/// Vehicle classes of the COCO set, matched to each other.
pub const VEHICLES: [&str; 4] = ["car", "bus", "truck", "motorcycle"];
/// A matched box shorter than this part of its track's height is partial.
pub const PARTIAL: f32 = 0.7;

/// Tuning.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Detections at or above this score start tracks and are matched first.
    pub high: f32,
    /// Detections between this and `high` only continue confirmed tracks.
    pub low: f32,
    /// Least IoU between a predicted box and a detection for a match.
    pub match_iou: f32,
    /// Matches (the first detection included) before a track is confirmed.
    pub confirm_hits: u32,
    /// A confirmed track unseen this long (seconds) is forgotten.
    pub max_lost: f64,
    /// A lost track is re-found by a detection this far from its predicted
    /// centre, in the track's heights.
    pub refind: f32,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            high: 0.5,
            low: 0.2,
            match_iou: 0.3,
            confirm_hits: 2,
            max_lost: 2.0,
            refind: 0.75,
        }
    }
}

/// One tracked object.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    /// Stable while the object is tracked; never reused.
    pub id: u64,
    /// Its class (the best-supported one).
    pub class: &'static str,
    /// Left, top, right, bottom in pixels, as last seen (or kept at its height).
    pub bbox: [f32; 4],
    /// The last matched detection's score.
    pub score: f32,
    /// Detections matched so far.
    pub hits: u32,
    /// Matched often enough to be reported.
    pub confirmed: bool,
    /// When last matched (seconds, the caller's clock).
    pub last_seen: f64,
    /// Centre velocity in pixels per second.
    pub velocity: [f32; 2],
    /// Summed score per class seen.
    votes: Vec<(&'static str, f32)>,
}

impl Track {
    /// The box predicted at `t`: moved at the track's velocity, same size.
    pub fn predicted(&self, t: f64) -> [f32; 4] {
        let dt = (t - self.last_seen).max(0.0) as f32;
        let (dx, dy) = (self.velocity[0] * dt, self.velocity[1] * dt);
        let b = self.bbox;
        [b[0] + dx, b[1] + dy, b[2] + dx, b[3] + dy]
    }

    /// Bottom centre of the box: where a person stands.
    pub fn foot(&self) -> (f32, f32) {
        ((self.bbox[0] + self.bbox[2]) / 2.0, self.bbox[3])
    }

    fn height(&self) -> f32 {
        self.bbox[3] - self.bbox[1]
    }

    fn vote(&mut self, class: &'static str, score: f32) {
        match self.votes.iter_mut().find(|(c, _)| *c == class) {
            Some(v) => v.1 += score,
            None => self.votes.push((class, score)),
        }
        self.class = self
            .votes
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|v| v.0)
            .unwrap_or(class);
    }
}

fn centre(b: &[f32; 4]) -> (f32, f32) {
    ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0)
}

/// Takes `(cost, track, detection)` pairs in their order, each track and
/// detection at most once: the pairs taken.
fn greedy(
    pairs: &[(f32, usize, usize)],
    track_used: &mut [bool],
    det_used: &mut [bool],
) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for &(_, ti, di) in pairs {
        if !track_used[ti] && !det_used[di] {
            track_used[ti] = true;
            det_used[di] = true;
            out.push((ti, di));
        }
    }
    out
}

/// Whether a detection of class `a` may continue a track of class `b`.
pub fn same_kind(a: &str, b: &str) -> bool {
    a == b || (VEHICLES.contains(&a) && VEHICLES.contains(&b))
}

/// The tracker of one camera.
#[derive(Debug, Default)]
pub struct Tracker {
    params: Params,
    tracks: Vec<Track>,
    next_id: u64,
}

impl Tracker {
    pub fn new(params: Params) -> Self {
        Self {
            params,
            tracks: Vec::new(),
            next_id: 1,
        }
    }

    /// Every live track, confirmed or not, seen now or not.
    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    /// The confirmed tracks matched in the last update (at time `t`).
    pub fn seen_at(&self, t: f64) -> impl Iterator<Item = &Track> {
        self.tracks
            .iter()
            .filter(move |tr| tr.confirmed && tr.last_seen == t)
    }

    /// Takes one frame's detections at time `t` (seconds, increasing).
    pub fn update(&mut self, t: f64, detections: &[Detection]) {
        let p = self.params;
        let predicted: Vec<[f32; 4]> = self.tracks.iter().map(|tr| tr.predicted(t)).collect();
        let mut track_used = vec![false; self.tracks.len()];
        let mut det_used = vec![false; detections.len()];
        let high = |d: &Detection| d.score >= p.high;
        let low = |d: &Detection| d.score >= p.low && d.score < p.high;

        // 1-3: by IoU, confident detections with every track, then weak ones with
        // confirmed tracks.
        for pass in 0..2 {
            let mut pairs = Vec::new();
            for (ti, tr) in self.tracks.iter().enumerate() {
                if track_used[ti] || (pass == 1 && !tr.confirmed) {
                    continue;
                }
                for (di, d) in detections.iter().enumerate() {
                    let wanted = if pass == 0 { high(d) } else { low(d) };
                    if det_used[di] || !wanted || !same_kind(d.class, tr.class) {
                        continue;
                    }
                    let v = iou(&predicted[ti], &d.bbox);
                    if v >= p.match_iou {
                        pairs.push((v, ti, di));
                    }
                }
            }
            // Highest IoU first.
            pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
            for (ti, di) in greedy(&pairs, &mut track_used, &mut det_used) {
                self.matched(ti, &detections[di], t);
            }
        }

        // 4: re-finding tracks by distance.
        let mut pairs = Vec::new();
        for (ti, tr) in self.tracks.iter().enumerate() {
            if track_used[ti] {
                continue;
            }
            let h = tr.height().max(1.0);
            let (px, py) = centre(&predicted[ti]);
            for (di, d) in detections.iter().enumerate() {
                if det_used[di] || !high(d) || !same_kind(d.class, tr.class) {
                    continue;
                }
                let ratio = (d.bbox[3] - d.bbox[1]) / h;
                let (cx, cy) = centre(&d.bbox);
                let dist = ((cx - px).powi(2) + (cy - py).powi(2)).sqrt() / h;
                if (PARTIAL..=1.0 / PARTIAL).contains(&ratio) && dist <= p.refind {
                    pairs.push((dist, ti, di));
                }
            }
        }
        // Nearest first.
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (ti, di) in greedy(&pairs, &mut track_used, &mut det_used) {
            self.matched(ti, &detections[di], t);
        }

        // 5: births and deaths.
        let mut i = 0;
        self.tracks.retain(|tr| {
            let keep = track_used[i] || (tr.confirmed && t - tr.last_seen <= p.max_lost);
            i += 1;
            keep
        });
        for (di, d) in detections.iter().enumerate() {
            if det_used[di] || !high(d) {
                continue;
            }
            let mut tr = Track {
                id: self.next_id,
                class: d.class,
                bbox: d.bbox,
                score: d.score,
                hits: 1,
                confirmed: p.confirm_hits <= 1,
                last_seen: t,
                velocity: [0.0, 0.0],
                votes: Vec::new(),
            };
            tr.vote(d.class, d.score);
            self.next_id += 1;
            self.tracks.push(tr);
        }
    }

    /// Moves track `ti` to detection `d` seen at `t`.
    fn matched(&mut self, ti: usize, d: &Detection, t: f64) {
        let p = self.params;
        let tr = &mut self.tracks[ti];
        let mut bbox = d.bbox;
        let h = tr.height();
        if tr.hits >= 2 && bbox[3] - bbox[1] < PARTIAL * h {
            // Partly hidden: its top and width, the track's height.
            bbox[3] = bbox[1] + h;
        }
        let dt = (t - tr.last_seen) as f32;
        if dt > 0.0 {
            let (c0, c1) = (centre(&tr.bbox), centre(&bbox));
            let v = [(c1.0 - c0.0) / dt, (c1.1 - c0.1) / dt];
            tr.velocity = if tr.hits == 1 {
                v
            } else {
                [
                    0.5 * tr.velocity[0] + 0.5 * v[0],
                    0.5 * tr.velocity[1] + 0.5 * v[1],
                ]
            };
        }
        tr.bbox = bbox;
        tr.score = d.score;
        tr.hits += 1;
        tr.confirmed |= tr.hits >= p.confirm_hits;
        tr.last_seen = t;
        tr.vote(d.class, d.score);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(score: f32, x: f32, y: f32) -> Detection {
        // A 20x60 person whose top-left corner is at (x, y).
        Detection {
            class: "person",
            score,
            bbox: [x, y, x + 20.0, y + 60.0],
        }
    }

    fn ids_at(tr: &Tracker, t: f64) -> Vec<u64> {
        tr.seen_at(t).map(|t| t.id).collect()
    }

    #[test]
    fn a_track_is_confirmed_on_its_second_hit_and_keeps_its_id() {
        let mut tr = Tracker::new(Params::default());
        tr.update(0.0, &[person(0.8, 10.0, 10.0)]);
        assert!(ids_at(&tr, 0.0).is_empty(), "one hit is not a track yet");
        tr.update(0.2, &[person(0.8, 14.0, 10.0)]);
        assert_eq!(ids_at(&tr, 0.2), vec![1]);
        tr.update(0.4, &[person(0.8, 18.0, 10.0)]);
        assert_eq!(ids_at(&tr, 0.4), vec![1]);
    }

    #[test]
    fn a_single_stray_detection_never_becomes_a_track() {
        let mut tr = Tracker::new(Params::default());
        tr.update(0.0, &[person(0.9, 100.0, 100.0)]);
        tr.update(0.2, &[]);
        tr.update(0.4, &[person(0.9, 300.0, 10.0)]);
        tr.update(0.6, &[]);
        assert!(tr.tracks().iter().all(|t| !t.confirmed));
    }

    #[test]
    fn weak_detections_start_nothing_but_continue_a_confirmed_track() {
        let mut tr = Tracker::new(Params::default());
        tr.update(0.0, &[person(0.3, 10.0, 10.0)]);
        tr.update(0.2, &[person(0.3, 12.0, 10.0)]);
        assert!(tr.tracks().is_empty(), "background spots score about 0.3");
        tr.update(0.4, &[person(0.8, 10.0, 10.0)]);
        tr.update(0.6, &[person(0.8, 12.0, 10.0)]);
        tr.update(0.8, &[person(0.3, 14.0, 10.0)]);
        assert_eq!(ids_at(&tr, 0.8), vec![1]);
    }

    #[test]
    fn the_velocity_carries_a_fast_walker_whose_boxes_no_longer_overlap() {
        // 20 px wide, 15 px per frame: boxes one frame apart overlap little.
        let mut tr = Tracker::new(Params::default());
        for k in 0..10 {
            tr.update(k as f64 * 0.2, &[person(0.8, 15.0 * k as f32, 10.0)]);
        }
        let ids: Vec<u64> = tr.tracks().iter().map(|t| t.id).collect();
        assert_eq!(ids, vec![1], "one walker, one track");
    }

    #[test]
    fn ids_survive_a_short_occlusion_and_are_refound_where_predicted() {
        let mut tr = Tracker::new(Params::default());
        for k in 0..5 {
            tr.update(k as f64 * 0.2, &[person(0.8, 10.0 * k as f32, 10.0)]);
        }
        // Hidden for a second (five frames) while walking on.
        for k in 5..10 {
            tr.update(k as f64 * 0.2, &[]);
        }
        tr.update(2.0, &[person(0.8, 100.0, 10.0)]);
        assert_eq!(ids_at(&tr, 2.0), vec![1]);
    }

    #[test]
    fn a_track_unseen_longer_than_max_lost_is_forgotten() {
        let mut tr = Tracker::new(Params::default());
        tr.update(0.0, &[person(0.8, 10.0, 10.0)]);
        tr.update(0.2, &[person(0.8, 10.0, 10.0)]);
        tr.update(2.1, &[]);
        assert_eq!(tr.tracks().len(), 1);
        tr.update(2.3, &[]);
        assert!(tr.tracks().is_empty());
        tr.update(2.5, &[person(0.8, 10.0, 10.0)]);
        assert_eq!(tr.tracks()[0].id, 2, "ids are never reused");
    }

    #[test]
    fn two_people_side_by_side_are_two_tracks() {
        let mut tr = Tracker::new(Params::default());
        for k in 0..5 {
            let y = 10.0 * k as f32;
            tr.update(
                k as f64 * 0.2,
                &[person(0.8, 10.0, y), person(0.7, 32.0, y)],
            );
        }
        let mut ids = ids_at(&tr, 0.8);
        ids.sort();
        assert_eq!(ids, vec![1, 2]);
    }

    #[test]
    fn a_partly_hidden_person_keeps_the_tracks_height() {
        let mut tr = Tracker::new(Params::default());
        for k in 0..3 {
            tr.update(k as f64 * 0.2, &[person(0.8, 10.0, 10.0)]);
        }
        // Only the top half is visible (behind a car).
        let half = Detection {
            class: "person",
            score: 0.4,
            bbox: [10.0, 10.0, 30.0, 40.0],
        };
        tr.update(0.6, &[half]);
        let t = &tr.tracks()[0];
        assert_eq!(t.bbox[3], 70.0, "the foot point stays where it was");
    }

    #[test]
    fn a_car_that_is_called_a_truck_for_a_frame_stays_one_car() {
        let mut tr = Tracker::new(Params::default());
        let v = |class, x: f32| Detection {
            class,
            score: 0.8,
            bbox: [x, 100.0, x + 120.0, 180.0],
        };
        tr.update(0.0, &[v("car", 0.0)]);
        tr.update(0.2, &[v("car", 10.0)]);
        tr.update(0.4, &[v("truck", 20.0)]);
        tr.update(0.6, &[v("car", 30.0)]);
        assert_eq!(tr.tracks().len(), 1);
        assert_eq!(tr.tracks()[0].class, "car");
    }

    #[test]
    fn a_person_never_continues_a_vehicle_track() {
        let mut tr = Tracker::new(Params::default());
        let car = Detection {
            class: "car",
            score: 0.8,
            bbox: [0.0, 0.0, 100.0, 60.0],
        };
        tr.update(0.0, std::slice::from_ref(&car));
        tr.update(0.2, std::slice::from_ref(&car));
        let p = Detection {
            class: "person",
            score: 0.8,
            bbox: [0.0, 0.0, 100.0, 60.0],
        };
        tr.update(0.4, &[p]);
        let classes: Vec<_> = tr.tracks().iter().map(|t| (t.id, t.class)).collect();
        assert_eq!(classes, vec![(1, "car"), (2, "person")]);
    }
}
