//! `aitbc-scheduler`: settle, payout and sweep once or on an interval, on the embedded SQLite
//! file or on DynamoDB + SQS; and `bench`, the settlement benchmark.
//!
//! ```text
//! aitbc-scheduler [--backend sqlite|aws] [--data-dir DIR | --db FILE] settle [--every SECS] [--grace-s 900]
//! aitbc-scheduler payout [--payout-threshold 10] [--report-dir DIR] [--every 86400]
//! aitbc-scheduler sweep [--every 60]
//! aitbc-scheduler bench --receipts 1000000 [--clients 1000] [--providers 100] [--count-writes]
//! ```
//!
//! Each run prints its report as one JSON line on stdout; logs and progress go to stderr
//! (bars on a terminal, JSON lines otherwise).

use aitbc_market::settlement::{SettleOptions, SETTLE_BATCH_RECEIPTS_MAX, SETTLE_GRACE_MS, SETTLE_GRACE_MS_MAX};
use aitbc_scheduler::bench::{self, BenchOptions};
use aitbc_scheduler::progress::{self, Reporter};
use aitbc_scheduler::{Backend, Config, Scheduler, Task, DB_FILE_NAME, EVERY_S_MAX, EVERY_S_MIN};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "aitbc-scheduler", version, about = "aitbc's batch jobs: settlement, payouts, the sweeper")]
struct Cli {
    /// Where the data lives.
    #[arg(long, value_enum, default_value = "sqlite", env = "AITBC_BACKEND", global = true)]
    backend: Backend,
    /// The embedded server's data directory; its database is <dir>/aitbc.db.
    #[arg(long, default_value = ".aitbc", env = "AITBC_DATA_DIR", global = true)]
    data_dir: PathBuf,
    /// The SQLite file itself (overrides --data-dir).
    #[arg(long, env = "AITBC_DB", global = true)]
    db: Option<PathBuf>,
    /// Write payout reports (CSV and JSON) here.
    #[arg(long, env = "AITBC_REPORT_DIR", global = true)]
    report_dir: Option<PathBuf>,
    /// Pay providers whose earnings reach this many AITBC.
    #[arg(long, default_value = "10", env = "AITBC_PAYOUT_THRESHOLD", value_parser = aitbc_scheduler::parse_threshold, global = true)]
    payout_threshold: aitbc_core::money::Amount,
    /// JSON log lines even on a terminal.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone, Copy)]
struct Repeat {
    /// Run again every SECS seconds until interrupted (default: once).
    #[arg(long, value_parser = clap::value_parser!(u64).range(EVERY_S_MIN..=EVERY_S_MAX))]
    every: Option<u64>,
    /// With --every: stop after this many runs.
    #[arg(long, requires = "every")]
    runs: Option<u64>,
}

#[derive(Subcommand)]
enum Command {
    /// Settle completed receipts in batches until none remain.
    Settle {
        #[command(flatten)]
        repeat: Repeat,
        /// Receipts per batch.
        #[arg(long, default_value_t = SETTLE_BATCH_RECEIPTS_MAX, value_parser = clap::value_parser!(usize))]
        batch_receipts: usize,
        /// Leave receipts younger than this many seconds to a later run: a completion stamped
        /// earlier may still be in flight. Lower it only where none can be.
        #[arg(long, env = "AITBC_SETTLE_GRACE_S", default_value_t = SETTLE_GRACE_MS / 1_000, value_parser = clap::value_parser!(i64).range(0..=SETTLE_GRACE_MS_MAX / 1_000))]
        grace_s: i64,
    },
    /// Pay providers whose earnings reach the threshold (once per UTC day each).
    Payout {
        #[command(flatten)]
        repeat: Repeat,
    },
    /// Expire or re-match unclaimed jobs, requeue lapsed leases, void straggling holds, delete
    /// expired records.
    Sweep {
        #[command(flatten)]
        repeat: Repeat,
    },
    /// Generate N completed receipts in a fresh store and settle them (a temporary SQLite file,
    /// or with --backend aws a fresh table under a random prefix).
    Bench {
        #[arg(long, default_value_t = 100_000)]
        receipts: u64,
        #[arg(long, default_value_t = 1_000)]
        clients: u32,
        #[arg(long, default_value_t = 100)]
        providers: u32,
        /// Count the items settlement writes.
        #[arg(long)]
        count_writes: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    progress::init_logging(cli.json || !progress::interactive());
    let reporter: Box<dyn Reporter> = if cli.json { Box::new(progress::LogLines::default()) } else { progress::for_environment() };
    match run(cli, reporter.as_ref()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "aitbc-scheduler failed");
            eprintln!("aitbc-scheduler: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, reporter: &dyn Reporter) -> Result<(), aitbc_scheduler::SchedulerError> {
    let db_path = cli.db.clone().unwrap_or_else(|| cli.data_dir.join(DB_FILE_NAME));
    let (task, repeat, batch_receipts, grace_s) = match cli.command {
        Command::Settle { repeat, batch_receipts, grace_s } => (Task::Settle, repeat, batch_receipts, grace_s),
        Command::Payout { repeat } => (Task::Payout, repeat, SETTLE_BATCH_RECEIPTS_MAX, SETTLE_GRACE_MS / 1_000),
        Command::Sweep { repeat } => (Task::Sweep, repeat, SETTLE_BATCH_RECEIPTS_MAX, SETTLE_GRACE_MS / 1_000),
        Command::Bench { receipts, clients, providers, count_writes } => {
            return run_bench(cli.backend, receipts, clients, providers, count_writes, reporter).await;
        }
    };
    if !(1..=SETTLE_BATCH_RECEIPTS_MAX).contains(&batch_receipts) {
        return Err(aitbc_scheduler::SchedulerError::Config(format!("--batch-receipts must be 1..={SETTLE_BATCH_RECEIPTS_MAX}")));
    }
    let config = Config {
        backend: cli.backend,
        db_path,
        report_dir: cli.report_dir,
        payout: aitbc_market::payouts::PayoutOptions { threshold: cli.payout_threshold },
        settle: SettleOptions { batch_receipts_max: batch_receipts, grace_ms: grace_s * 1_000, ..SettleOptions::default() },
    };
    let scheduler = Scheduler::open(&config).await?;
    let runs_max = repeat.runs.unwrap_or(if repeat.every.is_some() { u64::MAX } else { 1 });
    for run in 1..=runs_max {
        let report = aitbc_scheduler::run_task(&scheduler, task, reporter.as_progress()).await;
        reporter.finish();
        match report {
            Ok(report) => println!("{}", serde_json::to_string(&report).expect("reports serialize")),
            // On an interval, one failed run is logged and the next one tries again.
            Err(e) if repeat.every.is_some() => tracing::error!(error = %e, run, "run failed"),
            Err(e) => return Err(e),
        }
        let Some(every) = repeat.every else { break };
        if run == runs_max {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(every)) => {}
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("interrupted; stopping");
                break;
            }
        }
    }
    Ok(())
}

async fn run_bench(backend: Backend, receipts: u64, clients: u32, providers: u32, count_writes: bool, reporter: &dyn Reporter) -> Result<(), aitbc_scheduler::SchedulerError> {
    // An emulator endpoint (moto_server) is not safe under concurrent transactions: one at a time.
    let emulator = backend == Backend::Aws && std::env::var("AWS_ENDPOINT_URL").is_ok_and(|e| e.starts_with("http://"));
    let in_flight = if emulator { 1 } else { aitbc_market::settlement::SETTLE_IN_FLIGHT_MAX };
    let options = BenchOptions {
        receipts,
        clients,
        providers,
        count_writes,
        load_in_flight_max: if emulator { 1 } else { bench::BENCH_TX_IN_FLIGHT_MAX },
        load_by_item: emulator,
        // The bench loads every receipt before it settles: no grace.
        settle: SettleOptions { in_flight_max: in_flight, grace_ms: 0, ..SettleOptions::default() },
    };
    let dir = std::env::temp_dir().join(format!("aitbc-bench-{}", std::process::id()));
    let result = match backend {
        Backend::Sqlite => {
            std::fs::create_dir_all(&dir).map_err(|e| aitbc_scheduler::SchedulerError::Config(e.to_string()))?;
            let (store, queue) = aitbc_store::provision::sqlite(dir.join(DB_FILE_NAME), &[], aitbc_store::queue_spec())
                .await
                .map_err(|e| aitbc_scheduler::SchedulerError::Config(e.to_string()))?;
            let result = bench::run(std::sync::Arc::new(store), std::sync::Arc::new(queue), &options, reporter.as_progress()).await;
            let _ = std::fs::remove_dir_all(&dir);
            result
        }
        Backend::Aws => bench_aws(&options, reporter).await,
    };
    reporter.finish();
    let result = result?;
    println!("{}", result.table());
    eprintln!("{}", serde_json::to_string_pretty(&result).expect("serializes"));
    Ok(())
}

#[cfg(feature = "aws")]
async fn bench_aws(options: &BenchOptions, reporter: &dyn Reporter) -> Result<bench::BenchResult, aitbc_scheduler::SchedulerError> {
    // A fresh table and queues under a random prefix, so the bench never touches real data.
    let mut config = aitbc_store::AwsConfig::from_env().map_err(aitbc_scheduler::SchedulerError::Config)?;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    config.prefix = format!("bench{:x}", nanos % (1 << 40));
    let (store, queue) = aitbc_store::provision::aws(&config, &[], aitbc_store::queue_spec())
        .await
        .map_err(|e| aitbc_scheduler::SchedulerError::Config(e.to_string()))?;
    bench::run(std::sync::Arc::new(store), std::sync::Arc::new(queue), options, reporter.as_progress()).await
}

#[cfg(not(feature = "aws"))]
async fn bench_aws(_: &BenchOptions, _: &dyn Reporter) -> Result<bench::BenchResult, aitbc_scheduler::SchedulerError> {
    Err(aitbc_scheduler::SchedulerError::Config("this build has no AWS backend (feature `aws`)".into()))
}
