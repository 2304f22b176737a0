//! Every SQL statement of the outbox, by name. The schema version lives in
//! `PRAGMA user_version`; [`MIGRATIONS`] holds one entry per version.

/// Schema migrations, applied in order; entry `i` moves `user_version` from `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE events (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    kind     TEXT    NOT NULL,
    ts_ms    INTEGER NOT NULL,
    -- The event's wire JSON after `{"camera_id":…,"seq":…,` (events::encode_body):
    -- stored encoded so the drain only prepends two fields.
    body     TEXT    NOT NULL
);
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
"#];

/// Bytes charged to the outbox budget for one row; keep in step with `row_cost`.
/// 8 (seq) + 8 (ts) + 24 (record and cell headers).
macro_rules! row_cost_sql {
    () => {
        "(octet_length(body) + octet_length(kind) + 40)"
    };
}

pub const USER_VERSION: &str = "PRAGMA user_version";
pub const QUICK_CHECK: &str = "PRAGMA quick_check";
pub const INCREMENTAL_VACUUM: &str = "PRAGMA incremental_vacuum";
pub const FREELIST_COUNT: &str = "PRAGMA freelist_count";

/// Rows per multi-row INSERT (3 bound values each).
pub const INSERT_CHUNK: usize = 256;

/// `INSERT INTO events ... VALUES (?, ?, ?) x rows RETURNING seq`.
pub fn insert_events(rows: usize) -> String {
    const HEAD: &str = "INSERT INTO events (kind, ts_ms, body) VALUES ";
    const ROW: &str = "(?, ?, ?)";
    let mut sql = String::with_capacity(HEAD.len() + rows * (ROW.len() + 1) + 16);
    sql.push_str(HEAD);
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(ROW);
    }
    sql.push_str(" RETURNING seq");
    sql
}

/// Sets the schema version after a migration.
pub fn set_user_version(v: usize) -> String {
    format!("PRAGMA user_version = {v}")
}

/// Bounds of the WAL: checkpoint every `pages`, truncate to `bytes` after it.
pub fn wal_bounds(pages: u64, bytes: u64) -> [String; 2] {
    [
        format!("PRAGMA wal_autocheckpoint = {pages}"),
        format!("PRAGMA journal_size_limit = {bytes}"),
    ]
}

/// Durability of the next transactions (a connection setting in SQLite).
pub const SYNC_FULL: &str = "PRAGMA synchronous = FULL";
pub const SYNC_NORMAL: &str = "PRAGMA synchronous = NORMAL";

/// The oldest events after seq ?1, at most ?2, as one row: comma-separated seqs,
/// kinds and body lengths in bytes, then the bodies back to back. One row per page
/// instead of one per event: the driver's cost per row dominated the drain.
///
/// The aggregates carry no ORDER BY (sorting doubled the cost): SQLite feeds them the
/// subquery's rows in its order, all four in the same pass. The reader checks that
/// the seqs come out increasing and falls back to [`FETCH_PAGE_ORDERED`] if not.
pub const FETCH_PAGE: &str = "SELECT group_concat(seq, ','), group_concat(kind, ','), \
     group_concat(octet_length(body), ','), group_concat(body, '') \
     FROM (SELECT seq, kind, body FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2)";

/// [`FETCH_PAGE`] with the order of every aggregate stated.
pub const FETCH_PAGE_ORDERED: &str = "SELECT group_concat(seq, ',' ORDER BY seq), \
     group_concat(kind, ',' ORDER BY seq), \
     group_concat(octet_length(body), ',' ORDER BY seq), \
     group_concat(body, '' ORDER BY seq) \
     FROM (SELECT seq, kind, body FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2)";

/// Rows and bytes in the seq range ?1..=?2.
pub const COUNT_RANGE: &str = concat!(
    "SELECT COUNT(*), COALESCE(SUM(",
    row_cost_sql!(),
    "), 0) FROM events WHERE seq BETWEEN ?1 AND ?2"
);

pub const DELETE_RANGE: &str = "DELETE FROM events WHERE seq BETWEEN ?1 AND ?2";

/// The oldest rows with their cost, for eviction.
pub const OLDEST_COSTS: &str = concat!(
    "SELECT seq, ",
    row_cost_sql!(),
    " FROM events ORDER BY seq LIMIT ?1"
);

/// Deletes rows whose event time is older than ?1 (and newer than ?2, the earliest
/// plausible wall clock: events stamped before the clock was set are kept).
pub const DELETE_EXPIRED: &str = concat!(
    "DELETE FROM events WHERE ts_ms < ?1 AND ts_ms >= ?2 RETURNING ",
    row_cost_sql!()
);

pub const DEPTH_AND_BYTES: &str = concat!(
    "SELECT COUNT(*), COALESCE(SUM(",
    row_cost_sql!(),
    "), 0) FROM events"
);

pub const OLDEST_TS: &str = "SELECT ts_ms FROM events ORDER BY seq LIMIT 1";

pub const MAX_SEQ: &str =
    "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0)";

pub const SET_SEQ_FLOOR: &str = "INSERT INTO sqlite_sequence (name, seq) VALUES ('events', ?1)";

pub const ALL_META: &str = "SELECT key, value FROM meta";

pub const ADD_META: &str = "INSERT INTO meta (key, value) VALUES (?1, ?2) \
     ON CONFLICT(key) DO UPDATE SET value = value + excluded.value";

pub const MAX_META: &str = "INSERT INTO meta (key, value) VALUES (?1, ?2) \
     ON CONFLICT(key) DO UPDATE SET value = MAX(value, excluded.value)";

/// Keys of the `meta` table.
pub mod meta {
    pub const EVICTED: &str = "evicted";
    pub const EXPIRED: &str = "expired";
    pub const REFUSED: &str = "refused";
    pub const LAST_ACKED_SEQ: &str = "last_acked_seq";
}
