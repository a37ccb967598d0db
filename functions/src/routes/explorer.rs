//! The explorer: its public reads (every recent receipt, one receipt with its job and
//! settlement, the GPU listings with current prices, an account's totals over time) and its web
//! pages (`explorer/` at the repository root, built into the binary). Served by the receipts
//! group's router, so the receipts Lambda serves them in a deployment and `aitbc up` locally.
//!
//! Reads take no key (receipts are public proofs; job specs and results are never shown) and are
//! rate limited per caller (`extract::Public`). Pages are static files under a strict
//! Content-Security-Policy: everything from this origin, nothing inline, nothing elsewhere.

use super::PageOut;
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_path, ApiQuery, Public};
use crate::openapi::{BadRequest, NotFound, RateLimited, StoreErrors};
use aitbc_core::receipt::Receipt;
use aitbc_core::values::{Address, ModelName, ReceiptId, Region};
use aitbc_market::explorer::{AccountSummary, GpuRow, Interval, ReceiptDetail, ReceiptFilter, EXPLORER_PAGE_DEFAULT, HISTORY_BUCKETS_DEFAULT};
use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/explorer/receipts", get(receipts))
        .route("/v1/explorer/receipts/{receipt_id}", get(receipt))
        .route("/v1/explorer/gpus", get(gpus))
        .route("/v1/explorer/accounts/{address}", get(account))
        .route("/explorer", get(explorer_root))
        .route("/explorer/", get(index))
        .route("/explorer/{file}", get(page))
}

/// The explorer's operations in the OpenAPI document (`crate::openapi`), in the receipts group.
#[derive(utoipa::OpenApi)]
#[openapi(paths(receipts, receipt, gpus, account, explorer_root, index, page))]
pub(crate) struct Paths;

/// The pages' Content-Security-Policy: this origin only, no inline script or style, no frames.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The explorer's files: name, content type, bytes (from `explorer/` at build time).
const ASSETS: [(&str, &str, &str); 9] = [
    ("index.html", "text/html; charset=utf-8", include_str!("../../../explorer/index.html")),
    ("style.css", "text/css; charset=utf-8", include_str!("../../../explorer/style.css")),
    ("app.js", "text/javascript; charset=utf-8", include_str!("../../../explorer/app.js")),
    ("api.js", "text/javascript; charset=utf-8", include_str!("../../../explorer/api.js")),
    ("ui.js", "text/javascript; charset=utf-8", include_str!("../../../explorer/ui.js")),
    ("views.js", "text/javascript; charset=utf-8", include_str!("../../../explorer/views.js")),
    ("jcs.js", "text/javascript; charset=utf-8", include_str!("../../../explorer/jcs.js")),
    ("verify.js", "text/javascript; charset=utf-8", include_str!("../../../explorer/verify.js")),
    ("chart.js", "text/javascript; charset=utf-8", include_str!("../../../explorer/chart.js")),
];

fn asset(name: &str) -> Option<(&'static str, &'static str)> {
    ASSETS.iter().find(|(n, ..)| *n == name).map(|(_, t, b)| (*t, *b))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ReceiptsQuery {
    /// Only this client's receipts.
    #[param(value_type = Option<Address>)]
    client: Option<String>,
    /// Only this provider's receipts.
    #[param(value_type = Option<Address>)]
    provider: Option<String>,
    /// Only receipts of this model.
    #[param(value_type = Option<ModelName>)]
    model: Option<String>,
    /// Completed at or after (unix seconds).
    since: Option<i64>,
    /// Completed at or before (unix seconds).
    until: Option<i64>,
    /// Items per page, at most `EXPLORER_PAGE_MAX` (100).
    #[param(default = json!(EXPLORER_PAGE_DEFAULT))]
    limit: Option<usize>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
}

fn address(field: &str, text: Option<&str>) -> Result<Option<Address>, ApiError> {
    text.map(|t| Address::parse(t).map_err(|e| ApiError::invalid(field, e.reason))).transpose()
}

fn model(text: Option<&str>) -> Result<Option<ModelName>, ApiError> {
    text.map(|t| ModelName::parse(t).map_err(|e| ApiError::invalid("model", e.reason))).transpose()
}

/// Every recent receipt, newest first (public).
///
/// Filters combine. A page holds at most `limit` receipts; with a model filter (or both
/// addresses) a page reads at most 1,000 receipts and may come back short with a cursor.
#[utoipa::path(
    get,
    path = "/v1/explorer/receipts",
    params(ReceiptsQuery),
    responses((status = 200, description = "A page of receipts, newest first", body = PageOut<Receipt>), BadRequest, RateLimited, StoreErrors)
)]
async fn receipts(State(s): State<AppState>, _: Public, ApiQuery(q): ApiQuery<ReceiptsQuery>) -> ApiResult<Json<PageOut<Receipt>>> {
    let filter = ReceiptFilter {
        client: address("client", q.client.as_deref())?,
        provider: address("provider", q.provider.as_deref())?,
        model: model(q.model.as_deref())?,
        since_ms: q.since.map(|s| s.saturating_mul(1_000)),
        until_ms: q.until.map(|s| s.saturating_mul(1_000).saturating_add(999)),
    };
    let (items, next_cursor) = s.market.explorer_receipts(&filter, q.limit.unwrap_or(EXPLORER_PAGE_DEFAULT), q.cursor.as_deref()).await?;
    Ok(Json(PageOut { items, next_cursor }))
}

