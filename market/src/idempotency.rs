//! Idempotency records with Stripe's semantics: the first request with a key runs and its answer
//! is stored; the same key with the same body replays that answer; with another body it is
//! refused; while the first is still running a duplicate gets a conflict. Records expire.

use crate::{Market, MarketError};
use aitbc_store::{keys, Condition, Item, StoreError, Update};
use sha2::{Digest, Sha256};

/// Bytes of an Idempotency-Key, at most.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 255;
/// A record left "in progress" by a crashed request may be taken over after this.
pub const IN_PROGRESS_STALE_MS: i64 = 60_000;
/// Stored answers larger than this are not kept (the request is still idempotent by its ids).
pub const RESPONSE_BYTES_MAX: usize = 300 * 1024;

/// What the first request with a key answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: String,
}

/// The outcome of starting a request under a key.
#[derive(Debug)]
pub enum Begin {
    /// First time: run the request, then `finish`.
    Run,
    /// Seen before with the same body: answer this.
    Replay(StoredResponse),
}

pub fn validate_key(key: &str) -> Result<(), MarketError> {
    let ok = !key.is_empty()
        && key.len() <= IDEMPOTENCY_KEY_BYTES_MAX
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(MarketError::invalid("Idempotency-Key", format!("1..={IDEMPOTENCY_KEY_BYTES_MAX} of letters, digits, '-', '_', '.', ':'")))
    }
}

pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(method.as_bytes());
    hasher.update(b"\n");
    hasher.update(path.as_bytes());
    hasher.update(b"\n");
    hasher.update(body);
    hex::encode(hasher.finalize())
}

impl Market {
    /// Starts a request under `key` for `scope` (the caller) with the request's fingerprint.
    pub async fn idempotency_begin(&self, scope: &str, key: &str, fingerprint: &str) -> Result<Begin, MarketError> {
        validate_key(key)?;
        let record_key = keys::idempotency(scope, key);
        let now = self.now_ms();
        let expires_at_s = (now + self.settings.idempotency_ttl_ms) / 1_000;
        let item = Item::new(record_key.clone())
            .with("fingerprint", fingerprint)
            .with("state", "in_progress")
            .with("started_at_ms", now)
            .with(aitbc_store::spec::ATTR_EXPIRES_AT, expires_at_s);
        match self.store.put(item, Condition::Absent).await {
            Ok(()) => return Ok(Begin::Run),
            Err(StoreError::ConditionFailed { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let existing = self.store.get(&record_key).await?.ok_or_else(|| MarketError::Conflict("idempotency record vanished; retry".into()))?;
        if existing.str("fingerprint") != Some(fingerprint) {
            return Err(MarketError::IdempotencyMismatch);
        }
        let expired = existing.int(aitbc_store::spec::ATTR_EXPIRES_AT).is_some_and(|t| t * 1_000 <= now);
        match existing.str("state") {
            Some("done") if !expired => Ok(Begin::Replay(StoredResponse {
                status: existing.int("status").unwrap_or(200) as u16,
                body: existing.str("body").unwrap_or_default().to_string(),
            })),
            _ => {
                let stale = existing.int("started_at_ms").is_none_or(|t| now - t > IN_PROGRESS_STALE_MS);
                if !stale && !expired {
                    return Err(MarketError::IdempotencyInProgress);
                }
                // Take over a crashed or expired attempt, unless someone else just did.
                let update = Update::new().set("state", "in_progress").set("started_at_ms", now).set(aitbc_store::spec::ATTR_EXPIRES_AT, expires_at_s);
                let started = existing.int("started_at_ms").unwrap_or(0);
                match self.store.update(&record_key, update, Condition::equals("started_at_ms", started)).await {
                    Ok(_) => Ok(Begin::Run),
                    Err(StoreError::ConditionFailed { .. }) => Err(MarketError::IdempotencyInProgress),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// Stores the answer of a request begun under `key`. Server errors are not stored (the
    /// record is dropped so a retry runs again); client errors are, like successes.
    pub async fn idempotency_finish(&self, scope: &str, key: &str, response: &StoredResponse) -> Result<(), MarketError> {
        let record_key = keys::idempotency(scope, key);
        if response.status >= 500 || response.body.len() > RESPONSE_BYTES_MAX {
            self.store.delete(&record_key, Condition::equals("state", "in_progress")).await.or_else(|e| match e {
                StoreError::ConditionFailed { .. } => Ok(()),
                e => Err(e),
            })?;
            return Ok(());
        }
        let update = Update::new().set("state", "done").set("status", i64::from(response.status)).set("body", response.body.clone());
        self.store.update(&record_key, update, Condition::Present).await?;
        Ok(())
    }
}
