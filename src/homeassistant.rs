//! Home Assistant MQTT discovery (off by default; `[homeassistant]`).
//!
//! Retained messages on `<prefix>/<component>/<node>/<object>/config` describe the
//! camera as a Home Assistant device: its connectivity (from the retained
//! `<camera-id>/status`, which is also every entity's availability), the last
//! plate, people and vehicle counts per line, the outbox's depth and the latest
//! uploaded snapshot. The entities read the camera's own topics; nothing extra is
//! published for them. Meant for a local broker (8883, no ALPN); AWS IoT Core has
//! no Home Assistant on the other side.
//!
//! What is published follows the configuration: a change that adds, renames or
//! removes an entity (a counting line, `enabled`, `prefix`) publishes the new
//! messages and an empty retained message on every topic no longer wanted, which
//! removes the entity. So that this also holds across restarts, the topics last
//! published are kept in `<state_dir>/homeassistant.json` (a JSON list, replaced
//! atomically; a missing or unreadable file means none). When Home Assistant
//! announces itself (`online` on `<prefix>/status`, subscribed to when the feature
//! is on at start-up), the messages are published again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::mqtt::{ControlPublish, InboundMessage};
use crate::settings::Config;

/// The fields of `[homeassistant]` remote configuration may set, applied live.
pub const TUNABLE: &[&str] = &["enabled", "prefix", "name"];

/// Home Assistant MQTT discovery. Remotely tunable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeAssistantConfig {
    /// Publish Home Assistant discovery messages (retained) for this camera.
    /// Switched off, the camera removes the ones it published.
    #[serde(default)]
    pub enabled: bool,
    /// Home Assistant's discovery prefix: 1-64 characters from A-Z a-z 0-9 _ - /,
    /// no leading or trailing `/`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// The device's name in Home Assistant (at most 64 characters); empty: the
    /// camera id.
    #[serde(default)]
    pub name: String,
}

fn default_prefix() -> String {
    "homeassistant".into()
}

impl Default for HomeAssistantConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            prefix: default_prefix(),
            name: String::new(),
        }
    }
}

