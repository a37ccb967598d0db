//! The registry: providers' receipt keys, GPU listings (register, list, get, update, delete),
//! worker heartbeats, a listing's status and its earnings.

use crate::auth::{Principal, Role};
use crate::records::{from_item, int, to_item};
use crate::{Market, MarketError};
use aitbc_core::availability::Schedule;
use aitbc_core::jobspec::JobKind;
use aitbc_core::money::{Amount, Rate};
use aitbc_core::pricing::{ListingTerms, ModelPrices, ModelPricesPatch, PricingParams, Strategy};
use aitbc_core::signing::{KeySet, PublicKeyEntry};
use aitbc_core::values::{Address, CudaVersion, GpuMemoryGib, GpuName, KeyId, ListingId, ModelName, Region, WorkerId};
use aitbc_store::{keys, Condition, Item, Key, StoreError, TxWrite, Update};
use serde::{Deserialize, Serialize};

/// GPUs in one listing, at most.
pub const LISTING_GPUS_MAX: u32 = 1_024;
/// Concurrent jobs per listing, at most.
pub const LISTING_CONCURRENT_JOBS_MAX: u32 = 4_096;
/// Models a listing names, at most.
pub const LISTING_MODELS_MAX: usize = 64;
/// Listings per page, at most.
pub const LISTINGS_PAGE_MAX: usize = 100;
/// Signing keys per provider, at most.
pub const PROVIDER_KEYS_MAX: usize = 16;
/// A base price per GPU-hour is at most this (a bound on typos); model prices share it.
pub const BASE_PRICE_PER_HOUR_MAX: Amount = aitbc_core::pricing::PRICE_PER_HOUR_MAX;
/// Models a listing prices itself, at most.
pub const LISTING_MODEL_PRICES_MAX: usize = aitbc_core::pricing::LISTING_MODEL_PRICES_MAX;
/// SLA response time, at most an hour; penalty rate at most 100%.
pub const SLA_RESPONSE_S_MAX: u32 = 3_600;

const ATTR_ACTIVE_JOBS: &str = "active_jobs";
const ATTR_HEARTBEAT_MS: &str = "last_heartbeat_ms";
const ATTR_WORKER: &str = "last_worker";
/// The models the listing's worker reported loaded, comma-separated (model names have no commas).
const ATTR_LOADED_MODELS: &str = "loaded_models";
const ATTR_COMPLETED: &str = "completed_jobs";
const ATTR_GPU_MS: &str = "gpu_ms_total";
const ATTR_EARNED: &str = "earned_nano";
/// Jobs the listing's queue can still take: `max_queue_size` at creation, -1 per job queued,
/// +1 per job leaving the queue. A submission adds -1 with a floor of 0, so a full queue
/// refuses it in the submitting transaction itself; a requeue adds -1 without a floor (a job
/// already paid for is never refused).
pub(crate) const ATTR_QUEUE_ROOM: &str = "queue_room";
/// The queue size the room counter was last sized for (the condition of a resize).
const ATTR_QUEUE_SIZE: &str = "queue_size";
/// The fair-share virtual time: the finish tag of the job claimed last (`queue` module).
pub(crate) const ATTR_QUEUE_VTIME: &str = "queue_vtime";

/// Service-level targets (the provider guide's `define_sla`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct Sla {
    /// A job should start within this many seconds of submission.
    pub response_time_s: u32,
    /// Refund to the client, as a share of the price, when a job misses the target.
    pub penalty_rate_bps: u32,
}

impl Sla {
    pub fn validate(&self) -> Result<(), MarketError> {
        if self.response_time_s == 0 || self.response_time_s > SLA_RESPONSE_S_MAX || self.penalty_rate_bps > 10_000 {
            return Err(invalid("sla", format!("response_time_s must be 1..={SLA_RESPONSE_S_MAX}, penalty_rate_bps at most 10000")));
        }
        Ok(())
    }
}

impl Default for Sla {
    fn default() -> Self {
        Self { response_time_s: 30, penalty_rate_bps: 5_000 }
    }
}

/// A listing's queue holds at most this many jobs waiting (the largest `max_queue_size`).
pub const QUEUE_SIZE_MAX: u32 = 100_000;
/// The queue size of a listing that names none.
pub const QUEUE_SIZE_DEFAULT: u32 = 1_000;

/// In what order a listing's workers claim its queued jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum QueuePriority {
    /// In the order the queue delivers them (roughly first come, first served).
    #[default]
    Fifo,
    /// The guide's `weighted_fair_share`: higher tier first; within a tier, the least
    /// weighted-fair-share finish tag (ARCHITECTURE.md, "Queues").
    WeightedFairShare,
}

/// What a worker does to a running job when a job of a higher tier waits on a full listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Preemption {
    /// Running jobs run to the end.
    #[default]
    None,
    /// The lowest-tier running job is told at its next heartbeat (`preempt: true`) to hand the
    /// job back; it is queued again without using up an attempt.
    Graceful,
}

