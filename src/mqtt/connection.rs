//! The one task that owns rumqttc's event loop. It polls without pause, reports
//! what matters to the publisher as [`LinkEvent`]s, and after an error waits a
//! jittered backoff before polling again (rumqttc would reconnect at once).
//!
//! After an error it first waits for the publisher to acknowledge the loss
//! (so no new request can slip in), then drops everything rumqttc still holds
//! (pending requests and in-flight state): the outbox re-sends those events, and
//! rumqttc must not send stale publishes whose PUBACKs we could not match.
//!
//! The loop never waits on the publisher: while the publisher is busy (fetching
//! from the outbox, say), reports queue in the connection's own backlog, in order,
//! and the loop keeps reading acknowledgements, answering pings and writing what
//! was requested. Only a backlog of [`MAX_BACKLOG`] reports (far more than
//! rumqttc's in-flight window and request channel can produce) pauses polling
//! until the publisher catches up; each such pause is counted.
//!
//! A link can also die silently (a cellular dead zone, half-open TCP): nothing
//! closes, writes still succeed into the socket buffer, and only the next
//! keepalive would tell. [`AckWatch`] notices it sooner, for free: when a
//! publish, subscription or ping has waited `mqtt.ack_timeout` for its
//! acknowledgement and nothing at all arrived meanwhile, the connection is
//! treated as lost.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{ConnectReturnCode, Event, EventLoop, MqttState, Outgoing, Packet, Publish};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::MqttConfig;
use crate::backoff::Backoff;
use crate::metrics::Metrics;

/// What the event loop reports to the publisher.
#[derive(Debug)]
pub enum LinkEvent {
    /// CONNACK accepted. `session_present`: the broker kept our session
    /// (subscriptions, and QoS 1 messages queued while we were away, which follow).
    Connected { session_present: bool },
    /// The connection failed or was lost. Reply on `quiesced` once no more
    /// requests will be made until the next `Connected`.
    Lost {
        error: String,
        quiesced: oneshot::Sender<()>,
    },
    /// rumqttc wrote the next requested publish with this packet id (0 for QoS 0).
    Outgoing(u16),
    /// The broker acknowledged this packet id.
    PubAck(u16),
    /// The broker answered a subscription: `granted` unless it refused a topic.
    SubAck { granted: bool },
    /// A message arrived on a subscribed topic. QoS 1 ones are acknowledged to the
    /// broker only once their stage has handled them (manual acks).
    Message(Publish),
    /// Our DISCONNECT was written; the session is over.
    Disconnected,
}

/// Reports the connection keeps for a busy publisher before it pauses polling.
pub const MAX_BACKLOG: usize = 4096;

/// Most doublings of the acknowledgement wait after dead links in a row.
const MAX_STREAK: u32 = 4;

/// Whether the broker is still answering, without I/O: counts what waits for an
/// acknowledgement and since when nothing has been heard.
///
/// A slow uplink draining large batches can take longer than the wait to get an
/// acknowledgement back, and would then be dropped again and again with nothing
/// drained. So each dead link in a row doubles the wait (at most 16 times the
/// configured one), until a connection has everything it sent acknowledged.
#[derive(Debug)]
pub struct AckWatch {
    outstanding: u32,
    /// Since when something has waited with nothing received; `None` when nothing waits.
    waiting_since: Option<Instant>,
    last_incoming: Instant,
    /// Dead links declared since everything was last acknowledged.
    streak: u32,
}

impl AckWatch {
    pub fn new(now: Instant) -> Self {
        Self {
            outstanding: 0,
            waiting_since: None,
            last_incoming: now,
            streak: 0,
        }
    }

    /// The wait in force: `base`, doubled per dead link in a row.
    pub fn timeout(&self, base: Duration) -> Duration {
        base * (1 << self.streak.min(MAX_STREAK))
    }

    /// The link was declared dead.
    pub fn dead(&mut self) {
        self.streak = (self.streak + 1).min(MAX_STREAK);
    }

