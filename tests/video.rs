//! The video pipeline with the test-pattern source: segments of the configured
//! length that demux and decode, analytics frames at the configured rate and size,
//! and the last segment finished at shutdown.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use gstreamer as gst;
use gstreamer::prelude::*;
use serde_json::Value;

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "mkv"));
    files.sort();
    files
}

/// Decodes a recorded segment to the end; returns (frames, duration).
fn decode(path: &Path) -> (u64, Duration) {
    gst::init().unwrap();
    let pipeline = gst::parse::launch(&format!(
        "filesrc location=\"{}\" ! matroskademux ! h264parse ! avdec_h264 ! fakesink name=sink sync=false",
        path.display()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let frames = Arc::new(AtomicU64::new(0));
    let last_pts = Arc::new(AtomicU64::new(0));
    let first_pts = Arc::new(AtomicU64::new(u64::MAX));
    let pad = pipeline
        .by_name("sink")
        .unwrap()
        .static_pad("sink")
        .unwrap();
    {
        let (frames, last_pts, first_pts) = (frames.clone(), last_pts.clone(), first_pts.clone());
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(buffer) = info.buffer() {
                frames.fetch_add(1, Ordering::Relaxed);
                if let Some(pts) = buffer.pts() {
                    last_pts.fetch_max(pts.nseconds(), Ordering::Relaxed);
                    first_pts.fetch_min(pts.nseconds(), Ordering::Relaxed);
                }
            }
            gst::PadProbeReturn::Ok
        });
    }
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(20),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("decoding ends");
    pipeline.set_state(gst::State::Null).unwrap();
    if let gst::MessageView::Error(e) = msg.view() {
        panic!("{} does not decode: {}", path.display(), e.error());
    }
    let span = last_pts
        .load(Ordering::Relaxed)
        .saturating_sub(first_pts.load(Ordering::Relaxed));
    (frames.load(Ordering::Relaxed), Duration::from_nanos(span))
}

