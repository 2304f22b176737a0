//! A synthetic event source: a stand-in producer for demos, soak tests and
//! benchmarks, on the same channel analytics will use.

use std::time::Duration;

use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use crate::config::SyntheticConfig;
use crate::events::NewEvent;
use crate::outbox::EventSender;

/// Shortest pause between bursts; higher rates send several events per burst.
const MIN_TICK: Duration = Duration::from_millis(5);

pub struct Synthetic {
    cfg: SyntheticConfig,
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

impl Synthetic {
    pub fn new(cfg: SyntheticConfig, tx: EventSender) -> Self {
        Self { cfg, tx }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let filler = "x".repeat(self.cfg.payload_bytes);
        let tick = Duration::from_secs_f64(1.0 / self.cfg.rate_per_sec).max(MIN_TICK);
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let start = tokio::time::Instant::now();
        let mut n: u64 = 0;
        tracing::info!(rate_per_sec = self.cfg.rate_per_sec, kind = %self.cfg.kind, "synthetic source started");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = interval.tick() => {}
            }
            let due = (start.elapsed().as_secs_f64() * self.cfg.rate_per_sec) as u64 + 1;
            let due = if self.cfg.count > 0 {
                due.min(self.cfg.count)
            } else {
                due
            };
            while n < due {
                let ev = NewEvent::now(&self.cfg.kind, payload(n, &filler));
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    sent = self.tx.send(ev) => if sent.is_err() {
                        tracing::warn!("outbox closed; synthetic source stops");
                        return;
                    }
                }
                n += 1;
            }
            if self.cfg.count > 0 && n >= self.cfg.count {
                tracing::info!(events = n, "synthetic source reached its count");
                break;
            }
        }
    }
}
