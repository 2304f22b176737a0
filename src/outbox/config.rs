//! The outbox's section of the configuration (`[outbox]`): its fields, defaults,
//! checks and which of them remote configuration may set.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::check::Checker;

/// The fields of `[outbox]` remote configuration may set, applied live.
pub const TUNABLE: &[&str] = &["max_bytes", "max_age", "when_full", "synchronous"];

/// What to do when the outbox is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Delete the oldest events to make room (counted as `evicted`).
    DropOldest,
    /// Keep what is stored and refuse the new event (counted as `refused`).
    RefuseNewest,
}

/// SQLite's `synchronous` setting for the outbox (in WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Synchronous {
    /// fsync the WAL at every commit: a committed event survives power loss.
    Full,
    /// fsync only at checkpoints: survives a crash of the process (kill -9), but a
    /// power cut may lose the last commits.
    Normal,
}

/// The durable outbox of events waiting for the broker's acknowledgement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// Ceiling on the outbox's files on disk (database + WAL), in bytes. At least 1 MiB.
    #[serde(default = "default_outbox_max_bytes")]
    pub max_bytes: u64,
    /// Events older than this (by their timestamp) are deleted unsent and counted as
    /// `expired`. `0s` keeps them until `max_bytes` forces a decision.
    #[serde(default = "default_outbox_max_age", with = "humantime_serde")]
    pub max_age: Duration,
    /// What happens to a new event when the outbox is at `max_bytes`:
    /// `drop_oldest` or `refuse_newest`. Either way every lost event is counted.
    #[serde(default = "default_when_full")]
    pub when_full: WhenFull,
    /// `full` (survives power loss; one fsync per commit) or `normal` (survives a
    /// process crash only; faster on slow flash).
    #[serde(default = "default_synchronous")]
    pub synchronous: Synchronous,
    /// Capacity of the channel from event producers to the outbox. Producers wait
    /// (never drop) when it is full.
    #[serde(default = "default_outbox_channel")]
    pub channel_capacity: usize,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            max_bytes: default_outbox_max_bytes(),
            max_age: default_outbox_max_age(),
            when_full: default_when_full(),
            synchronous: default_synchronous(),
            channel_capacity: default_outbox_channel(),
        }
    }
}

fn default_outbox_channel() -> usize {
    1024
}

fn default_outbox_max_age() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

fn default_outbox_max_bytes() -> u64 {
    256 * 1024 * 1024
}

fn default_synchronous() -> Synchronous {
    Synchronous::Full
}

fn default_when_full() -> WhenFull {
    WhenFull::DropOldest
}

impl OutboxConfig {
    /// Records every value out of range in `c`.
    pub fn check(&self, c: &mut Checker) {
        let o = self;
        c.range("outbox.max_bytes", o.max_bytes, 1 << 20, 1 << 40);
        c.range("outbox.channel_capacity", o.channel_capacity, 1, 1 << 20);
    }
}
