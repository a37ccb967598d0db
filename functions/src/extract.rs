//! Extractors: the authenticated caller (Bearer API key, rate limited), JSON bodies and query
//! strings whose rejections are problem+json naming the field, and the Idempotency-Key header.

use crate::app::AppState;
use crate::error::ApiError;
use aitbc_market::auth::Principal;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

/// Bytes of a request body, at most (a job spec with inline data fits; a message is 256 KiB).
pub const BODY_BYTES_MAX: usize = 256 * 1024;

/// The authenticated caller. Missing or unknown keys are 401; over the rate limit 429.
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(Auth(principal.clone()));
        }
        let principal = authenticate(parts, state).await?.ok_or_else(|| {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", "send an API key: Authorization: Bearer <key>")
        })?;
        parts.extensions.insert(principal.clone());
        Ok(Auth(principal))
    }
}

/// The caller if a key was sent (reads that anyone may make, e.g. quotes).
pub struct MaybeAuth(pub Option<Principal>);

impl FromRequestParts<AppState> for MaybeAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if parts.headers.get(axum::http::header::AUTHORIZATION).is_none() {
            return Ok(MaybeAuth(None));
        }
        Auth::from_request_parts(parts, state).await.map(|Auth(p)| MaybeAuth(Some(p)))
    }
}

/// A public read (the explorer's): anonymous callers are rate limited per network address (the
/// last `X-Forwarded-For` hop, which API Gateway appends; one shared bucket without it), callers
/// that send a key per key.
pub struct Public;

impl FromRequestParts<AppState> for Public {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if authenticate(parts, state).await?.is_some() {
            return Ok(Public);
        }
        let source = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .map_or("direct", str::trim);
        state.market.rate_limit_anonymous(source)?;
        Ok(Public)
    }
}

/// The Bearer key's principal, rate limited; None when no Authorization header is present.
pub async fn authenticate(parts: &Parts, state: &AppState) -> Result<Option<Principal>, ApiError> {
    let Some(value) = parts.headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let secret = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", "Authorization must be \"Bearer <key>\""))?;
    let principal = state.market.authenticate(secret.trim()).await?;
    state.market.rate_limit(&principal)?;
    Ok(Some(principal))
}

/// A JSON body; malformed JSON, wrong types and oversized bodies are problem+json.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => {
            // axum reports "...target type: <path>: <message>" (serde_path_to_error); a missing
            // field is named in backticks instead.
            let detail = e.body_text();
            let after = detail.split_once("target type: ").map_or(detail.as_str(), |(_, rest)| rest);
            let path = after.split_once(": ").map(|(p, _)| p).filter(|p| !p.is_empty() && !p.contains(' ') && *p != ".");
            let message = path.and_then(|p| after.strip_prefix(p)).map_or(after, |m| m.trim_start_matches(": "));
            let field = path.map(str::to_string).or_else(|| detail.split('`').nth(1).map(str::to_string)).unwrap_or_else(|| "body".into());
            ApiError::invalid(field, message.to_string())
        }
        JsonRejection::JsonSyntaxError(e) => ApiError::invalid("body", format!("malformed JSON: {}", e.body_text())),
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "send Content-Type: application/json")
        }
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("the body exceeds {BODY_BYTES_MAX} bytes"))
        }
        other => ApiError::new(other.status(), "invalid_request", other.body_text()),
    }
}

/// A query string; bad parameters are problem+json.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => Err(ApiError::invalid("query", e.body_text())),
            Err(other) => Err(ApiError::invalid("query", other.body_text())),
        }
    }
}

/// The `Idempotency-Key` header, if sent.
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        match parts.headers.get("idempotency-key") {
            None => Ok(IdempotencyKey(None)),
            Some(v) => {
                let key = v.to_str().map_err(|_| ApiError::invalid("Idempotency-Key", "must be visible ASCII"))?;
                aitbc_market::idempotency::validate_key(key)?;
                Ok(IdempotencyKey(Some(key.to_string())))
            }
        }
    }
}

/// A path parameter parsed into a domain value (a bad id is 400 naming the field, not 404).
pub fn parse_path<T>(text: &str, parse: impl Fn(&str) -> Result<T, aitbc_core::values::ValueError>) -> Result<T, ApiError> {
    parse(text).map_err(|e| ApiError::invalid(e.field, e.reason))
}

/// A transfer id from the caller's idempotency key, so a retried request applies once; a fresh
/// one without a key.
pub fn transfer_id_for(caller: &aitbc_core::values::Address, what: &str, key: Option<&str>) -> aitbc_core::values::TransferId {
    match key {
        Some(key) => {
            let name = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("{caller}/{what}/{key}").as_bytes());
            aitbc_core::values::TransferId::from_uuid(name)
        }
        None => aitbc_core::values::TransferId::generate(),
    }
}
