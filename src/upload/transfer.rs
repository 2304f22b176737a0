//! Moving bytes: S3 multipart uploads with the device's credentials, and single PUTs
//! to presigned URLs. Both stream the file in chunks through the shared bandwidth
//! cap, count what went, and hash it (SHA-256 of the whole file) on the way, so
//! memory stays at one part however large the file.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

use super::jobs::{Done, Part};
use super::machine::Failure;
use super::throttle::Throttle;

/// Bytes per chunk handed to the network (and to the bandwidth cap).
const CHUNK: usize = 64 * 1024;

/// Why an attempt failed, and whether another may succeed.
#[derive(Debug, Clone)]
pub struct TransferError {
    pub reason: String,
    pub failure: Failure,
    /// The S3 error code, when S3 answered with one (`NoSuchUpload`, ...).
    pub s3_code: Option<String>,
}

impl TransferError {
    pub fn transient(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            failure: Failure::Transient,
            s3_code: None,
        }
    }

    pub fn permanent(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            failure: Failure::Permanent,
            s3_code: None,
        }
    }

    /// S3 no longer knows the multipart upload (expired, aborted or completed).
    fn no_such_upload(&self) -> bool {
        self.s3_code.as_deref() == Some("NoSuchUpload")
    }
}

/// Sends a report; the stage gone (it stopped, to be started again) ends the
/// attempt: progress it cannot record is not made silently.
async fn report(reports: &mpsc::Sender<Report>, r: Report) -> Result<(), TransferError> {
    reports.send(r).await.map_err(|_| {
        TransferError::transient("the upload stage stopped; the job resumes at its next start")
    })
}

/// What an attempt reports while it runs.
#[derive(Debug)]
pub enum Report {
    /// The file being uploaded and its size.
    Source { path: std::path::PathBuf, size: u64 },
    /// A new multipart upload (its parts start from nothing), or none: the next
    /// attempt starts a new one.
    UploadId(Option<String>),
    /// S3 acknowledged a part.
    Part(Part),
}

/// The running state of one attempt shared with whoever reports progress.
#[derive(Debug, Default)]
pub struct Counter {
    /// Bytes of the file acknowledged or sent so far.
    pub bytes: AtomicU64,
}

/// A paced stream of `data` in chunks, counting what went.
fn paced(
    data: Bytes,
    throttle: Throttle,
    counter: Arc<Counter>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let chunks: Vec<Bytes> = (0..data.len())
        .step_by(CHUNK)
        .map(|at| data.slice(at..(at + CHUNK).min(data.len())))
        .collect();
    futures_util::stream::iter(chunks).then(move |chunk| {
        let throttle = throttle.clone();
        let counter = counter.clone();
        async move {
            throttle.take(chunk.len() as u64).await;
            counter.bytes.fetch_add(chunk.len() as u64, Relaxed);
            Ok(chunk)
        }
    })
}

fn read_error(path: &Path, e: std::io::Error) -> TransferError {
    TransferError::permanent(format!("cannot read {}: {e}", path.display()))
}

/// Reads `len` bytes at `offset`.
async fn read_part(
    file: &mut tokio::fs::File,
    path: &Path,
    offset: u64,
    len: usize,
) -> Result<Bytes, TransferError> {
    file.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(|e| read_error(path, e))?;
    let mut buf = vec![0u8; len];
    file.read_exact(&mut buf)
        .await
        .map_err(|e| read_error(path, e))?;
    Ok(Bytes::from(buf))
}

/// The S3 side of a multipart upload.
pub struct S3Upload<'a> {
    pub client: &'a aws_sdk_s3::Client,
    pub bucket: &'a str,
    pub key: &'a str,
    pub part_size: u64,
    pub throttle: Throttle,
}

