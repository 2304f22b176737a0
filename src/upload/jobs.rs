//! The jobs database (`<state_dir>/uploads.db`), owned by the upload stage alone.
//!
//! Invariants: a request id has at most one row, so a repeated request never starts
//! a second upload; a part is recorded only after S3 acknowledged it, so a resumed
//! multipart upload may re-send a part it is not sure of but never skips one S3 does
//! not have. Writes are `synchronous=FULL`: after a crash or power loss the job is
//! where it was last recorded. A database that cannot be opened is moved aside and a
//! new one started (jobs in it are lost; their requesters get no answer and may ask
//! again, which is safe).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Row};

use super::sql;

#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    #[error("jobs database {path}: {source}")]
    Open { path: PathBuf, source: sqlx::Error },
    #[error("jobs database {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("jobs database: {0}")]
    Sql(#[from] sqlx::Error),
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Queued,
    Uploading,
    Done,
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Uploading => "uploading",
            JobState::Done => "done",
            JobState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "uploading" => JobState::Uploading,
            "done" => JobState::Done,
            "failed" => JobState::Failed,
            _ => JobState::Queued,
        }
    }
}

/// One job as stored.
#[derive(Debug, Clone)]
pub struct Job {
    pub request_id: String,
    /// The request payload as received (it passed every check then).
    pub request: String,
    pub state: JobState,
    pub attempts: u32,
    pub upload_id: Option<String>,
    pub source: Option<String>,
    pub size: Option<u64>,
    pub sha256: Option<String>,
    pub etag: Option<String>,
    pub location: Option<String>,
    pub error: Option<String>,
}

/// A multipart part S3 acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub number: i32,
    pub etag: String,
    pub size: u64,
}

/// What a completed upload left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    pub size: u64,
    pub sha256: String,
    pub etag: String,
    pub location: String,
}

pub struct Jobs {
    conn: SqliteConnection,
}

fn job(row: &sqlx::sqlite::SqliteRow) -> Job {
    Job {
        request_id: row.get(0),
        request: row.get(1),
        state: JobState::parse(row.get::<&str, _>(2)),
        attempts: row.get::<i64, _>(3) as u32,
        upload_id: row.get(4),
        source: row.get(5),
        size: row.get::<Option<i64>, _>(6).map(|s| s as u64),
        sha256: row.get(7),
        etag: row.get(8),
        location: row.get(9),
        error: row.get(10),
    }
}

impl Jobs {
    /// Opens (or creates) the database; a corrupt one is moved aside (where to is
    /// returned) and a new one started.
    pub async fn open(path: &Path) -> Result<(Self, Option<PathBuf>), JobsError> {
        match Self::try_open(path).await {
            Ok(j) => Ok((j, None)),
            // Only a corrupt database is given up; any other error is reported with
            // the jobs in it kept, for the next start.
            Err(e @ JobsError::Corrupt { .. }) => {
                let aside = path.with_extension("db.corrupt");
                tracing::error!(path = %path.display(), error = %e, moved_to = %aside.display(), "upload jobs database unusable; starting a new one");
                if let Err(e) = std::fs::rename(path, &aside) {
                    tracing::error!(error = %e, "cannot move the jobs database aside");
                }
                for suffix in ["db-wal", "db-shm"] {
                    // Leftovers of the old database would be applied to the new one.
                    std::fs::remove_file(path.with_extension(suffix)).unwrap_or(());
                }
                Ok((Self::try_open(path).await?, Some(aside)))
            }
            Err(e) => Err(e),
        }
    }

    async fn try_open(path: &Path) -> Result<Self, JobsError> {
        let open = |source: sqlx::Error| {
            if crate::sqlite::is_corruption(&source) {
                JobsError::Corrupt {
                    path: path.to_owned(),
                    reason: source.to_string(),
                }
            } else {
                JobsError::Open {
                    path: path.to_owned(),
                    source,
                }
            }
        };
        let mut conn = SqliteConnectOptions::from_str("sqlite://")
            .map_err(open)?
            .filename(path)
            .create_if_missing(true)
            .connect()
            .await
            .map_err(open)?;
        for stmt in sql::SCHEMA {
            sqlx::query(stmt).execute(&mut conn).await.map_err(open)?;
        }
        let check: String = sqlx::query_scalar("PRAGMA quick_check")
            .fetch_one(&mut conn)
            .await
            .map_err(open)?;
        if check != "ok" {
            return Err(JobsError::Corrupt {
                path: path.to_owned(),
                reason: format!("quick_check: {check}"),
            });
        }
        Ok(Self { conn })
    }

    /// Records a new job; `Err(existing)` when the request id is known.
    pub async fn insert(
        &mut self,
        request_id: &str,
        request: &str,
        now_ms: i64,
    ) -> Result<Result<(), Job>, JobsError> {
        if let Some(existing) = self.get(request_id).await? {
            return Ok(Err(existing));
        }
        sqlx::query(sql::INSERT_JOB)
            .bind(request_id)
            .bind(request)
            .bind(now_ms)
            .execute(&mut self.conn)
            .await?;
        Ok(Ok(()))
    }

    pub async fn get(&mut self, request_id: &str) -> Result<Option<Job>, JobsError> {
        let row = sqlx::query(sql::GET_JOB)
            .bind(request_id)
            .fetch_optional(&mut self.conn)
            .await?;
        Ok(row.as_ref().map(job))
    }

    /// Jobs to resume, oldest first.
    pub async fn unfinished(&mut self) -> Result<Vec<Job>, JobsError> {
        let rows = sqlx::query(sql::UNFINISHED_JOBS)
            .fetch_all(&mut self.conn)
            .await?;
        Ok(rows.iter().map(job).collect())
    }