#[tokio::test(flavor = "multi_thread")]
async fn test_source_records_decodable_segments_and_delivers_frames() {
    let rig = Rig::new(
        "video",
        "[health]\nmetrics_interval = \"1s\"\n\
         [video]\nenabled = true\nsource = \"test\"\nwidth = 640\nheight = 360\nframerate = 15\n\
         segment_duration = \"2s\"\nanalytics_fps = 5\nanalytics_width = 320\nanalytics_height = 180\n",
    )
    .await;
    let recordings = rig.recordings();
    let mut daemon = rig.daemon(0);

    // Three segments exist: the first two are closed.
    wait_until("three segments", Duration::from_secs(30), || {
        segments(&recordings).len() >= 3
    })
    .await;
    let files = segments(&recordings);
    for f in &files[..2] {
        let (frames, span) = decode(f);
        // 2 s at 15 fps; splitmuxsink cuts at a keyframe (one a second).
        assert!(
            (20..=50).contains(&frames),
            "{}: {frames} frames",
            f.display()
        );
        assert!(
            span >= Duration::from_millis(1300) && span <= Duration::from_millis(3100),
            "{}: {span:?}",
            f.display()
        );
    }

    // Analytics frames at 5 fps, 320x180, seen in the metrics message.
    wait_until(
        "two metrics messages with frames",
        Duration::from_secs(15),
        || {
            rig.observer
                .metrics()
                .iter()
                .filter(|m| m["video"]["frames_delivered"].as_u64().unwrap_or(0) > 0)
                .count()
                >= 2
        },
    )
    .await;
    let first = rig
        .observer
        .metrics()
        .into_iter()
        .find(|m| m["video"]["frames_delivered"].as_u64().unwrap_or(0) > 0)
        .unwrap();
    wait_until(
        "three more seconds of metrics",
        Duration::from_secs(15),
        || {
            rig.observer.metrics().last().unwrap()["ts"]
                .as_i64()
                .unwrap()
                >= first["ts"].as_i64().unwrap() + 3000
        },
    )
    .await;
    let last = rig.observer.metrics().last().unwrap().clone();
    let frames = last["video"]["frames_delivered"].as_u64().unwrap()
        - first["video"]["frames_delivered"].as_u64().unwrap();
    let secs = (last["ts"].as_i64().unwrap() - first["ts"].as_i64().unwrap()) as f64 / 1000.0;
    let rate = frames as f64 / secs;
    assert!((4.0..=6.0).contains(&rate), "{rate:.2} analytics frames/s");
    assert_eq!(last["video"]["last_frame"]["width"], 320);
    assert_eq!(last["video"]["last_frame"]["height"], 180);
    let input = last["video"]["frames_in"].as_u64().unwrap();
    assert!(input > 30, "{input} input frames");
    let input_fps = last["video"]["input_fps"].as_f64().unwrap();
    assert!(
        (12.0..=18.0).contains(&input_fps),
        "input at {input_fps} fps"
    );
    let analysed_fps = last["video"]["analysed_fps"].as_f64().unwrap();
    assert!(
        (4.0..=6.0).contains(&analysed_fps),
        "analysed at {analysed_fps} fps"
    );
    // Capture to appsink: more than nothing, well under a second.
    let latency = last["video"]["last_frame"]["latency_us"].as_u64().unwrap();
    assert!((1..1_000_000).contains(&latency), "{latency} µs");
    assert!(last["video"]["last_error"].is_null(), "{last}");
    assert_eq!(last["video"]["restarts"], 0);

    // Enough recording for a clip over three closed segments.
    wait_until("five segments", Duration::from_secs(30), || {
        segments(&recordings).len() >= 5
    })
    .await;

    // An orderly stop finishes the segment being written.
    let before = segments(&recordings).len();
    let status = daemon.proc.terminate().expect("stops");
    assert!(status.success(), "{}", daemon.log_text());
    let files = segments(&recordings);
    assert!(files.len() >= before);
    let (frames, _) = decode(files.last().unwrap());
    assert!(frames > 0, "the last segment has no frames");
    assert_schemas(&rig.observer);

    // A clip over a range that spans three segments: from the middle of the first
    // to the middle of the third, one playable file as long as those three.
    let index = recordings_index(&rig.config);
    let segs = index["segments"].as_array().unwrap();
    assert!(segs.len() >= 4, "{index}");
    let at = |v: &Value| humantime::parse_rfc3339(v.as_str().unwrap()).unwrap();
    let mid =
        |s: &Value| at(&s["start"]) + at(&s["end"]).duration_since(at(&s["start"])).unwrap() / 2;
    let (from, to) = (mid(&segs[0]), mid(&segs[2]));
    let expected = at(&segs[2]["end"])
        .duration_since(at(&segs[0]["start"]))
        .unwrap();
    let clip = rig.path().join("clip.mkv");
    let out = edgecam()
        .args(["recordings", "clip", "--config"])
        .arg(&rig.config)
        .arg("--from")
        .arg(humantime::format_rfc3339_millis(from).to_string())
        .arg("--to")
        .arg(humantime::format_rfc3339_millis(to).to_string())
        .arg("--out")
        .arg(&clip)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("from 3 segments"), "{said}");
    let (frames, span) = decode(&clip);
    let segment = Duration::from_secs(2);
    assert!(
        span + segment >= expected && span <= expected + segment,
        "clip spans {span:?}, the three segments {expected:?}"
    );
    assert!(
        frames as f64 >= span.as_secs_f64() * 15.0 * 0.9,
        "{frames} frames over {span:?}"
    );

    // A range with no recording is refused with a reason.
    let out = edgecam()
        .args(["recordings", "clip", "--config"])
        .arg(&rig.config)
        .args([
            "--from",
            "2020-01-01T00:00:00Z",
            "--to",
            "2020-01-01T00:01:00Z",
            "--out",
        ])
        .arg(rig.path().join("none.mkv"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no finished recording covers"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!rig.path().join("none.mkv").exists());
}

/// `edgecam recordings list --json`.
fn recordings_index(config: &Path) -> Value {
    let out = edgecam()
        .args(["recordings", "list", "--json", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn tiny_disk_budget_keeps_recordings_within_it_oldest_first() {
    const BUDGET: u64 = 65_536;
    let rig = Rig::new(
        "video-budget",
        &format!(
            "[health]\nmetrics_interval = \"1s\"\n\
             [video]\nenabled = true\nsource = \"test\"\nwidth = 640\nheight = 360\nframerate = 15\n\
             segment_duration = \"1s\"\nretention_max_bytes = {BUDGET}\n"
        ),
    )
    .await;
    let recordings = rig.recordings();
    let _daemon = rig.daemon(0);
    wait_until("a first segment", Duration::from_secs(20), || {
        !segments(&recordings).is_empty()
    })
    .await;
    let first = segments(&recordings)[0].clone();
    let mut largest_segment = 0;
    let mut worst = 0;
    wait_until(
        "retention to delete segments",
        Duration::from_secs(40),
        || {
            let files = segments(&recordings);
            let sizes: Vec<u64> = files
                .iter()
                .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
                .collect();
            largest_segment = largest_segment.max(sizes.iter().copied().max().unwrap_or(0));
            // Closed segments (all but the one being written).
            let closed: u64 = sizes.iter().rev().skip(1).sum();
            worst = worst.max(closed);
            rig.observer
                .metrics()
                .last()
                .is_some_and(|m| m["video"]["segments_deleted"].as_u64().unwrap_or(0) >= 3)
        },
    )
    .await;
    assert!(!first.exists(), "the oldest segment goes first");
    // Retention runs when a segment closes; between the close and the deletion the
    // closed segments may briefly exceed the budget by the one just closed.
    assert!(
        worst <= BUDGET + largest_segment,
        "closed segments reached {worst} bytes, budget {BUDGET}"
    );
    let m = rig.observer.metrics().last().unwrap().clone();
    assert!(
        m["video"]["recording_bytes"].as_u64().unwrap() <= BUDGET + largest_segment,
        "{m}"
    );
    // What remains still decodes.
    let files = segments(&recordings);
    let (frames, _) = decode(&files[files.len() - 2]);
    assert!(frames > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn rtsp_source_is_recorded_without_reencoding_and_survives_a_server_restart() {
    let port = free_port();
    let server = RtspServer::start(port);
    let rig = Rig::new(
        "video-rtsp",
        &format!(
            "[health]\nmetrics_interval = \"1s\"\n\
             [video]\nenabled = true\nsource = \"rtsp://127.0.0.1:{port}/cam\"\n\
             segment_duration = \"2s\"\nanalytics_fps = 5\nanalytics_width = 320\nanalytics_height = 180\n\
             stall_timeout = \"3s\"\n"
        ),
    )
    .await;
    let recordings = rig.recordings();
    let daemon = rig.daemon(0);
    wait_until("two RTSP segments", Duration::from_secs(30), || {
        segments(&recordings).len() >= 2
    })
    .await;
    let (frames, _) = decode(&segments(&recordings)[0]);
    assert!(frames >= 15, "{frames} frames in the first segment");
    wait_until(
        "analytics frames from RTSP",
        Duration::from_secs(15),
        || {
            rig.observer.metrics().last().is_some_and(|m| {
                m["video"]["frames_delivered"].as_u64().unwrap_or(0) > 5
                    && m["video"]["last_frame"]["width"] == 320
            })
        },
    )
    .await;

    // The camera's stream goes away, then comes back on the same address.
    server.stop();
    wait_until("the loss to be noticed", Duration::from_secs(20), || {
        daemon.log_text().contains("video pipeline stopped")
    })
    .await;
    let before = segments(&recordings).len();
    let server = RtspServer::start(port);
    wait_until("recording to resume", Duration::from_secs(40), || {
        segments(&recordings).len() >= before + 2
    })
    .await;
    let log = daemon.log_text();
    assert!(log.matches("video pipeline started").count() >= 2, "{log}");
    assert!(daemon.log_text().contains("rebuilding it"));
    wait_until(
        "the restart in the metrics",
        Duration::from_secs(10),
        || {
            rig.observer
                .metrics()
                .last()
                .is_some_and(|m| m["video"]["restarts"].as_u64().unwrap_or(0) >= 1)
        },
    )
    .await;
    let m = rig.observer.metrics().last().unwrap().clone();
    assert!(m["video"]["last_error"].is_string(), "{m}");
    // The events path kept working throughout.
    assert!(!rig.observer.metrics().is_empty());
    server.stop();
    // The outage is a gap in the index.
    let index = recordings_index(&rig.config);
    assert!(
        !index["gaps"].as_array().unwrap().is_empty(),
        "no gap in {index}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remote_configuration_moves_the_camera_to_its_rtsp_stream_restarting_video_alone() {
    let port = free_port();
    let server = RtspServer::start(port);
    let rig = Rig::new(
        "video-remote",
        "[health]\nmetrics_interval = \"1s\"\n\
         [synthetic]\nenabled = true\nrate_per_sec = 2.0\nkind = \"beat\"\n\
         [video]\nenabled = true\nsource = \"test\"\nwidth = 640\nheight = 360\nframerate = 15\n\
         segment_duration = \"2s\"\nanalytics_fps = 5\nanalytics_width = 320\nanalytics_height = 180\n",
    )
    .await;
    let recordings = rig.recordings();
    let daemon = rig.daemon(0);
    wait_until(
        "two segments of the test pattern",
        Duration::from_secs(30),
        || segments(&recordings).len() >= 2,
    )
    .await;
    // A device or a file is the local file's to name: refused from the cloud.
    let topic = format!("{CAMERA}/config");
    let local = br#"{"version":1,"video":{"source":"file:///etc/passwd"}}"#;
    assert!(!schema("remote-config.json").is_valid(&serde_json::from_slice(local).unwrap()));
    rig.observer.publish_retained(&topic, local).await;
    wait_until("the file source refused", Duration::from_secs(15), || {
        rig.observer.config_statuses().iter().any(|s| {
            s["state"] == "rejected"
                && s["errors"]
                    .as_array()
                    .is_some_and(|e| e.iter().any(|e| e["field"] == "video.source"))
        })
    })
    .await;
    let rtsp = format!(
        r#"{{"version":2,"video":{{"source":"rtsp://127.0.0.1:{port}/cam","analytics_fps":2}}}}"#
    );
    assert!(schema("remote-config.json").is_valid(&serde_json::from_str(&rtsp).unwrap()));
    let before = segments(&recordings).len();
    let beats = rig.observer.events_of_kind("beat");
    rig.observer.publish_retained(&topic, rtsp.as_bytes()).await;
    rig.observer.wait_config_applied(2).await;
    // Recording resumes from the stream, with the new analytics rate.
    wait_until("RTSP segments", Duration::from_secs(40), || {
        segments(&recordings).len() >= before + 2
    })
    .await;
    let newest = segments(&recordings);
    let (frames, _) = decode(&newest[newest.len() - 2]);
    assert!(
        frames >= 15,
        "{frames} frames in a segment recorded from RTSP"
    );
    wait_until("analytics at 2 frames/s", Duration::from_secs(20), || {
        rig.observer.metrics().last().is_some_and(|m| {
            let fps = m["video"]["analysed_fps"].as_f64().unwrap_or(0.0);
            fps > 1.0 && fps < 3.0
        })
    })
    .await;
    let log = daemon.log_text();
    assert!(log.contains("restarting the stage alone"), "{log}");
    assert!(
        log.contains("stage starting with its new configuration"),
        "{log}"
    );
    let started: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("video pipeline started"))
        .collect();
    assert_eq!(started.len(), 2, "{log}");
    assert!(
        started[1].contains(&format!("rtsp://127.0.0.1:{port}/cam")),
        "{log}"
    );
    let m = rig.observer.metrics().last().unwrap().clone();
    assert_eq!(m["stages"]["video"]["state"], "running", "{m}");
    assert_eq!(m["stages"]["video"]["restarts"], 0, "{m}");
    // The other stages carried on.
    assert!(rig.observer.events_of_kind("beat") > beats);
    server.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_sources_are_reported_and_retried_while_events_keep_flowing() {
    let port = free_port();
    let server = RtspServer::start(port);
    let login_port = free_port();
    let login_server = RtspServer::start_with_login(login_port, "viewer", "right-pass");
    // Four daemons, four bad sources: nothing listening, a missing device, a codec
    // that is not what the camera sends, and a wrong password.
    let cases = [
        (
            "wrong-password",
            format!("rtsp://viewer:wrong-pass-4711@127.0.0.1:{login_port}/cam"),
            "h264",
        ),
        (
            "unreachable",
            format!("rtsp://127.0.0.1:{}/cam", free_port()),
            "h264",
        ),
        (
            "no-device",
            "v4l2:///dev/video-edgecam-missing".to_owned(),
            "h264",
        ),
        (
            "wrong-codec",
            format!("rtsp://127.0.0.1:{port}/cam"),
            "h265",
        ),
    ];
    for (name, source, codec) in cases {
        let rig = Rig::new(
            &format!("video-bad-{name}"),
            &format!(
                "[synthetic]\nenabled = true\nrate_per_sec = 20.0\n\
                 [video]\nenabled = true\nsource = \"{source}\"\ncodec = \"{codec}\"\nstall_timeout = \"3s\"\n"
            ),
        )
        .await;
        let recordings = rig.recordings();
        let mut daemon = rig.daemon(0);
        wait_until(
            &format!("{name}: two failed attempts"),
            Duration::from_secs(30),
            || {
                daemon
                    .log_text()
                    .matches("video pipeline stopped; rebuilding it")
                    .count()
                    >= 2
            },
        )
        .await;
        assert!(
            daemon.proc.is_running(),
            "{name}: the daemon must keep running"
        );
        let before = rig.observer.distinct_events();
        wait_until(
            &format!("{name}: events still flowing"),
            Duration::from_secs(10),
            || rig.observer.distinct_events() >= before + 10,
        )
        .await;
        assert!(
            segments(&recordings).is_empty(),
            "{name}: nothing to record"
        );
        let log = daemon.log_text();
        if name == "no-device" {
            assert!(log.contains("Cannot identify device"), "{log}");
        }
        if name == "wrong-password" {
            assert!(log.contains("Unauthorized"), "{log}");
            assert!(
                !log.contains("wrong-pass-4711"),
                "the password is in the log: {log}"
            );
        }
        let status = daemon.proc.terminate().expect("stops");
        assert!(status.success(), "{name}: {}", daemon.log_text());
    }
    server.stop();

    // The right password is let in.
    let rig = Rig::new(
        "video-login",
        &format!(
            "[video]\nenabled = true\nsource = \"rtsp://viewer:right-pass@127.0.0.1:{login_port}/cam\"\n\
             segment_duration = \"1s\"\n"
        ),
    )
    .await;
    let recordings = rig.recordings();
    let daemon = rig.daemon(0);
    wait_until(
        "a segment with the right password",
        Duration::from_secs(30),
        || segments(&recordings).len() >= 2,
    )
    .await;
    assert!(!daemon.log_text().contains("right-pass"));
    login_server.stop();
}

/// Writes `frames` frames of a test pattern at 15 fps as H.264 in MP4.
fn make_video_file(path: &Path, frames: u32) {
    gst::init().unwrap();
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc num-buffers={frames} pattern=smpte ! video/x-raw,width=320,height=240,framerate=15/1 ! \
         x264enc speed-preset=ultrafast key-int-max=15 ! h264parse ! mp4mux ! filesink location=\"{}\"",
        path.display()
    ))
    .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let msg = pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(30),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("the file is written");
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(matches!(msg.view(), gst::MessageView::Eos(_)), "{msg:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn file_source_loops_at_its_own_pace_and_is_recorded() {
    let dir = test_dir("video-file-src");
    let file = dir.path().join("demo.mp4");
    // Two seconds of video.
    make_video_file(&file, 30);
    let rig = Rig::new(
        "video-file",
        &format!(
            "[health]\nmetrics_interval = \"1s\"\n\
             [video]\nenabled = true\nsource = \"file://{}\"\nwidth = 320\nheight = 240\nframerate = 15\n\
             segment_duration = \"2s\"\nanalytics_fps = 5\nanalytics_width = 160\nanalytics_height = 120\n",
            file.display()
        ),
    )
    .await;
    let recordings = rig.recordings();
    let daemon = rig.daemon(0);
    // Three loops of the file, without a rebuild.
    wait_until("three loops of the file", Duration::from_secs(30), || {
        rig.observer
            .metrics()
            .last()
            .is_some_and(|m| m["video"]["frames_in"].as_u64().unwrap_or(0) >= 90)
    })
    .await;
    let m = rig.observer.metrics().last().unwrap().clone();
    assert_eq!(m["video"]["restarts"], 0, "{}", daemon.log_text());
    assert!(m["video"]["frames_delivered"].as_u64().unwrap() > 0, "{m}");
    // At its own pace: 90 frames at 15 fps take six seconds, not a moment.
    let first = rig
        .observer
        .metrics()
        .into_iter()
        .find(|m| m["video"]["frames_in"].as_u64().unwrap_or(0) > 0)
        .unwrap();
    let frames =
        m["video"]["frames_in"].as_u64().unwrap() - first["video"]["frames_in"].as_u64().unwrap();
    let secs = (m["ts"].as_i64().unwrap() - first["ts"].as_i64().unwrap()) as f64 / 1000.0;
    assert!(frames as f64 / secs < 20.0, "{frames} frames in {secs} s");
    let files = segments(&recordings);
    assert!(files.len() >= 2, "{files:?}");
    let (frames, _) = decode(&files[0]);
    assert!(frames >= 20, "{frames} frames in the first segment");
}

/// A fault injected while recording: the recordings directory is replaced by a
/// file (root, as the tests may run, writes through permissions, not through a
/// file). The failure shows in the metrics within a few intervals, the pipeline is
/// rebuilt with backoff, other events keep flowing, and recording resumes once
/// the directory is back.
#[tokio::test(flavor = "multi_thread")]
async fn a_recordings_directory_that_breaks_is_reported_retried_and_recovered() {
    let rig = Rig::new(
        "video-dir-fault",
        "[health]\nmetrics_interval = \"1s\"\n\
         [synthetic]\nenabled = true\nrate_per_sec = 20.0\n\
         [video]\nenabled = true\nsource = \"test\"\nwidth = 320\nheight = 240\nframerate = 15\n\
         segment_duration = \"1s\"\n",
    )
    .await;
    let recordings = rig.recordings();
    let mut daemon = rig.daemon(0);
    wait_until("two segments", Duration::from_secs(30), || {
        segments(&recordings).len() >= 2
    })
    .await;

    // The fault: the directory moved away, a file in its place.
    let aside = recordings.with_extension("aside");
    std::fs::rename(&recordings, &aside).unwrap();
    std::fs::write(&recordings, b"not a directory").unwrap();
    let restarts = |m: &Value| m["video"]["restarts"].as_u64().unwrap_or(0);
    let seen = rig.observer.metrics().len();
    wait_until(
        "the failure in the metrics",
        Duration::from_secs(20),
        || {
            rig.observer.metrics()[seen..]
                .iter()
                .any(|m| restarts(m) >= 1 && m["video"]["last_error"].is_string())
        },
    )
    .await;
    assert!(daemon.proc.is_running(), "{}", daemon.log_text());
    let before = rig.observer.distinct_events();
    wait_until(
        "events still flowing during the fault",
        Duration::from_secs(10),
        || rig.observer.distinct_events() >= before + 20,
    )
    .await;

    // The fault goes: the file removed, the directory back (empty). Recording
    // resumes at the next rebuild.
    std::fs::remove_file(&recordings).unwrap();
    std::fs::create_dir(&recordings).unwrap();
    wait_until(
        "recording resumed into the restored directory",
        Duration::from_secs(90),
        || segments(&recordings).len() >= 2,
    )
    .await;
    let last = rig.observer.metrics().last().cloned().unwrap();
    assert_eq!(last["stages"]["video"]["state"], "running", "{last}");
    assert!(restarts(&last) >= 1, "{last}");
    let status = daemon.proc.terminate().expect("stops");
    assert!(status.success(), "{}", daemon.log_text());
    drop(std::fs::remove_dir_all(&aside));
}
