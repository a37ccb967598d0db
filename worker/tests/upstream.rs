//! Upstream models end to end: a real OpenAI-compatible server we did not write
//! (llama-cpp-python's, from PyPI, serving the default GGUF on the CPU) behind the worker. A
//! `text_generation` job submitted through the API is forwarded to it by the real worker loop,
//! and the answer, its token counts and its receipt are checked against the server asked
//! directly with the same request.
//!
//! Needs AITBC_TEST_MODEL (the .gguf) and AITBC_TEST_PYTHON (a python with
//! `llama-cpp-python[server]`), both from scripts/setup-inference.sh. Without them the test skips
//! loudly, or fails under CI=true.

mod common;

use aitbc_client::Client;
use aitbc_core::receipt::{Receipt, UnitType};
use aitbc_core::signing::{KeySet, NamedSigningKey};
use aitbc_core::values::{KeyId, ListingId, ModelName, WorkerId};
use aitbc_worker::agent::{Agent, AgentConfig};
use aitbc_worker::models::Models;
use aitbc_worker::upstream::UpstreamConfig;
use common::marketplace;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the server may take to load the model and answer its model list.
const SERVER_START_S_MAX: u64 = 60;

fn missing(what: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{what} (required under CI=true)");
    }
    eprintln!("skipped: {what}");
}

