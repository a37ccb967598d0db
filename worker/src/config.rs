//! The worker's configuration: a TOML file, overridden by flags, overridden by nothing else
//! (flags carry their `AITBC_WORKER_*` environment variables through clap). Paths and secrets
//! are checked here so the loop starts only with a complete configuration.

use crate::agent::AgentConfig;
use crate::backend::BackendChoice;
use aitbc_core::signing::{NamedSigningKey, SigningKeyFile};
use aitbc_core::values::{ListingId, WorkerId};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Files the worker reads (config, key) are at most this large.
pub const CONFIG_FILE_BYTES_MAX: u64 = 1 << 20;
pub const LEASE_MS_DEFAULT: u64 = 30_000;
pub const HEARTBEAT_INTERVAL_MS_DEFAULT: u64 = 10_000;
pub const POLL_WAIT_MS_DEFAULT: u64 = 20_000;
pub const GRACE_MS_DEFAULT: u64 = 30_000;

/// Where the listings' queues are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueSource {
    /// The embedded marketplace's SQLite file (same machine).
    Sqlite(PathBuf),
    /// SQS, configured by `AWS_REGION`, `AWS_ENDPOINT_URL`, `AITBC_TABLE_PREFIX`.
    Sqs,
}

impl std::str::FromStr for QueueSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            _ if s == "sqs" => Ok(QueueSource::Sqs),
            Some(("sqlite", path)) if !path.is_empty() => Ok(QueueSource::Sqlite(PathBuf::from(path))),
            _ => Err(format!("queue {s:?} is neither sqs nor sqlite:<path>")),
        }
    }
}

/// The configuration file's keys (all optional; flags win).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub api_url: Option<String>,
    pub api_key: Option<String>,
    pub key_file: Option<PathBuf>,
    pub listings: Option<Vec<String>>,
    pub queue: Option<String>,
    pub backend: Option<String>,
    pub gpu_index: Option<usize>,
    pub max_concurrent_jobs: Option<usize>,
    pub heartbeat_interval_ms: Option<u64>,
    pub lease_ms: Option<u64>,
    pub grace_ms: Option<u64>,
    pub poll_wait_ms: Option<u64>,
    pub worker_id: Option<String>,
    /// Language models to serve: `[[models]]` with `name`, `path` (a GGUF file) and `sha256`.
    #[serde(default)]
    pub models: Vec<crate::models::ModelConfig>,
    /// Language models the provider's own OpenAI-compatible server serves:
    /// `[[upstream_models]]` with `name`, `base_url` and optionally `model` (its name there).
    #[serde(default)]
    pub upstream_models: Vec<crate::upstream::UpstreamConfig>,
    /// The provider's quality check: a command (program and arguments) that receives each
    /// job's result as JSON on stdin before the worker completes it; exit 0 accepts, exit 1
    /// refuses (the job fails and its hold is voided), anything else fails it retryably.
    pub quality_check: Option<Vec<String>>,
}

/// Flags of `aitbc-worker run`; each also reads its environment variable.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct RunArgs {
    /// A TOML file with any of the settings below (flags override it).
    #[arg(long, env = "AITBC_WORKER_CONFIG")]
    pub config: Option<PathBuf>,
    /// The marketplace API, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "AITBC_API")]
    pub api_url: Option<String>,
    /// The provider's API key.
    #[arg(long, env = "AITBC_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The provider's Ed25519 signing key file (JSON: key_id, alg, secret_key, public_key).
    #[arg(long, env = "AITBC_WORKER_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// GPU listings to serve (repeat the flag or separate with commas).
    #[arg(long = "listing", env = "AITBC_WORKER_LISTINGS", value_delimiter = ',')]
    pub listings: Vec<String>,
    /// sqs, or sqlite:<path> of the embedded marketplace's database.
    #[arg(long, env = "AITBC_WORKER_QUEUE")]
    pub queue: Option<String>,
    /// cuda, cpu or auto.
    #[arg(long, env = "AITBC_WORKER_BACKEND")]
    pub backend: Option<String>,
    #[arg(long, env = "AITBC_WORKER_GPU_INDEX")]
    pub gpu_index: Option<usize>,
    #[arg(long, env = "AITBC_WORKER_MAX_CONCURRENT_JOBS")]
    pub max_concurrent_jobs: Option<usize>,
    #[arg(long, env = "AITBC_WORKER_HEARTBEAT_INTERVAL_MS")]
    pub heartbeat_interval_ms: Option<u64>,
    #[arg(long, env = "AITBC_WORKER_LEASE_MS")]
    pub lease_ms: Option<u64>,
    #[arg(long, env = "AITBC_WORKER_GRACE_MS")]
    pub grace_ms: Option<u64>,
    #[arg(long, env = "AITBC_WORKER_POLL_WAIT_MS")]
    pub poll_wait_ms: Option<u64>,
    #[arg(long, env = "AITBC_WORKER_ID")]
    pub worker_id: Option<String>,
}

/// A complete, checked configuration.
#[derive(Debug)]
pub struct WorkerSettings {
    pub api_url: String,
    pub api_key: String,
    pub key: NamedSigningKey,
    pub queue: QueueSource,
    pub backend: BackendChoice,
    pub gpu_index: usize,
    pub agent: AgentConfig,
    pub models: Vec<crate::models::ModelConfig>,
    pub upstream_models: Vec<crate::upstream::UpstreamConfig>,
    pub quality_check: Option<Vec<String>>,
    /// The config file, when there is one: the worker reads `quality_check` from it again for
    /// each result, so the provider (or the SDK's `set_quality_checker`) changes the check
    /// without a restart.
    pub config_path: Option<PathBuf>,
}

