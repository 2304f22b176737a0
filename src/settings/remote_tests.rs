//! Remote configuration over the daemon's whole configuration: what overlays may
//! set, how they layer, and what a rejected one leaves in effect.

use serde_json::Value;

use super::Config;
use crate::config::remote::{config_hash, Outcome, Persisted, RemoteState, Source};
use crate::config::Layered;
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

fn state() -> RemoteState<Config> {
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
    let mut tunable: Vec<String> = Config::TUNABLE
        .iter()
        .flat_map(|(section, fields)| fields.iter().map(move |f| format!("{section}.{f}")))
        .collect();
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
    let rtsp = br#"{"version":2,"video":{"source":"rtsp://10.0.0.9/stream1","analytics_fps":2}}"#;
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

#[test]
fn a_change_wakes_only_the_stages_whose_section_it_changed() {
    let config = Config::parse(LOCAL).unwrap();
    let live = super::Live::new(&config);
    let (mut whole, outbox, mqtt) = (
        live.whole(),
        live.section(|c| c.outbox.clone()),
        live.section(|c| c.mqtt.clone()),
    );
    // Registered through a clone, as a stage holding one would.
    let mut synthetic = live.clone().section(|c| c.synthetic.clone());
    let mut changed = config.clone();
    changed.synthetic.kind = "other".to_owned();
    live.send(changed.clone());
    assert!(whole.has_changed().unwrap());
    assert!(synthetic.has_changed().unwrap());
    assert_eq!(synthetic.borrow_and_update().kind, "other");
    assert!(
        !outbox.has_changed().unwrap(),
        "the outbox's section is the same"
    );
    assert!(!mqtt.has_changed().unwrap());
    // The same configuration again wakes no section.
    whole.borrow_and_update();
    live.send(changed.clone());
    assert!(!synthetic.has_changed().unwrap());
    changed.outbox.max_bytes *= 2;
    live.send(changed);
    assert!(outbox.has_changed().unwrap());
    assert!(!synthetic.has_changed().unwrap());
}
