//! Configuration: built-in defaults, then the local TOML file.
//!
//! Every field carries a `///` comment: these comments are the reference, and
//! `config.example.toml` repeats them with the default values. Device identity
//! (`[identity]`: who the camera is and which broker it trusts) is kept apart from
//! the tunables (everything else), so a fleet can later overlay tunables remotely
//! without touching identity.

pub mod remote;
mod validate;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use validate::ValidationErrors;

/// Errors raised while loading a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path} has invalid values:\n{errors}")]
    Invalid {
        path: PathBuf,
        errors: ValidationErrors,
    },
}

/// The whole configuration of the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Who this camera is and which broker it talks to. Required.
    pub identity: Identity,
    /// Where the daemon keeps its state (the outbox database).
    #[serde(default)]
    pub storage: StorageConfig,
    /// The durable event outbox.
    #[serde(default)]
    pub outbox: OutboxConfig,
    /// MQTT session and the broker's ceilings (AWS IoT Core's values by default).
    #[serde(default)]
    pub mqtt: MqttConfig,
    /// Periodic status and metrics, and systemd integration.
    #[serde(default)]
    pub health: HealthConfig,
    /// A synthetic event source, for demos, soak tests and benchmarks.
    #[serde(default)]
    pub synthetic: SyntheticConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Remote configuration through retained MQTT messages.
    #[serde(default)]
    pub remote: RemoteConfig,
    /// The camera's video: source, recording ring buffer, frames for analytics.
    #[serde(default)]
    pub video: VideoConfig,
    /// Uploads on request (`<camera-id>/file/request`) to S3 or presigned URLs.
    #[serde(default)]
    pub upload: UploadConfig,
    /// People counting on the analytics frames: lines, zones, counts per interval.
    #[serde(default)]
    pub people: PeopleConfig,
    /// Licence-plate reading on the analytics frames: one `plate` event per vehicle.
    #[serde(default)]
    pub plates: PlatesConfig,
    /// Traffic counting: tracked vehicles crossing lines (needs `[detector]`).
    #[serde(default)]
    pub traffic: TrafficConfig,
    /// Object detection (persons, vehicles) on the analytics frames, shared by
    /// the analytics.
    #[serde(default)]
    pub detector: crate::analytics::DetectorConfig,
    /// Home Assistant MQTT discovery (off by default).
    #[serde(default)]
    pub homeassistant: crate::homeassistant::HomeAssistantConfig,
}

/// The runtime that runs the plate models.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlatesBackend {
    #[default]
    Tract,
    Onnxruntime,
}

/// Licence-plate reading (PP-OCRv4 text detection and recognition, plate-format
/// rules, tracking; see `docs/plates.md`). Read at start-up: changes need a restart.
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
    pub recognisers: crate::analytics::plates::Recognisers,
    /// Look again at each small line of text that could be a plate, enlarged
    /// (the text detector at 480x288 on the part of the image around it): the
    /// line's ends and its separation from the text above and below come out
    /// right more often (two points more plates read on the development set), for
    /// about a quarter more time per frame read; the daemon's peak memory stays
    /// the same (docs/plates.md).
    #[serde(default = "default_true")]
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
    pub region: crate::analytics::plates::Region,
    /// Only these countries' layouts, by code (`DE`, `FR`, `BR`, `US-CA`, ...);
    /// empty: every country of `region`. Fewer layouts correct more confusions.
    #[serde(default)]
    pub countries: Vec<String>,
    /// The site's own plate layouts, added to the countries': `L` a letter, `N` a
    /// digit, `X` either, a letter or digit itself, `{a,b}` a repeat, e.g.
    /// `["LLNLNL", "L{1,2}N{4}"]`. Reads are decoded against the layouts: a
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
    #[serde(default = "default_true")]
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
    pub lines: Vec<crate::analytics::LineConfig>,
    /// Zones whose occupancy is reported: `{ name, points = [[x, y], ...] }`.
    #[serde(default)]
    pub zones: Vec<crate::analytics::ZoneConfig>,
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
    pub lines: Vec<crate::analytics::LineConfig>,
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