    /// We wrote a packet the broker must acknowledge (QoS 1 publish, subscribe, ping).
    pub fn sent(&mut self, now: Instant) {
        self.outstanding += 1;
        self.waiting_since.get_or_insert(now);
    }

    /// A packet arrived; `is_ack` when it acknowledges one we wrote. Anything
    /// received shows the link is alive, so the wait starts again.
    pub fn received(&mut self, now: Instant, is_ack: bool) {
        if is_ack {
            self.outstanding = self.outstanding.saturating_sub(1);
        }
        self.last_incoming = now;
        self.waiting_since = (self.outstanding > 0).then_some(now);
        if is_ack && self.outstanding == 0 {
            // Everything sent was acknowledged: the link keeps up.
            self.streak = 0;
        }
    }

    /// When the link is to be declared dead if nothing arrives before.
    pub fn deadline(&self, timeout: Duration) -> Option<Instant> {
        self.waiting_since.map(|t| t + timeout)
    }

    /// How long nothing has been heard from the broker.
    pub fn silence(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_incoming)
    }

    /// A new connection: nothing waits (the streak stays).
    pub fn reset(&mut self, now: Instant) {
        *self = Self {
            streak: self.streak,
            ..Self::new(now)
        };
    }
}

pub struct Connection {
    eventloop: EventLoop,
    tx: mpsc::Sender<LinkEvent>,
    backoff: Backoff,
    max_inflight: u16,
    metrics: Arc<Metrics>,
    config: watch::Receiver<Arc<MqttConfig>>,
    /// Reports not yet taken by the publisher, oldest first.
    backlog: VecDeque<LinkEvent>,
}

impl Connection {
    pub fn new(
        eventloop: EventLoop,
        tx: mpsc::Sender<LinkEvent>,
        backoff: Backoff,
        max_inflight: u16,
        metrics: Arc<Metrics>,
        config: watch::Receiver<Arc<MqttConfig>>,
    ) -> Self {
        Self {
            eventloop,
            tx,
            backoff,
            max_inflight,
            metrics,
            config,
            backlog: VecDeque::new(),
        }
    }

