//! The fleet console (`console/`) in a real browser: Debian's headless Chromium,
//! driven through chromedriver, loads the page from a static server and talks MQTT
//! over WebSocket to a real Mosquitto, while a real edgecam reads plates from the
//! demo's scene, counts people, uploads to the S3 server that checks signatures,
//! and applies configuration. On a failed wait the page's screenshot is saved in the
//! test's folder (kept with `EDGECAM_KEEP_TEST_DIRS=1`) and named in the message.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::browser::{Browser, StaticServer};
use common::demo::{self, BUCKET, PLATES};
use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Builds the console (page, schemas, mqtt.js from npm) into `dir/console`.
fn build_console(dir: &Path) -> PathBuf {
    let out = dir.join("console");
    let status = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("console/build.sh"))
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "console/build.sh failed");
    out
}

/// Opens the console and connects it to the broker's WebSocket listener, typing
/// the settings as an operator would.
async fn open_console(browser: &Browser, page: &str, ws: &WsListener, link_template: &str) {
    browser.goto(page).await;
    browser.type_into("#broker", &ws.url()).await;
    browser.type_into("#username", &ws.username).await;
    browser.type_into("#password", &ws.password).await;
    browser.type_into("#bucket", BUCKET).await;
    browser.type_into("#link-template", link_template).await;
    browser.click("#connect").await;
    browser
        .wait(
            "the console to connect",
            Duration::from_secs(15),
            "return document.querySelector('#conn-state').textContent === 'connected';",
        )
        .await;
}

fn row(camera: &str) -> String {
    format!("#fleet tr[data-camera='{camera}']")
}

