//! Shared state, the routers of each function group, and the layers every group gets: body
//! limit, request ids, tracing, idempotency and problem+json for unknown routes.

use crate::error::ApiError;
use crate::extract::{authenticate, BODY_BYTES_MAX};
use crate::routes;
use aitbc_market::idempotency::{fingerprint, Begin, StoredResponse};
use aitbc_market::Market;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http_body_util::BodyExt;
use tower_http::catch_panic::CatchPanicLayer;
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
    /// The OpenAI-compatible API. Its own group because its answers stream: on AWS it is served
    /// by a Lambda function URL in response-streaming mode, which API Gateway's HTTP API cannot
    /// do (`lambda::serve`, infra/template.yaml `ChatFunctionUrl`).
    Chat,
}

impl Group {
    pub const ALL: [Group; 6] = [Group::Registry, Group::Pricing, Group::Jobs, Group::Receipts, Group::Accounts, Group::Chat];

    /// Whether the group's Lambda streams its answers (a function URL in `RESPONSE_STREAM`
    /// mode) rather than answering API Gateway with one buffered response.
    pub fn streams(self) -> bool {
        matches!(self, Group::Chat)
    }

    fn routes(self) -> Router<AppState> {
        match self {
            Group::Registry => routes::registry::router().merge(routes::capacity::router()).merge(routes::monitoring::router()),
            Group::Pricing => routes::pricing::router().merge(routes::intelligence::router()),
            Group::Jobs => routes::jobs::router(),
            Group::Receipts => routes::receipts::router().merge(routes::explorer::router()),
            Group::Accounts => routes::accounts::router(),
            Group::Chat => routes::openai::router(),
        }
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn with_layers(routes: Router<AppState>, state: AppState) -> Router {
    routes
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async { ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take that method") })
        // A route layer: it runs after routing, so it sees the matched route and leaves
        // unknown routes and methods to the fallbacks (404, 405).
        .route_layer(middleware::from_fn_with_state(state.clone(), idempotency))
        // Inside the trace span (which names the request id), so the panic is logged with it.
        .layer(CatchPanicLayer::custom(crate::error::panic_response))
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
///
/// An anonymous caller (signup) has no address to scope by, so its scope is the request's
/// fingerprint: the same key and body replay the first answer, and another anonymous caller's
/// different request under the same key is a different record, never a mismatch that would tell
/// it the key is in use. A replay of an anonymous signup returns the first account's API key,
/// so such a key must be as unguessable as a secret (a UUID, as the CLI sends).
/// The routes that change state for a caller without an API key: signup, where it is open.
const ANONYMOUS_WRITE_PATHS: [&str; 1] = ["/v1/accounts"];

async fn idempotency(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string());
    let takes_key = route.is_some_and(|route| crate::openapi::idempotent_operations().contains(&(request.method().clone(), route)));
    if !takes_key {
        return next.run(request).await;
    }
    let key = match request.headers().get("idempotency-key") {
        None => return next.run(request).await,
        Some(value) => match value.to_str() {
            Ok(key) => key.to_string(),
            Err(_) => return ApiError::invalid("Idempotency-Key", "must be visible ASCII").into_response(),
        },
    };
    if let Err(e) = aitbc_market::idempotency::validate_key(&key) {
        return ApiError::from(e).into_response();
    }
    let (mut parts, body) = request.into_parts();
    let principal = match authenticate(&parts, &state).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let bytes = match axum::body::to_bytes(body, BODY_BYTES_MAX).await {
        Ok(b) => b,
        Err(_) => return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("the body exceeds {BODY_BYTES_MAX} bytes")).into_response(),
    };
    let print = fingerprint(parts.method.as_str(), parts.uri.path(), &bytes);
    let scope = match &principal {
        Some(p) => p.address.to_string(),
        // Other anonymous writes are refused (401) or change nothing (quotes, verification):
        // no record is stored for them, so unauthenticated callers cannot fill the store.
        None if !ANONYMOUS_WRITE_PATHS.contains(&parts.uri.path()) => {
            return next.run(Request::from_parts(parts, Body::from(bytes))).await;
        }
        None => format!("anonymous-{print}"),
    };
    match state.market.idempotency_begin(&scope, &key, &print).await {
        Err(e) => return ApiError::from(e).into_response(),
        Ok(Begin::Replay(stored)) => return replay(stored),
        Ok(Begin::Run) => {}
    }
    if let Some(principal) = principal {
        parts.extensions.insert(principal);
    }
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

/// The first answer again. A body whose top-level `replayed` member says whether the operation
/// had been applied before (deposits) says so now: this answer is a replay.
fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let content_type = if status.is_success() { "application/json" } else { crate::error::PROBLEM_CONTENT_TYPE };
    let body = mark_replayed(stored.body);
    let mut response = (status, body).into_response();
    response.headers_mut().insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

fn mark_replayed(body: String) -> String {
    match serde_json::from_str::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Object(mut object)) if object.get("replayed").is_some_and(serde_json::Value::is_boolean) => {
            object.insert("replayed".into(), serde_json::Value::Bool(true));
            serde_json::Value::Object(object).to_string()
        }
        _ => body,
    }
}

/// Serves every group on `listener` until `shutdown` completes (local mode, tests).
pub async fn serve(listener: tokio::net::TcpListener, state: AppState, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    axum::serve(listener, local_router(state)).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use aitbc_core::config::MarketConfig;
    use aitbc_core::signing::NamedSigningKey;
    use aitbc_core::values::KeyId;
    use aitbc_market::{Settings, SystemClock};
    use aitbc_store::conformance::Backends;
    use tower::ServiceExt;

    /// A panic in a handler is a 500 problem with the request's id, not a dropped connection.
    #[tokio::test]
    async fn a_panicking_handler_answers_500_problem_json() {
        let backends = aitbc_store::conformance::sqlite().await.expect("SQLite is always available");
        let store = backends.store().await;
        let queue = backends.queue(aitbc_store::queue_spec()).await;
        let key = NamedSigningKey::from_seed(KeyId::parse("aitbc-market-test").unwrap(), [5; 32]);
        let market = Market::new(store, queue, MarketConfig::default(), Settings::default(), key, std::sync::Arc::new(SystemClock));
        let routes = Router::new().route("/v1/boom", axum::routing::get(|| async { if true { panic!("a handler bug") } "unreachable" }));
        let app = with_layers(routes, AppState { market });
        let response = app.oneshot(Request::get("/v1/boom").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()[axum::http::header::CONTENT_TYPE], crate::error::PROBLEM_CONTENT_TYPE);
        assert!(response.headers().contains_key(REQUEST_ID), "the request id goes back with the answer");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["code"], "internal");
        assert_eq!(problem["detail"], "internal error", "nothing internal is sent: {problem}");
    }
}
