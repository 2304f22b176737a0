//! Process-wide counters. Each stage increments its own; the health stage reads
//! them for the metrics message. Counters only go up; gauges are set by their owner.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// Counters and gauges of one daemon process.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Events committed to the outbox.
    pub events_enqueued: AtomicU64,
    /// Events refused by the outbox (full with `refuse_newest`, disk full, invalid).
    pub events_refused: AtomicU64,
    /// Events deleted unsent to make room (`drop_oldest`).
    pub events_evicted: AtomicU64,
    /// Events deleted unsent because they were older than `max_age`.
    pub events_expired: AtomicU64,
    /// Events whose batch the broker acknowledged.
    pub events_acked: AtomicU64,
    /// MQTT publishes of event batches.
    pub batches_published: AtomicU64,
    /// Payload + topic bytes of event batches published.
    pub bytes_published: AtomicU64,
    /// Batches published again after a reconnect (at-least-once duplicates).
    pub batches_republished: AtomicU64,
    /// Successful connections (the first one included).
    pub connects: AtomicU64,
    /// Connection attempts or sessions that ended in an error.
    pub connection_errors: AtomicU64,
    /// Connections found dead because an acknowledgement did not come within
    /// `mqtt.ack_timeout` (a silent link), a subset of `connection_errors`.
    pub dead_links: AtomicU64,
    /// Gauge: for the last dead link, ms from the last packet received to noticing.
    pub last_dead_link_ms: AtomicI64,
    /// Times the MQTT event loop paused reading from the broker because the
    /// publisher had fallen behind by a whole backlog of reports.
    pub loop_pauses: AtomicU64,
    /// Connections on which the broker still had our session (queued messages
    /// delivered, subscriptions kept).
    pub sessions_resumed: AtomicU64,
    /// Outbox databases moved aside because they could not be opened.
    pub outbox_resets: AtomicU64,
    /// Responses (non-retained control messages) dropped after queueing too long offline.
    pub responses_dropped: AtomicU64,
    /// Incoming MQTT messages not taken by their stage (busy beyond the waiting
    /// room, or stopped): left unacknowledged for the broker to deliver again.
    pub inbound_dropped: AtomicU64,
    /// Remote configurations applied (or reverted) and rejected.
    pub configs_applied: AtomicU64,
    pub configs_rejected: AtomicU64,
    /// Video: buffers that entered the pipeline from the source.
    pub frames_in: AtomicU64,
    /// Video: frames handed to analytics.
    pub frames_delivered: AtomicU64,
    /// Video: frames dropped because people counting lagged (oldest first).
    pub frames_dropped: AtomicU64,
    /// Video: recorded segments closed.
    pub segments_closed: AtomicU64,
    /// Video: segments deleted by retention.
    pub segments_deleted: AtomicU64,
    /// Gauge: bytes of recordings on disk.
    pub recording_bytes: AtomicI64,
    /// Video: pipeline rebuilds after an error, end of stream or stall.
    pub video_restarts: AtomicU64,
    /// Gauge: size of the last analytics frame, width << 32 | height.
    pub last_frame_size: AtomicI64,
    /// Gauge: events in the outbox.
    pub outbox_depth: AtomicI64,
    /// Gauge: bytes of event data in the outbox.
    pub outbox_bytes: AtomicI64,
    /// Gauge: timestamp (ms) of the oldest event in the outbox, 0 when empty.
    pub outbox_oldest_ts_ms: AtomicI64,
    /// Gauge: highest acknowledged seq.
    pub last_acked_seq: AtomicI64,
    /// Video: encoded frames dropped before the decoder because decoding fell more
    /// than the decoder queue behind (analytics see a glitch until the next keyframe;
    /// the recording is untouched).
    pub decoder_overruns: AtomicU64,
    /// Video: sum over delivered frames of the time from capture to the appsink, µs
    /// (mean over an interval: its increase over that of `frames_delivered`).
    pub frame_latency_us_total: AtomicU64,
    /// Gauge: that time for the last frame, µs.
    pub last_frame_latency_us: AtomicI64,
    /// Gauges: input and analysed frame rates over the last few seconds, in
    /// thousandths of a frame per second.
    pub input_mfps: AtomicI64,
    pub analysed_mfps: AtomicI64,
    /// Uploads: requests accepted and rejected; jobs done, failed for good, and
    /// attempts that failed (and were retried); bytes sent.
    pub uploads_accepted: AtomicU64,
    pub uploads_rejected: AtomicU64,
    pub uploads_done: AtomicU64,
    pub uploads_failed: AtomicU64,
    pub upload_attempts_failed: AtomicU64,
    pub upload_bytes: AtomicU64,
    /// Upload jobs databases found corrupt (at start or after an error) and moved
    /// aside; the jobs in them are lost.
    pub upload_db_resets: AtomicU64,
    /// Plates: frames dropped because the readers lagged (oldest first), frames
    /// read, frames skipped by the motion gate, reads kept, vehicles reported,
    /// tracks discarded (too few reads), reading time in total (µs), reader errors,
    /// snapshots written, deleted (beyond `max_snapshots`) and failed.
    pub plate_frames_dropped: AtomicU64,
    pub plate_frames_read: AtomicU64,
    pub plate_frames_still: AtomicU64,
    pub plate_reads: AtomicU64,
    pub plate_vehicles: AtomicU64,
    pub plate_tracks_discarded: AtomicU64,
    pub plate_vehicles_unread: AtomicU64,
    /// Vehicles without a plate left out of `plate_vehicles_unread` for not moving.
    pub plate_vehicles_unmoved: AtomicU64,
    pub plate_read_us_total: AtomicU64,
    pub plate_errors: AtomicU64,
    pub plate_snapshots: AtomicU64,
    pub plate_snapshots_deleted: AtomicU64,
    pub plate_snapshot_errors: AtomicU64,
    /// Detector: frames analysed, time spent on them (µs), frames dropped while it
    /// was busy (oldest first), errors (model load, inference), the last error.
    pub detector_frames: AtomicU64,
    pub detector_us_total: AtomicU64,
    pub detector_frames_dropped: AtomicU64,
    pub detector_frames_still: AtomicU64,
    pub detector_errors: AtomicU64,
    pub detector_last_error: std::sync::Mutex<String>,
    /// Video: the last error that stopped the pipeline (empty: none yet).
    pub video_last_error: std::sync::Mutex<String>,
    /// When the MQTT event loop last came round ([`mono_ms`]): the watchdog's
    /// sign that the connection task is not stuck.
    pub mqtt_loop_ms: AtomicU64,
    /// Each supervised stage's state, written by the supervisor.
    pub stages:
        std::sync::Mutex<std::collections::BTreeMap<&'static str, crate::supervision::Status>>,
    /// Told when a stage's state changes (the retained status carries them).
    pub stages_changed: tokio::sync::Notify,
    /// Work in progress: an id, its stage, and since when ([`mono_ms`]).
    busy: std::sync::Mutex<Vec<(u64, &'static str, u64)>>,
    next_work: AtomicU64,
}

