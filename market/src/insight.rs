//! Provider insight: workers' health reports and the alerts they raise (the guide's
//! `configure_monitoring`), the market-intelligence view (measured demand, utilization, price
//! percentiles and trends per region and model, the shared metrics of providers who opted in,
//! and providers' signals: observations and pricing proposals, aggregated and never applied),
//! a listing's analytics over a period, and optimization suggestions (rules over measured data,
//! `aitbc_core::insight::suggest`).
//!
//! Writes: a health report updates the listing item (latest report) and puts at most one alert
//! per metric and `ALERT_WINDOW_MS` window (only if absent, expiring), so alerts are bounded in
//! number and lifetime whatever the worker sends. A signal replaces the provider's previous one
//! of its kind in the region (one item per provider, kind and region, expiring). Sharing
//! settings are one attribute of the provider item.

use crate::auth::{Principal, Role};
use crate::explorer::{HistoryWindow, Interval};
use crate::quotes::REGION_LISTINGS_MAX;
use crate::records::from_item;
use crate::registry::{Earnings, Listing, ListingFilter, ListingView, LISTINGS_PAGE_MAX};
use crate::{Market, MarketError};
use aitbc_core::health::{breaches, Breach, HealthReport, Metric, MonitoringConfig};
use aitbc_core::insight::{percentile, suggest, trend, ListingFacts, Suggestion, Trend};
use aitbc_core::money::{Amount, GpuMillis, Rate};
use aitbc_core::pricing::Strategy;
use aitbc_core::receipt::Receipt;
use aitbc_core::values::{Address, ListingId, Region, WorkerId};
use aitbc_store::{keys, spec::ATTR_EXPIRES_AT, Condition, Item, StoreError, Update};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One alert per metric per window this long: a breach that persists raises one alert every
/// 5 minutes, not one per report.
pub const ALERT_WINDOW_MS: i64 = 300_000;
/// Alerts expire after a week (the store's TTL).
pub const ALERT_TTL_S: i64 = 7 * 86_400;
/// Alerts per page, at most.
pub const ALERTS_PAGE_MAX: usize = 100;
/// Signals expire after 30 days: a proposal is a view of the market now, not forever.
pub const SIGNAL_TTL_S: i64 = 30 * 86_400;
/// Signals of one region read for one view, at most (two per provider).
pub const SIGNALS_READ_MAX: usize = 2_000;
/// A proposal's rationale and expected impact, at most (characters: what the document's
/// maxLength counts; at most 4 bytes each).
pub const RATIONALE_CHARS_MAX: usize = 500;
pub const IMPACT_CHARS_MAX: usize = 200;
/// The intelligence view's window: 1..=168 hours, hourly buckets.
pub const INTELLIGENCE_HOURS_MAX: u32 = 168;
pub const INTELLIGENCE_HOURS_DEFAULT: u32 = 24;
/// Suggestions look at the last 7 days.
pub const SUGGESTION_WINDOW_HOURS: u32 = 168;
/// Peak hours listed by analytics, at most.
pub const PEAK_HOURS_MAX: usize = 3;

const ATTR_MONITORING: &str = "monitoring";
const ATTR_HEALTH: &str = "health";
const ATTR_HEALTH_MS: &str = "health_at_ms";
const ATTR_HEALTH_WORKER: &str = "health_worker";
const ATTR_SHARING: &str = "sharing";
/// Attributes of the queue room counter (`registry`): jobs waiting = size - room.
const ATTR_QUEUE_ROOM: &str = "queue_room";
const ATTR_QUEUE_SIZE: &str = "queue_size";

fn invalid(field: &str, reason: impl Into<String>) -> MarketError {
    MarketError::invalid(field, reason)
}

fn own(caller: &Principal, listing: &Listing) -> Result<(), MarketError> {
    caller.require(Role::Provider)?;
    if caller.role == Role::Admin || caller.address == listing.provider {
        Ok(())
    } else {
        Err(MarketError::Forbidden(format!("GPU listing {} belongs to another provider", listing.gpu_id)))
    }
}

fn json_attr<T: for<'de> Deserialize<'de>>(item: &Item, attr: &str) -> Result<Option<T>, MarketError> {
    item.attrs
        .get(attr)
        .map(|v| serde_json::from_value(v.clone()).map_err(|e| MarketError::Internal(format!("stored {attr} does not parse: {e}"))))
        .transpose()
}

/// The latest health report of a listing's worker.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthSnapshot {
    pub at_ms: i64,
    pub worker_id: String,
    pub report: HealthReport,
}

