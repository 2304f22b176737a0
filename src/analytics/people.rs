//! People counting, two ways over the same lines and zones ([`Lines`]):
//! [`PersonCounter`] follows the object detector's person boxes with the tracker
//! and counts their foot points; [`Counter`], the fallback when no detector model
//! is installed, finds moving blobs by background subtraction, the method of many
//! overhead counters, with no model at all.
//!
//! Blobs, per frame: grey at a working width (at most [`WORK_WIDTH`] pixels),
//! difference from a running-average background, a 3x3 majority filter and one
//! dilation, then connected components; blobs of at least `min_area` become
//! detections, followed by greedy nearest matching.
//!
//! Lines, for both: an object crosses a line when its side of the line, outside a
//! dead band of `hysteresis` on each side, flips: a person lingering on the line is
//! counted once, one who turns back on it is not counted, one who crosses and
//! comes back is counted in and then out.
//!
//! Pure: frames or detections in, crossings and occupancy out; no I/O.
//! Coordinates in the configuration are fractions of the frame (0..1), so they
//! hold at any size.

use std::collections::{BTreeMap, HashMap};

use super::detector::Detection;
use super::raster::{dilate, regions};
use super::tracking::{self, Tracker};

use serde::{Deserialize, Serialize};

/// Frames are reduced to at most this width before anything else.
pub const WORK_WIDTH: u32 = 320;

/// Which way across a line counts as "in".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InDirection {
    Down,
    Up,
    Left,
    Right,
}

impl InDirection {
    fn vector(self) -> (f32, f32) {
        match self {
            InDirection::Down => (0.0, 1.0),
            InDirection::Up => (0.0, -1.0),
            InDirection::Left => (-1.0, 0.0),
            InDirection::Right => (1.0, 0.0),
        }
    }

    /// `down` for a line closer to horizontal, `right` for one closer to vertical.
    pub fn default_for(a: [f32; 2], b: [f32; 2]) -> Self {
        if (b[0] - a[0]).abs() >= (b[1] - a[1]).abs() {
            InDirection::Down
        } else {
            InDirection::Right
        }
    }
}

/// A counting line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineConfig {
    /// Name in the count events.
    pub name: String,
    /// End points, as fractions of the frame's width and height.
    pub a: [f32; 2],
    pub b: [f32; 2],
    /// Crossing towards this side counts as "in" (`down`, `up`, `left`, `right`);
    /// the other way is "out". Default: `down` for a line closer to horizontal,
    /// `right` for one closer to vertical.
    #[serde(default)]
    pub in_direction: Option<InDirection>,
}

/// A zone whose occupancy is reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    pub name: String,
    /// Polygon corners, as fractions of the frame (at least three).
    pub points: Vec<[f32; 2]>,
}

/// Tuning of detection and tracking.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Luma difference from the background for a foreground pixel (0-255).
    pub threshold: u8,
    /// Background learning rate per frame (0-1).
    pub learning_rate: f32,
    /// Smallest person, as a fraction of the frame's area.
    pub min_area: f32,
    /// Farthest a person moves between two analysed frames, as a fraction of the
    /// frame's diagonal.
    pub max_step: f32,
    /// Half-width of the dead band around each line, as a fraction of the diagonal.
    pub hysteresis: f32,
    /// Frames a track survives without a detection.
    pub max_missed: u32,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            threshold: 28,
            learning_rate: 0.02,
            min_area: 0.002,
            max_step: 0.1,
            hysteresis: 0.03,
            max_missed: 4,
        }
    }
}

/// A counted crossing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Crossing {
    /// The class of what crossed (`person` for moving blobs).
    pub class: &'static str,
    pub line: String,
    /// `in` or `out`.
    pub direction: &'static str,
    pub track: u64,
}

/// A detected blob, in working-frame pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Blob {
    pub x: f32,
    pub y: f32,
    pub area: u32,
    pub bbox: [u32; 4],
}

struct Track {
    id: u64,
    x: f32,
    y: f32,
    missed: u32,
    age: u32,
}

struct Line {
    name: String,
    a: (f32, f32),
    b: (f32, f32),
    /// +1 when "in" is the positive side (see `side`).
    in_sign: f32,
}

