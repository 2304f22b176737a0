//! The object detector (`edgecam detect`) on real pictures and video from Debian's
//! opencv-doc package (fetched by tests/run.sh, never committed), against boxes
//! labelled by hand; and bad models and options refused with clear errors.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::Value;

fn dir(var: &str, fetched_by: &str) -> PathBuf {
    PathBuf::from(std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run bash tests/run.sh, which fetches {fetched_by}")
    }))
}

fn models() -> PathBuf {
    dir("EDGECAM_TEST_MODELS", "the models")
}

fn media() -> PathBuf {
    dir("EDGECAM_TEST_MEDIA", "opencv-doc's pictures")
}

/// `edgecam detect --json` on `input`: each line's objects.
fn detect(input: &std::path::Path, extra: &[&str]) -> Vec<Vec<Value>> {
    let models = models();
    let mut args: Vec<&std::ffi::OsStr> = vec!["detect".as_ref(), "--json".as_ref()];
    args.extend(["--models".as_ref(), models.as_os_str()]);
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    args.push(input.as_os_str());
    edgecam_stdout(&args)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["objects"]
                .as_array()
                .unwrap_or_else(|| panic!("{l}"))
                .clone()
        })
        .collect()
}

fn iou(a: [f64; 4], b: &Value) -> f64 {
    let b: Vec<f64> = b
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
}

/// Whether an object of `class` overlaps `want` at IoU 0.5 or more.
fn found(objects: &[Value], class: &str, want: [f64; 4]) -> bool {
    objects
        .iter()
        .any(|o| o["class"] == class && iou(want, &o["box"]) >= 0.5)
}

#[test]
fn a_footballer_and_his_ball_are_found_where_they_are() {
    let frames = detect(&media().join("messi5.jpg"), &[]);
    let objects = &frames[0];
    // Labelled by hand on the 548x342 picture.
    assert!(
        found(objects, "person", [68.0, 60.0, 458.0, 336.0]),
        "{objects:?}"
    );
    assert!(
        found(objects, "sports ball", [337.0, 289.0, 388.0, 336.0]),
        "{objects:?}"
    );
}

#[test]
fn the_three_walkers_of_a_real_pedestrian_scene_are_found_and_nothing_else() {
    let frames = detect(
        &media().join("vtest.avi"),
        &["--fps", "1", "--class", "person", "--min-score", "0.5"],
    );
    assert!(frames.len() >= 60, "{} frames", frames.len());
    let first = &frames[0];
    // Labelled by hand on the first 768x576 frame; `detect` decodes it 640 wide.
    let scale = 640.0 / 768.0;
    let people = [
        [500.0, 157.0, 530.0, 233.0],
        [640.0, 240.0, 684.0, 321.0],
        [253.0, 220.0, 283.0, 308.0],
    ];
    for p in people {
        assert!(
            found(first, "person", p.map(|v| v * scale)),
            "{p:?} not in {first:?}"
        );
    }
    assert_eq!(first.len(), 3, "{first:?}");
    assert!(frames
        .iter()
        .all(|f| f.iter().all(|o| o["class"] == "person")));
}