/// One alert: a report crossed a threshold.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Alert {
    pub metric: Metric,
    /// The value measured, in the metric's unit (degrees Celsius, basis points, jobs; 1 for a
    /// GPU failure).
    pub value: u64,
    pub threshold: u64,
    /// When the report came (unix ms).
    pub at_ms: i64,
    /// The start of its 5-minute window: one alert per metric per window.
    pub window_ms: i64,
    pub worker_id: String,
}

/// A listing's monitoring, latest health and alerts, newest first.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ListingAlerts {
    pub gpu_id: ListingId,
    pub online: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<MonitoringConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthSnapshot>,
    pub items: Vec<Alert>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// How a provider takes part in the market-intelligence group (the guide's `join_swarm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ContributionLevel {
    /// Reads only; posts no signals.
    #[default]
    Passive,
    /// Also posts observations and pricing proposals (`POST /v1/market/signals`).
    Active,
}

/// A provider's sharing settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct Sharing {
    /// Whether its listings' measured metrics (success rate, start times, utilization) count in
    /// the market view's shared performance figures.
    pub performance_metrics: bool,
    pub contribution_level: ContributionLevel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Low,
    Moderate,
    High,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Decreasing,
    Stable,
    Increasing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Constraint {
    None,
    GpuMemory,
    Compute,
    Network,
    Storage,
}

/// A provider's view of its market (the guide's `share_market_data`): what it sees, not
/// measured; shown as counts beside the measured figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Observation {
    pub current_demand: Level,
    pub price_trends: Direction,
    pub resource_constraints: Constraint,
    pub competitive_landscape: Level,
}

/// A provider's pricing proposal (the guide's `participate_in_pricing`): recorded and shown
/// aggregated; never applied to any price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PricingProposal {
    /// AITBC per GPU-hour.
    pub proposed_base_rate: Amount,
    /// Why (at most 500 characters).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 500))]
    pub rationale: String,
    /// What the provider expects (at most 200 characters).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 200))]
    pub expected_impact: String,
}

/// What a provider posts: an observation, a proposal, or both, for one region where it lists a GPU.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewSignal {
    #[cfg_attr(feature = "openapi", schema(value_type = Region))]
    pub region: String,
    #[serde(default)]
    pub observation: Option<Observation>,
    #[serde(default)]
    pub proposal: Option<PricingProposal>,
}

/// What was recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignalRecord {
    pub region: Region,
    pub provider: Address,
    pub at_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observation: Option<Observation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proposal: Option<PricingProposal>,
}

/// One hour of a model's market in a region.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TrendPoint {
    /// Start of the hour, unix ms.
    pub t_ms: i64,
    pub jobs: u64,
    /// Median unit price paid (AITBC per GPU-second); absent in an hour without jobs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub median_unit_price: Option<Rate>,
}

/// One model's market in a region over the window, from its receipts.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelMarket {
    /// The model; `-` for jobs without one.
    pub model: String,
    /// Jobs completed (demand served).
    pub jobs: u64,
    pub gpu_seconds: GpuMillis,
    /// Unit prices paid (AITBC per GPU-second): 10th, 50th and 90th percentiles (nearest rank).
    pub unit_price_p10: Rate,
    pub unit_price_p50: Rate,
    pub unit_price_p90: Rate,
    /// Median price of the window's second half against its first.
    pub price_trend: Trend,
    /// Jobs of the window's second half against its first.
    pub demand_trend: Trend,
    pub points: Vec<TrendPoint>,
}

/// Measured metrics of the providers in a region who opted in (`performance_metrics`).
#[derive(Debug, Clone, Serialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SharedPerformance {
    pub providers: u64,
    pub listings: u64,
    pub completed: u64,
    pub failed: u64,
    /// Completed over ended jobs of those listings, basis points; absent before any ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_rate_bps: Option<u32>,
    /// Mean submission-to-start time of their jobs, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_start_ms: Option<u64>,
    /// Their active jobs over their capacity now, basis points.
    pub utilization_bps: u32,
}

/// Providers' signals in a region, aggregated (not measured; never applied to prices).
#[derive(Debug, Clone, Serialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Signals {
    pub proposals: u64,
    /// Proposed base rates (AITBC per GPU-hour): least, median (lower), greatest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proposed_rate_min: Option<Amount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proposed_rate_median: Option<Amount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proposed_rate_max: Option<Amount>,
    pub observations: u64,
    /// Per observation field, how many providers said each value.
    pub current_demand: BTreeMap<String, u64>,
    pub price_trends: BTreeMap<String, u64>,
    pub resource_constraints: BTreeMap<String, u64>,
    pub competitive_landscape: BTreeMap<String, u64>,
}

