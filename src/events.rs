//! Events and their wire schema (`docs/protocol.md`, `docs/schemas/event-batch.json`).
//!
//! A producer creates a [`NewEvent`] (its `event_id`, a UUIDv7, is fixed at creation
//! and is the idempotency key). The outbox gives it its `seq` when it commits it.
//! On the wire every message on `<camera-id>/events/<kind>` is a batch:
//!
//! ```json
//! {"events":[{"event_id":"…","camera_id":"cam-1","seq":41,"ts":1763782018123,"kind":"synthetic","payload":{…}}]}
//! ```
//!
//! A batch holds one or more events of one kind, in increasing `seq`.

use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::value::RawValue;
use uuid::Uuid;

/// An event handed to the outbox by a producer.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// UUIDv7, fixed when the event is created.
    pub event_id: Uuid,
    /// Topic level and schema selector, e.g. `synthetic`, `plate`.
    pub kind: String,
    /// Time of the observation, milliseconds since the Unix epoch (UTC).
    pub ts_ms: i64,
    /// The kind-specific payload, one JSON value, serialized.
    pub payload: Box<RawValue>,
}

impl NewEvent {
    /// An event observed now.
    pub fn now(kind: &str, payload: Box<RawValue>) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            kind: kind.to_owned(),
            ts_ms: now_ms(),
            payload,
        }
    }

    /// An event observed at `ts_ms` with a payload built as a JSON value.
    pub fn observed(kind: &str, ts_ms: i64, payload: &serde_json::Value) -> Self {
        let mut ev = Self::now(kind, RawValue::NULL.to_owned());
        ev.ts_ms = ts_ms;
        ev.set_payload(payload);
        ev
    }

    /// Replaces the payload with a JSON value.
    pub fn set_payload(&mut self, payload: &serde_json::Value) {
        // A `serde_json::Value` has string keys only: it always serialises.
        self.payload = serde_json::value::to_raw_value(payload).expect("a JSON value serialises");
    }
}

/// An event read from the outbox, already encoded for the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: i64,
    pub kind: String,
    /// The event's JSON object (see the module header), from [`encode_event`].
    pub json: String,
}

/// Milliseconds since the Unix epoch, from the wall clock.
pub fn now_ms() -> i64 {
    epoch_ms(SystemTime::now())
}

/// Milliseconds since the Unix epoch of `t` (0 before it).
pub fn epoch_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// RFC 3339 UTC time with milliseconds, for payloads.
pub fn rfc3339_ms(ms: i64) -> String {
    humantime::format_rfc3339_millis(
        UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64),
    )
    .to_string()
}

/// Bytes of `{"events":[` + `]}`.
pub const BATCH_OVERHEAD: usize = BATCH_OPEN.len() + BATCH_CLOSE.len();
const BATCH_OPEN: &str = "{\"events\":[";
const BATCH_CLOSE: &str = "]}";

/// Builds the batch message for `events` (all of one kind, in seq order).
pub fn encode_batch<'a>(events: impl IntoIterator<Item = &'a StoredEvent>) -> String {
    let mut out = String::from(BATCH_OPEN);
    for (i, ev) in events.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&ev.json);
    }
    out.push_str(BATCH_CLOSE);
    out
}

/// The part of an event's JSON object fixed at creation: everything after
/// `{"camera_id":…,"seq":…,`. Every string in it is from a closed alphabet (UUID,
/// kind, checked by the producer's channel) and the payload is a JSON value, so no
/// escaping is needed.
pub fn encode_body(ev: &NewEvent) -> String {
    format!(
        "\"event_id\":\"{}\",\"ts\":{},\"kind\":\"{}\",\"payload\":{}}}",
        ev.event_id,
        ev.ts_ms,
        ev.kind,
        ev.payload.get()
    )
}

/// The whole JSON object of an event: the camera id and seq, then its stored body.
pub fn encode_event(camera_id: &str, seq: i64, body: &str) -> String {
    let mut out = String::with_capacity(camera_id.len() + body.len() + 40);
    out.push_str("{\"camera_id\":\"");
    out.push_str(camera_id);
    out.push_str("\",\"seq\":");
    // Writing to a String cannot fail.
    let _ = write!(out, "{seq},");
    out.push_str(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: i64, payload: &str) -> StoredEvent {
        let new = NewEvent {
            event_id: Uuid::now_v7(),
            kind: "synthetic".into(),
            ts_ms: 1_763_782_018_123,
            payload: RawValue::from_string(payload.to_owned()).unwrap(),
        };
        StoredEvent {
            seq,
            kind: new.kind.clone(),
            json: encode_event("cam-1", seq, &encode_body(&new)),
        }
    }

    #[test]
    fn batch_is_valid_json_with_every_field() {
        let events = [ev(1, r#"{"a":1}"#), ev(2, r#""x""#)];
        let text = encode_batch(&events);
        assert_eq!(
            text.len(),
            BATCH_OVERHEAD + events[0].json.len() + 1 + events[1].json.len()
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let arr = v["events"].as_array().unwrap();
        assert_eq!(arr.len(), 2);
        assert_eq!(arr[0]["seq"], 1);
        assert_eq!(arr[0]["camera_id"], "cam-1");
        assert_eq!(arr[0]["ts"], 1_763_782_018_123i64);
        assert_eq!(arr[0]["kind"], "synthetic");
        assert_eq!(arr[0]["payload"]["a"], 1);
        assert_eq!(arr[0]["event_id"].as_str().unwrap().len(), 36);
        assert_eq!(arr[1]["payload"], "x");
    }
}
