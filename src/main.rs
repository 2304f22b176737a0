//! edgecam: the camera-side agent. Thin entry point: parse the command line, load the
//! configuration, hand over to `app::run` or a one-shot command.

mod app;
mod config;
mod events;
mod health;
mod metrics;
mod mqtt;
mod outbox;
mod synthetic;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::value::RawValue;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use config::{Config, LogConfig, LogTarget};

#[derive(Parser)]
#[command(name = "edgecam", version = version(), about = "Camera events to AWS IoT Core, durably")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file (values and certificate files) without running.
    CheckConfig {
        /// Configuration file (TOML).
        file: PathBuf,
        /// Check the values only, not the certificate and key files (for templates).
        #[arg(long)]
        values_only: bool,
    },
    /// Inspect the outbox.
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
    },
    /// Commit events to the outbox directly (the running daemon publishes them).
    Emit {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Event kind (topic level): a-z 0-9 _ -.
        #[arg(long, default_value = "manual")]
        kind: String,
        /// How many events.
        #[arg(long, default_value_t = 1)]
        count: u64,
        /// Payload, one JSON value; `{"n": i}` is used when absent.
        #[arg(long)]
        payload: Option<String>,
    },
}

#[derive(Subcommand)]
enum OutboxCommand {
    /// Depth, bytes, oldest age, evicted/expired/refused counts, last acknowledged seq.
    Stats {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn version() -> &'static str {
    concat!(
        env!("CARGO_PKG_VERSION"),
        " (",
        env!("EDGECAM_GIT_HASH"),
        ", ",
        env!("EDGECAM_TARGET"),
        ")"
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::CheckConfig { file, values_only } => return check_config(&file, values_only),
        Command::Run { config } => load(&config).and_then(|c| {
            init_logging(&c.log);
            runtime()?.block_on(app::run(c))
        }),
        Command::Outbox {
            command: OutboxCommand::Stats { config, json },
        } => load(&config).and_then(|c| runtime()?.block_on(outbox_stats(&c, json))),
        Command::Emit {
            config,
            kind,
            count,
            payload,
        } => load(&config)
            .and_then(|c| runtime()?.block_on(emit(&c, &kind, count, payload.as_deref()))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgecam: {e:#}");
            tracing::error!(error = format!("{e:#}"), "edgecam stopped with an error");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn load(path: &Path) -> anyhow::Result<Config> {
    Ok(Config::load(path)?)
}

fn check_config(path: &Path, values_only: bool) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if values_only {
        println!(
            "{}: values ok (certificate files not checked)",
            path.display()
        );
        return ExitCode::SUCCESS;
    }
    if let Err(e) = mqtt::tls::client_config(&config.identity) {
        eprintln!("config file {} is valid, but: {e}", path.display());
        return ExitCode::from(2);
    }
    println!("{}: ok", path.display());
    ExitCode::SUCCESS
}

fn init_logging(log: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let under_systemd = std::env::var_os("JOURNAL_STREAM").is_some();
    let journald = match log.target {
        LogTarget::Journald => true,
        LogTarget::Auto => under_systemd,
        LogTarget::Stderr => false,
    };
    let registry = tracing_subscriber::registry().with(filter);
    if journald {
        match tracing_journald::layer() {
            Ok(layer) => {
                registry
                    .with(layer.with_syslog_identifier("edgecam".into()))
                    .init();
                return;
            }
            Err(e) => eprintln!("edgecam: journald unavailable ({e}); logging to stderr"),
        }
    }
    registry
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
}

async fn outbox_stats(config: &Config, json: bool) -> anyhow::Result<()> {
    let path = config.outbox_path();
    let s = outbox::Store::open_read_only(&path).await?.stats().await?;
    if json {
        println!("{}", serde_json::to_string(&s)?);
        return Ok(());
    }
    println!("outbox           {}", path.display());
    println!("depth            {} events", s.depth);
    println!(
        "bytes            {} (budgeted), {} on disk",
        s.bytes, s.file_bytes
    );
    match s.oldest_age_s {
        Some(age) => println!("oldest age       {age:.1} s"),
        None => println!("oldest age       - (empty)"),
    }
    println!("evicted          {}", s.evicted);
    println!("expired          {}", s.expired);
    println!("refused          {}", s.refused);
    println!("last acked seq   {}", s.last_acked_seq);
    println!("last seq         {}", s.last_seq);
    Ok(())
}

async fn emit(
    config: &Config,
    kind: &str,
    count: u64,
    payload: Option<&str>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        mqtt::topics::valid_kind(kind),
        "--kind must be 1-64 characters from a-z 0-9 _ -, found {kind:?}"
    );
    let fixed = payload
        .map(|p| RawValue::from_string(p.to_owned()).context("--payload is not valid JSON"))
        .transpose()?;
    let limit = config.mqtt.max_message_bytes / 2;
    let mut events = Vec::with_capacity(count as usize);
    for n in 0..count {
        let body = match &fixed {
            Some(p) => p.clone(),
            None => RawValue::from_string(format!("{{\"n\":{n}}}"))?,
        };
        anyhow::ensure!(
            body.get().len() <= limit,
            "payload is {} bytes; at most {limit} (half of mqtt.max_message_bytes)",
            body.get().len()
        );
        events.push(events::NewEvent::now(kind, body));
    }
    let (mut store, _) = outbox::Store::open(
        &config.outbox_path(),
        &config.outbox,
        outbox::Recovery::Fail,
    )
    .await?;
    let mut accepted = Vec::new();
    let mut refused = 0;
    let chunk = 1000;
    while !events.is_empty() {
        let rest = events.split_off(events.len().min(chunk));
        let outcome = store.append(std::mem::replace(&mut events, rest)).await?;
        accepted.extend(outcome.accepted);
        refused += outcome.refused.len();
        if outcome.evicted > 0 {
            eprintln!("outbox full: evicted {} oldest events", outcome.evicted);
        }
    }
    store.close().await?;
    match (accepted.first(), accepted.last()) {
        (Some(first), Some(last)) => {
            println!("committed {} events, seq {first}..={last}", accepted.len())
        }
        _ => println!("committed no events"),
    }
    anyhow::ensure!(
        refused == 0,
        "{refused} events refused (outbox full or disk full)"
    );
    Ok(())
}
