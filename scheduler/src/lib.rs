//! `aitbc-scheduler`: the marketplace's batch jobs, one code path for every entry point.
//!
//! - **settle**: completed receipts into the ledger, in checkpointed batches aggregated per
//!   account (`aitbc_market::settlement`).
//! - **payout**: providers whose earnings reach the threshold are paid, once per UTC day, with a
//!   CSV and JSON report (`aitbc_market::payouts`).
//! - **sweep**: unclaimed jobs, lapsed leases, straggling holds, expired records
//!   (`aitbc_market::sweep`). Quotes are stateless signed tokens: nothing to sweep.
//!
//! [`run_task`] runs one task once on a [`Scheduler`] (a market on SQLite or on DynamoDB + SQS);
//! the command line (`src/main.rs`, once or `--every <secs>`) and the Lambda handler for
//! EventBridge schedules (`src/bin/lambda.rs`, [`handle_event`]) are thin shells around it.

pub mod bench;
pub mod progress;

use aitbc_core::config::MarketConfig;
use aitbc_core::money::Amount;
use aitbc_core::signing::NamedSigningKey;
use aitbc_core::values::KeyId;
use aitbc_market::payouts::{PayoutOptions, PayoutReport};
use aitbc_market::settlement::{Progress, SettleError, SettleOptions, SettleReport};
use aitbc_market::sweep::{ExpiredRecords, SweepOptions, SweepReport};
use aitbc_market::{Market, MarketError, Settings, SystemClock};
use aitbc_store::StoreError;
use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The database file's name in the data directory (the embedded server's: `<dir>/aitbc.db`).
pub const DB_FILE_NAME: &str = "aitbc.db";
/// `--every` is at least a second and at most a week.
pub const EVERY_S_MIN: u64 = 1;
pub const EVERY_S_MAX: u64 = 7 * 86_400;
/// Bytes of an EventBridge event the handler reads a task name from, at most (EventBridge
/// itself caps events at 256 KiB).
pub const EVENT_BYTES_MAX: usize = 256 * 1024;

/// Why a task could not run.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("{}", operator_detail(.0))]
    Market(#[from] MarketError),
    #[error("{}", match .0 { SettleError::Market(e) => operator_detail(e), other => other.to_string() })]
    Settle(#[from] SettleError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("report {path}: {error}")]
    Report { path: PathBuf, error: String },
}

/// A market error as an operator needs it: with the detail that the HTTP API keeps from its
/// callers (an internal or unavailable store says what failed).
fn operator_detail(e: &MarketError) -> String {
    match e {
        MarketError::Internal(detail) | MarketError::Unavailable(detail) => format!("{e}: {detail}"),
        other => other.to_string(),
    }
}

/// A batch job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    Settle,
    Payout,
    Sweep,
}

impl Task {
    pub const ALL: [Task; 3] = [Task::Settle, Task::Payout, Task::Sweep];

    pub fn name(self) -> &'static str {
        match self {
            Task::Settle => "settle",
            Task::Payout => "payout",
            Task::Sweep => "sweep",
        }
    }

    /// The task an EventBridge event names: its `detail.task` (a scheduled rule's constant
    /// input, e.g. `{"detail": {"task": "settle"}}`), else the rule in its `resources` whose
    /// name contains exactly one task's name (e.g. `arn:aws:events:...:rule/aitbc-settle`).
    pub fn from_event(event: &Value) -> Result<Task, SchedulerError> {
        let named = |text: &str| Task::ALL.into_iter().find(|t| t.name() == text);
        if let Some(task) = event.pointer("/detail/task").and_then(Value::as_str) {
            return named(task).ok_or_else(|| SchedulerError::Config(format!("unknown task {task:?} in detail.task (settle, payout or sweep)")));
        }
        let resources = event.get("resources").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        for resource in resources.iter().filter_map(Value::as_str) {
            let rule = resource.rsplit('/').next().unwrap_or(resource);
            let mut found = Task::ALL.into_iter().filter(|t| rule.contains(t.name()));
            if let (Some(task), None) = (found.next(), found.next()) {
                return Ok(task);
            }
        }
        Err(SchedulerError::Config("the event names no task: give detail.task or a rule named after settle, payout or sweep".into()))
    }
}

/// Where the scheduler's data lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// The embedded SQLite file.
    Sqlite,
    /// DynamoDB + SQS (AwsConfig::from_env: AWS_REGION, AWS_ENDPOINT_URL, AITBC_TABLE_PREFIX).
    Aws,
}

