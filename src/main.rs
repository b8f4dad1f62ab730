//! The `sharq` binary: load the configuration, serve, and stop cleanly on SIGINT/SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use sharq::{Broker, Config};

/// How long connections get to say goodbye on shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Parser)]
#[command(
    name = "sharq",
    version,
    about = "MQTT 3.1.1 / 5.0 broker with programmable shared-subscription dispatch"
)]
struct Cli {
    /// TOML configuration file; without it the embedded default serves on 127.0.0.1:1883.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (config, origin) = match &cli.config {
        Some(path) => (Config::from_file(path), path.display().to_string()),
        None => (Config::embedded_default(), "embedded default".to_owned()),
    };
    let config = match config {
        Ok(config) => config,
        Err(e) => {
            eprintln!("sharq: {e}");
            return ExitCode::from(2);
        }
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.server.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
    if cli.config.is_none() {
        tracing::info!(listeners = ?config.server.listeners, "no --config given: using the embedded default configuration");
    } else {
        tracing::info!(config = %origin, "configuration loaded");
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("sharq: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let broker = match Broker::start(config).await {
            Ok(broker) => broker,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        if let Err(e) = wait_for_signal().await {
            tracing::error!(error = %e, "cannot listen for signals");
            return ExitCode::FAILURE;
        }
        tracing::info!("shutting down: disconnecting clients");
        broker.shutdown(SHUTDOWN_GRACE).await;
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
        _ = interrupt.recv() => tracing::info!("SIGINT received"),
    }
    Ok(())
}
