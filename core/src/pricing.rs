//! Pricing: deterministic quotes from a listing's terms, the rate card, measured utilization and
//! the time. No randomness and no I/O: the same inputs always give the same quote.
//!
//! How a unit price is made (ARCHITECTURE.md repeats this):
//! 1. **Base rate.** A listing's base price is per GPU-hour (the guide's `--base-price 0.05`);
//!    it becomes a per-GPU-second [`Rate`] by `money`'s rule 2. A job for a model on the rate
//!    card pays at least the card's rate: `base = max(card[model], listing base)`. A job without
//!    a model (raw GEMM, kernels) pays the listing's base. A listing may price models itself
//!    ([`ModelPrices`], per GPU-hour, like its base; the guide's `premium_rate`): a job for a
//!    model it prices pays that price instead of its base, still at least the card's rate when
//!    the model is on the card: `base = max(card[model], listing price[model])`. The card is
//!    the marketplace's floor for a model on every listing, so a client never pays less than
//!    the published rate and a provider cannot undercut it; above it, the provider's stated
//!    price is what the client pays, exactly (not also raised to the listing's base: the
//!    provider named this model's price). A model on neither the card nor the listing's prices
//!    has no price and is refused ([`PricingError::UnknownModel`]). The breakdown's
//!    `base_source` says which one it was. A fixed-rate contract replaces all of
//!    this with the contract's rate, and no multiplier applies to it.
//! 2. **Multipliers**, each in basis points, each clamped to its own floor and ceiling:
//!    the listing's strategy (one of [`Strategy`]), the service tier, the bulk discount and
//!    the batch discount (`1 - discount_percent / 100` for a batch of at least the listing's
//!    `min_batch_size` jobs).
//! 3. **One rounding.** `unit_price = round_half_up(base x strategy x tier x bulk x batch)`, multiplied
//!    out exactly in 128-bit integers, with the product of the multipliers clamped to
//!    [`COMBINED_BPS_MIN`, `COMBINED_BPS_MAX`].
//! 4. **Maximum price** (what a job holds): `unit_price x units` by `money`'s rule 3.
//!
//! The strategies, with `d` the region's measured demand and `u` the listing's utilization,
//! both in 0..=1 (basis points in code):
//! - `market-balance` (default): `1 + 0.4 (d - 0.5)`, so 0.8 when the region is idle, 1.2 when
//!   it is saturated: stable earnings, adjusted to demand.
//! - `peak-maximizer`: the peak multiplier (default 1.5) from 09:00 to 21:00 local time of the
//!   listing's region, 1 otherwise.
//! - `utilization-guard`: `0.7 + 0.6 u` below 50% utilization, 1 above: cheaper when idle.
//! - `dynamic` (the provider guide's dynamic pricing): 1 up to the demand threshold (default
//!   0.8), then linear up to the max multiplier (default 2.0) at full utilization.

use crate::money::{div_round_half_up, Amount, GpuMillis, MoneyError, Rate, BPS_ONE};
use crate::values::{ModelName, ValueError};
use chrono::Timelike;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Utilization and demand are fractions in basis points: 0..=10_000.
pub const FRACTION_BPS_MAX: u32 = BPS_ONE;

pub const MARKET_BALANCE_BPS_MIN: u32 = 8_000;
pub const MARKET_BALANCE_BPS_MAX: u32 = 12_000;
/// The market-balance slope: 0.4 of the demand's distance from one half.
const MARKET_BALANCE_SLOPE_BPS: i64 = 4_000;
const MARKET_BALANCE_NEUTRAL_DEMAND_BPS: i64 = 5_000;

pub const PEAK_HOUR_START: u32 = 9;
pub const PEAK_HOUR_END: u32 = 21;
pub const PEAK_MULTIPLIER_BPS_DEFAULT: u32 = 15_000;
pub const PEAK_MULTIPLIER_BPS_MIN: u32 = BPS_ONE;
pub const PEAK_MULTIPLIER_BPS_MAX: u32 = 30_000;

pub const UTILIZATION_GUARD_BPS_MIN: u32 = 7_000;
pub const UTILIZATION_GUARD_BPS_MAX: u32 = BPS_ONE;
/// Below this utilization the guard lowers the price.
pub const UTILIZATION_GUARD_IDLE_BPS: u32 = 5_000;

pub const DYNAMIC_THRESHOLD_BPS_DEFAULT: u32 = 8_000;
pub const DYNAMIC_THRESHOLD_BPS_MIN: u32 = 1_000;
pub const DYNAMIC_THRESHOLD_BPS_MAX: u32 = 9_900;
pub const DYNAMIC_MAX_MULTIPLIER_BPS_DEFAULT: u32 = 20_000;
pub const DYNAMIC_MAX_MULTIPLIER_BPS_MIN: u32 = BPS_ONE;
pub const DYNAMIC_MAX_MULTIPLIER_BPS_MAX: u32 = 30_000;

/// The provider guide's tiers: 0.05, 0.15 and 0.25 per hour, i.e. 1x, 3x and 5x of basic.
pub const TIER_BPS_DEFAULTS: [u32; 3] = [10_000, 30_000, 50_000];
pub const TIER_BPS_MIN: u32 = 1_000;
pub const TIER_BPS_MAX: u32 = 100_000;

/// The guide's bulk discount: 0.8 for rentals of more than 10 hours.
pub const BULK_DISCOUNT_BPS_DEFAULT: u32 = 8_000;
pub const BULK_DISCOUNT_BPS_MIN: u32 = 5_000;
pub const BULK_DISCOUNT_BPS_MAX: u32 = BPS_ONE;
pub const BULK_HOURS_MIN_DEFAULT: u32 = 10;
pub const BULK_HOURS_MIN_MAX: u32 = 8_760;

/// The product of all multipliers is clamped to this range.
pub const COMBINED_BPS_MIN: u32 = 2_500;
pub const COMBINED_BPS_MAX: u32 = 150_000;

