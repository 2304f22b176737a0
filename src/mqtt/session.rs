//! What the publisher knows about one MQTT session, without I/O: which publishes are
//! waiting for their packet id, which packet ids wait for a PUBACK, and which events
//! are buffered for the next batch.
//!
//! rumqttc gives a QoS 1 publish its packet id when it writes it, and reports
//! `Outgoing::Publish(pkid)` in the order the publishes were requested. So the n-th
//! such report belongs to the n-th publish we requested; a PUBACK names the pkid.
//! Everything is forgotten when the connection is lost: the outbox still holds
//! every unacknowledged event and they are fetched again.

use std::collections::{HashMap, VecDeque};

use crate::events::{StoredEvent, BATCH_OVERHEAD};

/// A publish we requested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// A batch of events (QoS 1).
    Batch(Batch),
    /// A status message at QoS 1 (its PUBACK deletes nothing).
    Control,
    /// A QoS 0 message (reported with pkid 0, never acknowledged).
    Fire,
}

/// The events carried by one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub seqs: Vec<i64>,
    pub bytes: usize,
}

/// Packet-id bookkeeping of one connection.
#[derive(Debug, Default)]
pub struct Session {
    awaiting_pkid: VecDeque<Sent>,
    inflight: HashMap<u16, Sent>,
}

/// An acknowledgement that did not match what we sent (logged, never fatal).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("rumqttc reported a publish we did not request (pkid {0})")]
    UnexpectedOutgoing(u16),
    #[error("PUBACK for unknown packet id {0}")]
    UnknownPuback(u16),
}

impl Session {
    /// A publish was handed to rumqttc.
    pub fn requested(&mut self, sent: Sent) {
        self.awaiting_pkid.push_back(sent);
    }

    /// rumqttc wrote the next publish with `pkid`.
    pub fn outgoing(&mut self, pkid: u16) -> Result<(), SessionError> {
        let sent = self
            .awaiting_pkid
            .pop_front()
            .ok_or(SessionError::UnexpectedOutgoing(pkid))?;
        match (pkid, sent) {
            (0, Sent::Fire) => Ok(()),
            (0, _) | (_, Sent::Fire) => Err(SessionError::UnexpectedOutgoing(pkid)),
            (pkid, sent) => {
                self.inflight.insert(pkid, sent);
                Ok(())
            }
        }
    }

    /// The broker acknowledged `pkid`; returns the batch it carried, if any.
    pub fn puback(&mut self, pkid: u16) -> Result<Option<Batch>, SessionError> {
        match self.inflight.remove(&pkid) {
            Some(Sent::Batch(b)) => Ok(Some(b)),
            Some(_) => Ok(None),
            None => Err(SessionError::UnknownPuback(pkid)),
        }
    }

    /// QoS 1 publishes requested and not yet acknowledged.
    pub fn unacked(&self) -> usize {
        self.awaiting_pkid
            .iter()
            .filter(|s| !matches!(s, Sent::Fire))
            .count()
            + self.inflight.len()
    }

    /// Forgets the session (connection lost). Returns how many batches were unacked.
    pub fn reset(&mut self) -> usize {
        let batches = self
            .awaiting_pkid
            .iter()
            .chain(self.inflight.values())
            .filter(|s| matches!(s, Sent::Batch(_)))
            .count();
        self.awaiting_pkid.clear();
        self.inflight.clear();
        batches
    }
}

/// Events fetched from the outbox and not yet published, in seq order.
#[derive(Debug, Default)]
pub struct Packer {
    buffer: VecDeque<StoredEvent>,
    buffered_bytes: usize,
}

/// The next message to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Events at these buffer positions (one kind, increasing seq) make a payload of `bytes`.
    Batch {
        kind: String,
        positions: Vec<usize>,
        bytes: usize,
    },
    /// The first buffered event alone is larger than the message ceiling.
    TooLarge { seq: i64, bytes: usize },
}

impl Packer {
    pub fn push(&mut self, events: Vec<StoredEvent>) {
        for ev in events {
            self.buffered_bytes += ev.json.len();
            self.buffer.push_back(ev);
        }
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }

    pub fn buffered_bytes(&self) -> usize {
        self.buffered_bytes
    }

    pub fn clear(&mut self) {
        self.buffer.clear();
        self.buffered_bytes = 0;
    }

    /// Plans the next message: the oldest event and the following events of the same
    /// kind, while the payload stays within `limit`. A lone event may use up to
    /// `max_message` (the ceiling itself) even when `limit` is lower.
    pub fn plan(&self, limit: usize, max_message: usize) -> Option<Plan> {
        let first = self.buffer.front()?;
        let first_len = BATCH_OVERHEAD + first.json.len();
        if first_len > max_message {
            return Some(Plan::TooLarge {
                seq: first.seq,
                bytes: first_len,
            });
        }
        let kind = first.kind.clone();
        let mut positions = vec![0];
        let mut bytes = first_len;
        for (i, ev) in self.buffer.iter().enumerate().skip(1) {
            if ev.kind != kind {
                continue;
            }
            let add = 1 + ev.json.len();
            if bytes + add > limit {
                break;
            }
            bytes += add;
            positions.push(i);
        }
        Some(Plan::Batch {
            kind,
            positions,
            bytes,
        })
    }

