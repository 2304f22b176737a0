//! The daemon's configuration: every stage's section put together. Each section
//! (its fields, defaults, checks and remotely tunable fields) lives with its stage;
//! the machinery that loads, checks and layers a configuration is `crate::config`.
//! Here are only what spans sections: which build features a section needs, limits
//! one section sets on another, and what remote configuration may not do.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::check::Checker;
use crate::config::remote::Overlay;
use crate::config::{self, ConfigError, FieldError, Layered, ValidationErrors};
use crate::topics;

/// The whole configuration of the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Who this camera is and which broker it talks to. Required.
    pub identity: config::Identity,
    /// Where the daemon keeps its state (the outbox database).
    #[serde(default)]
    pub storage: config::StorageConfig,
    /// The durable event outbox.
    #[serde(default)]
    pub outbox: crate::outbox::OutboxConfig,
    /// MQTT session and the broker's ceilings (AWS IoT Core's values by default).
    #[serde(default)]
    pub mqtt: crate::mqtt::MqttConfig,
    /// Periodic status and metrics, and systemd integration.
    #[serde(default)]
    pub health: crate::health::HealthConfig,
    /// A synthetic event source, for demos, soak tests and benchmarks.
    #[serde(default)]
    pub synthetic: crate::synthetic::SyntheticConfig,
    /// Logging.
    #[serde(default)]
    pub log: config::LogConfig,
    /// Remote configuration through retained MQTT messages.
    #[serde(default)]
    pub remote: crate::remote_config::RemoteConfig,
    /// The camera's video: source, recording ring buffer, frames for analytics.
    #[serde(default)]
    pub video: crate::video::VideoConfig,
    /// Uploads on request (`<camera-id>/file/request`) to S3 or presigned URLs.
    #[serde(default)]
    pub upload: crate::upload::UploadConfig,
    /// People counting on the analytics frames: lines, zones, counts per interval.
    #[serde(default)]
    pub people: crate::analytics::PeopleConfig,
    /// Licence-plate reading on the analytics frames: one `plate` event per vehicle.
    #[serde(default)]
    pub plates: crate::analytics::PlatesConfig,
    /// Traffic counting: tracked vehicles crossing lines (needs `[detector]`).
    #[serde(default)]
    pub traffic: crate::analytics::TrafficConfig,
    /// Object detection (persons, vehicles) on the analytics frames, shared by
    /// the analytics.
    #[serde(default)]
    pub detector: crate::analytics::DetectorConfig,
    /// Home Assistant MQTT discovery (off by default).
    #[serde(default)]
    pub homeassistant: crate::homeassistant::HomeAssistantConfig,
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        config::load(path)
    }

    /// Parses and validates configuration text.
    #[cfg(test)]
    pub fn parse(text: &str) -> Result<Self, config::ParseError> {
        config::parse(text)
    }

    /// Path of the outbox database.
    pub fn outbox_path(&self) -> PathBuf {
        self.storage.state_dir.join("outbox.db")
    }
}

/// Hands one new configuration to one section's receivers.
type Section = Box<dyn Fn(&Config) + Send + Sync>;

/// The effective configuration as the stages receive it: the whole, for the
/// stages that describe or combine several sections, and sections (or any part
/// a stage takes from the configuration), each woken only when what it takes
/// changed (a new counting line does not make the outbox re-apply its limits).
/// Clones hand over to the same receivers.
#[derive(Clone)]
pub struct Live {
    whole: watch::Sender<Arc<Config>>,
    sections: Arc<std::sync::Mutex<Vec<Section>>>,
}

impl Live {
    pub fn new(config: &Config) -> Self {
        Self {
            whole: watch::Sender::new(Arc::new(config.clone())),
            sections: Arc::default(),
        }
    }

    /// Hands `config` over: the whole to every receiver of it, each section only
    /// where it changed.
    pub fn send(&self, config: Config) {
        for section in self
            .sections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            section(&config);
        }
        self.whole.send_replace(Arc::new(config));
    }

    pub fn whole(&self) -> watch::Receiver<Arc<Config>> {
        self.whole.subscribe()
    }

    /// What `of` takes from the configuration, now and at each change of it.
    pub fn section<T>(
        &self,
        of: impl Fn(&Config) -> T + Send + Sync + 'static,
    ) -> watch::Receiver<Arc<T>>
    where
        T: PartialEq + Send + Sync + 'static,
    {
        let tx = watch::Sender::new(Arc::new(of(&self.whole.borrow())));
        let rx = tx.subscribe();
        let update = move |config: &Config| {
            let new = of(config);
            tx.send_if_modified(|current| {
                let changed = **current != new;
                if changed {
                    *current = Arc::new(new);
                }
                changed
            });
        };
        self.sections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(update));
        rx
    }
}

