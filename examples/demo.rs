//! The camera's real job on built-in defaults, with no cloud account (see
//! `tests/common/demo.rs`): `deploy/demo.sh` runs this after installing what it
//! needs and fetching the models.
//!
//!   cargo run --example demo -- MODELS_DIR [--raw] [--console DIR]
//!
//! With `--console DIR` (built by `console/build.sh`) the fleet console is served
//! on loopback and its address printed; at the end the demo waits for Enter (when
//! its input is a terminal) before stopping, so the page can be watched.

#[path = "../tests/common/mod.rs"]
mod common;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let Some(models) = args.next() else {
        eprintln!("usage: demo MODELS_DIR [--raw] [--console DIR]");
        std::process::exit(2);
    };
    let rest: Vec<String> = args.collect();
    let raw = rest.iter().any(|a| a == "--raw");
    let console = rest
        .iter()
        .position(|a| a == "--console")
        .and_then(|i| rest.get(i + 1))
        .map(std::path::PathBuf::from);
    let mut hold = || {
        use std::io::IsTerminal;
        if std::io::stdin().is_terminal() {
            println!("\nthe camera keeps running for the console; press Enter to stop it");
            let _ = std::io::stdin().read_line(&mut String::new());
        }
    };
    let outcome = common::demo::run(
        std::path::Path::new(&models),
        raw,
        console.as_deref(),
        &mut hold,
        &mut |l: &str| println!("{l}"),
    )
    .await;
    let ok = !outcome.plates.is_empty()
        && outcome.people_in + outcome.people_out > 0
        && outcome.uploads.len() == 2
        && outcome.uploads.iter().all(|(_, a, b)| a == b)
        && outcome.config_state.as_deref() == Some("applied");
    println!(
        "\nsummary: {} plate events, people in {} out {}, {} uploads verified, configuration {}",
        outcome.plates.len(),
        outcome.people_in,
        outcome.people_out,
        outcome.uploads.iter().filter(|(_, a, b)| a == b).count(),
        outcome
            .config_state
            .as_deref()
            .unwrap_or("not acknowledged")
    );
    println!(
        "next: README.md (configuration, pointing it at AWS IoT Core), docs/protocol.md (topics and payloads), \
         docs/uploads.md, docs/console.md (the fleet console), docs/plates.md, docs/people-counting.md, docs/deploy.md (on a camera)"
    );
    std::process::exit(if ok { 0 } else { 1 });
}
