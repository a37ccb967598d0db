//! `aitbc up`: the marketplace on this machine (API, a worker, the scheduler) until Ctrl-C.

use crate::local::{data_dir, LocalMarket, LocalSettings, WorkerSource};
use crate::{CliError, Ctx};
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct UpArgs {
    /// Where the marketplace keeps its SQLite file and key [default: ~/.aitbc/data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The address the API listens on [default: 127.0.0.1:8080].
    #[arg(long)]
    listen: Option<String>,
}

pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AITBC_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,aitbc_worker::agent=info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}

pub async fn run(args: UpArgs, ctx: Ctx) -> Result<(), CliError> {
    init_logs();
    let settings = LocalSettings::load()?;
    let dir = data_dir(args.data_dir.as_deref(), &settings);
    let listen = args.listen.unwrap_or_else(|| settings.listen.clone());
    let models = crate::local::local_models(&ctx.home).await?;
    let local = LocalMarket::start(&settings, &dir, &listen, WorkerSource::Home(ctx.home.clone()), models).await?;
    println!("aitbc marketplace running at {}", local.url);
    println!("data: {}", local.data_dir.display());
    if local.url != "http://127.0.0.1:8080" {
        println!("point the CLI at it with --api {} (or AITBC_API)", local.url);
    }
    println!("Ctrl-C to stop");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|e| CliError::Failed(e.to_string()))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    println!("stopping: the worker finishes or releases its jobs");
    local.shutdown().await;
    println!("stopped");
    Ok(())
}
