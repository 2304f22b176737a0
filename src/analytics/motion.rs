//! Whether anything moved in the analytics frames, judged on a small grey
//! thumbnail: the plate reader's gate (frame to frame) and the object detector's
//! (since the frame it last ran on). Pure: no I/O, no clock.

use std::time::SystemTime;

use crate::video::Frame;

/// Side of the grey thumbnail the gates compare, in pixels (long side).
const THUMB: u32 = 160;
/// Grey-level change that marks a thumbnail pixel as changed.
const MOTION_DELTA: u8 = 20;

/// A small grey copy of `frame`, or `None` when its pixels are short.
pub fn thumbnail(frame: &Frame) -> Option<Vec<u8>> {
    if frame.rgb.len() < (frame.width * frame.height * 3) as usize {
        return None;
    }
    let step = (frame.width.max(frame.height) / THUMB).max(1);
    let mut out = Vec::new();
    for y in (0..frame.height).step_by(step as usize) {
        for x in (0..frame.width).step_by(step as usize) {
            let i = ((y * frame.width + x) * 3) as usize;
            let p = &frame.rgb[i..i + 3];
            out.push(((p[0] as u16 * 77 + p[1] as u16 * 150 + p[2] as u16 * 29) >> 8) as u8);
        }
    }
    Some(out)
}

/// Whether more than `threshold` (a fraction) of the pixels of thumbnail `a`
/// differ from those of `b`; always when their sizes differ.
pub fn changed(a: &[u8], b: &[u8], threshold: f32) -> bool {
    a.len() != b.len() || {
        let changed = a
            .iter()
            .zip(b)
            .filter(|(a, b)| a.abs_diff(**b) > MOTION_DELTA)
            .count();
        changed as f32 > threshold * a.len() as f32
    }
}

/// Whether anything moved between two frames, on a small grey thumbnail.
pub struct MotionGate {
    threshold: f32,
    last: Vec<u8>,
}

impl MotionGate {
    pub fn new(threshold: f32) -> Self {
        Self {
            threshold,
            last: Vec::new(),
        }
    }

    /// True when more than `threshold` of the thumbnail changed since the last
    /// frame (always for the first frame, and when the gate is off).
    pub fn moved(&mut self, frame: &Frame) -> bool {
        if self.threshold <= 0.0 {
            return true;
        }
        let Some(thumb) = thumbnail(frame) else {
            return true;
        };
        let moved = changed(&thumb, &self.last, self.threshold);
        self.last = thumb;
        moved
    }
}

/// Which frames the object detector runs on. Every frame while the frame it
/// last ran on showed an object that could start a track, or while the scene
/// changes; a still scene with nothing in view only once every `still_every`
/// (in milliseconds of capture time). What it would find there is what it found
/// last time: nothing that starts a track.
pub struct DetectGate {
    threshold: f32,
    still_every_ms: i64,
    /// When the detector last ran (capture time, ms) and that frame's thumbnail.
    last: Option<(i64, Vec<u8>)>,
    /// Whether it then found an object at a track's starting score.
    seen: bool,
}

