//! Quotes: the price of a request on a listing, signed by the marketplace so that a client can
//! submit it later without the server keeping it (a quote is stateless: its signature and expiry
//! are its proof, so nothing needs sweeping). Also the market view: demand and prices by region.

use crate::registry::{ListingFilter, ListingView};
use crate::{Market, MarketError};
use aitbc_core::jcs;
use aitbc_core::jobspec::JobKind;
use aitbc_core::money::{Amount, GpuMillis, Rate, BPS_ONE};
use aitbc_core::routing::Candidate;
use aitbc_core::pricing::{quote, Breakdown, MarketSignals, QuoteRequest, Tier};
use aitbc_core::signing::{KeySet, SignatureEnvelope};
use aitbc_core::values::{ListingId, ModelName, QuoteId, Region};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Regional demand is recomputed at most this often per process.
pub const DEMAND_CACHE_MS: i64 = 1_000;
/// Listings read to compute a region's demand or pick the best listing, at most.
pub const REGION_LISTINGS_MAX: usize = 100;

/// What a client asks a price for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct QuoteInput {
    #[serde(default)]
    pub model: Option<ModelName>,
    /// The most GPU-seconds the job may use, e.g. "2.5".
    pub units: GpuMillis,
    /// The market to quote in; this or `gpu_id` is required.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<aitbc_core::values::Region>))]
    pub region: Option<String>,
    /// The listing to quote on; this or `region` is required.
    #[serde(default)]
    pub gpu_id: Option<ListingId>,
    #[serde(default)]
    pub tier: Tier,
    /// The rental's length in hours, for the bulk discount.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(maximum = 8760))]
    pub duration_hours: u32,
    #[serde(default)]
    pub kind: Option<JobKind>,
    /// Jobs submitted together in one batch (`POST /v1/batches`), for the listing's batch
    /// discount; 0 for a single job.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(maximum = 100))]
    pub batch_size: u32,
}

impl QuoteInput {
    /// One GPU-second of `model` at the basic tier on any listing: a listing's current unit
    /// price (the market view, the explorer).
    pub fn one_second(model: ModelName) -> Self {
        QuoteInput { model: Some(model), units: GpuMillis::from_seconds(1), region: None, gpu_id: None, tier: Tier::Basic, duration_hours: 0, kind: None, batch_size: 0 }
    }
}

/// The priced terms a quote promises.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct QuoteTerms {
    pub quote_id: QuoteId,
    pub gpu_id: ListingId,
    pub region: Region,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelName>,
    pub units: GpuMillis,
    pub tier: Tier,
    pub duration_hours: u32,
    /// The batch this quote prices a job of (0: a single job); only a batch of this many
    /// jobs may use it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub batch_size: u32,
    /// AITBC per GPU-second.
    pub unit_price: Rate,
    /// What a job on this quote holds: `units x unit_price`.
    pub max_price: Amount,
    pub breakdown: Breakdown,
    pub expires_at_ms: i64,
}

/// A quote with the marketplace's signature over its RFC 8785 form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SignedQuote {
    pub terms: QuoteTerms,
    pub signature: SignatureEnvelope,
}

/// Listings as quotes see them, per process, for at most [`DEMAND_CACHE_MS`]: pricing and
/// matching may lag a second behind the store; claims, completions and money never read it.
#[derive(Default)]
pub(crate) struct DemandCache {
    regions: Mutex<HashMap<Region, (Arc<Vec<ListingView>>, i64)>>,
    listings: Mutex<HashMap<ListingId, (ListingView, i64)>>,
}

/// Cached regions and listings per process, at most (the maps are cleared when full).
pub const VIEW_CACHE_ENTRIES_MAX: usize = 10_000;

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn canonical(terms: &QuoteTerms) -> Vec<u8> {
    jcs::canonicalize(&serde_json::to_value(terms).expect("serializes")).expect("quote terms hold no floats")
}

