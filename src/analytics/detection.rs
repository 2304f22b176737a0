//! The detection stage: analytics frames from its queue → the object detector on
//! one blocking thread at a time → the frame with its persons and vehicles, handed
//! to every analytic that wants them (people counting today), each through its
//! own drop-oldest queue. One inference per analysed frame, whoever uses it.
//!
//! Frames are dropped upstream (oldest first, counted in `detector.frames_dropped`)
//! while the detector is busy; a frame no analytic wants is not run through the
//! model. A model that cannot be loaded stops this stage only (logged, counted in
//! `detector.errors`, its error in the metrics): the rest of the daemon runs on.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::detector::{nms_by, Detection, Detector, DetectorError, CLASSES, NMS_IOU};
use super::inference::Backend;
use super::motion::{self, DetectGate};
use super::raster::View;
use super::tracking;
use crate::metrics::Metrics;
use crate::video::{Frame, FrameQueue, Queue};

/// The fields of `[detector]` remote configuration may set; the stage restarts
/// with them. Where the model is and what runs it stay local.
pub const DETECTOR_TUNABLE: &[&str] = &[
    "input_size",
    "classes",
    "min_scores",
    "start_score",
    "vehicle_start_score",
    "keep_score",
    "match_iou",
    "confirm_hits",
    "max_lost",
    "refind",
    "motion",
    "still_every",
];

/// Object detection shared by the analytics (NanoDet-m; see `docs/detector.md`).
/// The fields of [`DETECTOR_TUNABLE`] are remotely tunable (the stage is
/// restarted alone); the rest is read at start-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorConfig {
    /// Run the detector on the analytics frames; people counting then follows
    /// tracked persons instead of moving blobs (needs `[video] enabled` and the
    /// model from `deploy/fetch-detector.sh`).
    #[serde(default)]
    pub enabled: bool,
    /// The ONNX model (`nanodet-m-416.onnx`).
    #[serde(default = "default_model")]
    pub model: PathBuf,
    /// The runtime that runs it: `tract` (built in) or `onnxruntime` (builds with
    /// the `ort` feature; about twice as fast here, needs its shared library).
    #[serde(default)]
    pub backend: super::PlatesBackend,
    /// The ONNX Runtime shared library for `backend = "onnxruntime"`; empty:
    /// `libonnxruntime.so` beside the model (`deploy/fetch-onnxruntime.sh DIR`).
    #[serde(default)]
    pub onnxruntime_library: PathBuf,
    /// The model's input, `[width, height]` in pixels, multiples of 32; a height
    /// of 0 follows the frame's aspect ratio (rounded to 32), which measured
    /// better than squashing to a square and costs less. Larger finds smaller
    /// (farther) objects and costs more: the time grows with the area.
    #[serde(default = "default_input_size")]
    pub input_size: [usize; 2],
    /// COCO classes kept; others are dropped right after the model.
    #[serde(default = "default_classes")]
    pub classes: Vec<String>,
    /// A detection at or above this score (0-1) starts a track and is matched
    /// first. Fixed background spots (a bin, a pole) score 0.30-0.35.
    #[serde(default = "default_start_score")]
    pub start_score: f32,
    /// The same for vehicles (0-1): cars seen close or in part score lower than
    /// people, and a vehicle must be tracked before its plate is read.
    #[serde(default = "default_vehicle_start_score")]
    pub vehicle_start_score: f32,
    /// A detection at or above this score (0-1) can continue a confirmed track
    /// (a person half hidden scores low); below it, detections are ignored.
    #[serde(default = "default_keep_score")]
    pub keep_score: f32,
    /// Per class, the least score kept, overriding `keep_score`, e.g.
    /// `{ car = 0.3 }`.
    #[serde(default)]
    pub min_scores: BTreeMap<String, f32>,
    /// Least overlap (IoU, 0-1) between a track's predicted box and a detection
    /// for them to match.
    #[serde(default = "default_match_iou")]
    pub match_iou: f32,
    /// Detections matched before a track counts (1-10).
    #[serde(default = "default_confirm_hits")]
    pub confirm_hits: u32,
    /// A track unseen for this long is forgotten; shorter occlusions keep its id.
    #[serde(default = "default_max_lost", with = "humantime_serde")]
    pub max_lost: Duration,
    /// A lost track is re-found by a detection of its size this far from where it
    /// was predicted, in the track's heights (0-5).
    #[serde(default = "default_refind")]
    pub refind: f32,
    /// Frames waiting for the detector; when full the oldest is dropped (counted
    /// in `detector.frames_dropped`).
    #[serde(default = "default_frame_queue")]
    pub frame_queue: usize,
    /// A still scene with nothing in view is not run through the detector on
    /// every frame: a frame is detected when more than this fraction (0-1) of a
    /// small grey thumbnail changed since the frame the detector last ran on, or
    /// when that frame showed an object at its `start_score`. 0 detects every
    /// frame. Frames left out are counted in `detector.frames_still`.
    #[serde(default = "default_motion")]
    pub motion: f32,
    /// The longest a still scene with nothing in view goes without the detector
    /// (100 ms - 60 s); shorter than `max_lost`, a track held by low scores is
    /// not lost between two runs.
    #[serde(default = "default_still_every", with = "humantime_serde")]
    pub still_every: Duration,
}

