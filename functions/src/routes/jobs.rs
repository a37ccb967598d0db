//! Jobs: submit (with an Idempotency-Key, which names the job), list, get, result, cancel; and
//! the worker's side: claim, start, heartbeat, complete, fail, release.

use super::{PageOut, Paging, PAGE_ITEMS_DEFAULT};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_path, ApiJson, ApiQuery, Auth, IdempotencyKey};
use aitbc_core::values::{JobId, WorkerId};
use aitbc_market::jobs::{Completion, SubmitJob};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs", post(submit).get(list))
        .route("/v1/jobs/{job_id}", get(get_one))
        .route("/v1/jobs/{job_id}/result", get(result))
        .route("/v1/jobs/{job_id}/cancel", post(cancel))
        .route("/v1/jobs/{job_id}/claim", post(claim))
        .route("/v1/jobs/{job_id}/start", post(start))
        .route("/v1/jobs/{job_id}/heartbeat", post(heartbeat))
        .route("/v1/jobs/{job_id}/complete", post(complete))
        .route("/v1/jobs/{job_id}/fail", post(fail))
        .route("/v1/jobs/{job_id}/release", post(release))
}

fn job_json<T: serde::Serialize>(job: &T) -> Json<Value> {
    Json(serde_json::to_value(job).expect("serializes"))
}

async fn submit(State(s): State<AppState>, Auth(caller): Auth, IdempotencyKey(key): IdempotencyKey, ApiJson(body): ApiJson<SubmitJob>) -> ApiResult<(StatusCode, Json<Value>)> {
    let key = key.ok_or_else(|| ApiError::invalid("Idempotency-Key", "submitting a job needs an Idempotency-Key header (it names the job, so a retry cannot pay twice)"))?;
    let job = s.market.submit_job(&caller, body, &key).await?;
    Ok((StatusCode::CREATED, job_json(&job)))
}

async fn list(State(s): State<AppState>, Auth(caller): Auth, ApiQuery(paging): ApiQuery<Paging>) -> ApiResult<Json<Value>> {
    let (items, next_cursor) = s.market.list_jobs(&caller, paging.limit.unwrap_or(PAGE_ITEMS_DEFAULT), paging.cursor).await?;
    Ok(job_json(&PageOut { items, next_cursor }))
}

fn job_id(text: &str) -> Result<JobId, ApiError> {
    parse_path(text, JobId::parse)
}

async fn get_one(State(s): State<AppState>, Auth(caller): Auth, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(job_json(&s.market.get_job(&caller, &job_id(&id)?).await?))
}

async fn result(State(s): State<AppState>, Auth(caller): Auth, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let job = s.market.get_job(&caller, &job_id(&id)?).await?;
    match (&job.output, &job.failure) {
        (Some(output), _) => Ok(Json(json!({ "job_id": job.job_id, "state": job.status.state, "output": output, "receipt_id": job.receipt_id }))),
        (None, Some(failure)) if job.status.state.is_terminal() => Ok(Json(json!({ "job_id": job.job_id, "state": job.status.state, "failure": failure }))),
        _ => Err(aitbc_market::MarketError::Conflict(format!("job {} has no result yet: it is {}", job.job_id, job.status.state)).into()),
    }
}

async fn cancel(State(s): State<AppState>, Auth(caller): Auth, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(job_json(&s.market.cancel_job(&caller, &job_id(&id)?).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseBody {
    worker_id: WorkerId,
    #[serde(default)]
    lease_ms: Option<u64>,
}

async fn claim(State(s): State<AppState>, Auth(caller): Auth, Path(id): Path<String>, ApiJson(body): ApiJson<LeaseBody>) -> ApiResult<Json<Value>> {
    Ok(job_json(&s.market.claim_job(&caller, &job_id(&id)?, &body.worker_id, body.lease_ms).await?))
}

async fn start(State(s): State<AppState>, Auth(caller): Auth, Path(id): Path<String>, ApiJson(body): ApiJson<LeaseBody>) -> ApiResult<Json<Value>> {
    Ok(job_json(&s.market.start_job(&caller, &job_id(&id)?, &body.worker_id).await?))
}

async fn heartbeat(State(s): State<AppState>, Auth(caller): Auth, Path(id): Path<String>, ApiJson(body): ApiJson<LeaseBody>) -> ApiResult<Json<Value>> {
    Ok(job_json(&s.market.heartbeat_job(&caller, &job_id(&id)?, &body.worker_id, body.lease_ms).await?))
}

async fn complete(State(s): State<AppState>, Auth(caller): Auth, Path(id): Path<String>, ApiJson(body): ApiJson<Completion>) -> ApiResult<Json<Value>> {
    let (job, receipt) = s.market.complete_job(&caller, &job_id(&id)?, body).await?;
    Ok(Json(json!({ "job": job, "receipt": receipt })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailBody {
    worker_id: WorkerId,
    reason: String,
    retryable: bool,
}

async fn fail(State(s): State<AppState>, Auth(caller): Auth, Path(id): Path<String>, ApiJson(body): ApiJson<FailBody>) -> ApiResult<Json<Value>> {
    Ok(job_json(&s.market.fail_job(&caller, &job_id(&id)?, &body.worker_id, body.reason, body.retryable).await?))
}

async fn release(State(s): State<AppState>, Auth(caller): Auth, Path(id): Path<String>, ApiJson(body): ApiJson<LeaseBody>) -> ApiResult<Json<Value>> {
    Ok(job_json(&s.market.release_job(&caller, &job_id(&id)?, &body.worker_id).await?))
}