fn sha256_file(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_shows_a_real_camera_and_drives_its_uploads_and_configuration() {
    let models = PathBuf::from(
        std::env::var("EDGECAM_TEST_MODELS")
            .expect("EDGECAM_TEST_MODELS: run bash tests/run.sh, which fetches the models"),
    );
    let work = test_dir("console-page");
    let site = build_console(work.path());
    let video = work.path().join("scene.mp4");
    demo::scene_video(&video);
    let s3 = S3Server::start(&work.path().join("s3"));
    s3.bucket(BUCKET);
    let media = work.path().join("media");
    let rig = Rig::with_websockets(
        "console",
        &format!(
            "{}[synthetic]\nenabled = true\nrate_per_sec = 0.5\n",
            demo::camera_config(&video, &media, s3.port, &models)
        ),
    )
    .await;
    rig.recordings();
    let ws = rig.broker.ws.clone().unwrap();
    let server = StaticServer::start(&site, &work.path().join("http.log"));
    let browser = Browser::start(work.path()).await;
    let link_template = format!("http://127.0.0.1:{}/{{bucket}}/{{key}}", s3.port);
    open_console(&browser, &server.url("index.html"), &ws, &link_template).await;
    let load_ms = browser
        .exec(
            "const n = performance.getEntriesByType('navigation')[0]; return n.loadEventEnd - n.startTime;",
            vec![],
        )
        .await;
    println!("console page loaded in {load_ms} ms from the local static server");

    // The fleet: the camera comes online.
    let mut daemon = rig.daemon_with_s3_credentials(0);
    browser
        .wait(
            "the camera online in the fleet",
            Duration::from_secs(60),
            &format!(
                "const e = document.querySelector(\"{} td.state\"); return e && e.textContent === 'online';",
                row(CAMERA)
            ),
        )
        .await;
    browser.click(&row(CAMERA)).await;

    // A plate read from the video appears, as the broker delivered it.
    let shown = browser
        .wait(
            "a plate of the scene on the camera's page",
            Duration::from_secs(240),
            &format!(
                "const t = [...document.querySelectorAll('#plates tr.plate .plate-text')].map(e => e.textContent); \
                 return t.some(p => {PLATES:?}.includes(p)) ? t : null;"
            ),
        )
        .await;
    let published: Vec<String> = rig
        .observer
        .events_in("plate")
        .iter()
        .filter_map(|e| e["payload"]["plate"].as_str().map(str::to_owned))
        .collect();
    for p in shown.as_array().unwrap() {
        assert!(
            published.iter().any(|q| Some(q.as_str()) == p.as_str()),
            "the page shows plate {p}, which the camera did not publish ({published:?})"
        );
    }
    // Metrics reach the fleet row (every 10 s in this configuration).
    browser
        .wait(
            "metrics in the fleet row",
            Duration::from_secs(30),
            &format!(
                "const r = document.querySelector(\"{}\"); return r && /running/.test(r.children[9].textContent);",
                row(CAMERA)
            ),
        )
        .await;

    // A clip: requested in the page, uploaded, and its checksum matches the bucket.
    browser.choose("#req-kind", "clip").await;
    browser.type_into("#req-from", "-12s").await;
    browser.type_into("#req-to", "-2s").await;
    browser.click("#req-send").await;
    let done = browser
        .wait(
            "the clip upload to complete",
            Duration::from_secs(120),
            "const r = [...document.querySelectorAll('#requests tbody tr')].find(r => r.textContent.includes('clip')); \
             if (!r) return null; const st = r.querySelector('.req-state').textContent; \
             if (st.startsWith('rejected') || st.includes('final')) return {failed: r.textContent}; \
             if (st !== 'done') return null; \
             return {id: r.dataset.requestId, sha: r.querySelector('.req-sha').textContent, \
                     bytes: Number(r.querySelector('.req-size').dataset.bytes), progress: r.querySelector('progress').value, \
                     link: r.querySelector('.req-link').href};",
        )
        .await;
    assert!(done.get("failed").is_none(), "the clip failed: {done}");
    let id = done["id"].as_str().unwrap();
    let key = format!("{CAMERA}/{id}.mkv");
    let object = s3.object(BUCKET, &key);
    assert_eq!(done["sha"], json!(sha256_file(&object)), "{done}");
    assert_eq!(
        done["bytes"],
        json!(std::fs::metadata(&object).unwrap().len())
    );
    assert_eq!(done["progress"].as_f64(), Some(100.0));
    assert_eq!(
        done["link"],
        json!(format!("http://127.0.0.1:{}/{BUCKET}/{key}", s3.port))
    );
    let states: Vec<String> = rig
        .observer
        .responses_for(id)
        .iter()
        .filter_map(|r| r["state"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(states.first().map(String::as_str), Some("accepted"));
    assert_eq!(states.last().map(String::as_str), Some("done"));

    // A snapshot, asked for from the plate's row: the row then links to the object.
    browser
        .exec(
            "document.querySelector('#plates tr.plate button.snapshot-request').click();",
            vec![],
        )
        .await;
    let thumb = browser
        .wait(
            "the snapshot's link on the plate row",
            Duration::from_secs(60),
            "const a = document.querySelector('#plates a.snapshot-link'); return a && a.href;",
        )
        .await;
    let thumb = thumb.as_str().unwrap();
    let prefix = format!("http://127.0.0.1:{}/{BUCKET}/{CAMERA}/", s3.port);
    assert!(
        thumb.starts_with(&prefix) && thumb.ends_with(".jpg"),
        "{thumb}"
    );
    let snapshot_key = thumb.strip_prefix(&format!("http://127.0.0.1:{}/{BUCKET}/", s3.port));
    assert!(s3.object(BUCKET, snapshot_key.unwrap()).is_file());

    // An invalid configuration is refused in the page and never published.
    let config_topic = format!("{CAMERA}/config");
    browser
        .type_into(
            "#cfg-camera",
            r#"{"version": 7, "outbox": {"max_bytes": 12, "when_full": "drop_newest"}}"#,
        )
        .await;
    browser.click("#cfg-camera-publish").await;
    let errors = browser
        .wait(
            "the page to list the configuration's errors",
            Duration::from_secs(5),
            "return document.querySelector('#cfg-camera-errors').textContent;",
        )
        .await;
    let errors = errors.as_str().unwrap();
    assert!(
        errors.contains("outbox.max_bytes") && errors.contains("outbox.when_full"),
        "{errors}"
    );
    // A valid one is published retained, applied and acknowledged.
    browser
        .type_into(
            "#cfg-camera",
            r#"{"version": 7, "health": {"metrics_interval": "5s"}}"#,
        )
        .await;
    browser.click("#cfg-camera-publish").await;
    browser
        .wait(
            "the camera to acknowledge version 7",
            Duration::from_secs(30),
            "const s = document.querySelector('#cfg-status'); return s.dataset.state === 'applied' && s.dataset.version === '7';",
        )
        .await;
    let retained: Vec<Value> = rig
        .observer
        .all()
        .iter()
        .filter(|m| m.topic == config_topic)
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .collect();
    assert_eq!(
        retained,
        [json!({"version": 7, "health": {"metrics_interval": "5s"}})],
        "the invalid configuration reached the broker"
    );

    // The camera dies without a goodbye: the broker's Last Will shows it offline.
    daemon.proc.kill9();
    browser
        .wait(
            "the camera offline in the fleet",
            Duration::from_secs(75),
            &format!(
                "const r = document.querySelector(\"{}\"); return r && r.children[1].textContent === 'offline' && /offline/.test(r.children[11].textContent);",
                row(CAMERA)
            ),
        )
        .await;
    browser.close().await;
}

/// The page's schema checks agree with a full JSON Schema validator on both
/// schemas it publishes against.
#[tokio::test(flavor = "multi_thread")]
async fn the_console_validates_like_a_full_json_schema_validator() {
    let work = test_dir("console-schemas");
    let site = build_console(work.path());
    let server = StaticServer::start(&site, &work.path().join("http.log"));
    let browser = Browser::start(work.path()).await;
    browser.goto(&server.url("index.html")).await;
    let cases: Vec<(&str, Value)> = vec![
        ("remote-config", json!({"version": 3})),
        ("remote-config", json!({})),
        ("remote-config", json!({"version": -1})),
        ("remote-config", json!({"version": 1.5})),
        ("remote-config", json!({"version": 2, "bogus": 1})),
        (
            "remote-config",
            json!({"version": 2, "outbox": {"max_bytes": 2_000_000, "when_full": "refuse_newest"}}),
        ),
        (
            "remote-config",
            json!({"version": 2, "outbox": {"max_bytes": 10}}),
        ),
        (
            "remote-config",
            json!({"version": 2, "outbox": {"when_full": "drop_newest"}}),
        ),
        (
            "remote-config",
            json!({"version": 2, "health": {"metrics_interval": "5s"}}),
        ),
        ("remote-config", json!({"version": 2, "health": 5})),
        ("remote-config", json!([1, 2])),
        (
            "file-request",
            json!({"request_id": "r1", "file": "a.jpg", "s3": {"bucket": "bkt", "key": "k"}}),
        ),
        (
            "file-request",
            json!({"request_id": "r1", "from": "2026-01-01T00:00:00Z", "to": "2026-01-01T00:00:10Z", "s3": {"bucket": "bkt", "key": "k"}}),
        ),
        (
            "file-request",
            json!({"request_id": "r1", "from": "2026-01-01T00:00:00Z", "s3": {"bucket": "bkt", "key": "k"}}),
        ),
        (
            "file-request",
            json!({"request_id": "r1", "file": "a", "event_id": "e", "s3": {"bucket": "bkt", "key": "k"}}),
        ),
        (
            "file-request",
            json!({"request_id": "r1", "event_id": "e", "s3": {"bucket": "bkt", "key": "k"}, "presigned": {"url": "https://x"}}),
        ),
        (
            "file-request",
            json!({"request_id": "r1", "event_id": "e", "presigned": {"url": "https://x", "headers": {"a": "b"}}}),
        ),
        (
            "file-request",
            json!({"request_id": "r1", "event_id": "e", "presigned": {"url": "ftp://x"}}),
        ),
        (
            "file-request",
            json!({"request_id": "../x", "event_id": "e", "s3": {"bucket": "bkt", "key": "k"}}),
        ),
        (
            "file-request",
            json!({"request_id": "r1", "event_id": "e", "s3": {"bucket": "b", "key": "k"}}),
        ),
        (
            "file-request",
            json!({"request_id": "r1", "event_id": "e", "ttl": 5, "s3": {"bucket": "bkt", "key": "k"}}),
        ),
        (
            "file-request",
            json!({"request_id": "r1", "event_id": "e", "ttl": 5, "sent_at": "2026-01-01T00:00:00Z", "s3": {"bucket": "bkt", "key": "k"}}),
        ),
    ];
    // Every remote-config section with one field of the wrong type, and with an
    // unknown field, from the schema itself.
    let remote: Value = serde_json::from_slice(
        &std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schemas/remote-config.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut cases = cases;
    for (section, s) in remote["properties"].as_object().unwrap() {
        if section == "version" {
            continue;
        }
        cases.push((
            "remote-config",
            json!({"version": 1, section: {"no_such_field": 1}}),
        ));
        for field in s["properties"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.keys())
        {
            cases.push((
                "remote-config",
                json!({"version": 1, section: {field: {"not": "right"}}}),
            ));
        }
    }
    let validators = [
        ("remote-config", schema("remote-config.json")),
        ("file-request", schema("file-request.json")),
    ];
    let mut valid = 0;
    for (name, doc) in &cases {
        let page = browser
            .exec(
                "return window.edgecamConsole.validate(arguments[0], arguments[1]);",
                vec![json!(name), doc.clone()],
            )
            .await;
        let full = validators
            .iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1
            .is_valid(doc);
        let page_valid = page.as_array().unwrap().is_empty();
        assert_eq!(
            page_valid, full,
            "{name} {doc}: the page says {page}, the full validator says valid = {full}"
        );
        valid += usize::from(full);
    }
    assert!(
        valid >= 6 && valid < cases.len(),
        "{valid} of {}",
        cases.len()
    );
    browser.close().await;
}

/// The target: 200 cameras and 50 events/s through the real broker. The page
/// measures each event's delay from its timestamp (set when published) to the
/// frame that shows it; the figures are printed, not asserted (a benchmark in a
/// test's clothes would fail on a busy machine); that every event is shown is.
#[tokio::test(flavor = "multi_thread")]
async fn the_console_keeps_up_with_a_fleet_of_200_cameras() {
    const CAMERAS: usize = 200;
    const RATE: u64 = 50;
    const SECONDS: u64 = 20;
    let work = test_dir("console-load");
    let site = build_console(work.path());
    let pki = Pki::generate(work.path());
    let broker = Broker::start_with_websockets(work.path(), &pki);
    let ws = broker.ws.clone().unwrap();
    let server = StaticServer::start(&site, &work.path().join("http.log"));
    let browser = Browser::start(work.path()).await;
    open_console(&browser, &server.url("index.html"), &ws, "").await;

    let mut opts = rumqttc::MqttOptions::new("fleet-load", "127.0.0.1", broker.plain_port);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 1000);
    let poller = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let cam = |i: usize| format!("cam-{i:04}");
    for i in 0..CAMERAS {
        let status = json!({"state": "online", "camera_id": cam(i), "version": "0.1.0", "started_at": now_ms(), "ts": now_ms()});
        client
            .publish(
                format!("{}/status", cam(i)),
                rumqttc::QoS::AtLeastOnce,
                true,
                status.to_string(),
            )
            .await
            .unwrap();
    }
    browser
        .wait(
            "200 cameras in the fleet",
            Duration::from_secs(30),
            &format!("return document.querySelectorAll('#fleet tbody tr').length === {CAMERAS};"),
        )
        .await;
    browser.click(&row(&cam(0))).await;

    let started = Instant::now();
    let mut seq = vec![0u64; CAMERAS];
    let total = RATE * SECONDS;
    for n in 0..total {
        let i = (n as usize * 7) % CAMERAS;
        seq[i] += 1;
        let event = json!({"event_id": format!("019a0000-0000-7000-8000-{n:012}"), "camera_id": cam(i),
            "seq": seq[i], "ts": now_ms(), "kind": "plate",
            "payload": {"plate": format!("AB{n:05}"), "confidence": 0.9, "direction": "left"}});
        client
            .publish(
                format!("{}/events/plate", cam(i)),
                rumqttc::QoS::AtLeastOnce,
                false,
                json!({"events": [event]}).to_string(),
            )
            .await
            .unwrap();
        // Metrics from every camera every 10 s: 20 messages a second more.
        if n % 5 == 0 {
            let j = (n as usize / 5) % CAMERAS;
            let metrics = json!({"camera_id": cam(j), "ts": now_ms(), "uptime_s": 60, "version": "0.1.0",
                "outbox": {"depth": 0, "bytes": 0, "oldest_age_s": null, "evicted": 0, "expired": 0, "refused": 0},
                "rss_bytes": 25_165_824, "video": {"analysed_fps": 5.0},
                "stages": {"video": {"state": "running", "restarts": 0, "last_error": null}}});
            client
                .publish(
                    format!("{}/status/metrics", cam(j)),
                    rumqttc::QoS::AtMostOnce,
                    false,
                    metrics.to_string(),
                )
                .await
                .unwrap();
        }
        let due = started + Duration::from_millis((n + 1) * 1000 / RATE);
        tokio::time::sleep_until(due.into()).await;
    }
    browser
        .wait(
            "every published event on screen",
            Duration::from_secs(30),
            &format!("return window.edgecamConsole.eventsShown() >= {total};"),
        )
        .await;
    let shown = browser
        .exec("return window.edgecamConsole.eventsShown();", vec![])
        .await;
    assert_eq!(shown, json!(total), "events shown more than once");
    let mut lat: Vec<i64> = browser
        .exec("return window.edgecamConsole.latencies();", vec![])
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    lat.sort_unstable();
    let long = browser
        .exec("return window.edgecamConsole.longTasks();", vec![])
        .await;
    let pct = |q: f64| lat[((q * lat.len() as f64) as usize).min(lat.len() - 1)];
    println!(
        "console under load: {CAMERAS} cameras, {RATE} events/s + 20 metrics/s for {SECONDS} s; publish to screen p50 {} ms, p99 {} ms, max {} ms; main-thread tasks over 50 ms: {long}",
        pct(0.5),
        pct(0.99),
        lat[lat.len() - 1]
    );
    // The selected camera's page shows its own plates only.
    let rows = browser
        .exec(
            "return [...document.querySelectorAll('#plates tr.plate .plate-text')].length;",
            vec![],
        )
        .await;
    assert_eq!(rows, json!(seq[0].min(50)));
    drop(client);
    poller.abort();
    browser.close().await;
}
