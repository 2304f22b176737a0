//! The one wiring file: builds every stage, wires their channels, hands the
//! supervised ones to the [`Supervisor`], and shuts them down in order
//! (producers, then the publisher, then the outbox).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::analytics::{Counted, Counting, DetectedQueue, Input, ObjectDetection, PlateReading};
use crate::commands::refusal::{self, Refusal};
use crate::config;
use crate::health::{self, Health};
use crate::homeassistant::{self, HomeAssistant};
use crate::metrics::Metrics;
use crate::mqtt;
use crate::outbox::{Outbox, Recovery, Store};
use crate::remote_config::{self, RemoteStage};
use crate::settings::{Config, Live};
use crate::supervision::{Policy, Stage, Supervision, Supervisor};
use crate::synthetic::Synthetic;
#[cfg(feature = "uploads")]
use crate::upload::Uploads;
use crate::video::{FrameQueue, Pins, Video};

/// How long stages get to finish after the shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

/// Reloads the log filter when the configured level changes (unless `RUST_LOG`
/// decides it).
pub type LogReload = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Runs the daemon until SIGTERM or SIGINT, or until a stage fails.
pub async fn run(local: Config, log_reload: Option<LogReload>) -> anyhow::Result<()> {
    let started_ms = crate::events::now_ms();
    let metrics = Arc::new(Metrics::default());
    // The configuration applied last survives reboots: start from it.
    let state_dir = local.storage.state_dir.clone();
    let remote = config::remote::load_effective(local, &state_dir);
    let config = remote.effective().clone();
    // Remote configuration hands changes over; each stage watches what it needs.
    let live = Live::new(&config);
    let config_rx = live.whole();
    let (outbox_rx, mqtt_rx, synthetic_rx) = (
        live.section(|c| c.outbox.clone()),
        live.section(|c| c.mqtt.clone()),
        live.section(|c| c.synthetic.clone()),
    );

    let path = config.outbox_path();
    let (store, moved) = Store::open(&path, &config.outbox, Recovery::MoveAside)
        .await
        .with_context(|| format!("cannot open the outbox at {}", path.display()))?;
    if moved.is_some() {
        Metrics::add(&metrics.outbox_resets, 1);
    }
    tracing::info!(
        camera_id = %config.identity.camera_id,
        outbox = %path.display(),
        depth = store.depth(),
        broker = %config.identity.broker_host,
        port = config.identity.broker_port,
        remote_version = remote.version(config::remote::Source::Device),
        group_version = remote.version(config::remote::Source::Group),
        "edgecam starting"
    );
    let (outbox, handle, events_tx) = Outbox::new(
        store,
        config.outbox.channel_capacity,
        outbox_rx,
        metrics.clone(),
    );

    // Remote configuration: the publisher routes the config topics' messages to its
    // stage, and publishes the stage's status messages.
    let (retained_tx, retained_rx) = mpsc::channel(16);
    let mut inbound = Vec::new();
    let remote_stage = if config.remote.enabled {
        let (tx, rx) = mpsc::channel(16);
        let (device, group) = remote_config::topics(&config);
        inbound.push((device, tx.clone()));
        if let Some(group) = group {
            inbound.push((group, tx));
        }
        Some(RemoteStage::new(
            remote,
            rx,
            live.clone(),
            retained_tx.clone(),
            metrics.clone(),
        ))
    } else {
        None
    };

    // Uploads on request: the publisher routes `<camera-id>/file/request` to the
    // stage and publishes its responses. Recordings that pending jobs need are
    // pinned before the video stage runs its first retention.
    let pins = Pins::default();
    // A build without the feature refuses `upload.enabled` (config validation).
    #[cfg(feature = "uploads")]
    let uploads = if config.upload.enabled {
        let (tx, rx) = mpsc::channel(16);
        inbound.push((
            crate::topics::Topics::new(&config.identity.camera_id).file_request(),
            tx,
        ));
        match Uploads::new(
            Arc::new(config.clone()),
            live.section(crate::upload::Tunables::of),
            rx,
            retained_tx.clone(),
            pins.clone(),
            metrics.clone(),
        )
        .await
        {
            Ok(u) => Some(Ok(u)),
            Err(e) => {
                tracing::error!(error = %e, "uploads unavailable; file requests will go unanswered");
                Some(Err(e.to_string()))
            }
        }
    } else {
        None
    };
    // A camera that does not upload still answers file requests: each is
    // rejected with why (commands::refusal), so no sender waits in vain.
    let refusal = if cfg!(feature = "uploads") && config.upload.enabled {
        None
    } else {
        let why = if cfg!(feature = "uploads") {
            refusal::Why::Disabled
        } else {
            refusal::Why::NotBuilt
        };
        let (tx, rx) = mpsc::channel(16);
        let topics = crate::topics::Topics::new(&config.identity.camera_id);
        inbound.push((topics.file_request(), tx));
        Some(Refusal::new(
            rx,
            retained_tx.clone(),
            topics.file_response(),
            why,
            metrics.clone(),
        ))
    };
    // Home Assistant discovery: runs whatever the setting (it removes what it
    // published once switched off, remotely too); Home Assistant's birth messages
    // are routed to it when the feature is on at start-up.
    let homeassistant = {
        let births = homeassistant::birth_topic(&config).map(|topic| {
            let (tx, rx) = mpsc::channel(4);
            inbound.push((topic, tx));
            rx
        });
        HomeAssistant::new(config_rx.clone(), retained_tx.clone(), births)
    };
    drop(retained_tx);
    let wiring = mqtt::Wiring {
        outbox: handle.clone(),
        metrics: metrics.clone(),
        mqtt: mqtt_rx,
        metrics_interval: live.section(|c| c.health.metrics_interval),
        inbound,
        retained: retained_rx,
    };
    let (connection, publisher) =
        mqtt::build(&config, wiring).context("cannot set up the MQTT connection")?;

    let shutdown = CancellationToken::new();
    // Not supervised stages but the daemon's spine, each run once: the publisher
    // stops on shutdown and drains; the connection ends when the publisher's
    // client is gone, the outbox when every sender and handle is, so the last
    // acknowledgements still reach it.
    let mut outbox_task = tokio::spawn(outbox.run());
    let mut connection_task = tokio::spawn(connection.run());
    let mut publisher_task = tokio::spawn(publisher.run(shutdown.clone()));
    // These three end the daemon when one ends (systemd starts it again): while
    // it runs, they run.
    for vital in ["outbox", "publisher", "mqtt_connection"] {
        metrics.set_stage(vital, Supervision::new(Policy::StopDaemon).status());
    }
    // Every other stage is supervised: its end is logged, counted in the
    // metrics' `stages`, and met by its policy.
    let mut stages = Supervisor::new(shutdown.clone(), metrics.clone());
    {
        // The handle itself, not a clone: the outbox ends once every handle and
        // sender is gone.
        let (metrics, settings) = (metrics.clone(), live.section(health::Settings::of));
        stages.add("health", Policy::Restart, move || {
            Health::new(
                handle.clone(),
                metrics.clone(),
                settings.clone(),
                started_ms,
            )
        });
    }
    {
        let (config_rx, events_tx) = (synthetic_rx, events_tx.clone());
        stages.add("synthetic", Policy::Restart, move || {
            Synthetic::new(config_rx.clone(), events_tx.clone())
        });
    }
    if let Some(stage) = remote_stage {
        // The stage keeps its layers and inbound messages across restarts.
        stages.keep(remote_config::NAME, Policy::Restart, stage);
    }
    #[cfg(feature = "uploads")]
    if let Some(Err(e)) = &uploads {
        // Shown degraded, with why, for as long as the daemon runs.
        stages.keep("uploads", Policy::Degrade, Unavailable(e.clone()));
    }
    #[cfg(feature = "uploads")]
    if let Some(Ok(uploads)) = uploads {
        // The stage keeps its requests and jobs across restarts.
        stages.keep("uploads", Policy::Restart, uploads);
    }
    if let Some(stage) = refusal {
        stages.keep("file_requests_refused", Policy::Restart, stage);
    }
    // The stage keeps what it published across restarts.
    stages.keep("homeassistant", Policy::Restart, homeassistant);
    // Video: each analytic reads its own drop-oldest queue of the same frames.
    if config.video.enabled {
        let mut queues = Vec::new();
        // People counting idles while `[people]` is off (it can be switched on
        // remotely) and takes nothing then; plate reading is set at start-up.
        // With the detector, both read its output (tracked persons, vehicles)
        // from the detection stage, which alone takes frames; else each takes
        // frames (moving blobs; whole frames behind a motion gate).
        let people_q = FrameQueue::new(config.video.frame_queue, metrics.clone(), |m| {
            &m.frames_dropped
        });
        let plates_q = FrameQueue::new(config.plates.frame_queue, metrics.clone(), |m| {
            &m.plate_frames_dropped
        });
        let (people_in, plates_in, traffic_in) = if config.detector.enabled {
            let frames = FrameQueue::new(config.detector.frame_queue, metrics.clone(), |m| {
                &m.detector_frames_dropped
            });
            queues.push(frames.clone());
            let people = DetectedQueue::new(config.video.frame_queue, metrics.clone(), |m| {
                &m.frames_dropped
            });
            let plates = DetectedQueue::new(config.plates.frame_queue, metrics.clone(), |m| {
                &m.plate_frames_dropped
            });
            // Traffic counting idles, like people counting, until `[traffic]`
            // is on (remotely too).
            let traffic = DetectedQueue::new(config.video.frame_queue, metrics.clone(), |m| {
                &m.frames_dropped
            });
            let mut outputs = vec![people.clone(), traffic.clone()];
            if config.plates.enabled {
                outputs.push(plates.clone());
            }
            // Restarted alone when a remote configuration changes `[detector]`
            // (what it detects, and the scores the trackers keep).
            let (section, metrics) = (live.section(|c| c.detector.clone()), metrics.clone());
            let current = section.clone();
            stages.add_reconfigurable(
                crate::analytics::DETECTION,
                Policy::Restart,
                section,
                move || {
                    ObjectDetection::new(
                        (**current.borrow()).clone(),
                        frames.clone(),
                        outputs.clone(),
                        metrics.clone(),
                    )
                },
            );
            (
                Input::Detections(people),
                Input::Detections(plates),
                Some(Input::Detections(traffic)),
            )
        } else {
            queues.push(people_q.clone());
            if config.plates.enabled {
                queues.push(plates_q.clone());
            }
            (Input::Frames(people_q), Input::Frames(plates_q), None)
        };
        let counting = |stages: &mut Supervisor, counted: Counted, input: Input| {
            let tracked = matches!(input, Input::Detections(_));
            let settings = live.section(move |c| counted.settings(c, tracked));
            let (events_tx, metrics) = (events_tx.clone(), metrics.clone());
            stages.add(counted.stage(), Policy::Restart, move || {
                Counting::new(
                    counted,
                    settings.clone(),
                    input.clone(),
                    events_tx.clone(),
                    metrics.clone(),
                )
            });
        };
        counting(&mut stages, Counted::People, people_in);
        if let Some(input) = traffic_in {
            counting(&mut stages, Counted::Traffic, input);
        }
        if config.plates.enabled {
            // Restarted alone, with the models loaded again, when a remote
            // configuration changes `[plates]` or the vehicle tracker's settings.
            let section = live.section(|c| (c.plates.clone(), c.detector.vehicle_tracking()));
            let (current, media, events_tx, metrics) = (
                section.clone(),
                config.upload.media_dir.clone(),
                events_tx.clone(),
                metrics.clone(),
            );
            stages.add_reconfigurable(
                crate::analytics::PLATE_READING,
                Policy::Restart,
                section,
                move || {
                    let (plates, tracking) = (**current.borrow()).clone();
                    PlateReading::new(
                        plates,
                        tracking,
                        media.clone(),
                        plates_in.clone(),
                        events_tx.clone(),
                        metrics.clone(),
                    )
                },
            );
        }
        // Restarted alone (the segment being written is closed first) when a
        // remote configuration changes `[video]`.
        let section = live.section(|c| c.video.clone());
        let (current, pins, metrics) = (section.clone(), pins.clone(), metrics.clone());
        stages.add_reconfigurable(crate::video::NAME, Policy::Restart, section, move || {
            Video::new(
                (**current.borrow()).clone(),
                queues.clone(),
                pins.clone(),
                metrics.clone(),
            )
        });
    }
    if config.detector.enabled && !config.video.enabled {
        tracing::warn!("[detector] is on but [video] is off: nothing to detect in");
    }
    if (config.people.enabled || config.plates.enabled) && !config.video.enabled {
        tracing::warn!("analytics are on but [video] is off: nothing to analyse");
    }
    if let Some(reload) = log_reload {
        stages.keep(
            "log_level",
            Policy::Restart,
            LogLevel {
                level: live.section(|c| c.log.level.clone()),
                reload,
            },
        );
    }
    // Producers hold their own senders (and the supervisor, to start them again);
    // the outbox ends once they are all gone.
    drop(events_tx);
    health::notify_ready();

    let mut failure: Option<anyhow::Error> = None;
    tokio::select! {
        s = shutdown_signal() => tracing::info!(signal = s, "shutting down"),
        r = &mut publisher_task => failure = Some(stage_failed("publisher", r)),
        r = &mut outbox_task => failure = Some(stage_failed("outbox", r)),
        r = &mut connection_task => failure = Some(stage_failed("mqtt connection", r.map(Ok::<(), String>))),
        e = stages.watch() => failure = Some(e),
    }
    health::notify_stopping();
    shutdown.cancel();

    let drain = async {
        stages.drain().await;
        if !publisher_task.is_finished() || failure.is_none() {
            if let Ok(Err(e)) = (&mut publisher_task).await {
                tracing::error!(error = %e, "publisher stopped with an error");
            }
        }
        if !connection_task.is_finished() || failure.is_none() {
            join_logged("mqtt connection", connection_task).await;
        }
        if !outbox_task.is_finished() || failure.is_none() {
            if let Ok(Err(e)) = (&mut outbox_task).await {
                tracing::error!(error = %e, "outbox stopped with an error");
            }
        }
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        tracing::error!(grace = ?SHUTDOWN_GRACE, "stages did not stop in time; exiting anyway");
    }
    match failure {
        Some(e) => Err(e),
        None => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}

/// Follows `log.level` (reloading the log filter) when no `RUST_LOG` decides it.
struct LogLevel {
    level: watch::Receiver<Arc<String>>,
    reload: LogReload,
}

impl Stage for LogLevel {
    type Error = std::convert::Infallible;

    async fn run(&mut self, shutdown: CancellationToken) -> Result<(), Self::Error> {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                changed = self.level.changed() => if changed.is_err() { return Ok(()) },
            }
            // Woken only when `log.level` changed.
            let new = self.level.borrow_and_update().clone();
            match (self.reload)(&new) {
                Ok(()) => tracing::info!(level = %new, "log level changed"),
                Err(e) => tracing::warn!(level = %new, error = %e, "cannot change the log level"),
            }
        }
    }
}

/// Uploads that could not start: shown degraded, with why, for as long as the
/// daemon runs.
#[cfg(feature = "uploads")]
struct Unavailable(String);

#[cfg(feature = "uploads")]
impl Stage for Unavailable {
    type Error = String;

    async fn run(&mut self, _: CancellationToken) -> Result<(), String> {
        Err(self.0.clone())
    }
}

fn stage_failed<E: std::fmt::Display>(
    stage: &str,
    r: Result<Result<(), E>, tokio::task::JoinError>,
) -> anyhow::Error {
    let e = match r {
        Ok(Ok(())) => anyhow::anyhow!("{stage} stopped unexpectedly"),
        Ok(Err(e)) => anyhow::anyhow!("{stage} failed: {e}"),
        Err(e) => anyhow::anyhow!("{stage} panicked: {e}"),
    };
    tracing::error!(error = %e, "a stage stopped; shutting down");
    e
}

async fn join_logged(stage: &str, task: JoinHandle<()>) {
    if let Err(e) = task.await {
        tracing::error!(stage, error = %e, "stage panicked");
    }
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            tracing::error!("cannot install signal handlers; stopping only on failure");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
