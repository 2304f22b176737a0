//! The upload stage: takes requests from `<camera-id>/file/request`, answers on
//! `<camera-id>/file/response`, and runs the jobs — persisted, resumed after a
//! restart, retried with backoff, at most `upload.concurrency` at once.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::clients::Clients;
use super::jobs::{Done, Job, JobState, Jobs, JobsError, Part};
use super::machine::{Next, Progress, Retry};
use super::media;
use super::throttle::Throttle;
use super::transfer::{self, Counter, Report, S3Upload, TransferError};
use crate::commands::{self, FileRequest, Policy, Response, State, What, Where};
use crate::events::now_ms;
use crate::metrics::Metrics;
use crate::mqtt::{ControlPublish, InboundMessage, Inbox};
use crate::settings::Config;
use crate::topics::Topics;
use crate::video::{clips, Pin, Pins};

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(transparent)]
    Jobs(#[from] JobsError),
    #[error("state directory {dir}: {source}")]
    StateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// How long a clip waits after the end of its range before it is cut: the segment
/// covering the end must be closed first.
const CLIP_SETTLE: Duration = Duration::from_secs(6);

/// One attempt in flight.
struct Running {
    counter: Arc<Counter>,
    size: Arc<std::sync::atomic::AtomicU64>,
    progress: Progress,
    started: Instant,
}

/// What a job's attempt needs.
struct Attempt {
    request_id: String,
    request: FileRequest,
    upload_id: Option<String>,
    parts: Vec<Part>,
    clip_path: PathBuf,
}

/// What the uploads stage follows live: its section (only its limits are taken
/// up live) and the video's segment length (when a clip's segments are closed).
#[derive(Debug, Clone, PartialEq)]
pub struct Tunables {
    upload: super::UploadConfig,
    segment_duration: Duration,
}

impl Tunables {
    pub fn of(c: &Config) -> Self {
        Self {
            upload: c.upload.clone(),
            segment_duration: c.video.segment_duration,
        }
    }
}

pub struct Uploads {
    /// The configuration at start-up, with the limits followed since.
    config: Arc<Config>,
    /// The limits that apply live.
    live: watch::Receiver<Arc<Tunables>>,
    requests: Inbox,
    responses: mpsc::Sender<ControlPublish>,
    pins: Pins,
    metrics: Arc<Metrics>,
    jobs: Jobs,
    /// Where the jobs database is.
    jobs_path: PathBuf,
    /// The last run ended in an error: the next one opens the jobs database
    /// afresh (a database corrupted while running is moved aside then).
    reopen: bool,
    /// The request whose handling met that error: taken again first at the next
    /// run (unacknowledged meanwhile), so its sender still gets an answer.
    failed_request: Option<InboundMessage>,
    response_topic: String,
    policy: Policy,
    retry: Retry,
    throttle: Throttle,
    clients: Clients,
    work_dir: PathBuf,
}

impl Uploads {
    /// Opens the jobs database and pins what unfinished jobs need (before the video
    /// stage's first retention).
    pub async fn new(
        config: Arc<Config>,
        live: watch::Receiver<Arc<Tunables>>,
        requests: mpsc::Receiver<InboundMessage>,
        responses: mpsc::Sender<ControlPublish>,
        pins: Pins,
        metrics: Arc<Metrics>,
    ) -> Result<Self, UploadError> {
        let work_dir = config.storage.state_dir.join("uploads");
        std::fs::create_dir_all(&work_dir).map_err(|source| UploadError::StateDir {
            dir: work_dir.clone(),
            source,
        })?;
        let jobs_path = config.storage.state_dir.join("uploads.db");
        let (mut jobs, moved) = Jobs::open(&jobs_path).await?;
        if moved.is_some() {
            Metrics::add(&metrics.upload_db_resets, 1);
        }
        let u = &config.upload;
        let policy = Policy {
            max_request_bytes: u.max_request_bytes,
            allow_plain_http: u.allow_plain_http,
        };
        for job in jobs.unfinished().await? {
            if let Ok(request) = commands::parse(job.request.as_bytes(), policy) {
                pin(&pins, &config, &request);
            }
        }
        let clients = Clients::new(config.clone());
        Ok(Self {
            response_topic: Topics::new(&config.identity.camera_id).file_response(),
            policy,
            retry: Retry {
                min: u.retry_min,
                max: u.retry_max,
                max_attempts: u.max_attempts,
            },
            throttle: Throttle::new(u.max_bytes_per_sec),
            clients,
            work_dir,
            config,
            live,
            requests: requests.into(),
            responses,
            pins,
            metrics,
            jobs,
            jobs_path,
            reopen: false,
            failed_request: None,
        })
    }

    /// Applies the upload limits of a new effective configuration: the cap on
    /// bandwidth (to the uploads running too), concurrency, pending jobs, parts,
    /// retries, progress reports and how long finished jobs are kept (and the
    /// video's segment length, which says when a clip's segments are closed).
    /// Where files come from, where they go and what a request may ask stay as at
    /// start-up.
    fn follow_limits(&mut self) {
        let live = self.live.borrow_and_update().clone();
        let (new, old) = (&live.upload, &self.config.upload);
        let segment_duration = live.segment_duration;
        if segment_duration == self.config.video.segment_duration
            && (
                new.concurrency,
                new.max_pending,
                new.max_bytes_per_sec,
                new.part_size,
                new.progress_interval,
                new.retry_min,
                new.retry_max,
                new.max_attempts,
                new.keep_finished,
            ) == (
                old.concurrency,
                old.max_pending,
                old.max_bytes_per_sec,
                old.part_size,
                old.progress_interval,
                old.retry_min,
                old.retry_max,
                old.max_attempts,
                old.keep_finished,
            )
        {
            return;
        }
        let mut config = (*self.config).clone();
        config.video.segment_duration = segment_duration;
        let u = &mut config.upload;
        u.concurrency = new.concurrency;
        u.max_pending = new.max_pending;
        u.max_bytes_per_sec = new.max_bytes_per_sec;
        u.part_size = new.part_size;
        u.progress_interval = new.progress_interval;
        u.retry_min = new.retry_min;
        u.retry_max = new.retry_max;
        u.max_attempts = new.max_attempts;
        u.keep_finished = new.keep_finished;
        self.retry = Retry {
            min: u.retry_min,
            max: u.retry_max,
            max_attempts: u.max_attempts,
        };
        self.throttle.set_rate(u.max_bytes_per_sec);
        tracing::info!(
            concurrency = u.concurrency,
            max_pending = u.max_pending,
            max_bytes_per_sec = u.max_bytes_per_sec,
            max_attempts = u.max_attempts,
            "upload limits changed"
        );
        self.config = Arc::new(config);
    }

    async fn respond(&self, r: Response) {
        tracing::debug!(request_id = ?r.request_id, state = ?r.state, "file response");
        let publish = ControlPublish {
            topic: self.response_topic.clone(),
            payload: r.to_json(),
            retain: false,
        };
        if self.responses.send(publish).await.is_err() {
            tracing::warn!("publisher gone; file response not sent");
        }
    }

    /// When a job may start: a clip waits for the end of its range to be recorded.
    fn start_time(&self, job: &Job) -> Option<Instant> {
        let request = commands::parse(job.request.as_bytes(), self.policy).ok()?;
        self.start_time_of(&request)
    }

    fn start_time_of(&self, request: &FileRequest) -> Option<Instant> {
        let What::Range { to, .. } = request.what else {
            return None;
        };
        let ready = to + self.config.video.segment_duration + CLIP_SETTLE;
        let wait = ready.duration_since(SystemTime::now()).ok()?;
        Some(Instant::now() + wait)
    }

    /// Checks a request and records its job. Returns the job to schedule (and when).
    async fn on_request(
        &mut self,
        payload: &[u8],
    ) -> Result<Option<(String, Option<Instant>)>, UploadError> {
        // A request is judged by the limits in effect when it arrives.
        if self.live.has_changed().unwrap_or(false) {
            self.follow_limits();
        }
        let request = match commands::parse(payload, self.policy) {
            Ok(r) => r,
            Err(rejection) => {
                Metrics::add(&self.metrics.uploads_rejected, 1);
                tracing::warn!(request_id = ?rejection.request_id, reason = %rejection.reason, "file request rejected");
                self.respond(Response::rejected(&rejection)).await;
                return Ok(None);
            }
        };
        let id = request.request_id.clone();
        if let Some(existing) = self.jobs.get(&id).await? {
            tracing::info!(request_id = %id, state = existing.state.as_str(), "repeated file request; not uploading again");
            self.respond(repeat_answer(&existing)).await;
            return Ok(None);
        }
        // A repeated request is answered from its job above, even once expired.
        let pending = self.jobs.unfinished_count().await?;
        let max_pending = self.config.upload.max_pending;
        let refused = match request.expired(SystemTime::now()) {
            Some(reason) => Err(reason),
            None if pending >= max_pending => Err(format!(
                "{pending} uploads are pending, the most upload.max_pending allows; ask again when some are done"
            )),
            None => {
                // Path resolution and a recordings scan: off the runtime.
                let (config, req) = (self.config.clone(), request.clone());
                tokio::task::spawn_blocking(move || check_source(&config, &req))
                    .await
                    .unwrap_or_else(|e| Err(format!("the source cannot be checked: {e}")))
            }
        };
        if let Err(reason) = refused {
            Metrics::add(&self.metrics.uploads_rejected, 1);
            tracing::warn!(request_id = %id, %reason, "file request rejected");
            self.respond(Response::rejected(&commands::Rejection {
                request_id: Some(id),
                reason,
            }))
            .await;
            return Ok(None);
        }
        let text = String::from_utf8_lossy(payload);
        if let Err(existing) = self.jobs.insert(&id, &text, now_ms()).await? {
            self.respond(repeat_answer(&existing)).await;
            return Ok(None);
        }
        let (pins, config, req) = (self.pins.clone(), self.config.clone(), request.clone());
        if let Err(e) = tokio::task::spawn_blocking(move || pin(&pins, &config, &req)).await {
            tracing::error!(request_id = %id, error = %e, "cannot pin the request's recordings");
        }
        Metrics::add(&self.metrics.uploads_accepted, 1);
        tracing::info!(request_id = %id, what = ?request.what, "file request accepted");
        let mut accepted = Response::new(Some(&id), State::Accepted);
        let at = self.start_time_of(&request);
        if at.is_some() {
            accepted.note = Some("waiting for the end of the range to be recorded".into());
        }
        self.respond(accepted).await;
        Ok(Some((id, at)))
    }

    async fn start(
        &mut self,
        id: &str,
        running: &mut HashMap<String, Running>,
        tasks: &mut JoinSet<(String, Result<Done, TransferError>)>,
        reports: &mpsc::Sender<(String, Report)>,
    ) -> Result<(), UploadError> {
        let Some(job) = self.jobs.get(id).await? else {
            return Ok(());
        };
        let request = match commands::parse(job.request.as_bytes(), self.policy) {
            Ok(r) => r,
            Err(rejection) => {
                // Accepted before, refused now (a configuration change).
                let outcome = Err(TransferError::permanent(rejection.reason));
                self.on_finished(id, outcome).await?;
                return Ok(());
            }
        };
        self.jobs
            .set_state(
                id,
                JobState::Uploading,
                job.attempts,
                job.error.as_deref(),
                now_ms(),
            )
            .await?;
        let parts = self.jobs.parts(id).await?;
        let counter = Arc::new(Counter::default());
        let size = Arc::new(std::sync::atomic::AtomicU64::new(job.size.unwrap_or(0)));
        running.insert(
            id.to_owned(),
            Running {
                counter: counter.clone(),
                size: size.clone(),
                progress: Progress::new(self.config.upload.progress_interval),
                started: Instant::now(),
            },
        );
        let attempt = Attempt {
            request_id: id.to_owned(),
            request,
            upload_id: job.upload_id.filter(|u| !u.is_empty()),
            parts,
            clip_path: self.work_dir.join(format!("{id}.mkv")),
        };
        tracing::info!(request_id = %id, attempt = job.attempts + 1, "upload starting");
        let ctx = Context {
            config: self.config.clone(),
            clients: self.clients.clone(),
            throttle: self.throttle.clone(),
        };
        let reports = reports.clone();
        tasks.spawn(async move {
            let id = attempt.request_id.clone();
            let result = ctx.attempt(attempt, reports, counter, size).await;
            (id, result)
        });
        Ok(())
    }

    async fn on_report(&mut self, id: &str, report: Report) -> Result<(), UploadError> {
        match report {
            Report::UploadId(upload_id) => {
                self.jobs
                    .set_upload_id(id, upload_id.as_deref(), now_ms())
                    .await?
            }
            Report::Part(part) => self.jobs.add_part(id, &part).await?,
            Report::Source { path, size } => {
                self.jobs
                    .set_source(id, &path.to_string_lossy(), size, now_ms())
                    .await?;
                // The attempt has its file: say so at once, whatever its length.
                let mut msg = Response::new(Some(id), State::Uploading);
                msg.bytes = Some(0);
                msg.size = Some(size);
                msg.percent = Some(0.0);
                self.respond(msg).await;
            }
        }
        Ok(())
    }

    async fn report_progress(&self, running: &mut HashMap<String, Running>) {
        for (id, r) in running.iter_mut() {
            let size = r.size.load(Relaxed);
            if size == 0 {
                continue;
            }
            let bytes = r.counter.bytes.load(Relaxed).min(size);
            if bytes > 0 && r.progress.due(r.started.elapsed(), bytes) {
                let mut msg = Response::new(Some(id), State::Uploading);
                msg.bytes = Some(bytes);
                msg.size = Some(size);
                msg.percent = Some((bytes as f64 * 1000.0 / size as f64).round() / 10.0);
                self.respond(msg).await;
            }
        }
    }

    /// Records the outcome of an attempt; returns when to try again, if ever.
    async fn on_finished(
        &mut self,
        id: &str,
        result: Result<Done, TransferError>,
    ) -> Result<Option<Instant>, UploadError> {
        let Some(job) = self.jobs.get(id).await? else {
            return Ok(None);
        };
        match result {
            Ok(done) => {
                self.jobs.set_done(id, &done, now_ms()).await?;
                Metrics::add(&self.metrics.uploads_done, 1);
                Metrics::add(&self.metrics.upload_bytes, done.size);
                tracing::info!(request_id = %id, size = done.size, sha256 = %done.sha256, location = %done.location, "upload done");
                let mut msg = Response::new(Some(id), State::Done);
                msg.size = Some(done.size);
                msg.sha256 = Some(done.sha256);
                msg.etag = Some(done.etag);
                msg.location = Some(done.location);
                self.respond(msg).await;
                self.release(id);
                Ok(None)
            }
            Err(e) => {
                let attempts = job.attempts + 1;
                Metrics::add(&self.metrics.upload_attempts_failed, 1);
                let next = self.retry.next(attempts, e.failure, rand::random::<f64>());
                let mut msg = Response::new(Some(id), State::Failed);
                msg.reason = Some(e.reason.clone());
                msg.attempt = Some(attempts);
                match next {
                    Next::RetryIn(delay) => {
                        tracing::warn!(request_id = %id, attempt = attempts, reason = %e.reason, retry_in = ?delay, "upload attempt failed; will retry");
                        self.jobs
                            .set_state(id, JobState::Queued, attempts, Some(&e.reason), now_ms())
                            .await?;
                        msg.retrying = Some(true);
                        self.respond(msg).await;
                        Ok(Some(Instant::now() + delay))
                    }
                    Next::GiveUp => {
                        tracing::error!(request_id = %id, attempt = attempts, reason = %e.reason, "upload failed for good");
                        self.jobs
                            .set_state(id, JobState::Failed, attempts, Some(&e.reason), now_ms())
                            .await?;
                        Metrics::add(&self.metrics.uploads_failed, 1);
                        msg.retrying = Some(false);
                        self.respond(msg).await;
                        self.release(id);
                        Ok(None)
                    }
                }
            }
        }
    }

    /// The job has ended: its recordings may go, its clip is deleted.
    fn release(&self, id: &str) {
        self.pins.unpin(id);
        let clip = self.work_dir.join(format!("{id}.mkv"));
        if let Err(e) = std::fs::remove_file(&clip) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %clip.display(), error = %e, "cannot delete an uploaded clip");
            }
        }
    }
}