fn default_model() -> PathBuf {
    PathBuf::from("/var/lib/edgecam/models").join(super::detector::MODEL_FILE)
}
fn default_input_size() -> [usize; 2] {
    [super::detector::SIZE, 0]
}

/// The model's input size for a frame: `size`, its height taken from the frame's
/// aspect ratio when 0 (rounded to a multiple of 32, at least 64).
pub fn input_size_for(size: [usize; 2], width: u32, height: u32) -> [usize; 2] {
    let [w, h] = size;
    if h != 0 || width == 0 {
        return [w, h.max(if h == 0 { w } else { h })];
    }
    let exact = w as f64 * height as f64 / width as f64;
    let h = ((exact / 32.0).round() as usize * 32).clamp(64, 2048);
    [w, h]
}
fn default_classes() -> Vec<String> {
    ["person", "car", "bus", "truck", "motorcycle"]
        .map(String::from)
        .to_vec()
}
fn default_start_score() -> f32 {
    0.5
}
fn default_vehicle_start_score() -> f32 {
    0.3
}
fn default_keep_score() -> f32 {
    0.2
}
fn default_match_iou() -> f32 {
    0.3
}
fn default_confirm_hits() -> u32 {
    2
}
fn default_max_lost() -> Duration {
    Duration::from_secs(2)
}
fn default_refind() -> f32 {
    0.75
}
fn default_frame_queue() -> usize {
    2
}
fn default_motion() -> f32 {
    0.002
}
fn default_still_every() -> Duration {
    Duration::from_secs(1)
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            model: default_model(),
            backend: Default::default(),
            onnxruntime_library: PathBuf::new(),
            input_size: default_input_size(),
            classes: default_classes(),
            start_score: default_start_score(),
            vehicle_start_score: default_vehicle_start_score(),
            keep_score: default_keep_score(),
            min_scores: BTreeMap::new(),
            match_iou: default_match_iou(),
            confirm_hits: default_confirm_hits(),
            max_lost: default_max_lost(),
            refind: default_refind(),
            frame_queue: default_frame_queue(),
            motion: default_motion(),
            still_every: default_still_every(),
        }
    }
}

impl DetectorConfig {
    /// The runtime for the model: one session, one thread, for ONNX Runtime.
    pub fn runtime(&self) -> Backend {
        match self.backend {
            super::PlatesBackend::Tract => Backend::Tract,
            super::PlatesBackend::Onnxruntime => Backend::Onnxruntime {
                library: if self.onnxruntime_library.as_os_str().is_empty() {
                    self.model
                        .parent()
                        .unwrap_or(std::path::Path::new("."))
                        .join("libonnxruntime.so")
                } else {
                    self.onnxruntime_library.clone()
                },
                sessions: 1,
            },
        }
    }

    /// The tracker's settings.
    pub fn tracking(&self) -> tracking::Params {
        tracking::Params {
            high: self.start_score,
            low: self.keep_score,
            match_iou: self.match_iou,
            confirm_hits: self.confirm_hits,
            max_lost: self.max_lost.as_secs_f64(),
            refind: self.refind,
        }
    }

    /// The tracker's settings for vehicles.
    pub fn vehicle_tracking(&self) -> tracking::Params {
        tracking::Params {
            high: self.vehicle_start_score,
            ..self.tracking()
        }
    }

    /// The lowest score any class keeps: what the model is asked for.
    pub fn lowest_score(&self) -> f32 {
        self.min_scores
            .values()
            .copied()
            .fold(self.keep_score, f32::min)
    }

