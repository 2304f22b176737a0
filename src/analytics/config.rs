//! The analytics' sections of the configuration (`[people]`, `[traffic]`,
//! `[plates]`; `[detector]` is [`super::DetectorConfig`]): their fields, defaults,
//! checks and which of them remote configuration may set.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::check::Checker;
use crate::topics;

/// The fields of `[people]` remote configuration may set, applied live.
pub const PEOPLE_TUNABLE: &[&str] = &[
    "enabled",
    "lines",
    "zones",
    "interval",
    "crossing_events",
    "threshold",
    "learning_rate",
    "min_area",
    "max_step",
    "hysteresis",
    "max_missed",
];

/// The fields of `[traffic]` remote configuration may set, applied live.
pub const TRAFFIC_TUNABLE: &[&str] = &[
    "enabled",
    "lines",
    "interval",
    "crossing_events",
    "hysteresis",
];

/// The fields of `[plates]` remote configuration may set: the stage restarts
/// with them. Where the models are and what runs them stay local.
pub const PLATES_TUNABLE: &[&str] = &[
    "recognisers",
    "zoom",
    "region",
    "countries",
    "layouts",
    "detector_size",
    "vehicle_detector_size",
    "roi",
    "min_confidence",
    "min_reads",
    "unread_vehicles",
    "track_timeout",
    "max_track",
    "max_jump",
    "motion",
    "threads",
    "snapshots",
    "snapshot_quality",
    "max_snapshots",
    "hash_plates",
    "hash_salt",
];

/// The runtime that runs the plate models.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlatesBackend {
    #[default]
    Tract,
    Onnxruntime,
}