fn sdk_error<E, R>(what: &str, e: aws_sdk_s3::error::SdkError<E, R>) -> TransferError
where
    E: std::error::Error + aws_sdk_s3::error::ProvideErrorMetadata + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    use aws_sdk_s3::error::SdkError;
    let code = match &e {
        SdkError::ServiceError(s) => s.err().code().unwrap_or_default().to_owned(),
        _ => String::new(),
    };
    // The full chain of causes, without the Debug dump the SDK appends, and short
    // enough for a response message.
    let full = aws_sdk_s3::error::DisplayErrorContext(&e).to_string();
    let detail: String = full
        .split(" (")
        .next()
        .unwrap_or(&full)
        .chars()
        .take(400)
        .collect();
    let permanent = [
        "AccessDenied",
        "NoSuchBucket",
        "InvalidBucketName",
        "InvalidArgument",
    ]
    .contains(&code.as_str());
    let reason = if code.is_empty() {
        format!("{what}: {detail}")
    } else {
        format!("{what}: {code}: {detail}")
    };
    let mut err = if permanent {
        TransferError::permanent(reason)
    } else {
        TransferError::transient(reason)
    };
    err.s3_code = (!code.is_empty()).then_some(code);
    err
}

impl S3Upload<'_> {
    /// Uploads `path` (of `size` bytes) as a multipart upload, reusing `upload_id`
    /// and the parts S3 already acknowledged when given.
    pub async fn run(
        &self,
        path: &Path,
        size: u64,
        upload_id: Option<String>,
        done_parts: Vec<Part>,
        reports: &mpsc::Sender<Report>,
        counter: Arc<Counter>,
    ) -> Result<Done, TransferError> {
        let mut file =
            tokio::fs::File::from_std(super::media::open(path).map_err(|e| read_error(path, e))?);
        let part_size = self.part_size.max(5 * 1024 * 1024);
        let count = size.div_ceil(part_size).max(1);
        if count > 10_000 {
            return Err(TransferError::permanent(format!(
                "{size} bytes need {count} parts of {part_size}; S3 allows 10000 (raise upload.part_size)"
            )));
        }
        let (upload_id, mut done_parts) = match upload_id {
            Some(id) => (id, done_parts),
            None => {
                let created = self
                    .client
                    .create_multipart_upload()
                    .bucket(self.bucket)
                    .key(self.key)
                    .send()
                    .await
                    .map_err(|e| sdk_error("starting the multipart upload", e))?;
                let id = created
                    .upload_id()
                    .ok_or_else(|| TransferError::transient("S3 returned no upload id"))?
                    .to_owned();
                report(reports, Report::UploadId(Some(id.clone()))).await?;
                (id, Vec::new())
            }
        };
        let mut hasher = Sha256::new();
        let mut completed = Vec::with_capacity(count as usize);
        for n in 1..=count {
            let offset = (n - 1) * part_size;
            let len = part_size.min(size - offset) as usize;
            let data = read_part(&mut file, path, offset, len).await?;
            // Hashing a part (8 MiB by default) is CPU work: off the runtime.
            let (h, data) = tokio::task::spawn_blocking(move || {
                hasher.update(&data);
                (hasher, data)
            })
            .await
            .map_err(|e| TransferError::transient(format!("hashing a part failed: {e}")))?;
            hasher = h;
            let number = n as i32;
            if let Some(p) = done_parts
                .iter()
                .find(|p| p.number == number && p.size == len as u64)
            {
                // S3 has it: hashed locally, not sent again.
                counter.bytes.fetch_add(len as u64, Relaxed);
                completed.push(
                    CompletedPart::builder()
                        .part_number(number)
                        .e_tag(&p.etag)
                        .build(),
                );
                continue;
            }
            let sent_before = counter.bytes.load(Relaxed);
            let body = ByteStream::from_body_1_x(http_body_util::StreamBody::new(
                paced(data, self.throttle.clone(), counter.clone())
                    .map(|chunk| chunk.map(http_body::Frame::data)),
            ));
            let result = self
                .client
                .upload_part()
                .bucket(self.bucket)
                .key(self.key)
                .upload_id(&upload_id)
                .part_number(number)
                .content_length(len as i64)
                .body(body)
                .send()
                .await;
            let uploaded = match result {
                Ok(r) => r,
                Err(e) => {
                    counter.bytes.store(sent_before, Relaxed);
                    let err = sdk_error(&format!("part {n} of {count}"), e);
                    if err.no_such_upload() {
                        // The upload expired or was aborted: the next attempt starts over.
                        report(reports, Report::UploadId(None)).await?;
                    }
                    return Err(err);
                }
            };
            let etag = uploaded
                .e_tag()
                .ok_or_else(|| TransferError::transient(format!("part {n}: S3 returned no ETag")))?
                .to_owned();
            let part = Part {
                number,
                etag: etag.clone(),
                size: len as u64,
            };
            report(reports, Report::Part(part.clone())).await?;
            done_parts.push(part);
            completed.push(
                CompletedPart::builder()
                    .part_number(number)
                    .e_tag(etag)
                    .build(),
            );
        }
        let finished = self
            .client
            .complete_multipart_upload()
            .bucket(self.bucket)
            .key(self.key)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| {
                let err = sdk_error("completing the multipart upload", e);
                if err.no_such_upload() {
                    // Completed by an attempt whose answer was lost, or expired.
                    TransferError::transient(err.reason)
                } else {
                    err
                }
            })?;
        Ok(Done {
            size,
            sha256: hex::encode(hasher.finalize()),
            etag: finished.e_tag().unwrap_or_default().to_owned(),
            location: finished
                .location()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("s3://{}/{}", self.bucket, self.key)),
        })
    }
}