/// Lines and zones at one frame size, and the side of every line each tracked
/// object was last seen on outside the dead band. Shared by both counters: the
/// blob tracks' centres and the detector tracks' foot points go through it.
pub struct Lines {
    lines: Vec<Line>,
    zones: Vec<(String, Vec<(f32, f32)>)>,
    /// Half-width of the dead band, pixels.
    band: f32,
    /// Per object: per line, the last side outside the band (+1 / -1, 0 unknown).
    sides: HashMap<u64, Vec<i8>>,
}

impl Lines {
    /// `hysteresis` is the dead band's half-width as a fraction of the diagonal.
    pub fn new(
        lines: &[LineConfig],
        zones: &[ZoneConfig],
        width: f32,
        height: f32,
        hysteresis: f32,
    ) -> Self {
        let (fw, fh) = (width, height);
        let lines = lines
            .iter()
            .map(|l| {
                let a = (l.a[0] * fw, l.a[1] * fh);
                let b = (l.b[0] * fw, l.b[1] * fh);
                let dir = l.in_direction.unwrap_or(InDirection::default_for(l.a, l.b));
                let (vx, vy) = dir.vector();
                // Normal of a→b: (-(by - ay), bx - ax); `side` is positive along it.
                let n = (-(b.1 - a.1), b.0 - a.0);
                let in_sign = if n.0 * vx + n.1 * vy >= 0.0 {
                    1.0
                } else {
                    -1.0
                };
                Line {
                    name: l.name.clone(),
                    a,
                    b,
                    in_sign,
                }
            })
            .collect();
        let zones = zones
            .iter()
            .map(|z| {
                (
                    z.name.clone(),
                    z.points.iter().map(|p| (p[0] * fw, p[1] * fh)).collect(),
                )
            })
            .collect();
        Self {
            lines,
            zones,
            band: hysteresis * (fw * fw + fh * fh).sqrt(),
            sides: HashMap::new(),
        }
    }

    /// The objects seen in this frame, `(id, x, y)` in pixels: the crossings they
    /// completed. An object seen for the first time crosses nothing.
    pub fn cross(&mut self, seen: &[(u64, f32, f32)]) -> Vec<Crossing> {
        let mut out = Vec::new();
        for &(id, x, y) in seen {
            let sides = self
                .sides
                .entry(id)
                .or_insert_with(|| vec![0; self.lines.len()]);
            for (li, line) in self.lines.iter().enumerate() {
                let s = side(line, x, y, self.band);
                if s == 0 {
                    continue;
                }
                let before = sides[li];
                sides[li] = s;
                if before != 0 && before != s {
                    let into = s as f32 * line.in_sign > 0.0;
                    out.push(Crossing {
                        class: "person",
                        line: line.name.clone(),
                        direction: if into { "in" } else { "out" },
                        track: id,
                    });
                }
            }
        }
        out
    }

    /// Forgets the objects for which `alive` is false.
    pub fn retain(&mut self, alive: impl Fn(u64) -> bool) {
        self.sides.retain(|id, _| alive(*id));
    }

    /// How many of `seen` are inside each zone.
    pub fn occupancy(&self, seen: &[(u64, f32, f32)]) -> Vec<(String, u32)> {
        self.zones
            .iter()
            .map(|(name, poly)| {
                let n = seen.iter().filter(|p| inside(poly, p.1, p.2)).count() as u32;
                (name.clone(), n)
            })
            .collect()
    }
}

/// The counter: background, tracks, lines and zones of one camera.
pub struct Counter {
    params: Params,
    lines_cfg: Vec<LineConfig>,
    zones_cfg: Vec<ZoneConfig>,
    /// Working size.
    w: u32,
    h: u32,
    background: Vec<f32>,
    lines: Lines,
    tracks: Vec<Track>,
    next_id: u64,
}

impl Counter {
    pub fn new(params: Params, lines: Vec<LineConfig>, zones: Vec<ZoneConfig>) -> Self {
        Self {
            params,
            lines: Lines::new(&[], &[], 0.0, 0.0, 0.0),
            lines_cfg: lines,
            zones_cfg: zones,
            w: 0,
            h: 0,
            background: Vec::new(),
            tracks: Vec::new(),
            next_id: 1,
        }
    }

