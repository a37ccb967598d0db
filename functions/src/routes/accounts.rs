//! Accounts: open one (the API key is shown once), balances, ledger history, deposits (admin, or
//! one's own wallet where the faucet is on) and withdrawals.

use super::{PageOut, PAGE_ITEMS_DEFAULT};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_path, ApiJson, ApiQuery, Auth, IdempotencyKey, MaybeAuth};
use aitbc_core::ledger::AccountId;
use aitbc_core::money::Amount;
use aitbc_core::values::Address;
use aitbc_market::auth::Role;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use crate::extract::transfer_id_for;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/accounts", post(open))
        .route("/v1/accounts/{address}", get(balance))
        .route("/v1/accounts/{address}/ledger", get(ledger))
        .route("/v1/accounts/{address}/deposits", post(deposit))
        .route("/v1/accounts/{address}/withdrawals", post(withdraw))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenAccount {
    role: Role,
    #[serde(default)]
    spending_limit: Option<Amount>,
}

async fn open(State(s): State<AppState>, MaybeAuth(caller): MaybeAuth, ApiJson(body): ApiJson<OpenAccount>) -> ApiResult<(StatusCode, Json<Value>)> {
    let opened = s.market.open_account_with_key(caller.as_ref(), body.role, body.spending_limit).await?;
    Ok((StatusCode::CREATED, Json(json!({ "address": opened.address, "role": opened.role, "api_key": opened.api_key }))))
}

async fn balance(State(s): State<AppState>, Auth(caller): Auth, Path(address): Path<String>) -> ApiResult<Json<Value>> {
    let address = parse_path(&address, Address::parse)?;
    let balances = s.market.balances(&caller, &address).await?;
    Ok(Json(serde_json::to_value(balances).expect("serializes")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LedgerQuery {
    #[serde(default)]
    account: Option<String>,
    // Paging's fields inline: serde's flatten passes query values as strings, so a flattened
    // `limit=100` would not parse as a number.
    limit: Option<usize>,
    cursor: Option<String>,
}

async fn ledger(State(s): State<AppState>, Auth(caller): Auth, Path(address): Path<String>, ApiQuery(q): ApiQuery<LedgerQuery>) -> ApiResult<Json<Value>> {
    let address = parse_path(&address, Address::parse)?;
    if caller.address != address {
        caller.require_admin()?;
    }
    let account = match q.account.as_deref() {
        None | Some("wallet") => AccountId::wallet(&address),
        Some("earnings") => AccountId::earnings(&address),
        Some(other) => return Err(ApiError::invalid("account", format!("{other:?} is not wallet or earnings"))),
    };
    let (entries, next_cursor) = s.market.ledger_history(&account, q.limit.unwrap_or(PAGE_ITEMS_DEFAULT), q.cursor).await?;
    Ok(Json(serde_json::to_value(PageOut { items: entries, next_cursor }).expect("serializes")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AmountBody {
    amount: Amount,
}

async fn deposit(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(address): Path<String>,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(body): ApiJson<AmountBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let address = parse_path(&address, Address::parse)?;
    let id = transfer_id_for(&caller.address, "deposit", key.as_deref());
    let applied = s.market.deposit(&caller, &address, body.amount, id.clone()).await?;
    let balances = s.market.balances(&caller, &address).await?;
    Ok((StatusCode::CREATED, Json(json!({ "transfer_id": id, "replayed": applied == aitbc_core::ledger::Applied::Replayed, "balances": balances }))))
}

async fn withdraw(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(address): Path<String>,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(body): ApiJson<AmountBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let address = parse_path(&address, Address::parse)?;
    if caller.address != address {
        return Err(aitbc_market::MarketError::Forbidden("withdraw only from your own account".into()).into());
    }
    let id = transfer_id_for(&caller.address, "withdraw", key.as_deref());
    s.market.withdraw(&caller, body.amount, id.clone()).await?;
    let balances = s.market.balances(&caller, &address).await?;
    Ok((StatusCode::CREATED, Json(json!({ "transfer_id": id, "balances": balances }))))
}
