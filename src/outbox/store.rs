//! The outbox database: one SQLite connection, owned by the outbox stage (or by a
//! one-shot CLI command). See the module header in `mod.rs` for the invariants.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use sqlx::sqlite::{
    SqliteAutoVacuum, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Row};

use super::sql;
use super::{OutboxConfig, Synchronous, WhenFull};
use crate::events::{encode_body, encode_event, now_ms, NewEvent, StoredEvent};
use crate::sqlite::is_corruption;

/// Errors of the outbox.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("state directory {dir} is not usable: {source}")]
    StateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("outbox database {path}: {source}")]
    Db { path: PathBuf, source: sqlx::Error },
    #[error("outbox database {path} is unreadable or corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot move the corrupt outbox {path} aside: {source}")]
    MoveAside {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("outbox seq floor file {path}: {source}")]
    SeqFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no outbox database at {0}")]
    Missing(PathBuf),
    #[error("the outbox stage has stopped")]
    Stopped,
}

/// What to do with a database that cannot be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Move it aside and start a new one (the daemon).
    MoveAside,
    /// Report the error (one-shot commands).
    Fail,
}

/// Share of `max_bytes` for event rows; the rest covers page slack, the WAL and the
/// free pages not yet vacuumed.
const DATA_SHARE: f64 = 0.4;
/// Share of `max_bytes` for the WAL file.
const WAL_SHARE: u64 = 4;
/// Seqs reserved ahead in the floor file, so a database that is replaced never
/// hands out a seq again.
const SEQ_RESERVE: i64 = 100_000;
/// Earliest wall clock taken as set (2020-01-01): events stamped before it never
/// expire by age (a camera without RTC stamps 1970 until NTP answers).
const SANE_CLOCK_MS: i64 = 1_577_836_800_000;
const PAGE_SIZE: u64 = 4096;

/// WAL checkpoint interval (pages) and size limit (bytes) for a `max_bytes` budget.
fn wal_bounds(max_bytes: u64) -> (u64, u64) {
    let wal_bytes = max_bytes / WAL_SHARE;
    ((wal_bytes / PAGE_SIZE / 2).clamp(16, 1000), wal_bytes)
}

/// Bytes charged to the budget for one event; keep in step with `row_cost_sql!`.
pub fn row_cost(kind: &str, body: &str) -> i64 {
    (body.len() + kind.len() + 40) as i64
}

/// Figures for `edgecam outbox stats` and the metrics message.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct OutboxStats {
    /// Events waiting for acknowledgement.
    pub depth: i64,
    /// Bytes of those events, as charged to the budget.
    pub bytes: i64,
    /// Age of the oldest waiting event, seconds (by its timestamp).
    pub oldest_age_s: Option<f64>,
    /// Events deleted unsent to make room, since the database was created.
    pub evicted: i64,
    /// Events deleted unsent for age.
    pub expired: i64,
    /// Events refused (full with `refuse_newest`, or the disk was full).
    pub refused: i64,
    /// Highest seq the broker acknowledged.
    pub last_acked_seq: i64,
    /// Highest seq handed out.
    pub last_seq: i64,
    /// Database + WAL size on disk.
    pub file_bytes: u64,
}

/// What became of a group of events handed to [`Store::append`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Seqs given, in the order of the accepted events.
    pub accepted: Vec<i64>,
    /// Events refused, with the reason.
    pub refused: Vec<(uuid::Uuid, &'static str)>,
    /// Old events evicted to make room.
    pub evicted: u64,
}

/// The outbox database.
pub struct Store {
    conn: SqliteConnection,
    path: PathBuf,
    budget: i64,
    when_full: WhenFull,
    max_age: Duration,
    depth: i64,
    bytes: i64,
    max_seq: i64,
    seq_reserved: i64,
    /// The configured durability, and what the connection is set to now.
    synchronous: Synchronous,
    lazy_now: bool,
    /// Use the slower fetch whose aggregates state their order (see `FETCH_PAGE`).
    ordered_fetch: bool,
}

fn db_err(path: &Path) -> impl FnOnce(sqlx::Error) -> OutboxError + '_ {
    move |source| OutboxError::Db {
        path: path.to_owned(),
        source,
    }
}