impl Market {
    /// Utilization of a listing: active jobs over its capacity, in basis points.
    pub fn utilization_bps(view: &ListingView) -> u32 {
        let capacity = i64::from(view.listing.max_concurrent_jobs.max(1));
        (view.active_jobs.clamp(0, capacity) * i64::from(BPS_ONE) / capacity) as u32
    }

    /// A region's listings (one page), cached briefly.
    pub async fn region_views(&self, region: &Region) -> Result<Arc<Vec<ListingView>>, MarketError> {
        let now = self.now_ms();
        if let Some((views, at)) = self.caches.demand.regions.lock().expect("view cache").get(region) {
            if now - at < DEMAND_CACHE_MS {
                return Ok(views.clone());
            }
        }
        let filter = ListingFilter { region: Some(region.to_string()), limit: REGION_LISTINGS_MAX, ..Default::default() };
        let views = Arc::new(self.list_listings(filter).await?.0);
        let mut cache = self.caches.demand.regions.lock().expect("view cache");
        if cache.len() >= VIEW_CACHE_ENTRIES_MAX {
            cache.clear();
        }
        cache.insert(region.clone(), (views.clone(), now));
        Ok(views)
    }

    /// Forgets what this process cached of a listing and its region (it just changed here).
    pub(crate) fn forget_listing(&self, gpu_id: &ListingId, region: &Region) {
        self.caches.demand.listings.lock().expect("view cache").remove(gpu_id);
        self.caches.demand.regions.lock().expect("view cache").remove(region);
    }

    /// One listing as quotes see it, cached briefly.
    pub async fn listing_view_cached(&self, gpu_id: &ListingId) -> Result<ListingView, MarketError> {
        let now = self.now_ms();
        if let Some((view, at)) = self.caches.demand.listings.lock().expect("view cache").get(gpu_id) {
            if now - at < DEMAND_CACHE_MS {
                return Ok(view.clone());
            }
        }
        let view = self.listing_view(&self.listing_item(gpu_id).await?)?;
        let mut cache = self.caches.demand.listings.lock().expect("view cache");
        if cache.len() >= VIEW_CACHE_ENTRIES_MAX {
            cache.clear();
        }
        cache.insert(gpu_id.clone(), (view.clone(), now));
        Ok(view)
    }

    /// Demand in a region: active jobs over capacity of its listings (cached briefly).
    pub async fn region_demand_bps(&self, region: &Region) -> Result<u32, MarketError> {
        let views = self.region_views(region).await?;
        let (active, capacity) = views.iter().fold((0i64, 0i64), |(a, c), v| {
            let cap = i64::from(v.listing.max_concurrent_jobs);
            (a + v.active_jobs.clamp(0, cap), c + cap)
        });
        Ok(if capacity == 0 { 0 } else { (active * i64::from(BPS_ONE) / capacity) as u32 })
    }

    /// The models that available listings have loaded, across every region, with how many
    /// listings serve each (the OpenAI API's model list). Reads the per-region listing cache.
    pub async fn served_models(&self) -> Result<Vec<(ModelName, usize)>, MarketError> {
        let mut served: std::collections::BTreeMap<ModelName, usize> = std::collections::BTreeMap::new();
        let regions: Vec<Region> = self.config.regions.keys().cloned().collect();
        for region in regions {
            for view in self.region_views(&region).await?.iter().filter(|v| self.is_available(v)) {
                for model in &view.loaded_models {
                    *served.entry(model.clone()).or_default() += 1;
                }
            }
        }
        Ok(served.into_iter().collect())
    }

    /// Prices `input` on one listing.
    ///
    /// A listing serves a model it registered (rate-card pricing of any job) or one its worker
    /// has loaded (text generation), and prices a model on the rate card or in its own
    /// `model_prices`.
    pub async fn quote_on(&self, view: &ListingView, input: &QuoteInput) -> Result<SignedQuote, MarketError> {
        self.quote_on_with(view, input, None).await
    }

