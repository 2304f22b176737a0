//! The upload stage's section of the configuration (`[upload]`): its fields, defaults,
//! checks and which of them remote configuration may set.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::check::Checker;
use crate::topics;

/// The fields of `[upload]` remote configuration may set, applied by the stage
/// within a second, without a restart (the bandwidth cap to running uploads too).
/// Where to upload and with which credentials stay local.
pub const TUNABLE: &[&str] = &[
    "concurrency",
    "max_pending",
    "max_bytes_per_sec",
    "part_size",
    "progress_interval",
    "retry_min",
    "retry_max",
    "max_attempts",
    "keep_finished",
];

/// Where S3 credentials come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialsSource {
    /// The standard AWS chain: environment (`AWS_ACCESS_KEY_ID`, ...), shared
    /// config and credentials files, container and instance metadata.
    Chain,
    /// The AWS IoT credentials provider, with the device certificate.
    Iot,
}

/// Uploads on request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadConfig {
    /// Accept file requests on `<camera-id>/file/request`. On by default; off,
    /// and refused when asked for, in a build without the `uploads` feature.
    #[serde(default = "default_upload_enabled")]
    pub enabled: bool,
    /// Requests may name files under this directory only; nothing outside it is
    /// ever opened (recordings and snapshots live under it by default).
    #[serde(default = "default_media_dir")]
    pub media_dir: PathBuf,
    /// Uploads running at once (1-8).
    #[serde(default = "default_upload_concurrency")]
    pub concurrency: usize,
    /// Accepted uploads not yet finished, at most (1-10000): each pins the
    /// recordings it needs, so a burst of requests could otherwise fill the disk.
    /// A request beyond it is rejected with the reason and counted in
    /// `uploads.rejected`.
    #[serde(default = "default_upload_max_pending")]
    pub max_pending: usize,
    /// Bandwidth cap for all uploads together, bytes per second (one second of
    /// burst); 0 for none.
    #[serde(default)]
    pub max_bytes_per_sec: u64,
    /// Size of a multipart part, bytes (5 MiB to 512 MiB): the memory an upload
    /// holds, and what a resumed upload may send twice.
    #[serde(default = "default_part_size")]
    pub part_size: u64,
    /// Largest request accepted, bytes.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
    /// Accept `http://` presigned URLs and S3 endpoints. For tests on loopback
    /// only: never on a camera.
    #[serde(default)]
    pub allow_plain_http: bool,
    /// Progress messages at most this often per upload.
    #[serde(default = "default_progress_interval", with = "humantime_serde")]
    pub progress_interval: Duration,
    /// Delay before retrying a failed attempt, doubling up to `retry_max`.
    #[serde(default = "default_retry_min", with = "humantime_serde")]
    pub retry_min: Duration,
    #[serde(default = "default_retry_max", with = "humantime_serde")]
    pub retry_max: Duration,
    /// Attempts before a job is reported failed for good.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Finished jobs are remembered this long, so a repeated request id is answered
    /// with the first outcome instead of uploading again.
    #[serde(default = "default_keep_finished", with = "humantime_serde")]
    pub keep_finished: Duration,
    /// Uploads by bucket and key, with the device's own credentials.
    #[serde(default)]
    pub s3: S3Config,
}

/// S3 with the device's own credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// AWS region of the buckets.
    #[serde(default = "default_s3_region")]
    pub region: String,
    /// Endpoint of an S3-compatible store (`https://host:port`); empty for AWS.
    #[serde(default)]
    pub endpoint: String,
    /// Path-style addressing (`endpoint/bucket/key`), for S3-compatible stores.
    #[serde(default)]
    pub force_path_style: bool,
    /// `chain` (the standard AWS chain) or `iot` (the AWS IoT credentials provider).
    #[serde(default = "default_credentials_source")]
    pub credentials: CredentialsSource,
    /// With `iot`: the account's credentials provider endpoint
    /// (`aws iot describe-endpoint --endpoint-type iot:CredentialProvider`).
    #[serde(default)]
    pub iot_credentials_endpoint: String,
    /// With `iot`: the role alias whose role may write the buckets.
    #[serde(default)]
    pub role_alias: String,
}

