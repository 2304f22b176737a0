//! The plate-reading stage: frames from its queue → a motion gate → the plate
//! reader on `threads` blocking threads → the tracker → one `plate` event per
//! vehicle in the outbox, with a snapshot JPEG of its best frame under
//! `<media_dir>/snapshots/<event_id>.jpg`.
//!
//! With the object detector (`[detector] enabled`) the stage takes the detector's
//! output instead: vehicles are tracked, plates are read only inside the boxes of
//! the tracked vehicles seen in a frame (each box scaled to
//! `vehicle_detector_size`), and a frame with no vehicle is not read at all; a
//! plate event then names its vehicle's class and track.
//!
//! Frames are dropped upstream (oldest first, counted) while every reader is busy;
//! frames in which nothing moved (or, with the detector, no vehicle is in view)
//! are skipped (counted) unless a vehicle is being tracked; events are never
//! dropped: the stage waits for the outbox instead.
//!
//! Snapshots on disk: written as `<id>.jpg.partial` and renamed, so a crash leaves
//! no half file under the final name; names are UUIDv7, which sort by time, so the
//! oldest are the first in name order when `max_snapshots` is passed. Partial files
//! left by a crash are deleted at start-up.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::detection::{Input, Item};
use super::motion::MotionGate;
use super::plates::tracker::{Observation, Step, Tracker, TrackerParams, Vehicle};
use super::plates::unread::{Ledger, Seen, Unread};
use super::plates::{PlateError, PlateReader, Rules};
use super::raster::Image;
use super::tracking::{self, VEHICLES};
use super::PlatesConfig;
use crate::events::{epoch_ms as ms, rfc3339_ms as rfc3339, NewEvent};
use crate::metrics::Metrics;
use crate::video::{snapshot, Frame};

/// `hex(sha256(salt + text))`.
pub fn plate_hash(salt: &str, text: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(text.as_bytes());
    hex::encode(h.finalize())
}

/// The region of interest in pixels, `[x, y, w, h]`, or the whole frame.
fn roi_pixels(roi: &[f32], width: u32, height: u32) -> [u32; 4] {
    if roi.len() != 4 {
        return [0, 0, width, height];
    }
    let x = ((roi[0] * width as f32) as u32).min(width - 1);
    let y = ((roi[1] * height as f32) as u32).min(height - 1);
    let w = ((roi[2] * width as f32) as u32).clamp(1, width - x);
    let h = ((roi[3] * height as f32) as u32).clamp(1, height - y);
    [x, y, w, h]
}

/// Reads the plates in a frame (its region of interest), boxes in frame pixels.
pub fn read_frame(
    reader: &PlateReader,
    frame: &Frame,
    roi: &[f32],
    min_confidence: f32,
) -> Result<Vec<Observation>, PlateError> {
    let [rx, ry, rw, rh] = roi_pixels(roi, frame.width, frame.height);
    let mut rgb = Vec::with_capacity((rw * rh * 3) as usize);
    for y in ry..ry + rh {
        let start = ((y * frame.width + rx) * 3) as usize;
        rgb.extend_from_slice(&frame.rgb[start..start + (rw * 3) as usize]);
    }
    let img = Image {
        width: rw,
        height: rh,
        rgb,
    };
    Ok(reader
        .read(&img)?
        .into_iter()
        .filter(|r| r.confidence >= min_confidence)
        .map(|r| Observation {
            text: r.text,
            confidence: r.confidence,
            bbox: [r.bbox[0] + rx, r.bbox[1] + ry, r.bbox[2], r.bbox[3]],
        })
        .collect())
}

/// A tracked vehicle in a frame.
#[derive(Debug, Clone, PartialEq)]
pub struct VehicleBox {
    pub track: u64,
    pub class: &'static str,
    /// Left, top, right, bottom in frame pixels.
    pub bbox: [f32; 4],
}

/// A vehicle's box grown by a twentieth of its size on each side (a plate at the
/// edge of a tight box), in whole pixels inside the frame: `[x, y, w, h]`.
fn vehicle_crop(b: &[f32; 4], width: u32, height: u32) -> Option<[u32; 4]> {
    let (mw, mh) = ((b[2] - b[0]) * 0.05, (b[3] - b[1]) * 0.05);
    let x0 = (b[0] - mw).max(0.0) as u32;
    let y0 = (b[1] - mh).max(0.0) as u32;
    let x1 = ((b[2] + mw).ceil() as u32).min(width);
    let y1 = ((b[3] + mh).ceil() as u32).min(height);
    (x1 > x0 + 16 && y1 > y0 + 16).then(|| [x0, y0, x1 - x0, y1 - y0])
}

