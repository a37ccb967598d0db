//! The registry: providers' receipt keys, GPU listings, worker heartbeats, status, earnings.

use super::{PageOut, PAGE_ITEMS_DEFAULT};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_path, ApiJson, ApiQuery, Auth};
use aitbc_core::signing::PublicKeyEntry;
use aitbc_core::values::{Address, ListingId, ModelName, WorkerId};
use aitbc_market::registry::{ListingFilter, ListingPatch, NewListing};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/providers/keys", post(register_key).get(my_keys))
        .route("/v1/listings", post(create).get(list))
        .route("/v1/listings/{gpu_id}", get(get_one).patch(update).delete(delete))
        .route("/v1/listings/{gpu_id}/status", get(status))
        .route("/v1/listings/{gpu_id}/earnings", get(earnings))
        .route("/v1/listings/{gpu_id}/heartbeat", post(heartbeat))
}

async fn register_key(State(s): State<AppState>, Auth(caller): Auth, ApiJson(entry): ApiJson<PublicKeyEntry>) -> ApiResult<(StatusCode, Json<Value>)> {
    s.market.register_signing_key(&caller, entry.clone()).await?;
    Ok((StatusCode::CREATED, Json(serde_json::to_value(entry).expect("serializes"))))
}

async fn my_keys(State(s): State<AppState>, Auth(caller): Auth) -> ApiResult<Json<Value>> {
    let keys = s.market.provider_keys(&caller.address).await?;
    Ok(Json(json!({ "keys": keys })))
}

async fn create(State(s): State<AppState>, Auth(caller): Auth, ApiJson(new): ApiJson<NewListing>) -> ApiResult<(StatusCode, Json<Value>)> {
    let listing = s.market.create_listing(&caller, new).await?;
    Ok((StatusCode::CREATED, Json(serde_json::to_value(listing).expect("serializes"))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    region: Option<String>,
    provider: Option<String>,
    model: Option<String>,
    #[serde(default)]
    available: Option<bool>,
    // Paging's fields inline: serde's flatten passes query values as strings, so a flattened
    // `limit=100` would not parse as a number.
    limit: Option<usize>,
    cursor: Option<String>,
}

async fn list(State(s): State<AppState>, ApiQuery(q): ApiQuery<ListQuery>) -> ApiResult<Json<Value>> {
    let filter = ListingFilter {
        region: q.region,
        provider: q.provider.as_deref().map(Address::parse).transpose().map_err(|e| ApiError::invalid("provider", e.reason))?,
        model: q.model.as_deref().map(ModelName::parse).transpose().map_err(|e| ApiError::invalid("model", e.reason))?,
        available: q.available.unwrap_or(false),
        limit: q.limit.unwrap_or(PAGE_ITEMS_DEFAULT),
        cursor: q.cursor,
    };
    let (items, next_cursor) = s.market.list_listings(filter).await?;
    Ok(Json(serde_json::to_value(PageOut { items, next_cursor }).expect("serializes")))
}

async fn get_one(State(s): State<AppState>, Path(gpu_id): Path<String>) -> ApiResult<Json<Value>> {
    let gpu_id = parse_path(&gpu_id, ListingId::parse)?;
    let view = s.market.listing_view(&s.market.listing_item(&gpu_id).await?)?;
    Ok(Json(serde_json::to_value(view).expect("serializes")))
}

async fn update(State(s): State<AppState>, Auth(caller): Auth, Path(gpu_id): Path<String>, ApiJson(patch): ApiJson<ListingPatch>) -> ApiResult<Json<Value>> {
    let gpu_id = parse_path(&gpu_id, ListingId::parse)?;
    let listing = s.market.update_listing(&caller, &gpu_id, patch).await?;
    Ok(Json(serde_json::to_value(listing).expect("serializes")))
}

async fn delete(State(s): State<AppState>, Auth(caller): Auth, Path(gpu_id): Path<String>) -> ApiResult<StatusCode> {
    let gpu_id = parse_path(&gpu_id, ListingId::parse)?;
    s.market.delete_listing(&caller, &gpu_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn status(State(s): State<AppState>, Path(gpu_id): Path<String>) -> ApiResult<Json<Value>> {
    let gpu_id = parse_path(&gpu_id, ListingId::parse)?;
    let status = s.market.listing_status(&gpu_id).await?;
    Ok(Json(serde_json::to_value(status).expect("serializes")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EarningsQuery {
    period: Option<String>,
}

async fn earnings(State(s): State<AppState>, Auth(caller): Auth, Path(gpu_id): Path<String>, ApiQuery(q): ApiQuery<EarningsQuery>) -> ApiResult<Json<Value>> {
    let gpu_id = parse_path(&gpu_id, ListingId::parse)?;
    let earnings = s.market.listing_earnings(&caller, &gpu_id, q.period.as_deref().unwrap_or("30d")).await?;
    Ok(Json(serde_json::to_value(earnings).expect("serializes")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeartbeatBody {
    worker_id: WorkerId,
}

async fn heartbeat(State(s): State<AppState>, Auth(caller): Auth, Path(gpu_id): Path<String>, ApiJson(body): ApiJson<HeartbeatBody>) -> ApiResult<Json<Value>> {
    let gpu_id = parse_path(&gpu_id, ListingId::parse)?;
    let view = s.market.heartbeat(&caller, &gpu_id, &body.worker_id).await?;
    Ok(Json(json!({ "gpu_id": gpu_id, "online": view.online, "active_jobs": view.active_jobs, "queue": view.listing.queue })))
}