    /// What the analytics get of the model's output: the kept detections, and of
    /// boxes of one vehicle called by two vehicle classes (a car and a truck at
    /// once, as the model often says), the better one only.
    pub fn select(&self, found: Vec<Detection>) -> Vec<Detection> {
        let kept = found.into_iter().filter(|d| self.keeps(d)).collect();
        nms_by(kept, NMS_IOU, tracking::same_kind)
    }

    /// Whether a detection scores enough to start a track.
    pub fn starts_track(&self, d: &Detection) -> bool {
        let start = if tracking::VEHICLES.contains(&d.class) {
            self.vehicle_start_score
        } else {
            self.start_score
        };
        d.score >= start
    }

    /// Whether a detection is kept: its class is wanted and it scores enough.
    pub fn keeps(&self, d: &Detection) -> bool {
        self.classes.iter().any(|c| c == d.class)
            && d.score
                >= self
                    .min_scores
                    .get(d.class)
                    .copied()
                    .unwrap_or(self.keep_score)
    }

    /// Every invalid value: `(field, what was expected)`.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut check = |ok: bool, field: &str, expected: String| {
            if !ok {
                out.push((format!("detector.{field}"), expected));
            }
        };
        let unknown = |c: &str| !CLASSES.contains(&c);
        let [w, h] = self.input_size;
        check(
            w % 32 == 0 && (128..=1280).contains(&w) && (h == 0 || (h % 32 == 0 && (128..=1280).contains(&h))),
            "input_size",
            format!("[width, height], multiples of 32 from 128 to 1280 (height 0: the frame's aspect), found [{w}, {h}]"),
        );
        check(
            self.backend == super::PlatesBackend::Tract || cfg!(feature = "ort"),
            "backend",
            "\"tract\": this build has no onnxruntime backend (build with --features ort)".into(),
        );
        check(
            !self.classes.is_empty(),
            "classes",
            "at least one COCO class, e.g. \"person\"".into(),
        );
        for (i, c) in self.classes.iter().enumerate() {
            check(
                !unknown(c),
                &format!("classes[{i}]"),
                format!("a COCO class name (person, car, bus, truck, motorcycle, bicycle, …), found {c:?}"),
            );
        }
        for (c, v) in &self.min_scores {
            check(
                self.classes.contains(c),
                &format!("min_scores.{c}"),
                format!("a class listed in detector.classes, found {c:?}"),
            );
            check(
                (0.0..=1.0).contains(v),
                &format!("min_scores.{c}"),
                format!("a score from 0 to 1, found {v}"),
            );
        }
        check(
            (0.0..=1.0).contains(&self.start_score),
            "start_score",
            format!("a score from 0 to 1, found {}", self.start_score),
        );
        check(
            (0.0..=1.0).contains(&self.vehicle_start_score),
            "vehicle_start_score",
            format!("a score from 0 to 1, found {}", self.vehicle_start_score),
        );
        let lowest_start = self.start_score.min(self.vehicle_start_score);
        check(
            (0.0..=1.0).contains(&self.keep_score) && self.keep_score <= lowest_start,
            "keep_score",
            format!(
                "a score from 0 to start_score and vehicle_start_score ({lowest_start}), found {}",
                self.keep_score
            ),
        );
        check(
            self.match_iou > 0.0 && self.match_iou <= 1.0,
            "match_iou",
            format!("a value above 0, at most 1, found {}", self.match_iou),
        );
        check(
            (1..=10).contains(&self.confirm_hits),
            "confirm_hits",
            format!("a value from 1 to 10, found {}", self.confirm_hits),
        );
        check(
            (Duration::from_millis(200)..=Duration::from_secs(60)).contains(&self.max_lost),
            "max_lost",
            format!(
                "a duration from 200ms to 1m, found {}",
                humantime::format_duration(self.max_lost)
            ),
        );
        check(
            (0.0..=5.0).contains(&self.refind),
            "refind",
            format!("a value from 0 to 5, found {}", self.refind),
        );
        check(
            (1..=16).contains(&self.frame_queue),
            "frame_queue",
            format!("a value from 1 to 16, found {}", self.frame_queue),
        );
        check(
            (0.0..=1.0).contains(&self.motion),
            "motion",
            format!(
                "a fraction from 0 to 1 (0: every frame), found {}",
                self.motion
            ),
        );
        check(
            (Duration::from_millis(100)..=Duration::from_secs(60)).contains(&self.still_every),
            "still_every",
            format!(
                "a duration from 100ms to 1m, found {}",
                humantime::format_duration(self.still_every)
            ),
        );
        out
    }
}

