//! One-shot commands that look at the camera's data without the daemon: the
//! recordings, people counting on a file, plate reading on stills.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::{self, Config};
use crate::{analytics, load, video};

fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

pub fn recordings_list(config: &Config, json: bool) -> anyhow::Result<()> {
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

/// The inference backend of the plate commands.
#[derive(Debug, clap::Args)]
pub struct BackendArgs {
    /// tract (built in) or onnxruntime (builds with the `ort` feature).
    #[arg(long, default_value = "tract")]
    backend: String,
    /// The ONNX Runtime shared library; default: libonnxruntime.so in --models.
    #[arg(long)]
    onnxruntime_library: Option<PathBuf>,
    /// The detector's input, WIDTHxHEIGHT (multiples of 32).
    #[arg(long, default_value = "1312x736")]
    detector: String,
}

impl BackendArgs {
    fn detector_size(&self) -> anyhow::Result<[usize; 2]> {
        let parsed = self
            .detector
            .split_once('x')
            .and_then(|(w, h)| Some([w.parse().ok()?, h.parse().ok()?]))
            .filter(|[w, h]: &[usize; 2]| w % 32 == 0 && h % 32 == 0 && *w >= 320 && *h >= 192);
        parsed.with_context(|| {
            format!(
                "--detector must be WIDTHxHEIGHT in multiples of 32 (at least 320x192), found {:?}",
                self.detector
            )
        })
    }

    fn backend(&self, models: &Path) -> anyhow::Result<analytics::plates::Backend> {
        Ok(match self.backend.as_str() {
            "tract" => analytics::plates::Backend::Tract,
            "onnxruntime" => analytics::plates::Backend::Onnxruntime {
                library: self
                    .onnxruntime_library
                    .clone()
                    .unwrap_or_else(|| models.join("libonnxruntime.so")),
                sessions: 1,
            },
            other => anyhow::bail!("--backend must be tract or onnxruntime, found {other:?}"),
        })
    }
}

fn region(s: &str) -> anyhow::Result<analytics::plates::Region> {
    analytics::plates::Region::parse(s)
        .with_context(|| format!("--region must be br, eu, us or any, found {s:?}"))
}

pub fn read_plates(
    images: &[PathBuf],
    models: &Path,
    backend: &BackendArgs,
    region_name: &str,
    layouts: &[String],
    json: bool,
) -> anyhow::Result<()> {
    let rules = analytics::plates::Rules::new(region(region_name)?, layouts)
        .map_err(|e| anyhow::anyhow!("--layout: {e}"))?;
    let reader = analytics::plates::PlateReader::load(
        models,
        rules,
        &backend.backend(models)?,
        backend.detector_size()?,
    )?;
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

pub fn eval_plates(
    data: &Path,
    models: &Path,
    backend: &BackendArgs,
    layouts: &[String],
    limit: Option<usize>,
) -> anyhow::Result<()> {
    let det_size = backend.detector_size()?;
    let backend = backend.backend(models)?;
    // REGION:LAYOUT → the layouts of each region.
    let mut extra: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for l in layouts {
        let (r, layout) = l
            .split_once(':')
            .with_context(|| format!("--layout must be REGION:LAYOUT, found {l:?}"))?;
        extra.entry(r).or_default().push(layout.to_owned());
    }
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
                analytics::plates::PlateReader::load(
                    models,
                    analytics::plates::Rules::new(
                        r,
                        extra.get(region_name).map_or(&[][..], |v| v.as_slice()),
                    )
                    .map_err(|e| anyhow::anyhow!("--layout: {e}"))?,
                    &backend,
                    det_size,
                )?,
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

pub fn count_people(
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

pub fn recordings_clip(config: &Config, from: &str, to: &str, out: &Path) -> anyhow::Result<()> {
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
