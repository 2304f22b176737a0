//! The publisher: moves events from the outbox to the broker within the ceilings,
//! and deletes them from the outbox when the broker acknowledges them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, QoS};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::connection::LinkEvent;
use super::limits::{pack_limit, RateLimiter};
use super::session::{Batch, Packer, Plan, Sent, Session};
use super::MqttConfig;
use super::{ControlPublish, InboundAck, InboundMessage, MqttError, Wiring};
use crate::events::{encode_batch, now_ms};
use crate::metrics::Metrics;
use crate::outbox::OutboxHandle;
use crate::topics::Topics;

/// Events fetched from the outbox at once.
const FETCH_EVENTS: usize = 4096;

/// Incoming messages kept while their stage is busy.
const MAX_WAITING_INBOUND: usize = 256;

pub struct Publisher {
    client: AsyncClient,
    link: mpsc::Receiver<LinkEvent>,
    outbox: OutboxHandle,
    cfg: MqttConfig,
    camera_id: String,
    topics: Topics,
    metrics: Arc<Metrics>,
    metrics_interval: Duration,
    started_ms: i64,
    /// When the current connection was made (the status's `ts`).
    connected_ms: i64,
    /// A stage's state changed since the retained status was last published.
    status_stale: bool,
    session: Session,
    packer: Packer,
    limiter: RateLimiter,
    pack_limit: usize,
    connected: bool,
    /// The broker granted our subscriptions on a connection of this process. A
    /// broker that kept our session keeps them; until then (a first connection,
    /// or one lost before the SUBACK, the session maybe an older build's) they are
    /// made on every connection.
    subscribed: bool,
    /// SUBACKs still awaited on this connection.
    subacks_awaited: usize,
    /// Counts connections lost: an incoming message's acknowledgement goes out
    /// only on the connection it came on.
    connection: Arc<AtomicU64>,
    /// Incoming messages waiting for room in their stage's channel (route index),
    /// in arrival order; acknowledged once their stage has taken and handled them.
    waiting_inbound: VecDeque<(usize, InboundMessage)>,
    /// Highest seq fetched into the packer in this session.
    cursor: i64,
    /// Highest seq ever published (across sessions): lower ones are re-sends.
    max_published: i64,
    /// The outbox had nothing after `cursor` when last asked.
    drained: bool,
    /// A metrics message waiting for room under the ceilings.
    pending_metrics: Option<String>,
    /// The effective `[mqtt]` section and metrics interval (remote changes
    /// arrive here).
    mqtt: watch::Receiver<Arc<MqttConfig>>,
    metrics_interval_rx: watch::Receiver<Arc<Duration>>,
    /// Topics subscribed on every connection, and where their messages go.
    routes: Vec<(String, mpsc::Sender<InboundMessage>)>,
    /// Retained messages other stages ask us to publish.
    retained_rx: mpsc::Receiver<ControlPublish>,
    /// Those not yet handed to rumqttc (one per topic, the latest).
    pending_retained: Vec<ControlPublish>,
}

/// The retained `online` message: the birth on connect (`connected_ms`: now), and
/// again when a supervised stage's state changes, with every stage's state.
pub fn birth_payload(
    camera_id: &str,
    started_ms: i64,
    connected_ms: i64,
    stages: &std::collections::BTreeMap<&'static str, crate::supervision::Status>,
) -> String {
    serde_json::json!({
        "state": "online",
        "camera_id": camera_id,
        "version": env!("CARGO_PKG_VERSION"),
        "started_at": started_ms,
        "ts": connected_ms,
        "stages": stages,
    })
    .to_string()
}

/// A stage's state change is published in the retained status at most this often.
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// The retained `offline` message: the Last Will, and the goodbye at shutdown.
pub fn offline_payload(camera_id: &str, reason: &str) -> String {
    serde_json::json!({"state": "offline", "camera_id": camera_id, "reason": reason}).to_string()
}

