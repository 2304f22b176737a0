//! Range and consistency checks that serde cannot express. All problems are
//! collected, each naming its field and what was expected.

use std::fmt;
use std::time::Duration;

use super::Config;
use crate::topics;

/// One invalid value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `mqtt.keepalive`.
    pub field: String,
    /// What was expected, and what was found.
    pub expected: String,
}

/// Every invalid value found in one configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  {}: {}", e.field, e.expected)?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

struct Checker(Vec<FieldError>);

impl Checker {
    fn check(&mut self, ok: bool, field: &str, expected: impl FnOnce() -> String) {
        if !ok {
            self.0.push(FieldError {
                field: field.to_owned(),
                expected: expected(),
            });
        }
    }

    fn range<T: PartialOrd + fmt::Display>(&mut self, field: &str, v: T, min: T, max: T) {
        let ok = v >= min && v <= max;
        self.check(ok, field, || {
            format!("expected a value from {min} to {max}, found {v}")
        });
    }

    fn duration(&mut self, field: &str, v: Duration, min: Duration, max: Duration) {
        let ok = v >= min && v <= max;
        self.check(ok, field, || {
            format!(
                "expected a duration from {} to {}, found {}",
                humantime::format_duration(min),
                humantime::format_duration(max),
                humantime::format_duration(v)
            )
        });
    }
}

/// AWS IoT Core's hard limit on a payload; also the largest batch we build.
const MQTT_MAX_PAYLOAD: usize = 256 * 1024 * 1024 - 1;

/// Checks a section's counting lines; returns their names (zones must differ).
fn check_lines(
    c: &mut Checker,
    section: &str,
    lines: &[crate::analytics::LineConfig],
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
                crate::analytics::InDirection::Up | crate::analytics::InDirection::Down => {
                    dx.abs() < dy.abs() * 0.1
                }
                _ => dy.abs() < dx.abs() * 0.1,
            }
        });
        c.check(!parallel, &field, || {
            "an in_direction across the line, not along it".to_owned()
        });
    }
    names
}

impl Config {
    /// Checks every value; returns all problems at once.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut c = Checker(Vec::new());
        let id = &self.identity;
        c.check(
            topics::valid_camera_id(&id.camera_id),
            "identity.camera_id",
            || {
                format!(
                    "expected 1-128 characters from A-Z a-z 0-9 _ - : . , found {:?}",
                    id.camera_id
                )
            },
        );
        c.check(
            !id.broker_host.trim().is_empty(),
            "identity.broker_host",
            || "expected a host name, found an empty string".to_owned(),
        );
        c.check(id.broker_port != 0, "identity.broker_port", || {
            "expected a port from 1 to 65535, found 0".to_owned()
        });
        // What this build can do: a section that needs a cargo feature the
        // binary was built without is refused, not silently idle.
        for (on, field, feature, what) in [
            (
                self.plates.enabled,
                "plates.enabled",
                cfg!(feature = "analytics"),
                "analytics",
            ),
            (
                self.detector.enabled,
                "detector.enabled",
                cfg!(feature = "analytics"),
                "analytics",
            ),
            (
                self.upload.enabled,
                "upload.enabled",
                cfg!(feature = "uploads"),
                "uploads",
            ),
        ] {
            c.check(!on || feature, field, || {
                format!(
                    "this build has no `{what}` feature (`edgecam --version` lists a build's features): set it to false, or install a build with {what}"
                )
            });
        }
        for (i, p) in id.alpn.iter().enumerate() {
            c.check(
                !p.is_empty() && p.len() < 256,
                &format!("identity.alpn[{i}]"),
                || "expected a protocol name of 1-255 bytes".to_owned(),
            );
        }
        for (field, path) in [
            ("identity.ca_file", &id.ca_file),
            ("identity.cert_file", &id.cert_file),
            ("identity.key_file", &id.key_file),
        ] {
            c.check(!path.as_os_str().is_empty(), field, || {
                "expected a path to a PEM file".to_owned()
            });
        }

        c.check(
            !self.storage.state_dir.as_os_str().is_empty(),
            "storage.state_dir",
            || "expected a directory path".to_owned(),
        );

        let o = &self.outbox;
        c.range("outbox.max_bytes", o.max_bytes, 1 << 20, 1 << 40);
        c.range("outbox.channel_capacity", o.channel_capacity, 1, 1 << 20);

