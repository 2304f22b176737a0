//! The video stage: builds the pipeline, watches its bus, detects stalls, rebuilds it
//! with backoff after an error, and finishes the current segment at shutdown.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tokio_util::sync::CancellationToken;

use super::frames::{Frame, FrameQueue};
use super::pins::Pins;
use super::pipeline::{describe, Source, DECODER_QUEUE, FRAMES, RECORDER, TEE};
use super::segments;
use super::VideoConfig;
use crate::backoff::Backoff;
use crate::events::now_ms;
use crate::metrics::Metrics;

/// Why a pipeline run ended.
#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    #[error("cannot build the pipeline: {0}")]
    Build(String),
    #[error("recordings directory {dir}: {source}")]
    Recordings {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("the pipeline failed: {0}")]
    Stream(String),
    #[error("the source ended (end of stream)")]
    EndOfStream,
    #[error("no video for {0:?}")]
    Stalled(Duration),
}

/// How long to wait for the end-of-stream at shutdown (a live source may never
/// deliver it: the pipeline is stopped anyway).
const EOS_WAIT: Duration = Duration::from_secs(5);

/// The video stage.
/// The stage's name in the metrics and the retained status.
pub const NAME: &str = "video";

pub struct Video {
    cfg: VideoConfig,
    /// One queue per analytic; each frame is shared between them.
    frames: Vec<FrameQueue>,
    pins: Pins,
    metrics: Arc<Metrics>,
}

/// Deletes from `dir` what the retention plan says, logging and counting each
/// deletion; updates the recording-bytes gauge.
fn retain(dir: &std::path::Path, limits: segments::Retention, pins: &Pins, metrics: &Metrics) {
    let segments = match segments::scan(dir) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(dir = %dir.display(), error = %e, "cannot list recordings; retention skipped");
            return;
        }
    };
    let mut bytes: u64 = segments.iter().map(|s| s.bytes).sum();
    for path in segments::plan(&segments, limits, SystemTime::now(), |s| pins.holds(s)) {
        let size = segments
            .iter()
            .find(|s| s.path == path)
            .map_or(0, |s| s.bytes);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                bytes -= size;
                Metrics::add(&metrics.segments_deleted, 1);
                tracing::info!(path = %path.display(), bytes = size, "recording deleted by retention");
            }
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot delete a recording")
            }
        }
    }
    Metrics::set(&metrics.recording_bytes, bytes as i64);
}

/// `20261122T043015.123Z.mkv` for the current UTC time.
fn segment_name(at: SystemTime) -> String {
    let stamp = humantime::format_rfc3339_millis(at).to_string();
    format!("{}.mkv", stamp.replace(['-', ':'], ""))
}

impl Video {
    /// Applies retention to the recordings directory (a directory scan and
    /// deletions: off the runtime, one at a time).
    async fn retain(&self, dir: &std::path::Path) {
        let limits = segments::Retention {
            max_bytes: self.cfg.retention_max_bytes,
            max_age: self.cfg.retention_max_age,
            segment_duration: self.cfg.segment_duration,
        };
        let (dir, pins, metrics) = (dir.to_owned(), self.pins.clone(), self.metrics.clone());
        let busy = Metrics::busy(&self.metrics, NAME);
        if let Err(e) = tokio::task::spawn_blocking(move || {
            let _busy = busy;
            retain(&dir, limits, &pins, &metrics)
        })
        .await
        {
            tracing::error!(error = %e, "retention failed");
        }
    }

