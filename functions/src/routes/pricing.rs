//! Pricing: the rate card, quotes, and the market view (demand and prices by region and model).

use crate::app::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiQuery};
use aitbc_market::quotes::QuoteInput;
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/rate-card", get(rate_card)).route("/v1/quotes", post(quote)).route("/v1/market", get(market))
}

async fn rate_card(State(s): State<AppState>) -> Json<Value> {
    let models: Vec<Value> = s
        .market
        .config
        .rate_card
        .models
        .iter()
        .map(|(model, rate)| json!({ "model": model, "rate": rate, "unit_type": "gpu_seconds" }))
        .collect();
    Json(json!({ "models": models, "fee_bps": s.market.config.fee_bps, "currency": "AITBC" }))
}

/// A quote is a read: it changes nothing (it is signed, not stored), so it needs no key.
async fn quote(State(s): State<AppState>, ApiJson(input): ApiJson<QuoteInput>) -> ApiResult<Json<Value>> {
    let quote = s.market.quote(&input).await?;
    Ok(Json(serde_json::to_value(quote).expect("serializes")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MarketQuery {
    region: Option<String>,
}

async fn market(State(s): State<AppState>, ApiQuery(q): ApiQuery<MarketQuery>) -> ApiResult<Json<Value>> {
    let stats = s.market.market_stats(q.region.as_deref()).await?;
    Ok(Json(serde_json::to_value(stats).expect("serializes")))
}
