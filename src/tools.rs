//! One-shot commands that look at the camera's data without the daemon: the
//! recordings, people counting on a file, plate reading on stills.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::settings::Config;
use crate::{analytics, video};

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
fn load_jpeg(path: &Path) -> anyhow::Result<analytics::raster::Image> {
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
    Ok(analytics::raster::Image {
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
    /// The text detector's input, WIDTHxHEIGHT (multiples of 32); default
    /// 1312x736 for whole images, 960x544 for vehicle boxes (`--vehicles`).
    #[arg(long)]
    detector: Option<String>,
    /// Which recognisers read each text box: ppocr, edgecam or both.
    #[arg(long, default_value = "ppocr")]
    recognisers: String,
    /// No second, enlarged look at small lines of text (`plates.zoom = false`).
    #[arg(long)]
    no_zoom: bool,
}

impl BackendArgs {
    fn detector_size(&self) -> anyhow::Result<[usize; 2]> {
        let [w, h] = analytics::PlatesConfig::default().detector_size;
        self.detector_size_or(&format!("{w}x{h}"))
    }

    fn detector_size_or(&self, default: &str) -> anyhow::Result<[usize; 2]> {
        let given = self.detector.as_deref().unwrap_or(default);
        let parsed = given
            .split_once('x')
            .and_then(|(w, h)| Some([w.parse().ok()?, h.parse().ok()?]))
            .filter(|[w, h]: &[usize; 2]| w % 32 == 0 && h % 32 == 0 && *w >= 320 && *h >= 192);
        parsed.with_context(|| {
            format!(
                "--detector must be WIDTHxHEIGHT in multiples of 32 (at least 320x192), found {given:?}"
            )
        })
    }

    fn recognisers(&self) -> anyhow::Result<analytics::plates::Recognisers> {
        analytics::plates::Recognisers::parse(&self.recognisers).with_context(|| {
            format!(
                "--recognisers must be ppocr, edgecam or both, found {:?}",
                self.recognisers
            )
        })
    }

    fn backend(&self, models: &Path) -> anyhow::Result<analytics::inference::Backend> {
        backend_arg(&self.backend, self.onnxruntime_library.as_deref(), models)
    }
}

/// `--backend` and `--onnxruntime-library` (default: libonnxruntime.so in the
/// models directory); one session.
fn backend_arg(
    backend: &str,
    library: Option<&Path>,
    models: &Path,
) -> anyhow::Result<analytics::inference::Backend> {
    Ok(match backend {
        "tract" => analytics::inference::Backend::Tract,
        "onnxruntime" => analytics::inference::Backend::Onnxruntime {
            library: library
                .map(Path::to_owned)
                .unwrap_or_else(|| models.join("libonnxruntime.so")),
            sessions: 1,
        },
        other => anyhow::bail!("--backend must be tract or onnxruntime, found {other:?}"),
    })
}

fn region(s: &str) -> anyhow::Result<analytics::plates::Region> {
    analytics::plates::Region::parse(s)
        .with_context(|| format!("--region must be br, eu, us or any, found {s:?}"))
}

/// What `edgecam read-plates` reads with and prints.
pub struct PlateRead {
    pub region: String,
    pub countries: Vec<String>,
    pub layouts: Vec<String>,
    /// One JSON line per image.
    pub json: bool,
    /// Each image is one line of text (no text detection).
    pub line: bool,
}

pub fn read_plates(
    images: &[PathBuf],
    models: &Path,
    backend: &BackendArgs,
    opts: &PlateRead,
) -> anyhow::Result<()> {
    let PlateRead {
        region: ref region_name,
        ref countries,
        ref layouts,
        json,
        line,
    } = *opts;
    let rules = analytics::plates::Rules::new(region(region_name)?, countries, layouts)
        .map_err(|e| anyhow::anyhow!("--country/--layout: {e}"))?;
    let reader = analytics::plates::PlateReader::load(
        models,
        rules,
        &backend.backend(models)?,
        backend.detector_size()?,
        backend.recognisers()?,
        !backend.no_zoom,
    )?;
    for path in images {
        let started = std::time::Instant::now();
        let result = load_jpeg(path).and_then(|img| {
            Ok(if line {
                reader.read_line(&img)?
            } else {
                analytics::plates::LineRead {
                    plates: reader.read(&img)?,
                    read: Default::default(),
                }
            })
        });
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        match (json, result) {
            (true, Ok(r)) if line => println!(
                "{}",
                serde_json::json!({"file": path, "plates": r.plates, "read": r.read, "ms": ms})
            ),
            (true, Ok(r)) => println!(
                "{}",
                serde_json::json!({"file": path, "plates": r.plates, "ms": ms})
            ),
            (true, Err(e)) => println!(
                "{}",
                serde_json::json!({"file": path, "error": format!("{e:#}")})
            ),
            (false, Ok(r)) => {
                let reads: Vec<String> = r
                    .plates
                    .iter()
                    .map(|p| format!("{} ({:.2})", p.text, p.confidence))
                    .collect();
                let alone: Vec<String> = r.read.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                let alone = if alone.is_empty() {
                    String::new()
                } else {
                    format!("  ({})", alone.join(", "))
                };
                println!(
                    "{}: {}{alone}  [{ms:.0} ms]",
                    path.display(),
                    reads.join(", ")
                );
            }
            (false, Err(e)) => println!("{}: error: {e:#}", path.display()),
        }
    }
    Ok(())
}

/// What `eval-plates` reads and how (its options beyond the data and models).
pub struct PlateEval {
    /// REGION:LAYOUT entries.
    pub layouts: Vec<String>,
    pub limit: Option<usize>,
    pub vehicles: bool,
    pub vehicle_score: Option<f32>,
    pub folds: Option<usize>,
}

pub fn eval_plates(
    data: &Path,
    models: &Path,
    backend: &BackendArgs,
    opts: &PlateEval,
) -> anyhow::Result<()> {
    let PlateEval {
        ref layouts,
        limit,
        vehicles,
        vehicle_score,
        folds,
    } = *opts;
    anyhow::ensure!(
        folds.is_none_or(|k| (2..=20).contains(&k)),
        "--folds must be 2-20"
    );
    anyhow::ensure!(
        !(vehicles && folds.is_some()),
        "--folds decodes whole images again with each weighting; not with --vehicles"
    );
    let det_size = if vehicles {
        let [w, h] = analytics::PlatesConfig::default().vehicle_detector_size;
        backend.detector_size_or(&format!("{w}x{h}"))?
    } else {
        backend.detector_size()?
    };
    // With --vehicles: plates are read inside vehicle boxes only, as the daemon
    // does with [detector] on.
    let det_cfg = analytics::DetectorConfig::default();
    let vehicle_score = vehicle_score.unwrap_or(det_cfg.vehicle_start_score);
    anyhow::ensure!(
        (0.0..=1.0).contains(&vehicle_score),
        "--vehicle-score must be 0-1"
    );
    let mut detector = if vehicles {
        Some(Planned::new(models, det_cfg.input_size)?)
    } else {
        None
    };
    let mut no_vehicle = 0usize;
    let recognisers = backend.recognisers()?;
    let zoom = !backend.no_zoom;
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
    // Per image with --folds: its region and top-1 under each weighting.
    let weightings = fold_grid(recognisers == analytics::plates::Recognisers::Both);
    let mut grid: Vec<(String, Vec<bool>)> = Vec::new();
    let mut decode_ms = 0.0;
    let mut confusions = Confusions::default();
    let mut score: std::collections::BTreeMap<String, Tally> = Default::default();
    let min_confidence = analytics::PlatesConfig::default().min_confidence;
    // Per threshold of `THRESHOLDS`: images whose label would be published, and
    // images where something else would be.
    let mut by_threshold = [[0usize; 2]; THRESHOLDS.len()];
    for line in labels.lines().filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        anyhow::ensure!(
            cols.len() >= 6,
            "labels.tsv: expected 6 columns in {line:?}"
        );
        let (file, truth) = (cols[0], analytics::plates::rules::normalize(cols[5]));
        let region_name = file.split('/').next().unwrap_or("any");
        let entry = score.entry(region_name.to_owned()).or_default();
        if limit.is_some_and(|l| entry.images >= l) {
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
                        &[],
                        extra.get(region_name).map_or(&[][..], |v| v.as_slice()),
                    )
                    .map_err(|e| anyhow::anyhow!("--layout: {e}"))?,
                    &backend,
                    det_size,
                    recognisers,
                    zoom,
                )?,
            );
        }
        let reader = &readers[region_name];
        let img = load_jpeg(&data.join(file))?;
        let started = std::time::Instant::now();
        let mut memo = analytics::plates::Memo::default();
        // Best first: (text, confidence).
        let plates: Vec<(String, f32)> = match detector.as_mut() {
            None => reader
                .read_with(&img, reader.rules(), &mut memo)?
                .into_iter()
                .map(|p| (p.text, p.confidence))
                .collect(),
            Some(d) => {
                let found = d.detect(&img, &det_cfg)?;
                let boxes: Vec<analytics::VehicleBox> = found
                    .iter()
                    .filter(|o| {
                        analytics::tracking::VEHICLES.contains(&o.class) && o.score >= vehicle_score
                    })
                    .enumerate()
                    .map(|(i, o)| analytics::VehicleBox {
                        track: i as u64 + 1,
                        class: o.class,
                        bbox: o.bbox,
                    })
                    .collect();
                if boxes.is_empty() {
                    no_vehicle += 1;
                }
                let frame = video::Frame {
                    width: img.width,
                    height: img.height,
                    rgb: img.rgb.clone(),
                    captured_at: std::time::SystemTime::now(),
                };
                let mut reads = analytics::read_vehicles(reader, &frame, &boxes, 0.0)?;
                reads.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
                reads.into_iter().map(|o| (o.text, o.confidence)).collect()
            }
        };
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        if !vehicles {
            // The same image decoded again from the kept recognition: what the
            // layout decoding alone costs.
            let again = std::time::Instant::now();
            reader.read_with(&img, reader.rules(), &mut memo)?;
            decode_ms += again.elapsed().as_secs_f64() * 1000.0;
        }
        if folds.is_some() {
            // Top-1 with each weighting, decoded from the same recognition.
            let mut hits = Vec::with_capacity(weightings.len());
            for &(unlisted, extra, twins, plate, words) in &weightings {
                let mut rules = reader.rules().clone();
                rules.params.unlisted = unlisted;
                rules.params.extra = extra;
                rules.params.twins = twins;
                rules.params.plate = plate;
                rules.params.words = words;
                let reads = reader.read_with(&img, &rules, &mut memo)?;
                hits.push(reads.first().is_some_and(|p| p.text == truth));
            }
            grid.push((region_name.to_owned(), hits));
        }
        confusions.add(&truth, plates.first().map(|p| p.0.as_str()));
        let top = plates.first().is_some_and(|p| p.0 == truth);
        let any = plates.iter().any(|p| p.0 == truth);
        let (published, other) = published_at(&plates, &truth, min_confidence);
        for (i, &min) in THRESHOLDS.iter().enumerate() {
            let (p, o) = published_at(&plates, &truth, min);
            by_threshold[i][0] += p as usize;
            by_threshold[i][1] += o as usize;
        }
        let entry = score.entry(region_name.to_owned()).or_default();
        entry.images += 1;
        entry.top1 += top as usize;
        entry.any += any as usize;
        entry.ms += ms;
        entry.published += published as usize;
        entry.other += other as usize;
        // Each read with its confidence, best first.
        let got: Vec<String> = plates
            .iter()
            .map(|(text, c)| format!("{text} {c:.2}"))
            .collect();
        eprintln!(
            "{file}\t{truth}\t{}\t{}\t{got:?}\t{ms:.0} ms",
            if top {
                "ok"
            } else if any {
                "among"
            } else {
                "miss"
            },
            if published {
                "published"
            } else {
                "unpublished"
            }
        );
    }
    let mut all = Tally::default();
    println!(
        "region  images  top-1          any-of         ms/image  published top-1  other published"
    );
    for (region, t) in &score {
        println!("{region:<7} {}", t.row());
        all.add(t);
    }
    println!("all     {}", all.row());
    println!(
        "published top-1: the best read at or above plates.min_confidence ({min_confidence}), what the daemon publishes;\n\
         other published: images where another read is at or above it too (a misread, another vehicle's plate, or text that is no plate)"
    );
    if vehicles {
        println!(
            "(read inside vehicle boxes scoring {vehicle_score} or more, text detector {}x{}; {no_vehicle} images with no vehicle found)",
            det_size[0], det_size[1]
        );
    } else {
        println!(
            "of which decoding against the layouts (the recognition kept, decoded again): {:.1} ms/image",
            decode_ms / all.images.max(1) as f64
        );
    }
    println!(
        "second look at small lines: {}",
        if zoom {
            "on (plates.zoom)"
        } else {
            "off (--no-zoom)"
        }
    );
    confusions.print();
    println!("\nplates.min_confidence  published top-1  other published  (all regions)");
    let pct = |k: usize| 100.0 * k as f64 / all.images.max(1) as f64;
    for (min, [p, o]) in THRESHOLDS.iter().zip(by_threshold) {
        println!(
            "{min:>21.1}  {p:>6} {:>6.1} %  {o:>6} {:>6.1} %",
            pct(p),
            pct(o)
        );
    }
    if let Some(k) = folds {
        cross_validate(&grid, &weightings, k);
    }
    Ok(())
}

