//! Configuration's machinery, apart from any stage: loading a TOML file,
//! checking values (`check`), layering retained overlays over the file
//! (`remote`), and the sections no stage owns (identity, storage, logging).
//!
//! Each stage owns its section (fields, defaults, checks, what is remotely
//! tunable) next to its code; `crate::settings` puts the sections together into
//! the daemon's configuration. Every field carries a `///` comment: these comments
//! are the reference, and `config.example.toml` repeats them with the default
//! values. Device identity (`[identity]`: who the camera is and which broker it
//! trusts) is kept apart from the tunables, so a fleet can overlay tunables
//! remotely without touching identity.

pub mod check;
pub mod remote;

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use check::Checker;
pub use check::{FieldError, ValidationErrors};

use crate::topics;

/// A whole configuration: what can be loaded from a file, checked, and layered
/// with remote overlays.
pub trait Layered: Serialize + DeserializeOwned + Clone {
    /// The sections remote configuration may set, each with its tunable fields.
    const TUNABLE: &'static [(&'static str, &'static [&'static str])];

    /// Checks every value; returns all problems at once.
    fn validate(&self) -> Result<(), ValidationErrors>;

    /// What remote overlays may not set even where the merged result is valid;
    /// `layers` are the overlays in effect, lowest precedence first.
    fn check_remote(&self, layers: &[&remote::Overlay]) -> Result<(), Vec<FieldError>>;

    /// The camera's id, for the status it reports.
    fn camera_id(&self) -> &str;
}

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

/// Reads, parses and validates a configuration file.
pub fn load<C: Layered>(path: &Path) -> Result<C, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text).map_err(|e| match e {
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
pub fn parse<C: Layered>(text: &str) -> Result<C, ParseError> {
    let config: C = toml::from_str(text).map_err(|e| ParseError::Syntax(e.to_string()))?;
    config.validate().map_err(ParseError::Invalid)?;
    Ok(config)
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

impl Identity {
    /// Records every value out of range in `c`.
    pub fn check(&self, c: &mut Checker) {
        let id = self;
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
        for (i, p) in self.alpn.iter().enumerate() {
            c.check(
                !p.is_empty() && p.len() < 256,
                &format!("identity.alpn[{i}]"),
                || "expected a protocol name of 1-255 bytes".to_owned(),
            );
        }
        for (field, path) in [
            ("identity.ca_file", &self.ca_file),
            ("identity.cert_file", &self.cert_file),
            ("identity.key_file", &self.key_file),
        ] {
            c.check(!path.as_os_str().is_empty(), field, || {
                "expected a path to a PEM file".to_owned()
            });
        }
    }
}

/// Where state lives on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Directory for the daemon's state (the outbox database). Must be writable.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            state_dir: default_state_dir(),
        }
    }
}

impl StorageConfig {
    /// Records every value out of range in `c`.
    pub fn check(&self, c: &mut Checker) {
        c.check(
            !self.state_dir.as_os_str().is_empty(),
            "storage.state_dir",
            || "expected a directory path".to_owned(),
        );
    }
}

/// The fields of `[log]` remote configuration may set, applied live.
pub const LOG_TUNABLE: &[&str] = &["level"];

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
    /// Log levels: a default level and `target=level` directives, e.g. `info` or
    /// `edgecam=debug,rumqttc=warn` (no span or field filters). `RUST_LOG`, in the
    /// same form, overrides it.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// `auto`, `journald` or `stderr`.
    #[serde(default = "default_log_target")]
    pub target: LogTarget,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: default_log_level(),
            target: default_log_target(),
        }
    }
}

impl LogConfig {
    /// Records every value out of range in `c`.
    pub fn check(&self, c: &mut Checker) {
        c.check(log_levels(&self.level).is_some(), "log.level", || {
            format!(
                "expected levels such as \"info\" or \"edgecam=debug,rumqttc=warn\", found {:?}",
                self.level
            )
        });
    }
}

/// The log filter `text` describes (`info`, `edgecam=debug,rumqttc=warn`), or
/// `None` if it is empty or not in that form.
pub fn log_levels(text: &str) -> Option<tracing_subscriber::filter::Targets> {
    if text.trim().is_empty() {
        return None;
    }
    text.parse().ok()
}

/// `serde(default)` for the switches that are on unless turned off.
pub fn default_true() -> bool {
    true
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

fn default_log_level() -> String {
    "info".to_owned()
}

fn default_log_target() -> LogTarget {
    LogTarget::Auto
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn log_levels_take_a_default_and_per_target_levels() {
        let levels = log_levels("edgecam=debug,rumqttc=warn,info").unwrap();
        assert!(levels.would_enable("edgecam::mqtt", &Level::DEBUG));
        assert!(!levels.would_enable("rumqttc::state", &Level::INFO));
        assert!(levels.would_enable("sqlx", &Level::INFO));
        assert!(!levels.would_enable("sqlx", &Level::DEBUG));
        assert!(log_levels("warn").is_some());
    }

    #[test]
    fn an_empty_or_malformed_log_filter_is_refused() {
        assert!(log_levels("").is_none());
        assert!(log_levels("  ").is_none());
        assert!(log_levels("edgecam=loud").is_none());
        let mut c = Checker::default();
        LogConfig {
            level: "edgecam=loud".into(),
            ..LogConfig::default()
        }
        .check(&mut c);
        let err = c.finish().unwrap_err().to_string();
        assert!(
            err.contains("log.level") && err.contains("edgecam=loud"),
            "{err}"
        );
    }
}
