//! The demo of the camera's real job, on built-in defaults and with no cloud
//! account: shared by `cargo run --example demo` (what `deploy/demo.sh` runs) and
//! by the test suite (`tests/demo.rs`), which runs it the same way.
//!
//! A scene rendered here (a road with two vehicles and their plates, and people
//! walking across a doorway line) loops through the daemon's file source; the
//! daemon reads plates and counts people, and publishes through an AWS-like
//! endpoint (haproxy requiring a client certificate and ALPN `x-amzn-mqtt-ca`, in
//! front of Mosquitto). Then, as a web app would, the demo asks over MQTT for the
//! last plate's snapshot and a 10-second clip, which the daemon uploads to a local
//! S3-compatible server that checks signatures (s3s-fs); and it pushes a retained
//! configuration change, which the daemon applies and acknowledges.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::scene::{plate_still, road_frame, FPS, H, PASS_S, W};
use super::*;

/// The plates on the two vehicles of the scene (Brazilian formats, old and Mercosur).
pub const PLATES: [&str; 2] = ["ABC1234", "BRA2E19"];
/// The bucket the uploads go to.
pub const BUCKET: &str = "demo";

/// What the demo saw.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Plate event payloads.
    pub plates: Vec<Value>,
    /// People crossing the line, in and out, over every count event.
    pub people_in: u64,
    pub people_out: u64,
    /// Uploads done: request id, sha256 reported by the camera, sha256 of the
    /// object in the bucket.
    pub uploads: Vec<(String, String, String)>,
    /// The pushed configuration's status (`applied`, `rejected`, …).
    pub config_state: Option<String>,
}