/// The decoder's weightings `--folds` chooses from: (unlisted, extra, twins,
/// plate, words); `plate`, edgecam's recogniser's share of the vote, only varies
/// when both recognisers read.
fn fold_grid(both: bool) -> Vec<Weighting> {
    // With both, `extra` at 0.1 (never chosen with one) makes room for `plate`.
    let (plates, extras): (&[f32], &[f32]) = if both {
        (&[0.5, 1.0, 2.0], &[0.01, 0.03])
    } else {
        (&[1.0], &[0.01, 0.03, 0.1])
    };
    let mut grid = Vec::new();
    for unlisted in [0.01, 0.03, 0.1, 0.3] {
        for &extra in extras {
            for twins in [0.0, 0.1, 0.3] {
                for &plate in plates {
                    for words in [0.0, 0.03, 0.1, 0.3] {
                        grid.push((unlisted, extra, twins, plate, words));
                    }
                }
            }
        }
    }
    grid
}

/// A decoder weighting: [`analytics::plates::Params`]'s unlisted, extra, twins,
/// plate and words.
type Weighting = (f32, f32, f32, f32, f32);

/// K-fold cross-validation of the decoder's weighting per region: image `i` of a
/// region is in fold `i % k`; each fold is scored with the weighting that did best
/// on the other folds (the first of equals). Prints the held-out top-1 per region
/// and the weighting each fold got, then the weighting the whole set prefers.
fn cross_validate(grid: &[(String, Vec<bool>)], weightings: &[Weighting], k: usize) {
    let mut regions: Vec<&str> = grid.iter().map(|(r, _)| r.as_str()).collect();
    regions.sort();
    regions.dedup();
    let best_of = |rows: &[&Vec<bool>]| -> usize {
        (0..weightings.len())
            .max_by_key(|&g| (rows.iter().filter(|h| h[g]).count(), usize::MAX - g))
            .unwrap_or(0)
    };
    println!("\n{k}-fold cross-validated top-1 (weighting chosen on the other folds: unlisted/extra/twins/plate/words)");
    let (mut n_all, mut hit_all) = (0, 0);
    for region in regions {
        let rows: Vec<&Vec<bool>> = grid
            .iter()
            .filter(|(r, _)| r == region)
            .map(|(_, h)| h)
            .collect();
        let (mut hit, mut chosen) = (0, Vec::new());
        for fold in 0..k {
            let train: Vec<&Vec<bool>> = rows
                .iter()
                .enumerate()
                .filter(|(i, _)| i % k != fold)
                .map(|(_, h)| *h)
                .collect();
            let g = best_of(&train);
            hit += rows
                .iter()
                .enumerate()
                .filter(|(i, h)| i % k == fold && h[g])
                .count();
            let (u, e, t, p, w) = weightings[g];
            chosen.push(format!("{u}/{e}/{t}/{p}/{w}"));
        }
        let all = best_of(&rows);
        let (u, e, t, p, w) = weightings[all];
        println!(
            "{region:<7} {:>6}  {hit:>4} {:>6.1} %  folds: {}  whole set: {u}/{e}/{t}/{p}/{w} ({} images)",
            rows.len(),
            100.0 * hit as f64 / rows.len().max(1) as f64,
            chosen.join(" "),
            rows.iter().filter(|h| h[all]).count()
        );
        (n_all, hit_all) = (n_all + rows.len(), hit_all + hit);
    }
    println!(
        "all     {n_all:>6}  {hit_all:>4} {:>6.1} %",
        100.0 * hit_all as f64 / n_all.max(1) as f64
    );
}