/// How to open the scheduler.
#[derive(Debug, Clone)]
pub struct Config {
    pub backend: Backend,
    /// The SQLite file (Backend::Sqlite).
    pub db_path: PathBuf,
    /// Where payout reports go (None: not written, only returned).
    pub report_dir: Option<PathBuf>,
    pub payout: PayoutOptions,
    pub settle: SettleOptions,
}

impl Config {
    /// The Lambda's configuration: AWS, `AITBC_REPORT_DIR` (optional; Lambda may only write
    /// under /tmp), `AITBC_PAYOUT_THRESHOLD` (AITBC, default 10).
    pub fn from_env_for_lambda() -> Result<Config, SchedulerError> {
        let threshold = match std::env::var("AITBC_PAYOUT_THRESHOLD") {
            Ok(text) => parse_threshold(&text).map_err(SchedulerError::Config)?,
            Err(_) => aitbc_market::payouts::PAYOUT_THRESHOLD_DEFAULT,
        };
        Ok(Config {
            backend: Backend::Aws,
            db_path: PathBuf::new(),
            report_dir: std::env::var_os("AITBC_REPORT_DIR").map(PathBuf::from),
            payout: PayoutOptions { threshold },
            settle: SettleOptions::default(),
        })
    }
}

/// A payout threshold in AITBC ("10", "2.5"), above zero.
pub fn parse_threshold(text: &str) -> Result<Amount, String> {
    let amount = Amount::parse(text).map_err(|e| format!("payout threshold: {e}"))?;
    if amount.is_zero() {
        return Err("payout threshold must be above 0".into());
    }
    Ok(amount)
}

/// The market configuration: `AITBC_MARKET_CONFIG` (a TOML file) or the embedded defaults,
/// `AITBC_FEE_BPS` overriding the fee (the same variables the API reads).
pub fn market_config_from_env() -> Result<MarketConfig, SchedulerError> {
    let mut config = match std::env::var("AITBC_MARKET_CONFIG") {
        Ok(path) => {
            let text = std::fs::read_to_string(&path).map_err(|e| SchedulerError::Config(format!("AITBC_MARKET_CONFIG {path}: {e}")))?;
            MarketConfig::from_toml(&text).map_err(|e| SchedulerError::Config(e.to_string()))?
        }
        Err(_) => MarketConfig::default(),
    };
    if let Ok(fee) = std::env::var("AITBC_FEE_BPS") {
        let fee: u32 = fee.parse().map_err(|_| SchedulerError::Config(format!("AITBC_FEE_BPS {fee:?} is not a whole number")))?;
        if fee > aitbc_core::config::FEE_BPS_MAX {
            return Err(SchedulerError::Config(format!("AITBC_FEE_BPS exceeds {}", aitbc_core::config::FEE_BPS_MAX)));
        }
        config.fee_bps = fee;
    }
    Ok(config)
}

/// SQLite has no TTL: the sweeper deletes expired records itself.
pub struct SqliteExpiry(pub aitbc_store::SqliteStore);

#[async_trait::async_trait]
impl ExpiredRecords for SqliteExpiry {
    async fn sweep_expired(&self, now_s: i64, limit: usize) -> Result<usize, StoreError> {
        self.0.sweep_expired(now_s, limit).await
    }
}

/// A market to run tasks on, with what the tasks need besides it.
pub struct Scheduler {
    pub market: Market,
    /// Deletes expired records (SQLite); None where the backend's TTL does (DynamoDB).
    pub expired_records: Option<Arc<dyn ExpiredRecords>>,
    pub report_dir: Option<PathBuf>,
    pub payout: PayoutOptions,
    pub settle: SettleOptions,
}

/// The scheduler never signs anything (settlement trusts receipts the API verified and
/// countersigned), but a Market needs a key: a fresh one, never stored or shown.
fn unused_signing_key() -> NamedSigningKey {
    NamedSigningKey::generate(KeyId::parse("aitbc-scheduler").expect("a valid key id"))
}

