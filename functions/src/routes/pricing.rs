//! Pricing: the rate card, quotes, and the market view (demand and prices by region and model);
//! and the API's OpenAPI document.

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery, Public};
use crate::openapi::{BadRequest, BodyErrors, NotFound, RateLimited, StoreErrors};
use aitbc_market::explorer::{Interval, MarketHistory, HISTORY_BUCKETS_DEFAULT};
use aitbc_core::money::Rate;
use aitbc_core::receipt::UnitType;
use aitbc_core::values::{ModelName, Region};
use aitbc_market::quotes::{QuoteInput, RegionStats, SignedQuote};
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::LazyLock;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/rate-card", get(rate_card))
        .route("/v1/quotes", post(quote))
        .route("/v1/market", get(market))
        .route("/v1/market/history", get(market_history))
        .route("/v1/openapi.json", get(openapi))
}

/// The group's operations in the OpenAPI document (`crate::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(rate_card, quote, market, market_history, openapi))]
pub(crate) struct Paths;

/// The rate card: the floor price per model.
#[derive(Serialize, utoipa::ToSchema)]
struct RateCardOut {
    models: Vec<CardRate>,
    /// The platform fee on each receipt's price, in basis points.
    fee_bps: u32,
    currency: &'static str,
}

#[derive(Serialize, utoipa::ToSchema)]
struct CardRate {
    model: ModelName,
    /// AITBC per unit.
    rate: Rate,
    unit_type: UnitType,
}

/// The rate card: each model's floor rate, the fee and the currency.
#[utoipa::path(get, path = "/v1/rate-card", responses((status = 200, description = "The rate card", body = RateCardOut)))]
async fn rate_card(State(s): State<AppState>) -> Json<RateCardOut> {
    let config = &s.market.config;
    let models = config.rate_card.models.iter().map(|(model, rate)| CardRate { model: model.clone(), rate: *rate, unit_type: UnitType::GpuSeconds }).collect();
    Json(RateCardOut { models, fee_bps: config.fee_bps, currency: "AITBC" })
}

/// A signed quote: the price of a request on the best (or the given) listing.
///
/// A quote is a read: it changes nothing (it is signed, not stored), so it needs no key.
#[utoipa::path(
    post,
    path = "/v1/quotes",
    request_body = QuoteInput,
    responses((status = 200, description = "The quote, signed, to submit with a job before it expires", body = SignedQuote), BodyErrors, NotFound, StoreErrors)
)]
async fn quote(State(s): State<AppState>, ApiJson(input): ApiJson<QuoteInput>) -> ApiResult<Json<SignedQuote>> {
    Ok(Json(s.market.quote(&input).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct MarketQuery {
    /// One region; every configured region when absent.
    #[param(value_type = Option<Region>)]
    region: Option<String>,
}

/// Demand and prices by region and model.
#[utoipa::path(
    get,
    path = "/v1/market",
    params(MarketQuery),
    responses((status = 200, description = "Each region's listings, demand and price range per model", body = Vec<RegionStats>), BadRequest, StoreErrors)
)]
async fn market(State(s): State<AppState>, ApiQuery(q): ApiQuery<MarketQuery>) -> ApiResult<Json<Vec<RegionStats>>> {
    Ok(Json(s.market.market_stats(q.region.as_deref()).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    /// One region; every region when absent.
    #[param(value_type = Option<Region>)]
    region: Option<String>,
    /// One model; every model when absent.
    #[param(value_type = Option<ModelName>)]
    model: Option<String>,
    /// Width of a bucket.
    #[param(default = "hour", inline)]
    interval: Option<Interval>,
    /// Buckets, the last one holding now: 1..=168.
    #[param(default = json!(HISTORY_BUCKETS_DEFAULT), minimum = 1, maximum = 168)]
    buckets: Option<u32>,
}

/// The market over time: per region and model, receipts, GPU-seconds, revenue, the mean unit
/// price and utilization in time buckets (public).
///
/// Computed from the receipts completed in the window (at most the newest 5,000: `truncated`
/// says when there were more); utilization is metered GPU time over the GPUs listed in the
/// region now.
#[utoipa::path(
    get,
    path = "/v1/market/history",
    params(HistoryQuery),
    responses((status = 200, description = "Series of time buckets", body = MarketHistory), BadRequest, RateLimited, StoreErrors)
)]
async fn market_history(State(s): State<AppState>, _: Public, ApiQuery(q): ApiQuery<HistoryQuery>) -> ApiResult<Json<MarketHistory>> {
    let model = q.model.as_deref().map(ModelName::parse).transpose().map_err(|e| ApiError::invalid("model", e.reason))?;
    let history = s.market.market_history(q.region.as_deref(), model.as_ref(), q.interval.unwrap_or(Interval::Hour), q.buckets.unwrap_or(HISTORY_BUCKETS_DEFAULT)).await?;
    Ok(Json(history))
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json", body = Object))
)]
async fn openapi() -> impl IntoResponse {
    // Built once per process: it is the same for every request.
    static DOCUMENT: LazyLock<String> = LazyLock::new(|| crate::openapi::document_json().to_string());
    ([(CONTENT_TYPE, "application/json")], DOCUMENT.as_str())
}