impl Store {
    /// Opens (creating if needed) the outbox at `path`.
    pub async fn open(
        path: &Path,
        cfg: &OutboxConfig,
        recovery: Recovery,
    ) -> Result<(Self, Option<PathBuf>), OutboxError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        check_writable(dir)?;
        match Self::try_open(path, cfg).await {
            Ok(store) => Ok((store, None)),
            Err(OutboxError::Corrupt { reason, .. }) if recovery == Recovery::MoveAside => {
                let aside = move_aside(path)?;
                tracing::error!(
                    path = %path.display(),
                    moved_to = %aside.display(),
                    %reason,
                    "outbox database is unreadable or corrupt; moved it aside and started a new one; events in it are not sent"
                );
                let store = Self::try_open(path, cfg).await?;
                Ok((store, Some(aside)))
            }
            Err(e) => Err(e),
        }
    }

    async fn try_open(path: &Path, cfg: &OutboxConfig) -> Result<Self, OutboxError> {
        let (checkpoint, wal_limit) = wal_bounds(cfg.max_bytes);
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .auto_vacuum(SqliteAutoVacuum::Incremental)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match cfg.synchronous {
                Synchronous::Full => SqliteSynchronous::Full,
                Synchronous::Normal => SqliteSynchronous::Normal,
            })
            .busy_timeout(Duration::from_secs(5))
            .pragma("wal_autocheckpoint", checkpoint.to_string())
            .pragma("journal_size_limit", wal_limit.to_string())
            .disable_statement_logging();
        let corrupt = |reason: String| OutboxError::Corrupt {
            path: path.to_owned(),
            reason,
        };
        let classify = |e: sqlx::Error| {
            if is_corruption(&e) {
                corrupt(e.to_string())
            } else {
                OutboxError::Db {
                    path: path.to_owned(),
                    source: e,
                }
            }
        };
        let mut conn = opts.connect().await.map_err(classify)?;
        let check: String = sqlx::query_scalar(sql::QUICK_CHECK)
            .fetch_one(&mut conn)
            .await
            .map_err(classify)?;
        if check != "ok" {
            return Err(corrupt(format!("quick_check: {check}")));
        }
        let version: i64 = sqlx::query_scalar(sql::USER_VERSION)
            .fetch_one(&mut conn)
            .await
            .map_err(classify)?;
        if version as usize > sql::MIGRATIONS.len() {
            return Err(corrupt(format!(
                "schema version {version} is newer than this edgecam knows ({})",
                sql::MIGRATIONS.len()
            )));
        }
        let fresh = version == 0;
        for (i, migration) in sql::MIGRATIONS.iter().enumerate().skip(version as usize) {
            let mut tx = conn.begin().await.map_err(classify)?;
            sqlx::raw_sql(migration)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            sqlx::raw_sql(&sql::set_user_version(i + 1))
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            tx.commit().await.map_err(classify)?;
        }

        let seq_file = seq_file_path(path);
        let floor = read_seq_floor(&seq_file)?;
        let mut max_seq: i64 = sqlx::query_scalar(sql::MAX_SEQ)
            .fetch_one(&mut conn)
            .await
            .map_err(classify)?;
        if fresh && floor > max_seq {
            // A new database after a lost one: continue above every seq ever handed out.
            sqlx::query(sql::SET_SEQ_FLOOR)
                .bind(floor)
                .execute(&mut conn)
                .await
                .map_err(classify)?;
            max_seq = floor;
        }
        let mut store = Self {
            conn,
            path: path.to_owned(),
            budget: (cfg.max_bytes as f64 * DATA_SHARE) as i64,
            when_full: cfg.when_full,
            max_age: cfg.max_age,
            depth: 0,
            bytes: 0,
            max_seq,
            seq_reserved: floor.max(max_seq),
            synchronous: cfg.synchronous,
            lazy_now: cfg.synchronous == Synchronous::Normal,
            ordered_fetch: false,
        };
        store.refresh_counters().await?;
        Ok(store)
    }

    /// Opens an existing outbox read-only, for `outbox stats` beside a running daemon
    /// (only [`Store::stats`] is meaningful on it).
    pub async fn open_read_only(path: &Path) -> Result<Self, OutboxError> {
        if !path.exists() {
            return Err(OutboxError::Missing(path.to_owned()));
        }
        let conn = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .busy_timeout(Duration::from_secs(5))
            .disable_statement_logging()
            .connect()
            .await
            .map_err(db_err(path))?;
        Ok(Self {
            conn,
            path: path.to_owned(),
            budget: 0,
            when_full: WhenFull::RefuseNewest,
            max_age: Duration::ZERO,
            depth: 0,
            bytes: 0,
            max_seq: 0,
            seq_reserved: 0,
            synchronous: Synchronous::Normal,
            lazy_now: true,
            ordered_fetch: false,
        })
    }

    /// Takes up new limits (remote configuration): the budget, the full policy, the
    /// age limit, durability and the WAL bounds apply from the next transaction.
    pub async fn set_limits(&mut self, cfg: &OutboxConfig) -> Result<(), OutboxError> {
        self.budget = (cfg.max_bytes as f64 * DATA_SHARE) as i64;
        self.when_full = cfg.when_full;
        self.max_age = cfg.max_age;
        // `durability` compares with what the connection is set to, so the next
        // transaction picks the new setting up.
        self.synchronous = cfg.synchronous;
        let (checkpoint, limit) = wal_bounds(cfg.max_bytes);
        for pragma in sql::wal_bounds(checkpoint, limit) {
            sqlx::query(&pragma)
                .execute(&mut self.conn)
                .await
                .map_err(db_err(&self.path))?;
        }
        tracing::info!(max_bytes = cfg.max_bytes, max_age = ?cfg.max_age, when_full = ?cfg.when_full, synchronous = ?cfg.synchronous, "outbox limits changed");
        Ok(())
    }

    /// Sets the durability of the next transactions. Inserts are committed with the
    /// configured `synchronous`; deletes (acknowledged, evicted, expired rows) always
    /// lazily (`NORMAL`): a delete lost to a power cut only brings back rows that are
    /// then sent again (at least once), and the next durable commit fsyncs it anyway.
    async fn durability(&mut self, lazy: bool) -> Result<(), OutboxError> {
        let lazy = lazy || self.synchronous == Synchronous::Normal;
        if lazy != self.lazy_now {
            let pragma = if lazy {
                sql::SYNC_NORMAL
            } else {
                sql::SYNC_FULL
            };
            sqlx::query(pragma)
                .execute(&mut self.conn)
                .await
                .map_err(db_err(&self.path))?;
            self.lazy_now = lazy;
        }
        Ok(())
    }

    /// Largest group of bytes worth committing in one transaction.
    pub fn group_bytes(&self) -> usize {
        (self.budget / 4).clamp(4096, 4 << 20) as usize
    }

    pub fn depth(&self) -> i64 {
        self.depth
    }

    pub fn bytes(&self) -> i64 {
        self.bytes
    }

    /// Recounts depth and bytes from the table (other processes, e.g. `edgecam emit`,
    /// may have added rows).
    pub async fn refresh_counters(&mut self) -> Result<(), OutboxError> {
        let row = sqlx::query(sql::DEPTH_AND_BYTES)
            .fetch_one(&mut self.conn)
            .await
            .map_err(db_err(&self.path))?;
        self.depth = row.get(0);
        self.bytes = row.get(1);
        let max_seq: i64 = sqlx::query_scalar(sql::MAX_SEQ)
            .fetch_one(&mut self.conn)
            .await
            .map_err(db_err(&self.path))?;
        self.max_seq = self.max_seq.max(max_seq);
        Ok(())
    }

    /// Commits `events` in one transaction, applying the full policy. A disk-full
    /// error refuses the group and keeps the store usable.
    pub async fn append(&mut self, events: Vec<NewEvent>) -> Result<AppendOutcome, OutboxError> {
        let mut out = AppendOutcome::default();
        let mut accepted = Vec::with_capacity(events.len());
        let mut need: i64 = 0;
        for ev in events {
            if !crate::topics::valid_kind(&ev.kind) {
                // The kind becomes a topic level and is stored unescaped in the body.
                out.refused.push((ev.event_id, "invalid kind"));
                continue;
            }
            let body = encode_body(&ev);
            let cost = row_cost(&ev.kind, &body);
            let fits = self.bytes + need + cost <= self.budget;
            if cost > self.group_bytes() as i64 {
                out.refused
                    .push((ev.event_id, "event larger than the outbox admits"));
            } else if !fits && self.when_full == WhenFull::RefuseNewest {
                out.refused
                    .push((ev.event_id, "outbox full (refuse_newest)"));
            } else {
                need += cost;
                accepted.push((ev, body));
            }
        }
        if accepted.is_empty() {
            self.count_refused(out.refused.len()).await?;
            return Ok(out);
        }
        let n = accepted.len() as i64;
        if self.max_seq + n > self.seq_reserved {
            let reserve = self.max_seq + n + SEQ_RESERVE;
            // A file write with two fsyncs: off the runtime.
            let path = seq_file_path(&self.path);
            tokio::task::spawn_blocking(move || write_seq_floor(&path, reserve))
                .await
                .map_err(|e| OutboxError::SeqFile {
                    path: seq_file_path(&self.path),
                    source: std::io::Error::other(e.to_string()),
                })??;
            self.seq_reserved = reserve;
        }

        let excess = self.bytes + need - self.budget;
        self.durability(false).await?;
        let result = self.append_tx(&accepted, excess, out.refused.len()).await;
        match result {
            Ok((seqs, evicted, freed)) => {
                self.depth += n - evicted as i64;
                self.bytes += need - freed;
                if let Some(&last) = seqs.last() {
                    self.max_seq = self.max_seq.max(last);
                }
                out.accepted = seqs;
                out.evicted = evicted;
                Ok(out)
            }
            Err(OutboxError::Db { source, .. }) if is_disk_full(&source) => {
                tracing::error!(
                    path = %self.path.display(),
                    events = n,
                    "disk full: outbox cannot store new events; refusing them"
                );
                for (ev, _) in &accepted {
                    out.refused.push((ev.event_id, "disk full"));
                }
                // Best effort: the counter may not fit on a full disk either.
                if let Err(e) = self.count_refused(out.refused.len()).await {
                    tracing::warn!(error = %e, "could not persist the refused count");
                }
                Ok(out)
            }
            Err(e) => Err(e),
        }
    }

    async fn append_tx(
        &mut self,
        events: &[(NewEvent, String)],
        excess: i64,
        refused: usize,
    ) -> Result<(Vec<i64>, u64, i64), OutboxError> {
        let path = self.path.clone();
        let err = |e| db_err(&path)(e);
        let mut tx = self.conn.begin().await.map_err(err)?;
        let (mut evicted, mut freed) = (0u64, 0i64);
        if excess > 0 {
            // Find the newest seq whose deletion, with all older rows, frees `excess`.
            let mut upto = None;
            let mut sum = 0i64;
            let rows = sqlx::query(sql::OLDEST_COSTS)
                .bind(4096i64)
                .fetch_all(&mut *tx)
                .await
                .map_err(err)?;
            for r in rows {
                sum += r.get::<i64, _>(1);
                upto = Some(r.get::<i64, _>(0));
                if sum >= excess {
                    break;
                }
            }
            if let Some(upto) = upto {
                let (n, bytes) = delete_range(&mut tx, i64::MIN, upto).await.map_err(err)?;
                evicted = n as u64;
                freed = bytes;
                add_meta(&mut tx, sql::meta::EVICTED, n)
                    .await
                    .map_err(err)?;
            }
        }
        let mut seqs = Vec::with_capacity(events.len());
        for chunk in events.chunks(sql::INSERT_CHUNK) {
            let statement = sql::insert_events(chunk.len());
            let mut q = sqlx::query_scalar::<_, i64>(&statement);
            for (ev, body) in chunk {
                q = q.bind(&ev.kind).bind(ev.ts_ms).bind(body);
            }
            seqs.extend(q.fetch_all(&mut *tx).await.map_err(err)?);
        }
        // RETURNING gives no order guarantee; rows of one statement get increasing seqs.
        seqs.sort_unstable();
        if refused > 0 {
            add_meta(&mut tx, sql::meta::REFUSED, refused as i64)
                .await
                .map_err(err)?;
        }
        tx.commit().await.map_err(err)?;
        Ok((seqs, evicted, freed))
    }

    async fn count_refused(&mut self, n: usize) -> Result<(), OutboxError> {
        if n == 0 {
            return Ok(());
        }
        let mut tx = self.conn.begin().await.map_err(db_err(&self.path))?;
        add_meta(&mut tx, sql::meta::REFUSED, n as i64)
            .await
            .map_err(db_err(&self.path))?;
        tx.commit().await.map_err(db_err(&self.path))
    }

    /// The oldest events with `seq > after`, encoded for `camera_id`: at most
    /// `max_events` and about `max_bytes` (pages are sized from the average event;
    /// always at least one event if any).
    pub async fn fetch(
        &mut self,
        camera_id: &str,
        after: i64,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredEvent>, OutboxError> {
        const PAGE: usize = 1024;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut after = after;
        while out.len() < max_events && bytes < max_bytes {
            // Size the page from the average row, so large events do not come a
            // thousand at a time.
            let average = (self.bytes / self.depth.max(1)).max(1) as usize;
            let by_bytes = (max_bytes - bytes).div_ceil(average);
            let limit = PAGE.min(max_events - out.len()).min(by_bytes).max(1);
            let before = out.len();
            let query = if self.ordered_fetch {
                sql::FETCH_PAGE_ORDERED
            } else {
                sql::FETCH_PAGE
            };
            match self
                .fetch_page(query, camera_id, after, limit, &mut out)
                .await?
            {
                Ok(()) => {}
                Err(reason) if !self.ordered_fetch => {
                    tracing::warn!(%reason, "unordered page fetch failed its check; using the ordered query from now on");
                    self.ordered_fetch = true;
                    out.truncate(before);
                    continue;
                }
                Err(reason) => {
                    return Err(OutboxError::Corrupt {
                        path: self.path.clone(),
                        reason,
                    })
                }
            }
            let fetched = &out[before..];
            bytes += fetched.iter().map(|e| e.json.len()).sum::<usize>();
            match fetched.last() {
                Some(last) => after = last.seq,
                None => break,
            }
            if fetched.len() < limit {
                break;
            }
        }
        Ok(out)
    }

    /// Runs one page query and appends its events to `out`. The inner result is
    /// the page's own check (seqs increasing, lengths consistent).
    async fn fetch_page(
        &mut self,
        query: &str,
        camera_id: &str,
        after: i64,
        limit: usize,
        out: &mut Vec<StoredEvent>,
    ) -> Result<Result<(), String>, OutboxError> {
        type Page = (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let page: Page = sqlx::query_as(query)
            .bind(after)
            .bind(limit as i64)
            .fetch_one(&mut self.conn)
            .await
            .map_err(db_err(&self.path))?;
        Ok(match page {
            (Some(seqs), Some(kinds), Some(lens), Some(bodies)) => {
                unpage(camera_id, after, &seqs, &kinds, &lens, &bodies, out)
            }
            _ => Ok(()),
        })
    }

    /// Deletes acknowledged events. Returns how many rows were still there.
    pub async fn ack(&mut self, seqs: &[i64]) -> Result<u64, OutboxError> {
        if seqs.is_empty() {
            return Ok(0);
        }
        let mut sorted = seqs.to_vec();
        sorted.sort_unstable();
        let last = sorted[sorted.len() - 1];
        self.durability(true).await?;
        let path = self.path.clone();
        let err = |e| db_err(&path)(e);
        let mut tx = self.conn.begin().await.map_err(err)?;
        let (mut deleted, mut freed) = (0i64, 0i64);
        // Batches are mostly runs of consecutive seqs: delete them as ranges.
        for (first, end) in runs(&sorted) {
            let (n, bytes) = delete_range(&mut tx, first, end).await.map_err(err)?;
            deleted += n;
            freed += bytes;
        }
        sqlx::query(sql::MAX_META)
            .bind(sql::meta::LAST_ACKED_SEQ)
            .bind(last)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        tx.commit().await.map_err(err)?;
        self.depth -= deleted;
        self.bytes -= freed;
        Ok(deleted as u64)
    }

    /// Deletes events older than `max_age`. Returns how many.
    pub async fn expire(&mut self) -> Result<u64, OutboxError> {
        let now = now_ms();
        if self.max_age.is_zero() || now < SANE_CLOCK_MS {
            return Ok(0);
        }
        let cutoff = now - self.max_age.as_millis() as i64;
        self.durability(true).await?;
        let path = self.path.clone();
        let err = |e| db_err(&path)(e);
        let mut tx = self.conn.begin().await.map_err(err)?;
        let costs: Vec<i64> = sqlx::query_scalar(sql::DELETE_EXPIRED)
            .bind(cutoff)
            .bind(SANE_CLOCK_MS)
            .fetch_all(&mut *tx)
            .await
            .map_err(err)?;
        if !costs.is_empty() {
            add_meta(&mut tx, sql::meta::EXPIRED, costs.len() as i64)
                .await
                .map_err(err)?;
        }
        tx.commit().await.map_err(err)?;
        self.depth -= costs.len() as i64;
        self.bytes -= costs.iter().sum::<i64>();
        Ok(costs.len() as u64)
    }

    /// Gives free pages back to the file system.
    pub async fn vacuum(&mut self) -> Result<(), OutboxError> {
        let free: i64 = sqlx::query_scalar(sql::FREELIST_COUNT)
            .fetch_one(&mut self.conn)
            .await
            .map_err(db_err(&self.path))?;
        if free > 0 {
            // `query`, not `raw_sql`: raw_sql's future is not provably Send.
            sqlx::query(sql::INCREMENTAL_VACUUM)
                .execute(&mut self.conn)
                .await
                .map_err(db_err(&self.path))?;
        }
        Ok(())
    }

    pub async fn stats(&mut self) -> Result<OutboxStats, OutboxError> {
        let path = self.path.clone();
        let path = path.as_path();
        let err = db_err(path);
        // `outbox stats` can open the file in the moment between the daemon creating
        // it and committing its schema: that outbox holds nothing yet.
        let version: i64 = sqlx::query_scalar(sql::USER_VERSION)
            .fetch_one(&mut self.conn)
            .await
            .map_err(db_err(path))?;
        if version == 0 {
            return Ok(OutboxStats {
                file_bytes: file_bytes(path),
                ..OutboxStats::default()
            });
        }
        let row = sqlx::query(sql::DEPTH_AND_BYTES)
            .fetch_one(&mut self.conn)
            .await
            .map_err(err)?;
        let oldest: Option<i64> = sqlx::query_scalar::<_, i64>(sql::OLDEST_TS)
            .fetch_all(&mut self.conn)
            .await
            .map_err(db_err(path))?
            .first()
            .copied();
        let meta: Vec<(String, i64)> = sqlx::query_as(sql::ALL_META)
            .fetch_all(&mut self.conn)
            .await
            .map_err(db_err(path))?;
        let get = |key: &str| {
            meta.iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| *v)
                .unwrap_or(0)
        };
        let (evicted, expired, refused) = (
            get(sql::meta::EVICTED),
            get(sql::meta::EXPIRED),
            get(sql::meta::REFUSED),
        );
        let last_acked = get(sql::meta::LAST_ACKED_SEQ);
        let last_seq: i64 = sqlx::query_scalar(sql::MAX_SEQ)
            .fetch_one(&mut self.conn)
            .await
            .map_err(db_err(path))?;
        Ok(OutboxStats {
            depth: row.get(0),
            bytes: row.get(1),
            oldest_age_s: oldest.map(|ts| ((now_ms() - ts).max(0)) as f64 / 1000.0),
            evicted,
            expired,
            refused,
            last_acked_seq: last_acked,
            last_seq,
            file_bytes: file_bytes(path),
        })
    }

    /// Closes the connection (checkpointing the WAL).
    pub async fn close(self) -> Result<(), OutboxError> {
        self.conn.close().await.map_err(db_err(&self.path))
    }
}