/// A quote covers at most this much GPU time (7 GPU-days).
pub const QUOTE_UNITS_MS_MAX: u64 = 7 * 24 * 3_600 * 1_000;
/// A rental duration is at most a year of hours.
pub const DURATION_HOURS_MAX: u32 = 8_760;
/// A rate card lists at most this many models.
pub const RATE_CARD_MODELS_MAX: usize = 1_024;
/// A listing's price per GPU-hour (its base price or a model's price) is at most this: a bound
/// on typos (a million AITBC per GPU-hour).
pub const PRICE_PER_HOUR_MAX: Amount = Amount::from_raw(1_000_000 * 1_000_000_000);
/// Models one listing prices itself, at most (a bound on the listing item and on each quote's
/// lookup; a provider hosts a handful of specialized models, not a catalogue).
pub const LISTING_MODEL_PRICES_MAX: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    #[error("model {0} has no price: it is not on the rate card and the listing does not price it")]
    UnknownModel(ModelName),
    #[error("units must be greater than zero")]
    ZeroUnits,
    #[error("units exceed the most one quote covers ({QUOTE_UNITS_MS_MAX} GPU-ms)")]
    TooManyUnits,
    #[error("duration exceeds {DURATION_HOURS_MAX} hours")]
    DurationTooLong,
    #[error("parameter {name} = {value} is outside {min}..={max}")]
    Parameter { name: &'static str, value: u32, min: u32, max: u32 },
    #[error("the contract is not valid at this time")]
    ContractNotValid,
    #[error("time {0} ms is out of range")]
    Time(i64),
    #[error("rate card: {0}")]
    RateCard(String),
    #[error("model prices: {0}")]
    ModelPrices(String),
    #[error(transparent)]
    Money(#[from] MoneyError),
}

/// The pricing strategies a listing can choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    #[default]
    MarketBalance,
    PeakMaximizer,
    UtilizationGuard,
    Dynamic,
}

impl Strategy {
    pub const ALL: [Strategy; 4] = [Strategy::MarketBalance, Strategy::PeakMaximizer, Strategy::UtilizationGuard, Strategy::Dynamic];

    pub fn name(self) -> &'static str {
        match self {
            Strategy::MarketBalance => "market-balance",
            Strategy::PeakMaximizer => "peak-maximizer",
            Strategy::UtilizationGuard => "utilization-guard",
            Strategy::Dynamic => "dynamic",
        }
    }

    pub fn parse(text: &str) -> Result<Self, ValueError> {
        Self::ALL.into_iter().find(|s| s.name() == text).ok_or_else(|| {
            ValueError::new("strategy", format!("{text:?} is not one of market-balance, peak-maximizer, utilization-guard, dynamic"))
        })
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Service tiers (the provider guide's basic / premium / enterprise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    #[default]
    Basic,
    Premium,
    Enterprise,
}

impl Tier {
    fn index(self) -> usize {
        self as usize
    }

    pub fn parse(text: &str) -> Result<Self, ValueError> {
        match text {
            "basic" => Ok(Tier::Basic),
            "premium" => Ok(Tier::Premium),
            "enterprise" => Ok(Tier::Enterprise),
            _ => Err(ValueError::new("tier", format!("{text:?} is not one of basic, premium, enterprise"))),
        }
    }
}

/// A listing's pricing parameters; defaults are the guides' numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct PricingParams {
    pub peak_multiplier_bps: u32,
    pub demand_threshold_bps: u32,
    pub max_multiplier_bps: u32,
    /// basic, premium, enterprise.
    #[cfg_attr(feature = "openapi", schema(min_items = 3, max_items = 3))]
    pub tier_bps: [u32; 3],
    pub bulk_discount_bps: u32,
    pub bulk_hours_min: u32,
}

impl Default for PricingParams {
    fn default() -> Self {
        Self {
            peak_multiplier_bps: PEAK_MULTIPLIER_BPS_DEFAULT,
            demand_threshold_bps: DYNAMIC_THRESHOLD_BPS_DEFAULT,
            max_multiplier_bps: DYNAMIC_MAX_MULTIPLIER_BPS_DEFAULT,
            tier_bps: TIER_BPS_DEFAULTS,
            bulk_discount_bps: BULK_DISCOUNT_BPS_DEFAULT,
            bulk_hours_min: BULK_HOURS_MIN_DEFAULT,
        }
    }
}

fn within(name: &'static str, value: u32, min: u32, max: u32) -> Result<(), PricingError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(PricingError::Parameter { name, value, min, max })
    }
}

impl PricingParams {
    /// Every parameter within its floor and ceiling.
    pub fn validate(&self) -> Result<(), PricingError> {
        within("peak_multiplier_bps", self.peak_multiplier_bps, PEAK_MULTIPLIER_BPS_MIN, PEAK_MULTIPLIER_BPS_MAX)?;
        within("demand_threshold_bps", self.demand_threshold_bps, DYNAMIC_THRESHOLD_BPS_MIN, DYNAMIC_THRESHOLD_BPS_MAX)?;
        within("max_multiplier_bps", self.max_multiplier_bps, DYNAMIC_MAX_MULTIPLIER_BPS_MIN, DYNAMIC_MAX_MULTIPLIER_BPS_MAX)?;
        for bps in self.tier_bps {
            within("tier_bps", bps, TIER_BPS_MIN, TIER_BPS_MAX)?;
        }
        within("bulk_discount_bps", self.bulk_discount_bps, BULK_DISCOUNT_BPS_MIN, BULK_DISCOUNT_BPS_MAX)?;
        within("bulk_hours_min", self.bulk_hours_min, 0, BULK_HOURS_MIN_MAX)
    }
}

/// The model rates: AITBC per unit (GPU-second).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateCard {
    pub models: BTreeMap<ModelName, Rate>,
}

impl RateCard {
    pub fn rate(&self, model: &ModelName) -> Option<Rate> {
        self.models.get(model).copied()
    }

    /// Parses `[models]` tables of `name = "rate"` (TOML).
    pub fn from_toml(text: &str) -> Result<Self, PricingError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            models: BTreeMap<String, String>,
        }
        let file: File = toml::from_str(text).map_err(|e| PricingError::RateCard(e.to_string()))?;
        Self::from_entries(file.models.iter().map(|(m, r)| (m.as_str(), r.as_str())))
    }

    pub fn from_entries<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, PricingError> {
        let mut models = BTreeMap::new();
        for (model, rate) in entries {
            let name = ModelName::parse(model).map_err(|e| PricingError::RateCard(e.to_string()))?;
            let rate = Rate::parse(rate).map_err(|e| PricingError::RateCard(format!("{model}: {e}")))?;
            if rate.is_zero() {
                return Err(PricingError::RateCard(format!("{model}: a rate must be above zero")));
            }
            models.insert(name, rate);
            if models.len() > RATE_CARD_MODELS_MAX {
                return Err(PricingError::RateCard(format!("more than {RATE_CARD_MODELS_MAX} models")));
            }
        }
        Ok(Self { models })
    }
}

/// A price per GPU-hour within `0 < price <= PRICE_PER_HOUR_MAX`.
pub fn check_price_per_hour(price: Amount) -> Result<(), String> {
    if price.is_zero() || price > PRICE_PER_HOUR_MAX {
        return Err(format!("{price} must be above 0 and at most {PRICE_PER_HOUR_MAX} per GPU-hour"));
    }
    Ok(())
}

/// A listing's own prices per model, AITBC per GPU-hour (like its base price): at most
/// [`LISTING_MODEL_PRICES_MAX`] models, each price within [`check_price_per_hour`]. Parsed,
/// never validated later: a value of this type always holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "BTreeMap<ModelName, Amount>", into = "BTreeMap<ModelName, Amount>")]
pub struct ModelPrices(BTreeMap<ModelName, Amount>);

