//! The HTTP API, started for real on port 0 and spoken to over HTTP: the whole flow, the
//! authorization matrix, bad input on every endpoint (with the state checked unchanged),
//! idempotency, and the OpenAPI document. One suite, run on SQLite and on DynamoDB + SQS
//! (moto_server).

use aitbc_core::config::MarketConfig;
use aitbc_core::money::GpuMillis;
use aitbc_core::signing::NamedSigningKey;
use aitbc_core::values::KeyId;
use aitbc_functions::{local_router, AppState};
use aitbc_market::{Market, Settings, SystemClock};
use aitbc_store::conformance::Backends;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;

struct App {
    base: String,
    /// The market behind the server, for what no route does (running settlement now).
    market: Market,
    http: reqwest::Client,
    _backends: Box<dyn Backends>,
}

async fn spawn(backends: Box<dyn Backends>) -> App {
    let store = backends.store().await;
    let queue = backends.queue(aitbc_store::queue_spec()).await;
    let key = NamedSigningKey::from_seed(KeyId::parse("aitbc-market-test").unwrap(), [5; 32]);
    let market = Market::new(store, queue, MarketConfig::default(), Settings::default(), key, Arc::new(SystemClock));
    market.bootstrap().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = local_router(AppState { market: market.clone() });
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    App { base, market, http: reqwest::Client::new(), _backends: backends }
}

struct Reply {
    status: StatusCode,
    content_type: String,
    replayed: Option<String>,
    body: Value,
}

impl App {
    async fn call(&self, method: Method, path: &str, key: Option<&str>, body: Option<Value>, idem: Option<&str>) -> Reply {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        if let Some(idem) = idem {
            req = req.header("Idempotency-Key", idem);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let content_type = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        let replayed = resp.headers().get("idempotent-replayed").map(|v| v.to_str().unwrap().to_string());
        let text = resp.text().await.unwrap();
        let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Reply { status, content_type, replayed, body }
    }

    async fn raw(&self, method: Method, path: &str, key: Option<&str>, body: &'static str, content_type: &str) -> Reply {
        let mut req = self.http.request(method, format!("{}{}", self.base, path)).header("content-type", content_type).body(body);
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let content_type = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        let body = resp.json().await.unwrap_or(Value::Null);
        Reply { status, content_type, replayed: None, body }
    }

    async fn get(&self, path: &str, key: Option<&str>) -> Reply {
        self.call(Method::GET, path, key, None, None).await
    }

    async fn post(&self, path: &str, key: Option<&str>, body: Value) -> Reply {
        self.call(Method::POST, path, key, Some(body), None).await
    }
}

fn assert_problem(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status.as_u16(), status, "{:?}", r.body);
    assert_eq!(r.content_type, "application/problem+json", "{:?}", r.body);
    assert_eq!(r.body["code"], code, "{:?}", r.body);
    assert_eq!(r.body["status"], status);
}

struct Actor {
    address: String,
    key: String,
}

async fn open(app: &App, role: &str) -> Actor {
    let r = app.post("/v1/accounts", None, json!({ "role": role })).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    Actor { address: r.body["address"].as_str().unwrap().into(), key: r.body["api_key"].as_str().unwrap().into() }
}

struct Seller {
    who: Actor,
    signing: NamedSigningKey,
    gpu_id: String,
}

