//! The one error type of the application services. Each variant has a stable `code` that the
//! HTTP edge sends in `application/problem+json` and the CLI prints; internal details (store
//! messages) are logged, never sent.

use aitbc_core::ledger::LedgerError;
use aitbc_core::values::ValueError;
use aitbc_store::{QueueError, StoreError};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MarketError {
    /// A field of the request is invalid.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("authentication required: {0}")]
    Unauthenticated(String),
    #[error("not allowed: {0}")]
    Forbidden(String),
    /// The request conflicts with the current state (a job already claimed, a hold resolved).
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("insufficient funds: {0}")]
    InsufficientFunds(String),
    #[error("spending limit exceeded: {0}")]
    SpendingLimit(String),
    #[error("Idempotency-Key was used with a different request")]
    IdempotencyMismatch,
    #[error("a request with this Idempotency-Key is in progress")]
    IdempotencyInProgress,
    #[error("rate limit exceeded; retry after {retry_after_ms} ms")]
    RateLimited { retry_after_ms: u64 },
    #[error("no listing can take this job: {0}")]
    NoCapacity(String),
    /// The listing's queue holds its `max_queue_size` jobs: refused before anything is held.
    #[error("the queue is full: {0}")]
    QueueFull(String),
    /// The store or queue is unavailable or throttled; retrying later may succeed.
    #[error("service unavailable, retry later")]
    Unavailable(String),
    /// A bug or a broken invariant: logged in full, answered as a plain 500.
    #[error("internal error")]
    Internal(String),
}

impl MarketError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid { field: field.into(), reason: reason.into() }
    }
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::NotFound { what: what.into() }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid { .. } => "invalid_request",
            Self::NotFound { .. } => "not_found",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::Forbidden(_) => "forbidden",
            Self::Conflict(_) => "conflict",
            Self::InsufficientFunds(_) => "insufficient_funds",
            Self::SpendingLimit(_) => "spending_limit_exceeded",
            Self::IdempotencyMismatch => "idempotency_key_reused",
            Self::IdempotencyInProgress => "idempotency_key_in_progress",
            Self::RateLimited { .. } => "rate_limited",
            Self::NoCapacity(_) => "no_capacity",
            Self::QueueFull(_) => "queue_full",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    /// The HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            Self::Invalid { .. } => 400,
            Self::NotFound { .. } => 404,
            Self::Unauthenticated(_) => 401,
            Self::Forbidden(_) => 403,
            Self::Conflict(_) | Self::IdempotencyInProgress => 409,
            Self::InsufficientFunds(_) | Self::SpendingLimit(_) => 402,
            Self::IdempotencyMismatch => 422,
            Self::RateLimited { .. } => 429,
            Self::NoCapacity(_) | Self::QueueFull(_) | Self::Unavailable(_) => 503,
            Self::Internal(_) => 500,
        }
    }

    /// The field a validation error is about.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

impl From<ValueError> for MarketError {
    fn from(e: ValueError) -> Self {
        Self::invalid(e.field, e.reason)
    }
}

impl From<StoreError> for MarketError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Throttled | StoreError::TransactionConflict => Self::Unavailable(e.to_string()),
            // A condition failing where the caller did not expect one is a lost race.
            StoreError::ConditionFailed { .. } => Self::Conflict("the resource changed; retry".into()),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<QueueError> for MarketError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Throttled | QueueError::Backend(_) => Self::Unavailable(e.to_string()),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<LedgerError> for MarketError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::InsufficientFunds { .. } => Self::InsufficientFunds(e.to_string()),
            LedgerError::HoldResolved { .. } | LedgerError::HoldExists(_) | LedgerError::TransferIdReused(_) => {
                Self::Conflict(e.to_string())
            }
            LedgerError::UnknownHold(_) => Self::not_found(e.to_string()),
            LedgerError::ZeroAmount => Self::invalid("amount", "must be greater than zero"),
            other => Self::invalid("amount", other.to_string()),
        }
    }
}