/// Licence-plate reading (PP-OCRv4 text detection and recognition, plate-format
/// rules, tracking; see `docs/plates.md`). The fields of [`PLATES_TUNABLE`] are
/// remotely tunable (the stage restarts alone); the rest is read at start-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatesConfig {
    /// Read plates in the analytics frames (needs `[video] enabled` and the models;
    /// 1280x720 analytics frames suit the detector best).
    #[serde(default)]
    pub enabled: bool,
    /// Directory holding `ch_PP-OCRv4_det_infer.onnx`, `ch_PP-OCRv4_rec_infer.onnx`
    /// and `edgecam-plate-rec.onnx` (`deploy/fetch-models.sh` puts them there).
    #[serde(default = "default_models_dir")]
    pub models_dir: PathBuf,
    /// The runtime for the models: `tract` (built in) or `onnxruntime` (builds
    /// with the `ort` feature; about twice as fast, needs its shared library).
    #[serde(default)]
    pub backend: PlatesBackend,
    /// Which recognisers read each line of text the detector finds: `ppocr`
    /// (PP-OCRv4's general text recogniser; the default, the most accurate on real
    /// photographs), `edgecam` (edgecam's own, trained on rendered plates: smaller
    /// and faster) or `both` (their readings pooled); docs/plates.md says what each
    /// gives.
    #[serde(default)]
    pub recognisers: super::plates::Recognisers,
    /// Look again at each small line of text that could be a plate, enlarged
    /// (the text detector at 480x288 on the part of the image around it): the
    /// line's ends and its separation from the text above and below come out
    /// right more often (two points more plates read on the development set), for
    /// about a quarter more time per frame read; the daemon's peak memory stays
    /// the same (docs/plates.md).
    #[serde(default = "crate::config::default_true")]
    pub zoom: bool,
    /// The ONNX Runtime shared library for `backend = "onnxruntime"`; empty:
    /// `libonnxruntime.so` in `models_dir` (`deploy/fetch-onnxruntime.sh DIR` puts
    /// it there).
    #[serde(default)]
    pub onnxruntime_library: PathBuf,
    /// Which plates: `br` (Brazil), `eu` (Europe), `us` (United States) — the
    /// layouts of that region's countries in the table (docs/plates.md,
    /// `edgecam plate-layouts`) — or `any` (no layouts).
    #[serde(default = "default_plates_region")]
    pub region: super::plates::Region,
    /// Only these countries' layouts, by code (`DE`, `FR`, `BR`, `US-CA`, ...);
    /// empty: every country of `region`. Fewer layouts correct more confusions.
    #[serde(default)]
    pub countries: Vec<String>,
    /// The site's own plate layouts, added to the countries': `L` a letter, `N` a
    /// digit, `X` either, a letter or digit itself, `{a,b}` a repeat, `(AB|CD)`
    /// one of a list, e.g. `["LLNLNL", "L{1,2}N{4}", "(KA|KB)NNNN"]`. Reads are decoded against the layouts: a
    /// character the recogniser found likely enough as the kind the layout wants
    /// (`6` for a `G`) is read so, and a read that fits no layout counts for less.
    #[serde(default)]
    pub layouts: Vec<String>,
    /// The detector's input, `[width, height]` in pixels, multiples of 32: the
    /// frame (or `roi`) is scaled to fit it. Smaller is faster and needs less
    /// memory but loses small plates; a 1280x720 frame fills the default.
    #[serde(default = "default_detector_size")]
    pub detector_size: [usize; 2],
    /// With `[detector] enabled`: plates are read only inside the boxes of
    /// tracked vehicles, each box scaled to fit this text-detector input
    /// (`[width, height]`, multiples of 32), and frames with no vehicle are not
    /// read at all; `roi` and `motion` then do not apply.
    #[serde(default = "default_vehicle_detector_size")]
    pub vehicle_detector_size: [usize; 2],
    /// Part of the frame to read, `[x, y, width, height]` as fractions of the
    /// frame; empty: all of it. A smaller region is read at a larger scale (small
    /// plates read better) and leaves out signs and overlays.
    #[serde(default)]
    pub roi: Vec<f32>,
    /// Reads below this confidence (0-1) are ignored.
    #[serde(default = "default_plates_min_confidence")]
    pub min_confidence: f32,
    /// A vehicle read fewer times is discarded when its track ends (counted in
    /// `plates.tracks_discarded`): one stray read of a sign is not a vehicle.
    #[serde(default = "default_plates_min_reads")]
    pub min_reads: u32,
    /// With `[detector] enabled`: a vehicle that moved through the picture and
    /// left without a plate read still yields a `plate` event, with `plate: null`
    /// and the `reason` (counted in `plates.vehicles_unread`), so plate events
    /// count all the traffic. Off: only vehicles with a plate are reported.
    #[serde(default)]
    pub unread_vehicles: bool,
    /// A vehicle's track ends when its plate has not been read for this long; its
    /// event is published then.
    #[serde(default = "default_plates_track_timeout", with = "humantime_serde")]
    pub track_timeout: Duration,
    /// A vehicle still in view after this long (parked) is reported then, once,
    /// with `still_present: true`.
    #[serde(default = "default_plates_max_track", with = "humantime_serde")]
    pub max_track: Duration,
    /// Farthest a plate moves in a second, in plate widths, and still counts as
    /// the same vehicle when its text reads differently.
    #[serde(default = "default_plates_max_jump")]
    pub max_jump: f32,
    /// Frames are read only when this fraction of a small grey thumbnail changed
    /// since the last frame, or a vehicle is being tracked; 0 reads every frame.
    #[serde(default = "default_plates_motion")]
    pub motion: f32,
    /// Reader threads, each reading one frame at a time (1-4).
    #[serde(default = "default_plates_threads")]
    pub threads: usize,
    /// Frames waiting for a reader; when full the oldest is dropped (counted in
    /// `plates.frames_dropped`).
    #[serde(default = "default_plates_queue")]
    pub frame_queue: usize,
    /// Keep a JPEG of each vehicle's best frame as `snapshots/<event_id>.jpg`
    /// under `upload.media_dir`, to be fetched with a file request.
    #[serde(default = "crate::config::default_true")]
    pub snapshots: bool,
    /// JPEG quality of snapshots (1-100).
    #[serde(default = "default_snapshot_quality")]
    pub snapshot_quality: u8,
    /// Most snapshots kept; the oldest are deleted beyond it (counted in
    /// `plates.snapshots_deleted`).
    #[serde(default = "default_max_snapshots")]
    pub max_snapshots: usize,
    /// Publish `hex(sha256(salt + text))` instead of plate texts (alternates too).
    /// The snapshots still show the plate: turn them off as well if that matters.
    #[serde(default)]
    pub hash_plates: bool,
    /// The salt for `hash_plates` (at least 16 characters). The same salt across a
    /// fleet lets the cloud match vehicles between cameras without reading them.
    #[serde(default)]
    pub hash_salt: String,
}