/// One analysed frame and what the detector found in it (kept classes, kept
/// scores), in the frame's pixels.
#[derive(Debug)]
pub struct Detected {
    pub frame: Arc<Frame>,
    pub objects: Vec<Detection>,
}

/// The queue from this stage to one analytic.
pub type DetectedQueue = Queue<Detected>;

/// What an analytic reads: frames (without the detector), or the detector's
/// output (each analytic follows it with the tracker settings of `[detector]` in
/// effect). Clones share the queue.
#[derive(Clone)]
pub enum Input {
    Frames(FrameQueue),
    Detections(DetectedQueue),
}

/// One item of an input.
pub enum Item {
    Frame(Arc<Frame>),
    Detected(Arc<Detected>),
}

impl Input {
    /// Whether the analytic wants anything now (see [`Queue::set_wanted`]).
    pub fn set_wanted(&self, wanted: bool) {
        match self {
            Input::Frames(q) => q.set_wanted(wanted),
            Input::Detections(queue) => queue.set_wanted(wanted),
        }
    }

    /// The next item, waiting for one.
    pub async fn next(&self) -> Item {
        match self {
            Input::Frames(q) => Item::Frame(q.pop().await),
            Input::Detections(queue) => Item::Detected(queue.pop().await),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DetectionError {
    #[error(transparent)]
    Detector(#[from] DetectorError),
    #[error("the detector thread panicked")]
    Panicked,
}

/// Counts an error, and keeps it as the last one for the metrics.
fn count_error(metrics: &Metrics, e: &dyn std::fmt::Display) {
    Metrics::add(&metrics.detector_errors, 1);
    Metrics::set_text(&metrics.detector_last_error, &e.to_string());
}

/// The stage's name in the metrics and the retained status.
pub const NAME: &str = "object_detection";

/// The stage.
pub struct ObjectDetection {
    cfg: DetectorConfig,
    frames: FrameQueue,
    outputs: Vec<DetectedQueue>,
    metrics: Arc<Metrics>,
}

impl ObjectDetection {
    pub fn new(
        cfg: DetectorConfig,
        frames: FrameQueue,
        outputs: Vec<DetectedQueue>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            cfg,
            frames,
            outputs,
            metrics,
        }
    }
}

impl crate::supervision::Stage for ObjectDetection {
    type Error = DetectionError;

    async fn run(&mut self, shutdown: CancellationToken) -> Result<(), DetectionError> {
        let path = self.cfg.model.clone();
        let runtime = self.cfg.runtime();
        let started = Instant::now();
        // Checked at once at a square size; planned again for the frames' size.
        let size = input_size_for(self.cfg.input_size, 0, 0);
        let rt = runtime.clone();
        // Loading reads the model file, which can hang on a dying card: marked
        // like a frame's work, so that it shows and, past its limit, stops the
        // watchdog.
        let busy = Metrics::busy(&self.metrics, NAME);
        let loaded = tokio::task::spawn_blocking(move || {
            let _busy = busy;
            Detector::load_sized(&path, size, &rt)
        })
        .await
        .map_err(|_| DetectionError::Panicked)
        .and_then(|r| r.map_err(DetectionError::from));
        let mut detector = match loaded {
            Ok(d) => Arc::new(d),
            Err(e) => {
                // No frames are wanted by a stage that cannot use them.
                self.frames.set_wanted(false);
                count_error(&self.metrics, &e);
                return Err(e);
            }
        };
        // Started again after a failure: frames are wanted again.
        self.frames.set_wanted(true);
        tracing::info!(
            model = %self.cfg.model.display(),
            load_ms = started.elapsed().as_millis() as u64,
            classes = ?self.cfg.classes,
            "object detector loaded"
        );
        let cfg = Arc::new(self.cfg.clone());
        let mut gate = DetectGate::new(cfg.motion, cfg.still_every.as_millis() as i64);
        loop {
            let frame = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                frame = self.frames.pop() => frame,
            };
            if !self.outputs.iter().any(|q| q.wanted()) {
                continue;
            }
            let at = motion::captured_ms(&frame);
            let (wanted, thumb) = gate.look(&frame, at);
            if !wanted {
                Metrics::add(&self.metrics.detector_frames_still, 1);
                continue;
            }
            let size = input_size_for(cfg.input_size, frame.width, frame.height);
            if detector.size() != size {
                // The plan for the old size goes before the new one is built:
                // two plans at once would raise the peak memory for nothing.
                let (path, rt) = (cfg.model.clone(), runtime.clone());
                drop(detector);
                let busy = Metrics::busy(&self.metrics, NAME);
                let planned = tokio::task::spawn_blocking(move || {
                    let _busy = busy;
                    Detector::load_sized(&path, size, &rt)
                })
                .await
                .map_err(|_| DetectionError::Panicked)?;
                match planned {
                    Ok(d) => {
                        tracing::info!(frame = ?(frame.width, frame.height), input = ?size, "object detector planned for the frames' size");
                        detector = Arc::new(d);
                    }
                    Err(e) => {
                        self.frames.set_wanted(false);
                        count_error(&self.metrics, &e);
                        return Err(e.into());
                    }
                }
            }
            let (d, c) = (detector.clone(), cfg.clone());
            let f = frame.clone();
            let started = Instant::now();
            let busy = Metrics::busy(&self.metrics, NAME);
            let found = tokio::task::spawn_blocking(move || {
                let _busy = busy;
                // The frame's own pixels: no copy.
                let img = View {
                    width: f.width,
                    height: f.height,
                    rgb: &f.rgb,
                };
                d.detect(img, c.lowest_score()).map(|found| c.select(found))
            })
            .await
            .map_err(|_| DetectionError::Panicked)?;
            let objects = match found {
                Ok(o) => o,
                Err(e) => {
                    // One bad frame is not the end: counted, and the next one tried.
                    tracing::warn!(error = %e, "object detection failed on a frame");
                    count_error(&self.metrics, &e);
                    continue;
                }
            };
            gate.ran(thumb, at, objects.iter().any(|o| cfg.starts_track(o)));
            Metrics::add(&self.metrics.detector_frames, 1);
            Metrics::add(
                &self.metrics.detector_us_total,
                started.elapsed().as_micros() as u64,
            );
            let detected = Arc::new(Detected { frame, objects });
            for q in &self.outputs {
                q.push(detected.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(DetectorConfig::default().problems(), vec![]);
    }

    #[test]
    fn a_zero_height_follows_the_frames_aspect_in_multiples_of_32() {
        assert_eq!(input_size_for([416, 0], 640, 480), [416, 320]);
        assert_eq!(input_size_for([416, 0], 1280, 720), [416, 224]);
        assert_eq!(input_size_for([416, 416], 1280, 720), [416, 416]);
        assert_eq!(input_size_for([416, 0], 0, 0), [416, 416]);
    }

    #[test]
    fn an_unknown_class_is_named_with_its_field() {
        let cfg = DetectorConfig {
            classes: vec!["person".into(), "lorry".into()],
            min_scores: [("bicycle".to_owned(), 0.3)].into(),
            ..DetectorConfig::default()
        };
        let fields: Vec<String> = cfg.problems().into_iter().map(|p| p.0).collect();
        assert_eq!(
            fields,
            ["detector.classes[1]", "detector.min_scores.bicycle"]
        );
    }

    #[test]
    fn one_vehicle_called_car_and_truck_at_once_is_kept_once() {
        let d = |class, score, x: f32| Detection {
            class,
            score,
            bbox: [x, 0.0, x + 100.0, 60.0],
        };
        let kept = DetectorConfig::default().select(vec![
            d("truck", 0.55, 0.0),
            d("car", 0.6, 2.0),
            d("person", 0.7, 0.0),
            d("car", 0.5, 300.0),
        ]);
        let classes: Vec<_> = kept.iter().map(|k| (k.class, k.bbox[0])).collect();
        assert_eq!(classes, [("person", 0.0), ("car", 2.0), ("car", 300.0)]);
    }

    #[test]
    fn a_class_keeps_detections_from_its_own_least_score() {
        let cfg = DetectorConfig {
            min_scores: [("car".to_owned(), 0.1)].into(),
            ..DetectorConfig::default()
        };
        let d = |class, score| Detection {
            class,
            score,
            bbox: [0.0, 0.0, 1.0, 1.0],
        };
        assert!(cfg.keeps(&d("car", 0.15)));
        assert!(!cfg.keeps(&d("person", 0.15)));
        assert!(cfg.keeps(&d("person", 0.25)));
        assert!(!cfg.keeps(&d("dog", 0.9)), "not a wanted class");
        assert_eq!(cfg.lowest_score(), 0.1);
    }
}
