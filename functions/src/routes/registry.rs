//! The registry: providers' receipt keys, GPU listings, worker heartbeats, status, earnings.

use super::{PageOut, PAGE_ITEMS_DEFAULT};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_path, ApiJson, ApiQuery, Auth, Public};
use crate::openapi::{AuthErrors, BadRequest, BodyErrors, Conflict, Forbidden, NotFound, RateLimited, StoreErrors};
use aitbc_core::signing::PublicKeyEntry;
use aitbc_core::values::{Address, ListingId, ModelName, Region, WorkerId};
use aitbc_market::reputation::ProviderReputation;
use aitbc_market::registry::{Earnings, Listing, ListingFilter, ListingPatch, ListingStatusView, ListingView, NewListing};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/providers/keys", post(register_key).get(my_keys))
        .route("/v1/providers/{address}/reputation", get(reputation))
        .route("/v1/listings", post(create).get(list))
        .route("/v1/listings/{gpu_id}", get(get_one).patch(update).delete(delete))
        .route("/v1/listings/{gpu_id}/status", get(status))
        .route("/v1/listings/{gpu_id}/earnings", get(earnings))
        .route("/v1/listings/{gpu_id}/heartbeat", post(heartbeat))
}

/// The group's operations in the OpenAPI document (`crate::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(register_key, my_keys, reputation, create, list, get_one, update, delete, status, earnings, heartbeat))]
pub(crate) struct Paths;

/// Register a public key for the provider's receipts.
#[utoipa::path(
    post,
    path = "/v1/providers/keys",
    request_body = PublicKeyEntry,
    responses((status = 201, description = "The key, registered", body = PublicKeyEntry), AuthErrors, BodyErrors, Forbidden, Conflict, StoreErrors),
    security(("bearer" = []))
)]
async fn register_key(State(s): State<AppState>, Auth(caller): Auth, ApiJson(entry): ApiJson<PublicKeyEntry>) -> ApiResult<(StatusCode, Json<PublicKeyEntry>)> {
    s.market.register_signing_key(&caller, entry.clone()).await?;
    Ok((StatusCode::CREATED, Json(entry)))
}

/// The caller's registered receipt keys.
#[derive(Serialize, utoipa::ToSchema)]
struct ProviderKeys {
    keys: Vec<PublicKeyEntry>,
}

/// The caller's registered receipt keys.
#[utoipa::path(
    get,
    path = "/v1/providers/keys",
    responses((status = 200, description = "The keys", body = ProviderKeys), AuthErrors, StoreErrors),
    security(("bearer" = []))
)]
async fn my_keys(State(s): State<AppState>, Auth(caller): Auth) -> ApiResult<Json<ProviderKeys>> {
    let keys = s.market.provider_keys(&caller.address).await?;
    Ok(Json(ProviderKeys { keys }))
}

/// List a GPU (provider).
#[utoipa::path(
    post,
    path = "/v1/listings",
    request_body = NewListing,
    responses((status = 201, description = "The listing", body = Listing), AuthErrors, BodyErrors, Forbidden, StoreErrors),
    security(("bearer" = []))
)]
async fn create(State(s): State<AppState>, Auth(caller): Auth, ApiJson(new): ApiJson<NewListing>) -> ApiResult<(StatusCode, Json<Listing>)> {
    Ok((StatusCode::CREATED, Json(s.market.create_listing(&caller, new).await?)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Listings of this region (this or `provider` is required).
    #[param(value_type = Option<Region>)]
    region: Option<String>,
    /// Listings of this provider's address.
    #[param(value_type = Option<Address>)]
    provider: Option<String>,
    /// Only listings serving this model.
    #[param(value_type = Option<ModelName>)]
    model: Option<String>,
    /// Only listings online, active and inside their schedule now.
    #[serde(default)]
    #[param(default = false)]
    available: Option<bool>,
    // Paging's fields inline: serde's flatten passes query values as strings, so a flattened
    // `limit=100` would not parse as a number.
    /// Items per page, at most the list's own maximum.
    #[param(default = json!(PAGE_ITEMS_DEFAULT))]
    limit: Option<usize>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
}

/// GPU listings of a region or a provider, with their live counters.
#[utoipa::path(
    get,
    path = "/v1/listings",
    params(ListQuery),
    responses((status = 200, description = "A page of listings", body = PageOut<ListingView>), BadRequest, StoreErrors)
)]
async fn list(State(s): State<AppState>, ApiQuery(q): ApiQuery<ListQuery>) -> ApiResult<Json<PageOut<ListingView>>> {
    let filter = ListingFilter {
        region: q.region,
        provider: q.provider.as_deref().map(Address::parse).transpose().map_err(|e| ApiError::invalid("provider", e.reason))?,
        model: q.model.as_deref().map(ModelName::parse).transpose().map_err(|e| ApiError::invalid("model", e.reason))?,
        available: q.available.unwrap_or(false),
        limit: q.limit.unwrap_or(PAGE_ITEMS_DEFAULT),
        cursor: q.cursor,
    };
    let (items, next_cursor) = s.market.list_listings(filter).await?;
    Ok(Json(PageOut { items, next_cursor }))
}

