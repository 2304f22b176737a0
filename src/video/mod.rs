//! The video pipeline: one GStreamer pipeline per source, its stream teed into
//! recording (Matroska segments in a ring directory) and frames for analytics.
//!
//! On disk: `<recordings_dir>/<UTC start>.mkv`, e.g. `20261122T043015.123Z.mkv`,
//! written by splitmuxsink; Matroska because a segment cut short by a crash or power
//! loss is still readable up to its last cluster. Only the segment being written is
//! ever open; at an orderly stop it is finished with an EOS.
//!
//! Retention: after every closed segment (and every minute) the oldest segments go
//! until the directory is within `retention_max_bytes`, and any older than
//! `retention_max_age`; the segment being written is never deleted.
//!
//! Pins: a job that needs recordings (an upload) pins a time range or a file;
//! retention skips pinned segments until the job releases them.
//!
//! Snapshots: `snapshot::jpeg` encodes a frame, or a crop of it, as JPEG.
//!
//! Clips: `clips::cut` remuxes the segments covering a time range into one file.

pub mod clips;
mod config;
pub mod decode;
mod frames;
mod pins;
mod pipeline;
pub mod segments;
pub mod snapshot;
mod stage;

pub use config::{remote_source_allowed, Codec, RtspTransport, VideoConfig, TUNABLE};
pub use frames::{Frame, FrameQueue, Queue};
#[cfg(feature = "uploads")]
pub use pins::Pin;
pub use pins::Pins;
pub use pipeline::Source;
pub use stage::{Video, NAME};