/// Copies `[x, y, w, h]` of a frame.
fn crop(frame: &Frame, [x, y, w, h]: [u32; 4]) -> Image {
    let mut rgb = Vec::with_capacity((w * h * 3) as usize);
    for row in y..y + h {
        let start = ((row * frame.width + x) * 3) as usize;
        rgb.extend_from_slice(&frame.rgb[start..start + (w * 3) as usize]);
    }
    Image {
        width: w,
        height: h,
        rgb,
    }
}

/// Reads the plate inside each vehicle's box, boxes in frame pixels: a vehicle
/// shows one plate, so of the texts read in its box only the most confident is
/// kept (a sticker or a dealer's badge that also reads like a plate loses to it).
/// The box is read with a margin (a plate at the edge of a tight box), but a text
/// whose centre lies outside the box itself is not on the vehicle (a caption, the
/// road's markings) and is not kept.
pub fn read_vehicles(
    reader: &PlateReader,
    frame: &Frame,
    vehicles: &[VehicleBox],
    min_confidence: f32,
) -> Result<Vec<Observation>, PlateError> {
    let mut out: Vec<Observation> = Vec::new();
    for v in vehicles {
        let Some(c) = vehicle_crop(&v.bbox, frame.width, frame.height) else {
            continue;
        };
        // Best first.
        let best = reader.read(&crop(frame, c))?.into_iter().find(|r| {
            let (cx, cy) = (
                (c[0] + r.bbox[0]) as f32 + r.bbox[2] as f32 / 2.0,
                (c[1] + r.bbox[1]) as f32 + r.bbox[3] as f32 / 2.0,
            );
            let on_vehicle =
                v.bbox[0] <= cx && cx <= v.bbox[2] && v.bbox[1] <= cy && cy <= v.bbox[3];
            r.confidence >= min_confidence && on_vehicle
        });
        if let Some(r) = best {
            let bbox = [r.bbox[0] + c[0], r.bbox[1] + c[1], r.bbox[2], r.bbox[3]];
            // Two overlapping vehicles may both see one plate: it is read once.
            if !out.iter().any(|o| o.text == r.text && o.bbox == bbox) {
                out.push(Observation {
                    text: r.text,
                    confidence: r.confidence,
                    bbox,
                });
            }
        }
    }
    Ok(out)
}

/// The vehicle a plate belongs to: the smallest box holding its centre.
pub fn owner<'a>(vehicles: &'a [VehicleBox], plate: &[u32; 4]) -> Option<&'a VehicleBox> {
    let (cx, cy) = (
        plate[0] as f32 + plate[2] as f32 / 2.0,
        plate[1] as f32 + plate[3] as f32 / 2.0,
    );
    vehicles
        .iter()
        .filter(|v| v.bbox[0] <= cx && cx <= v.bbox[2] && v.bbox[1] <= cy && cy <= v.bbox[3])
        .min_by(|a, b| {
            let area = |v: &VehicleBox| (v.bbox[2] - v.bbox[0]) * (v.bbox[3] - v.bbox[1]);
            area(a).total_cmp(&area(b))
        })
}

/// Tells the ledger (if any) which texts were read inside which vehicle.
fn note_reads(ledger: &mut Option<Ledger<Keep>>, keep: &Keep, reads: &[Observation]) {
    if let Some(ledger) = ledger.as_mut() {
        for r in reads {
            if let Some(o) = owner(&keep.vehicles, &r.bbox) {
                ledger.read(o.track, &r.text, r.confidence);
            }
        }
    }
}

/// What the tracker keeps of a read frame: the frame (for the snapshot) and the
/// vehicles seen in it (to say whose plate it was).
#[derive(Debug, Clone)]
pub struct Keep {
    frame: Arc<Frame>,
    vehicles: Arc<Vec<VehicleBox>>,
}

/// A frame read by a reader thread.
struct Read {
    seq: u64,
    keep: Keep,
    reads: Result<Vec<Observation>, PlateError>,
    took: Duration,
}