/// The `plates.min_confidence` values `eval-plates` also scores at.
const THRESHOLDS: [f32; 7] = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];

/// Whether the daemon would publish `truth` first at `min_confidence` (reads
/// below it are not published), and whether it would publish something else
/// too: a misread of the plate, another vehicle's plate, or text that is no plate.
/// `plates` are the reads and their confidences, best first.
fn published_at(plates: &[(String, f32)], truth: &str, min_confidence: f32) -> (bool, bool) {
    let published = plates
        .iter()
        .find(|p| p.1 >= min_confidence)
        .is_some_and(|p| p.0 == truth);
    let other = plates.iter().any(|p| p.1 >= min_confidence && p.0 != truth);
    (published, other)
}

/// One region's results in `eval-plates`.
#[derive(Default)]
struct Tally {
    images: usize,
    /// The label read first.
    top1: usize,
    /// The label among the reads.
    any: usize,
    /// Milliseconds, summed.
    ms: f64,
    /// The label was the first read at or above `min_confidence`: what the
    /// daemon publishes.
    published: usize,
    /// Another read at or above `min_confidence`.
    other: usize,
}

impl Tally {
    fn add(&mut self, t: &Tally) {
        self.images += t.images;
        self.top1 += t.top1;
        self.any += t.any;
        self.ms += t.ms;
        self.published += t.published;
        self.other += t.other;
    }

