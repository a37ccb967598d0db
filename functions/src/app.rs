//! Shared state, the routers of each function group, and the layers every group gets: body
//! limit, request ids, tracing, idempotency and problem+json for unknown routes.

use crate::error::ApiError;
use crate::extract::{authenticate, BODY_BYTES_MAX};
use crate::routes;
use aitbc_market::idempotency::{fingerprint, Begin, StoredResponse};
use aitbc_market::Market;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http_body_util::BodyExt;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

/// Shared by every handler: the market's services (which hold the store, queue, config, keys).
#[derive(Clone)]
pub struct AppState {
    pub market: Market,
}

/// A function group: one Lambda in production.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Registry,
    Pricing,
    Jobs,
    Receipts,
    Accounts,
}

impl Group {
    pub const ALL: [Group; 5] = [Group::Registry, Group::Pricing, Group::Jobs, Group::Receipts, Group::Accounts];

    fn routes(self) -> Router<AppState> {
        match self {
            Group::Registry => routes::registry::router(),
            Group::Pricing => routes::pricing::router(),
            Group::Jobs => routes::jobs::router(),
            Group::Receipts => routes::receipts::router().merge(routes::explorer::router()),
            Group::Accounts => routes::accounts::router(),
        }
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn with_layers(routes: Router<AppState>, state: AppState) -> Router {
    routes
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async { ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take that method") })
        .layer(middleware::from_fn_with_state(state.clone(), idempotency))
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .layer(crate::telemetry::trace_layer())
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}

/// One group's router (a Lambda serves exactly this).
pub fn router_for(group: Group, state: AppState) -> Router {
    with_layers(group.routes(), state)
}

/// Every group merged (local serving, tests).
pub fn local_router(state: AppState) -> Router {
    let routes = Group::ALL.into_iter().fold(Router::new(), |r, g| r.merge(g.routes()));
    with_layers(routes, state)
}

/// Stripe's idempotency for state-changing requests that carry an `Idempotency-Key`: the same
/// key and body replay the first answer (`Idempotent-Replayed: true`), another body is 422, a
/// concurrent duplicate is 409. Scoped to the caller, so two callers' keys never collide.
async fn idempotency(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let is_write = matches!(*request.method(), Method::POST | Method::PATCH | Method::DELETE | Method::PUT);
    let Some(key) = request.headers().get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_string) else {
        return next.run(request).await;
    };
    if !is_write {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let principal = match authenticate(&parts, &state).await {
        Ok(Some(p)) => p,
        Ok(None) => return next.run(Request::from_parts(parts, body)).await,
        Err(e) => return e.into_response(),
    };
    let bytes = match axum::body::to_bytes(body, BODY_BYTES_MAX).await {
        Ok(b) => b,
        Err(_) => return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("the body exceeds {BODY_BYTES_MAX} bytes")).into_response(),
    };
    let scope = principal.address.to_string();
    let print = fingerprint(parts.method.as_str(), parts.uri.path(), &bytes);
    match state.market.idempotency_begin(&scope, &key, &print).await {
        Err(e) => return ApiError::from(e).into_response(),
        Ok(Begin::Replay(stored)) => return replay(stored),
        Ok(Begin::Run) => {}
    }
    parts.extensions.insert(principal);
    let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    let (mut resp_parts, resp_body) = response.into_parts();
    let body: Bytes = match resp_body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error").into_response(),
    };
    let stored = StoredResponse { status: resp_parts.status.as_u16(), body: String::from_utf8_lossy(&body).into_owned() };
    if let Err(e) = state.market.idempotency_finish(&scope, &key, &stored).await {
        tracing::warn!(error = %e, "idempotency record not stored");
    }
    resp_parts.headers.insert("idempotent-replayed", HeaderValue::from_static("false"));
    Response::from_parts(resp_parts, Body::from(body))
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let content_type = if status.is_success() { "application/json" } else { crate::error::PROBLEM_CONTENT_TYPE };
    let mut response = (status, stored.body).into_response();
    response.headers_mut().insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

/// Serves every group on `listener` until `shutdown` completes (local mode, tests).
pub async fn serve(listener: tokio::net::TcpListener, state: AppState, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    axum::serve(listener, local_router(state)).with_graceful_shutdown(shutdown).await
}
