//! What the supervisor does when a stage ends, without I/O: each stage's written
//! policy, its state as the metrics report it, and the backoff between restarts.
//! The supervisor itself, which runs the stages, is [`Supervisor`]; `app.rs`
//! builds the stages and hands them to it.

mod supervisor;

pub use supervisor::Supervisor;

use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// The one shape of a supervised stage: built from its section of the
/// configuration (and its channels), it runs until `shutdown` is cancelled or it
/// ends on its own; an error says why, and its [`Policy`] decides what follows.
/// `&mut self`, so that a stage that keeps state (requests, layers, what it
/// published) is run again as it was.
pub trait Stage: Send + 'static {
    type Error: std::fmt::Display;

    fn run(
        &mut self,
        shutdown: CancellationToken,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// What a stage's end means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Started again after a backoff that doubles from [`FIRST_BACKOFF`] to
    /// [`MAX_BACKOFF`] (back to the first after a run of [`STEADY`]).
    Restart,
    /// The daemon stops with an error (systemd starts it again).
    StopDaemon,
    /// Left stopped, its error reported: the rest runs without it.
    #[cfg_attr(not(feature = "uploads"), allow(dead_code))]
    Degrade,
}

/// A stage's state as the metrics message reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Running,
    /// Ended unexpectedly; starts again after its backoff.
    Restarting,
    /// Ended and left stopped; the daemon runs without it.
    Degraded,
    /// Ended with the daemon's shutdown, or stopping the daemon.
    Stopped,
}

/// A stage's state, how often it was restarted and why it last ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    pub state: State,
    pub restarts: u64,
    pub last_error: Option<String>,
    /// How long the stage's oldest piece of work still going (a frame analysed,
    /// a configuration saved) has taken, in seconds, once it passes
    /// [`BUSY_REPORTED`]; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub busy_s: Option<u64>,
}

/// What the supervisor does next with an ended stage.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start it again after this long.
    Restart(Duration),
    /// Stop the daemon with this error.
    StopDaemon(String),
    /// Leave it stopped.
    Degrade,
    /// Nothing: the daemon is shutting down.
    None,
}

/// A piece of work running this long shows in the stage's status (`busy_s`).
pub const BUSY_REPORTED: Duration = Duration::from_secs(10);
/// A piece of work running this long means its stage is stuck: no frame, even on
/// a slow camera, takes a tenth of this. The watchdog ping is then withheld, so
/// systemd restarts the daemon (a blocking call cannot be cancelled from within).
pub const STUCK_AFTER: Duration = Duration::from_secs(300);

pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A stage that ran this long before ending starts again after the first backoff.
pub const STEADY: Duration = Duration::from_secs(120);

/// One stage under supervision.
#[derive(Debug, Clone)]
pub struct Supervision {
    pub policy: Policy,
    status: Status,
    backoff: Duration,
}

impl Supervision {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            status: Status {
                state: State::Running,
                restarts: 0,
                last_error: None,
                busy_s: None,
            },
            backoff: FIRST_BACKOFF,
        }
    }

    pub fn status(&self) -> &Status {
        &self.status
    }

    /// The stage ended after running `ran` with `outcome` (an error, or `Ok` for
    /// a stage that returned on its own); `shutting_down` when the daemon asked it
    /// to.
    pub fn ended(
        &mut self,
        outcome: Result<(), String>,
        ran: Duration,
        shutting_down: bool,
    ) -> Action {
        if shutting_down {
            self.status.state = State::Stopped;
            if let Err(e) = outcome {
                self.status.last_error = Some(e);
            }
            return Action::None;
        }
        let error = outcome
            .err()
            .unwrap_or_else(|| "stopped unexpectedly".to_owned());
        self.status.last_error = Some(error.clone());
        match self.policy {
            Policy::Restart => {
                if ran >= STEADY {
                    self.backoff = FIRST_BACKOFF;
                }
                let after = self.backoff;
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                self.status.state = State::Restarting;
                self.status.restarts += 1;
                Action::Restart(after)
            }
            Policy::StopDaemon => {
                self.status.state = State::Stopped;
                Action::StopDaemon(error)
            }
            Policy::Degrade => {
                self.status.state = State::Degraded;
                Action::Degrade
            }
        }
    }

    /// The stage was stopped by the supervisor to apply a new configuration: it
    /// starts again at once, running, its restarts and backoff as they were.
    pub fn reconfigured(&mut self) {
        self.status.state = State::Running;
    }
}