    /// [`Market::quote_on`] at a fixed-rate contract's rate, when one applies.
    pub async fn quote_on_with(&self, view: &ListingView, input: &QuoteInput, contract: Option<&aitbc_core::pricing::Contract>) -> Result<SignedQuote, MarketError> {
        let listing = &view.listing;
        if let Some(model) = &input.model {
            if !serves(view, model) {
                return Err(MarketError::invalid("model", format!("GPU listing {} does not serve {model}", listing.gpu_id)));
            }
            if !self.prices(view, model) {
                return Err(MarketError::invalid("model", format!("{model} is not on the rate card and GPU listing {} sets no price for it", listing.gpu_id)));
            }
        }
        if let Some(kind) = input.kind {
            if !view.runs(kind, input.model.as_ref()) {
                return Err(MarketError::invalid("kind", format!("GPU listing {} does not run {}", listing.gpu_id, kind.name())));
            }
        }
        let signals = MarketSignals {
            region_demand_bps: self.region_demand_bps(&listing.region).await?,
            listing_utilization_bps: Self::utilization_bps(view),
        };
        let now = self.now_ms();
        if input.batch_size > aitbc_core::pricing::BATCH_JOBS_MAX {
            return Err(MarketError::invalid("batch_size", format!("at most {}", aitbc_core::pricing::BATCH_JOBS_MAX)));
        }
        let request = QuoteRequest { model: input.model.clone(), units: input.units, tier: input.tier, duration_hours: input.duration_hours, batch_size: input.batch_size };
        let priced = quote(&self.config.rate_card, &listing.terms(self), signals, now, &request, contract)
            .map_err(|e| MarketError::invalid("units", e.to_string()))?;
        let terms = QuoteTerms {
            quote_id: QuoteId::generate(),
            gpu_id: listing.gpu_id.clone(),
            region: listing.region.clone(),
            model: input.model.clone(),
            units: input.units,
            tier: input.tier,
            duration_hours: input.duration_hours,
            batch_size: input.batch_size,
            unit_price: priced.unit_price,
            max_price: priced.max_price,
            breakdown: priced.breakdown,
            expires_at_ms: now + i64::from(self.config.quote_ttl_s) * 1_000,
        };
        let signature = self.signing_key.sign(&canonical(&terms));
        Ok(SignedQuote { terms, signature })
    }

    /// The best quote for `input`: on the named listing, or the available listing of the
    /// region that serves the model and kind with the lowest [`routing_rank`] (its unit price
    /// weighted by its reputation; ties: the least busy, then the better reputation). A busy
    /// listing still qualifies: jobs wait in its queue. When that listing has a load-balancing
    /// policy, its provider's policy picks among its listings that quote no more
    /// (`aitbc_core::routing`).
    pub async fn quote(&self, input: &QuoteInput) -> Result<SignedQuote, MarketError> {
        self.quote_with_view(input).await.map(|(quote, _)| quote)
    }