/// Where S3 credentials come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialsSource {
    /// The standard AWS chain: environment (`AWS_ACCESS_KEY_ID`, ...), shared
    /// config and credentials files, container and instance metadata.
    Chain,
    /// The AWS IoT credentials provider, with the device certificate.
    Iot,
}

/// Uploads on request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadConfig {
    /// Accept file requests on `<camera-id>/file/request`. On by default; off,
    /// and refused when asked for, in a build without the `uploads` feature.
    #[serde(default = "default_upload_enabled")]
    pub enabled: bool,
    /// Requests may name files under this directory only; nothing outside it is
    /// ever opened (recordings and snapshots live under it by default).
    #[serde(default = "default_media_dir")]
    pub media_dir: PathBuf,
    /// Uploads running at once (1-8).
    #[serde(default = "default_upload_concurrency")]
    pub concurrency: usize,
    /// Accepted uploads not yet finished, at most (1-10000): each pins the
    /// recordings it needs, so a burst of requests could otherwise fill the disk.
    /// A request beyond it is rejected with the reason and counted in
    /// `uploads.rejected`.
    #[serde(default = "default_upload_max_pending")]
    pub max_pending: usize,
    /// Bandwidth cap for all uploads together, bytes per second (one second of
    /// burst); 0 for none.
    #[serde(default)]
    pub max_bytes_per_sec: u64,
    /// Size of a multipart part, bytes (5 MiB to 512 MiB): the memory an upload
    /// holds, and what a resumed upload may send twice.
    #[serde(default = "default_part_size")]
    pub part_size: u64,
    /// Largest request accepted, bytes.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
    /// Accept `http://` presigned URLs and S3 endpoints. For tests on loopback
    /// only: never on a camera.
    #[serde(default)]
    pub allow_plain_http: bool,
    /// Progress messages at most this often per upload.
    #[serde(default = "default_progress_interval", with = "humantime_serde")]
    pub progress_interval: Duration,
    /// Delay before retrying a failed attempt, doubling up to `retry_max`.
    #[serde(default = "default_retry_min", with = "humantime_serde")]
    pub retry_min: Duration,
    #[serde(default = "default_retry_max", with = "humantime_serde")]
    pub retry_max: Duration,
    /// Attempts before a job is reported failed for good.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Finished jobs are remembered this long, so a repeated request id is answered
    /// with the first outcome instead of uploading again.
    #[serde(default = "default_keep_finished", with = "humantime_serde")]
    pub keep_finished: Duration,
    /// Uploads by bucket and key, with the device's own credentials.
    #[serde(default)]
    pub s3: S3Config,
}

/// S3 with the device's own credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// AWS region of the buckets.
    #[serde(default = "default_s3_region")]
    pub region: String,
    /// Endpoint of an S3-compatible store (`https://host:port`); empty for AWS.
    #[serde(default)]
    pub endpoint: String,
    /// Path-style addressing (`endpoint/bucket/key`), for S3-compatible stores.
    #[serde(default)]
    pub force_path_style: bool,
    /// `chain` (the standard AWS chain) or `iot` (the AWS IoT credentials provider).
    #[serde(default = "default_credentials_source")]
    pub credentials: CredentialsSource,
    /// With `iot`: the account's credentials provider endpoint
    /// (`aws iot describe-endpoint --endpoint-type iot:CredentialProvider`).
    #[serde(default)]
    pub iot_credentials_endpoint: String,
    /// With `iot`: the role alias whose role may write the buckets.
    #[serde(default)]
    pub role_alias: String,
}

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

/// Remote configuration: retained JSON on `<camera-id>/config` (and on
/// `fleet/<group>/config` when `group` is set) overlays the tunables of this file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// Subscribe to the configuration topics and apply what arrives.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Fleet group of this camera: its configuration arrives on
    /// `fleet/<group>/config`, under the camera's own. 1-64 characters from
    /// A-Z a-z 0-9 _ - ; empty for none.
    #[serde(default)]
    pub group: String,
    /// Largest configuration payload accepted, in bytes; larger ones are rejected.
    #[serde(default = "default_remote_max_payload")]
    pub max_payload_bytes: usize,
}

