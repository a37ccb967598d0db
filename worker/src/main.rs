//! `aitbc-worker`: the GPU worker binary. A thin shell over the library: argument parsing,
//! JSON in and out, one-line errors and exit codes (0 success, 1 failure, 2 usage).
//!
//! Subcommands: `run` (serve listings: poll their queues, claim, run, sign, complete), `assess`
//! (what this machine offers, JSON) and `exec` (run one job spec file locally, print its output).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use aitbc_core::jobspec::{JobSpec, JOB_TIMEOUT_MS_DEFAULT};
use aitbc_worker::{assess, select, BackendChoice, RunLimits};
use clap::{Parser, Subcommand};

/// A job spec file read by `exec`, at most (far above any valid spec: inline inputs are bounded).
const SPEC_FILE_BYTES_MAX: u64 = 4 << 20;

#[derive(Parser)]
#[command(name = "aitbc-worker", version, about = "aitbc GPU worker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve GPU listings until SIGTERM or SIGINT, then finish or release the jobs in hand.
    #[command(after_help = "Example:\n  aitbc-worker run --api-url http://127.0.0.1:8080 --api-key $KEY --key-file provider-key.json \\\n    --listing gpu-0192... --queue sqlite:$HOME/.aitbc/aitbc.db --backend auto")]
    Run(aitbc_worker::config::RunArgs),
    /// Measure this machine's backend and print its figures as JSON.
    Assess {
        /// cuda, cpu, or auto (CUDA where its libraries and the GPU exist, else CPU).
        #[arg(long, default_value = "auto", env = "AITBC_WORKER_BACKEND")]
        backend: BackendChoice,
        /// The GPU's device ordinal.
        #[arg(long, default_value_t = 0, env = "AITBC_WORKER_GPU_INDEX")]
        gpu_index: usize,
    },
    /// Run one job spec (a JSON file, or - for stdin) and print its output as JSON.
    Exec {
        /// The spec file.
        spec: PathBuf,
        #[arg(long, default_value = "auto", env = "AITBC_WORKER_BACKEND")]
        backend: BackendChoice,
        #[arg(long, default_value_t = 0, env = "AITBC_WORKER_GPU_INDEX")]
        gpu_index: usize,
        /// Wall-time limit of the job, milliseconds.
        #[arg(long, default_value_t = JOB_TIMEOUT_MS_DEFAULT)]
        timeout_ms: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(&args),
        Command::Assess { backend, gpu_index } => assess::assess(backend, gpu_index)
            .map_err(|e| e.to_string())
            .and_then(|assessment| serde_json::to_string_pretty(&assessment).map_err(|e| e.to_string())),
        Command::Exec { spec, backend, gpu_index, timeout_ms } => exec(&spec, backend, gpu_index, timeout_ms),
    };
    match result {
        Ok(json) => {
            // A closed pipe (`| head`) is the reader's choice, not a failure worth a panic.
            let mut stdout = std::io::stdout().lock();
            match writeln!(stdout, "{json}").and_then(|()| stdout.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            }
        }
        Err(message) => {
            // One line: the caller (a script, the CLI) reads the first line of stderr.
            eprintln!("aitbc-worker: {}", message.replace('\n', " | "));
            ExitCode::FAILURE
        }
    }
}

fn exec(path: &PathBuf, backend: BackendChoice, gpu_index: usize, timeout_ms: u64) -> Result<String, String> {
    let mut text = String::new();
    let read = if path.as_os_str() == "-" {
        std::io::stdin().take(SPEC_FILE_BYTES_MAX + 1).read_to_string(&mut text)
    } else {
        std::fs::File::open(path).and_then(|file| file.take(SPEC_FILE_BYTES_MAX + 1).read_to_string(&mut text))
    };
    read.map_err(|e| format!("reading {}: {e}", path.display()))?;
    if text.len() as u64 > SPEC_FILE_BYTES_MAX {
        return Err(format!("{} is larger than {SPEC_FILE_BYTES_MAX} bytes", path.display()));
    }
    let spec: JobSpec = serde_json::from_str(&text).map_err(|e| format!("parsing {}: {e}", path.display()))?;
    let limits = RunLimits { timeout_ms, ..RunLimits::default() };
    if !(1..=aitbc_core::jobspec::JOB_TIMEOUT_MS_MAX).contains(&timeout_ms) {
        return Err(format!("--timeout-ms {timeout_ms} is outside 1..={}", aitbc_core::jobspec::JOB_TIMEOUT_MS_MAX));
    }
    let mut backend = select(backend, gpu_index).map_err(|e| e.to_string())?;
    let output = backend.run(&spec, &limits).map_err(|e| format!("{} ({}, retryable: {})", e, e.code(), e.retryable()))?;
    serde_json::to_string_pretty(&output).map_err(|e| e.to_string())
}

fn run(args: &aitbc_worker::config::RunArgs) -> Result<String, String> {
    let settings = args.settings()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let filter = tracing_subscriber::EnvFilter::try_from_env("AITBC_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("shutting down: no new jobs; finishing or releasing the ones in hand");
            let _ = stop.send(true);
        });
        let stats = aitbc_worker::run(settings, shutdown).await?;
        Ok(format!(
            "{{\"completed\":{},\"failed\":{},\"released\":{},\"refused_claims\":{}}}",
            stats.completed, stats.failed, stats.released, stats.refused_claims
        ))
    })
}
