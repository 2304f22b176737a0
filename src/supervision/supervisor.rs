//! The supervisor (the runtime side of this module's policies): runs each stage
//! in a task of its own, meets its end with its [`Policy`], starts it again after
//! its backoff or when its section of the configuration changes, reports every
//! state to the metrics, and drains the stages at shutdown.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Action, Policy, Stage, Supervision};
use crate::metrics::Metrics;

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
pub struct Supervisor {
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
    pub fn new(shutdown: CancellationToken, metrics: Arc<Metrics>) -> Self {
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
    pub fn add<S: Stage>(
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
    pub fn keep<S: Stage>(&mut self, name: &'static str, policy: Policy, stage: S) {
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
    pub fn add_reconfigurable<S: Stage, T: Send + Sync + 'static>(
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
    pub async fn watch(&mut self) -> anyhow::Error {
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
    pub async fn drain(mut self) {
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
