//! Capacity terms between a provider and one client, served by the registry group: fixed-rate
//! contracts (offer, accept, read, list) and capacity reservations (offer, accept and pay,
//! read, list).

use super::{PageOut, Paging, PAGE_ITEMS_DEFAULT};
use crate::app::AppState;
use crate::error::ApiResult;
use crate::extract::{parse_path, ApiJson, ApiQuery, Auth};
use crate::openapi::{AuthErrors, BadRequest, BodyErrors, Conflict, Forbidden, NotFound, PaymentRequired, StoreErrors};
use aitbc_core::values::{Address, ReservationId};
use aitbc_market::contracts::{ContractRecord, NewContract};
use aitbc_market::reservations::{NewReservation, Reservation};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/contracts", post(offer_contract).get(list_contracts))
        .route("/v1/contracts/{provider}/accept", post(accept_contract))
        .route("/v1/contracts/{provider}/{client}", get(get_contract))
        .route("/v1/reservations", post(offer_reservation).get(list_reservations))
        .route("/v1/reservations/{reservation_id}", get(get_reservation))
        .route("/v1/reservations/{reservation_id}/accept", post(accept_reservation))
}

/// The operations in the OpenAPI document (`crate::openapi`), under the registry group.
#[derive(utoipa::OpenApi)]
#[openapi(paths(offer_contract, list_contracts, accept_contract, get_contract, offer_reservation, list_reservations, get_reservation, accept_reservation))]
pub(crate) struct Paths;

/// Offer a client a fixed-rate contract (provider): a rate per GPU-hour for some GPU-hours,
/// with a guaranteed availability. Once accepted, the client's jobs priced at submission on
/// this provider's listings pay it until the hours are used.
#[utoipa::path(
    post,
    path = "/v1/contracts",
    request_body = NewContract,
    responses((status = 201, description = "The contract, offered", body = ContractRecord), AuthErrors, BodyErrors, Forbidden, NotFound, Conflict, StoreErrors),
    security(("bearer" = []))
)]
async fn offer_contract(State(s): State<AppState>, Auth(caller): Auth, ApiJson(body): ApiJson<NewContract>) -> ApiResult<(StatusCode, Json<ContractRecord>)> {
    Ok((StatusCode::CREATED, Json(s.market.offer_contract(&caller, body).await?)))
}

/// The caller's contracts: a provider's (one per client) or a client's (one per provider).
#[utoipa::path(
    get,
    path = "/v1/contracts",
    params(Paging),
    responses((status = 200, description = "A page of contracts", body = PageOut<ContractRecord>), AuthErrors, BadRequest, Forbidden, StoreErrors),
    security(("bearer" = []))
)]
async fn list_contracts(State(s): State<AppState>, Auth(caller): Auth, ApiQuery(paging): ApiQuery<Paging>) -> ApiResult<Json<PageOut<ContractRecord>>> {
    let page = s.market.list_contracts(&caller, paging.limit.unwrap_or(PAGE_ITEMS_DEFAULT), paging.cursor).await?;
    Ok(Json(PageOut { items: page.items, next_cursor: page.cursor }))
}

/// Accept the contract a provider offered the caller (client), before the offer expires.
#[utoipa::path(
    post,
    path = "/v1/contracts/{provider}/accept",
    params(("provider" = Address, Path, description = "The provider that offered it")),
    responses((status = 200, description = "The contract, active", body = ContractRecord), AuthErrors, BadRequest, Forbidden, NotFound, Conflict, StoreErrors),
    security(("bearer" = []))
)]
async fn accept_contract(State(s): State<AppState>, Auth(caller): Auth, Path(provider): Path<String>) -> ApiResult<Json<ContractRecord>> {
    let provider = parse_path(&provider, Address::parse)?;
    Ok(Json(s.market.accept_contract(&caller, &provider).await?))
}