impl HomeAssistantConfig {
    /// Every invalid value: `(field, what was expected)`.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let p = &self.prefix;
        let ok = (1..=64).contains(&p.len())
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-/".contains(&b))
            && !p.starts_with('/')
            && !p.ends_with('/')
            && !p.contains("//");
        if !ok {
            out.push((
                "homeassistant.prefix".into(),
                format!("1-64 characters from A-Z a-z 0-9 _ - / without a leading, trailing or double /, found {p:?}"),
            ));
        }
        if self.name.chars().count() > 64 {
            out.push(("homeassistant.name".into(), "at most 64 characters".into()));
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HomeAssistantError {
    #[error("the MQTT publisher has stopped")]
    PublisherGone,
    #[error("cannot save {path}: {source}")]
    Save {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the record task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// `<prefix>/status`, where Home Assistant announces itself, when the feature is on.
pub fn birth_topic(config: &Config) -> Option<String> {
    let ha = &config.homeassistant;
    ha.enabled.then(|| format!("{}/status", ha.prefix))
}

/// A topic level and unique-id part: A-Z a-z 0-9 _ - only.
fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The discovery messages the configuration asks for: topic → JSON payload. Empty
/// when the feature is off.
pub fn discovery(config: &Config) -> BTreeMap<String, String> {
    let ha = &config.homeassistant;
    let mut out = BTreeMap::new();
    if !ha.enabled {
        return out;
    }
    let cam = &config.identity.camera_id;
    let node = slug(cam);
    let name = if ha.name.is_empty() { cam } else { &ha.name };
    let device = json!({
        "identifiers": [format!("edgecam_{node}")],
        "name": name,
        "manufacturer": "edgecam",
        "model": "edgecam camera agent",
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    let origin = json!({"name": "edgecam", "sw_version": env!("CARGO_PKG_VERSION")});
    let status = format!("{cam}/status");
    let availability = json!([{
        "topic": status,
        "value_template": "{{ value_json.state }}",
        "payload_available": "online",
        "payload_not_available": "offline",
    }]);
    let mut add = |component: &str, object: &str, mut body: Value, available: bool| {
        let object = slug(object);
        let b = body.as_object_mut().expect("an entity is an object");
        b.insert(
            "unique_id".into(),
            json!(format!("edgecam_{node}_{object}")),
        );
        b.insert(
            "object_id".into(),
            json!(format!("edgecam_{node}_{object}")),
        );
        b.insert("device".into(), device.clone());
        b.insert("origin".into(), origin.clone());
        if available {
            b.insert("availability".into(), availability.clone());
        }
        out.insert(
            format!("{}/{component}/{node}/{object}/config", ha.prefix),
            body.to_string(),
        );
    };
    // Connectivity is the status itself, so it has no availability of its own.
    add(
        "binary_sensor",
        "connectivity",
        json!({
            "name": "Connectivity",
            "state_topic": status,
            "value_template": "{{ value_json.state }}",
            "payload_on": "online",
            "payload_off": "offline",
            "device_class": "connectivity",
            "entity_category": "diagnostic",
        }),
        false,
    );
    add(
        "sensor",
        "outbox_depth",
        json!({
            "name": "Outbox depth",
            "state_topic": format!("{cam}/status/metrics"),
            "value_template": "{{ value_json.outbox.depth }}",
            "unit_of_measurement": "events",
            "state_class": "measurement",
            "entity_category": "diagnostic",
            "icon": "mdi:tray-full",
        }),
        true,
    );
    if config.plates.enabled {
        add(
            "sensor",
            "last_plate",
            json!({
                "name": "Last plate",
                "state_topic": format!("{cam}/events/plate"),
                "value_template": "{{ value_json.events[-1].payload.plate or 'unread' }}",
                "json_attributes_topic": format!("{cam}/events/plate"),
                "json_attributes_template": "{{ value_json.events[-1].payload | tojson }}",
                "icon": "mdi:car-info",
            }),
            true,
        );
    }
    if config.upload.enabled {
        // The latest uploaded JPEG (a snapshot) at its location; Home Assistant
        // must be able to read that URL (a local S3, or a readable bucket). Other
        // responses render no URL, which Home Assistant logs and ignores.
        add(
            "image",
            "snapshot",
            json!({
                "name": "Snapshot",
                "url_topic": format!("{cam}/file/response"),
                "url_template": "{% if value_json.state == 'done' and (value_json.location | default('')).endswith('.jpg') %}{{ value_json.location }}{% endif %}",
                "content_type": "image/jpeg",
            }),
            true,
        );
    }
    let mut lines = |kind: &str, unit: &str, topic: &str, names: Vec<&str>| {
        for line in names {
            let key = serde_json::to_string(line).expect("a string serializes");
            for dir in ["in", "out"] {
                add(
                    "sensor",
                    &format!("{kind}_{line}_{dir}"),
                    json!({
                        "name": format!("{} {dir} at {line}", if kind == "people" { "People" } else { "Vehicles" }),
                        "state_topic": format!("{cam}/events/{topic}"),
                        "value_template": format!("{{{{ (value_json.events[-1].payload.lines[{key}] | default({{}})).get('{dir}', 0) }}}}"),
                        "unit_of_measurement": unit,
                        "state_class": "measurement",
                        "icon": if kind == "people" { "mdi:account-multiple" } else { "mdi:car-multiple" },
                    }),
                    true,
                );
            }
        }
    };
    if config.people.enabled {
        lines(
            "people",
            "people",
            "people_count",
            config
                .people
                .lines
                .iter()
                .map(|l| l.name.as_str())
                .collect(),
        );
    }
    if config.traffic.enabled {
        lines(
            "vehicles",
            "vehicles",
            "vehicle_count",
            config
                .traffic
                .lines
                .iter()
                .map(|l| l.name.as_str())
                .collect(),
        );
    }
    out
}

/// The file that records the topics published last.
pub fn record_path(config: &Config) -> PathBuf {
    config.storage.state_dir.join("homeassistant.json")
}

fn load_record(path: &Path) -> BTreeSet<String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), error = %e, "unreadable record of Home Assistant discovery topics; none assumed");
            BTreeSet::new()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the record of Home Assistant discovery topics; none assumed");
            BTreeSet::new()
        }
    }
}

fn save_record(path: &Path, topics: &BTreeSet<String>) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(topics).expect("a set of strings serializes");
    crate::fsutil::write_atomically(path, &bytes, true)
}

/// The discovery stage: publishes what the configuration asks for, removes what
/// it no longer does.
pub struct HomeAssistant {
    config: watch::Receiver<Arc<Config>>,
    retained: mpsc::Sender<ControlPublish>,
    /// `<prefix>/status` messages, when subscribed.
    births: Option<mpsc::Receiver<InboundMessage>>,
    /// What this process published last (None: nothing yet; the record file tells).
    sent: Option<BTreeMap<String, String>>,
}

impl HomeAssistant {
    pub fn new(
        config: watch::Receiver<Arc<Config>>,
        retained: mpsc::Sender<ControlPublish>,
        births: Option<mpsc::Receiver<InboundMessage>>,
    ) -> Self {
        Self {
            config,
            retained,
            births,
            sent: None,
        }
    }

