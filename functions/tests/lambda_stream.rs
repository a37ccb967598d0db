//! The chat group's Lambda as AWS runs it behind a function URL in response-streaming mode: the
//! real `lambda_runtime` loop (`aitbc_functions::lambda::run`) against a stand-in of the Lambda
//! runtime API on loopback, which hands out one function URL event
//! (`samples/requests/function-url-chat-stream.json`) and reads the streamed response as Lambda
//! does: the `streaming` response mode, a JSON prelude with the status and headers, eight NUL
//! bytes, then the body as the handler yields it.
//!
//! The check is that tokens leave the function while the job runs: the worker's pieces reach the
//! runtime API before the worker completes the job, then the finish, the usage and `[DONE]`.
//! The store is SQLite here; `tests/tests/infra.rs` runs the same stream over DynamoDB and SQS
//! (moto) within the template's IAM roles.
//!
//! One test in this file: the runtime reads its endpoint and the function's settings from the
//! process environment.

use aitbc_core::config::MarketConfig;
use aitbc_core::signing::NamedSigningKey;
use aitbc_core::values::KeyId;
use aitbc_functions::{local_router, router_for, AppState, Group};
use aitbc_market::{Market, Settings, SystemClock};
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What the runtime API stand-in saw of the function's response.
#[derive(Debug)]
enum Seen {
    /// The response's request headers: its mode and content type.
    Opened { mode: Option<String>, content_type: Option<String> },
    Frame(Instant, Bytes),
    End,
    Error(String),
}

struct RuntimeApi {
    event: Mutex<Option<String>>,
    seen: mpsc::UnboundedSender<Seen>,
}

const REQUEST_ID: &str = "8476a536-e9f4-11e8-9739-2dfe598c3fcd";

async fn next(State(api): State<Arc<RuntimeApi>>) -> Response {
    let Some(event) = api.event.lock().unwrap().take() else {
        // One invocation only: the runtime's next poll waits for the test to end.
        std::future::pending::<()>().await;
        unreachable!();
    };
    let deadline_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() + 150_000;
    Response::builder()
        .header("lambda-runtime-aws-request-id", REQUEST_ID)
        .header("lambda-runtime-deadline-ms", deadline_ms.to_string())
        .header("lambda-runtime-invoked-function-arn", "arn:aws:lambda:us-east-1:123456789012:function:aitbc-chat")
        .header("lambda-runtime-trace-id", "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1")
        .header("content-type", "application/json")
        .body(Body::from(event))
        .unwrap()
}

async fn response(State(api): State<Arc<RuntimeApi>>, Path(id): Path<String>, headers: HeaderMap, body: Body) -> StatusCode {
    assert_eq!(id, REQUEST_ID);
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let _ = api.seen.send(Seen::Opened { mode: header("lambda-runtime-function-response-mode"), content_type: header("content-type") });
    let mut body = body;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    let _ = api.seen.send(Seen::Frame(Instant::now(), data));
                }
            }
            Err(e) => {
                let _ = api.seen.send(Seen::Error(e.to_string()));
                return StatusCode::BAD_REQUEST;
            }
        }
    }
    let _ = api.seen.send(Seen::End);
    StatusCode::ACCEPTED
}

