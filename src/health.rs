//! Health: systemd readiness and watchdog, the metrics message, and a periodic
//! status line in the log.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::{mono_ms, rss_bytes, Metrics};
use crate::outbox::OutboxHandle;
use crate::settings::Config;
use crate::supervision::watchdog_verdict;

/// Tells systemd the daemon is ready (no-op outside systemd).
pub fn notify_ready() {
    if let Err(e) = sd_notify::notify(false, &[NotifyState::Ready]) {
        tracing::warn!(error = %e, "cannot notify systemd of readiness");
    }
}

/// Tells systemd the daemon is stopping.
pub fn notify_stopping() {
    if let Err(e) = sd_notify::notify(false, &[NotifyState::Stopping]) {
        tracing::warn!(error = %e, "cannot notify systemd of stopping");
    }
}

/// What the health stage takes from the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub camera_id: String,
    pub status_path: std::path::PathBuf,
    pub metrics_interval: Duration,
    /// How long the MQTT event loop may go without coming round: it polls at
    /// least once a keepalive, a connection attempt plus its backoff, or an
    /// acknowledgement wait; twice that is stuck.
    pub loop_limit: Duration,
}

impl Settings {
    pub fn of(c: &Config) -> Self {
        let m = &c.mqtt;
        Self {
            camera_id: c.identity.camera_id.clone(),
            status_path: status_path(c),
            metrics_interval: c.health.metrics_interval,
            loop_limit: 2 * (m.keepalive + m.connect_timeout + m.backoff_max + m.ack_timeout),
        }
    }
}

/// The health stage.
pub struct Health {
    outbox: OutboxHandle,
    metrics: Arc<Metrics>,
    settings: watch::Receiver<Arc<Settings>>,
    /// When the daemon started, ms since the epoch.
    started_ms: i64,
}

/// `<state_dir>/status.json`: the metrics message as of the last status line,
/// rewritten (atomically) every `health.metrics_interval`, connected or not, for
/// `edgecam status` on the camera itself.
pub fn status_path(config: &Config) -> std::path::PathBuf {
    config.storage.state_dir.join("status.json")
}

fn log_ticker(interval: Duration) -> tokio::time::Interval {
    let period = if interval.is_zero() {
        Duration::from_secs(3600)
    } else {
        interval
    };
    tokio::time::interval_at(tokio::time::Instant::now() + period, period)
}

impl Health {
    pub fn new(
        outbox: OutboxHandle,
        metrics: Arc<Metrics>,
        settings: watch::Receiver<Arc<Settings>>,
        started_ms: i64,
    ) -> Self {
        Self {
            outbox,
            metrics,
            settings,
            started_ms,
        }
    }

    /// Whether the watchdog may be pinged (see [`watchdog_verdict`]).
    fn verdict(&self) -> Result<(), String> {
        let limit = self.settings.borrow().loop_limit;
        let last = self
            .metrics
            .mqtt_loop_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        let idle = Duration::from_millis(mono_ms().saturating_sub(last));
        let stages = self.metrics.stages();
        watchdog_verdict(stages.iter().map(|(n, s)| (*n, s)), idle, limit)
    }

    /// Writes the status file; a failure is logged and the daemon carries on.
    async fn write_status(&self) {
        let stats = match tokio::time::timeout(Duration::from_secs(5), self.outbox.stats()).await {
            Ok(Ok(s)) => Some(s),
            _ => None,
        };
        let settings = self.settings.borrow().clone();
        let payload = crate::metrics::payload(
            &settings.camera_id,
            self.started_ms,
            &self.metrics,
            stats.as_ref(),
        );
        let path = settings.status_path.clone();
        let written = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                // Not fsynced: it is rewritten every interval, and a stale one
                // after a power cut says how old it is.
                crate::fsutil::write_atomically(&path, payload.as_bytes(), false)
            })
            .await
        };
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot write the status file")
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "the status file task failed")
            }
        }
    }

    fn log_status(&self) {
        let m = &self.metrics;
        tracing::info!(
            depth = Metrics::gauge(&m.outbox_depth),
            outbox_bytes = Metrics::gauge(&m.outbox_bytes),
            enqueued = Metrics::get(&m.events_enqueued),
            acked = Metrics::get(&m.events_acked),
            evicted = Metrics::get(&m.events_evicted),
            refused = Metrics::get(&m.events_refused),
            expired = Metrics::get(&m.events_expired),
            connects = Metrics::get(&m.connects),
            rss_bytes = rss_bytes(),
            "status"
        );
    }
}

// The health stage's section of the configuration (`[health]`).

/// The fields of `[health]` remote configuration may set, applied live.
pub const TUNABLE: &[&str] = &["metrics_interval"];

/// Status, metrics and systemd.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Interval of the metrics message on `<camera-id>/status/metrics`, of the
    /// status line in the log and of `<state_dir>/status.json` (read by
    /// `edgecam status`); `0s` turns them off.
    #[serde(default = "default_metrics_interval", with = "humantime_serde")]
    pub metrics_interval: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            metrics_interval: default_metrics_interval(),
        }
    }
}

fn default_metrics_interval() -> Duration {
    Duration::from_secs(60)
}

impl crate::supervision::Stage for Health {
    type Error = Infallible;

    /// Pings the systemd watchdog while the daemon is sound (the outbox answers,
    /// the MQTT loop comes round, every stage is within its policy), logs a
    /// status line, and gives back the large blocks that waited too long
    /// (`memory::trim`).
    async fn run(&mut self, shutdown: CancellationToken) -> Result<(), Infallible> {
        let mut usec = 0u64;
        let watchdog =
            sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec / 2));
        let mut ping = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
        let mut log_interval = self.settings.borrow().metrics_interval;
        let mut log = log_ticker(log_interval);
        // Freed large blocks that no model took again go back to the kernel.
        let mut trim = tokio::time::interval(Duration::from_millis(crate::memory::MAX_WAIT_MS / 2));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = trim.tick() => crate::memory::trim(),
                _ = ping.tick(), if watchdog.is_some() => {
                    // Only a responsive outbox, an MQTT loop that comes round and
                    // stages within their policies earn a ping: a wedged daemon
                    // gets restarted.
                    match tokio::time::timeout(Duration::from_secs(5), self.outbox.stats()).await {
                        Ok(Ok(_)) => match self.verdict() {
                            Ok(()) => {
                                if let Err(e) = sd_notify::notify(false, &[NotifyState::Watchdog]) {
                                    tracing::warn!(error = %e, "cannot ping the systemd watchdog");
                                }
                            }
                            Err(why) => tracing::error!(reason = %why, "withholding the watchdog ping"),
                        },
                        Ok(Err(e)) => tracing::error!(error = %e, "outbox not healthy; withholding the watchdog ping"),
                        Err(_) => tracing::error!("outbox did not answer in 5s; withholding the watchdog ping"),
                    }
                }
                _ = log.tick(), if !log_interval.is_zero() => {
                    self.log_status();
                    self.write_status().await;
                }
                Ok(()) = self.settings.changed() => {
                    let interval = self.settings.borrow_and_update().metrics_interval;
                    if interval != log_interval {
                        log_interval = interval;
                        log = log_ticker(interval);
                    }
                }
            }
        }
    }
}
