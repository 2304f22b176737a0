//! Requests that reach a camera while it is offline: the persistent MQTT session
//! keeps QoS 1 file requests for it across a stop, a kill -9 and a cut link, and
//! each is answered exactly once when it is back; requests that expired while
//! they waited are refused; a broker that lost the session gets the
//! subscriptions again; a link that goes silent is noticed within
//! `mqtt.ack_timeout` and nothing is lost.

mod common;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use serde_json::{json, Value};

fn config(media: &Path, s3_port: u16) -> String {
    format!(
        "connect_timeout = \"2s\"\n\
         [health]\nmetrics_interval = \"1s\"\n\
         [upload]\nmedia_dir = \"{}\"\nallow_plain_http = true\n\
         progress_interval = \"200ms\"\nretry_min = \"200ms\"\nretry_max = \"1s\"\n\
         [upload.s3]\nendpoint = \"http://127.0.0.1:{s3_port}\"\nforce_path_style = true\nregion = \"{S3_REGION}\"\n",
        media.display(),
    )
}

/// An S3 server with the bucket `uploads`, a media directory holding `ok.txt`, and
/// a rig whose daemon uploads from one to the other.
async fn setup(name: &str, ok_txt: &[u8]) -> (tempfile::TempDir, S3Server, Rig) {
    let dir = test_dir(name);
    let s3 = S3Server::start(&dir.path().join("s3"));
    s3.bucket("uploads");
    let media = dir.path().join("media");
    std::fs::create_dir_all(&media).unwrap();
    std::fs::write(media.join("ok.txt"), ok_txt).unwrap();
    let rig = Rig::new(name, &config(&media, s3.port)).await;
    (dir, s3, rig)
}

/// Waits for a metrics message newer than `after` (its subscriptions precede it
/// on the same connection).
async fn wait_online(rig: &Rig, after: usize) {
    wait_until(
        "the daemon online and subscribed",
        Duration::from_secs(30),
        || rig.observer.metrics().len() > after,
    )
    .await;
}

/// Waits until the broker has seen the daemon go (its `offline` status).
async fn wait_offline(rig: &Rig, before: usize) {
    wait_until("the daemon offline", Duration::from_secs(30), || {
        rig.observer
            .statuses()
            .iter()
            .filter(|s| s["state"] == "offline")
            .count()
            > before
    })
    .await;
}

fn offline_count(rig: &Rig) -> usize {
    rig.observer
        .statuses()
        .iter()
        .filter(|s| s["state"] == "offline")
        .count()
}

async fn request(rig: &Rig, body: Value) {
    rig.observer.file_request(body).await;
}

fn file_request(id: &str, key: &str) -> Value {
    json!({"request_id": id, "file": "ok.txt", "s3": {"bucket": "uploads", "key": key}})
}

fn states(rig: &Rig, id: &str) -> Vec<String> {
    rig.observer
        .responses_for(id)
        .iter()
        .map(|r| r["state"].as_str().unwrap().to_owned())
        .collect()
}