/// People counting (background subtraction and blob tracking; see
/// `src/analytics/people.rs`). Coordinates are fractions of the frame (0..1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeopleConfig {
    /// Count people in the analytics frames (needs `[video] enabled`).
    #[serde(default)]
    pub enabled: bool,
    /// Counting lines: `{ name, a = [x, y], b = [x, y], in_direction }`.
    #[serde(default)]
    pub lines: Vec<super::LineConfig>,
    /// Zones whose occupancy is reported: `{ name, points = [[x, y], ...] }`.
    #[serde(default)]
    pub zones: Vec<super::ZoneConfig>,
    /// One `people_count` event per interval, aligned to the wall clock (a
    /// divisor of an hour keeps intervals on the hour).
    #[serde(default = "default_people_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Also one `people_crossing` event per crossing.
    #[serde(default)]
    pub crossing_events: bool,
    /// Luma difference from the background that marks a moving pixel (1-255).
    #[serde(default = "default_people_threshold")]
    pub threshold: u8,
    /// How fast the background follows slow changes (light), per frame (0.001-0.5).
    #[serde(default = "default_people_learning_rate")]
    pub learning_rate: f32,
    /// Smallest person, as a fraction of the frame's area.
    #[serde(default = "default_people_min_area")]
    pub min_area: f32,
    /// Farthest a person moves between two analysed frames, as a fraction of the
    /// frame's diagonal.
    #[serde(default = "default_people_max_step")]
    pub max_step: f32,
    /// Half-width of the dead band around a line, as a fraction of the diagonal: a
    /// person must leave it on the other side to be counted.
    #[serde(default = "default_people_hysteresis")]
    pub hysteresis: f32,
    /// Analysed frames a person may go undetected before the track ends.
    #[serde(default = "default_people_max_missed")]
    pub max_missed: u32,
}

/// Traffic counting: the detector's tracked vehicles (car, bus, truck,
/// motorcycle) crossing lines, counted per wall-clock interval like people (see
/// `docs/people-counting.md`). Needs `[detector] enabled`. Coordinates are
/// fractions of the frame (0..1). Remotely tunable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficConfig {
    /// Count vehicles.
    #[serde(default)]
    pub enabled: bool,
    /// Counting lines: `{ name, a = [x, y], b = [x, y], in_direction }`; a
    /// vehicle's point is the bottom centre of its box.
    #[serde(default)]
    pub lines: Vec<super::LineConfig>,
    /// One `vehicle_count` event per interval, aligned to the wall clock.
    #[serde(default = "default_people_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Also one `vehicle_crossing` event per crossing (with the vehicle's class).
    #[serde(default)]
    pub crossing_events: bool,
    /// Half-width of the dead band around a line, as a fraction of the diagonal.
    #[serde(default = "default_people_hysteresis")]
    pub hysteresis: f32,
}

impl Default for TrafficConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            lines: Vec::new(),
            interval: default_people_interval(),
            crossing_events: false,
            hysteresis: default_people_hysteresis(),
        }
    }
}

impl TrafficConfig {
    /// As a counting section (no zones, no blob tuning).
    pub fn counting(&self) -> PeopleConfig {
        PeopleConfig {
            enabled: self.enabled,
            lines: self.lines.clone(),
            interval: self.interval,
            crossing_events: self.crossing_events,
            hysteresis: self.hysteresis,
            ..PeopleConfig::default()
        }
    }
}

impl Default for PeopleConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            lines: Vec::new(),
            zones: Vec::new(),
            interval: default_people_interval(),
            crossing_events: false,
            threshold: default_people_threshold(),
            learning_rate: default_people_learning_rate(),
            min_area: default_people_min_area(),
            max_step: default_people_max_step(),
            hysteresis: default_people_hysteresis(),
            max_missed: default_people_max_missed(),
        }
    }
}

impl Default for PlatesConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            models_dir: default_models_dir(),
            backend: PlatesBackend::Tract,
            recognisers: Default::default(),
            zoom: true,
            onnxruntime_library: PathBuf::new(),
            region: default_plates_region(),
            countries: Vec::new(),
            layouts: Vec::new(),
            detector_size: default_detector_size(),
            vehicle_detector_size: default_vehicle_detector_size(),
            roi: Vec::new(),
            min_confidence: default_plates_min_confidence(),
            min_reads: default_plates_min_reads(),
            unread_vehicles: false,
            track_timeout: default_plates_track_timeout(),
            max_track: default_plates_max_track(),
            max_jump: default_plates_max_jump(),
            motion: default_plates_motion(),
            threads: default_plates_threads(),
            frame_queue: default_plates_queue(),
            snapshots: true,
            snapshot_quality: default_snapshot_quality(),
            max_snapshots: default_max_snapshots(),
            hash_plates: false,
            hash_salt: String::new(),
        }
    }
}

impl PlatesConfig {
    /// The reader's backend, `sessions` sessions per model for ONNX Runtime.
    pub fn reader_backend(&self) -> super::inference::Backend {
        match self.backend {
            PlatesBackend::Tract => super::inference::Backend::Tract,
            PlatesBackend::Onnxruntime => super::inference::Backend::Onnxruntime {
                library: if self.onnxruntime_library.as_os_str().is_empty() {
                    self.models_dir.join("libonnxruntime.so")
                } else {
                    self.onnxruntime_library.clone()
                },
                sessions: self.threads,
            },
        }
    }
}

