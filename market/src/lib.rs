//! aitbc's application services: each operation of the marketplace (open an account, list a
//! GPU, quote, submit, claim, complete, verify a receipt, ...) as an async method of [`Market`],
//! applying `aitbc-core`'s pure rules to the Store and Queue ports.
//!
//! Every state change is a conditional write or an all-or-nothing transaction, so a retried,
//! duplicated or late request changes nothing it should not. The HTTP functions and the
//! scheduler call these methods; neither touches the store directly.

pub mod accounts;
pub mod auth;
pub mod contracts;
pub mod reservations;
pub mod error;
pub mod explorer;
pub mod idempotency;
pub mod insight;
pub mod jobs;
pub mod ledger;
pub mod quotes;
pub mod receipts;
pub mod reconcile;
mod records;
pub mod registry;
pub mod reputation;
pub mod payouts;
pub mod priority;
pub mod settlement;
pub mod stream;
pub mod sweep;

use aitbc_core::config::MarketConfig;
use aitbc_core::signing::NamedSigningKey;
use aitbc_core::values::Address;
use aitbc_store::{Queue, Store};
use std::sync::Arc;

pub use error::MarketError;

/// A clock in unix milliseconds; tests and simulations drive their own.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970");
        i64::try_from(now.as_millis()).expect("milliseconds fit i64")
    }
}

/// A clock that moves only when told to (tests, simulations).
#[derive(Default)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    pub fn new(start_ms: i64) -> Self {
        Self(std::sync::atomic::AtomicI64::new(start_ms))
    }
    pub fn advance_ms(&self, ms: i64) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Operational settings (the market's economic settings are in [`MarketConfig`]).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Anyone may open a client or provider account (local mode); else only an admin may.
    pub open_signup: bool,
    /// Deposits without the admin role (the local faucet).
    pub faucet: bool,
    /// A worker's lease lasts this long unless a heartbeat extends it.
    pub lease_ms: u64,
    /// A queued job not claimed within this expires (or is re-matched by the sweeper).
    pub claim_timeout_ms: u64,
    /// Claims per job before it fails.
    pub attempts_max: u32,
    /// A listing is online while its last worker heartbeat is younger than this.
    pub online_window_ms: i64,
    /// Idempotency records live this long.
    pub idempotency_ttl_ms: i64,
    /// Requests per second per API key (token bucket refill; the burst is twice that).
    pub rate_limit_per_s: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            open_signup: true,
            faucet: true,
            lease_ms: 30_000,
            claim_timeout_ms: 10 * 60_000,
            attempts_max: 3,
            online_window_ms: 60_000,
            idempotency_ttl_ms: 24 * 3_600_000,
            rate_limit_per_s: 1_000,
        }
    }
}

/// The marketplace: ports, configuration, the marketplace's signing key and a clock.
#[derive(Clone)]
pub struct Market {
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn Queue>,
    pub config: Arc<MarketConfig>,
    pub settings: Arc<Settings>,
    /// Countersigns receipts and signs quotes.
    pub signing_key: Arc<NamedSigningKey>,
    /// The platform's fee account owner.
    pub platform: Address,
    pub clock: Arc<dyn Clock>,
    pub(crate) caches: Arc<auth::Caches>,
    /// Woken when a job in this process gains output (a chunk) or ends (completed, failed), so
    /// that a stream served by this process relays it at once; streams also poll, for what
    /// other processes write (`Market::progress`).
    pub(crate) progress: Arc<tokio::sync::Notify>,
}

impl Market {
    pub fn new(
        store: Arc<dyn Store>,
        queue: Arc<dyn Queue>,
        config: MarketConfig,
        settings: Settings,
        signing_key: NamedSigningKey,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            queue,
            config: Arc::new(config),
            settings: Arc::new(settings),
            signing_key: Arc::new(signing_key),
            platform: Address::parse("ait1platform0000fee").expect("a valid address"),
            clock,
            caches: Arc::new(auth::Caches::default()),
            progress: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// What a stream waits on between reads of a job: see the `progress` field.
    pub fn progress(&self) -> &tokio::sync::Notify {
        &self.progress
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}
