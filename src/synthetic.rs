//! A synthetic event source: a stand-in producer for demos, soak tests and
//! benchmarks, on the same channel analytics will use.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::check::Checker;
use crate::events::NewEvent;
use crate::outbox::EventSender;
use crate::topics;

/// Shortest pause between bursts; higher rates send several events per burst.
const MIN_TICK: Duration = Duration::from_millis(5);

pub struct Synthetic {
    config: watch::Receiver<Arc<SyntheticConfig>>,
    tx: EventSender,
}

/// The payload of synthetic event number `n`: its number, its creation time in
/// microseconds since the epoch (for latency measurements), and filler.
pub fn payload(n: u64, filler: &str) -> Box<RawValue> {
    let t_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    let text = format!("{{\"n\":{n},\"t_us\":{t_us},\"filler\":\"{filler}\"}}");
    RawValue::from_string(text).expect("synthetic payload is valid JSON")
}

enum Produced {
    CountReached,
    OutboxClosed,
}

impl Synthetic {
    pub fn new(config: watch::Receiver<Arc<SyntheticConfig>>, tx: EventSender) -> Self {
        Self { config, tx }
    }
}

/// Returns when the `[synthetic]` settings change; never once they no longer can.
async fn changed(config: &mut watch::Receiver<Arc<SyntheticConfig>>) {
    if config.changed().await.is_err() {
        std::future::pending().await
    }
}

async fn produce(cfg: &SyntheticConfig, tx: &EventSender) -> Produced {
    let filler = "x".repeat(cfg.payload_bytes);
    let tick = Duration::from_secs_f64(1.0 / cfg.rate_per_sec).max(MIN_TICK);
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let start = tokio::time::Instant::now();
    let mut n: u64 = 0;
    tracing::info!(rate_per_sec = cfg.rate_per_sec, kind = %cfg.kind, "synthetic source started");
    loop {
        interval.tick().await;
        let due = (start.elapsed().as_secs_f64() * cfg.rate_per_sec) as u64 + 1;
        let due = if cfg.count > 0 {
            due.min(cfg.count)
        } else {
            due
        };
        while n < due {
            let ev = NewEvent::now(&cfg.kind, payload(n, &filler));
            if tx.send(ev).await.is_err() {
                tracing::warn!("outbox closed; synthetic source stops");
                return Produced::OutboxClosed;
            }
            n += 1;
        }
        if cfg.count > 0 && n >= cfg.count {
            tracing::info!(events = n, "synthetic source reached its count");
            return Produced::CountReached;
        }
    }
}

// The synthetic source's section of the configuration (`[synthetic]`).

/// The fields of `[synthetic]` remote configuration may set, applied live.
pub const TUNABLE: &[&str] = &["enabled", "rate_per_sec", "payload_bytes", "kind", "count"];

/// The fastest synthetic source remote configuration may switch on or set.
pub const REMOTE_MAX_RATE: f64 = 10.0;

/// A built-in producer of synthetic events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticConfig {
    /// Produce synthetic events.
    #[serde(default)]
    pub enabled: bool,
    /// Events per second.
    #[serde(default = "default_synthetic_rate")]
    pub rate_per_sec: f64,
    /// Size of the filler string in each event's payload, in bytes.
    #[serde(default = "default_synthetic_payload")]
    pub payload_bytes: usize,
    /// Event kind (the last topic level).
    #[serde(default = "default_synthetic_kind")]
    pub kind: String,
    /// Stop after this many events; 0 = no limit.
    #[serde(default)]
    pub count: u64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            rate_per_sec: default_synthetic_rate(),
            payload_bytes: default_synthetic_payload(),
            kind: default_synthetic_kind(),
            count: 0,
        }
    }
}

fn default_synthetic_kind() -> String {
    "synthetic".to_owned()
}

fn default_synthetic_payload() -> usize {
    64
}

fn default_synthetic_rate() -> f64 {
    1.0
}

impl SyntheticConfig {
    /// Records every value out of range in `c`; a payload takes at most half of
    /// the largest message (`max_message_bytes`).
    pub fn check(&self, c: &mut Checker, max_message_bytes: usize) {
        let s = self;
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
            max_message_bytes / 2,
        );
        c.check(topics::valid_kind(&s.kind), "synthetic.kind", || {
            format!(
                "expected 1-64 characters from a-z 0-9 _ -, found {:?}",
                s.kind
            )
        });
    }
}

impl crate::supervision::Stage for Synthetic {
    type Error = Infallible;

    /// Produces per the `[synthetic]` settings; when they change (remote
    /// configuration), starts again with the new ones.
    async fn run(&mut self, shutdown: CancellationToken) -> Result<(), Infallible> {
        let Self { config, tx } = self;
        loop {
            let cfg = config.borrow_and_update().clone();
            let finished = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                produced = produce(&cfg, tx), if cfg.enabled => Some(produced),
                _ = changed(config) => None,
            };
            match finished {
                Some(Produced::OutboxClosed) => return Ok(()),
                Some(Produced::CountReached) => tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = changed(config) => {}
                },
                None => {}
            }
            tracing::info!("synthetic source reconfigured");
        }
    }
}
