//! The OpenAI-compatible API: `GET /v1/models`, `POST /v1/chat/completions` and
//! `POST /v1/completions`, so that the official `openai` client (and any agent framework on it)
//! buys inference here unchanged. A request becomes a `text_generation` job, priced, held in
//! escrow, queued and receipted like any other; the call waits, bounded, for its answer.
//!
//! - Same Bearer API keys, Idempotency-Key and problem+json rules as the rest of the API. A
//!   request without an Idempotency-Key gets a fresh one: each call is a new job.
//! - Parameters OpenAI defines that this marketplace does not honour (`n` > 1, `logprobs`,
//!   `tools`, ...) are refused by name (400), never ignored: the body is closed.
//! - Routing extensions in the body: `region`, `gpu_id`, `tier`, `max_price` (refused when the
//!   job's maximum price would be above it).
//! - The answer carries `aitbc`: the job, its receipt and its price.
//! - `stream: true` answers server-sent events in OpenAI's chunk format, relaying the text the
//!   worker posts as it generates (`POST /v1/jobs/{id}/chunks`), ending with `data: [DONE]`;
//!   `stream_options.include_usage` adds a final chunk with `usage`. A client that disconnects
//!   leaves the job running: it is billed for what ran, as any job. A job that fails ends the
//!   stream with an error event (its hold is voided by the job rules).
//! - When the bounded wait ends first, the answer is 202 with the job and where to poll.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, Auth, IdempotencyKey};
use crate::openapi::{AuthErrors, BodyErrors, Forbidden, NotFound, PaymentRequired, StoreErrors};
use aitbc_core::jobspec::{ChatMessage, FinishReason, JobSpec, TextOutput, JOB_TIMEOUT_MS_DEFAULT, MAX_TOKENS_DEFAULT, STOP_MAX};
use aitbc_core::money::{Amount, GpuMillis};
use aitbc_core::pricing::Tier;
use aitbc_core::values::{JobId, ListingId, ModelName};
use aitbc_market::auth::Principal;
use aitbc_market::jobs::{JobRecord, SubmitJob};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
}

/// The group's operations in the OpenAPI document (merged into the jobs group's).
#[derive(utoipa::OpenApi)]
#[openapi(paths(models, chat_completions, completions))]
pub(crate) struct Paths;

/// How long a call waits for its answer, at most, before answering 202 with the job to poll:
/// below API Gateway's 30 s and the default job time limit.
pub const WAIT_MS_MAX: u64 = 25_000;
/// Between two looks at the job (and its chunks) while waiting.
const POLL_MS: u64 = 50;

/// The models listings serve now, with their rate (OpenAI's model list).
#[derive(Serialize, utoipa::ToSchema)]
struct ModelList {
    /// `list`.
    object: &'static str,
    data: Vec<ModelEntry>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ModelEntry {
    /// The model's name, as `model` in a request.
    id: ModelName,
    /// `model`.
    object: &'static str,
    created: i64,
    owned_by: &'static str,
    /// The marketplace's terms for it.
    aitbc: ModelTerms,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ModelTerms {
    /// The rate card's price per metered second, AITBC; absent for a model not on the card.
    #[serde(skip_serializing_if = "Option::is_none")]
    rate: Option<aitbc_core::money::Rate>,
    /// Listings online that have it loaded.
    listings: usize,
}

/// The models that online listings have loaded now, with the rate card's price.
#[utoipa::path(
    get,
    path = "/v1/models",
    responses((status = 200, description = "The models served now", body = ModelList), AuthErrors, StoreErrors),
    security(("bearer" = []))
)]
async fn models(State(s): State<AppState>, Auth(_): Auth) -> ApiResult<Json<ModelList>> {
    let served = s.market.served_models().await?;
    let data = served
        .into_iter()
        .map(|(id, listings)| {
            let rate = s.market.config.rate_card.rate(&id);
            ModelEntry { id, object: "model", created: 0, owned_by: "aitbc", aitbc: ModelTerms { rate, listings } }
        })
        .collect();
    Ok(Json(ModelList { object: "list", data }))
}

/// `stream_options`.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct StreamOptions {
    /// Add a last chunk with the usage counts.
    #[serde(default)]
    include_usage: bool,
}

/// `stop`: one string or several.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    fn strings(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