/// Device identity: not a tunable. Changing it means a different device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// The camera's id: MQTT client id and first level of every topic.
    /// 1–128 characters from `A-Z a-z 0-9 _ - : .`; with AWS IoT Core, the thing name.
    pub camera_id: String,
    /// Broker host name, e.g. `abcdef123-ats.iot.eu-west-1.amazonaws.com`.
    pub broker_host: String,
    /// Broker TCP port. 443 (with ALPN `x-amzn-mqtt-ca`) passes the tightest
    /// firewalls; 8883 is the standard MQTT-over-TLS port (use `alpn = []`).
    #[serde(default = "default_broker_port")]
    pub broker_port: u16,
    /// ALPN protocol names offered in the TLS handshake. AWS IoT Core needs
    /// `x-amzn-mqtt-ca` on port 443; leave empty for 8883.
    #[serde(default = "default_alpn")]
    pub alpn: Vec<String>,
    /// PEM file of the CA certificate(s) that signed the broker's certificate
    /// (for AWS IoT Core: Amazon Root CA 1).
    pub ca_file: PathBuf,
    /// PEM file of this device's certificate (mutual TLS).
    pub cert_file: PathBuf,
    /// PEM file of this device's private key (PKCS#8, PKCS#1 or SEC1). Keep it 0600.
    pub key_file: PathBuf,
}

/// Where state lives on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Directory for the daemon's state (the outbox database). Must be writable.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
}

/// What to do when the outbox is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Delete the oldest events to make room (counted as `evicted`).
    DropOldest,
    /// Keep what is stored and refuse the new event (counted as `refused`).
    RefuseNewest,
}

/// SQLite's `synchronous` setting for the outbox (in WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Synchronous {
    /// fsync the WAL at every commit: a committed event survives power loss.
    Full,
    /// fsync only at checkpoints: survives a crash of the process (kill -9), but a
    /// power cut may lose the last commits.
    Normal,
}

/// The durable outbox of events waiting for the broker's acknowledgement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// Ceiling on the outbox's files on disk (database + WAL), in bytes. At least 1 MiB.
    #[serde(default = "default_outbox_max_bytes")]
    pub max_bytes: u64,
    /// Events older than this (by their timestamp) are deleted unsent and counted as
    /// `expired`. `0s` keeps them until `max_bytes` forces a decision.
    #[serde(default = "default_outbox_max_age", with = "humantime_serde")]
    pub max_age: Duration,
    /// What happens to a new event when the outbox is at `max_bytes`:
    /// `drop_oldest` or `refuse_newest`. Either way every lost event is counted.
    #[serde(default = "default_when_full")]
    pub when_full: WhenFull,
    /// `full` (survives power loss; one fsync per commit) or `normal` (survives a
    /// process crash only; faster on slow flash).
    #[serde(default = "default_synchronous")]
    pub synchronous: Synchronous,
    /// Capacity of the channel from event producers to the outbox. Producers wait
    /// (never drop) when it is full.
    #[serde(default = "default_outbox_channel")]
    pub channel_capacity: usize,
}

