//! Market intelligence on the pricing group: the public view per region and model, and
//! providers' signals (observations, pricing proposals: recorded, aggregated, never applied).

use crate::app::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiQuery, Auth, Public};
use crate::openapi::{AuthErrors, BadRequest, BodyErrors, Forbidden, NotFound, RateLimited, StoreErrors};
use aitbc_core::values::Region;
use aitbc_market::insight::{MarketIntelligence, NewSignal, SignalRecord, INTELLIGENCE_HOURS_DEFAULT};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/market/intelligence", get(intelligence)).route("/v1/market/signals", post(signal))
}

/// The operations in the OpenAPI document (merged into the pricing group's).
#[derive(utoipa::OpenApi)]
#[openapi(paths(intelligence, signal))]
pub(crate) struct Paths;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct IntelligenceQuery {
    /// One region; every configured region when absent.
    #[param(value_type = Option<Region>)]
    region: Option<String>,
    /// The window: the last 1..=168 hours, in hourly points.
    #[param(default = json!(INTELLIGENCE_HOURS_DEFAULT), minimum = 1, maximum = 168)]
    hours: Option<u32>,
}

/// Market intelligence (public): per region and model, demand, utilization, unit-price
/// percentiles and their trend over the window, from the receipts completed in it (the newest
/// 5,000); the measured metrics of providers who share them; providers' signals aggregated.
#[utoipa::path(
    get,
    path = "/v1/market/intelligence",
    params(IntelligenceQuery),
    responses((status = 200, description = "The view", body = MarketIntelligence), BadRequest, RateLimited, StoreErrors)
)]
async fn intelligence(State(s): State<AppState>, _: Public, ApiQuery(q): ApiQuery<IntelligenceQuery>) -> ApiResult<Json<MarketIntelligence>> {
    Ok(Json(s.market.market_intelligence(q.region.as_deref(), q.hours.unwrap_or(INTELLIGENCE_HOURS_DEFAULT)).await?))
}

/// Post a market signal: an observation, a pricing proposal, or both, for a region where the
/// provider lists a GPU (an active member of the sharing group). Replaces its previous signal of
/// each kind there; signals expire after 30 days and never change a price.
#[utoipa::path(
    post,
    path = "/v1/market/signals",
    request_body = NewSignal,
    responses((status = 201, description = "The signal, recorded", body = SignalRecord), AuthErrors, BodyErrors, Forbidden, NotFound, StoreErrors),
    security(("bearer" = []))
)]
async fn signal(State(s): State<AppState>, Auth(caller): Auth, ApiJson(new): ApiJson<NewSignal>) -> ApiResult<(StatusCode, Json<SignalRecord>)> {
    Ok((StatusCode::CREATED, Json(s.market.post_signal(&caller, new).await?)))
}
