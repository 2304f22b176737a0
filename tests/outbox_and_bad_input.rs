//! The outbox's bounds, and bad input: invalid config, missing certificates, a
//! corrupt database, an unusable state directory.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::*;

fn cli(args: &[&str], config: &Path) -> Output {
    edgecam().args(args).arg(config).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn offline_config(dir: &Path, pki: &Pki, extra: &str) -> std::path::PathBuf {
    // Nothing listens on this port: the daemon keeps everything in the outbox.
    let cfg = DaemonConfig::offline(
        dir,
        pki,
        &format!("[mqtt]\nbackoff_min = \"100ms\"\nbackoff_max = \"1s\"\n{extra}"),
    );
    let path = dir.join("edgecam.toml");
    cfg.write(&path);
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn tiny_max_bytes_keeps_the_files_within_it_and_reports_evictions() {
    const MAX: u64 = 1 << 20;
    let dir = test_dir("tiny");
    let pki = Pki::generate(dir.path());
    let broker = Broker::start(dir.path(), &pki);
    let front = Front::start(dir.path(), &pki, broker.plain_port);
    let observer = Observer::start(broker.plain_port, "observer-tiny").await;
    let mut cfg = DaemonConfig::via_front(dir.path(), &pki, &front);
    // A slow link (1.6 KB/s) and a fast producer: the outbox must evict.
    cfg.extra = format!(
        "[outbox]\nmax_bytes = {MAX}\n\
         [mqtt]\nmax_message_bytes = 1024\nbilling_step_bytes = 1024\nmax_bytes_per_sec = 1600\n\
         [health]\nmetrics_interval = \"1s\"\n\
         [synthetic]\nenabled = true\nrate_per_sec = 3000.0\npayload_bytes = 400\ncount = 12000\n"
    );
    let config = dir.path().join("edgecam.toml");
    cfg.write(&config);
    let _daemon = Daemon::start(&config, &dir.path().join("edgecam.log"));

    let db = dir.path().join("state/outbox.db");
    let wal = dir.path().join("state/outbox.db-wal");
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut largest = 0;
    wait_until("the producer to finish", Duration::from_secs(60), || {
        largest = largest.max(size(&db) + size(&wal));
        db.exists() && outbox_stats(&config)["last_seq"].as_i64().unwrap_or(0) >= 12000
    })
    .await;
    largest = largest.max(size(&db) + size(&wal));
    assert!(
        largest <= MAX,
        "outbox files reached {largest} bytes, max_bytes is {MAX}"
    );

    let stats = outbox_stats(&config);
    let evicted = stats["evicted"].as_i64().unwrap();
    assert!(evicted > 5000, "{stats}");
    assert!(stats["file_bytes"].as_u64().unwrap() <= MAX);
    wait_until(
        "the eviction count in the metrics message",
        Duration::from_secs(10),
        || {
            observer.metrics().iter().any(|m| {
                m["outbox"]["evicted"].as_i64().unwrap_or(0) > 0
                    && m["events"]["evicted"].as_u64().unwrap_or(0) > 0
            })
        },
    )
    .await;
    assert_schemas(&observer);
    eprintln!("largest outbox files: {largest} bytes of {MAX}; evicted {evicted}");
}

#[tokio::test(flavor = "multi_thread")]
async fn refuse_newest_keeps_the_oldest_and_counts_refusals() {
    let dir = test_dir("refuse-newest");
    let pki = Pki::generate(dir.path());
    let config = offline_config(
        dir.path(),
        &pki,
        "[outbox]\nmax_bytes = 1048576\nwhen_full = \"refuse_newest\"\n\
         [synthetic]\nenabled = true\nrate_per_sec = 5000.0\npayload_bytes = 400\ncount = 5000\n",
    );
    let mut daemon = Daemon::start(&config, &dir.path().join("edgecam.log"));
    wait_until("refusals", Duration::from_secs(30), || {
        dir.path().join("state/outbox.db").exists() && {
            let s = outbox_stats(&config);
            s["refused"].as_i64().unwrap_or(0) + s["depth"].as_i64().unwrap_or(0) >= 5000
        }
    })
    .await;
    let s = outbox_stats(&config);
    assert!(s["refused"].as_i64().unwrap() > 0, "{s}");
    assert_eq!(s["evicted"], 0);
    // The oldest events are the ones kept.
    assert_eq!(s["last_seq"], s["depth"], "{s}");
    assert!(daemon.log_text().contains("outbox refused new events"));
    assert!(daemon.proc.is_running());
}

#[test]
fn invalid_config_values_are_reported_by_field() {
    let dir = test_dir("badcfg");
    let pki = Pki::generate(dir.path());
    let config = offline_config(
        dir.path(),
        &pki,
        "keepalive = \"5s\"\nmax_inflight = 0\n[outbox]\nwhen_full = \"drop_newest\"\n",
    );
    let out = cli(&["check-config"], &config);
    assert_eq!(out.status.code(), Some(2));
    // Unknown enum value: serde names the field and the accepted values.
    assert!(
        stderr(&out).contains("when_full") || stderr(&out).contains("drop_newest"),
        "{}",
        stderr(&out)
    );

    let config = offline_config(dir.path(), &pki, "keepalive = \"5s\"\nmax_inflight = 0\n");
    let out = cli(&["check-config"], &config);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("mqtt.keepalive") && err.contains("30s"),
        "{err}"
    );
    assert!(err.contains("mqtt.max_inflight"), "{err}");

    let out = cli(&["run", "--config"], &config);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("mqtt.keepalive"));
    assert!(!stderr(&out).contains("panicked"));

    let config = offline_config(dir.path(), &pki, "[mqtt.extra]\nfoo = 1\n");
    let out = cli(&["check-config"], &config);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("extra"), "{}", stderr(&out));
}