/// The MQTT session and the broker's limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// MQTT keepalive; AWS IoT Core accepts 30s–1200s.
    #[serde(default = "default_keepalive", with = "humantime_serde")]
    pub keepalive: Duration,
    /// TCP + TLS + MQTT CONNECT timeout.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Keep the MQTT session across connections (clean session off): the broker
    /// keeps the subscriptions and queues QoS 1 messages (file requests,
    /// configuration) sent while the camera is offline, and delivers them when it
    /// reconnects. AWS IoT Core keeps a session 1 hour after the disconnect by default.
    #[serde(default = "default_persistent_session")]
    pub persistent_session: bool,
    /// A connection with a publish, subscription or ping unacknowledged this long,
    /// and nothing at all received from the broker meanwhile, is treated as dead
    /// and made again (a silent link: cellular dead zone, half-open TCP). Costs no
    /// bytes; keep it well under `keepalive`. Each dead link in a row doubles it
    /// (up to 16 times) until everything sent on a connection is acknowledged.
    #[serde(default = "default_ack_timeout", with = "humantime_serde")]
    pub ack_timeout: Duration,
    /// First reconnect delay ceiling; doubles per failed attempt (full jitter).
    #[serde(default = "default_backoff_min", with = "humantime_serde")]
    pub backoff_min: Duration,
    /// Upper bound of the reconnect delay.
    #[serde(default = "default_backoff_max", with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Largest MQTT payload sent, in bytes (AWS IoT Core: 128 KB).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Most publishes in any one-second window (AWS IoT Core: 100 per connection).
    #[serde(default = "default_max_publishes_per_sec")]
    pub max_publishes_per_sec: u32,
    /// Most bytes (payload + topic) in any one-second window (AWS IoT Core: 512 KiB).
    #[serde(default = "default_max_bytes_per_sec")]
    pub max_bytes_per_sec: u64,
    /// Most unacknowledged QoS 1 publishes at once (AWS IoT Core: 100).
    #[serde(default = "default_max_inflight")]
    pub max_inflight: u16,
    /// Longest topic in bytes (AWS IoT Core: 256).
    #[serde(default = "default_max_topic_bytes")]
    pub max_topic_bytes: usize,
    /// Most `/` in a topic (AWS IoT Core: 7).
    #[serde(default = "default_max_topic_slashes")]
    pub max_topic_slashes: usize,
    /// The broker bills in steps of this many bytes (AWS IoT Core: 5 KB). Full
    /// batches are cut at a multiple of it so no message pays for a partial step.
    #[serde(default = "default_billing_step_bytes")]
    pub billing_step_bytes: usize,
    /// How long to wait for outstanding acknowledgements at shutdown.
    #[serde(default = "default_drain_timeout", with = "humantime_serde")]
    pub shutdown_drain: Duration,
}

/// Status, metrics and systemd.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Interval of the metrics message on `<camera-id>/status/metrics`, of the
    /// status line in the log and of `<state_dir>/status.json` (read by
    /// `edgecam status`); `0s` turns them off.
    #[serde(default = "default_metrics_interval", with = "humantime_serde")]
    pub metrics_interval: Duration,
}

/// A built-in producer of synthetic events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticConfig {
    /// Produce synthetic events.
    #[serde(default)]
    pub enabled: bool,
    /// Events per second.
    #[serde(default = "default_synthetic_rate")]
    pub rate_per_sec: f64,
    /// Size of the filler string in each event's payload, in bytes.
    #[serde(default = "default_synthetic_payload")]
    pub payload_bytes: usize,
    /// Event kind (the last topic level).
    #[serde(default = "default_synthetic_kind")]
    pub kind: String,
    /// Stop after this many events; 0 = no limit.
    #[serde(default)]
    pub count: u64,
}

/// Where logs go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogTarget {
    /// journald when the process runs under systemd, else stderr.
    Auto,
    /// Always journald.
    Journald,
    /// Always stderr, human-readable.
    Stderr,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter, e.g. `info` or `edgecam=debug,rumqttc=warn`. `RUST_LOG` overrides it.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// `auto`, `journald` or `stderr`.
    #[serde(default = "default_log_target")]
    pub target: LogTarget,
}

