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

// The section is read by every build, so a build without uploads can refuse
// `upload.enabled` by name; the stage exists only with the `uploads` feature.
#[cfg(feature = "uploads")]
mod clients;
mod config;
#[cfg(feature = "uploads")]
mod jobs;
#[cfg(feature = "uploads")]
mod machine;
#[cfg(feature = "uploads")]
mod media;
#[cfg(feature = "uploads")]
mod sql;
#[cfg(feature = "uploads")]
mod stage;
#[cfg(feature = "uploads")]
mod throttle;
#[cfg(feature = "uploads")]
mod transfer;

pub use config::{UploadConfig, TUNABLE};
#[cfg(feature = "uploads")]
pub use stage::{Tunables, Uploads};
