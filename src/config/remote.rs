//! Remote configuration: parsing an overlay, merging it over the local
//! configuration, and deciding what a message on a configuration topic does, all
//! without I/O; and the overlays kept on disk (`load_effective`, at start). The
//! stage that takes the messages is `crate::remote_config`.
//!
//! Precedence: built-in defaults < local file < group (`fleet/<group>/config`) <
//! device (`<camera-id>/config`). An overlay is a JSON object with a `version` and
//! sections of tunables (`docs/remote-config.md`); only the fields in [`TUNABLE`]
//! may appear. Everything is validated (types, ranges, unknown keys) before anything
//! is applied.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::validate::FieldError;
use super::Config;

/// Fields an overlay may set. Identity (who the camera is, which broker and which
/// certificates it trusts) and storage are absent on purpose: a wrong value there
/// would cut the camera off from the very channel that could correct it.
pub const TUNABLE: &[&str] = &[
    "outbox.max_bytes",
    "outbox.max_age",
    "outbox.when_full",
    "outbox.synchronous",
    "mqtt.max_message_bytes",
    "mqtt.max_publishes_per_sec",
    "mqtt.max_bytes_per_sec",
    "mqtt.billing_step_bytes",
    "mqtt.ack_timeout",
    "mqtt.backoff_min",
    "mqtt.backoff_max",
    "mqtt.shutdown_drain",
    "health.metrics_interval",
    "synthetic.enabled",
    "synthetic.rate_per_sec",
    "synthetic.payload_bytes",
    "synthetic.kind",
    "synthetic.count",
    "log.level",
    "people.enabled",
    "people.lines",
    "people.zones",
    "people.interval",
    "people.crossing_events",
    "people.threshold",
    "people.learning_rate",
    "people.min_area",
    "people.max_step",
    "people.hysteresis",
    "people.max_missed",
    "traffic.enabled",
    "traffic.lines",
    "traffic.interval",
    "traffic.crossing_events",
    "traffic.hysteresis",
    "upload.concurrency",
    "upload.max_pending",
    "upload.max_bytes_per_sec",
    "upload.part_size",
    "upload.progress_interval",
    "upload.retry_min",
    "upload.retry_max",
    "upload.max_attempts",
    "upload.keep_finished",
    "plates.recognisers",
    "plates.zoom",
    "plates.region",
    "plates.countries",
    "plates.layouts",
    "plates.detector_size",
    "plates.vehicle_detector_size",
    "plates.roi",
    "plates.min_confidence",
    "plates.min_reads",
    "plates.unread_vehicles",
    "plates.track_timeout",
    "plates.max_track",
    "plates.max_jump",
    "plates.motion",
    "plates.threads",
    "plates.snapshots",
    "plates.snapshot_quality",
    "plates.max_snapshots",
    "plates.hash_plates",
    "plates.hash_salt",
    "video.source",
    "video.rtsp_transport",
    "video.codec",
    "video.segment_duration",
    "video.retention_max_bytes",
    "video.retention_max_age",
    "video.analytics_fps",
    "video.stall_timeout",
    "detector.input_size",
    "detector.classes",
    "detector.min_scores",
    "detector.start_score",
    "detector.vehicle_start_score",
    "detector.keep_score",
    "detector.match_iou",
    "detector.confirm_hits",
    "detector.max_lost",
    "detector.refind",
    "homeassistant.enabled",
    "homeassistant.prefix",
    "homeassistant.name",
];

/// The fastest synthetic source remote configuration may switch on or set.
pub const REMOTE_SYNTHETIC_MAX_RATE: f64 = 10.0;

/// Where an overlay came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Group,
    Device,
}

/// A parsed, shape-checked overlay.
#[derive(Debug, Clone, PartialEq)]
pub struct Overlay {
    pub version: u64,
    /// The whole payload as received (version included), for persistence.
    pub raw: Map<String, Value>,
}

fn error(field: &str, expected: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_owned(),
        expected: expected.into(),
    }
}

