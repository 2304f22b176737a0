//! Nothing lost: broker down, kill -9 mid-drain, broker restart, network cut; and
//! the broker's ceilings are never exceeded.

mod common;

use std::time::Duration;

use common::*;

const PAYLOAD: &str = r#"{"plate":"AB123CD","confidence":0.93,"note":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#;

#[tokio::test(flavor = "multi_thread")]
async fn events_enqueued_while_the_broker_is_down_all_arrive() {
    const N: i64 = 3000;
    let mut rig = Rig::new(
        "down",
        &format!("[synthetic]\nenabled = true\nrate_per_sec = 5000.0\ncount = {N}\n"),
    )
    .await;
    // The observer's session survives the broker's restart; nothing is published yet.
    // With the front down too, every connection attempt is refused.
    rig.broker.stop();
    rig.front.stop();
    let daemon = rig.daemon(0);
    wait_until(
        "the outbox to hold every event",
        Duration::from_secs(30),
        || {
            std::fs::metadata(rig.path().join("state/outbox.db")).is_ok()
                && outbox_stats(&rig.config)["depth"] == N
        },
    )
    .await;
    assert_eq!(rig.observer.distinct_events(), 0);
    rig.broker.restart();
    rig.front.restart();
    wait_until("every event to arrive", Duration::from_secs(60), || {
        rig.observer.distinct_events() as i64 >= N
    })
    .await;
    assert_complete(&rig.observer.events(), 1, N);
    wait_until("the outbox to empty", Duration::from_secs(10), || {
        outbox_stats(&rig.config)["depth"] == 0
    })
    .await;
    let log = daemon.log_text();
    assert!(log.contains("cannot connect to the broker"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_the_drain_loses_nothing() {
    const N: i64 = 30_000;
    let rig = Rig::new("kill9", "max_bytes_per_sec = 2097152\n").await;
    emit(&rig.config, N as u64, PAYLOAD);
    let mut kills = 0;
    for round in 0..5 {
        let mut daemon = rig.daemon(round);
        let before = rig.observer.distinct_events();
        wait_until("progress before the kill", Duration::from_secs(30), || {
            rig.observer.distinct_events() >= before + 1500
                || rig.observer.distinct_events() as i64 >= N
        })
        .await;
        if rig.observer.distinct_events() as i64 >= N {
            break;
        }
        daemon.proc.kill9();
        kills += 1;
    }
    assert!(
        kills >= 3,
        "the drain finished before enough kills ({kills})"
    );
    let _daemon = rig.daemon(99);
    wait_until(
        "every event after the kills",
        Duration::from_secs(60),
        || rig.observer.distinct_events() as i64 >= N,
    )
    .await;
    let events = rig.observer.events();
    assert_complete(&events, 1, N);
    let deliveries: usize = events.values().map(|v| v.len()).sum();
    eprintln!("{kills} kills: {N} events, {deliveries} deliveries");
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_restart_mid_drain_loses_nothing() {
    const N: i64 = 20_000;
    let mut rig = Rig::new("restart", "max_bytes_per_sec = 2097152\n").await;
    emit(&rig.config, N as u64, PAYLOAD);
    let _daemon = rig.daemon(0);
    wait_until("some progress", Duration::from_secs(30), || {
        rig.observer.distinct_events() >= 2000
    })
    .await;
    rig.broker.stop();
    rig.broker.restart();
    wait_until(
        "every event after the broker restart",
        Duration::from_secs(60),
        || rig.observer.distinct_events() as i64 >= N,
    )
    .await;
    assert_complete(&rig.observer.events(), 1, N);
}

#[tokio::test(flavor = "multi_thread")]
async fn network_cut_and_restore_loses_nothing() {
    const N: i64 = 20_000;
    let mut rig = Rig::new("cut", "max_bytes_per_sec = 2097152\n").await;
    emit(&rig.config, N as u64, PAYLOAD);
    let daemon = rig.daemon(0);
    wait_until("some progress", Duration::from_secs(30), || {
        rig.observer.distinct_events() >= 2000
    })
    .await;
    rig.front.stop();
    wait_until(
        "the daemon to notice the cut",
        Duration::from_secs(30),
        || daemon.log_text().contains("connection to the broker lost"),
    )
    .await;
    let during = rig.observer.distinct_events();
    rig.front.restart();
    wait_until("every event after the cut", Duration::from_secs(60), || {
        rig.observer.distinct_events() as i64 >= N
    })
    .await;
    assert!(
        (during as i64) < N,
        "the cut came too late to test anything"
    );
    assert_complete(&rig.observer.events(), 1, N);
}

#[tokio::test(flavor = "multi_thread")]
async fn publishes_never_exceed_the_configured_ceilings() {
    const N: i64 = 600;
    const MAX_MSG: usize = 4096;
    const MAX_PER_SEC: usize = 20;
    const MAX_BYTES_PER_SEC: usize = 40_000;
    let rig = Rig::new(
        "ceilings",
        &format!(
            "max_message_bytes = {MAX_MSG}\nbilling_step_bytes = 1024\n\
             max_publishes_per_sec = {MAX_PER_SEC}\nmax_bytes_per_sec = {MAX_BYTES_PER_SEC}\n\
             [health]\nmetrics_interval = \"0s\"\n"
        ),
    )
    .await;
    emit(&rig.config, N as u64, PAYLOAD);
    let _daemon = rig.daemon(0);
    wait_until("every event", Duration::from_secs(60), || {
        rig.observer.distinct_events() as i64 >= N
    })
    .await;
    assert_complete(&rig.observer.events(), 1, N);

    let batches = rig.observer.batches();
    let topic_len = format!("{CAMERA}/events/test").len();
    for b in &batches {
        assert!(
            b.payload.len() <= MAX_MSG,
            "a message of {} bytes",
            b.payload.len()
        );
    }
    // Backlog is packed: every batch but the last is close to the ceiling.
    let event_len = batches[0].payload.len()
        / serde_json::from_slice::<serde_json::Value>(&batches[0].payload).unwrap()["events"]
            .as_array()
            .unwrap()
            .len();
    for b in &batches[..batches.len() - 1] {
        assert!(
            b.payload.len() + event_len + 1 > MAX_MSG,
            "batch of {} bytes is not full",
            b.payload.len()
        );
    }
    // edgecam keeps a 30 ms margin on its one-second windows, so whole seconds hold
    // even with some delivery jitter on the observer's side.
    let (publishes, bytes) = busiest_window(&batches, Duration::from_secs(1));
    assert!(
        publishes <= MAX_PER_SEC,
        "{publishes} publishes within a second"
    );
    assert!(bytes <= MAX_BYTES_PER_SEC, "{bytes} bytes within a second");
    let span = batches
        .last()
        .unwrap()
        .at
        .duration_since(batches[0].at)
        .as_secs_f64();
    let total: usize = batches.iter().map(|b| b.payload.len() + topic_len).sum();
    eprintln!(
        "{} batches, {total} bytes, first to last {span:.2} s; busiest second: {bytes} B in {publishes} publishes (ceilings {MAX_BYTES_PER_SEC} B, {MAX_PER_SEC})",
        batches.len()
    );
}
