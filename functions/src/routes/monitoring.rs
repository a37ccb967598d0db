//! Provider insight on the registry group: a listing's monitoring and alerts, its analytics and
//! optimization suggestions, and a provider's market-intelligence sharing settings.

use crate::app::AppState;
use crate::error::ApiResult;
use crate::extract::{parse_path, ApiJson, ApiQuery, Auth};
use crate::openapi::{AuthErrors, BadRequest, BodyErrors, Forbidden, NotFound, StoreErrors};
use aitbc_core::health::MonitoringConfig;
use aitbc_core::values::{Address, ListingId};
use aitbc_market::insight::{ListingAlerts, ListingAnalytics, ListingSuggestions, Sharing, ALERTS_PAGE_MAX};
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/listings/{gpu_id}/monitoring", get(monitoring).put(set_monitoring))
        .route("/v1/listings/{gpu_id}/alerts", get(alerts))
        .route("/v1/listings/{gpu_id}/analytics", get(analytics))
        .route("/v1/listings/{gpu_id}/suggestions", get(suggestions))
        .route("/v1/providers/{address}/sharing", get(sharing).put(set_sharing))
}

/// The operations in the OpenAPI document (merged into the registry group's).
#[derive(utoipa::OpenApi)]
#[openapi(paths(monitoring, set_monitoring, alerts, analytics, suggestions, sharing, set_sharing))]
pub(crate) struct Paths;

/// Set a listing's health monitoring: how often its workers report, and the thresholds whose
/// crossing is an alert (its provider).
#[utoipa::path(
    put,
    path = "/v1/listings/{gpu_id}/monitoring",
    params(("gpu_id" = ListingId, Path, description = "The listing")),
    request_body = MonitoringConfig,
    responses((status = 200, description = "The monitoring, set", body = MonitoringConfig), AuthErrors, BodyErrors, Forbidden, NotFound, StoreErrors),
    security(("bearer" = []))
)]
async fn set_monitoring(State(s): State<AppState>, Auth(caller): Auth, Path(gpu_id): Path<String>, ApiJson(config): ApiJson<MonitoringConfig>) -> ApiResult<Json<MonitoringConfig>> {
    let gpu_id = parse_path(&gpu_id, ListingId::parse)?;
    Ok(Json(s.market.set_monitoring(&caller, &gpu_id, config).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct AlertsQuery {
    /// Alerts per page (1..=100).
    #[param(default = 50, minimum = 1, maximum = 100)]
    limit: Option<usize>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
}

/// A listing's monitoring, its worker's latest health report and its alerts, newest first
/// (its provider). Alerts expire after 7 days; one per metric per 5 minutes.
#[utoipa::path(
    get,
    path = "/v1/listings/{gpu_id}/alerts",
    params(("gpu_id" = ListingId, Path, description = "The listing"), AlertsQuery),
    responses((status = 200, description = "Health and alerts", body = ListingAlerts), AuthErrors, BadRequest, Forbidden, NotFound, StoreErrors),
    security(("bearer" = []))
)]
async fn alerts(State(s): State<AppState>, Auth(caller): Auth, Path(gpu_id): Path<String>, ApiQuery(q): ApiQuery<AlertsQuery>) -> ApiResult<Json<ListingAlerts>> {
    let gpu_id = parse_path(&gpu_id, ListingId::parse)?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=ALERTS_PAGE_MAX).contains(&limit) {
        return Err(crate::error::ApiError::invalid("limit", format!("must be 1..={ALERTS_PAGE_MAX}")));
    }
    Ok(Json(s.market.listing_alerts(&caller, &gpu_id, limit, q.cursor).await?))
}

/// A listing's monitoring (its provider): the same as in its alerts' answer.
#[utoipa::path(
    get,
    path = "/v1/listings/{gpu_id}/monitoring",
    params(("gpu_id" = ListingId, Path, description = "The listing")),
    responses((status = 200, description = "Health and alerts (the first page)", body = ListingAlerts), AuthErrors, BadRequest, Forbidden, NotFound, StoreErrors),
    security(("bearer" = []))
)]
async fn monitoring(State(s): State<AppState>, Auth(caller): Auth, Path(gpu_id): Path<String>) -> ApiResult<Json<ListingAlerts>> {
    let gpu_id = parse_path(&gpu_id, ListingId::parse)?;
    Ok(Json(s.market.listing_alerts(&caller, &gpu_id, 10, None).await?))
}