impl TryFrom<BTreeMap<ModelName, Amount>> for ModelPrices {
    type Error = PricingError;

    fn try_from(prices: BTreeMap<ModelName, Amount>) -> Result<Self, PricingError> {
        if prices.len() > LISTING_MODEL_PRICES_MAX {
            return Err(PricingError::ModelPrices(format!("a listing prices at most {LISTING_MODEL_PRICES_MAX} models, not {}", prices.len())));
        }
        for (model, price) in &prices {
            check_price_per_hour(*price).map_err(|e| PricingError::ModelPrices(format!("{model}: {e}")))?;
        }
        Ok(Self(prices))
    }
}

impl From<ModelPrices> for BTreeMap<ModelName, Amount> {
    fn from(prices: ModelPrices) -> Self {
        prices.0
    }
}

impl ModelPrices {
    /// The listing's price of `model` per GPU-hour, if it prices it.
    pub fn get(&self, model: &ModelName) -> Option<Amount> {
        self.0.get(model).copied()
    }

    /// The listing's price of `model` per GPU-second (`money`'s rule 2), if it prices it.
    pub fn rate(&self, model: &ModelName) -> Option<Rate> {
        self.get(model).map(Rate::per_hour)
    }

    pub fn contains(&self, model: &ModelName) -> bool {
        self.0.contains_key(model)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&ModelName, &Amount)> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// These prices with `patch` merged in (JSON merge patch, RFC 7396): a price sets the
    /// model's price, `None` (JSON null) removes it; the result is checked as a whole.
    pub fn merged(&self, patch: &ModelPricesPatch) -> Result<ModelPrices, PricingError> {
        let mut prices = self.0.clone();
        for (model, price) in &patch.0 {
            match price {
                Some(price) => prices.insert(model.clone(), *price),
                None => prices.remove(model),
            };
        }
        ModelPrices::try_from(prices)
    }
}

/// A change to a listing's model prices: a price per GPU-hour sets a model's price, null
/// removes it; at most [`LISTING_MODEL_PRICES_MAX`] entries, each price checked as in
/// [`ModelPrices`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "BTreeMap<ModelName, Option<Amount>>")]
pub struct ModelPricesPatch(BTreeMap<ModelName, Option<Amount>>);

impl TryFrom<BTreeMap<ModelName, Option<Amount>>> for ModelPricesPatch {
    type Error = PricingError;

    fn try_from(patch: BTreeMap<ModelName, Option<Amount>>) -> Result<Self, PricingError> {
        if patch.len() > LISTING_MODEL_PRICES_MAX {
            return Err(PricingError::ModelPrices(format!("a change names at most {LISTING_MODEL_PRICES_MAX} models, not {}", patch.len())));
        }
        for (model, price) in &patch {
            if let Some(price) = price {
                check_price_per_hour(*price).map_err(|e| PricingError::ModelPrices(format!("{model}: {e}")))?;
            }
        }
        Ok(Self(patch))
    }
}

impl ModelPricesPatch {
    pub fn iter(&self) -> impl Iterator<Item = (&ModelName, &Option<Amount>)> {
        self.0.iter()
    }
}

#[cfg(feature = "openapi")]
fn model_prices_schema(description: &str, value: utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
    use utoipa::PartialSchema;
    let names = match ModelName::schema() {
        utoipa::openapi::RefOr::T(schema) => schema,
        utoipa::openapi::RefOr::Ref(_) => Schema::Object(ObjectBuilder::new().schema_type(Type::String).build()),
    };
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(description))
        .property_names(Some(names))
        .additional_properties(Some(value))
        .max_properties(Some(LISTING_MODEL_PRICES_MAX))
        .into()
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for ModelPrices {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        model_prices_schema(
            "The listing's own price per model, AITBC per GPU-hour (like base_price; above 0, at most 1000000): a job for one of these models pays this price instead of the base price, at least the rate card's rate when the model is on the card. At most 16 models.",
            Amount::schema(),
        )
    }
}
#[cfg(feature = "openapi")]
impl utoipa::ToSchema for ModelPrices {}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for ModelPricesPatch {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{OneOfBuilder, Type};
        let value = OneOfBuilder::new().item(Amount::schema()).item(utoipa::openapi::schema::ObjectBuilder::new().schema_type(Type::Null)).into();
        model_prices_schema(
            "Changes to the listing's model prices (a JSON merge patch): a price (AITBC per GPU-hour, above 0, at most 1000000) sets the model's price, null removes it. At most 16 entries, and the listing prices at most 16 models afterwards.",
            value,
        )
    }
}
#[cfg(feature = "openapi")]
impl utoipa::ToSchema for ModelPricesPatch {}

/// A batch can hold at most this many jobs (one request, one quote).
pub const BATCH_JOBS_MAX: u32 = 100;
/// The most a batch discount takes off, in percent (a 100% discount is clamped with the other
/// multipliers to [`COMBINED_BPS_MIN`]).
pub const BATCH_DISCOUNT_PERCENT_MAX: u32 = 100;

/// A listing's batch processing offer (the guide's `enable_batch_processing`): batches of at
/// least `min_batch_size` jobs get `discount_percent` off each job's unit price.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BatchOffer {
    /// 2..=100 jobs.
    pub min_batch_size: u32,
    /// 0..=100.
    pub discount_percent: u32,
}

impl BatchOffer {
    pub fn validate(&self) -> Result<(), PricingError> {
        within("min_batch_size", self.min_batch_size, 2, BATCH_JOBS_MAX)?;
        within("discount_percent", self.discount_percent, 0, BATCH_DISCOUNT_PERCENT_MAX)
    }

    /// The batch multiplier for a batch of `batch_size` jobs: `1 - discount` when the batch is
    /// at least `min_batch_size` jobs, else 1 (a single job is a batch of 0 or 1).
    pub fn multiplier_bps(&self, batch_size: u32) -> u32 {
        if batch_size >= self.min_batch_size {
            BPS_ONE - self.discount_percent.min(BATCH_DISCOUNT_PERCENT_MAX) * (BPS_ONE / 100)
        } else {
            BPS_ONE
        }
    }
}

/// What pricing needs to know of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct ListingTerms {
    /// The listing's base price, per GPU-second.
    pub base: Rate,
    pub strategy: Strategy,
    pub params: PricingParams,
    /// The listing's region's time zone, for peak hours.
    pub time_zone: chrono_tz::Tz,
    /// Its batch discount, if it offers one.
    pub batch: Option<BatchOffer>,
    /// Its own prices of models (the module's rule 1).
    pub model_prices: ModelPrices,
}

