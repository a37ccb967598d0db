//! Jobs: submit (with an Idempotency-Key, which names the job), list, get, result, cancel; and
//! the worker's side: claim, start, heartbeat, complete, fail, release.

use super::{PageOut, Paging, PAGE_ITEMS_DEFAULT};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_path, ApiJson, ApiQuery, Auth, IdempotencyKey};
use crate::openapi::{AuthErrors, BadRequest, BodyErrors, Conflict, Forbidden, NotFound, PaymentRequired, StoreErrors};
use aitbc_core::job::JobState;
use aitbc_core::jobspec::JobOutput;
use aitbc_core::receipt::Receipt;
use aitbc_core::values::{JobId, WorkerId};
use aitbc_market::jobs::{BatchSubmitted, Completion, Failure, JobRecord, SubmitBatch, SubmitJob};
use aitbc_market::reputation::{JobRating, RateJob};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs", post(submit).get(list))
        .route("/v1/batches", post(submit_batch))
        .route("/v1/jobs/{job_id}", get(get_one))
        .route("/v1/jobs/{job_id}/result", get(result))
        .route("/v1/jobs/{job_id}/cancel", post(cancel))
        .route("/v1/jobs/{job_id}/claim", post(claim))
        .route("/v1/jobs/{job_id}/start", post(start))
        .route("/v1/jobs/{job_id}/heartbeat", post(heartbeat))
        .route("/v1/jobs/{job_id}/complete", post(complete))
        .route("/v1/jobs/{job_id}/fail", post(fail))
        .route("/v1/jobs/{job_id}/release", post(release))
        .route("/v1/jobs/{job_id}/chunks", post(chunk))
        .route("/v1/jobs/{job_id}/rating", post(rate).get(rating))
}

/// The group's operations in the OpenAPI document (`crate::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(submit, submit_batch, list, get_one, result, cancel, claim, start, heartbeat, complete, fail, release, chunk, rate, rating))]
pub(crate) struct Paths;

/// Submit a job (client): holds its maximum price in escrow and queues it on a listing.
#[utoipa::path(
    post,
    path = "/v1/jobs",
    params(("Idempotency-Key" = String, Header, description = "Names the job, so a retried submission cannot pay twice; the same key and body replay the first answer")),
    request_body = SubmitJob,
    responses((status = 201, description = "The job, queued", body = JobRecord), AuthErrors, BodyErrors, Forbidden, NotFound, PaymentRequired, Conflict, StoreErrors),
    security(("bearer" = []))
)]
async fn submit(State(s): State<AppState>, Auth(caller): Auth, IdempotencyKey(key): IdempotencyKey, ApiJson(body): ApiJson<SubmitJob>) -> ApiResult<(StatusCode, Json<JobRecord>)> {
    let key = key.ok_or_else(|| ApiError::invalid("Idempotency-Key", "submitting a job needs an Idempotency-Key header (it names the job, so a retry cannot pay twice)"))?;
    let job = s.market.submit_job(&caller, body, &key).await?;
    Ok((StatusCode::CREATED, Json(job)))
}

/// Submit a batch of jobs in one request (client): one quote for all, with the listing's batch
/// discount from its `min_batch_size` jobs; each job gets its own hold, receipt and settlement.
/// Funds for every hold and the queue's room are checked before anything is held.
#[utoipa::path(
    post,
    path = "/v1/batches",
    params(("Idempotency-Key" = String, Header, description = "Names the batch's jobs (`<key>#batch-<i>`), so a retried batch cannot pay twice; the same key and body replay the first answer")),
    request_body = SubmitBatch,
    responses((status = 201, description = "The batch's quote, its jobs (queued) and any refused", body = BatchSubmitted), AuthErrors, BodyErrors, Forbidden, NotFound, PaymentRequired, Conflict, StoreErrors),
    security(("bearer" = []))
)]
async fn submit_batch(State(s): State<AppState>, Auth(caller): Auth, IdempotencyKey(key): IdempotencyKey, ApiJson(body): ApiJson<SubmitBatch>) -> ApiResult<(StatusCode, Json<BatchSubmitted>)> {
    let key = key.ok_or_else(|| ApiError::invalid("Idempotency-Key", "submitting a batch needs an Idempotency-Key header (it names the jobs, so a retry cannot pay twice)"))?;
    let batch = s.market.submit_batch(&caller, body, &key).await?;
    Ok((StatusCode::CREATED, Json(batch)))
}

