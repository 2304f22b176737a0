//! The outbox stage: one task that owns the [`Store`] and serves producers (events in)
//! and the publisher (fetch, ack) through bounded channels.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use super::store::{OutboxError, OutboxStats, Store};
use super::OutboxConfig;
use crate::events::{NewEvent, StoredEvent};
use crate::metrics::Metrics;

/// Producers' side of the outbox. Full channel: the producer waits (events are
/// never dropped on the way in).
pub type EventSender = mpsc::Sender<NewEvent>;

const HOUSEKEEPING: Duration = Duration::from_secs(5);
const VACUUM_EVERY: u32 = 12;
const MAX_GROUP_EVENTS: usize = 2048;
const MAX_GROUP_COMMANDS: usize = 256;

enum Command {
    Fetch {
        camera_id: String,
        after: i64,
        max_events: usize,
        max_bytes: usize,
        reply: oneshot::Sender<Result<Vec<StoredEvent>, OutboxError>>,
    },
    Ack {
        seqs: Vec<i64>,
    },
    Stats {
        reply: oneshot::Sender<Result<OutboxStats, OutboxError>>,
    },
}

/// The publisher's and health stage's side of the outbox.
#[derive(Clone)]
pub struct OutboxHandle {
    tx: mpsc::Sender<Command>,
    appended: watch::Receiver<i64>,
}

impl OutboxHandle {
    /// Up to `max_events` of the oldest events with `seq > after`, about `max_bytes`.
    pub async fn fetch(
        &self,
        camera_id: &str,
        after: i64,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredEvent>, OutboxError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Fetch {
                camera_id: camera_id.to_owned(),
                after,
                max_events,
                max_bytes,
                reply,
            })
            .await
            .map_err(|_| OutboxError::Stopped)?;
        rx.await.map_err(|_| OutboxError::Stopped)?
    }

    /// Deletes events the broker acknowledged.
    pub async fn ack(&self, seqs: Vec<i64>) -> Result<(), OutboxError> {
        self.tx
            .send(Command::Ack { seqs })
            .await
            .map_err(|_| OutboxError::Stopped)
    }

    pub async fn stats(&self) -> Result<OutboxStats, OutboxError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Stats { reply })
            .await
            .map_err(|_| OutboxError::Stopped)?;
        rx.await.map_err(|_| OutboxError::Stopped)?
    }

    /// Changes whenever events are committed (the value is the highest new seq).
    pub fn appended(&self) -> watch::Receiver<i64> {
        self.appended.clone()
    }
}

/// The outbox stage.
pub struct Outbox {
    store: Store,
    events_rx: mpsc::Receiver<NewEvent>,
    cmd_rx: mpsc::Receiver<Command>,
    appended_tx: watch::Sender<i64>,
    config: watch::Receiver<Arc<OutboxConfig>>,
    metrics: Arc<Metrics>,
}

impl Outbox {
    pub fn new(
        store: Store,
        channel_capacity: usize,
        config: watch::Receiver<Arc<OutboxConfig>>,
        metrics: Arc<Metrics>,
    ) -> (Self, OutboxHandle, EventSender) {
        let (events_tx, events_rx) = mpsc::channel(channel_capacity);
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let (appended_tx, appended) = watch::channel(0);
        let stage = Self {
            store,
            events_rx,
            cmd_rx,
            appended_tx,
            config,
            metrics,
        };
        (
            stage,
            OutboxHandle {
                tx: cmd_tx,
                appended,
            },
            events_tx,
        )
    }

    /// Runs until every producer and every handle is gone (the app drops them at
    /// shutdown), so the publisher's last acknowledgements are still applied.
    pub async fn run(mut self) -> Result<(), OutboxError> {
        self.update_gauges().await?;
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks = 0u32;
        let (mut events_open, mut cmds_open) = (true, true);
        while events_open || cmds_open {
            let mut events = Vec::new();
            let mut cmds = Vec::new();
            tokio::select! {
                ev = self.events_rx.recv(), if events_open => match ev {
                    Some(ev) => events.push(ev),
                    None => events_open = false,
                },
                cmd = self.cmd_rx.recv(), if cmds_open => match cmd {
                    Some(cmd) => cmds.push(cmd),
                    None => cmds_open = false,
                },
                _ = housekeeping.tick() => {
                    ticks = ticks.wrapping_add(1);
                    self.housekeeping(ticks.is_multiple_of(VACUUM_EVERY)).await?;
                    continue;
                }
                Ok(()) = self.config.changed() => {
                    let outbox = self.config.borrow_and_update().clone();
                    self.store.set_limits(&outbox).await?;
                    continue;
                }
            }
            let group_bytes = self.store.group_bytes();
            let mut bytes: usize = events.iter().map(|e| e.payload.get().len()).sum();
            while bytes < group_bytes && events.len() < MAX_GROUP_EVENTS {
                match self.events_rx.try_recv() {
                    Ok(ev) => {
                        bytes += ev.payload.get().len();
                        events.push(ev);
                    }
                    Err(_) => break,
                }
            }
            while cmds.len() < MAX_GROUP_COMMANDS {
                match self.cmd_rx.try_recv() {
                    Ok(cmd) => cmds.push(cmd),
                    Err(_) => break,
                }
            }
            self.apply(events, cmds).await?;
        }
        self.store.close().await
    }