/// A frame's capture time in milliseconds since the epoch.
pub fn captured_ms(frame: &Frame) -> i64 {
    frame
        .captured_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl DetectGate {
    /// A gate that opens on more than `threshold` of the thumbnail changed (0:
    /// always open), and at least every `still_every_ms`.
    pub fn new(threshold: f32, still_every_ms: i64) -> Self {
        Self {
            threshold,
            still_every_ms,
            last: None,
            seen: false,
        }
    }

    /// Whether the detector should run on the frame of thumbnail `thumb`
    /// (`None`: not comparable) captured at `at_ms`.
    pub fn wants(&self, thumb: Option<&[u8]>, at_ms: i64) -> bool {
        if self.threshold <= 0.0 || self.seen {
            return true;
        }
        let (Some((last_ms, reference)), Some(thumb)) = (&self.last, thumb) else {
            return true;
        };
        // A clock that went back opens it too.
        !(*last_ms..last_ms + self.still_every_ms).contains(&at_ms)
            || changed(thumb, reference, self.threshold)
    }

    /// Whether the detector should run on `frame`, captured at `at_ms`, and the
    /// thumbnail to hand back to [`DetectGate::ran`] (none while the gate is off).
    pub fn look(&self, frame: &Frame, at_ms: i64) -> (bool, Option<Vec<u8>>) {
        let thumb = (self.threshold > 0.0).then(|| thumbnail(frame)).flatten();
        (self.wants(thumb.as_deref(), at_ms), thumb)
    }

    /// The detector ran on the frame of `thumb` captured at `at_ms`; `seen`:
    /// it found an object at a track's starting score.
    pub fn ran(&mut self, thumb: Option<Vec<u8>>, at_ms: i64, seen: bool) {
        self.seen = seen;
        self.last = thumb.map(|t| (at_ms, t));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(value: u8) -> Frame {
        Frame {
            width: 320,
            height: 180,
            rgb: vec![value; 320 * 180 * 3],
            captured_at: SystemTime::now(),
        }
    }

    /// `frame(value)` with a bright square over 5 % of it.
    fn with_square(value: u8) -> Frame {
        let mut f = frame(value);
        for y in 0..40 {
            for x in 0..72 {
                let i = ((y * 320 + x) * 3) as usize;
                f.rgb[i..i + 3].copy_from_slice(&[250, 250, 250]);
            }
        }
        f
    }

    fn thumb(f: &Frame) -> Option<Vec<u8>> {
        thumbnail(f)
    }

    #[test]
    fn the_motion_gate_opens_on_change_only() {
        let mut g = MotionGate::new(0.01);
        assert!(g.moved(&frame(10)), "the first frame");
        assert!(!g.moved(&frame(10)));
        assert!(!g.moved(&frame(25)), "a change below the grey-level delta");
        assert!(g.moved(&with_square(25)));
        assert!(MotionGate::new(0.0).moved(&frame(1)), "off: always read");
    }

    #[test]
    fn a_still_empty_scene_is_detected_again_only_after_still_every() {
        let mut g = DetectGate::new(0.002, 1000);
        let still = thumb(&frame(10));
        assert!(g.wants(still.as_deref(), 0), "the first frame");
        g.ran(still.clone(), 0, false);
        assert!(!g.wants(still.as_deref(), 200));
        assert!(
            !g.wants(thumb(&frame(25)).as_deref(), 999),
            "below the delta"
        );
        assert!(g.wants(still.as_deref(), 1000), "still_every passed");
        assert!(g.wants(still.as_deref(), -5), "the clock went back");
    }

    #[test]
    fn a_change_since_the_last_detected_frame_opens_the_gate_even_when_it_crept_in() {
        let mut g = DetectGate::new(0.002, 10_000);
        g.ran(thumb(&frame(10)), 0, false);
        assert!(g.wants(thumb(&with_square(10)).as_deref(), 200));
        // Compared with the frame the detector last ran on, not the one before:
        // a slow change adds up.
        for (i, v) in [15u8, 20, 25, 31].into_iter().enumerate() {
            let open = g.wants(thumb(&frame(v)).as_deref(), 200 * (i as i64 + 2));
            assert_eq!(open, v == 31, "grey {v}");
        }
    }

    #[test]
    fn an_object_in_view_keeps_the_detector_on_every_frame() {
        let mut g = DetectGate::new(0.002, 1000);
        let still = thumb(&frame(10));
        g.ran(still.clone(), 0, true);
        assert!(g.wants(still.as_deref(), 200));
        g.ran(still.clone(), 200, false);
        assert!(
            !g.wants(still.as_deref(), 400),
            "gone: the gate holds again"
        );
    }

    #[test]
    fn a_look_gives_the_thumbnail_only_while_the_gate_is_on() {
        let (wanted, thumb) = DetectGate::new(0.0, 1000).look(&frame(10), 0);
        assert!(wanted && thumb.is_none());
        let mut g = DetectGate::new(0.002, 1000);
        let (wanted, thumb) = g.look(&frame(10), 0);
        assert!(wanted && thumb.is_some());
        g.ran(thumb, 0, false);
        assert!(!g.look(&frame(10), 200).0);
    }

    #[test]
    fn off_or_without_a_comparable_frame_the_detector_runs() {
        let g = DetectGate::new(0.0, 1000);
        assert!(g.wants(thumb(&frame(10)).as_deref(), 0));
        let mut g = DetectGate::new(0.002, 1000);
        g.ran(None, 0, false);
        assert!(g.wants(thumb(&frame(10)).as_deref(), 100));
        let mut short = frame(10);
        short.rgb.truncate(10);
        assert_eq!(thumbnail(&short), None);
        g.ran(thumb(&frame(10)), 0, false);
        assert!(g.wants(None, 100));
    }
}