/// A piece of work in progress, marked by [`Metrics::busy`] until dropped. Moved
/// into a blocking task, it stays marked for as long as that task really runs,
/// even when the stage that started it has been stopped.
#[must_use = "the work is marked only while this is held"]
pub struct Busy {
    metrics: std::sync::Arc<Metrics>,
    id: u64,
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut busy = self.metrics.busy.lock().unwrap_or_else(|e| e.into_inner());
        busy.retain(|(id, _, _)| *id != self.id);
    }
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }

    pub fn set(gauge: &AtomicI64, v: i64) {
        gauge.store(v, Relaxed);
    }

    pub fn gauge(gauge: &AtomicI64) -> i64 {
        gauge.load(Relaxed)
    }

    pub fn set_text(field: &std::sync::Mutex<String>, v: &str) {
        let mut text = field.lock().unwrap_or_else(|e| e.into_inner());
        text.clear();
        text.push_str(v);
    }

    /// Records a stage's state.
    pub fn set_stage(&self, name: &'static str, status: &crate::supervision::Status) {
        let mut stages = self.stages.lock().unwrap_or_else(|e| e.into_inner());
        if stages.insert(name, status.clone()).as_ref() != Some(status) {
            self.stages_changed.notify_one();
        }
    }

    /// Marks a stage running again (after its backoff), keeping its history.
    pub fn stage_running(&self, name: &'static str) {
        let mut stages = self.stages.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = stages.get_mut(name) {
            if s.state != crate::supervision::State::Running {
                s.state = crate::supervision::State::Running;
                self.stages_changed.notify_one();
            }
        }
    }

    /// Marks a piece of `stage`'s work in progress until the guard is dropped
    /// (the watchdog's sign of a stage stuck in a blocking call).
    pub fn busy(this: &std::sync::Arc<Self>, stage: &'static str) -> Busy {
        let id = this.next_work.fetch_add(1, Relaxed);
        let mut busy = this.busy.lock().unwrap_or_else(|e| e.into_inner());
        busy.push((id, stage, mono_ms()));
        Busy {
            metrics: this.clone(),
            id,
        }
    }

    /// Every stage's state, by name, with how long its oldest work in progress
    /// has run once that passes [`crate::supervision::BUSY_REPORTED`].
    pub fn stages(&self) -> std::collections::BTreeMap<&'static str, crate::supervision::Status> {
        self.stages_at(mono_ms())
    }

    fn stages_at(
        &self,
        now: u64,
    ) -> std::collections::BTreeMap<&'static str, crate::supervision::Status> {
        let mut stages = self
            .stages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        for (_, stage, since) in busy.iter() {
            let secs = now.saturating_sub(*since) / 1000;
            if secs < crate::supervision::BUSY_REPORTED.as_secs() {
                continue;
            }
            if let Some(s) = stages.get_mut(stage) {
                s.busy_s = Some(s.busy_s.unwrap_or(0).max(secs));
            }
        }
        stages
    }

    /// The text, or `None` when empty.
    pub fn text(field: &std::sync::Mutex<String>) -> Option<String> {
        let text = field.lock().unwrap_or_else(|e| e.into_inner());
        (!text.is_empty()).then(|| text.clone())
    }
}

