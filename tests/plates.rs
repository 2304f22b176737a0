//! Plate reading with the real models (fetched by tests/run.sh with
//! deploy/fetch-models.sh from the rapidocr-onnxruntime package on PyPI, checked by
//! sha256, into target/models) on images drawn here with GStreamer's text overlay.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// The models tests/run.sh fetched (`EDGECAM_TEST_MODELS`, or target/models).
fn models() -> PathBuf {
    let dir = std::env::var_os("EDGECAM_TEST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/models"));
    assert!(
        dir.join("ch_PP-OCRv4_rec_infer.onnx").exists(),
        "no OCR models in {}: run `bash deploy/fetch-models.sh {}` (tests/run.sh does)",
        dir.display(),
        dir.display()
    );
    dir
}

/// A JPEG with `plate` in large dark letters, and a small timestamp in a corner
/// like a camera's overlay.
fn draw(path: &Path, plate: &str) {
    let status = std::process::Command::new(tool("gst-launch-1.0"))
        .args([
            "-q",
            "videotestsrc",
            "pattern=white",
            "num-buffers=1",
            "!",
            "video/x-raw,width=800,height=450",
            "!",
            "textoverlay",
            &format!("text={plate}"),
            "font-desc=Sans Bold 60",
            "valignment=center",
            "halignment=center",
            "color=0xff101010",
            "shaded-background=false",
            "!",
            "textoverlay",
            "text=2014-05-01 10:00:00",
            "font-desc=Sans 14",
            "valignment=top",
            "halignment=left",
            "color=0xff101010",
            "shaded-background=false",
            "!",
            "videoconvert",
            "!",
            "jpegenc",
            "!",
            "filesink",
        ])
        .arg(format!("location={}", path.display()))
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn read_plates_reads_a_drawn_plate_and_not_the_timestamp() {
    let models = models();
    let dir = test_dir("plates");
    let a = dir.path().join("a.jpg");
    let b = dir.path().join("b.jpg");
    let bad = dir.path().join("bad.jpg");
    draw(&a, "ABC1234");
    draw(&b, "BRA2E19");
    std::fs::write(&bad, b"not a jpeg").unwrap();
    let out = edgecam()
        .args(["read-plates", "--json", "--region", "br", "--models"])
        .arg(&models)
        .args([&a, &b, &bad])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for (line, plate) in lines.iter().zip(["ABC1234", "BRA2E19"]) {
        let plates = line["plates"].as_array().unwrap();
        assert_eq!(plates.len(), 1, "{line}");
        assert_eq!(plates[0]["text"], plate, "{line}");
        assert!(plates[0]["confidence"].as_f64().unwrap() > 0.5, "{line}");
        let bbox: Vec<u64> = plates[0]["box"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert!(bbox[0] > 50 && bbox[2] > 200 && bbox[1] > 100, "{line}");
        assert!(line["ms"].as_f64().unwrap() > 0.0);
    }
    assert!(
        lines[2]["error"]
            .as_str()
            .unwrap()
            .contains("not a readable JPEG"),
        "{}",
        lines[2]
    );
}

const W: usize = 1280;
const H: usize = 720;
const FPS: usize = 10;
/// One pass of the scene, seconds; the daemon's file source loops it.
const PASS_S: usize = 16;
const PLATE_W: usize = 300;
const PLATE_H: usize = 80;

/// `text` in dark bold letters on a white plate with a dark rim, as packed RGB.
fn plate_still(dir: &Path, text: &str) -> Vec<u8> {
    let raw = dir.join(format!("{text}.rgb"));
    let status = std::process::Command::new(tool("gst-launch-1.0"))
        .args([
            "-q",
            "videotestsrc",
            "pattern=white",
            "num-buffers=1",
            "!",
            &format!("video/x-raw,width={PLATE_W},height={PLATE_H}"),
            "!",
            "textoverlay",
            &format!("text={text}"),
            "font-desc=Sans Bold 36",
            "valignment=center",
            "halignment=center",
            "color=0xff101010",
            "shaded-background=false",
            "!",
            "videoconvert",
            "!",
            "video/x-raw,format=RGB",
            "!",
            "filesink",
        ])
        .arg(format!("location={}", raw.display()))
        .status()
        .unwrap();
    assert!(status.success());
    let mut rgb = std::fs::read(&raw).unwrap();
    assert_eq!(rgb.len(), PLATE_W * PLATE_H * 3);
    for y in 0..PLATE_H {
        for x in 0..PLATE_W {
            if x < 4 || y < 4 || x >= PLATE_W - 4 || y >= PLATE_H - 4 {
                let i = (y * PLATE_W + x) * 3;
                rgb[i..i + 3].copy_from_slice(&[30, 30, 30]);
            }
        }
    }
    rgb
}

/// Where a vehicle is at time `t` (seconds): the left edge of its body, pixels.
/// The first drives left to right from 1 s to 6 s, the second right to left from
/// 8 s to 13 s; the road is empty otherwise.
fn vehicles_at(t: f64) -> Vec<(usize, f64)> {
    let span = (W - 460) as f64;
    let mut out = Vec::new();
    if (1.0..6.0).contains(&t) {
        out.push((0, 20.0 + span * (t - 1.0) / 5.0));
    }
    if (8.0..13.0).contains(&t) {
        out.push((1, 20.0 + span * (13.0 - t) / 5.0));
    }
    out
}

/// A road, and the vehicles: a body with its plate.
fn road_frame(t: f64, plates: &[Vec<u8>]) -> Vec<u8> {
    let mut rgb = vec![0u8; W * H * 3];
    for y in 0..H {
        let v = (70 + y * 50 / H) as u8;
        for x in 0..W {
            let i = (y * W + x) * 3;
            rgb[i..i + 3].copy_from_slice(&[v, v, v + 5]);
        }
    }
    for (n, left) in vehicles_at(t) {
        let (bx, by, bw, bh) = (left as usize, 260, 420, 280);
        for y in by..by + bh {
            let row = (y * W + bx) * 3;
            for px in rgb[row..row + bw * 3].chunks_mut(3) {
                px.copy_from_slice(if n == 0 {
                    &[40, 60, 140]
                } else {
                    &[150, 40, 40]
                });
            }
        }
        let (px, py) = (bx + (bw - PLATE_W) / 2, by + bh - PLATE_H - 30);
        for y in 0..PLATE_H {
            let src = &plates[n][y * PLATE_W * 3..(y + 1) * PLATE_W * 3];
            let at = ((py + y) * W + px) * 3;
            rgb[at..at + PLATE_W * 3].copy_from_slice(src);
        }
    }
    rgb
}

fn plate_events(rig: &Rig) -> Vec<Value> {
    rig.observer
        .batches()
        .iter()
        .filter(|m| m.topic.ends_with("/events/plate"))
        .flat_map(|m| {
            serde_json::from_slice::<Value>(&m.payload).unwrap()["events"]
                .as_array()
                .unwrap()
                .clone()
        })
        .collect()
}

fn at(v: &Value) -> std::time::SystemTime {
    humantime::parse_rfc3339(v.as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_reports_each_passing_vehicle_once_with_its_plate_and_snapshot() {
    let models = models();
    let src = test_dir("plates-daemon-src");
    let plates = [
        plate_still(src.path(), "ABC1234"),
        plate_still(src.path(), "BRA2E19"),
    ];
    let video = src.path().join("road.mp4");
    encode_video(&video, (W, H, FPS), PASS_S * FPS, |i| {
        road_frame(i as f64 / FPS as f64, &plates)
    });
    let rig = Rig::new(
        "plates",
        &format!(
            "[health]\nmetrics_interval = \"1s\"\n\
             [video]\nenabled = true\nsource = \"file://{}\"\nwidth = {W}\nheight = {H}\nframerate = {FPS}\n\
             analytics_width = {W}\nanalytics_height = {H}\nanalytics_fps = 5\n\
             [upload]\nmedia_dir = \"MEDIA\"\n\
             [plates]\nenabled = true\nmodels_dir = \"{}\"\nregion = \"br\"\nthreads = 2\n\
             track_timeout = \"1500ms\"\n",
            video.display(),
            models.display(),
        ),
    )
    .await;
    let media = rig.path().join("media");
    let text = std::fs::read_to_string(&rig.config).unwrap();
    std::fs::write(
        &rig.config,
        text.replace("MEDIA", &media.display().to_string()),
    )
    .unwrap();
    rig.recordings();
    let daemon = rig.daemon(0);
    // Two vehicles in the first pass, and the first again in the second: a third
    // event that is not the first vehicle's return would be a duplicate.
    wait_until("three plate events", Duration::from_secs(150), || {
        plate_events(&rig).len() >= 3
    })
    .await;
    let events = plate_events(&rig);
    let p: Vec<&Value> = events.iter().map(|e| &e["payload"]).collect();
    let log = daemon.log_text();
    assert_eq!(p[0]["plate"], "ABC1234", "{events:?}\n{log}");
    assert_eq!(p[1]["plate"], "BRA2E19", "{events:?}");
    assert_eq!(p[2]["plate"], "ABC1234", "{events:?}");
    assert_eq!(p[0]["direction"], "right", "{}", p[0]);
    assert_eq!(p[1]["direction"], "left", "{}", p[1]);
    let since_first = at(&p[2]["first_seen"])
        .duration_since(at(&p[0]["first_seen"]))
        .unwrap()
        .as_secs_f64();
    assert!(
        (since_first - PASS_S as f64).abs() < 3.0,
        "the first vehicle came back {since_first:.1} s later, expected one pass ({PASS_S} s)"
    );
    let payload = schema("plate.json");
    for (e, p) in events.iter().zip(&p) {
        assert!(payload.is_valid(p), "{p}");
        assert!(p["reads"].as_u64().unwrap() >= 2, "{p}");
        assert!(p["confidence"].as_f64().unwrap() > 0.5, "{p}");
        assert_eq!(p["hashed"], false);
        assert_eq!(p["frame"], serde_json::json!([W, H]));
        // The plate's box is where the vehicle's plate is drawn (y 450 to 530).
        let y = p["box"][1].as_u64().unwrap();
        assert!((420..=480).contains(&y), "{p}");
        // The snapshot is a JPEG named by the event.
        let rel = p["snapshot"].as_str().unwrap();
        assert_eq!(
            rel,
            format!("snapshots/{}.jpg", e["event_id"].as_str().unwrap())
        );
        let jpeg = std::fs::read(media.join(rel)).unwrap();
        assert_eq!(&jpeg[..2], &[0xff, 0xd8], "{rel} is not a JPEG");
    }
    assert!(log.contains("vehicle passed"), "{log}");
    let metrics = rig.observer.metrics();
    let last = &metrics.last().unwrap()["plates"];
    assert!(last["frames_read"].as_u64().unwrap() > 0, "{last}");
    assert!(
        last["frames_still"].as_u64().unwrap() > 0,
        "the empty road is not read: {last}"
    );
    assert_schemas(&rig.observer);
}
