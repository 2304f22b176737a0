//! The counting stage, for people and for traffic. People: takes the detector's
//! person boxes (with `[detector] enabled`; tracked, foot points counted) or else
//! frames from the video stage's queue (moving blobs, the fallback without a
//! model), counts crossings and occupancy, and commits a `people_count` event per
//! wall-clock interval (and a `people_crossing` event per crossing when asked) to
//! the outbox. Traffic: the same with the detector's vehicles, `[traffic]`, and
//! `vehicle_count` / `vehicle_crossing` events.
//! Frames are dropped upstream (oldest first, counted) when counting lags; events
//! are never dropped: the stage waits for the outbox instead.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::detection::{Input, Item};
use super::people::{persons, vehicles, Counter, Crossing, Tally, TrackCounter};
use super::tracking;
use super::PeopleConfig;
use crate::events::{epoch_ms as ms, rfc3339_ms as rfc3339, NewEvent};
use crate::metrics::Metrics;
use crate::settings::Config;

/// What a counting stage counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// Persons, `[people]`.
    People,
    /// Vehicles, `[traffic]` (with the detector only).
    Traffic,
}

/// What a counting stage takes from the configuration: its section, and the
/// tracker's settings when it counts the detector's tracks.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    counting: PeopleConfig,
    tracking: Option<tracking::Params>,
}

impl Counted {
    /// Its settings in `c`; `tracked` when it counts the detector's tracks.
    pub fn settings(self, c: &Config, tracked: bool) -> Settings {
        Settings {
            counting: self.section(c),
            tracking: tracked.then(|| self.tracking(&c.detector)),
        }
    }

    /// The stage's name in the metrics and the retained status.
    pub fn stage(self) -> &'static str {
        match self {
            Counted::People => "people_counting",
            Counted::Traffic => "traffic_counting",
        }
    }

    fn section(self, c: &Config) -> PeopleConfig {
        match self {
            Counted::People => c.people.clone(),
            Counted::Traffic => c.traffic.counting(),
        }
    }

    /// The tracker's settings for what it counts.
    fn tracking(self, d: &crate::analytics::DetectorConfig) -> tracking::Params {
        match self {
            Counted::People => d.tracking(),
            Counted::Traffic => d.vehicle_tracking(),
        }
    }

    fn classes(self) -> fn(&str) -> bool {
        match self {
            Counted::People => persons,
            Counted::Traffic => vehicles,
        }
    }

    /// The event kinds: per interval, per crossing.
    fn kinds(self) -> (&'static str, &'static str) {
        match self {
            Counted::People => ("people_count", "people_crossing"),
            Counted::Traffic => ("vehicle_count", "vehicle_crossing"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Counted::People => "people counting",
            Counted::Traffic => "traffic counting",
        }
    }
}

pub struct Counting {
    counted: Counted,
    config: watch::Receiver<Arc<Settings>>,
    input: Input,
    events: mpsc::Sender<NewEvent>,
    metrics: Arc<Metrics>,
}

/// How people are found.
enum Method {
    Blobs(Counter),
    Tracks(TrackCounter),
}

/// The wall-clock interval holding `t_ms`.
fn bucket(t_ms: i64, interval: Duration) -> (i64, i64) {
    let len = interval.as_millis().max(1) as i64;
    let start = t_ms - t_ms.rem_euclid(len);
    (start, start + len)
}

/// The `people_count` payload.
pub fn count_payload(
    start_ms: i64,
    end_ms: i64,
    tally: &Tally,
    partial: bool,
) -> serde_json::Value {
    serde_json::json!({
        "interval_start": rfc3339(start_ms),
        "interval_end": rfc3339(end_ms),
        "interval_s": (end_ms - start_ms) as f64 / 1000.0,
        "partial": partial,
        "frames": tally.frames,
        "lines": tally.lines,
        "zones": tally.zones,
    })
}

struct Run {
    cfg: PeopleConfig,
    /// The tracker's settings (`[detector]`), with the detector.
    tracking: Option<tracking::Params>,
    /// `None` only while a frame is being counted off the runtime.
    counter: Option<Method>,
    tally: Tally,
    /// The open interval.
    start_ms: i64,
    end_ms: i64,
}

impl Run {
    fn new(
        cfg: PeopleConfig,
        counted: Counted,
        tracking: Option<tracking::Params>,
        now: SystemTime,
    ) -> Self {
        let (start_ms, end_ms) = bucket(ms(now), cfg.interval);
        let counter = match tracking {
            None => Method::Blobs(Counter::new(
                cfg.params(),
                cfg.lines.clone(),
                cfg.zones.clone(),
            )),
            Some(tracking) => Method::Tracks(TrackCounter::new(
                counted.classes(),
                tracking,
                cfg.hysteresis,
                cfg.lines.clone(),
                cfg.zones.clone(),
            )),
        };
        Self {
            counter: Some(counter),
            tally: Tally::new(&cfg.lines, &cfg.zones),
            tracking,
            cfg,
            start_ms,
            end_ms,
        }
    }
}

