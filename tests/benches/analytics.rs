//! Benchmark of the analytics in the daemon at 1280x720 and 5 analysed frames/s,
//! people counting and plate reading both on, all in the same run:
//!
//! - the video pipeline alone (the baseline for CPU and memory);
//! - without the detector: moving blobs and plates read in whole frames behind
//!   the motion gate (how the daemon ran before the detector);
//! - with the detector: tracked persons and plates read inside tracked vehicles,
//!   one reader thread, vehicle crops at the default 960x544 and at 640x384;
//! - with the detector on a scene with no vehicle (the test source): what a frame
//!   without a vehicle costs; and the same from an RTSP source that serves a
//!   pre-encoded empty road as it is (a camera's case: nothing encoded beside
//!   the detector), every frame detected (`detector.motion = 0`), then as the
//!   daemon runs by default: the still road leaves the detector most frames
//!   (`still/s`, frames left out a second; `analysed/s` counts those detected).
//!
//! The scene with a vehicle is a real car photograph from the plate development
//! set (`EDGECAM_TEST_PLATES`, else `../shared/data/plates-dev`) sliding across a
//! grey road for 4 s of every 9 s; without that set those rows are skipped. Per
//! run: analysed frames/s (frames through the detector, or taken by people
//! counting without it), the detector's mean time per frame, plate frames read
//! per second and their mean time, daemon CPU, peak RSS, and at the end of the run
//! its anonymous and file-backed parts.
//!
//! With `--features ort`, the detector runs again with the detector and the plate
//! reader on ONNX Runtime (`libonnxruntime.so` in the models directory,
//! `deploy/fetch-onnxruntime.sh`).
//!
//! `cargo bench --bench analytics`; `EDGECAM_BENCH_ANALYTICS_SECS` seconds per run
//! (default 40); `EDGECAM_BENCH_ANALYTICS_RUNS` keeps only the runs whose name holds
//! one of its comma-separated words (the baseline always runs). Models from
//! `EDGECAM_TEST_MODELS` or target/models.

#[path = "../common/mod.rs"]
mod common;

use std::path::Path;
use std::time::Duration;

use common::scene::{plates_dev, real_car_video};
use common::*;
use serde_json::Value;

struct Figures {
    analysed_fps: f64,
    detector_ms: f64,
    plate_fps: f64,
    plate_ms: f64,
    cpu: f64,
    rss_peak_kib: u64,
    /// At the end of the window: anonymous memory, and file pages mapped (the
    /// binary and libraries, as much as this kernel maps of them).
    rss_anon_kib: u64,
    rss_file_kib: u64,
    plates: u64,
    frames_dropped: u64,
    /// Frames a second the detector left out: a still scene with nothing in view.
    still_fps: f64,
}

/// What one run switches on.
struct Run {
    name: &'static str,
    /// `test`, or `file://…`.
    source: String,
    analytics: bool,
    detector: bool,
    /// `plates.vehicle_detector_size`, when not the default.
    crops: Option<[usize; 2]>,
    /// `backend` of both the detector and the plate reader.
    backend: &'static str,
    /// `plates.zoom`.
    zoom: bool,
    /// `detector.motion`, when not the default (0: every frame detected).
    motion: Option<f32>,
}

async fn measure(models: &Path, i: usize, run: &Run, secs: u64) -> Figures {
    let (on, det, backend, zoom) = (run.analytics, run.detector, run.backend, run.zoom);
    let rig = Rig::new(
        &format!("bench-analytics-{i}"),
        &format!(
            "[health]\nmetrics_interval = \"2s\"\n\
             [video]\nenabled = true\nsource = \"{}\"\nwidth = 1280\nheight = 720\nframerate = 10\n\
             analytics_width = 1280\nanalytics_height = 720\nanalytics_fps = 5\n\
             [people]\nenabled = {on}\nlines = [{{ name = \"middle\", a = [0.5, 0.0], b = [0.5, 1.0] }}]\n\
             [plates]\nenabled = {on}\nmodels_dir = \"{}\"\nregion = \"eu\"\nthreads = 1\nsnapshots = false\n\
             backend = \"{backend}\"\nzoom = {zoom}\n{}\
             [detector]\nenabled = {det}\nmodel = \"{}\"\nbackend = \"{backend}\"\n{}",
            run.source,
            models.display(),
            run.crops
                .map(|[w, h]| format!("vehicle_detector_size = [{w}, {h}]\n"))
                .unwrap_or_default(),
            models.join("nanodet-m-416.onnx").display(),
            run.motion
                .map(|m| format!("motion = {m}\n"))
                .unwrap_or_default(),
        ),
    )
    .await;
    rig.recordings();
    let text = std::fs::read_to_string(&rig.config).unwrap();
    std::fs::write(&rig.config, text.replace("edgecam=debug,info", "info")).unwrap();
    let daemon = rig.daemon(0);
    let pid = daemon.proc.pid();
    let get = |m: &Value, a: &str, b: &str| m[a][b].as_u64().unwrap_or(0);
    wait_until("frames analysed", Duration::from_secs(120), || {
        rig.observer
            .metrics()
            .last()
            .is_some_and(|m| get(m, "video", "frames_delivered") > 10)
    })
    .await;
    let (m0, m1, cpu, span) = bench_window(&rig.observer, pid, secs).await;
    let d = |a: &str, b: &str| get(&m1, a, b) - get(&m0, a, b);
    let detected = d("detector", "frames");
    let analysed = if detected > 0 {
        detected
    } else {
        d("video", "frames_delivered") - d("video", "frames_dropped")
    };
    let read = d("plates", "frames_read");
    let figures = Figures {
        analysed_fps: analysed as f64 / span,
        detector_ms: d("detector", "us_total") as f64 / detected.max(1) as f64 / 1000.0,
        plate_fps: read as f64 / span,
        plate_ms: d("plates", "read_us_total") as f64 / read.max(1) as f64 / 1000.0,
        cpu,
        rss_peak_kib: status_kb(pid, "VmHWM:"),
        rss_anon_kib: status_kb(pid, "RssAnon:"),
        rss_file_kib: status_kb(pid, "RssFile:"),
        plates: get(&m1, "plates", "vehicles"),
        frames_dropped: d("detector", "frames_dropped") + d("plates", "frames_dropped"),
        still_fps: d("detector", "frames_still") as f64 / span,
    };
    drop(daemon);
    figures
}

