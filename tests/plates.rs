//! Plate reading with the real models (fetched by tests/run.sh with
//! deploy/fetch-models.sh from the rapidocr-onnxruntime package on PyPI, checked by
//! sha256, into target/models) on images drawn here with GStreamer's text overlay.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::scene::{
    plates_dev, real_car_passes, real_car_video_timed, road_video, Text, FPS, H, PASS_S, W,
};
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
    let texts = [
        Text(plate, "Sans Bold 60", "center", "center"),
        Text("2014-05-01 10:00:00", "Sans 14", "top", "left"),
    ];
    common::scene::draw(path, 800, 450, &texts, true);
}

#[test]
fn read_plates_reads_a_drawn_plate_and_not_the_timestamp() {
    let _turn = DAEMONS.blocking_lock();
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

fn plate_events(rig: &Rig) -> Vec<Value> {
    rig.observer.events_in("plate")
}

fn at(v: &Value) -> std::time::SystemTime {
    humantime::parse_rfc3339(v.as_str().unwrap()).unwrap()
}

/// `read-plates --json --region br` on `images` with the given backend
/// arguments: one JSON value per image.
fn read_plates(backend: &[&str], images: &[&Path]) -> Vec<Value> {
    let args = [&["--region", "br"][..], backend].concat();
    read_plates_with(&args, images)
}

/// `read-plates --json` on `images` with `args`: one JSON value per image.
fn read_plates_with(args: &[&str], images: &[&Path]) -> Vec<Value> {
    let out = edgecam()
        .args(["read-plates", "--json", "--models"])
        .arg(models())
        .args(args)
        .args(images)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_small_plate_is_boxed_again_enlarged_and_read_in_the_same_place() {
    let _turn = DAEMONS.blocking_lock();
    let dir = test_dir("plates-small");
    let img = dir.path().join("small.jpg");
    // Letters about 16 pixels high in a 1280x720 picture: the detector's box at
    // 1:1 is about 40 high, small enough for a second look.
    let texts = [Text("ABC1234", "Sans Bold 12", "center", "center")];
    common::scene::draw(&img, 1280, 720, &texts, true);
    let boxes: Vec<Vec<f64>> = [&["--region", "br"][..], &["--region", "br", "--no-zoom"]]
        .into_iter()
        .map(|args| {
            let line = &read_plates_with(args, &[&img])[0];
            let plates = line["plates"].as_array().unwrap();
            assert_eq!(plates.len(), 1, "{args:?}: {line}");
            assert_eq!(plates[0]["text"], "ABC1234", "{args:?}: {line}");
            plates[0]["box"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        })
        .collect();
    let (again, first) = (&boxes[0], &boxes[1]);
    let centre = |b: &[f64]| (b[0] + b[2] / 2.0, b[1] + b[3] / 2.0);
    let ((ax, ay), (fx, fy)) = (centre(again), centre(first));
    assert!(
        (ax - 640.0).abs() < 12.0 && (ay - 360.0).abs() < 12.0,
        "the box found in the enlarged window maps back to the picture's centre: {again:?}"
    );
    assert!(
        (ax - fx).abs() < 8.0 && (ay - fy).abs() < 8.0,
        "{again:?} against {first:?}"
    );
    assert!(
        again[3] < first[3],
        "the second look boxes the line more tightly: {again:?} against {first:?}"
    );
}

#[cfg(feature = "ort")]
#[test]
fn onnxruntime_reads_what_tract_reads() {
    let _turn = DAEMONS.blocking_lock();
    let lib = models().join("libonnxruntime.so");
    assert!(
        lib.exists(),
        "no {}: run `bash deploy/fetch-onnxruntime.sh {}` (tests/run.sh does)",
        lib.display(),
        models().display()
    );
    let dir = test_dir("plates-ort");
    let a = dir.path().join("a.jpg");
    let b = dir.path().join("b.jpg");
    draw(&a, "ABC1234");
    draw(&b, "BRA2E19");
    let tract = read_plates(&["--backend", "tract"], &[&a, &b]);
    let ort = read_plates(
        &[
            "--backend",
            "onnxruntime",
            "--onnxruntime-library",
            lib.to_str().unwrap(),
        ],
        &[&a, &b],
    );
    for (t, o) in tract.iter().zip(&ort) {
        let (tp, op) = (&t["plates"], &o["plates"]);
        assert_eq!(
            tp.as_array().unwrap().len(),
            op.as_array().unwrap().len(),
            "{t}\n{o}"
        );
        for (x, y) in tp.as_array().unwrap().iter().zip(op.as_array().unwrap()) {
            assert_eq!(x["text"], y["text"]);
            assert_eq!(x["box"], y["box"]);
            let (cx, cy) = (
                x["confidence"].as_f64().unwrap(),
                y["confidence"].as_f64().unwrap(),
            );
            assert!((cx - cy).abs() < 1e-3, "{x} vs {y}");
        }
    }
    assert_eq!(ort[0]["plates"][0]["text"], "ABC1234");
    // A missing library is a clear error.
    let out = edgecam()
        .args([
            "read-plates",
            "--backend",
            "onnxruntime",
            "--onnxruntime-library",
            "/nonexistent/libonnxruntime.so",
            "--models",
        ])
        .arg(models())
        .arg(&a)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("onnxruntime library /nonexistent/libonnxruntime.so: no such file")
            && err.contains("deploy/fetch-onnxruntime.sh"),
        "{err}"
    );
}

#[cfg(not(feature = "ort"))]
#[test]
fn without_the_ort_feature_the_onnxruntime_backend_is_refused_clearly() {
    let dir = test_dir("plates-no-ort");
    let a = dir.path().join("a.jpg");
    draw(&a, "ABC1234");
    let out = edgecam()
        .args(["read-plates", "--backend", "onnxruntime", "--models"])
        .arg(models())
        .arg(&a)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("build with --features ort"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read_plates(&[], &[&a])[0]["plates"][0]["text"], "ABC1234");
}

/// Copies the recogniser `from` to `to` with two lines of its character table
/// run together (the first newline `skip` bytes or more after the `character`
/// key becomes a space): the same size, one character fewer than its classes.
fn join_table_lines(from: &Path, to: &Path, skip: usize) {
    let mut rec = std::fs::read(from).unwrap();
    let key = rec.windows(9).position(|w| w == b"character").unwrap() + skip;
    let newline = key + rec[key..].iter().position(|&b| b == b'\n').unwrap();
    rec[newline] = b' ';
    std::fs::write(to, &rec).unwrap();
}

/// `read-plates ARGS MODELS IMAGE`, which must fail: its stderr.
fn refused(args: &[&str], models: &Path, image: &Path) -> String {
    let out = edgecam()
        .arg("read-plates")
        .args(args)
        .arg(models)
        .arg(image)
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_recogniser_whose_classes_do_not_match_its_character_table_or_an_unknown_country_is_refused() {
    let models = models();
    let dir = test_dir("plates-bad-rec");
    let a = dir.path().join("a.jpg");
    draw(&a, "ABC1234");
    // The recogniser with two lines of its character table run together: the same
    // number of bytes, one character fewer than the model's classes.
    let bad = dir.path().join("models");
    std::fs::create_dir(&bad).unwrap();
    std::fs::copy(
        models.join("ch_PP-OCRv4_det_infer.onnx"),
        bad.join("ch_PP-OCRv4_det_infer.onnx"),
    )
    .unwrap();
    let rec = "ch_PP-OCRv4_rec_infer.onnx";
    join_table_lines(&models.join(rec), &bad.join(rec), 40);
    let err = refused(&["--models"], &bad, &a);
    assert!(
        err.contains("ch_PP-OCRv4_rec_infer.onnx")
            && err.contains("does not match its character table"),
        "{err}"
    );
    // The same for edgecam's recogniser: `0` and `1` run together.
    let rec = "edgecam-plate-rec.onnx";
    join_table_lines(&models.join(rec), &bad.join(rec), 0);
    let err = refused(&["--recognisers", "edgecam", "--models"], &bad, &a);
    assert!(
        err.contains("edgecam-plate-rec.onnx")
            && err.contains("does not match its character table of 35 characters"),
        "{err}"
    );
    // An unknown country is named, before any model is loaded.
    let out = edgecam()
        .args([
            "read-plates",
            "--region",
            "eu",
            "--country",
            "DE",
            "--country",
            "XQ",
            "--models",
        ])
        .arg(&models)
        .arg(&a)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("countries[1]: no country \"XQ\""), "{err}");
}

/// The daemon tests take turns, and so do the tests that read many plates
/// (`blocking_lock` outside the runtime): two of them at once on two cores starve
/// a daemon, which then reads too few frames of a passing vehicle.
static DAEMONS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The daemon reading plates on the looping road scene; `plates` adds to its
/// `[plates]` section. Returns the rig, the daemon, its media directory and the
/// scene's directory (keep it alive).
async fn road_rig(name: &str, plates: &str) -> (Rig, Daemon, PathBuf, tempfile::TempDir) {
    road_rig_with(name, plates, &models()).await
}

/// [`road_rig`] with the models from `models`.
async fn road_rig_with(
    name: &str,
    plates: &str,
    models: &Path,
) -> (Rig, Daemon, PathBuf, tempfile::TempDir) {
    // Two readers per daemon, one daemon at a time (see DAEMONS).
    let src = test_dir(&format!("{name}-src"));
    let video = src.path().join("road.mp4");
    road_video(&video, ["ABC1234", "BRA2E19"]);
    let rig = Rig::new(
        name,
        &format!(
            "[health]\nmetrics_interval = \"1s\"\n\
             [video]\nenabled = true\nsource = \"file://{}\"\nwidth = {W}\nheight = {H}\nframerate = {FPS}\n\
             analytics_width = {W}\nanalytics_height = {H}\nanalytics_fps = 5\n\
             [upload]\nmedia_dir = \"MEDIA\"\n\
             [plates]\nenabled = true\nmodels_dir = \"{}\"\nregion = \"br\"\n\
             threads = 2\n{plates}",
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
    (rig, daemon, media, src)
}

#[tokio::test(flavor = "multi_thread")]
async fn with_hashing_on_plates_are_published_as_salted_hashes_only_until_a_remote_configuration_turns_it_off(
) {
    let _turn = DAEMONS.lock().await;
    let salt = "fleet-salt-0123456789";
    let (rig, daemon, media, _src) = road_rig(
        "plates-hashed",
        &format!("hash_plates = true\nhash_salt = \"{salt}\"\nsnapshots = false\n"),
    )
    .await;
    wait_until("a plate event", Duration::from_secs(120), || {
        !plate_events(&rig).is_empty()
    })
    .await;
    let events = plate_events(&rig);
    let p = &events[0]["payload"];
    let hash = |text: &str| {
        use sha2::Digest;
        Value::String(hex::encode(sha2::Sha256::digest(format!("{salt}{text}"))))
    };
    assert!(
        p["plate"] == hash("ABC1234") || p["plate"] == hash("BRA2E19"),
        "{p}"
    );
    assert_eq!(p["hashed"], true);
    assert_eq!(p["snapshot"], Value::Null);
    assert!(schema("plate.json").is_valid(p), "{p}");
    // The text is nowhere: not in what was published, not in the log.
    let published: String = rig
        .observer
        .all()
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect();
    let log = daemon.log_text();
    for text in ["ABC1234", "BRA2E19"] {
        assert!(!published.contains(text));
        assert!(!log.contains(text));
    }
    assert!(
        !media.join("snapshots").exists()
            || std::fs::read_dir(media.join("snapshots"))
                .unwrap()
                .next()
                .is_none()
    );

    // Hashing switched off by a retained configuration: the plate stage alone
    // starts again with it, and the next vehicles are published as read.
    let overlay = br#"{"version":1,"plates":{"hash_plates":false,"min_reads":2}}"#;
    assert!(schema("remote-config.json").is_valid(&serde_json::from_slice(overlay).unwrap()));
    rig.observer
        .publish_retained(&format!("{CAMERA}/config"), overlay)
        .await;
    rig.observer.wait_config_applied(1).await;
    wait_until("a plate in clear", Duration::from_secs(120), || {
        plate_events(&rig).iter().any(|e| {
            e["payload"]["hashed"] == false
                && ["ABC1234", "BRA2E19"].contains(&e["payload"]["plate"].as_str().unwrap_or(""))
        })
    })
    .await;
    let log = daemon.log_text();
    assert!(log.contains("restarting the stage alone"), "{log}");
    assert!(
        log.contains("stage starting with its new configuration"),
        "{log}"
    );
    // A new configuration is not a failure: the stage runs, never restarted.
    wait_until(
        "the stage running in the metrics",
        Duration::from_secs(10),
        || {
            rig.observer.metrics().last().is_some_and(|m| {
                m["stages"]["plate_reading"]["state"] == "running"
                    && m["stages"]["plate_reading"]["restarts"] == 0
            })
        },
    )
    .await;
    for e in plate_events(&rig) {
        assert!(schema("plate.json").is_valid(&e["payload"]), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn plate_reading_without_its_models_is_restarted_until_they_arrive_and_then_reads() {
    let _turn = DAEMONS.lock().await;
    let empty = test_dir("plates-no-models-yet");
    let (rig, daemon, _media, _src) =
        road_rig_with("plates-late-models", "snapshots = false\n", empty.path()).await;
    let stage = |m: &Value| m["stages"]["plate_reading"].clone();
    wait_until(
        "plate reading restarting, the missing file named",
        Duration::from_secs(60),
        || {
            rig.observer.metrics().iter().any(|m| {
                stage(m)["state"] == "restarting"
                    && stage(m)["restarts"].as_u64() >= Some(2)
                    && stage(m)["last_error"]
                        .as_str()
                        .is_some_and(|e| e.contains("ch_PP-OCRv4_rec_infer.onnx"))
            })
        },
    )
    .await;
    assert!(plate_events(&rig).is_empty());
    // The retained status says so too, for a dashboard that subscribes late.
    let status_stage = |state: &'static str| {
        move |s: &Value| s["state"] == "online" && s["stages"]["plate_reading"]["state"] == state
    };
    wait_until(
        "the retained status showing plate reading restarting",
        Duration::from_secs(15),
        || {
            rig.observer
                .statuses()
                .iter()
                .any(status_stage("restarting"))
        },
    )
    .await;
    let last = rig.observer.metrics().last().cloned().unwrap();
    assert_eq!(last["stages"]["video"]["state"], "running", "{last}");
    assert!(last["plates"]["errors"].as_u64().unwrap() >= 2, "{last}");
    // The models arrive (as deploy/fetch-models.sh would put them): the next
    // restart loads them and the passing vehicles are read.
    for f in ["ch_PP-OCRv4_det_infer.onnx", "ch_PP-OCRv4_rec_infer.onnx"] {
        std::fs::copy(models().join(f), empty.path().join(f)).unwrap();
    }
    wait_until("a plate event", Duration::from_secs(150), || {
        !plate_events(&rig).is_empty()
    })
    .await;
    let p = &plate_events(&rig)[0]["payload"];
    assert!(p["plate"] == "ABC1234" || p["plate"] == "BRA2E19", "{p}");
    let last = rig.observer.metrics().last().cloned().unwrap();
    assert_eq!(
        last["stages"]["plate_reading"]["state"], "running",
        "{last}"
    );
    assert!(daemon.log_text().contains("stage starting again"));
    wait_until(
        "the retained status showing plate reading running again",
        Duration::from_secs(15),
        || {
            rig.observer
                .statuses()
                .last()
                .is_some_and(status_stage("running"))
        },
    )
    .await;
    assert_schemas(&rig.observer);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_reports_each_passing_vehicle_once_with_its_plate_and_snapshot() {
    let _turn = DAEMONS.lock().await;
    // The text detector at 960x544 (the drawn plates are large): a debug build
    // reads a frame in about half the time, so that between passes the last
    // vehicle's track ends while the road is still empty (checked at the end).
    let (rig, daemon, media, _src) = road_rig("plates", "detector_size = [960, 544]\n").await;
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
    // The first vehicle's first pass may begin while the models warm up and be
    // read too briefly to tell its direction: its return (the third event) says it.
    assert_eq!(p[1]["direction"], "left", "{}", p[1]);
    assert_eq!(p[2]["direction"], "right", "{}", p[2]);
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
    // Between passes the road is empty and still: those frames are skipped
    // (counted) once no vehicle is tracked any more, which a slow reader reaches
    // later.
    wait_until("the empty road skipped", Duration::from_secs(60), || {
        rig.observer
            .metrics()
            .last()
            .is_some_and(|m| m["plates"]["frames_still"].as_u64() > Some(0))
    })
    .await;
    let metrics = rig.observer.metrics();
    let last = &metrics.last().unwrap()["plates"];
    assert!(last["frames_read"].as_u64().unwrap() > 0, "{last}");
    assert_schemas(&rig.observer);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_detector_a_real_car_is_read_inside_its_box_once_per_pass() {
    let Some(plates_dev) = plates_dev() else {
        return;
    };
    let _turn = DAEMONS.lock().await;
    let models = models();
    let src = test_dir("plates-vehicle-src");
    let video = src.path().join("car.mp4");
    // Eight seconds in view: a debug build on two cores reads a frame inside a
    // vehicle in about a second, and a direction needs reads spread over the pass.
    real_car_video_timed(&plates_dev.join("eu/eu11.jpg"), &video, 8, 5);
    let rig = Rig::new(
        "plates-vehicle",
        &format!(
            "[health]\nmetrics_interval = \"1s\"\n\
             [video]\nenabled = true\nsource = \"file://{}\"\nwidth = 1280\nheight = 720\nframerate = 10\n\
             analytics_width = 1280\nanalytics_height = 720\nanalytics_fps = 5\n\
             [plates]\nenabled = true\nmodels_dir = \"{}\"\nregion = \"eu\"\nthreads = 2\nsnapshots = false\n\
             [traffic]\nenabled = true\ninterval = \"2s\"\ncrossing_events = true\n\
             lines = [{{ name = \"middle\", a = [0.5, 0.0], b = [0.5, 1.0] }}]\n\
             [detector]\nenabled = true\nmodel = \"{}\"\n",
            video.display(),
            models.display(),
            models.join("nanodet-m-416.onnx").display(),
        ),
    )
    .await;
    rig.recordings();
    let daemon = rig.daemon(0);
    // Three passes: the first may begin while the models are still loading and
    // warming up, and be read only at its end, too briefly to tell a direction;
    // the passes after it are read whole.
    wait_until("three passes read", Duration::from_secs(180), || {
        plate_events(&rig).len() >= 3
    })
    .await;
    let events = plate_events(&rig);
    let log = daemon.log_text();
    assert!(log.contains("tracked vehicles"), "{log}");
    let payload = schema("plate.json");
    for (i, e) in events.iter().enumerate() {
        let p = &e["payload"];
        assert!(payload.is_valid(p), "{p}");
        assert_eq!(p["plate"], "BS47040", "{events:?}");
        if i > 0 {
            assert_eq!(p["direction"], "right", "{p}");
        }
        let class = p["vehicle"]["class"].as_str().unwrap_or_default();
        assert!(["car", "truck", "bus"].contains(&class), "{p}");
        assert!(p["vehicle"]["track"].as_u64().is_some(), "{p}");
    }
    // One event per pass: consecutive vehicles are a pass (thirteen seconds, eight
    // in view) apart; the first may have been seen only at the end of its pass.
    for (i, pair) in events.windows(2).enumerate() {
        let gap = at(&pair[1]["payload"]["first_seen"])
            .duration_since(at(&pair[0]["payload"]["first_seen"]))
            .unwrap()
            .as_secs_f64();
        let least = if i == 0 { 4.0 } else { 8.0 };
        assert!(
            gap > least,
            "two events {gap:.1} s apart in one pass: {events:?}"
        );
    }
    // Traffic counting sees the same car cross the middle, left to right ("in"
    // for a vertical line), and names its class.
    let crossings = rig.observer.events_in("vehicle_crossing");
    assert!(!crossings.is_empty(), "no vehicle_crossing event");
    for c in &crossings {
        assert_eq!(c["payload"]["line"], "middle", "{c}");
        assert_eq!(c["payload"]["direction"], "in", "{c}");
        let class = c["payload"]["class"].as_str().unwrap_or_default();
        assert!(["car", "truck", "bus"].contains(&class), "{c}");
    }
    wait_until("a vehicle count", Duration::from_secs(10), || {
        rig.observer
            .events_in("vehicle_count")
            .iter()
            .any(|e| e["payload"]["lines"]["middle"]["in"].as_u64() > Some(0))
    })
    .await;
    let counts = schema("people-count.json");
    for e in rig.observer.events_in("vehicle_count") {
        assert!(counts.is_valid(&e["payload"]), "{e}");
    }
    // The empty road costs the detector only.
    let last = rig.observer.metrics().last().cloned().unwrap();
    assert!(
        last["plates"]["frames_still"].as_u64().unwrap() > 0,
        "{last}"
    );
    assert!(last["detector"]["frames"].as_u64().unwrap() > 0, "{last}");
    assert_schemas(&rig.observer);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_unread_vehicles_on_a_car_whose_plate_is_hidden_is_reported_without_a_plate() {
    let Some(plates_dev) = plates_dev() else {
        return;
    };
    let _turn = DAEMONS.lock().await;
    let models = models();
    let src = test_dir("plates-unread-src");
    let video = src.path().join("cars.mp4");
    // The same real car twice per loop: first with no plate — its plate (92,201
    // 122x28 in the photograph) and its badges painted over: with the plate gone,
    // "2.0 TDI" reads as a plate, "20T0" — then as it is. In both, the
    // photographer's caption and a small car far behind (another vehicle) are
    // painted over.
    let (caption, far_car) = ([0, 368, 130, 19], [515, 75, 85, 40]);
    let (plate, model, engine) = ([84, 193, 138, 44], [28, 186, 38, 26], [246, 194, 46, 26]);
    real_car_passes(
        &plates_dev.join("eu/eu11.jpg"),
        &video,
        8,
        5,
        &[
            &[plate, model, engine, caption, far_car],
            &[caption, far_car],
        ],
    );
    let rig = Rig::new(
        "plates-unread",
        &format!(
            "[health]\nmetrics_interval = \"1s\"\n\
             [video]\nenabled = true\nsource = \"file://{}\"\nwidth = 1280\nheight = 720\nframerate = 10\n\
             analytics_width = 1280\nanalytics_height = 720\nanalytics_fps = 5\n\
             [upload]\nmedia_dir = \"{}\"\n\
             [plates]\nenabled = true\nmodels_dir = \"{}\"\nregion = \"eu\"\nthreads = 2\nunread_vehicles = true\n\
             [detector]\nenabled = true\nmodel = \"{}\"\n",
            video.display(),
            src.path().join("media").display(),
            models.display(),
            models.join("nanodet-m-416.onnx").display(),
        ),
    )
    .await;
    rig.recordings();
    let daemon = rig.daemon(0);
    let unread = |events: &[Value]| {
        events
            .iter()
            .filter(|e| e["payload"]["plate"].is_null())
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    loop {
        let events = plate_events(&rig);
        if unread(&events) >= 2 && events.len() - unread(&events) >= 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no two hidden and two readable passes in 240 s: {events:#?}\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut events = plate_events(&rig);
    events.sort_by_key(|e| at(&e["payload"]["first_seen"]));
    let log = daemon.log_text();
    let payload = schema("plate.json");
    for (i, e) in events.iter().enumerate() {
        let p = &e["payload"];
        assert!(payload.is_valid(p), "{p}");
        let class = p["vehicle"]["class"].as_str().unwrap_or_default();
        assert!(["car", "truck", "bus"].contains(&class), "{p}");
        if p["plate"].is_null() {
            let reason = p["reason"].as_str().unwrap_or_default();
            assert!(["not_read", "too_few_reads"].contains(&reason), "{p}");
            assert!(p["track"].is_null(), "{p}");
            // The snapshot shows the vehicle where it looked largest.
            let rel = p["snapshot"].as_str().unwrap();
            let jpeg = std::fs::read(src.path().join("media").join(rel)).unwrap();
            assert_eq!(&jpeg[..2], &[0xff, 0xd8], "{rel} is not a JPEG");
            let b: Vec<u64> = serde_json::from_value(p["box"].clone()).unwrap();
            assert!(b[2] >= 300 && b[3] >= 200, "the car's box: {p}");
        } else {
            assert_eq!(p["plate"], "BS47040", "{events:?}");
            assert!(p["reason"].is_null(), "{p}");
        }
        // The first pass may be seen only in part while the models warm up.
        if i > 0 {
            assert_eq!(p["direction"], "right", "{p}");
        }
    }
    // One event per pass, hidden and readable in turn: a readable car is not
    // also reported unread, and a hidden one is reported once.
    for pair in events.windows(2).skip(1) {
        assert_ne!(
            pair[0]["payload"]["plate"].is_null(),
            pair[1]["payload"]["plate"].is_null(),
            "two events of one kind in a row: {events:?}\n{log}"
        );
    }
    assert!(log.contains("vehicle passed without a plate read"), "{log}");
    wait_until(
        "the unread vehicles counted",
        Duration::from_secs(10),
        || {
            rig.observer
                .metrics()
                .last()
                .is_some_and(|m| m["plates"]["vehicles_unread"].as_u64() >= Some(2))
        },
    )
    .await;
    assert_schemas(&rig.observer);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_detector_text_that_is_on_no_vehicle_is_never_read() {
    let _turn = DAEMONS.lock().await;
    let models = models();
    // The test source: moving patterns and a clock overlay, no vehicle.
    let rig = Rig::new(
        "plates-no-vehicle",
        &format!(
            "[health]\nmetrics_interval = \"1s\"\n\
             [video]\nenabled = true\nsource = \"test\"\nwidth = 1280\nheight = 720\nframerate = 10\n\
             analytics_width = 1280\nanalytics_height = 720\nanalytics_fps = 5\n\
             [plates]\nenabled = true\nmodels_dir = \"{}\"\nmotion = 0.0\nsnapshots = false\n\
             [detector]\nenabled = true\nmodel = \"{}\"\n",
            models.display(),
            models.join("nanodet-m-416.onnx").display(),
        ),
    )
    .await;
    rig.recordings();
    let _daemon = rig.daemon(0);
    wait_until(
        "40 frames through the detector",
        Duration::from_secs(90),
        || {
            rig.observer
                .metrics()
                .last()
                .is_some_and(|m| m["detector"]["frames"].as_u64().unwrap_or(0) >= 40)
        },
    )
    .await;
    let last = rig.observer.metrics().last().cloned().unwrap();
    assert_eq!(last["plates"]["frames_read"], 0, "{last}");
    assert!(
        last["plates"]["frames_still"].as_u64().unwrap() >= 40,
        "{last}"
    );
    assert!(plate_events(&rig).is_empty());
}

/// The Python that runs train/render.py (tests/run.sh makes one with Pillow and
/// numpy: `EDGECAM_TEST_PYTHON`).
fn render_python() -> PathBuf {
    let python = std::env::var_os("EDGECAM_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/render-venv/bin/python")
        });
    assert!(
        python.exists(),
        "no Python for the plate renderer at {}: tests/run.sh makes it (EDGECAM_TEST_PYTHON)",
        python.display()
    );
    python
}

/// Renders `count` plates with `seed` in `fonts` (train/render.py) as JPEGs in
/// `dir`, named NNNNN_LABEL.jpg.
fn render(dir: &Path, seed: u32, count: u32, fonts: &str) -> Vec<(PathBuf, String)> {
    let out = std::process::Command::new(render_python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("train/render.py"))
        .args(["--seed", &seed.to_string(), "--count", &count.to_string()])
        .args(["--fonts", fonts, "--jpg"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut files: Vec<(PathBuf, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            let label = stem.split_once('_').unwrap().1.to_owned();
            (p, label)
        })
        .collect();
    files.sort();
    assert_eq!(files.len(), count as usize);
    files
}

#[test]
fn the_plate_renderer_is_deterministic_with_a_seed() {
    let _turn = DAEMONS.blocking_lock();
    let dir = test_dir("render-seed");
    let [a, b, c] = ["a", "b", "c"].map(|n| dir.path().join(n));
    let first = render(&a, 5, 20, "test");
    let again = render(&b, 5, 20, "test");
    let other = render(&c, 6, 20, "test");
    let bytes = |v: &[(PathBuf, String)]| -> Vec<(Vec<u8>, String)> {
        v.iter()
            .map(|(p, l)| (std::fs::read(p).unwrap(), l.clone()))
            .collect()
    };
    assert_eq!(bytes(&first), bytes(&again));
    let differ = bytes(&first)
        .iter()
        .zip(bytes(&other))
        .filter(|(x, y)| **x != *y)
        .count();
    assert_eq!(differ, 20, "another seed renders other plates");
}

/// edgecam's recogniser, alone (no layouts), reads plates rendered with a seed
/// and in fonts it was never trained on (train/render.py's test fonts): each
/// image is one plate's main line as the daemon crops it.
#[test]
fn the_plate_recogniser_reads_rendered_plates_it_never_saw() {
    let _turn = DAEMONS.blocking_lock();
    let dir = test_dir("render-read");
    let plates = render(dir.path(), 424_242, 400, "test");
    let paths: Vec<&Path> = plates.iter().map(|(p, _)| p.as_path()).collect();
    let args = ["--line", "--recognisers", "edgecam", "--region", "any"];
    let lines = read_plates_with(&args, &paths);
    assert_eq!(lines.len(), plates.len());
    let mut wrong = Vec::new();
    for ((_, label), line) in plates.iter().zip(&lines) {
        // The recogniser alone, before any layout.
        let read = line["read"]["edgecam"].as_str().unwrap();
        if read != label {
            wrong.push(format!("{label} read {read:?}"));
        }
    }
    let exact = 1.0 - wrong.len() as f64 / plates.len() as f64;
    eprintln!(
        "exact {:.1} % of {} rendered plates; wrong: {wrong:?}",
        exact * 100.0,
        plates.len()
    );
    assert!(exact >= 0.95, "exact {:.3}: {wrong:?}", exact);
}