/// A quality check's command: at most this many arguments, each at most this many bytes.
pub const QUALITY_CHECK_ARGS_MAX: usize = 64;
pub const QUALITY_CHECK_ARG_BYTES_MAX: usize = 4_096;

/// Whether `argv` is a quality check's command within the bounds.
pub fn check_quality_argv(argv: &[String]) -> Result<(), String> {
    if argv.is_empty() || argv.len() > QUALITY_CHECK_ARGS_MAX || argv.iter().any(|a| a.len() > QUALITY_CHECK_ARG_BYTES_MAX) {
        return Err(format!("quality_check is a command: 1..={QUALITY_CHECK_ARGS_MAX} strings of at most {QUALITY_CHECK_ARG_BYTES_MAX} bytes"));
    }
    Ok(())
}

/// The `quality_check` of the config file at `path`, read now: None when the file or the key
/// is absent. Other keys are not checked here (the worker read them when it started).
pub fn quality_check_in(path: &Path) -> Result<Option<Vec<String>>, String> {
    #[derive(Deserialize)]
    struct QualityOnly {
        quality_check: Option<Vec<String>>,
    }
    if !path.exists() {
        return Ok(None);
    }
    let only: QualityOnly = toml::from_str(&read_bounded(path, "config file")?).map_err(|e| format!("config file {}: {e}", path.display()))?;
    if let Some(argv) = &only.quality_check {
        check_quality_argv(argv)?;
    }
    Ok(only.quality_check)
}

fn read_bounded(path: &Path, what: &str) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if meta.len() > CONFIG_FILE_BYTES_MAX {
        return Err(format!("{what} {} is larger than {CONFIG_FILE_BYTES_MAX} bytes", path.display()));
    }
    std::fs::read_to_string(path).map_err(|e| format!("{what} {}: {e}", path.display()))
}

pub fn load_key(path: &Path) -> Result<NamedSigningKey, String> {
    let file: SigningKeyFile = serde_json::from_str(&read_bounded(path, "key file")?).map_err(|e| format!("key file {}: {e}", path.display()))?;
    NamedSigningKey::from_file(&file).map_err(|e| format!("key file {}: {e}", path.display()))
}

impl RunArgs {
    /// Merges the file (if any) under the flags and checks the result.
    pub fn settings(&self) -> Result<WorkerSettings, String> {
        let file: FileConfig = match &self.config {
            Some(path) => toml::from_str(&read_bounded(path, "config file")?).map_err(|e| format!("config file {}: {e}", path.display()))?,
            None => FileConfig::default(),
        };
        let need = |v: Option<String>, name: &str| v.ok_or_else(|| format!("missing {name} (flag --{} or the config file)", name.replace('_', "-")));
        let api_url = need(self.api_url.clone().or(file.api_url), "api_url")?;
        let api_key = need(self.api_key.clone().or(file.api_key), "api_key")?;
        let key_file = self.key_file.clone().or(file.key_file).ok_or("missing key_file (flag --key-file or the config file)")?;
        let listings = if self.listings.is_empty() { file.listings.unwrap_or_default() } else { self.listings.clone() };
        let listings = listings.iter().map(|l| ListingId::parse(l).map_err(|e| e.to_string())).collect::<Result<Vec<_>, _>>()?;
        let queue: QueueSource = need(self.queue.clone().or(file.queue), "queue")?.parse()?;
        let backend: BackendChoice = self.backend.clone().or(file.backend).unwrap_or_else(|| "auto".into()).parse().map_err(|e| format!("{e}"))?;
        let worker_id = match self.worker_id.clone().or(file.worker_id) {
            Some(id) => WorkerId::parse(&id).map_err(|e| e.to_string())?,
            None => WorkerId::generate(),
        };
        let agent = AgentConfig {
            worker_id,
            listings,
            max_concurrent_jobs: self.max_concurrent_jobs.or(file.max_concurrent_jobs).unwrap_or(1),
            lease_ms: self.lease_ms.or(file.lease_ms).unwrap_or(LEASE_MS_DEFAULT),
            heartbeat_interval_ms: self.heartbeat_interval_ms.or(file.heartbeat_interval_ms).unwrap_or(HEARTBEAT_INTERVAL_MS_DEFAULT),
            poll_wait_ms: self.poll_wait_ms.or(file.poll_wait_ms).unwrap_or(POLL_WAIT_MS_DEFAULT),
            grace_ms: self.grace_ms.or(file.grace_ms).unwrap_or(GRACE_MS_DEFAULT),
        };
        agent.validate()?;
        if file.models.len() + file.upstream_models.len() > crate::models::MODELS_MAX {
            return Err(format!("at most {} models (models and upstream_models together)", crate::models::MODELS_MAX));
        }
        for upstream in &file.upstream_models {
            upstream.validate()?;
        }
        if let Some(argv) = &file.quality_check {
            check_quality_argv(argv)?;
        }
        Ok(WorkerSettings {
            api_url,
            api_key,
            key: load_key(&key_file)?,
            queue,
            backend,
            gpu_index: self.gpu_index.or(file.gpu_index).unwrap_or(0),
            agent,
            models: file.models,
            upstream_models: file.upstream_models,
            quality_check: file.quality_check,
            config_path: self.config.clone(),
        })
    }
}
