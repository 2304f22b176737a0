//! The supervisor: builds every stage, wires their channels, starts them, and
//! shuts them down in order (producers, then the publisher, then the outbox).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::analytics::{Counted, Counting, DetectedQueue, Input, ObjectDetection, PlateReading};
use crate::config::{self, stage::RemoteStage, Config};
use crate::health::{self, Health};
use crate::metrics::Metrics;
use crate::mqtt;
use crate::outbox::{Outbox, Recovery, Store};
use crate::synthetic::Synthetic;
use crate::upload::Uploads;
use crate::video::{FrameQueue, Pins, Video};

/// How long stages get to finish after the shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

/// Reloads the log filter when the configured level changes (unless `RUST_LOG`
/// decides it).
pub type LogReload = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Runs the daemon until SIGTERM or SIGINT, or until a stage fails.
pub async fn run(local: Config, log_reload: Option<LogReload>) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    // The configuration applied last survives reboots: start from it.
    let remote = config::stage::load_effective(local);
    let config = remote.effective().clone();
    let (config_tx, config_rx) = watch::channel(Arc::new(config.clone()));

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
        config_rx.clone(),
        metrics.clone(),
    );

    // Remote configuration: the publisher routes the config topics' messages to its
    // stage, and publishes the stage's status messages.
    let (retained_tx, retained_rx) = mpsc::channel(16);
    let mut inbound = Vec::new();
    let remote_stage = if config.remote.enabled {
        let (tx, rx) = mpsc::channel(16);
        let (device, group) = config::stage::topics(&config);
        inbound.push((device, tx.clone()));
        if let Some(group) = group {
            inbound.push((group, tx));
        }
        Some(RemoteStage::new(
            remote,
            rx,
            config_tx,
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
    let uploads = if config.upload.enabled {
        let (tx, rx) = mpsc::channel(16);
        inbound.push((
            mqtt::topics::Topics::new(&config.identity.camera_id).file_request(),
            tx,
        ));
        let shared = Arc::new(config.clone());
        match Uploads::new(
            shared,
            rx,
            retained_tx.clone(),
            pins.clone(),
            metrics.clone(),
        )
        .await
        {
            Ok(u) => Some(u),
            Err(e) => {
                tracing::error!(error = %e, "uploads unavailable; file requests will go unanswered");
                None
            }
        }
    } else {
        None
    };
    drop(retained_tx);
    let wiring = mqtt::Wiring {
        outbox: handle.clone(),
        metrics: metrics.clone(),
        config: config_rx.clone(),
        inbound,
        retained: retained_rx,
    };
    let (connection, publisher) =
        mqtt::build(&config, wiring).context("cannot set up the MQTT connection")?;

    let shutdown = CancellationToken::new();
    let mut outbox_task = tokio::spawn(outbox.run());
    let connection_task = tokio::spawn(connection.run());
    let mut publisher_task = tokio::spawn(publisher.run(shutdown.clone()));
    let health_task =
        tokio::spawn(Health::new(handle, metrics.clone(), config_rx.clone()).run(shutdown.clone()));
    let synthetic_task =
        tokio::spawn(Synthetic::new(config_rx.clone(), events_tx.clone()).run(shutdown.clone()));
    let remote_task = remote_stage.map(|stage| tokio::spawn(stage.run(shutdown.clone())));
    let upload_task = uploads.map(|u| {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = u.run(shutdown).await {
                tracing::error!(error = %e, "uploads stopped; file requests will go unanswered");
            }
        })
    });
    // Video: each analytic reads its own drop-oldest queue of the same frames.
    let video_task = config.video.enabled.then(|| {
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
        let (people_in, plates_in, traffic_in, detection) = if config.detector.enabled {
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
            let stage = ObjectDetection::new(config.detector.clone(), frames, outputs, metrics.clone());
            let shutdown = shutdown.clone();
            let task = tokio::spawn(async move {
                if let Err(e) = stage.run(shutdown).await {
                    tracing::error!(error = %e, "object detection stopped; people are not counted, plates not read");
                }
            });
            (
                Input::Detections {
                    queue: people,
                    tracking: config.detector.tracking(),
                },
                Input::Detections {
                    queue: plates,
                    tracking: config.detector.vehicle_tracking(),
                },
                Some(Input::Detections {
                    queue: traffic,
                    tracking: config.detector.vehicle_tracking(),
                }),
                Some(task),
            )
        } else {
            queues.push(people_q.clone());
            if config.plates.enabled {
                queues.push(plates_q.clone());
            }
            (Input::Frames(people_q), Input::Frames(plates_q), None, None)
        };
        let counting = tokio::spawn(
            Counting::new(
                Counted::People,
                config_rx.clone(),
                people_in,
                events_tx.clone(),
            )
            .run(shutdown.clone()),
        );
        let traffic = traffic_in.map(|input| {
            tokio::spawn(
                Counting::new(Counted::Traffic, config_rx.clone(), input, events_tx.clone())
                    .run(shutdown.clone()),
            )
        });
        let plates = config.plates.enabled.then(|| {
            tokio::spawn(
                PlateReading::new(
                    config.plates.clone(),
                    config.upload.media_dir.clone(),
                    plates_in,
                    events_tx.clone(),
                    metrics.clone(),
                )
                .run(shutdown.clone()),
            )
        });
        let video = tokio::spawn(
            Video::new(config.video.clone(), queues, pins.clone(), metrics.clone())
                .run(shutdown.clone()),
        );
        (video, counting, plates, detection, traffic)
    });
    if config.detector.enabled && !config.video.enabled {
        tracing::warn!("[detector] is on but [video] is off: nothing to detect in");
    }
    if (config.people.enabled || config.plates.enabled) && !config.video.enabled {
        tracing::warn!("analytics are on but [video] is off: nothing to analyse");
    }
    let log_task = log_reload
        .map(|reload| tokio::spawn(follow_log_level(config_rx, reload, shutdown.clone())));
    // Producers hold their own senders; the outbox ends once they are all gone.
    drop(events_tx);
    health::notify_ready();

    let mut failure: Option<anyhow::Error> = None;
    tokio::select! {
        s = shutdown_signal() => tracing::info!(signal = s, "shutting down"),
        r = &mut publisher_task => failure = Some(stage_failed("publisher", r)),
        r = &mut outbox_task => failure = Some(stage_failed("outbox", r)),
    }
    health::notify_stopping();
    shutdown.cancel();

    let drain = async {
        join_logged("synthetic", synthetic_task).await;
        if let Some((video, counting, plates, detection, traffic)) = video_task {
            join_logged("video", video).await;
            if let Some(detection) = detection {
                join_logged("object detection", detection).await;
            }
            join_logged("people counting", counting).await;
            if let Some(traffic) = traffic {
                join_logged("traffic counting", traffic).await;
            }
            if let Some(plates) = plates {
                join_logged("plate reading", plates).await;
            }
        }
        if let Some(t) = remote_task {
            join_logged("remote configuration", t).await;
        }
        if let Some(t) = upload_task {
            join_logged("uploads", t).await;
        }
        if let Some(t) = log_task {
            join_logged("log level", t).await;
        }
        if !publisher_task.is_finished() || failure.is_none() {
            if let Ok(Err(e)) = (&mut publisher_task).await {
                tracing::error!(error = %e, "publisher stopped with an error");
            }
        }
        join_logged("health", health_task).await;
        join_logged("mqtt connection", connection_task).await;
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

/// Applies `log.level` from the effective configuration as it changes.
async fn follow_log_level(
    mut config: watch::Receiver<Arc<Config>>,
    reload: LogReload,
    shutdown: CancellationToken,
) {
    let mut level = config.borrow().log.level.clone();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = config.changed() => if changed.is_err() { return },
        }
        let new = config.borrow_and_update().log.level.clone();
        if new != level {
            match reload(&new) {
                Ok(()) => tracing::info!(level = %new, "log level changed"),
                Err(e) => tracing::warn!(level = %new, error = %e, "cannot change the log level"),
            }
            level = new;
        }
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
