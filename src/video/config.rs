//! The video stage's section of the configuration (`[video]`): its fields,
//! defaults, checks and which of them remote configuration may set.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::check::Checker;

/// The fields of `[video]` remote configuration may set; a change restarts the
/// stage (recording resumes with at most one segment's gap).
pub const TUNABLE: &[&str] = &[
    "source",
    "rtsp_transport",
    "codec",
    "segment_duration",
    "retention_max_bytes",
    "retention_max_age",
    "analytics_fps",
    "stall_timeout",
];

/// Transport of an RTSP source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RtspTransport {
    /// Interleaved in the RTSP TCP connection: passes NAT and firewalls.
    Tcp,
    /// RTP over UDP: lower latency on a clean LAN.
    Udp,
}

/// Video codec of an RTSP source (recorded as is, never re-encoded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Codec {
    H264,
    H265,
}

/// The video pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VideoConfig {
    /// Run the video pipeline.
    #[serde(default)]
    pub enabled: bool,
    /// `test` (a test pattern with a clock), `rtsp://[user:password@]host/path`,
    /// `v4l2:///dev/video0`, or `file:///path/to/video.mp4` (played in a loop at
    /// its own pace, re-encoded for recording: for demos and tests).
    #[serde(default = "default_video_source")]
    pub source: String,
    /// RTSP transport: `tcp` or `udp`.
    #[serde(default = "default_rtsp_transport")]
    pub rtsp_transport: RtspTransport,
    /// Codec of the RTSP stream: `h264` or `h265`.
    #[serde(default = "default_codec")]
    pub codec: Codec,
    /// Size and rate of raw sources (test pattern, V4L2, file), which are encoded to H.264.
    #[serde(default = "default_video_width")]
    pub width: u32,
    #[serde(default = "default_video_height")]
    pub height: u32,
    #[serde(default = "default_video_fps")]
    pub framerate: u32,
    /// Length of a recorded segment (Matroska files named by their UTC start).
    #[serde(default = "default_segment", with = "humantime_serde")]
    pub segment_duration: Duration,
    /// Directory of the recording ring buffer.
    #[serde(default = "default_recordings_dir")]
    pub recordings_dir: PathBuf,
    /// Disk budget of the recordings, bytes; the oldest segments go first.
    #[serde(default = "default_retention_bytes")]
    pub retention_max_bytes: u64,
    /// Segments older than this are deleted; `0s` keeps them until the budget decides.
    #[serde(default = "default_retention_age", with = "humantime_serde")]
    pub retention_max_age: Duration,
    /// Frames per second handed to analytics.
    #[serde(default = "default_analytics_fps")]
    pub analytics_fps: u32,
    /// Size of the frames handed to analytics (RGB).
    #[serde(default = "default_analytics_width")]
    pub analytics_width: u32,
    #[serde(default = "default_analytics_height")]
    pub analytics_height: u32,
    /// Frames waiting for analytics; when full the oldest is dropped (counted).
    #[serde(default = "default_frame_queue")]
    pub frame_queue: usize,
    /// No buffer from the source for this long: rebuild the pipeline.
    #[serde(default = "default_stall_timeout", with = "humantime_serde")]
    pub stall_timeout: Duration,
}

impl Default for VideoConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            source: default_video_source(),
            rtsp_transport: default_rtsp_transport(),
            codec: default_codec(),
            width: default_video_width(),
            height: default_video_height(),
            framerate: default_video_fps(),
            segment_duration: default_segment(),
            recordings_dir: default_recordings_dir(),
            retention_max_bytes: default_retention_bytes(),
            retention_max_age: default_retention_age(),
            analytics_fps: default_analytics_fps(),
            analytics_width: default_analytics_width(),
            analytics_height: default_analytics_height(),
            frame_queue: default_frame_queue(),
            stall_timeout: default_stall_timeout(),
        }
    }
}

fn default_analytics_fps() -> u32 {
    5
}

fn default_analytics_height() -> u32 {
    720
}

fn default_analytics_width() -> u32 {
    1280
}

fn default_codec() -> Codec {
    Codec::H264
}

fn default_frame_queue() -> usize {
    2
}

fn default_recordings_dir() -> PathBuf {
    PathBuf::from("/var/lib/edgecam/media/recordings")
}

fn default_retention_age() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

fn default_retention_bytes() -> u64 {
    2 << 30
}

fn default_rtsp_transport() -> RtspTransport {
    RtspTransport::Tcp
}

fn default_segment() -> Duration {
    Duration::from_secs(60)
}

fn default_stall_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_video_fps() -> u32 {
    30
}

fn default_video_height() -> u32 {
    720
}

fn default_video_source() -> String {
    "test".to_owned()
}

fn default_video_width() -> u32 {
    1280
}

impl VideoConfig {
    /// Records every value out of range in `c`.
    pub fn check(&self, c: &mut Checker) {
        let v = self;
        let source = super::Source::parse(&v.source);
        c.check(source.is_ok(), "video.source", || {
            source.clone().err().unwrap_or_default()
        });
        c.range("video.width", v.width, 16, 7680);
        c.range("video.height", v.height, 16, 4320);
        c.range("video.framerate", v.framerate, 1, 120);
        c.duration(
            "video.segment_duration",
            v.segment_duration,
            Duration::from_secs(1),
            Duration::from_secs(3600),
        );
        c.range(
            "video.retention_max_bytes",
            v.retention_max_bytes,
            1 << 16,
            1 << 44,
        );
        c.range("video.analytics_fps", v.analytics_fps, 1, 60);
        c.range("video.analytics_width", v.analytics_width, 16, 7680);
        c.range("video.analytics_height", v.analytics_height, 16, 4320);
        c.range("video.frame_queue", v.frame_queue, 1, 64);
        c.duration(
            "video.stall_timeout",
            v.stall_timeout,
            Duration::from_secs(1),
            Duration::from_secs(600),
        );
    }
}

/// Whether remote configuration may name `source`: a camera's own devices and
/// files are the local file's to name; from the cloud, only a network stream.
pub fn remote_source_allowed(source: &str) -> bool {
    let url = source.to_ascii_lowercase();
    url.starts_with("rtsp://") || url.starts_with("rtsps://")
}