/// A listing's queue (the provider guide's `configure_queue`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Jobs waiting at most (1..=100000); a submission past it is refused before anything is held.
    pub max_queue_size: u32,
    pub priority: QueuePriority,
    /// Claims per job (1..=100): a job whose worker times out (its lease lapses) or fails
    /// retryably is queued again automatically until it has used this many attempts; absent,
    /// the marketplace's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts_max: Option<u32>,
    pub preemption: Preemption,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self { max_queue_size: QUEUE_SIZE_DEFAULT, priority: QueuePriority::Fifo, attempts_max: None, preemption: Preemption::None }
    }
}

impl QueueConfig {
    pub fn validate(&self) -> Result<(), MarketError> {
        if self.preemption == Preemption::Graceful && self.priority != QueuePriority::WeightedFairShare {
            return Err(invalid("queue_config.preemption", "graceful preemption needs priority weighted_fair_share (it finds the waiting tiers in that order)"));
        }
        if !(1..=QUEUE_SIZE_MAX).contains(&self.max_queue_size) {
            return Err(invalid("queue_config.max_queue_size", format!("must be 1..={QUEUE_SIZE_MAX}")));
        }
        if self.attempts_max.is_some_and(|a| !(1..=aitbc_core::job::ATTEMPTS_MAX_LIMIT).contains(&a)) {
            return Err(invalid("queue_config.attempts_max", format!("must be 1..={}", aitbc_core::job::ATTEMPTS_MAX_LIMIT)));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ListingStatus {
    Active,
    Paused,
}

/// A GPU listing as stored and served.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Listing {
    pub gpu_id: ListingId,
    pub provider: Address,
    pub name: GpuName,
    pub memory_gib: GpuMemoryGib,
    pub cuda_version: CudaVersion,
    /// AITBC per GPU-hour.
    pub base_price: Amount,
    pub region: Region,
    pub count: u32,
    pub models: Vec<ModelName>,
    pub kinds: Vec<JobKind>,
    pub strategy: Strategy,
    pub params: PricingParams,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability: Option<Schedule>,
    pub max_concurrent_jobs: u32,
    pub sla: Sla,
    #[serde(default)]
    pub queue_config: QueueConfig,
    /// Its batch discount (the guide's `enable_batch_processing`), if it offers one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<aitbc_core::pricing::BatchOffer>,
    /// Its own prices per model, AITBC per GPU-hour (the guide's `host_specialized_model(...,
    /// premium_rate)`): a job for one of these models pays this price instead of the base
    /// price, at least the rate card's rate (`aitbc_core::pricing`, rule 1).
    // Always serialized, empty too: `update_listing` writes the serialized fields, so a change
    // removing the last price must reach the stored item.
    #[serde(default)]
    pub model_prices: ModelPrices,
    /// How routing spreads its provider's jobs across its listings (the guide's
    /// `enable_load_balancing`; the rule is in `aitbc_core::routing`), if it joins that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancing: Option<aitbc_core::routing::LoadBalancing>,
    pub status: ListingStatus,
    /// The queue its workers poll.
    pub queue: String,
    pub created_at_ms: i64,
}

/// What a provider sends to list a GPU.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewListing {
    pub name: GpuName,
    pub memory_gib: GpuMemoryGib,
    pub cuda_version: CudaVersion,
    pub base_price: Amount,
    pub region: String,
    #[serde(default = "one")]
    pub count: u32,
    #[serde(default)]
    pub models: Vec<ModelName>,
    #[serde(default = "default_kinds")]
    pub kinds: Vec<JobKind>,
    #[serde(default)]
    pub strategy: Strategy,
    #[serde(default)]
    pub params: PricingParams,
    #[serde(default)]
    pub availability: Option<Schedule>,
    #[serde(default)]
    pub max_concurrent_jobs: Option<u32>,
    #[serde(default)]
    pub sla: Sla,
    #[serde(default)]
    pub queue_config: QueueConfig,
    #[serde(default)]
    pub batch: Option<aitbc_core::pricing::BatchOffer>,
    /// Its own prices per model (see [`Listing::model_prices`]); a model priced here need not
    /// be on the rate card (its worker must load it to serve it).
    #[serde(default)]
    pub model_prices: ModelPrices,
    #[serde(default)]
    pub load_balancing: Option<aitbc_core::routing::LoadBalancing>,
}

fn one() -> u32 {
    1
}

fn default_kinds() -> Vec<JobKind> {
    vec![JobKind::VectorAdd, JobKind::Reduction, JobKind::Gemm]
}

/// A partial update of a listing.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ListingPatch {
    pub strategy: Option<Strategy>,
    pub base_price: Option<Amount>,
    pub status: Option<ListingStatus>,
    pub params: Option<PricingParams>,
    pub availability: Option<Schedule>,
    pub queue_config: Option<QueueConfig>,
    pub batch: Option<aitbc_core::pricing::BatchOffer>,
    /// Its load-balancing policy across the provider's listings (`aitbc_core::routing`).
    pub load_balancing: Option<aitbc_core::routing::LoadBalancing>,
    /// New service-level targets (the guide's `define_sla`): jobs completing after the change
    /// are held to them.
    pub sla: Option<Sla>,
    /// Changes to its model prices (a JSON merge patch: a price sets one, null removes one);
    /// quotes made after the change use them, quotes made before keep their price.
    pub model_prices: Option<ModelPricesPatch>,
}

