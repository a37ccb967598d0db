//! Accounts: open one (the API key is shown once), balances, ledger history, deposits (admin, or
//! one's own wallet where the faucet is on) and withdrawals.

use super::{PageOut, PAGE_ITEMS_DEFAULT};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_path, ApiJson, ApiQuery, Auth, IdempotencyKey, MaybeAuth};
use crate::openapi::{AuthErrors, BadRequest, BodyErrors, Conflict, Forbidden, NotFound, PaymentRequired, StoreErrors};
use aitbc_core::ledger::AccountId;
use aitbc_core::money::Amount;
use aitbc_core::values::{Address, AgentName, TransferId};
use aitbc_market::accounts::{Balances, OpenedAccount};
use aitbc_market::auth::Role;
use aitbc_market::ledger::LedgerEntry;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use crate::extract::transfer_id_for;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/accounts", post(open))
        .route("/v1/accounts/{address}", get(balance))
        .route("/v1/accounts/{address}/ledger", get(ledger))
        .route("/v1/accounts/{address}/deposits", post(deposit))
        .route("/v1/accounts/{address}/withdrawals", post(withdraw))
}

/// The group's operations in the OpenAPI document (`crate::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(open, balance, ledger, deposit, withdraw))]
pub(crate) struct Paths;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct OpenAccount {
    role: Role,
    /// The most a client account may hold in escrow at once.
    #[serde(default)]
    spending_limit: Option<Amount>,
    /// An agent name others may use for the account (a contract's or reservation's `client`),
    /// unique in the marketplace.
    #[serde(default)]
    name: Option<AgentName>,
}

/// Open an account and its first API key, shown this once.
///
/// Without a key where signup is open (local mode); otherwise, and always for the admin role,
/// with an admin key.
#[utoipa::path(
    post,
    path = "/v1/accounts",
    request_body = OpenAccount,
    responses((status = 201, description = "The account's address and its API key", body = OpenedAccount), AuthErrors, BodyErrors, Forbidden, Conflict, StoreErrors),
    security((), ("bearer" = []))
)]
async fn open(State(s): State<AppState>, MaybeAuth(caller): MaybeAuth, ApiJson(body): ApiJson<OpenAccount>) -> ApiResult<(StatusCode, Json<OpenedAccount>)> {
    let opened = s.market.open_named_account(caller.as_ref(), body.role, body.spending_limit, body.name).await?;
    Ok((StatusCode::CREATED, Json(opened)))
}

/// An account's balances: the wallet, and a provider's earnings (its owner, or an admin).
#[utoipa::path(
    get,
    path = "/v1/accounts/{address}",
    params(("address" = Address, Path, description = "The account")),
    responses((status = 200, description = "The balances", body = Balances), AuthErrors, BadRequest, Forbidden, NotFound, StoreErrors),
    security(("bearer" = []))
)]
async fn balance(State(s): State<AppState>, Auth(caller): Auth, Path(address): Path<String>) -> ApiResult<Json<Balances>> {
    let address = parse_path(&address, Address::parse)?;
    Ok(Json(s.market.balances(&caller, &address).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct LedgerQuery {
    /// `wallet` or `earnings`.
    #[serde(default)]
    #[param(default = "wallet")]
    account: Option<String>,
    // Paging's fields inline: serde's flatten passes query values as strings, so a flattened
    // `limit=100` would not parse as a number.
    /// Items per page, at most the list's own maximum.
    #[param(default = json!(PAGE_ITEMS_DEFAULT))]
    limit: Option<usize>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
}

/// An account's ledger history, newest first (its owner, or an admin).
#[utoipa::path(
    get,
    path = "/v1/accounts/{address}/ledger",
    params(("address" = Address, Path, description = "The account's owner"), LedgerQuery),
    responses((status = 200, description = "A page of ledger entries", body = PageOut<LedgerEntry>), AuthErrors, BadRequest, Forbidden, StoreErrors),
    security(("bearer" = []))
)]
async fn ledger(State(s): State<AppState>, Auth(caller): Auth, Path(address): Path<String>, ApiQuery(q): ApiQuery<LedgerQuery>) -> ApiResult<Json<PageOut<LedgerEntry>>> {
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
    Ok(Json(PageOut { items: entries, next_cursor }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AmountBody {
    amount: Amount,
}

/// A deposit applied (or, for a retried key, found applied before) and the balances after it.
#[derive(Serialize, utoipa::ToSchema)]
struct Deposited {
    transfer_id: TransferId,
    /// True when this Idempotency-Key's deposit had already been applied.
    replayed: bool,
    balances: Balances,
}

/// Deposit into an account's wallet (an admin; or its owner where the local faucet is on).
#[utoipa::path(
    post,
    path = "/v1/accounts/{address}/deposits",
    params(("address" = Address, Path, description = "The account to fund")),
    request_body = AmountBody,
    responses((status = 201, description = "The deposit and the balances after it", body = Deposited), AuthErrors, BodyErrors, Forbidden, NotFound, Conflict, StoreErrors),
    security(("bearer" = []))
)]
async fn deposit(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(address): Path<String>,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(body): ApiJson<AmountBody>,
) -> ApiResult<(StatusCode, Json<Deposited>)> {
    let address = parse_path(&address, Address::parse)?;
    let id = transfer_id_for(&caller.address, "deposit", key.as_deref());
    let applied = s.market.deposit(&caller, &address, body.amount, id.clone()).await?;
    let balances = s.market.balances(&caller, &address).await?;
    Ok((StatusCode::CREATED, Json(Deposited { transfer_id: id, replayed: applied == aitbc_core::ledger::Applied::Replayed, balances })))
}

/// A withdrawal and the balances after it.
#[derive(Serialize, utoipa::ToSchema)]
struct Withdrawn {
    transfer_id: TransferId,
    balances: Balances,
}

/// Withdraw from one's own wallet.
#[utoipa::path(
    post,
    path = "/v1/accounts/{address}/withdrawals",
    params(("address" = Address, Path, description = "The caller's own account")),
    request_body = AmountBody,
    responses((status = 201, description = "The withdrawal and the balances after it", body = Withdrawn), AuthErrors, BodyErrors, Forbidden, PaymentRequired, NotFound, Conflict, StoreErrors),
    security(("bearer" = []))
)]
async fn withdraw(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(address): Path<String>,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(body): ApiJson<AmountBody>,
) -> ApiResult<(StatusCode, Json<Withdrawn>)> {
    let address = parse_path(&address, Address::parse)?;
    if caller.address != address {
        return Err(aitbc_market::MarketError::Forbidden("withdraw only from your own account".into()).into());
    }
    let id = transfer_id_for(&caller.address, "withdraw", key.as_deref());
    s.market.withdraw(&caller, body.amount, id.clone()).await?;
    let balances = s.market.balances(&caller, &address).await?;
    Ok((StatusCode::CREATED, Json(Withdrawn { transfer_id: id, balances })))
}
