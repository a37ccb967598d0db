//! Provider insight over HTTP: health monitoring and alerts, sharing and market signals, the
//! market-intelligence view, a listing's analytics and suggestions. Run on SQLite and on
//! DynamoDB + SQS (moto_server). (The harness is the one of api.rs, cut to what these need.)

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
    App { base, http: reqwest::Client::new(), _backends: backends }
}

struct Reply {
    status: StatusCode,
    content_type: String,
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
        let text = resp.text().await.unwrap();
        let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Reply { status, content_type, body }
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


async fn completed_job(app: &App, s: &Seller, c: &Actor, idem: &str) -> Value {
    let mut body = job_body();
    body["gpu_id"] = json!(s.gpu_id);
    let job = app.call(Method::POST, "/v1/jobs", Some(&c.key), Some(body), Some(idem)).await;
    assert_eq!(job.status, StatusCode::CREATED, "{:?}", job.body);
    let job_id = job.body["job_id"].as_str().unwrap().to_string();
    let claimed = app.post(&format!("/v1/jobs/{job_id}/claim"), Some(&s.who.key), json!({"worker_id": "wrk-1"})).await;
    assert_eq!(claimed.status, StatusCode::OK, "{:?}", claimed.body);
    let done = app.post(&format!("/v1/jobs/{job_id}/complete"), Some(&s.who.key), completion(&claimed.body, s, "wrk-1")).await;
    assert_eq!(done.status, StatusCode::OK, "{:?}", done.body);
    done.body["receipt"].clone()
}

fn put(path: &str) -> (Method, String) {
    (Method::PUT, path.to_string())
}

/// Monitoring: the provider sets thresholds; a worker's heartbeat carries health reports; each
/// threshold crossed is one alert per metric and window, listed for the provider only; bad
/// reports and configs are problems that change nothing.
pub async fn health_reports_raise_bounded_alerts_for_their_provider(backends: Box<dyn Backends>) {
    let app = spawn(backends).await;
    let s = seller(&app, 1).await;
    let other = seller(&app, 2).await;
    let client = buyer(&app, "5").await;
    let alerts_path = format!("/v1/listings/{}/alerts", s.gpu_id);
    let (m, monitoring_path) = put(&format!("/v1/listings/{}/monitoring", s.gpu_id));
    let config = json!({"report_interval_s": 10, "alerts": {"gpu_failure": true, "gpu_temperature_c_max": 80, "failure_rate_bps_max": 1000, "queue_length_max": 5}});

    // Who may: the provider only.
    assert_problem(&app.call(m.clone(), &monitoring_path, None, Some(config.clone()), None).await, 401, "unauthenticated");
    assert_problem(&app.call(m.clone(), &monitoring_path, Some(&other.who.key), Some(config.clone()), None).await, 403, "forbidden");
    assert_problem(&app.call(m.clone(), &monitoring_path, Some(&client.key), Some(config.clone()), None).await, 403, "forbidden");
    assert_problem(&app.get(&alerts_path, Some(&other.who.key)).await, 403, "forbidden");
    assert_problem(&app.get(&alerts_path, None).await, 401, "unauthenticated");
    // Bad configs change nothing.
    for bad in [json!({"report_interval_s": 9}), json!({"alerts": {"memory_used_bps_max": 10_001}}), json!({"alerts": {"queue_length_max": 0}}), json!({"alerts": {"nope": 1}})] {
        assert_problem(&app.call(m.clone(), &monitoring_path, Some(&s.who.key), Some(bad), None).await, 400, "invalid_request");
    }
    let before = app.get(&alerts_path, Some(&s.who.key)).await;
    assert_eq!(before.status, StatusCode::OK, "{:?}", before.body);
    assert_eq!((before.body["monitoring"].clone(), before.body["health"].clone(), before.body["items"].clone()), (Value::Null, Value::Null, json!([])));
    let beat = app.post(&format!("/v1/listings/{}/heartbeat", s.gpu_id), Some(&s.who.key), json!({"worker_id": "wrk-1"})).await;
    assert_eq!(beat.body.get("health_interval_s"), None, "no monitoring, no reports asked for");

    let set = app.call(m.clone(), &monitoring_path, Some(&s.who.key), Some(config.clone()), None).await;
    assert_eq!((set.status, set.body.clone()), (StatusCode::OK, config.clone()));
    let beat = app.post(&format!("/v1/listings/{}/heartbeat", s.gpu_id), Some(&s.who.key), json!({"worker_id": "wrk-1"})).await;
    assert_eq!(beat.body["health_interval_s"], 10, "{:?}", beat.body);

    // A bad report is refused before the heartbeat writes anything.
    let last = app.get(&format!("/v1/listings/{}", s.gpu_id), None).await.body["last_heartbeat_ms"].clone();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    for bad in [json!({"gpu_ok": true, "gpu_temperature_c": 151}), json!({"gpu_ok": true, "memory_used_mib": 2, "memory_total_mib": 1}), json!({"gpu_ok": true, "gpu_utilization_bps": 10_001}), json!({"gpu_ok": "yes"})] {
        let r = app.post(&format!("/v1/listings/{}/heartbeat", s.gpu_id), Some(&s.who.key), json!({"worker_id": "wrk-1", "health": bad})).await;
        assert_problem(&r, 400, "invalid_request");
    }
    assert_eq!(app.get(&format!("/v1/listings/{}", s.gpu_id), None).await.body["last_heartbeat_ms"], last, "a refused heartbeat wrote nothing");
    assert_eq!(app.get(&alerts_path, Some(&s.who.key)).await.body["health"], Value::Null);

    // A healthy report: stored, no alert.
    let healthy = json!({"gpu_ok": true, "gpu_temperature_c": 80, "memory_used_mib": 100, "memory_total_mib": 1000, "jobs_completed": 9, "jobs_failed": 1});
    let r = app.post(&format!("/v1/listings/{}/heartbeat", s.gpu_id), Some(&s.who.key), json!({"worker_id": "wrk-1", "health": healthy})).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let got = app.get(&alerts_path, Some(&s.who.key)).await.body;
    assert_eq!((got["health"]["report"].clone(), got["health"]["worker_id"].clone(), got["items"].clone()), (healthy, json!("wrk-1"), json!([])), "{got:?}");
    assert_eq!(got["monitoring"], config);

    // A sick one: three thresholds crossed, three alerts; the same again in the window adds none.
    let sick = json!({"gpu_ok": false, "gpu_temperature_c": 91, "jobs_completed": 4, "jobs_failed": 2});
    for _ in 0..2 {
        let r = app.post(&format!("/v1/listings/{}/heartbeat", s.gpu_id), Some(&s.who.key), json!({"worker_id": "wrk-2", "health": sick})).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }
    let got = app.get(&alerts_path, Some(&s.who.key)).await.body;
    let mut fired: Vec<(String, u64, u64)> = got["items"].as_array().unwrap().iter().map(|a| (a["metric"].as_str().unwrap().to_string(), a["value"].as_u64().unwrap(), a["threshold"].as_u64().unwrap())).collect();
    fired.sort();
    assert_eq!(fired, vec![("failure_rate".into(), 3_333, 1_000), ("gpu_failure".into(), 1, 0), ("gpu_temperature".into(), 91, 80)], "{got:?}");
    assert!(got["items"].as_array().unwrap().iter().all(|a| a["worker_id"] == "wrk-2"));
    // Paged: one at a time, every alert once.
    let first = app.get(&format!("{alerts_path}?limit=1"), Some(&s.who.key)).await.body;
    assert_eq!(first["items"].as_array().unwrap().len(), 1);
    let cursor = first["next_cursor"].as_str().expect("more alerts").to_string();
    let rest = app.get(&format!("{alerts_path}?limit=100&cursor={cursor}"), Some(&s.who.key)).await.body;
    assert_eq!(rest["items"].as_array().unwrap().len(), 2);
    assert_problem(&app.get(&format!("{alerts_path}?limit=0"), Some(&s.who.key)).await, 400, "invalid_request");
    assert_problem(&app.get(&format!("{alerts_path}?limit=101"), Some(&s.who.key)).await, 400, "invalid_request");
    assert!(matches!(app.get("/v1/listings/gpu-nope/alerts", Some(&s.who.key)).await.status.as_u16(), 400 | 404));
    // The other provider's listing is untouched.
    assert_eq!(app.get(&format!("/v1/listings/{}/alerts", other.gpu_id), Some(&other.who.key)).await.body["items"], json!([]));
    // A client's job still runs on the monitored listing.
    completed_job(&app, &s, &client, "job-1").await;
}

/// Sharing, signals and the public market view: a provider joins the group, posts an
/// observation and a proposal (shown aggregated, never applied); the view's demand, price
/// percentiles and trends come from receipts; analytics and suggestions read the listing's own.
pub async fn market_intelligence_is_measured_and_signals_are_only_shown(backends: Box<dyn Backends>) {
    let app = spawn(backends).await;
    let s = seller(&app, 1).await;
    let other = seller(&app, 2).await;
    let client = buyer(&app, "5").await;
    let sharing_path = format!("/v1/providers/{}/sharing", s.who.address);
    let proposal = json!({"region": "us-west", "proposal": {"proposed_base_rate": "0.12", "rationale": "Increased demand for LLM inference", "expected_impact": "revenue_increase_15%"}});
    let observation = json!({"region": "us-west", "observation": {"current_demand": "high", "price_trends": "increasing", "resource_constraints": "gpu_memory", "competitive_landscape": "moderate"}});

    // Before joining as an active member, signals are refused and nothing is recorded.
    assert_problem(&app.post("/v1/market/signals", Some(&s.who.key), proposal.clone()).await, 403, "forbidden");
    assert_problem(&app.post("/v1/market/signals", None, proposal.clone()).await, 401, "unauthenticated");
    assert_problem(&app.post("/v1/market/signals", Some(&client.key), proposal.clone()).await, 403, "forbidden");
    assert_problem(&app.call(Method::PUT, &sharing_path, Some(&other.who.key), Some(json!({"performance_metrics": true})), None).await, 403, "forbidden");
    assert_problem(&app.get(&sharing_path, Some(&other.who.key)).await, 403, "forbidden");
    assert_eq!(app.get(&sharing_path, Some(&s.who.key)).await.body, json!({"performance_metrics": false, "contribution_level": "passive"}));
    let joined = app.call(Method::PUT, &sharing_path, Some(&s.who.key), Some(json!({"performance_metrics": true, "contribution_level": "active"})), None).await;
    assert_eq!(joined.status, StatusCode::OK, "{:?}", joined.body);

    // Bad signals: problems, nothing recorded.
    for bad in [
        json!({"region": "us-west"}),
        json!({"region": "mars"}),
        json!({"region": "us-west", "proposal": {"proposed_base_rate": "0"}}),
        json!({"region": "us-west", "proposal": {"proposed_base_rate": "-1"}}),
        json!({"region": "us-west", "proposal": {"proposed_base_rate": "0.1", "rationale": "x".repeat(501)}}),
        json!({"region": "us-west", "observation": {"current_demand": "huge", "price_trends": "increasing", "resource_constraints": "none", "competitive_landscape": "low"}}),
    ] {
        let r = app.post("/v1/market/signals", Some(&s.who.key), bad.clone()).await;
        assert!(matches!(r.status.as_u16(), 400 | 404), "{bad}: {:?}", r.body);
    }
    // Only for a region where the provider lists a GPU.
    assert_problem(&app.post("/v1/market/signals", Some(&s.who.key), json!({"region": "eu-west", "proposal": {"proposed_base_rate": "0.1"}})).await, 403, "forbidden");
    let empty = app.get("/v1/market/intelligence?region=us-west", None).await;
    assert_eq!(empty.status, StatusCode::OK, "{:?}", empty.body);
    assert_eq!(empty.body["regions"][0]["signals"]["proposals"], 0);

    for body in [proposal.clone(), proposal.clone(), observation] {
        let r = app.post("/v1/market/signals", Some(&s.who.key), body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    let receipt = completed_job(&app, &s, &client, "job-1").await;
    let view = app.get("/v1/market/intelligence?region=us-west&hours=24", None).await;
    assert_eq!(view.status, StatusCode::OK, "{:?}", view.body);
    let region = &view.body["regions"][0];
    assert_eq!(region["region"], "us-west");
    let signals = &region["signals"];
    assert_eq!((signals["proposals"].clone(), signals["proposed_rate_median"].clone()), (json!(1), json!("0.12")), "a provider's proposal replaces its last: {signals:?}");
    assert_eq!((signals["observations"].clone(), signals["current_demand"].clone()), (json!(1), json!({"high": 1})));
    assert_eq!(region["shared_performance"]["providers"], 1, "one provider shares its metrics");
    assert_eq!(region["shared_performance"]["completed"], 1);
    assert_eq!(region["jobs"], 1);
    let model = &region["models"][0];
    assert_eq!((model["model"].clone(), model["jobs"].clone()), (json!("llama3.2"), json!(1)));
    for p in ["unit_price_p10", "unit_price_p50", "unit_price_p90"] {
        assert_eq!(model[p], receipt["unit_price"], "{p}");
    }
    assert_eq!(model["points"].as_array().unwrap().len(), 24);
    assert_eq!(model["price_trend"], "unknown", "one hour of data has no first half");
    // A proposal is never applied.
    assert_eq!(app.get(&format!("/v1/listings/{}", s.gpu_id), None).await.body["base_price"], "0.05");
    assert_problem(&app.get("/v1/market/intelligence?hours=0", None).await, 400, "invalid_request");
    assert_problem(&app.get("/v1/market/intelligence?hours=169", None).await, 400, "invalid_request");
    assert_problem(&app.get("/v1/market/intelligence?region=mars", None).await, 400, "invalid_request");
    let all = app.get("/v1/market/intelligence", None).await;
    assert_eq!(all.body["regions"].as_array().unwrap().len(), 8, "every configured region");

    // Analytics: the listing's own receipts over the period.
    let analytics_path = format!("/v1/listings/{}/analytics?period=30d", s.gpu_id);
    assert_problem(&app.get(&analytics_path, Some(&other.who.key)).await, 403, "forbidden");
    assert_problem(&app.get(&format!("/v1/listings/{}/analytics?period=0d", s.gpu_id), Some(&s.who.key)).await, 400, "invalid_request");
    let a = app.get(&analytics_path, Some(&s.who.key)).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!((a.body["jobs"].clone(), a.body["gpu_seconds"].clone()), (json!(1), json!("1.5")));
    assert_eq!(a.body["profitable_models"][0]["model"], "llama3.2");
    assert_eq!(a.body["profitable_models"][0]["gross"], receipt["price"]);
    assert_eq!(a.body["peak_hours"].as_array().unwrap().len(), 1);
    assert_eq!(a.body["earnings"]["jobs"], 1);
    assert!(a.body["utilization_bps"].as_u64().unwrap() > 0);

    // Suggestions: the facts they read, the rules' answer.
    let sg = app.get(&format!("/v1/listings/{}/suggestions", s.gpu_id), Some(&s.who.key)).await;
    assert_eq!(sg.status, StatusCode::OK, "{:?}", sg.body);
    assert_eq!(sg.body["region_median_unit_price"], receipt["unit_price"]);
    assert_eq!(sg.body["closed_hours_per_week"], 0, "no schedule: always open");
    for item in sg.body["items"].as_array().unwrap() {
        assert!(!item["implementation_steps"].as_array().unwrap().is_empty() && item["impact"].is_string(), "{item:?}");
    }
    assert_problem(&app.get(&format!("/v1/listings/{}/suggestions", s.gpu_id), Some(&other.who.key)).await, 403, "forbidden");
}

macro_rules! insight_suite {
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
            case!(health_reports_raise_bounded_alerts_for_their_provider);
            case!(market_intelligence_is_measured_and_signals_are_only_shown);
        }
    };
}

insight_suite!(sqlite, aitbc_store::conformance::sqlite());
insight_suite!(dynamodb_sqs, aitbc_store::conformance::aws());