impl Scheduler {
    /// Opens the store (SQLite file or AWS) and makes sure the platform's fee account exists.
    pub async fn open(config: &Config) -> Result<Scheduler, SchedulerError> {
        let market_config = market_config_from_env()?;
        let (store, queue, expired): (Arc<dyn aitbc_store::Store>, Arc<dyn aitbc_store::Queue>, Option<Arc<dyn ExpiredRecords>>) = match config.backend {
            Backend::Sqlite => {
                if let Some(dir) = config.db_path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| SchedulerError::Config(format!("{}: {e}", dir.display())))?;
                }
                let (store, queue) = aitbc_store::provision::sqlite(&config.db_path, &[], aitbc_store::queue_spec())
                    .await
                    .map_err(|e| SchedulerError::Config(format!("{}: {e}", config.db_path.display())))?;
                (Arc::new(store.clone()), Arc::new(queue), Some(Arc::new(SqliteExpiry(store))))
            }
            Backend::Aws => open_aws().await?,
        };
        let market = Market::new(store, queue, market_config, Settings::default(), unused_signing_key(), Arc::new(SystemClock));
        market.bootstrap().await?;
        Ok(Scheduler {
            market,
            expired_records: expired,
            report_dir: config.report_dir.clone(),
            payout: config.payout.clone(),
            settle: config.settle.clone(),
        })
    }

    /// A scheduler over a market built elsewhere (tests, the bench).
    pub fn with_market(market: Market, expired_records: Option<Arc<dyn ExpiredRecords>>) -> Scheduler {
        Scheduler { market, expired_records, report_dir: None, payout: PayoutOptions::default(), settle: SettleOptions::default() }
    }
}

#[cfg(feature = "aws")]
async fn open_aws() -> Result<(Arc<dyn aitbc_store::Store>, Arc<dyn aitbc_store::Queue>, Option<Arc<dyn ExpiredRecords>>), SchedulerError> {
    let aws = aitbc_store::AwsConfig::from_env().map_err(SchedulerError::Config)?;
    let store = aitbc_store::DynamoStore::connect(&aws).await?;
    let queue = aitbc_store::SqsQueue::connect(&aws).await.map_err(|e| SchedulerError::Config(e.to_string()))?;
    Ok((Arc::new(store), Arc::new(queue), None))
}

#[cfg(not(feature = "aws"))]
async fn open_aws() -> Result<(Arc<dyn aitbc_store::Store>, Arc<dyn aitbc_store::Queue>, Option<Arc<dyn ExpiredRecords>>), SchedulerError> {
    Err(SchedulerError::Config("this build has no AWS backend (feature `aws`)".into()))
}

/// What a task did.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum TaskReport {
    Settle(SettleReport),
    Payout {
        #[serde(flatten)]
        report: PayoutReport,
        /// The CSV and JSON files written (none without a report directory).
        files: Vec<PathBuf>,
    },
    Sweep(SweepReport),
}

/// Runs `task` once.
pub async fn run_task(scheduler: &Scheduler, task: Task, progress: &dyn Progress) -> Result<TaskReport, SchedulerError> {
    let market = &scheduler.market;
    let started = std::time::Instant::now();
    let report = match task {
        Task::Settle => TaskReport::Settle(market.settle(&scheduler.settle, progress).await?),
        Task::Payout => {
            let report = market.run_payouts(&scheduler.payout, progress).await?;
            let files = match &scheduler.report_dir {
                Some(dir) => write_payout_report(dir, &report, market.now_ms())?,
                None => Vec::new(),
            };
            TaskReport::Payout { report, files }
        }
        Task::Sweep => {
            let options = SweepOptions { expired_records: scheduler.expired_records.clone(), ..SweepOptions::default() };
            TaskReport::Sweep(market.sweep(&options, progress).await?)
        }
    };
    tracing::info!(task = task.name(), elapsed_ms = started.elapsed().as_millis() as u64, "task done");
    Ok(report)
}

/// Writes a payout report as `payouts-<day>-<unix ms>.csv` and `.json` in `dir`.
pub fn write_payout_report(dir: &Path, report: &PayoutReport, now_ms: i64) -> Result<Vec<PathBuf>, SchedulerError> {
    let failed = |path: &Path, e: std::io::Error| SchedulerError::Report { path: path.to_path_buf(), error: e.to_string() };
    std::fs::create_dir_all(dir).map_err(|e| failed(dir, e))?;
    let stem = format!("payouts-{}-{now_ms}", report.day);
    let mut files = Vec::with_capacity(2);
    for (extension, text) in [("csv", report.to_csv()), ("json", report.to_json())] {
        let path = dir.join(format!("{stem}.{extension}"));
        std::fs::write(&path, text).map_err(|e| failed(&path, e))?;
        files.push(path);
    }
    Ok(files)
}

/// The Lambda handler's body: the task the EventBridge event names, run once; its report as
/// the answer (it lands in the invocation's result and logs).
pub async fn handle_event(scheduler: &Scheduler, event: &Value, progress: &dyn Progress) -> Result<Value, SchedulerError> {
    let size = serde_json::to_vec(event).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > EVENT_BYTES_MAX {
        return Err(SchedulerError::Config(format!("event of {size} bytes exceeds {EVENT_BYTES_MAX}")));
    }
    let task = Task::from_event(event)?;
    let report = run_task(scheduler, task, progress).await?;
    Ok(serde_json::to_value(report).expect("reports serialize"))
}
