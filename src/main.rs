//! edgecam: the camera-side agent. Thin entry point: parse the command line, load the
//! configuration, hand over to `app::run` or a one-shot command.

mod analytics;
mod app;
mod commands;
mod config;
mod events;
mod health;
mod metrics;
mod mqtt;
mod outbox;
mod synthetic;
mod upload;
mod video;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::value::RawValue;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use config::{Config, LogConfig, LogTarget};

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
        /// Take the counting parameters from this configuration's `[people]`.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Read licence plates in images: one JSON line per image, best candidate first.
    ReadPlates {
        /// JPEG images.
        images: Vec<PathBuf>,
        /// Directory of the OCR models (deploy/fetch-models.sh).
        #[arg(long, default_value = "/var/lib/edgecam/models")]
        models: PathBuf,
        /// Plate formats: br, eu, us or any.
        #[arg(long, default_value = "any")]
        region: String,
        /// Print one JSON line per image instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Score plate reading on a labelled data set (`labels.tsv`: region/file, box,
    /// plate): top-1 and any-of accuracy per region, and time per image.
    EvalPlates {
        /// The data set's directory.
        data: PathBuf,
        /// Directory of the OCR models (deploy/fetch-models.sh).
        #[arg(long, default_value = "/var/lib/edgecam/models")]
        models: PathBuf,
        /// At most this many images per region.
        #[arg(long)]
        limit: Option<usize>,
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

fn main() -> ExitCode {
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
        Command::Outbox {
            command: OutboxCommand::Stats { config, json },
        } => load(&config).and_then(|c| runtime()?.block_on(outbox_stats(&c, json))),
        Command::Recordings {
            command: RecordingsCommand::List { config, json },
        } => load(&config).and_then(|c| recordings_list(&c, json)),
        Command::Recordings {
            command:
                RecordingsCommand::Clip {
                    config,
                    from,
                    to,
                    out,
                },
        } => load(&config).and_then(|c| recordings_clip(&c, &from, &to, &out)),
        Command::CountPeople {
            video,
            line,
            in_direction,
            fps,
            width,
            config,
            json,
        } => count_people(
            &video,
            &line,
            in_direction.as_deref(),
            fps,
            width,
            config.as_deref(),
            json,
        ),
        Command::ReadPlates {
            images,
            models,
            region,
            json,
        } => read_plates(&images, &models, &region, json),
        Command::EvalPlates {
            data,
            models,
            limit,
        } => eval_plates(&data, &models, limit),
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
            eprintln!("edgecam: {e:#}");
            tracing::error!(error = format!("{e:#}"), "edgecam stopped with an error");
            ExitCode::FAILURE
        }
    }
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
    if let Err(e) = mqtt::tls::client_config(&config.identity) {
        eprintln!("config file {} is valid, but: {e}", path.display());
        return ExitCode::from(2);
    }
    println!("{}: ok", path.display());
    ExitCode::SUCCESS
}

/// Sets up logging; returns how to change the level later, unless `RUST_LOG`
/// decides it.
fn init_logging(log: &LogConfig) -> Option<app::LogReload> {
    let from_env = EnvFilter::try_from_default_env().ok();
    let fixed = from_env.is_some();
    let filter = from_env
        .or_else(|| EnvFilter::try_new(&log.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
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
        let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    }))
}

fn config_show(path: &Path, local: Config, json: bool) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)?;
    let table: toml::Table = toml::from_str(&text)?;
    let state = config::stage::load_effective(local);
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

fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn recordings_list(config: &Config, json: bool) -> anyhow::Result<()> {
    let dir = &config.video.recordings_dir;
    let segments = video::segments::scan(dir)
        .with_context(|| format!("cannot list recordings in {}", dir.display()))?;
    let gaps = video::segments::gaps(&segments, video::segments::GAP_TOLERANCE);
    if json {
        let segs: Vec<_> = segments
            .iter()
            .map(|s| {
                serde_json::json!({"start": rfc3339(s.start), "end": rfc3339(s.end),
                    "bytes": s.bytes, "path": s.path})
            })
            .collect();
        let gaps: Vec<_> = gaps
            .iter()
            .map(|g| serde_json::json!({"from": rfc3339(g.from), "to": rfc3339(g.to)}))
            .collect();
        println!("{}", serde_json::json!({"segments": segs, "gaps": gaps}));
        return Ok(());
    }
    let total: u64 = segments.iter().map(|s| s.bytes).sum();
    println!(
        "# {} segments, {total} bytes, in {}",
        segments.len(),
        dir.display()
    );
    for s in &segments {
        if let Some(g) = gaps.iter().find(|g| g.to == s.start) {
            let silent = g.to.duration_since(g.from).unwrap_or_default();
            println!("# gap of {:.1} s", silent.as_secs_f64());
        }
        println!(
            "{} .. {}  {:>10}  {}",
            rfc3339(s.start),
            rfc3339(s.end),
            s.bytes,
            s.path.display()
        );
    }
    Ok(())
}