/// The server process, killed when the test ends however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn start_server(python: &str, model: &PathBuf, alias: &str) -> (Server, String) {
    let port = free_port();
    let child = Command::new(python)
        .args(["-m", "llama_cpp.server", "--model"])
        .arg(model)
        .args(["--model_alias", alias, "--host", "127.0.0.1", "--port", &port.to_string(), "--n_ctx", "2048", "--n_threads", "2", "--seed", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python runs llama_cpp.server");
    let server = Server(child);
    let base = format!("http://127.0.0.1:{port}/v1");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(SERVER_START_S_MAX);
    loop {
        if let Ok(r) = http.get(format!("{base}/models")).send().await {
            if r.status().is_success() {
                return (server, base);
            }
        }
        assert!(Instant::now() < deadline, "llama_cpp.server did not answer within {SERVER_START_S_MAX} s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_text_job_on_an_upstream_model_is_answered_metered_and_receipted_from_the_servers_usage() {
    let (Some(python), Some(model)) = (std::env::var("AITBC_TEST_PYTHON").ok(), std::env::var_os("AITBC_TEST_MODEL").map(PathBuf::from)) else {
        return missing("AITBC_TEST_PYTHON or AITBC_TEST_MODEL is not set");
    };
    let has_server = Command::new(&python).args(["-c", "import llama_cpp.server.app, uvicorn"]).status().is_ok_and(|s| s.success());
    if !has_server {
        return missing("the python lacks llama-cpp-python[server] (scripts/setup-inference.sh installs it)");
    }
    let alias = "smollm2:135m";
    let (_server, base) = start_server(&python, &model, alias).await;

    // The worker's models: one the server lists, one it does not (not advertised).
    let mut models = Models::default();
    let good = UpstreamConfig { name: ModelName::parse(alias).unwrap(), base_url: base.clone(), model: None };
    let absent = UpstreamConfig { name: ModelName::parse("llama3.2").unwrap(), base_url: base.clone(), model: Some("no-such-model".into()) };
    let down = UpstreamConfig { name: ModelName::parse("codellama").unwrap(), base_url: format!("http://127.0.0.1:{}/v1", free_port()), model: None };
    models.add_upstreams(&[good, absent, down]).await;
    assert_eq!(models.names(), vec![ModelName::parse(alias).unwrap()], "only the model the server lists is served");

    // The marketplace, a provider whose worker serves the upstream model, a funded client.
    let m = marketplace().await;
    let anon = Client::new(&m.api, None);
    let opened = anon.open_account("provider").await.unwrap();
    let provider = anon.with_key(opened["api_key"].as_str().unwrap());
    let key = NamedSigningKey::from_seed(KeyId::parse("upstream-test-key").unwrap(), [13; 32]);
    provider.register_key(&key.public()).await.unwrap();
    let listing = provider
        .create_listing(&json!({"name": "Upstream-Box", "memory_gib": 8, "cuda_version": "12.4", "base_price": "0.05", "region": "us-west", "models": [alias]}))
        .await
        .unwrap();
    let gpu_id = ListingId::parse(listing["gpu_id"].as_str().unwrap()).unwrap();
    let opened = anon.open_account("client").await.unwrap();
    let client = anon.with_key(opened["api_key"].as_str().unwrap());
    let address = opened["address"].as_str().unwrap().to_string();
    client.deposit(&address, "100", "fund").await.unwrap();

    let config = AgentConfig {
        worker_id: WorkerId::parse("wrk-upstream").unwrap(),
        listings: vec![gpu_id.clone()],
        max_concurrent_jobs: 1,
        lease_ms: 20_000,
        heartbeat_interval_ms: 1_000,
        poll_wait_ms: 200,
        grace_ms: 5_000,
    };
    let backends = vec![aitbc_worker::select(aitbc_worker::BackendChoice::Cpu, 0).unwrap()];
    let agent = Agent::new(provider.clone(), m.queue.clone(), key.clone(), config, backends).unwrap().with_models(Arc::new(models));
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(async move { agent.run(shutdown).await });

    // The worker's heartbeat advertises the model; then a chat job goes through the API.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let view: Value = anon.get(&format!("/v1/listings/{gpu_id}")).await.unwrap();
        if view["loaded_models"].as_array().is_some_and(|m| m.iter().any(|n| n == alias)) {
            break;
        }
        assert!(Instant::now() < deadline, "the listing never served {alias}: {view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let messages = json!([{"role": "system", "content": "Answer concisely."}, {"role": "user", "content": "What is the capital of France?"}]);
    let spec = json!({"kind": "text_generation", "model": alias, "messages": messages, "max_tokens": 16, "temperature": 0.0, "seed": 0});
    let submitted = client.submit_job(&json!({"model": alias, "units": "60", "region": "us-west", "spec": spec}), "upstream-1").await.unwrap();
    let job_id = submitted["job_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let job = client.job(&job_id).await.unwrap();
        match job["status"]["state"].as_str() {
            Some("completed") => break job,
            Some("failed") => panic!("the upstream job failed: {job}"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "job {job_id} unfinished: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // The server asked directly, with the same request, gives the same answer and usage.
    let direct: Value = reqwest::Client::new()
        .post(format!("{base}/chat/completions"))
        .json(&json!({"model": alias, "messages": messages, "max_tokens": 16, "temperature": 0.0, "top_p": 1.0, "seed": 0, "stream": false}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = &done["output"]["text"];
    assert_eq!(text["text"], direct["choices"][0]["message"]["content"], "{done}");
    assert!(text["text"].as_str().unwrap().contains("Paris"), "{text}");
    assert_eq!(text["prompt_tokens"], direct["usage"]["prompt_tokens"]);
    assert_eq!(text["completion_tokens"], direct["usage"]["completion_tokens"]);
    assert_eq!(text["device"], format!("upstream:{base}"));
    assert_eq!(done["output"]["backend"], "upstream");

    // The receipt: wall-clock seconds of the server's answer, the server's token counts, signed
    // by the provider's registered key.
    let receipt: Receipt = client.get(&format!("/v1/receipts/{}", done["receipt_id"].as_str().unwrap())).await.unwrap();
    let keys = KeySet::from_document(&anon.keys().await.unwrap()).unwrap();
    assert_eq!(receipt.verify(&keys), Ok(()));
    assert_eq!(receipt.body.unit_type, UnitType::WallSeconds);
    assert_eq!(receipt.body.version, 2);
    assert_eq!((receipt.body.prompt_tokens, receipt.body.completion_tokens), (text["prompt_tokens"].as_u64().map(|n| n as u32), text["completion_tokens"].as_u64().map(|n| n as u32)));
    let units_ms = receipt.body.units.millis();
    assert_eq!(units_ms, done["output"]["device_ms"].as_u64().unwrap(), "the metered time is the request's");
    assert!((1..=60_000).contains(&units_ms), "{units_ms} ms");

    stop.send(true).unwrap();
    let stats = running.await.unwrap().unwrap();
    assert_eq!(stats.completed, 1);
}
