//! People counting on a synthetic video made here, with known counts: one person
//! crossing, two side by side, one the other way, one who stops on the line, one
//! who turns back on it. Through `edgecam count-people` (exact counts) and through
//! the daemon (a looping file source, count events over MQTT).

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::Value;

const W: usize = 320;
const H: usize = 240;
const FPS: usize = 10;

/// Where the people are at time `t` (seconds), as fractions of the frame.
fn people_at(t: f64) -> Vec<(f64, f64)> {
    let walk = |t0: f64, secs: f64, from: f64, to: f64| {
        let u = (t - t0) / secs;
        (0.0..=1.0).contains(&u).then_some(from + (to - from) * u)
    };
    let mut out = Vec::new();
    // 0-1 s: nobody (the background is learnt).
    // 1-4 s: A walks down across the line.
    if let Some(y) = walk(1.0, 3.0, 0.1, 0.9) {
        out.push((0.2, y));
    }
    // 4-7 s: B and C side by side, down.
    if let Some(y) = walk(4.0, 3.0, 0.1, 0.9) {
        out.push((0.4, y));
        out.push((0.7, y));
    }
    // 7-10 s: D walks up.
    if let Some(y) = walk(7.0, 3.0, 0.9, 0.1) {
        out.push((0.8, y));
    }
    // 10-16 s: E comes down to the line, stands on it for two seconds, goes on.
    if let Some(y) = walk(10.0, 2.0, 0.1, 0.5) {
        out.push((0.5, y));
    } else if (12.0..14.0).contains(&t) {
        out.push((0.5 + 0.004 * ((t * 7.0).sin()), 0.5));
    } else if let Some(y) = walk(14.0, 2.0, 0.5, 0.9) {
        out.push((0.5, y));
    }
    // 16-20 s: F comes down to the line and turns back.
    if let Some(y) = walk(16.0, 2.0, 0.1, 0.51) {
        out.push((0.3, y));
    } else if let Some(y) = walk(18.0, 2.0, 0.51, 0.1) {
        out.push((0.3, y));
    }
    // 20-21 s: nobody.
    out
}

fn frame(t: f64) -> Vec<u8> {
    let mut rgb = vec![0u8; W * H * 3];
    for y in 0..H {
        for x in 0..W {
            // A still background with some structure: a gradient and tiles.
            let tile = if (x / 40 + y / 40) % 2 == 0 { 20 } else { 0 };
            let v = (90 + x * 40 / W + tile) as u8;
            let i = (y * W + x) * 3;
            rgb[i..i + 3].copy_from_slice(&[v, v.saturating_add(10), v.saturating_sub(10)]);
        }
    }
    for (px, py) in people_at(t) {
        let (cx, cy) = ((px * W as f64) as i64, (py * H as f64) as i64);
        for y in (cy - 22).max(0)..(cy + 22).min(H as i64) {
            for x in (cx - 11).max(0)..(cx + 11).min(W as i64) {
                let i = ((y as usize) * W + x as usize) * 3;
                rgb[i..i + 3].copy_from_slice(&[30, 25, 60]);
            }
        }
    }
    rgb
}

/// Writes the scene as H.264 in MP4.
fn synthetic_video(path: &Path) {
    encode_video(path, (W, H, FPS), 21 * FPS, |i| {
        frame(i as f64 / FPS as f64)
    });
}

#[test]
fn count_people_gives_the_exact_counts_of_the_synthetic_scene() {
    let dir = test_dir("people-cli");
    let video = dir.path().join("scene.mp4");
    synthetic_video(&video);
    let out = edgecam()
        .args([
            "count-people",
            "--method",
            "blobs",
            "--json",
            "--line",
            "0,0.5,1,0.5",
            "--fps",
            "5",
            "--width",
            "320",
        ])
        .arg(&video)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    // A, B, C and E go down ("in" for a horizontal line); D goes up; F turns back.
    assert_eq!(report["in"], 4, "{report}");
    assert_eq!(report["out"], 1, "{report}");
    let crossings = report["crossings"].as_array().unwrap();
    let times: Vec<f64> = crossings
        .iter()
        .map(|c| c["t_s"].as_f64().unwrap())
        .collect();
    // A near 2.5 s, B and C near 5.5 s, D near 8.5 s, E near 14.5 s.
    for (t, lo, hi) in [
        (times[0], 2.0, 3.2),
        (times[1], 5.0, 6.2),
        (times[2], 5.0, 6.2),
        (times[3], 8.0, 9.2),
        (times[4], 14.0, 15.2),
    ] {
        assert!((lo..=hi).contains(&t), "{times:?}");
    }
    // The direction can be named: "up" makes D the one coming in.
    let out = edgecam()
        .args([
            "count-people",
            "--method",
            "blobs",
            "--json",
            "--line",
            "0,0.5,1,0.5",
            "--in",
            "up",
            "--width",
            "320",
        ])
        .arg(&video)
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report["in"].as_u64(), report["out"].as_u64()),
        (Some(1), Some(4)),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_counts_a_looping_scene_into_count_events() {
    let dir = test_dir("people-daemon-src");
    let video = dir.path().join("scene.mp4");
    synthetic_video(&video);
    let rig = Rig::new(
        "people",
        &format!(
            "[health]\nmetrics_interval = \"1s\"\n\
             [video]\nenabled = true\nsource = \"file://{}\"\nwidth = 320\nheight = 240\nframerate = 10\n\
             analytics_width = 320\nanalytics_height = 240\nanalytics_fps = 5\n\
             [people]\nenabled = true\ninterval = \"2s\"\ncrossing_events = true\n\
             lines = [{{ name = \"door\", a = [0.0, 0.5], b = [1.0, 0.5] }}]\n\
             zones = [{{ name = \"left\", points = [[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]] }}]\n",
            video.display()
        ),
    )
    .await;
    let recordings = rig.recordings();
    let daemon = rig.daemon(0);
    let _ = recordings;
    let counts = |rig: &Rig| -> Vec<Value> { rig.observer.events_in("people_count") };
    // One pass of the scene (21 s) and a little more.
    wait_until(
        "a pass of the scene counted",
        Duration::from_secs(60),
        || {
            let c = counts(&rig);
            let sum = |dir: &str| -> u64 {
                c.iter()
                    .map(|e| e["payload"]["lines"]["door"][dir].as_u64().unwrap_or(0))
                    .sum()
            };
            sum("in") >= 4 && sum("out") >= 1
        },
    )
    .await;
    let c = counts(&rig);
    let payload_schema = schema("people-count.json");
    for e in &c {
        assert!(payload_schema.is_valid(&e["payload"]), "{e}");
    }
    // Intervals are aligned, two seconds long, and list the line and the zone.
    let first = &c[0]["payload"];
    assert_eq!(first["interval_s"], 2.0, "{first}");
    let start = humantime::parse_rfc3339(first["interval_start"].as_str().unwrap()).unwrap();
    let ms = start
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    assert_eq!(ms % 2000, 0, "{first}");
    assert!(first["zones"]["left"]["max"].is_u64(), "{first}");
    let crossings = rig.observer.events_of_kind("people_crossing");
    assert!(crossings >= 5, "{crossings} crossing events");
    assert!(daemon.log_text().contains("person crossed"));
    assert_schemas(&rig.observer);
}
