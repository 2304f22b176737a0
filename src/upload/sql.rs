//! Every SQL statement of the upload jobs database.

/// Schema. `jobs`: one row per request id, kept after the job ends (for repeated
/// requests) until `upload.keep_finished` has passed. `parts`: the multipart parts
/// S3 has acknowledged, so a resumed upload skips them.
pub const SCHEMA: &[&str] = &[
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = FULL",
    "CREATE TABLE IF NOT EXISTS jobs (
        request_id   TEXT PRIMARY KEY NOT NULL,
        request      TEXT NOT NULL,
        state        TEXT NOT NULL,
        created_ms   INTEGER NOT NULL,
        updated_ms   INTEGER NOT NULL,
        attempts     INTEGER NOT NULL DEFAULT 0,
        upload_id    TEXT,
        source       TEXT,
        size         INTEGER,
        sha256       TEXT,
        etag         TEXT,
        location     TEXT,
        error        TEXT
    )",
    "CREATE TABLE IF NOT EXISTS parts (
        request_id   TEXT NOT NULL,
        part_number  INTEGER NOT NULL,
        etag         TEXT NOT NULL,
        size         INTEGER NOT NULL,
        PRIMARY KEY (request_id, part_number)
    )",
];

pub const INSERT_JOB: &str = "INSERT INTO jobs (request_id, request, state, created_ms, updated_ms)
     VALUES (?1, ?2, 'queued', ?3, ?3)";
pub const GET_JOB: &str = "SELECT request_id, request, state, attempts, upload_id, source, size,
            sha256, etag, location, error
     FROM jobs WHERE request_id = ?1";
pub const UNFINISHED_JOBS: &str =
    "SELECT request_id, request, state, attempts, upload_id, source, size,
            sha256, etag, location, error
     FROM jobs WHERE state IN ('queued', 'uploading') ORDER BY created_ms";
pub const COUNT_UNFINISHED: &str =
    "SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'uploading')";
pub const SET_STATE: &str =
    "UPDATE jobs SET state = ?2, attempts = ?3, error = ?4, updated_ms = ?5 WHERE request_id = ?1";
pub const SET_SOURCE: &str =
    "UPDATE jobs SET source = ?2, size = ?3, updated_ms = ?4 WHERE request_id = ?1";
pub const SET_UPLOAD_ID: &str =
    "UPDATE jobs SET upload_id = ?2, updated_ms = ?3 WHERE request_id = ?1";
pub const SET_DONE: &str = "UPDATE jobs SET state = 'done', size = ?2, sha256 = ?3, etag = ?4,
            location = ?5, error = NULL, updated_ms = ?6 WHERE request_id = ?1";
pub const INSERT_PART: &str =
    "INSERT OR REPLACE INTO parts (request_id, part_number, etag, size) VALUES (?1, ?2, ?3, ?4)";
pub const PARTS: &str =
    "SELECT part_number, etag, size FROM parts WHERE request_id = ?1 ORDER BY part_number";
pub const DELETE_PARTS: &str = "DELETE FROM parts WHERE request_id = ?1";
pub const PRUNE_PARTS: &str = "DELETE FROM parts WHERE request_id IN
     (SELECT request_id FROM jobs WHERE state IN ('done', 'failed'))";
pub const PRUNE_JOBS: &str =
    "DELETE FROM jobs WHERE state IN ('done', 'failed') AND updated_ms < ?1";