/// Whether the systemd watchdog may be pinged: every supervised stage is running
/// or within its policy (restarting after its backoff, or degraded by design), no
/// stage has been on one piece of work for [`STUCK_AFTER`], and the MQTT event
/// loop has come round within `loop_limit` (it polls at least once a keepalive, a
/// connection timeout or a backoff). A stuck stage or loop is a wedged daemon that
/// only a restart frees. `Err` says why the ping is withheld.
pub fn watchdog_verdict<'a>(
    stages: impl IntoIterator<Item = (&'a str, &'a Status)>,
    loop_idle: Duration,
    loop_limit: Duration,
) -> Result<(), String> {
    if loop_idle > loop_limit {
        return Err(format!(
            "the MQTT event loop has not come round for {} s (limit {} s)",
            loop_idle.as_secs(),
            loop_limit.as_secs()
        ));
    }
    let (mut stopped, mut stuck) = (Vec::new(), Vec::new());
    for (name, s) in stages {
        if s.state == State::Stopped {
            stopped.push(name);
        }
        if let Some(busy) = s.busy_s.filter(|b| *b >= STUCK_AFTER.as_secs()) {
            stuck.push(format!("{name} ({busy} s)"));
        }
    }
    if !stopped.is_empty() {
        return Err(format!(
            "stopped outside a shutdown: {}",
            stopped.join(", ")
        ));
    }
    if !stuck.is_empty() {
        return Err(format!(
            "stuck on one piece of work for longer than {} s: {}",
            STUCK_AFTER.as_secs(),
            stuck.join(", ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHORT: Duration = Duration::from_secs(3);

    fn status(state: State) -> Status {
        Status {
            state,
            restarts: 0,
            last_error: None,
            busy_s: None,
        }
    }

    #[test]
    fn the_watchdog_is_fed_while_stages_run_restart_or_degrade_by_policy() {
        let (run, restart, degraded) = (
            status(State::Running),
            status(State::Restarting),
            status(State::Degraded),
        );
        let stages = [
            ("video", &run),
            ("uploads", &degraded),
            ("plate_reading", &restart),
        ];
        assert_eq!(watchdog_verdict(stages, SHORT, STEADY), Ok(()));
    }

    #[test]
    fn a_stopped_stage_or_a_stuck_mqtt_loop_withholds_the_watchdog() {
        let (run, stopped) = (status(State::Running), status(State::Stopped));
        let err = watchdog_verdict([("video", &run), ("health", &stopped)], SHORT, STEADY);
        assert_eq!(err, Err("stopped outside a shutdown: health".into()));
        let err = watchdog_verdict([("video", &run)], STEADY * 2, STEADY).unwrap_err();
        assert!(err.contains("MQTT event loop"), "{err}");
    }

    #[test]
    fn a_stage_stuck_on_one_piece_of_work_withholds_the_watchdog() {
        let busy = |s: u64| Status {
            busy_s: Some(s),
            ..status(State::Running)
        };
        let (slow, stuck) = (busy(STUCK_AFTER.as_secs() - 1), busy(STUCK_AFTER.as_secs()));
        assert_eq!(
            watchdog_verdict([("plate_reading", &slow)], SHORT, STEADY),
            Ok(())
        );
        assert_eq!(
            watchdog_verdict(
                [("plate_reading", &slow), ("object_detection", &stuck)],
                SHORT,
                STEADY
            ),
            Err(
                "stuck on one piece of work for longer than 300 s: object_detection (300 s)".into()
            )
        );
    }

    #[test]
    fn a_restartable_stage_backs_off_doubling_to_the_cap_and_counts_restarts() {
        let mut s = Supervision::new(Policy::Restart);
        let mut waits = Vec::new();
        for _ in 0..8 {
            match s.ended(Err("model missing".into()), SHORT, false) {
                Action::Restart(after) => waits.push(after.as_secs()),
                other => panic!("{other:?}"),
            }
            assert_eq!(s.status().state, State::Restarting);
        }
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(s.status().restarts, 8);
        assert_eq!(s.status().last_error.as_deref(), Some("model missing"));
    }

    #[test]
    fn a_stage_restarted_for_a_new_configuration_runs_and_keeps_its_count_and_backoff() {
        let mut s = Supervision::new(Policy::Restart);
        s.ended(Err("model missing".into()), SHORT, false);
        s.reconfigured();
        assert_eq!(s.status().state, State::Running);
        assert_eq!(s.status().restarts, 1);
        assert_eq!(
            s.ended(Err("model missing".into()), SHORT, false),
            Action::Restart(FIRST_BACKOFF * 2),
            "a new configuration is not a reason to retry faster"
        );
    }

    #[test]
    fn a_stage_that_ran_steadily_starts_again_after_the_first_backoff() {
        let mut s = Supervision::new(Policy::Restart);
        for _ in 0..4 {
            s.ended(Err("x".into()), SHORT, false);
        }
        assert_eq!(
            s.ended(Err("x".into()), STEADY, false),
            Action::Restart(FIRST_BACKOFF)
        );
    }

    #[test]
    fn a_stage_returning_on_its_own_is_an_error_too() {
        let mut s = Supervision::new(Policy::Degrade);
        assert_eq!(s.ended(Ok(()), SHORT, false), Action::Degrade);
        assert_eq!(s.status().state, State::Degraded);
        assert_eq!(
            s.status().last_error.as_deref(),
            Some("stopped unexpectedly")
        );
    }

    #[test]
    fn a_vital_stage_stops_the_daemon_and_shutdown_restarts_nothing() {
        let mut s = Supervision::new(Policy::StopDaemon);
        assert_eq!(
            s.ended(Err("disk gone".into()), SHORT, false),
            Action::StopDaemon("disk gone".into())
        );
        let mut r = Supervision::new(Policy::Restart);
        assert_eq!(r.ended(Ok(()), SHORT, true), Action::None);
        assert_eq!(r.status().state, State::Stopped);
        assert_eq!(r.status().restarts, 0);
    }
}