impl PeopleConfig {
    /// The counter's tuning.
    pub fn params(&self) -> super::Params {
        super::Params {
            threshold: self.threshold,
            learning_rate: self.learning_rate,
            min_area: self.min_area,
            max_step: self.max_step,
            hysteresis: self.hysteresis,
            max_missed: self.max_missed,
        }
    }
}

fn default_detector_size() -> [usize; 2] {
    super::plates::DET_SIZE
}

fn default_max_snapshots() -> usize {
    2000
}

fn default_models_dir() -> PathBuf {
    PathBuf::from("/var/lib/edgecam/models")
}

fn default_people_hysteresis() -> f32 {
    0.03
}

fn default_people_interval() -> Duration {
    Duration::from_secs(60)
}

fn default_people_learning_rate() -> f32 {
    0.02
}

fn default_people_max_missed() -> u32 {
    4
}

fn default_people_max_step() -> f32 {
    0.1
}

fn default_people_min_area() -> f32 {
    0.002
}

fn default_people_threshold() -> u8 {
    28
}

fn default_plates_max_jump() -> f32 {
    8.0
}

fn default_plates_max_track() -> Duration {
    Duration::from_secs(300)
}

fn default_plates_min_confidence() -> f32 {
    0.5
}

fn default_plates_min_reads() -> u32 {
    2
}

fn default_plates_motion() -> f32 {
    0.002
}

fn default_plates_queue() -> usize {
    2
}

fn default_plates_region() -> super::plates::Region {
    super::plates::Region::Any
}

fn default_plates_threads() -> usize {
    1
}

fn default_plates_track_timeout() -> Duration {
    Duration::from_secs(3)
}

fn default_snapshot_quality() -> u8 {
    85
}

fn default_vehicle_detector_size() -> [usize; 2] {
    [960, 544]
}

fn check_lines(
    c: &mut Checker,
    section: &str,
    lines: &[super::LineConfig],
) -> std::collections::HashSet<String> {
    let frac = |v: f32| (0.0..=1.0).contains(&v);
    let mut names = std::collections::HashSet::new();
    for (i, l) in lines.iter().enumerate() {
        let field = format!("{section}.lines[{i}]");
        c.check(
            topics::valid_kind(&l.name) && names.insert(l.name.clone()),
            &field,
            || {
                format!(
                    "a unique name of 1-64 characters from a-z 0-9 _ -, found {:?}",
                    l.name
                )
            },
        );
        let inside = l.a.iter().chain(&l.b).all(|v| frac(*v));
        let long = ((l.b[0] - l.a[0]).powi(2) + (l.b[1] - l.a[1]).powi(2)).sqrt() >= 0.02;
        c.check(inside && long, &field, || {
            "end points a and b as fractions of the frame (0..1), at least 0.02 apart".to_owned()
        });
        let parallel = l.in_direction.is_some_and(|d| {
            let (dx, dy) = (l.b[0] - l.a[0], l.b[1] - l.a[1]);
            match d {
                super::InDirection::Up | super::InDirection::Down => dx.abs() < dy.abs() * 0.1,
                _ => dy.abs() < dx.abs() * 0.1,
            }
        });
        c.check(!parallel, &field, || {
            "an in_direction across the line, not along it".to_owned()
        });
    }
    names
}

impl PeopleConfig {
    /// Records every value out of range in `c`.
    pub fn check(&self, c: &mut Checker) {
        let p = self;
        let frac = |v: f32| (0.0..=1.0).contains(&v);
        let mut names = check_lines(c, "people", &p.lines);
        for (i, z) in p.zones.iter().enumerate() {
            let field = format!("people.zones[{i}]");
            c.check(
                topics::valid_kind(&z.name) && names.insert(z.name.clone()),
                &field,
                || {
                    format!(
                        "a unique name of 1-64 characters from a-z 0-9 _ -, found {:?}",
                        z.name
                    )
                },
            );
            c.check(
                (3..=64).contains(&z.points.len()) && z.points.iter().flatten().all(|v| frac(*v)),
                &field,
                || "3 to 64 points as fractions of the frame (0..1)".to_owned(),
            );
        }
        c.duration(
            "people.interval",
            p.interval,
            Duration::from_secs(1),
            Duration::from_secs(24 * 3600),
        );
        c.range("people.threshold", p.threshold, 1, 255);
        c.range("people.learning_rate", p.learning_rate, 0.001, 0.5);
        c.range("people.min_area", p.min_area, 0.0001, 0.5);
        c.range("people.max_step", p.max_step, 0.01, 1.0);
        c.range("people.hysteresis", p.hysteresis, 0.0, 0.2);
        c.range("people.max_missed", p.max_missed, 0, 100);
    }
}

