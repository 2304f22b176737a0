//! MQTT to the broker: one task owns rumqttc's event loop ([`connection`]); the
//! publisher ([`publisher`]) moves events from the outbox within the broker's ceilings.

mod connection;
pub mod limits;
mod publisher;
mod session;
pub mod tls;
pub mod topics;

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, LastWill, MqttOptions, QoS, TlsConfiguration, Transport};
use tokio::sync::mpsc;

pub use connection::Connection;
pub use publisher::Publisher;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::outbox::{OutboxError, OutboxHandle};

/// Errors of the MQTT stage.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("TLS setup: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("outbox: {0}")]
    Outbox(#[from] OutboxError),
    #[error("the outbox stage has stopped")]
    OutboxGone,
    #[error("the MQTT connection task has stopped")]
    LinkGone,
}

/// Room for MQTT fixed header, topic and packet id around the largest payload.
const PACKET_OVERHEAD: usize = 1024;

/// Builds the two tasks of the MQTT stage.
pub fn build(
    config: &Config,
    outbox: OutboxHandle,
    metrics: Arc<Metrics>,
) -> Result<(Connection, Publisher), MqttError> {
    let id = &config.identity;
    let m = &config.mqtt;
    let tls = tls::client_config(id)?;
    let topics = topics::Topics::new(&id.camera_id);

    let mut options = MqttOptions::new(&id.camera_id, &id.broker_host, id.broker_port);
    options
        .set_keep_alive(m.keepalive)
        .set_clean_session(true)
        .set_inflight(m.max_inflight)
        .set_max_packet_size(256 * 1024, m.max_message_bytes + PACKET_OVERHEAD)
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
    let backoff = limits::Backoff::new(m.backoff_min, m.backoff_max);
    let connection = Connection::new(eventloop, link_tx, backoff, m.max_inflight, metrics.clone());
    let publisher = Publisher::new(
        client,
        link_rx,
        outbox,
        m.clone(),
        &id.camera_id,
        metrics,
        config.health.metrics_interval,
    );
    Ok((connection, publisher))
}