    /// Sets up for a frame size (again when it changes: tracks and background go).
    fn size_for(&mut self, width: u32, height: u32) {
        let factor = width.div_ceil(WORK_WIDTH).max(1);
        let (w, h) = (width / factor, height / factor);
        if (w, h) == (self.w, self.h) {
            return;
        }
        self.w = w;
        self.h = h;
        self.background.clear();
        self.tracks.clear();
        self.lines = Lines::new(
            &self.lines_cfg,
            &self.zones_cfg,
            w as f32,
            h as f32,
            self.params.hysteresis,
        );
    }

    /// Reduces an RGB frame to grey at the working size (box average).
    fn grey(&self, rgb: &[u8], width: u32) -> Vec<f32> {
        let factor = (width / self.w.max(1)).max(1) as usize;
        let (w, h, width) = (self.w as usize, self.h as usize, width as usize);
        let mut out = vec![0f32; w * h];
        let norm = 1.0 / (factor * factor) as f32;
        for y in 0..h {
            for x in 0..w {
                let mut sum = 0u32;
                for dy in 0..factor {
                    let row = (y * factor + dy) * width;
                    for dx in 0..factor {
                        let i = (row + x * factor + dx) * 3;
                        // Rec. 601 luma, integer weights.
                        sum +=
                            (77 * rgb[i] as u32 + 150 * rgb[i + 1] as u32 + 29 * rgb[i + 2] as u32)
                                >> 8;
                    }
                }
                out[y * w + x] = sum as f32 * norm;
            }
        }
        out
    }

    /// Foreground blobs of a frame; updates the background.
    pub fn detect(&mut self, rgb: &[u8], width: u32, height: u32) -> Vec<Blob> {
        self.size_for(width, height);
        if rgb.len() < (width * height * 3) as usize || self.w == 0 || self.h == 0 {
            return Vec::new();
        }
        let grey = self.grey(rgb, width);
        if self.background.is_empty() {
            self.background = grey;
            return Vec::new();
        }
        let (w, h) = (self.w as usize, self.h as usize);
        let t = self.params.threshold as f32;
        let mut mask: Vec<bool> = grey
            .iter()
            .zip(&self.background)
            .map(|(g, b)| (g - b).abs() > t)
            .collect();
        // Background: learn where nothing moves; where something does, ten times
        // more slowly, so a person standing still fades out in about a minute at
        // 5 fps (and so does the ghost of one who stood there at the first frame).
        let rate = self.params.learning_rate;
        for ((b, g), fg) in self.background.iter_mut().zip(&grey).zip(&mask) {
            let r = if *fg { rate * 0.1 } else { rate };
            *b += (g - *b) * r;
        }
        mask = majority(&mask, w, h);
        mask = dilate(&mask, w, h);
        let min_area = (self.params.min_area * (w * h) as f32).max(4.0) as u32;
        components(&mask, w, h)
            .into_iter()
            .filter(|b| b.area >= min_area)
            .collect()
    }

    /// Processes one frame: returns the crossings it completed.
    pub fn process(&mut self, rgb: &[u8], width: u32, height: u32) -> Vec<Crossing> {
        let blobs = self.detect(rgb, width, height);
        self.track(&blobs)
    }

    /// Matches detections to tracks and counts the lines they crossed.
    pub fn track(&mut self, blobs: &[Blob]) -> Vec<Crossing> {
        let diag = ((self.w * self.w + self.h * self.h) as f32).sqrt().max(1.0);
        let max_step = self.params.max_step * diag;
        let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
        for (ti, t) in self.tracks.iter().enumerate() {
            for (bi, b) in blobs.iter().enumerate() {
                let d = ((t.x - b.x).powi(2) + (t.y - b.y).powi(2)).sqrt();
                if d <= max_step {
                    pairs.push((d, ti, bi));
                }
            }
        }
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut track_taken = vec![false; self.tracks.len()];
        let mut blob_taken = vec![false; blobs.len()];
        for (_, ti, bi) in pairs {
            if track_taken[ti] || blob_taken[bi] {
                continue;
            }
            track_taken[ti] = true;
            blob_taken[bi] = true;
            let t = &mut self.tracks[ti];
            t.x = blobs[bi].x;
            t.y = blobs[bi].y;
            t.missed = 0;
            t.age += 1;
        }
        for (ti, taken) in track_taken.iter().enumerate() {
            if !taken {
                self.tracks[ti].missed += 1;
            }
        }
        let max_missed = self.params.max_missed;
        self.tracks.retain(|t| t.missed <= max_missed);
        for (bi, b) in blobs.iter().enumerate() {
            if !blob_taken[bi] {
                self.tracks.push(Track {
                    id: self.next_id,
                    x: b.x,
                    y: b.y,
                    missed: 0,
                    age: 1,
                });
                self.next_id += 1;
            }
        }
        let ids: std::collections::HashSet<u64> = self.tracks.iter().map(|t| t.id).collect();
        self.lines.retain(|id| ids.contains(&id));
        let seen = self.seen();
        self.lines.cross(&seen)
    }