    /// How many jobs are queued or uploading.
    pub async fn unfinished_count(&mut self) -> Result<usize, JobsError> {
        let n: i64 = sqlx::query_scalar(sql::COUNT_UNFINISHED)
            .fetch_one(&mut self.conn)
            .await?;
        Ok(n as usize)
    }

    pub async fn set_state(
        &mut self,
        request_id: &str,
        state: JobState,
        attempts: u32,
        error: Option<&str>,
        now_ms: i64,
    ) -> Result<(), JobsError> {
        sqlx::query(sql::SET_STATE)
            .bind(request_id)
            .bind(state.as_str())
            .bind(attempts as i64)
            .bind(error)
            .bind(now_ms)
            .execute(&mut self.conn)
            .await?;
        Ok(())
    }

    pub async fn set_source(
        &mut self,
        request_id: &str,
        source: &str,
        size: u64,
        now_ms: i64,
    ) -> Result<(), JobsError> {
        sqlx::query(sql::SET_SOURCE)
            .bind(request_id)
            .bind(source)
            .bind(size as i64)
            .bind(now_ms)
            .execute(&mut self.conn)
            .await?;
        Ok(())
    }

    /// A new multipart upload id (or none: start over), forgetting the old parts.
    pub async fn set_upload_id(
        &mut self,
        request_id: &str,
        upload_id: Option<&str>,
        now_ms: i64,
    ) -> Result<(), JobsError> {
        sqlx::query(sql::DELETE_PARTS)
            .bind(request_id)
            .execute(&mut self.conn)
            .await?;
        sqlx::query(sql::SET_UPLOAD_ID)
            .bind(request_id)
            .bind(upload_id)
            .bind(now_ms)
            .execute(&mut self.conn)
            .await?;
        Ok(())
    }

    pub async fn add_part(&mut self, request_id: &str, part: &Part) -> Result<(), JobsError> {
        sqlx::query(sql::INSERT_PART)
            .bind(request_id)
            .bind(part.number as i64)
            .bind(&part.etag)
            .bind(part.size as i64)
            .execute(&mut self.conn)
            .await?;
        Ok(())
    }

    pub async fn parts(&mut self, request_id: &str) -> Result<Vec<Part>, JobsError> {
        let rows = sqlx::query(sql::PARTS)
            .bind(request_id)
            .fetch_all(&mut self.conn)
            .await?;
        Ok(rows
            .iter()
            .map(|r| Part {
                number: r.get::<i64, _>(0) as i32,
                etag: r.get(1),
                size: r.get::<i64, _>(2) as u64,
            })
            .collect())
    }

    pub async fn set_done(
        &mut self,
        request_id: &str,
        done: &Done,
        now_ms: i64,
    ) -> Result<(), JobsError> {
        sqlx::query(sql::SET_DONE)
            .bind(request_id)
            .bind(done.size as i64)
            .bind(&done.sha256)
            .bind(&done.etag)
            .bind(&done.location)
            .bind(now_ms)
            .execute(&mut self.conn)
            .await?;
        Ok(())
    }

    /// Forgets finished jobs last updated before `before_ms`, and the parts of
    /// every finished job.
    pub async fn prune(&mut self, before_ms: i64) -> Result<u64, JobsError> {
        sqlx::query(sql::PRUNE_PARTS)
            .execute(&mut self.conn)
            .await?;
        let done = sqlx::query(sql::PRUNE_JOBS)
            .bind(before_ms)
            .execute(&mut self.conn)
            .await?;
        Ok(done.rows_affected())
    }

    #[cfg(test)]
    pub async fn close(self) -> Result<(), JobsError> {
        sqlx::Connection::close(self.conn).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_repeated_request_id_finds_the_first_job_and_parts_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("uploads.db");
        let mut jobs = Jobs::open(&path).await.unwrap().0;
        assert!(jobs.insert("r1", "{}", 1).await.unwrap().is_ok());
        jobs.set_upload_id("r1", Some("u-1"), 2).await.unwrap();
        let part = Part {
            number: 1,
            etag: "\"e1\"".into(),
            size: 5,
        };
        jobs.add_part("r1", &part).await.unwrap();
        jobs.close().await.unwrap();

        let mut jobs = Jobs::open(&path).await.unwrap().0;
        let existing = jobs.insert("r1", "{}", 3).await.unwrap().unwrap_err();
        assert_eq!(existing.upload_id.as_deref(), Some("u-1"));
        assert_eq!(jobs.parts("r1").await.unwrap(), vec![part]);
        assert_eq!(jobs.unfinished().await.unwrap().len(), 1);
        let done = Done {
            size: 5,
            sha256: "ab".into(),
            etag: "e".into(),
            location: "l".into(),
        };
        jobs.set_done("r1", &done, 4).await.unwrap();
        assert!(jobs.unfinished().await.unwrap().is_empty());
        assert_eq!(jobs.prune(5).await.unwrap(), 1);
        assert!(jobs.get("r1").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_corrupt_database_is_moved_aside_and_a_new_one_works() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("uploads.db");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let mut jobs = Jobs::open(&path).await.unwrap().0;
        assert!(jobs.insert("r1", "{}", 1).await.unwrap().is_ok());
        assert!(dir.path().join("uploads.db.corrupt").exists());
    }

    #[tokio::test]
    async fn a_database_that_cannot_be_opened_for_another_reason_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: SQLite cannot open it, and it is
        // no corrupt database to give up.
        let path = dir.path().join("uploads.db");
        std::fs::create_dir(&path).unwrap();
        let e = Jobs::open(&path).await.err().unwrap();
        assert!(matches!(e, JobsError::Open { .. }), "{e}");
        assert!(path.is_dir());
        assert!(!dir.path().join("uploads.db.corrupt").exists());
    }
}