/// A listing with its live counters.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ListingView {
    #[serde(flatten)]
    pub listing: Listing,
    pub active_jobs: i64,
    pub online: bool,
    pub last_heartbeat_ms: Option<i64>,
    pub completed_jobs: i64,
    pub gpu_seconds_total: String,
    pub earned: Amount,
    /// The models its worker has loaded and verified (its last heartbeat's report): what it
    /// serves `text_generation` jobs of.
    pub loaded_models: Vec<ModelName>,
    /// Jobs it can still queue: `max_queue_size` minus jobs waiting (at most; below zero while
    /// requeued jobs overfill it).
    pub queue_room: i64,
    /// Whether the listing's item counts its queue room (listings stored before queue sizes
    /// did not: their queues are unbounded by count).
    #[serde(skip)]
    pub room_counted: bool,
    /// What its jobs' measured facts and its clients' ratings say (`aitbc_core::reputation`).
    pub reputation: aitbc_core::reputation::Reputation,
    /// Slots that live capacity reservations hold now (queue places kept for their clients).
    pub reserved_slots: u32,
    /// The live reservations and the version of their list (routing reads them).
    #[serde(skip)]
    pub held: Vec<aitbc_core::capacity::Held>,
    #[serde(skip)]
    pub reservations_version: Option<i64>,
}

impl ListingView {
    /// Whether the listing runs `kind` jobs; text generation only of a model its worker has
    /// loaded (a listing advertises no model it cannot run).
    pub fn runs(&self, kind: JobKind, model: Option<&ModelName>) -> bool {
        match kind {
            JobKind::TextGeneration => model.is_some_and(|m| self.loaded_models.contains(m)),
            other => self.listing.kinds.contains(&other),
        }
    }
}

/// Filters for listing GPUs.
#[derive(Debug, Clone, Default)]
pub struct ListingFilter {
    pub region: Option<String>,
    pub provider: Option<Address>,
    pub model: Option<ModelName>,
    /// Only listings online, active and inside their schedule now.
    pub available: bool,
    pub limit: usize,
    pub cursor: Option<String>,
}

fn invalid(field: &str, reason: impl Into<String>) -> MarketError {
    MarketError::invalid(field, reason)
}

fn listing_indexes(listing: &Listing) -> Vec<keys::IndexKey> {
    vec![
        keys::listing_region_index(listing.region.as_str(), listing.gpu_id.as_str()),
        keys::listing_provider_index(listing.provider.as_str(), listing.gpu_id.as_str()),
    ]
}

fn key_guard(key_id: &KeyId) -> Key {
    Key::new(format!("SIGNKEYID#{key_id}"), "#")
}

impl Listing {
    pub fn terms(&self, market: &Market) -> ListingTerms {
        let time_zone = market.config.regions.get(&self.region).copied().unwrap_or(chrono_tz::UTC);
        ListingTerms { base: Rate::per_hour(self.base_price), strategy: self.strategy, params: self.params, time_zone, batch: self.batch, model_prices: self.model_prices.clone() }
    }

    pub fn serves_model(&self, model: &ModelName) -> bool {
        self.models.iter().any(|m| m == model)
    }

    /// Whether it sets its own price for `model`.
    pub fn prices_model(&self, model: &ModelName) -> bool {
        self.model_prices.contains(model)
    }
}

impl Market {
    /// Registers a provider's receipt-signing public key. Key ids are unique market-wide.
    pub async fn register_signing_key(&self, caller: &Principal, entry: PublicKeyEntry) -> Result<(), MarketError> {
        caller.require(Role::Provider)?;
        entry.verifying_key().map_err(|e| invalid("public_key", e.to_string()))?;
        let existing = self.provider_keys(&caller.address).await?;
        if existing.iter().any(|k| k == &entry) {
            return Ok(());
        }
        if existing.len() >= PROVIDER_KEYS_MAX {
            return Err(invalid("key_id", format!("a provider has at most {PROVIDER_KEYS_MAX} keys")));
        }
        let owner = caller.address.as_str();
        let item = to_item(keys::provider_signing_key(owner, entry.key_id.as_str()), &entry, &[keys::signing_key_index(entry.key_id.as_str())])
            .with("provider", owner);
        let guard = Item::new(key_guard(&entry.key_id)).with("provider", owner);
        let writes = vec![TxWrite::Put { item: guard, condition: Condition::Absent }, TxWrite::Put { item, condition: Condition::Absent }];
        match self.store.transact(writes).await {
            Ok(()) => Ok(()),
            Err(StoreError::ConditionFailed { .. }) => Err(MarketError::Conflict(format!("key id {} is taken", entry.key_id))),
            Err(e) => Err(e.into()),
        }
    }