/// Payload of `<camera-id>/status/metrics` (schema: `docs/schemas/metrics.json`):
/// the counters, with the outbox's own figures (`outbox`) where they could be read.
pub fn payload<S: serde::Serialize>(
    camera_id: &str,
    started_ms: i64,
    m: &Metrics,
    outbox: Option<&S>,
) -> String {
    let now = crate::events::now_ms();
    serde_json::json!({
        "camera_id": camera_id,
        "ts": now,
        "uptime_s": (now - started_ms).max(0) / 1000,
        "version": env!("CARGO_PKG_VERSION"),
        "outbox": outbox,
        "events": {
            "enqueued": Metrics::get(&m.events_enqueued),
            "acked": Metrics::get(&m.events_acked),
            "refused": Metrics::get(&m.events_refused),
            "evicted": Metrics::get(&m.events_evicted),
            "expired": Metrics::get(&m.events_expired),
            "inbound_dropped": Metrics::get(&m.inbound_dropped),
        },
        "mqtt": {
            "batches_published": Metrics::get(&m.batches_published),
            "bytes_published": Metrics::get(&m.bytes_published),
            "batches_republished": Metrics::get(&m.batches_republished),
            "connects": Metrics::get(&m.connects),
            "connection_errors": Metrics::get(&m.connection_errors),
            "dead_links": Metrics::get(&m.dead_links),
            "last_dead_link_ms": Metrics::gauge(&m.last_dead_link_ms),
            "sessions_resumed": Metrics::get(&m.sessions_resumed),
            "loop_pauses": Metrics::get(&m.loop_pauses),
        },
        "video": {
            "frames_in": Metrics::get(&m.frames_in),
            "frames_delivered": Metrics::get(&m.frames_delivered),
            "frames_dropped": Metrics::get(&m.frames_dropped),
            "segments_closed": Metrics::get(&m.segments_closed),
            "segments_deleted": Metrics::get(&m.segments_deleted),
            "recording_bytes": Metrics::gauge(&m.recording_bytes),
            "restarts": Metrics::get(&m.video_restarts),
            "last_frame": {
                "width": Metrics::gauge(&m.last_frame_size) >> 32,
                "height": Metrics::gauge(&m.last_frame_size) & 0xffff_ffff,
                "latency_us": Metrics::gauge(&m.last_frame_latency_us),
            },
            "frame_latency_us_total": Metrics::get(&m.frame_latency_us_total),
            "decoder_overruns": Metrics::get(&m.decoder_overruns),
            "input_fps": Metrics::gauge(&m.input_mfps) as f64 / 1000.0,
            "analysed_fps": Metrics::gauge(&m.analysed_mfps) as f64 / 1000.0,
            "last_error": Metrics::text(&m.video_last_error),
        },
        "uploads": {
            "accepted": Metrics::get(&m.uploads_accepted),
            "rejected": Metrics::get(&m.uploads_rejected),
            "done": Metrics::get(&m.uploads_done),
            "failed": Metrics::get(&m.uploads_failed),
            "attempts_failed": Metrics::get(&m.upload_attempts_failed),
            "bytes": Metrics::get(&m.upload_bytes),
            "responses_dropped": Metrics::get(&m.responses_dropped),
            "db_resets": Metrics::get(&m.upload_db_resets),
        },
        "plates": {
            "frames_dropped": Metrics::get(&m.plate_frames_dropped),
            "frames_read": Metrics::get(&m.plate_frames_read),
            "frames_still": Metrics::get(&m.plate_frames_still),
            "reads": Metrics::get(&m.plate_reads),
            "vehicles": Metrics::get(&m.plate_vehicles),
            "tracks_discarded": Metrics::get(&m.plate_tracks_discarded),
            "vehicles_unread": Metrics::get(&m.plate_vehicles_unread),
            "vehicles_unmoved": Metrics::get(&m.plate_vehicles_unmoved),
            "read_us_total": Metrics::get(&m.plate_read_us_total),
            "errors": Metrics::get(&m.plate_errors),
            "snapshots": Metrics::get(&m.plate_snapshots),
            "snapshots_deleted": Metrics::get(&m.plate_snapshots_deleted),
            "snapshot_errors": Metrics::get(&m.plate_snapshot_errors),
        },
        "detector": {
            "frames": Metrics::get(&m.detector_frames),
            "us_total": Metrics::get(&m.detector_us_total),
            "frames_dropped": Metrics::get(&m.detector_frames_dropped),
            "frames_still": Metrics::get(&m.detector_frames_still),
            "errors": Metrics::get(&m.detector_errors),
            "last_error": Metrics::text(&m.detector_last_error),
        },
        "config": {
            "applied": Metrics::get(&m.configs_applied),
            "rejected": Metrics::get(&m.configs_rejected),
        },
        "stages": m.stages(),
        "outbox_resets": Metrics::get(&m.outbox_resets),
        "rss_bytes": rss_bytes(),
        "cpu_s": cpu_seconds(),
    })
    .to_string()
}

