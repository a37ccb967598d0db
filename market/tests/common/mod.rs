//! The world the market's integration tests share: a market on a fresh SQLite file behind a
//! write-counting store, a manual clock, a provider with a signing key and a listing, funded
//! clients, and the job requests and completions they exchange.

#![allow(dead_code)] // each test file uses its own part of this module

use aitbc_core::config::MarketConfig;
use aitbc_core::money::Amount;
use aitbc_core::signing::NamedSigningKey;
use aitbc_core::values::{KeyId, TransferId, WorkerId};
use aitbc_market::auth::{Principal, Role};
use aitbc_market::jobs::{Completion, JobRecord, SubmitJob};
use aitbc_market::registry::Listing;
use aitbc_market::settlement::CountingStore;
use aitbc_market::{ManualClock, Market, Settings};
use std::sync::Arc;

/// 2026-01-24 20:00 UTC (noon in us-west).
pub const START_MS: i64 = 1_769_284_800_000;

pub struct World {
    pub market: Market,
    pub clock: Arc<ManualClock>,
    /// Counts what the market writes (settlement's write amplification).
    pub counter: Arc<CountingStore>,
    /// The store under the counter, to write past the market (SQLite worlds).
    pub sqlite: Option<aitbc_store::SqliteStore>,
    _dir: Option<tempfile::TempDir>,
}

pub async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let (store, queue) = aitbc_store::provision::sqlite(dir.path().join("market.db"), &[], aitbc_store::queue_spec()).await.unwrap();
    let mut w = world_on(Arc::new(store.clone()), Arc::new(queue)).await;
    w.sqlite = Some(store);
    w._dir = Some(dir);
    w
}

/// The world on DynamoDB and SQS (moto_server at `AITBC_TEST_AWS_ENDPOINT`); None (the test
/// is skipped, as the conformance tests report) without one.
pub async fn aws_world() -> Option<World> {
    use aitbc_store::conformance::Backends;
    let backends = aitbc_store::conformance::aws().await?;
    Some(world_on(backends.store().await, backends.queue(aitbc_store::queue_spec()).await).await)
}

async fn world_on(store: Arc<dyn aitbc_store::Store>, queue: Arc<dyn aitbc_store::Queue>) -> World {
    let counter = Arc::new(CountingStore::new(store));
    let clock = Arc::new(ManualClock::new(START_MS));
    let key = NamedSigningKey::from_seed(KeyId::parse("aitbc-market-test").unwrap(), [3; 32]);
    let market = Market::new(counter.clone(), queue, MarketConfig::default(), Settings::default(), key, clock.clone());
    market.bootstrap().await.unwrap();
    World { market, clock, counter, sqlite: None, _dir: None }
}

pub async fn principal(m: &Market, role: Role) -> Principal {
    let opened = m.open_account_with_key(None, role, None).await.unwrap();
    m.authenticate(&opened.api_key).await.unwrap()
}

pub struct Provider {
    pub who: Principal,
    pub key: NamedSigningKey,
    pub listing: Listing,
    pub worker: WorkerId,
}

/// A provider with a registered receipt key and one online listing in us-west (SLA: start
/// within 30 s or refund 50% of the price).
pub async fn provider(m: &Market) -> Provider {
    let who = principal(m, Role::Provider).await;
    let key = NamedSigningKey::from_seed(KeyId::parse(&format!("prov-{}", &who.address.as_str()[4..12])).unwrap(), [9; 32]);
    m.register_signing_key(&who, key.public()).await.unwrap();
    let new = serde_json::from_value(serde_json::json!({
        "name": "My-GPU", "memory_gib": 24, "cuda_version": "12.1", "base_price": "0.05", "region": "us-west",
        "models": ["llama3.2"], "count": 2, "max_concurrent_jobs": 64,
        "sla": {"response_time_s": 30, "penalty_rate_bps": 5000}
    }))
    .unwrap();
    let listing = m.create_listing(&who, new).await.unwrap();
    let worker = WorkerId::parse("wrk-1").unwrap();
    m.heartbeat(&who, &listing.gpu_id, &worker, None).await.unwrap();
    Provider { who, key, listing, worker }
}

pub async fn funded_client(m: &Market, amount: &str) -> Principal {
    let client = principal(m, Role::Client).await;
    m.deposit(&client, &client.address, Amount::parse(amount).unwrap(), TransferId::generate()).await.unwrap();
    client
}

/// A vector-add job of `units` GPU-seconds on llama3.2's rate in us-west.
pub fn submit(units: &str) -> SubmitJob {
    serde_json::from_value(serde_json::json!({
        "model": "llama3.2", "units": units, "region": "us-west",
        "spec": {"kind": "vector_add", "n": 1024, "seed": 1}
    }))
    .unwrap()
}

/// The provider's worker completes `job` with a receipt for `units_ms`.
pub fn completion(job: &JobRecord, p: &Provider, units_ms: u64, started_s: i64, completed_s: i64) -> Completion {
    Completion::signed(job, &p.key, &p.worker, units_ms, started_s, completed_s)
}