    pub fn new(
        cfg: VideoConfig,
        frames: Vec<FrameQueue>,
        pins: Pins,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            cfg,
            frames,
            pins,
            metrics,
        }
    }

    async fn run_once(
        &self,
        source: &Source,
        shutdown: &CancellationToken,
    ) -> Result<(), VideoError> {
        let dir = self.cfg.recordings_dir.clone();
        std::fs::create_dir_all(&dir).map_err(|source| VideoError::Recordings {
            dir: dir.clone(),
            source,
        })?;
        let overlay = gst::ElementFactory::find("clockoverlay").is_some();
        let pipeline = gst::parse::launch(&describe(&self.cfg, source, overlay))
            .map_err(|e| VideoError::Build(e.to_string()))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| VideoError::Build("not a pipeline".into()))?;
        let by_name = |name: &str| {
            pipeline
                .by_name(name)
                .ok_or_else(|| VideoError::Build(format!("no element {name}")))
        };

        // Segments are named by their UTC start.
        let recorder = by_name(RECORDER)?;
        let seg_dir = dir.clone();
        recorder.connect("format-location", false, move |_| {
            Some(
                seg_dir
                    .join(segment_name(SystemTime::now()))
                    .to_string_lossy()
                    .to_value(),
            )
        });

        // Input: count buffers and remember the last one, for stall detection.
        let last_input = Arc::new(AtomicI64::new(now_ms()));
        let tee_pad = by_name(TEE)?
            .static_pad("sink")
            .ok_or_else(|| VideoError::Build("tee has no sink pad".into()))?;
        {
            let last_input = last_input.clone();
            let metrics = self.metrics.clone();
            tee_pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                last_input.store(now_ms(), Relaxed);
                Metrics::add(&metrics.frames_in, 1);
                gst::PadProbeReturn::Ok
            });
        }

        if let Some(queue) = pipeline.by_name(DECODER_QUEUE) {
            let metrics = self.metrics.clone();
            queue.connect("overrun", false, move |_| {
                Metrics::add(&metrics.decoder_overruns, 1);
                None
            });
        }

        // Analytics frames.
        let appsink = by_name(FRAMES)?
            .downcast::<gst_app::AppSink>()
            .map_err(|_| VideoError::Build("frames is not an appsink".into()))?;
        let queues = self.frames.clone();
        let metrics = self.metrics.clone();
        appsink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let (Some(buffer), Some(caps)) = (sample.buffer(), sample.caps()) else {
                        return Err(gst::FlowError::Error);
                    };
                    let s = caps.structure(0).ok_or(gst::FlowError::Error)?;
                    let width = s.get::<i32>("width").map_err(|_| gst::FlowError::Error)? as u32;
                    let height = s.get::<i32>("height").map_err(|_| gst::FlowError::Error)? as u32;
                    let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
                    let latency = capture_latency(sink, &sample).unwrap_or_default();
                    Metrics::add(&metrics.frames_delivered, 1);
                    Metrics::add(&metrics.frame_latency_us_total, latency.as_micros() as u64);
                    Metrics::set(&metrics.last_frame_latency_us, latency.as_micros() as i64);
                    Metrics::set(
                        &metrics.last_frame_size,
                        ((width as i64) << 32) | height as i64,
                    );
                    let frame = Arc::new(Frame {
                        width,
                        height,
                        rgb: super::frames::packed_rgb(map.as_slice(), width, height),
                        captured_at: SystemTime::now() - latency,
                    });
                    for q in &queues {
                        q.push(frame.clone());
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );

        let bus = pipeline
            .bus()
            .ok_or_else(|| VideoError::Build("pipeline without a bus".into()))?;
        let mut messages = bus.stream();
        let looping = matches!(source, Source::File(_));
        let started = if looping {
            start_looping(&pipeline, &tee_pad).await
        } else {
            pipeline.set_state(gst::State::Playing).map(|_| ())
        };
        if let Err(e) = started {
            // The element that refused says why on the bus.
            let why = tokio::time::timeout(Duration::from_millis(500), async {
                while let Some(m) = messages.next().await {
                    if let gst::MessageView::Error(err) = m.view() {
                        return Some(err.error().to_string());
                    }
                }
                None
            })
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| e.to_string());
            if let Err(e) = pipeline.set_state(gst::State::Null) {
                tracing::warn!(error = %e, "cannot stop the pipeline cleanly");
            }
            return Err(VideoError::Stream(format!("cannot start: {why}")));
        }
        tracing::info!(source = %source.redacted(), recordings = %dir.display(), "video pipeline started");
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut ticks: u64 = 0;
        let mut rates = Rates::new(&self.metrics);
        self.retain(&dir).await;
        let result = loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    // Finish the segment being written: EOS through the pipeline.
                    pipeline.send_event(gst::event::Eos::new());
                    let finished = tokio::time::timeout(EOS_WAIT, async {
                        while let Some(msg) = messages.next().await {
                            if let gst::MessageView::Eos(_) = msg.view() {
                                return;
                            }
                        }
                    })
                    .await;
                    if finished.is_err() {
                        tracing::warn!("no end of stream within {EOS_WAIT:?}; the last segment may be cut short");
                    }
                    break Ok(());
                }
                msg = messages.next() => match msg {
                    None => break Err(VideoError::Stream("bus closed".into())),
                    Some(msg) => match msg.view() {
                        gst::MessageView::Error(e) => {
                            let detail = e.debug().map(|d| d.to_string()).unwrap_or_default();
                            break Err(VideoError::Stream(format!("{} ({detail})", e.error())));
                        }
                        gst::MessageView::Eos(_) => break Err(VideoError::EndOfStream),
                        gst::MessageView::SegmentDone(_) if looping => {
                            // The file ended: play it again without flushing, so
                            // timestamps (and the recording) run on.
                            if !seek_to_start(&tee_pad, gst::SeekFlags::SEGMENT) {
                                break Err(VideoError::Stream("cannot loop the file: the seek failed".into()));
                            }
                            tracing::debug!("video file looped");
                        }
                        gst::MessageView::Element(e) => {
                            if let Some(s) = e.structure() {
                                if s.name() == "splitmuxsink-fragment-closed" {
                                    Metrics::add(&self.metrics.segments_closed, 1);
                                    let location = s.get::<String>("location").unwrap_or_default();
                                    tracing::info!(%location, "segment recorded");
                                    self.retain(&dir).await;
                                }
                            }
                        }
                        _ => {}
                    },
                },
                _ = tick.tick() => {
                    ticks += 1;
                    if ticks.is_multiple_of(60) {
                        self.retain(&dir).await;
                    }
                    if ticks.is_multiple_of(RATE_TICKS) {
                        rates.update(&self.metrics);
                    }
                    let silent = Duration::from_millis((now_ms() - last_input.load(Relaxed)).max(0) as u64);
                    if silent > self.cfg.stall_timeout {
                        break Err(VideoError::Stalled(silent));
                    }
                }
            }
        };
        if let Err(e) = pipeline.set_state(gst::State::Null) {
            tracing::warn!(error = %e, "cannot stop the pipeline cleanly");
        }
        result
    }
}