        let m = &self.mqtt;
        c.duration(
            "mqtt.keepalive",
            m.keepalive,
            Duration::from_secs(30),
            Duration::from_secs(1200),
        );
        c.duration(
            "mqtt.connect_timeout",
            m.connect_timeout,
            Duration::from_secs(1),
            Duration::from_secs(300),
        );
        c.duration(
            "mqtt.ack_timeout",
            m.ack_timeout,
            Duration::from_secs(1),
            // At most the keepalive (its lowest valid value when it is itself wrong).
            m.keepalive.max(Duration::from_secs(30)),
        );
        c.duration(
            "mqtt.backoff_min",
            m.backoff_min,
            Duration::from_millis(10),
            Duration::from_secs(3600),
        );
        c.duration(
            "mqtt.backoff_max",
            m.backoff_max,
            m.backoff_min.max(Duration::from_millis(10)),
            Duration::from_secs(24 * 3600),
        );
        c.range(
            "mqtt.max_message_bytes",
            m.max_message_bytes,
            1024,
            MQTT_MAX_PAYLOAD,
        );
        c.range(
            "mqtt.max_publishes_per_sec",
            m.max_publishes_per_sec,
            1,
            100_000,
        );
        c.range(
            "mqtt.max_bytes_per_sec",
            m.max_bytes_per_sec,
            m.max_message_bytes as u64 + 512,
            1 << 40,
        );
        c.range("mqtt.max_inflight", m.max_inflight, 1, 1000);
        c.range("mqtt.max_topic_bytes", m.max_topic_bytes, 16, 65535);
        c.range("mqtt.max_topic_slashes", m.max_topic_slashes, 2, 1000);
        c.range(
            "mqtt.billing_step_bytes",
            m.billing_step_bytes,
            1,
            m.max_message_bytes,
        );
        c.duration(
            "mqtt.shutdown_drain",
            m.shutdown_drain,
            Duration::ZERO,
            Duration::from_secs(60),
        );

