//! Home Assistant MQTT discovery through the real broker: the retained discovery
//! messages carry what Home Assistant requires of each entity type and read the
//! camera's own topics; Home Assistant's birth message gets them published again;
//! a prefix changed remotely moves them; and once the feature is off they are
//! removed, also across a restart (from the daemon's record of what it published).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use serde_json::Value;

const LOCAL: &str = "[homeassistant]\nenabled = true\nname = \"Gate camera\"\n\
    [plates]\nenabled = true\n\
    [people]\nenabled = true\n\
    lines = [{ name = \"door\", a = [0.0, 0.5], b = [1.0, 0.5] }, { name = \"side_gate\", a = [0.5, 0.0], b = [0.5, 1.0] }]\n";

/// The retained messages under `prefix/#` now: a new session subscribes and reads
/// until a sentinel retained message (published first) arrives with them.
async fn retained(port: u16, prefix: &str, n: &mut usize) -> BTreeMap<String, Value> {
    *n += 1;
    let sentinel = format!("{prefix}/zz_sentinel/{n}");
    let publisher = Observer::subscribe(port, &format!("sentinel-{n}"), "none/#", true).await;
    publisher.publish_retained(&sentinel, b"{}").await;
    let fresh =
        Observer::subscribe(port, &format!("fresh-{n}"), &format!("{prefix}/#"), true).await;
    wait_until(
        "the sentinel among the retained messages",
        Duration::from_secs(10),
        || fresh.all().iter().any(|m| m.topic == sentinel),
    )
    .await;
    let out = fresh
        .all()
        .into_iter()
        .filter(|m| m.topic != sentinel && !m.topic.contains("/zz_sentinel/"))
        .map(|m| {
            assert!(m.retain, "{} arrived unretained", m.topic);
            (m.topic.clone(), serde_json::from_slice(&m.payload).unwrap())
        })
        .collect();
    fresh.stop().await;
    publisher.stop().await;
    out
}