/// The frame-rate gauges cover this many one-second ticks.
const RATE_TICKS: u64 = 5;

/// Input and analysed frame rates from the counters.
struct Rates {
    at: tokio::time::Instant,
    frames_in: u64,
    delivered: u64,
}

impl Rates {
    fn new(m: &Metrics) -> Self {
        Self {
            at: tokio::time::Instant::now(),
            frames_in: Metrics::get(&m.frames_in),
            delivered: Metrics::get(&m.frames_delivered),
        }
    }

    fn update(&mut self, m: &Metrics) {
        let next = Self::new(m);
        let secs = next.at.duration_since(self.at).as_secs_f64().max(1e-3);
        let mfps = |now: u64, then: u64| ((now - then) as f64 / secs * 1000.0) as i64;
        Metrics::set(&m.input_mfps, mfps(next.frames_in, self.frames_in));
        Metrics::set(&m.analysed_mfps, mfps(next.delivered, self.delivered));
        *self = next;
    }
}

/// Capture to appsink: the pipeline clock now minus the frame's running time (its
/// capture on a live source; for RTSP, when its first packet arrived).
fn capture_latency(sink: &gst_app::AppSink, sample: &gst::Sample) -> Option<Duration> {
    let now = sink.clock()?.time();
    let base = sink.base_time()?;
    let segment = sample.segment()?.downcast_ref::<gst::ClockTime>()?;
    let running = segment.to_running_time(sample.buffer()?.pts()?)?;
    let latency = now.checked_sub(base)?.checked_sub(running)?;
    Some(Duration::from_nanos(latency.nseconds()))
}

/// How long a file source may take to open and preroll.
const PREROLL_WAIT: Duration = Duration::from_secs(10);

/// Starts a file pipeline for looping: preroll, a flushing segment seek to the
/// start (so the end of the file posts segment-done instead of end of stream), play.
async fn start_looping(
    pipeline: &gst::Pipeline,
    tee_pad: &gst::Pad,
) -> Result<(), gst::StateChangeError> {
    pipeline.set_state(gst::State::Paused)?;
    // The decoder links its output once it has read the file's header; caps on the
    // tee say the chain is complete and a seek will reach the demuxer.
    let deadline = tokio::time::Instant::now() + PREROLL_WAIT;
    while tee_pad.current_caps().is_none() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !seek_to_start(tee_pad, gst::SeekFlags::FLUSH | gst::SeekFlags::SEGMENT) {
        tracing::warn!("the file cannot be seeked; it will play once");
    }
    pipeline.set_state(gst::State::Playing).map(|_| ())
}

/// Seeks the source to its start, sending the seek upstream from the tee (a seek
/// on the pipeline would go through the recorder, which refuses seeks).
fn seek_to_start(tee_pad: &gst::Pad, flags: gst::SeekFlags) -> bool {
    tee_pad.push_event(gst::event::Seek::new(
        1.0,
        flags,
        gst::SeekType::Set,
        gst::ClockTime::ZERO,
        gst::SeekType::None,
        gst::ClockTime::NONE,
    ))
}

impl crate::supervision::Stage for Video {
    type Error = Infallible;

    /// Runs pipelines until shutdown, rebuilding after failures with backoff.
    async fn run(&mut self, shutdown: CancellationToken) -> Result<(), Infallible> {
        if let Err(e) = gst::init() {
            tracing::error!(error = %e, "GStreamer cannot start; video disabled");
            return Ok(());
        }
        let source = match Source::parse(&self.cfg.source) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "invalid video source; video disabled");
                return Ok(());
            }
        };
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            let started = tokio::time::Instant::now();
            match self.run_once(&source, &shutdown).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    Metrics::add(&self.metrics.video_restarts, 1);
                    if started.elapsed() > Duration::from_secs(60) {
                        backoff.reset();
                    }
                    let delay = backoff
                        .next_delay(rand::random::<f64>())
                        .max(Duration::from_millis(200));
                    Metrics::set_text(&self.metrics.video_last_error, &e.to_string());
                    Metrics::set(&self.metrics.input_mfps, 0);
                    Metrics::set(&self.metrics.analysed_mfps, 0);
                    tracing::error!(source = %source.redacted(), error = %e, retry_in = ?delay, "video pipeline stopped; rebuilding it");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(delay) => {}
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
    fn segments_are_named_by_utc_start_and_sort_in_time_order() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_320_615_123);
        let name = segment_name(t);
        assert_eq!(name, "20261122T041015.123Z.mkv");
        let later = segment_name(t + Duration::from_secs(61));
        assert!(later > name);
    }
}