async fn seller(app: &App, n: u8) -> Seller {
    let who = open(app, "provider").await;
    let signing = NamedSigningKey::from_seed(KeyId::parse(&format!("prov-{}", &who.address[4..16])).unwrap(), [n; 32]);
    let r = app.post("/v1/providers/keys", Some(&who.key), serde_json::to_value(signing.public()).unwrap()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let listing = json!({
        "name": "My-GPU", "memory_gib": 24, "cuda_version": "12.1", "base_price": "0.05",
        "region": "us-west", "models": ["llama3.2"], "count": 2
    });
    let r = app.post("/v1/listings", Some(&who.key), listing).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let gpu_id = r.body["gpu_id"].as_str().unwrap().to_string();
    let r = app.post(&format!("/v1/listings/{gpu_id}/heartbeat"), Some(&who.key), json!({"worker_id": "wrk-1"})).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    Seller { who, signing, gpu_id }
}

async fn buyer(app: &App, amount: &str) -> Actor {
    let who = open(app, "client").await;
    let r = app.call(Method::POST, &format!("/v1/accounts/{}/deposits", who.address), Some(&who.key), Some(json!({"amount": amount})), Some("fund-1")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    who
}

fn job_body() -> Value {
    json!({ "model": "llama3.2", "units": "2.5", "region": "us-west", "spec": {"kind": "vector_add", "n": 1024, "seed": 1} })
}

fn signed_receipt(job: &Value, s: &Seller, units_ms: u64) -> Value {
    // The job as the API served it; the market's one receipt builder fills the body from it.
    let job: aitbc_market::jobs::JobRecord = serde_json::from_value(job.clone()).unwrap();
    let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let metered = aitbc_core::receipt::Metered { units: GpuMillis::from_millis(units_ms), unit_type: aitbc_core::receipt::UnitType::CpuSeconds, tokens: None };
    let body = job.receipt_body(metered, now_s - 1, now_s).unwrap();
    serde_json::to_value(body.sign(&s.signing).unwrap()).unwrap()
}

fn completion(job: &Value, s: &Seller, worker: &str) -> Value {
    json!({
        "worker_id": worker,
        "receipt": signed_receipt(job, s, 1_500),
        "output": {"checksum": "ab", "backend": "cpu", "device_ms": 1500, "wall_ms": 1600}
    })
}

/// The OpenAPI document is public, JSON, version 3.1, and documents the route it is served at.
pub async fn the_openapi_document_is_served(backends: Box<dyn Backends>) {
    let app = spawn(backends).await;
    let r = app.get("/v1/openapi.json", None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.content_type, "application/json");
    assert!(r.body["openapi"].as_str().is_some_and(|v| v.starts_with("3.1.")), "{}", r.body["openapi"]);
    assert!(r.body["paths"]["/v1/openapi.json"]["get"].is_object());
    assert!(r.body["paths"]["/v1/jobs"]["post"]["security"].is_array());
}

pub async fn the_guides_flow_over_http(backends: Box<dyn Backends>) {
    let app = spawn(backends).await;
    let s = seller(&app, 1).await;
    let c = buyer(&app, "100").await;

    let r = app.get("/v1/listings?region=us-west&limit=100&available=true", None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(r.body["items"].as_array().unwrap().iter().any(|l| l["gpu_id"] == s.gpu_id.as_str()));
    let r = app.get("/v1/rate-card", None).await;
    assert_eq!(r.body["models"][0]["model"], "codellama");

    let q = app.post("/v1/quotes", None, json!({"model": "llama3.2", "units": "2.5", "region": "us-west"})).await;
    assert_eq!(q.status, StatusCode::OK, "{:?}", q.body);
    assert_eq!(q.body["terms"]["gpu_id"], s.gpu_id.as_str());
    assert_eq!(q.body["terms"]["max_price"], "4");

    let submit = json!({ "quote": q.body, "spec": {"kind": "vector_add", "n": 1024, "seed": 1} });
    let job = app.call(Method::POST, "/v1/jobs", Some(&c.key), Some(submit), Some("job-1")).await;
    assert_eq!(job.status, StatusCode::CREATED, "{:?}", job.body);
    let job_id = job.body["job_id"].as_str().unwrap().to_string();
    let bal = app.get(&format!("/v1/accounts/{}", c.address), Some(&c.key)).await;
    assert_eq!(bal.body["wallet"]["held"], "4");

    let claimed = app.post(&format!("/v1/jobs/{job_id}/claim"), Some(&s.who.key), json!({"worker_id": "wrk-1"})).await;
    assert_eq!(claimed.status, StatusCode::OK, "{:?}", claimed.body);
    let hb = app.post(&format!("/v1/jobs/{job_id}/heartbeat"), Some(&s.who.key), json!({"worker_id": "wrk-1", "lease_ms": 60000})).await;
    assert_eq!(hb.status, StatusCode::OK, "{:?}", hb.body);
    let done = app.post(&format!("/v1/jobs/{job_id}/complete"), Some(&s.who.key), completion(&claimed.body, &s, "wrk-1")).await;
    assert_eq!(done.status, StatusCode::OK, "{:?}", done.body);
    let receipt = done.body["receipt"].clone();
    assert!(receipt["countersignature"].is_object());

    let result = app.get(&format!("/v1/jobs/{job_id}/result"), Some(&c.key)).await;
    assert_eq!(result.body["output"]["checksum"], "ab");
    let list = app.get(&format!("/v1/receipts?client={}&limit=10", c.address), Some(&c.key)).await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
    let rid = receipt["receipt_id"].as_str().unwrap();
    let one = app.get(&format!("/v1/receipts/{rid}"), Some(&s.who.key)).await;
    assert_eq!(one.body, receipt);
    let verified = app.post("/v1/receipts/verify", None, receipt.clone()).await;
    assert_eq!(verified.body["valid"], true, "{:?}", verified.body);
    let mut forged = receipt.clone();
    forged["price"] = json!("100");
    let verified = app.post("/v1/receipts/verify", None, forged).await;
    assert_eq!(verified.body["valid"], false);
    let keys = app.get("/v1/keys", None).await;
    let ids: Vec<&str> = keys.body["keys"].as_array().unwrap().iter().map(|k| k["key_id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"aitbc-market-test") && ids.contains(&s.signing.key_id.as_str()), "{ids:?}");

    let status = app.get(&format!("/v1/listings/{}/status", s.gpu_id), None).await;
    assert_eq!((status.body["completed_jobs"].clone(), status.body["online"].clone()), (json!(1), json!(true)));
    let earnings = app.get(&format!("/v1/listings/{}/earnings?period=24h", s.gpu_id), Some(&s.who.key)).await;
    assert_eq!(earnings.status, StatusCode::OK, "{:?}", earnings.body);
    assert_eq!(earnings.body["jobs"], 1);
    assert_eq!(earnings.body["gross"], "2.4", "1.5 GPU-seconds at 1.6");
    let upd = app.call(Method::PATCH, &format!("/v1/listings/{}", s.gpu_id), Some(&s.who.key), Some(json!({"strategy": "peak-maximizer"})), None).await;
    assert_eq!(upd.body["strategy"], "peak-maximizer");
    let market = app.get("/v1/market?region=us-west", None).await;
    assert_eq!(market.body[0]["online"], 1, "{:?}", market.body);
}

pub async fn every_mutating_endpoint_authenticates_and_authorizes(backends: Box<dyn Backends>) {
    let app = spawn(backends).await;
    let s = seller(&app, 1).await;
    let other = seller(&app, 2).await;
    let c = buyer(&app, "100").await;
    let job = app.call(Method::POST, "/v1/jobs", Some(&c.key), Some(job_body()), Some("j")).await;
    let job_id = job.body["job_id"].as_str().unwrap().to_string();
    let gpu = &s.gpu_id;
    let worker = json!({"worker_id": "wrk-1"});
    let mutating: Vec<(Method, String, Value)> = vec![
        (Method::POST, "/v1/providers/keys".into(), serde_json::to_value(s.signing.public()).unwrap()),
        (Method::POST, "/v1/listings".into(), json!({})),
        (Method::PATCH, format!("/v1/listings/{gpu}"), json!({"strategy": "dynamic"})),
        (Method::DELETE, format!("/v1/listings/{gpu}"), Value::Null),
        (Method::POST, format!("/v1/listings/{gpu}/heartbeat"), worker.clone()),
        (Method::POST, format!("/v1/accounts/{}/deposits", c.address), json!({"amount": "1"})),
        (Method::POST, format!("/v1/accounts/{}/withdrawals", c.address), json!({"amount": "1"})),
        (Method::POST, "/v1/jobs".into(), job_body()),
        (Method::POST, format!("/v1/jobs/{job_id}/cancel"), Value::Null),
        (Method::POST, format!("/v1/jobs/{job_id}/claim"), worker.clone()),
        (Method::POST, format!("/v1/jobs/{job_id}/start"), worker.clone()),
        (Method::POST, format!("/v1/jobs/{job_id}/heartbeat"), worker.clone()),
        (Method::POST, format!("/v1/jobs/{job_id}/complete"), json!({})),
        (Method::POST, format!("/v1/jobs/{job_id}/fail"), json!({"worker_id": "wrk-1", "reason": "x", "retryable": false})),
        (Method::POST, format!("/v1/jobs/{job_id}/release"), worker.clone()),
        (Method::POST, format!("/v1/jobs/{job_id}/rating"), json!({"rating": 5})),
    ];
    for (method, path, body) in &mutating {
        let r = app.call(method.clone(), path, None, (!body.is_null()).then(|| body.clone()), Some("k")).await;
        assert_problem(&r, 401, "unauthenticated");
        let r = app.call(method.clone(), path, Some("aitbc_sk_forged"), (!body.is_null()).then(|| body.clone()), None).await;
        assert_problem(&r, 401, "unauthenticated");
    }
    // Another provider touches neither this provider's listing nor its jobs.
    let foreign: Vec<(Method, String, Value)> = vec![
        (Method::PATCH, format!("/v1/listings/{gpu}"), json!({"strategy": "dynamic"})),
        (Method::DELETE, format!("/v1/listings/{gpu}"), Value::Null),
        (Method::POST, format!("/v1/listings/{gpu}/heartbeat"), worker.clone()),
        (Method::POST, format!("/v1/jobs/{job_id}/claim"), worker.clone()),
        (Method::POST, format!("/v1/jobs/{job_id}/cancel"), Value::Null),
    ];
    for (method, path, body) in &foreign {
        let r = app.call(method.clone(), path, Some(&other.who.key), (!body.is_null()).then(|| body.clone()), None).await;
        assert_problem(&r, 403, "forbidden");
    }
    let r = app.get(&format!("/v1/listings/{gpu}/earnings"), Some(&other.who.key)).await;
    assert_problem(&r, 403, "forbidden");
    // A client cannot act as a provider, fund someone else, or open an admin account.
    let r = app.post(&format!("/v1/jobs/{job_id}/claim"), Some(&c.key), worker.clone()).await;
    assert_problem(&r, 403, "forbidden");
    let r = app.post(&format!("/v1/accounts/{}/deposits", s.who.address), Some(&c.key), json!({"amount": "1"})).await;
    assert_problem(&r, 403, "forbidden");
    let r = app.post("/v1/accounts", Some(&c.key), json!({"role": "admin"})).await;
    assert_problem(&r, 403, "forbidden");
    let r = app.get(&format!("/v1/accounts/{}", s.who.address), Some(&c.key)).await;
    assert_problem(&r, 403, "forbidden");
    // The provider's own worker that does not hold the lease cannot complete.
    let claimed = app.post(&format!("/v1/jobs/{job_id}/claim"), Some(&s.who.key), worker.clone()).await;
    assert_eq!(claimed.status, StatusCode::OK);
    let r = app.post(&format!("/v1/jobs/{job_id}/complete"), Some(&s.who.key), completion(&claimed.body, &s, "wrk-2")).await;
    assert_problem(&r, 403, "forbidden");
    // Nothing above changed the listing or the job.
    let l = app.get(&format!("/v1/listings/{gpu}"), None).await;
    assert_eq!(l.body["strategy"], "market-balance");
    let j = app.get(&format!("/v1/jobs/{job_id}"), Some(&c.key)).await;
    assert_eq!(j.body["status"]["state"], "claimed");
}

pub async fn bad_input_is_a_problem_and_changes_nothing(backends: Box<dyn Backends>) {
    let app = spawn(backends).await;
    let s = seller(&app, 1).await;
    let c = buyer(&app, "10").await;
    let snapshot = || async {
        let bal = app.get(&format!("/v1/accounts/{}", c.address), Some(&c.key)).await.body;
        let listings = app.get(&format!("/v1/listings?provider={}", s.who.address), None).await.body["items"].as_array().unwrap().len();
        let jobs = app.get("/v1/jobs", Some(&c.key)).await.body["items"].as_array().unwrap().len();
        let ledger = app.get(&format!("/v1/accounts/{}/ledger", c.address), Some(&c.key)).await.body["items"].as_array().unwrap().len();
        (bal, listings, jobs, ledger)
    };
    let before = snapshot().await;
    let long = "x".repeat(300);
    let listing = |patch: Value| {
        let mut base = json!({"name": "My-GPU", "memory_gib": 24, "cuda_version": "12.1", "base_price": "0.05", "region": "us-west"});
        base.as_object_mut().unwrap().extend(patch.as_object().unwrap().clone());
        base
    };
    let cases: Vec<(&str, Value, &str, u16, &str)> = vec![
        ("/v1/listings", listing(json!({"memory_gib": -1})), "provider", 400, "invalid_request"),
        ("/v1/listings", listing(json!({"memory_gib": 0})), "provider", 400, "invalid_request"),
        ("/v1/listings", listing(json!({"memory_gib": "24"})), "provider", 400, "invalid_request"),
        ("/v1/listings", listing(json!({"base_price": 0.05})), "provider", 400, "invalid_request"),
        ("/v1/listings", listing(json!({"base_price": "0"})), "provider", 400, "invalid_request"),
        ("/v1/listings", listing(json!({"base_price": "99999999999999999999"})), "provider", 400, "invalid_request"),
        ("/v1/listings", listing(json!({"region": "mars-north"})), "provider", 400, "invalid_request"),
        ("/v1/listings", listing(json!({"models": ["gpt-9"]})), "provider", 400, "invalid_request"),
        ("/v1/listings", listing(json!({"name": long})), "provider", 400, "invalid_request"),
        ("/v1/listings", listing(json!({"cuda_version": "twelve"})), "provider", 400, "invalid_request"),
        ("/v1/listings", listing(json!({"count": 0})), "provider", 400, "invalid_request"),
        ("/v1/listings", listing(json!({"count": 1e12})), "provider", 400, "invalid_request"),
        ("/v1/listings", listing(json!({"strategy": "get-rich"})), "provider", 400, "invalid_request"),
        ("/v1/listings", listing(json!({"surprise": 1})), "provider", 400, "invalid_request"),
        ("/v1/quotes", json!({"model": "gpt-9", "units": "1", "region": "us-west"}), "none", 400, "invalid_request"),
        ("/v1/quotes", json!({"units": "0", "region": "us-west"}), "none", 400, "invalid_request"),
        ("/v1/quotes", json!({"units": "-1", "region": "us-west"}), "none", 400, "invalid_request"),
        ("/v1/quotes", json!({"units": "1", "region": "atlantis"}), "none", 400, "invalid_request"),
        ("/v1/jobs", json!({"units": "2.5", "region": "us-west", "spec": {"kind": "vector_add", "n": 0, "seed": 1}}), "client", 400, "invalid_request"),
        ("/v1/jobs", json!({"units": "2.5", "region": "us-west", "spec": {"kind": "teleport"}}), "client", 400, "invalid_request"),
        ("/v1/jobs", json!({"model": "llama3.2", "units": "100000", "region": "us-west", "spec": {"kind": "vector_add", "n": 8, "seed": 1}}), "client", 402, "insufficient_funds"),
        ("/v1/accounts", json!({"role": "emperor"}), "none", 400, "invalid_request"),
    ];
    for (path, body, who, status, code) in cases {
        let key = match who {
            "provider" => Some(s.who.key.as_str()),
            "client" => Some(c.key.as_str()),
            _ => None,
        };
        let r = app.call(Method::POST, path, key, Some(body.clone()), Some(&format!("bad-{}", uuid_like(&body)))).await;
        assert_problem(&r, status, code);
    }
    for (path, amount) in [("deposits", "-5"), ("deposits", "0"), ("deposits", "1.0000000001"), ("withdrawals", "1000")] {
        let r = app.post(&format!("/v1/accounts/{}/{path}", c.address), Some(&c.key), json!({"amount": amount})).await;
        assert!(r.status.is_client_error(), "{path} {amount}: {:?}", r.body);
        assert_eq!(r.content_type, "application/problem+json");
    }
    let r = app.raw(Method::POST, "/v1/listings", Some(&s.who.key), "{not json", "application/json").await;
    assert_problem(&r, 400, "invalid_request");
    let r = app.raw(Method::POST, "/v1/listings", Some(&s.who.key), "{}", "text/plain").await;
    assert_problem(&r, 415, "unsupported_media_type");
    let huge = json!({"spec": {"kind": "gemm", "m": 512, "n": 512, "k": 512, "dtype": "f32", "seed": 1, "a": {"from": "inline", "values": vec![1.0; 100_000]}}});
    let r = app.call(Method::POST, "/v1/jobs", Some(&c.key), Some(huge), Some("huge")).await;
    assert_problem(&r, 413, "payload_too_large");
    for path in ["/v1/jobs/not-a-job", "/v1/receipts/rcpt-", "/v1/listings/gpu-/status"] {
        let r = app.get(path, Some(&c.key)).await;
        assert_problem(&r, 400, "invalid_request");
    }
    let r = app.get("/v1/jobs/job-doesnotexist", Some(&c.key)).await;
    assert_problem(&r, 404, "not_found");
    let r = app.get("/v1/nowhere", None).await;
    assert_problem(&r, 404, "not_found");
    let r = app.get("/v1/listings?region=us-west&limit=x", None).await;
    assert_problem(&r, 400, "invalid_request");
    let r = app.get("/v1/listings?region=us-west&cursor=garbage", None).await;
    assert_problem(&r, 400, "invalid_request");
    assert_eq!(snapshot().await, before, "bad requests changed the state");
}

fn uuid_like(v: &Value) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.to_string().hash(&mut h);
    format!("{:016x}", h.finish())
}

pub async fn idempotency_replays_refuses_and_serializes(backends: Box<dyn Backends>) {
    let app = spawn(backends).await;
    let _s = seller(&app, 1).await;
    let c = buyer(&app, "100").await;
    let first = app.call(Method::POST, "/v1/jobs", Some(&c.key), Some(job_body()), Some("same")).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.replayed.as_deref(), Some("false"));
    let again = app.call(Method::POST, "/v1/jobs", Some(&c.key), Some(job_body()), Some("same")).await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.replayed.as_deref(), Some("true"));
    assert_eq!(again.body, first.body);
    let mut other = job_body();
    other["units"] = json!("1");
    let conflict = app.call(Method::POST, "/v1/jobs", Some(&c.key), Some(other), Some("same")).await;
    assert_problem(&conflict, 422, "idempotency_key_reused");
    let missing = app.call(Method::POST, "/v1/jobs", Some(&c.key), Some(job_body()), None).await;
    assert_problem(&missing, 400, "invalid_request");
    // Concurrent duplicates: every answer is the one job (created, replayed) or a conflict.
    let calls = (0..8).map(|_| app.call(Method::POST, "/v1/jobs", Some(&c.key), Some(job_body()), Some("race")));
    let replies = futures_join(calls).await;
    let ids: std::collections::HashSet<String> = replies
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .map(|r| r.body["job_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 1, "one job for one key");
    for r in &replies {
        assert!(r.status == StatusCode::CREATED || r.status == StatusCode::CONFLICT, "{:?}", r.body);
    }
    // Deposits under one key apply once.
    for _ in 0..3 {
        let r = app.call(Method::POST, &format!("/v1/accounts/{}/deposits", c.address), Some(&c.key), Some(json!({"amount": "5"})), Some("dep")).await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let bal = app.get(&format!("/v1/accounts/{}", c.address), Some(&c.key)).await;
    // 100 + 5 deposited, minus two holds of 4.
    assert_eq!(bal.body["wallet"]["available"], "97", "{:?}", bal.body);
    assert_eq!(bal.body["wallet"]["held"], "8");
}

/// The outside audit's findings (issue 13), each checked over HTTP: every one of these failed
/// before it was fixed.
pub async fn the_outside_audit_s_findings_stay_fixed(backends: Box<dyn Backends>) {
    let app = spawn(backends).await;
    let s = seller(&app, 1).await;
    let c = buyer(&app, "100").await;
    let job = app.call(Method::POST, "/v1/jobs", Some(&c.key), Some(job_body()), Some("audit-job")).await;
    assert_eq!(job.status, StatusCode::CREATED, "{:?}", job.body);
    let job_id = job.body["job_id"].as_str().unwrap().to_string();
    let snapshot = || async {
        let client = app.get(&format!("/v1/accounts/{}", c.address), Some(&c.key)).await.body;
        let provider = app.get(&format!("/v1/accounts/{}", s.who.address), Some(&s.who.key)).await.body;
        let ledger = app.get(&format!("/v1/accounts/{}/ledger", c.address), Some(&c.key)).await.body["items"].as_array().unwrap().len();
        let listing = app.get(&format!("/v1/listings/{}", s.gpu_id), None).await.body;
        let job = app.get(&format!("/v1/jobs/{job_id}"), Some(&c.key)).await.body;
        (client, provider, ledger, listing, job)
    };
    let before = snapshot().await;

    // 1. A money string with a multi-byte character where the length limit falls: a 400 that
    //    names the field, not a panic and a dropped connection, wherever money is parsed.
    let money = format!("{}é", "1".repeat(39));
    let cases = [
        ("/v1/quotes", None, json!({"units": money, "region": "us-west"}), "units"),
        ("/v1/accounts", None, json!({"role": "client", "spending_limit": money}), "spending_limit"),
        (&*format!("/v1/accounts/{}/deposits", c.address), Some(c.key.as_str()), json!({"amount": money}), "amount"),
        (&*format!("/v1/accounts/{}/withdrawals", c.address), Some(c.key.as_str()), json!({"amount": money}), "amount"),
        ("/v1/listings", Some(s.who.key.as_str()), json!({"name": "G", "memory_gib": 24, "cuda_version": "12.1", "base_price": money, "region": "us-west"}), "base_price"),
    ];
    for (path, key, body, field) in cases {
        let r = app.post(path, key, body).await;
        assert_problem(&r, 400, "invalid_request");
        assert_eq!(r.body["field"], field, "{path}: {:?}", r.body);
    }

    // 2. No request body may be anything but a JSON object: every documented operation with a
    //    body refuses an array (and other JSON values) with 400, as client and as provider.
    let document = app.get("/v1/openapi.json", None).await.body;
    let mut refused = 0;
    for (template, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if operation.get("requestBody").is_none() {
                continue;
            }
            let path = template
                .replace("{address}", &c.address)
                .replace("{gpu_id}", &s.gpu_id)
                .replace("{job_id}", &job_id);
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            for body in [json!(["1"]), json!([s.gpu_id, "wrk-1"]), json!("1"), json!(1), json!(null)] {
                for key in [Some(c.key.as_str()), Some(s.who.key.as_str())] {
                    let r = app.call(method.clone(), &path, key, Some(body.clone()), None).await;
                    assert_problem(&r, 400, "invalid_request");
                    assert_eq!(r.body["field"], "body", "{method} {path} {body}: {:?}", r.body);
                    refused += 1;
                }
            }
        }
    }
    assert!(refused >= 15 * 10, "only {refused} refusals: the document lists too few bodies");

    // 3. The Idempotency-Key of an anonymous signup: the same key and body replay the first
    //    account; a malformed key is refused; another body under the key is another account.
    let signup = |key: &'static str, role: &'static str| app.call(Method::POST, "/v1/accounts", None, Some(json!({"role": role})), Some(key));
    let first = signup("signup-7f3c9a1e-aaaa", "client").await;
    let again = signup("signup-7f3c9a1e-aaaa", "client").await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    assert_eq!(again.status, StatusCode::CREATED, "{:?}", again.body);
    assert_eq!(first.replayed.as_deref(), Some("false"));
    assert_eq!(again.replayed.as_deref(), Some("true"));
    assert_eq!(first.body["address"], again.body["address"]);
    let other = signup("signup-7f3c9a1e-aaaa", "provider").await;
    assert_eq!(other.status, StatusCode::CREATED, "{:?}", other.body);
    assert_ne!(other.body["address"], first.body["address"]);
    let malformed = signup("a b", "client").await;
    assert_problem(&malformed, 400, "invalid_request");
    assert_eq!(malformed.body["field"], "Idempotency-Key");

    // 4. A replayed deposit says so in its body as well as its header.
    let deposits = format!("/v1/accounts/{}/deposits", c.address);
    let deposit = |key| app.call(Method::POST, &deposits, Some(&c.key), Some(json!({"amount": "1"})), Some(key));
    let first = deposit("audit-deposit").await;
    let again = deposit("audit-deposit").await;
    assert_eq!((first.body["replayed"].clone(), again.body["replayed"].clone()), (json!(false), json!(true)));
    assert_eq!(again.replayed.as_deref(), Some("true"));
    assert_eq!(first.body["transfer_id"], again.body["transfer_id"]);
    let withdrawn = app.call(Method::POST, &format!("/v1/accounts/{}/withdrawals", c.address), Some(&c.key), Some(json!({"amount": "1"})), Some("audit-undo")).await;
    assert_eq!(withdrawn.status, StatusCode::CREATED, "{:?}", withdrawn.body);

    // 6. No capacity: 503 with a Retry-After a client can wait on.
    let resp = app.http.post(format!("{}/v1/quotes", app.base)).json(&json!({"units": "1", "region": "ap-south"})).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    assert_eq!(retry.as_deref(), Some(aitbc_functions::error::NO_CAPACITY_RETRY_AFTER_S.to_string().as_str()));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "no_capacity");

    // Nothing above moved money or changed the listing or the job; the deposit was withdrawn
    // again (the ledger has those two entries more).
    let after = snapshot().await;
    assert_eq!(after.0, before.0, "the client's balances");
    assert_eq!(after.1, before.1, "the provider's balances");
    assert_eq!(after.2, before.2 + 2, "the client's ledger: the deposit and its withdrawal");
    assert_eq!((after.3, after.4), (before.3, before.4), "the listing and the job");
}

async fn futures_join<F: std::future::Future<Output = Reply>>(calls: impl Iterator<Item = F>) -> Vec<Reply> {
    let mut set = Vec::new();
    for call in calls {
        set.push(call);
    }
    let mut out = Vec::new();
    // Drive them concurrently on this task.
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = set.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<Reply>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if done[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(r) => done[i] = Some(r),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    out.extend(done.into_iter().map(Option::unwrap));
    out
}

/// Submits, claims and completes one job of `c` on `s`'s listing; answers the receipt.
async fn completed_job(app: &App, s: &Seller, c: &Actor, idem: &str) -> Value {
    let job = app.call(Method::POST, "/v1/jobs", Some(&c.key), Some(job_body()), Some(idem)).await;
    assert_eq!(job.status, StatusCode::CREATED, "{:?}", job.body);
    let job_id = job.body["job_id"].as_str().unwrap().to_string();
    let claimed = app.post(&format!("/v1/jobs/{job_id}/claim"), Some(&s.who.key), json!({"worker_id": "wrk-1"})).await;
    assert_eq!(claimed.status, StatusCode::OK, "{:?}", claimed.body);
    let done = app.post(&format!("/v1/jobs/{job_id}/complete"), Some(&s.who.key), completion(&claimed.body, s, "wrk-1")).await;
    assert_eq!(done.status, StatusCode::OK, "{:?}", done.body);
    done.body["receipt"].clone()
}

/// The explorer's public reads: every receipt without a key, newest first, paged with opaque
/// cursors and bounded pages, filtered; a receipt's job without its spec or result; GPUs,
/// accounts and the market's history; and the pages with their content types and CSP.
pub async fn the_explorer_reads_are_public_paged_and_filtered(backends: Box<dyn Backends>) {
    let app = spawn(backends).await;
    let s = seller(&app, 3).await;
    let (c1, c2) = (buyer(&app, "100").await, buyer(&app, "100").await);
    let mut made = Vec::new();
    for (i, c) in [&c1, &c2, &c1].into_iter().enumerate() {
        made.push(completed_job(&app, &s, c, &format!("explorer-{i}")).await["receipt_id"].as_str().unwrap().to_string());
    }

    let mut seen = Vec::new();
    let mut cursor = String::new();
    for _ in 0..5 {
        let r = app.get(&format!("/v1/explorer/receipts?limit=2{cursor}"), None).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let items = r.body["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|i| i["receipt_id"].as_str().unwrap().to_string()));
        match r.body["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    let mut expected = made.clone();
    expected.sort();
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(sorted, expected, "every receipt once, across pages");

    let only = app.get(&format!("/v1/explorer/receipts?client={}", c2.address), None).await;
    let items = only.body["items"].as_array().unwrap();
    assert_eq!((items.len(), items[0]["receipt_id"].as_str().unwrap()), (1, made[1].as_str()));
    let by_provider = app.get(&format!("/v1/explorer/receipts?provider={}&model=llama3.2", s.who.address), None).await;
    assert_eq!(by_provider.body["items"].as_array().unwrap().len(), 3, "{:?}", by_provider.body);
    let other_model = app.get("/v1/explorer/receipts?model=codellama", None).await;
    assert_eq!(other_model.body["items"].as_array().unwrap().len(), 0);
    let future = app.get("/v1/explorer/receipts?since=4000000000", None).await;
    assert_eq!(future.body["items"].as_array().unwrap().len(), 0);
    assert_problem(&app.get("/v1/explorer/receipts?cursor=bm90LWEta2V5", None).await, 400, "invalid_request");
    assert_problem(&app.get("/v1/explorer/receipts?client=nope", None).await, 400, "invalid_request");
    let big = app.get("/v1/explorer/receipts?limit=100000", None).await;
    assert_eq!(big.status, StatusCode::OK, "a page size above the maximum is clamped");

    let detail = app.get(&format!("/v1/explorer/receipts/{}", made[0]), None).await;
    assert_eq!(detail.status, StatusCode::OK, "{:?}", detail.body);
    assert_eq!(detail.body["receipt"]["receipt_id"], made[0].as_str());
    assert_eq!(detail.body["job"]["state"], "completed");
    assert!(detail.body["job"].get("spec").is_none() && detail.body["job"].get("output").is_none(), "job specs and results stay private");
    assert_eq!(detail.body["due"]["price"], detail.body["receipt"]["price"]);
    assert_problem(&app.get("/v1/explorer/receipts/rcpt-0000", None).await, 404, "not_found");

    let gpus = app.get("/v1/explorer/gpus?region=us-west", None).await;
    let row = gpus.body.as_array().unwrap().iter().find(|g| g["gpu_id"] == s.gpu_id.as_str()).expect("the listing");
    assert_eq!((row["online"].clone(), row["completed_jobs"].clone()), (json!(true), json!(3)));
    assert!(row["prices"]["llama3.2"].is_string(), "{row:?}");

    let account = app.get(&format!("/v1/explorer/accounts/{}?interval=minute&buckets=10", s.who.address), None).await;
    assert_eq!((account.body["role"].clone(), account.body["receipts"].clone()), (json!("provider"), json!(3)), "{:?}", account.body);
    assert_eq!(account.body["points"].as_array().unwrap().len(), 10);
    let spent = app.get(&format!("/v1/explorer/accounts/{}", c2.address), None).await;
    assert_eq!((spent.body["role"].clone(), spent.body["receipts"].clone()), (json!("client"), json!(1)));
    assert_problem(&app.get(&format!("/v1/explorer/accounts/{}?buckets=1000", c2.address), None).await, 400, "invalid_request");

    let history = app.get("/v1/market/history?interval=minute&buckets=5", None).await;
    assert_eq!(history.status, StatusCode::OK, "{:?}", history.body);
    let series = history.body["series"].as_array().unwrap();
    let counted: u64 = series.iter().flat_map(|s| s["points"].as_array().unwrap()).map(|p| p["receipts"].as_u64().unwrap()).sum();
    assert_eq!((series[0]["region"].clone(), counted), (json!("us-west"), 3));

    let page = app.raw(Method::GET, "/explorer/", None, "", "text/plain").await;
    assert_eq!((page.status, page.content_type.as_str()), (StatusCode::OK, "text/html; charset=utf-8"));
    let script = app.raw(Method::GET, "/explorer/verify.js", None, "", "text/plain").await;
    assert_eq!(script.content_type, "text/javascript; charset=utf-8");
    assert_eq!(app.raw(Method::GET, "/explorer/missing.js", None, "", "text/plain").await.status, StatusCode::NOT_FOUND);
}

/// Submits a job of `c` on listing `gpu_id` and claims it with `s`'s worker; answers the claimed
/// job.
async fn claimed_job_on(app: &App, s: &Seller, c: &Actor, gpu_id: &str, idem: &str) -> Value {
    let mut body = job_body();
    body["gpu_id"] = json!(gpu_id);
    let job = app.call(Method::POST, "/v1/jobs", Some(&c.key), Some(body), Some(idem)).await;
    assert_eq!(job.status, StatusCode::CREATED, "{:?}", job.body);
    let job_id = job.body["job_id"].as_str().unwrap();
    let claimed = app.post(&format!("/v1/jobs/{job_id}/claim"), Some(&s.who.key), json!({"worker_id": "wrk-1"})).await;
    assert_eq!(claimed.status, StatusCode::OK, "{:?}", claimed.body);
    claimed.body
}

/// Settles every completed job now (no grace: nothing is in flight in these tests).
async fn settle_now(app: &App) {
    let options = aitbc_market::settlement::SettleOptions { grace_ms: 0, ..Default::default() };
    app.market.settle(&options, &aitbc_market::settlement::NoProgress).await.unwrap();
}

/// Reputation from measured facts: starts, completions, failures and ratings move the listing's
/// and the provider's counters; a client rates each settled job of its own once; bad ratings
/// are problems that change nothing; routing prefers the better reputation at equal prices.
pub async fn providers_build_reputation_from_measured_facts(backends: Box<dyn Backends>) {
    let app = spawn(backends).await;
    // Listed first, so an id-order tie-break would pick it; its reputation will be the worse.
    let worse = seller(&app, 4).await;
    let better = seller(&app, 5).await;
    let (c, other) = (buyer(&app, "100").await, buyer(&app, "100").await);

    let fresh = app.get(&format!("/v1/providers/{}/reputation", better.who.address), None).await;
    assert_eq!(fresh.status, StatusCode::OK, "{:?}", fresh.body);
    assert_eq!(fresh.body["reputation"]["score_bps"], 5_000, "nothing measured is one half");
    assert_eq!(fresh.body["reputation"]["success_rate_bps"], Value::Null);

    let mut done = Vec::new();
    for i in 0..2 {
        let claimed = claimed_job_on(&app, &better, &c, &better.gpu_id, &format!("good-{i}")).await;
        let job_id = claimed["job_id"].as_str().unwrap().to_string();
        let r = app.post(&format!("/v1/jobs/{job_id}/complete"), Some(&better.who.key), completion(&claimed, &better, "wrk-1")).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        done.push(job_id);
    }
    let claimed = claimed_job_on(&app, &worse, &c, &worse.gpu_id, "bad-0").await;
    let bad_job = claimed["job_id"].as_str().unwrap().to_string();
    let r = app.post(&format!("/v1/jobs/{bad_job}/fail"), Some(&worse.who.key), json!({"worker_id": "wrk-1", "reason": "GPU fell off the bus", "retryable": false})).await;
    assert_eq!((r.status, r.body["status"]["state"].clone()), (StatusCode::OK, json!("failed")), "{:?}", r.body);

    // Rating before settlement: the job is completed, not settled.
    let rate = |job: &str| format!("/v1/jobs/{job}/rating");
    assert_problem(&app.call(Method::POST, &rate(&done[0]), Some(&c.key), Some(json!({"rating": 5})), Some("early")).await, 409, "conflict");
    settle_now(&app).await;

    let before = app.get(&format!("/v1/providers/{}/reputation", better.who.address), None).await.body;
    let facts = &before["reputation"]["facts"];
    assert_eq!((facts["completed"].clone(), facts["started"].clone(), facts["failed"].clone(), facts["ratings"].clone()), (json!(2), json!(2), json!(0), json!(0)), "{before:?}");
    assert_eq!(before["reputation"]["success_rate_bps"], 10_000);
    assert!(before["reputation"]["p95_start_ms"].as_u64().is_some() && before["reputation"]["mean_start_ms"].as_u64().is_some(), "{before:?}");
    assert_eq!(before["listings"][0]["gpu_id"], better.gpu_id.as_str());

    // Bad ratings: problems, and nothing changes.
    assert_problem(&app.post(&rate(&done[0]), Some(&other.key), json!({"rating": 4})).await, 403, "forbidden");
    assert_problem(&app.post(&rate(&done[0]), Some(&better.who.key), json!({"rating": 4})).await, 403, "forbidden");
    for bad in [json!({"rating": 0}), json!({"rating": 6}), json!({"rating": "5"}), json!({"rating": 4.5}), json!({}), json!({"rating": 5, "extra": 1})] {
        assert_problem(&app.post(&rate(&done[0]), Some(&c.key), bad.clone()).await, 400, "invalid_request");
    }
    assert_problem(&app.post(&rate(&bad_job), Some(&c.key), json!({"rating": 1})).await, 409, "conflict");
    assert_problem(&app.post(&rate("job-00000000000000000000000000000000"), Some(&c.key), json!({"rating": 1})).await, 404, "not_found");
    assert_problem(&app.post(&rate(&done[0]), None, json!({"rating": 1})).await, 401, "unauthenticated");
    assert_problem(&app.get(&rate(&done[0]), Some(&c.key)).await, 404, "not_found");
    let unchanged = app.get(&format!("/v1/providers/{}/reputation", better.who.address), None).await.body;
    assert_eq!(unchanged, before, "refused ratings change nothing");

    // Rated once: the same key replays, another key is a conflict.
    let first = app.call(Method::POST, &rate(&done[0]), Some(&c.key), Some(json!({"rating": 5})), Some("rate-1")).await;
    assert_eq!((first.status, first.body["rating"].clone()), (StatusCode::CREATED, json!(5)), "{:?}", first.body);
    let replay = app.call(Method::POST, &rate(&done[0]), Some(&c.key), Some(json!({"rating": 5})), Some("rate-1")).await;
    assert_eq!((replay.status, replay.replayed.as_deref()), (StatusCode::CREATED, Some("true")));
    assert_problem(&app.call(Method::POST, &rate(&done[0]), Some(&c.key), Some(json!({"rating": 1})), Some("rate-2")).await, 409, "conflict");
    assert_problem(&app.post(&rate(&done[0]), Some(&c.key), json!({"rating": 2})).await, 409, "conflict");
    let seen = app.get(&rate(&done[0]), Some(&better.who.key)).await;
    assert_eq!((seen.status, seen.body["rating"].clone(), seen.body["client"].clone()), (StatusCode::OK, json!(5), json!(c.address.as_str())));
    let r = app.call(Method::POST, &rate(&done[1]), Some(&c.key), Some(json!({"rating": 4})), Some("rate-3")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);

    let after = app.get(&format!("/v1/providers/{}/reputation", better.who.address), None).await.body;
    let rep = &after["reputation"];
    assert_eq!((rep["facts"]["ratings"].clone(), rep["facts"]["rating_total"].clone(), rep["mean_rating_centi"].clone()), (json!(2), json!(9), json!(450)), "{after:?}");
    assert!(rep["score_bps"].as_u64().unwrap() > before["reputation"]["score_bps"].as_u64().unwrap(), "good ratings raise the score");
    let listing = app.get(&format!("/v1/listings/{}", better.gpu_id), None).await;
    assert_eq!(listing.body["reputation"], after["listings"][0]["reputation"], "the listing shows its reputation");
    let worse_rep = app.get(&format!("/v1/providers/{}/reputation", worse.who.address), None).await.body;
    assert_eq!((worse_rep["reputation"]["facts"]["failed"].clone(), worse_rep["reputation"]["success_rate_bps"].clone()), (json!(1), json!(0)));
    assert_problem(&app.get("/v1/providers/ait1nobody000000/reputation", None).await, 404, "not_found");
    assert_problem(&app.get("/v1/providers/not-an-address/reputation", None).await, 400, "invalid_request");

    // Equal prices, no load: routing takes the better reputation, not the first listing.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let q = app.post("/v1/quotes", None, json!({"model": "llama3.2", "units": "2.5", "region": "us-west"})).await;
    assert_eq!(q.status, StatusCode::OK, "{:?}", q.body);
    assert_eq!(q.body["terms"]["gpu_id"], better.gpu_id.as_str(), "{:?}", q.body);
}

/// Lists a GPU of `s` with `queue_config`, one job at a time, and heartbeats it.
async fn queued_listing(app: &App, s: &Seller, queue_config: Value) -> Reply {
    let listing = json!({
        "name": "Q-GPU", "memory_gib": 24, "cuda_version": "12.1", "base_price": "0.05", "region": "us-west",
        "models": ["llama3.2"], "count": 1, "queue_config": queue_config
    });
    let r = app.post("/v1/listings", Some(&s.who.key), listing).await;
    if r.status == StatusCode::CREATED {
        let gpu_id = r.body["gpu_id"].as_str().unwrap();
        let hb = app.post(&format!("/v1/listings/{gpu_id}/heartbeat"), Some(&s.who.key), json!({"worker_id": "wrk-1"})).await;
        assert_eq!(hb.status, StatusCode::OK, "{:?}", hb.body);
    }
    r
}

async fn submit_on(app: &App, c: &Actor, gpu: &str, idem: &str, tier: &str) -> Reply {
    let mut body = job_body();
    body["gpu_id"] = json!(gpu);
    body["tier"] = json!(tier);
    app.call(Method::POST, "/v1/jobs", Some(&c.key), Some(body), Some(idem)).await
}

/// A worker's `action` (claim, heartbeat) on `job` with a lease of `lease_ms`.
async fn act(app: &App, s: &Seller, job: &str, action: &str, lease_ms: u64) -> Reply {
    app.post(&format!("/v1/jobs/{job}/{action}"), Some(&s.who.key), json!({"worker_id": "wrk-1", "lease_ms": lease_ms})).await
}

/// Queue configuration per listing: a bounded queue refuses past its size before holding
/// anything; claims follow tier, then weighted fair share, whatever job the message named;
/// graceful preemption tells a lower-tier job to hand back; a timed-out job is retried up to
/// the listing's attempt limit, then fails with its hold voided.
pub async fn listing_queues_are_bounded_ordered_and_preemptible(backends: Box<dyn Backends>) {
    let app = spawn(backends).await;
    let s = seller(&app, 6).await;
    let (a, b) = (buyer(&app, "100").await, buyer(&app, "100").await);
    let listings_of = |who: &str| format!("/v1/listings?provider={who}&limit=100");
    let before = app.get(&listings_of(&s.who.address), None).await.body["items"].as_array().unwrap().len();
    for bad in [
        json!({"max_queue_size": 0}),
        json!({"max_queue_size": 100001}),
        json!({"attempts_max": 0}),
        json!({"preemption": "graceful"}),
        json!({"priority": "lottery"}),
        json!({"max_queue_size": 5, "surprise": true}),
    ] {
        assert_problem(&queued_listing(&app, &s, bad).await, 400, "invalid_request");
    }
    assert_problem(&app.call(Method::PATCH, &format!("/v1/listings/{}", s.gpu_id), Some(&s.who.key), Some(json!({"queue_config": {"max_queue_size": 0}})), None).await, 400, "invalid_request");
    assert_eq!(app.get(&listings_of(&s.who.address), None).await.body["items"].as_array().unwrap().len(), before, "refused listings are not stored");

    let config = json!({"max_queue_size": 3, "priority": "weighted_fair_share", "preemption": "graceful", "attempts_max": 2});
    let r = queued_listing(&app, &s, config.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["queue_config"], config);
    let gpu = r.body["gpu_id"].as_str().unwrap().to_string();
    let id = |r: &Reply| r.body["job_id"].as_str().unwrap().to_string();
    let a1 = submit_on(&app, &a, &gpu, "a1", "basic").await;
    assert_eq!((a1.status, a1.body["status"]["attempts_max"].clone()), (StatusCode::CREATED, json!(2)), "{:?}", a1.body);
    let a2 = submit_on(&app, &a, &gpu, "a2", "basic").await;
    let b1 = submit_on(&app, &b, &gpu, "b1", "basic").await;
    assert_eq!((a2.status, b1.status), (StatusCode::CREATED, StatusCode::CREATED));
    let (a1, a2, b1) = (id(&a1), id(&a2), id(&b1));
    let held = app.get(&format!("/v1/accounts/{}", a.address), Some(&a.key)).await.body["wallet"].clone();
    let full = submit_on(&app, &a, &gpu, "a3", "basic").await;
    assert_problem(&full, 503, "queue_full");
    assert_eq!(app.get(&format!("/v1/accounts/{}", a.address), Some(&a.key)).await.body["wallet"], held, "a full queue holds nothing");
    assert_eq!(app.get("/v1/jobs?limit=100", Some(&a.key)).await.body["items"].as_array().unwrap().len(), 2, "and stores no job");
    let view = app.get(&format!("/v1/listings/{gpu}"), None).await;
    assert_eq!(view.body["queue_room"], 0);

    // Claims follow the order, whatever job the message named: a1 and b1 tie on their finish
    // tag (each client's first job) and a1 was submitted first; a2 comes after both.
    let first = act(&app, &s, &a2, "claim", 60000).await;
    assert_eq!((first.status, first.body["job_id"].clone()), (StatusCode::OK, json!(a1.as_str())), "{:?}", first.body);
    let hb = act(&app, &s, &a1, "heartbeat", 60000).await;
    assert_eq!((hb.status, hb.body.get("preempt").cloned()), (StatusCode::OK, None), "only basic jobs wait: {:?}", hb.body);
    let e1 = submit_on(&app, &b, &gpu, "e1", "enterprise").await;
    assert_eq!(e1.status, StatusCode::CREATED, "{:?}", e1.body);
    let e1 = id(&e1);
    let hb = act(&app, &s, &a1, "heartbeat", 60000).await;
    assert_eq!(hb.body["preempt"], true, "an enterprise job waits on the full listing: {:?}", hb.body);
    let released = app.post(&format!("/v1/jobs/{a1}/release"), Some(&s.who.key), json!({"worker_id": "wrk-1"})).await;
    assert_eq!((released.status, released.body["status"]["state"].clone()), (StatusCode::OK, json!("queued")));
    assert_problem(&submit_on(&app, &b, &gpu, "b2", "basic").await, 503, "queue_full");
    let mut order = Vec::new();
    for _ in 0..4 {
        let r = act(&app, &s, &a2, "claim", 60000).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let job = r.body["job_id"].as_str().unwrap().to_string();
        let done = app.post(&format!("/v1/jobs/{job}/complete"), Some(&s.who.key), completion(&r.body, &s, "wrk-1")).await;
        assert_eq!(done.status, StatusCode::OK, "{:?}", done.body);
        order.push(job);
    }
    assert_eq!(order, vec![e1, a1.clone(), b1, a2.clone()], "tier first, then fair share; the preempted job keeps its place");
    assert_eq!(app.get(&format!("/v1/listings/{gpu}"), None).await.body["queue_room"], 3, "an empty queue has all its room");
    assert_problem(&act(&app, &s, &a2, "claim", 60000).await, 409, "conflict");

    // Timeout handling: a lapsed lease is retried automatically up to the listing's 2 attempts.
    let held_before = app.get(&format!("/v1/accounts/{}", a.address), Some(&a.key)).await.body["wallet"].clone();
    let t = id(&submit_on(&app, &a, &gpu, "t1", "basic").await);
    assert_eq!(act(&app, &s, &t, "claim", 1000).await.body["status"]["attempt"], 1);
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let retried = act(&app, &s, &t, "claim", 1000).await;
    assert_eq!((retried.status, retried.body["status"]["attempt"].clone()), (StatusCode::OK, json!(2)), "{:?}", retried.body);
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    assert_problem(&act(&app, &s, &t, "claim", 1000).await, 409, "conflict");
    let ended = app.get(&format!("/v1/jobs/{t}"), Some(&a.key)).await;
    assert_eq!(ended.body["status"]["state"], "failed", "{:?}", ended.body);
    let wallet = app.get(&format!("/v1/accounts/{}", a.address), Some(&a.key)).await.body["wallet"].clone();
    assert_eq!(wallet, held_before, "the failed job's hold is voided");
}

/// Batches: one request, one quote with the listing's batch discount from its minimum size,
/// each job with its own hold, receipt and settlement; bad batches and bad offers change
/// nothing.
pub async fn batches_get_their_discount_and_settle_job_by_job(backends: Box<dyn Backends>) {
    let app = spawn(backends).await;
    let s = seller(&app, 7).await;
    let c = buyer(&app, "20").await;
    let listing = |batch: Value| json!({
        "name": "B-GPU", "memory_gib": 24, "cuda_version": "12.1", "base_price": "0.05", "region": "us-west",
        "models": ["llama3.2"], "count": 4, "batch": batch
    });
    let listings_of = format!("/v1/listings?provider={}&limit=100", s.who.address);
    let before = app.get(&listings_of, None).await.body["items"].as_array().unwrap().len();
    for bad in [json!({"min_batch_size": 3, "discount_percent": 101}), json!({"min_batch_size": 1, "discount_percent": 10}), json!({"min_batch_size": 101, "discount_percent": 10}), json!({"min_batch_size": 3})] {
        assert_problem(&app.post("/v1/listings", Some(&s.who.key), listing(bad)).await, 400, "invalid_request");
    }
    assert_eq!(app.get(&listings_of, None).await.body["items"].as_array().unwrap().len(), before, "refused listings are not stored");
    let r = app.post("/v1/listings", Some(&s.who.key), listing(json!({"min_batch_size": 3, "discount_percent": 25}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let gpu = r.body["gpu_id"].as_str().unwrap().to_string();
    assert_eq!(app.post(&format!("/v1/listings/{gpu}/heartbeat"), Some(&s.who.key), json!({"worker_id": "wrk-1"})).await.status, StatusCode::OK);
    let patch = app.call(Method::PATCH, &format!("/v1/listings/{gpu}"), Some(&s.who.key), Some(json!({"batch": {"min_batch_size": 3, "discount_percent": 150}})), None).await;
    assert_problem(&patch, 400, "invalid_request");
    assert_eq!(app.get(&format!("/v1/listings/{gpu}"), None).await.body["batch"]["discount_percent"], 25);

    // The discount shows in the quote's breakdown, from the minimum size on.
    let quote = |size: u32| app.post("/v1/quotes", None, json!({"model": "llama3.2", "units": "2.5", "gpu_id": gpu, "batch_size": size}));
    let (two, three) = (quote(2).await, quote(3).await);
    assert_eq!((two.body["terms"]["breakdown"]["batch_bps"].clone(), two.body["terms"]["unit_price"].clone()), (json!(10_000), json!("1.6")), "{:?}", two.body);
    assert_eq!((three.body["terms"]["breakdown"]["batch_bps"].clone(), three.body["terms"]["unit_price"].clone()), (json!(7_500), json!("1.2")), "{:?}", three.body);
    assert_problem(&quote(101).await, 400, "invalid_request");
    // A batch's quote is not a single job's.
    let single = json!({"quote": three.body, "spec": {"kind": "vector_add", "n": 1024, "seed": 1}});
    assert_problem(&app.call(Method::POST, "/v1/jobs", Some(&c.key), Some(single), Some("single")).await, 400, "invalid_request");

    let spec = json!({"kind": "vector_add", "n": 1024, "seed": 1});
    let batch = |n: usize| json!({"model": "llama3.2", "units": "2.5", "gpu_id": gpu, "specs": vec![spec.clone(); n]});
    let account = format!("/v1/accounts/{}", c.address);
    let wallet = || app.get(&account, Some(&c.key));
    let untouched = wallet().await.body["wallet"].clone();
    assert_problem(&app.post("/v1/batches", Some(&c.key), batch(3)).await, 400, "invalid_request");
    for (i, bad) in [batch(0), batch(101), json!({"units": "2.5", "gpu_id": gpu, "specs": [spec, {"kind": "reduction", "n": 1024, "seed": 1}]})].into_iter().enumerate() {
        assert_problem(&app.call(Method::POST, "/v1/batches", Some(&c.key), Some(bad), Some(&format!("bad-batch-{i}"))).await, 400, "invalid_request");
    }
    // 20 AITBC cannot hold 6 jobs of 3 (18) plus... 7 of 3 = 21: refused whole, nothing held.
    assert_problem(&app.call(Method::POST, "/v1/batches", Some(&c.key), Some(batch(7)), Some("too-dear")).await, 402, "insufficient_funds");
    assert_eq!(wallet().await.body["wallet"], untouched, "refused batches hold nothing");
    assert_eq!(app.get("/v1/jobs?limit=100", Some(&c.key)).await.body["items"].as_array().unwrap().len(), 0);

    let made = app.call(Method::POST, "/v1/batches", Some(&c.key), Some(batch(3)), Some("batch-1")).await;
    assert_eq!(made.status, StatusCode::CREATED, "{:?}", made.body);
    assert_eq!((made.body["quote"]["terms"]["batch_size"].clone(), made.body["quote"]["terms"]["breakdown"]["batch_bps"].clone()), (json!(3), json!(7_500)));
    let jobs = made.body["jobs"].as_array().unwrap().clone();
    assert_eq!((jobs.len(), made.body["refused"].as_array().unwrap().len()), (3, 0));
    let holds: std::collections::HashSet<&str> = jobs.iter().map(|j| j["hold_id"].as_str().unwrap()).collect();
    assert_eq!(holds.len(), 3, "each job its own hold");
    assert!(jobs.iter().all(|j| j["unit_price"] == "1.2" && j["max_price"] == "3"), "{jobs:?}");
    assert_eq!(wallet().await.body["wallet"]["held"], "9");
    let replay = app.call(Method::POST, "/v1/batches", Some(&c.key), Some(batch(3)), Some("batch-1")).await;
    assert_eq!((replay.status, replay.replayed.as_deref(), replay.body["jobs"].clone()), (StatusCode::CREATED, Some("true"), made.body["jobs"].clone()));
    assert_eq!(wallet().await.body["wallet"]["held"], "9", "a replay holds nothing more");

    for job in &jobs {
        let job_id = job["job_id"].as_str().unwrap();
        let claimed = app.post(&format!("/v1/jobs/{job_id}/claim"), Some(&s.who.key), json!({"worker_id": "wrk-1"})).await;
        assert_eq!(claimed.status, StatusCode::OK, "{:?}", claimed.body);
        let done = app.post(&format!("/v1/jobs/{job_id}/complete"), Some(&s.who.key), completion(&claimed.body, &s, "wrk-1")).await;
        assert_eq!((done.status, done.body["receipt"]["price"].clone()), (StatusCode::OK, json!("1.8")), "1.5 GPU-seconds at 1.2: {:?}", done.body);
    }
    settle_now(&app).await;
    let mut receipts = std::collections::HashSet::new();
    for job in &jobs {
        let settled = app.get(&format!("/v1/jobs/{}", job["job_id"].as_str().unwrap()), Some(&c.key)).await;
        assert_eq!(settled.body["status"]["state"], "settled", "{:?}", settled.body);
        assert!(receipts.insert(settled.body["settlement"]["receipt_id"].as_str().unwrap().to_string()), "each job its own receipt and settlement");
    }
    // 20 - 3 x 1.8 paid; nothing held.
    assert_eq!(wallet().await.body["wallet"], json!({"available": "14.6", "held": "0"}));
    let small = app.call(Method::POST, "/v1/batches", Some(&c.key), Some(batch(2)), Some("batch-2")).await;
    assert_eq!((small.status, small.body["quote"]["terms"]["breakdown"]["batch_bps"].clone()), (StatusCode::CREATED, json!(10_000)), "below the minimum, no discount: {:?}", small.body);
}

/// Fixed-rate contracts: a provider offers a client a rate for GPU-hours; once accepted, the
/// client's jobs on the provider pay it until the hours are used; bad offers and acceptances
/// change nothing.
pub async fn fixed_rate_contracts_price_a_client_s_jobs_until_the_hours_are_used(backends: Box<dyn Backends>) {
    let app = spawn(backends).await;
    let s = seller(&app, 8).await;
    let (c, other) = (buyer(&app, "100").await, buyer(&app, "100").await);
    let offer = |client: &str, rate: &str, hours: u32| json!({"client": client, "fixed_rate": rate, "hours": hours});
    assert_problem(&app.post("/v1/contracts", Some(&s.who.key), offer("ait1nobody000000", "0.036", 1)).await, 404, "not_found");
    assert_problem(&app.post("/v1/contracts", Some(&s.who.key), offer(&c.address, "0", 1)).await, 400, "invalid_request");
    assert_problem(&app.post("/v1/contracts", Some(&s.who.key), offer(&c.address, "0.036", 0)).await, 400, "invalid_request");
    assert_problem(&app.post("/v1/contracts", Some(&s.who.key), offer(&c.address, "0.036", 8761)).await, 400, "invalid_request");
    assert_problem(&app.post("/v1/contracts", Some(&s.who.key), offer(&s.who.address, "0.036", 1)).await, 400, "invalid_request");
    assert_problem(&app.post("/v1/contracts", Some(&c.key), offer(&other.address, "0.036", 1)).await, 403, "forbidden");
    let mut out_of_range = offer(&c.address, "0.036", 1);
    out_of_range["guaranteed_availability_bps"] = json!(10_001);
    assert_problem(&app.post("/v1/contracts", Some(&s.who.key), out_of_range).await, 400, "invalid_request");
    assert_problem(&app.post("/v1/contracts", Some(&s.who.key), offer("nobody-agent", "0.036", 1)).await, 404, "not_found");
    let path = format!("/v1/contracts/{}/{}", s.who.address, c.address);
    assert_problem(&app.get(&path, Some(&c.key)).await, 404, "not_found");
    assert_eq!(app.get("/v1/contracts", Some(&s.who.key)).await.body["items"], json!([]), "bad offers changed nothing");

    // A client known by its agent name (the guide's client_id); names are unique.
    let named = app.post("/v1/accounts", None, json!({"role": "client", "name": "enterprise-agent-123"})).await;
    assert_eq!((named.status, named.body["name"].clone()), (StatusCode::CREATED, json!("enterprise-agent-123")), "{:?}", named.body);
    assert_problem(&app.post("/v1/accounts", None, json!({"role": "client", "name": "enterprise-agent-123"})).await, 409, "conflict");
    assert_problem(&app.post("/v1/accounts", None, json!({"role": "client", "name": "ait1notaname00"})).await, 400, "invalid_request");
    let by_name = app.post("/v1/contracts", Some(&s.who.key), offer("enterprise-agent-123", "0.036", 1)).await;
    assert_eq!((by_name.status, by_name.body["client"].clone()), (StatusCode::CREATED, named.body["address"].clone()), "{:?}", by_name.body);
    // An offer not accepted in time expires: accepting it is a conflict and changes nothing.
    let key = aitbc_store::keys::contract(&s.who.address, named.body["address"].as_str().unwrap());
    app.market.store.update(&key, aitbc_store::Update::new().set("offer_expires_at_ms", 1), aitbc_store::Condition::Present).await.unwrap();
    let named_key = named.body["api_key"].as_str().unwrap();
    assert_problem(&app.post(&format!("/v1/contracts/{}/accept", s.who.address), Some(named_key), json!({})).await, 409, "conflict");
    let expired = app.get(&format!("/v1/contracts/{}/{}", s.who.address, named.body["address"].as_str().unwrap()), Some(named_key)).await;
    assert_eq!((expired.body["state"].clone(), expired.body["accepted_at_ms"].clone()), (json!("expired"), Value::Null), "{:?}", expired.body);
    let listed = app.get("/v1/contracts", Some(named_key)).await;
    assert_eq!(listed.body["items"][0]["provider"], s.who.address.as_str(), "{:?}", listed.body);

    // 0.036 AITBC per GPU-hour is 0.00001 per GPU-second; one hour is 3600 GPU-seconds.
    let offered = app.post("/v1/contracts", Some(&s.who.key), offer(&c.address, "0.036", 1)).await;
    assert_eq!((offered.status, offered.body["state"].clone(), offered.body["remaining"].clone()), (StatusCode::CREATED, json!("offered"), json!("3600")), "{:?}", offered.body);
    let accept = format!("/v1/contracts/{}/accept", s.who.address);
    assert_problem(&app.post(&accept, Some(&other.key), json!({})).await, 404, "not_found");
    assert_problem(&app.post(&accept, Some(&s.who.key), json!({})).await, 403, "forbidden");
    // Offered, not accepted: the market price.
    let mut body = job_body();
    body["gpu_id"] = json!(s.gpu_id);
    let before = app.call(Method::POST, "/v1/jobs", Some(&c.key), Some(body.clone()), Some("before")).await;
    assert_eq!(before.body["unit_price"], "1.6", "{:?}", before.body);
    let accepted = app.post(&accept, Some(&c.key), json!({})).await;
    assert_eq!((accepted.status, accepted.body["state"].clone()), (StatusCode::OK, json!("active")), "{:?}", accepted.body);
    assert_problem(&app.post(&accept, Some(&c.key), json!({})).await, 409, "conflict");
    assert_problem(&app.post("/v1/contracts", Some(&s.who.key), offer(&c.address, "0.072", 1)).await, 409, "conflict");
    assert_problem(&app.get(&path, Some(&other.key)).await, 403, "forbidden");

    let on_contract = app.call(Method::POST, "/v1/jobs", Some(&c.key), Some(body.clone()), Some("on-contract")).await;
    assert_eq!((on_contract.status, on_contract.body["unit_price"].clone(), on_contract.body["max_price"].clone()), (StatusCode::CREATED, json!("0.00001"), json!("0.000025")), "{:?}", on_contract.body);
    assert_eq!(app.get(&path, Some(&s.who.key)).await.body["remaining"], "3597.5");
    let not_theirs = app.call(Method::POST, "/v1/jobs", Some(&other.key), Some(body.clone()), Some("other")).await;
    assert_eq!(not_theirs.body["unit_price"], "1.6", "another client pays the market");
    // A job larger than the hours left pays the market, and uses nothing.
    let mut big = body.clone();
    big["units"] = json!("3598");
    let over = app.call(Method::POST, "/v1/jobs", Some(&c.key), Some(big), Some("over")).await;
    assert_ne!(over.body["unit_price"], "0.00001", "{:?}", over.body);
    let mut rest = body.clone();
    rest["units"] = json!("3597.5");
    let last = app.call(Method::POST, "/v1/jobs", Some(&c.key), Some(rest), Some("rest")).await;
    assert_eq!((last.status, last.body["unit_price"].clone()), (StatusCode::CREATED, json!("0.00001")), "{:?}", last.body);
    let used = app.get(&path, Some(&c.key)).await;
    assert_eq!((used.body["remaining"].clone(), used.body["state"].clone()), (json!("0"), json!("used_up")), "{:?}", used.body);
    let after = app.call(Method::POST, "/v1/jobs", Some(&c.key), Some(body), Some("after")).await;
    assert_eq!(after.body["unit_price"], "1.6", "the hours are used: the market price again");
    // A used-up contract may be offered again.
    let again = app.post("/v1/contracts", Some(&s.who.key), offer(&c.address, "0.072", 2)).await;
    assert_eq!((again.status, again.body["state"].clone()), (StatusCode::CREATED, json!("offered")), "{:?}", again.body);
}

/// A contract's availability guarantee: its jobs count as available when they start within the
/// listing's SLA response time (changed after listing, as the guide's `define_sla`); a job whose
/// completion leaves the measured availability below the guarantee pays the SLA penalty.
pub async fn a_contract_pays_sla_penalties_below_its_guaranteed_availability(backends: Box<dyn Backends>) {
    let app = spawn(backends).await;
    let s = seller(&app, 9).await;
    let c = buyer(&app, "100").await;
    let listing = format!("/v1/listings/{}", s.gpu_id);
    assert_problem(&app.call(Method::PATCH, &listing, Some(&s.who.key), Some(json!({"sla": {"response_time_s": 0}})), None).await, 400, "invalid_request");
    let patched = app.call(Method::PATCH, &listing, Some(&s.who.key), Some(json!({"sla": {"response_time_s": 1, "penalty_rate_bps": 5000}})), None).await;
    assert_eq!((patched.status, patched.body["sla"].clone()), (StatusCode::OK, json!({"response_time_s": 1, "penalty_rate_bps": 5000})), "{:?}", patched.body);
    let offered = app.post("/v1/contracts", Some(&s.who.key), json!({"client": c.address, "fixed_rate": "3.6", "hours": 10, "guaranteed_availability_bps": 5000})).await;
    assert_eq!((offered.status, offered.body["sla_penalties"].clone()), (StatusCode::CREATED, json!(true)), "{:?}", offered.body);
    let accepted = app.post(&format!("/v1/contracts/{}/accept", s.who.address), Some(&c.key), json!({})).await;
    assert_eq!(accepted.status, StatusCode::OK, "{:?}", accepted.body);
    let mut jobs = Vec::new();
    // On time, late (availability 1/2: at the guarantee), late (1/3: below it).
    for (i, wait_ms) in [0u64, 1_200, 1_200].into_iter().enumerate() {
        let mut body = job_body();
        body["gpu_id"] = json!(s.gpu_id);
        let job = app.call(Method::POST, "/v1/jobs", Some(&c.key), Some(body), Some(&format!("sla-{i}"))).await;
        assert_eq!((job.status, job.body["unit_price"].clone()), (StatusCode::CREATED, json!("0.001")), "{:?}", job.body);
        tokio::time::sleep(std::time::Duration::from_millis(wait_ms)).await;
        let job_id = job.body["job_id"].as_str().unwrap().to_string();
        let claimed = app.post(&format!("/v1/jobs/{job_id}/claim"), Some(&s.who.key), json!({"worker_id": "wrk-1"})).await;
        assert_eq!(claimed.status, StatusCode::OK, "{:?}", claimed.body);
        let done = app.post(&format!("/v1/jobs/{job_id}/complete"), Some(&s.who.key), completion(&claimed.body, &s, "wrk-1")).await;
        assert_eq!(done.status, StatusCode::OK, "{:?}", done.body);
        jobs.push(job_id);
    }
    settle_now(&app).await;
    let mut penalties = Vec::new();
    for job in &jobs {
        let settled = app.get(&format!("/v1/jobs/{job}"), Some(&c.key)).await;
        assert_eq!(settled.body["status"]["state"], "settled", "{:?}", settled.body);
        penalties.push(settled.body["settlement"]["penalty"].clone());
    }
    // 1.5 GPU-seconds at 0.001: 0.0015, half of it refunded below the guarantee only.
    assert_eq!(penalties, vec![json!("0"), json!("0"), json!("0.00075")]);
    let contract = app.get(&format!("/v1/contracts/{}/{}", s.who.address, c.address), Some(&s.who.key)).await;
    assert_eq!((contract.body["jobs_completed"].clone(), contract.body["jobs_available"].clone(), contract.body["availability_bps"].clone()), (json!(3), json!(1), json!(3333)), "{:?}", contract.body);
}

/// Reserved capacity: a provider offers a client a share of a listing for a fee; the client's
/// acceptance pays it (provider's earnings, platform fee) in one transaction; while it lasts the
/// listing keeps the share's queue places for the client; it ends by time. Bad offers and
/// acceptances are problems that change nothing.
pub async fn reserved_capacity_is_paid_for_kept_for_its_client_and_expires(backends: Box<dyn Backends>) {
    let app = spawn(backends).await;
    let s = seller(&app, 10).await;
    let other_seller = seller(&app, 11).await;
    let listing = format!("/v1/listings/{}", s.gpu_id);
    let small = app.call(Method::PATCH, &listing, Some(&s.who.key), Some(json!({"queue_config": {"max_queue_size": 3}})), None).await;
    assert_eq!(small.status, StatusCode::OK, "{:?}", small.body);
    let holder = app.post("/v1/accounts", None, json!({"role": "client", "name": "enterprise-agent-456"})).await;
    let (h_addr, h_key) = (holder.body["address"].as_str().unwrap().to_string(), holder.body["api_key"].as_str().unwrap().to_string());
    let r = app.call(Method::POST, &format!("/v1/accounts/{h_addr}/deposits"), Some(&h_key), Some(json!({"amount": "100"})), Some("fund-1")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let (o, poor) = (buyer(&app, "100").await, buyer(&app, "1").await);
    let offer = |client: &str, share: Value, duration: &str, fee: &str| {
        let mut body = json!({"gpu_id": s.gpu_id, "client": client, "duration": duration, "fee": fee});
        body.as_object_mut().unwrap().extend(share.as_object().unwrap().clone());
        body
    };
    let bad = [
        (offer("enterprise-agent-456", json!({"slots": 3}), "30d", "50"), 400, "invalid_request"),
        (offer("enterprise-agent-456", json!({"gpu_memory_gib": 25}), "30d", "50"), 400, "invalid_request"),
        (offer("enterprise-agent-456", json!({"slots": 1, "gpu_memory_gib": 8}), "30d", "50"), 400, "invalid_request"),
        (offer("enterprise-agent-456", json!({}), "30d", "50"), 400, "invalid_request"),
        (offer("enterprise-agent-456", json!({"slots": 0}), "30d", "50"), 400, "invalid_request"),
        (offer("enterprise-agent-456", json!({"slots": 1}), "0d", "50"), 400, "invalid_request"),
        (offer("enterprise-agent-456", json!({"slots": 1}), "91d", "50"), 400, "invalid_request"),
        (offer("enterprise-agent-456", json!({"slots": 1}), "30d", "0"), 400, "invalid_request"),
        (offer("nobody-agent", json!({"slots": 1}), "30d", "50"), 404, "not_found"),
        (offer(&other_seller.who.address, json!({"slots": 1}), "30d", "50"), 400, "invalid_request"),
    ];
    for (body, status, code) in bad {
        assert_problem(&app.post("/v1/reservations", Some(&s.who.key), body).await, status, code);
    }
    let mut unknown = offer("enterprise-agent-456", json!({"slots": 1}), "30d", "50");
    unknown["gpu_id"] = json!("gpu-nothere");
    assert_problem(&app.post("/v1/reservations", Some(&s.who.key), unknown).await, 404, "not_found");
    assert_problem(&app.post("/v1/reservations", Some(&other_seller.who.key), offer("enterprise-agent-456", json!({"slots": 1}), "30d", "50")).await, 403, "forbidden");
    assert_problem(&app.post("/v1/reservations", Some(&h_key), offer("enterprise-agent-456", json!({"slots": 1}), "30d", "50")).await, 403, "forbidden");
    // Paused, or offline (listed, no worker's heartbeat): not reservable.
    app.call(Method::PATCH, &listing, Some(&s.who.key), Some(json!({"status": "paused"})), None).await;
    assert_problem(&app.post("/v1/reservations", Some(&s.who.key), offer("enterprise-agent-456", json!({"slots": 1}), "30d", "50")).await, 409, "conflict");
    app.call(Method::PATCH, &listing, Some(&s.who.key), Some(json!({"status": "active"})), None).await;
    let offline = app.post("/v1/listings", Some(&s.who.key), json!({"name": "Cold", "memory_gib": 24, "cuda_version": "12.1", "base_price": "0.05", "region": "us-west"})).await;
    let mut cold = offer("enterprise-agent-456", json!({"slots": 1}), "30d", "50");
    cold["gpu_id"] = offline.body["gpu_id"].clone();
    assert_problem(&app.post("/v1/reservations", Some(&s.who.key), cold).await, 409, "conflict");
    assert_eq!(app.get("/v1/reservations", Some(&s.who.key)).await.body["items"], json!([]), "bad offers changed nothing");

    // 8 GiB of a 24 GiB listing with 2 slots: one slot.
    let offered = app.post("/v1/reservations", Some(&s.who.key), offer("enterprise-agent-456", json!({"gpu_memory_gib": 8}), "30d", "50")).await;
    assert_eq!(offered.status, StatusCode::CREATED, "{:?}", offered.body);
    assert_eq!((offered.body["slots"].clone(), offered.body["state"].clone(), offered.body["platform_fee"].clone(), offered.body["duration_hours"].clone()), (json!(1), json!("offered"), json!("1.25"), json!(720)));
    let id = offered.body["reservation_id"].as_str().unwrap().to_string();
    let accept = format!("/v1/reservations/{id}/accept");
    assert_problem(&app.post(&accept, Some(&o.key), json!({})).await, 404, "not_found");
    assert_problem(&app.post(&accept, Some(&s.who.key), json!({})).await, 403, "forbidden");
    assert_problem(&app.get(&format!("/v1/reservations/{id}"), Some(&o.key)).await, 403, "forbidden");
    // Too little money: 402, and nothing moves.
    let for_poor = app.post("/v1/reservations", Some(&s.who.key), offer(&poor.address, json!({"slots": 1}), "1h", "5")).await;
    let poor_id = for_poor.body["reservation_id"].as_str().unwrap();
    assert_problem(&app.post(&format!("/v1/reservations/{poor_id}/accept"), Some(&poor.key), json!({})).await, 402, "insufficient_funds");
    assert_eq!(app.get(&format!("/v1/accounts/{}", poor.address), Some(&poor.key)).await.body["wallet"], json!({"available": "1", "held": "0"}));
    assert_eq!(app.get(&format!("/v1/reservations/{poor_id}"), Some(&poor.key)).await.body["state"], "offered");
    assert_eq!(app.get(&listing, None).await.body["reserved_slots"], 0);

    let accepted = app.post(&accept, Some(&h_key), json!({})).await;
    assert_eq!((accepted.status, accepted.body["state"].clone()), (StatusCode::OK, json!("active")), "{:?}", accepted.body);
    assert_problem(&app.post(&accept, Some(&h_key), json!({})).await, 409, "conflict");
    assert_eq!(app.get(&format!("/v1/accounts/{h_addr}"), Some(&h_key)).await.body["wallet"], json!({"available": "50", "held": "0"}));
    assert_eq!(app.get(&format!("/v1/accounts/{}", s.who.address), Some(&s.who.key)).await.body["earnings"]["available"], "48.75", "the fee less 2.5%");
    assert_eq!(app.get(&listing, None).await.body["reserved_slots"], 1);
    // One of two slots is reserved: another slot or two cannot be.
    assert_problem(&app.post("/v1/reservations", Some(&s.who.key), offer(&o.address, json!({"slots": 2}), "1d", "1")).await, 409, "conflict");

    // A queue of 3 with 1 place kept for the holder: the others get 2.
    let submit = |key: String, idem: String| {
        let app = &app;
        let mut body = job_body();
        body["gpu_id"] = json!(s.gpu_id);
        async move { app.call(Method::POST, "/v1/jobs", Some(&key), Some(body), Some(&idem)).await }
    };
    let first = submit(o.key.clone(), "o-1".into()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    assert_eq!(submit(o.key.clone(), "o-2".into()).await.status, StatusCode::CREATED);
    let refused = submit(o.key.clone(), "o-3".into()).await;
    assert_problem(&refused, 503, "queue_full");
    assert_eq!(app.get(&format!("/v1/accounts/{}", o.address), Some(&o.key)).await.body["wallet"]["held"], "8", "the refused job held nothing");
    assert_eq!(submit(h_key.clone(), "h-1".into()).await.status, StatusCode::CREATED, "the holder's place");
    assert_problem(&submit(h_key.clone(), "h-2".into()).await, 503, "queue_full");

    // It ends by time: once past its end it keeps nothing.
    let job_id = first.body["job_id"].as_str().unwrap();
    assert_eq!(app.post(&format!("/v1/jobs/{job_id}/claim"), Some(&s.who.key), json!({"worker_id": "wrk-1"})).await.status, StatusCode::OK);
    assert_problem(&submit(o.key.clone(), "o-4".into()).await, 503, "queue_full");
    let ended = json!([{"client": h_addr, "slots": 1, "ends_at_ms": 1}]);
    app.market.store.update(&aitbc_store::keys::listing(&s.gpu_id), aitbc_store::Update::new().set("reservations", ended), aitbc_store::Condition::Present).await.unwrap();
    app.market.store.update(&aitbc_store::keys::reservation(&id), aitbc_store::Update::new().set("ends_at_ms", 1), aitbc_store::Condition::Present).await.unwrap();
    assert_eq!(app.get(&format!("/v1/reservations/{id}"), Some(&h_key)).await.body["state"], "ended");
    // The end time was edited behind the market's back: let its one-second listing cache lapse
    // (a real end needs no such wait; it is computed from the stored end time).
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let again = submit(o.key.clone(), "o-5".into()).await;
    assert_eq!(again.status, StatusCode::CREATED, "the place is free again: {:?}", again.body);
    let mine = app.get("/v1/reservations", Some(&h_key)).await;
    assert_eq!(mine.body["items"].as_array().unwrap().len(), 1, "{:?}", mine.body);
}

/// The guide's `host_specialized_model(..., premium_rate=0.2)`: a listing prices a model that is
/// not on the rate card; once its worker has loaded the model, quotes and jobs for it find the
/// listing and pay its price. Bad prices are refused and change nothing.
async fn listings_price_their_own_models(backends: Box<dyn Backends>) {
    let app = spawn(backends).await;
    let s = seller(&app, 61).await;
    let other = seller(&app, 62).await;
    let c = buyer(&app, "100").await;
    let listing_path = format!("/v1/listings/{}", s.gpu_id);
    let patch = |key: String, body: Value| {
        let path = listing_path.clone();
        let app = &app;
        async move { app.call(Method::PATCH, &path, Some(&key), Some(body), None).await }
    };
    let medical = json!({"model": "custom-medical-llm", "units": "2.5", "region": "us-west", "kind": "text_generation"});
    let job = json!({"units": "2.5", "region": "us-west", "spec": {"kind": "text_generation", "model": "custom-medical-llm", "prompt": "hi"}});
    let wallet = format!("/v1/accounts/{}", c.address);
    let before_wallet = app.get(&wallet, Some(&c.key)).await.body;

    // Nobody prices it: a 400 before anything is held.
    assert_problem(&app.post("/v1/quotes", None, medical.clone()).await, 400, "invalid_request");
    let r = app.call(Method::POST, "/v1/jobs", Some(&c.key), Some(job.clone()), Some("med-0")).await;
    assert_problem(&r, 400, "invalid_request");
    assert_eq!(app.get(&wallet, Some(&c.key)).await.body, before_wallet, "nothing held");

    // Bad prices: 400, and the listing is unchanged.
    let seventeen: serde_json::Map<String, Value> = (0..17).map(|i| (format!("m-{i}"), json!("1"))).collect();
    for bad in [
        json!({"model_prices": {"custom-medical-llm": "0"}}),
        json!({"model_prices": {"custom-medical-llm": "-0.2"}}),
        json!({"model_prices": {"custom-medical-llm": "1000000.000000001"}}),
        json!({"model_prices": {"custom-medical-llm": 0.2}}),
        json!({"model_prices": {"Custom Medical": "0.2"}}),
        json!({"model_prices": {"": "0.2"}}),
        json!({"model_prices": Value::Object(seventeen.clone())}),
        json!({"model_prices": "0.2"}),
    ] {
        let r = patch(s.who.key.clone(), bad.clone()).await;
        assert_problem(&r, 400, "invalid_request");
        assert_eq!(r.body["field"].as_str().map(|f| f.starts_with("model_prices")), Some(true), "{bad}: {:?}", r.body);
    }
    let mut create = json!({"name": "M-GPU", "memory_gib": 24, "cuda_version": "12.1", "base_price": "0.05", "region": "us-west", "model_prices": Value::Object(seventeen)});
    assert_problem(&app.post("/v1/listings", Some(&s.who.key), create.clone()).await, 400, "invalid_request");
    create["model_prices"] = json!({"custom-medical-llm": "0"});
    assert_problem(&app.post("/v1/listings", Some(&s.who.key), create.clone()).await, 400, "invalid_request");
    let unchanged = app.get(&listing_path, Some(&s.who.key)).await;
    assert_eq!(unchanged.body["model_prices"], json!({}), "{:?}", unchanged.body);
    // Another provider may not price this listing's models.
    assert_problem(&patch(other.who.key.clone(), json!({"model_prices": {"custom-medical-llm": "0.2"}})).await, 403, "forbidden");

    // Sixteen prices at once fit; a merge patch removes them again (null) and sets the guide's.
    let sixteen: serde_json::Map<String, Value> = (0..16).map(|i| (format!("m-{i}"), json!("1"))).collect();
    let r = patch(s.who.key.clone(), json!({"model_prices": Value::Object(sixteen)})).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_problem(&patch(s.who.key.clone(), json!({"model_prices": {"custom-medical-llm": "0.2"}})).await, 400, "invalid_request");
    let mut reset: serde_json::Map<String, Value> = (0..16).map(|i| (format!("m-{i}"), Value::Null)).collect();
    reset.insert("custom-medical-llm".into(), json!("0.2"));
    assert_problem(&patch(s.who.key.clone(), json!({"model_prices": Value::Object(reset.clone())})).await, 400, "invalid_request");
    reset.remove("m-15");
    let r = patch(s.who.key.clone(), json!({"model_prices": Value::Object(reset)})).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["model_prices"], json!({"custom-medical-llm": "0.2", "m-15": "1"}));
    let r = patch(s.who.key.clone(), json!({"model_prices": {"m-15": null}})).await;
    assert_eq!(r.body["model_prices"], json!({"custom-medical-llm": "0.2"}), "{:?}", r.body);
    let shown = app.get(&listing_path, None).await;
    assert_eq!(shown.body["model_prices"], json!({"custom-medical-llm": "0.2"}), "{:?}", shown.body);
    // A listing can be created with its prices, too.
    create["model_prices"] = json!({"custom-medical-llm": "0.3"});
    let made = app.post("/v1/listings", Some(&s.who.key), create).await;
    assert_eq!((made.status, &made.body["model_prices"]), (StatusCode::CREATED, &json!({"custom-medical-llm": "0.3"})), "{:?}", made.body);

    // Priced, but no worker has loaded it yet: still nobody serves it.
    assert_problem(&app.post("/v1/quotes", None, medical.clone()).await, 400, "invalid_request");
    let on = json!({"model": "custom-medical-llm", "units": "2.5", "gpu_id": s.gpu_id});
    assert_problem(&app.post("/v1/quotes", None, on.clone()).await, 400, "invalid_request");
    // The other provider's worker loads it but its listing sets no price: not a candidate.
    let hb = app.post(&format!("/v1/listings/{}/heartbeat", other.gpu_id), Some(&other.who.key), json!({"worker_id": "wrk-2", "models": ["custom-medical-llm"]})).await;
    assert_eq!(hb.status, StatusCode::OK, "{:?}", hb.body);
    assert_problem(&app.post("/v1/quotes", None, medical.clone()).await, 400, "invalid_request");
    let off = json!({"model": "custom-medical-llm", "units": "2.5", "gpu_id": other.gpu_id});
    assert_problem(&app.post("/v1/quotes", None, off).await, 400, "invalid_request");
    // The pricing listing's worker loads it: routing finds it, at its price.
    let hb = app.post(&format!("/v1/listings/{}/heartbeat", s.gpu_id), Some(&s.who.key), json!({"worker_id": "wrk-1", "models": ["custom-medical-llm"]})).await;
    assert_eq!(hb.status, StatusCode::OK, "{:?}", hb.body);
    let q = app.post("/v1/quotes", None, medical.clone()).await;
    assert_eq!(q.status, StatusCode::OK, "{:?}", q.body);
    let b = &q.body["terms"]["breakdown"];
    assert_eq!(q.body["terms"]["gpu_id"], s.gpu_id.as_str());
    // 0.2 per GPU-hour = 55_555_556 pico-AITBC per GPU-second, then the multipliers, once.
    assert_eq!((&b["base_source"], &b["model_rate"], &b["base_rate"], &b["card_rate"]), (&json!("model_price"), &json!("0.000055555556"), &json!("0.000055555556"), &Value::Null), "{b}");
    assert_eq!(b["clamped"], false);
    let combined = b["combined_bps"].as_u64().unwrap();
    let expected = (55_555_556u64 * combined * 2 + 10_000) / 20_000;
    let unit_price = aitbc_core::money::Rate::parse(q.body["terms"]["unit_price"].as_str().unwrap()).unwrap();
    assert_eq!(unit_price.raw(), expected, "{b}");
    let q_on = app.post("/v1/quotes", None, on).await;
    assert_eq!((q_on.status, &q_on.body["terms"]["unit_price"]), (StatusCode::OK, &q.body["terms"]["unit_price"]), "{:?}", q_on.body);
    // A job for it pays that price.
    let r = app.call(Method::POST, "/v1/jobs", Some(&c.key), Some(job.clone()), Some("med-1")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!((&r.body["gpu_id"], &r.body["unit_price"]), (&json!(s.gpu_id), &q.body["terms"]["unit_price"]), "{:?}", r.body);
    assert_eq!(r.body["max_price"], json!(unit_price.price(GpuMillis::parse("2.5").unwrap()).unwrap().to_string()));

    // A model on the card priced above it by the listing pays the listing's price; below it,
    // the card's; removed, the listing's base or the card's as before.
    let llama = json!({"model": "llama3.2", "units": "1", "gpu_id": s.gpu_id});
    for (price, source, base) in [(json!("36000"), "model_price", "10"), (json!("0.36"), "rate_card", "2"), (Value::Null, "rate_card", "2")] {
        let r = patch(s.who.key.clone(), json!({"model_prices": {"llama3.2": price}})).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let q = app.post("/v1/quotes", None, llama.clone()).await;
        assert_eq!(q.status, StatusCode::OK, "{:?}", q.body);
        let b = &q.body["terms"]["breakdown"];
        assert_eq!((b["base_source"].as_str(), b["base_rate"].as_str()), (Some(source), Some(base)), "{price}: {b}");
        assert_eq!(b.get("model_rate").is_some(), !price.is_null(), "{b}");
    }
}

/// A provider's load-balancing policy (the guide's `enable_load_balancing`) decides which of its
/// listings a routed job goes to: plain routing takes the least busy of equal prices; adaptive
/// throughput the most free slots; least_loaded counts waiting jobs too; `none` leaves the
/// group. Bad policies are problems that change nothing.
pub async fn load_balancing_routes_a_provider_s_jobs_by_its_policy(backends: Box<dyn Backends>) {
    let app = spawn(backends).await;
    let p = open(&app, "provider").await;
    let c = buyer(&app, "100").await;
    let mut ids = Vec::new();
    // Listed in this order: small (one slot) and large (four slots), the same price.
    for count in [1, 4] {
        let listing = json!({
            "name": "LB-GPU", "memory_gib": 24, "cuda_version": "12.1", "base_price": "0.05",
            "region": "us-west", "models": ["llama3.2"], "count": count
        });
        let r = app.post("/v1/listings", Some(&p.key), listing).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        let gpu_id = r.body["gpu_id"].as_str().unwrap().to_string();
        let hb = app.post(&format!("/v1/listings/{gpu_id}/heartbeat"), Some(&p.key), json!({"worker_id": "wrk-1"})).await;
        assert_eq!(hb.status, StatusCode::OK, "{:?}", hb.body);
        ids.push(gpu_id);
    }
    let (small, large) = (ids[0].clone(), ids[1].clone());
    let patch = |gpu: &str, policy: Value| {
        let path = format!("/v1/listings/{gpu}");
        let (app, key) = (&app, p.key.clone());
        async move { app.call(Method::PATCH, &path, Some(&key), Some(json!({ "load_balancing": policy })), None).await }
    };
    let routed = || async {
        // Past the routing view's cache (DEMAND_CACHE_MS), so the counters are current.
        tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
        let q = app.post("/v1/quotes", None, json!({"model": "llama3.2", "units": "2.5", "region": "us-west"})).await;
        assert_eq!(q.status, StatusCode::OK, "{:?}", q.body);
        q.body["terms"]["gpu_id"].as_str().unwrap().to_string()
    };
    // One job running on the large listing: 1 of 4 slots busy, the small one idle.
    let mut body = job_body();
    body["gpu_id"] = json!(large);
    let job = app.call(Method::POST, "/v1/jobs", Some(&c.key), Some(body), Some("lb-run")).await;
    assert_eq!(job.status, StatusCode::CREATED, "{:?}", job.body);
    let claimed = app.post(&format!("/v1/jobs/{}/claim", job.body["job_id"].as_str().unwrap()), Some(&p.key), json!({"worker_id": "wrk-1"})).await;
    assert_eq!(claimed.status, StatusCode::OK, "{:?}", claimed.body);
    assert_eq!(routed().await, small, "plain routing: equal prices, the lower utilization (0% < 25%)");

    // Adaptive for throughput on both: the most free slots (3 > 1).
    for gpu in [&small, &large] {
        let r = patch(gpu, json!({"strategy": "adaptive", "optimization_target": "throughput"})).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert_eq!(r.body["load_balancing"], json!({"strategy": "adaptive", "optimization_target": "throughput"}));
    }
    assert_eq!(app.get(&format!("/v1/listings/{large}"), None).await.body["load_balancing"]["strategy"], "adaptive");
    assert_eq!(routed().await, large, "adaptive throughput fills the larger idle capacity");
    // The small listing leaves the group: routed to it (its own pick, no policy), it keeps the job.
    assert_eq!(patch(&small, json!({"strategy": "none"})).await.status, StatusCode::OK);
    assert!(app.get(&format!("/v1/listings/{small}"), None).await.body.get("load_balancing").is_none());
    assert_eq!(routed().await, small);

    // Least loaded on both, and two jobs waiting on the small listing: 2 jobs per slot there,
    // 0.25 on the large one. Plain routing sees only running jobs (0% on the small one).
    for gpu in [&small, &large] {
        assert_eq!(patch(gpu, json!({"strategy": "least_loaded"})).await.status, StatusCode::OK);
    }
    assert_eq!(routed().await, small, "no waiting jobs yet: the small listing is the least loaded");
    for n in 0..2 {
        let r = submit_on(&app, &c, &small, &format!("lb-wait-{n}"), "basic").await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    assert_eq!(routed().await, large, "waiting jobs count as load");
    for gpu in [&small, &large] {
        assert_eq!(patch(gpu, json!({"strategy": "none"})).await.status, StatusCode::OK);
    }
    assert_eq!(routed().await, small, "without policies, routing is back to running jobs only");

    // Bad policies change nothing.
    let before = app.get(&format!("/v1/listings/{large}"), None).await.body;
    assert_problem(&patch(&large, json!({"strategy": "round_robin"})).await, 400, "invalid_request");
    assert_problem(&patch(&large, json!({"strategy": "adaptive", "optimization_target": "cost"})).await, 400, "invalid_request");
    assert_problem(&patch(&large, json!({"strategy": "adaptive", "metrics": ["gpu_utilization"]})).await, 400, "invalid_request");
    let other = open(&app, "provider").await;
    let r = app.call(Method::PATCH, &format!("/v1/listings/{large}"), Some(&other.key), Some(json!({"load_balancing": {"strategy": "adaptive"}})), None).await;
    assert_problem(&r, 403, "forbidden");
    assert_eq!(app.get(&format!("/v1/listings/{large}"), None).await.body["load_balancing"], before["load_balancing"]);
}

macro_rules! api_suite {
    ($backend:ident, $factory:expr) => {
        mod $backend {
            macro_rules! case {
                ($name:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let Some(backends) = $factory.await else { return };
                        super::$name(Box::new(backends)).await;
                    }
                };
            }
            case!(the_guides_flow_over_http);
            case!(every_mutating_endpoint_authenticates_and_authorizes);
            case!(bad_input_is_a_problem_and_changes_nothing);
            case!(idempotency_replays_refuses_and_serializes);
            case!(the_openapi_document_is_served);
            case!(the_outside_audit_s_findings_stay_fixed);
            case!(the_explorer_reads_are_public_paged_and_filtered);
            case!(providers_build_reputation_from_measured_facts);
            case!(listing_queues_are_bounded_ordered_and_preemptible);
            case!(batches_get_their_discount_and_settle_job_by_job);
            case!(fixed_rate_contracts_price_a_client_s_jobs_until_the_hours_are_used);
            case!(a_contract_pays_sla_penalties_below_its_guaranteed_availability);
            case!(reserved_capacity_is_paid_for_kept_for_its_client_and_expires);
            case!(listings_price_their_own_models);
            case!(load_balancing_routes_a_provider_s_jobs_by_its_policy);
        }
    };
}

api_suite!(sqlite, aitbc_store::conformance::sqlite());
api_suite!(dynamodb_sqs, aitbc_store::conformance::aws());
