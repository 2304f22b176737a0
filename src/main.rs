//! edgecam: the camera-side agent. Thin entry point: parse the command line, load the
//! configuration, hand over to `app::run` or a one-shot command.

mod analytics;
mod app;
mod backoff;
mod commands;
mod config;
mod events;
mod fsutil;
mod health;
mod homeassistant;
mod memory;
mod metrics;
mod mqtt;
mod outbox;
mod remote_config;
mod settings;
mod sqlite;
mod supervision;
mod synthetic;
mod tls;
mod tools;
mod topics;
mod upload;
mod urls;
mod video;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::value::RawValue;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use config::{LogConfig, LogTarget};
use settings::Config;

#[derive(Parser)]
#[command(name = "edgecam", version = version(), about = "Camera events to AWS IoT Core, durably")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file (values and certificate files) without running.
    CheckConfig {
        /// Configuration file (TOML).
        file: PathBuf,
        /// Check the values only, not the certificate and key files (for templates).
        #[arg(long)]
        values_only: bool,
    },
    /// Inspect the configuration in effect.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// What the running daemon last reported about itself (uptime, outbox, MQTT,
    /// each stage's state), from `<state_dir>/status.json`, which it rewrites every
    /// `health.metrics_interval`, connected or not.
    Status {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Print the JSON (the metrics message's) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Inspect the outbox.
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
    },
    /// The recording ring buffer: the index of segments, and clips cut from it.
    Recordings {
        #[command(subcommand)]
        command: RecordingsCommand,
    },
    /// Count people crossing a line in a video file: prints the crossings and the
    /// totals per direction (the daemon's counting code, on the file's frames).
    CountPeople {
        /// Video file (any container and codec GStreamer decodes).
        video: PathBuf,
        /// The counting line, `x1,y1,x2,y2` as fractions of the frame (0..1).
        #[arg(long)]
        line: String,
        /// Crossing towards this side counts as "in": down, up, left, right
        /// (default: down for a line closer to horizontal, right otherwise).
        #[arg(long = "in")]
        in_direction: Option<String>,
        /// Frames per second analysed (the daemon's `video.analytics_fps`).
        #[arg(long, default_value_t = 5)]
        fps: u32,
        /// Width of the analysed frames (the daemon's `video.analytics_width`).
        #[arg(long, default_value_t = 640)]
        width: u32,
        /// Take the counting parameters from this configuration's `[people]` and
        /// `[detector]`.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// How people are found: tracked persons from the detector, or moving
        /// blobs (the fallback without a model).
        #[arg(long, value_enum, default_value = "detector")]
        method: tools::CountMethod,
        /// Directory of the detector model (deploy/fetch-detector.sh).
        #[arg(long, default_value = "/var/lib/edgecam/models")]
        models: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Score people detection, tracking and line counting on clips with
    /// ground-truth tracks (MOT `gt.txt` beside each video, as in people-dev).
    EvalPeople {
        /// The data set's folder (or one clip's folder).
        data: PathBuf,
        /// Directory of the detector model (deploy/fetch-detector.sh).
        #[arg(long, default_value = "/var/lib/edgecam/models")]
        models: PathBuf,
        /// Frames per second analysed (the daemon's `video.analytics_fps`).
        #[arg(long, default_value_t = 5)]
        fps: u32,
        /// Counting lines, `x1,y1,x2,y2` as fractions (repeatable); default three
        /// vertical lines at a quarter, half and three quarters of the width.
        #[arg(long = "line")]
        lines: Vec<String>,
        /// A crossing matches a true one on the same line and direction within
        /// this many seconds.
        #[arg(long, default_value_t = 1.5)]
        tolerance: f64,
        /// Take the tracking and counting parameters from this configuration.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The detector's input, WIDTHxHEIGHT (multiples of 32), instead of
        /// `detector.input_size`.
        #[arg(long)]
        input: Option<String>,
    },
    /// Find persons and vehicles (COCO objects) in JPEG images, or in the frames of
    /// a video file: one line per image or frame.
    Detect {
        /// JPEG images, or video files (anything else; any container GStreamer decodes).
        inputs: Vec<PathBuf>,
        /// Directory of the detector model (deploy/fetch-detector.sh).
        #[arg(long, default_value = "/var/lib/edgecam/models")]
        models: PathBuf,
        #[command(flatten)]
        opts: tools::DetectOptions,
    },
    /// Person detection precision and recall (IoU 0.5) on clips with ground-truth
    /// boxes: a folder of clips, each a folder with one video and `gt.txt` (MOT).
    EvalDetector {
        /// The data set's folder (or one clip's folder).
        data: PathBuf,
        /// Directory of the detector model (deploy/fetch-detector.sh).
        #[arg(long, default_value = "/var/lib/edgecam/models")]
        models: PathBuf,
        /// Lowest score counted as a detection; repeatable (one row each).
        #[arg(long = "min-score", default_values_t = [0.3f32, 0.4, 0.5])]
        min_scores: Vec<f32>,
    },
    /// The plate layout table: each country's code, region and layouts (what
    /// `[plates] region` and `countries` choose).
    PlateLayouts {
        /// Only this region's countries: br, eu or us.
        region: Option<String>,
    },
    /// Read licence plates in images: one JSON line per image, best candidate first.
    ReadPlates {
        /// JPEG images.
        images: Vec<PathBuf>,
        /// Directory of the OCR models (deploy/fetch-models.sh).
        #[arg(long, default_value = "/var/lib/edgecam/models")]
        models: PathBuf,
        #[command(flatten)]
        backend: tools::BackendArgs,
        /// Plate formats: br, eu, us or any.
        #[arg(long, default_value = "any")]
        region: String,
        /// Only this country's layouts (DE, BR, US-CA, ...; `edgecam
        /// plate-layouts` lists them); repeatable. Default: all of the region's.
        #[arg(long = "country")]
        countries: Vec<String>,
        /// A local layout added to the countries' (L letter, N digit, X either,
        /// {a,b} repeats, (AB|CD) one of a list); repeatable.
        #[arg(long = "layout")]
        layouts: Vec<String>,
        /// Print one JSON line per image instead of text.
        #[arg(long)]
        json: bool,
        /// Each image is one line of text that fills it (a plate cropped to its
        /// main line): the recognisers only, no text detection.
        #[arg(long)]
        line: bool,
    },
    /// Score plate reading on a labelled data set (`labels.tsv`: region/file, box,
    /// plate): top-1 and any-of accuracy per region, and time per image.
    EvalPlates {
        /// The data set's directory.
        data: PathBuf,
        /// Directory of the OCR models (deploy/fetch-models.sh).
        #[arg(long, default_value = "/var/lib/edgecam/models")]
        models: PathBuf,
        #[command(flatten)]
        backend: tools::BackendArgs,
        /// REGION:LAYOUT, a local layout added to a region's (L letter, N digit, X
        /// either); repeatable.
        #[arg(long = "layout")]
        layouts: Vec<String>,
        /// At most this many images per region.
        #[arg(long)]
        limit: Option<usize>,
        /// Read only inside the vehicles the object detector finds (as the
        /// daemon does with `[detector]` on); the detector model is in --models.
        #[arg(long)]
        vehicles: bool,
        /// With --vehicles: the least score of a vehicle (default: the
        /// detector's vehicle_start_score).
        #[arg(long)]
        vehicle_score: Option<f32>,
        /// Also score the decoder's weighting by K-fold cross-validation per region
        /// (chosen on K-1 folds, scored on the one left out).
        #[arg(long)]
        folds: Option<usize>,
    },
    /// Commit events to the outbox directly (the running daemon publishes them).
    Emit {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Event kind (topic level): a-z 0-9 _ -.
        #[arg(long, default_value = "manual")]
        kind: String,
        /// How many events.
        #[arg(long, default_value_t = 1)]
        count: u64,
        /// Payload, one JSON value; `{"n": i}` is used when absent.
        #[arg(long)]
        payload: Option<String>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// The effective configuration (local file + applied remote configuration) and,
    /// for each value, where it came from: default, local, group or device.
    Show {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum RecordingsCommand {
    /// The segments on disk (UTC start, end, bytes, file) and the gaps between them.
    List {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Cut one playable file from the segments covering a time range (remuxed, not
    /// re-encoded; precise to the segment).
    Clip {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Start of the range, RFC 3339 (`2026-11-22T06:30:00Z`).
        #[arg(long)]
        from: String,
        /// End of the range, RFC 3339.
        #[arg(long)]
        to: String,
        /// Where to write the clip (Matroska).
        #[arg(long, short)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum OutboxCommand {
    /// Depth, bytes, oldest age, evicted/expired/refused counts, last acknowledged seq.
    Stats {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Large blocks bypass glibc's heaps and are reused (src/memory.rs).
#[global_allocator]
static ALLOCATOR: memory::Allocator = memory::Allocator;

fn version() -> &'static str {
    concat!(
        env!("CARGO_PKG_VERSION"),
        " (git ",
        env!("EDGECAM_GIT_HASH"),
        ", target ",
        env!("EDGECAM_TARGET"),
        ", ",
        env!("EDGECAM_PROFILE"),
        " build, features: ",
        env!("EDGECAM_FEATURES"),
        ")"
    )
}

/// glibc's malloc keeps up to eight heaps per core, one per thread that
/// allocates at the same time; the analytics threads (GStreamer's, the detector's,
/// the plate reader's) each leave their freed working memory in their own. Two
/// heaps cut the daemon's peak with the detector and plate reading by a fifth
/// at the same speed (docs/detector.md).
const MALLOC_ARENAS: i32 = 2;

/// Limits glibc's malloc to `MALLOC_ARENAS` heaps, unless `MALLOC_ARENA_MAX` in
/// the environment says otherwise. Before any thread starts.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt changes a malloc parameter; no other thread runs yet.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS) };
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run { .. }) {
        // One-shot commands print to stdout: end quietly when the reader goes away
        // (`edgecam outbox stats | head -1`), as command-line tools do. The daemon
        // keeps Rust's default (SIGPIPE ignored; a closed socket is an error to handle).
        // SAFETY: resetting a signal disposition before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let result = match cli.command {
        Command::CheckConfig { file, values_only } => return check_config(&file, values_only),
        Command::Run { config } => load(&config).and_then(|c| {
            let reload = init_logging(&c.log);
            runtime()?.block_on(app::run(c, reload))
        }),
        Command::Config {
            command: ConfigCommand::Show { config, json },
        } => load(&config).and_then(|c| config_show(&config, c, json)),
        Command::Status { config, json } => load(&config).and_then(|c| tools::status(&c, json)),
        Command::Outbox {
            command: OutboxCommand::Stats { config, json },
        } => load(&config).and_then(|c| runtime()?.block_on(outbox_stats(&c, json))),
        Command::Recordings {
            command: RecordingsCommand::List { config, json },
        } => load(&config).and_then(|c| tools::recordings_list(&c, json)),
        Command::Recordings {
            command:
                RecordingsCommand::Clip {
                    config,
                    from,
                    to,
                    out,
                },
        } => load(&config).and_then(|c| tools::recordings_clip(&c, &from, &to, &out)),
        Command::CountPeople {
            video,
            line,
            in_direction,
            fps,
            width,
            config,
            method,
            models,
            json,
        } => tools::count_people(
            &video,
            &line,
            in_direction.as_deref(),
            fps,
            width,
            config.as_deref(),
            method,
            &models,
            json,
        ),
        Command::EvalPeople {
            data,
            models,
            fps,
            lines,
            tolerance,
            config,
            input,
        } => tools::eval_people(
            &data,
            &models,
            fps,
            &lines,
            tolerance,
            config.as_deref(),
            input.as_deref(),
        ),
        Command::Detect {
            inputs,
            models,
            opts,
        } => tools::detect(&inputs, &models, &opts),
        Command::EvalDetector {
            data,
            models,
            min_scores,
        } => tools::eval_detector(&data, &models, &min_scores),
        Command::ReadPlates {
            images,
            models,
            backend,
            region,
            countries,
            layouts,
            json,
            line,
        } => tools::read_plates(
            &images,
            &models,
            &backend,
            &tools::PlateRead {
                region,
                countries,
                layouts,
                json,
                line,
            },
        ),
        Command::PlateLayouts { region } => tools::plate_layouts(region.as_deref()),
        Command::EvalPlates {
            data,
            models,
            backend,
            layouts,
            limit,
            vehicles,
            vehicle_score,
            folds,
        } => tools::eval_plates(
            &data,
            &models,
            &backend,
            &tools::PlateEval {
                layouts,
                limit,
                vehicles,
                vehicle_score,
                folds,
            },
        ),
        Command::Emit {
            config,
            kind,
            count,
            payload,
        } => load(&config)
            .and_then(|c| runtime()?.block_on(emit(&c, &kind, count, payload.as_deref()))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let e = error_chain(&e);
            eprintln!("edgecam: {e}");
            tracing::error!(error = %e, "edgecam stopped with an error");
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each cause once: many of our errors
/// already end with their cause's text, which `{:#}` would repeat.
fn error_chain(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn load(path: &Path) -> anyhow::Result<Config> {
    Ok(Config::load(path)?)
}

fn check_config(path: &Path, values_only: bool) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if values_only {
        println!(
            "{}: values ok (certificate files not checked)",
            path.display()
        );
        return ExitCode::SUCCESS;
    }
    if let Err(e) = tls::client_config(&config.identity) {
        eprintln!("config file {} is valid, but: {e}", path.display());
        return ExitCode::from(2);
    }
    println!("{}: ok", path.display());
    ExitCode::SUCCESS
}

/// Sets up logging; returns how to change the level later, unless `RUST_LOG`
/// decides it.
fn init_logging(log: &LogConfig) -> Option<app::LogReload> {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| config::log_levels(&v));
    let fixed = from_env.is_some();
    let filter = from_env
        .or_else(|| config::log_levels(&log.level))
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let under_systemd = std::env::var_os("JOURNAL_STREAM").is_some();
    let journald = match log.target {
        LogTarget::Journald => true,
        LogTarget::Auto => under_systemd,
        LogTarget::Stderr => false,
    };
    let registry = tracing_subscriber::registry().with(filter);
    let mut journald_layer = None;
    if journald {
        match tracing_journald::layer() {
            Ok(layer) => journald_layer = Some(layer.with_syslog_identifier("edgecam".into())),
            Err(e) => eprintln!("edgecam: journald unavailable ({e}); logging to stderr"),
        }
    }
    match journald_layer {
        Some(layer) => registry.with(layer).init(),
        None => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            .init(),
    }
    if fixed {
        return None;
    }
    Some(Box::new(move |level: &str| {
        let filter = config::log_levels(level)
            .ok_or_else(|| format!("{level:?} is not a log filter such as \"info\""))?;
        handle.reload(filter).map_err(|e| e.to_string())
    }))
}

fn config_show(path: &Path, local: Config, json: bool) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)?;
    let table: toml::Table = toml::from_str(&text)?;
    let state_dir = local.storage.state_dir.clone();
    let state = config::remote::load_effective(local, &state_dir);
    let rows = state.provenance(&table);
    if json {
        let out: serde_json::Map<String, serde_json::Value> = rows
            .into_iter()
            .map(|(k, v, source)| (k, serde_json::json!({"value": v, "source": source})))
            .collect();
        println!("{}", serde_json::Value::Object(out));
        return Ok(());
    }
    use config::remote::Source;
    let version = |s| {
        state
            .version(s)
            .map_or("none".to_owned(), |v: u64| v.to_string())
    };
    println!(
        "# remote configuration in effect: device version {}, group version {}; hash {}",
        version(Source::Device),
        version(Source::Group),
        config::remote::config_hash(state.effective())
    );
    let width = rows.iter().map(|(k, _, _)| k.len()).max().unwrap_or(0);
    for (key, value, source) in rows {
        println!("{key:width$} = {value:<40} # {source}");
    }
    Ok(())
}

async fn outbox_stats(config: &Config, json: bool) -> anyhow::Result<()> {
    let path = config.outbox_path();
    let s = outbox::Store::open_read_only(&path).await?.stats().await?;
    if json {
        println!("{}", serde_json::to_string(&s)?);
        return Ok(());
    }
    println!("outbox           {}", path.display());
    println!("depth            {} events", s.depth);
    println!(
        "bytes            {} (budgeted), {} on disk",
        s.bytes, s.file_bytes
    );
    match s.oldest_age_s {
        Some(age) => println!("oldest age       {age:.1} s"),
        None => println!("oldest age       - (empty)"),
    }
    println!("evicted          {}", s.evicted);
    println!("expired          {}", s.expired);
    println!("refused          {}", s.refused);
    println!("last acked seq   {}", s.last_acked_seq);
    println!("last seq         {}", s.last_seq);
    Ok(())
}

async fn emit(
    config: &Config,
    kind: &str,
    count: u64,
    payload: Option<&str>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        topics::valid_kind(kind),
        "--kind must be 1-64 characters from a-z 0-9 _ -, found {kind:?}"
    );
    let fixed = payload
        .map(|p| RawValue::from_string(p.to_owned()).context("--payload is not valid JSON"))
        .transpose()?;
    let limit = config.mqtt.max_message_bytes / 2;
    let mut events = Vec::with_capacity(count as usize);
    for n in 0..count {
        let body = match &fixed {
            Some(p) => p.clone(),
            None => RawValue::from_string(format!("{{\"n\":{n}}}"))?,
        };
        anyhow::ensure!(
            body.get().len() <= limit,
            "payload is {} bytes; at most {limit} (half of mqtt.max_message_bytes)",
            body.get().len()
        );
        events.push(events::NewEvent::now(kind, body));
    }
    let (mut store, _) = outbox::Store::open(
        &config.outbox_path(),
        &config.outbox,
        outbox::Recovery::Fail,
    )
    .await?;
    let mut accepted = Vec::new();
    let mut refused = 0;
    let chunk = 1000;
    while !events.is_empty() {
        let rest = events.split_off(events.len().min(chunk));
        let outcome = store.append(std::mem::replace(&mut events, rest)).await?;
        accepted.extend(outcome.accepted);
        refused += outcome.refused.len();
        if outcome.evicted > 0 {
            eprintln!("outbox full: evicted {} oldest events", outcome.evicted);
        }
    }
    store.close().await?;
    match (accepted.first(), accepted.last()) {
        (Some(first), Some(last)) => {
            println!("committed {} events, seq {first}..={last}", accepted.len())
        }
        _ => println!("committed no events"),
    }
    anyhow::ensure!(
        refused == 0,
        "{refused} events refused (outbox full or disk full)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    #[error("key file k.pem holds no key")]
    struct Inner;

    #[derive(Debug, thiserror::Error)]
    #[error("TLS setup: {0}")]
    struct Outer(#[from] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("TLS setup failed")]
    struct Plain(#[source] Inner);

    #[test]
    fn a_cause_already_in_its_error_is_not_repeated() {
        let e = anyhow::Error::from(Outer(Inner)).context("cannot set up the MQTT connection");
        assert_eq!(
            error_chain(&e),
            "cannot set up the MQTT connection: TLS setup: key file k.pem holds no key"
        );
        let e = anyhow::Error::from(Plain(Inner));
        assert_eq!(
            error_chain(&e),
            "TLS setup failed: key file k.pem holds no key"
        );
    }
}