fn default_video_source() -> String {
    "test".to_owned()
}
fn default_rtsp_transport() -> RtspTransport {
    RtspTransport::Tcp
}
fn default_codec() -> Codec {
    Codec::H264
}
fn default_video_width() -> u32 {
    1280
}
fn default_video_height() -> u32 {
    720
}
fn default_video_fps() -> u32 {
    30
}
fn default_segment() -> Duration {
    Duration::from_secs(60)
}
fn default_recordings_dir() -> PathBuf {
    PathBuf::from("/var/lib/edgecam/media/recordings")
}
fn default_people_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_people_threshold() -> u8 {
    28
}
fn default_people_learning_rate() -> f32 {
    0.02
}
fn default_people_min_area() -> f32 {
    0.002
}
fn default_people_max_step() -> f32 {
    0.1
}
fn default_people_hysteresis() -> f32 {
    0.03
}
fn default_people_max_missed() -> u32 {
    4
}
fn default_models_dir() -> PathBuf {
    PathBuf::from("/var/lib/edgecam/models")
}
fn default_plates_region() -> crate::analytics::plates::Region {
    crate::analytics::plates::Region::Any
}
fn default_vehicle_detector_size() -> [usize; 2] {
    [960, 544]
}
fn default_detector_size() -> [usize; 2] {
    crate::analytics::plates::DET_SIZE
}
fn default_plates_min_confidence() -> f32 {
    0.5
}
fn default_plates_min_reads() -> u32 {
    2
}
fn default_plates_track_timeout() -> Duration {
    Duration::from_secs(3)
}
fn default_plates_max_track() -> Duration {
    Duration::from_secs(300)
}
fn default_plates_max_jump() -> f32 {
    8.0
}
fn default_plates_motion() -> f32 {
    0.002
}
fn default_plates_threads() -> usize {
    1
}
fn default_plates_queue() -> usize {
    2
}
fn default_snapshot_quality() -> u8 {
    85
}
fn default_max_snapshots() -> usize {
    2000
}
fn default_media_dir() -> PathBuf {
    PathBuf::from("/var/lib/edgecam/media")
}
fn default_upload_concurrency() -> usize {
    2
}
fn default_upload_max_pending() -> usize {
    64
}
fn default_part_size() -> u64 {
    8 * 1024 * 1024
}
fn default_max_request_bytes() -> usize {
    16 * 1024
}
fn default_progress_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_retry_min() -> Duration {
    Duration::from_secs(5)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(300)
}
fn default_max_attempts() -> u32 {
    20
}
fn default_keep_finished() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}
fn default_s3_region() -> String {
    "us-east-1".to_owned()
}
fn default_credentials_source() -> CredentialsSource {
    CredentialsSource::Chain
}
fn default_retention_bytes() -> u64 {
    2 << 30
}
fn default_retention_age() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}
fn default_analytics_fps() -> u32 {
    5
}
fn default_analytics_width() -> u32 {
    1280
}
fn default_analytics_height() -> u32 {
    720
}
fn default_frame_queue() -> usize {
    2
}
fn default_stall_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_true() -> bool {
    true
}
fn default_upload_enabled() -> bool {
    cfg!(feature = "uploads")
}
fn default_remote_max_payload() -> usize {
    64 * 1024
}
fn default_broker_port() -> u16 {
    443
}
fn default_alpn() -> Vec<String> {
    vec!["x-amzn-mqtt-ca".to_owned()]
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/edgecam")
}
fn default_outbox_max_bytes() -> u64 {
    256 * 1024 * 1024
}
fn default_outbox_max_age() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}
fn default_when_full() -> WhenFull {
    WhenFull::DropOldest
}
fn default_synchronous() -> Synchronous {
    Synchronous::Full
}
fn default_outbox_channel() -> usize {
    1024
}
fn default_keepalive() -> Duration {
    Duration::from_secs(60)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(20)
}
fn default_persistent_session() -> bool {
    true
}
fn default_ack_timeout() -> Duration {
    Duration::from_secs(15)
}
fn default_backoff_min() -> Duration {
    Duration::from_secs(1)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(120)
}
fn default_max_message_bytes() -> usize {
    128 * 1024
}
fn default_max_publishes_per_sec() -> u32 {
    100
}
fn default_max_bytes_per_sec() -> u64 {
    512 * 1024
}
fn default_max_inflight() -> u16 {
    100
}
fn default_max_topic_bytes() -> usize {
    256
}
fn default_max_topic_slashes() -> usize {
    7
}
fn default_billing_step_bytes() -> usize {
    5 * 1024
}
fn default_drain_timeout() -> Duration {
    Duration::from_secs(3)
}
fn default_metrics_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_synthetic_rate() -> f64 {
    1.0
}
fn default_synthetic_payload() -> usize {
    64
}
fn default_synthetic_kind() -> String {
    "synthetic".to_owned()
}
fn default_log_level() -> String {
    "info".to_owned()
}
fn default_log_target() -> LogTarget {
    LogTarget::Auto
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
    pub fn reader_backend(&self) -> crate::analytics::plates::Backend {
        match self.backend {
            PlatesBackend::Tract => crate::analytics::plates::Backend::Tract,
            PlatesBackend::Onnxruntime => crate::analytics::plates::Backend::Onnxruntime {
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
    pub fn params(&self) -> crate::analytics::Params {
        crate::analytics::Params {
            threshold: self.threshold,
            learning_rate: self.learning_rate,
            min_area: self.min_area,
            max_step: self.max_step,
            hysteresis: self.hysteresis,
            max_missed: self.max_missed,
        }
    }
}

impl Default for UploadConfig {
    fn default() -> Self {
        Self {
            enabled: default_upload_enabled(),
            media_dir: default_media_dir(),
            concurrency: default_upload_concurrency(),
            max_pending: default_upload_max_pending(),
            max_bytes_per_sec: 0,
            part_size: default_part_size(),
            max_request_bytes: default_max_request_bytes(),
            allow_plain_http: false,
            progress_interval: default_progress_interval(),
            retry_min: default_retry_min(),
            retry_max: default_retry_max(),
            max_attempts: default_max_attempts(),
            keep_finished: default_keep_finished(),
            s3: S3Config::default(),
        }
    }
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            region: default_s3_region(),
            endpoint: String::new(),
            force_path_style: false,
            credentials: default_credentials_source(),
            iot_credentials_endpoint: String::new(),
            role_alias: String::new(),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            state_dir: default_state_dir(),
        }
    }
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            max_bytes: default_outbox_max_bytes(),
            max_age: default_outbox_max_age(),
            when_full: default_when_full(),
            synchronous: default_synchronous(),
            channel_capacity: default_outbox_channel(),
        }
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            keepalive: default_keepalive(),
            connect_timeout: default_connect_timeout(),
            persistent_session: default_persistent_session(),
            ack_timeout: default_ack_timeout(),
            backoff_min: default_backoff_min(),
            backoff_max: default_backoff_max(),
            max_message_bytes: default_max_message_bytes(),
            max_publishes_per_sec: default_max_publishes_per_sec(),
            max_bytes_per_sec: default_max_bytes_per_sec(),
            max_inflight: default_max_inflight(),
            max_topic_bytes: default_max_topic_bytes(),
            max_topic_slashes: default_max_topic_slashes(),
            billing_step_bytes: default_billing_step_bytes(),
            shutdown_drain: default_drain_timeout(),
        }
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            metrics_interval: default_metrics_interval(),
        }
    }
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            rate_per_sec: default_synthetic_rate(),
            payload_bytes: default_synthetic_payload(),
            kind: default_synthetic_kind(),
            count: 0,
        }
    }
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

impl Default for RemoteConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            group: String::new(),
            max_payload_bytes: default_remote_max_payload(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: default_log_level(),
            target: default_log_target(),
        }
    }
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ParseError::Syntax(message) => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            ParseError::Invalid(errors) => ConfigError::Invalid {
                path: path.to_owned(),
                errors,
            },
        })
    }

    /// Parses and validates configuration text.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let config: Config = toml::from_str(text).map_err(|e| ParseError::Syntax(e.to_string()))?;
        config.validate().map_err(ParseError::Invalid)?;
        Ok(config)
    }

    /// Path of the outbox database.
    pub fn outbox_path(&self) -> PathBuf {
        self.storage.state_dir.join("outbox.db")
    }
}

/// Why configuration text was refused.
#[derive(Debug)]
pub enum ParseError {
    /// Not TOML, a wrong type, or an unknown field (the message names it).
    Syntax(String),
    /// Well-formed but out of range.
    Invalid(ValidationErrors),
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::Syntax(m) => f.write_str(m),
            ParseError::Invalid(e) => write!(f, "{e}"),
        }
    }
}
