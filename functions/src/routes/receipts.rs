//! Receipts: list by client or provider with cursors, get one, verify a posted receipt, and the
//! public key set receipts verify against.

use super::{PageOut, PAGE_ITEMS_DEFAULT};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_path, ApiJson, ApiQuery, Auth};
use crate::openapi::{AuthErrors, BadRequest, BodyErrors, Forbidden, NotFound, StoreErrors};
use aitbc_core::receipt::Receipt;
use aitbc_core::signing::KeySetDocument;
use aitbc_core::values::{Address, ReceiptId};
use aitbc_market::receipts::{ReceiptOwner, Verification};
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/receipts", get(list))
        .route("/v1/receipts/verify", post(verify))
        .route("/v1/receipts/{receipt_id}", get(get_one))
        .route("/v1/keys", get(keys))
}

/// The group's operations in the OpenAPI document (`crate::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(list, verify, get_one, keys))]
pub(crate) struct Paths;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Receipts of this client (another account's need an admin key).
    #[param(value_type = Option<Address>)]
    client: Option<String>,
    /// Receipts of this provider (another account's need an admin key); not with `client`.
    #[param(value_type = Option<Address>)]
    provider: Option<String>,
    // Paging's fields inline: serde's flatten passes query values as strings, so a flattened
    // `limit=100` would not parse as a number.
    /// Items per page, at most the list's own maximum.
    #[param(default = json!(PAGE_ITEMS_DEFAULT))]
    limit: Option<usize>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
}

/// Receipts of a client or a provider, newest first (the caller's own when neither is given).
#[utoipa::path(
    get,
    path = "/v1/receipts",
    params(ListQuery),
    responses((status = 200, description = "A page of receipts", body = PageOut<Receipt>), AuthErrors, BadRequest, Forbidden, StoreErrors),
    security(("bearer" = []))
)]
async fn list(State(s): State<AppState>, Auth(caller): Auth, ApiQuery(q): ApiQuery<ListQuery>) -> ApiResult<Json<PageOut<Receipt>>> {
    let parse = |field: &str, text: &str| Address::parse(text).map_err(|e| ApiError::invalid(field, e.reason));
    let owner = match (q.client.as_deref(), q.provider.as_deref()) {
        (Some(_), Some(_)) => return Err(ApiError::invalid("client", "give client or provider, not both")),
        (Some(c), None) => ReceiptOwner::Client(parse("client", c)?),
        (None, Some(p)) => ReceiptOwner::Provider(parse("provider", p)?),
        (None, None) => {
            // One's own receipts: as provider if the caller is one, else as client.
            if s.market.is_provider(&caller.address).await? {
                ReceiptOwner::Provider(caller.address.clone())
            } else {
                ReceiptOwner::Client(caller.address.clone())
            }
        }
    };
    let (items, next_cursor) = s.market.list_receipts(&caller, owner, q.limit.unwrap_or(PAGE_ITEMS_DEFAULT), q.cursor).await?;
    Ok(Json(PageOut { items, next_cursor }))
}

/// One receipt (its client's or its provider's).
#[utoipa::path(
    get,
    path = "/v1/receipts/{receipt_id}",
    params(("receipt_id" = ReceiptId, Path, description = "The receipt")),
    responses((status = 200, description = "The receipt", body = Receipt), AuthErrors, BadRequest, Forbidden, NotFound, StoreErrors),
    security(("bearer" = []))
)]
async fn get_one(State(s): State<AppState>, Auth(caller): Auth, Path(id): Path<String>) -> ApiResult<Json<Receipt>> {
    let id = parse_path(&id, ReceiptId::parse)?;
    Ok(Json(s.market.get_receipt(&caller, &id).await?))
}

/// Verify a receipt's signatures against the registered keys.
///
/// Verifying is a read: anyone may ask whether a receipt is genuine.
#[utoipa::path(
    post,
    path = "/v1/receipts/verify",
    request_body = Receipt,
    responses((status = 200, description = "What verification found (a receipt that does not verify is 200 with `valid: false`)", body = Verification), BodyErrors, StoreErrors)
)]
async fn verify(State(s): State<AppState>, ApiJson(receipt): ApiJson<Receipt>) -> ApiResult<Json<Verification>> {
    // A version this build does not know is not a receipt it can judge: the request is
    // refused (as the document's bound on `version` says), not answered "invalid".
    use aitbc_core::receipt::{RECEIPT_VERSION, RECEIPT_VERSION_MIN};
    if !(RECEIPT_VERSION_MIN..=RECEIPT_VERSION).contains(&receipt.body.version) {
        return Err(ApiError::invalid("version", format!("receipt version {} is not one this marketplace knows ({RECEIPT_VERSION_MIN}..={RECEIPT_VERSION})", receipt.body.version)));
    }
    Ok(Json(s.market.verify_receipt(&receipt).await?))
}

/// The public keys receipts verify against: every provider's, and the marketplace's own.
#[utoipa::path(get, path = "/v1/keys", responses((status = 200, description = "The key set", body = KeySetDocument), StoreErrors))]
async fn keys(State(s): State<AppState>) -> ApiResult<Json<KeySetDocument>> {
    Ok(Json(s.market.key_document().await?))
}
