//! A typed client of the aitbc HTTP API. Answers are JSON values or typed records; failures are
//! [`ClientError`]s that keep the API's stable problem `code`, or name the URL that could not
//! be reached. Every request has a timeout.

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use std::time::Duration;

/// A request gives up after this long.
pub const REQUEST_TIMEOUT_MS: u64 = 30_000;
/// Connecting gives up after this long.
pub const CONNECT_TIMEOUT_MS: u64 = 5_000;
/// A server-sent event stream gives up after this long (the server ends a stream well before:
/// twice a job's default time limit).
pub const STREAM_TIMEOUT_MS: u64 = 10 * 60 * 1_000;
/// One server-sent event's bytes, at most: a longer one is a protocol error, not a memory sink.
pub const SSE_EVENT_BYTES_MAX: usize = 1 << 20;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The API answered with a problem document.
    #[error("{detail} ({code}, HTTP {status})")]
    Api { status: u16, code: String, detail: String, field: Option<String> },
    /// The API could not be reached.
    #[error("cannot reach the aitbc API at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The answer was not what the API promises.
    #[error("unexpected answer from {url}: {reason}")]
    Protocol { url: String, reason: String },
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
    /// Worth retrying later: unreachable, rate limited, unavailable.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } => true,
            ClientError::Api { status, .. } => *status == 429 || *status == 503 || *status >= 500,
            ClientError::Protocol { .. } => false,
        }
    }
}

/// The API at `base` (e.g. `http://127.0.0.1:8080`), as the holder of `api_key` if any.
#[derive(Clone)]
pub struct Client {
    base: String,
    api_key: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base: &str, api_key: Option<String>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
            .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
            .build()
            .expect("an HTTP client without TLS builds");
        Self { base: base.trim_end_matches('/').to_string(), api_key, http }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn api_key(&self) -> Option<&str> {
        self.api_key.as_deref()
    }

    pub fn with_key(&self, api_key: &str) -> Self {
        Self { api_key: Some(api_key.to_string()), ..self.clone() }
    }