/// Parses an overlay and checks its shape: a JSON object with an unsigned `version`
/// and objects of tunable fields. Returns every problem found.
pub fn parse_overlay(payload: &[u8], max_bytes: usize) -> Result<Overlay, Vec<FieldError>> {
    if payload.len() > max_bytes {
        return Err(vec![error(
            "",
            format!(
                "a payload of at most {max_bytes} bytes (remote.max_payload_bytes), found {}",
                payload.len()
            ),
        )]);
    }
    let value: Value = serde_json::from_slice(payload)
        .map_err(|e| vec![error("", format!("valid JSON, found an error: {e}"))])?;
    let Value::Object(raw) = value else {
        return Err(vec![error("", "a JSON object")]);
    };
    let mut errors = Vec::new();
    let version = match raw.get("version") {
        Some(v) => v.as_u64(),
        None => None,
    };
    if version.is_none() {
        errors.push(error("version", "an unsigned integer"));
    }
    for (section, fields) in &raw {
        if section == "version" {
            continue;
        }
        let Value::Object(fields) = fields else {
            errors.push(error(section, "an object of settings"));
            continue;
        };
        if !TUNABLE.iter().any(|t| t.split('.').next() == Some(section)) {
            errors.push(error(
                section,
                "a remotely tunable section (see TUNABLE in the docs)",
            ));
            continue;
        }
        for key in fields.keys() {
            let path = format!("{section}.{key}");
            if !TUNABLE.contains(&path.as_str()) {
                errors.push(error(&path, "a remotely tunable field"));
            }
        }
    }
    match version {
        Some(version) if errors.is_empty() => Ok(Overlay { version, raw }),
        _ => Err(errors),
    }
}

/// The version an invalid payload claimed, if it can be read at all.
pub fn claimed_version(payload: &[u8]) -> Option<u64> {
    serde_json::from_slice::<Value>(payload)
        .ok()?
        .get("version")?
        .as_u64()
}

/// Merges overlays (lowest precedence first) over the local configuration and
/// validates the result.
pub fn merge(local: &Config, overlays: &[&Overlay]) -> Result<Config, Vec<FieldError>> {
    let mut merged = serde_json::to_value(local).expect("a configuration serializes");
    for overlay in overlays {
        for (section, fields) in &overlay.raw {
            let (Value::Object(fields), Some(Value::Object(target))) =
                (fields, merged.get_mut(section))
            else {
                continue;
            };
            for (key, value) in fields {
                target.insert(key.clone(), value.clone());
            }
        }
    }
    let config: Config = serde_path_to_error::deserialize(merged)
        .map_err(|e| vec![error(&e.path().to_string(), e.inner().to_string())])?;
    config.validate().map_err(|e| e.0)?;
    Ok(config)
}

/// SHA-256 of the configuration's JSON, hex: tells the cloud which settings run.
pub fn config_hash(config: &Config) -> String {
    let json = serde_json::to_vec(config).expect("a configuration serializes");
    hex::encode(Sha256::digest(json))
}

/// What a message on a configuration topic did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A new overlay is in effect.
    Applied,
    /// The overlay was deleted (empty retained payload): back to what lies under it.
    Reverted,
    /// The same version again (a retained message re-delivered): nothing to do.
    Unchanged,
    /// Refused; what was in effect stays in effect.
    Rejected {
        version: Option<u64>,
        errors: Vec<FieldError>,
    },
}

/// The overlays applied last, as persisted across restarts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Persisted {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Map<String, Value>>,
}

/// The remote-configuration state machine.
#[derive(Debug, Clone)]
pub struct RemoteState {
    local: Config,
    group: Option<Overlay>,
    device: Option<Overlay>,
    effective: Config,
}