/// What Home Assistant's MQTT discovery requires of each entity type we publish,
/// and that every topic an entity reads is one the camera publishes.
fn assert_valid_entities(found: &BTreeMap<String, Value>, prefix: &str) {
    let camera_topics: BTreeSet<String> = [
        "status",
        "status/metrics",
        "events/plate",
        "events/people_count",
        "file/response",
    ]
    .iter()
    .map(|t| format!("{CAMERA}/{t}"))
    .collect();
    let mut unique = BTreeSet::new();
    for (topic, e) in found {
        let parts: Vec<&str> = topic.split('/').collect();
        assert_eq!(parts.len(), 5, "{topic}");
        assert_eq!(parts[0], prefix);
        assert_eq!(parts[4], "config");
        assert!(
            parts[2..4].iter().all(|p| p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')),
            "{topic}: node and object ids are [a-zA-Z0-9_-]"
        );
        let component = parts[1];
        let uid = e["unique_id"]
            .as_str()
            .unwrap_or_else(|| panic!("{topic}: unique_id"));
        assert!(
            unique.insert(uid.to_owned()),
            "{topic}: unique_id {uid} repeated"
        );
        let ids = e["device"]["identifiers"].as_array();
        assert!(
            ids.is_some_and(|a| !a.is_empty()),
            "{topic}: device.identifiers"
        );
        assert_eq!(e["device"]["name"], "Gate camera", "{topic}");
        let mut reads = Vec::new();
        match component {
            "sensor" | "binary_sensor" => {
                reads.push(
                    e["state_topic"]
                        .as_str()
                        .unwrap_or_else(|| panic!("{topic}: state_topic")),
                );
                assert!(e["value_template"].is_string(), "{topic}");
            }
            "image" => {
                let url = e["url_topic"].as_str();
                let image = e["image_topic"].as_str();
                assert!(
                    url.is_some() != image.is_some(),
                    "{topic}: url_topic or image_topic"
                );
                reads.extend(url.or(image));
            }
            other => panic!("{topic}: unexpected component {other}"),
        }
        if component == "binary_sensor" {
            assert_eq!(e["payload_on"], "online");
            assert_eq!(e["payload_off"], "offline");
        }
        if let Some(t) = e["json_attributes_topic"].as_str() {
            reads.push(t);
        }
        for a in e["availability"].as_array().into_iter().flatten() {
            reads.push(
                a["topic"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{topic}: availability topic")),
            );
        }
        for r in reads {
            assert!(
                camera_topics.contains(r),
                "{topic} reads {r}, which the camera does not publish"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_is_published_valid_moved_and_removed() {
    let rig = Rig::new("homeassistant", LOCAL).await;
    let port = rig.broker.plain_port;
    let watcher = Observer::subscribe(port, "ha-watcher", "+/#", true).await;
    let mut daemon = rig.daemon(0);
    let mut n = 0;

    // Connectivity, outbox depth, last plate, snapshot, and in/out for two lines.
    wait_until("eight discovery messages", Duration::from_secs(30), || {
        watcher
            .all()
            .iter()
            .filter(|m| m.topic.starts_with("homeassistant/"))
            .count()
            >= 8
    })
    .await;
    let found = retained(port, "homeassistant", &mut n).await;
    assert_eq!(found.len(), 8, "{:#?}", found.keys());
    assert_valid_entities(&found, "homeassistant");
    let node = CAMERA.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_");
    for object in [
        "people_door_in",
        "people_side_gate_out",
        "last_plate",
        "outbox_depth",
    ] {
        assert!(
            found.contains_key(&format!("homeassistant/sensor/{node}/{object}/config")),
            "{object}: {:#?}",
            found.keys()
        );
    }
    assert!(found.contains_key(&format!(
        "homeassistant/binary_sensor/{node}/connectivity/config"
    )));
    assert!(found.contains_key(&format!("homeassistant/image/{node}/snapshot/config")));

    // Home Assistant starts and asks for discovery again with its birth message.
    let before = watcher.all().len();
    rig.observer
        .publish("homeassistant/status", b"online")
        .await;
    wait_until("discovery published again", Duration::from_secs(15), || {
        watcher.all()[before..]
            .iter()
            .filter(|m| m.topic.starts_with("homeassistant/"))
            .count()
            >= 8
    })
    .await;

    // A remote change of prefix moves the entities.
    rig.observer
        .publish_retained(
            &format!("{CAMERA}/config"),
            br#"{"version":1,"homeassistant":{"prefix":"ha2"}}"#,
        )
        .await;
    wait_until("the prefix change applied", Duration::from_secs(15), || {
        rig.observer
            .config_statuses()
            .iter()
            .any(|s| s["version"] == 1 && s["state"] == "applied")
    })
    .await;
    wait_until("discovery under ha2", Duration::from_secs(15), || {
        watcher
            .all()
            .iter()
            .filter(|m| m.topic.starts_with("ha2/"))
            .count()
            >= 8
    })
    .await;
    assert!(
        retained(port, "homeassistant", &mut n).await.is_empty(),
        "old prefix not cleared"
    );
    let moved = retained(port, "ha2", &mut n).await;
    assert_eq!(moved.len(), 8);
    assert_valid_entities(&moved, "ha2");

    // Switched off in the local file while the daemon is down: at the next start
    // it removes what its record says it published.
    daemon.proc.terminate();
    let text = std::fs::read_to_string(&rig.config).unwrap().replace(
        "enabled = true\nname = \"Gate camera\"",
        "enabled = false\nname = \"Gate camera\"",
    );
    std::fs::write(&rig.config, text).unwrap();
    let _daemon = rig.daemon(1);
    wait_until(
        "discovery under ha2 removed",
        Duration::from_secs(30),
        || {
            watcher
                .all()
                .iter()
                .filter(|m| m.topic.starts_with("ha2/") && m.payload.is_empty())
                .count()
                >= 8
        },
    )
    .await;
    assert!(retained(port, "ha2", &mut n).await.is_empty());
    assert!(retained(port, "homeassistant", &mut n).await.is_empty());
}