    /// Runs until the publisher drops its receiver or our DISCONNECT is written.
    pub async fn run(mut self) {
        let mut connected = false;
        let mut watch = AckWatch::new(Instant::now());
        loop {
            self.metrics.mqtt_loop_ms.store(
                crate::metrics::mono_ms(),
                std::sync::atomic::Ordering::Relaxed,
            );
            let ack_timeout = watch.timeout(self.config.borrow().ack_timeout);
            let deadline = if connected {
                watch.deadline(ack_timeout)
            } else {
                None
            };
            let room = self.backlog.len() < MAX_BACKLOG;
            let polled = tokio::select! {
                r = self.eventloop.poll(), if room => Some(r),
                permit = self.tx.reserve(), if !self.backlog.is_empty() => {
                    let Ok(permit) = permit else { return };
                    if let Some(report) = self.backlog.pop_front() {
                        permit.send(report);
                    }
                    if self.backlog.len() + 1 == MAX_BACKLOG {
                        tracing::info!("the publisher caught up; reading from the broker again");
                    }
                    continue;
                }
                // Acknowledgements go unread while paused: no verdict on the link.
                _ = sleep_until(deadline), if deadline.is_some() && room => None,
                _ = self.tx.closed() => return,
            };
            let now = Instant::now();
            let polled = match polled {
                Some(polled) => polled,
                None => {
                    let silence = watch.silence(now);
                    watch.dead();
                    Metrics::add(&self.metrics.dead_links, 1);
                    Metrics::set(&self.metrics.last_dead_link_ms, silence.as_millis() as i64);
                    tracing::warn!(
                        ack_timeout = ?ack_timeout,
                        silent_for = ?silence,
                        "no acknowledgement from the broker in time; treating the connection as dead"
                    );
                    let error = format!(
                        "no acknowledgement from the broker for {} ms (mqtt.ack_timeout)",
                        ack_timeout.as_millis()
                    );
                    if !self.lost(error, &mut connected).await {
                        return;
                    }
                    continue;
                }
            };
            let report = match polled {
                Ok(Event::Incoming(packet)) => {
                    let is_ack = matches!(
                        packet,
                        Packet::PubAck(_)
                            | Packet::SubAck(_)
                            | Packet::UnsubAck(_)
                            | Packet::PingResp
                    );
                    watch.received(now, is_ack);
                    match packet {
                        Packet::ConnAck(ack) if ack.code == ConnectReturnCode::Success => {
                            connected = true;
                            watch.reset(now);
                            self.backoff.reset();
                            Metrics::add(&self.metrics.connects, 1);
                            if ack.session_present {
                                Metrics::add(&self.metrics.sessions_resumed, 1);
                            }
                            tracing::info!(
                                broker = %self.eventloop.mqtt_options.broker_address().0,
                                port = self.eventloop.mqtt_options.broker_address().1,
                                session_present = ack.session_present,
                                "connected to the broker"
                            );
                            Some(LinkEvent::Connected {
                                session_present: ack.session_present,
                            })
                        }
                        Packet::PubAck(ack) => Some(LinkEvent::PubAck(ack.pkid)),
                        Packet::SubAck(ack) => Some(LinkEvent::SubAck {
                            granted: ack
                                .return_codes
                                .iter()
                                .all(|c| !matches!(c, rumqttc::SubscribeReasonCode::Failure)),
                        }),
                        Packet::Publish(p) => Some(LinkEvent::Message(p)),
                        _ => None,
                    }
                }
                Ok(Event::Outgoing(out)) => match out {
                    Outgoing::Publish(pkid) => {
                        if pkid != 0 {
                            watch.sent(now);
                        }
                        Some(LinkEvent::Outgoing(pkid))
                    }
                    Outgoing::Subscribe(_) | Outgoing::Unsubscribe(_) | Outgoing::PingReq => {
                        watch.sent(now);
                        None
                    }
                    Outgoing::Disconnect => {
                        // Best effort: the publisher may already be gone.
                        if self.flush().await {
                            drop(self.tx.send(LinkEvent::Disconnected).await);
                        }
                        return;
                    }
                    _ => None,
                },
                Err(e) => {
                    if !self.lost(e.to_string(), &mut connected).await {
                        return;
                    }
                    None
                }
            };
            if let Some(report) = report {
                if !self.report(report) {
                    return;
                }
            }
        }
    }

    /// Hands a report to the publisher if it has room, else queues it behind the
    /// others. False when the publisher is gone.
    fn report(&mut self, report: LinkEvent) -> bool {
        self.backlog.push_back(report);
        while let Some(report) = self.backlog.pop_front() {
            match self.tx.try_send(report) {
                Ok(()) => {}
                Err(TrySendError::Full(report)) => {
                    self.backlog.push_front(report);
                    break;
                }
                Err(TrySendError::Closed(_)) => return false,
            }
        }
        if self.backlog.len() == MAX_BACKLOG {
            Metrics::add(&self.metrics.loop_pauses, 1);
            tracing::warn!(
                backlog = MAX_BACKLOG,
                "the publisher is behind by the whole backlog; pausing reads from the broker until it catches up"
            );
        }
        true
    }

    /// Waits until the publisher has taken every queued report. False when the
    /// publisher is gone.
    async fn flush(&mut self) -> bool {
        while let Some(report) = self.backlog.pop_front() {
            if self.tx.send(report).await.is_err() {
                return false;
            }
        }
        true
    }

