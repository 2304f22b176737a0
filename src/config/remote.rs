//! Remote configuration: parsing an overlay, merging it over the local
//! configuration, and deciding what a message on a configuration topic does, all
//! without I/O; and the overlays kept on disk (`load_effective`, at start). The
//! stage that takes the messages is `crate::remote_config`.
//!
//! Precedence: built-in defaults < local file < group (`fleet/<group>/config`) <
//! device (`<camera-id>/config`). An overlay is a JSON object with a `version` and
//! sections of tunables (`docs/remote-config.md`); only the fields in
//! [`Layered::TUNABLE`] may appear. Identity (who the camera is, which broker and
//! which certificates it trusts) and storage are never tunable: a wrong value there
//! would cut the camera off from the very channel that could correct it.
//! Everything is validated (types, ranges, unknown keys) before anything is
//! applied.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{FieldError, Layered};

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
pub fn parse_overlay(
    payload: &[u8],
    max_bytes: usize,
    tunable: &[(&str, &[&str])],
) -> Result<Overlay, Vec<FieldError>> {
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
        let Some((_, keys)) = tunable.iter().find(|(s, _)| s == section) else {
            errors.push(error(
                section,
                "a remotely tunable section (docs/remote-config.md lists them)",
            ));
            continue;
        };
        for key in fields.keys() {
            if !keys.contains(&key.as_str()) {
                errors.push(error(
                    &format!("{section}.{key}"),
                    "a remotely tunable field",
                ));
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
pub fn merge<C: Layered>(local: &C, overlays: &[&Overlay]) -> Result<C, Vec<FieldError>> {
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
    let config: C = serde_path_to_error::deserialize(merged)
        .map_err(|e| vec![error(&e.path().to_string(), e.inner().to_string())])?;
    config.validate().map_err(|e| e.0)?;
    Ok(config)
}

/// SHA-256 of the configuration's JSON, hex: tells the cloud which settings run.
pub fn config_hash(config: &impl Serialize) -> String {
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
pub struct RemoteState<C> {
    local: C,
    group: Option<Overlay>,
    device: Option<Overlay>,
    effective: C,
}

impl<C: Layered> RemoteState<C> {
    /// Starts from the local configuration and the overlays persisted last time.
    /// Overlays that no longer fit (the local file changed) are dropped, with the
    /// reason returned for the log.
    pub fn new(local: C, persisted: &Persisted) -> (Self, Vec<String>) {
        let mut warnings = Vec::new();
        let mut load = |source: &str, raw: &Option<Map<String, Value>>| {
            let bytes = serde_json::to_vec(raw.as_ref()?).ok()?;
            // It was within the size limit when it arrived.
            match parse_overlay(&bytes, usize::MAX, C::TUNABLE) {
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
        effective.check_remote(&self.layers())?;
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
        let overlay = match parse_overlay(payload, max_bytes, C::TUNABLE) {
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

    pub fn effective(&self) -> &C {
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
            "camera_id": self.effective.camera_id(),
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

/// The local configuration with the overlays persisted in `state_dir` over it.
pub fn load_effective<C: Layered>(local: C, state_dir: &Path) -> RemoteState<C> {
    let path = persisted_path(state_dir);
    let (state, warnings) = RemoteState::new(local, &load_persisted(&path));
    for w in warnings {
        tracing::warn!(path = %path.display(), "{w}");
    }
    state
}
