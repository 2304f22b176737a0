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
}

/// An event as the outbox holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: i64,
    pub event_id: String,
    pub kind: String,
    pub ts_ms: i64,
    /// Serialized JSON of the payload, as the producer gave it.
    pub payload: String,
}

/// Milliseconds since the Unix epoch, from the wall clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Bytes of `{"events":[` + `]}`.
pub const BATCH_OVERHEAD: usize = BATCH_OPEN.len() + BATCH_CLOSE.len();
const BATCH_OPEN: &str = "{\"events\":[";
const BATCH_CLOSE: &str = "]}";

/// Appends one event's JSON object to `out`. The payload is copied as it was
/// stored (it was validated as JSON when it was enqueued); the other fields are
/// strings from a closed alphabet (UUID, camera id, kind) or integers.
pub fn encode_event(out: &mut String, camera_id: &str, ev: &StoredEvent) {
    use std::fmt::Write;
    let _ = write!(
        out,
        "{{\"event_id\":\"{}\",\"camera_id\":\"{}\",\"seq\":{},\"ts\":{},\"kind\":\"{}\",\"payload\":{}}}",
        ev.event_id, camera_id, ev.seq, ev.ts_ms, ev.kind, ev.payload
    );
}

/// Size of one encoded event, without building it.
pub fn encoded_len(camera_id: &str, ev: &StoredEvent) -> usize {
    const FIXED: usize =
        r#"{"event_id":"","camera_id":"","seq":,"ts":,"kind":"","payload":}"#.len();
    FIXED
        + ev.event_id.len()
        + camera_id.len()
        + decimal_len(ev.seq)
        + decimal_len(ev.ts_ms)
        + ev.kind.len()
        + ev.payload.len()
}

fn decimal_len(v: i64) -> usize {
    let mut n = if v < 0 { 2 } else { 1 };
    let mut x = v.unsigned_abs();
    while x >= 10 {
        x /= 10;
        n += 1;
    }
    n
}

/// Builds the batch message for `events` (all of one kind).
pub fn encode_batch<'a>(
    camera_id: &str,
    events: impl IntoIterator<Item = &'a StoredEvent>,
) -> String {
    let mut out = String::from(BATCH_OPEN);
    for (i, ev) in events.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        encode_event(&mut out, camera_id, ev);
    }
    out.push_str(BATCH_CLOSE);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: i64, payload: &str) -> StoredEvent {
        StoredEvent {
            seq,
            event_id: Uuid::now_v7().to_string(),
            kind: "synthetic".into(),
            ts_ms: 1_763_782_018_123,
            payload: payload.into(),
        }
    }

    #[test]
    fn batch_is_valid_json_with_every_field() {
        let events = [ev(1, r#"{"a":1}"#), ev(2, r#""x""#)];
        let text = encode_batch("cam-1", &events);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let arr = v["events"].as_array().unwrap();
        assert_eq!(arr.len(), 2);
        assert_eq!(arr[0]["seq"], 1);
        assert_eq!(arr[0]["camera_id"], "cam-1");
        assert_eq!(arr[0]["ts"], 1_763_782_018_123i64);
        assert_eq!(arr[0]["kind"], "synthetic");
        assert_eq!(arr[0]["payload"]["a"], 1);
        assert_eq!(arr[1]["payload"], "x");
    }

    #[test]
    fn encoded_len_matches_the_encoding() {
        for e in [
            ev(1, "{}"),
            ev(1234567890123, r#"{"k":"vvvv"}"#),
            ev(-5, "null"),
        ] {
            let mut s = String::new();
            encode_event(&mut s, "camera-xyz", &e);
            assert_eq!(s.len(), encoded_len("camera-xyz", &e));
        }
    }
}