    /// A provider's registered public keys.
    pub async fn provider_keys(&self, provider: &Address) -> Result<Vec<PublicKeyEntry>, MarketError> {
        let page = self.store.query(keys::provider_signing_keys(provider.as_str()).limit(PROVIDER_KEYS_MAX)).await?;
        // The stored item carries index attributes beside the entry's three fields.
        page.items
            .iter()
            .map(|item| {
                let mut fields = serde_json::Map::new();
                for name in ["key_id", "alg", "public_key"] {
                    fields.insert(name.into(), item.attrs.get(name).cloned().unwrap_or_default());
                }
                serde_json::from_value(serde_json::Value::Object(fields)).map_err(|e| MarketError::Internal(format!("stored key does not parse: {e}")))
            })
            .collect()
    }

    /// The key set receipts of `provider` verify against.
    pub async fn provider_key_set(&self, provider: &Address) -> Result<KeySet, MarketError> {
        let mut set = KeySet::new();
        for entry in self.provider_keys(provider).await? {
            set.insert(&entry).map_err(|e| MarketError::Internal(e.to_string()))?;
        }
        Ok(set)
    }

    pub async fn create_listing(&self, caller: &Principal, new: NewListing) -> Result<Listing, MarketError> {
        caller.require(Role::Provider)?;
        if !self.is_provider(&caller.address).await? {
            return Err(MarketError::Forbidden("only a provider account can list GPUs".into()));
        }
        let (region, _) = self.config.region(&new.region)?;
        if new.base_price.is_zero() || new.base_price > BASE_PRICE_PER_HOUR_MAX {
            return Err(invalid("base_price", format!("must be above 0 and at most {BASE_PRICE_PER_HOUR_MAX} per GPU-hour")));
        }
        if !(1..=LISTING_GPUS_MAX).contains(&new.count) {
            return Err(invalid("count", format!("must be 1..={LISTING_GPUS_MAX}")));
        }
        if new.models.len() > LISTING_MODELS_MAX {
            return Err(invalid("models", format!("at most {LISTING_MODELS_MAX}")));
        }
        for model in &new.models {
            if self.config.rate_card.rate(model).is_none() {
                return Err(invalid("models", format!("{model} is not on the rate card")));
            }
        }
        if new.kinds.is_empty() {
            return Err(invalid("kinds", "name at least one job kind"));
        }
        new.params.validate().map_err(|e| invalid("params", e.to_string()))?;
        if let Some(schedule) = &new.availability {
            schedule.validate().map_err(|e| invalid("availability", e.to_string()))?;
        }
        new.sla.validate()?;
        new.queue_config.validate()?;
        if let Some(offer) = &new.batch {
            offer.validate().map_err(|e| invalid("batch", e.to_string()))?;
        }
        let max_concurrent_jobs = new.max_concurrent_jobs.unwrap_or(new.count);
        if !(1..=LISTING_CONCURRENT_JOBS_MAX).contains(&max_concurrent_jobs) {
            return Err(invalid("max_concurrent_jobs", format!("must be 1..={LISTING_CONCURRENT_JOBS_MAX}")));
        }
        let mut kinds = new.kinds;
        kinds.sort();
        kinds.dedup();
        let gpu_id = ListingId::generate();
        let listing = Listing {
            queue: gpu_id.as_str().to_string(),
            gpu_id,
            provider: caller.address.clone(),
            name: new.name,
            memory_gib: new.memory_gib,
            cuda_version: new.cuda_version,
            base_price: new.base_price,
            region,
            count: new.count,
            models: new.models,
            kinds,
            strategy: new.strategy,
            params: new.params,
            availability: new.availability,
            max_concurrent_jobs,
            sla: new.sla,
            queue_config: new.queue_config,
            batch: new.batch,
            model_prices: new.model_prices,
            load_balancing: new.load_balancing.and_then(aitbc_core::routing::LoadBalancing::stored),
            status: ListingStatus::Active,
            created_at_ms: self.now_ms(),
        };
        // The queue first: a listing whose queue is missing could take jobs nobody receives.
        self.queue.create_queue(&listing.queue).await?;
        let item = to_item(keys::listing(listing.gpu_id.as_str()), &listing, &listing_indexes(&listing))
            .with(ATTR_ACTIVE_JOBS, 0)
            .with(ATTR_COMPLETED, 0)
            .with(ATTR_GPU_MS, 0)
            .with(ATTR_EARNED, 0)
            .with(ATTR_QUEUE_ROOM, i64::from(listing.queue_config.max_queue_size))
            .with(ATTR_QUEUE_SIZE, i64::from(listing.queue_config.max_queue_size));
        self.store.put(item, Condition::Absent).await?;
        self.forget_listing(&listing.gpu_id, &listing.region);
        Ok(listing)
    }

    pub async fn listing_item(&self, gpu_id: &ListingId) -> Result<Item, MarketError> {
        self.store.get(&keys::listing(gpu_id.as_str())).await?.ok_or_else(|| MarketError::not_found(format!("GPU listing {gpu_id}")))
    }

    pub async fn listing(&self, gpu_id: &ListingId) -> Result<Listing, MarketError> {
        from_item(&self.listing_item(gpu_id).await?)
    }

