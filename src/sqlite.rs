//! What the two SQLite owners (the outbox and the upload jobs) share.

/// Whether an error means "this file is not a usable database" (SQLITE_CORRUPT,
/// SQLITE_NOTADB): the only errors for which a database is moved aside. Anything
/// else (a locked file, a full disk, a directory without access) is reported and
/// the file kept.
pub fn is_corruption(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .map(|c| matches!(c & 0xff, 11 | 26))
            .unwrap_or(false),
        _ => false,
    }
}
