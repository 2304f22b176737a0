//! Remote configuration through retained MQTT messages, against the real broker:
//! applied on connect and live, bad ones rejected with reasons, the last good one
//! kept across a reboot without connectivity, an empty payload reverting.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const CONFIG_TOPIC: &str = "cam-test-1/config";

async fn rig(name: &str, local_extra: &str) -> Rig {
    Rig::new(name, local_extra).await
}

async fn wait_status(rig: &Rig, count: usize) -> Value {
    wait_until("a configuration status", Duration::from_secs(15), || {
        rig.observer.config_statuses().len() >= count
    })
    .await;
    rig.observer.config_statuses()[count - 1].clone()
}

async fn wait_kind(rig: &Rig, kind: &str, n: usize) {
    wait_until(
        &format!("{n} events of kind {kind}"),
        Duration::from_secs(20),
        || rig.observer.events_of_kind(kind) >= n,
    )
    .await;
}

fn config_show(config: &std::path::Path) -> Value {
    let out = edgecam()
        .args(["config", "show", "--json", "--config"])
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
async fn retained_config_applies_on_connect_live_and_survives_an_offline_reboot() {
    let mut rig = rig(
        "remote",
        "[synthetic]\nenabled = false\nrate_per_sec = 10.0\n",
    )
    .await;
    let v1 = br#"{"version":1,"synthetic":{"enabled":true,"kind":"remote-one"}}"#;
    assert!(schema("remote-config.json").is_valid(&serde_json::from_slice(v1).unwrap()));
    // Published before the camera ever connects.
    rig.observer.publish_retained(CONFIG_TOPIC, v1).await;
    let mut daemon = rig.daemon(0);
    wait_kind(&rig, "remote-one", 5).await;
    let status = wait_status(&rig, 1).await;
    assert_eq!(status["state"], "applied", "{status}");
    assert_eq!(status["version"], 1);
    let hash_v1 = status["hash"].as_str().unwrap().to_owned();

    // A change while connected is applied live: events change topic.
    let v2 = br#"{"version":2,"synthetic":{"enabled":true,"kind":"remote-two"},"health":{"metrics_interval":"1s"}}"#;
    rig.observer.publish_retained(CONFIG_TOPIC, v2).await;
    wait_kind(&rig, "remote-two", 5).await;
    let status = wait_status(&rig, 2).await;
    assert_eq!(status["state"], "applied");
    assert_eq!(status["version"], 2);
    assert_ne!(status["hash"], hash_v1);
    wait_until(
        "metrics at the new interval",
        Duration::from_secs(10),
        || rig.observer.metrics().len() >= 2,
    )
    .await;
    let metrics = rig.observer.metrics();
    assert_eq!(
        metrics.last().unwrap()["config"]["applied"],
        2,
        "{metrics:?}"
    );
    let shown = config_show(&rig.config);
    assert_eq!(shown["synthetic.kind"]["value"], "remote-two");
    assert_eq!(shown["synthetic.kind"]["source"], "device");
    assert_eq!(shown["synthetic.rate_per_sec"]["source"], "local");
    assert_eq!(shown["mqtt.keepalive"]["source"], "default");

    // Reboot without connectivity: the last applied configuration is in force.
    daemon.proc.terminate();
    rig.front.stop();
    rig.broker.stop();
    let before = rig.observer.events_of_kind("remote-two");
    let daemon = rig.daemon(1);
    wait_until(
        "the daemon to start offline",
        Duration::from_secs(15),
        || daemon.log_text().contains("cannot connect to the broker"),
    )
    .await;
    let log = daemon.log_text();
    assert!(log.contains("remote_version=2"), "{log}");
    wait_until("events stored offline", Duration::from_secs(15), || {
        outbox_stats(&rig.config)["depth"].as_i64().unwrap_or(0) >= 5
    })
    .await;
    rig.broker.restart();
    rig.front.restart();
    wait_until(
        "the offline events, of the remote kind",
        Duration::from_secs(30),
        || rig.observer.events_of_kind("remote-two") >= before + 5,
    )
    .await;
    assert!(
        log.contains("synthetic source started") && log.contains("kind=remote-two"),
        "{log}"
    );
    assert_schemas(&rig.observer);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_configs_are_rejected_with_reasons_and_the_last_good_one_stays() {
    let rig = rig(
        "remote-bad",
        "[synthetic]\nenabled = true\nrate_per_sec = 20.0\nkind = \"local\"\n",
    )
    .await;
    let _daemon = rig.daemon(0);
    wait_kind(&rig, "local", 3).await;
    rig.observer
        .publish_retained(
            CONFIG_TOPIC,
            br#"{"version":5,"synthetic":{"kind":"good"}}"#,
        )
        .await;
    wait_kind(&rig, "good", 3).await;
    assert_eq!(wait_status(&rig, 1).await["state"], "applied");

    let oversized = format!(
        r#"{{"version":9,"synthetic":{{"kind":"big"}},"padding":"{}"}}"#,
        "x".repeat(1 << 20)
    );
    let bad: Vec<(&[u8], &str, Option<u64>)> = vec![
        (b"{\"version\":6,", "", None),
        (
            br#"{"version":6,"mqtt":{"max_publishes_per_sec":"fast"}}"#,
            "mqtt.max_publishes_per_sec",
            Some(6),
        ),
        (
            br#"{"version":6,"mqtt":{"max_publishes_per_sec":0}}"#,
            "mqtt.max_publishes_per_sec",
            Some(6),
        ),
        (
            br#"{"version":6,"synthetic":{"colour":"red"}}"#,
            "synthetic.colour",
            Some(6),
        ),
        (
            br#"{"version":6,"identity":{"broker_host":"evil.example"}}"#,
            "identity",
            Some(6),
        ),
        (oversized.as_bytes(), "", Some(9)),
        (
            br#"{"version":4,"synthetic":{"kind":"stale"}}"#,
            "version",
            Some(4),
        ),
    ];
    let config_schema = schema("remote-config.json");
    for (i, (payload, field, version)) in bad.iter().enumerate() {
        // The published schema refuses what the camera refuses on its shape.
        if let Ok(v) = serde_json::from_slice::<Value>(payload) {
            if !field.is_empty() && *field != "version" {
                assert!(!config_schema.is_valid(&v), "schema accepts {field}");
            }
        }
        rig.observer.publish_retained(CONFIG_TOPIC, payload).await;
        let status = wait_status(&rig, 2 + i).await;
        assert_eq!(status["state"], "rejected", "{status}");
        assert_eq!(
            status["version"], 5,
            "the good version stays in effect: {status}"
        );
        assert_eq!(status["rejected_version"], serde_json::json!(version));
        let errors = status["errors"].as_array().unwrap();
        assert!(
            errors.iter().any(|e| e["field"] == *field),
            "expected an error on {field:?}: {status}"
        );
    }
    // Still producing with the last good configuration.
    let good = rig.observer.events_of_kind("good");
    wait_kind(&rig, "good", good + 3).await;
    assert_eq!(rig.observer.events_of_kind("big"), 0);
    assert_eq!(rig.observer.events_of_kind("stale"), 0);

    // Deleting the retained message reverts to the local file.
    rig.observer.publish_retained(CONFIG_TOPIC, b"").await;
    let status = wait_status(&rig, 2 + bad.len()).await;
    assert_eq!(status["state"], "reverted", "{status}");
    assert_eq!(status["version"], Value::Null);
    let local = rig.observer.events_of_kind("local");
    wait_kind(&rig, "local", local + 3).await;
    assert_schemas(&rig.observer);
}

#[tokio::test(flavor = "multi_thread")]
async fn group_config_applies_under_the_device_config() {
    let rig = rig(
        "remote-group",
        "[synthetic]\nenabled = true\nrate_per_sec = 20.0\nkind = \"local\"\n[remote]\ngroup = \"lobby\"\n",
    )
    .await;
    rig.observer
        .publish_retained(
            "fleet/lobby/config",
            br#"{"version":3,"synthetic":{"kind":"fleet","payload_bytes":7}}"#,
        )
        .await;
    let _daemon = rig.daemon(0);
    wait_kind(&rig, "fleet", 3).await;
    rig.observer
        .publish_retained(
            CONFIG_TOPIC,
            br#"{"version":1,"synthetic":{"kind":"mine"}}"#,
        )
        .await;
    wait_kind(&rig, "mine", 3).await;
    let shown = config_show(&rig.config);
    assert_eq!(shown["synthetic.kind"]["source"], "device");
    assert_eq!(shown["synthetic.payload_bytes"]["source"], "group");
    assert_eq!(shown["synthetic.payload_bytes"]["value"], 7);
    let statuses = rig.observer.config_statuses();
    let last = statuses.last().unwrap();
    assert_eq!(last["group_version"], 3);
    assert_eq!(last["version"], 1);
}
