//! Platform overhead per small job on the embedded store, and tiny jobs per second through one
//! worker: `cargo run --release -p aitbc-worker --example overhead [-- JOBS]`.
//!
//! The API runs in this process on a fresh SQLite file; one worker (CPU backend) serves one
//! listing. Latencies come from the job records' own timestamps (the marketplace's clock, ms):
//! submit -> worker start is `claimed_at_ms - created_at_ms`, submit -> receipt stored is
//! `finished_at_ms - created_at_ms`. Jobs are `vector_add` of 1024 elements (microseconds of
//! compute), so what is measured is the platform: HTTP, store, queue, signing, verification.

use aitbc_client::Client;
use aitbc_core::config::MarketConfig;
use aitbc_core::signing::NamedSigningKey;
use aitbc_core::values::{KeyId, ListingId, WorkerId};
use aitbc_functions::{serve, AppState};
use aitbc_market::{Market, Settings, SystemClock};
use aitbc_store::Queue;
use aitbc_worker::agent::{Agent, AgentConfig};
use aitbc_worker::{select, BackendChoice};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Jobs measured one at a time, unless the first argument says otherwise (at most 10,000).
const SEQUENTIAL_JOBS_DEFAULT: usize = 200;
const SEQUENTIAL_JOBS_MAX: usize = 10_000;
/// Jobs pushed at once through the worker for the throughput figure.
const BURST_JOBS: usize = 500;
const WAIT_S_MAX: u64 = 300;

fn percentile(sorted: &[i64], p: f64) -> i64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn wait_done(c: &Client, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(WAIT_S_MAX);
    loop {
        let job = c.job(id).await.expect("job");
        let state = job["status"]["state"].as_str().unwrap_or_default().to_string();
        if state == "completed" || state == "settled" {
            return job;
        }
        assert!(!matches!(state.as_str(), "failed" | "cancelled" | "expired"), "job {id} ended {state}");
        assert!(Instant::now() < deadline, "job {id} not done");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let sequential: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(SEQUENTIAL_JOBS_DEFAULT).clamp(1, SEQUENTIAL_JOBS_MAX);
    let dir = tempfile::tempdir().unwrap();
    let (store, queue) = aitbc_store::provision::sqlite(dir.path().join("aitbc.db"), &[], aitbc_store::queue_spec()).await.unwrap();
    let queue: Arc<dyn Queue> = Arc::new(queue);
    let key = NamedSigningKey::from_seed(KeyId::parse("aitbc-bench").unwrap(), [5; 32]);
    let settings = Settings { rate_limit_per_s: 1_000_000, ..Settings::default() };
    let market = Market::new(Arc::new(store), queue.clone(), MarketConfig::default(), settings, key, Arc::new(SystemClock));
    market.bootstrap().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(listener, AppState { market }, std::future::pending()));

    let anon = Client::new(&api, None);
    let opened = anon.open_account("provider").await.unwrap();
    let provider = anon.with_key(opened["api_key"].as_str().unwrap());
    let signing = NamedSigningKey::from_seed(KeyId::parse("bench-provider").unwrap(), [6; 32]);
    provider.register_key(&signing.public()).await.unwrap();
    let listing = provider
        .create_listing(&json!({"name": "Bench", "memory_gib": 8, "cuda_version": "12.4", "base_price": "0.05", "region": "us-west", "count": 4}))
        .await
        .unwrap();
    let gpu_id = ListingId::parse(listing["gpu_id"].as_str().unwrap()).unwrap();
    let opened = anon.open_account("client").await.unwrap();
    let client = anon.with_key(opened["api_key"].as_str().unwrap());
    client.deposit(opened["address"].as_str().unwrap(), "1000000", "bench").await.unwrap();

    println!("aitbc platform overhead: embedded SQLite store, API over loopback HTTP, one worker (CPU backend), vector_add n=1024");
    println!("| worker slots | jobs | submit->start p50 ms | p99 ms | submit->receipt p50 ms | p99 ms | burst of {BURST_JOBS}: jobs/s |");
    println!("|---|---|---|---|---|---|---|");
    for slots in [1usize, 2] {
        let config = AgentConfig {
            worker_id: WorkerId::parse(&format!("wrk-bench-{slots}")).unwrap(),
            listings: vec![gpu_id.clone()],
            max_concurrent_jobs: slots,
            lease_ms: 30_000,
            heartbeat_interval_ms: 10_000,
            poll_wait_ms: 20_000,
            grace_ms: 5_000,
        };
        let backends = (0..slots).map(|_| select(BackendChoice::Cpu, 0).unwrap()).collect();
        let agent = Agent::new(provider.clone(), queue.clone(), signing.clone(), config, backends).unwrap();
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let running = tokio::spawn(async move { agent.run(shutdown).await });
        tokio::time::sleep(Duration::from_millis(300)).await;

        let mut to_start = Vec::with_capacity(sequential);
        let mut to_receipt = Vec::with_capacity(sequential);
        for i in 0..sequential {
            let body = json!({"units": "1", "gpu_id": gpu_id, "spec": {"kind": "vector_add", "n": 1024, "seed": i}});
            let job = client.submit_job(&body, &format!("seq-{slots}-{i}")).await.unwrap();
            let done = wait_done(&client, job["job_id"].as_str().unwrap()).await;
            let created = done["created_at_ms"].as_i64().unwrap();
            to_start.push(done["claimed_at_ms"].as_i64().unwrap() - created);
            to_receipt.push(done["finished_at_ms"].as_i64().unwrap() - created);
        }
        to_start.sort_unstable();
        to_receipt.sort_unstable();

        let started = Instant::now();
        let mut ids = Vec::with_capacity(BURST_JOBS);
        for i in 0..BURST_JOBS {
            let body = json!({"units": "1", "gpu_id": gpu_id, "spec": {"kind": "vector_add", "n": 1024, "seed": i}});
            ids.push(client.submit_job(&body, &format!("burst-{slots}-{i}")).await.unwrap()["job_id"].as_str().unwrap().to_string());
        }
        for id in &ids {
            wait_done(&client, id).await;
        }
        let rate = BURST_JOBS as f64 / started.elapsed().as_secs_f64();
        println!(
            "| {slots} | {sequential} | {} | {} | {} | {} | {rate:.0} |",
            percentile(&to_start, 0.5),
            percentile(&to_start, 0.99),
            percentile(&to_receipt, 0.5),
            percentile(&to_receipt, 0.99)
        );
        stop.send(true).unwrap();
        running.await.unwrap().unwrap();
    }
}
