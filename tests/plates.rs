//! Plate reading with the real models (fetched by tests/run.sh with
//! deploy/fetch-models.sh from the rapidocr-onnxruntime package on PyPI, checked by
//! sha256, into target/models) on images drawn here with GStreamer's text overlay.

mod common;

use std::path::{Path, PathBuf};

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
