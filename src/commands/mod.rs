//! Commands from the cloud over MQTT. `<camera-id>/file/request` asks for an upload
//! ([`file_request`]); the answers go to `<camera-id>/file/response`
//! ([`Response`]). The uploads themselves are the upload stage's.

pub mod file_request;
pub mod refusal;

pub use file_request::Rejection;
#[cfg(feature = "uploads")]
pub use file_request::{parse, FileRequest, Policy, What, Where};

use serde::Serialize;

/// The states a request goes through, in `<camera-id>/file/response` messages
/// (schema: `docs/schemas/file-response.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(not(feature = "uploads"), allow(dead_code))]
pub enum State {
    Accepted,
    Rejected,
    Uploading,
    Done,
    Failed,
}

/// One message on `<camera-id>/file/response`.
#[derive(Debug, Clone, Serialize)]
pub struct Response {
    /// `null` when the request had no readable id.
    pub request_id: Option<String>,
    pub state: State,
    pub ts: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// With `failed`: whether another attempt will follow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retrying: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// With `uploading`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// With `uploading` and `done`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// With `done`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// With `accepted` for a range: the range the clip really covers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Response {
    pub fn new(request_id: Option<&str>, state: State) -> Self {
        Self {
            request_id: request_id.map(str::to_owned),
            state,
            ts: crate::events::now_ms(),
            reason: None,
            retrying: None,
            attempt: None,
            percent: None,
            bytes: None,
            size: None,
            sha256: None,
            etag: None,
            location: None,
            note: None,
        }
    }

    pub fn rejected(r: &Rejection) -> Self {
        Self {
            reason: Some(r.reason.clone()),
            ..Self::new(r.request_id.as_deref(), State::Rejected)
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}
