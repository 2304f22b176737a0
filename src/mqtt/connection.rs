//! The one task that owns rumqttc's event loop. It polls without pause, reports
//! what matters to the publisher as [`LinkEvent`]s, and after an error waits a
//! jittered backoff before polling again (rumqttc would reconnect at once).
//!
//! After an error it first waits for the publisher to acknowledge the loss
//! (so no new request can slip in), then drops everything rumqttc still holds
//! (pending requests and in-flight state): the outbox re-sends those events, and
//! rumqttc must not send stale publishes whose PUBACKs we could not match.

use std::sync::Arc;

use rumqttc::{ConnectReturnCode, Event, EventLoop, MqttState, Outgoing, Packet};
use tokio::sync::{mpsc, oneshot, watch};

use super::limits::Backoff;
use crate::config::Config;
use crate::metrics::Metrics;

/// What the event loop reports to the publisher.
#[derive(Debug)]
pub enum LinkEvent {
    /// CONNACK accepted: a new clean session.
    Connected,
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
    /// A message arrived on a subscribed topic.
    Message { topic: String, payload: Vec<u8> },
    /// Our DISCONNECT was written; the session is over.
    Disconnected,
}

pub struct Connection {
    eventloop: EventLoop,
    tx: mpsc::Sender<LinkEvent>,
    backoff: Backoff,
    max_inflight: u16,
    metrics: Arc<Metrics>,
    config: watch::Receiver<Arc<Config>>,
}

impl Connection {
    pub fn new(
        eventloop: EventLoop,
        tx: mpsc::Sender<LinkEvent>,
        backoff: Backoff,
        max_inflight: u16,
        metrics: Arc<Metrics>,
        config: watch::Receiver<Arc<Config>>,
    ) -> Self {
        Self {
            eventloop,
            tx,
            backoff,
            max_inflight,
            metrics,
            config,
        }
    }

    /// Runs until the publisher drops its receiver or our DISCONNECT is written.
    pub async fn run(mut self) {
        let mut connected = false;
        loop {
            let polled = tokio::select! {
                r = self.eventloop.poll() => r,
                _ = self.tx.closed() => return,
            };
            let report = match polled {
                Ok(Event::Incoming(Packet::ConnAck(ack)))
                    if ack.code == ConnectReturnCode::Success =>
                {
                    connected = true;
                    self.backoff.reset();
                    Metrics::add(&self.metrics.connects, 1);
                    tracing::info!(
                        broker = %self.eventloop.mqtt_options.broker_address().0,
                        port = self.eventloop.mqtt_options.broker_address().1,
                        "connected to the broker"
                    );
                    Some(LinkEvent::Connected)
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => Some(LinkEvent::PubAck(ack.pkid)),
                Ok(Event::Incoming(Packet::Publish(p))) => Some(LinkEvent::Message {
                    topic: p.topic,
                    payload: p.payload.to_vec(),
                }),
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => Some(LinkEvent::Outgoing(pkid)),
                Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                    // Best effort: the publisher may already be gone.
                    drop(self.tx.send(LinkEvent::Disconnected).await);
                    return;
                }
                Ok(_) => None,
                Err(e) => {
                    Metrics::add(&self.metrics.connection_errors, 1);
                    {
                        let m = &self.config.borrow().mqtt;
                        self.backoff.set_bounds(m.backoff_min, m.backoff_max);
                    }
                    let delay = self.backoff.next_delay(rand::random::<f64>());
                    if connected {
                        tracing::warn!(error = %e, retry_in = ?delay, "connection to the broker lost; unacknowledged events will be sent again");
                    } else {
                        tracing::warn!(error = %e, retry_in = ?delay, "cannot connect to the broker");
                    }
                    connected = false;
                    let (quiesced, wait) = oneshot::channel();
                    let lost = LinkEvent::Lost {
                        error: e.to_string(),
                        quiesced,
                    };
                    if self.tx.send(lost).await.is_err() || wait.await.is_err() {
                        return;
                    }
                    self.eventloop.clean();
                    self.eventloop.pending.clear();
                    self.eventloop.state = MqttState::new(self.max_inflight, false);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.tx.closed() => return,
                    }
                    None
                }
            };
            if let Some(report) = report {
                if self.tx.send(report).await.is_err() {
                    return;
                }
            }
        }
    }
}