/// The caller's jobs, newest first.
#[utoipa::path(
    get,
    path = "/v1/jobs",
    params(Paging),
    responses((status = 200, description = "A page of jobs", body = PageOut<JobRecord>), AuthErrors, BadRequest, StoreErrors),
    security(("bearer" = []))
)]
async fn list(State(s): State<AppState>, Auth(caller): Auth, ApiQuery(paging): ApiQuery<Paging>) -> ApiResult<Json<PageOut<JobRecord>>> {
    let (items, next_cursor) = s.market.list_jobs(&caller, paging.limit.unwrap_or(PAGE_ITEMS_DEFAULT), paging.cursor).await?;
    Ok(Json(PageOut { items, next_cursor }))
}

fn job_id(text: &str) -> Result<JobId, ApiError> {
    parse_path(text, JobId::parse)
}

/// One job (its client or its provider).
#[utoipa::path(
    get,
    path = "/v1/jobs/{job_id}",
    params(("job_id" = JobId, Path, description = "The job")),
    responses((status = 200, description = "The job", body = JobRecord), AuthErrors, BadRequest, Forbidden, NotFound, StoreErrors),
    security(("bearer" = []))
)]
async fn get_one(State(s): State<AppState>, Auth(caller): Auth, Path(id): Path<String>) -> ApiResult<Json<JobRecord>> {
    Ok(Json(s.market.get_job(&caller, &job_id(&id)?).await?))
}

/// A job's result: its output (and receipt) once completed, or why it failed.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
enum JobResult {
    /// Completed: the worker's output and the receipt it was paid by.
    Output { job_id: JobId, state: JobState, output: JobOutput, receipt_id: Option<String> },
    /// Ended without output: why.
    Failure { job_id: JobId, state: JobState, failure: Failure },
}

/// A job's output, or why it failed; 409 while it has neither.
#[utoipa::path(
    get,
    path = "/v1/jobs/{job_id}/result",
    params(("job_id" = JobId, Path, description = "The job")),
    responses((status = 200, description = "The result", body = JobResult), AuthErrors, BadRequest, Forbidden, NotFound, Conflict, StoreErrors),
    security(("bearer" = []))
)]
async fn result(State(s): State<AppState>, Auth(caller): Auth, Path(id): Path<String>) -> ApiResult<Json<JobResult>> {
    let job = s.market.get_job(&caller, &job_id(&id)?).await?;
    let state = job.status.state;
    match (job.output, job.failure) {
        (Some(output), _) => Ok(Json(JobResult::Output { job_id: job.job_id, state, output, receipt_id: job.receipt_id })),
        (None, Some(failure)) if state.is_terminal() => Ok(Json(JobResult::Failure { job_id: job.job_id, state, failure })),
        _ => Err(aitbc_market::MarketError::Conflict(format!("job {} has no result yet: it is {state}", job.job_id)).into()),
    }
}