/// One region's market intelligence.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegionIntelligence {
    pub region: Region,
    pub listings: u64,
    pub online: u64,
    pub gpus: u64,
    /// Active jobs over capacity now, basis points.
    pub demand_bps: u32,
    /// Metered GPU time in the window over the region's GPUs (listed now) times the window,
    /// basis points.
    pub utilization_bps: u32,
    pub jobs: u64,
    pub models: Vec<ModelMarket>,
    pub shared_performance: SharedPerformance,
    pub signals: Signals,
}

/// The market-intelligence view.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MarketIntelligence {
    pub window: HistoryWindow,
    pub regions: Vec<RegionIntelligence>,
    /// True when the window held more receipts than one view reads (the newest 5,000 counted).
    pub truncated: bool,
}

/// A model's earnings on a listing over a period.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelProfit {
    pub model: String,
    pub jobs: u64,
    pub gross: Amount,
    pub gpu_seconds: GpuMillis,
    /// Gross per GPU-hour used, rounded down.
    pub gross_per_gpu_hour: Amount,
}

/// A listing's analytics over a period (the guide's `get_analytics`).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ListingAnalytics {
    pub gpu_id: ListingId,
    pub period: String,
    pub jobs: u64,
    pub gpu_seconds: GpuMillis,
    /// Metered GPU time over the listing's GPUs times the period (from its creation, if later),
    /// basis points.
    pub utilization_bps: u32,
    /// The same as a decimal fraction, e.g. "0.25".
    pub utilization: String,
    /// Local hours (of the listing's region) with the most jobs started, most first (at most 3).
    pub peak_hours: Vec<u32>,
    /// Jobs started per local hour (0..=23).
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, u64>))]
    pub jobs_by_hour_of_day: BTreeMap<u32, u64>,
    /// Models by gross earnings, most first.
    pub profitable_models: Vec<ModelProfit>,
    /// The period's earnings: totals and by client, model and hour of day.
    pub earnings: Earnings,
}

/// A listing's optimization suggestions and the facts they came from.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ListingSuggestions {
    pub gpu_id: ListingId,
    /// The listing's base price per GPU-second.
    pub price: Rate,
    /// The median unit price paid in its region over the last 7 days.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region_median_unit_price: Option<Rate>,
    pub utilization_bps: u32,
    pub closed_hours_per_week: u32,
    pub items: Vec<Suggestion>,
}

fn bps(part: u128, whole: u128) -> u32 {
    (part * 10_000).checked_div(whole).map_or(0, |b| b.min(10_000) as u32)
}

fn fraction(bps: u32) -> String {
    Rate::from_raw(u64::from(bps) * 100_000_000).to_string()
}

/// The hour of the week of a unix time (0..168, counted from the epoch's weekday: only
/// compared with itself).
fn week_hour(unix_ms: i64) -> usize {
    (unix_ms.div_euclid(3_600_000)).rem_euclid(168) as usize
}

fn median(sorted: &[Rate]) -> Option<Rate> {
    percentile(sorted, 5_000)
}

impl Market {
    // ---- monitoring and alerts ----------------------------------------------------------------

    /// Sets a listing's monitoring (its provider).
    pub async fn set_monitoring(&self, caller: &Principal, gpu_id: &ListingId, config: MonitoringConfig) -> Result<MonitoringConfig, MarketError> {
        config.validate().map_err(|e| invalid(e.field, e.reason))?;
        let listing = self.listing(gpu_id).await?;
        own(caller, &listing)?;
        let value = serde_json::to_value(&config).expect("serializes");
        self.store.update(&keys::listing(gpu_id.as_str()), Update::new().set(ATTR_MONITORING, value), Condition::Present).await?;
        Ok(config)
    }

    /// Checks a health report before anything is written.
    pub fn check_health(report: &HealthReport) -> Result<(), MarketError> {
        report.validate().map_err(|e| invalid(e.field, e.reason))
    }