    /// The counts after the region's name: images, then each count with its
    /// percentage, the mean time between.
    fn row(&self) -> String {
        let n = self.images;
        let pct = |k: usize| 100.0 * k as f64 / n.max(1) as f64;
        format!(
            "{n:>6}  {:>4} {:>6.1} %  {:>4} {:>6.1} %  {:>8.0}  {:>4} {:>6.1} %  {:>10} {:>6.1} %",
            self.top1,
            pct(self.top1),
            self.any,
            pct(self.any),
            self.ms / n.max(1) as f64,
            self.published,
            pct(self.published),
            self.other,
            pct(self.other)
        )
    }
}

/// How top-1 reads went wrong: characters confused (same length), and reads of
/// another length or none.
#[derive(Default)]
struct Confusions {
    pairs: std::collections::BTreeMap<(char, char), usize>,
    other_length: usize,
    none: usize,
}

impl Confusions {
    fn add(&mut self, truth: &str, read: Option<&str>) {
        match read {
            None => self.none += 1,
            Some(r) if r.len() != truth.len() => self.other_length += 1,
            Some(r) => {
                for (t, c) in truth.chars().zip(r.chars()).filter(|(t, c)| t != c) {
                    *self.pairs.entry((t, c)).or_default() += 1;
                }
            }
        }
    }

    fn print(&self) {
        let mut pairs: Vec<(&(char, char), &usize)> = self.pairs.iter().collect();
        pairs.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let shown: Vec<String> = pairs
            .iter()
            .map(|((t, c), n)| format!("{t}→{c} {n}"))
            .collect();
        println!(
            "top-1 errors: characters confused (plate→read): {}; reads of another length: {}; no read: {}",
            if shown.is_empty() { "none".to_owned() } else { shown.join(", ") },
            self.other_length,
            self.none
        );
    }
}

/// How `count-people` finds people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CountMethod {
    /// Tracked persons from the object detector (the daemon with `[detector] enabled`).
    Detector,
    /// Moving blobs over a learnt background (the daemon without a detector).
    Blobs,
}