/// Measured conditions, as fractions in basis points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MarketSignals {
    /// Busy GPUs over all GPUs of the region's listings.
    pub region_demand_bps: u32,
    /// This listing's busy GPUs over its GPUs.
    pub listing_utilization_bps: u32,
}

/// A fixed-rate contract between a provider and one client (the caller checks the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contract {
    pub fixed_rate: Rate,
    pub valid_from_ms: i64,
    pub valid_until_ms: i64,
}

/// What the client asks a price for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteRequest {
    pub model: Option<ModelName>,
    /// The most GPU time the job may use; the hold covers it.
    pub units: GpuMillis,
    pub tier: Tier,
    /// The rental's length in hours, for the bulk discount (0 for a single job).
    pub duration_hours: u32,
    /// Jobs in the batch this job is submitted with (0 or 1: not a batch).
    pub batch_size: u32,
}

/// Where the base rate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BaseSource {
    /// The listing's base price.
    Listing,
    /// The rate card's rate for the model (above what the listing asks).
    RateCard,
    /// The listing's own price for the model (`model_prices`).
    ModelPrice,
    Contract,
}

/// Every factor of a quote and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Breakdown {
    /// The listing's base price per GPU-second.
    pub listing_rate: Rate,
    /// The rate card's rate for the model, if the job names one that the card lists.
    pub card_rate: Option<Rate>,
    /// The listing's own price for the model per GPU-second, if it prices it (`model_prices`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_rate: Option<Rate>,
    pub base_rate: Rate,
    pub base_source: BaseSource,
    pub strategy: Option<Strategy>,
    pub strategy_bps: u32,
    pub tier: Tier,
    pub tier_bps: u32,
    pub bulk_bps: u32,
    /// The batch discount's multiplier (1 outside a batch large enough for one).
    #[serde(default = "bps_one")]
    pub batch_bps: u32,
    /// The product of the multipliers after clamping, rounded to a basis point for display
    /// (the unit price uses the exact product).
    pub combined_bps: u32,
    pub clamped: bool,
}

fn bps_one() -> u32 {
    BPS_ONE
}

/// A priced request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    /// AITBC per GPU-second.
    pub unit_price: Rate,
    /// `unit_price x units`: what the job's hold covers.
    pub max_price: Amount,
    pub breakdown: Breakdown,
}

/// `1 + 0.4 (d - 0.5)`, within its floor and ceiling.
pub fn market_balance_bps(region_demand_bps: u32) -> u32 {
    let d = i64::from(region_demand_bps.min(FRACTION_BPS_MAX));
    let m = i64::from(BPS_ONE) + (d - MARKET_BALANCE_NEUTRAL_DEMAND_BPS) * MARKET_BALANCE_SLOPE_BPS / i64::from(BPS_ONE);
    (m as u32).clamp(MARKET_BALANCE_BPS_MIN, MARKET_BALANCE_BPS_MAX)
}

/// The peak multiplier between 09:00 and 21:00 local time, else 1.
pub fn peak_maximizer_bps(local_hour: u32, peak_multiplier_bps: u32) -> u32 {
    assert!(local_hour < 24);
    if (PEAK_HOUR_START..PEAK_HOUR_END).contains(&local_hour) {
        peak_multiplier_bps.clamp(PEAK_MULTIPLIER_BPS_MIN, PEAK_MULTIPLIER_BPS_MAX)
    } else {
        BPS_ONE
    }
}

/// `0.7 + 0.6 u` below 50% utilization, else 1.
pub fn utilization_guard_bps(utilization_bps: u32) -> u32 {
    let u = utilization_bps.min(FRACTION_BPS_MAX);
    if u >= UTILIZATION_GUARD_IDLE_BPS {
        return UTILIZATION_GUARD_BPS_MAX;
    }
    let span = UTILIZATION_GUARD_BPS_MAX - UTILIZATION_GUARD_BPS_MIN;
    (UTILIZATION_GUARD_BPS_MIN + span * u / UTILIZATION_GUARD_IDLE_BPS).clamp(UTILIZATION_GUARD_BPS_MIN, UTILIZATION_GUARD_BPS_MAX)
}

/// 1 up to the threshold, then linear to `max_multiplier` at full utilization.
pub fn dynamic_bps(utilization_bps: u32, threshold_bps: u32, max_multiplier_bps: u32) -> u32 {
    let u = utilization_bps.min(FRACTION_BPS_MAX);
    let threshold = threshold_bps.clamp(DYNAMIC_THRESHOLD_BPS_MIN, DYNAMIC_THRESHOLD_BPS_MAX);
    let max = max_multiplier_bps.clamp(DYNAMIC_MAX_MULTIPLIER_BPS_MIN, DYNAMIC_MAX_MULTIPLIER_BPS_MAX);
    if u <= threshold {
        return BPS_ONE;
    }
    let rise = u64::from(max - BPS_ONE) * u64::from(u - threshold) / u64::from(FRACTION_BPS_MAX - threshold);
    BPS_ONE + rise as u32
}

/// The local hour of `now_ms` in `tz`.
pub fn local_hour(now_ms: i64, tz: chrono_tz::Tz) -> Result<u32, PricingError> {
    let utc = chrono::DateTime::from_timestamp_millis(now_ms).ok_or(PricingError::Time(now_ms))?;
    Ok(utc.with_timezone(&tz).hour())
}

