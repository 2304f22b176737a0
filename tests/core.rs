//! A camera without a part: with `upload.enabled = false`, and the core build
//! (`cargo test --no-default-features --test core`: no `analytics`, no
//! `uploads`), which records, counts people by moving blobs and reports over the
//! AWS-like front, refuses configurations that ask for what it lacks, and answers
//! file requests with why it cannot upload.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

/// Sends a file request and waits for its one answer; checks that it is a
/// refusal saying `why`, valid against the response schema, and counted.
async fn request_is_refused(rig: &Rig, why: &str) {
    // The first metrics message follows the subscriptions on the same connection.
    wait_until("the daemon subscribed", Duration::from_secs(20), || {
        !rig.observer.metrics().is_empty()
    })
    .await;
    let id = "asked-for-a-clip";
    rig.observer
        .file_request(json!({"request_id": id, "file": "x.mkv", "s3": {"bucket": "b", "key": "k"}}))
        .await;
    // A request without a readable id is answered too, with a null id.
    rig.observer
        .publish(&format!("{CAMERA}/file/request"), b"{not json")
        .await;
    wait_until("both requests answered", Duration::from_secs(20), || {
        !rig.observer.responses_for(id).is_empty() && !rig.observer.responses_for_null().is_empty()
    })
    .await;
    let answer = &rig.observer.responses_for(id)[0];
    assert_eq!(answer["state"], "rejected", "{answer}");
    assert!(answer["reason"].as_str().unwrap().contains(why), "{answer}");
    assert!(schema("file-response.json").is_valid(answer), "{answer}");
    wait_until("the refusals counted", Duration::from_secs(20), || {
        let m = rig.observer.metrics();
        m.last().is_some_and(|m| {
            m["uploads"]["rejected"] == 2
                && m["stages"]["file_requests_refused"]["state"] == "running"
                && m["stages"].get("uploads").is_none()
        })
    })
    .await;
}

#[cfg(feature = "uploads")]
#[tokio::test(flavor = "multi_thread")]
async fn with_uploads_off_a_file_request_is_rejected_with_the_reason() {
    let rig = Rig::new(
        "uploads-off",
        "[health]\nmetrics_interval = \"1s\"\n[upload]\nenabled = false\n",
    )
    .await;
    let daemon = rig.daemon(0);
    request_is_refused(&rig, "upload.enabled is false").await;
    assert!(daemon.log_text().contains("file request rejected"));
    assert_schemas(&rig.observer);
}

/// `edgecam check-config` on `extra`: its exit status and standard error.
#[cfg(not(any(feature = "analytics", feature = "uploads")))]
fn check_config(dir: &std::path::Path, extra: &str) -> (bool, String) {
    let path = dir.join("check.toml");
    std::fs::write(
        &path,
        format!(
            "[identity]\ncamera_id = \"cam\"\nbroker_host = \"localhost\"\n\
             ca_file = \"ca.pem\"\ncert_file = \"cert.pem\"\nkey_file = \"key.pem\"\n{extra}"
        ),
    )
    .unwrap();
    let out = edgecam()
        .args(["check-config", "--values-only"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// GStreamer's Rust bindings reach GIO only from glib's generic object
/// constructor (`ElementFactory::make`, `Pipeline::new`); the daemon builds its
/// pipelines from descriptions instead, so the linker drops libgio and the
/// libraries it brings (libmount, libblkid, libselinux), which a camera would
/// otherwise load at every start, video or not: 0.5-0.8 MiB of idle RSS
/// (README, A smaller build). `ldd` lists what the loader maps at start.
#[test]
fn the_daemon_does_not_load_gio_at_start() {
    let out = std::process::Command::new("ldd")
        .arg(edgecam_bin())
        .output()
        .expect("ldd (Debian package libc-bin)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let libs = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(libs.contains("libgstreamer-1.0"), "{libs}");
    assert!(
        !libs.contains("libgio"),
        "the daemon loads GIO again: a `gst::ElementFactory::make` or `Pipeline::new`? {libs}"
    );
}

#[cfg(not(any(feature = "analytics", feature = "uploads")))]
#[test]
fn the_core_build_names_its_features_and_refuses_settings_that_need_others() {
    let version = edgecam_stdout(&["--version".as_ref()]);
    assert!(version.contains("features: none"), "{version}");
    let dir = test_dir("core-check");
    // The defaults need neither feature: uploads default to off in this build.
    let (ok, err) = check_config(dir.path(), "");
    assert!(ok, "{err}");
    for (extra, field, feature) in [
        ("[plates]\nenabled = true\n", "plates.enabled", "analytics"),
        (
            "[detector]\nenabled = true\n",
            "detector.enabled",
            "analytics",
        ),
        ("[upload]\nenabled = true\n", "upload.enabled", "uploads"),
    ] {
        let (ok, err) = check_config(dir.path(), extra);
        assert!(!ok, "{extra} accepted");
        assert!(
            err.contains(field) && err.contains(&format!("no `{feature}` feature")),
            "{extra}: {err}"
        );
    }
}

#[cfg(not(any(feature = "analytics", feature = "uploads")))]
#[tokio::test(flavor = "multi_thread")]
async fn the_core_build_records_counts_people_and_refuses_file_requests() {
    let rig = Rig::new(
        "core",
        "[health]\nmetrics_interval = \"1s\"\n\
         [video]\nenabled = true\nsource = \"test\"\nwidth = 320\nheight = 240\nframerate = 10\n\
         segment_duration = \"2s\"\nanalytics_fps = 5\n\
         [people]\nenabled = true\ninterval = \"2s\"\n\
         lines = [{ name = \"door\", a = [0.0, 0.5], b = [1.0, 0.5] }]\n",
    )
    .await;
    let recordings = rig.recordings();
    let daemon = rig.daemon(0);
    wait_until(
        "people counted by moving blobs, a segment recorded",
        Duration::from_secs(60),
        || {
            !rig.observer.events_in("people_count").is_empty()
                && std::fs::read_dir(&recordings).is_ok_and(|d| {
                    d.flatten()
                        .filter(|e| e.path().extension().is_some_and(|x| x == "mkv"))
                        .count()
                        >= 2
                })
        },
    )
    .await;
    let counted = rig.observer.events_in("people_count");
    assert!(
        counted[0]["payload"]["lines"]["door"].is_object(),
        "{}",
        counted[0]
    );
    request_is_refused(&rig, "built without the `uploads` feature").await;
    let stages = rig.observer.metrics().last().unwrap()["stages"].clone();
    for stage in ["video", "people_counting", "file_requests_refused"] {
        assert_eq!(stages[stage]["state"], "running", "{stages}");
    }
    assert!(stages.get("plate_reading").is_none(), "{stages}");
    assert!(
        !daemon.log_text().contains(" ERROR "),
        "{}",
        daemon.log_text()
    );
    assert_schemas(&rig.observer);
}