    /// The tracks seen in this frame.
    fn seen(&self) -> Vec<(u64, f32, f32)> {
        self.tracks
            .iter()
            .filter(|t| t.missed == 0)
            .map(|t| (t.id, t.x, t.y))
            .collect()
    }

    /// People in each zone now (tracks seen in this frame).
    pub fn occupancy(&self) -> Vec<(String, u32)> {
        self.lines.occupancy(&self.seen())
    }
}

/// Counting from the detector's tracks of one kind (persons, or vehicles for
/// traffic): the tracker follows the boxes, each confirmed track's foot point
/// (bottom centre: where it meets the ground) crosses lines and stands in zones.
/// Frames of another size start afresh.
pub struct TrackCounter {
    /// Which classes are counted.
    counts: fn(&str) -> bool,
    tracking: tracking::Params,
    hysteresis: f32,
    lines_cfg: Vec<LineConfig>,
    zones_cfg: Vec<ZoneConfig>,
    size: (u32, u32),
    tracker: Tracker,
    lines: Lines,
    seen: Vec<(u64, f32, f32)>,
}

/// Persons, for [`TrackCounter::new`].
pub fn persons(class: &str) -> bool {
    class == "person"
}

/// Vehicles, for [`TrackCounter::new`].
pub fn vehicles(class: &str) -> bool {
    tracking::VEHICLES.contains(&class)
}

impl TrackCounter {
    pub fn new(
        counts: fn(&str) -> bool,
        tracking: tracking::Params,
        hysteresis: f32,
        lines: Vec<LineConfig>,
        zones: Vec<ZoneConfig>,
    ) -> Self {
        Self {
            counts,
            tracking,
            hysteresis,
            lines_cfg: lines,
            zones_cfg: zones,
            size: (0, 0),
            tracker: Tracker::new(tracking),
            lines: Lines::new(&[], &[], 0.0, 0.0, 0.0),
            seen: Vec::new(),
        }
    }

    /// One frame's detections (any class; the counted ones are taken) at time
    /// `t` seconds: the crossings completed.
    pub fn process(
        &mut self,
        t: f64,
        width: u32,
        height: u32,
        detections: &[Detection],
    ) -> Vec<Crossing> {
        if self.size != (width, height) {
            self.size = (width, height);
            self.tracker = Tracker::new(self.tracking);
            self.lines = Lines::new(
                &self.lines_cfg,
                &self.zones_cfg,
                width as f32,
                height as f32,
                self.hysteresis,
            );
        }
        let counted: Vec<Detection> = detections
            .iter()
            .filter(|d| (self.counts)(d.class))
            .cloned()
            .collect();
        self.tracker.update(t, &counted);
        let tracker = &self.tracker;
        self.lines
            .retain(|id| tracker.tracks().iter().any(|t| t.id == id));
        self.seen = tracker
            .seen_at(t)
            .map(|tr| {
                let (x, y) = tr.foot();
                (tr.id, x, y)
            })
            .collect();
        let mut crossings = self.lines.cross(&self.seen);
        for c in &mut crossings {
            if let Some(tr) = tracker.tracks().iter().find(|tr| tr.id == c.track) {
                c.class = tr.class;
            }
        }
        crossings
    }