    pub fn listing_view(&self, item: &Item) -> Result<ListingView, MarketError> {
        let listing: Listing = from_item(item)?;
        let (held, reservations_version) = crate::reservations::held_of(item)?;
        let last_heartbeat_ms = item.int(ATTR_HEARTBEAT_MS);
        let online = last_heartbeat_ms.is_some_and(|t| self.now_ms() - t < self.settings.online_window_ms);
        let gpu_ms = item.int(ATTR_GPU_MS).unwrap_or(0).max(0) as u64;
        let loaded_models = item
            .str(ATTR_LOADED_MODELS)
            .unwrap_or("")
            .split(',')
            .filter(|m| !m.is_empty())
            .map(ModelName::parse)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| MarketError::Internal(format!("listing {}: stored loaded models: {e}", listing.gpu_id)))?;
        Ok(ListingView {
            listing,
            active_jobs: int(item, ATTR_ACTIVE_JOBS)?,
            online,
            last_heartbeat_ms,
            completed_jobs: item.int(ATTR_COMPLETED).unwrap_or(0),
            gpu_seconds_total: aitbc_core::money::GpuMillis::from_millis(gpu_ms).to_string(),
            earned: Amount::from_raw(item.int(ATTR_EARNED).unwrap_or(0).max(0) as u64),
            loaded_models,
            queue_room: item.int(ATTR_QUEUE_ROOM).unwrap_or(i64::from(QUEUE_SIZE_MAX)),
            room_counted: item.int(ATTR_QUEUE_ROOM).is_some(),
            reputation: crate::reputation::facts_from_item(item).reputation(),
            reserved_slots: aitbc_core::capacity::reserved_by_others(&held, self.now_ms(), None),
            held,
            reservations_version,
        })
    }

    /// Whether a listing takes new jobs now: active, online, within its schedule.
    pub fn is_available(&self, view: &ListingView) -> bool {
        view.listing.status == ListingStatus::Active
            && view.online
            && view.listing.availability.as_ref().is_none_or(|s| s.is_open(self.now_ms()))
    }

    /// One page of listings by region or provider (one of them is required to keep reads bounded).
    pub async fn list_listings(&self, filter: ListingFilter) -> Result<(Vec<ListingView>, Option<String>), MarketError> {
        let limit = filter.limit.clamp(1, LISTINGS_PAGE_MAX);
        let query = match (&filter.region, &filter.provider) {
            (Some(region), _) => {
                let (region, _) = self.config.region(region)?;
                keys::listings_by_region(region.as_str())
            }
            (None, Some(provider)) => keys::listings_by_provider(provider.as_str()),
            (None, None) => return Err(invalid("region", "give region or provider")),
        };
        let page = self.store.query(query.limit(limit).after(filter.cursor)).await.map_err(|e| match e {
            StoreError::Invalid(r) => invalid("cursor", r),
            e => e.into(),
        })?;
        let mut views = Vec::with_capacity(page.items.len());
        for item in &page.items {
            let view = self.listing_view(item)?;
            if filter.model.as_ref().is_some_and(|m| !view.listing.serves_model(m) && !view.listing.prices_model(m)) {
                continue;
            }
            if filter.available && !self.is_available(&view) {
                continue;
            }
            views.push(view);
        }
        Ok((views, page.cursor))
    }

    fn own_listing(caller: &Principal, listing: &Listing) -> Result<(), MarketError> {
        if caller.role == Role::Admin || caller.address == listing.provider {
            Ok(())
        } else {
            Err(MarketError::Forbidden(format!("GPU listing {} belongs to another provider", listing.gpu_id)))
        }
    }

    pub async fn update_listing(&self, caller: &Principal, gpu_id: &ListingId, patch: ListingPatch) -> Result<Listing, MarketError> {
        caller.require(Role::Provider)?;
        let item = self.listing_item(gpu_id).await?;
        let mut listing: Listing = from_item(&item)?;
        Self::own_listing(caller, &listing)?;
        if let Some(price) = patch.base_price {
            if price.is_zero() || price > BASE_PRICE_PER_HOUR_MAX {
                return Err(invalid("base_price", format!("must be above 0 and at most {BASE_PRICE_PER_HOUR_MAX}")));
            }
            listing.base_price = price;
        }
        if let Some(params) = patch.params {
            params.validate().map_err(|e| invalid("params", e.to_string()))?;
            listing.params = params;
        }
        if let Some(schedule) = patch.availability {
            schedule.validate().map_err(|e| invalid("availability", e.to_string()))?;
            listing.availability = Some(schedule);
        }
        // A new queue size moves the room by the difference, atomically with the jobs that
        // enter and leave meanwhile (no floor: a smaller size than the jobs waiting refuses new
        // submissions until they drain).
        let mut room_delta = 0i64;
        let room_delta_from = listing.queue_config.max_queue_size;
        if let Some(config) = patch.queue_config {
            config.validate()?;
            room_delta = i64::from(config.max_queue_size) - i64::from(listing.queue_config.max_queue_size);
            listing.queue_config = config;
        }
        if let Some(offer) = patch.batch {
            offer.validate().map_err(|e| invalid("batch", e.to_string()))?;
            listing.batch = Some(offer);
        }
        if let Some(policy) = patch.load_balancing {
            listing.load_balancing = policy.stored();
        }
        if let Some(sla) = patch.sla {
            sla.validate()?;
            listing.sla = sla;
        }
        if let Some(prices) = &patch.model_prices {
            listing.model_prices = listing.model_prices.merged(prices).map_err(|e| invalid("model_prices", e.to_string()))?;
        }
        listing.strategy = patch.strategy.unwrap_or(listing.strategy);
        listing.status = patch.status.unwrap_or(listing.status);
        let mut update = Update::new();
        // A listing stored before queues had a size has no room counter: it starts full-sized.
        let legacy = item.int(ATTR_QUEUE_ROOM).is_none();
        let mut condition = Condition::Present;
        if legacy {
            update = update.set(ATTR_QUEUE_ROOM, i64::from(listing.queue_config.max_queue_size));
        } else if room_delta != 0 {
            update = update.add(ATTR_QUEUE_ROOM, room_delta, None);
            // Conditional on the size read: a concurrent patch would otherwise add its
            // difference against a size this one overwrote.
            condition = Condition::equals(ATTR_QUEUE_SIZE, i64::from(room_delta_from));
        }
        update = update.set(ATTR_QUEUE_SIZE, i64::from(listing.queue_config.max_queue_size));
        let serde_json::Value::Object(fields) = serde_json::to_value(&listing).expect("serializes") else { unreachable!() };
        for (name, value) in fields {
            update = update.set(&name, value);
        }
        // An absent optional field is not serialized: a policy removed is removed from the item.
        if listing.load_balancing.is_none() {
            update = update.remove("load_balancing");
        }
        match self.store.update(&keys::listing(gpu_id.as_str()), update, condition).await {
            Ok(_) => {}
            Err(StoreError::ConditionFailed { .. }) => return Err(MarketError::Conflict("the listing changed meanwhile; read it again".into())),
            Err(e) => return Err(e.into()),
        }
        self.forget_listing(gpu_id, &listing.region);
        Ok(listing)
    }

    /// Deletes a listing that runs no jobs.
    pub async fn delete_listing(&self, caller: &Principal, gpu_id: &ListingId) -> Result<(), MarketError> {
        caller.require(Role::Provider)?;
        let listing = self.listing(gpu_id).await?;
        Self::own_listing(caller, &listing)?;
        match self.store.delete(&keys::listing(gpu_id.as_str()), Condition::equals(ATTR_ACTIVE_JOBS, 0)).await {
            Ok(()) => {
                self.forget_listing(gpu_id, &listing.region);
                Ok(())
            }
            Err(StoreError::ConditionFailed { .. }) => Err(MarketError::Conflict("the listing has jobs running".into())),
            Err(e) => Err(e.into()),
        }
    }

    /// A worker says it is alive and serving the listing.
    pub async fn heartbeat(&self, caller: &Principal, gpu_id: &ListingId, worker: &WorkerId, loaded_models: Option<&[ModelName]>) -> Result<ListingView, MarketError> {
        caller.require(Role::Provider)?;
        let listing = self.listing(gpu_id).await?;
        Self::own_listing(caller, &listing)?;
        let mut update = Update::new().set(ATTR_HEARTBEAT_MS, self.now_ms()).set(ATTR_WORKER, worker.as_str());
        if let Some(models) = loaded_models {
            if models.len() > LISTING_MODELS_MAX {
                return Err(invalid("models", format!("at most {LISTING_MODELS_MAX}")));
            }
            let names: Vec<&str> = models.iter().map(ModelName::as_str).collect();
            update = update.set(ATTR_LOADED_MODELS, names.join(","));
        }
        let item = self.store.update(&keys::listing(gpu_id.as_str()), update, Condition::Present).await?;
        self.forget_listing(gpu_id, &listing.region);
        self.listing_view(&item)
    }

    /// The write that moves a listing's counters when a job starts or stops occupying it, with
    /// the reputation fact the same transition makes true (one write per item per transaction).
    pub fn listing_counter_write(gpu_id: &ListingId, active_delta: i64, completed: Option<(u64, Amount)>, fact: Option<crate::reputation::Fact>) -> TxWrite {
        Self::listing_move_write(gpu_id, &ListingMove { active: active_delta, completed, fact, ..Default::default() }).expect("moves the active count")
    }

    /// The write of `mv` on a listing that exists, or None when it moves nothing.
    pub fn listing_move_write(gpu_id: &ListingId, mv: &ListingMove) -> Option<TxWrite> {
        let mut update = Update::new();
        let mut moves = false;
        if mv.active != 0 {
            update = update.add(ATTR_ACTIVE_JOBS, mv.active, Some(0));
            moves = true;
        }
        if mv.room != 0 {
            // No floor: only a submission may be refused for room, and it adds its own -1.
            update = update.add(ATTR_QUEUE_ROOM, mv.room, None);
            moves = true;
        }
        if let Some((gpu_ms, earned)) = mv.completed {
            update = update.add(ATTR_COMPLETED, 1, None).add(ATTR_GPU_MS, gpu_ms as i64, None).add(ATTR_EARNED, earned.raw() as i64, None);
            moves = true;
        }
        if let Some(fact) = mv.fact {
            update = fact.add_to(update);
            moves = true;
        }
        if let Some(tag) = mv.vtime {
            update = update.set(ATTR_QUEUE_VTIME, i64::try_from(tag).unwrap_or(i64::MAX));
            moves = true;
        }
        moves.then(|| TxWrite::Update { key: keys::listing(gpu_id.as_str()), update, condition: Condition::Present })
    }
}