/// One receipt with its job (never its spec or result), what it posts and its settlement
/// (public).
#[utoipa::path(
    get,
    path = "/v1/explorer/receipts/{receipt_id}",
    params(("receipt_id" = ReceiptId, Path, description = "The receipt")),
    responses((status = 200, description = "The receipt and its job", body = ReceiptDetail), BadRequest, NotFound, RateLimited, StoreErrors)
)]
async fn receipt(State(s): State<AppState>, _: Public, Path(id): Path<String>) -> ApiResult<Json<ReceiptDetail>> {
    let id = parse_path(&id, ReceiptId::parse)?;
    Ok(Json(s.market.explorer_receipt(&id).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct GpusQuery {
    /// One region; every configured region when absent.
    #[param(value_type = Option<Region>)]
    region: Option<String>,
    /// Only listings serving this model.
    #[param(value_type = Option<ModelName>)]
    model: Option<String>,
}

/// GPU listings by region, with online state, utilization and current prices (public).
#[utoipa::path(
    get,
    path = "/v1/explorer/gpus",
    params(GpusQuery),
    responses((status = 200, description = "The listings (at most 100 per region)", body = Vec<GpuRow>), BadRequest, RateLimited, StoreErrors)
)]
async fn gpus(State(s): State<AppState>, _: Public, ApiQuery(q): ApiQuery<GpusQuery>) -> ApiResult<Json<Vec<GpuRow>>> {
    Ok(Json(s.market.explorer_gpus(q.region.as_deref(), model(q.model.as_deref())?.as_ref()).await?))
}

/// `?interval=&buckets=` of a history.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct WindowQuery {
    /// Width of a bucket.
    #[param(default = "hour", inline)]
    interval: Option<Interval>,
    /// Buckets, the last one holding now: 1..=168.
    #[param(default = json!(HISTORY_BUCKETS_DEFAULT), minimum = 1, maximum = 168)]
    buckets: Option<u32>,
}

/// An account's receipts in total and over time: a provider's gross earnings, a client's
/// spending (public).
#[utoipa::path(
    get,
    path = "/v1/explorer/accounts/{address}",
    params(("address" = Address, Path, description = "The account's address"), WindowQuery),
    responses((status = 200, description = "Totals and time buckets", body = AccountSummary), BadRequest, RateLimited, StoreErrors)
)]
async fn account(State(s): State<AppState>, _: Public, Path(address): Path<String>, ApiQuery(q): ApiQuery<WindowQuery>) -> ApiResult<Json<AccountSummary>> {
    let address = parse_path(&address, Address::parse)?;
    let summary = s.market.account_summary(&address, q.interval.unwrap_or(Interval::Hour), q.buckets.unwrap_or(HISTORY_BUCKETS_DEFAULT)).await?;
    Ok(Json(summary))
}

/// The explorer's front page is `/explorer/`.
#[utoipa::path(get, path = "/explorer", responses((status = 308, description = "Redirect to /explorer/")))]
async fn explorer_root() -> Response {
    (StatusCode::PERMANENT_REDIRECT, [(LOCATION, "/explorer/")]).into_response()
}

/// The explorer's web pages and their scripts and style (`/explorer/` is `index.html`).
#[utoipa::path(
    get,
    path = "/explorer/{file}",
    params(("file" = String, Path, description = "index.html, style.css or a script")),
    responses((status = 200, description = "The file", content_type = "text/html"), NotFound)
)]
async fn page(Path(file): Path<String>) -> Response {
    serve_asset(&file)
}

/// The explorer's front page (`index.html`; its hash names the page shown: `#/receipts`, ...).
#[utoipa::path(get, path = "/explorer/", responses((status = 200, description = "The explorer's page", content_type = "text/html")))]
async fn index() -> Response {
    serve_asset("index.html")
}

fn serve_asset(name: &str) -> Response {
    let Some((content_type, body)) = asset(name) else {
        return ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such explorer file").into_response();
    };
    let headers = [
        (CONTENT_TYPE, content_type),
        (HeaderName::from_static("content-security-policy"), CONTENT_SECURITY_POLICY),
        (HeaderName::from_static("x-content-type-options"), "nosniff"),
        (HeaderName::from_static("referrer-policy"), "no-referrer"),
        (CACHE_CONTROL, "no-cache"),
    ];
    (headers, body).into_response()
}