/// Milliseconds on a monotonic clock that starts at the first call (wall-clock
/// steps do not move it).
pub fn mono_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

/// Resident set size of this process in bytes (Linux), 0 when unknown.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * page_size()
}

/// CPU time (user + system) used by this process, in seconds.
pub fn cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage writes a full `rusage` into the pointer on success.
    let ok = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } == 0;
    if !ok {
        return 0.0;
    }
    // SAFETY: initialised by the successful call above.
    let u = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if v > 0 {
        v as u64
    } else {
        4096
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervision::{Policy, Supervision};

    #[test]
    fn work_in_progress_shows_once_it_runs_long_and_goes_when_done() {
        let m = std::sync::Arc::new(Metrics::default());
        m.set_stage("plate_reading", Supervision::new(Policy::Restart).status());
        m.set_stage("video", Supervision::new(Policy::Restart).status());
        let now = mono_ms();
        let first = Metrics::busy(&m, "plate_reading");
        let _second = Metrics::busy(&m, "plate_reading");
        assert_eq!(m.stages_at(now + 9_000)["plate_reading"].busy_s, None);
        // The oldest piece of work counts.
        let later = m.stages_at(now + 12_500);
        assert!(
            matches!(later["plate_reading"].busy_s, Some(12 | 11)),
            "{later:?}"
        );
        assert_eq!(later["video"].busy_s, None);
        drop(first);
        drop(_second);
        assert_eq!(m.stages_at(now + 60_000)["plate_reading"].busy_s, None);
        // Work of a stage not (or no longer) supervised is not reported.
        let _orphan = Metrics::busy(&m, "gone");
        assert!(!m.stages_at(now + 60_000).contains_key("gone"));
    }
}