/// What one job transition moves on its listing's item.
#[derive(Debug, Clone, Copy, Default)]
pub struct ListingMove {
    /// Jobs running (claimed or started).
    pub active: i64,
    /// Queue room: +1 for a job leaving the queue (claimed, cancelled, expired), -1 for one
    /// queued again.
    pub room: i64,
    /// A completion's GPU time and price.
    pub completed: Option<(u64, Amount)>,
    pub fact: Option<crate::reputation::Fact>,
    /// The fair-share virtual time after a claim: the claimed job's finish tag.
    pub vtime: Option<u64>,
}

/// Receipts read to compute one earnings report, at most.
pub const EARNINGS_RECEIPTS_MAX: usize = 10_000;
/// The longest earnings period, in days.
pub const EARNINGS_PERIOD_DAYS_MAX: i64 = 366;
/// The periods `parse_period` accepts, as the API document's pattern: 1..=8784 hours (366
/// days) or 1..=366 days, no leading zeros. A test checks the two agree.
pub const EARNINGS_PERIOD_PATTERN: &str = r"^(([1-9]|[1-9][0-9]|[1-9][0-9][0-9]|[1-7][0-9]{3}|8[0-6][0-9]{2}|87[0-7][0-9]|878[0-4])h|([1-9]|[1-9][0-9]|[12][0-9]{2}|3[0-5][0-9]|36[0-6])d)$";