impl Publisher {
    pub fn new(
        client: AsyncClient,
        link: mpsc::Receiver<LinkEvent>,
        camera_id: &str,
        wiring: Wiring,
    ) -> Self {
        let cfg = (**wiring.mqtt.borrow()).clone();
        let metrics_interval = **wiring.metrics_interval.borrow();
        Self {
            limiter: RateLimiter::new(cfg.max_publishes_per_sec, cfg.max_bytes_per_sec),
            pack_limit: pack_limit(cfg.max_message_bytes, cfg.billing_step_bytes),
            client,
            link,
            outbox: wiring.outbox,
            cfg,
            camera_id: camera_id.to_owned(),
            topics: Topics::new(camera_id),
            metrics: wiring.metrics,
            metrics_interval,
            started_ms: now_ms(),
            connected_ms: 0,
            status_stale: false,
            session: Session::default(),
            packer: Packer::default(),
            connected: false,
            subscribed: false,
            subacks_awaited: 0,
            connection: Arc::new(AtomicU64::new(0)),
            waiting_inbound: VecDeque::new(),
            cursor: 0,
            max_published: 0,
            drained: false,
            pending_metrics: None,
            mqtt: wiring.mqtt,
            metrics_interval_rx: wiring.metrics_interval,
            routes: wiring.inbound,
            retained_rx: wiring.retained,
            pending_retained: Vec::new(),
        }
    }

