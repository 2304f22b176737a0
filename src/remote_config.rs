//! The remote-configuration stage: takes messages from the configuration topics,
//! runs them through [`RemoteState`], persists what it applies, hands the effective
//! configuration to every stage through a watch channel, and reports the outcome
//! on `<camera-id>/config/status` (retained). What a message may change, and how
//! overlays are merged, validated and kept on disk, is `config::remote`'s,
//! over the sections `settings` puts together.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::check::Checker;
use crate::config::remote::{
    config_hash, persisted_path, save_persisted, Outcome, RemoteState, Source,
};
use crate::events::now_ms;
use crate::metrics::Metrics;
use crate::mqtt::{ControlPublish, InboundMessage, Inbox};
use crate::settings::{Config, Live};
use crate::topics::{self, Topics};

/// The topics this camera takes configuration from.
pub fn topics(config: &Config) -> (String, Option<String>) {
    let device = Topics::new(&config.identity.camera_id).config();
    let group =
        (!config.remote.group.is_empty()).then(|| Topics::group_config(&config.remote.group));
    (device, group)
}

/// The remote-configuration stage.
/// The stage's name in the metrics and the retained status.
pub const NAME: &str = "remote_config";

pub struct RemoteStage {
    state: RemoteState<Config>,
    metrics: Arc<Metrics>,
    inbound: Inbox,
    live: Live,
    status_tx: mpsc::Sender<ControlPublish>,
    persist_path: PathBuf,
    device_topic: String,
    group_topic: Option<String>,
    status_topic: String,
    max_payload: usize,
}

impl RemoteStage {
    pub fn new(
        state: RemoteState<Config>,
        inbound: mpsc::Receiver<InboundMessage>,
        live: Live,
        status_tx: mpsc::Sender<ControlPublish>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let config = state.effective();
        let (device_topic, group_topic) = topics(config);
        Self {
            persist_path: persisted_path(&config.storage.state_dir),
            status_topic: Topics::new(&config.identity.camera_id).config_status(),
            max_payload: config.remote.max_payload_bytes,
            device_topic,
            group_topic,
            state,
            metrics,
            inbound: inbound.into(),
            live,
            status_tx,
        }
    }

    async fn handle(&mut self, message: InboundMessage) {
        let source = if message.topic == self.device_topic {
            Source::Device
        } else if self.group_topic.as_deref() == Some(message.topic.as_str()) {
            Source::Group
        } else {
            tracing::warn!(topic = %message.topic, "configuration on an unexpected topic; ignored");
            return;
        };
        let outcome = self
            .state
            .on_message(source, &message.payload, self.max_payload);
        match &outcome {
            Outcome::Unchanged => {
                tracing::debug!(?source, "configuration unchanged");
                return;
            }
            Outcome::Applied | Outcome::Reverted => {
                Metrics::add(&self.metrics.configs_applied, 1);
                let effective = self.state.effective().clone();
                tracing::info!(
                    ?source,
                    reverted = matches!(outcome, Outcome::Reverted),
                    version = self.state.version(Source::Device),
                    group_version = self.state.version(Source::Group),
                    hash = %config_hash(&effective),
                    "applied remote configuration"
                );
                // A file write with two fsyncs: off the runtime.
                let (path, persisted) = (self.persist_path.clone(), self.state.persisted());
                let busy = Metrics::busy(&self.metrics, NAME);
                let saved = tokio::task::spawn_blocking(move || {
                    let _busy = busy;
                    save_persisted(&path, &persisted)
                })
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
                if let Err(e) = saved {
                    tracing::error!(path = %self.persist_path.display(), error = %e, "remote configuration applied but not persisted; a restart will not keep it");
                }
                self.live.send(effective);
            }
            Outcome::Rejected { version, errors } => {
                Metrics::add(&self.metrics.configs_rejected, 1);
                let errors: Vec<String> = errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.expected))
                    .collect();
                tracing::warn!(?source, rejected_version = ?version, ?errors, in_effect = ?self.state.version(source), "rejected remote configuration; keeping the one in effect");
            }
        }
        let status = self.state.status(source, &outcome, now_ms());
        let publish = ControlPublish {
            topic: self.status_topic.clone(),
            payload: status.to_string(),
            retain: true,
        };
        if self.status_tx.send(publish).await.is_err() {
            tracing::debug!("publisher gone; configuration status not sent");
        }
    }
}

// Remote configuration's own section of the configuration (`[remote]`). Local only: a wrong group or size limit sent from the cloud could cut the
// camera off from the messages that would correct it.

/// Remote configuration: retained JSON on `<camera-id>/config` (and on
/// `fleet/<group>/config` when `group` is set) overlays the tunables of this file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// Subscribe to the configuration topics and apply what arrives.
    #[serde(default = "crate::config::default_true")]
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

impl Default for RemoteConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            group: String::new(),
            max_payload_bytes: default_remote_max_payload(),
        }
    }
}

fn default_remote_max_payload() -> usize {
    64 * 1024
}

impl RemoteConfig {
    /// Records every value out of range in `c`.
    pub fn check(&self, c: &mut Checker) {
        let r = self;
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
    }
}

impl crate::supervision::Stage for RemoteStage {
    type Error = Infallible;

    /// Applies configuration messages until shutdown; run again after an end, it
    /// goes on with the same state and inbound messages.
    async fn run(&mut self, shutdown: CancellationToken) -> Result<(), Infallible> {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                message = self.inbound.recv() => match message {
                    Some(m) => self.handle(m).await,
                    None => return Ok(()),
                },
            }
        }
    }
}