/// Splits the row of `FETCH_PAGE` into encoded events, checking that seqs increase
/// from `after` and that the lengths account for every body byte.
fn unpage(
    camera_id: &str,
    after: i64,
    seqs: &str,
    kinds: &str,
    lens: &str,
    bodies: &str,
    out: &mut Vec<StoredEvent>,
) -> Result<(), String> {
    let bad = |what: &str| format!("fetch returned a malformed page ({what})");
    let mut rest = bodies;
    let mut previous = after;
    let mut kinds = kinds.split(',');
    let mut lens = lens.split(',');
    for seq in seqs.split(',') {
        let seq: i64 = seq.parse().map_err(|_| bad("seq"))?;
        if seq <= previous {
            return Err(bad("seqs out of order"));
        }
        previous = seq;
        let kind = kinds.next().ok_or_else(|| bad("kind"))?;
        let len: usize = lens
            .next()
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| bad("length"))?;
        if len > rest.len() || !rest.is_char_boundary(len) {
            return Err(bad("body"));
        }
        let (body, tail) = rest.split_at(len);
        rest = tail;
        out.push(StoredEvent {
            seq,
            kind: kind.to_owned(),
            json: encode_event(camera_id, seq, body),
        });
    }
    if rest.is_empty() {
        Ok(())
    } else {
        Err(bad("trailing bytes"))
    }
}