    /// After a heartbeat (which checked the caller owns the listing): stores the worker's health
    /// report, if any, and an alert per threshold it crosses. Answers the listing's report
    /// interval in seconds, or None when its provider configured no monitoring.
    pub async fn record_health(&self, caller: &Principal, gpu_id: &ListingId, worker: &WorkerId, report: Option<&HealthReport>) -> Result<Option<u32>, MarketError> {
        let item = self.listing_item(gpu_id).await?;
        let listing: Listing = from_item(&item)?;
        own(caller, &listing)?;
        let monitoring: Option<MonitoringConfig> = json_attr(&item, ATTR_MONITORING)?;
        let Some(report) = report else { return Ok(monitoring.map(|m| m.report_interval_s)) };
        Self::check_health(report)?;
        let now = self.now_ms();
        let update = Update::new()
            .set(ATTR_HEALTH, serde_json::to_value(report).expect("serializes"))
            .set(ATTR_HEALTH_MS, now)
            .set(ATTR_HEALTH_WORKER, worker.as_str());
        self.store.update(&keys::listing(gpu_id.as_str()), update, Condition::Present).await?;
        if let Some(config) = &monitoring {
            let waiting = (item.int(ATTR_QUEUE_SIZE).unwrap_or(0) - item.int(ATTR_QUEUE_ROOM).unwrap_or(0)).max(0) as u64;
            for breach in breaches(&config.alerts, report, waiting) {
                self.put_alert(gpu_id, worker, now, breach).await?;
            }
        }
        Ok(monitoring.map(|m| m.report_interval_s))
    }

