//! The daemon's configuration checked whole: defaults, the example file, and
//! every field out of range named.

use super::Config;
use crate::config::ParseError;

const MINIMAL: &str = r#"
    [identity]
    camera_id = "cam-1"
    broker_host = "example.com"
    ca_file = "ca.pem"
    cert_file = "cert.pem"
    key_file = "key.pem"
"#;

fn with(extra: &str) -> Result<Config, ParseError> {
    Config::parse(&format!("{MINIMAL}\n{extra}"))
}

fn fields(extra: &str) -> Vec<String> {
    match with(extra) {
        Err(ParseError::Invalid(e)) => e.0.into_iter().map(|e| e.field).collect(),
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
    assert_eq!(example.storage, crate::config::StorageConfig::default());
    assert_eq!(example.outbox, crate::outbox::OutboxConfig::default());
    assert_eq!(example.mqtt, crate::mqtt::MqttConfig::default());
    assert_eq!(example.health, crate::health::HealthConfig::default());
    assert_eq!(
        example.synthetic,
        crate::synthetic::SyntheticConfig::default()
    );
    assert_eq!(example.log, crate::config::LogConfig::default());
    assert_eq!(
        example.remote,
        crate::remote_config::RemoteConfig::default()
    );
    assert_eq!(example.video, crate::video::VideoConfig::default());
    assert_eq!(example.people, crate::analytics::PeopleConfig::default());
    assert_eq!(example.plates, crate::analytics::PlatesConfig::default());
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
    assert!(
        with("[plates]\nenabled = true\nunread_vehicles = true\n[detector]\nenabled = true")
            .is_ok()
    );
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
    let f = fields("[mqtt]\nmax_inflight = 0\nmax_publishes_per_sec = 0\n[outbox]\nmax_bytes = 10");
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
        Err(ParseError::Syntax(m)) => {
            assert!(m.contains("keepalive_secs"), "{m}")
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn camera_id_with_topic_wildcards_is_refused() {
    let text = MINIMAL.replace("cam-1", "cam/+/#");
    match Config::parse(&text) {
        Err(ParseError::Invalid(e)) => {
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