/// Splits sorted seqs into runs of consecutive values, as inclusive ranges.
fn runs(sorted: &[i64]) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::new();
    for &s in sorted {
        match out.last_mut() {
            Some((_, end)) if s <= *end + 1 => *end = (*end).max(s),
            _ => out.push((s, s)),
        }
    }
    out
}

/// Deletes the rows with seq in `first..=last`; returns how many and their cost.
async fn delete_range(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    first: i64,
    last: i64,
) -> Result<(i64, i64), sqlx::Error> {
    let (n, bytes): (i64, i64) = sqlx::query_as(sql::COUNT_RANGE)
        .bind(first)
        .bind(last)
        .fetch_one(&mut **tx)
        .await?;
    if n > 0 {
        sqlx::query(sql::DELETE_RANGE)
            .bind(first)
            .bind(last)
            .execute(&mut **tx)
            .await?;
    }
    Ok((n, bytes))
}

async fn add_meta(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    key: &str,
    n: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(sql::ADD_META)
        .bind(key)
        .bind(n)
        .execute(&mut **tx)
        .await
        .map(|_| ())
}

fn is_disk_full(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .map(|c| c & 0xff == 13)
            .unwrap_or(false),
        sqlx::Error::Io(io) => io.raw_os_error() == Some(libc::ENOSPC),
        _ => false,
    }
}