fn main() {
    let (secs, models, rt) = bench_setup("EDGECAM_BENCH_ANALYTICS_SECS", 40);
    let src = test_dir("bench-analytics-src");
    let car = plates_dev().map(|dir| {
        let video = src.path().join("car.mp4");
        real_car_video(&dir.join("eu/eu11.jpg"), &video);
        format!("file://{}", video.display())
    });
    let run = |name, source: &str, analytics, detector| Run {
        name,
        source: source.to_owned(),
        analytics,
        detector,
        crops: None,
        backend: "tract",
        zoom: true,
        motion: None,
    };
    let mut runs = vec![run("video only (baseline)", "test", false, false)];
    if let Some(car) = &car {
        runs.push(run("car, no detector (before)", car, true, false));
        runs.push(run("car, detector", car, true, true));
        runs.push(Run {
            zoom: false,
            ..run("car, detector, no zoom", car, true, true)
        });
        runs.push(Run {
            crops: Some([640, 384]),
            ..run("car, detector, 640x384 crops", car, true, true)
        });
    }
    runs.push(run("no vehicle, detector", "test", true, true));
    // The same empty road as a camera sends it: its own H.264 over RTSP,
    // recorded as sent, so no encoder runs beside the detector (the `test`
    // source encodes 1280x720 in software). Two minutes of grey road, served
    // once at its own pace.
    let empty = src.path().join("empty.mp4");
    encode_video(&empty, (1280, 720, 10), 1200, |_| {
        vec![110u8; 1280 * 720 * 3]
    });
    let rtsp_port = free_port();
    let _rtsp = RtspServer::start_file(rtsp_port, &empty);
    let rtsp = format!("rtsp://127.0.0.1:{rtsp_port}/cam");
    // Every frame through the detector, for what a frame costs; then as the
    // daemon runs by default, the still road leaving the detector most frames.
    runs.push(Run {
        motion: Some(0.0),
        ..run(
            "no vehicle, detector, RTSP (nothing encoded)",
            &rtsp,
            true,
            true,
        )
    });
    runs.push(run("still road, detector gated, RTSP", &rtsp, true, true));
    if cfg!(feature = "ort") {
        if let Some(car) = &car {
            runs.push(Run {
                backend: "onnxruntime",
                ..run("car, detector, ONNX Runtime", car, true, true)
            });
        }
        runs.push(Run {
            backend: "onnxruntime",
            ..run("no vehicle, detector, ONNX Runtime", "test", true, true)
        });
    }
    if let Ok(only) = std::env::var("EDGECAM_BENCH_ANALYTICS_RUNS") {
        let words: Vec<&str> = only.split(',').map(str::trim).collect();
        runs.retain(|r| {
            r.name.starts_with("video only") || words.iter().any(|w| r.name.contains(w))
        });
    }
    rt.block_on(async move {
        let mut rows = Vec::new();
        for (i, r) in runs.iter().enumerate() {
            rows.push((r.name, measure(&models, i, r, secs).await));
        }
        println!("edgecam analytics benchmark: 1280x720 at 5 analysed frames/s, people counting and plate reading on, one reader thread, {secs} s each");
        if car.is_none() {
            println!("   (no plate development set: the rows with a car are skipped)");
        }
        println!("   run                                 analysed/s  still/s  detector ms  plate frames/s  plate ms  dropped  daemon CPU  peak RSS  end: anon / file  plates");
        for (name, f) in &rows {
            println!(
                "   {name:<35} {:>10.2}  {:>7.2}  {:>11.1}  {:>14.2}  {:>8.0}  {:>7}  {:>8.0} %  {:>4} MiB  {:>5} / {:>3} MiB  {:>6}",
                f.analysed_fps,
                f.still_fps,
                f.detector_ms,
                f.plate_fps,
                f.plate_ms,
                f.frames_dropped,
                f.cpu * 100.0,
                f.rss_peak_kib / 1024,
                f.rss_anon_kib / 1024,
                f.rss_file_kib / 1024,
                f.plates
            );
        }
    });
}