async fn error(State(api): State<Arc<RuntimeApi>>, body: Bytes) -> StatusCode {
    let _ = api.seen.send(Seen::Error(String::from_utf8_lossy(&body).into_owned()));
    StatusCode::ACCEPTED
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr.to_string()
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn post(&self, path: &str, key: Option<&str>, body: Value) -> (u16, Value) {
        let mut request = self.http.post(format!("http://{}{path}", self.base)).json(&body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
    async fn get(&self, path: &str, key: &str) -> (u16, Value) {
        let response = self.http.get(format!("http://{}{path}", self.base)).bearer_auth(key).send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_lambda_streams_tokens_through_the_runtime_api_while_the_job_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (store, queue) = aitbc_store::provision::sqlite(dir.path().join("m.db"), &[], aitbc_store::queue_spec()).await.unwrap();
    let key = NamedSigningKey::from_seed(KeyId::parse("aitbc-market-test").unwrap(), [5; 32]);
    let market = Market::new(Arc::new(store), Arc::new(queue), MarketConfig::default(), Settings { faucet: true, ..Settings::default() }, key, Arc::new(SystemClock));
    market.bootstrap().await.unwrap();
    // The rest of the API (accounts, listings, the worker's job routes) over the same market.
    let api = Api { base: serve(local_router(AppState { market: market.clone() })).await, http: reqwest::Client::new() };

    // A provider whose worker serves smollm2:135m, and a funded client.
    let (s, provider) = api.post("/v1/accounts", None, json!({"role": "provider"})).await;
    assert_eq!(s, 201, "{provider}");
    let pkey = provider["api_key"].as_str().unwrap().to_string();
    let signing = NamedSigningKey::from_seed(KeyId::parse("prov-stream-1").unwrap(), [9; 32]);
    let (s, body) = api.post("/v1/providers/keys", Some(&pkey), serde_json::to_value(signing.public()).unwrap()).await;
    assert_eq!(s, 201, "{body}");
    let listing = json!({"name": "Chat-GPU", "memory_gib": 24, "cuda_version": "12.1", "base_price": "0.05", "region": "us-west", "models": ["smollm2:135m"], "count": 1});
    let (s, body) = api.post("/v1/listings", Some(&pkey), listing).await;
    assert_eq!(s, 201, "{body}");
    let gpu_id = body["gpu_id"].as_str().unwrap().to_string();
    let (s, body) = api.post(&format!("/v1/listings/{gpu_id}/heartbeat"), Some(&pkey), json!({"worker_id": "wrk-1", "models": ["smollm2:135m"]})).await;
    assert_eq!(s, 200, "{body}");
    let (s, client) = api.post("/v1/accounts", None, json!({"role": "client"})).await;
    assert_eq!(s, 201, "{client}");
    let ckey = client["api_key"].as_str().unwrap().to_string();
    let caddr = client["address"].as_str().unwrap().to_string();
    let (s, body) = api.post(&format!("/v1/accounts/{caddr}/deposits"), Some(&ckey), json!({"amount": "100"})).await;
    assert_eq!(s, 201, "{body}");

    // The function URL's event: a streamed chat completion with usage.
    let request = json!({
        "model": "smollm2:135m", "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 16, "stream": true, "stream_options": {"include_usage": true}, "gpu_id": gpu_id,
    });
    let sample = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../samples/requests/function-url-chat-stream.json")).unwrap();
    let event = sample.replace("API_KEY", &ckey).replace("\"BODY\"", &serde_json::to_string(&request.to_string()).unwrap());
    serde_json::from_str::<Value>(&event).expect("the event is JSON");

    // The runtime API stand-in, and the chat Lambda's runtime loop against it.
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let runtime = Arc::new(RuntimeApi { event: Mutex::new(Some(event)), seen: seen_tx });
    let runtime_api = serve(
        Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(error))
            .with_state(runtime),
    )
    .await;
    for (name, value) in [
        ("AWS_LAMBDA_RUNTIME_API", runtime_api.as_str()),
        ("AWS_LAMBDA_FUNCTION_NAME", "aitbc-chat"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "test"),
        ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/aitbc-chat"),
    ] {
        std::env::set_var(name, value);
    }
    std::env::remove_var("AWS_LAMBDA_MAX_CONCURRENCY");
    let chat = router_for(Group::Chat, AppState { market: market.clone() });
    // Its own thread and runtime, as in a Lambda process (the runtime's future is not Send).
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _ = rt.block_on(aitbc_functions::lambda::run(Group::Chat, chat));
    });

    // The response opens in streaming mode with the prelude, before any token exists.
    let within = Duration::from_secs(20);
    let opened = tokio::time::timeout(within, seen.recv()).await.expect("the function answers").unwrap();
    match opened {
        Seen::Opened { mode, content_type } => {
            assert_eq!(mode.as_deref(), Some("streaming"));
            assert_eq!(content_type.as_deref(), Some("application/vnd.awslambda.http-integration-response"));
        }
        other => panic!("expected the streamed response to open, saw {other:?}"),
    }
    let mut body: Vec<u8> = Vec::new();
    let mut arrivals: Vec<(Instant, usize)> = Vec::new();
    let mut ended = false;
    let receive = |seen_item: Seen, body: &mut Vec<u8>, arrivals: &mut Vec<(Instant, usize)>| match seen_item {
        Seen::Frame(at, bytes) => {
            body.extend_from_slice(&bytes);
            arrivals.push((at, body.len()));
            false
        }
        Seen::End => true,
        Seen::Error(e) => panic!("the function reported an error: {e}"),
        Seen::Opened { .. } => panic!("the response opened twice"),
    };

    // The worker: the job is queued; it claims and starts it, then sends two pieces of text.
    let job_id = {
        let deadline = Instant::now() + within;
        loop {
            let (s, jobs) = api.get("/v1/jobs", &ckey).await;
            assert_eq!(s, 200, "{jobs}");
            if let Some(id) = jobs["items"].as_array().and_then(|items| items.first()).and_then(|j| j["job_id"].as_str()) {
                break id.to_string();
            }
            assert!(Instant::now() < deadline, "the chat request's job never appeared");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (s, body_) = api.post(&format!("/v1/jobs/{job_id}/claim"), Some(&pkey), json!({"worker_id": "wrk-1"})).await;
    assert_eq!(s, 200, "{body_}");
    let (s, body_) = api.post(&format!("/v1/jobs/{job_id}/start"), Some(&pkey), json!({"worker_id": "wrk-1"})).await;
    assert_eq!(s, 200, "{body_}");
    let pieces = ["The capital of France", " is Paris."];
    for (seq, text) in pieces.iter().enumerate() {
        let (s, body_) = api.post(&format!("/v1/jobs/{job_id}/chunks"), Some(&pkey), json!({"worker_id": "wrk-1", "seq": seq, "text": text})).await;
        assert_eq!(s, 204, "{body_}");
    }
    // Both pieces leave the function before the job completes.
    let deadline = Instant::now() + within;
    while !String::from_utf8_lossy(&body).contains(" is Paris.") {
        let left = deadline.saturating_duration_since(Instant::now());
        let item = tokio::time::timeout(left, seen.recv()).await.unwrap_or_else(|_| panic!("the pieces did not stream before completion: {:?}", String::from_utf8_lossy(&body))).unwrap();
        assert!(!receive(item, &mut body, &mut arrivals), "the stream ended before completion: {:?}", String::from_utf8_lossy(&body));
    }
    let completed_at = Instant::now();

    // The worker completes the job with its receipt (CPU-seconds, the token counts).
    let (s, job) = api.get(&format!("/v1/jobs/{job_id}"), &pkey).await;
    assert_eq!(s, 200, "{job}");
    let record: aitbc_market::jobs::JobRecord = serde_json::from_value(job).unwrap();
    let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let metered = aitbc_core::receipt::Metered { units: aitbc_core::money::GpuMillis::from_millis(900), unit_type: aitbc_core::receipt::UnitType::CpuSeconds, tokens: Some((7, 6)) };
    let receipt = record.receipt_body(metered, now_s - 1, now_s).unwrap().sign(&signing).unwrap();
    let text = pieces.concat();
    let output = json!({
        "checksum": aitbc_core::jobspec::checksum_bytes(text.as_bytes()), "backend": "cpu", "device_ms": 900, "wall_ms": 1000,
        "text": {"text": text, "finish_reason": "stop", "prompt_tokens": 7, "completion_tokens": 6, "load_ms": 0, "prefill_ms": 100, "decode_ms": 800, "device": "cpu"},
    });
    let (s, done) = api.post(&format!("/v1/jobs/{job_id}/complete"), Some(&pkey), json!({"worker_id": "wrk-1", "receipt": receipt, "output": output})).await;
    assert_eq!(s, 200, "{done}");

    while !ended {
        let item = tokio::time::timeout(within, seen.recv()).await.expect("the stream ends after completion").unwrap();
        ended = receive(item, &mut body, &mut arrivals);
    }
    assert!(arrivals.len() >= 3, "the body came in {} frames: it was buffered, not streamed", arrivals.len());
    assert!(arrivals.iter().any(|(at, _)| *at < completed_at), "no frame before completion");

    // The body: the prelude (status and headers), eight NUL bytes, then OpenAI's events.
    let split = body.windows(8).position(|w| w == [0u8; 8]).expect("the prelude's eight NUL bytes");
    let prelude: Value = serde_json::from_slice(&body[..split]).expect("a JSON prelude");
    assert_eq!(prelude["statusCode"], 200, "{prelude}");
    assert_eq!(prelude["headers"]["content-type"], "text/event-stream", "{prelude}");
    let sse = String::from_utf8(body[split + 8..].to_vec()).unwrap();
    let events: Vec<Value> = sse.lines().filter_map(|l| l.strip_prefix("data: ")).filter(|d| *d != "[DONE]").map(|d| serde_json::from_str(d).unwrap()).collect();
    let streamed: String = events.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(streamed, text);
    assert!(events.iter().all(|e| e["object"] == "chat.completion.chunk"), "{events:?}");
    assert!(events.iter().any(|e| e["choices"][0]["finish_reason"] == "stop"), "{events:?}");
    let usage = events.iter().rev().find(|e| e["usage"].is_object()).unwrap_or_else(|| panic!("no usage chunk: {events:?}"));
    assert_eq!(usage["usage"]["total_tokens"], 13, "{usage}");
    assert!(sse.trim_end().ends_with("data: [DONE]"), "{sse}");
}
