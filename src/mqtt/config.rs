//! The MQTT session's section of the configuration (`[mqtt]`): its fields, defaults,
//! checks and which of them remote configuration may set.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::check::Checker;

/// The fields of `[mqtt]` remote configuration may set, applied live. The session
/// itself (keepalive, timeouts, the clean-session flag) stays local.
pub const TUNABLE: &[&str] = &[
    "max_message_bytes",
    "max_publishes_per_sec",
    "max_bytes_per_sec",
    "billing_step_bytes",
    "ack_timeout",
    "backoff_min",
    "backoff_max",
    "shutdown_drain",
];

/// AWS IoT Core's hard limit on a payload; also the largest batch we build.
const MQTT_MAX_PAYLOAD: usize = 256 * 1024 * 1024 - 1;

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

fn default_ack_timeout() -> Duration {
    Duration::from_secs(15)
}

fn default_backoff_max() -> Duration {
    Duration::from_secs(120)
}

fn default_backoff_min() -> Duration {
    Duration::from_secs(1)
}

fn default_billing_step_bytes() -> usize {
    5 * 1024
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(20)
}

fn default_drain_timeout() -> Duration {
    Duration::from_secs(3)
}

fn default_keepalive() -> Duration {
    Duration::from_secs(60)
}

fn default_max_bytes_per_sec() -> u64 {
    512 * 1024
}

fn default_max_inflight() -> u16 {
    100
}

fn default_max_message_bytes() -> usize {
    128 * 1024
}

fn default_max_publishes_per_sec() -> u32 {
    100
}

fn default_max_topic_bytes() -> usize {
    256
}

fn default_max_topic_slashes() -> usize {
    7
}

fn default_persistent_session() -> bool {
    true
}

impl MqttConfig {
    /// Records every value out of range in `c`.
    pub fn check(&self, c: &mut Checker) {
        let m = self;
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
    }
}
