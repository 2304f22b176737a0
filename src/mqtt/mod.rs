//! MQTT to the broker: one task owns rumqttc's event loop ([`connection`]); the
//! publisher ([`publisher`]) moves events from the outbox within the broker's ceilings.

mod config;
mod connection;
pub mod limits;
mod publisher;
mod session;

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, LastWill, MqttOptions, QoS, TlsConfiguration, Transport};
use tokio::sync::{mpsc, watch};

pub use config::{MqttConfig, TUNABLE};
pub use connection::Connection;
pub use publisher::Publisher;

use crate::metrics::Metrics;
use crate::outbox::{OutboxError, OutboxHandle};
use crate::settings::Config;

/// Errors of the MQTT stage.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("TLS setup: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("outbox: {0}")]
    Outbox(#[from] OutboxError),
    #[error("the outbox stage has stopped")]
    OutboxGone,
    #[error("the MQTT connection task has stopped")]
    LinkGone,
}

/// Room for MQTT fixed header, topic and packet id around the largest payload.
const PACKET_OVERHEAD: usize = 1024;

/// Largest incoming packet. Larger ones make rumqttc drop the connection, so this is
/// well above anything a stage accepts (AWS IoT Core itself caps messages at 128 KB):
/// oversized configuration is received and rejected with a status, not looped on.
const MAX_INCOMING_PACKET: usize = 2 * 1024 * 1024;

/// A message that arrived on a subscribed topic. The broker gets its
/// acknowledgement (PUBACK) when this is dropped, that is once its stage has
/// handled it: a message the daemon dies holding is delivered again by the broker
/// on the next connection (with `mqtt.persistent_session`).
#[derive(Debug)]
pub struct InboundMessage {
    pub topic: String,
    pub payload: Vec<u8>,
    pub(crate) ack: Option<InboundAck>,
}

impl InboundMessage {
    /// Leaves the message unacknowledged (its stage failed to take it): the
    /// broker delivers it again on the next connection.
    pub fn leave_unacked(&mut self) {
        if let Some(ack) = &mut self.ack {
            ack.armed = false;
        }
    }
}

/// Acknowledges one QoS 1 message to the broker when dropped, unless disarmed or
/// the connection it came on is gone (its packet id means nothing on another;
/// a broker that kept the session delivers it again).
pub(crate) struct InboundAck {
    pub(crate) client: AsyncClient,
    pub(crate) publish: rumqttc::Publish,
    pub(crate) armed: bool,
    /// The connection it came on, and the current one.
    pub(crate) connection: u64,
    pub(crate) current: Arc<std::sync::atomic::AtomicU64>,
}

/// A stage's end of its inbound channel. When the stage drops it, the messages
/// still queued are left unacknowledged (the broker delivers them again), not
/// acknowledged unhandled.
#[derive(Debug)]
pub struct Inbox(mpsc::Receiver<InboundMessage>);

impl From<mpsc::Receiver<InboundMessage>> for Inbox {
    fn from(rx: mpsc::Receiver<InboundMessage>) -> Self {
        Self(rx)
    }
}

impl Inbox {
    pub async fn recv(&mut self) -> Option<InboundMessage> {
        self.0.recv().await
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.0.close();
        while let Ok(mut m) = self.0.try_recv() {
            m.leave_unacked();
        }
    }
}

impl std::fmt::Debug for InboundAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InboundAck({})", self.publish.pkid)
    }
}

impl Drop for InboundAck {
    fn drop(&mut self) {
        if !self.armed || self.current.load(std::sync::atomic::Ordering::SeqCst) != self.connection
        {
            return;
        }
        // Fails only when the connection task is gone; the broker then delivers
        // the message again on the next connection.
        if let Err(e) = self.client.try_ack(&self.publish) {
            tracing::warn!(error = %e, pkid = self.publish.pkid, "cannot acknowledge an incoming message; the broker will deliver it again");
        }
    }
}

/// A QoS 1 message a stage asks the publisher to send when connected. Retained
/// ones are kept per topic (the latest wins); others queue in order, at most
/// [`MAX_PENDING_CONTROL`] while offline (the oldest dropped and counted beyond).
#[derive(Debug, Clone)]
pub struct ControlPublish {
    pub topic: String,
    pub payload: String,
    pub retain: bool,
}

/// Non-retained control messages kept while offline.
pub const MAX_PENDING_CONTROL: usize = 256;

/// What the MQTT stage is connected to.
pub struct Wiring {
    pub outbox: OutboxHandle,
    pub metrics: Arc<Metrics>,
    /// The effective `[mqtt]` section, for the connection and the publisher;
    /// remote changes arrive here.
    pub mqtt: watch::Receiver<Arc<MqttConfig>>,
    /// `health.metrics_interval`: how often the publisher sends the metrics.
    pub metrics_interval: watch::Receiver<Arc<Duration>>,
    /// Topics to subscribe to on every connection, and where their messages go.
    pub inbound: Vec<(String, mpsc::Sender<InboundMessage>)>,
    /// Status and response messages of other stages to publish.
    pub retained: mpsc::Receiver<ControlPublish>,
}

/// Builds the two tasks of the MQTT stage.
pub fn build(config: &Config, wiring: Wiring) -> Result<(Connection, Publisher), MqttError> {
    let id = &config.identity;
    let m = &config.mqtt;
    let tls = crate::tls::client_config(id)?;
    let topics = crate::topics::Topics::new(&id.camera_id);

    let mut options = MqttOptions::new(&id.camera_id, &id.broker_host, id.broker_port);
    options
        .set_keep_alive(m.keepalive)
        .set_clean_session(!m.persistent_session)
        .set_manual_acks(true)
        .set_inflight(m.max_inflight)
        .set_max_packet_size(MAX_INCOMING_PACKET, m.max_message_bytes + PACKET_OVERHEAD)
        .set_request_channel_capacity(m.max_inflight as usize + 16)
        .set_pending_throttle(Duration::ZERO)
        .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)))
        .set_last_will(LastWill::new(
            topics.status(),
            publisher::offline_payload(&id.camera_id, "connection lost"),
            QoS::AtLeastOnce,
            true,
        ));
    let (client, mut eventloop) = AsyncClient::new(options, m.max_inflight as usize + 16);
    let mut net = eventloop.network_options();
    net.set_connection_timeout(m.connect_timeout.as_secs().max(1));
    eventloop.set_network_options(net);

    let (link_tx, link_rx) = mpsc::channel(1024);
    let backoff = crate::backoff::Backoff::new(m.backoff_min, m.backoff_max);
    let connection = Connection::new(
        eventloop,
        link_tx,
        backoff,
        m.max_inflight,
        wiring.metrics.clone(),
        wiring.mqtt.clone(),
    );
    let publisher = Publisher::new(client, link_rx, &id.camera_id, wiring);
    Ok((connection, publisher))
}