/// A listing's live status (the guide's `aitbc marketplace status`).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ListingStatusView {
    pub gpu_id: ListingId,
    pub name: GpuName,
    pub region: Region,
    pub status: ListingStatus,
    pub online: bool,
    pub last_heartbeat_ms: Option<i64>,
    pub strategy: Strategy,
    pub base_price: Amount,
    pub active_jobs: i64,
    pub capacity: u32,
    /// Active jobs over capacity, e.g. "0.5".
    pub utilization: String,
    /// Jobs waiting in the listing's queue (approximate).
    pub queued_jobs: u64,
    pub completed_jobs: i64,
    pub gpu_seconds_total: String,
    pub earned: Amount,
    /// Earned per GPU-hour actually used.
    pub realized_rate_per_hour: String,
}

/// A listing's earnings over a period (the guide's `aitbc marketplace earnings`).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Earnings {
    pub gpu_id: ListingId,
    pub period: String,
    pub jobs: u64,
    /// Sum of receipt prices.
    pub gross: Amount,
    /// The platform fee on those.
    pub fees: Amount,
    /// What the provider keeps.
    pub net: Amount,
    pub daily_average: Amount,
    pub by_client: std::collections::BTreeMap<String, Amount>,
    pub by_model: std::collections::BTreeMap<String, Amount>,
    /// Local hour of the listing's region (0..=23) to gross earnings.
    // JSON object keys are strings ("0".."23"), whatever the map's key type.
    #[cfg_attr(feature = "openapi", schema(value_type = std::collections::BTreeMap<String, Amount>))]
    pub by_hour_of_day: std::collections::BTreeMap<u32, Amount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_client: Option<String>,
    /// True when the period held more receipts than one report reads.
    pub truncated: bool,
}

fn fraction(bps: u32) -> String {
    aitbc_core::money::Rate::from_raw(u64::from(bps) * 100_000_000).to_string()
}

pub(crate) fn parse_period(period: &str) -> Result<i64, MarketError> {
    let err = || invalid("period", "write it as <N>h or <N>d, e.g. 24h or 30d");
    let (number, unit_ms) = match period.as_bytes().last() {
        Some(b'h') => (&period[..period.len() - 1], 3_600_000),
        Some(b'd') => (&period[..period.len() - 1], 86_400_000),
        _ => return Err(err()),
    };
    // Digits only, no leading zero: exactly what EARNINGS_PERIOD_PATTERN says (`str::parse`
    // would also take "+1" and "01").
    if number.is_empty() || number.len() > 4 || number.starts_with('0') || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err());
    }
    let n: i64 = number.parse().map_err(|_| err())?;
    if n < 1 || n * unit_ms > EARNINGS_PERIOD_DAYS_MAX * 86_400_000 {
        return Err(invalid("period", format!("must be between 1h and {EARNINGS_PERIOD_DAYS_MAX}d")));
    }
    Ok(n * unit_ms)
}

