//! Health on the camera itself: systemd integration through a real notify socket
//! (READY=1 once the stages run; watchdog pings while the daemon is sound — outbox
//! answering, MQTT loop coming round, stages within their policies — whether or
//! not the broker can be reached), and `edgecam status`, which reads what the
//! daemon last wrote to its state dir, connected or not.

mod common;

use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

fn listen(path: &std::path::Path) -> Arc<Mutex<Vec<String>>> {
    let socket = UnixDatagram::bind(path).unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf) {
            sink.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    });
    got
}

fn count(got: &Arc<Mutex<Vec<String>>>, what: &str) -> usize {
    got.lock()
        .unwrap()
        .iter()
        .filter(|m| m.lines().any(|l| l == what))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_watchdog_is_pinged_while_the_daemon_is_sound_online_or_not() {
    for online in [true, false] {
        let mut rig = Rig::new("watchdog", "").await;
        let socket = rig.path().join("notify.sock");
        let got = listen(&socket);
        if !online {
            // The broker gone: the MQTT loop keeps coming round between attempts.
            rig.front.stop();
        }
        // A ping every second (half of WATCHDOG_USEC).
        let _daemon = Daemon::start_under_systemd(
            &rig.config,
            &rig.path().join("edgecam.log"),
            &socket,
            2_000_000,
        );
        wait_until("READY=1", Duration::from_secs(20), || {
            count(&got, "READY=1") == 1
        })
        .await;
        wait_until("five watchdog pings", Duration::from_secs(20), || {
            count(&got, "WATCHDOG=1") >= 5
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn edgecam_status_shows_what_the_daemon_last_wrote_even_offline() {
    let mut rig = Rig::new("status", "[health]\nmetrics_interval = \"1s\"\n").await;
    // No broker to reach: the status file is for the engineer at the camera.
    rig.front.stop();
    let mut daemon = rig.daemon(0);
    let state = rig.path().join("state/status.json");
    wait_until("the status file", Duration::from_secs(20), || {
        state.exists()
    })
    .await;
    let args = |json: bool| {
        let mut a = vec![
            std::ffi::OsString::from("status"),
            "--config".into(),
            rig.config.clone().into_os_string(),
        ];
        if json {
            a.push("--json".into());
        }
        a
    };
    let raw = edgecam_stdout(&args(true).iter().map(|a| a.as_os_str()).collect::<Vec<_>>());
    let v: serde_json::Value = serde_json::from_str(raw.trim()).unwrap();
    assert!(schema("metrics.json").is_valid(&v), "{v}");
    assert_eq!(v["camera_id"], CAMERA);
    assert_eq!(v["mqtt"]["connects"], 0);
    assert_eq!(v["stages"]["health"]["state"], "running");
    let text = edgecam_stdout(
        &args(false)
            .iter()
            .map(|a| a.as_os_str())
            .collect::<Vec<_>>(),
    );
    assert!(text.contains(&format!("camera {CAMERA}")), "{text}");
    assert!(text.contains("outbox   depth"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("health") && l.contains("running")),
        "{text}"
    );
    assert!(!text.contains("not running"), "{text}");
    // Stopped, the file stays and says how old it is.
    daemon.proc.terminate();
    let out = edgecam()
        .args(["status", "--config"])
        .arg(&rig.config)
        .output()
        .unwrap();
    assert!(out.status.success());
    // Without a file: a clear error naming it.
    std::fs::remove_file(&state).unwrap();
    let out = edgecam()
        .args(["status", "--config"])
        .arg(&rig.config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("status.json"), "{err}");
}
