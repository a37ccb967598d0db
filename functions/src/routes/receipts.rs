//! Receipts: list by client or provider with cursors, get one, verify a posted receipt, and the
//! public key set receipts verify against.

use super::{PageOut, PAGE_ITEMS_DEFAULT};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_path, ApiJson, ApiQuery, Auth};
use aitbc_core::receipt::Receipt;
use aitbc_core::values::{Address, ReceiptId};
use aitbc_market::receipts::ReceiptOwner;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/receipts", get(list))
        .route("/v1/receipts/verify", post(verify))
        .route("/v1/receipts/{receipt_id}", get(get_one))
        .route("/v1/keys", get(keys))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    client: Option<String>,
    provider: Option<String>,
    // Paging's fields inline: serde's flatten passes query values as strings, so a flattened
    // `limit=100` would not parse as a number.
    limit: Option<usize>,
    cursor: Option<String>,
}

async fn list(State(s): State<AppState>, Auth(caller): Auth, ApiQuery(q): ApiQuery<ListQuery>) -> ApiResult<Json<Value>> {
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
    Ok(Json(serde_json::to_value(PageOut { items, next_cursor }).expect("serializes")))
}

async fn get_one(State(s): State<AppState>, Auth(caller): Auth, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let id = parse_path(&id, ReceiptId::parse)?;
    Ok(Json(serde_json::to_value(s.market.get_receipt(&caller, &id).await?).expect("serializes")))
}

/// Verifying is a read: anyone may ask whether a receipt is genuine.
async fn verify(State(s): State<AppState>, ApiJson(receipt): ApiJson<Receipt>) -> ApiResult<Json<Value>> {
    Ok(Json(serde_json::to_value(s.market.verify_receipt(&receipt).await?).expect("serializes")))
}

async fn keys(State(s): State<AppState>) -> ApiResult<Json<Value>> {
    Ok(Json(serde_json::to_value(s.market.key_document().await?).expect("serializes")))
}
