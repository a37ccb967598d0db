//! API keys and who is calling: keys are random secrets shown once and stored only as their
//! SHA-256; each belongs to one account with one role. Lookups are cached briefly per process,
//! and each key has a token-bucket rate limit (per process: under Lambda, per instance).

use crate::records::{from_item, to_item};
use crate::{Market, MarketError};
use aitbc_core::values::Address;
use aitbc_store::{keys, Condition};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;

/// A cached key lookup is trusted this long (a revoked key keeps working at most this long).
pub const KEY_CACHE_TTL_MS: i64 = 10_000;
/// Cached keys and rate-limit buckets per process, at most (the maps are cleared when full).
pub const KEY_CACHE_ENTRIES_MAX: usize = 100_000;
/// Bytes of a presented API key, at most.
pub const API_KEY_BYTES_MAX: usize = 128;
/// API keys start with this, so they are easy to spot in logs and secret scanners.
pub const API_KEY_PREFIX: &str = "aitbc_sk_";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Client,
    Provider,
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Provider => "provider",
            Role::Admin => "admin",
        }
    }
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub address: Address,
    pub role: Role,
    /// SHA-256 of the key, hex: names the key in rate limits and logs without revealing it.
    pub key_hash: String,
}

impl Principal {
    pub fn require(&self, role: Role) -> Result<(), MarketError> {
        if self.role == role || self.role == Role::Admin {
            Ok(())
        } else {
            Err(MarketError::Forbidden(format!("this needs a {} key", role.name())))
        }
    }

    pub fn require_admin(&self) -> Result<(), MarketError> {
        if self.role == Role::Admin {
            Ok(())
        } else {
            Err(MarketError::Forbidden("this needs an admin key".into()))
        }
    }
}

/// An API key as stored (under the hash of its secret).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub owner: Address,
    pub role: Role,
    pub created_at_ms: i64,
}

#[derive(Default)]
pub(crate) struct Caches {
    keys: Mutex<HashMap<String, (Principal, i64)>>,
    buckets: Mutex<HashMap<String, Bucket>>,
    pub(crate) demand: crate::quotes::DemandCache,
    /// Spending limits by account: set when the account opens and never changed, so a cached
    /// one is never stale.
    pub(crate) limits: Mutex<HashMap<String, Option<aitbc_core::money::Amount>>>,
}

struct Bucket {
    /// Thousandths of a request.
    tokens_milli: u64,
    refilled_at_ms: i64,
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A fresh secret: the prefix and 32 random bytes in hex.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{API_KEY_PREFIX}{}", hex::encode(bytes))
}

impl Market {
    /// Stores a new key for `owner` and returns its secret (shown once, never stored).
    pub async fn issue_api_key(&self, owner: &Address, role: Role) -> Result<String, MarketError> {
        let secret = new_secret();
        let hash = hash_secret(&secret);
        let now = self.now_ms();
        let record = ApiKeyRecord { owner: owner.clone(), role, created_at_ms: now };
        let item = to_item(keys::api_key(&hash), &record, &[keys::api_key_owner_index(owner.as_str(), now, &hash[..16])]);
        self.store.put(item, Condition::Absent).await?;
        Ok(secret)
    }

    /// The caller behind a presented secret, or `Unauthenticated`.
    pub async fn authenticate(&self, secret: &str) -> Result<Principal, MarketError> {
        if secret.is_empty() || secret.len() > API_KEY_BYTES_MAX || !secret.starts_with(API_KEY_PREFIX) {
            return Err(MarketError::Unauthenticated("malformed API key".into()));
        }
        let hash = hash_secret(secret);
        let now = self.now_ms();
        if let Some((principal, at)) = self.caches.keys.lock().expect("key cache").get(&hash) {
            if now - at < KEY_CACHE_TTL_MS {
                return Ok(principal.clone());
            }
        }
        let item = self.store.get(&keys::api_key(&hash)).await?.ok_or_else(|| MarketError::Unauthenticated("unknown API key".into()))?;
        let record: ApiKeyRecord = from_item(&item)?;
        let principal = Principal { address: record.owner, role: record.role, key_hash: hash.clone() };
        let mut cache = self.caches.keys.lock().expect("key cache");
        if cache.len() >= KEY_CACHE_ENTRIES_MAX {
            cache.clear();
        }
        cache.insert(hash, (principal.clone(), now));
        Ok(principal)
    }

    /// Takes one request from the caller's bucket, or says how long to wait.
    pub fn rate_limit(&self, principal: &Principal) -> Result<(), MarketError> {
        self.rate_limit_bucket(&principal.key_hash)
    }

    /// Takes one request from an anonymous caller's bucket (named by its network address), or
    /// says how long to wait: public reads are limited like keyed ones.
    pub fn rate_limit_anonymous(&self, source: &str) -> Result<(), MarketError> {
        self.rate_limit_bucket(&format!("anonymous:{source}"))
    }

    fn rate_limit_bucket(&self, bucket_key: &str) -> Result<(), MarketError> {
        let per_s = u64::from(self.settings.rate_limit_per_s.max(1));
        let capacity_milli = 2 * per_s * 1_000;
        let now = self.now_ms();
        let mut buckets = self.caches.buckets.lock().expect("rate buckets");
        if buckets.len() >= KEY_CACHE_ENTRIES_MAX && !buckets.contains_key(bucket_key) {
            buckets.clear();
        }
        let bucket = buckets
            .entry(bucket_key.to_string())
            .or_insert(Bucket { tokens_milli: capacity_milli, refilled_at_ms: now });
        let elapsed_ms = u64::try_from(now - bucket.refilled_at_ms).unwrap_or(0);
        // per_s requests per second = per_s milli-requests per millisecond.
        bucket.tokens_milli = (bucket.tokens_milli + elapsed_ms * per_s).min(capacity_milli);
        bucket.refilled_at_ms = now;
        if bucket.tokens_milli >= 1_000 {
            bucket.tokens_milli -= 1_000;
            Ok(())
        } else {
            let retry_after_ms = (1_000 - bucket.tokens_milli).div_ceil(per_s);
            Err(MarketError::RateLimited { retry_after_ms })
        }
    }
}