/// One GPU listing with its live counters.
#[utoipa::path(
    get,
    path = "/v1/listings/{gpu_id}",
    params(("gpu_id" = ListingId, Path, description = "The listing")),
    responses((status = 200, description = "The listing", body = ListingView), BadRequest, NotFound, StoreErrors)
)]
async fn get_one(State(s): State<AppState>, Path(gpu_id): Path<String>) -> ApiResult<Json<ListingView>> {
    let gpu_id = parse_path(&gpu_id, ListingId::parse)?;
    Ok(Json(s.market.listing_view(&s.market.listing_item(&gpu_id).await?)?))
}

/// Change a listing's strategy, price, status, parameters or schedule (its provider).
#[utoipa::path(
    patch,
    path = "/v1/listings/{gpu_id}",
    params(("gpu_id" = ListingId, Path, description = "The listing")),
    request_body = ListingPatch,
    responses((status = 200, description = "The listing, updated", body = Listing), AuthErrors, BodyErrors, Forbidden, NotFound, Conflict, StoreErrors),
    security(("bearer" = []))
)]
async fn update(State(s): State<AppState>, Auth(caller): Auth, Path(gpu_id): Path<String>, ApiJson(patch): ApiJson<ListingPatch>) -> ApiResult<Json<Listing>> {
    let gpu_id = parse_path(&gpu_id, ListingId::parse)?;
    Ok(Json(s.market.update_listing(&caller, &gpu_id, patch).await?))
}

/// Remove a listing without running jobs (its provider).
#[utoipa::path(
    delete,
    path = "/v1/listings/{gpu_id}",
    params(("gpu_id" = ListingId, Path, description = "The listing")),
    responses((status = 204, description = "Removed"), AuthErrors, BadRequest, Forbidden, NotFound, Conflict, StoreErrors),
    security(("bearer" = []))
)]
async fn delete(State(s): State<AppState>, Auth(caller): Auth, Path(gpu_id): Path<String>) -> ApiResult<StatusCode> {
    let gpu_id = parse_path(&gpu_id, ListingId::parse)?;
    s.market.delete_listing(&caller, &gpu_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A listing's live status: online, utilization, queue, realized rate.
#[utoipa::path(
    get,
    path = "/v1/listings/{gpu_id}/status",
    params(("gpu_id" = ListingId, Path, description = "The listing")),
    responses((status = 200, description = "The status", body = ListingStatusView), BadRequest, NotFound, StoreErrors)
)]
async fn status(State(s): State<AppState>, Path(gpu_id): Path<String>) -> ApiResult<Json<ListingStatusView>> {
    let gpu_id = parse_path(&gpu_id, ListingId::parse)?;
    Ok(Json(s.market.listing_status(&gpu_id).await?))
}

/// The earnings period when none is asked for.
const EARNINGS_PERIOD_DEFAULT: &str = "30d";

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct EarningsQuery {
    /// `<N>h` or `<N>d`, e.g. `24h` or `30d`, at most a year.
    /// (Its pattern, `registry::EARNINGS_PERIOD_PATTERN`, is added by `openapi::constrain`.)
    #[param(default = json!(EARNINGS_PERIOD_DEFAULT))]
    period: Option<String>,
}

