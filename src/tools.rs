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

fn load_detector(models: &Path) -> anyhow::Result<analytics::detector::Detector> {
    Ok(analytics::detector::Detector::load(
        &models.join(analytics::detector::MODEL_FILE),
    )?)
}

fn is_jpeg(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg"))
}

pub fn detect(
    inputs: &[PathBuf],
    models: &Path,
    min_score: f32,
    classes: &[String],
    fps: u32,
    json: bool,
) -> anyhow::Result<()> {
    use analytics::detector::CLASSES;
    if let Some(bad) = classes.iter().find(|c| !CLASSES.contains(&c.as_str())) {
        anyhow::bail!(
            "--class {bad:?} is not a COCO class (person, car, bus, truck, motorcycle, bicycle, …)"
        );
    }
    anyhow::ensure!((0.0..=1.0).contains(&min_score), "--min-score must be 0-1");
    anyhow::ensure!((1..=60).contains(&fps), "--fps must be 1-60");
    let detector = load_detector(models)?;
    let show = |what: &str, img: &analytics::plates::Image| {
        let started = std::time::Instant::now();
        let found = detector.detect(img, min_score).map(|mut found| {
            found.retain(|d| classes.is_empty() || classes.iter().any(|c| c == d.class));
            found
        });
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        match (json, found) {
            (true, Ok(found)) => println!(
                "{}",
                serde_json::json!({"input": what, "objects": found, "ms": ms})
            ),
            (_, Err(e)) => println!("{what}: error: {e}"),
            (false, Ok(found)) => {
                let objects: Vec<String> = found
                    .iter()
                    .map(|d| {
                        let b = d.bbox.map(|v| v.round() as i64);
                        format!(
                            "{} {:.2} [{} {} {} {}]",
                            d.class, d.score, b[0], b[1], b[2], b[3]
                        )
                    })
                    .collect();
                println!("{what}: {}  [{ms:.0} ms]", objects.join(", "));
            }
        }
    };
    for path in inputs {
        if is_jpeg(path) {
            match load_jpeg(path) {
                Ok(img) => show(&path.display().to_string(), &img),
                Err(e) => println!("{}: error: {e:#}", path.display()),
            }
            continue;
        }
        let width = video_width(path)?;
        video::decode::file_frames(path, width, fps, |frame, at| {
            let img = analytics::plates::Image {
                width: frame.width,
                height: frame.height,
                rgb: frame.rgb,
            };
            show(
                &format!("{} {:.2} s", path.display(), at.as_secs_f64()),
                &img,
            );
        })
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// A video's width as `seqinfo.ini` beside it says, else 640.
fn video_width(path: &Path) -> anyhow::Result<u32> {
    let ini = path.with_file_name("seqinfo.ini");
    Ok(std::fs::read_to_string(ini)
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("imWidth=").map(|v| v.trim().parse().ok()))
                .flatten()
        })
        .unwrap_or(640))
}

/// Ground-truth boxes of a MOT `gt.txt`: frame (from 1) → left, top, right, bottom.
fn read_gt(path: &Path) -> anyhow::Result<std::collections::BTreeMap<u64, Vec<[f32; 4]>>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut gt = std::collections::BTreeMap::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let f: Vec<f32> = line
            .split(',')
            .map(|v| v.trim().parse::<f32>())
            .collect::<Result<_, _>>()
            .ok()
            .filter(|f: &Vec<f32>| f.len() >= 6)
            .with_context(|| format!("{}:{}: not a MOT line", path.display(), n + 1))?;
        gt.entry(f[0] as u64)
            .or_insert_with(Vec::new)
            .push([f[2], f[3], f[2] + f[4], f[3] + f[5]]);
    }
    Ok(gt)
}