    /// Removes the events at `positions` (increasing) and returns them in order.
    pub fn take(&mut self, positions: &[usize]) -> Vec<StoredEvent> {
        let mut taken = Vec::with_capacity(positions.len());
        let mut rest = VecDeque::with_capacity(self.buffer.len() - positions.len());
        let mut next = positions.iter().peekable();
        for (i, ev) in self.buffer.drain(..).enumerate() {
            if next.peek() == Some(&&i) {
                next.next();
                self.buffered_bytes -= ev.json.len();
                taken.push(ev);
            } else {
                rest.push_back(ev);
            }
        }
        self.buffer = rest;
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{encode_batch, encode_body, encode_event, NewEvent};
    use serde_json::value::RawValue;

    fn batch(seqs: &[i64]) -> Sent {
        Sent::Batch(Batch {
            seqs: seqs.to_vec(),
            bytes: 10,
        })
    }

    #[test]
    fn puback_for_batch_returns_its_seqs() {
        let mut s = Session::default();
        s.requested(batch(&[1, 2]));
        s.requested(Sent::Fire);
        s.requested(batch(&[3]));
        s.outgoing(1).unwrap();
        s.outgoing(0).unwrap();
        s.outgoing(2).unwrap();
        assert_eq!(s.unacked(), 2);
        assert_eq!(s.puback(2).unwrap().unwrap().seqs, vec![3]);
        assert_eq!(s.puback(1).unwrap().unwrap().seqs, vec![1, 2]);
        assert_eq!(s.unacked(), 0);
    }

    #[test]
    fn control_puback_deletes_nothing() {
        let mut s = Session::default();
        s.requested(Sent::Control);
        s.outgoing(7).unwrap();
        assert_eq!(s.puback(7), Ok(None));
    }

    #[test]
    fn unknown_puback_is_an_error_not_a_deletion() {
        let mut s = Session::default();
        assert_eq!(s.puback(9), Err(SessionError::UnknownPuback(9)));
        assert_eq!(s.outgoing(1), Err(SessionError::UnexpectedOutgoing(1)));
    }

    #[test]
    fn lost_connection_forgets_every_unacked_batch() {
        let mut s = Session::default();
        s.requested(batch(&[1]));
        s.requested(batch(&[2]));
        s.outgoing(1).unwrap();
        assert_eq!(s.reset(), 2);
        assert_eq!(s.unacked(), 0);
        // A PUBACK from the old connection matches nothing.
        assert!(s.puback(1).is_err());
    }

    fn ev(seq: i64, kind: &str, payload_len: usize) -> StoredEvent {
        let payload = format!("\"{}\"", "x".repeat(payload_len));
        let new = NewEvent {
            event_id: uuid::Uuid::now_v7(),
            kind: kind.into(),
            ts_ms: 1_700_000_000_000,
            payload: RawValue::from_string(payload).unwrap(),
        };
        StoredEvent {
            seq,
            kind: kind.into(),
            json: encode_event("cam", seq, &encode_body(&new)),
        }
    }

    #[test]
    fn plan_packs_one_kind_in_seq_order_within_the_limit() {
        let mut p = Packer::default();
        p.push(vec![
            ev(1, "a", 100),
            ev(2, "b", 100),
            ev(3, "a", 100),
            ev(4, "a", 100),
        ]);
        let Some(Plan::Batch {
            kind,
            positions,
            bytes,
        }) = p.plan(10_000, 10_000)
        else {
            panic!("expected a batch")
        };
        assert_eq!(kind, "a");
        assert_eq!(positions, vec![0, 2, 3]);
        let taken = p.take(&positions);
        assert_eq!(
            taken.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 3, 4]
        );
        assert_eq!(encode_batch(&taken).len(), bytes);
        assert_eq!(p.buffer.len(), 1);
        assert_eq!(p.buffered_bytes(), p.buffer[0].json.len());
    }

    #[test]
    fn plan_never_exceeds_the_limit() {
        let mut p = Packer::default();
        p.push((1..=100).map(|s| ev(s, "a", 500)).collect());
        let limit = 5120;
        while let Some(Plan::Batch {
            positions, bytes, ..
        }) = p.plan(limit, 131072)
        {
            assert!(bytes <= limit);
            let taken = p.take(&positions);
            assert_eq!(encode_batch(&taken).len(), bytes);
        }
        assert!(p.is_empty());
    }

    #[test]
    fn event_over_the_ceiling_is_reported_not_sent() {
        let mut p = Packer::default();
        p.push(vec![ev(5, "a", 2000)]);
        assert!(matches!(
            p.plan(1024, 1500),
            Some(Plan::TooLarge { seq: 5, .. })
        ));
        assert!(matches!(p.plan(1024, 4000), Some(Plan::Batch { .. })));
    }
}