    async fn apply(
        &mut self,
        events: Vec<NewEvent>,
        cmds: Vec<Command>,
    ) -> Result<(), OutboxError> {
        // Acknowledgements first: they free room for the new events.
        let mut acked = Vec::new();
        let mut questions = Vec::new();
        for cmd in cmds {
            match cmd {
                Command::Ack { seqs } => acked.extend(seqs),
                other => questions.push(other),
            }
        }
        self.apply_acks(acked).await?;
        self.apply_events(events).await?;
        Metrics::set(&self.metrics.outbox_depth, self.store.depth());
        Metrics::set(&self.metrics.outbox_bytes, self.store.bytes());
        for q in questions {
            self.answer(q).await?;
        }
        Ok(())
    }

    async fn apply_acks(&mut self, acked: Vec<i64>) -> Result<(), OutboxError> {
        if acked.is_empty() {
            return Ok(());
        }
        let deleted = self.store.ack(&acked).await?;
        Metrics::add(&self.metrics.events_acked, deleted);
        if let Some(&max) = acked.iter().max() {
            self.metrics
                .last_acked_seq
                .fetch_max(max, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    async fn apply_events(&mut self, events: Vec<NewEvent>) -> Result<(), OutboxError> {
        if events.is_empty() {
            return Ok(());
        }
        let outcome = self.store.append(events).await?;
        Metrics::add(&self.metrics.events_enqueued, outcome.accepted.len() as u64);
        if outcome.evicted > 0 {
            Metrics::add(&self.metrics.events_evicted, outcome.evicted);
            tracing::warn!(
                evicted = outcome.evicted,
                depth = self.store.depth(),
                "outbox full: deleted the oldest unsent events to make room (when_full = drop_oldest)"
            );
        }
        if let Some((first, reason)) = outcome.refused.first() {
            Metrics::add(&self.metrics.events_refused, outcome.refused.len() as u64);
            tracing::warn!(
                refused = outcome.refused.len(),
                first_event_id = %first,
                reason,
                "outbox refused new events"
            );
        }
        if let Some(&last) = outcome.accepted.last() {
            self.appended_tx.send_replace(last);
        }
        Ok(())
    }

    async fn answer(&mut self, cmd: Command) -> Result<(), OutboxError> {
        match cmd {
            Command::Ack { seqs } => self.apply_acks(seqs).await?,
            Command::Fetch {
                camera_id,
                after,
                max_events,
                max_bytes,
                reply,
            } => {
                let result = self
                    .store
                    .fetch(&camera_id, after, max_events, max_bytes)
                    .await;
                // A dropped receiver means the publisher went away (reconnect or
                // shutdown): nothing is lost, the rows stay until acknowledged.
                if let Err(Err(e)) = reply.send(result) {
                    return Err(e);
                }
            }
            Command::Stats { reply } => {
                let stats = self.store.stats().await;
                if let Ok(s) = &stats {
                    self.set_oldest(s);
                }
                // A dropped reply only means the asker stopped waiting.
                drop(reply.send(stats));
            }
        }
        Ok(())
    }

    async fn housekeeping(&mut self, vacuum: bool) -> Result<(), OutboxError> {
        let expired = self.store.expire().await?;
        if expired > 0 {
            Metrics::add(&self.metrics.events_expired, expired);
            tracing::warn!(expired, "deleted unsent events older than outbox.max_age");
        }
        let before = self.store.depth();
        self.store.refresh_counters().await?;
        if self.store.depth() > before {
            // Rows added by another process (`edgecam emit`): tell the publisher.
            let last = self.store.stats().await?.last_seq;
            self.appended_tx.send_replace(last);
        }
        if vacuum {
            self.store.vacuum().await?;
        }
        self.update_gauges().await
    }

    async fn update_gauges(&mut self) -> Result<(), OutboxError> {
        let stats = self.store.stats().await?;
        Metrics::set(&self.metrics.outbox_depth, stats.depth);
        Metrics::set(&self.metrics.outbox_bytes, stats.bytes);
        self.set_oldest(&stats);
        self.metrics
            .last_acked_seq
            .fetch_max(stats.last_acked_seq, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn set_oldest(&self, stats: &OutboxStats) {
        let oldest = stats
            .oldest_age_s
            .map(|age| crate::events::now_ms() - (age * 1000.0) as i64)
            .unwrap_or(0);
        Metrics::set(&self.metrics.outbox_oldest_ts_ms, oldest);
    }
}