/// Size of the database and its WAL on disk.
pub fn file_bytes(path: &Path) -> u64 {
    let len = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    len(path.to_owned()) + len(sibling(path, "-wal"))
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn seq_file_path(db: &Path) -> PathBuf {
    sibling(db, ".seq")
}

fn check_writable(dir: &Path) -> Result<(), OutboxError> {
    let fail = |source| OutboxError::StateDir {
        dir: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let probe = dir.join(".edgecam-write-probe");
    std::fs::write(&probe, b"ok").map_err(fail)?;
    std::fs::remove_file(&probe).map_err(fail)
}

/// Renames the database (and its WAL and shared-memory files) to
/// `<name>.corrupt-<unix-ms>`, deleting any older corrupt copy first so that
/// repeated corruption cannot fill the disk.
fn move_aside(path: &Path) -> Result<PathBuf, OutboxError> {
    let fail = |source| OutboxError::MoveAside {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = format!("{name}.corrupt-");
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                std::fs::remove_file(entry.path()).map_err(fail)?;
            }
        }
    }
    let aside = dir.join(format!("{prefix}{}", now_ms()));
    std::fs::rename(path, &aside).map_err(fail)?;
    for suffix in ["-wal", "-shm"] {
        let from = sibling(path, suffix);
        if from.exists() {
            std::fs::rename(&from, sibling(&aside, suffix)).map_err(fail)?;
        }
    }
    Ok(aside)
}