/// Cancel a queued job (its client): its hold is voided.
#[utoipa::path(
    post,
    path = "/v1/jobs/{job_id}/cancel",
    params(("job_id" = JobId, Path, description = "The job")),
    responses((status = 200, description = "The job, cancelled", body = JobRecord), AuthErrors, BadRequest, Forbidden, NotFound, Conflict, StoreErrors),
    security(("bearer" = []))
)]
async fn cancel(State(s): State<AppState>, Auth(caller): Auth, Path(id): Path<String>) -> ApiResult<Json<JobRecord>> {
    Ok(Json(s.market.cancel_job(&caller, &job_id(&id)?).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct LeaseBody {
    /// The worker that holds (or takes) the job's lease.
    worker_id: WorkerId,
    /// The lease's length, for claim and heartbeat (the default lease otherwise); start and
    /// release ignore it.
    #[serde(default)]
    lease_ms: Option<u64>,
}

/// Claim a queued job, or take over a lapsed lease (the listing's provider's worker).
#[utoipa::path(
    post,
    path = "/v1/jobs/{job_id}/claim",
    params(("job_id" = JobId, Path, description = "The job")),
    request_body = LeaseBody,
    responses((status = 200, description = "The job, claimed, with the worker's lease", body = JobRecord), AuthErrors, BodyErrors, Forbidden, NotFound, Conflict, StoreErrors),
    security(("bearer" = []))
)]
async fn claim(State(s): State<AppState>, Auth(caller): Auth, Path(id): Path<String>, ApiJson(body): ApiJson<LeaseBody>) -> ApiResult<Json<JobRecord>> {
    Ok(Json(s.market.claim_job(&caller, &job_id(&id)?, &body.worker_id, body.lease_ms).await?))
}

/// Mark a claimed job running (the lease's holder).
#[utoipa::path(
    post,
    path = "/v1/jobs/{job_id}/start",
    params(("job_id" = JobId, Path, description = "The job")),
    request_body = LeaseBody,
    responses((status = 200, description = "The job, running", body = JobRecord), AuthErrors, BodyErrors, Forbidden, NotFound, Conflict, StoreErrors),
    security(("bearer" = []))
)]
async fn start(State(s): State<AppState>, Auth(caller): Auth, Path(id): Path<String>, ApiJson(body): ApiJson<LeaseBody>) -> ApiResult<Json<JobRecord>> {
    Ok(Json(s.market.start_job(&caller, &job_id(&id)?, &body.worker_id).await?))
}

/// Extend a job's lease (the lease's holder).
#[utoipa::path(
    post,
    path = "/v1/jobs/{job_id}/heartbeat",
    params(("job_id" = JobId, Path, description = "The job")),
    request_body = LeaseBody,
    responses((status = 200, description = "The job, with its lease extended", body = JobRecord), AuthErrors, BodyErrors, Forbidden, NotFound, Conflict, StoreErrors),
    security(("bearer" = []))
)]
async fn heartbeat(State(s): State<AppState>, Auth(caller): Auth, Path(id): Path<String>, ApiJson(body): ApiJson<LeaseBody>) -> ApiResult<Json<JobRecord>> {
    Ok(Json(s.market.heartbeat_job(&caller, &job_id(&id)?, &body.worker_id, body.lease_ms).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ChunkBody {
    /// The worker that holds the job's lease.
    worker_id: WorkerId,
    /// The chunk's number, from 0, one after another.
    #[schema(maximum = 4095)]
    seq: u32,
    /// Text the model produced, in order (1..=4096 bytes).
    #[schema(min_length = 1, max_length = 4096)]
    text: String,
}

/// Append a piece of a running job's output (the lease's holder), which a client's stream
/// relays as it arrives; chunks are bounded and expire. The final output and the receipt stay
/// the record.
#[utoipa::path(
    post,
    path = "/v1/jobs/{job_id}/chunks",
    params(("job_id" = JobId, Path, description = "The job")),
    request_body = ChunkBody,
    responses((status = 204, description = "Appended (or the same chunk again)"), AuthErrors, BodyErrors, Forbidden, NotFound, Conflict, StoreErrors),
    security(("bearer" = []))
)]
async fn chunk(State(s): State<AppState>, Auth(caller): Auth, Path(id): Path<String>, ApiJson(body): ApiJson<ChunkBody>) -> ApiResult<StatusCode> {
    s.market.append_chunk(&caller, &job_id(&id)?, &body.worker_id, body.seq, &body.text).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A completed job and its receipt, countersigned by the marketplace.
#[derive(Serialize, utoipa::ToSchema)]
struct Completed {
    job: JobRecord,
    receipt: Receipt,
}

/// Complete a job with its signed receipt and output (the lease's holder).
#[utoipa::path(
    post,
    path = "/v1/jobs/{job_id}/complete",
    params(("job_id" = JobId, Path, description = "The job")),
    request_body = Completion,
    responses((status = 200, description = "The job, completed, and its countersigned receipt", body = Completed), AuthErrors, BodyErrors, Forbidden, NotFound, Conflict, StoreErrors),
    security(("bearer" = []))
)]
async fn complete(State(s): State<AppState>, Auth(caller): Auth, Path(id): Path<String>, ApiJson(body): ApiJson<Completion>) -> ApiResult<Json<Completed>> {
    let (job, receipt) = s.market.complete_job(&caller, &job_id(&id)?, body).await?;
    Ok(Json(Completed { job, receipt }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct FailBody {
    /// The worker that holds the job's lease.
    worker_id: WorkerId,
    /// Why, for the client.
    reason: String,
    /// Whether another attempt may succeed (the job is queued again while attempts remain).
    retryable: bool,
}

/// Report a job failed (the lease's holder).
#[utoipa::path(
    post,
    path = "/v1/jobs/{job_id}/fail",
    params(("job_id" = JobId, Path, description = "The job")),
    request_body = FailBody,
    responses((status = 200, description = "The job: queued again, or failed", body = JobRecord), AuthErrors, BodyErrors, Forbidden, NotFound, Conflict, StoreErrors),
    security(("bearer" = []))
)]
async fn fail(State(s): State<AppState>, Auth(caller): Auth, Path(id): Path<String>, ApiJson(body): ApiJson<FailBody>) -> ApiResult<Json<JobRecord>> {
    Ok(Json(s.market.fail_job(&caller, &job_id(&id)?, &body.worker_id, body.reason, body.retryable).await?))
}

/// Hand a job back unfinished (the lease's holder).
///
/// E.g. on shutdown: the job is queued again at once, without using up an attempt.
#[utoipa::path(
    post,
    path = "/v1/jobs/{job_id}/release",
    params(("job_id" = JobId, Path, description = "The job")),
    request_body = LeaseBody,
    responses((status = 200, description = "The job, queued again", body = JobRecord), AuthErrors, BodyErrors, Forbidden, NotFound, Conflict, StoreErrors),
    security(("bearer" = []))
)]
async fn release(State(s): State<AppState>, Auth(caller): Auth, Path(id): Path<String>, ApiJson(body): ApiJson<LeaseBody>) -> ApiResult<Json<JobRecord>> {
    Ok(Json(s.market.release_job(&caller, &job_id(&id)?, &body.worker_id).await?))
}