    async fn publish(&self, topic: &str, payload: &str) -> Result<(), HomeAssistantError> {
        self.retained
            .send(ControlPublish {
                topic: topic.to_owned(),
                payload: payload.to_owned(),
                retain: true,
            })
            .await
            .map_err(|_| HomeAssistantError::PublisherGone)
    }

    /// Publishes `desired` and removes what was published before and is no longer.
    async fn apply(
        &mut self,
        config: &Config,
        desired: BTreeMap<String, String>,
    ) -> Result<(), HomeAssistantError> {
        let path = record_path(config);
        let before: BTreeSet<String> = match &self.sent {
            Some(sent) => sent.keys().cloned().collect(),
            None => {
                let p = path.clone();
                tokio::task::spawn_blocking(move || load_record(&p)).await?
            }
        };
        let mut removed = 0;
        for topic in before.iter().filter(|t| !desired.contains_key(*t)) {
            self.publish(topic, "").await?;
            removed += 1;
        }
        for (topic, payload) in &desired {
            if self.sent.as_ref().and_then(|s| s.get(topic)) != Some(payload) {
                self.publish(topic, payload).await?;
            }
        }
        let topics: BTreeSet<String> = desired.keys().cloned().collect();
        if topics != before {
            let p = path.clone();
            tokio::task::spawn_blocking(move || save_record(&p, &topics))
                .await?
                .map_err(|source| HomeAssistantError::Save { path, source })?;
        }
        if removed > 0 || self.sent.as_ref() != Some(&desired) {
            tracing::info!(
                entities = desired.len(),
                removed,
                prefix = %config.homeassistant.prefix,
                "home assistant discovery published"
            );
        }
        self.sent = Some(desired);
        Ok(())
    }
}

impl crate::supervision::Stage for HomeAssistant {
    type Error = HomeAssistantError;

    async fn run(&mut self, stop: CancellationToken) -> Result<(), HomeAssistantError> {
        let mut config_rx = self.config.clone();
        loop {
            let config = config_rx.borrow_and_update().clone();
            let desired = discovery(&config);
            if self.sent.as_ref() != Some(&desired) {
                self.apply(&config, desired).await?;
            }
            let birth = async {
                match &mut self.births {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                changed = config_rx.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                }
                msg = birth => match msg {
                    // Home Assistant (re)started: it wants the discovery again.
                    Some(m) if m.payload == b"online" => {
                        if let Some(sent) = self.sent.clone() {
                            for (topic, payload) in &sent {
                                self.publish(topic, payload).await?;
                            }
                            tracing::info!(entities = sent.len(), "home assistant came online; discovery published again");
                        }
                    }
                    Some(_) => {}
                    None => self.births = None,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        Config::parse(&format!(
            "[identity]\ncamera_id = \"cam:1\"\nbroker_host = \"h\"\nca_file = \"a\"\ncert_file = \"b\"\nkey_file = \"c\"\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn off_by_default_publishes_nothing() {
        assert!(discovery(&config("")).is_empty());
    }

    #[test]
    fn each_counting_line_gets_an_in_and_an_out_sensor() {
        let c = config(
            "[homeassistant]\nenabled = true\nprefix = \"ha\"\n[people]\nenabled = true\nlines = [{ name = \"front_door\", a = [0.0, 0.5], b = [1.0, 0.5] }]\n",
        );
        let d = discovery(&c);
        let topics: Vec<&str> = d.keys().map(String::as_str).collect();
        assert!(topics.contains(&"ha/sensor/cam_1/people_front_door_in/config"));
        assert!(topics.contains(&"ha/sensor/cam_1/people_front_door_out/config"));
        assert!(topics.contains(&"ha/binary_sensor/cam_1/connectivity/config"));
        let entity: Value =
            serde_json::from_str(&d["ha/sensor/cam_1/people_front_door_in/config"]).unwrap();
        assert_eq!(entity["state_topic"], "cam:1/events/people_count");
        assert_eq!(
            entity["value_template"],
            "{{ (value_json.events[-1].payload.lines[\"front_door\"] | default({})).get('in', 0) }}"
        );
        assert_eq!(entity["availability"][0]["topic"], "cam:1/status");
    }

    #[test]
    fn a_prefix_with_wildcards_is_refused() {
        let mut ha = HomeAssistantConfig {
            prefix: "home/#".into(),
            ..Default::default()
        };
        assert_eq!(ha.problems().len(), 1);
        ha.prefix = "home/assistant".into();
        assert!(ha.problems().is_empty());
    }
}