impl RemoteState {
    /// Starts from the local configuration and the overlays persisted last time.
    /// Overlays that no longer fit (the local file changed) are dropped, with the
    /// reason returned for the log.
    pub fn new(local: Config, persisted: &Persisted) -> (Self, Vec<String>) {
        let mut warnings = Vec::new();
        let mut load = |source: &str, raw: &Option<Map<String, Value>>| {
            let bytes = serde_json::to_vec(raw.as_ref()?).ok()?;
            // It was within the size limit when it arrived.
            match parse_overlay(&bytes, usize::MAX) {
                Ok(o) => Some(o),
                Err(e) => {
                    warnings.push(format!("persisted {source} configuration dropped: {e:?}"));
                    None
                }
            }
        };
        let group = load("group", &persisted.group);
        let device = load("device", &persisted.device);
        let mut state = Self {
            effective: local.clone(),
            local,
            group,
            device,
        };
        if let Err(e) = state.recompute() {
            warnings.push(format!(
                "persisted remote configuration no longer valid over the local file, dropped: {e:?}"
            ));
            state.group = None;
            state.device = None;
            state.effective = state.local.clone();
        }
        (state, warnings)
    }

    fn layers(&self) -> Vec<&Overlay> {
        self.group.iter().chain(self.device.iter()).collect()
    }

    fn recompute(&mut self) -> Result<(), Vec<FieldError>> {
        let effective = merge(&self.local, &self.layers())?;
        // One fleet message must not be able to flood the outbox (and, with
        // `drop_oldest`, evict every real event): switched on or sped up from the
        // cloud, the synthetic source is held to a trickle.
        let remote_sets = |key: &str| {
            self.layers()
                .iter()
                .any(|o| o.raw.get("synthetic").and_then(|s| s.get(key)).is_some())
        };
        // A camera's own devices and files are the local file's to name: from
        // the cloud, only a network stream.
        for overlay in self.layers() {
            if let Some(source) = overlay.raw.get("video").and_then(|v| v.get("source")) {
                let url = source.as_str().unwrap_or_default().to_ascii_lowercase();
                if !(url.starts_with("rtsp://") || url.starts_with("rtsps://")) {
                    return Err(vec![error(
                        "video.source",
                        format!("an rtsp:// or rtsps:// URL when set remotely (a device, a file or the test pattern is named in the local file), found {source}"),
                    )]);
                }
            }
        }
        let s = &effective.synthetic;
        if s.enabled
            && s.rate_per_sec > REMOTE_SYNTHETIC_MAX_RATE
            && (remote_sets("enabled") || remote_sets("rate_per_sec"))
        {
            return Err(vec![error(
                "synthetic.rate_per_sec",
                format!(
                    "at most {REMOTE_SYNTHETIC_MAX_RATE} per second when remote configuration switches the synthetic source on or sets its rate (the local file may set more), found {}",
                    s.rate_per_sec
                ),
            )]);
        }
        self.effective = effective;
        Ok(())
    }

    fn slot(&mut self, source: Source) -> &mut Option<Overlay> {
        match source {
            Source::Group => &mut self.group,
            Source::Device => &mut self.device,
        }
    }

    /// Handles one message on the configuration topic of `source`.
    pub fn on_message(&mut self, source: Source, payload: &[u8], max_bytes: usize) -> Outcome {
        if payload.is_empty() {
            if self.slot(source).take().is_none() {
                return Outcome::Unchanged;
            }
            if self.recompute().is_err() {
                // What lay under it no longer validates on its own: fall back to the file.
                self.group = None;
                self.device = None;
                self.effective = self.local.clone();
            }
            return Outcome::Reverted;
        }
        let overlay = match parse_overlay(payload, max_bytes) {
            Ok(o) => o,
            Err(errors) => {
                return Outcome::Rejected {
                    version: claimed_version(payload),
                    errors,
                }
            }
        };
        if let Some(current) = self.slot(source).as_ref() {
            if overlay.version < current.version {
                return Outcome::Rejected {
                    version: Some(overlay.version),
                    errors: vec![error(
                        "version",
                        format!(
                            "a version newer than the applied {}, found {}",
                            current.version, overlay.version
                        ),
                    )],
                };
            }
            if overlay.version == current.version {
                if overlay.raw == current.raw {
                    return Outcome::Unchanged;
                }
                return Outcome::Rejected {
                    version: Some(overlay.version),
                    errors: vec![error(
                        "version",
                        format!(
                            "a new version number for new settings; {} is applied with other settings",
                            overlay.version
                        ),
                    )],
                };
            }
        }
        let previous = self.slot(source).replace(overlay.clone());
        match self.recompute() {
            Ok(()) => Outcome::Applied,
            Err(errors) => {
                *self.slot(source) = previous;
                // The previous layers validated before; restore the effective config.
                self.recompute()
                    .expect("the previous configuration still validates");
                Outcome::Rejected {
                    version: Some(overlay.version),
                    errors,
                }
            }
        }
    }

