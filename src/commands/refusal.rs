//! File requests on a camera that does not upload (`upload.enabled = false`, or a
//! build without the `uploads` feature): each one is answered `rejected` on
//! `<camera-id>/file/response` with the reason and counted in `uploads.rejected`,
//! so the sender learns why instead of waiting for an answer that never comes.

use std::convert::Infallible;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{file_request::lenient_id, Rejection, Response};
use crate::metrics::Metrics;
use crate::mqtt::{ControlPublish, Inbox};

/// Why this camera does not upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The binary was built without the `uploads` feature.
    NotBuilt,
    /// `upload.enabled = false` in the local configuration.
    Disabled,
}

impl Why {
    pub fn reason(self) -> &'static str {
        match self {
            Why::NotBuilt => {
                "this camera does not upload files: it was built without the `uploads` feature"
            }
            Why::Disabled => {
                "this camera does not upload files: upload.enabled is false in its local configuration"
            }
        }
    }
}

/// The stage that answers every file request with a refusal.
pub struct Refusal {
    requests: Inbox,
    responses: mpsc::Sender<ControlPublish>,
    topic: String,
    why: Why,
    metrics: Arc<Metrics>,
}

impl Refusal {
    pub fn new(
        requests: mpsc::Receiver<crate::mqtt::InboundMessage>,
        responses: mpsc::Sender<ControlPublish>,
        topic: String,
        why: Why,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            requests: requests.into(),
            responses,
            topic,
            why,
            metrics,
        }
    }
}

impl crate::supervision::Stage for Refusal {
    type Error = Infallible;

    /// Answers requests until shutdown. A request is acknowledged to the broker
    /// once its answer is queued for publishing.
    async fn run(&mut self, shutdown: CancellationToken) -> Result<(), Infallible> {
        loop {
            let m = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                m = self.requests.recv() => match m {
                    Some(m) => m,
                    None => return Ok(()),
                },
            };
            let rejection = Rejection {
                request_id: lenient_id(serde_json::from_slice(&m.payload).ok().as_ref()),
                reason: self.why.reason().to_owned(),
            };
            Metrics::add(&self.metrics.uploads_rejected, 1);
            tracing::warn!(request_id = ?rejection.request_id, reason = %rejection.reason, "file request rejected");
            let publish = ControlPublish {
                topic: self.topic.clone(),
                payload: Response::rejected(&rejection).to_json(),
                retain: false,
            };
            if self.responses.send(publish).await.is_err() {
                tracing::warn!("publisher gone; file response not sent");
            }
            drop(m);
        }
    }
}