impl Layered for Config {
    const TUNABLE: &'static [(&'static str, &'static [&'static str])] = &[
        ("outbox", crate::outbox::TUNABLE),
        ("mqtt", crate::mqtt::TUNABLE),
        ("health", crate::health::TUNABLE),
        ("synthetic", crate::synthetic::TUNABLE),
        ("log", config::LOG_TUNABLE),
        ("people", crate::analytics::PEOPLE_TUNABLE),
        ("traffic", crate::analytics::TRAFFIC_TUNABLE),
        ("upload", crate::upload::TUNABLE),
        ("plates", crate::analytics::PLATES_TUNABLE),
        ("video", crate::video::TUNABLE),
        ("detector", crate::analytics::DETECTOR_TUNABLE),
        ("homeassistant", crate::homeassistant::TUNABLE),
    ];

    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut c = Checker::default();
        let id = &self.identity;
        id.check(&mut c);
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
        self.storage.check(&mut c);
        self.outbox.check(&mut c);
        let m = &self.mqtt;
        m.check(&mut c);
        self.synthetic.check(&mut c, m.max_message_bytes);
        // Every topic built from the camera's id must fit the broker's limits.
        if topics::valid_camera_id(&id.camera_id) {
            let longest = topics::Topics::new(&id.camera_id).longest_fixed();
            let ok = topics::check_topic(&longest, m.max_topic_bytes, m.max_topic_slashes);
            c.check(ok.is_ok(), "identity.camera_id", || {
                format!("topics built from this id break the topic limits: {ok:?}")
            });
        }
        self.video.check(&mut c);
        self.people.check(&mut c);
        self.traffic.check(&mut c, self.detector.enabled);
        self.plates.check(&mut c, self.detector.enabled);
        for (field, expected) in self.detector.problems() {
            c.check(false, &field, || expected);
        }
        for (field, expected) in self.homeassistant.problems() {
            c.check(false, &field, || expected);
        }
        self.upload.check(&mut c);
        self.remote.check(&mut c);
        self.log.check(&mut c);
        c.finish()
    }

    fn check_remote(&self, layers: &[&Overlay]) -> Result<(), Vec<FieldError>> {
        let error = |field: &str, expected: String| {
            vec![FieldError {
                field: field.to_owned(),
                expected,
            }]
        };
        // A camera's own devices and files are the local file's to name: from
        // the cloud, only a network stream.
        for overlay in layers {
            if let Some(source) = overlay.raw.get("video").and_then(|v| v.get("source")) {
                if !crate::video::remote_source_allowed(source.as_str().unwrap_or_default()) {
                    return Err(error(
                        "video.source",
                        format!("an rtsp:// or rtsps:// URL when set remotely (a device, a file or the test pattern is named in the local file), found {source}"),
                    ));
                }
            }
        }
        // One fleet message must not be able to flood the outbox (and, with
        // `drop_oldest`, evict every real event): switched on or sped up from the
        // cloud, the synthetic source is held to a trickle.
        let remote_sets = |key: &str| {
            layers
                .iter()
                .any(|o| o.raw.get("synthetic").and_then(|s| s.get(key)).is_some())
        };
        let s = &self.synthetic;
        let max = crate::synthetic::REMOTE_MAX_RATE;
        if s.enabled
            && s.rate_per_sec > max
            && (remote_sets("enabled") || remote_sets("rate_per_sec"))
        {
            return Err(error(
                "synthetic.rate_per_sec",
                format!(
                    "at most {max} per second when remote configuration switches the synthetic source on or sets its rate (the local file may set more), found {}",
                    s.rate_per_sec
                ),
            ));
        }
        Ok(())
    }

    fn camera_id(&self) -> &str {
        &self.identity.camera_id
    }
}

#[cfg(test)]
mod remote_tests;
#[cfg(test)]
mod validate_tests;
