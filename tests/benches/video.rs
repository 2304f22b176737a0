//! Benchmark of the video pipeline: CPU and RSS of the daemon while it records a
//! 1080p30 H.264 RTSP stream without re-encoding and delivers 720p analytics frames
//! at 5 fps.
//!
//! `cargo bench --bench video` starts a GStreamer RTSP server (the stream is encoded
//! in this process, so it competes with the daemon for the machine's cores), the
//! broker and the daemon, waits for the first segment, then measures for
//! `EDGECAM_BENCH_VIDEO_SECS` seconds (default 60).

#[path = "../common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;

fn main() {
    let secs: u64 = std::env::var("EDGECAM_BENCH_VIDEO_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let port = free_port();
        let server = RtspServer::start_with(port, 1920, 1080, 30);
        let rig = Rig::new(
            "bench-video",
            &format!(
                "[health]\nmetrics_interval = \"5s\"\n\
                 [video]\nenabled = true\nsource = \"rtsp://127.0.0.1:{port}/cam\"\n\
                 segment_duration = \"10s\"\nanalytics_fps = 5\nanalytics_width = 1280\nanalytics_height = 720\n"
            ),
        )
        .await;
        let recordings = rig.recordings();
        // Log at info only while measuring.
        let text = std::fs::read_to_string(&rig.config).unwrap();
        std::fs::write(&rig.config, text.replace("edgecam=debug,info", "info")).unwrap();
        let daemon = rig.daemon(0);
        let pid = daemon.proc.pid();
        wait_until("the first segment", Duration::from_secs(60), || {
            std::fs::read_dir(&recordings).map(|d| d.count() > 0).unwrap_or(false)
        })
        .await;
        let metrics_at = |m: &serde_json::Value, k: &str| m["video"][k].as_u64().unwrap_or(0);
        wait_until("a metrics message", Duration::from_secs(20), || !rig.observer.metrics().is_empty()).await;
        let m0 = rig.observer.metrics().last().unwrap().clone();
        let ticks0 = cpu_ticks(pid);
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let elapsed = t0.elapsed().as_secs_f64();
        let cpu = (cpu_ticks(pid) - ticks0) as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let m1 = rig.observer.metrics().last().unwrap().clone();
        let span = (m1["ts"].as_i64().unwrap() - m0["ts"].as_i64().unwrap()) as f64 / 1000.0;
        let rate = |k: &str| (metrics_at(&m1, k) - metrics_at(&m0, k)) as f64 / span;
        let recorded: u64 = std::fs::read_dir(&recordings)
            .unwrap()
            .flatten()
            .map(|e| e.metadata().map_or(0, |m| m.len()))
            .sum();
        println!("edgecam video benchmark: RTSP 1920x1080 30 fps H.264 in, 1280x720 RGB at 5 fps out, {secs} s");
        println!("   daemon CPU      {:.1} % of one core ({cpu:.1} s in {elapsed:.1} s)", cpu / elapsed * 100.0);
        println!("   daemon RSS      {} KiB (peak {} KiB)", status_kb(pid, "VmRSS:"), status_kb(pid, "VmHWM:"));
        println!("   input           {:.1} frames/s", rate("frames_in"));
        println!("   analytics       {:.1} frames/s at {}x{}", rate("frames_delivered"), m1["video"]["last_frame"]["width"], m1["video"]["last_frame"]["height"]);
        println!("   recorded        {} bytes in {} segments so far, restarts {}", recorded, metrics_at(&m1, "segments_closed"), metrics_at(&m1, "restarts"));
        let delivered = metrics_at(&m1, "frames_delivered") - metrics_at(&m0, "frames_delivered");
        let latency_us = metrics_at(&m1, "frame_latency_us_total") - metrics_at(&m0, "frame_latency_us_total");
        println!(
            "   latency         capture → appsink {:.1} ms mean over {delivered} frames (last {:.1} ms; from the frame's pipeline timestamp, so the camera's encoder and the network are not in it)",
            latency_us as f64 / delivered.max(1) as f64 / 1000.0,
            m1["video"]["last_frame"]["latency_us"].as_u64().unwrap_or(0) as f64 / 1000.0
        );
        println!("   decoder drops   {}", metrics_at(&m1, "decoder_overruns"));
        drop(daemon);
        server.stop();
    });
}