/// Decodes a JPEG file to RGB.
fn load_jpeg(path: &Path) -> anyhow::Result<analytics::plates::Image> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut d = jpeg_decoder::Decoder::new(std::io::BufReader::new(file));
    let pixels = d
        .decode()
        .with_context(|| format!("{} is not a readable JPEG", path.display()))?;
    let info = d.info().context("JPEG without a header")?;
    let rgb = match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => pixels,
        jpeg_decoder::PixelFormat::L8 => pixels.iter().flat_map(|&v| [v, v, v]).collect(),
        other => anyhow::bail!(
            "{}: unsupported JPEG pixel format {other:?}",
            path.display()
        ),
    };
    Ok(analytics::plates::Image {
        width: info.width as u32,
        height: info.height as u32,
        rgb,
    })
}

fn region(s: &str) -> anyhow::Result<analytics::plates::Region> {
    analytics::plates::Region::parse(s)
        .with_context(|| format!("--region must be br, eu, us or any, found {s:?}"))
}

fn read_plates(
    images: &[PathBuf],
    models: &Path,
    region_name: &str,
    json: bool,
) -> anyhow::Result<()> {
    let reader = analytics::plates::PlateReader::load(models, region(region_name)?)?;
    for path in images {
        let started = std::time::Instant::now();
        let result = load_jpeg(path).and_then(|img| Ok(reader.read(&img)?));
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        match (json, result) {
            (true, Ok(plates)) => println!(
                "{}",
                serde_json::json!({"file": path, "plates": plates, "ms": ms})
            ),
            (true, Err(e)) => println!(
                "{}",
                serde_json::json!({"file": path, "error": format!("{e:#}")})
            ),
            (false, Ok(plates)) => {
                let reads: Vec<String> = plates
                    .iter()
                    .map(|p| format!("{} ({:.2})", p.text, p.confidence))
                    .collect();
                println!("{}: {}  [{ms:.0} ms]", path.display(), reads.join(", "));
            }
            (false, Err(e)) => println!("{}: error: {e:#}", path.display()),
        }
    }
    Ok(())
}

fn eval_plates(data: &Path, models: &Path, limit: Option<usize>) -> anyhow::Result<()> {
    let labels = std::fs::read_to_string(data.join("labels.tsv"))
        .with_context(|| format!("no labels.tsv in {}", data.display()))?;
    let mut readers = std::collections::BTreeMap::new();
    // region → (images, top-1, any-of, ms)
    let mut score: std::collections::BTreeMap<String, (usize, usize, usize, f64)> =
        Default::default();
    for line in labels.lines().filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        anyhow::ensure!(
            cols.len() >= 6,
            "labels.tsv: expected 6 columns in {line:?}"
        );
        let (file, truth) = (cols[0], analytics::plates::rules::normalize(cols[5]));
        let region_name = file.split('/').next().unwrap_or("any");
        let entry = score.entry(region_name.to_owned()).or_default();
        if limit.is_some_and(|l| entry.0 >= l) {
            continue;
        }
        let r = region(region_name).unwrap_or(analytics::plates::Region::Any);
        if !readers.contains_key(region_name) {
            readers.insert(
                region_name.to_owned(),
                analytics::plates::PlateReader::load(models, r)?,
            );
        }
        let reader = &readers[region_name];
        let img = load_jpeg(&data.join(file))?;
        let started = std::time::Instant::now();
        let plates = reader.read(&img)?;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let top = plates.first().is_some_and(|p| p.text == truth);
        let any = plates.iter().any(|p| p.text == truth);
        let entry = score.entry(region_name.to_owned()).or_default();
        entry.0 += 1;
        entry.1 += top as usize;
        entry.2 += any as usize;
        entry.3 += ms;
        let got: Vec<&str> = plates.iter().map(|p| p.text.as_str()).collect();
        eprintln!(
            "{file}\t{truth}\t{}\t{got:?}\t{ms:.0} ms",
            if top {
                "ok"
            } else if any {
                "among"
            } else {
                "miss"
            }
        );
    }
    let (mut n, mut t, mut a, mut ms) = (0, 0, 0, 0.0);
    println!("region  images  top-1          any-of         ms/image");
    for (region, (rn, rt, ra, rms)) in &score {
        println!(
            "{region:<7} {rn:>6}  {rt:>4} {:>6.1} %  {ra:>4} {:>6.1} %  {:>8.0}",
            100.0 * *rt as f64 / (*rn).max(1) as f64,
            100.0 * *ra as f64 / (*rn).max(1) as f64,
            rms / (*rn).max(1) as f64
        );
        (n, t, a, ms) = (n + rn, t + rt, a + ra, ms + rms);
    }
    println!(
        "all     {n:>6}  {t:>4} {:>6.1} %  {a:>4} {:>6.1} %  {:>8.0}",
        100.0 * t as f64 / n.max(1) as f64,
        100.0 * a as f64 / n.max(1) as f64,
        ms / n.max(1) as f64
    );
    Ok(())
}