#[allow(clippy::too_many_arguments)]
pub fn count_people(
    video: &Path,
    line: &str,
    in_direction: Option<&str>,
    fps: u32,
    width: u32,
    config: Option<&Path>,
    method: CountMethod,
    models: &Path,
    json: bool,
) -> anyhow::Result<()> {
    let v = parse_line(line, "--line")?;
    let in_direction = in_direction
        .map(|d| {
            serde_json::from_value::<analytics::InDirection>(serde_json::Value::String(d.into()))
                .with_context(|| format!("--in must be down, up, left or right, found {d:?}"))
        })
        .transpose()?;
    anyhow::ensure!((1..=60).contains(&fps), "--fps must be 1-60");
    anyhow::ensure!((16..=7680).contains(&width), "--width must be 16-7680");
    let (mut people, detector_cfg) = counting_sections(config)?;
    people.lines = vec![analytics::LineConfig {
        name: "line".into(),
        a: [v[0], v[1]],
        b: [v[2], v[3]],
        in_direction,
    }];
    people.zones.clear();
    let mut blobs = analytics::Counter::new(people.params(), people.lines.clone(), vec![]);
    let mut tracks = analytics::TrackCounter::new(
        analytics::people::persons,
        detector_cfg.tracking(),
        people.hysteresis,
        people.lines.clone(),
        vec![],
    );
    let detector = match method {
        CountMethod::Detector => Some(Planned::new(models, detector_cfg.input_size)?),
        CountMethod::Blobs => None,
    };
    let mut tally = analytics::Tally::new(&people.lines, &[]);
    let mut crossings = Vec::new();
    let mut failure = None;
    let started = std::time::Instant::now();
    let mut detector = detector;
    let mut gate = analytics::motion::DetectGate::new(
        detector_cfg.motion,
        detector_cfg.still_every.as_millis() as i64,
    );
    let frames = video::decode::file_frames(video, width, fps, |frame, at| {
        let found = match &mut detector {
            None => blobs.process(&frame.rgb, frame.width, frame.height),
            Some(d) => {
                let (w, h) = (frame.width, frame.height);
                // As the daemon: a still scene with nothing in view skips the model.
                let at_ms = at.as_millis() as i64;
                let (wanted, thumb) = gate.look(&frame, at_ms);
                if !wanted {
                    Vec::new()
                } else {
                    let img = analytics::raster::Image {
                        width: w,
                        height: h,
                        rgb: frame.rgb,
                    };
                    match d.detect(&img, &detector_cfg) {
                        Ok(objects) => {
                            let seen = objects.iter().any(|o| detector_cfg.starts_track(o));
                            gate.ran(thumb, at_ms, seen);
                            tracks.process(at.as_secs_f64(), w, h, &objects)
                        }
                        Err(e) => {
                            failure.get_or_insert(e);
                            Vec::new()
                        }
                    }
                }
            }
        };
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
    if let Some(e) = failure {
        return Err(e);
    }
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

fn load_detector_sized(
    models: &Path,
    size: [usize; 2],
    backend: &analytics::inference::Backend,
) -> anyhow::Result<analytics::detector::Detector> {
    Ok(analytics::detector::Detector::load_sized(
        &models.join(analytics::detector::MODEL_FILE),
        size,
        backend,
    )?)
}

/// `--input WIDTHxHEIGHT` (height 0: the frame's aspect ratio).
fn input_size_arg(input: &str) -> anyhow::Result<[usize; 2]> {
    input
        .split_once('x')
        .and_then(|(w, h)| Some([w.parse().ok()?, h.parse().ok()?]))
        .filter(|s: &[usize; 2]| s[0] > 0 && s.iter().all(|v| v % 32 == 0))
        .with_context(|| {
            format!("--input must be WIDTHxHEIGHT in multiples of 32, found {input:?}")
        })
}

/// The detector planned for the size of the frames it is given (as the
/// detection stage does), loaded at the first frame and again if it changes.
struct Planned<'a> {
    models: &'a Path,
    size: [usize; 2],
    backend: analytics::inference::Backend,
    detector: Option<analytics::detector::Detector>,
}

impl<'a> Planned<'a> {
    /// Checks the model at once (tract).
    fn new(models: &'a Path, size: [usize; 2]) -> anyhow::Result<Self> {
        Self::on(models, size, analytics::inference::Backend::Tract)
    }

    /// Checks the model at once, on `backend`.
    fn on(
        models: &'a Path,
        size: [usize; 2],
        backend: analytics::inference::Backend,
    ) -> anyhow::Result<Self> {
        let square = analytics::input_size_for(size, 0, 0);
        Ok(Self {
            models,
            size,
            detector: Some(load_detector_sized(models, square, &backend)?),
            backend,
        })
    }

    fn detect(
        &mut self,
        img: &analytics::raster::Image,
        cfg: &analytics::DetectorConfig,
    ) -> anyhow::Result<Vec<analytics::detector::Detection>> {
        Ok(cfg.select(self.raw(img, cfg.lowest_score())?))
    }

    /// The model planned for images of `width` x `height` (again only when the
    /// size changes; the old plan goes before the new one is built).
    fn plan_for(&mut self, width: u32, height: u32) -> anyhow::Result<()> {
        let size = analytics::input_size_for(self.size, width, height);
        if self.detector.as_ref().is_none_or(|d| d.size() != size) {
            self.detector = None;
            self.detector = Some(load_detector_sized(self.models, size, &self.backend)?);
        }
        Ok(())
    }

    /// Every object scoring at least `min_score`, whatever its class.
    fn raw(
        &mut self,
        img: &analytics::raster::Image,
        min_score: f32,
    ) -> anyhow::Result<Vec<analytics::detector::Detection>> {
        self.plan_for(img.width, img.height)?;
        let Some(d) = &self.detector else {
            unreachable!("planned just above")
        };
        Ok(d.detect(img.view(), min_score)?)
    }
}

/// The detector at its native 416x416, on tract.
pub fn load_detector(models: &Path) -> anyhow::Result<analytics::detector::Detector> {
    let square = [analytics::detector::SIZE; 2];
    load_detector_sized(models, square, &analytics::inference::Backend::Tract)
}

fn is_jpeg(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg"))
}

pub fn detect(inputs: &[PathBuf], models: &Path, opts: &DetectOptions) -> anyhow::Result<()> {
    use analytics::detector::CLASSES;
    let DetectOptions {
        min_score,
        ref classes,
        fps,
        json,
        ..
    } = *opts;
    if let Some(bad) = classes.iter().find(|c| !CLASSES.contains(&c.as_str())) {
        anyhow::bail!(
            "--class {bad:?} is not a COCO class (person, car, bus, truck, motorcycle, bicycle, …)"
        );
    }
    anyhow::ensure!((0.0..=1.0).contains(&min_score), "--min-score must be 0-1");
    anyhow::ensure!((1..=60).contains(&fps), "--fps must be 1-60");
    let backend = backend_arg(&opts.backend, opts.onnxruntime_library.as_deref(), models)?;
    let mut detector = Planned::on(models, input_size_arg(&opts.input)?, backend)?;
    let mut show = |what: &str, img: &analytics::raster::Image| {
        // Planning the model for a new size is not timed.
        if let Err(e) = detector.plan_for(img.width, img.height) {
            println!("{what}: error: {e:#}");
            return;
        }
        let started = std::time::Instant::now();
        let found = detector.raw(img, min_score).map(|mut found| {
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
            let img = analytics::raster::Image {
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

/// `edgecam detect`'s options besides its inputs and models.
#[derive(clap::Args)]
pub struct DetectOptions {
    /// Lowest score reported.
    #[arg(long, default_value_t = 0.4)]
    pub min_score: f32,
    /// Only these classes (repeatable; e.g. person, car); all by default.
    #[arg(long = "class")]
    pub classes: Vec<String>,
    /// Frames per second taken from a video.
    #[arg(long, default_value_t = 5)]
    pub fps: u32,
    /// Print one JSON line per image or frame instead of text.
    #[arg(long)]
    pub json: bool,
    /// tract (built in) or onnxruntime (builds with the `ort` feature).
    #[arg(long, default_value = "tract")]
    pub backend: String,
    /// ONNX Runtime's shared library; default: libonnxruntime.so in --models.
    #[arg(long)]
    pub onnxruntime_library: Option<PathBuf>,
    /// The model's input, WIDTHxHEIGHT in multiples of 32; a height of 0
    /// follows each image's aspect ratio, as the daemon does by default.
    #[arg(long, default_value = "416x416")]
    pub input: String,
}

/// A video's width as `seqinfo.ini` beside it says, else 640.
fn video_width(path: &Path) -> anyhow::Result<u32> {
    Ok(path
        .parent()
        .and_then(|clip| seqinfo(clip, "imWidth="))
        .unwrap_or(640))
}

/// Ground-truth boxes of a MOT `gt.txt`: frame (from 1) → left, top, right, bottom.
fn read_gt(path: &Path) -> anyhow::Result<BTreeMap<u64, Vec<[f32; 4]>>> {
    Ok(read_gt_tracks(path)?
        .into_iter()
        .map(|(frame, boxes)| (frame, boxes.into_iter().map(|b| b.1).collect()))
        .collect())
}

pub fn eval_detector(data: &Path, models: &Path, min_scores: &[f32]) -> anyhow::Result<()> {
    use analytics::detector::iou;
    let detector = load_detector(models)?;
    let clips = clips_of(data)?;
    let lowest = min_scores.iter().copied().fold(1.0f32, f32::min);
    // Per threshold: true positives, false positives, false negatives.
    let mut totals = vec![[0u64; 3]; min_scores.len()];
    let mut ms = 0.0;
    let mut frames_seen = 0u64;
    for (clip, video) in &clips {
        let gt = read_gt(&clip.join("gt.txt"))?;
        let rate = seqinfo(clip, "frameRate=").unwrap_or(25);
        let mut clip_totals = vec![[0u64; 3]; min_scores.len()];
        let mut frame_no = 0u64;
        let mut failure = None;
        video::decode::file_frames(video, video_width(video)?, rate, |frame, _| {
            frame_no += 1;
            let img = analytics::raster::Image {
                width: frame.width,
                height: frame.height,
                rgb: frame.rgb,
            };
            let started = std::time::Instant::now();
            let found = match detector.detect(img.view(), lowest) {
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

/// `[people]` and `[detector]` of a configuration file, or their defaults.
fn counting_sections(
    config: Option<&Path>,
) -> anyhow::Result<(analytics::PeopleConfig, analytics::DetectorConfig)> {
    Ok(match config {
        Some(path) => {
            let c = crate::settings::Config::load(path)?;
            (c.people, c.detector)
        }
        None => Default::default(),
    })
}

/// `x1,y1,x2,y2` as fractions of the frame.
fn parse_line(line: &str, flag: &str) -> anyhow::Result<[f32; 4]> {
    let v: Vec<f32> = line
        .split(',')
        .map(|x| x.trim().parse::<f32>())
        .collect::<Result<_, _>>()
        .ok()
        .filter(|v: &Vec<f32>| v.len() == 4 && v.iter().all(|x| (0.0..=1.0).contains(x)))
        .with_context(|| format!("{flag} must be x1,y1,x2,y2 as fractions 0..1, found {line:?}"))?;
    Ok([v[0], v[1], v[2], v[3]])
}

/// The clip folders of a data set (or the one clip given), and each one's video.
fn clips_of(data: &Path) -> anyhow::Result<Vec<(PathBuf, PathBuf)>> {
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
    clips
        .into_iter()
        .map(|clip| {
            let video = std::fs::read_dir(&clip)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| {
                    p.extension()
                        .is_some_and(|e| e == "mp4" || e == "avi" || e == "mkv")
                })
                .with_context(|| format!("no video in {}", clip.display()))?;
            Ok((clip, video))
        })
        .collect()
}

/// `seqinfo.ini`'s `key=` value in a clip folder.
fn seqinfo(clip: &Path, key: &str) -> Option<u32> {
    std::fs::read_to_string(clip.join("seqinfo.ini"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse().ok()))
}

/// Per frame (from 1): each true track's id and box (left, top, right, bottom).
type GtTracks = BTreeMap<u64, Vec<(u64, [f32; 4])>>;

/// Ground truth as tracks.
fn read_gt_tracks(path: &Path) -> anyhow::Result<GtTracks> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut gt = GtTracks::new();
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
            .or_default()
            .push((f[1] as u64, [f[2], f[3], f[2] + f[4], f[3] + f[5]]));
    }
    Ok(gt)
}

/// A crossing with its time, for matching.
#[derive(Debug, Clone)]
struct TimedCrossing {
    t: f64,
    line: String,
    direction: &'static str,
}

/// Matches predicted crossings to true ones one-to-one (same line and direction,
/// nearest in time within `tolerance`): true positives.
fn match_crossings(pred: &[TimedCrossing], truth: &[TimedCrossing], tolerance: f64) -> u64 {
    let mut pairs = Vec::new();
    for (i, p) in pred.iter().enumerate() {
        for (j, t) in truth.iter().enumerate() {
            let dt = (p.t - t.t).abs();
            if p.line == t.line && p.direction == t.direction && dt <= tolerance {
                pairs.push((dt, i, j));
            }
        }
    }
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut pu, mut tu) = (vec![false; pred.len()], vec![false; truth.len()]);
    let mut tp = 0;
    for (_, i, j) in pairs {
        if !pu[i] && !tu[j] {
            pu[i] = true;
            tu[j] = true;
            tp += 1;
        }
    }
    tp
}

/// Scores of one clip or of all.
#[derive(Debug, Default, Clone)]
struct PeopleScore {
    /// Tracked boxes: true and false positives, misses (IoU 0.5).
    track: [u64; 3],
    /// Raw detections at the start score.
    det: [u64; 3],
    id_switches: u64,
    /// Ground-truth tracks seen, and predicted ids that covered them.
    gt_tracks: u64,
    fragments: u64,
    /// Crossings: matched, predicted, true.
    crossings: [u64; 3],
    /// The same by moving blobs (the counter without a detector), for comparison.
    blob_crossings: [u64; 3],
    /// Per line and direction: predicted and true counts.
    counts: BTreeMap<(String, &'static str), (u64, u64)>,
    frames: u64,
    ms: f64,
    /// Frames the still-scene gate kept from the detector.
    still: u64,
}

impl PeopleScore {
    fn add(&mut self, o: &PeopleScore) {
        for i in 0..3 {
            self.track[i] += o.track[i];
            self.det[i] += o.det[i];
            self.crossings[i] += o.crossings[i];
            self.blob_crossings[i] += o.blob_crossings[i];
        }
        self.id_switches += o.id_switches;
        self.gt_tracks += o.gt_tracks;
        self.fragments += o.fragments;
        for (k, v) in &o.counts {
            let e = self.counts.entry(k.clone()).or_default();
            e.0 += v.0;
            e.1 += v.1;
        }
        self.frames += o.frames;
        self.ms += o.ms;
        self.still += o.still;
    }

    fn print(&self, name: &str) {
        let pr = |[tp, fp, fal]: [u64; 3]| {
            (
                tp as f64 / (tp + fp).max(1) as f64,
                tp as f64 / (tp + fal).max(1) as f64,
            )
        };
        let (tp_, tr_) = pr(self.track);
        let (dp, dr) = pr(self.det);
        let f1 = |[m, np, nt]: [u64; 3]| {
            let (cp, cr) = (m as f64 / np.max(1) as f64, m as f64 / nt.max(1) as f64);
            if m == 0 {
                0.0
            } else {
                2.0 * cp * cr / (cp + cr)
            }
        };
        let [m, np, nt] = self.crossings;
        let [bm, bp, _] = self.blob_crossings;
        let (f1, bf1) = (f1(self.crossings), f1(self.blob_crossings));
        println!(
            "{name:<16} tracks P {tp_:.3} R {tr_:.3} | detections P {dp:.3} R {dr:.3} | \
             id switches {} over {} true tracks, {} extra ids | crossings F1 {f1:.3} \
             (matched {m}, predicted {np}, true {nt}; moving blobs: F1 {bf1:.3}, matched {bm}, \
             predicted {bp}) | {} frames, {:.1} ms/frame, {} left out (still scene)",
            self.id_switches,
            self.gt_tracks,
            self.fragments,
            self.frames,
            self.ms / self.frames.max(1) as f64,
            self.still
        );
        for ((line, dir), (p, t)) in &self.counts {
            println!("{name:<16}   {line} {dir:<3}: counted {p}, true {t}");
        }
    }
}

/// Greedy one-to-one matching of boxes at IoU 0.5: pairs (predicted, true).
fn match_boxes(pred: &[[f32; 4]], truth: &[[f32; 4]]) -> Vec<(usize, usize)> {
    let mut pairs = Vec::new();
    for (i, p) in pred.iter().enumerate() {
        for (j, t) in truth.iter().enumerate() {
            let v = analytics::detector::iou(p, t);
            if v >= 0.5 {
                pairs.push((v, i, j));
            }
        }
    }
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut pu, mut tu) = (vec![false; pred.len()], vec![false; truth.len()]);
    let mut out = Vec::new();
    for (_, i, j) in pairs {
        if !pu[i] && !tu[j] {
            pu[i] = true;
            tu[j] = true;
            out.push((i, j));
        }
    }
    out
}

pub fn eval_people(
    data: &Path,
    models: &Path,
    fps: u32,
    lines: &[String],
    tolerance: f64,
    config: Option<&Path>,
    input: Option<&str>,
) -> anyhow::Result<()> {
    use analytics::people::Lines;
    anyhow::ensure!((1..=60).contains(&fps), "--fps must be 1-60");
    let (people, mut det_cfg) = counting_sections(config)?;
    let lines: Vec<analytics::LineConfig> = if lines.is_empty() {
        [0.25, 0.5, 0.75]
            .iter()
            .map(|x| analytics::LineConfig {
                name: format!("x{x}"),
                a: [*x, 0.0],
                b: [*x, 1.0],
                in_direction: None,
            })
            .collect()
    } else {
        lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let v = parse_line(l, "--line")?;
                Ok(analytics::LineConfig {
                    name: format!("line{}", i + 1),
                    a: [v[0], v[1]],
                    b: [v[2], v[3]],
                    in_direction: None,
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    if let Some(input) = input {
        det_cfg.input_size = input_size_arg(input)?;
    }
    let mut detector = Planned::new(models, det_cfg.input_size)?;
    let mut total = PeopleScore::default();
    for (clip, video) in clips_of(data)? {
        let gt = read_gt_tracks(&clip.join("gt.txt"))?;
        let rate = seqinfo(&clip, "frameRate=").unwrap_or(25) as f64;
        let width = seqinfo(&clip, "imWidth=").unwrap_or(640);
        let height = seqinfo(&clip, "imHeight=").unwrap_or(480);
        let mut score = PeopleScore::default();
        // True crossings: the same line logic on the true tracks' foot points,
        // at every annotated frame.
        let mut truth_lines =
            Lines::new(&lines, &[], width as f32, height as f32, people.hysteresis);
        let mut truth = Vec::new();
        for (frame, boxes) in &gt {
            let seen: Vec<(u64, f32, f32)> = boxes
                .iter()
                .map(|(id, b)| (*id, (b[0] + b[2]) / 2.0, b[3]))
                .collect();
            for c in truth_lines.cross(&seen) {
                truth.push(TimedCrossing {
                    t: (*frame - 1) as f64 / rate,
                    line: c.line,
                    direction: c.direction,
                });
            }
        }
        let mut counter = analytics::TrackCounter::new(
            analytics::people::persons,
            det_cfg.tracking(),
            people.hysteresis,
            lines.clone(),
            vec![],
        );
        let mut pred = Vec::new();
        let mut gate = analytics::motion::DetectGate::new(
            det_cfg.motion,
            det_cfg.still_every.as_millis() as i64,
        );
        let mut blobs = analytics::Counter::new(people.params(), lines.clone(), vec![]);
        let mut blob_pred = Vec::new();
        // Per true track: the predicted id it was last matched to.
        let mut last_id: BTreeMap<u64, u64> = BTreeMap::new();
        let mut ids_per_track: BTreeMap<u64, std::collections::BTreeSet<u64>> = BTreeMap::new();
        let mut failure = None;
        video::decode::file_frames(&video, width, fps, |frame, at| {
            let t = at.as_secs_f64();
            let gt_frame = (t * rate).round() as u64 + 1;
            let (w, h) = (frame.width, frame.height);
            for c in blobs.process(&frame.rgb, w, h) {
                blob_pred.push(TimedCrossing {
                    t,
                    line: c.line,
                    direction: c.direction,
                });
            }
            // As the daemon: a still scene with nothing in view skips the model,
            // and the counter sees nothing of that frame.
            let at_ms = at.as_millis() as i64;
            let (wanted, thumb) = gate.look(&frame, at_ms);
            let objects = if wanted {
                let img = analytics::raster::Image {
                    width: w,
                    height: h,
                    rgb: frame.rgb,
                };
                let started = std::time::Instant::now();
                let objects = match detector.detect(&img, &det_cfg) {
                    Ok(o) => o,
                    Err(e) => {
                        failure.get_or_insert(e);
                        return;
                    }
                };
                score.ms += started.elapsed().as_secs_f64() * 1000.0;
                score.frames += 1;
                gate.ran(
                    thumb,
                    at_ms,
                    objects.iter().any(|o| det_cfg.starts_track(o)),
                );
                for c in counter.process(t, w, h, &objects) {
                    pred.push(TimedCrossing {
                        t,
                        line: c.line,
                        direction: c.direction,
                    });
                }
                Some(objects)
            } else {
                score.still += 1;
                None
            };
            let truth_here = gt.get(&gt_frame).cloned().unwrap_or_default();
            let truth_boxes: Vec<[f32; 4]> = truth_here.iter().map(|t| t.1).collect();
            let tracks: Vec<(u64, [f32; 4])> = counter.tracks().map(|t| (t.id, t.bbox)).collect();
            let boxes: Vec<[f32; 4]> = tracks.iter().map(|t| t.1).collect();
            let matched = match_boxes(&boxes, &truth_boxes);
            let tp = matched.len() as u64;
            score.track[0] += tp;
            score.track[1] += boxes.len() as u64 - tp;
            score.track[2] += truth_boxes.len() as u64 - tp;
            for (i, j) in matched {
                let (gid, pid) = (truth_here[j].0, tracks[i].0);
                if let Some(prev) = last_id.insert(gid, pid) {
                    if prev != pid {
                        score.id_switches += 1;
                    }
                }
                ids_per_track.entry(gid).or_default().insert(pid);
            }
            // Raw detections are scored on the frames the model saw.
            if let Some(objects) = objects {
                let persons: Vec<[f32; 4]> = objects
                    .iter()
                    .filter(|d| d.class == "person" && d.score >= det_cfg.start_score)
                    .map(|d| d.bbox)
                    .collect();
                let tp = match_boxes(&persons, &truth_boxes).len() as u64;
                score.det[0] += tp;
                score.det[1] += persons.len() as u64 - tp;
                score.det[2] += truth_boxes.len() as u64 - tp;
            }
        })
        .map_err(|e| anyhow::anyhow!("{}: {e}", video.display()))?;
        if let Some(e) = failure {
            return Err(e);
        }
        score.gt_tracks = ids_per_track.len() as u64;
        score.fragments = ids_per_track.values().map(|ids| ids.len() as u64 - 1).sum();
        score.crossings = [
            match_crossings(&pred, &truth, tolerance),
            pred.len() as u64,
            truth.len() as u64,
        ];
        score.blob_crossings = [
            match_crossings(&blob_pred, &truth, tolerance),
            blob_pred.len() as u64,
            truth.len() as u64,
        ];
        for l in &lines {
            for dir in ["in", "out"] {
                let n = |v: &[TimedCrossing]| {
                    v.iter()
                        .filter(|c| c.line == l.name && c.direction == dir)
                        .count() as u64
                };
                score
                    .counts
                    .insert((l.name.clone(), dir), (n(&pred), n(&truth)));
            }
        }
        let name = clip.file_name().unwrap_or_default().to_string_lossy();
        score.print(&name);
        total.add(&score);
    }
    total.print("all");
    let [iw, ih] = det_cfg.input_size;
    let ih = if ih == 0 {
        "frame aspect".to_owned()
    } else {
        ih.to_string()
    };
    println!(
        "(input {iw}x{ih}; at {fps} analysed frames/s; tracks and detections scored at IoU 0.5 on the analysed frames; \
         detections at start_score {}; crossings within {tolerance} s)",
        det_cfg.start_score
    );
    Ok(())
}

/// `edgecam plate-layouts [REGION]`: the layout table.
pub fn plate_layouts(only: Option<&str>) -> anyhow::Result<()> {
    let only = only
        .map(|r| {
            analytics::plates::Region::parse(r)
                .filter(|r| *r != analytics::plates::Region::Any)
                .with_context(|| format!("REGION must be br, eu or us, found {r:?}"))
        })
        .transpose()?;
    for c in analytics::plates::rules::countries() {
        if only.is_some_and(|r| r != c.region) {
            continue;
        }
        let region = serde_json::to_value(c.region)?;
        println!(
            "{:<3} {:<6} {:<40} {}",
            region.as_str().unwrap_or("?"),
            c.code,
            c.layouts.join(" "),
            c.name
        );
    }
    Ok(())
}

/// `edgecam status`: what the running daemon last wrote to its status file.
pub fn status(config: &Config, json: bool) -> anyhow::Result<()> {
    let path = crate::health::status_path(config);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no status at {}: the daemon writes it every health.metrics_interval once it runs (is it running, with this configuration's state_dir?)",
            path.display()
        )
    })?;
    let s: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a status file", path.display()))?;
    if json {
        println!("{s}");
        return Ok(());
    }
    let now = crate::events::now_ms();
    let age_s = s["ts"].as_i64().map(|ts| (now - ts).max(0) / 1000);
    let interval = config.health.metrics_interval.as_secs() as i64;
    let fresh = age_s.is_some_and(|a| a <= 3 * interval.max(1));
    println!(
        "camera {}  version {}  up {} s",
        s["camera_id"].as_str().unwrap_or("?"),
        s["version"].as_str().unwrap_or("?"),
        s["uptime_s"]
    );
    println!(
        "written {} s ago{}",
        age_s.map_or("?".to_owned(), |a| a.to_string()),
        if fresh {
            ""
        } else {
            " — older than three metrics intervals: the daemon is not running, or stuck"
        }
    );
    let o = &s["outbox"];
    println!(
        "outbox   depth {}  oldest {} s  evicted {}  expired {}  refused {}  last seq {} (acked {})",
        o["depth"], o["oldest_age_s"], o["evicted"], o["expired"], o["refused"], o["last_seq"], o["last_acked_seq"]
    );
    let m = &s["mqtt"];
    println!(
        "mqtt     connects {}  errors {}  dead links {}  batches {}  republished {}",
        m["connects"],
        m["connection_errors"],
        m["dead_links"],
        m["batches_published"],
        m["batches_republished"]
    );
    println!(
        "process  rss {} MiB  cpu {} s",
        s["rss_bytes"].as_u64().unwrap_or(0) >> 20,
        s["cpu_s"]
    );
    println!("stages");
    for (name, st) in s["stages"].as_object().into_iter().flatten() {
        let busy = st["busy_s"]
            .as_u64()
            .map(|b| format!("busy for {b} s  "))
            .unwrap_or_default();
        println!(
            "  {name:<18} {:<10} restarts {:<4} {busy}{}",
            st["state"].as_str().unwrap_or("?"),
            st["restarts"],
            st["last_error"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_label_is_published_when_it_is_the_first_read_at_or_above_the_threshold() {
        let reads = |r: &[(&str, f32)]| -> Vec<(String, f32)> {
            r.iter().map(|(t, c)| (t.to_string(), *c)).collect()
        };
        // A sign read surer than the plate: published first, and counted as other.
        let sign_first = reads(&[("14MILE", 0.99), ("WA56660", 0.9)]);
        assert_eq!(published_at(&sign_first, "WA56660", 0.5), (false, true));
        assert_eq!(published_at(&sign_first, "14MILE", 0.5), (true, true));
        // The plate below the threshold: nothing of it published.
        let unsure = reads(&[("RK896AO", 0.49), ("REPUBLIA", 0.04)]);
        assert_eq!(published_at(&unsure, "RK896AO", 0.5), (false, false));
        assert_eq!(published_at(&unsure, "RK896AO", 0.4), (true, false));
        assert_eq!(published_at(&unsure, "RK896AO", 0.01), (true, true));
        assert_eq!(published_at(&[], "RK896AO", 0.5), (false, false));
    }
}