async fn wait_state(rig: &Rig, id: &str, state: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !states(rig, id).iter().any(|s| s == state) {
        assert!(
            Instant::now() < deadline,
            "no {state} for {id} within {within:?}; responses: {:?}",
            rig.observer.file_responses()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_sent_while_the_camera_is_stopped_killed_or_cut_off_is_answered_once() {
    let (_dir, s3, mut rig) = setup("offline-requests", b"a file asked for while offline\n").await;
    let mut daemon = rig.daemon_with_s3_credentials(0);
    wait_online(&rig, 0).await;

    // 1. Stopped (SIGTERM), 2. killed (-9), 3. its link cut at the front: a
    //    request published meanwhile is answered when it is back.
    for (n, how) in ["stopped", "killed", "cut"].iter().enumerate() {
        let id = format!("while-{how}");
        let offline_before = offline_count(&rig);
        let metrics_before = rig.observer.metrics().len();
        match *how {
            "stopped" => assert!(daemon.proc.terminate().is_some_and(|s| s.success())),
            "killed" => daemon.proc.kill9(),
            _ => rig.front.stop(),
        }
        wait_offline(&rig, offline_before).await;
        request(&rig, file_request(&id, &format!("cam/{id}.txt"))).await;
        if *how == "stopped" {
            // More requests than the upload stage's queue holds: none is lost.
            for k in 0..40 {
                let id = format!("burst-{k}");
                request(&rig, file_request(&id, &format!("cam/{id}.txt"))).await;
            }
            // A retained configuration, published while the camera is away.
            rig.observer
                .publish_retained(
                    &format!("{CAMERA}/config"),
                    br#"{"version":7,"health":{"metrics_interval":"1s"}}"#,
                )
                .await;
        }
        // The request waits at the broker; give a live camera time to answer.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(states(&rig, &id).is_empty(), "answered while offline?");
        let restarted = Instant::now();
        match *how {
            "cut" => rig.front.restart(),
            _ => daemon = rig.daemon_with_s3_credentials(n + 1),
        }
        wait_state(&rig, &id, "done", Duration::from_secs(30)).await;
        let accepted = rig
            .observer
            .all()
            .into_iter()
            .find(|m| {
                m.topic.ends_with("/file/response")
                    && serde_json::from_slice::<Value>(&m.payload).unwrap()["request_id"] == *id
            })
            .map(|m| m.at.duration_since(restarted));
        println!("{how}: the request sent while offline was accepted {accepted:?} after the camera was started again");
        wait_online(&rig, metrics_before).await;
        assert_eq!(
            rig.observer.metrics().last().unwrap()["mqtt"]["sessions_resumed"],
            if *how == "cut" { 2 } else { 1 },
            "the broker kept the session"
        );
        let object = s3.object("uploads", &format!("cam/{id}.txt"));
        assert_eq!(
            std::fs::read(&object).unwrap(),
            b"a file asked for while offline\n"
        );
    }
    for k in 0..40 {
        wait_state(
            &rig,
            &format!("burst-{k}"),
            "accepted",
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(
            states(&rig, &format!("burst-{k}"))
                .iter()
                .filter(|s| *s == "accepted")
                .count(),
            1
        );
    }
    let configs = rig.observer.config_statuses();
    assert!(
        configs
            .iter()
            .any(|c| c["version"] == 7 && c["state"] == "applied"),
        "{configs:?}"
    );
    // Each was answered exactly once: one accepted, one done.
    for how in ["stopped", "killed", "cut"] {
        let s = states(&rig, &format!("while-{how}"));
        assert_eq!(
            s.iter().filter(|s| *s == "accepted").count(),
            1,
            "{how}: {s:?}"
        );
        assert_eq!(s.iter().filter(|s| *s == "done").count(), 1, "{how}: {s:?}");
    }

    // The same request id again, after a restart: answered from its job, not
    // uploaded again.
    let object = s3.object("uploads", "cam/while-stopped.txt");
    std::fs::remove_file(&object).unwrap();
    request(&rig, file_request("while-stopped", "cam/while-stopped.txt")).await;
    wait_until(
        "the repeated request's answer",
        Duration::from_secs(10),
        || {
            states(&rig, "while-stopped")
                .iter()
                .filter(|s| *s == "done")
                .count()
                == 2
        },
    )
    .await;
    assert!(!object.exists(), "uploaded twice");
    assert_eq!(
        states(&rig, "while-stopped")
            .iter()
            .filter(|s| *s == "accepted")
            .count(),
        1
    );

    // Requests that expired: one already when sent, one while it waited offline
    // past its ttl. Neither is read nor uploaded.
    let offline_before = offline_count(&rig);
    assert!(daemon.proc.terminate().is_some());
    wait_offline(&rig, offline_before).await;
    let now = SystemTime::now();
    let mut past = file_request("too-late", "cam/too-late.txt");
    past["expires_at"] = json!(rfc3339(now - Duration::from_secs(60)));
    request(&rig, past).await;
    let mut ttl = file_request("waited-too-long", "cam/waited.txt");
    ttl["sent_at"] = json!(rfc3339(now));
    ttl["ttl"] = json!(2);
    request(&rig, ttl).await;
    let mut fresh = file_request("still-wanted", "cam/still-wanted.txt");
    fresh["sent_at"] = json!(rfc3339(now));
    fresh["ttl"] = json!(600);
    request(&rig, fresh).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _daemon = rig.daemon_with_s3_credentials(10);
    wait_state(&rig, "still-wanted", "done", Duration::from_secs(30)).await;
    for id in ["too-late", "waited-too-long"] {
        wait_state(&rig, id, "rejected", Duration::from_secs(10)).await;
        let r = rig.observer.responses_for(id);
        assert_eq!(r.len(), 1, "{r:?}");
        let reason = r[0]["reason"].as_str().unwrap();
        assert!(reason.starts_with("expired"), "{reason}");
    }
    assert!(!s3.object("uploads", "cam/too-late.txt").exists());
    assert!(!s3.object("uploads", "cam/waited.txt").exists());
    assert_schemas(&rig.observer);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_that_lost_the_session_gets_the_subscriptions_again() {
    let (_dir, s3, mut rig) = setup("offline-session-lost", b"after the broker forgot us\n").await;
    let _daemon = rig.daemon_with_s3_credentials(0);
    wait_online(&rig, 0).await;

    // The broker restarts without its persistence: every session is gone.
    rig.broker.stop();
    let db = rig.path().join("mosquitto/mosquitto.db");
    assert!(db.exists(), "mosquitto saved no persistence file");
    std::fs::remove_file(&db).unwrap();
    rig.broker.restart();
    // The observer reconnects and subscribes again by itself; the daemon too.
    let metrics_before = rig.observer.metrics().len();
    wait_online(&rig, metrics_before).await;
    let m = rig.observer.metrics().last().unwrap().clone();
    assert_eq!(m["mqtt"]["sessions_resumed"], 0, "{m}");
    request(&rig, file_request("after-loss", "cam/after-loss.txt")).await;
    wait_state(&rig, "after-loss", "done", Duration::from_secs(30)).await;
    assert!(s3.object("uploads", "cam/after-loss.txt").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_link_is_noticed_within_the_ack_timeout_and_nothing_is_lost() {
    let dir = test_dir("offline-silent");
    let pki = Pki::generate(dir.path());
    let broker = Broker::start(dir.path(), &pki);
    let front = Front::start(dir.path(), &pki, broker.plain_port);
    let observer = Observer::start(broker.plain_port, "observer-offline-silent").await;
    let proxy = Proxy::start(front.port);
    let mut cfg = DaemonConfig::via_front(dir.path(), &pki, &front);
    cfg.port = proxy.port;
    let ack_timeout = Duration::from_secs(3);
    cfg.extra = format!(
        "[mqtt]\nbackoff_min = \"50ms\"\nbackoff_max = \"500ms\"\nconnect_timeout = \"2s\"\n\
         keepalive = \"60s\"\nack_timeout = \"{}s\"\n\
         [health]\nmetrics_interval = \"1s\"\n\
         [synthetic]\nenabled = true\nrate_per_sec = 20.0\npayload_bytes = 64\ncount = 400\n",
        ack_timeout.as_secs()
    );
    let config = dir.path().join("edgecam.toml");
    cfg.write(&config);
    let daemon = Daemon::start(&config, &dir.path().join("edgecam.log"));
    wait_until("events flowing", Duration::from_secs(20), || {
        observer.distinct_events() >= 40
    })
    .await;

    // The link goes silent with publishes in flight: nothing is closed.
    proxy.hold();
    let held = Instant::now();
    wait_until("the dead link noticed", Duration::from_secs(20), || {
        daemon
            .log_text()
            .contains("treating the connection as dead")
    })
    .await;
    let noticed = held.elapsed();
    println!("silent link noticed after {noticed:?} (ack_timeout {ack_timeout:?})");
    assert!(
        noticed <= ack_timeout + Duration::from_secs(1),
        "noticed after {noticed:?}"
    );
    // A few seconds of reconnect attempts into the silence, then the link is back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.release();
    wait_until("all 400 events", Duration::from_secs(60), || {
        observer.distinct_events() >= 400
    })
    .await;
    assert_complete(&observer.events(), 1, 400);
    wait_until(
        "metrics after the reconnect",
        Duration::from_secs(10),
        || {
            observer
                .metrics()
                .last()
                .is_some_and(|m| m["mqtt"]["dead_links"].as_u64() >= Some(1))
        },
    )
    .await;
    let m = observer.metrics().last().unwrap().clone();
    let silent_ms = m["mqtt"]["last_dead_link_ms"].as_i64().unwrap();
    assert!(
        silent_ms >= ack_timeout.as_millis() as i64 && silent_ms <= 5_000,
        "{m}"
    );
    assert_schemas(&observer);
}