/// A listing's earnings over a period: gross, fees, net; by client, model and hour (its provider).
#[utoipa::path(
    get,
    path = "/v1/listings/{gpu_id}/earnings",
    params(("gpu_id" = ListingId, Path, description = "The listing"), EarningsQuery),
    responses((status = 200, description = "The earnings", body = Earnings), AuthErrors, BadRequest, Forbidden, NotFound, StoreErrors),
    security(("bearer" = []))
)]
async fn earnings(State(s): State<AppState>, Auth(caller): Auth, Path(gpu_id): Path<String>, ApiQuery(q): ApiQuery<EarningsQuery>) -> ApiResult<Json<Earnings>> {
    let gpu_id = parse_path(&gpu_id, ListingId::parse)?;
    Ok(Json(s.market.listing_earnings(&caller, &gpu_id, q.period.as_deref().unwrap_or(EARNINGS_PERIOD_DEFAULT)).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct HeartbeatBody {
    worker_id: WorkerId,
    /// The models the worker has loaded and verified, which the listing then serves for
    /// `text_generation` jobs; absent leaves the last report as it was.
    #[serde(default)]
    models: Option<Vec<ModelName>>,
    /// What the worker measured since its previous report (GPU, memory, jobs), sent as often as
    /// the listing's monitoring says (`health_interval_s`); checked against its alert thresholds.
    #[serde(default)]
    health: Option<aitbc_core::health::HealthReport>,
}

/// What a heartbeat answers: the listing's liveness and the queue its workers poll.
#[derive(Serialize, utoipa::ToSchema)]
struct HeartbeatAck {
    gpu_id: ListingId,
    online: bool,
    active_jobs: i64,
    queue: String,
    /// Seconds between health reports the listing's provider asks for; absent: no monitoring.
    #[serde(skip_serializing_if = "Option::is_none")]
    health_interval_s: Option<u32>,
}

/// A worker's heartbeat for a listing: keeps it online (its provider).
#[utoipa::path(
    post,
    path = "/v1/listings/{gpu_id}/heartbeat",
    params(("gpu_id" = ListingId, Path, description = "The listing")),
    request_body = HeartbeatBody,
    responses((status = 200, description = "The listing's liveness", body = HeartbeatAck), AuthErrors, BodyErrors, Forbidden, NotFound, StoreErrors),
    security(("bearer" = []))
)]
async fn heartbeat(State(s): State<AppState>, Auth(caller): Auth, Path(gpu_id): Path<String>, ApiJson(body): ApiJson<HeartbeatBody>) -> ApiResult<Json<HeartbeatAck>> {
    let gpu_id = parse_path(&gpu_id, ListingId::parse)?;
    if let Some(report) = &body.health {
        // Checked before the heartbeat writes anything: bad input changes nothing.
        aitbc_market::Market::check_health(report)?;
    }
    let view = s.market.heartbeat(&caller, &gpu_id, &body.worker_id, body.models.as_deref()).await?;
    let health_interval_s = s.market.record_health(&caller, &gpu_id, &body.worker_id, body.health.as_ref()).await?;
    Ok(Json(HeartbeatAck { gpu_id, online: view.online, active_jobs: view.active_jobs, queue: view.listing.queue, health_interval_s }))
}

/// A provider's reputation: measured facts of its jobs and its clients' ratings, the score made
/// of them (formula in ARCHITECTURE.md), overall and per listing. Public.
#[utoipa::path(
    get,
    path = "/v1/providers/{address}/reputation",
    params(("address" = Address, Path, description = "The provider")),
    responses((status = 200, description = "The provider's reputation", body = ProviderReputation), BadRequest, NotFound, RateLimited, StoreErrors)
)]
async fn reputation(State(s): State<AppState>, _: Public, Path(address): Path<String>) -> ApiResult<Json<ProviderReputation>> {
    let address = parse_path(&address, Address::parse)?;
    Ok(Json(s.market.provider_reputation(&address).await?))
}