pub fn eval_detector(data: &Path, models: &Path, min_scores: &[f32]) -> anyhow::Result<()> {
    use analytics::detector::iou;
    let detector = load_detector(models)?;
    let mut clips: Vec<PathBuf> = if data.join("gt.txt").is_file() {
        vec![data.to_owned()]
    } else {
        std::fs::read_dir(data)
            .with_context(|| format!("cannot read {}", data.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("gt.txt").is_file())
            .collect()
    };
    clips.sort();
    anyhow::ensure!(
        !clips.is_empty(),
        "no clip folder with a gt.txt in {}",
        data.display()
    );
    let lowest = min_scores.iter().copied().fold(1.0f32, f32::min);
    // Per threshold: true positives, false positives, false negatives.
    let mut totals = vec![[0u64; 3]; min_scores.len()];
    let mut ms = 0.0;
    let mut frames_seen = 0u64;
    for clip in &clips {
        let gt = read_gt(&clip.join("gt.txt"))?;
        let video = std::fs::read_dir(clip)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.extension()
                    .is_some_and(|e| e == "mp4" || e == "avi" || e == "mkv")
            })
            .with_context(|| format!("no video in {}", clip.display()))?;
        let ini = std::fs::read_to_string(clip.join("seqinfo.ini")).unwrap_or_default();
        let rate = ini
            .lines()
            .find_map(|l| {
                l.strip_prefix("frameRate=")
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(25);
        let mut clip_totals = vec![[0u64; 3]; min_scores.len()];
        let mut frame_no = 0u64;
        let mut failure = None;
        video::decode::file_frames(&video, video_width(&video)?, rate, |frame, _| {
            frame_no += 1;
            let img = analytics::plates::Image {
                width: frame.width,
                height: frame.height,
                rgb: frame.rgb,
            };
            let started = std::time::Instant::now();
            let found = match detector.detect(&img, lowest) {
                Ok(found) => found,
                Err(e) => {
                    failure.get_or_insert(e);
                    return;
                }
            };
            ms += started.elapsed().as_secs_f64() * 1000.0;
            let truth = gt.get(&frame_no).cloned().unwrap_or_default();
            for (k, &min) in min_scores.iter().enumerate() {
                let mut used = vec![false; truth.len()];
                let mut tp = 0;
                let persons = found
                    .iter()
                    .filter(|d| d.class == "person" && d.score >= min);
                let mut n = 0;
                for d in persons {
                    n += 1;
                    let best = truth
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| !used[*j])
                        .map(|(j, t)| (j, iou(&d.bbox, t)))
                        .max_by(|a, b| a.1.total_cmp(&b.1));
                    if let Some((j, _)) = best.filter(|(_, v)| *v >= 0.5) {
                        used[j] = true;
                        tp += 1;
                    }
                }
                clip_totals[k][0] += tp;
                clip_totals[k][1] += n - tp;
                clip_totals[k][2] += truth.len() as u64 - tp;
            }
        })
        .map_err(|e| anyhow::anyhow!("{}: {e}", video.display()))?;
        if let Some(e) = failure {
            return Err(e.into());
        }
        frames_seen += frame_no;
        let name = clip.file_name().unwrap_or_default().to_string_lossy();
        for (k, &min) in min_scores.iter().enumerate() {
            let [tp, fp, fal] = clip_totals[k];
            println!(
                "{name:<20} score >= {min:.2}: precision {:.3} recall {:.3} (tp {tp} fp {fp} fn {fal}, {frame_no} frames)",
                tp as f64 / (tp + fp).max(1) as f64,
                tp as f64 / (tp + fal).max(1) as f64,
            );
            for i in 0..3 {
                totals[k][i] += clip_totals[k][i];
            }
        }
    }
    for (k, &min) in min_scores.iter().enumerate() {
        let [tp, fp, fal] = totals[k];
        println!(
            "{:<20} score >= {min:.2}: precision {:.3} recall {:.3} (tp {tp} fp {fp} fn {fal})",
            "all",
            tp as f64 / (tp + fp).max(1) as f64,
            tp as f64 / (tp + fal).max(1) as f64,
        );
    }
    println!(
        "{frames_seen} frames, {:.1} ms per frame (tract, one thread)",
        ms / frames_seen.max(1) as f64
    );
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