    async fn put_alert(&self, gpu_id: &ListingId, worker: &WorkerId, now: i64, breach: Breach) -> Result<(), MarketError> {
        let window_ms = now - now.rem_euclid(ALERT_WINDOW_MS);
        let alert = Alert { metric: breach.metric, value: breach.value, threshold: breach.threshold, at_ms: now, window_ms, worker_id: worker.to_string() };
        let mut item = crate::records::to_item(keys::listing_alert(gpu_id.as_str(), window_ms, breach.metric.as_str()), &alert, &[]);
        item = item.with(ATTR_EXPIRES_AT, now / 1_000 + ALERT_TTL_S);
        match self.store.put(item, Condition::Absent).await {
            // One alert per metric and window: the first report of the window tells it.
            Ok(()) | Err(StoreError::ConditionFailed { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// A listing's monitoring, latest health and alerts, newest first (its provider).
    pub async fn listing_alerts(&self, caller: &Principal, gpu_id: &ListingId, limit: usize, cursor: Option<String>) -> Result<ListingAlerts, MarketError> {
        let item = self.listing_item(gpu_id).await?;
        let view = self.listing_view(&item)?;
        own(caller, &view.listing)?;
        let health = match (json_attr::<HealthReport>(&item, ATTR_HEALTH)?, item.int(ATTR_HEALTH_MS)) {
            (Some(report), Some(at_ms)) => Some(HealthSnapshot { at_ms, worker_id: item.str(ATTR_HEALTH_WORKER).unwrap_or_default().to_string(), report }),
            _ => None,
        };
        let query = keys::listing_alerts(gpu_id.as_str()).descending().limit(limit.clamp(1, ALERTS_PAGE_MAX)).after(cursor);
        let page = self.store.query(query).await.map_err(|e| match e {
            StoreError::Invalid(r) => invalid("cursor", r),
            e => e.into(),
        })?;
        let now_s = self.now_ms() / 1_000;
        // DynamoDB deletes expired items within days, not at once: hide them meanwhile.
        let items = page.items.iter().filter(|i| i.int(ATTR_EXPIRES_AT).is_none_or(|e| e > now_s)).map(from_item).collect::<Result<Vec<Alert>, _>>()?;
        Ok(ListingAlerts { gpu_id: gpu_id.clone(), online: view.online, monitoring: json_attr(&item, ATTR_MONITORING)?, health, items, next_cursor: page.cursor })
    }

    // ---- sharing and signals ---------------------------------------------------------------------

    /// Sets a provider's sharing settings (the provider itself).
    pub async fn set_sharing(&self, caller: &Principal, provider: &Address, sharing: Sharing) -> Result<Sharing, MarketError> {
        caller.require(Role::Provider)?;
        if &caller.address != provider && caller.role != Role::Admin {
            return Err(MarketError::Forbidden("a provider sets only its own sharing".into()));
        }
        let value = serde_json::to_value(sharing).expect("serializes");
        match self.store.update(&keys::provider(provider.as_str()), Update::new().set(ATTR_SHARING, value), Condition::Present).await {
            Ok(_) => Ok(sharing),
            Err(StoreError::ConditionFailed { .. }) => Err(MarketError::not_found(format!("provider {provider}"))),
            Err(e) => Err(e.into()),
        }
    }

    /// A provider's sharing settings (the defaults when it never set any).
    pub async fn sharing(&self, provider: &Address) -> Result<Sharing, MarketError> {
        let item = self.store.get(&keys::provider(provider.as_str())).await?.ok_or_else(|| MarketError::not_found(format!("provider {provider}")))?;
        Ok(json_attr(&item, ATTR_SHARING)?.unwrap_or_default())
    }

    /// Records a provider's observation and/or pricing proposal for a region where it lists a
    /// GPU; it must have joined the group as an active contributor.
    pub async fn post_signal(&self, caller: &Principal, new: NewSignal) -> Result<SignalRecord, MarketError> {
        caller.require(Role::Provider)?;
        let (region, _) = self.config.region(&new.region)?;
        if new.observation.is_none() && new.proposal.is_none() {
            return Err(invalid("observation", "send an observation, a proposal or both"));
        }
        if let Some(p) = &new.proposal {
            if p.proposed_base_rate.is_zero() || p.proposed_base_rate > crate::registry::BASE_PRICE_PER_HOUR_MAX {
                return Err(invalid("proposal.proposed_base_rate", format!("must be above 0 and at most {}", crate::registry::BASE_PRICE_PER_HOUR_MAX)));
            }
            if p.rationale.chars().count() > RATIONALE_CHARS_MAX {
                return Err(invalid("proposal.rationale", format!("at most {RATIONALE_CHARS_MAX} characters")));
            }
            if p.expected_impact.chars().count() > IMPACT_CHARS_MAX {
                return Err(invalid("proposal.expected_impact", format!("at most {IMPACT_CHARS_MAX} characters")));
            }
        }
        if self.sharing(&caller.address).await?.contribution_level != ContributionLevel::Active {
            return Err(MarketError::Forbidden("join the market-intelligence group as an active contributor first (PUT /v1/providers/{address}/sharing)".into()));
        }
        let filter = ListingFilter { provider: Some(caller.address.clone()), limit: LISTINGS_PAGE_MAX, ..Default::default() };
        let (mine, _) = self.list_listings(filter).await?;
        if !mine.iter().any(|v| v.listing.region == region) {
            return Err(MarketError::Forbidden(format!("signals for {region} come from providers with a GPU listed there")));
        }
        let now = self.now_ms();
        let record = SignalRecord { region: region.clone(), provider: caller.address.clone(), at_ms: now, observation: new.observation, proposal: new.proposal };
        let expires = now / 1_000 + SIGNAL_TTL_S;
        for (kind, present) in [("OBS", record.observation.is_some()), ("PROP", record.proposal.is_some())] {
            if present {
                let one = SignalRecord {
                    observation: if kind == "OBS" { record.observation.clone() } else { None },
                    proposal: if kind == "PROP" { record.proposal.clone() } else { None },
                    ..record.clone()
                };
                let item = crate::records::to_item(keys::market_signal(region.as_str(), kind, caller.address.as_str()), &one, &[]).with(ATTR_EXPIRES_AT, expires);
                self.store.put(item, Condition::Always).await?;
            }
        }
        Ok(record)
    }

    async fn region_signals(&self, region: &Region) -> Result<Signals, MarketError> {
        let mut out = Signals::default();
        let mut rates = Vec::new();
        let mut cursor = None;
        let mut read = 0usize;
        let now_s = self.now_ms() / 1_000;
        loop {
            let page = self.store.query(keys::market_signals(region.as_str()).limit(aitbc_store::PAGE_ITEMS_MAX).after(cursor)).await?;
            for item in &page.items {
                read += 1;
                if item.int(ATTR_EXPIRES_AT).is_some_and(|e| e <= now_s) {
                    continue;
                }
                let record: SignalRecord = from_item(item)?;
                if let Some(p) = record.proposal {
                    out.proposals += 1;
                    rates.push(p.proposed_base_rate);
                }
                if let Some(o) = record.observation {
                    out.observations += 1;
                    let name = |v: serde_json::Value| v.as_str().unwrap_or_default().to_string();
                    *out.current_demand.entry(name(serde_json::to_value(o.current_demand).expect("ser"))).or_default() += 1;
                    *out.price_trends.entry(name(serde_json::to_value(o.price_trends).expect("ser"))).or_default() += 1;
                    *out.resource_constraints.entry(name(serde_json::to_value(o.resource_constraints).expect("ser"))).or_default() += 1;
                    *out.competitive_landscape.entry(name(serde_json::to_value(o.competitive_landscape).expect("ser"))).or_default() += 1;
                }
            }
            match page.cursor {
                Some(c) if read < SIGNALS_READ_MAX => cursor = Some(c),
                _ => break,
            }
        }
        rates.sort();
        out.proposed_rate_min = rates.first().copied();
        out.proposed_rate_max = rates.last().copied();
        out.proposed_rate_median = (!rates.is_empty()).then(|| rates[(rates.len() - 1) / 2]);
        Ok(out)
    }

    // ---- the market view ---------------------------------------------------------------------------

    /// Receipts of the last `hours` hours with each one's region (by its listing now).
    async fn regional_receipts(&self, hours: u32) -> Result<(HistoryWindow, Vec<(Region, Receipt)>, bool), MarketError> {
        let window = HistoryWindow::new(Interval::Hour, hours, self.now_ms())?;
        let mut region_of: BTreeMap<ListingId, Region> = BTreeMap::new();
        for region in self.config.regions.keys() {
            let filter = ListingFilter { region: Some(region.to_string()), limit: REGION_LISTINGS_MAX, ..Default::default() };
            for v in self.list_listings(filter).await?.0 {
                region_of.insert(v.listing.gpu_id.clone(), region.clone());
            }
        }
        let (receipts, truncated) = self.window_receipts(&window.filter()).await?;
        let tagged = receipts.into_iter().filter_map(|r| region_of.get(&r.body.gpu_id).cloned().map(|g| (g, r))).collect();
        Ok((window, tagged, truncated))
    }

    /// Per region and model: demand, utilization, price percentiles and trends over the last
    /// `hours` hours, from receipts; opted-in providers' measured metrics; signals. Public.
    pub async fn market_intelligence(&self, region: Option<&str>, hours: u32) -> Result<MarketIntelligence, MarketError> {
        if !(1..=INTELLIGENCE_HOURS_MAX).contains(&hours) {
            return Err(invalid("hours", format!("must be 1..={INTELLIGENCE_HOURS_MAX}")));
        }
        let only = region.map(|r| self.config.region(r).map(|(r, _)| r)).transpose()?;
        let (window, receipts, truncated) = self.regional_receipts(hours).await?;
        let regions: Vec<Region> = match &only {
            Some(r) => vec![r.clone()],
            None => self.config.regions.keys().cloned().collect(),
        };
        let mut out = Vec::with_capacity(regions.len());
        let half = (i64::from(hours) + 1) / 2;
        for region in regions {
            let filter = ListingFilter { region: Some(region.to_string()), limit: REGION_LISTINGS_MAX, ..Default::default() };
            let (views, _) = self.list_listings(filter).await?;
            let gpus: u64 = views.iter().map(|v| u64::from(v.listing.count)).sum();
            let mine: Vec<&Receipt> = receipts.iter().filter(|(g, _)| g == &region).map(|(_, r)| r).collect();
            let metered: u128 = mine.iter().map(|r| u128::from(r.body.units.millis())).sum();
            let capacity = u128::from(gpus) * u128::try_from(window.interval_ms).expect("positive") * u128::from(hours);
            let mut by_model: BTreeMap<String, Vec<&Receipt>> = BTreeMap::new();
            for r in &mine {
                by_model.entry(r.body.model.as_ref().map_or_else(|| "-".to_string(), |m| m.to_string())).or_default().push(r);
            }
            let models = by_model.into_iter().map(|(model, rs)| model_market(model, &rs, &window, half)).collect();
            out.push(RegionIntelligence {
                listings: views.len() as u64,
                online: views.iter().filter(|v| v.online).count() as u64,
                gpus,
                demand_bps: self.region_demand_bps(&region).await?,
                utilization_bps: bps(metered, capacity),
                jobs: mine.len() as u64,
                models,
                shared_performance: self.shared_performance(&views).await?,
                signals: self.region_signals(&region).await?,
                region,
            });
        }
        Ok(MarketIntelligence { window, regions: out, truncated })
    }

    async fn shared_performance(&self, views: &[ListingView]) -> Result<SharedPerformance, MarketError> {
        let mut out = SharedPerformance::default();
        let mut sharing: BTreeMap<Address, bool> = BTreeMap::new();
        let (mut waits, mut started, mut active, mut capacity) = (0u64, 0u64, 0i64, 0i64);
        for v in views {
            let provider = &v.listing.provider;
            if !sharing.contains_key(provider) {
                let on = self.sharing(provider).await.map(|s| s.performance_metrics).unwrap_or(false);
                sharing.insert(provider.clone(), on);
                out.providers += u64::from(on);
            }
            if !sharing[provider] {
                continue;
            }
            let f = &v.reputation.facts;
            out.listings += 1;
            out.completed += f.completed;
            out.failed += f.failed;
            waits = waits.saturating_add(f.wait_ms_total);
            started += f.started;
            let cap = i64::from(v.listing.max_concurrent_jobs);
            active += v.active_jobs.clamp(0, cap);
            capacity += cap;
        }
        let ended = out.completed + out.failed;
        out.success_rate_bps = (ended > 0).then(|| bps(u128::from(out.completed), u128::from(ended)));
        out.mean_start_ms = (started > 0).then(|| waits / started);
        out.utilization_bps = bps(active.max(0) as u128, capacity.max(0) as u128);
        Ok(out)
    }

    // ---- analytics and suggestions ---------------------------------------------------------------

    /// A listing's analytics over `period` (its provider): utilization, peak hours, models by
    /// profit, and the period's earnings (by client, model and hour of day).
    pub async fn listing_analytics(&self, caller: &Principal, gpu_id: &ListingId, period: &str) -> Result<ListingAnalytics, MarketError> {
        let earnings = self.listing_earnings(caller, gpu_id, period).await?;
        let listing = self.listing(gpu_id).await?;
        let period_ms = crate::registry::parse_period(period)?;
        let now = self.now_ms();
        let since_ms = (now - period_ms).max(listing.created_at_ms);
        let tz = self.config.regions.get(&listing.region).copied().unwrap_or(chrono_tz::UTC);
        let filter = crate::explorer::ReceiptFilter { provider: Some(listing.provider.clone()), since_ms: Some(now - period_ms), ..Default::default() };
        let (receipts, _) = self.window_receipts(&filter).await?;
        let mut jobs = 0u64;
        let mut metered = 0u64;
        let mut hours: BTreeMap<u32, u64> = BTreeMap::new();
        let mut models: BTreeMap<String, ModelProfit> = BTreeMap::new();
        for r in receipts.iter().filter(|r| r.body.gpu_id == *gpu_id) {
            let b = &r.body;
            jobs += 1;
            metered = metered.saturating_add(b.units.millis());
            let hour = aitbc_core::pricing::local_hour(b.started_at * 1_000, tz).unwrap_or(0);
            *hours.entry(hour).or_default() += 1;
            let name = b.model.as_ref().map_or_else(|| "(none)".to_string(), |m| m.to_string());
            let m = models.entry(name.clone()).or_insert(ModelProfit { model: name, jobs: 0, gross: Amount::ZERO, gpu_seconds: GpuMillis::from_millis(0), gross_per_gpu_hour: Amount::ZERO });
            m.jobs += 1;
            m.gross = m.gross.checked_add(b.price).unwrap_or(Amount::MAX);
            m.gpu_seconds = GpuMillis::from_millis(m.gpu_seconds.millis().saturating_add(b.units.millis()));
        }
        let mut profitable: Vec<ModelProfit> = models
            .into_values()
            .map(|mut m| {
                let ms = m.gpu_seconds.millis();
                m.gross_per_gpu_hour = if ms == 0 { Amount::ZERO } else { Amount::from_raw(u64::try_from(u128::from(m.gross.raw()) * 3_600_000 / u128::from(ms)).unwrap_or(u64::MAX)) };
                m
            })
            .collect();
        profitable.sort_by(|a, b| b.gross.cmp(&a.gross).then(a.model.cmp(&b.model)));
        let mut peak: Vec<(u32, u64)> = hours.iter().map(|(h, n)| (*h, *n)).collect();
        peak.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let capacity = u128::from(listing.count) * u128::try_from((now - since_ms).max(1)).expect("positive");
        let utilization_bps = bps(u128::from(metered), capacity);
        Ok(ListingAnalytics {
            gpu_id: gpu_id.clone(),
            period: period.to_string(),
            jobs,
            gpu_seconds: GpuMillis::from_millis(metered),
            utilization_bps,
            utilization: fraction(utilization_bps),
            peak_hours: peak.into_iter().take(PEAK_HOURS_MAX).map(|(h, _)| h).collect(),
            jobs_by_hour_of_day: hours,
            profitable_models: profitable,
            earnings,
        })
    }

    /// Optimization suggestions for a listing (its provider): the rules of
    /// `aitbc_core::insight::suggest` over the last 7 days' measured data.
    pub async fn listing_suggestions(&self, caller: &Principal, gpu_id: &ListingId) -> Result<ListingSuggestions, MarketError> {
        let item = self.listing_item(gpu_id).await?;
        let view = self.listing_view(&item)?;
        own(caller, &view.listing)?;
        let listing = &view.listing;
        let (window, receipts, _) = self.regional_receipts(SUGGESTION_WINDOW_HOURS).await?;
        let now = self.now_ms();
        let mut prices: Vec<Rate> = Vec::new();
        let mut region_jobs = 0u64;
        let mut region_by_week_hour = [0u64; aitbc_core::insight::WEEK_HOURS];
        let mut metered = 0u64;
        for (region, r) in &receipts {
            if region == &listing.region {
                prices.push(r.body.unit_price);
                region_jobs += 1;
                region_by_week_hour[week_hour(r.body.started_at * 1_000)] += 1;
            }
            if r.body.gpu_id == *gpu_id {
                metered = metered.saturating_add(r.body.units.millis());
            }
        }
        prices.sort();
        // The coming week, hour by hour: which hours the schedule is closed.
        let hour_start = now - now.rem_euclid(3_600_000);
        let mut closed = [false; aitbc_core::insight::WEEK_HOURS];
        if let Some(schedule) = &listing.availability {
            for h in 0..aitbc_core::insight::WEEK_HOURS as i64 {
                // The middle of the hour: a window edge at the hour's start counts either way.
                let t = hour_start + h * 3_600_000 + 1_800_000;
                closed[week_hour(t)] = !schedule.is_open(t);
            }
        }
        let since_ms = window.from_ms.max(listing.created_at_ms);
        let capacity = u128::from(listing.count) * u128::try_from((now - since_ms).max(1)).expect("positive");
        let facts = ListingFacts {
            price: Rate::per_hour(listing.base_price),
            region_median: median(&prices),
            utilization_bps: bps(u128::from(metered), capacity),
            load_following_strategy: matches!(listing.strategy, Strategy::Dynamic | Strategy::UtilizationGuard),
            closed_hours: closed.iter().filter(|c| **c).count() as u32,
            region_jobs_in_closed_hours: (0..aitbc_core::insight::WEEK_HOURS).filter(|h| closed[*h]).map(|h| region_by_week_hour[h]).sum(),
            region_jobs,
            completed: view.reputation.facts.completed,
            failed: view.reputation.facts.failed,
        };
        Ok(ListingSuggestions {
            gpu_id: gpu_id.clone(),
            price: facts.price,
            region_median_unit_price: facts.region_median,
            utilization_bps: facts.utilization_bps,
            closed_hours_per_week: facts.closed_hours,
            items: suggest(&facts),
        })
    }
}

fn model_market(model: String, receipts: &[&Receipt], window: &HistoryWindow, half: i64) -> ModelMarket {
    let mut prices: Vec<Rate> = receipts.iter().map(|r| r.body.unit_price).collect();
    prices.sort();
    let mut per_hour: Vec<Vec<Rate>> = vec![Vec::new(); window.buckets as usize];
    for r in receipts {
        if let Some(i) = window.index(r.body.completed_at) {
            per_hour[i].push(r.body.unit_price);
        }
    }
    let halves = |from: usize, to: usize| -> (u128, u128) {
        let mut ps: Vec<Rate> = per_hour[from..to].iter().flatten().copied().collect();
        ps.sort();
        (ps.len() as u128, median(&ps).map_or(0, |m| u128::from(m.raw())))
    };
    let cut = (half as usize).min(per_hour.len());
    let (first_jobs, first_price) = halves(0, cut);
    let (second_jobs, second_price) = halves(cut, per_hour.len());
    let points = per_hour
        .iter_mut()
        .enumerate()
        .map(|(i, ps)| {
            ps.sort();
            TrendPoint { t_ms: window.from_ms + i as i64 * window.interval_ms, jobs: ps.len() as u64, median_unit_price: median(ps) }
        })
        .collect();
    let gpu_ms: u64 = receipts.iter().map(|r| r.body.units.millis()).fold(0, u64::saturating_add);
    ModelMarket {
        model,
        jobs: receipts.len() as u64,
        gpu_seconds: GpuMillis::from_millis(gpu_ms),
        unit_price_p10: percentile(&prices, 1_000).unwrap_or(Rate::from_raw(0)),
        unit_price_p50: percentile(&prices, 5_000).unwrap_or(Rate::from_raw(0)),
        unit_price_p90: percentile(&prices, 9_000).unwrap_or(Rate::from_raw(0)),
        price_trend: trend(first_price, second_price),
        demand_trend: trend(first_jobs, second_jobs),
        points,
    }
}