    /// [`Market::quote`], with the listing it priced.
    pub async fn quote_with_view(&self, input: &QuoteInput) -> Result<(SignedQuote, ListingView), MarketError> {
        // A model off the rate card is priced only by listings that set a price for it (and
        // whose worker has loaded it): routing looks for those below.
        if let Some(gpu_id) = &input.gpu_id {
            let view = self.listing_view_cached(gpu_id).await?;
            let quote = self.quote_on(&view, input).await?;
            return Ok((quote, view));
        }
        let Some(region) = &input.region else {
            return Err(MarketError::invalid("region", "give region or gpu_id"));
        };
        let (region, _) = self.config.region(region)?;
        let views = self.region_views(&region).await?;
        let runs = |v: &ListingView| {
            input.kind.is_none_or(|k| v.runs(k, input.model.as_ref())) && input.model.as_ref().is_none_or(|m| serves(v, m) && self.prices(v, m))
        };
        // A listing whose queue is full (as last seen) cannot take the job: route around it.
        let fits = |v: &&ListingView| self.is_available(v) && runs(v) && (!v.room_counted || v.queue_room > 0);
        let mut quoted: Vec<(SignedQuote, (u128, u32, std::cmp::Reverse<u32>), &ListingView)> = Vec::new();
        let mut best: Option<usize> = None;
        for view in views.iter().filter(fits) {
            let q = self.quote_on(view, input).await?;
            let score = view.reputation.score_bps;
            let rank = (routing_rank(q.terms.unit_price, score), Self::utilization_bps(view), std::cmp::Reverse(score));
            let better = best.is_none_or(|b| rank < quoted[b].1);
            quoted.push((q, rank, view));
            if better {
                best = Some(quoted.len() - 1);
            }
        }
        let best = best.map(|b| balanced(&quoted, b));
        match best.map(|b| quoted.swap_remove(b)) {
            Some((q, _, v)) => Ok((q, v.clone())),
            // A model no listing of the region has loaded is a request nobody can serve, not a
            // moment without capacity: the client should ask for another model or region.
            // So is a model off the rate card that no listing of the region prices and serves.
            None if (input.kind == Some(JobKind::TextGeneration) || input.model.as_ref().is_some_and(|m| self.config.rate_card.rate(m).is_none()))
                && !views.iter().any(runs) =>
            {
                let model = input.model.as_ref().map_or_else(String::new, ModelName::to_string);
                Err(MarketError::invalid("model", format!("no GPU listing in {region} serves {model} (the rate card does not list it and no listing there prices it, or none has it loaded)")))
            }
            None => Err(MarketError::NoCapacity(format!("no available GPU listing in {region} fits"))),
        }
    }

    /// Checks a quote's signature (the marketplace's own key) and expiry.
    pub fn check_quote(&self, quote: &SignedQuote) -> Result<(), MarketError> {
        let mut keys = KeySet::new();
        keys.insert(&self.signing_key.public()).map_err(|e| MarketError::Internal(e.to_string()))?;
        let key = keys.get(&quote.signature.key_id).ok_or_else(|| MarketError::invalid("quote", "not signed by this marketplace"))?;
        let sig = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &quote.signature.sig)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
            .ok_or_else(|| MarketError::invalid("quote", "signature is not base64 of 64 bytes"))?;
        key.verify_strict(&canonical(&quote.terms), &ed25519_dalek::Signature::from_bytes(&sig))
            .map_err(|_| MarketError::invalid("quote", "signature does not verify"))?;
        if self.now_ms() >= quote.terms.expires_at_ms {
            return Err(MarketError::invalid("quote", "expired; ask for a new quote"));
        }
        Ok(())
    }
}

/// Demand and prices in one region (the market view).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegionStats {
    pub region: Region,
    pub listings: usize,
    pub online: usize,
    pub gpus: u64,
    /// Active jobs over capacity, basis points.
    pub demand_bps: u32,
    /// Per model: the cheapest and dearest current unit price (AITBC per GPU-second) among
    /// online listings serving it, for one GPU-second at the basic tier.
    pub models: std::collections::BTreeMap<String, (Rate, Rate)>,
}

