//! Errors at the HTTP edge: every failure is `application/problem+json` (RFC 9457) with a
//! stable `code`, the failing `field` for validation errors, and nothing internal.

use aitbc_market::MarketError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// `Retry-After` on `503 no_capacity`: workers heartbeat their listings every few seconds and a
/// running job frees its slot when it ends, so capacity is worth asking for again this soon.
pub const NO_CAPACITY_RETRY_AFTER_S: u64 = 5;

/// An API error: a market error, or one of the edge's own (body, routing).
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub field: Option<String>,
    pub retry_after_s: Option<u64>,
}

/// An error (RFC 9457 problem details), sent as `application/problem+json`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Problem<'a> {
    /// `https://aitbc.dev/problems/<code>`.
    #[serde(rename = "type")]
    kind: String,
    /// The status's reason phrase, e.g. "Bad Request".
    title: &'a str,
    status: u16,
    /// What went wrong, for people; nothing internal.
    detail: &'a str,
    /// Stable and machine-readable, e.g. `invalid_request`, `insufficient_funds`.
    code: &'a str,
    /// The request field a validation error is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self { status, code, detail: detail.into(), field: None, retry_after_s: None }
    }

    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { field: Some(field.into()), ..Self::new(StatusCode::BAD_REQUEST, "invalid_request", detail) }
    }
}

impl From<MarketError> for ApiError {
    fn from(e: MarketError) -> Self {
        let status = StatusCode::from_u16(e.status()).expect("valid status");
        let detail = match &e {
            MarketError::Internal(inner) | MarketError::Unavailable(inner) => {
                tracing::error!(error = %inner, code = e.code(), "request failed");
                e.to_string()
            }
            _ => e.to_string(),
        };
        let retry_after_s = match &e {
            MarketError::RateLimited { retry_after_ms } => Some(retry_after_ms.div_ceil(1_000).max(1)),
            MarketError::Unavailable(_) => Some(1),
            MarketError::NoCapacity(_) | MarketError::QueueFull(_) => Some(NO_CAPACITY_RETRY_AFTER_S),
            _ => None,
        };
        Self { status, code: e.code(), detail, field: e.field().map(str::to_string), retry_after_s }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let problem = Problem {
            kind: format!("https://aitbc.dev/problems/{}", self.code),
            title,
            status: self.status.as_u16(),
            detail: &self.detail,
            code: self.code,
            field: self.field.as_deref(),
        };
        let mut response = (self.status, serde_json::to_string(&problem).expect("serializes")).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_CONTENT_TYPE));
        if let Some(s) = self.retry_after_s {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Defence in depth: a panic in a handler or middleware becomes a 500 problem (code `internal`)
/// instead of a dropped connection (or, on Lambda, a killed invocation). The message is logged
/// inside the request's span, which carries its request id; the caller sees nothing internal.
pub fn panic_response(payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic payload".into());
    tracing::error!(panic = %message, "handler panicked");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error").into_response()
}
