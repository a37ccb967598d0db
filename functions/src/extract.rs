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

/// A JSON body that must be a JSON object, as every request schema is; malformed JSON, other
/// JSON values, wrong types and oversized bodies are problem+json.
///
/// serde's derived `Deserialize` also accepts a JSON array for a struct (its fields in order),
/// so `["1"]` would pass for `{"amount": "1"}`; every body goes through this one extractor,
/// which refuses anything but an object before serde sees it.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json_content_type(req.headers()) {
            return Err(unsupported_media_type());
        }
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|e| json_rejection(e.into()))?;
        if !is_json_object(&bytes) {
            return Err(ApiError::invalid("body", "the body must be a JSON object"));
        }
        // Parse to a value first: syntax errors are reported as such, and whole numbers written
        // with a fraction or exponent (`5.0`, `1e3`) become integers, as JSON Schema's
        // `integer` allows and JavaScript clients send; serde's integer types refuse them.
        let mut value: serde_json::Value = match axum::Json::<serde_json::Value>::from_bytes(&bytes) {
            Ok(axum::Json(value)) => value,
            Err(rejection) => return Err(json_rejection(rejection)),
        };
        integral_floats_to_integers(&mut value, JSON_DEPTH_MAX);
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(v) => Ok(ApiJson(v)),
            Err(e) => {
                let path = e.path().to_string();
                let field = if path.is_empty() || path == "." { "body".to_string() } else { path };
                Err(ApiError::invalid(field, e.into_inner().to_string()))
            }
        }
    }
}

/// Nesting the number normalization follows, at most; serde_json itself refuses more than 128.
const JSON_DEPTH_MAX: usize = 128;

/// Floats up to this magnitude are integers exactly when they have no fraction (2^53); larger
/// ones were rounded on parsing (an integer literal past u64 becomes the nearest f64), so they
/// stay floats and an integer field refuses them.
const EXACT_INTEGER_F64_MAX: f64 = 9_007_199_254_740_992.0;

/// Rewrites each float with no fractional part and an exact integer value as that integer.
fn integral_floats_to_integers(value: &mut serde_json::Value, depth_left: usize) {
    if depth_left == 0 {
        return;
    }
    match value {
        serde_json::Value::Number(n) if n.is_f64() => {
            let Some(f) = n.as_f64() else { return };
            if f.fract() == 0.0 && f.abs() <= EXACT_INTEGER_F64_MAX {
                *value = serde_json::Value::from(f as i64);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| integral_floats_to_integers(v, depth_left - 1)),
        serde_json::Value::Object(map) => map.values_mut().for_each(|v| integral_floats_to_integers(v, depth_left - 1)),
        _ => {}
    }
}

/// `application/json`, or any `application/<name>+json`, with or without parameters.
fn is_json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || essence.strip_prefix("application/").is_some_and(|sub| sub.ends_with("+json"))
}

/// Whether a JSON text's top-level value is an object: its first non-whitespace byte is `{`
/// (RFC 8259 whitespace). The parser still checks the rest.
pub(crate) fn is_json_object(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r')) == Some(&b'{')
}

fn unsupported_media_type() -> ApiError {
    ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "send Content-Type: application/json")
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
        JsonRejection::MissingJsonContentType(_) => unsupported_media_type(),
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
