//! The supervisor: builds every stage, wires their channels, starts them, and
//! shuts them down in order (producers, then the publisher, then the outbox).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
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
use crate::supervision::{Action, Policy, Stage, Supervision};
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
            config_rx.clone(),
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
        let (metrics, config_rx) = (metrics.clone(), config_rx.clone());
        stages.add("health", Policy::Restart, move || {
            Health::new(
                handle.clone(),
                metrics.clone(),
                config_rx.clone(),
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

/// Applies `log.level` from the effective configuration as it changes.
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

/// How long the shutdown waits before saying which stages it still waits for.
const DRAIN_REPORT: Duration = Duration::from_secs(3);

/// Starts a stage (again) with the shutdown token.
type Factory = Box<dyn FnMut(CancellationToken) -> BoxFuture<'static, Result<(), String>> + Send>;

/// A stage's task: its index, how long it ran and how it ended.
type Ended = (
    usize,
    Duration,
    Result<Result<(), String>, tokio::task::JoinError>,
);

/// The supervised stages: each runs in its own task; when one ends, its
/// [`Policy`] decides (see `crate::supervision`), and its state goes to the
/// metrics.
struct Supervisor {
    stages: Vec<(&'static str, Supervision, Factory)>,
    /// Each stage's own stop token, a child of the shutdown's: cancelled alone to
    /// start the stage again with a new configuration.
    stops: Vec<CancellationToken>,
    /// Stages stopped for a new configuration, not yet ended.
    reconfiguring: Vec<bool>,
    /// Stages whose configuration changed (from their watchers).
    changed_tx: mpsc::Sender<usize>,
    changed_rx: mpsc::Receiver<usize>,
    tasks: JoinSet<Ended>,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
}

impl Supervisor {
    fn new(shutdown: CancellationToken, metrics: Arc<Metrics>) -> Self {
        let (changed_tx, changed_rx) = mpsc::channel(16);
        Self {
            stages: Vec::new(),
            stops: Vec::new(),
            reconfiguring: Vec::new(),
            changed_tx,
            changed_rx,
            tasks: JoinSet::new(),
            shutdown,
            metrics,
        }
    }

    /// Starts a stage under `policy`, built afresh by `build` at every start.
    fn add<S: Stage>(
        &mut self,
        name: &'static str,
        policy: Policy,
        mut build: impl FnMut() -> S + Send + 'static,
    ) {
        self.add_task(name, policy, move |stop| {
            let mut stage = build();
            Box::pin(async move { stage.run(stop).await.map_err(|e| e.to_string()) })
        });
    }

    /// Starts a stage under `policy` that keeps its state (requests, layers, what
    /// it published) from one start to the next.
    fn keep<S: Stage>(&mut self, name: &'static str, policy: Policy, stage: S) {
        let stage = Arc::new(tokio::sync::Mutex::new(stage));
        self.add_task(name, policy, move |stop| {
            let stage = stage.clone();
            Box::pin(async move {
                let mut stage = stage.lock().await;
                stage.run(stop).await.map_err(|e| e.to_string())
            })
        });
    }

    /// Starts a stage under `policy`; `start` builds and runs it.
    fn add_task(
        &mut self,
        name: &'static str,
        policy: Policy,
        start: impl FnMut(CancellationToken) -> BoxFuture<'static, Result<(), String>> + Send + 'static,
    ) {
        let supervision = Supervision::new(policy);
        self.metrics.set_stage(name, supervision.status());
        self.stages.push((name, supervision, Box::new(start)));
        self.stops.push(self.shutdown.child_token());
        self.reconfiguring.push(false);
        self.start(self.stages.len() - 1, Duration::ZERO);
    }

    /// As [`Supervisor::add`], and the stage is stopped and started again at once,
    /// alone, whenever the part of the effective configuration it is built from
    /// (`section`, from [`Live::section`]: woken only when it changed) changes;
    /// `build` reads the section afresh.
    fn add_reconfigurable<S: Stage, T: Send + Sync + 'static>(
        &mut self,
        name: &'static str,
        policy: Policy,
        mut section: watch::Receiver<Arc<T>>,
        build: impl FnMut() -> S + Send + 'static,
    ) {
        self.add(name, policy, build);
        let i = self.stages.len() - 1;
        let (changed, shutdown) = (self.changed_tx.clone(), self.shutdown.clone());
        section.mark_unchanged();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = section.changed() => if r.is_err() { return },
                }
                section.mark_unchanged();
                if changed.send(i).await.is_err() {
                    return;
                }
            }
        });
    }

    /// Runs stage `i` in a task of its own after `delay` (cancelled by shutdown
    /// or a new configuration).
    fn start(&mut self, i: usize, delay: Duration) {
        let (name, _, start) = &mut self.stages[i];
        let name = *name;
        let stop = self.shutdown.child_token();
        self.stops[i] = stop.clone();
        let run = start(stop.clone());
        let metrics = self.metrics.clone();
        self.tasks.spawn(async move {
            if !delay.is_zero() {
                tokio::select! {
                    _ = stop.cancelled() => return (i, Duration::ZERO, Ok(Ok(()))),
                    _ = tokio::time::sleep(delay) => {}
                }
                tracing::info!(stage = name, "stage starting again");
                metrics.stage_running(name);
            }
            let started = tokio::time::Instant::now();
            // Its own task: a panic ends the stage, not the supervisor.
            let result = tokio::spawn(run).await;
            (i, started.elapsed(), result)
        });
    }

    /// Meets the stages' ends with their policies; returns when one's policy is
    /// to stop the daemon (never while none does).
    async fn watch(&mut self) -> anyhow::Error {
        loop {
            let joined = tokio::select! {
                joined = self.tasks.join_next() => joined,
                Some(i) = self.changed_rx.recv() => {
                    self.reconfigure(i);
                    continue;
                }
            };
            let Some(joined) = joined else {
                return std::future::pending().await;
            };
            // The outer task does not panic (the stage runs in a task of its own);
            // were it lost anyway, its stage could not be named: say so.
            let (i, ran, result) = match joined {
                Ok(ended) => ended,
                Err(e) => {
                    tracing::error!(error = %e, "a supervisor task was lost; its stage is not watched any more");
                    continue;
                }
            };
            let outcome = stage_outcome(result);
            let (name, supervision, _) = &mut self.stages[i];
            let name = *name;
            if std::mem::take(&mut self.reconfiguring[i]) && !self.shutdown.is_cancelled() {
                if let Err(e) = &outcome {
                    tracing::warn!(stage = name, error = %e, "stage ended with an error while stopping for its new configuration");
                }
                tracing::info!(stage = name, "stage starting with its new configuration");
                supervision.reconfigured();
                self.metrics.set_stage(name, supervision.status());
                self.start(i, Duration::ZERO);
                continue;
            }
            let action = supervision.ended(outcome, ran, self.shutdown.is_cancelled());
            let status = supervision.status().clone();
            self.metrics.set_stage(name, &status);
            let error = status.last_error.as_deref().unwrap_or("");
            match action {
                Action::Restart(after) => {
                    tracing::error!(stage = name, error, restarts = status.restarts, after = ?after, "stage stopped; starting it again after a backoff");
                    self.start(i, after);
                }
                Action::Degrade => {
                    tracing::error!(stage = name, error, "stage stopped; running without it");
                }
                Action::StopDaemon(e) => {
                    tracing::error!(stage = name, error = %e, "a stage stopped; shutting down");
                    return anyhow::anyhow!("{name} failed: {e}");
                }
                Action::None => {}
            }
        }
    }

    /// Stops stage `i` to start it again with the configuration as it is now (a
    /// stage left degraded starts again at once).
    fn reconfigure(&mut self, i: usize) {
        let (name, supervision, _) = &mut self.stages[i];
        let name = *name;
        tracing::info!(
            stage = name,
            "configuration changed; restarting the stage alone"
        );
        if supervision.status().state == crate::supervision::State::Degraded {
            supervision.reconfigured();
            self.metrics.set_stage(name, supervision.status());
            self.start(i, Duration::ZERO);
            return;
        }
        self.reconfiguring[i] = true;
        self.stops[i].cancel();
    }

    /// After the shutdown signal: waits for every stage, then lets go of what
    /// they were built from (the event senders among it).
    async fn drain(mut self) {
        // Stages left degraded have no task any more.
        let mut stopped: Vec<bool> = self
            .stages
            .iter()
            .map(|(_, s, _)| s.status().state == crate::supervision::State::Degraded)
            .collect();
        loop {
            let joined = match tokio::time::timeout(DRAIN_REPORT, self.tasks.join_next()).await {
                Ok(Some(joined)) => joined,
                Ok(None) => break,
                Err(_) => {
                    let waiting: Vec<&str> = self
                        .stages
                        .iter()
                        .zip(&stopped)
                        .filter(|(_, s)| !**s)
                        .map(|((name, _, _), _)| *name)
                        .collect();
                    tracing::warn!(stages = ?waiting, "waiting for stages to stop");
                    continue;
                }
            };
            if let Ok((i, ran, result)) = joined {
                stopped[i] = true;
                let outcome = stage_outcome(result);
                let (name, supervision, _) = &mut self.stages[i];
                if let Err(e) = &outcome {
                    tracing::error!(stage = *name, error = %e, "stage stopped with an error");
                }
                supervision.ended(outcome, ran, true);
                self.metrics.set_stage(name, supervision.status());
            }
        }
    }
}

/// How a stage's own task ended: its result, or its panic as an error.
fn stage_outcome(result: Result<Result<(), String>, tokio::task::JoinError>) -> Result<(), String> {
    result.unwrap_or_else(|e| Err(format!("panicked: {e}")))
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