impl Default for UploadConfig {
    fn default() -> Self {
        Self {
            enabled: default_upload_enabled(),
            media_dir: default_media_dir(),
            concurrency: default_upload_concurrency(),
            max_pending: default_upload_max_pending(),
            max_bytes_per_sec: 0,
            part_size: default_part_size(),
            max_request_bytes: default_max_request_bytes(),
            allow_plain_http: false,
            progress_interval: default_progress_interval(),
            retry_min: default_retry_min(),
            retry_max: default_retry_max(),
            max_attempts: default_max_attempts(),
            keep_finished: default_keep_finished(),
            s3: S3Config::default(),
        }
    }
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            region: default_s3_region(),
            endpoint: String::new(),
            force_path_style: false,
            credentials: default_credentials_source(),
            iot_credentials_endpoint: String::new(),
            role_alias: String::new(),
        }
    }
}

fn default_credentials_source() -> CredentialsSource {
    CredentialsSource::Chain
}

fn default_keep_finished() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

fn default_max_attempts() -> u32 {
    20
}

fn default_max_request_bytes() -> usize {
    16 * 1024
}

fn default_media_dir() -> PathBuf {
    PathBuf::from("/var/lib/edgecam/media")
}

fn default_part_size() -> u64 {
    8 * 1024 * 1024
}

fn default_progress_interval() -> Duration {
    Duration::from_secs(5)
}

fn default_retry_max() -> Duration {
    Duration::from_secs(300)
}

fn default_retry_min() -> Duration {
    Duration::from_secs(5)
}

fn default_s3_region() -> String {
    "us-east-1".to_owned()
}

fn default_upload_concurrency() -> usize {
    2
}

fn default_upload_enabled() -> bool {
    cfg!(feature = "uploads")
}

fn default_upload_max_pending() -> usize {
    64
}

impl UploadConfig {
    /// Records every value out of range in `c`.
    pub fn check(&self, c: &mut Checker) {
        let u = self;
        c.range("upload.concurrency", u.concurrency, 1, 8);
        c.range("upload.max_pending", u.max_pending, 1, 10_000);
        c.range(
            "upload.part_size",
            u.part_size,
            5 * 1024 * 1024,
            512 * 1024 * 1024,
        );
        c.range(
            "upload.max_request_bytes",
            u.max_request_bytes,
            512,
            1 << 20,
        );
        c.duration(
            "upload.progress_interval",
            u.progress_interval,
            Duration::from_millis(100),
            Duration::from_secs(3600),
        );
        c.duration(
            "upload.retry_min",
            u.retry_min,
            Duration::from_millis(100),
            Duration::from_secs(3600),
        );
        c.duration(
            "upload.retry_max",
            u.retry_max,
            u.retry_min,
            Duration::from_secs(24 * 3600),
        );
        c.range("upload.max_attempts", u.max_attempts, 1, 1000);
        c.duration(
            "upload.keep_finished",
            u.keep_finished,
            Duration::from_secs(60),
            Duration::from_secs(365 * 24 * 3600),
        );
        c.check(
            u.s3.endpoint.is_empty()
                || crate::urls::check_url(&u.s3.endpoint, u.allow_plain_http).is_ok(),
            "upload.s3.endpoint",
            || {
                "expected empty (AWS) or https://host[:port] (http:// only with upload.allow_plain_http)"
                    .to_owned()
            },
        );
        c.check(
            u.s3.credentials != CredentialsSource::Iot
                || (!u.s3.iot_credentials_endpoint.is_empty()
                    && !u.s3.iot_credentials_endpoint.contains('/')
                    && topics::valid_group(&u.s3.role_alias.replace(['.', '=', ',', '@'], "-"))),
            "upload.s3.credentials",
            || "iot needs upload.s3.iot_credentials_endpoint (a host name) and upload.s3.role_alias".to_owned(),
        );
    }
}
