//! The demo's scene through the daemon, the way `deploy/demo.sh` runs it: plates
//! read from video and reported with a snapshot, people counted, the snapshot and a
//! clip uploaded on request with checksums that match the bucket, and a pushed
//! configuration applied.

mod common;

use std::path::PathBuf;

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_shows_plates_people_uploads_and_a_config_change() {
    let models = PathBuf::from(
        std::env::var("EDGECAM_TEST_MODELS")
            .expect("EDGECAM_TEST_MODELS: run bash tests/run.sh, which fetches the models"),
    );
    let mut lines = Vec::new();
    let outcome = common::demo::run(&models, false, None, &mut || {}, &mut |l: &str| {
        lines.push(l.to_owned())
    })
    .await;
    let shown = lines.join("\n");
    let texts: Vec<&str> = outcome
        .plates
        .iter()
        .filter_map(|e| e["payload"]["plate"].as_str())
        .collect();
    assert!(
        texts.iter().any(|t| common::demo::PLATES.contains(t)),
        "no plate of the scene read: {texts:?}\n{shown}"
    );
    assert!(shown.contains("  plate "), "{shown}");
    assert!(
        outcome.people_in >= 1 && outcome.people_out >= 1,
        "people in {} out {}\n{shown}",
        outcome.people_in,
        outcome.people_out
    );
    let ids: Vec<&str> = outcome.uploads.iter().map(|u| u.0.as_str()).collect();
    assert_eq!(ids, ["snapshot-1", "clip-1"], "{shown}");
    for (id, reported, stored) in &outcome.uploads {
        assert_eq!(reported, stored, "{id}");
    }
    assert!(shown.contains("sha256 matches the camera's"), "{shown}");
    assert_eq!(outcome.config_state.as_deref(), Some("applied"), "{shown}");
    assert!(shown.contains("config v2 applied"), "{shown}");
}
