//! Uploads on request: a file, a clip of the recordings or an event's snapshot, to
//! S3 (multipart, the device's credentials) or to a presigned URL (one PUT).
//!
//! On disk: `<state_dir>/uploads.db` (the jobs and the parts S3 acknowledged; see
//! [`jobs`] for its invariants) and `<state_dir>/uploads/<request_id>.mkv` (a clip
//! cut for a job, deleted when the job ends).
//!
//! After a crash, a kill or a reboot every job that was queued or uploading starts
//! again: a multipart upload continues with the parts S3 already has (its upload id
//! is kept); a presigned PUT starts again from the first byte (HTTP PUT cannot
//! resume). A request id seen before is answered from its job and never uploaded
//! twice.

mod clients;
mod jobs;
mod machine;
mod media;
mod sql;
mod stage;
mod throttle;
mod transfer;

pub use stage::Uploads;