/// The analytics period when none is asked for.
const ANALYTICS_PERIOD_DEFAULT: &str = "30d";

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct AnalyticsQuery {
    /// `<N>h` or `<N>d`, e.g. `24h` or `30d`, at most a year (the earnings' pattern).
    #[param(default = json!(ANALYTICS_PERIOD_DEFAULT))]
    period: Option<String>,
}

/// A listing's analytics over a period (its provider): utilization, peak demand hours, models
/// by profit, and earnings by client, model and hour of day.
#[utoipa::path(
    get,
    path = "/v1/listings/{gpu_id}/analytics",
    params(("gpu_id" = ListingId, Path, description = "The listing"), AnalyticsQuery),
    responses((status = 200, description = "The analytics", body = ListingAnalytics), AuthErrors, BadRequest, Forbidden, NotFound, StoreErrors),
    security(("bearer" = []))
)]
async fn analytics(State(s): State<AppState>, Auth(caller): Auth, Path(gpu_id): Path<String>, ApiQuery(q): ApiQuery<AnalyticsQuery>) -> ApiResult<Json<ListingAnalytics>> {
    let gpu_id = parse_path(&gpu_id, ListingId::parse)?;
    Ok(Json(s.market.listing_analytics(&caller, &gpu_id, q.period.as_deref().unwrap_or(ANALYTICS_PERIOD_DEFAULT)).await?))
}

/// Optimization suggestions for a listing (its provider): rules over its measured data of the
/// last 7 days (price against the region's median, utilization, schedule gaps, failure rate),
/// each with its expected effect and steps. The rules are in ARCHITECTURE.md.
#[utoipa::path(
    get,
    path = "/v1/listings/{gpu_id}/suggestions",
    params(("gpu_id" = ListingId, Path, description = "The listing")),
    responses((status = 200, description = "The suggestions and their facts", body = ListingSuggestions), AuthErrors, BadRequest, Forbidden, NotFound, StoreErrors),
    security(("bearer" = []))
)]
async fn suggestions(State(s): State<AppState>, Auth(caller): Auth, Path(gpu_id): Path<String>) -> ApiResult<Json<ListingSuggestions>> {
    let gpu_id = parse_path(&gpu_id, ListingId::parse)?;
    Ok(Json(s.market.listing_suggestions(&caller, &gpu_id).await?))
}

/// Join (or leave) the market-intelligence group: share the provider's measured metrics in the
/// market view, and as an active contributor post signals (the provider itself).
#[utoipa::path(
    put,
    path = "/v1/providers/{address}/sharing",
    params(("address" = Address, Path, description = "The provider")),
    request_body = Sharing,
    responses((status = 200, description = "The settings", body = Sharing), AuthErrors, BodyErrors, Forbidden, NotFound, StoreErrors),
    security(("bearer" = []))
)]
async fn set_sharing(State(s): State<AppState>, Auth(caller): Auth, Path(address): Path<String>, ApiJson(sharing): ApiJson<Sharing>) -> ApiResult<Json<Sharing>> {
    let address = parse_path(&address, Address::parse)?;
    Ok(Json(s.market.set_sharing(&caller, &address, sharing).await?))
}

/// A provider's sharing settings (the provider itself).
#[utoipa::path(
    get,
    path = "/v1/providers/{address}/sharing",
    params(("address" = Address, Path, description = "The provider")),
    responses((status = 200, description = "The settings", body = Sharing), AuthErrors, BadRequest, Forbidden, NotFound, StoreErrors),
    security(("bearer" = []))
)]
async fn sharing(State(s): State<AppState>, Auth(caller): Auth, Path(address): Path<String>) -> ApiResult<Json<Sharing>> {
    let address = parse_path(&address, Address::parse)?;
    if caller.address != address && caller.role != aitbc_market::auth::Role::Admin {
        return Err(aitbc_market::MarketError::Forbidden("a provider reads only its own sharing".into()).into());
    }
    Ok(Json(s.market.sharing(&address).await?))
}