impl TrafficConfig {
    /// Records every value out of range in `c`; traffic counting needs the
    /// detector (`detector_enabled`).
    pub fn check(&self, c: &mut Checker, detector_enabled: bool) {
        let t = self;
        check_lines(c, "traffic", &t.lines);
        c.duration(
            "traffic.interval",
            t.interval,
            Duration::from_secs(1),
            Duration::from_secs(24 * 3600),
        );
        c.range("traffic.hysteresis", t.hysteresis, 0.0, 0.2);
        c.check(
            !t.enabled || detector_enabled,
            "traffic.enabled",
            || "traffic counting follows the detector's vehicles: turn [detector] on in the camera's local configuration (it is read at start-up)".to_owned(),
        );
    }
}

impl PlatesConfig {
    /// Records every value out of range in `c`; vehicles without a plate are
    /// known only from the detector (`detector_enabled`).
    pub fn check(&self, c: &mut Checker, detector_enabled: bool) {
        let frac = |v: f32| (0.0..=1.0).contains(&v);
        let pl = self;
        c.check(
            pl.roi.is_empty()
                || (pl.roi.len() == 4
                    && pl.roi.iter().all(|v| frac(*v))
                    && pl.roi[0] + pl.roi[2] <= 1.0
                    && pl.roi[1] + pl.roi[3] <= 1.0
                    && pl.roi[2] >= 0.05
                    && pl.roi[3] >= 0.05),
            "plates.roi",
            || "empty, or [x, y, width, height] as fractions of the frame, inside it, at least 0.05 a side".to_owned(),
        );
        c.check(
            pl.backend == PlatesBackend::Tract || cfg!(feature = "ort"),
            "plates.backend",
            || {
                "\"tract\": this build has no onnxruntime backend (build with --features ort)"
                    .to_owned()
            },
        );
        for (i, l) in pl.layouts.iter().enumerate() {
            c.check(
                super::plates::rules::valid_layout(l),
                &format!("plates.layouts[{i}]"),
                || format!("2 to 10 of L (letter), N (digit), X (either), A-Z, 0-9, with {{a,b}} repeats and (AB|CD) lists, found {l:?}"),
            );
        }
        for (i, code) in pl.countries.iter().enumerate() {
            c.check(
                super::plates::rules::country(code).is_some(),
                &format!("plates.countries[{i}]"),
                || format!("a country code of the layout table (DE, BR, US-CA, ...; `edgecam plate-layouts` lists them), found {code:?}"),
            );
        }
        for (field, [dw, dh]) in [
            ("plates.detector_size", pl.detector_size),
            ("plates.vehicle_detector_size", pl.vehicle_detector_size),
        ] {
            c.check(
                dw % 32 == 0 && dh % 32 == 0 && (320..=2048).contains(&dw) && (192..=2048).contains(&dh),
                field,
                || format!("[width, height], multiples of 32, width 320-2048, height 192-2048, found [{dw}, {dh}]"),
            );
        }
        c.range("plates.min_confidence", pl.min_confidence, 0.0, 1.0);
        c.range("plates.min_reads", pl.min_reads, 1, 100);
        c.check(
            !(pl.enabled && pl.unread_vehicles) || detector_enabled,
            "plates.unread_vehicles",
            || "vehicles without a plate are known only from the detector's vehicles: turn [detector] on, or unread_vehicles off".to_owned(),
        );
        c.duration(
            "plates.track_timeout",
            pl.track_timeout,
            Duration::from_millis(200),
            Duration::from_secs(600),
        );
        c.duration(
            "plates.max_track",
            pl.max_track,
            Duration::from_secs(1),
            Duration::from_secs(24 * 3600),
        );
        c.range("plates.max_jump", pl.max_jump, 0.1, 100.0);
        c.range("plates.motion", pl.motion, 0.0, 1.0);
        c.range("plates.threads", pl.threads, 1, 4);
        c.range("plates.frame_queue", pl.frame_queue, 1, 16);
        c.range("plates.snapshot_quality", pl.snapshot_quality, 1, 100);
        c.range("plates.max_snapshots", pl.max_snapshots, 1, 1_000_000);
        c.check(
            !pl.hash_plates || pl.hash_salt.chars().count() >= 16,
            "plates.hash_salt",
            || "at least 16 characters when hash_plates is on".to_owned(),
        );
    }
}