/// What both completion endpoints take besides the prompt: OpenAI's sampling parameters that
/// this marketplace honours, and its routing extensions.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ChatRequest {
    model: ModelName,
    messages: Vec<ChatMessage>,
    #[serde(flatten)]
    common: Common,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CompletionRequest {
    model: ModelName,
    prompt: String,
    #[serde(flatten)]
    common: Common,
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
struct Common {
    /// Tokens to generate, at most (OpenAI's older name).
    #[serde(default)]
    max_tokens: Option<u32>,
    /// Tokens to generate, at most.
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    stop: Option<Stop>,
    /// Only 1: one answer per job.
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    /// Routing extension: the market region [default us-west].
    #[serde(default)]
    region: Option<String>,
    /// Routing extension: one listing.
    #[serde(default)]
    gpu_id: Option<ListingId>,
    /// Routing extension: the service tier.
    #[serde(default)]
    tier: Option<Tier>,
    /// Extension: refuse the job if its maximum price (what escrow holds) is above this.
    #[serde(default)]
    max_price: Option<Amount>,
}

/// The region a request routes to unless it names one.
const REGION_DEFAULT: &str = "us-west";

impl Common {
    /// The job this request becomes.
    fn submit(self, model: ModelName, prompt: Option<String>, messages: Option<Vec<ChatMessage>>) -> Result<(SubmitJob, bool, bool, Option<Amount>), ApiError> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::invalid("n", "only n = 1 is served: one answer per job"));
        }
        if self.max_tokens.is_some() && self.max_completion_tokens.is_some() {
            return Err(ApiError::invalid("max_tokens", "give max_tokens or max_completion_tokens, not both"));
        }
        if self.stream_options.is_some() && !self.stream {
            return Err(ApiError::invalid("stream_options", "only with stream: true"));
        }
        let stop = self.stop.map(Stop::strings).unwrap_or_default();
        if stop.len() > STOP_MAX {
            return Err(ApiError::invalid("stop", format!("at most {STOP_MAX} strings")));
        }
        let spec = JobSpec::TextGeneration {
            model: model.clone(),
            prompt,
            messages,
            max_tokens: self.max_completion_tokens.or(self.max_tokens).unwrap_or(MAX_TOKENS_DEFAULT),
            temperature: self.temperature.unwrap_or(0.0),
            top_p: self.top_p.unwrap_or(1.0),
            seed: self.seed.unwrap_or(0),
            stop,
        };
        // The hold bounds the price by the job's time limit, as for any text job.
        let submit = SubmitJob {
            quote: None,
            model: Some(model),
            units: Some(GpuMillis::from_millis(JOB_TIMEOUT_MS_DEFAULT)),
            region: Some(self.region.unwrap_or_else(|| REGION_DEFAULT.to_string())).filter(|_| self.gpu_id.is_none()),
            gpu_id: self.gpu_id,
            tier: self.tier.unwrap_or_default(),
            spec,
            timeout_ms: None,
        };
        let usage = self.stream_options.is_some_and(|o| o.include_usage);
        Ok((submit, self.stream, usage, self.max_price))
    }
}

/// A chat completion: the messages, rendered with the model's own chat template, answered by a
/// `text_generation` job (OpenAI's response shape, plus `aitbc`).
#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    request_body = ChatRequest,
    responses(
        (status = 200, description = "The answer (or, with stream: true, server-sent events of chunks ending with [DONE])", body = Value),
        (status = 202, description = "The wait ended first: the job to poll", body = Value),
        AuthErrors, BodyErrors, Forbidden, NotFound, PaymentRequired, StoreErrors
    ),
    security(("bearer" = []))
)]
async fn chat_completions(State(s): State<AppState>, Auth(caller): Auth, IdempotencyKey(key): IdempotencyKey, ApiJson(body): ApiJson<ChatRequest>) -> ApiResult<Response> {
    let (submit, stream, usage, max_price) = body.common.submit(body.model, None, Some(body.messages))?;
    answer(s, caller, key, submit, stream, usage, max_price, Kind::Chat).await
}

/// A text completion of `prompt` (OpenAI's legacy completions), answered by a `text_generation`
/// job.
#[utoipa::path(
    post,
    path = "/v1/completions",
    request_body = CompletionRequest,
    responses(
        (status = 200, description = "The completion (or, with stream: true, server-sent events ending with [DONE])", body = Value),
        (status = 202, description = "The wait ended first: the job to poll", body = Value),
        AuthErrors, BodyErrors, Forbidden, NotFound, PaymentRequired, StoreErrors
    ),
    security(("bearer" = []))
)]
async fn completions(State(s): State<AppState>, Auth(caller): Auth, IdempotencyKey(key): IdempotencyKey, ApiJson(body): ApiJson<CompletionRequest>) -> ApiResult<Response> {
    let (submit, stream, usage, max_price) = body.common.submit(body.model, Some(body.prompt), None)?;
    answer(s, caller, key, submit, stream, usage, max_price, Kind::Completion).await
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Completion,
}