/// Snapshots on disk, oldest first.
struct Snapshots {
    dir: PathBuf,
    names: VecDeque<String>,
}

impl Snapshots {
    fn open(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name.ends_with(".partial") {
                // Left by a crash mid-write; one that cannot go only takes space.
                if let Err(e) = std::fs::remove_file(dir.join(&name)) {
                    tracing::warn!(file = %name, error = %e, "cannot delete a partly written snapshot");
                }
            } else if name.ends_with(".jpg") {
                names.push(name);
            }
        }
        names.sort();
        Ok(Self {
            dir,
            names: names.into(),
        })
    }

    /// Writes one, then deletes the oldest beyond `keep`; returns how many went.
    fn write(&mut self, name: String, jpeg: &[u8], keep: usize) -> std::io::Result<u64> {
        let path = self.dir.join(&name);
        let partial = self.dir.join(format!("{name}.partial"));
        std::fs::write(&partial, jpeg)?;
        std::fs::rename(&partial, &path)?;
        self.names.push_back(name);
        let mut deleted = 0;
        while self.names.len() > keep {
            let Some(old) = self.names.pop_front() else {
                break;
            };
            match std::fs::remove_file(self.dir.join(&old)) {
                Ok(()) => deleted += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(file = %old, error = %e, "cannot delete an old snapshot"),
            }
        }
        Ok(deleted)
    }
}

/// The stage's name in the metrics and the retained status.
pub const NAME: &str = "plate_reading";

pub struct PlateReading {
    cfg: PlatesConfig,
    /// The vehicle tracker's settings (`[detector]`), with the detector.
    vehicle_tracking: tracking::Params,
    media_dir: PathBuf,
    input: Input,
    events: mpsc::Sender<NewEvent>,
    metrics: Arc<Metrics>,
}