#[test]
fn a_missing_corrupt_or_wrong_model_and_an_unknown_class_are_refused_by_name() {
    let tmp = test_dir("detector-bad");
    let image = media().join("messi5.jpg");
    let run = |models: &std::path::Path, extra: &[&str]| {
        let out = edgecam()
            .arg("detect")
            .arg("--models")
            .arg(models)
            .args(extra)
            .arg(&image)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let missing = run(tmp.path(), &[]);
    assert!(
        missing.contains("nanodet-m-416.onnx") && missing.contains("fetch-detector.sh"),
        "{missing}"
    );
    std::fs::write(tmp.path().join("nanodet-m-416.onnx"), b"not a model").unwrap();
    let corrupt = run(tmp.path(), &[]);
    assert!(corrupt.contains("nanodet-m-416.onnx"), "{corrupt}");
    // A real model of another shape: the plate text detector.
    std::fs::copy(
        models().join("ch_PP-OCRv4_det_infer.onnx"),
        tmp.path().join("nanodet-m-416.onnx"),
    )
    .unwrap();
    let wrong = run(tmp.path(), &[]);
    assert!(wrong.contains("nanodet-m-416.onnx"), "{wrong}");
    let class = run(&models(), &["--class", "unicorn"]);
    assert!(
        class.contains("unicorn") && class.contains("COCO"),
        "{class}"
    );
}

/// A daemon whose file source loops opencv-doc's pedestrian video (768x576, about
/// 80 s) with people counting on `line`, and `detector` as its `[detector]`.
async fn pedestrian_rig(name: &str, detector: &str) -> Rig {
    let video = media().join("vtest.avi");
    Rig::new(
        name,
        &format!(
            "[health]\nmetrics_interval = \"1s\"\n\
             [video]\nenabled = true\nsource = \"file://{}\"\nwidth = 768\nheight = 576\nframerate = 10\n\
             analytics_width = 768\nanalytics_height = 576\nanalytics_fps = 5\n\
             [people]\nenabled = true\ninterval = \"2s\"\ncrossing_events = true\n\
             lines = [{{ name = \"middle\", a = [0.5, 0.0], b = [0.5, 1.0] }}]\n\
             [detector]\n{detector}\n",
            video.display()
        ),
    )
    .await
}

/// `pedestrian_rig` with the detector on `model`, its daemon started.
async fn pedestrian_daemon(name: &str, model: &Path) -> (Rig, Daemon) {
    let rig = pedestrian_rig(
        name,
        &format!("enabled = true\nmodel = \"{}\"", model.display()),
    )
    .await;
    rig.recordings();
    let daemon = rig.daemon(0);
    (rig, daemon)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_counts_the_people_of_a_real_pedestrian_clip_by_their_tracks() {
    let model = models().join("nanodet-m-416.onnx");
    let (rig, daemon) = pedestrian_daemon("people-detector", &model).await;
    // Walkers cross the middle both ways in the first 20 s of the clip.
    let sum = |rig: &Rig, dir: &str| -> u64 {
        rig.observer
            .events_in("people_count")
            .iter()
            .map(|e| e["payload"]["lines"]["middle"][dir].as_u64().unwrap_or(0))
            .sum()
    };
    wait_until(
        "walkers counted both ways",
        Duration::from_secs(120),
        || sum(&rig, "in") >= 1 && sum(&rig, "out") >= 1,
    )
    .await;
    let log = daemon.log_text();
    assert!(log.contains("tracked persons"), "{log}");
    assert!(log.contains("object detector loaded"), "{log}");
    // Crossing events carry the track's id; the detector's work is in the metrics.
    let crossings = rig.observer.events_in("people_crossing");
    assert!(
        crossings
            .iter()
            .all(|c| c["payload"]["track"].as_u64().is_some()),
        "{crossings:?}"
    );
    let metrics = rig.observer.metrics();
    let last = metrics.last().expect("metrics");
    assert!(last["detector"]["frames"].as_u64().unwrap() > 0, "{last}");
    assert_eq!(last["detector"]["errors"], 0, "{last}");

    // The tracker's settings changed from the cloud: the detector restarts, the
    // open count interval closes early (partial), and counting goes on with them.
    rig.observer
        .publish_retained(
            &format!("{CAMERA}/config"),
            br#"{"version":1,"detector":{"confirm_hits":3,"keep_score":0.25,"max_lost":"3s"}}"#,
        )
        .await;
    rig.observer.wait_config_applied(1).await;
    let restarted = |log: &str| log.matches("people counting on").count();
    wait_until(
        "counting restarted with the new tracker",
        Duration::from_secs(30),
        || restarted(&daemon.log_text()) >= 2,
    )
    .await;
    let counted_before = rig.observer.events_in("people_count").len();
    wait_until("counts after the change", Duration::from_secs(30), || {
        rig.observer.events_in("people_count").len() >= counted_before + 2
    })
    .await;
    let counts = rig.observer.events_in("people_count");
    assert!(
        counts.iter().any(|c| c["payload"]["partial"] == true),
        "no partial interval at the change"
    );
    let log = daemon.log_text();
    assert!(
        log.matches("object detector loaded").count() >= 2,
        "the detection stage was not restarted: {log}"
    );
    assert_schemas(&rig.observer);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_detector_model_is_reported_restarted_with_backoff_and_recovers_once_replaced() {
    let tmp = test_dir("detector-corrupt-model");
    let model = tmp.path().join("nanodet-m-416.onnx");
    std::fs::write(&model, b"not a model").unwrap();
    let (rig, daemon) = pedestrian_daemon("people-detector-bad", &model).await;
    // The error names the file, in the log and in the metrics; the stage is
    // started again and again; counts keep coming (empty: nobody can be seen),
    // and so does everything else.
    let stage = |m: &Value| m["stages"]["object_detection"].clone();
    wait_until(
        "the model error in the metrics, the stage restarting",
        Duration::from_secs(60),
        || {
            rig.observer.metrics().iter().any(|m| {
                m["detector"]["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("nanodet-m-416.onnx"))
                    && stage(m)["restarts"].as_u64() >= Some(2)
                    && stage(m)["last_error"]
                        .as_str()
                        .is_some_and(|e| e.contains("nanodet-m-416.onnx"))
            })
        },
    )
    .await;
    let before = rig.observer.events_of_kind("people_count");
    wait_until(
        "count events after the failure",
        Duration::from_secs(30),
        || rig.observer.events_of_kind("people_count") >= before + 2,
    )
    .await;
    let log = daemon.log_text();
    assert!(
        log.contains("stage stopped; starting it again after a backoff")
            && log.contains("object_detection")
            && log.contains("nanodet-m-416.onnx"),
        "{log}"
    );
    let last = rig.observer.metrics().last().cloned().unwrap();
    assert!(last["detector"]["errors"].as_u64().unwrap() >= 2, "{last}");
    assert!(
        last["video"]["frames_delivered"].as_u64().unwrap() > 0,
        "{last}"
    );
    assert_eq!(last["stages"]["video"]["state"], "running", "{last}");
    // The fault gone, the next restart takes: frames are analysed again and
    // people are counted on the middle line.
    std::fs::copy(models().join("nanodet-m-416.onnx"), &model).unwrap();
    wait_until(
        "the detector running again",
        Duration::from_secs(90),
        || {
            rig.observer.metrics().last().is_some_and(|m| {
                stage(m)["state"] == "running" && m["detector"]["frames"].as_u64() > Some(10)
            })
        },
    )
    .await;
    assert!(daemon.log_text().contains("stage starting again"));
    assert_schemas(&rig.observer);
}

#[test]
fn unknown_detector_classes_and_bad_sizes_are_refused_by_field() {
    let tmp = test_dir("detector-config");
    let pki = Pki::generate(tmp.path());
    let cfg = DaemonConfig::offline(
        tmp.path(),
        &pki,
        "[detector]\nenabled = true\nclasses = [\"person\", \"lorry\"]\n\
         input_size = [400, 0]\nmin_scores = { bicycle = 0.3 }\n",
    );
    let config = tmp.path().join("edgecam.toml");
    cfg.write(&config);
    let out = edgecam().arg("check-config").arg(&config).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for field in [
        "detector.classes[1]",
        "lorry",
        "detector.input_size",
        "detector.min_scores.bicycle",
    ] {
        assert!(err.contains(field), "{field} not in: {err}");
    }
    // Traffic counting follows the detector's vehicles: not without it.
    DaemonConfig::offline(tmp.path(), &pki, "[traffic]\nenabled = true\n").write(&config);
    let out = edgecam().arg("check-config").arg(&config).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("traffic.enabled") && err.contains("[detector]"),
        "{err}"
    );
}

/// The same objects, boxes and scores from ONNX Runtime as from tract, at the
/// model's square input and at the daemon's default (416 wide, the frame's aspect
/// ratio), on a photograph and on frames of a real video.
#[cfg(feature = "ort")]
#[test]
fn onnxruntime_finds_what_tract_finds_at_any_input_size() {
    let lib = models().join("libonnxruntime.so");
    assert!(
        lib.exists(),
        "no {}: run `bash deploy/fetch-onnxruntime.sh {}` (tests/run.sh does)",
        lib.display(),
        models().display()
    );
    let lib = lib.to_str().unwrap();
    let inputs = [
        (media().join("messi5.jpg"), vec![]),
        (media().join("vtest.avi"), vec!["--fps", "1"]),
    ];
    let mut compared = 0;
    for (input, extra) in &inputs {
        for size in ["416x416", "416x0"] {
            let run = |backend: &[&str]| {
                let mut args = vec!["--input", size, "--min-score", "0.3"];
                args.extend(extra);
                args.extend(backend);
                detect(input, &args)
            };
            let tract = run(&["--backend", "tract"]);
            let ort = run(&["--backend", "onnxruntime", "--onnxruntime-library", lib]);
            assert_eq!(tract.len(), ort.len(), "{} at {size}", input.display());
            for (t, o) in tract.iter().zip(&ort) {
                assert_eq!(t.len(), o.len(), "{size}: {t:?}\n{o:?}");
                for (a, b) in t.iter().zip(o) {
                    assert_eq!(a["class"], b["class"], "{size}: {a} vs {b}");
                    let (sa, sb) = (a["score"].as_f64().unwrap(), b["score"].as_f64().unwrap());
                    assert!((sa - sb).abs() < 1e-3, "{size}: {a} vs {b}");
                    let ba: Vec<f64> = serde_json::from_value(a["box"].clone()).unwrap();
                    let bb: Vec<f64> = serde_json::from_value(b["box"].clone()).unwrap();
                    assert!(
                        ba.iter().zip(&bb).all(|(x, y)| (x - y).abs() < 0.5),
                        "{size}: {a} vs {b}"
                    );
                    compared += 1;
                }
            }
        }
    }
    assert!(compared >= 100, "{compared} objects compared");
    // A missing library is a clear error naming it.
    let out = edgecam()
        .args([
            "detect",
            "--backend",
            "onnxruntime",
            "--onnxruntime-library",
            "/nonexistent/libonnxruntime.so",
            "--models",
        ])
        .arg(models())
        .arg(media().join("messi5.jpg"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    // It names the library and how to fetch it, not the detector's model.
    assert!(
        err.contains("/nonexistent/libonnxruntime.so")
            && err.contains("deploy/fetch-onnxruntime.sh"),
        "{err}"
    );
    assert!(!err.contains("fetch-detector.sh"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_load_that_hangs_is_shown_busy_with_the_other_stages_going_on_and_ends_when_it_returns(
) {
    // A model file that is a named pipe: the detector's load blocks in open()
    // until something writes it, as a read from a dying card can block.
    let tmp = test_dir("detector-hung-load");
    let model = tmp.path().join("nanodet-m-416.onnx");
    let made = std::process::Command::new("mkfifo")
        .arg(&model)
        .status()
        .unwrap();
    assert!(made.success());
    let (rig, daemon) = pedestrian_daemon("people-detector-hung", &model).await;
    let stage = |m: &Value| m["stages"]["object_detection"].clone();
    // From 10 s on the stage shows how long its work has run; the watchdog is
    // still fed (that stops at 300 s), and the other stages go on.
    wait_until(
        "the stuck load in the metrics",
        Duration::from_secs(60),
        || {
            rig.observer
                .metrics()
                .iter()
                .any(|m| stage(m)["busy_s"].as_u64() >= Some(10))
        },
    )
    .await;
    let before = rig.observer.events_of_kind("people_count");
    let delivered = |rig: &Rig| {
        rig.observer.metrics().last().unwrap()["video"]["frames_delivered"]
            .as_u64()
            .unwrap()
    };
    let frames = delivered(&rig);
    wait_until(
        "counts and frames while the load hangs",
        Duration::from_secs(30),
        || rig.observer.events_of_kind("people_count") >= before + 2 && delivered(&rig) > frames,
    )
    .await;
    let last = rig.observer.metrics().last().cloned().unwrap();
    assert_eq!(last["stages"]["video"]["state"], "running", "{last}");
    assert!(!daemon.log_text().contains("object detector loaded"));
    // The open returns (a pipe cannot be mapped: the load fails, naming the
    // file), the model is in place by the next start, and the stage runs, no
    // longer shown busy.
    let ready = tmp.path().join("model.part");
    std::fs::copy(models().join("nanodet-m-416.onnx"), &ready).unwrap();
    let pipe = std::fs::OpenOptions::new()
        .write(true)
        .open(&model)
        .unwrap();
    std::fs::rename(&ready, &model).unwrap();
    drop(pipe);
    wait_until(
        "the detector running, no longer busy",
        Duration::from_secs(90),
        || {
            rig.observer.metrics().last().is_some_and(|m| {
                stage(m)["state"] == "running"
                    && stage(m).get("busy_s").is_none()
                    && m["detector"]["frames"].as_u64() > Some(5)
            })
        },
    )
    .await;
    let log = daemon.log_text();
    assert!(
        log.contains("stage stopped; starting it again after a backoff")
            && log.contains("nanodet-m-416.onnx")
            && log.contains("object detector loaded"),
        "{log}"
    );
    assert_schemas(&rig.observer);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_still_scene_skips_the_detector_until_its_gate_is_turned_off_from_the_cloud() {
    // A real photograph of a house held still, looped: kites in the sky, nothing
    // the detector starts a track on.
    let tmp = test_dir("detector-still-video");
    let video = tmp.path().join("still.mp4");
    let made = std::process::Command::new("gst-launch-1.0")
        .args([
            "-q",
            "filesrc",
            &format!("location={}", media().join("home.jpg").display()),
        ])
        .args([
            "!",
            "jpegdec",
            "!",
            "imagefreeze",
            "num-buffers=50",
            "!",
            "videoconvert",
        ])
        .args([
            "!",
            "videoscale",
            "!",
            "video/x-raw,width=640,height=360,framerate=10/1",
        ])
        .args([
            "!",
            "x264enc",
            "speed-preset=ultrafast",
            "key-int-max=10",
            "!",
            "h264parse",
        ])
        .args([
            "!",
            "mp4mux",
            "!",
            "filesink",
            &format!("location={}", video.display()),
        ])
        .status()
        .unwrap();
    assert!(made.success());
    let model = models().join("nanodet-m-416.onnx");
    let rig = Rig::new(
        "detector-still",
        &format!(
            "[health]\nmetrics_interval = \"1s\"\n\
             [video]\nenabled = true\nsource = \"file://{}\"\nwidth = 640\nheight = 360\nframerate = 10\n\
             analytics_width = 640\nanalytics_height = 360\nanalytics_fps = 5\n\
             [people]\nenabled = true\ninterval = \"2s\"\n\
             lines = [{{ name = \"middle\", a = [0.5, 0.0], b = [0.5, 1.0] }}]\n\
             [detector]\nenabled = true\nmodel = \"{}\"\n",
            video.display(),
            model.display()
        ),
    )
    .await;
    let recordings = rig.recordings();
    let daemon = rig.daemon(0);
    let _ = recordings;
    let detector = |rig: &Rig| {
        rig.observer
            .metrics()
            .last()
            .map(|m| {
                (
                    m["detector"]["frames"].as_u64().unwrap(),
                    m["detector"]["frames_still"].as_u64().unwrap(),
                )
            })
            .unwrap_or((0, 0))
    };
    // Most frames are left out (of 5 analysed frames a second, one is detected:
    // still_every), and counted.
    wait_until("still frames left out", Duration::from_secs(60), || {
        let (run, still) = detector(&rig);
        run >= 3 && still >= 12
    })
    .await;
    let (run, still) = detector(&rig);
    assert!(still > run, "run {run}, left out {still}");
    // Off from the cloud: the stage restarts and every frame is detected.
    rig.observer
        .publish_retained(
            &format!("{CAMERA}/config"),
            br#"{"version":1,"detector":{"motion":0}}"#,
        )
        .await;
    rig.observer.wait_config_applied(1).await;
    wait_until("the detector restarted", Duration::from_secs(30), || {
        daemon.log_text().matches("object detector loaded").count() >= 2
    })
    .await;
    let (run, still) = detector(&rig);
    wait_until("frames detected again", Duration::from_secs(30), || {
        detector(&rig).0 >= run + 10
    })
    .await;
    // A frame or two may have been left out between the reading and the restart.
    assert!(detector(&rig).1 <= still + 2, "{:?}", detector(&rig));
    assert_schemas(&rig.observer);
}