impl Kind {
    fn object(self, streamed: bool) -> &'static str {
        match (self, streamed) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Completion, _) => "text_completion",
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn answer(s: AppState, caller: Principal, key: Option<String>, submit: SubmitJob, stream: bool, usage: bool, max_price: Option<Amount>, kind: Kind) -> ApiResult<Response> {
    if let Some(limit) = max_price {
        let quote = s.market.quote(&aitbc_market::quotes::QuoteInput {
            model: submit.model.clone(),
            units: submit.units.unwrap_or(GpuMillis::from_millis(JOB_TIMEOUT_MS_DEFAULT)),
            region: submit.region.clone(),
            gpu_id: submit.gpu_id.clone(),
            tier: submit.tier,
            duration_hours: 0,
            kind: Some(aitbc_core::jobspec::JobKind::TextGeneration),
            batch_size: 0,
        })
        .await?;
        if quote.terms.max_price > limit {
            return Err(ApiError::invalid("max_price", format!("the job would hold {} AITBC, above max_price {limit}", quote.terms.max_price)));
        }
    }
    let key = key.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let model = submit.model.clone().expect("set by submit()");
    let job = s.market.submit_job(&caller, submit, &key).await?;
    let id = format!("{}-{}", if kind == Kind::Chat { "chatcmpl" } else { "cmpl" }, job.job_id);
    if stream {
        return Ok(stream_answer(s, caller, job.job_id, model, id, kind, usage).into_response());
    }
    let deadline = Instant::now() + Duration::from_millis(WAIT_MS_MAX);
    loop {
        // Registered before the job is read, so progress made while reading is not missed.
        let progress = s.market.progress().notified();
        tokio::pin!(progress);
        progress.as_mut().enable();
        let job = s.market.get_job(&caller, &job.job_id).await?;
        if let Some(text) = job.output.as_ref().and_then(|o| o.text.clone()) {
            return Ok(Json(final_answer(&job, &model, &id, kind, &text)).into_response());
        }
        if job.status.state.is_terminal() {
            return Err(failed(&job));
        }
        if Instant::now() >= deadline {
            let body = json!({ "object": "aitbc.job", "aitbc": { "job_id": job.job_id, "state": job.status.state, "poll": format!("/v1/jobs/{}/result", job.job_id) } });
            return Ok((StatusCode::ACCEPTED, Json(body)).into_response());
        }
        // Woken at once by this process's progress; other processes' (Lambda) by the poll.
        let _ = tokio::time::timeout(Duration::from_millis(POLL_MS), progress).await;
    }
}

/// A job that ended without an answer: 502, the job's failure named.
fn failed(job: &JobRecord) -> ApiError {
    let reason = job.failure.as_ref().map_or_else(|| job.status.state.to_string(), |f| f.reason.clone());
    ApiError::new(StatusCode::BAD_GATEWAY, "job_failed", format!("job {} ended {} without an answer: {reason}", job.job_id, job.status.state))
}

fn finish_reason(reason: FinishReason) -> &'static str {
    // OpenAI has no "timeout": the answer was cut short, as by max_tokens.
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length | FinishReason::Timeout => "length",
    }
}

fn usage_of(text: &TextOutput) -> Value {
    json!({ "prompt_tokens": text.prompt_tokens, "completion_tokens": text.completion_tokens, "total_tokens": text.prompt_tokens + text.completion_tokens })
}

fn aitbc_member(job: &JobRecord, text: &TextOutput) -> Value {
    json!({ "job_id": job.job_id, "receipt_id": job.receipt_id, "price": job.price, "finish_reason": text.finish_reason.name(), "device": text.device })
}

fn final_answer(job: &JobRecord, model: &ModelName, id: &str, kind: Kind, text: &TextOutput) -> Value {
    let choice = match kind {
        Kind::Chat => json!({ "index": 0, "message": { "role": "assistant", "content": text.text }, "finish_reason": finish_reason(text.finish_reason), "logprobs": null }),
        Kind::Completion => json!({ "index": 0, "text": text.text, "finish_reason": finish_reason(text.finish_reason), "logprobs": null }),
    };
    json!({
        "id": id, "object": kind.object(false), "created": job.created_at_ms / 1_000, "model": model,
        "choices": [choice], "usage": usage_of(text), "aitbc": aitbc_member(job, text),
    })
}