/// A contract, with the GPU-seconds it has left and its measured availability (its provider
/// or its client).
#[utoipa::path(
    get,
    path = "/v1/contracts/{provider}/{client}",
    params(("provider" = Address, Path, description = "The provider"), ("client" = Address, Path, description = "The client")),
    responses((status = 200, description = "The contract", body = ContractRecord), AuthErrors, BadRequest, Forbidden, NotFound, StoreErrors),
    security(("bearer" = []))
)]
async fn get_contract(State(s): State<AppState>, Auth(caller): Auth, Path((provider, client)): Path<(String, String)>) -> ApiResult<Json<ContractRecord>> {
    let provider = parse_path(&provider, Address::parse)?;
    let client = parse_path(&client, Address::parse)?;
    Ok(Json(s.market.get_contract(&caller, &provider, &client).await?))
}

/// Offer a client a reservation of a share of one of the caller's listings (provider): slots
/// or GPU memory, for a duration, at a fee the client pays on acceptance.
#[utoipa::path(
    post,
    path = "/v1/reservations",
    request_body = NewReservation,
    responses((status = 201, description = "The reservation, offered", body = Reservation), AuthErrors, BodyErrors, Forbidden, NotFound, Conflict, StoreErrors),
    security(("bearer" = []))
)]
async fn offer_reservation(State(s): State<AppState>, Auth(caller): Auth, ApiJson(body): ApiJson<NewReservation>) -> ApiResult<(StatusCode, Json<Reservation>)> {
    Ok((StatusCode::CREATED, Json(s.market.offer_reservation(&caller, body).await?)))
}

/// The caller's reservations: those a provider offered, or those offered to a client.
#[utoipa::path(
    get,
    path = "/v1/reservations",
    params(Paging),
    responses((status = 200, description = "A page of reservations", body = PageOut<Reservation>), AuthErrors, BadRequest, Forbidden, StoreErrors),
    security(("bearer" = []))
)]
async fn list_reservations(State(s): State<AppState>, Auth(caller): Auth, ApiQuery(paging): ApiQuery<Paging>) -> ApiResult<Json<PageOut<Reservation>>> {
    let page = s.market.list_reservations(&caller, paging.limit.unwrap_or(PAGE_ITEMS_DEFAULT), paging.cursor).await?;
    Ok(Json(PageOut { items: page.items, next_cursor: page.cursor }))
}

/// A reservation (its provider or its client).
#[utoipa::path(
    get,
    path = "/v1/reservations/{reservation_id}",
    params(("reservation_id" = ReservationId, Path, description = "The reservation")),
    responses((status = 200, description = "The reservation", body = Reservation), AuthErrors, BadRequest, Forbidden, NotFound, StoreErrors),
    security(("bearer" = []))
)]
async fn get_reservation(State(s): State<AppState>, Auth(caller): Auth, Path(id): Path<String>) -> ApiResult<Json<Reservation>> {
    let id = parse_path(&id, ReservationId::parse)?;
    Ok(Json(s.market.get_reservation(&caller, &id).await?))
}

/// Accept a reservation offered to the caller (client) and pay its fee: to the provider's
/// earnings, less the platform's fee. From then until it ends, the listing keeps the share's
/// queue places for the caller.
#[utoipa::path(
    post,
    path = "/v1/reservations/{reservation_id}/accept",
    params(("reservation_id" = ReservationId, Path, description = "The reservation")),
    responses((status = 200, description = "The reservation, active and paid", body = Reservation), AuthErrors, BadRequest, Forbidden, NotFound, PaymentRequired, Conflict, StoreErrors),
    security(("bearer" = []))
)]
async fn accept_reservation(State(s): State<AppState>, Auth(caller): Auth, Path(id): Path<String>) -> ApiResult<Json<Reservation>> {
    let id = parse_path(&id, ReservationId::parse)?;
    Ok(Json(s.market.accept_reservation(&caller, &id).await?))
}