impl Market {
    /// Market statistics for one region or all configured regions.
    pub async fn market_stats(&self, region: Option<&str>) -> Result<Vec<RegionStats>, MarketError> {
        let regions: Vec<Region> = match region {
            Some(name) => vec![self.config.region(name)?.0],
            None => self.config.regions.keys().cloned().collect(),
        };
        let mut out = Vec::with_capacity(regions.len());
        for region in regions {
            let filter = ListingFilter { region: Some(region.to_string()), limit: REGION_LISTINGS_MAX, ..Default::default() };
            let (views, _) = self.list_listings(filter).await?;
            let mut stats = RegionStats {
                region: region.clone(),
                listings: views.len(),
                online: views.iter().filter(|v| v.online).count(),
                gpus: views.iter().map(|v| u64::from(v.listing.count)).sum(),
                demand_bps: self.region_demand_bps(&region).await?,
                models: Default::default(),
            };
            for view in views.iter().filter(|v| v.online) {
                // Its registered models, and the models it prices itself that its worker serves.
                let priced = view.listing.model_prices.iter().map(|(m, _)| m).filter(|m| !view.listing.serves_model(m) && serves(view, m));
                for model in view.listing.models.iter().chain(priced) {
                    let input = QuoteInput::one_second(model.clone());
                    let price = self.quote_on(view, &input).await?.terms.unit_price;
                    let entry = stats.models.entry(model.to_string()).or_insert((price, price));
                    entry.0 = entry.0.min(price);
                    entry.1 = entry.1.max(price);
                }
            }
            out.push(stats);
        }
        Ok(out)
    }
}

/// How much reputation weighs in routing: a listing with score 0 competes as if its unit price
/// were this much higher (in basis points of the price) than a listing with a perfect score.
pub const ROUTING_REPUTATION_WEIGHT_BPS: u128 = 2_000;

/// The key routing minimizes: `unit_price x (1 + 0.2 x (1 - score))`, in pico-AITBC per
/// GPU-second times 1e8 (exact: no rounding between candidates). The client still pays the
/// chosen listing's own unit price; the weight only decides which listing that is.
pub fn routing_rank(unit_price: Rate, score_bps: u32) -> u128 {
    let shortfall = u128::from(BPS_ONE.saturating_sub(score_bps.min(BPS_ONE)));
    u128::from(unit_price.raw()) * (u128::from(BPS_ONE) * u128::from(BPS_ONE) + ROUTING_REPUTATION_WEIGHT_BPS * shortfall)
}

/// The listing a job routed to `quoted[routed]` goes to under that listing's load-balancing
/// policy (`aitbc_core::routing`): one of its provider's listings here that fit the job, have a
/// policy too and quote no higher a unit price; `routed` itself when it has no policy.
fn balanced(quoted: &[(SignedQuote, (u128, u32, std::cmp::Reverse<u32>), &ListingView)], routed: usize) -> usize {
    let (route_quote, _, route_view) = &quoted[routed];
    let Some(policy) = route_view.listing.load_balancing else { return routed };
    let mut group: Vec<usize> = (0..quoted.len())
        .filter(|&i| {
            let (q, _, v) = &quoted[i];
            v.listing.provider == route_view.listing.provider && v.listing.load_balancing.is_some() && q.terms.unit_price <= route_quote.terms.unit_price
        })
        .collect();
    group.sort_by(|&a, &b| quoted[a].2.listing.gpu_id.as_str().cmp(quoted[b].2.listing.gpu_id.as_str()));
    let candidates: Vec<Candidate> = group
        .iter()
        .map(|&i| {
            let (_, rank, v) = &quoted[i];
            let waiting = if v.room_counted { i64::from(v.listing.queue_config.max_queue_size) - v.queue_room } else { 0 };
            Candidate {
                capacity: v.listing.max_concurrent_jobs,
                running: u32::try_from(v.active_jobs.max(0)).unwrap_or(u32::MAX),
                waiting: u32::try_from(waiting.max(0)).unwrap_or(u32::MAX),
                rank: rank.0,
            }
        })
        .collect();
    // The routed listing is in its own group, so the group is never empty.
    policy.pick(&candidates).map_or(routed, |k| group[k])
}

impl Market {
    /// Whether a job for `model` has a price on a listing: the rate card lists it, or the
    /// listing prices it itself.
    pub fn prices(&self, view: &ListingView, model: &ModelName) -> bool {
        self.config.rate_card.rate(model).is_some() || view.listing.prices_model(model)
    }
}

/// Whether a listing serves `model`: it registered it, or its worker has loaded it.
fn serves(view: &ListingView, model: &ModelName) -> bool {
    view.listing.serves_model(model) || view.loaded_models.contains(model)
}