    /// One request; `idempotency_key` goes in the `Idempotency-Key` header.
    pub async fn request<T: DeserializeOwned>(&self, method: Method, path: &str, body: Option<&Value>, idempotency_key: Option<&str>) -> Result<T, ClientError> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method, &url);
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key);
        }
        if let Some(key) = idempotency_key {
            req = req.header("Idempotency-Key", key);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| ClientError::Unreachable { url: url.clone(), reason: root_cause(&e) })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| ClientError::Unreachable { url: url.clone(), reason: root_cause(&e) })?;
        if !status.is_success() {
            return Err(problem(&url, status, &text));
        }
        let text = if text.is_empty() { "null" } else { text.as_str() };
        serde_json::from_str(text).map_err(|e| ClientError::Protocol { url, reason: e.to_string() })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.request(Method::GET, path, None, None).await
    }

    pub async fn post<T: DeserializeOwned, B: Serialize>(&self, path: &str, body: &B) -> Result<T, ClientError> {
        let body = serde_json::to_value(body).expect("request bodies serialize");
        self.request(Method::POST, path, Some(&body), None).await
    }

    pub async fn post_idempotent<T: DeserializeOwned, B: Serialize>(&self, path: &str, body: &B, key: &str) -> Result<T, ClientError> {
        let body = serde_json::to_value(body).expect("request bodies serialize");
        self.request(Method::POST, path, Some(&body), Some(key)).await
    }

    pub async fn patch<T: DeserializeOwned, B: Serialize>(&self, path: &str, body: &B) -> Result<T, ClientError> {
        let body = serde_json::to_value(body).expect("request bodies serialize");
        self.request(Method::PATCH, path, Some(&body), None).await
    }

    pub async fn put<T: DeserializeOwned, B: Serialize>(&self, path: &str, body: &B) -> Result<T, ClientError> {
        let body = serde_json::to_value(body).expect("request bodies serialize");
        self.request(Method::PUT, path, Some(&body), None).await
    }

    /// POSTs `body` and reads the answer as server-sent events, calling `on_event(event, data)`
    /// for each (`event` is "message" unless the server named it) until the stream ends or
    /// `on_event` returns false. A refusal before the stream starts is a problem document.
    pub async fn post_events(&self, path: &str, body: &Value, idempotency_key: &str, on_event: &mut (dyn FnMut(&str, &str) -> bool + Send)) -> Result<(), ClientError> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.post(&url).timeout(Duration::from_millis(STREAM_TIMEOUT_MS)).header("Idempotency-Key", idempotency_key).json(body);
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key);
        }
        let unreachable = |e: reqwest::Error| ClientError::Unreachable { url: url.clone(), reason: root_cause(&e) };
        let mut resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.map_err(unreachable)?;
            return Err(problem(&url, status, &text));
        }
        let mut parser = SseParser::default();
        while let Some(bytes) = resp.chunk().await.map_err(unreachable)? {
            for (event, data) in parser.push(&bytes).map_err(|reason| ClientError::Protocol { url: url.clone(), reason })? {
                if !on_event(&event, &data) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    // The routes, by the names the guides use.

    pub async fn open_account(&self, role: &str) -> Result<Value, ClientError> {
        self.post("/v1/accounts", &json!({ "role": role })).await
    }
    pub async fn balances(&self, address: &str) -> Result<Value, ClientError> {
        self.get(&format!("/v1/accounts/{address}")).await
    }
    pub async fn deposit(&self, address: &str, amount: &str, key: &str) -> Result<Value, ClientError> {
        self.post_idempotent(&format!("/v1/accounts/{address}/deposits"), &json!({ "amount": amount }), key).await
    }
    /// Offers a client a fixed-rate contract (provider); `offer` is a `NewContract` body.
    pub async fn offer_contract(&self, offer: &Value) -> Result<Value, ClientError> {
        self.post("/v1/contracts", offer).await
    }
    /// Accepts the contract `provider` offered the caller (client).
    pub async fn accept_contract(&self, provider: &str) -> Result<Value, ClientError> {
        self.post(&format!("/v1/contracts/{provider}/accept"), &json!({})).await
    }
    /// Offers a client a reservation of a listing's capacity (provider); `offer` is a
    /// `NewReservation` body.
    pub async fn offer_reservation(&self, offer: &Value) -> Result<Value, ClientError> {
        self.post("/v1/reservations", offer).await
    }
    /// Accepts a reservation offered to the caller (client) and pays its fee.
    pub async fn accept_reservation(&self, reservation_id: &str) -> Result<Value, ClientError> {
        self.post(&format!("/v1/reservations/{reservation_id}/accept"), &json!({})).await
    }
    pub async fn register_key(&self, entry: &aitbc_core::signing::PublicKeyEntry) -> Result<Value, ClientError> {
        self.post("/v1/providers/keys", entry).await
    }
    pub async fn create_listing(&self, listing: &Value) -> Result<Value, ClientError> {
        self.post("/v1/listings", listing).await
    }
    pub async fn listing(&self, gpu_id: &str) -> Result<Value, ClientError> {
        self.get(&format!("/v1/listings/{gpu_id}")).await
    }
    /// Changes a listing (its provider's key): any fields of the API's `ListingPatch`.
    pub async fn update_listing(&self, gpu_id: &str, patch: &Value) -> Result<Value, ClientError> {
        self.patch(&format!("/v1/listings/{gpu_id}"), patch).await
    }
    /// Sets (`Some`, AITBC per GPU-hour as a decimal, e.g. "0.2") or removes (`None`) the
    /// listing's own prices of models; models not named keep theirs.
    pub async fn set_model_prices(&self, gpu_id: &str, prices: &[(&str, Option<&str>)]) -> Result<Value, ClientError> {
        let prices: serde_json::Map<String, Value> = prices.iter().map(|(model, price)| (model.to_string(), price.map_or(Value::Null, |p| json!(p)))).collect();
        self.update_listing(gpu_id, &json!({ "model_prices": prices })).await
    }
    /// A listing's liveness and, from a worker, the models it has loaded (what the listing then
    /// serves text generation of); `None` leaves the last report as it was.
    pub async fn listing_heartbeat(&self, gpu_id: &str, worker_id: &str, models: Option<&[String]>) -> Result<Value, ClientError> {
        let mut body = json!({ "worker_id": worker_id });
        if let Some(models) = models {
            body["models"] = json!(models);
        }
        self.post(&format!("/v1/listings/{gpu_id}/heartbeat"), &body).await
    }
    /// A heartbeat that also carries the worker's health report (`None`: none this time).
    pub async fn listing_heartbeat_with_health(&self, gpu_id: &str, worker_id: &str, models: Option<&[String]>, health: Option<&Value>) -> Result<Value, ClientError> {
        let mut body = json!({ "worker_id": worker_id });
        if let Some(models) = models {
            body["models"] = json!(models);
        }
        if let Some(health) = health {
            body["health"] = health.clone();
        }
        self.post(&format!("/v1/listings/{gpu_id}/heartbeat"), &body).await
    }
    // Provider insight: monitoring, alerts, analytics, suggestions, sharing, market intelligence.
    pub async fn set_monitoring(&self, gpu_id: &str, config: &Value) -> Result<Value, ClientError> {
        self.put(&format!("/v1/listings/{gpu_id}/monitoring"), config).await
    }
    pub async fn listing_alerts(&self, gpu_id: &str, limit: usize) -> Result<Value, ClientError> {
        self.get(&format!("/v1/listings/{gpu_id}/alerts?limit={limit}")).await
    }
    pub async fn listing_analytics(&self, gpu_id: &str, period: &str) -> Result<Value, ClientError> {
        self.get(&format!("/v1/listings/{gpu_id}/analytics?period={period}")).await
    }
    pub async fn listing_suggestions(&self, gpu_id: &str) -> Result<Value, ClientError> {
        self.get(&format!("/v1/listings/{gpu_id}/suggestions")).await
    }
    pub async fn set_sharing(&self, address: &str, sharing: &Value) -> Result<Value, ClientError> {
        self.put(&format!("/v1/providers/{address}/sharing"), sharing).await
    }
    pub async fn market_intelligence(&self, region: Option<&str>, hours: u32) -> Result<Value, ClientError> {
        let region = region.map(|r| format!("&region={r}")).unwrap_or_default();
        self.get(&format!("/v1/market/intelligence?hours={hours}{region}")).await
    }
    pub async fn post_market_signal(&self, signal: &Value) -> Result<Value, ClientError> {
        self.post("/v1/market/signals", signal).await
    }
    pub async fn quote(&self, input: &Value) -> Result<Value, ClientError> {
        self.post("/v1/quotes", input).await
    }
    pub async fn submit_job(&self, body: &Value, idempotency_key: &str) -> Result<Value, ClientError> {
        self.post_idempotent("/v1/jobs", body, idempotency_key).await
    }
    pub async fn job(&self, job_id: &str) -> Result<Value, ClientError> {
        self.get(&format!("/v1/jobs/{job_id}")).await
    }
    /// A worker's call on a job: claim, start, heartbeat, release.
    pub async fn job_action(&self, job_id: &str, action: &str, worker_id: &str, lease_ms: Option<u64>) -> Result<Value, ClientError> {
        let mut body = json!({ "worker_id": worker_id });
        if let Some(ms) = lease_ms {
            body["lease_ms"] = json!(ms);
        }
        self.post(&format!("/v1/jobs/{job_id}/{action}"), &body).await
    }
    /// Appends chunk `seq` of a running job's output (for clients' streams).
    pub async fn append_chunk(&self, job_id: &str, worker_id: &str, seq: u32, text: &str) -> Result<(), ClientError> {
        self.post::<Value, _>(&format!("/v1/jobs/{job_id}/chunks"), &json!({ "worker_id": worker_id, "seq": seq, "text": text })).await.map(|_| ())
    }
    pub async fn complete_job(&self, job_id: &str, completion: &Value) -> Result<Value, ClientError> {
        self.post(&format!("/v1/jobs/{job_id}/complete"), completion).await
    }
    pub async fn fail_job(&self, job_id: &str, worker_id: &str, reason: &str, retryable: bool) -> Result<Value, ClientError> {
        self.post(&format!("/v1/jobs/{job_id}/fail"), &json!({ "worker_id": worker_id, "reason": reason, "retryable": retryable })).await
    }
    pub async fn keys(&self) -> Result<aitbc_core::signing::KeySetDocument, ClientError> {
        self.get("/v1/keys").await
    }
}

fn root_cause(e: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = e;
    while let Some(next) = source.source() {
        source = next;
    }
    if e.is_timeout() {
        "timed out".into()
    } else {
        source.to_string()
    }
}

fn problem(url: &str, status: StatusCode, text: &str) -> ClientError {
    match serde_json::from_str::<Value>(text) {
        Ok(p) if p.get("code").is_some() => ClientError::Api {
            status: status.as_u16(),
            code: p["code"].as_str().unwrap_or("unknown").to_string(),
            detail: p["detail"].as_str().unwrap_or("").to_string(),
            field: p["field"].as_str().map(str::to_string),
        },
        _ => ClientError::Protocol { url: url.to_string(), reason: format!("HTTP {status} without a problem document") },
    }
}

/// Splits a server-sent event stream into `(event, data)` pairs (the WHATWG rules this API
/// uses: `event:` and `data:` fields, events ended by a blank line, comments ignored).
#[derive(Default)]
struct SseParser {
    pending: Vec<u8>,
}

impl SseParser {
    fn push(&mut self, bytes: &[u8]) -> Result<Vec<(String, String)>, String> {
        self.pending.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.pending.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = self.pending.drain(..end + 2).collect();
            let block = String::from_utf8(block).map_err(|_| "an event that is not UTF-8".to_string())?;
            let mut event = "message".to_string();
            let mut data: Vec<&str> = Vec::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim_start().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            if !data.is_empty() {
                events.push((event, data.join("\n")));
            }
        }
        if self.pending.len() > SSE_EVENT_BYTES_MAX {
            return Err(format!("an event over {SSE_EVENT_BYTES_MAX} bytes"));
        }
        Ok(events)
    }
}

#[cfg(test)]
mod sse_tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_are_joined() {
        let mut p = SseParser::default();
        assert!(p.push(b"data: {\"a\"").unwrap().is_empty());
        let got = p.push(b":1}\n\n: keep-alive\n\nevent: error\ndata: x\ndata: y\n\ndata: [DONE]\n\n").unwrap();
        assert_eq!(got, vec![("message".into(), "{\"a\":1}".into()), ("error".into(), "x\ny".into()), ("message".into(), "[DONE]".into())]);
    }

    #[test]
    fn an_endless_event_is_refused() {
        let mut p = SseParser::default();
        let big = vec![b'a'; SSE_EVENT_BYTES_MAX + 1];
        assert!(p.push(&big).is_err());
    }
}