    /// The tracks seen in the last frame.
    pub fn tracks(&self) -> impl Iterator<Item = &tracking::Track> {
        self.tracker
            .tracks()
            .iter()
            .filter(|t| t.confirmed && self.seen.iter().any(|s| s.0 == t.id))
    }

    /// People in each zone now (foot points of the tracks seen in the last frame).
    pub fn occupancy(&self) -> Vec<(String, u32)> {
        self.lines.occupancy(&self.seen)
    }
}

/// Which side of the line a point is on: +1 / -1 outside the dead band, 0 inside it
/// or beyond the line's ends (a person walking past the end of a line does not
/// cross it).
fn side(l: &Line, x: f32, y: f32, band: f32) -> i8 {
    let (dx, dy) = (l.b.0 - l.a.0, l.b.1 - l.a.1);
    let len2 = dx * dx + dy * dy;
    if len2 <= 0.0 {
        return 0;
    }
    let along = ((x - l.a.0) * dx + (y - l.a.1) * dy) / len2;
    if !(-0.05..=1.05).contains(&along) {
        return 0;
    }
    // Signed distance along the normal (-dy, dx).
    let d = ((x - l.a.0) * -dy + (y - l.a.1) * dx) / len2.sqrt();
    if d > band {
        1
    } else if d < -band {
        -1
    } else {
        0
    }
}