    pub fn effective(&self) -> &Config {
        &self.effective
    }

    pub fn version(&self, source: Source) -> Option<u64> {
        match source {
            Source::Group => self.group.as_ref().map(|o| o.version),
            Source::Device => self.device.as_ref().map(|o| o.version),
        }
    }

    pub fn persisted(&self) -> Persisted {
        Persisted {
            group: self.group.as_ref().map(|o| o.raw.clone()),
            device: self.device.as_ref().map(|o| o.raw.clone()),
        }
    }

    /// The retained payload of `<camera-id>/config/status` after `outcome`.
    pub fn status(&self, source: Source, outcome: &Outcome, ts_ms: i64) -> Value {
        let mut status = serde_json::json!({
            "camera_id": self.effective.identity.camera_id,
            "state": match outcome {
                Outcome::Applied => "applied",
                Outcome::Reverted => "reverted",
                Outcome::Unchanged => "unchanged",
                Outcome::Rejected { .. } => "rejected",
            },
            "source": source,
            "version": self.version(Source::Device),
            "group_version": self.version(Source::Group),
            "hash": config_hash(&self.effective),
            "ts": ts_ms,
        });
        if let Outcome::Rejected { version, errors } = outcome {
            status["rejected_version"] = serde_json::json!(version);
            status["errors"] = errors
                .iter()
                .map(|e| serde_json::json!({"field": e.field, "error": e.expected}))
                .collect();
        }
        status
    }

    /// Every effective setting with where it came from: `device`, `group`, `local`
    /// (set in the file) or `default`.
    pub fn provenance(&self, local_toml: &toml::Table) -> Vec<(String, Value, &'static str)> {
        let effective = serde_json::to_value(&self.effective).expect("a configuration serializes");
        let mut out = Vec::new();
        let Value::Object(sections) = effective else {
            return out;
        };
        let in_overlay = |o: &Option<Overlay>, s: &str, k: &str| {
            o.as_ref()
                .and_then(|o| o.raw.get(s))
                .and_then(|f| f.get(k))
                .is_some()
        };
        for (section, fields) in sections {
            let Value::Object(fields) = fields else {
                continue;
            };
            for (key, value) in fields {
                let source = if in_overlay(&self.device, &section, &key) {
                    "device"
                } else if in_overlay(&self.group, &section, &key) {
                    "group"
                } else if local_toml.get(&section).and_then(|s| s.get(&key)).is_some() {
                    "local"
                } else {
                    "default"
                };
                out.push((format!("{section}.{key}"), value, source));
            }
        }
        out
    }
}

// Kept on disk: `<state_dir>/remote-config.json` holds the overlays applied last
// (`{"group": {...}, "device": {...}}`, each the payload as received), written to a
// temp file, fsynced and renamed, so a crash leaves the old or the new file. At
// start they are merged over the local file again, so a camera rebooting without
// connectivity runs the configuration it had; an unreadable file is ignored (and
// logged): the camera then starts from its local file.

/// Where the applied overlays are kept.
pub fn persisted_path(state_dir: &Path) -> PathBuf {
    state_dir.join("remote-config.json")
}

/// Reads the persisted overlays; a missing or unreadable file means none.
pub fn load_persisted(path: &Path) -> Persisted {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::error!(path = %path.display(), error = %e, "persisted remote configuration is unreadable; starting from the local file");
            Persisted::default()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Persisted::default(),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot read the persisted remote configuration; starting from the local file");
            Persisted::default()
        }
    }
}

pub fn save_persisted(path: &Path, persisted: &Persisted) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(persisted).expect("overlays serialize");
    crate::fsutil::write_atomically(path, &bytes, true)
}

