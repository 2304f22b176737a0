//! TLS and the AWS-like 443 front: edgecam gets through with its certificate and
//! ALPN; other clients do not; edgecam refuses a server its CA did not sign.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, TlsConfiguration, Transport};

/// True if an MQTT CONNECT through `port` with this TLS setup gets a CONNACK.
async fn mqtt_connects(port: u16, tls: Arc<rustls::ClientConfig>, id: &str) -> bool {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    let (_client, mut eventloop) = AsyncClient::new(opts, 10);
    let attempt = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread")]
async fn edgecam_publishes_through_the_alpn_front_with_birth_and_goodbye() {
    let dir = test_dir("front");
    let pki = Pki::generate(dir.path());
    let broker = Broker::start(dir.path(), &pki);
    let front = Front::start(dir.path(), &pki, broker.plain_port);
    let observer = Observer::start(broker.plain_port, "observer-front").await;

    let mut cfg = DaemonConfig::via_front(dir.path(), &pki, &front);
    cfg.extra = "[health]\nmetrics_interval = \"1s\"\n\
                 [synthetic]\nenabled = true\nrate_per_sec = 50.0\ncount = 20\n"
        .into();
    let config = dir.path().join("edgecam.toml");
    cfg.write(&config);
    let mut daemon = Daemon::start(&config, &dir.path().join("edgecam.log"));

    wait_until("20 synthetic events", Duration::from_secs(30), || {
        observer.distinct_events() >= 20
    })
    .await;
    let events = observer.events();
    assert_eq!(events.len(), 20);
    let first = *events.keys().next().unwrap();
    assert_complete(&events, first, first + 19);

    let online = observer.statuses();
    assert_eq!(online[0]["state"], "online", "{online:?}");
    assert_eq!(online[0]["camera_id"], CAMERA);
    assert!(online[0]["version"].is_string());
    assert!(online[0]["started_at"].as_i64().unwrap() > 1_600_000_000_000);

    wait_until("a metrics message", Duration::from_secs(10), || {
        !observer.metrics().is_empty()
    })
    .await;

    let status = daemon.proc.terminate().expect("daemon stops on SIGTERM");
    assert!(
        status.success(),
        "exit status {status:?}\n{}",
        daemon.log_text()
    );
    // Every stage, the publisher and the outbox stopped: none was given up on.
    let log = daemon.log_text();
    assert!(
        log.contains("stopped") && !log.contains("did not stop in time"),
        "{log}"
    );
    wait_until("offline goodbye", Duration::from_secs(10), || {
        observer.statuses().iter().any(|s| s["state"] == "offline")
    })
    .await;
    // Every message matches the published schemas.
    let checked = assert_schemas(&observer);
    assert!(
        checked["event-batch"] >= 1 && checked["status"] >= 2 && checked["metrics"] >= 1,
        "{checked:?}"
    );
    // Everything was acknowledged, so the outbox is empty.
    let stats = outbox_stats(&config);
    assert_eq!(stats["depth"], 0, "{stats}");
    assert_eq!(stats["last_acked_seq"], first + 19);
}

#[tokio::test(flavor = "multi_thread")]
async fn front_refuses_clients_without_alpn_or_certificate() {
    let dir = test_dir("refuse");
    let pki = Pki::generate(dir.path());
    let broker = Broker::start(dir.path(), &pki);
    let front = Front::start(dir.path(), &pki, broker.plain_port);

    let good = client_tls(&pki, true, &["x-amzn-mqtt-ca"]);
    assert!(
        mqtt_connects(front.port, good, "probe-good").await,
        "the proper client must get in"
    );
    let no_alpn = client_tls(&pki, true, &[]);
    assert!(!mqtt_connects(front.port, no_alpn, "probe-no-alpn").await);
    let wrong_alpn = client_tls(&pki, true, &["mqtt"]);
    assert!(!mqtt_connects(front.port, wrong_alpn, "probe-wrong-alpn").await);
    let no_cert = client_tls(&pki, false, &["x-amzn-mqtt-ca"]);
    assert!(!mqtt_connects(front.port, no_cert, "probe-no-cert").await);
    // The broker's own TLS listener requires a certificate too.
    let no_cert_direct = client_tls(&pki, false, &[]);
    assert!(!mqtt_connects(broker.tls_port, no_cert_direct, "probe-direct").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn edgecam_refuses_a_server_its_ca_did_not_sign() {
    let dir = test_dir("rogue");
    let pki = Pki::generate(dir.path());
    let broker = Broker::start(dir.path(), &pki);
    let front = Front::start(dir.path(), &pki, broker.plain_port);
    let observer = Observer::start(broker.plain_port, "observer-rogue").await;

    let mut cfg = DaemonConfig::via_front(dir.path(), &pki, &front);
    cfg.ca = pki.path("rogue-ca.pem");
    cfg.extra = "[mqtt]\nbackoff_min = \"50ms\"\nbackoff_max = \"200ms\"\n".into();
    let config = dir.path().join("edgecam.toml");
    cfg.write(&config);
    let mut daemon = Daemon::start(&config, &dir.path().join("edgecam.log"));
    wait_until(
        "two refused connection attempts",
        Duration::from_secs(20),
        || {
            daemon
                .log_text()
                .matches("cannot connect to the broker")
                .count()
                >= 2
        },
    )
    .await;
    let log = daemon.log_text();
    assert!(
        log.contains("UnknownIssuer") || log.contains("certificate"),
        "the log should say why: {log}"
    );
    assert!(
        daemon.proc.is_running(),
        "a refused server must not stop the daemon"
    );
    assert!(
        observer.statuses().is_empty(),
        "nothing may reach the broker"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn edgecam_connects_on_8883_without_alpn() {
    let dir = test_dir("8883");
    let pki = Pki::generate(dir.path());
    let broker = Broker::start(dir.path(), &pki);
    let observer = Observer::start(broker.plain_port, "observer-8883").await;

    let cfg = DaemonConfig {
        port: broker.tls_port,
        alpn: vec![],
        ca: pki.path("ca.pem"),
        cert: pki.path("client.pem"),
        key: pki.path("client.key"),
        state_dir: dir.path().join("state"),
        extra: "[synthetic]\nenabled = true\nrate_per_sec = 100.0\ncount = 5\n".into(),
    };
    let config = dir.path().join("edgecam.toml");
    cfg.write(&config);
    let _daemon = Daemon::start(&config, &dir.path().join("edgecam.log"));
    wait_until("5 events over 8883", Duration::from_secs(30), || {
        observer.distinct_events() >= 5
    })
    .await;
}