fn add<K: Ord>(map: &mut std::collections::BTreeMap<K, Amount>, key: K, value: Amount) {
    let entry = map.entry(key).or_insert(Amount::ZERO);
    *entry = entry.checked_add(value).unwrap_or(Amount::MAX);
}

impl Market {
    pub async fn listing_status(&self, gpu_id: &ListingId) -> Result<ListingStatusView, MarketError> {
        let view = self.listing_view(&self.listing_item(gpu_id).await?)?;
        let queued_jobs = self.queue.approximate_depth(&view.listing.queue).await.unwrap_or(0);
        let gpu_ms = aitbc_core::money::GpuMillis::parse(&view.gpu_seconds_total).map(|u| u.millis()).unwrap_or(0);
        let realized = if gpu_ms == 0 {
            "0".to_string()
        } else {
            // earned nano per GPU-ms, times 3.6e6 ms per hour, printed in AITBC.
            let per_hour_nano = u128::from(view.earned.raw()) * 3_600_000 / u128::from(gpu_ms);
            Amount::from_raw(u64::try_from(per_hour_nano).unwrap_or(u64::MAX)).to_string()
        };
        Ok(ListingStatusView {
            gpu_id: view.listing.gpu_id.clone(),
            name: view.listing.name.clone(),
            region: view.listing.region.clone(),
            status: view.listing.status,
            online: view.online,
            last_heartbeat_ms: view.last_heartbeat_ms,
            strategy: view.listing.strategy,
            base_price: view.listing.base_price,
            active_jobs: view.active_jobs,
            capacity: view.listing.max_concurrent_jobs,
            utilization: fraction(Self::utilization_bps(&view)),
            queued_jobs,
            completed_jobs: view.completed_jobs,
            gpu_seconds_total: view.gpu_seconds_total.clone(),
            earned: view.earned,
            realized_rate_per_hour: realized,
        })
    }

    pub async fn listing_earnings(&self, caller: &Principal, gpu_id: &ListingId, period: &str) -> Result<Earnings, MarketError> {
        let period_ms = parse_period(period)?;
        let listing = self.listing(gpu_id).await?;
        Self::own_listing(caller, &listing)?;
        let since_s = (self.now_ms() - period_ms) / 1_000;
        let tz = self.config.regions.get(&listing.region).copied().unwrap_or(chrono_tz::UTC);
        let mut report = Earnings {
            gpu_id: gpu_id.clone(),
            period: period.to_string(),
            jobs: 0,
            gross: Amount::ZERO,
            fees: Amount::ZERO,
            net: Amount::ZERO,
            daily_average: Amount::ZERO,
            by_client: Default::default(),
            by_model: Default::default(),
            by_hour_of_day: Default::default(),
            top_client: None,
            truncated: false,
        };
        let mut cursor = None;
        let mut read = 0usize;
        'pages: loop {
            let query = keys::receipts_by_provider(listing.provider.as_str()).descending().limit(aitbc_store::PAGE_ITEMS_MAX).after(cursor);
            let page = self.store.query(query).await?;
            for item in &page.items {
                read += 1;
                let receipt = crate::receipts::receipt_from_item(item)?;
                let body = &receipt.body;
                if body.completed_at < since_s {
                    break 'pages;
                }
                if &body.gpu_id != gpu_id {
                    continue;
                }
                report.jobs += 1;
                report.gross = report.gross.checked_add(body.price).map_err(|e| MarketError::Internal(e.to_string()))?;
                add(&mut report.by_client, body.client.to_string(), body.price);
                add(&mut report.by_model, body.model.as_ref().map_or("(none)".to_string(), |m| m.to_string()), body.price);
                let hour = aitbc_core::pricing::local_hour(body.completed_at * 1_000, tz).unwrap_or(0);
                add(&mut report.by_hour_of_day, hour, body.price);
                if read >= EARNINGS_RECEIPTS_MAX {
                    report.truncated = true;
                    break 'pages;
                }
            }
            match page.cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        report.fees = report.gross.share_bps(self.config.fee_bps);
        report.net = report.gross.checked_sub(report.fees).expect("a fee is a share");
        let days = (period_ms / 86_400_000).max(1) as u64;
        report.daily_average = Amount::from_raw(report.net.raw() / days);
        report.top_client = report.by_client.iter().max_by_key(|(_, v)| **v).map(|(k, _)| k.clone());
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The document's pattern and the parser accept the same periods.
    #[test]
    fn earnings_period_pattern_matches_the_parser() {
        let pattern = regex_lite::Regex::new(EARNINGS_PERIOD_PATTERN).expect("a valid pattern");
        let mut texts: Vec<String> = ["", "h", "d", "+1h", "-1d", "1m", "1hh", "1.5h", " 1h", "1h ", "١h", "99999h"].map(String::from).to_vec();
        for n in 0..10_000 {
            for unit in ["h", "d"] {
                texts.push(format!("{n}{unit}"));
                texts.push(format!("0{n}{unit}"));
            }
        }
        for text in texts {
            assert_eq!(pattern.is_match(&text), parse_period(&text).is_ok(), "{text:?}");
        }
    }
}