/// Point in polygon (even-odd rule).
fn inside(poly: &[(f32, f32)], x: f32, y: f32) -> bool {
    let mut inside = false;
    let mut j = poly.len().wrapping_sub(1);
    for i in 0..poly.len() {
        let (xi, yi) = poly[i];
        let (xj, yj) = poly[j];
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

/// 3x3 majority: a pixel is foreground when at least 5 of its 9 neighbours are.
fn majority(mask: &[bool], w: usize, h: usize) -> Vec<bool> {
    let mut out = vec![false; w * h];
    for y in 1..h.saturating_sub(1) {
        for x in 1..w.saturating_sub(1) {
            let mut n = 0;
            for dy in 0..3 {
                for dx in 0..3 {
                    n += mask[(y + dy - 1) * w + x + dx - 1] as u32;
                }
            }
            out[y * w + x] = n >= 5;
        }
    }
    out
}

/// Connected components (4-connected) of a mask: centroid, area, bounding box.
fn components(mask: &[bool], w: usize, h: usize) -> Vec<Blob> {
    regions(mask, w, h)
        .into_iter()
        .map(|pixels| {
            let (mut sx, mut sy) = (0f64, 0f64);
            let mut bb = [u32::MAX, u32::MAX, 0, 0];
            for &i in &pixels {
                let (x, y) = ((i % w) as u32, (i / w) as u32);
                sx += x as f64;
                sy += y as f64;
                bb = [bb[0].min(x), bb[1].min(y), bb[2].max(x), bb[3].max(y)];
            }
            let area = pixels.len() as u32;
            Blob {
                x: (sx / area as f64) as f32,
                y: (sy / area as f64) as f32,
                area,
                bbox: [bb[0], bb[1], bb[2] - bb[0] + 1, bb[3] - bb[1] + 1],
            }
        })
        .collect()
}

/// Counts per line and occupancy per zone over one wall-clock interval.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub lines: BTreeMap<String, InOut>,
    pub zones: BTreeMap<String, Occupancy>,
    pub frames: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct InOut {
    #[serde(rename = "in")]
    pub inn: u64,
    pub out: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Occupancy {
    /// At the last frame of the interval.
    pub last: u32,
    /// The most at once during the interval.
    pub max: u32,
}

impl Tally {
    /// An empty tally that lists every line and zone (zeros are news too).
    pub fn new(lines: &[LineConfig], zones: &[ZoneConfig]) -> Self {
        Self {
            lines: lines
                .iter()
                .map(|l| (l.name.clone(), InOut::default()))
                .collect(),
            zones: zones
                .iter()
                .map(|z| (z.name.clone(), Occupancy::default()))
                .collect(),
            frames: 0,
        }
    }

    pub fn add(&mut self, crossings: &[Crossing], occupancy: &[(String, u32)]) {
        self.frames += 1;
        for c in crossings {
            let e = self.lines.entry(c.line.clone()).or_default();
            if c.direction == "in" {
                e.inn += 1;
            } else {
                e.out += 1;
            }
        }
        for (name, n) in occupancy {
            let z = self.zones.entry(name.clone()).or_default();
            z.last = *n;
            z.max = z.max.max(*n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> LineConfig {
        LineConfig {
            name: "door".into(),
            a: [0.0, 0.5],
            b: [1.0, 0.5],
            in_direction: None,
        }
    }

    /// A counter on a 100x100 working frame, fed blob positions directly.
    fn counter() -> Counter {
        let mut c = Counter::new(Params::default(), vec![line()], vec![]);
        c.size_for(100, 100);
        c
    }

    fn at(x: f32, y: f32) -> Blob {
        Blob {
            x,
            y,
            area: 50,
            bbox: [0, 0, 1, 1],
        }
    }

    fn walk(c: &mut Counter, ys: &[f32]) -> Vec<Crossing> {
        ys.iter().flat_map(|&y| c.track(&[at(50.0, y)])).collect()
    }

    #[test]
    fn walking_down_across_a_horizontal_line_counts_one_in() {
        let mut c = counter();
        let out = walk(&mut c, &[20.0, 30.0, 40.0, 48.0, 55.0, 65.0, 80.0]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].direction, "in");
    }

    #[test]
    fn lingering_on_the_line_counts_once_and_turning_back_on_it_not_at_all() {
        let mut c = counter();
        // Jitters inside the dead band for a while, then goes on.
        let out = walk(
            &mut c,
            &[30.0, 40.0, 49.0, 52.0, 48.0, 51.0, 49.5, 52.0, 60.0, 70.0],
        );
        assert_eq!(out.len(), 1);
        // Another one comes to the line and goes back.
        let mut c = counter();
        let out = walk(&mut c, &[30.0, 40.0, 48.0, 51.0, 49.0, 40.0, 30.0]);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn crossing_and_coming_back_counts_in_then_out() {
        let mut c = counter();
        let out = walk(
            &mut c,
            &[30.0, 40.0, 50.0, 60.0, 70.0, 60.0, 50.0, 40.0, 30.0],
        );
        let dirs: Vec<_> = out.iter().map(|c| c.direction).collect();
        assert_eq!(dirs, ["in", "out"]);
    }

    #[test]
    fn two_people_side_by_side_are_two_tracks_and_two_counts() {
        let mut c = counter();
        let mut out = Vec::new();
        for y in [30.0, 40.0, 50.0, 60.0, 70.0] {
            out.extend(c.track(&[at(30.0, y), at(70.0, y)]));
        }
        assert_eq!(out.len(), 2);
        assert_ne!(out[0].track, out[1].track);
    }

    #[test]
    fn the_named_direction_decides_what_is_in() {
        let mut l = line();
        l.in_direction = Some(InDirection::Up);
        let mut c = Counter::new(Params::default(), vec![l], vec![]);
        c.size_for(100, 100);
        let out = walk(&mut c, &[30.0, 40.0, 50.0, 60.0, 70.0]);
        assert_eq!(out[0].direction, "out");
    }

    #[test]
    fn passing_beyond_the_end_of_a_line_is_not_a_crossing() {
        let mut l = line();
        l.b = [0.4, 0.5];
        let mut c = Counter::new(Params::default(), vec![l], vec![]);
        c.size_for(100, 100);
        assert!(walk(&mut c, &[30.0, 40.0, 50.0, 60.0, 70.0]).is_empty());
    }

    #[test]
    fn a_moving_square_on_a_still_background_is_one_blob_where_it_is() {
        let (w, h) = (160u32, 120u32);
        let mut c = Counter::new(Params::default(), vec![], vec![]);
        let frame = |x0: u32| {
            let mut rgb = vec![90u8; (w * h * 3) as usize];
            for y in 40..70 {
                for x in x0..x0 + 20 {
                    let i = ((y * w + x) * 3) as usize;
                    rgb[i..i + 3].copy_from_slice(&[230, 230, 230]);
                }
            }
            rgb
        };
        let empty = vec![90u8; (w * h * 3) as usize];
        assert!(
            c.detect(&empty, w, h).is_empty(),
            "the first frame is background"
        );
        let blobs = c.detect(&frame(50), w, h);
        assert_eq!(blobs.len(), 1, "{blobs:?}");
        assert!(
            (blobs[0].x - 59.5).abs() < 2.0 && (blobs[0].y - 54.5).abs() < 2.0,
            "{blobs:?}"
        );
    }

    #[test]
    fn zones_count_the_people_inside() {
        let zone = ZoneConfig {
            name: "left".into(),
            points: vec![[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]],
        };
        let mut c = Counter::new(Params::default(), vec![], vec![zone]);
        c.size_for(100, 100);
        c.track(&[at(20.0, 20.0), at(30.0, 80.0), at(80.0, 50.0)]);
        assert_eq!(c.occupancy(), vec![("left".to_owned(), 2)]);
    }

    /// A person track counter on a 200x200 frame with a horizontal line across
    /// the middle, fed one person box per frame whose foot point is at `(x, y)`.
    fn person_counter() -> TrackCounter {
        TrackCounter::new(
            persons,
            tracking::Params::default(),
            0.03,
            vec![line()],
            vec![],
        )
    }

    fn feet(c: &mut TrackCounter, steps: &[(f32, f32)]) -> Vec<Crossing> {
        let mut out = Vec::new();
        for (k, &(x, y)) in steps.iter().enumerate() {
            let d = Detection {
                class: "person",
                score: 0.8,
                bbox: [x - 10.0, y - 60.0, x + 10.0, y],
            };
            out.extend(c.process(k as f64 * 0.2, 200, 200, &[d]));
        }
        out
    }

    #[test]
    fn a_person_walking_down_across_the_line_is_counted_in_by_the_foot_point() {
        let mut c = person_counter();
        let ys = [60.0, 72.0, 84.0, 96.0, 108.0, 120.0, 132.0];
        let out = feet(&mut c, &ys.map(|y| (100.0, y)));
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].direction, "in");
    }

    #[test]
    fn a_person_who_stops_on_the_line_and_turns_back_is_not_counted() {
        let mut c = person_counter();
        let ys = [
            60.0, 75.0, 90.0, 98.0, 101.0, 101.0, 101.0, 99.0, 90.0, 75.0, 60.0,
        ];
        assert!(feet(&mut c, &ys.map(|y| (100.0, y))).is_empty());
    }

    #[test]
    fn a_traffic_counter_counts_a_car_and_not_a_person() {
        let mut c = TrackCounter::new(
            vehicles,
            tracking::Params::default(),
            0.03,
            vec![line()],
            vec![],
        );
        let mut out = Vec::new();
        for (k, y) in [60.0f32, 80.0, 100.0, 120.0, 140.0].iter().enumerate() {
            let car = Detection {
                class: "car",
                score: 0.9,
                bbox: [20.0, y - 40.0, 90.0, *y],
            };
            let person = Detection {
                class: "person",
                score: 0.9,
                bbox: [150.0, y - 60.0, 170.0, *y],
            };
            out.extend(c.process(k as f64 * 0.2, 200, 200, &[car, person]));
        }
        assert_eq!(out.len(), 1, "{out:?}");
    }

    #[test]
    fn other_classes_are_not_people() {
        let mut c = person_counter();
        for (k, y) in [60.0f32, 80.0, 100.0, 120.0, 140.0].iter().enumerate() {
            let car = Detection {
                class: "car",
                score: 0.9,
                bbox: [50.0, y - 40.0, 150.0, *y],
            };
            assert!(c.process(k as f64 * 0.2, 200, 200, &[car]).is_empty());
        }
    }

    #[test]
    fn two_people_crossing_side_by_side_are_two_counts() {
        let mut c = person_counter();
        let mut out = Vec::new();
        for (k, y) in [60.0f32, 75.0, 90.0, 105.0, 120.0, 135.0]
            .iter()
            .enumerate()
        {
            let at = |x: f32| Detection {
                class: "person",
                score: 0.8,
                bbox: [x - 10.0, y - 60.0, x + 10.0, *y],
            };
            out.extend(c.process(k as f64 * 0.2, 200, 200, &[at(80.0), at(104.0)]));
        }
        assert_eq!(out.len(), 2, "{out:?}");
        assert_ne!(out[0].track, out[1].track);
    }
}
