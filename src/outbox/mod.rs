//! The durable outbox: the only owner of the event database.
//!
//! # Invariants
//! - An event is committed here before anything else happens to it. A producer's
//!   event sits at most in the bounded channel to this stage (`outbox.channel_capacity`
//!   events); the stage commits whatever it has gathered in one transaction (group commit).
//! - A row is deleted only when (a) the broker acknowledged (PUBACK) the message that
//!   carried it, (b) `max_bytes` forced an eviction (`drop_oldest`, counted as `evicted`),
//!   or (c) it is older than `max_age` (counted as `expired`). Refused events
//!   (`refuse_newest`, disk full) are counted as `refused`. The counts are persisted
//!   in the `meta` table and shown by `edgecam outbox stats` and the metrics message.
//! - `seq` is SQLite's `AUTOINCREMENT` rowid: strictly increasing, never reused even
//!   after deletes. `outbox.db.seq` holds a floor reserved ahead of every seq handed
//!   out (written with fsync before the seqs are used); a database created to replace
//!   a lost one starts above it, so a seq is never reused and the cloud sees the gap.
//!
//! # File format
//! SQLite in WAL mode, `auto_vacuum = INCREMENTAL`, schema version in `user_version`
//! (`sql.rs`). Row data is budgeted at 40% of `max_bytes`; the rest covers page slack,
//! free pages not yet vacuumed and the WAL (`journal_size_limit` = `max_bytes / 4`),
//! so the database and WAL together stay under `max_bytes`.
//!
//! # After a crash
//! `synchronous = FULL` (default): each commit that adds events fsyncs the WAL, so an
//! event committed before a power cut is there after it; kill -9 loses nothing
//! committed either. The cost is one fsync per group commit (see the benchmark).
//! Deletes (acknowledged, evicted, expired rows) are committed with `NORMAL`: a delete
//! lost to a power cut brings rows back, which are then sent again (a duplicate, never
//! a loss), and the next insert's fsync makes it durable anyway.
//! `synchronous = NORMAL`: a kill -9 loses nothing committed, a power cut may lose the
//! last transactions (the WAL is fsynced only at checkpoints). Unacknowledged events
//! are simply sent again after restart (at least once; duplicates repeat an `event_id`).
//! A database that cannot be opened (not a database, `quick_check` fails, a schema
//! from a newer version) is renamed `outbox.db.corrupt-<ms>` (one copy kept) and a
//! new one is started, with an error in the log and `outbox_resets` counted.

mod config;
mod sql;
mod stage;
mod store;

pub use config::{OutboxConfig, Synchronous, WhenFull, TUNABLE};
pub use stage::{EventSender, Outbox, OutboxHandle};
pub use store::{OutboxError, Recovery, Store};