#[test]
fn missing_certificate_file_is_a_clear_error() {
    let dir = test_dir("nocert");
    let pki = Pki::generate(dir.path());
    let config = offline_config(dir.path(), &pki, "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("client.pem", "missing.pem");
    std::fs::write(&config, text).unwrap();
    let out = cli(&["check-config"], &config);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("missing.pem"), "{}", stderr(&out));
    let out = cli(&["run", "--config"], &config);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot read certificate file") && err.contains("missing.pem"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
}

#[test]
fn unusable_state_directory_is_a_clear_error() {
    let dir = test_dir("statedir");
    let pki = Pki::generate(dir.path());
    let config = offline_config(dir.path(), &pki, "");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("state_dir = \"{}\"", dir.path().join("state").display()),
        &format!("state_dir = \"{}\"", file.join("state").display()),
    );
    std::fs::write(&config, text).unwrap();
    let out = cli(&["run", "--config"], &config);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("state directory") && err.contains("a-file"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_database_is_moved_aside_and_seqs_are_never_reused() {
    let dir = test_dir("corrupt");
    let pki = Pki::generate(dir.path());
    let broker = Broker::start(dir.path(), &pki);
    let front = Front::start(dir.path(), &pki, broker.plain_port);
    let observer = Observer::start(broker.plain_port, "observer-corrupt").await;
    let mut cfg = DaemonConfig::via_front(dir.path(), &pki, &front);
    cfg.extra = "[synthetic]\nenabled = true\nrate_per_sec = 100.0\ncount = 5\n".into();
    let config = dir.path().join("edgecam.toml");
    cfg.write(&config);

    emit(&config, 10, "{}");
    let state = dir.path().join("state");
    std::fs::write(state.join("outbox.db"), vec![0x5a; 64 * 1024]).unwrap();
    for f in ["outbox.db-wal", "outbox.db-shm"] {
        let _ = std::fs::remove_file(state.join(f));
    }
    let daemon = Daemon::start(&config, &dir.path().join("edgecam.log"));
    wait_until(
        "events from the new database",
        Duration::from_secs(30),
        || observer.distinct_events() >= 5,
    )
    .await;
    let seqs: Vec<i64> = observer.events().keys().copied().collect();
    assert!(
        seqs[0] > 10,
        "seqs {seqs:?} reuse numbers of the lost database"
    );
    assert_eq!(seqs.len(), 5);
    let aside: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("outbox.db.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1);
    assert!(daemon.log_text().contains("unreadable or corrupt"));
}

#[test]
fn outbox_stats_without_a_database_says_so() {
    let dir = test_dir("nostats");
    let pki = Pki::generate(dir.path());
    let config = offline_config(dir.path(), &pki, "");
    let out = cli(&["outbox", "stats", "--config"], &config);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no outbox database"),
        "{}",
        stderr(&out)
    );
}
