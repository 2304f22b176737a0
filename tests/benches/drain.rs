//! Benchmark of the daemon core, against a baseline in the same run.
//!
//! `cargo bench --bench drain` starts Mosquitto, the haproxy ALPN front and the
//! edgecam binary (release build) on loopback, and prints:
//! 1. a backlog of N events (default 100 000) drained with the ceilings lifted:
//!    enqueue → PUBACK → delete throughput, durable, against rumqttc publishing the
//!    very same payloads (captured from the durable run) without an outbox;
//! 2. the same backlog under AWS IoT Core's ceilings (100 publishes/s, 512 KiB/s):
//!    bytes/s as a fraction of 512 KiB/s, publishes/s, busiest one-second window;
//! 3. live latency, event creation → delivery to a subscriber (an upper bound of
//!    creation → PUBACK), with an empty backlog: p50, p99;
//! 4. RSS (and its anonymous and file-backed parts) and CPU of the daemon connected
//!    and idle.
//!
//! `EDGECAM_BENCH_BIN` runs another build of the daemon instead of cargo's (say the
//! core build, `--no-default-features`, or the `release-small` profile); the
//! benchmark prints its `--version`.
//!
//! Environment: `EDGECAM_BENCH_EVENTS` (default 100000), `EDGECAM_BENCH_IDLE_SECS` (60),
//! `EDGECAM_BENCH_PHASES` (e.g. `1,3`; all by default), `EDGECAM_BENCH_TIMELINE` (print
//! the arrival times of the first messages of phase 2), `EDGECAM_KEEP_TEST_DIRS` (keep logs).

#[path = "../common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};

const PAYLOAD: &str = r#"{"plate":"AB123CD","confidence":0.93,"box":[412,288,96,31],"region":"eu","note":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Setup {
    dir: tempfile::TempDir,
    pki: Pki,
    front: Front,
    _broker: Broker,
    observer: Observer,
}

impl Setup {
    fn config(&self, name: &str, extra: &str) -> PathBuf {
        let mut cfg = DaemonConfig::via_front(self.dir.path(), &self.pki, &self.front);
        cfg.state_dir = self.dir.path().join(format!("state-{name}"));
        cfg.extra = extra.to_owned();
        let path = self.dir.path().join(format!("{name}.toml"));
        cfg.write(&path);
        // Benchmarks log at info only.
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("edgecam=debug,info", "info");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn daemon(&self, config: &Path, name: &str) -> Daemon {
        let log = self.dir.path().join(format!("{name}.log"));
        let mut cmd = std::process::Command::new(daemon_bin());
        cmd.arg("run").arg("--config").arg(config);
        Daemon {
            config: config.to_owned(),
            proc: Proc::spawn(cmd, log),
        }
    }
}

/// Waits until the outbox table is empty, polling a read-only connection every
/// 5 ms (cheap, unlike parsing what the observer received); returns when it was.
async fn wait_outbox_empty(config: &Path) -> Instant {
    use sqlx::{ConnectOptions, Connection};
    let db = config
        .parent()
        .unwrap()
        .join(format!(
            "state-{}",
            config.file_stem().unwrap().to_string_lossy()
        ))
        .join("outbox.db");
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut conn = loop {
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&db)
            .read_only(true);
        match opts.connect().await {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await
            }
            Err(e) => panic!("cannot open {}: {e}", db.display()),
        }
    };
    loop {
        let any: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM events)")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        if !any {
            let at = Instant::now();
            conn.close().await.unwrap();
            return at;
        }
        assert!(Instant::now() < deadline, "the outbox did not empty");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn wait_delivered(observer: &Observer, n: usize, timeout: Duration) {
    wait_until("every event delivered", timeout, || {
        observer.distinct_events() >= n
    })
    .await;
}

fn wait_empty(config: &Path) {
    wait_for("the outbox to empty", Duration::from_secs(30), || {
        outbox_stats(config)["depth"] == 0
    });
}