/// The server-sent events of a streamed answer: the worker's chunks as they arrive, then the
/// final chunk (finish reason; usage if asked), then `[DONE]`.
fn stream_answer(s: AppState, caller: Principal, job_id: JobId, model: ModelName, id: String, kind: Kind, usage: bool) -> Sse<impl futures_core::Stream<Item = Result<Event, Infallible>>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        let created = unix_now_s();
        let chunk = |delta: Value, finish: Option<&str>| {
            let choice = match kind {
                Kind::Chat => json!({ "index": 0, "delta": delta, "finish_reason": finish, "logprobs": null }),
                Kind::Completion => json!({ "index": 0, "text": delta.get("content").cloned().unwrap_or(json!("")), "finish_reason": finish, "logprobs": null }),
            };
            json!({ "id": id, "object": kind.object(true), "created": created, "model": model, "choices": [choice] })
        };
        let send = |value: Value| Event::default().data(value.to_string());
        if kind == Kind::Chat && tx.send(send(chunk(json!({ "role": "assistant", "content": "" }), None))).await.is_err() {
            return;
        }
        let mut last: Option<u32> = None;
        let mut sent = String::new();
        let deadline = Instant::now() + Duration::from_millis(JOB_TIMEOUT_MS_DEFAULT * 2);
        loop {
            let progress = s.market.progress().notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            let job = match s.market.get_job(&caller, &job_id).await {
                Ok(job) => job,
                Err(e) => {
                    let _ = tx.send(Event::default().event("error").data(json!({ "error": { "message": e.to_string(), "code": e.code() } }).to_string())).await;
                    return;
                }
            };
            // The chunks first, so that text written before completion goes out before the end.
            match s.market.chunks_after(&job_id, last, aitbc_market::stream::CHUNKS_PAGE_MAX).await {
                Ok(chunks) => {
                    for c in chunks {
                        last = Some(c.seq);
                        sent.push_str(&c.text);
                        if tx.send(send(chunk(json!({ "content": c.text }), None))).await.is_err() {
                            return; // The client left; the job goes on and is billed as it runs.
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "reading chunks"),
            }
            if let Some(text) = job.output.as_ref().and_then(|o| o.text.clone()) {
                // Whatever the chunks did not carry (a chunk lost to a worker's retry limit),
                // the final text does: the stream always adds up to the answer.
                if let Some(rest) = text.text.strip_prefix(sent.as_str()).filter(|r| !r.is_empty()) {
                    if tx.send(send(chunk(json!({ "content": rest }), None))).await.is_err() {
                        return;
                    }
                }
                let _ = tx.send(send(chunk(json!({}), Some(finish_reason(text.finish_reason))))).await;
                if usage {
                    let mut last = json!({ "id": id, "object": kind.object(true), "created": created, "model": model, "choices": [], "usage": usage_of(&text) });
                    last["aitbc"] = aitbc_member(&job, &text);
                    let _ = tx.send(send(last)).await;
                }
                let _ = tx.send(Event::default().data("[DONE]")).await;
                return;
            }
            if job.status.state.is_terminal() || Instant::now() >= deadline {
                let error = failed(&job);
                let _ = tx.send(Event::default().event("error").data(json!({ "error": { "message": error.detail, "code": error.code } }).to_string())).await;
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(POLL_MS), progress).await;
        }
    });
    let stream = futures_util_stream(rx);
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn unix_now_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The receiver as a stream of events.
fn futures_util_stream(mut rx: tokio::sync::mpsc::Receiver<Event>) -> impl futures_core::Stream<Item = Result<Event, Infallible>> {
    futures_core_stream(move |cx| rx.poll_recv(cx).map(|e| e.map(Ok)))
}

/// A stream from a poll function (what `futures::stream::poll_fn` does, without the crate).
fn futures_core_stream<T, F: FnMut(&mut std::task::Context<'_>) -> std::task::Poll<Option<T>> + Unpin>(f: F) -> impl futures_core::Stream<Item = T> {
    struct PollFn<F>(F);
    impl<T, F: FnMut(&mut std::task::Context<'_>) -> std::task::Poll<Option<T>> + Unpin> futures_core::Stream for PollFn<F> {
        type Item = T;
        fn poll_next(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<T>> {
            (self.0)(cx)
        }
    }
    PollFn(f)
}