/// Prices `request` on `listing` (see the module's documentation for the rules).
pub fn quote(
    card: &RateCard,
    listing: &ListingTerms,
    signals: MarketSignals,
    now_ms: i64,
    request: &QuoteRequest,
    contract: Option<&Contract>,
) -> Result<Quote, PricingError> {
    if request.units.millis() == 0 {
        return Err(PricingError::ZeroUnits);
    }
    if request.units.millis() > QUOTE_UNITS_MS_MAX {
        return Err(PricingError::TooManyUnits);
    }
    if request.duration_hours > DURATION_HOURS_MAX {
        return Err(PricingError::DurationTooLong);
    }
    let card_rate = request.model.as_ref().and_then(|m| card.rate(m));
    let model_rate = request.model.as_ref().and_then(|m| listing.model_prices.rate(m));
    if let Some(model) = &request.model {
        if card_rate.is_none() && model_rate.is_none() {
            return Err(PricingError::UnknownModel(model.clone()));
        }
    }
    let params = &listing.params;
    params.validate()?;

    if let Some(contract) = contract {
        if !(contract.valid_from_ms..contract.valid_until_ms).contains(&now_ms) {
            return Err(PricingError::ContractNotValid);
        }
        let breakdown = Breakdown {
            listing_rate: listing.base,
            card_rate,
            model_rate,
            base_rate: contract.fixed_rate,
            base_source: BaseSource::Contract,
            strategy: None,
            strategy_bps: BPS_ONE,
            tier: request.tier,
            tier_bps: BPS_ONE,
            bulk_bps: BPS_ONE,
            batch_bps: BPS_ONE,
            combined_bps: BPS_ONE,
            clamped: false,
        };
        let max_price = contract.fixed_rate.price(request.units)?;
        return Ok(Quote { unit_price: contract.fixed_rate, max_price, breakdown });
    }

    // The listing's own price for the model replaces its base; the card's rate is the floor.
    let (asked, asked_source) = match model_rate {
        Some(rate) => (rate, BaseSource::ModelPrice),
        None => (listing.base, BaseSource::Listing),
    };
    let (base_rate, base_source) = match card_rate {
        Some(card) if card > asked => (card, BaseSource::RateCard),
        _ => (asked, asked_source),
    };
    let strategy_bps = match listing.strategy {
        Strategy::MarketBalance => market_balance_bps(signals.region_demand_bps),
        Strategy::PeakMaximizer => peak_maximizer_bps(local_hour(now_ms, listing.time_zone)?, params.peak_multiplier_bps),
        Strategy::UtilizationGuard => utilization_guard_bps(signals.listing_utilization_bps),
        Strategy::Dynamic => dynamic_bps(signals.listing_utilization_bps, params.demand_threshold_bps, params.max_multiplier_bps),
    };
    let tier_bps = params.tier_bps[request.tier.index()];
    let bulk_bps = if request.duration_hours > params.bulk_hours_min { params.bulk_discount_bps } else { BPS_ONE };
    let batch_bps = match &listing.batch {
        Some(offer) => {
            offer.validate()?;
            offer.multiplier_bps(request.batch_size)
        }
        None => BPS_ONE,
    };

    // The exact product of four multipliers, in units of 1e-16; clamp it, then round once.
    let one = u128::from(BPS_ONE);
    let product = u128::from(strategy_bps) * u128::from(tier_bps) * u128::from(bulk_bps) * u128::from(batch_bps);
    let (min, max) = (u128::from(COMBINED_BPS_MIN) * one * one * one, u128::from(COMBINED_BPS_MAX) * one * one * one);
    let clamped = product < min || product > max;
    let product = product.clamp(min, max);
    let unit_price = div_round_half_up(u128::from(base_rate.raw()) * product, one * one * one * one);
    let unit_price = Rate::checked_from_raw(u64::try_from(unit_price).map_err(|_| MoneyError::Overflow)?)?;
    let combined_bps = u32::try_from(div_round_half_up(product, one * one * one)).expect("clamped below COMBINED_BPS_MAX");
    let max_price = unit_price.price(request.units)?;
    let breakdown = Breakdown {
        listing_rate: listing.base,
        card_rate,
        model_rate,
        base_rate,
        base_source,
        strategy: Some(listing.strategy),
        strategy_bps,
        tier: request.tier,
        tier_bps,
        bulk_bps,
        batch_bps,
        combined_bps,
        clamped,
    };
    Ok(Quote { unit_price, max_price, breakdown })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(s: &str) -> Rate {
        Rate::parse(s).unwrap()
    }
    fn per_hour(s: &str) -> Rate {
        Rate::parse_per_hour(s).unwrap()
    }
    #[test]
    fn a_batch_at_its_minimum_gets_the_discount_once_in_the_product() {
        let card = seed_card();
        let mut terms = listing("0.36", Strategy::UtilizationGuard);
        terms.batch = Some(BatchOffer { min_batch_size: 10, discount_percent: 30 });
        let signals = MarketSignals { region_demand_bps: 0, listing_utilization_bps: 10_000 };
        let mut req = request(None, "10");
        req.batch_size = 9;
        let small = quote(&card, &terms, signals, 0, &req, None).unwrap();
        req.batch_size = 10;
        let batch = quote(&card, &terms, signals, 0, &req, None).unwrap();
        assert_eq!((small.breakdown.batch_bps, batch.breakdown.batch_bps), (10_000, 7_000));
        // 0.36/h is 0.0001/s; times 0.7, exactly.
        assert_eq!((small.unit_price, batch.unit_price), (rate("0.0001"), rate("0.00007")));
        assert_eq!(batch.max_price, Amount::parse("0.0007").unwrap());
        terms.batch = Some(BatchOffer { min_batch_size: 10, discount_percent: 101 });
        assert!(matches!(quote(&card, &terms, signals, 0, &req, None), Err(PricingError::Parameter { name: "discount_percent", .. })));
        terms.batch = Some(BatchOffer { min_batch_size: 10, discount_percent: 100 });
        let free = quote(&card, &terms, signals, 0, &req, None).unwrap();
        assert!(free.breakdown.clamped && free.unit_price == rate("0.000025"), "a 100% discount is clamped like any product: {free:?}");
    }

    fn seed_card() -> RateCard {
        RateCard::from_entries([("llama3.2", "2.0"), ("llama3.2:1b", "0.5"), ("codellama", "2.5"), ("stable-diffusion", "5.0")]).unwrap()
    }
    fn listing(base_per_hour: &str, strategy: Strategy) -> ListingTerms {
        ListingTerms { base: per_hour(base_per_hour), strategy, params: PricingParams::default(), time_zone: chrono_tz::America::Los_Angeles, batch: None, model_prices: ModelPrices::default() }
    }
    fn request(model: Option<&str>, seconds: &str) -> QuoteRequest {
        QuoteRequest {
            model: model.map(|m| ModelName::parse(m).unwrap()),
            units: GpuMillis::parse(seconds).unwrap(),
            tier: Tier::Basic,
            duration_hours: 0,
            batch_size: 0,
        }
    }
    /// 2026-01-24 12:00 in Los Angeles (20:00 UTC), and 03:00 there (11:00 UTC).
    const LA_NOON_MS: i64 = 1_769_284_800_000;
    const LA_3AM_MS: i64 = 1_769_252_400_000;
    const NEUTRAL: MarketSignals = MarketSignals { region_demand_bps: 5_000, listing_utilization_bps: 5_000 };

    #[test]
    fn strategy_multipliers_by_hand() {
        // market-balance: 1 + 0.4 (d - 0.5)
        for (demand, bps) in [(0, 8_000), (2_500, 9_000), (5_000, 10_000), (8_000, 11_200), (10_000, 12_000), (50_000, 12_000)] {
            assert_eq!(market_balance_bps(demand), bps, "demand {demand}");
        }
        // peak-maximizer: 1.5 from 09:00 up to 21:00
        for (hour, bps) in [(8, 10_000), (9, 15_000), (15, 15_000), (20, 15_000), (21, 10_000), (0, 10_000)] {
            assert_eq!(peak_maximizer_bps(hour, PEAK_MULTIPLIER_BPS_DEFAULT), bps, "hour {hour}");
        }
        // utilization-guard: 0.7 + 0.6 u below one half
        for (u, bps) in [(0, 7_000), (2_500, 8_500), (4_999, 9_999), (5_000, 10_000), (10_000, 10_000)] {
            assert_eq!(utilization_guard_bps(u), bps, "utilization {u}");
        }
        // dynamic: threshold 0.8, max 2.0 (the provider guide's numbers)
        for (u, bps) in [(0, 10_000), (8_000, 10_000), (9_000, 15_000), (9_500, 17_500), (10_000, 20_000)] {
            assert_eq!(dynamic_bps(u, 8_000, 20_000), bps, "utilization {u}");
        }
        // parameters outside their bounds are clamped, never trusted
        assert_eq!(dynamic_bps(10_000, 8_000, 90_000), DYNAMIC_MAX_MULTIPLIER_BPS_MAX);
        assert_eq!(peak_maximizer_bps(12, 1), PEAK_MULTIPLIER_BPS_MIN);
    }

    #[test]
    fn the_seed_receipt_price_from_the_rate_card() {
        // llama3.2 at 2.0 per unit, 2.5 units -> 5.0 (Payments and Receipts page).
        let q = quote(&seed_card(), &listing("0.05", Strategy::MarketBalance), NEUTRAL, LA_NOON_MS, &request(Some("llama3.2"), "2.5"), None).unwrap();
        assert_eq!(q.unit_price, rate("2"));
        assert_eq!(q.max_price, Amount::parse("5").unwrap());
        assert_eq!(q.breakdown.base_source, BaseSource::RateCard);
        assert_eq!(q.breakdown.card_rate, Some(rate("2")));
        assert_eq!(q.breakdown.listing_rate, per_hour("0.05"));
        for (model, unit_price) in [("llama3.2:1b", "0.5"), ("codellama", "2.5"), ("stable-diffusion", "5")] {
            let q = quote(&seed_card(), &listing("0.05", Strategy::MarketBalance), NEUTRAL, LA_NOON_MS, &request(Some(model), "1"), None).unwrap();
            assert_eq!(q.unit_price, rate(unit_price), "{model}");
        }
    }

    #[test]
    fn table_of_hand_computed_quotes() {
        let card = seed_card();
        // (base per hour, strategy, signals, time, model, seconds, tier, hours) -> (unit price per second, max price)
        struct Case {
            base: &'static str,
            strategy: Strategy,
            signals: MarketSignals,
            now_ms: i64,
            model: Option<&'static str>,
            seconds: &'static str,
            tier: Tier,
            hours: u32,
            unit_price: &'static str,
            max_price: &'static str,
        }
        let cases = [
            // 0.1/h (guide) = 27_777_778 pico/s; neutral market: x1. An hour: 100_000_000.8 nano.
            Case { base: "0.1", strategy: Strategy::MarketBalance, signals: NEUTRAL, now_ms: LA_NOON_MS, model: None, seconds: "3600", tier: Tier::Basic, hours: 0, unit_price: "0.000027777778", max_price: "0.100000001" },
            // Peak hours: x1.5 -> 41_666_667 pico/s; an hour costs 0.1500000012 -> 0.150000001.
            Case { base: "0.1", strategy: Strategy::PeakMaximizer, signals: NEUTRAL, now_ms: LA_NOON_MS, model: None, seconds: "3600", tier: Tier::Basic, hours: 0, unit_price: "0.000041666667", max_price: "0.150000001" },
            // Off peak (03:00 local): x1.
            Case { base: "0.1", strategy: Strategy::PeakMaximizer, signals: NEUTRAL, now_ms: LA_3AM_MS, model: None, seconds: "3600", tier: Tier::Basic, hours: 0, unit_price: "0.000027777778", max_price: "0.100000001" },
            // Bulk: 12 hours > 10 -> x0.8: 22_222_222.4 -> 22_222_222 pico/s.
            Case { base: "0.1", strategy: Strategy::MarketBalance, signals: NEUTRAL, now_ms: LA_NOON_MS, model: None, seconds: "3600", tier: Tier::Basic, hours: 12, unit_price: "0.000022222222", max_price: "0.079999999" },
            // Exactly 10 hours: no discount (the guide says more than 10).
            Case { base: "0.1", strategy: Strategy::MarketBalance, signals: NEUTRAL, now_ms: LA_NOON_MS, model: None, seconds: "1", tier: Tier::Basic, hours: 10, unit_price: "0.000027777778", max_price: "0.000027778" },
            // Tiers on a 0.05/h base: premium x3 = 41_666_667, enterprise x5 = 69_444_445 pico/s.
            Case { base: "0.05", strategy: Strategy::MarketBalance, signals: NEUTRAL, now_ms: LA_NOON_MS, model: None, seconds: "3600", tier: Tier::Premium, hours: 0, unit_price: "0.000041666667", max_price: "0.150000001" },
            Case { base: "0.05", strategy: Strategy::MarketBalance, signals: NEUTRAL, now_ms: LA_NOON_MS, model: None, seconds: "3600", tier: Tier::Enterprise, hours: 0, unit_price: "0.000069444445", max_price: "0.250000002" },
            // Dynamic at 90% utilization: x1.5 on 0.1/h.
            Case { base: "0.1", strategy: Strategy::Dynamic, signals: MarketSignals { region_demand_bps: 0, listing_utilization_bps: 9_000 }, now_ms: LA_NOON_MS, model: None, seconds: "3600", tier: Tier::Basic, hours: 0, unit_price: "0.000041666667", max_price: "0.150000001" },
            // Utilization guard on an idle listing: x0.7 of 27_777_778 = 19_444_444.6 -> 19_444_445.
            Case { base: "0.1", strategy: Strategy::UtilizationGuard, signals: MarketSignals { region_demand_bps: 10_000, listing_utilization_bps: 0 }, now_ms: LA_NOON_MS, model: None, seconds: "3600", tier: Tier::Basic, hours: 0, unit_price: "0.000019444445", max_price: "0.070000002" },
            // Market balance in a saturated region on codellama: 2.5 x 1.2 = 3 per unit.
            Case { base: "0.05", strategy: Strategy::MarketBalance, signals: MarketSignals { region_demand_bps: 10_000, listing_utilization_bps: 0 }, now_ms: LA_NOON_MS, model: Some("codellama"), seconds: "2", tier: Tier::Basic, hours: 0, unit_price: "3", max_price: "6" },
            // All at once: stable-diffusion 5.0 x peak 1.5 x enterprise 5 x bulk 0.8 = 30 per unit.
            Case { base: "0.05", strategy: Strategy::PeakMaximizer, signals: NEUTRAL, now_ms: LA_NOON_MS, model: Some("stable-diffusion"), seconds: "0.5", tier: Tier::Enterprise, hours: 11, unit_price: "30", max_price: "15" },
            // A listing priced above the card wins: 36000/h = 10 per second > llama3.2's 2.
            Case { base: "36000", strategy: Strategy::MarketBalance, signals: NEUTRAL, now_ms: LA_NOON_MS, model: Some("llama3.2"), seconds: "1", tier: Tier::Basic, hours: 0, unit_price: "10", max_price: "10" },
        ];
        for (i, c) in cases.iter().enumerate() {
            let terms = listing(c.base, c.strategy);
            let req = QuoteRequest { model: c.model.map(|m| ModelName::parse(m).unwrap()), units: GpuMillis::parse(c.seconds).unwrap(), tier: c.tier, duration_hours: c.hours, batch_size: 0 };
            let q = quote(&card, &terms, c.signals, c.now_ms, &req, None).unwrap();
            assert_eq!(q.unit_price, rate(c.unit_price), "case {i}: unit price");
            assert_eq!(q.max_price, Amount::parse(c.max_price).unwrap(), "case {i}: max price");
            assert_eq!(q.max_price, q.unit_price.price(req.units).unwrap(), "case {i}: price = units x rate");
        }
    }

    #[test]
    fn the_combined_multiplier_is_clamped() {
        let mut terms = listing("1", Strategy::Dynamic);
        terms.params.tier_bps = [10_000, 30_000, TIER_BPS_MAX];
        terms.params.max_multiplier_bps = DYNAMIC_MAX_MULTIPLIER_BPS_MAX;
        let signals = MarketSignals { region_demand_bps: 0, listing_utilization_bps: 10_000 };
        let mut req = request(None, "1");
        req.tier = Tier::Enterprise;
        // 3.0 x 10.0 = 30 -> clamped to 15.
        let q = quote(&RateCard::default(), &terms, signals, LA_NOON_MS, &req, None).unwrap();
        assert!(q.breakdown.clamped);
        assert_eq!(q.breakdown.combined_bps, COMBINED_BPS_MAX);
        assert_eq!(q.unit_price, terms.base.scale_bps(COMBINED_BPS_MAX).unwrap());
    }

    #[test]
    fn contracts_fix_the_rate_while_valid() {
        let contract = Contract { fixed_rate: per_hour("0.08"), valid_from_ms: LA_3AM_MS, valid_until_ms: LA_NOON_MS };
        let terms = listing("0.1", Strategy::PeakMaximizer);
        let q = quote(&seed_card(), &terms, NEUTRAL, LA_3AM_MS, &request(None, "3600"), Some(&contract)).unwrap();
        assert_eq!(q.unit_price, per_hour("0.08"));
        assert_eq!(q.breakdown.base_source, BaseSource::Contract);
        // 0.08/h = 22_222_222.2 -> 22_222_222 pico/s; an hour: 79_999_999.2 -> 79_999_999 nano.
        assert_eq!(q.max_price, Amount::parse("0.079999999").unwrap());
        assert_eq!(quote(&seed_card(), &terms, NEUTRAL, LA_NOON_MS, &request(None, "1"), Some(&contract)), Err(PricingError::ContractNotValid));
    }

    #[test]
    fn bad_requests_and_parameters_are_refused() {
        let card = seed_card();
        let terms = listing("0.1", Strategy::MarketBalance);
        assert_eq!(quote(&card, &terms, NEUTRAL, LA_NOON_MS, &request(None, "0"), None), Err(PricingError::ZeroUnits));
        assert_eq!(quote(&card, &terms, NEUTRAL, LA_NOON_MS, &request(None, "604800.001"), None), Err(PricingError::TooManyUnits));
        assert!(matches!(quote(&card, &terms, NEUTRAL, LA_NOON_MS, &request(Some("gpt-9"), "1"), None), Err(PricingError::UnknownModel(_))));
        let mut long = request(None, "1");
        long.duration_hours = DURATION_HOURS_MAX + 1;
        assert_eq!(quote(&card, &terms, NEUTRAL, LA_NOON_MS, &long, None), Err(PricingError::DurationTooLong));
        let mut bad = terms.clone();
        bad.params.bulk_discount_bps = 1_000;
        assert!(matches!(quote(&card, &bad, NEUTRAL, LA_NOON_MS, &request(None, "1"), None), Err(PricingError::Parameter { name: "bulk_discount_bps", .. })));
        let peak = listing("0.1", Strategy::PeakMaximizer);
        assert_eq!(quote(&card, &peak, NEUTRAL, i64::MAX, &request(None, "1"), None), Err(PricingError::Time(i64::MAX)));
    }

    fn prices(entries: &[(&str, &str)]) -> ModelPrices {
        let map: BTreeMap<ModelName, Amount> = entries.iter().map(|(m, p)| (ModelName::parse(m).unwrap(), Amount::parse(p).unwrap())).collect();
        ModelPrices::try_from(map).unwrap()
    }

    #[test]
    fn a_listing_prices_a_model_off_the_card_and_above_it() {
        let card = seed_card();
        let mut terms = listing("0.05", Strategy::MarketBalance);
        terms.model_prices = prices(&[("custom-medical-llm", "0.2"), ("llama3.2", "36000"), ("codellama", "0.36")]);
        // The guide's premium_rate=0.2 per GPU-hour: 55_555_556 pico/s, x1 in a neutral market;
        // the listing's base (0.05) does not apply to this model.
        let q = quote(&card, &terms, NEUTRAL, LA_NOON_MS, &request(Some("custom-medical-llm"), "3600"), None).unwrap();
        assert_eq!((q.unit_price, q.breakdown.base_source), (per_hour("0.2"), BaseSource::ModelPrice));
        assert_eq!((q.breakdown.card_rate, q.breakdown.model_rate, q.breakdown.base_rate), (None, Some(per_hour("0.2")), per_hour("0.2")));
        assert_eq!(q.max_price, Amount::parse("0.200000002").unwrap(), "55_555_556 pico x 3600 s");
        // On the card, priced above it: the listing's price (10 per second > 2).
        let q = quote(&card, &terms, NEUTRAL, LA_NOON_MS, &request(Some("llama3.2"), "1"), None).unwrap();
        assert_eq!((q.unit_price, q.breakdown.base_source, q.breakdown.card_rate), (rate("10"), BaseSource::ModelPrice, Some(rate("2"))));
        // On the card, priced below it: the card is the floor.
        let q = quote(&card, &terms, NEUTRAL, LA_NOON_MS, &request(Some("codellama"), "1"), None).unwrap();
        assert_eq!((q.unit_price, q.breakdown.base_source, q.breakdown.model_rate), (rate("2.5"), BaseSource::RateCard, Some(rate("0.0001"))));
        // A model the listing does not price and the card does not list has no price.
        assert_eq!(quote(&card, &terms, NEUTRAL, LA_NOON_MS, &request(Some("other-llm"), "1"), None), Err(PricingError::UnknownModel(ModelName::parse("other-llm").unwrap())));
        // Without the listing's price the premium model is unknown, as before.
        assert!(matches!(quote(&card, &listing("0.05", Strategy::MarketBalance), NEUTRAL, LA_NOON_MS, &request(Some("custom-medical-llm"), "1"), None), Err(PricingError::UnknownModel(_))));
        // Multipliers apply to the model's price as to any base: premium tier x3.
        let mut req = request(Some("custom-medical-llm"), "1");
        req.tier = Tier::Premium;
        // 55_555_556 pico/s x 3, exactly (the multiplier applies to the per-second rate).
        assert_eq!(quote(&card, &terms, NEUTRAL, LA_NOON_MS, &req, None).unwrap().unit_price, rate("0.000166666668"));
        // A contract's fixed rate still replaces everything, and says what the listing asks.
        let contract = Contract { fixed_rate: per_hour("0.08"), valid_from_ms: 0, valid_until_ms: i64::MAX };
        let q = quote(&card, &terms, NEUTRAL, LA_NOON_MS, &request(Some("custom-medical-llm"), "1"), Some(&contract)).unwrap();
        assert_eq!((q.unit_price, q.breakdown.base_source, q.breakdown.model_rate), (per_hour("0.08"), BaseSource::Contract, Some(per_hour("0.2"))));
    }

    #[test]
    fn model_prices_are_bounded_and_merge_like_a_json_merge_patch() {
        let name = |i: usize| ModelName::parse(&format!("model-{i}")).unwrap();
        let full: BTreeMap<ModelName, Amount> = (0..LISTING_MODEL_PRICES_MAX).map(|i| (name(i), Amount::parse("1").unwrap())).collect();
        let full = ModelPrices::try_from(full).unwrap();
        let mut over: BTreeMap<ModelName, Amount> = full.clone().into();
        over.insert(name(99), Amount::parse("1").unwrap());
        assert!(matches!(ModelPrices::try_from(over), Err(PricingError::ModelPrices(_))));
        for bad in ["0", "1000000.000000001"] {
            let map = BTreeMap::from([(name(0), Amount::parse(bad).unwrap())]);
            assert!(matches!(ModelPrices::try_from(map), Err(PricingError::ModelPrices(_))), "{bad}");
        }
        assert!(ModelPrices::try_from(BTreeMap::from([(name(0), PRICE_PER_HOUR_MAX)])).is_ok());
        // JSON: names are parsed, prices are decimal strings, null removes in a patch.
        assert!(serde_json::from_str::<ModelPrices>(r#"{"Bad Name": "1"}"#).is_err());
        assert!(serde_json::from_str::<ModelPrices>(r#"{"m": 1}"#).is_err());
        assert!(serde_json::from_str::<ModelPrices>(r#"{"m": "-1"}"#).is_err());
        assert!(serde_json::from_str::<ModelPricesPatch>(r#"{"m": "0"}"#).is_err());
        let patch: ModelPricesPatch = serde_json::from_str(r#"{"model-0": null, "model-99": "0.2"}"#).unwrap();
        let merged = full.merged(&patch).unwrap();
        assert_eq!((merged.len(), merged.get(&name(0)), merged.get(&name(99))), (LISTING_MODEL_PRICES_MAX, None, Some(Amount::parse("0.2").unwrap())));
        let grow: ModelPricesPatch = serde_json::from_str(r#"{"model-98": "0.2"}"#).unwrap();
        assert!(matches!(merged.merged(&grow), Err(PricingError::ModelPrices(_))), "a 17th model");
        assert_eq!(serde_json::to_string(&prices(&[("m", "0.2")])).unwrap(), r#"{"m":"0.2"}"#);
        let too_many = format!("{{{}}}", (0..=LISTING_MODEL_PRICES_MAX).map(|i| format!("\"m{i}\": null")).collect::<Vec<_>>().join(","));
        assert!(serde_json::from_str::<ModelPricesPatch>(&too_many).is_err());
    }

    #[test]
    fn strategies_parse_by_their_guide_names() {
        for s in Strategy::ALL {
            assert_eq!(Strategy::parse(s.name()).unwrap(), s);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{}\"", s.name()));
        }
        assert!(Strategy::parse("Market Balance").is_err());
        assert_eq!(Tier::parse("premium").unwrap(), Tier::Premium);
        assert!(Tier::parse("gold").is_err());
    }

    #[test]
    fn rate_cards_parse_from_toml_and_refuse_nonsense() {
        let card = RateCard::from_toml("[models]\n\"llama3.2\" = \"2.0\"\n\"llama3.2:1b\" = \"0.5\"\n").unwrap();
        assert_eq!(card.rate(&ModelName::parse("llama3.2:1b").unwrap()), Some(rate("0.5")));
        assert!(RateCard::from_toml("[models]\n\"llama3.2\" = 2.0\n").is_err());
        assert!(RateCard::from_toml("[models]\n\"Bad Name\" = \"1\"\n").is_err());
        assert!(RateCard::from_toml("[models]\nfree = \"0\"\n").is_err());
    }

    proptest::proptest! {
        #[test]
        fn quotes_are_deterministic_and_bounded(
            base_nano_per_hour in 1u64..1_000_000_000_000,
            demand in 0u32..=10_000,
            utilization in 0u32..=10_000,
            now_ms in 1_600_000_000_000i64..2_000_000_000_000,
            strategy in 0usize..4,
            tier in 0usize..3,
            hours in 0u32..100,
            ms in 1u64..QUOTE_UNITS_MS_MAX,
        ) {
            let terms = ListingTerms { base: Rate::per_hour(Amount::from_raw(base_nano_per_hour)), strategy: Strategy::ALL[strategy], params: PricingParams::default(), time_zone: chrono_tz::Europe::Berlin, batch: None, model_prices: ModelPrices::default() };
            let req = QuoteRequest { model: None, units: GpuMillis::from_millis(ms), tier: [Tier::Basic, Tier::Premium, Tier::Enterprise][tier], duration_hours: hours, batch_size: 0 };
            let signals = MarketSignals { region_demand_bps: demand, listing_utilization_bps: utilization };
            let a = quote(&RateCard::default(), &terms, signals, now_ms, &req, None).unwrap();
            let b = quote(&RateCard::default(), &terms, signals, now_ms, &req, None).unwrap();
            proptest::prop_assert_eq!(a, b);
            let base = u128::from(terms.base.raw());
            let unit = u128::from(a.unit_price.raw());
            proptest::prop_assert!(unit * 10_000 + 10_000 >= base * u128::from(COMBINED_BPS_MIN));
            proptest::prop_assert!(unit * 10_000 <= base * u128::from(COMBINED_BPS_MAX) + 10_000);
            proptest::prop_assert_eq!(a.max_price, a.unit_price.price(req.units).unwrap());
        }
    }
}