impl Counting {
    pub fn new(
        counted: Counted,
        config: watch::Receiver<Arc<Settings>>,
        input: Input,
        events: mpsc::Sender<NewEvent>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            counted,
            config,
            input,
            events,
            metrics,
        }
    }

    async fn emit(&self, kind: &str, ts_ms: i64, payload: &serde_json::Value) -> bool {
        let ev = NewEvent::observed(kind, ts_ms, payload);
        self.events.send(ev).await.is_ok()
    }

    /// Emits the open interval's counts (`partial` when cut short).
    async fn close(&self, run: &mut Run, end_ms: i64, partial: bool) -> bool {
        let payload = count_payload(run.start_ms, end_ms, &run.tally, partial);
        tracing::debug!(%payload, counted = ?self.counted, "count");
        let ok = self.emit(self.counted.kinds().0, end_ms, &payload).await;
        run.tally = Tally::new(&run.cfg.lines, &run.cfg.zones);
        ok
    }
}

/// Counts one input item: crossings, occupancy, and when it was captured.
fn count(counter: &mut Method, item: Item) -> (Vec<Crossing>, Vec<(String, u32)>, SystemTime) {
    match (counter, item) {
        (Method::Blobs(c), Item::Frame(frame)) => {
            let crossings = c.process(&frame.rgb, frame.width, frame.height);
            (crossings, c.occupancy(), frame.captured_at)
        }
        (Method::Tracks(c), Item::Detected(d)) => {
            let f = &d.frame;
            let t = f
                .captured_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            let crossings = c.process(t, f.width, f.height, &d.objects);
            (crossings, c.occupancy(), f.captured_at)
        }
        // The method follows the input, set together in `Run::new`.
        (_, Item::Frame(f)) => (Vec::new(), Vec::new(), f.captured_at),
        (_, Item::Detected(d)) => (Vec::new(), Vec::new(), d.frame.captured_at),
    }
}

impl crate::supervision::Stage for Counting {
    type Error = Infallible;

    async fn run(&mut self, shutdown: CancellationToken) -> Result<(), Infallible> {
        let mut run: Option<Run> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            let (cfg, tracking) = {
                let settings = self.config.borrow_and_update();
                (settings.counting.clone(), settings.tracking)
            };
            let changed = run
                .as_ref()
                .is_none_or(|r| r.cfg != cfg || r.tracking != tracking);
            if changed {
                if let Some(r) = run.as_mut() {
                    // The old lines' counts up to now, then the new set-up.
                    self.close(r, ms(SystemTime::now()), true).await;
                }
                self.input.set_wanted(cfg.enabled);
                run = cfg.enabled.then(|| {
                    tracing::info!(
                        lines = cfg.lines.len(),
                        zones = cfg.zones.len(),
                        method = match (&self.input, self.counted) {
                            (Input::Frames(_), _) => "moving blobs",
                            (Input::Detections(_), Counted::People) => "tracked persons",
                            (Input::Detections(_), Counted::Traffic) => "tracked vehicles",
                        },
                        "{} on",
                        self.counted.name()
                    );
                    Run::new(cfg, self.counted, tracking, SystemTime::now())
                });
            }
            tokio::select! {
                _ = shutdown.cancelled() => {
                    if let Some(r) = run.as_mut() {
                        self.close(r, ms(SystemTime::now()), true).await;
                    }
                    return Ok(());
                }
                changed = self.config.changed() => if changed.is_err() { return Ok(()) },
                item = self.input.next(), if run.is_some() => {
                    let Some(r) = run.as_mut() else { continue };
                    let Some(mut counter) = r.counter.take() else { return Ok(()) };
                    // Counting a frame is image work: off the runtime's threads,
                    // the counter lent to the blocking task and given back.
                    let busy = Metrics::busy(&self.metrics, self.counted.stage());
                    let job = tokio::task::spawn_blocking(move || {
                        let _busy = busy;
                        let counted = count(&mut counter, item);
                        (counter, counted)
                    })
                    .await;
                    let (crossings, occupancy, captured_at) = match job {
                        Ok((counter, counted)) => {
                            r.counter = Some(counter);
                            counted
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "counting a frame failed; the stage ends");
                            return Ok(());
                        }
                    };
                    r.tally.add(&crossings, &occupancy);
                    let at = ms(captured_at);
                    for c in &crossings {
                        tracing::info!(line = %c.line, direction = c.direction, track = c.track, class = c.class, "{} crossed", c.class);
                        if r.cfg.crossing_events {
                            let mut payload = serde_json::json!({
                                "line": c.line, "direction": c.direction, "track": c.track,
                                "at": rfc3339(at),
                            });
                            if self.counted == Counted::Traffic {
                                payload["class"] = c.class.into();
                            }
                            if !self.emit(self.counted.kinds().1, at, &payload).await {
                                return Ok(());
                            }
                        }
                    }
                }
                _ = tick.tick() => {
                    let now = ms(SystemTime::now());
                    if let Some(r) = run.as_mut() {
                        if now >= r.end_ms {
                            let end = r.end_ms;
                            if !self.close(r, end, false).await {
                                return Ok(());
                            }
                            (r.start_ms, r.end_ms) = bucket(now, r.cfg.interval);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_are_aligned_to_the_wall_clock() {
        let (s, e) = bucket(1_795_320_615_123, Duration::from_secs(60));
        assert_eq!(s % 60_000, 0);
        assert_eq!(e - s, 60_000);
        assert!(s <= 1_795_320_615_123 && 1_795_320_615_123 < e);
    }
}