        let s = &self.synthetic;
        c.check(
            s.rate_per_sec.is_finite() && s.rate_per_sec > 0.0 && s.rate_per_sec <= 100_000.0,
            "synthetic.rate_per_sec",
            || {
                format!(
                    "expected a rate above 0 and at most 100000, found {}",
                    s.rate_per_sec
                )
            },
        );
        c.range(
            "synthetic.payload_bytes",
            s.payload_bytes,
            0,
            m.max_message_bytes / 2,
        );
        c.check(topics::valid_kind(&s.kind), "synthetic.kind", || {
            format!(
                "expected 1-64 characters from a-z 0-9 _ -, found {:?}",
                s.kind
            )
        });
        if topics::valid_camera_id(&id.camera_id) {
            let longest = topics::Topics::new(&id.camera_id).longest_fixed();
            let ok = topics::check_topic(&longest, m.max_topic_bytes, m.max_topic_slashes);
            c.check(ok.is_ok(), "identity.camera_id", || {
                format!("topics built from this id break the topic limits: {ok:?}")
            });
        }
        let v = &self.video;
        let source = crate::video::Source::parse(&v.source);
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
        let p = &self.people;
        let frac = |v: f32| (0.0..=1.0).contains(&v);
        let mut names = check_lines(&mut c, "people", &p.lines);
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
        let t = &self.traffic;
        check_lines(&mut c, "traffic", &t.lines);
        c.duration(
            "traffic.interval",
            t.interval,
            Duration::from_secs(1),
            Duration::from_secs(24 * 3600),
        );
        c.range("traffic.hysteresis", t.hysteresis, 0.0, 0.2);
        c.check(
            !t.enabled || self.detector.enabled,
            "traffic.enabled",
            || "traffic counting follows the detector's vehicles: turn [detector] on in the camera's local configuration (it is read at start-up)".to_owned(),
        );
        let pl = &self.plates;
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
            pl.backend == super::PlatesBackend::Tract || cfg!(feature = "ort"),
            "plates.backend",
            || {
                "\"tract\": this build has no onnxruntime backend (build with --features ort)"
                    .to_owned()
            },
        );
        for (i, l) in pl.layouts.iter().enumerate() {
            c.check(
                crate::analytics::plates::rules::valid_layout(l),
                &format!("plates.layouts[{i}]"),
                || format!("2 to 10 of L (letter), N (digit), X (either), A-Z, 0-9, with {{a,b}} repeats, found {l:?}"),
            );
        }
        for (i, code) in pl.countries.iter().enumerate() {
            c.check(
                crate::analytics::plates::rules::country(code).is_some(),
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
            !(pl.enabled && pl.unread_vehicles) || self.detector.enabled,
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
        for (field, expected) in self.detector.problems() {
            c.check(false, &field, || expected);
        }
        for (field, expected) in self.homeassistant.problems() {
            c.check(false, &field, || expected);
        }
        let u = &self.upload;
        c.range("upload.concurrency", u.concurrency, 1, 8);
        c.range("upload.max_pending", u.max_pending, 1, 10_000);
        c.range(
            "upload.part_size",
            u.part_size,
            5 * 1024 * 1024,
            512 * 1024 * 1024,
        );
        c.range(
            "upload.max_request_bytes",
            u.max_request_bytes,
            512,
            1 << 20,
        );
        c.duration(
            "upload.progress_interval",
            u.progress_interval,
            Duration::from_millis(100),
            Duration::from_secs(3600),
        );
        c.duration(
            "upload.retry_min",
            u.retry_min,
            Duration::from_millis(100),
            Duration::from_secs(3600),
        );
        c.duration(
            "upload.retry_max",
            u.retry_max,
            u.retry_min,
            Duration::from_secs(24 * 3600),
        );
        c.range("upload.max_attempts", u.max_attempts, 1, 1000);
        c.duration(
            "upload.keep_finished",
            u.keep_finished,
            Duration::from_secs(60),
            Duration::from_secs(365 * 24 * 3600),
        );
        c.check(
            u.s3.endpoint.is_empty()
                || crate::urls::check_url(&u.s3.endpoint, u.allow_plain_http).is_ok(),
            "upload.s3.endpoint",
            || {
                "expected empty (AWS) or https://host[:port] (http:// only with upload.allow_plain_http)"
                    .to_owned()
            },
        );
        c.check(
            u.s3.credentials != super::CredentialsSource::Iot
                || (!u.s3.iot_credentials_endpoint.is_empty()
                    && !u.s3.iot_credentials_endpoint.contains('/')
                    && topics::valid_group(&u.s3.role_alias.replace(['.', '=', ',', '@'], "-"))),
            "upload.s3.credentials",
            || "iot needs upload.s3.iot_credentials_endpoint (a host name) and upload.s3.role_alias".to_owned(),
        );
        let r = &self.remote;
        c.check(
            r.group.is_empty() || topics::valid_group(&r.group),
            "remote.group",
            || {
                format!(
                    "expected 1-64 characters from A-Z a-z 0-9 _ - (or empty), found {:?}",
                    r.group
                )
            },
        );
        c.range(
            "remote.max_payload_bytes",
            r.max_payload_bytes,
            256,
            1 << 20,
        );
        c.check(
            tracing_subscriber::EnvFilter::try_new(&self.log.level).is_ok(),
            "log.level",
            || {
                format!(
                    "expected a tracing filter such as \"info\", found {:?}",
                    self.log.level
                )
            },
        );

        if c.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(c.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [identity]
        camera_id = "cam-1"
        broker_host = "example.com"
        ca_file = "ca.pem"
        cert_file = "cert.pem"
        key_file = "key.pem"
    "#;

    fn with(extra: &str) -> Result<Config, super::super::ParseError> {
        Config::parse(&format!("{MINIMAL}\n{extra}"))
    }

    fn fields(extra: &str) -> Vec<String> {
        match with(extra) {
            Err(super::super::ParseError::Invalid(e)) => e.0.into_iter().map(|e| e.field).collect(),
            other => panic!("expected invalid values, got {other:?}"),
        }
    }

    #[test]
    fn minimal_config_gets_aws_defaults() {
        let c = with("").unwrap();
        assert_eq!(c.identity.broker_port, 443);
        assert_eq!(c.identity.alpn, vec!["x-amzn-mqtt-ca"]);
        assert_eq!(c.mqtt.max_message_bytes, 131072);
        assert_eq!(c.mqtt.max_publishes_per_sec, 100);
        assert_eq!(c.mqtt.max_bytes_per_sec, 524288);
        assert_eq!(c.mqtt.max_inflight, 100);
        assert_eq!(c.mqtt.max_topic_slashes, 7);
    }

    // The example turns uploads on (their default): valid only in a build that has them.
    #[cfg(feature = "uploads")]
    #[test]
    fn example_config_is_valid_and_shows_every_default() {
        let example = Config::parse(include_str!("../../config.example.toml")).unwrap();
        assert_eq!(example.storage, super::super::StorageConfig::default());
        assert_eq!(example.outbox, super::super::OutboxConfig::default());
        assert_eq!(example.mqtt, super::super::MqttConfig::default());
        assert_eq!(example.health, super::super::HealthConfig::default());
        assert_eq!(example.synthetic, super::super::SyntheticConfig::default());
        assert_eq!(example.log, super::super::LogConfig::default());
        assert_eq!(example.remote, super::super::RemoteConfig::default());
        assert_eq!(example.video, super::super::VideoConfig::default());
        assert_eq!(example.people, super::super::PeopleConfig::default());
        assert_eq!(example.plates, super::super::PlatesConfig::default());
        assert_eq!(
            example.homeassistant,
            crate::homeassistant::HomeAssistantConfig::default()
        );
        assert_eq!(example.identity.broker_port, 443);
        assert_eq!(example.identity.alpn, vec!["x-amzn-mqtt-ca"]);
    }

    #[test]
    fn plate_settings_out_of_range_name_their_fields() {
        assert_eq!(
            fields("[plates]\nroi = [0.5, 0.5, 0.8, 0.2]\nlayouts = [\"LL-NN\"]\ncountries = [\"DE\", \"XQ\"]\nthreads = 9\nhash_plates = true\nhash_salt = \"short\""),
            vec![
                "plates.roi",
                "plates.layouts[0]",
                "plates.countries[1]",
                "plates.threads",
                "plates.hash_salt"
            ]
        );
        assert!(with("[plates]\nroi = [0.0, 0.4, 1.0, 0.6]\nhash_plates = true\nhash_salt = \"0123456789abcdef\"").is_ok());
    }

    #[test]
    fn onnxruntime_for_a_build_without_it_names_each_field() {
        let asked = "[plates]\nbackend = \"onnxruntime\"\n[detector]\nbackend = \"onnxruntime\"";
        if cfg!(feature = "ort") {
            assert!(with(asked).is_ok());
        } else {
            assert_eq!(fields(asked), vec!["plates.backend", "detector.backend"]);
        }
    }

    // Plates need the `analytics` feature; without it `plates.enabled` is named too.
    #[cfg(feature = "analytics")]
    #[test]
    fn unread_vehicles_without_the_detector_names_the_field() {
        assert_eq!(
            fields("[plates]\nenabled = true\nunread_vehicles = true"),
            vec!["plates.unread_vehicles"]
        );
        assert!(with(
            "[plates]\nenabled = true\nunread_vehicles = true\n[detector]\nenabled = true"
        )
        .is_ok());
    }

    #[test]
    fn ack_timeout_above_the_keepalive_names_the_field() {
        assert_eq!(
            fields("[mqtt]\nkeepalive = \"30s\"\nack_timeout = \"31s\""),
            vec!["mqtt.ack_timeout"]
        );
        assert!(with("[mqtt]\nkeepalive = \"60s\"\nack_timeout = \"60s\"").is_ok());
        assert_eq!(
            fields("[mqtt]\nack_timeout = \"0s\""),
            vec!["mqtt.ack_timeout"]
        );
    }

    #[test]
    fn keepalive_outside_aws_range_names_the_field() {
        assert_eq!(
            fields("[mqtt]\nkeepalive = \"10s\""),
            vec!["mqtt.keepalive"]
        );
        assert_eq!(
            fields("[mqtt]\nkeepalive = \"21m\""),
            vec!["mqtt.keepalive"]
        );
    }

    #[test]
    fn every_invalid_value_is_reported_at_once() {
        let f =
            fields("[mqtt]\nmax_inflight = 0\nmax_publishes_per_sec = 0\n[outbox]\nmax_bytes = 10");
        assert_eq!(
            f,
            vec![
                "outbox.max_bytes",
                "mqtt.max_publishes_per_sec",
                "mqtt.max_inflight"
            ]
        );
    }

    #[test]
    fn unknown_field_is_refused_with_its_name() {
        match with("[mqtt]\nkeepalive_secs = 30") {
            Err(super::super::ParseError::Syntax(m)) => {
                assert!(m.contains("keepalive_secs"), "{m}")
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn camera_id_with_topic_wildcards_is_refused() {
        let text = MINIMAL.replace("cam-1", "cam/+/#");
        match Config::parse(&text) {
            Err(super::super::ParseError::Invalid(e)) => {
                assert_eq!(e.0[0].field, "identity.camera_id")
            }
            other => panic!("expected invalid camera id, got {other:?}"),
        }
    }

    #[test]
    fn bad_synthetic_kind_and_rate_are_refused() {
        let f = fields("[synthetic]\nkind = \"A/B\"\nrate_per_sec = -1.0");
        assert_eq!(f, vec!["synthetic.rate_per_sec", "synthetic.kind"]);
    }
}