/// One PUT of the whole file to a presigned URL. A PUT cannot resume: a failed
/// attempt starts again from the first byte.
pub async fn put_presigned(
    http: &reqwest::Client,
    url: &str,
    headers: &[(String, String)],
    path: &Path,
    size: u64,
    throttle: Throttle,
    counter: Arc<Counter>,
) -> Result<Done, TransferError> {
    let file =
        tokio::fs::File::from_std(super::media::open(path).map_err(|e| read_error(path, e))?);
    let hasher = Arc::new(std::sync::Mutex::new(Sha256::new()));
    let stream = {
        let hasher = hasher.clone();
        tokio_util::io::ReaderStream::with_capacity(file, CHUNK).then(move |chunk| {
            let throttle = throttle.clone();
            let counter = counter.clone();
            let hasher = hasher.clone();
            async move {
                let chunk = chunk?;
                throttle.take(chunk.len() as u64).await;
                hasher
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .update(&chunk);
                counter.bytes.fetch_add(chunk.len() as u64, Relaxed);
                Ok::<_, std::io::Error>(chunk)
            }
        })
    };
    let mut request = http
        .put(url)
        .header(reqwest::header::CONTENT_LENGTH, size)
        .body(reqwest::Body::wrap_stream(stream));
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request
        .send()
        .await
        .map_err(|e| TransferError::transient(format!("PUT failed: {e}")))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        let reason = format!(
            "the server answered {status}: {}",
            body.chars().take(300).collect::<String>()
        );
        // An expired or wrong signature will not get better by retrying.
        return Err(
            if status.is_client_error() && status.as_u16() != 408 && status.as_u16() != 429 {
                TransferError::permanent(reason)
            } else {
                TransferError::transient(reason)
            },
        );
    }
    let etag = response
        .headers()
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let sha256 = hex::encode(
        std::mem::take(&mut *hasher.lock().unwrap_or_else(|e| e.into_inner())).finalize(),
    );
    Ok(Done {
        size,
        sha256,
        etag,
        location: url.split('?').next().unwrap_or(url).to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_report_the_stage_can_no_longer_take_ends_the_attempt() {
        let (tx, rx) = mpsc::channel(1);
        assert!(report(&tx, Report::UploadId(None)).await.is_ok());
        drop(rx);
        let e = report(&tx, Report::UploadId(Some("u".into())))
            .await
            .unwrap_err();
        assert_eq!(e.failure, Failure::Transient);
        assert!(
            e.reason.contains("resumes at its next start"),
            "{}",
            e.reason
        );
    }

    #[test]
    fn an_expired_multipart_upload_is_known_by_its_s3_code_not_its_message() {
        let mut e = TransferError::transient("part 2 of 3: the upload does not exist");
        assert!(!e.no_such_upload());
        e.s3_code = Some("NoSuchUpload".into());
        assert!(e.no_such_upload());
        let mut other = TransferError::transient("mentions NoSuchUpload in passing");
        other.s3_code = Some("SlowDown".into());
        assert!(!other.no_such_upload());
    }
}