/// The local configuration with the persisted overlays over it.
pub fn load_effective(local: Config) -> RemoteState {
    let path = persisted_path(&local.storage.state_dir);
    let (state, warnings) = RemoteState::new(local, &load_persisted(&path));
    for w in warnings {
        tracing::warn!(path = %path.display(), "{w}");
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    const LOCAL: &str = r#"
        [identity]
        camera_id = "cam-1"
        broker_host = "example.com"
        ca_file = "ca.pem"
        cert_file = "cert.pem"
        key_file = "key.pem"
        [synthetic]
        rate_per_sec = 2.0
    "#;

    fn state() -> RemoteState {
        RemoteState::new(Config::parse(LOCAL).unwrap(), &Persisted::default()).0
    }

    const MAX: usize = 64 * 1024;

    #[test]
    fn the_synthetic_source_switched_on_remotely_is_held_to_a_trickle() {
        let mut s = state();
        let flood = br#"{"version":1,"synthetic":{"enabled":true,"rate_per_sec":100000.0}}"#;
        match s.on_message(Source::Group, flood, MAX) {
            Outcome::Rejected { errors, .. } => {
                assert_eq!(errors[0].field, "synthetic.rate_per_sec");
                assert!(
                    errors[0].expected.starts_with("at most 10 per second"),
                    "{errors:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(!s.effective().synthetic.enabled, "nothing changed");
        let trickle = br#"{"version":2,"synthetic":{"enabled":true,"rate_per_sec":5.0}}"#;
        assert_eq!(s.on_message(Source::Group, trickle, MAX), Outcome::Applied);
        // A fast source of the local file may still be renamed remotely.
        let local = LOCAL.replace("rate_per_sec = 2.0", "rate_per_sec = 500.0\nenabled = true");
        let mut fast = RemoteState::new(Config::parse(&local).unwrap(), &Persisted::default()).0;
        let kind = br#"{"version":1,"synthetic":{"kind":"soak"}}"#;
        assert_eq!(fast.on_message(Source::Device, kind, MAX), Outcome::Applied);
    }

    #[test]
    fn the_published_schema_lists_exactly_the_tunable_fields() {
        let schema: Value =
            serde_json::from_str(include_str!("../../docs/schemas/remote-config.json")).unwrap();
        let mut in_schema: Vec<String> = Vec::new();
        for (section, s) in schema["properties"].as_object().unwrap() {
            for field in s["properties"]
                .as_object()
                .into_iter()
                .flat_map(|m| m.keys())
            {
                in_schema.push(format!("{section}.{field}"));
            }
        }
        in_schema.sort();
        let mut tunable: Vec<String> = TUNABLE.iter().map(|t| t.to_string()).collect();
        tunable.sort();
        assert_eq!(in_schema, tunable);
    }

    #[test]
    fn from_the_cloud_the_video_source_is_only_a_network_stream() {
        let mut s = state();
        for source in ["file:///etc/shadow", "v4l2:///dev/video0", "test"] {
            let payload = format!(r#"{{"version":1,"video":{{"source":"{source}"}}}}"#);
            match s.on_message(Source::Device, payload.as_bytes(), MAX) {
                Outcome::Rejected { errors, .. } => {
                    assert_eq!(errors[0].field, "video.source", "{errors:?}")
                }
                other => panic!("{source}: {other:?}"),
            }
        }
        let rtsp =
            br#"{"version":2,"video":{"source":"rtsp://10.0.0.9/stream1","analytics_fps":2}}"#;
        assert_eq!(s.on_message(Source::Device, rtsp, MAX), Outcome::Applied);
        assert_eq!(s.effective().video.source, "rtsp://10.0.0.9/stream1");
        assert_eq!(s.effective().video.analytics_fps, 2);
    }

    #[test]
    fn plate_and_detector_settings_are_checked_as_the_local_file_is() {
        let mut s = state();
        let bad = br#"{"version":1,"plates":{"region":"eu","hash_plates":true,"hash_salt":"short"},"detector":{"classes":["person","lorry"]}}"#;
        match s.on_message(Source::Device, bad, MAX) {
            Outcome::Rejected { errors, .. } => {
                let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
                assert!(fields.contains(&"plates.hash_salt"), "{errors:?}");
                assert!(
                    fields.iter().any(|f| f.starts_with("detector.classes")),
                    "{errors:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        let not_here = br#"{"version":2,"plates":{"models_dir":"/tmp"}}"#;
        match s.on_message(Source::Device, not_here, MAX) {
            Outcome::Rejected { errors, .. } => assert_eq!(errors[0].field, "plates.models_dir"),
            other => panic!("{other:?}"),
        }
        let good = br#"{"version":3,"plates":{"region":"br","min_reads":3},"detector":{"classes":["person","car"]}}"#;
        assert_eq!(s.on_message(Source::Device, good, MAX), Outcome::Applied);
        assert_eq!(s.effective().plates.min_reads, 3);
        assert_eq!(s.effective().detector.classes, ["person", "car"]);
    }

    #[test]
    fn the_tracker_settings_are_tunable_and_checked_together() {
        let mut s = state();
        // keep_score above a start score cannot continue what it started.
        let bad = br#"{"version":1,"detector":{"keep_score":0.6,"max_lost":"2min"}}"#;
        match s.on_message(Source::Device, bad, MAX) {
            Outcome::Rejected { errors, .. } => {
                let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
                assert_eq!(
                    fields,
                    ["detector.keep_score", "detector.max_lost"],
                    "{errors:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        let good = br#"{"version":2,"detector":{"start_score":0.6,"keep_score":0.25,"confirm_hits":3,"max_lost":"3s","refind":1.0,"match_iou":0.4,"vehicle_start_score":0.35}}"#;
        assert_eq!(s.on_message(Source::Device, good, MAX), Outcome::Applied);
        let d = &s.effective().detector;
        assert_eq!(d.tracking().confirm_hits, 3);
        assert_eq!(d.tracking().max_lost, 3.0);
        assert_eq!((d.tracking().high, d.vehicle_tracking().high), (0.6, 0.35));
        // Where it runs stays local.
        let local_only = br#"{"version":3,"detector":{"backend":"onnxruntime"}}"#;
        match s.on_message(Source::Device, local_only, MAX) {
            Outcome::Rejected { errors, .. } => assert_eq!(errors[0].field, "detector.backend"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn device_overrides_group_overrides_local() {
        let mut s = state();
        let group = br#"{"version":1,"synthetic":{"rate_per_sec":5.0,"kind":"fleet"},"health":{"metrics_interval":"30s"}}"#;
        assert_eq!(s.on_message(Source::Group, group, MAX), Outcome::Applied);
        let device = br#"{"version":1,"synthetic":{"kind":"mine"}}"#;
        assert_eq!(s.on_message(Source::Device, device, MAX), Outcome::Applied);
        let e = s.effective();
        assert_eq!(e.synthetic.kind, "mine");
        assert_eq!(e.synthetic.rate_per_sec, 5.0);
        assert_eq!(
            e.health.metrics_interval,
            std::time::Duration::from_secs(30)
        );
        assert_eq!(e.identity.camera_id, "cam-1");
    }

    #[test]
    fn invalid_overlays_are_rejected_with_field_paths_and_change_nothing() {
        let mut s = state();
        assert_eq!(
            s.on_message(
                Source::Device,
                br#"{"version":3,"synthetic":{"kind":"ok"}}"#,
                MAX
            ),
            Outcome::Applied
        );
        let before = s.effective().clone();
        let cases: &[(&[u8], &str)] = &[
            (b"{not json", ""),
            (br#"[1,2]"#, ""),
            (br#"{"synthetic":{"kind":"x"}}"#, "version"),
            (
                br#"{"version":4,"mqtt":{"max_publishes_per_sec":"fast"}}"#,
                "mqtt.max_publishes_per_sec",
            ),
            (
                br#"{"version":4,"mqtt":{"max_publishes_per_sec":0}}"#,
                "mqtt.max_publishes_per_sec",
            ),
            (
                br#"{"version":4,"mqtt":{"keepalive":"60s"}}"#,
                "mqtt.keepalive",
            ),
            (
                br#"{"version":4,"identity":{"broker_host":"evil.example"}}"#,
                "identity",
            ),
            (
                br#"{"version":4,"synthetic":{"colour":"red"}}"#,
                "synthetic.colour",
            ),
            (br#"{"version":2,"synthetic":{"kind":"older"}}"#, "version"),
            (
                br#"{"version":3,"synthetic":{"kind":"same-version"}}"#,
                "version",
            ),
        ];
        for (payload, field) in cases {
            match s.on_message(Source::Device, payload, MAX) {
                Outcome::Rejected { errors, .. } => assert!(
                    errors.iter().any(|e| e.field == *field),
                    "{}: {errors:?}",
                    String::from_utf8_lossy(payload)
                ),
                other => panic!(
                    "{} was not rejected: {other:?}",
                    String::from_utf8_lossy(payload)
                ),
            }
            assert_eq!(s.effective(), &before);
            assert_eq!(s.version(Source::Device), Some(3));
        }
        let big = format!(
            r#"{{"version":9,"synthetic":{{"kind":"{}"}}}}"#,
            "x".repeat(MAX)
        );
        assert!(matches!(
            s.on_message(Source::Device, big.as_bytes(), MAX),
            Outcome::Rejected {
                version: Some(9),
                ..
            }
        ));
    }

    #[test]
    fn every_unknown_key_is_reported_at_once() {
        let mut s = state();
        let Outcome::Rejected { errors, .. } = s.on_message(
            Source::Device,
            br#"{"version":1,"synthetic":{"a":1,"b":2},"storage":{"state_dir":"/"}}"#,
            MAX,
        ) else {
            panic!("not rejected")
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["storage", "synthetic.a", "synthetic.b"]);
    }

    #[test]
    fn redelivered_version_is_unchanged_and_empty_payload_reverts() {
        let mut s = state();
        let p = br#"{"version":1,"synthetic":{"kind":"remote"}}"#;
        assert_eq!(s.on_message(Source::Device, p, MAX), Outcome::Applied);
        assert_eq!(s.on_message(Source::Device, p, MAX), Outcome::Unchanged);
        assert_eq!(s.on_message(Source::Device, b"", MAX), Outcome::Reverted);
        assert_eq!(s.effective().synthetic.kind, "synthetic");
        assert_eq!(s.version(Source::Device), None);
        assert_eq!(s.on_message(Source::Device, b"", MAX), Outcome::Unchanged);
    }

    #[test]
    fn persisted_overlays_restore_the_effective_config() {
        let mut s = state();
        s.on_message(
            Source::Device,
            br#"{"version":5,"log":{"level":"debug"}}"#,
            MAX,
        );
        let saved: Persisted =
            serde_json::from_str(&serde_json::to_string(&s.persisted()).unwrap()).unwrap();
        let (restored, warnings) = RemoteState::new(Config::parse(LOCAL).unwrap(), &saved);
        assert!(warnings.is_empty());
        assert_eq!(restored.effective(), s.effective());
        assert_eq!(restored.version(Source::Device), Some(5));
        assert_eq!(
            config_hash(restored.effective()),
            config_hash(s.effective())
        );
    }

    #[test]
    fn status_names_the_rejected_version_errors_and_the_version_in_effect() {
        let mut s = state();
        s.on_message(
            Source::Device,
            br#"{"version":1,"synthetic":{"kind":"a"}}"#,
            MAX,
        );
        let outcome = s.on_message(
            Source::Device,
            br#"{"version":2,"mqtt":{"max_inflight":5}}"#,
            MAX,
        );
        let status = s.status(Source::Device, &outcome, 0);
        assert_eq!(status["state"], "rejected");
        assert_eq!(status["rejected_version"], 2);
        assert_eq!(status["version"], 1);
        assert_eq!(status["errors"][0]["field"], "mqtt.max_inflight");
        assert_eq!(status["hash"].as_str().unwrap().len(), 64);
    }

    #[test]
    fn provenance_tells_default_local_group_and_device_apart() {
        let mut s = state();
        s.on_message(
            Source::Group,
            br#"{"version":1,"log":{"level":"warn"}}"#,
            MAX,
        );
        s.on_message(
            Source::Device,
            br#"{"version":1,"synthetic":{"kind":"d"}}"#,
            MAX,
        );
        let toml: toml::Table = toml::from_str(LOCAL).unwrap();
        let p = s.provenance(&toml);
        let source = |path: &str| p.iter().find(|(k, _, _)| k == path).unwrap().2;
        assert_eq!(source("synthetic.kind"), "device");
        assert_eq!(source("log.level"), "group");
        assert_eq!(source("synthetic.rate_per_sec"), "local");
        assert_eq!(source("mqtt.keepalive"), "default");
    }

    fn random_json(rng: &mut impl Rng, depth: u32) -> Value {
        let keys = [
            "version",
            "synthetic",
            "mqtt",
            "log",
            "kind",
            "level",
            "rate_per_sec",
            "x",
            "",
        ];
        match rng.random_range(0..if depth == 0 { 5 } else { 7 }) {
            0 => Value::Null,
            1 => Value::Bool(rng.random()),
            2 => serde_json::json!(rng.random::<i64>() >> rng.random_range(0..64)),
            3 => serde_json::json!(rng.random::<f64>() * 1e6 - 5e5),
            4 => Value::String(
                (0..rng.random_range(0..8))
                    .map(|_| rng.random::<char>())
                    .collect(),
            ),
            5 => Value::Array(
                (0..rng.random_range(0..4))
                    .map(|_| random_json(rng, depth - 1))
                    .collect(),
            ),
            _ => Value::Object(
                (0..rng.random_range(0..5))
                    .map(|_| {
                        let k = keys[rng.random_range(0..keys.len())].to_owned();
                        (k, random_json(rng, depth - 1))
                    })
                    .collect(),
            ),
        }
    }

    /// Property: no input makes the parser or the merger panic, and whatever is
    /// applied validates.
    #[test]
    fn no_input_panics_the_parser_or_merger() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xed9eca);
        let mut s = state();
        let (mut applied, mut rejected) = (0, 0);
        for i in 0..20_000 {
            let samples: &[(&str, Value)] = &[
                ("synthetic.kind", serde_json::json!("k")),
                ("synthetic.rate_per_sec", serde_json::json!(3.5)),
                ("synthetic.enabled", serde_json::json!(true)),
                ("log.level", serde_json::json!("debug")),
                ("health.metrics_interval", serde_json::json!("15s")),
                ("mqtt.max_publishes_per_sec", serde_json::json!(50)),
                ("outbox.when_full", serde_json::json!("refuse_newest")),
            ];
            let payload = match i % 3 {
                0 => (0..rng.random_range(0..64))
                    .map(|_| rng.random::<u8>())
                    .collect::<Vec<u8>>(),
                1 => {
                    // Plausible: a valid field, sometimes with a random value.
                    let (path, sample) = &samples[rng.random_range(0..samples.len())];
                    let (section, field) = path.split_once('.').unwrap();
                    let value = if rng.random_bool(0.8) {
                        sample.clone()
                    } else {
                        random_json(&mut rng, 1)
                    };
                    serde_json::to_vec(&serde_json::json!({
                        "version": rng.random_range(0..200u64),
                        section: { field: value },
                    }))
                    .unwrap()
                }
                _ => serde_json::to_vec(&random_json(&mut rng, 4)).unwrap(),
            };
            let source = if rng.random_bool(0.5) {
                Source::Device
            } else {
                Source::Group
            };
            match s.on_message(source, &payload, MAX) {
                Outcome::Applied => applied += 1,
                Outcome::Rejected { .. } => rejected += 1,
                _ => {}
            }
            assert!(s.effective().validate().is_ok());
        }
        // The generator reaches both branches often enough to mean something.
        assert!(
            applied > 100 && rejected > 5_000,
            "applied {applied}, rejected {rejected}"
        );
    }
}
