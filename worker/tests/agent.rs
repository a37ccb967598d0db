//! The worker loop end to end, on the CPU backend, against the real API on the embedded store:
//! jobs complete with receipts that verify against the registered key; a duplicate delivery is
//! one completion; a worker killed with SIGKILL mid-job loses it to the next worker once its
//! lease lapses, and exactly one receipt and one charge exist.

mod common;

use aitbc_client::Client;
use common::{marketplace, Market_};
use aitbc_core::receipt::Receipt;
use aitbc_core::signing::{KeySet, NamedSigningKey};
use aitbc_core::values::{KeyId, ListingId, WorkerId};
use aitbc_worker::agent::{Agent, AgentConfig};
use aitbc_worker::{select, BackendChoice};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

struct Provider {
    client: Client,
    key: NamedSigningKey,
    key_file: PathBuf,
    gpu_id: ListingId,
    queue: String,
}

async fn provider(m: &Market_) -> Provider {
    let anon = Client::new(&m.api, None);
    let opened = anon.open_account("provider").await.unwrap();
    let client = anon.with_key(opened["api_key"].as_str().unwrap());
    let key = NamedSigningKey::from_seed(KeyId::parse("worker-test-key").unwrap(), [11; 32]);
    client.register_key(&key.public()).await.unwrap();
    let listing = client
        .create_listing(&json!({"name": "CPU-Box", "memory_gib": 8, "cuda_version": "12.4", "base_price": "0.05", "region": "us-west", "count": 2, "kinds": ["vector_add", "reduction", "gemm"]}))
        .await
        .unwrap();
    let key_file = m._dir.path().join("provider-key.json");
    std::fs::write(&key_file, serde_json::to_string(&key.to_file()).unwrap()).unwrap();
    let gpu_id = ListingId::parse(listing["gpu_id"].as_str().unwrap()).unwrap();
    client.listing_heartbeat(gpu_id.as_str(), "wrk-setup", None).await.unwrap();
    Provider { client, key, key_file, gpu_id, queue: listing["queue"].as_str().unwrap().to_string() }
}

async fn client_with(m: &Market_, amount: &str) -> Client {
    let anon = Client::new(&m.api, None);
    let opened = anon.open_account("client").await.unwrap();
    let c = anon.with_key(opened["api_key"].as_str().unwrap());
    c.deposit(opened["address"].as_str().unwrap(), amount, "fund").await.unwrap();
    c
}

fn agent(m: &Market_, p: &Provider, worker: &str, slots: usize, lease_ms: u64) -> Agent {
    let config = AgentConfig {
        worker_id: WorkerId::parse(worker).unwrap(),
        listings: vec![p.gpu_id.clone()],
        max_concurrent_jobs: slots,
        lease_ms,
        heartbeat_interval_ms: lease_ms / 4,
        poll_wait_ms: 200,
        grace_ms: 5_000,
    };
    let backends = (0..slots).map(|_| select(BackendChoice::Cpu, 0).unwrap()).collect();
    Agent::new(p.client.clone(), m.queue.clone(), p.key.clone(), config, backends).unwrap()
}

