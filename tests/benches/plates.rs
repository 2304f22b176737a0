//! Benchmark of plate reading in the daemon: frames read per second, mean time per
//! 1280x720 frame through the whole stage (crop, detection, recognition of every
//! text box up to five ways, rules; the tracker and snapshots are outside the timing),
//! daemon CPU and peak RSS — the video pipeline alone first (the baseline for CPU
//! and memory), then tract with one reader thread (the baseline for speed), two,
//! and one with a 960x544 detector input; ONNX Runtime with one and two when built
//! with `--features ort` (its library from deploy/fetch-onnxruntime.sh in the
//! models directory). All in the same run.
//!
//! `cargo bench --bench plates` draws a road scene (two vehicles with plates
//! driving across, empty road between), loops it as the daemon's file source at
//! 10 analytics frames/s with the motion gate off, so the readers are never idle,
//! and measures `EDGECAM_BENCH_PLATES_SECS` seconds (default 40) per setting. The
//! models come from `EDGECAM_TEST_MODELS` or target/models (tests/run.sh fetches
//! them).

#[path = "../common/mod.rs"]
mod common;

use std::path::Path;
use std::time::Duration;

use common::scene::{road_video, FPS, H, W};
use common::*;

struct Figures {
    fps: f64,
    ms: f64,
    cpu: f64,
    rss_peak_kib: u64,
    vehicles: u64,
}

/// One run: `plates` is the `[plates]` section's settings (`enabled = false` for
/// the video-only baseline).
async fn measure(video: &Path, models: &Path, name: &str, plates: &str, secs: u64) -> Figures {
    let rig = Rig::new(
        &format!("bench-plates-{name}"),
        &format!(
            "[health]\nmetrics_interval = \"2s\"\n\
             [video]\nenabled = true\nsource = \"file://{}\"\nwidth = {W}\nheight = {H}\nframerate = {FPS}\n\
             analytics_width = {W}\nanalytics_height = {H}\nanalytics_fps = 10\n\
             [plates]\nmodels_dir = \"{}\"\nregion = \"br\"\nmotion = 0.0\nsnapshots = false\n{plates}\n",
            video.display(),
            models.display()
        ),
    )
    .await;
    rig.recordings();
    let text = std::fs::read_to_string(&rig.config).unwrap();
    std::fs::write(&rig.config, text.replace("edgecam=debug,info", "info")).unwrap();
    let daemon = rig.daemon(0);
    let pid = daemon.proc.pid();
    let read = |m: &serde_json::Value, k: &str| m["plates"][k].as_u64().unwrap_or(0);
    let reading = !plates.contains("enabled = false");
    wait_until("frames read", Duration::from_secs(120), || {
        rig.observer.metrics().last().is_some_and(|m| {
            m["video"]["frames_delivered"].as_u64().unwrap_or(0) > 10
                && (!reading || read(m, "frames_read") > 2)
        })
    })
    .await;
    let (m0, m1, cpu, span) = bench_window(&rig.observer, pid, secs).await;
    let frames = read(&m1, "frames_read") - read(&m0, "frames_read");
    let us = read(&m1, "read_us_total") - read(&m0, "read_us_total");
    let figures = Figures {
        fps: frames as f64 / span,
        ms: us as f64 / frames.max(1) as f64 / 1000.0,
        cpu,
        rss_peak_kib: status_kb(pid, "VmHWM:"),
        vehicles: read(&m1, "vehicles"),
    };
    drop(daemon);
    figures
}

fn main() {
    let (secs, models, rt) = bench_setup("EDGECAM_BENCH_PLATES_SECS", 40);
    let src = test_dir("bench-plates-src");
    let video = src.path().join("road.mp4");
    road_video(&video, ["ABC1234", "BRA2E19"]);
    let mut runs = vec![
        ("video only (baseline)", "enabled = false".to_owned()),
        ("tract, 1 thread", "enabled = true\nthreads = 1".to_owned()),
        ("tract, 2 threads", "enabled = true\nthreads = 2".to_owned()),
        (
            "tract, 1 thread, 960x544",
            "enabled = true\nthreads = 1\ndetector_size = [960, 544]".to_owned(),
        ),
    ];
    if cfg!(feature = "ort") && models.join("libonnxruntime.so").exists() {
        for threads in [1, 2] {
            runs.push((
                if threads == 1 {
                    "onnxruntime, 1 thread"
                } else {
                    "onnxruntime, 2 threads"
                },
                format!("enabled = true\nthreads = {threads}\nbackend = \"onnxruntime\""),
            ));
        }
    }
    rt.block_on(async move {
        let mut rows = Vec::new();
        for (i, (name, plates)) in runs.iter().enumerate() {
            rows.push((*name, measure(&video, &models, &i.to_string(), plates, secs).await));
        }
        println!("edgecam plate-reading benchmark: {W}x{H} frames, {secs} s each, readers never idle (target: 5 frames/s)");
        println!("   run                          frames/s  ms/frame (mean, per reader)  daemon CPU  peak RSS   vehicles");
        let base = rows[1].1.fps.max(1e-9);
        for (name, f) in &rows {
            println!(
                "   {name:<27}  {:>8.2}  {:>27.0}  {:>8.0} %  {:>5} MiB  {:>8}   {:.2}x tract, 1 thread",
                f.fps,
                f.ms,
                f.cpu * 100.0,
                f.rss_peak_kib / 1024,
                f.vehicles,
                f.fps / base
            );
        }
    });
}