/// Rate a settled job, once (its client): 1 (bad) to 5 (excellent). The rating counts in the
/// reputation of the job's listing and provider.
#[utoipa::path(
    post,
    path = "/v1/jobs/{job_id}/rating",
    params(("job_id" = JobId, Path, description = "The job")),
    request_body = RateJob,
    responses((status = 201, description = "The rating, recorded", body = JobRating), AuthErrors, BodyErrors, Forbidden, NotFound, Conflict, StoreErrors),
    security(("bearer" = []))
)]
async fn rate(State(s): State<AppState>, Auth(caller): Auth, Path(id): Path<String>, ApiJson(body): ApiJson<RateJob>) -> ApiResult<(StatusCode, Json<JobRating>)> {
    Ok((StatusCode::CREATED, Json(s.market.rate_job(&caller, &job_id(&id)?, body).await?)))
}

/// A job's rating (its client or its provider); 404 while it has none.
#[utoipa::path(
    get,
    path = "/v1/jobs/{job_id}/rating",
    params(("job_id" = JobId, Path, description = "The job")),
    responses((status = 200, description = "The rating", body = JobRating), AuthErrors, BadRequest, Forbidden, NotFound, StoreErrors),
    security(("bearer" = []))
)]
async fn rating(State(s): State<AppState>, Auth(caller): Auth, Path(id): Path<String>) -> ApiResult<Json<JobRating>> {
    let id = job_id(&id)?;
    // Who may see the job may see its rating.
    s.market.get_job(&caller, &id).await?;
    let rating = s.market.job_rating(&id).await?.ok_or_else(|| aitbc_market::MarketError::not_found(format!("a rating of job {id}")))?;
    Ok(Json(rating))
}