/// Where the people are at time `t` of a pass (seconds): (x, y) of their centre,
/// pixels. They walk down or up across the doorway line at y = 144 (0.2 of the
/// height), above the road.
fn people_at(t: f64) -> Vec<(f64, f64)> {
    let walk = |t0: f64, secs: f64, x: f64, from: f64, to: f64| {
        let u = (t - t0) / secs;
        (0.0..=1.0)
            .contains(&u)
            .then_some((x, from + (to - from) * u))
    };
    [
        walk(2.0, 3.0, 200.0, 50.0, 230.0),
        walk(6.5, 3.0, 950.0, 50.0, 230.0),
        walk(10.0, 3.0, 620.0, 230.0, 50.0),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// One frame: the road scene with its vehicles, and the people on the pavement.
fn frame(t: f64, plates: &[Vec<u8>]) -> Vec<u8> {
    let mut rgb = road_frame(t, plates);
    for (cx, cy) in people_at(t) {
        let (cx, cy) = (cx as i64, cy as i64);
        for y in (cy - 40).max(0)..(cy + 40).min(H as i64) {
            // A head over a body.
            let half = if y < cy - 22 { 9 } else { 17 };
            for x in (cx - half).max(0)..(cx + half).min(W as i64) {
                let i = ((y as usize) * W + x as usize) * 3;
                rgb[i..i + 3].copy_from_slice(&[35, 28, 70]);
            }
        }
    }
    rgb
}

/// Renders one pass of the scene as H.264 in MP4 (the daemon loops it).
pub fn scene_video(path: &Path) {
    let dir = path.parent().unwrap();
    let plates = [plate_still(dir, PLATES[0]), plate_still(dir, PLATES[1])];
    encode_video(path, (W, H, FPS), PASS_S * FPS, |i| {
        frame(i as f64 / FPS as f64, &plates)
    });
}

/// One line for a person to read about a message, or `None` to skip it.
pub fn describe(topic: &str, payload: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    let kind = topic.strip_prefix(&format!("{CAMERA}/"))?;
    let hm = |ms: &Value| {
        ms.as_str()
            .map(|s| s.get(11..19).unwrap_or(s).to_owned())
            .unwrap_or_default()
    };
    Some(match kind {
        "status" => match v["state"].as_str() {
            Some("online") => format!("camera online (edgecam {})", v["version"].as_str().unwrap_or("?")),
            _ => format!("camera offline ({})", v["reason"].as_str().unwrap_or("?")),
        },
        "status/metrics" => format!(
            "metrics: outbox {} waiting, {} acked; analysed {} fps; plates read in {} frames; RSS {} MiB",
            v["outbox"]["depth"],
            v["events"]["acked"],
            v["video"]["analysed_fps"],
            v["plates"]["frames_read"],
            v["rss_bytes"].as_u64().unwrap_or(0) >> 20
        ),
        "config/status" => format!(
            "config v{} {}{}",
            v["version"],
            v["state"].as_str().unwrap_or("?"),
            v["errors"]
                .as_array()
                .map(|e| format!(": {e:?}"))
                .unwrap_or_default()
        ),
        "file/response" => {
            let id = v["request_id"].as_str().unwrap_or("?");
            match v["state"].as_str().unwrap_or("?") {
                "uploading" => format!("upload {id}: {:.0} %", v["percent"].as_f64().unwrap_or(0.0)),
                "done" => format!(
                    "upload {id}: done, {} bytes, sha256 {}",
                    v["size"],
                    v["sha256"].as_str().unwrap_or("?")
                ),
                "accepted" => format!(
                    "upload {id}: accepted{}",
                    v["note"].as_str().map(|n| format!(" ({n})")).unwrap_or_default()
                ),
                s => format!("upload {id}: {s} {}", v["reason"].as_str().unwrap_or("")),
            }
        }
        _ if kind.starts_with("events/") => {
            let lines: Vec<String> = v["events"]
                .as_array()?
                .iter()
                .map(|e| {
                    let p = &e["payload"];
                    match e["kind"].as_str().unwrap_or("") {
                        "plate" => format!(
                            "plate {} ({:.2}) moving {}, seen {}–{}, snapshot {}",
                            p["plate"].as_str().unwrap_or("?"),
                            p["confidence"].as_f64().unwrap_or(0.0),
                            p["direction"].as_str().unwrap_or("-"),
                            hm(&p["first_seen"]),
                            hm(&p["last_seen"]),
                            p["snapshot"].as_str().unwrap_or("none")
                        ),
                        "people_count" => {
                            let lines: Vec<String> = p["lines"]
                                .as_object()
                                .map(|m| {
                                    m.iter()
                                        .map(|(name, c)| format!("{name} in {} out {}", c["in"], c["out"]))
                                        .collect()
                                })
                                .unwrap_or_default();
                            format!(
                                "people {} ({}–{}, {} frames)",
                                lines.join(", "),
                                hm(&p["interval_start"]),
                                hm(&p["interval_end"]),
                                p["frames"]
                            )
                        }
                        "people_crossing" => format!(
                            "person crossed {} going {}",
                            p["line"].as_str().unwrap_or("?"),
                            p["direction"].as_str().unwrap_or("?")
                        ),
                        other => format!("event {other}: {p}"),
                    }
                })
                .collect();
            lines.join("\n")
        }
        _ => return None,
    })
}

fn sha256_file(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap_or_default()))
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The camera's configuration in the demo (beyond the broker and identity): the
/// scene `video` looped through the file source, uploads into `media` and to the S3
/// server on `s3_port`, plate reading with the OCR models in `models`, and people
/// counted on the doorway line.
pub fn camera_config(video: &Path, media: &Path, s3_port: u16, models: &Path) -> String {
    format!(
            "[health]\nmetrics_interval = \"10s\"\n\
             [video]\nenabled = true\nsource = \"file://{video}\"\nwidth = {W}\nheight = {H}\nframerate = {FPS}\n\
             analytics_width = {W}\nanalytics_height = {H}\nanalytics_fps = 5\nsegment_duration = \"5s\"\n\
             [upload]\nmedia_dir = \"{media}\"\nallow_plain_http = true\nprogress_interval = \"1s\"\n\
             [upload.s3]\nendpoint = \"http://127.0.0.1:{s3}\"\nforce_path_style = true\nregion = \"{S3_REGION}\"\n\
             [plates]\nenabled = true\nmodels_dir = \"{models}\"\nregion = \"br\"\nthreads = 2\n\
             [people]\nenabled = true\ninterval = \"10s\"\ncrossing_events = true\n\
             lines = [{{ name = \"door\", a = [0.0, 0.2], b = [1.0, 0.2], in_direction = \"down\" }}]\n",
            video = video.display(),
            media = media.display(),
            s3 = s3_port,
            models = models.display(),
        )
}

/// Runs the demo; `say` gets every line to show (`raw`: each message's topic and
/// JSON instead of a summary). `models` holds the OCR models. With `console` (a
/// folder built by `console/build.sh`), the broker also listens for browsers on a
/// WebSocket, the folder is served on loopback, and the console's address (with
/// the connection settings in its fragment) is shown; `hold` then runs before the
/// daemon is stopped, so the page can be watched.
pub async fn run(
    models: &Path,
    raw: bool,
    console: Option<&Path>,
    hold: &mut dyn FnMut(),
    say: &mut dyn FnMut(&str),
) -> Outcome {
    let started = Instant::now();
    let dir = test_dir("demo");
    let video = dir.path().join("scene.mp4");
    say(&format!("rendering the scene: {W}x{H}, {PASS_S} s at {FPS} fps, two vehicles with plates {} and {}, three people", PLATES[0], PLATES[1]));
    scene_video(&video);
    let s3 = S3Server::start(&dir.path().join("s3"));
    s3.bucket(BUCKET);
    let media = dir.path().join("media");
    let camera = camera_config(&video, &media, s3.port, models);
    let rig = if console.is_some() {
        Rig::with_websockets("demo", &camera).await
    } else {
        Rig::new("demo", &camera).await
    };
    rig.recordings();
    say(&format!(
        "broker: Mosquitto behind haproxy on 127.0.0.1:{} (client certificate and ALPN x-amzn-mqtt-ca, like AWS IoT Core on 443); S3: s3s-fs on 127.0.0.1:{}, bucket {BUCKET}",
        rig.front.port, s3.port
    ));
    let _site = match (console, &rig.broker.ws) {
        (Some(site), Some(ws)) => {
            let server = super::browser::StaticServer::start(site, &dir.path().join("http.log"));
            say(&format!(
                "fleet console: open {}#broker={}&username={}&password={}&bucket={BUCKET}&camera={CAMERA}&connect=1 in a browser on this machine",
                server.url("index.html"),
                ws.url(),
                ws.username,
                ws.password
            ));
            Some(server)
        }
        _ => None,
    };
    let mut daemon = rig.daemon_with_s3_credentials(0);
    say("edgecam started; what the broker receives from it:");

    let mut outcome = Outcome::default();
    let mut seen = 0;
    let mut show = |outcome: &mut Outcome, say: &mut dyn FnMut(&str)| {
        let all = rig.observer.all();
        for m in &all[seen..] {
            if raw {
                say(&format!(
                    "{} {}",
                    m.topic,
                    String::from_utf8_lossy(&m.payload)
                ));
            } else if let Some(line) = describe(&m.topic, &m.payload) {
                for l in line.lines() {
                    say(&format!("  {l}"));
                }
            }
            if m.topic.starts_with(&format!("{CAMERA}/events/")) {
                let v: Value = serde_json::from_slice(&m.payload).unwrap_or_default();
                for e in v["events"].as_array().into_iter().flatten() {
                    match e["kind"].as_str() {
                        Some("plate") => outcome.plates.push(e.clone()),
                        Some("people_count") => {
                            for c in e["payload"]["lines"]
                                .as_object()
                                .into_iter()
                                .flat_map(|m| m.values())
                            {
                                outcome.people_in += c["in"].as_u64().unwrap_or(0);
                                outcome.people_out += c["out"].as_u64().unwrap_or(0);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        seen = all.len();
    };

    // Analytics: until a vehicle has been reported with its snapshot, and people
    // counted (a full pass of the scene at least).
    let deadline = Instant::now() + Duration::from_secs(240);
    while Instant::now() < deadline
        && !(outcome
            .plates
            .iter()
            .any(|e| e["payload"]["snapshot"].is_string())
            && outcome.people_in + outcome.people_out > 0
            && started.elapsed() > Duration::from_secs(30))
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
        show(&mut outcome, say);
    }

    // As the web app: the last plate's snapshot, and a 10-second clip.
    let mut requests = Vec::new();
    if let Some(last) = outcome
        .plates
        .iter()
        .rev()
        .find(|e| e["payload"]["snapshot"].is_string())
    {
        let event_id = last["event_id"].as_str().unwrap().to_owned();
        let body = json!({"request_id": "snapshot-1", "event_id": event_id,
            "s3": {"bucket": BUCKET, "key": format!("{CAMERA}/{event_id}.jpg")},
            "expires_at": rfc3339(SystemTime::now() + Duration::from_secs(600))});
        say(&format!(
            "web app → {CAMERA}/file/request: the snapshot of event {event_id}"
        ));
        rig.observer.file_request(body).await;
        requests.push(("snapshot-1", format!("{CAMERA}/{event_id}.jpg")));
    }
    let to = SystemTime::now() - Duration::from_secs(2);
    let from = to - Duration::from_secs(10);
    say(&format!(
        "web app → {CAMERA}/file/request: a clip from {} to {}",
        rfc3339(from),
        rfc3339(to)
    ));
    rig.observer
        .file_request(
            json!({"request_id": "clip-1", "from": rfc3339(from), "to": rfc3339(to),
            "s3": {"bucket": BUCKET, "key": format!("{CAMERA}/clip-1.mkv")}}),
        )
        .await;
    requests.push(("clip-1", format!("{CAMERA}/clip-1.mkv")));
    let deadline = Instant::now() + Duration::from_secs(120);
    let finished = |id: &str| {
        rig.observer
            .responses_for(id)
            .iter()
            .any(|r| r["state"] == "done" || r["state"] == "rejected" || r["retrying"] == false)
    };
    while Instant::now() < deadline && !requests.iter().all(|(id, _)| finished(id)) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        show(&mut outcome, say);
    }
    for (id, key) in &requests {
        let reported = rig
            .observer
            .responses_for(id)
            .iter()
            .find(|r| r["state"] == "done")
            .and_then(|r| r["sha256"].as_str().map(str::to_owned));
        if let Some(reported) = reported {
            let object: PathBuf = s3.object(BUCKET, key);
            let stored = sha256_file(&object);
            say(&format!(
                "in the bucket: s3://{BUCKET}/{key}, {} bytes, sha256 {} the camera's",
                std::fs::metadata(&object).map(|m| m.len()).unwrap_or(0),
                if stored == reported {
                    "matches"
                } else {
                    "DOES NOT match"
                }
            ));
            outcome.uploads.push((id.to_string(), reported, stored));
        }
    }

    // As the operator: a retained configuration change (metrics every 5 s).
    say(&format!("operator → {CAMERA}/config (retained): {{\"version\": 2, \"health\": {{\"metrics_interval\": \"5s\"}}}}"));
    rig.observer
        .publish_retained(
            &format!("{CAMERA}/config"),
            br#"{"version":2,"health":{"metrics_interval":"5s"}}"#,
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && outcome.config_state.is_none() {
        tokio::time::sleep(Duration::from_millis(200)).await;
        show(&mut outcome, say);
        outcome.config_state = rig
            .observer
            .config_statuses()
            .iter()
            .find(|s| s["version"] == 2)
            .and_then(|s| s["state"].as_str().map(str::to_owned));
    }
    // A little more, to see the new metrics interval at work.
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
        show(&mut outcome, say);
    }
    if console.is_some() {
        hold();
    }
    daemon.proc.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;
    show(&mut outcome, say);
    outcome
}