/// The answer to a request id seen before: its job's state, never a new upload.
fn repeat_answer(job: &Job) -> Response {
    let id = Some(job.request_id.as_str());
    let mut r = match job.state {
        JobState::Done => {
            let mut r = Response::new(id, State::Done);
            r.size = job.size;
            r.sha256 = job.sha256.clone();
            r.etag = job.etag.clone();
            r.location = job.location.clone();
            r
        }
        JobState::Failed => {
            let mut r = Response::new(id, State::Failed);
            r.reason = job.error.clone();
            r.retrying = Some(false);
            r
        }
        JobState::Queued | JobState::Uploading => Response::new(id, State::Accepted),
    };
    r.note = Some("repeated request_id: answered from the first request's job".into());
    r
}

/// What can be checked at once about the source (the file exists and is
/// allowed; the recordings cover a past range).
fn check_source(config: &Config, request: &FileRequest) -> Result<(), String> {
    let media_dir = &config.upload.media_dir;
    match &request.what {
        What::File(rel) => media::resolve(media_dir, rel).map(|_| ()),
        What::Event(event) => {
            media::resolve(media_dir, &format!("snapshots/{event}.jpg")).map(|_| ())
        }
        What::Range { from, to } => {
            if *to + config.video.segment_duration + CLIP_SETTLE > SystemTime::now() {
                return Ok(()); // not recorded yet: checked when it is
            }
            clips::plan(&config.video.recordings_dir, *from, *to, SystemTime::now())
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    }
}

/// Holds the recordings a request needs until its job ends.
fn pin(pins: &Pins, config: &Config, request: &FileRequest) {
    let id = &request.request_id;
    match &request.what {
        What::Range { from, to } => pins.pin(
            id,
            Pin::Range {
                from: *from,
                to: *to,
            },
        ),
        What::File(rel) => {
            if let Ok(path) = media::resolve(&config.upload.media_dir, rel) {
                pins.pin(id, Pin::File(path));
            }
        }
        What::Event(_) => {}
    }
}

/// What an attempt runs with, cloned out of the stage.
struct Context {
    config: Arc<Config>,
    clients: Clients,
    throttle: Throttle,
}

impl Context {
    async fn attempt(
        self,
        a: Attempt,
        reports: mpsc::Sender<(String, Report)>,
        counter: Arc<Counter>,
        size_out: Arc<std::sync::atomic::AtomicU64>,
    ) -> Result<Done, TransferError> {
        let media_dir = &self.config.upload.media_dir;
        let permanent = TransferError::permanent;
        let path = match &a.request.what {
            What::File(rel) => media::resolve(media_dir, rel).map_err(permanent)?,
            What::Event(event) => {
                media::resolve(media_dir, &format!("snapshots/{event}.jpg")).map_err(permanent)?
            }
            What::Range { from, to } => {
                if !a.clip_path.exists() {
                    let (dir, from, to, out) = (
                        self.config.video.recordings_dir.clone(),
                        *from,
                        *to,
                        a.clip_path.clone(),
                    );
                    let cut = tokio::task::spawn_blocking(move || {
                        clips::cut(&dir, from, to, &out, Duration::from_secs(600))
                    })
                    .await
                    .map_err(|e| permanent(format!("cutting the clip: {e}")))?;
                    match cut {
                        Ok(clip) => {
                            tracing::info!(request_id = %a.request_id, segments = clip.segments.len(), bytes = clip.bytes, "clip cut for upload")
                        }
                        Err(e @ clips::ClipError::NoRecording { .. }) => {
                            return Err(permanent(e.to_string()))
                        }
                        Err(e) => {
                            return Err(TransferError::transient(format!("cutting the clip: {e}")))
                        }
                    }
                }
                a.clip_path.clone()
            }
        };
        let size = std::fs::metadata(&path)
            .map_err(|e| permanent(format!("cannot read {}: {e}", path.display())))?
            .len();
        size_out.store(size, Relaxed);
        let id = a.request_id.clone();
        reports
            .send((
                id.clone(),
                Report::Source {
                    path: path.clone(),
                    size,
                },
            ))
            .await
            .map_err(|_| {
                TransferError::transient(
                    "the upload stage stopped; the job resumes at its next start",
                )
            })?;
        let (tx, mut rx) = mpsc::channel(16);
        let forward = {
            let reports = reports.clone();
            let id = id.clone();
            tokio::spawn(async move {
                while let Some(r) = rx.recv().await {
                    if reports.send((id.clone(), r)).await.is_err() {
                        break;
                    }
                }
            })
        };
        let result = match &a.request.target {
            Where::S3 { bucket, key } => {
                let client =
                    self.clients.s3().await.map_err(|e| {
                        TransferError::transient(format!("making the S3 client: {e}"))
                    })?;
                S3Upload {
                    client,
                    bucket,
                    key,
                    part_size: self.config.upload.part_size,
                    throttle: self.throttle.clone(),
                }
                .run(&path, size, a.upload_id, a.parts, &tx, counter)
                .await
            }
            Where::Presigned { url, headers } => {
                let http = self.clients.presigned().await.map_err(|e| {
                    TransferError::transient(format!("making the HTTPS client: {e}"))
                })?;
                transfer::put_presigned(
                    http,
                    url,
                    headers,
                    &path,
                    size,
                    self.throttle.clone(),
                    counter,
                )
                .await
            }
        };
        drop(tx);
        forward.await.ok();
        result
    }
}

impl crate::supervision::Stage for Uploads {
    type Error = UploadError;

    /// Takes requests and runs uploads until shutdown. On an error it returns with
    /// its requests and jobs kept: running it again opens the jobs database afresh
    /// and resumes the unfinished jobs.
    async fn run(&mut self, shutdown: CancellationToken) -> Result<(), UploadError> {
        if std::mem::take(&mut self.reopen) {
            let (jobs, moved) = Jobs::open(&self.jobs_path).await.inspect_err(|_| {
                self.reopen = true;
            })?;
            if moved.is_some() {
                // Its jobs are lost: their senders saw them accepted, and get no
                // further response.
                Metrics::add(&self.metrics.upload_db_resets, 1);
            }
            self.jobs = jobs;
        }
        let served = self.serve(shutdown).await;
        self.reopen = served.is_err();
        served
    }
}

impl Drop for Uploads {
    fn drop(&mut self) {
        // Not handled: the broker delivers it again, not acknowledged unanswered.
        if let Some(m) = &mut self.failed_request {
            m.leave_unacked();
        }
    }
}

impl Uploads {
    /// Takes one file request. The broker gets its acknowledgement when `m` is
    /// dropped: once the job is recorded (or the request answered), not before.
    /// On an error the request is kept for the next run: only the jobs database
    /// fails a request so (a bad one is answered `rejected`), so taking it again
    /// once the database works cannot loop on the request itself.
    async fn take_request(
        &mut self,
        m: InboundMessage,
        waiting: &mut VecDeque<String>,
        delayed: &mut Vec<(Instant, String)>,
    ) -> Result<(), UploadError> {
        match self.on_request(&m.payload).await {
            Ok(Some((id, at))) => match at {
                Some(at) => delayed.push((at, id)),
                None => waiting.push_back(id),
            },
            Ok(None) => {}
            Err(e) => {
                self.failed_request = Some(m);
                return Err(e);
            }
        }
        Ok(())
    }

    async fn serve(&mut self, shutdown: CancellationToken) -> Result<(), UploadError> {
        let mut waiting: VecDeque<String> = VecDeque::new();
        let mut delayed: Vec<(Instant, String)> = Vec::new();
        for job in self.jobs.unfinished().await? {
            tracing::info!(request_id = %job.request_id, attempts = job.attempts, source = ?job.source, size = ?job.size, "resuming an upload");
            match self.start_time(&job) {
                Some(at) => delayed.push((at, job.request_id)),
                None => waiting.push_back(job.request_id),
            }
        }
        if let Some(m) = self.failed_request.take() {
            self.take_request(m, &mut waiting, &mut delayed).await?;
        }
        let (report_tx, mut report_rx) = mpsc::channel::<(String, Report)>(64);
        let mut running: HashMap<String, Running> = HashMap::new();
        let mut tasks: JoinSet<(String, Result<Done, TransferError>)> = JoinSet::new();
        let mut tick = tokio::time::interval(
            self.config
                .upload
                .progress_interval
                .min(Duration::from_secs(1)),
        );
        let mut last_prune: Option<Instant> = None;
        let mut requests_open = true;
        loop {
            if self.live.has_changed().unwrap_or(false) {
                self.follow_limits();
            }
            while running.len() < self.config.upload.concurrency {
                let Some(id) = waiting.pop_front() else { break };
                self.start(&id, &mut running, &mut tasks, &report_tx)
                    .await?;
            }
            tokio::select! {
                _ = shutdown.cancelled() => {
                    // Attempts in flight stop here; their jobs resume at the next start.
                    tasks.shutdown().await;
                    break;
                }
                msg = self.requests.recv(), if requests_open => match msg {
                    Some(m) => self.take_request(m, &mut waiting, &mut delayed).await?,
                    None => requests_open = false,
                },
                Some((id, report)) = report_rx.recv() => self.on_report(&id, report).await?,
                Some(joined) = tasks.join_next() => {
                    let (id, result) = match joined {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::error!(error = %e, "an upload task failed");
                            continue;
                        }
                    };
                    // Reports sent before the end are applied first.
                    while let Ok((rid, report)) = report_rx.try_recv() {
                        self.on_report(&rid, report).await?;
                    }
                    running.remove(&id);
                    if let Some(at) = self.on_finished(&id, result).await? {
                        delayed.push((at, id));
                    }
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    delayed.retain(|(at, id)| {
                        if *at <= now {
                            waiting.push_back(id.clone());
                            false
                        } else {
                            true
                        }
                    });
                    self.report_progress(&mut running).await;
                    if last_prune.is_none_or(|at| now.duration_since(at) > Duration::from_secs(3600)) {
                        last_prune = Some(now);
                        let before = now_ms() - self.config.upload.keep_finished.as_millis() as i64;
                        match self.jobs.prune(before).await {
                            Ok(n) if n > 0 => tracing::info!(jobs = n, "forgot finished upload jobs"),
                            Ok(_) => {}
                            Err(e) => tracing::warn!(error = %e, "cannot prune finished upload jobs"),
                        }
                    }
                }
            }
        }
        // The jobs database closes when the stage is dropped.
        Ok(())
    }
}
