//! How soon the daemon notices a link that goes silent without closing (a cellular
//! dead zone, half-open TCP), and what its keepalive costs.
//!
//! `cargo bench --bench link` starts Mosquitto, the haproxy ALPN front, a TCP proxy
//! in front of it that can hold every byte without closing anything, and the
//! edgecam binary, then prints for each scenario the time from the link going
//! silent to the daemon dropping the connection, and whether every event arrived
//! afterwards:
//! - with events in flight, at the defaults (keepalive 60 s, `mqtt.ack_timeout`
//!   15 s), against the baseline of `ack_timeout` = keepalive (acknowledgements
//!   waited on as long as the keepalive, as rumqttc alone would);
//! - idle, right after a keepalive ping (the worst case), at keepalive 60 s and 300 s;
//! - the bytes one ping and its answer cost on the wire (TLS records, both ways),
//!   and so the keepalive's bytes per hour.
//!
//! `EDGECAM_BENCH_LINK` picks scenarios (e.g. `busy,idle60`; all by default:
//! `busy,baseline,busy300,idle60,idle300`); the idle ones take up to
//! keepalive × 2 + ack_timeout.

#[path = "../common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;

struct Run {
    name: &'static str,
    keepalive: u64,
    ack_timeout: u64,
    busy: bool,
}

const RUNS: &[Run] = &[
    Run {
        name: "busy",
        keepalive: 60,
        ack_timeout: 15,
        busy: true,
    },
    Run {
        name: "baseline",
        keepalive: 60,
        ack_timeout: 60,
        busy: true,
    },
    Run {
        name: "busy300",
        keepalive: 300,
        ack_timeout: 15,
        busy: true,
    },
    Run {
        name: "idle60",
        keepalive: 60,
        ack_timeout: 15,
        busy: false,
    },
    Run {
        name: "idle300",
        keepalive: 300,
        ack_timeout: 15,
        busy: false,
    },
];

#[tokio::main]
async fn main() {
    let wanted: Vec<String> = std::env::var("EDGECAM_BENCH_LINK")
        .map(|v| v.split(',').map(str::to_owned).collect())
        .unwrap_or_else(|_| RUNS.iter().map(|r| r.name.to_owned()).collect());
    println!(
        "{:<10} {:>9} {:>11} {:>7} {:>12} {:>16}",
        "scenario", "keepalive", "ack_timeout", "traffic", "noticed (s)", "events complete"
    );
    for run in RUNS.iter().filter(|r| wanted.iter().any(|w| w == r.name)) {
        measure(run).await;
    }
}

async fn measure(run: &Run) {
    let dir = test_dir(&format!("bench-link-{}", run.name));
    let pki = Pki::generate(dir.path());
    let broker = Broker::start(dir.path(), &pki);
    let front = Front::start(dir.path(), &pki, broker.plain_port);
    let observer = Observer::start(broker.plain_port, &format!("bench-link-{}", run.name)).await;
    let proxy = Proxy::start(front.port);
    let mut cfg = DaemonConfig::via_front(dir.path(), &pki, &front);
    cfg.port = proxy.port;
    let events = 2000;
    let traffic = if run.busy {
        format!("[synthetic]\nenabled = true\nrate_per_sec = 20.0\ncount = {events}\n")
    } else {
        String::new()
    };
    cfg.extra = format!(
        "[mqtt]\nbackoff_min = \"100ms\"\nbackoff_max = \"1s\"\nconnect_timeout = \"5s\"\n\
         keepalive = \"{}s\"\nack_timeout = \"{}s\"\n\
         [health]\nmetrics_interval = \"0s\"\n{traffic}",
        run.keepalive, run.ack_timeout
    );
    let config = dir.path().join("edgecam.toml");
    cfg.write(&config);
    let daemon = Daemon::start(&config, &dir.path().join("edgecam.log"));
    wait_until("connected", Duration::from_secs(30), || {
        daemon.log_text().contains("connected to the broker")
    })
    .await;
    if run.busy {
        wait_until("events flowing", Duration::from_secs(30), || {
            observer.distinct_events() >= 50
        })
        .await;
    } else {
        // Idle: wait for a keepalive ping to pass (the only bytes), measure it,
        // and go silent right after it: the worst case.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (up, down) = (
            proxy.sent(),
            proxy.received.load(std::sync::atomic::Ordering::SeqCst),
        );
        wait_until(
            "a keepalive ping",
            Duration::from_secs(run.keepalive + 10),
            || proxy.sent() > up,
        )
        .await;
        wait_until("its answer", Duration::from_secs(10), || {
            proxy.received.load(std::sync::atomic::Ordering::SeqCst) > down
        })
        .await;
        let ping = proxy.sent() - up;
        let pong = proxy.received.load(std::sync::atomic::Ordering::SeqCst) - down;
        println!(
            "  one ping: {ping} B up, {pong} B down (TLS records); {:.1} KiB/h at keepalive {} s (TCP/IP headers not counted)",
            (ping + pong) as f64 * 3600.0 / run.keepalive as f64 / 1024.0,
            run.keepalive
        );
    }
    proxy.hold();
    let held = Instant::now();
    let deadline = Duration::from_secs(run.keepalive * 2 + run.ack_timeout + 30);
    wait_until("the dead link noticed", deadline, || {
        daemon
            .log_text()
            .contains("treating the connection as dead")
            || daemon.log_text().contains("connection to the broker lost")
    })
    .await;
    let noticed = held.elapsed();
    proxy.release();
    let complete = if run.busy {
        wait_until("every event", Duration::from_secs(180), || {
            observer.distinct_events() >= events as usize
        })
        .await;
        let seen = observer.events();
        let same_ids = seen.values().all(|ids| ids.iter().all(|id| id == &ids[0]));
        format!(
            "{} / {events}, ids {}",
            seen.len(),
            if same_ids { "same" } else { "DIFFER" }
        )
    } else {
        "-".to_owned()
    };
    println!(
        "{:<10} {:>8}s {:>10}s {:>7} {:>12.1} {:>16}",
        run.name,
        run.keepalive,
        run.ack_timeout,
        if run.busy { "events" } else { "idle" },
        noticed.as_secs_f64(),
        complete
    );
}