/// rumqttc alone publishing `messages` (topic, payload) at QoS 1 through the front,
/// 100 in flight; returns the time from CONNACK to the last PUBACK.
async fn baseline(setup: &Setup, messages: Vec<(String, Vec<u8>)>) -> Duration {
    let tls = client_tls(&setup.pki, true, &["x-amzn-mqtt-ca"]);
    let mut opts = MqttOptions::new(format!("{CAMERA}-baseline"), "127.0.0.1", setup.front.port);
    opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)))
        .set_inflight(100)
        .set_keep_alive(Duration::from_secs(60))
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(opts, 200);
    let total = messages.len();
    let mut acked = 0;
    let mut start = None;
    let mut publisher = Some(messages);
    loop {
        match eventloop.poll().await.expect("baseline connection") {
            Event::Incoming(Packet::ConnAck(_)) => {
                start = Some(Instant::now());
                let client = client.clone();
                let messages = publisher.take().expect("one connection");
                tokio::spawn(async move {
                    for (topic, payload) in messages {
                        client
                            .publish(topic, QoS::AtLeastOnce, false, payload)
                            .await
                            .unwrap();
                    }
                });
            }
            Event::Incoming(Packet::PubAck(_)) => {
                acked += 1;
                if acked == total {
                    return start.unwrap().elapsed();
                }
            }
            _ => {}
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn proc_cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// The daemon under test: `EDGECAM_BENCH_BIN`, or cargo's build.
fn daemon_bin() -> PathBuf {
    std::env::var_os("EDGECAM_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(edgecam_bin)
}

fn proc_status_kb(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn phase(n: u32) -> bool {
    std::env::var("EDGECAM_BENCH_PHASES")
        .map(|v| v.split(',').any(|p| p.trim() == n.to_string()))
        .unwrap_or(true)
}

/// Arrival of the first birth message: the daemon's CONNACK, seen from outside.
fn connected_at(observer: &Observer) -> Option<Instant> {
    observer
        .all()
        .into_iter()
        .find(|m| {
            m.topic == format!("{CAMERA}/status")
                && m.payload.starts_with(b"{")
                && String::from_utf8_lossy(&m.payload).contains("online")
        })
        .map(|m| m.at)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let n = env_or("EDGECAM_BENCH_EVENTS", 100_000);
    let idle_secs = env_or("EDGECAM_BENCH_IDLE_SECS", 60);
    let dir = test_dir("bench");
    let pki = Pki::generate(dir.path());
    let broker = Broker::start(dir.path(), &pki);
    let front = Front::start(dir.path(), &pki, broker.plain_port);
    let observer = Observer::start(broker.plain_port, "observer-bench").await;
    let setup = Setup {
        dir,
        pki,
        front,
        _broker: broker,
        observer,
    };
    let version = std::process::Command::new(daemon_bin())
        .arg("--version")
        .output()
        .expect("the daemon's --version");
    print!("{}", String::from_utf8_lossy(&version.stdout));
    println!(
        "edgecam drain benchmark: {n} events, payload {} bytes",
        PAYLOAD.len()
    );

    // 1. Durable drain, ceilings lifted, against the baseline.
    if phase(1) {
        let fast = setup.config(
            "durable",
            "[mqtt]\nmax_publishes_per_sec = 100000\nmax_bytes_per_sec = 1099511627776\n[health]\nmetrics_interval = \"0s\"\n",
        );
        let t = Instant::now();
        emit(&fast, n, PAYLOAD);
        let enqueue = t.elapsed();
        let started = Instant::now();
        let mut daemon = setup.daemon(&fast, "durable");
        let done = wait_outbox_empty(&fast).await;
        wait_delivered(&setup.observer, n as usize, Duration::from_secs(600)).await;
        let connected = connected_at(&setup.observer).expect("birth message");
        let drain = done - connected;
        daemon.proc.terminate();
        let batches = setup.observer.batches();
        assert_complete(&setup.observer.events(), 1, n as i64);
        let wire: usize = batches
            .iter()
            .map(|b| b.payload.len() + b.topic.len())
            .sum();
        let messages: Vec<(String, Vec<u8>)> = batches
            .iter()
            .map(|b| (b.topic.clone(), b.payload.clone()))
            .collect();
        let published = messages.len();
        setup.observer.clear();
        let base = baseline(&setup, messages).await;
        wait_until("baseline deliveries", Duration::from_secs(600), || {
            setup.observer.batches().len() >= published
        })
        .await;
        let eps = |d: Duration| n as f64 / d.as_secs_f64();
        println!(
            "\n1. backlog drain, ceilings lifted ({published} messages, {:.1} MB on the wire)",
            wire as f64 / 1e6
        );
        println!(
            "   enqueue (edgecam emit, 1000 per commit)  {:>9.0} events/s  ({:.2} s)",
            eps(enqueue),
            enqueue.as_secs_f64()
        );
        println!(
            "   durable drain: CONNACK → PUBACK → delete {:>9.0} events/s  ({:.2} s, {:.1} MB/s)",
            eps(drain),
            drain.as_secs_f64(),
            wire as f64 / drain.as_secs_f64() / 1e6
        );
        println!(
            "   daemon start → last delete               {:>9.0} events/s  ({:.2} s)",
            eps(done - started),
            (done - started).as_secs_f64()
        );
        println!(
            "   enqueue + drain, end to end              {:>9.0} events/s  ({:.2} s)",
            eps(enqueue + drain),
            (enqueue + drain).as_secs_f64()
        );
        println!(
            "   baseline: rumqttc alone, same payloads   {:>9.0} events/s  ({:.2} s, CONNACK → last PUBACK)",
            eps(base),
            base.as_secs_f64()
        );
        let ratio = base.as_secs_f64() / drain.as_secs_f64();
        println!(
            "   durable drain / baseline                 {:>9.1} %  (target ≥ 80 %: {})",
            ratio * 100.0,
            if ratio >= 0.8 { "met" } else { "NOT met" }
        );
        setup.observer.clear();
    }

    // 2. The same backlog under AWS IoT Core's ceilings (the defaults).
    if phase(2) {
        let aws = setup.config("aws", "[health]\nmetrics_interval = \"0s\"\n");
        emit(&aws, n, PAYLOAD);
        let mut daemon = setup.daemon(&aws, "aws");
        wait_delivered(&setup.observer, n as usize, Duration::from_secs(1200)).await;
        daemon.proc.terminate();
        let batches = setup.observer.batches();
        let sizes: Vec<usize> = batches
            .iter()
            .map(|b| b.payload.len() + b.topic.len())
            .collect();
        let total: usize = sizes.iter().sum();
        let span = batches
            .last()
            .unwrap()
            .at
            .duration_since(batches[0].at)
            .as_secs_f64();
        // Paced stream: bytes after the first message over the time they took.
        let rate = (total - sizes[0]) as f64 / span;
        let (max_msgs, max_bytes) = busiest_window(&batches, Duration::from_secs(1));
        if std::env::var_os("EDGECAM_BENCH_TIMELINE").is_some() {
            for (b, size) in batches.iter().zip(&sizes).take(16) {
                println!(
                    "   +{:>8.3} s  {size} B",
                    b.at.duration_since(batches[0].at).as_secs_f64()
                );
            }
        }
        let limit = 512.0 * 1024.0;
        println!(
            "\n2. backlog drain under AWS ceilings (100 publishes/s, 512 KiB/s, 128 KiB messages)"
        );
        println!(
            "   {} messages, mean {:.0} bytes, {:.1} s",
            batches.len(),
            total as f64 / batches.len() as f64,
            span
        );
        println!(
            "   throughput       {:>10.0} B/s = {:.1} % of 512 KiB/s (target ≥ 90 %: {})",
            rate,
            rate / limit * 100.0,
            if rate >= 0.9 * limit {
                "met"
            } else {
                "NOT met"
            }
        );
        println!("   events/s         {:>10.0}", n as f64 / span);
        println!("   publishes/s      {:>10.1} mean; busiest 1 s window: {max_msgs} publishes, {max_bytes} bytes (ceilings 100, 524288)", batches.len() as f64 / span);
        setup.observer.clear();
    }

    // 3. Live latency, empty backlog.
    if !phase(3) {
        return;
    }
    let live = setup.config(
        "live",
        "[health]\nmetrics_interval = \"0s\"\n[synthetic]\nenabled = true\nrate_per_sec = 50.0\ncount = 500\npayload_bytes = 100\n",
    );
    let daemon = setup.daemon(&live, "live");
    wait_delivered(&setup.observer, 500, Duration::from_secs(60)).await;
    let mut lat: Vec<f64> = Vec::new();
    for b in setup.observer.batches() {
        let v: serde_json::Value = serde_json::from_slice(&b.payload).unwrap();
        for ev in v["events"].as_array().unwrap() {
            let t_us = ev["payload"]["t_us"].as_u64().unwrap() as u128;
            lat.push((b.wall_us.saturating_sub(t_us)) as f64 / 1000.0);
        }
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "\n3. live latency, creation → delivery to a subscriber ({} events at 50/s)",
        lat.len()
    );
    println!(
        "   p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat[lat.len() - 1]
    );

    // 4. Idle: connected, nothing to send.
    let pid = daemon.proc.pid();
    wait_empty(&live);
    let ticks0 = proc_cpu_ticks(pid);
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let ticks = proc_cpu_ticks(pid) - ticks0;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu = ticks as f64 / hz;
    println!(
        "\n4. idle for {:.0} s, connected",
        t.elapsed().as_secs_f64()
    );
    println!(
        "   RSS {} KiB (anonymous {} KiB, file-backed {} KiB; peak {} KiB), CPU {:.2} s = {:.3} %",
        proc_status_kb(pid, "VmRSS:"),
        proc_status_kb(pid, "RssAnon:"),
        proc_status_kb(pid, "RssFile:"),
        proc_status_kb(pid, "VmHWM:"),
        cpu,
        cpu / t.elapsed().as_secs_f64() * 100.0
    );
}