fn read_seq_floor(path: &Path) -> Result<i64, OutboxError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s.trim().parse().unwrap_or_else(|_| {
            tracing::warn!(path = %path.display(), "seq floor file is unreadable; ignoring it");
            0
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(source) => Err(OutboxError::SeqFile {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes the floor durably: temp file, fsync, rename, fsync of the directory.
fn write_seq_floor(path: &Path, value: i64) -> Result<(), OutboxError> {
    let fail = |source| OutboxError::SeqFile {
        path: path.to_owned(),
        source,
    };
    let tmp = sibling(path, ".tmp");
    let mut f = std::fs::File::create(&tmp).map_err(fail)?;
    writeln!(f, "{value}").map_err(fail)?;
    f.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(fail)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    fn event(kind: &str, payload: &str) -> NewEvent {
        NewEvent::now(kind, RawValue::from_string(payload.to_owned()).unwrap())
    }

    async fn store_with(dir: &Path, cfg: OutboxConfig) -> Store {
        Store::open(&dir.join("outbox.db"), &cfg, Recovery::MoveAside)
            .await
            .unwrap()
            .0
    }

    async fn all(store: &mut Store) -> Vec<StoredEvent> {
        store
            .fetch("cam-1", 0, 1_000_000, usize::MAX)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn fetch_returns_wire_json_in_seq_order_across_pages() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store_with(dir.path(), OutboxConfig::default()).await;
        let mut evs = Vec::new();
        for i in 0..2500 {
            let kind = if i % 3 == 0 { "plate" } else { "count" };
            evs.push(event(kind, &format!(r#"{{"i":{i},"text":"é→{i}"}}"#)));
        }
        let ids: Vec<String> = evs.iter().map(|e| e.event_id.to_string()).collect();
        let outcome = store.append(evs).await.unwrap();
        assert_eq!(outcome.accepted, (1..=2500).collect::<Vec<_>>());

        let fetched = all(&mut store).await;
        assert_eq!(fetched.len(), 2500);
        for (i, ev) in fetched.iter().enumerate() {
            let v: serde_json::Value = serde_json::from_str(&ev.json).unwrap();
            assert_eq!(v["seq"], ev.seq);
            assert_eq!(ev.seq, i as i64 + 1);
            assert_eq!(v["camera_id"], "cam-1");
            assert_eq!(v["event_id"], ids[i]);
            assert_eq!(v["kind"], ev.kind.as_str());
            assert_eq!(v["payload"]["text"], format!("é→{i}"));
        }
        // A byte budget stops early but always returns at least one event.
        let some = store.fetch("cam-1", 100, 4096, 1).await.unwrap();
        assert_eq!(some.len(), 1);
        assert_eq!(some[0].seq, 101);
    }

    #[tokio::test]
    async fn stats_of_a_database_whose_schema_is_not_yet_committed_read_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        // What the daemon leaves for an instant: the file exists, the schema does not.
        SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .connect()
            .await
            .unwrap()
            .close()
            .await
            .unwrap();
        let mut reader = Store::open_read_only(&path).await.unwrap();
        let stats = reader.stats().await.unwrap();
        assert_eq!((stats.depth, stats.last_seq, stats.refused), (0, 0, 0));
        // Once the schema is there the same reader sees the events.
        let mut store = store_with(dir.path(), OutboxConfig::default()).await;
        store.append(vec![event("t", "{}")]).await.unwrap();
        let stats = reader.stats().await.unwrap();
        assert_eq!((stats.depth, stats.last_seq), (1, 1));
    }

    #[tokio::test]
    async fn ack_deletes_only_the_acknowledged_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store_with(dir.path(), OutboxConfig::default()).await;
        store
            .append((0..10).map(|_| event("t", "{}")).collect())
            .await
            .unwrap();
        assert_eq!(store.ack(&[7, 2, 3, 4, 99]).await.unwrap(), 4);
        let left: Vec<i64> = all(&mut store).await.iter().map(|e| e.seq).collect();
        assert_eq!(left, vec![1, 5, 6, 8, 9, 10]);
        let stats = store.stats().await.unwrap();
        assert_eq!(stats.depth, 6);
        assert_eq!(stats.last_acked_seq, 99);
        assert_eq!(store.depth(), 6);
        assert_eq!(store.bytes(), stats.bytes);
    }

    #[tokio::test]
    async fn drop_oldest_evicts_to_stay_within_budget_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = OutboxConfig {
            max_bytes: 1 << 20,
            ..OutboxConfig::default()
        };
        let mut store = store_with(dir.path(), cfg).await;
        let filler = "x".repeat(900);
        for _ in 0..20 {
            let evs = (0..100)
                .map(|_| event("t", &format!(r#""{filler}""#)))
                .collect();
            store.append(evs).await.unwrap();
        }
        let stats = store.stats().await.unwrap();
        assert!(stats.evicted > 0, "{stats:?}");
        assert_eq!(stats.depth + stats.evicted, 2000);
        assert!(
            stats.bytes <= store.budget,
            "{} > {}",
            stats.bytes,
            store.budget
        );
        // The newest survive.
        assert_eq!(stats.last_seq, 2000);
        let first = all(&mut store).await[0].seq;
        assert_eq!(first, stats.evicted + 1);
    }

    #[tokio::test]
    async fn refuse_newest_keeps_the_oldest_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = OutboxConfig {
            max_bytes: 1 << 20,
            when_full: WhenFull::RefuseNewest,
            ..OutboxConfig::default()
        };
        let mut store = store_with(dir.path(), cfg).await;
        let filler = "x".repeat(900);
        let mut refused = 0;
        for _ in 0..20 {
            let evs = (0..100)
                .map(|_| event("t", &format!(r#""{filler}""#)))
                .collect();
            refused += store.append(evs).await.unwrap().refused.len() as i64;
        }
        let stats = store.stats().await.unwrap();
        assert!(refused > 0);
        assert_eq!(stats.refused, refused);
        assert_eq!(stats.evicted, 0);
        assert_eq!(stats.depth + refused, 2000);
        assert_eq!(all(&mut store).await[0].seq, 1);
    }

    #[tokio::test]
    async fn expiry_deletes_old_events_but_keeps_those_stamped_before_the_clock_was_set() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store_with(dir.path(), OutboxConfig::default()).await;
        let mut old = event("t", "1");
        old.ts_ms = now_ms() - 8 * 24 * 3600 * 1000;
        let mut unset_clock = event("t", "2");
        unset_clock.ts_ms = 5_000;
        store
            .append(vec![old, unset_clock, event("t", "3")])
            .await
            .unwrap();
        assert_eq!(store.expire().await.unwrap(), 1);
        let left: Vec<i64> = all(&mut store).await.iter().map(|e| e.seq).collect();
        assert_eq!(left, vec![2, 3]);
        assert_eq!(store.stats().await.unwrap().expired, 1);
    }

    #[tokio::test]
    async fn a_replaced_database_continues_above_every_seq_handed_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        let mut store = store_with(dir.path(), OutboxConfig::default()).await;
        store
            .append((0..5).map(|_| event("t", "{}")).collect())
            .await
            .unwrap();
        store.close().await.unwrap();
        std::fs::write(&path, vec![0x42; 8192]).unwrap();
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(sibling(&path, suffix));
        }
        assert!(matches!(
            Store::open(&path, &OutboxConfig::default(), Recovery::Fail).await,
            Err(OutboxError::Corrupt { .. })
        ));
        let (mut store, aside) = Store::open(&path, &OutboxConfig::default(), Recovery::MoveAside)
            .await
            .unwrap();
        assert!(aside.unwrap().exists());
        let seqs = store.append(vec![event("t", "{}")]).await.unwrap().accepted;
        assert!(seqs[0] > 5, "seq {} reused", seqs[0]);
    }

    #[tokio::test]
    async fn a_full_disk_refuses_new_events_and_the_store_keeps_working() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store_with(dir.path(), OutboxConfig::default()).await;
        store.append(vec![event("t", "1")]).await.unwrap();
        // SQLite reports a database at its page limit exactly as a full disk (SQLITE_FULL).
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
            .fetch_one(&mut store.conn)
            .await
            .unwrap();
        sqlx::query(&format!("PRAGMA max_page_count = {pages}"))
            .execute(&mut store.conn)
            .await
            .unwrap();
        let big = format!(r#""{}""#, "x".repeat(20_000));
        let outcome = store
            .append((0..20).map(|_| event("t", &big)).collect())
            .await
            .unwrap();
        assert!(outcome.accepted.is_empty());
        assert_eq!(outcome.refused.len(), 20);
        assert_eq!(outcome.refused[0].1, "disk full");
        assert_eq!(store.depth(), 1);
        // Room again: the store goes on, with the seq sequence intact.
        sqlx::query("PRAGMA max_page_count = 1000000")
            .execute(&mut store.conn)
            .await
            .unwrap();
        let outcome = store.append(vec![event("t", "2")]).await.unwrap();
        assert_eq!(outcome.accepted, vec![2]);
        assert_eq!(store.stats().await.unwrap().refused, 20);
    }

    #[tokio::test]
    async fn an_event_kind_outside_the_topic_alphabet_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store_with(dir.path(), OutboxConfig::default()).await;
        let outcome = store
            .append(vec![
                event("bad\"kind", "{}"),
                event("a/b", "{}"),
                event("ok", "{}"),
            ])
            .await
            .unwrap();
        assert_eq!(outcome.accepted, vec![1]);
        assert_eq!(outcome.refused.len(), 2);
        assert_eq!(store.stats().await.unwrap().refused, 2);
    }

    #[test]
    fn page_check_refuses_seqs_out_of_order_and_stray_bytes() {
        let mut out = Vec::new();
        assert!(unpage("c", 0, "1,2", "a,a", "2,2", "{}{}", &mut out).is_ok());
        assert_eq!(out.len(), 2);
        assert!(unpage("c", 0, "2,1", "a,a", "2,2", "{}{}", &mut out).is_err());
        assert!(unpage("c", 5, "3", "a", "2", "{}", &mut out).is_err());
        assert!(unpage("c", 0, "1", "a", "2", "{}x", &mut out).is_err());
        assert!(unpage("c", 0, "1", "a", "3", "{}", &mut out).is_err());
    }

    #[test]
    fn runs_groups_consecutive_seqs() {
        assert_eq!(runs(&[1, 2, 3, 5, 7, 8]), vec![(1, 3), (5, 5), (7, 8)]);
        assert_eq!(runs(&[4, 4, 5]), vec![(4, 5)]);
        assert!(runs(&[]).is_empty());
    }
}