fn count_people(
    video: &Path,
    line: &str,
    in_direction: Option<&str>,
    fps: u32,
    width: u32,
    config: Option<&Path>,
    json: bool,
) -> anyhow::Result<()> {
    let v: Vec<f32> = line
        .split(',')
        .map(|x| x.trim().parse::<f32>())
        .collect::<Result<_, _>>()
        .ok()
        .filter(|v: &Vec<f32>| v.len() == 4 && v.iter().all(|x| (0.0..=1.0).contains(x)))
        .with_context(|| format!("--line must be x1,y1,x2,y2 as fractions 0..1, found {line:?}"))?;
    let in_direction = in_direction
        .map(|d| {
            serde_json::from_value::<analytics::InDirection>(serde_json::Value::String(d.into()))
                .with_context(|| format!("--in must be down, up, left or right, found {d:?}"))
        })
        .transpose()?;
    anyhow::ensure!((1..=60).contains(&fps), "--fps must be 1-60");
    anyhow::ensure!((16..=7680).contains(&width), "--width must be 16-7680");
    let mut people = match config {
        Some(path) => load(path)?.people,
        None => config::PeopleConfig::default(),
    };
    people.lines = vec![analytics::LineConfig {
        name: "line".into(),
        a: [v[0], v[1]],
        b: [v[2], v[3]],
        in_direction,
    }];
    people.zones.clear();
    let mut counter = analytics::Counter::new(people.params(), people.lines.clone(), vec![]);
    let mut tally = analytics::Tally::new(&people.lines, &[]);
    let mut crossings = Vec::new();
    let started = std::time::Instant::now();
    let frames = video::decode::file_frames(video, width, fps, |frame, at| {
        let found = counter.process(&frame.rgb, frame.width, frame.height);
        tally.add(&found, &[]);
        for c in found {
            if !json {
                println!(
                    "{:8.2} s  {:<3}  track {}",
                    at.as_secs_f64(),
                    c.direction,
                    c.track
                );
            }
            crossings.push(serde_json::json!({"t_s": at.as_secs_f64(), "line": c.line,
                "direction": c.direction, "track": c.track}));
        }
    })
    .map_err(|e| anyhow::anyhow!(e))?;
    let secs = started.elapsed().as_secs_f64();
    let totals = &tally.lines["line"];
    if json {
        println!(
            "{}",
            serde_json::json!({"video": video, "frames": frames, "fps": fps, "crossings": crossings,
                "in": totals.inn, "out": totals.out, "analysed_fps": frames as f64 / secs})
        );
    } else {
        println!(
            "in {}  out {}  ({frames} frames at {fps} fps analysed in {secs:.1} s, {:.0} frames/s)",
            totals.inn,
            totals.out,
            frames as f64 / secs
        );
    }
    Ok(())
}

fn recordings_clip(config: &Config, from: &str, to: &str, out: &Path) -> anyhow::Result<()> {
    let parse = |name: &str, t: &str| {
        humantime::parse_rfc3339_weak(t)
            .with_context(|| format!("--{name} must be an RFC 3339 time, found {t:?}"))
    };
    let (from, to) = (parse("from", from)?, parse("to", to)?);
    let clip = video::clips::cut(
        &config.video.recordings_dir,
        from,
        to,
        out,
        std::time::Duration::from_secs(600),
    )?;
    println!(
        "{}: {} .. {} from {} segments, {} bytes",
        clip.path.display(),
        rfc3339(clip.from),
        rfc3339(clip.to),
        clip.segments.len(),
        clip.bytes
    );
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
        mqtt::topics::valid_kind(kind),
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