impl PlateReading {
    pub fn new(
        cfg: PlatesConfig,
        vehicle_tracking: tracking::Params,
        media_dir: PathBuf,
        input: Input,
        events: mpsc::Sender<NewEvent>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            cfg,
            vehicle_tracking,
            media_dir,
            input,
            events,
            metrics,
        }
    }

    /// A text as published: itself, or its salted hash.
    fn shown(&self, text: &str) -> String {
        if self.cfg.hash_plates {
            plate_hash(&self.cfg.hash_salt, text)
        } else {
            text.to_owned()
        }
    }

    /// The event payload of a vehicle.
    fn payload(&self, v: &Vehicle<Keep>, snapshot: Option<&str>) -> serde_json::Value {
        let shown = |t: &str| self.shown(t);
        let frame = v.snapshot.as_ref().map(|k| [k.frame.width, k.frame.height]);
        let vehicle = match (&self.input, &v.snapshot) {
            (Input::Detections(_), Some(k)) => owner(&k.vehicles, &v.bbox)
                .map(|o| serde_json::json!({"class": o.class, "track": o.track})),
            _ => None,
        };
        serde_json::json!({
            "plate": shown(&v.text),
            "hashed": self.cfg.hash_plates,
            "confidence": (v.confidence * 1000.0).round() / 1000.0,
            "region": self.cfg.region,
            "reads": v.reads,
            "text_reads": v.text_reads,
            "alternates": v.alternates.iter().map(|a| serde_json::json!({
                "plate": shown(&a.text),
                "confidence": (a.confidence * 1000.0).round() / 1000.0,
                "reads": a.reads,
            })).collect::<Vec<_>>(),
            "first_seen": rfc3339(v.first_seen_ms),
            "last_seen": rfc3339(v.last_seen_ms),
            "box": v.bbox,
            "frame": frame,
            "direction": v.direction,
            "still_present": v.still_present,
            "track": v.track,
            "vehicle": vehicle,
            "snapshot": snapshot,
            "reason": null,
        })
    }

    /// The event payload of a vehicle that passed without a plate read.
    fn payload_unread(&self, u: &Unread<Keep>, snapshot: Option<&str>) -> serde_json::Value {
        let frame = u.snapshot.as_ref().map(|k| [k.frame.width, k.frame.height]);
        serde_json::json!({
            "plate": null,
            "hashed": self.cfg.hash_plates,
            "confidence": 0.0,
            "region": self.cfg.region,
            "reads": u.reads,
            "text_reads": 0,
            "alternates": u.texts.iter().map(|a| serde_json::json!({
                "plate": self.shown(&a.text),
                "confidence": (a.confidence * 1000.0).round() / 1000.0,
                "reads": a.reads,
            })).collect::<Vec<_>>(),
            "first_seen": rfc3339(u.first_seen_ms),
            "last_seen": rfc3339(u.last_seen_ms),
            "box": u.bbox,
            "frame": frame,
            "direction": u.direction,
            "still_present": false,
            "track": null,
            "vehicle": {"class": u.class, "track": u.track},
            "snapshot": snapshot,
            "reason": u.reason,
        })
    }

    /// Writes the snapshot of event `event_id` (and deletes the oldest beyond
    /// `max_snapshots`); its name under the media directory, or `None` (counted)
    /// when it cannot be written.
    async fn snapshot(
        &self,
        snapshots: &mut Option<Snapshots>,
        event_id: uuid::Uuid,
        frame: Option<Arc<Frame>>,
    ) -> Option<String> {
        let frame = frame.filter(|_| snapshots.is_some())?;
        let name = format!("{event_id}.jpg");
        let (quality, max) = (self.cfg.snapshot_quality, self.cfg.max_snapshots);
        // Encoding, writing and deleting the oldest are file work: off the
        // runtime, the store lent to the blocking task and given back.
        let mut store = snapshots.take();
        let file = name.clone();
        let job = tokio::task::spawn_blocking(move || {
            let written = match store.as_mut() {
                Some(store) => snapshot::jpeg(&frame, None, quality)
                    .map_err(|e| e.to_string())
                    .and_then(|jpeg| store.write(file, &jpeg, max).map_err(|e| e.to_string())),
                None => Err("no snapshot store".to_owned()),
            };
            (store, written)
        })
        .await;
        let written = match job {
            Ok((store, written)) => {
                *snapshots = store;
                written
            }
            Err(e) => {
                tracing::error!(error = %e, "the snapshot writer failed; snapshots are off until the stage restarts");
                Err(e.to_string())
            }
        };
        match written {
            Ok(deleted) => {
                Metrics::add(&self.metrics.plate_snapshots, 1);
                Metrics::add(&self.metrics.plate_snapshots_deleted, deleted);
                Some(format!("snapshots/{name}"))
            }
            Err(e) => {
                Metrics::add(&self.metrics.plate_snapshot_errors, 1);
                tracing::warn!(error = %e, "cannot write the vehicle's snapshot; its event says snapshot null");
                None
            }
        }
    }

    /// Commits a vehicle's event (and writes its snapshot); false when the outbox
    /// is gone.
    async fn report(&self, snapshots: &mut Option<Snapshots>, v: Vehicle<Keep>) -> bool {
        let mut ev = NewEvent::observed("plate", v.first_seen_ms, &serde_json::Value::Null);
        let frame = v.snapshot.as_ref().map(|k| k.frame.clone());
        let snapshot_name = self.snapshot(snapshots, ev.event_id, frame).await;
        ev.set_payload(&self.payload(&v, snapshot_name.as_deref()));
        Metrics::add(&self.metrics.plate_vehicles, 1);
        if self.cfg.hash_plates {
            tracing::info!(track = v.track, reads = v.reads, confidence = v.confidence, direction = ?v.direction, "vehicle passed");
        } else {
            tracing::info!(plate = %v.text, track = v.track, reads = v.reads, confidence = v.confidence, direction = ?v.direction, "vehicle passed");
        }
        self.events.send(ev).await.is_ok()
    }

    /// The vehicles the ledger (if any) settled by capture time `now_ms` (every
    /// one, at shutdown: `None`); those left out for not moving are counted.
    fn settled(&self, ledger: &mut Option<Ledger<Keep>>, now_ms: Option<i64>) -> Vec<Unread<Keep>> {
        let Some(l) = ledger.as_mut() else {
            return Vec::new();
        };
        let out = match now_ms {
            Some(t) => l.due(t),
            None => l.finish(),
        };
        Metrics::add(&self.metrics.plate_vehicles_unmoved, l.take_unmoved());
        out
    }

    /// Commits the event of a vehicle that passed without a plate read (and
    /// writes its snapshot); false when the outbox is gone.
    async fn report_unread(&self, snapshots: &mut Option<Snapshots>, u: Unread<Keep>) -> bool {
        let mut ev = NewEvent::observed("plate", u.first_seen_ms, &serde_json::Value::Null);
        let frame = u.snapshot.as_ref().map(|k| k.frame.clone());
        let snapshot_name = self.snapshot(snapshots, ev.event_id, frame).await;
        ev.set_payload(&self.payload_unread(&u, snapshot_name.as_deref()));
        Metrics::add(&self.metrics.plate_vehicles_unread, 1);
        tracing::info!(vehicle_track = u.track, class = u.class, reason = ?u.reason, reads = u.reads, direction = ?u.direction, "vehicle passed without a plate read");
        self.events.send(ev).await.is_ok()
    }

    /// Reports the vehicles of a tracker step and counts the discarded tracks.
    async fn settle(
        &self,
        snapshots: &mut Option<Snapshots>,
        ledger: &mut Option<Ledger<Keep>>,
        step: Step<Keep>,
    ) -> bool {
        for d in step.discarded {
            Metrics::add(&self.metrics.plate_tracks_discarded, 1);
            tracing::debug!(
                track = d.track,
                reads = d.reads,
                "plate track discarded: too few reads"
            );
        }
        for v in step.vehicles {
            if let Some(ledger) = ledger.as_mut() {
                let owner = v
                    .snapshot
                    .as_ref()
                    .and_then(|k| owner(&k.vehicles, &v.bbox));
                let mut texts = vec![v.text.as_str()];
                texts.extend(v.alternates.iter().map(|a| a.text.as_str()));
                ledger.plated(owner.map(|o| o.track), &texts);
            }
            if !self.report(snapshots, v).await {
                return false;
            }
        }
        true
    }

    /// Reports the vehicles without a plate that are settled.
    async fn settle_unread(
        &self,
        snapshots: &mut Option<Snapshots>,
        unread: Vec<Unread<Keep>>,
    ) -> bool {
        for u in unread {
            if !self.report_unread(snapshots, u).await {
                return false;
            }
        }
        true
    }
}