    /// The connection failed or died: tells the publisher, forgets what rumqttc
    /// holds, waits the backoff. False when the publisher is gone.
    async fn lost(&mut self, error: String, connected: &mut bool) -> bool {
        Metrics::add(&self.metrics.connection_errors, 1);
        {
            let m = &self.config.borrow();
            self.backoff.set_bounds(m.backoff_min, m.backoff_max);
        }
        let delay = self.backoff.next_delay(rand::random::<f64>());
        if *connected {
            tracing::warn!(%error, retry_in = ?delay, "connection to the broker lost; unacknowledged events will be sent again");
        } else {
            tracing::warn!(%error, retry_in = ?delay, "cannot connect to the broker");
        }
        *connected = false;
        // What was reported before the loss goes first; the link is down, so
        // there is nothing to poll meanwhile.
        if !self.flush().await {
            return false;
        }
        let (quiesced, wait) = oneshot::channel();
        let lost = LinkEvent::Lost { error, quiesced };
        if self.tx.send(lost).await.is_err() || wait.await.is_err() {
            return false;
        }
        // Drops the network connection too.
        self.eventloop.clean();
        self.eventloop.pending.clear();
        self.eventloop.state = MqttState::new(self.max_inflight, true);
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = self.tx.closed() => false,
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(10);

    /// A real Mosquitto on a free port of 127.0.0.1 (plain TCP), stopped on drop.
    struct Mosquitto {
        port: u16,
        proc: std::process::Child,
        _dir: tempfile::TempDir,
    }

    impl Mosquitto {
        fn start() -> Self {
            let exe = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
                .into_iter()
                .find(|p| std::path::Path::new(p).is_file())
                .expect("mosquitto is not installed: run `bash tests/run.sh`, which installs it");
            let dir = tempfile::tempdir().unwrap();
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap()
                .port();
            let conf = dir.path().join("mosquitto.conf");
            let user = std::process::Command::new("id")
                .arg("-un")
                .output()
                .unwrap();
            std::fs::write(
                &conf,
                format!(
                    "user {}\nlistener {port} 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 100\n",
                    String::from_utf8_lossy(&user.stdout).trim()
                ),
            )
            .unwrap();
            let proc = std::process::Command::new(exe)
                .arg("-c")
                .arg(&conf)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let started = std::time::Instant::now();
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(started.elapsed() < T, "mosquitto did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
            Self {
                port,
                proc,
                _dir: dir,
            }
        }
    }

    impl Drop for Mosquitto {
        fn drop(&mut self) {
            drop(self.proc.kill());
            drop(self.proc.wait());
        }
    }

    /// The publisher takes nothing for a while (its channel has room for one
    /// report): the loop must go on writing publishes and reading their
    /// acknowledgements meanwhile, then hand every report over, in order.
    #[tokio::test]
    async fn the_loop_keeps_polling_while_the_publisher_is_busy() {
        let broker = Mosquitto::start();
        let mut options = rumqttc::MqttOptions::new("busy-publisher", "127.0.0.1", broker.port);
        options.set_inflight(10);
        let (client, eventloop) = rumqttc::AsyncClient::new(options, 10);
        let (tx, mut rx) = mpsc::channel(1);
        let metrics = Arc::new(Metrics::default());
        let connection = Connection::new(
            eventloop,
            tx,
            Backoff::new(Duration::from_millis(10), Duration::from_millis(100)),
            10,
            metrics.clone(),
            watch::channel(Arc::new(MqttConfig::default())).1,
        );
        let task = tokio::spawn(connection.run());

        // Far more than the request channel (10) and the in-flight window (10)
        // hold: they complete only if the loop writes them, and reads their
        // acknowledgements, while nobody reads `rx`.
        const N: u16 = 300;
        let publishing = async {
            for i in 0..N {
                client
                    .publish(
                        "edgecam/test",
                        rumqttc::QoS::AtLeastOnce,
                        false,
                        vec![i as u8],
                    )
                    .await
                    .unwrap();
            }
        };
        tokio::time::timeout(T, publishing)
            .await
            .expect("the requests were not drained: the loop waited on the publisher");
        // With 10 in flight, the last 280 could only be written once earlier
        // ones were acknowledged: the loop read those acknowledgements too.
        assert_eq!(
            metrics
                .loop_pauses
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );

        // Now the publisher reads: first the connection, then each publish
        // written before its acknowledgement.
        let mut outstanding = std::collections::HashSet::new();
        let (mut written, mut acks) = (0, 0);
        match rx.recv().await {
            Some(LinkEvent::Connected { .. }) => {}
            other => panic!("expected Connected first, got {other:?}"),
        }
        while acks < N {
            match tokio::time::timeout(T, rx.recv()).await.expect("a report") {
                Some(LinkEvent::Outgoing(pkid)) => {
                    assert!(
                        outstanding.insert(pkid),
                        "packet id {pkid} reused before its ack"
                    );
                    written += 1;
                }
                Some(LinkEvent::PubAck(pkid)) => {
                    assert!(
                        outstanding.remove(&pkid),
                        "ack of {pkid} before its publish"
                    );
                    acks += 1;
                }
                other => panic!("unexpected report {other:?}"),
            }
        }
        assert_eq!((written, acks), (N, N));
        drop(rx);
        tokio::time::timeout(T, task).await.unwrap().unwrap();
    }

    #[test]
    fn nothing_waiting_means_no_deadline() {
        let t0 = Instant::now();
        let mut w = AckWatch::new(t0);
        assert_eq!(w.deadline(T), None);
        w.sent(t0);
        w.received(t0 + Duration::from_secs(1), true);
        assert_eq!(w.deadline(T), None);
    }

    #[test]
    fn an_unanswered_publish_sets_the_deadline_from_when_it_was_sent() {
        let t0 = Instant::now();
        let mut w = AckWatch::new(t0);
        w.sent(t0 + Duration::from_secs(2));
        // A second one later does not push the deadline away.
        w.sent(t0 + Duration::from_secs(5));
        assert_eq!(w.deadline(T), Some(t0 + Duration::from_secs(12)));
        assert_eq!(
            w.silence(t0 + Duration::from_secs(12)),
            Duration::from_secs(12)
        );
    }

    #[test]
    fn anything_received_restarts_the_wait_while_acks_are_outstanding() {
        let t0 = Instant::now();
        let mut w = AckWatch::new(t0);
        w.sent(t0);
        w.sent(t0);
        w.received(t0 + Duration::from_secs(4), true);
        assert_eq!(w.deadline(T), Some(t0 + Duration::from_secs(14)));
        // An incoming publish is not an ack, but shows the link is alive.
        w.received(t0 + Duration::from_secs(8), false);
        assert_eq!(w.deadline(T), Some(t0 + Duration::from_secs(18)));
        w.received(t0 + Duration::from_secs(9), true);
        assert_eq!(w.deadline(T), None);
    }

    #[test]
    fn dead_links_in_a_row_double_the_wait_until_everything_is_acknowledged() {
        let t0 = Instant::now();
        let mut w = AckWatch::new(t0);
        assert_eq!(w.timeout(T), T);
        w.dead();
        w.reset(t0);
        assert_eq!(w.timeout(T), 2 * T);
        for _ in 0..10 {
            w.dead();
        }
        assert_eq!(w.timeout(T), 16 * T);
        // Some acknowledged, not all: the wait stays long.
        w.sent(t0);
        w.sent(t0);
        w.received(t0, true);
        assert_eq!(w.timeout(T), 16 * T);
        w.received(t0, true);
        assert_eq!(w.timeout(T), T);
    }

    #[test]
    fn a_new_connection_forgets_what_waited_on_the_old_one() {
        let t0 = Instant::now();
        let mut w = AckWatch::new(t0);
        w.sent(t0);
        w.reset(t0 + Duration::from_secs(30));
        assert_eq!(w.deadline(T), None);
        // A stray ack never underflows.
        w.received(t0 + Duration::from_secs(31), true);
        w.sent(t0 + Duration::from_secs(32));
        assert_eq!(w.deadline(T), Some(t0 + Duration::from_secs(42)));
    }
}
