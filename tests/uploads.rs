//! Uploads on request over MQTT, to a real S3-compatible server that checks SigV4
//! signatures (s3s-fs): by bucket and key (multipart) and by a presigned URL; the
//! hostile requests; resuming after the path to S3 is cut and after kill -9.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const MIB: usize = 1024 * 1024;

fn sha256_file(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// A file of `len` pseudo-random bytes.
fn random_file(path: &Path, len: usize) {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ len as u64;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn upload_config(media: &Path, s3_port: u16, extra: &str) -> String {
    format!(
        "[health]\nmetrics_interval = \"1s\"\n\
         [upload]\nmedia_dir = \"{}\"\nallow_plain_http = true\npart_size = {}\n\
         progress_interval = \"200ms\"\nretry_min = \"200ms\"\nretry_max = \"1s\"\n{extra}\
         [upload.s3]\nendpoint = \"http://127.0.0.1:{s3_port}\"\nforce_path_style = true\nregion = \"{S3_REGION}\"\n",
        media.display(),
        5 * MIB,
    )
}

/// Waits until the daemon has subscribed: its first metrics message follows its
/// subscriptions on the same connection.
async fn wait_subscribed(rig: &Rig) {
    wait_until(
        "the daemon online and subscribed",
        Duration::from_secs(20),
        || !rig.observer.metrics().is_empty(),
    )
    .await;
}

async fn request(rig: &Rig, body: Value) {
    rig.observer.file_request(body).await;
}

/// Waits for the final response (done, rejected, or failed without retry).
async fn outcome(rig: &Rig, id: &str, within: Duration) -> Value {
    let mut last = Value::Null;
    wait_until(&format!("an outcome for {id}"), within, || {
        last = rig
            .observer
            .responses_for(id)
            .into_iter()
            .rev()
            .find(|r| {
                r["state"] == "done"
                    || r["state"] == "rejected"
                    || (r["state"] == "failed" && r["retrying"] == false)
            })
            .unwrap_or(Value::Null);
        !last.is_null()
    })
    .await;
    last
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_by_bucket_and_by_presigned_url_arrive_intact_and_are_never_repeated() {
    let dir = test_dir("uploads-s3");
    let s3 = S3Server::start(&dir.path().join("s3"));
    s3.bucket("clips");
    let media = dir.path().join("media");
    random_file(&media.join("recordings/big.bin"), 21 * MIB + 12_345);
    random_file(&media.join("snapshots/ev-1.jpg"), 40_000);
    let rig = Rig::new("uploads", &upload_config(&media, s3.port, "")).await;
    let daemon = rig.daemon_with_s3_credentials(0);
    wait_subscribed(&rig).await;

    // By bucket and key: five parts of 5 MiB.
    request(
        &rig,
        json!({"request_id": "r-s3", "file": "recordings/big.bin",
        "s3": {"bucket": "clips", "key": "cam/big.bin"}}),
    )
    .await;
    let done = outcome(&rig, "r-s3", Duration::from_secs(60)).await;
    assert_eq!(done["state"], "done", "{done}\n{}", daemon.log_text());
    let expected = sha256_file(&media.join("recordings/big.bin"));
    assert_eq!(done["sha256"], expected.as_str());
    assert_eq!(sha256_file(&s3.object("clips", "cam/big.bin")), expected);
    assert_eq!(done["size"], (21 * MIB + 12_345) as u64);
    let states: Vec<Value> = rig
        .observer
        .responses_for("r-s3")
        .iter()
        .map(|r| r["state"].clone())
        .collect();
    assert_eq!(states.first().unwrap(), "accepted", "{states:?}");
    assert!(states.contains(&json!("uploading")), "{states:?}");
    let log = daemon.log_text();
    assert!(log.contains("upload done"), "{log}");

    // By a presigned URL made with aws-sdk-s3's presigner (an event's snapshot).
    let (url, headers) = S3Server::presigned_put(s3.port, "clips", "cam/ev-1.jpg").await;
    let headers: serde_json::Map<String, Value> = headers
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    request(
        &rig,
        json!({"request_id": "r-url", "event_id": "ev-1",
        "presigned": {"url": url, "headers": headers}}),
    )
    .await;
    let done = outcome(&rig, "r-url", Duration::from_secs(30)).await;
    assert_eq!(done["state"], "done", "{done}");
    let expected = sha256_file(&media.join("snapshots/ev-1.jpg"));
    assert_eq!(sha256_file(&s3.object("clips", "cam/ev-1.jpg")), expected);
    assert_eq!(done["sha256"], expected.as_str());

    // A presigned URL whose signature does not match is refused by the server: a
    // final failure with its reason.
    let (bad_url, _) = S3Server::presigned_put(s3.port, "clips", "cam/other.jpg").await;
    let bad_url = bad_url.replace("cam/other.jpg", "cam/tampered.jpg");
    request(
        &rig,
        json!({"request_id": "r-tampered", "event_id": "ev-1",
        "presigned": {"url": bad_url}}),
    )
    .await;
    let failed = outcome(&rig, "r-tampered", Duration::from_secs(30)).await;
    assert_eq!(failed["state"], "failed", "{failed}");
    assert!(
        failed["reason"].as_str().unwrap().contains("403"),
        "{failed}"
    );
    assert!(!s3.object("clips", "cam/tampered.jpg").exists());

    // The same request id again: answered from the first job, not uploaded again.
    std::fs::remove_file(s3.object("clips", "cam/big.bin")).unwrap();
    request(
        &rig,
        json!({"request_id": "r-s3", "file": "recordings/big.bin",
        "s3": {"bucket": "clips", "key": "cam/big.bin"}}),
    )
    .await;
    wait_until(
        "the repeated request's answer",
        Duration::from_secs(10),
        || {
            rig.observer
                .responses_for("r-s3")
                .iter()
                .filter(|r| r["state"] == "done")
                .count()
                == 2
        },
    )
    .await;
    let again = rig.observer.responses_for("r-s3").last().unwrap().clone();
    assert!(
        again["note"].as_str().unwrap().contains("repeated"),
        "{again}"
    );
    assert!(
        !s3.object("clips", "cam/big.bin").exists(),
        "uploaded twice"
    );

    wait_until("upload metrics", Duration::from_secs(10), || {
        rig.observer
            .metrics()
            .last()
            .is_some_and(|m| m["uploads"]["done"] == 2)
    })
    .await;
    assert_schemas(&rig.observer);
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_beyond_max_pending_are_rejected_with_the_reason_and_counted() {
    let dir = test_dir("uploads-max-pending");
    let media = dir.path().join("media");
    std::fs::create_dir_all(&media).unwrap();
    let rig = Rig::new(
        "uploads-max-pending",
        &format!(
            "[health]\nmetrics_interval = \"1s\"\n[upload]\nmedia_dir = \"{}\"\nmax_pending = 2\n",
            media.display()
        ),
    )
    .await;
    let _daemon = rig.daemon_with_s3_credentials(0);
    wait_subscribed(&rig).await;
    // Ranges that end in an hour stay pending (waiting to be recorded).
    let fmt = |t| humantime::format_rfc3339_millis(t).to_string();
    let later = std::time::SystemTime::now() + Duration::from_secs(3600);
    let range = |id: &str| {
        json!({"request_id": id, "from": fmt(later), "to": fmt(later + Duration::from_secs(10)),
               "s3": {"bucket": "clips", "key": id}})
    };
    for id in ["p-1", "p-2"] {
        request(&rig, range(id)).await;
        wait_until(&format!("{id} accepted"), Duration::from_secs(15), || {
            rig.observer
                .responses_for(id)
                .iter()
                .any(|r| r["state"] == "accepted")
        })
        .await;
    }
    request(&rig, range("p-3")).await;
    let r = outcome(&rig, "p-3", Duration::from_secs(15)).await;
    assert_eq!(r["state"], "rejected", "{r}");
    assert!(
        r["reason"].as_str().unwrap().contains("upload.max_pending"),
        "{r}"
    );
    // The first two are still what they were: asked again, they say so.
    request(&rig, range("p-1")).await;
    wait_until("counted", Duration::from_secs(15), || {
        rig.observer
            .metrics()
            .last()
            .is_some_and(|m| m["uploads"]["rejected"] == 1 && m["uploads"]["accepted"] == 2)
    })
    .await;

    // Raised from the cloud, without a restart: one more is taken.
    let topic = format!("{CAMERA}/config");
    let raised = br#"{"version":1,"upload":{"max_pending":3}}"#;
    assert!(schema("remote-config.json").is_valid(&serde_json::from_slice(raised).unwrap()));
    rig.observer.publish_retained(&topic, raised).await;
    rig.observer.wait_config_applied(1).await;
    request(&rig, range("p-4")).await;
    wait_until("p-4 accepted", Duration::from_secs(15), || {
        rig.observer
            .responses_for("p-4")
            .iter()
            .any(|r| r["state"] == "accepted")
    })
    .await;
    // Lowered: new requests are refused, the jobs already accepted stay.
    let lowered = br#"{"version":2,"upload":{"max_pending":1}}"#;
    rig.observer.publish_retained(&topic, lowered).await;
    rig.observer.wait_config_applied(2).await;
    request(&rig, range("p-5")).await;
    let r = outcome(&rig, "p-5", Duration::from_secs(15)).await;
    assert_eq!(r["state"], "rejected", "{r}");
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .starts_with("3 uploads are pending"),
        "{r}"
    );
    for id in ["p-1", "p-2", "p-4"] {
        assert!(
            !rig.observer
                .responses_for(id)
                .iter()
                .any(|r| r["state"] == "rejected" || r["state"] == "failed"),
            "{id}: {:?}",
            rig.observer.responses_for(id)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_requests_are_rejected_with_a_reason_and_nothing_outside_the_media_dir_is_read() {
    let dir = test_dir("uploads-hostile");
    let media = dir.path().join("media");
    random_file(&media.join("ok.bin"), 1000);
    std::fs::write(dir.path().join("secret.txt"), b"secret").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), media.join("link-out")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", media.join("zero")).unwrap();
    // Plain HTTP refused here (the default).
    let rig = Rig::new(
        "uploads-hostile",
        &format!(
            "[health]\nmetrics_interval = \"1s\"\n[upload]\nmedia_dir = \"{}\"\n",
            media.display()
        ),
    )
    .await;
    let daemon = rig.daemon_with_s3_credentials(0);
    wait_subscribed(&rig).await;
    let s3 = json!({"bucket": "clips", "key": "k"});
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "h-dotdot",
            json!({"request_id": "h-dotdot", "file": "../../etc/passwd", "s3": s3}),
            "leaves",
        ),
        (
            "h-abs",
            json!({"request_id": "h-abs", "file": "/etc/shadow", "s3": s3}),
            "absolute",
        ),
        (
            "h-link",
            json!({"request_id": "h-link", "file": "link-out", "s3": s3}),
            "leads out",
        ),
        (
            "h-dev",
            json!({"request_id": "h-dev", "file": "zero", "s3": s3}),
            "leads out",
        ),
        (
            "h-missing-dest",
            json!({"request_id": "h-missing-dest", "file": "ok.bin"}),
            "destination",
        ),
        (
            "h-missing-what",
            json!({"request_id": "h-missing-what", "s3": s3}),
            "exactly one of",
        ),
        (
            "h-http",
            json!({"request_id": "h-http", "file": "ok.bin",
            "presigned": {"url": "http://127.0.0.1:9/b/k"}}),
            "plain-HTTP",
        ),
        (
            "h-nofile",
            json!({"request_id": "h-nofile", "file": "nope.bin", "s3": s3}),
            "does not exist",
        ),
    ];
    for (_, body, _) in &cases {
        request(&rig, body.clone()).await;
    }
    // No id to answer to: an invalid JSON, a 1 MB request, a request without an id.
    let topic = format!("{CAMERA}/file/request");
    rig.observer
        .publish(&topic, b"{\"request_id\": \"h-json\", ")
        .await;
    let huge = json!({"request_id": "h-huge", "file": "a".repeat(1 << 20), "s3": s3});
    rig.observer
        .publish(&topic, huge.to_string().as_bytes())
        .await;
    rig.observer
        .publish(
            &topic,
            json!({"file": "ok.bin", "s3": s3}).to_string().as_bytes(),
        )
        .await;

    for (id, _, why) in &cases {
        let r = outcome(&rig, id, Duration::from_secs(15)).await;
        assert_eq!(r["state"], "rejected", "{id}: {r}");
        assert!(r["reason"].as_str().unwrap().contains(why), "{id}: {r}");
    }
    wait_until(
        "the three answers without an id",
        Duration::from_secs(15),
        || rig.observer.responses_for_null().len() >= 3,
    )
    .await;
    let anonymous = rig.observer.responses_for_null();
    let reasons: Vec<&str> = anonymous
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("not valid JSON")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("at most 16384")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("request_id")),
        "{reasons:?}"
    );
    assert!(
        !daemon.log_text().contains("secret"),
        "a file outside was read"
    );
    wait_until("rejections in the metrics", Duration::from_secs(10), || {
        rig.observer
            .metrics()
            .last()
            .is_some_and(|m| m["uploads"]["rejected"].as_u64().unwrap_or(0) >= 11)
    })
    .await;
    // The daemon keeps delivering events.
    let mut d = daemon;
    assert!(d.proc.is_running());
    assert_schemas(&rig.observer);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_multipart_upload_resumes_after_the_link_is_cut_and_after_kill_9() {
    let dir = test_dir("uploads-resume");
    let s3 = S3Server::start(&dir.path().join("s3"));
    s3.bucket("clips");
    let proxy = Proxy::start(s3.port);
    let media = dir.path().join("media");
    let size = 30 * MIB;
    random_file(&media.join("a.bin"), size);
    random_file(&media.join("b.bin"), size);
    // 6 MiB/s: five seconds per file, long enough to interrupt.
    let rig = Rig::new(
        "uploads-resume",
        &upload_config(
            &media,
            proxy.port,
            &format!("max_bytes_per_sec = {}\n", 6 * MIB),
        ),
    )
    .await;
    let mut daemon = rig.daemon_with_s3_credentials(0);
    wait_subscribed(&rig).await;
    let progress = |id: &str| {
        rig.observer
            .responses_for(id)
            .iter()
            .filter_map(|r| r["bytes"].as_u64())
            .max()
            .unwrap_or(0)
    };

    // The path to S3 is cut after two parts, and restored two seconds later.
    request(
        &rig,
        json!({"request_id": "cut", "file": "a.bin", "s3": {"bucket": "clips", "key": "a.bin"}}),
    )
    .await;
    wait_until("two parts of a.bin", Duration::from_secs(30), || {
        progress("cut") > (11 * MIB) as u64
    })
    .await;
    proxy.cut();
    wait_until(
        "the failure to be reported",
        Duration::from_secs(30),
        || {
            rig.observer
                .responses_for("cut")
                .iter()
                .any(|r| r["state"] == "failed" && r["retrying"] == true)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.restore();
    let done = outcome(&rig, "cut", Duration::from_secs(60)).await;
    assert_eq!(done["state"], "done", "{done}\n{}", daemon.log_text());
    assert_eq!(
        sha256_file(&s3.object("clips", "a.bin")),
        sha256_file(&media.join("a.bin"))
    );
    let sent_a = proxy.sent();
    // Completed parts are not sent again: at most the part in flight is repeated.
    assert!(
        sent_a < (size + 5 * MIB + MIB) as u64,
        "{sent_a} bytes went for a {size}-byte file"
    );

    // kill -9 in the middle of the second upload; the restarted daemon resumes it.
    request(
        &rig,
        json!({"request_id": "killed", "file": "b.bin", "s3": {"bucket": "clips", "key": "b.bin"}}),
    )
    .await;
    wait_until("two parts of b.bin", Duration::from_secs(30), || {
        progress("killed") > (11 * MIB) as u64
    })
    .await;
    daemon.proc.kill9();
    let mut daemon = rig.daemon_with_s3_credentials(1);
    let done = outcome(&rig, "killed", Duration::from_secs(60)).await;
    assert_eq!(done["state"], "done", "{done}\n{}", daemon.log_text());
    assert_eq!(
        sha256_file(&s3.object("clips", "b.bin")),
        sha256_file(&media.join("b.bin"))
    );
    let sent_b = proxy.sent() - sent_a;
    assert!(
        sent_b < (size + 5 * MIB + MIB) as u64,
        "{sent_b} bytes went for a {size}-byte file across the kill"
    );
    assert!(daemon.log_text().contains("resuming an upload"));
    assert!(daemon.proc.terminate().unwrap().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn with_iot_credentials_the_device_certificate_buys_the_s3_credentials() {
    let dir = test_dir("uploads-iot");
    let s3 = S3Server::start(&dir.path().join("s3"));
    s3.bucket("clips");
    let media = dir.path().join("media");
    random_file(&media.join("a.bin"), 6 * MIB);
    // The rig's certificates: the provider stand-in trusts the device certificate,
    // and answers only for this role alias and thing name.
    let rig = Rig::new("uploads-iot", "").await;
    let provider = CredentialsProvider::start(rig.path(), &rig.pki, "edgecam-uploads");
    let text = std::fs::read_to_string(&rig.config).unwrap()
        + &upload_config(&media, s3.port, "")
        + &format!(
            "credentials = \"iot\"\niot_credentials_endpoint = \"127.0.0.1:{}\"\nrole_alias = \"edgecam-uploads\"\n",
            provider.port
        );
    std::fs::write(&rig.config, text).unwrap();
    // No AWS keys in the environment: only the certificate.
    let daemon = rig.daemon(0);
    wait_subscribed(&rig).await;
    request(
        &rig,
        json!({"request_id": "iot-1", "file": "a.bin", "s3": {"bucket": "clips", "key": "a.bin"}}),
    )
    .await;
    let done = outcome(&rig, "iot-1", Duration::from_secs(60)).await;
    assert_eq!(done["state"], "done", "{done}\n{}", daemon.log_text());
    assert_eq!(
        sha256_file(&s3.object("clips", "a.bin")),
        sha256_file(&media.join("a.bin"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_time_range_is_cut_from_the_recordings_and_uploaded_as_one_clip() {
    let dir = test_dir("uploads-clip");
    let s3 = S3Server::start(&dir.path().join("s3"));
    s3.bucket("clips");
    let media = dir.path().join("media");
    let recordings = media.join("recordings");
    let rig = Rig::new(
        "uploads-clip",
        &(upload_config(&media, s3.port, "")
            + &format!(
                "[video]\nenabled = true\nsource = \"test\"\nwidth = 320\nheight = 240\nframerate = 15\n\
                 segment_duration = \"1s\"\nrecordings_dir = \"{}\"\n",
                recordings.display()
            )),
    )
    .await;
    let daemon = rig.daemon_with_s3_credentials(0);
    wait_subscribed(&rig).await;
    wait_until("four segments", Duration::from_secs(30), || {
        std::fs::read_dir(&recordings)
            .map(|d| d.count() >= 4)
            .unwrap_or(false)
    })
    .await;
    // A range over the second and third seconds of recording, which is in the past:
    // the clip is cut once the segment covering its end is closed.
    let mut names: Vec<String> = std::fs::read_dir(&recordings)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let from = segment_start(&names[1]) + Duration::from_millis(200);
    let to = segment_start(&names[2]) + Duration::from_millis(500);
    let fmt = |t| humantime::format_rfc3339_millis(t).to_string();
    request(
        &rig,
        json!({"request_id": "clip-1", "from": fmt(from), "to": fmt(to),
        "s3": {"bucket": "clips", "key": "clip-1.mkv"}}),
    )
    .await;
    let done = outcome(&rig, "clip-1", Duration::from_secs(60)).await;
    assert_eq!(done["state"], "done", "{done}\n{}", daemon.log_text());
    let object = s3.object("clips", "clip-1.mkv");
    assert_eq!(done["sha256"], sha256_file(&object).as_str());
    let head = std::fs::read(&object).unwrap();
    assert_eq!(&head[..4], &[0x1a, 0x45, 0xdf, 0xa3], "a Matroska file");
    // The working copy of the clip is gone once the job ended.
    assert!(!rig.path().join("state/uploads/clip-1.mkv").exists());
    assert!(daemon.log_text().contains("clip cut for upload"));
}

#[tokio::test(flavor = "multi_thread")]
async fn recordings_a_pending_upload_needs_survive_a_tiny_disk_budget() {
    let dir = test_dir("uploads-pin");
    let media = dir.path().join("media");
    let recordings = media.join("recordings");
    // S3 is unreachable, so the job stays pending (retrying) and its pin holds.
    let rig = Rig::new(
        "uploads-pin",
        &(upload_config(&media, free_port(), "max_attempts = 1000\n")
            + &format!(
                "[video]\nenabled = true\nsource = \"test\"\nwidth = 640\nheight = 360\nframerate = 15\n\
                 segment_duration = \"1s\"\nretention_max_bytes = 65536\nrecordings_dir = \"{}\"\n",
                recordings.display()
            )),
    )
    .await;
    let daemon = rig.daemon_with_s3_credentials(0);
    wait_subscribed(&rig).await;
    let names = || -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(&recordings)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        n.sort();
        n
    };
    wait_until("two segments", Duration::from_secs(30), || {
        names().len() >= 2
    })
    .await;
    let first = names()[0].clone();
    let start = segment_start(&first);
    let fmt = |t| humantime::format_rfc3339_millis(t).to_string();
    request(
        &rig,
        json!({"request_id": "pinned", "from": fmt(start + Duration::from_millis(100)),
        "to": fmt(start + Duration::from_millis(400)), "s3": {"bucket": "clips", "key": "k.mkv"}}),
    )
    .await;
    wait_until("the request accepted", Duration::from_secs(10), || {
        rig.observer
            .responses_for("pinned")
            .iter()
            .any(|r| r["state"] == "accepted")
    })
    .await;
    // Retention deletes newer segments, never the pinned one.
    wait_until("retention at work", Duration::from_secs(60), || {
        rig.observer
            .metrics()
            .last()
            .is_some_and(|m| m["video"]["segments_deleted"].as_u64().unwrap_or(0) >= 5)
    })
    .await;
    assert!(
        recordings.join(&first).exists(),
        "the pinned segment was deleted"
    );
    assert!(
        rig.observer
            .responses_for("pinned")
            .iter()
            .any(|r| r["state"] == "failed" && r["retrying"] == true),
        "{:?}\n{}",
        rig.observer.responses_for("pinned"),
        daemon.log_text()
    );
}

/// A fault injected while running: the jobs database is overwritten with garbage.
/// The next request makes the stage fail; it is seen restarting in the metrics,
/// opens the database afresh, moves the corrupt one aside (counted), and the
/// request that met the fault is still answered and uploaded.
#[tokio::test(flavor = "multi_thread")]
async fn a_jobs_database_corrupted_while_running_is_moved_aside_and_uploads_go_on() {
    let dir = test_dir("uploads-corrupt-db");
    let s3 = S3Server::start(&dir.path().join("s3"));
    s3.bucket("clips");
    let media = dir.path().join("media");
    random_file(&media.join("snapshots/a.jpg"), 30_000);
    random_file(&media.join("snapshots/b.jpg"), 40_000);
    let rig = Rig::new("uploads-corrupt-db", &upload_config(&media, s3.port, "")).await;
    let daemon = rig.daemon_with_s3_credentials(0);
    wait_subscribed(&rig).await;
    let upload = |id: &str, file: &str| json!({"request_id": id, "file": file, "s3": {"bucket": "clips", "key": file}});
    request(&rig, upload("before", "snapshots/a.jpg")).await;
    let done = outcome(&rig, "before", Duration::from_secs(30)).await;
    assert_eq!(done["state"], "done", "{done}");

    // The fault: every byte of the database, of its write-ahead log (where its
    // latest pages are) and of the log's index overwritten while the stage has
    // them open (with the index intact, SQLite would go on from its cache).
    for file in ["uploads.db", "uploads.db-wal", "uploads.db-shm"] {
        let path = rig.path().join("state").join(file);
        let len = std::fs::metadata(&path).unwrap().len() as usize;
        std::fs::write(&path, vec![0x5a; len.max(8192)]).unwrap();
    }
    request(&rig, upload("after", "snapshots/b.jpg")).await;
    let done = outcome(&rig, "after", Duration::from_secs(60)).await;
    assert_eq!(done["state"], "done", "{done}\n{}", daemon.log_text());
    assert_eq!(
        sha256_file(&s3.object("clips", "snapshots/b.jpg")),
        sha256_file(&media.join("snapshots/b.jpg"))
    );
    assert!(rig.path().join("state/uploads.db.corrupt").exists());
    wait_until("the reset in the metrics", Duration::from_secs(10), || {
        rig.observer.metrics().last().is_some_and(|m| {
            m["uploads"]["db_resets"] == 1
                && m["stages"]["uploads"]["state"] == "running"
                && m["stages"]["uploads"]["restarts"].as_u64() >= Some(1)
        })
    })
    .await;
    // The failure was visible while it lasted.
    assert!(
        rig.observer
            .metrics()
            .iter()
            .any(|m| m["stages"]["uploads"]["last_error"].is_string()),
        "{}",
        daemon.log_text()
    );
    assert_schemas(&rig.observer);
}