async fn wait_for_state(c: &Client, job_id: &str, state: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let job = c.job(job_id).await.unwrap();
        if job["status"]["state"] == state {
            return job;
        }
        assert!(Instant::now() < deadline, "job {job_id} still {} after {within:?}: {job}", job["status"]["state"]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn key_set(m: &Market_) -> KeySet {
    KeySet::from_document(&Client::new(&m.api, None).keys().await.unwrap()).unwrap()
}

fn job(spec: Value, units: &str) -> Value {
    json!({ "units": units, "region": "us-west", "spec": spec })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cpu_jobs_complete_with_receipts_that_verify() {
    let m = marketplace().await;
    let p = provider(&m).await;
    let c = client_with(&m, "100").await;
    let agent = agent(&m, &p, "wrk-a", 2, 4_000);
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(async move { agent.run(shutdown).await });
    let specs = [
        json!({"kind": "vector_add", "n": 4096, "seed": 1}),
        json!({"kind": "reduction", "n": 100000, "seed": 2}),
        json!({"kind": "gemm", "m": 128, "n": 128, "k": 128, "dtype": "bf16", "seed": 3, "return_values": 4}),
        json!({"kind": "gemm", "m": 64, "n": 64, "k": 64, "dtype": "f32", "seed": 4}),
    ];
    let mut ids = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let submitted = c.submit_job(&job(spec.clone(), "10"), &format!("job-{i}")).await.unwrap();
        ids.push(submitted["job_id"].as_str().unwrap().to_string());
    }
    let keys = key_set(&m).await;
    for id in &ids {
        let done = wait_for_state(&c, id, "completed", Duration::from_secs(30)).await;
        let receipt_id = done["receipt_id"].as_str().unwrap();
        let receipt: Receipt = c.get(&format!("/v1/receipts/{receipt_id}")).await.unwrap();
        assert_eq!(receipt.verify(&keys), Ok(()), "receipt of {id} verifies against the registered key");
        let units = receipt.body.units.millis();
        assert!(units >= 1 && units <= 10_000, "units {units} ms are plausible for a small job");
        let wall = (receipt.body.completed_at - receipt.body.started_at + 1) as u64 * 1_000;
        assert!(units <= wall * 2, "CPU time {units} ms cannot exceed 2 cores x wall {wall} ms");
        let output = &done["output"];
        assert_eq!(output["backend"], "cpu");
        assert_eq!(output["checksum"].as_str().unwrap().len(), 16);
    }
    let result: Value = c.get(&format!("/v1/jobs/{}/result", ids[2])).await.unwrap();
    assert_eq!(result["output"]["values"].as_array().unwrap().len(), 4);
    stop.send(true).unwrap();
    let stats = running.await.unwrap().unwrap();
    assert_eq!(stats.completed, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_delivered_twice_completes_once() {
    let m = marketplace().await;
    let p = provider(&m).await;
    let c = client_with(&m, "100").await;
    let submitted = c.submit_job(&job(json!({"kind": "vector_add", "n": 1024, "seed": 1}), "5"), "dup").await.unwrap();
    let job_id = submitted["job_id"].as_str().unwrap();
    // The same message again: at-least-once delivery.
    m.queue.send_batch(&p.queue, vec![json!({ "job_id": job_id }).to_string()]).await.unwrap();
    let agent = agent(&m, &p, "wrk-a", 2, 4_000);
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(async move { agent.run(shutdown).await });
    wait_for_state(&c, job_id, "completed", Duration::from_secs(30)).await;
    // Let the second delivery be received and refused.
    let deadline = Instant::now() + Duration::from_secs(10);
    while m.queue.approximate_depth(&p.queue).await.unwrap() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send(true).unwrap();
    let stats = running.await.unwrap().unwrap();
    assert_eq!(stats.completed, 1);
    assert_eq!(stats.refused_claims, 1, "the duplicate was refused at claim");
    let receipts: Value = c.get("/v1/receipts").await.unwrap();
    assert_eq!(receipts["items"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_job_loses_it_to_the_next_once_the_lease_lapses() {
    let m = marketplace().await;
    let p = provider(&m).await;
    let c = client_with(&m, "100").await;
    // A few seconds of CPU work (debug build): long enough to kill the worker in the middle.
    let slow = json!({"kind": "gemm", "m": 768, "n": 768, "k": 768, "dtype": "f32", "seed": 9});
    let submitted = c.submit_job(&job(slow, "600"), "slow").await.unwrap();
    let job_id = submitted["job_id"].as_str().unwrap().to_string();
    let held_before: Value = c.balances(submitted["client"].as_str().unwrap()).await.unwrap();

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_aitbc-worker"))
        .args(["run", "--api-url", &m.api, "--api-key"])
        .arg(std_key(&p))
        .arg("--key-file")
        .arg(&p.key_file)
        .args(["--listing", p.gpu_id.as_str(), "--backend", "cpu", "--lease-ms", "2000", "--heartbeat-interval-ms", "500", "--poll-wait-ms", "200", "--worker-id", "wrk-doomed"])
        .arg("--queue")
        .arg(format!("sqlite:{}", m.db.display()))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_state(&c, &job_id, "running", Duration::from_secs(30)).await;
    child.kill().unwrap(); // SIGKILL: no release, no goodbye
    child.wait().unwrap();

    let agent = agent(&m, &p, "wrk-heir", 1, 2_000);
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(async move { agent.run(shutdown).await });
    let done = wait_for_state(&c, &job_id, "completed", Duration::from_secs(90)).await;
    stop.send(true).unwrap();
    running.await.unwrap().unwrap();
    assert_eq!(done["status"]["attempt"], 2, "the second attempt completed it");
    let receipts: Value = c.get("/v1/receipts").await.unwrap();
    let items = receipts["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "exactly one receipt");
    assert_eq!(items[0]["attempt"], 2);
    let after: Value = c.balances(submitted["client"].as_str().unwrap()).await.unwrap();
    assert_eq!(after["wallet"], held_before["wallet"], "one hold, nothing charged twice");
    let listing = p.client.listing(p.gpu_id.as_str()).await.unwrap();
    assert_eq!(listing["active_jobs"], 0);
}

/// The provider's API key, as the child process needs it.
fn std_key(p: &Provider) -> String {
    p.client.api_key().unwrap().to_string()
}

/// The quality check named in the worker's config file is read again for each result: a
/// refusing check fails the job for good (one attempt, hold voided, no receipt); changed to one
/// that accepts, the next job completes; removed, no check runs; a file that no longer parses
/// fails the job retryably rather than skipping the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_config_file_s_quality_check_applies_to_each_next_result() {
    let m = marketplace().await;
    let p = provider(&m).await;
    let c = client_with(&m, "100").await;
    let config = m._dir.path().join("worker.toml");
    let refuse = r#"quality_check = ["sh", "-c", "grep -q '\"completion_time\"' && echo 'too slow for me' && exit 1"]"#;
    std::fs::write(&config, refuse).unwrap();
    let agent = agent(&m, &p, "wrk-q", 1, 4_000).with_quality_check_file(config.clone());
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(async move { agent.run(shutdown).await });
    let spec = json!({"kind": "vector_add", "n": 1024, "seed": 1});

    let refused = c.submit_job(&job(spec.clone(), "10"), "q-refused").await.unwrap();
    let client = refused["client"].as_str().unwrap().to_string();
    let failed = wait_for_state(&c, refused["job_id"].as_str().unwrap(), "failed", Duration::from_secs(30)).await;
    assert!(failed["failure"]["reason"].as_str().unwrap().contains("too slow for me"), "{failed}");
    assert_eq!((failed["failure"]["retryable"].as_bool(), failed["status"]["attempt"].as_u64()), (Some(false), Some(1)), "a refusal is not retried: {failed}");
    assert!(failed["receipt_id"].is_null(), "{failed}");
    let wallet = &c.balances(&client).await.unwrap()["wallet"];
    let number = |v: &Value| v.as_str().unwrap().parse::<f64>().unwrap();
    assert_eq!((number(&wallet["held"]), number(&wallet["available"])), (0.0, 100.0), "the hold is voided: {wallet}");

    std::fs::write(&config, r#"quality_check = ["sh", "-c", "cat >/dev/null; exit 0"]"#).unwrap();
    let accepted = c.submit_job(&job(spec.clone(), "10"), "q-accepted").await.unwrap();
    let done = wait_for_state(&c, accepted["job_id"].as_str().unwrap(), "completed", Duration::from_secs(30)).await;
    assert!(done["receipt_id"].is_string(), "{done}");

    std::fs::write(&config, "# no check\n").unwrap();
    let unchecked = c.submit_job(&job(spec.clone(), "10"), "q-none").await.unwrap();
    wait_for_state(&c, unchecked["job_id"].as_str().unwrap(), "completed", Duration::from_secs(30)).await;

    std::fs::write(&config, "quality_check = [").unwrap();
    let broken = c.submit_job(&job(spec, "10"), "q-broken").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let j = c.job(broken["job_id"].as_str().unwrap()).await.unwrap();
        assert_ne!(j["status"]["state"], "completed", "an unreadable check never lets a result through: {j}");
        // Failed retryably: queued again (or failed for good once its attempts are used).
        if j["failure"]["retryable"] == true {
            assert!(j["failure"]["reason"].as_str().unwrap().contains("quality check failed"), "{j}");
            break;
        }
        assert!(Instant::now() < deadline, "{j}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(true).unwrap();
    let stats = running.await.unwrap().unwrap();
    assert_eq!(stats.completed, 2);
}