    /// Takes up a new `[mqtt]` section: ceilings and batching apply from the next
    /// publish on.
    fn reconfigure(&mut self, m: &MqttConfig) {
        self.limiter
            .set_limits(m.max_publishes_per_sec, m.max_bytes_per_sec);
        self.pack_limit = pack_limit(m.max_message_bytes, m.billing_step_bytes);
        self.cfg = m.clone();
    }

    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), MqttError> {
        let mut appended = self.outbox.appended();
        let mut metrics_tick = metrics_ticker(self.metrics_interval).await;
        let mut wake: Option<Instant> = None;
        let mut retained_open = true;
        let mut status_tick = tokio::time::interval(STATUS_EVERY);
        status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let metrics = self.metrics.clone();
        loop {
            // The oldest incoming message waiting for room, and its stage's sender.
            let waiting = self
                .waiting_inbound
                .front()
                .map(|(i, _)| self.routes[*i].1.clone());
            tokio::select! {
                _ = shutdown.cancelled() => break,
                permit = reserve(waiting.clone()), if waiting.is_some() => {
                    if let Some((_, mut message)) = self.waiting_inbound.pop_front() {
                        match permit {
                            Ok(permit) => {
                                permit.send(message);
                            }
                            Err(_) => {
                                message.leave_unacked();
                                Metrics::add(&self.metrics.inbound_dropped, 1);
                                tracing::error!(topic = %message.topic, "inbound message not handled: its stage has stopped; the broker will deliver it again");
                            }
                        }
                    }
                }
                ev = self.link.recv() => match ev {
                    Some(ev) => self.on_link(ev).await?,
                    None => return Err(MqttError::LinkGone),
                },
                changed = appended.changed() => {
                    if changed.is_err() {
                        return Err(MqttError::OutboxGone);
                    }
                    self.drained = false;
                }
                _ = sleep_until(wake), if wake.is_some() => wake = None,
                _ = metrics_tick.tick(), if !self.metrics_interval.is_zero() => self.publish_metrics().await,
                _ = metrics.stages_changed.notified() => self.status_stale = true,
                _ = status_tick.tick(), if self.status_stale && self.connected => {
                    self.status_stale = false;
                    self.send_birth();
                }
                Ok(()) = self.mqtt.changed() => {
                    let m = self.mqtt.borrow_and_update().clone();
                    self.reconfigure(&m);
                }
                Ok(()) = self.metrics_interval_rx.changed() => {
                    self.metrics_interval = **self.metrics_interval_rx.borrow_and_update();
                    metrics_tick = metrics_ticker(self.metrics_interval).await;
                }
                retained = self.retained_rx.recv(), if retained_open => match retained {
                    Some(r) => {
                        if r.retain {
                            self.pending_retained.retain(|p| !p.retain || p.topic != r.topic);
                        } else if self.pending_retained.iter().filter(|p| !p.retain).count()
                            >= super::MAX_PENDING_CONTROL
                        {
                            if let Some(i) = self.pending_retained.iter().position(|p| !p.retain) {
                                let dropped = self.pending_retained.remove(i);
                                Metrics::add(&self.metrics.responses_dropped, 1);
                                tracing::warn!(topic = %dropped.topic, "offline too long: oldest queued response dropped");
                            }
                        }
                        self.pending_retained.push(r);
                        self.flush_retained();
                    }
                    None => retained_open = false,
                },
            }
            if self.connected {
                wake = self.fill().await?;
            }
        }
        self.drain().await
    }

    async fn on_link(&mut self, ev: LinkEvent) -> Result<(), MqttError> {
        match ev {
            LinkEvent::Connected { session_present } => {
                // Our own publishes are never resumed from a kept session: the
                // outbox sends every unacknowledged event again, as after a new one.
                self.forget_session();
                self.connected = true;
                self.connected_ms = now_ms();
                self.status_stale = false;
                self.send_birth();
                // A new session has no subscriptions: make them. A kept one has
                // them (and re-subscribing would make the broker send every
                // retained message again).
                if !session_present || !self.subscribed {
                    self.subacks_awaited = self.routes.len();
                    self.subscribed = self.routes.is_empty();
                    for (topic, _) in &self.routes {
                        if let Err(e) = self.client.try_subscribe(topic.clone(), QoS::AtLeastOnce) {
                            tracing::error!(%topic, error = %e, "cannot subscribe");
                        }
                    }
                }
                self.flush_retained();
                self.publish_metrics().await;
            }
            LinkEvent::Lost { error, quiesced } => {
                // Acknowledgements of what came on that connection are void now.
                self.connection.fetch_add(1, Ordering::SeqCst);
                let unacked = self.forget_session();
                if unacked > 0 {
                    tracing::info!(unacked_batches = unacked, %error, "will re-send unacknowledged batches after reconnecting");
                }
                self.connected = false;
                // The connection task waits for this before touching rumqttc again.
                quiesced.send(()).unwrap_or(());
            }
            LinkEvent::Outgoing(pkid) => {
                if let Err(e) = self.session.outgoing(pkid) {
                    tracing::error!(error = %e, "packet id bookkeeping out of step; forcing a reconnect");
                    self.force_reconnect();
                }
            }
            LinkEvent::PubAck(pkid) => match self.session.puback(pkid) {
                Ok(Some(batch)) => self.outbox.ack(batch.seqs).await?,
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "ignoring an acknowledgement"),
            },
            LinkEvent::SubAck { granted: true } => {
                self.subacks_awaited = self.subacks_awaited.saturating_sub(1);
                self.subscribed = self.subacks_awaited == 0;
            }
            LinkEvent::SubAck { granted: false } => {
                tracing::error!("the broker refused a subscription: commands and remote configuration on that topic will not arrive (check the policy)");
            }
            LinkEvent::Message(publish) => self.route(publish),
            LinkEvent::Disconnected => self.connected = false,
        }
        Ok(())
    }

    /// Hands an incoming message to the stage that subscribed to its topic. The
    /// broker gets its acknowledgement once the stage has handled it; a message
    /// whose stage is busy waits here (at most [`MAX_WAITING_INBOUND`]), one no
    /// stage can take is left unacknowledged, for the broker to deliver again on
    /// the next connection.
    fn route(&mut self, mut publish: rumqttc::Publish) {
        let payload = std::mem::take(&mut publish.payload).to_vec();
        let topic = publish.topic.clone();
        let redelivered = publish.dup;
        let pkid = publish.pkid;
        let ack = Some(InboundAck {
            client: self.client.clone(),
            publish,
            armed: true,
            connection: self.connection.load(Ordering::SeqCst),
            current: self.connection.clone(),
        });
        let message = InboundMessage {
            topic,
            payload,
            ack,
        };
        let Some(route) = self.routes.iter().position(|(t, _)| *t == message.topic) else {
            tracing::warn!(topic = %message.topic, "message on a topic nobody subscribed to; ignored");
            return;
        };
        if redelivered {
            tracing::info!(topic = %message.topic, pkid, "message delivered again by the broker (it may have been handled already)");
        }
        if !self.waiting_inbound.is_empty() {
            return self.wait_for_room(route, message);
        }
        match self.routes[route].1.try_send(message) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(message)) => self.wait_for_room(route, message),
            Err(mpsc::error::TrySendError::Closed(mut m)) => {
                m.leave_unacked();
                Metrics::add(&self.metrics.inbound_dropped, 1);
                tracing::error!(topic = %m.topic, "inbound message not handled: its stage has stopped; the broker will deliver it again");
            }
        }
    }

    fn wait_for_room(&mut self, route: usize, mut message: InboundMessage) {
        if self.waiting_inbound.len() >= MAX_WAITING_INBOUND {
            message.leave_unacked();
            Metrics::add(&self.metrics.inbound_dropped, 1);
            tracing::warn!(topic = %message.topic, "inbound message not taken now: its stage is busy and {MAX_WAITING_INBOUND} wait already; the broker will deliver it again on the next connection");
            return;
        }
        self.waiting_inbound.push_back((route, message));
    }

    /// Publishes the retained messages other stages asked for, when connected.
    fn flush_retained(&mut self) {
        if !self.connected {
            return;
        }
        for r in std::mem::take(&mut self.pending_retained) {
            let wire = (r.payload.len() + r.topic.len()) as u64;
            if self.request(
                r.topic,
                QoS::AtLeastOnce,
                r.retain,
                r.payload,
                Sent::Control,
            ) {
                self.limiter.record(Instant::now(), wire);
            }
        }
    }

    /// Drops what this session knew; the outbox will be read again from the start.
    fn forget_session(&mut self) -> usize {
        self.packer.clear();
        self.cursor = 0;
        self.drained = false;
        self.pending_metrics = None;
        self.session.reset()
    }

    fn force_reconnect(&mut self) {
        // Disconnecting ends the session; the connection task reconnects.
        if let Err(e) = self.client.try_disconnect() {
            tracing::error!(error = %e, "cannot request a disconnect");
        }
        self.connected = false;
        self.forget_session();
    }

    /// Hands a publish to rumqttc and records it in the session.
    fn request(
        &mut self,
        topic: String,
        qos: QoS,
        retain: bool,
        payload: String,
        sent: Sent,
    ) -> bool {
        match self.client.try_publish(topic, qos, retain, payload) {
            Ok(()) => {
                self.session.requested(sent);
                true
            }
            Err(e) => {
                // The request channel is sized above max_inflight, so this means the
                // connection task is gone or stuck; the events stay in the outbox.
                tracing::error!(error = %e, "cannot hand a publish to the MQTT client");
                false
            }
        }
    }

    /// Publishes as much as the ceilings allow. Returns when to try again if the
    /// rate limiter is what stopped it.
    async fn fill(&mut self) -> Result<Option<Instant>, MqttError> {
        if let Some(at) = self.send_pending_metrics(Instant::now()) {
            return Ok(Some(at));
        }
        loop {
            if self.session.unacked() >= self.cfg.max_inflight as usize {
                return Ok(None);
            }
            if self.packer.buffered_bytes() < self.pack_limit && !self.drained {
                let events = self
                    .outbox
                    .fetch(
                        &self.camera_id,
                        self.cursor,
                        FETCH_EVENTS,
                        4 * self.pack_limit,
                    )
                    .await?;
                match events.last() {
                    Some(last) => self.cursor = last.seq,
                    None => self.drained = true,
                }
                self.packer.push(events);
            }
            let plan = match self
                .packer
                .plan(self.pack_limit, self.cfg.max_message_bytes)
            {
                Some(plan) => plan,
                None => return Ok(None),
            };
            let (kind, positions, bytes) = match plan {
                Plan::Batch {
                    kind,
                    positions,
                    bytes,
                } => (kind, positions, bytes),
                Plan::TooLarge { seq, bytes } => {
                    Metrics::add(&self.metrics.events_refused, 1);
                    tracing::error!(
                        seq,
                        bytes,
                        max = self.cfg.max_message_bytes,
                        "event larger than mqtt.max_message_bytes; deleting it unsent"
                    );
                    self.packer.take(&[0]);
                    self.outbox.ack(vec![seq]).await?;
                    continue;
                }
            };
            let topic = self.topics.events(&kind);
            let wire = (bytes + topic.len()) as u64;
            let now = Instant::now();
            if let Err(at) = self.limiter.check(now, wire) {
                return Ok(Some(at));
            }
            let events = self.packer.take(&positions);
            let payload = encode_batch(&events);
            debug_assert_eq!(payload.len(), bytes);
            let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
            let first = seqs[0];
            let last = *seqs.last().expect("a batch has at least one event");
            let batch = Batch { seqs, bytes };
            if !self.request(topic, QoS::AtLeastOnce, false, payload, Sent::Batch(batch)) {
                self.forget_session();
                return Ok(Some(now + Duration::from_secs(1)));
            }
            self.limiter.record(now, wire);
            Metrics::add(&self.metrics.batches_published, 1);
            Metrics::add(&self.metrics.bytes_published, wire);
            if first <= self.max_published {
                Metrics::add(&self.metrics.batches_republished, 1);
            }
            self.max_published = self.max_published.max(last);
        }
    }

    async fn publish_metrics(&mut self) {
        if !self.connected || self.metrics_interval.is_zero() {
            return;
        }
        let stats = match self.outbox.stats().await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read outbox stats for the metrics message");
                None
            }
        };
        let payload = crate::metrics::payload(
            &self.camera_id,
            self.started_ms,
            &self.metrics,
            stats.as_ref(),
        );
        // Queued ahead of the next batch, so the ceilings hold and a long drain at
        // the bandwidth ceiling still reports. A newer snapshot replaces an unsent one.
        self.pending_metrics = Some(payload);
    }

    /// Publishes the retained `online` status with every stage's state.
    fn send_birth(&mut self) {
        let stages = self.metrics.stages();
        let birth = birth_payload(&self.camera_id, self.started_ms, self.connected_ms, &stages);
        self.send_status(birth);
    }

    /// Publishes a retained status message at once (one per connection or shutdown),
    /// counting it against the ceilings.
    fn send_status(&mut self, payload: String) {
        let topic = self.topics.status();
        let wire = (payload.len() + topic.len()) as u64;
        if self.request(topic, QoS::AtLeastOnce, true, payload, Sent::Control) {
            self.limiter.record(Instant::now(), wire);
        }
    }

    /// Sends the queued metrics message if the ceilings allow; else when to retry.
    fn send_pending_metrics(&mut self, now: Instant) -> Option<Instant> {
        let payload = self.pending_metrics.take()?;
        let topic = self.topics.metrics();
        let wire = (payload.len() + topic.len()) as u64;
        if let Err(at) = self.limiter.check(now, wire) {
            self.pending_metrics = Some(payload);
            return Some(at);
        }
        if self.request(topic, QoS::AtMostOnce, false, payload, Sent::Fire) {
            self.limiter.record(now, wire);
        }
        None
    }

    /// At shutdown: stop sending, wait (bounded) for outstanding acknowledgements,
    /// say goodbye, disconnect.
    async fn drain(mut self) -> Result<(), MqttError> {
        if !self.connected {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + self.cfg.shutdown_drain;
        let goodbye = offline_payload(&self.camera_id, "shutdown");
        self.send_status(goodbye);
        while self.connected && self.session.unacked() > 0 {
            match tokio::time::timeout_at(deadline, self.link.recv()).await {
                Ok(Some(ev)) => self.on_link(ev).await?,
                Ok(None) | Err(_) => break,
            }
        }
        let unacked = self.session.unacked();
        if unacked > 0 {
            tracing::info!(
                unacked,
                "shutting down with unacknowledged publishes; they stay in the outbox"
            );
        }
        if let Err(e) = self.client.try_disconnect() {
            tracing::warn!(error = %e, "cannot send DISCONNECT");
        }
        // Let the connection task write the DISCONNECT.
        // Bounded: a connection that never confirms must not hold the shutdown up.
        let written = tokio::time::timeout_at(deadline + Duration::from_secs(1), async {
            while let Some(ev) = self.link.recv().await {
                if let LinkEvent::Disconnected = ev {
                    break;
                }
                if let LinkEvent::Lost { quiesced, .. } = ev {
                    quiesced.send(()).unwrap_or(());
                    break;
                }
            }
        })
        .await;
        if written.is_err() {
            tracing::warn!("DISCONNECT not confirmed in time; closing anyway");
        }
        Ok(())
    }
}

/// A ticker for the metrics message (a long one stands in when it is off), past
/// its immediate first tick.
async fn metrics_ticker(interval: Duration) -> tokio::time::Interval {
    let period = if interval.is_zero() {
        Duration::from_secs(3600 * 24 * 365)
    } else {
        interval
    };
    let mut tick = tokio::time::interval(period);
    tick.tick().await;
    tick
}

/// Room in a stage's channel, or never when nothing waits.
async fn reserve(
    tx: Option<mpsc::Sender<InboundMessage>>,
) -> Result<mpsc::OwnedPermit<InboundMessage>, mpsc::error::SendError<()>> {
    match tx {
        Some(tx) => tx.reserve_owned().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at.into()).await;
    }
}