/// Why plate reading stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadingError {
    #[error("plate rules: {0}")]
    Rules(String),
    #[error("the models cannot be loaded: {0}")]
    Models(PlateError),
    #[error("the outbox no longer takes events")]
    OutboxGone,
}

impl crate::supervision::Stage for PlateReading {
    type Error = ReadingError;

    /// Loads the models and reads until shutdown; an error (bad rules, models that
    /// cannot be loaded, the outbox gone) ends the stage, for the supervisor to
    /// start it again.
    async fn run(&mut self, shutdown: CancellationToken) -> Result<(), ReadingError> {
        let cfg = self.cfg.clone();
        let dir = cfg.models_dir.clone();
        let vehicles_only = matches!(self.input, Input::Detections(_));
        let det_size = if vehicles_only {
            cfg.vehicle_detector_size
        } else {
            cfg.detector_size
        };
        let backend = cfg.reader_backend();
        // No frames queue up for a reader that is not there (yet).
        self.input.set_wanted(false);
        let rules =
            Rules::new(cfg.region, &cfg.countries, &cfg.layouts).map_err(ReadingError::Rules)?;
        let (recognisers, zoom) = (cfg.recognisers, cfg.zoom);
        // Loading reads the model files, which can hang on a dying card.
        let busy = Metrics::busy(&self.metrics, NAME);
        let loaded = tokio::task::spawn_blocking(move || {
            let _busy = busy;
            PlateReader::load(&dir, rules, &backend, det_size, recognisers, zoom).map(Arc::new)
        })
        .await;
        let reader = match loaded {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                Metrics::add(&self.metrics.plate_errors, 1);
                return Err(ReadingError::Models(e));
            }
            Err(e) => return Err(ReadingError::Models(PlateError::Inference(e.to_string()))),
        };
        self.input.set_wanted(true);
        let mut snapshots = if cfg.snapshots {
            let dir = self.media_dir.join("snapshots");
            match Snapshots::open(dir.clone()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::error!(dir = %dir.display(), error = %e, "cannot use the snapshot directory; events will say snapshot null");
                    None
                }
            }
        } else {
            None
        };
        tracing::info!(region = ?cfg.region, countries = ?cfg.countries, layout_patterns = reader.rules().patterns(), backend = ?cfg.backend, threads = cfg.threads, models = %cfg.models_dir.display(),
            within = if vehicles_only { "tracked vehicles" } else { "whole frames" }, "plate reading on");

        let mut vehicle_tracker = match &self.input {
            Input::Detections(_) => tracking::Tracker::new(self.vehicle_tracking),
            Input::Frames(_) => tracking::Tracker::default(),
        };
        let mut tracker: Tracker<Keep> = Tracker::new(TrackerParams {
            timeout_ms: cfg.track_timeout.as_millis() as i64,
            max_duration_ms: cfg.max_track.as_millis() as i64,
            min_reads: cfg.min_reads,
            max_jump: cfg.max_jump,
        });
        // Vehicles are known only from the detector; the grace lets the plate
        // tracker end the plate's track (track_timeout) first.
        let mut ledger: Option<Ledger<Keep>> = (vehicles_only && cfg.unread_vehicles)
            .then(|| Ledger::new(cfg.track_timeout.as_millis() as i64 + 2_000));
        let mut gate = MotionGate::new(cfg.motion);
        let mut reading: JoinSet<Read> = JoinSet::new();
        // Reads come back in any order from several threads; they reach the
        // tracker in frame order.
        let mut done: BTreeMap<u64, Read> = BTreeMap::new();
        let (mut next_seq, mut next_out) = (0u64, 0u64);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                // Frames and reads before the clock: a track ends by the wall
                // clock only when nothing is being read.
                biased;
                _ = shutdown.cancelled() => break,
                item = self.input.next(), if reading.len() < cfg.threads => {
                    let (frame, vehicles) = match item {
                        Item::Frame(frame) => {
                            if tracker.active() == 0 && !gate.moved(&frame) {
                                Metrics::add(&self.metrics.plate_frames_still, 1);
                                continue;
                            }
                            if tracker.active() > 0 {
                                gate.moved(&frame);
                            }
                            (frame, Vec::new())
                        }
                        Item::Detected(d) => {
                            let t = d.frame.captured_at
                                .duration_since(SystemTime::UNIX_EPOCH)
                                .unwrap_or_default()
                                .as_secs_f64();
                            let found: Vec<_> = d.objects.iter()
                                .filter(|o| VEHICLES.contains(&o.class))
                                .cloned()
                                .collect();
                            vehicle_tracker.update(t, &found);
                            let seen: Vec<VehicleBox> = vehicle_tracker.seen_at(t)
                                .map(|tr| VehicleBox { track: tr.id, class: tr.class, bbox: tr.bbox })
                                .collect();
                            let keep = Keep { frame: d.frame.clone(), vehicles: Arc::new(seen) };
                            if let Some(ledger) = ledger.as_mut() {
                                let boxes: Vec<Seen> = keep.vehicles.iter()
                                    .map(|v| Seen { track: v.track, class: v.class, bbox: v.bbox })
                                    .collect();
                                let tracks = vehicle_tracker.tracks();
                                let alive = |id| tracks.iter().any(|tr| tr.id == id);
                                ledger.seen(ms(d.frame.captured_at), &boxes, alive, &keep);
                            }
                            if keep.vehicles.is_empty() {
                                // No vehicle, no plate: only the detector's cost.
                                Metrics::add(&self.metrics.plate_frames_still, 1);
                                continue;
                            }
                            (keep.frame, Arc::unwrap_or_clone(keep.vehicles))
                        }
                    };
                    let (reader, roi, min) = (reader.clone(), cfg.roi.clone(), cfg.min_confidence);
                    let seq = next_seq;
                    next_seq += 1;
                    let keep = Keep { frame, vehicles: Arc::new(vehicles) };
                    let busy = Metrics::busy(&self.metrics, NAME);
                    reading.spawn_blocking(move || {
                        let _busy = busy;
                        let started = Instant::now();
                        // A panic in the reader loses this frame only, and keeps
                        // the frames in order behind it.
                        let reads = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            if vehicles_only {
                                read_vehicles(&reader, &keep.frame, &keep.vehicles, min)
                            } else {
                                read_frame(&reader, &keep.frame, &roi, min)
                            }
                        }))
                        .unwrap_or_else(|_| Err(PlateError::Inference("the reader panicked".into())));
                        Read { seq, keep, reads, took: started.elapsed() }
                    });
                }
                Some(joined) = reading.join_next() => {
                    let Ok(read) = joined else {
                        // Only a runtime shutting down cancels a blocking task.
                        break;
                    };
                    done.insert(read.seq, read);
                    while let Some(read) = done.remove(&next_out) {
                        next_out += 1;
                        Metrics::add(&self.metrics.plate_frames_read, 1);
                        Metrics::add(&self.metrics.plate_read_us_total, read.took.as_micros() as u64);
                        let reads = match read.reads {
                            Ok(r) => r,
                            Err(e) => {
                                Metrics::add(&self.metrics.plate_errors, 1);
                                tracing::warn!(error = %e, "cannot read plates in a frame");
                                continue;
                            }
                        };
                        Metrics::add(&self.metrics.plate_reads, reads.len() as u64);
                        let t_ms = ms(read.keep.frame.captured_at);
                        note_reads(&mut ledger, &read.keep, &reads);
                        let step = tracker.observe(t_ms, &reads, &read.keep);
                        if !self.settle(&mut snapshots, &mut ledger, step).await {
                            return Err(ReadingError::OutboxGone);
                        }
                        let unread = self.settled(&mut ledger, Some(t_ms));
                        if !self.settle_unread(&mut snapshots, unread).await {
                            return Err(ReadingError::OutboxGone);
                        }
                    }
                }
                _ = tick.tick(), if reading.is_empty() => {
                    let now = ms(SystemTime::now());
                    let step = tracker.tick(now);
                    if !self.settle(&mut snapshots, &mut ledger, step).await {
                        return Err(ReadingError::OutboxGone);
                    }
                    let unread = self.settled(&mut ledger, Some(now));
                    if !self.settle_unread(&mut snapshots, unread).await {
                        return Err(ReadingError::OutboxGone);
                    }
                }
            }
        }
        // Shutdown: the frames being read are finished, then every vehicle still
        // in view is reported.
        while let Some(joined) = reading.join_next().await {
            if let Ok(read) = joined {
                done.insert(read.seq, read);
            }
        }
        for (_, read) in done {
            if let Ok(reads) = read.reads {
                note_reads(&mut ledger, &read.keep, &reads);
                let step = tracker.observe(ms(read.keep.frame.captured_at), &reads, &read.keep);
                if !self.settle(&mut snapshots, &mut ledger, step).await {
                    return Err(ReadingError::OutboxGone);
                }
            }
        }
        let step = tracker.finish();
        if !self.settle(&mut snapshots, &mut ledger, step).await {
            return Err(ReadingError::OutboxGone);
        }
        let unread = self.settled(&mut ledger, None);
        if !self.settle_unread(&mut snapshots, unread).await {
            return Err(ReadingError::OutboxGone);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &std::path::Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn the_region_of_interest_is_clamped_to_the_frame() {
        assert_eq!(roi_pixels(&[], 1280, 720), [0, 0, 1280, 720]);
        assert_eq!(
            roi_pixels(&[0.5, 0.5, 0.5, 0.5], 1280, 720),
            [640, 360, 640, 360]
        );
        assert_eq!(
            roi_pixels(&[0.9, 0.0, 0.5, 1.0], 100, 100),
            [90, 0, 10, 100]
        );
    }

    #[test]
    fn hashes_are_salted() {
        let a = plate_hash("salt-one-sixteen", "ABC1234");
        assert_eq!(a.len(), 64);
        assert_eq!(a, plate_hash("salt-one-sixteen", "ABC1234"));
        assert_ne!(a, plate_hash("salt-two-sixteen", "ABC1234"));
    }

    #[test]
    fn snapshots_beyond_the_limit_go_oldest_first_and_partials_are_cleared() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("00-old.jpg.partial"), b"x").unwrap();
        std::fs::write(dir.path().join("01.jpg"), b"x").unwrap();
        let mut s = Snapshots::open(dir.path().to_owned()).unwrap();
        assert_eq!(names(dir.path()), ["01.jpg"]);
        assert_eq!(s.write("02.jpg".into(), b"y", 2).unwrap(), 0);
        assert_eq!(s.write("03.jpg".into(), b"z", 2).unwrap(), 1);
        assert_eq!(names(dir.path()), ["02.jpg", "03.jpg"]);
    }
}
