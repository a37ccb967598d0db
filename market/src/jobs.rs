//! Jobs: submission (match a listing, hold the maximum price, write the job, enqueue it), the
//! worker's side (claim, start, heartbeat, complete with a signed receipt, fail, release) and the
//! client's (get, result, cancel).
//!
//! Every transition reads the job, applies `aitbc_core::job::transition`, and writes the result
//! on the condition that the job's `version` is still the one read, in the same transaction as
//! the money and counters it moves. A duplicate delivery, a late worker or a racing twin
//! therefore loses with a conflict and changes nothing.

use crate::auth::{Principal, Role};
use crate::quotes::{QuoteInput, SignedQuote};
use crate::receipts::receipt_writes;
use crate::reputation::Fact;
use crate::registry::QueuePriority;
use crate::records::{from_item, to_item};
use aitbc_store::keys::IndexKey;
use crate::{Market, MarketError};
use aitbc_core::job::{transition, Event, JobState, JobStatus, TransitionError};
use aitbc_core::jobspec::{JobOutput, JobSpec, JOB_TIMEOUT_MS_DEFAULT, JOB_TIMEOUT_MS_MAX, RESULT_VALUES_MAX};
use aitbc_core::ledger::{AccountId, Applied, Transfer};
use aitbc_core::money::{Amount, GpuMillis, Rate};
use aitbc_core::pricing::{Tier, BATCH_JOBS_MAX};
use aitbc_core::receipt::Receipt;
use aitbc_core::values::{Address, HoldId, JobId, ListingId, ModelName, TransferId, WorkerId};
use aitbc_store::{keys, Condition, Item, StoreError, TxWrite};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Clock skew allowed between a worker's receipt timestamps and the marketplace, seconds.
pub const RECEIPT_CLOCK_SKEW_S: i64 = 60;
/// A failure reason is at most this long.
pub const FAILURE_REASON_BYTES_MAX: usize = 4_096;
/// Jobs per page when listing, at most.
pub const JOBS_PAGE_MAX: usize = 100;

pub(crate) const ATTR_VERSION: &str = "version";

/// Why a job failed, as its worker reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Failure {
    pub reason: String,
    pub retryable: bool,
}

/// A job as stored and served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobRecord {
    pub job_id: JobId,
    pub client: Address,
    pub provider: Address,
    pub gpu_id: ListingId,
    pub queue: String,
    pub spec: JobSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelName>,
    pub tier: Tier,
    /// The most GPU time the job may use (what the hold covers).
    pub units_max: GpuMillis,
    pub unit_price: Rate,
    pub max_price: Amount,
    pub hold_id: HoldId,
    pub timeout_ms: u64,
    pub status: JobStatus,
    pub created_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<JobOutput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// The price of the job's receipt, once completed (what settlement posts from the hold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Amount>,
    /// The job's fair-share finish tag on a listing that orders its queue
    /// (`priority::tier_rank` and this place it among the queued jobs); absent on a FIFO one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_tag: Option<u64>,
    /// The fixed-rate contract that priced the job, if one did (its unit price is the
    /// contract's rate; its completion counts towards the contract's availability).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract: Option<crate::contracts::JobContract>,
    /// In a heartbeat's answer only (never stored): hand the job back now, a job of a higher
    /// tier waits (graceful preemption); release it and it is queued again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preempt: bool,
    /// How the hold was settled, once settled. Never stored: derived when the job is read
    /// (`Market::with_settlement`) from the batch covering its settlement record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement: Option<crate::settlement::Settlement>,
}

impl JobRecord {
    /// What a receipt for this job's current attempt must say of the job.
    pub fn receipt_terms(&self) -> aitbc_core::receipt::JobTerms {
        aitbc_core::receipt::JobTerms {
            job_id: self.job_id.clone(),
            gpu_id: self.gpu_id.clone(),
            attempt: self.status.attempt,
            provider: self.provider.clone(),
            client: self.client.clone(),
            unit_price: self.unit_price,
            model: self.model.clone(),
        }
    }

    /// The receipt body for this job's current attempt: `metered` at the job's unit price,
    /// between `started_at` and `completed_at` (unix seconds).
    pub fn receipt_body(&self, metered: aitbc_core::receipt::Metered, started_at: i64, completed_at: i64) -> Result<aitbc_core::receipt::ReceiptBody, aitbc_core::money::MoneyError> {
        aitbc_core::receipt::ReceiptBody::new(self.receipt_terms(), metered, started_at, completed_at)
    }
}

/// What a client submits: a signed quote, or the terms to quote now, plus what to run.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SubmitJob {
    #[serde(default)]
    pub quote: Option<SignedQuote>,
    /// Used when no quote is given: priced at submission.
    #[serde(default)]
    pub model: Option<ModelName>,
    #[serde(default)]
    pub units: Option<GpuMillis>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub gpu_id: Option<ListingId>,
    #[serde(default)]
    pub tier: Tier,
    pub spec: JobSpec,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// A batch of jobs in one request (`POST /v1/batches`): the terms they share and what each
/// runs. Each job is priced for the batch (its listing's batch discount applies from its
/// `min_batch_size` jobs) and gets its own hold, receipt and settlement.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SubmitBatch {
    #[serde(default)]
    pub model: Option<ModelName>,
    /// The most GPU-seconds each job may use.
    pub units: GpuMillis,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub gpu_id: Option<ListingId>,
    #[serde(default)]
    pub tier: Tier,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// 1..=100 jobs of one kind (and one model).
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 100))]
    pub specs: Vec<JobSpec>,
}

/// One job of a batch refused after the batch's checks passed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchRefusal {
    /// Its place in the batch's `specs`.
    pub index: usize,
    pub code: String,
    pub status: u16,
    pub detail: String,
}

/// A submitted batch: its quote (with the batch discount in its breakdown), its jobs in the
/// order of the specs, and any refused.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchSubmitted {
    pub quote: SignedQuote,
    pub jobs: Vec<JobRecord>,
    pub refused: Vec<BatchRefusal>,
}

/// The message a listing's queue carries: which job to claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobMessage {
    pub job_id: JobId,
}

/// What a worker sends to complete a job.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Completion {
    pub worker_id: WorkerId,
    pub receipt: Receipt,
    pub output: JobOutput,
}

impl Completion {
    /// A completion of `job` by `worker` with a receipt for `units_ms` signed by `key`, and an
    /// output whose metering matches (tests and simulations stand in for a worker with it).
    pub fn signed(job: &JobRecord, key: &aitbc_core::signing::NamedSigningKey, worker: &WorkerId, units_ms: u64, started_s: i64, completed_s: i64) -> Completion {
        // A text-generation job answers with text and its token counts; the others with values.
        let text = job.spec.model().map(|_| aitbc_core::jobspec::TextOutput {
            text: "ok".into(),
            finish_reason: aitbc_core::jobspec::FinishReason::Stop,
            prompt_tokens: 3,
            completion_tokens: 1,
            load_ms: 0,
            prefill_ms: 1,
            decode_ms: 1,
            device: "cpu".into(),
        });
        let metered = aitbc_core::receipt::Metered {
            units: GpuMillis::from_millis(units_ms),
            unit_type: aitbc_core::receipt::UnitType::CpuSeconds,
            tokens: text.as_ref().map(|t| (t.prompt_tokens, t.completion_tokens)),
        };
        let body = job.receipt_body(metered, started_s, completed_s).expect("units within the job's hold");
        let output = JobOutput { checksum: "00".into(), values: vec![], backend: "cpu".into(), device_ms: units_ms, wall_ms: units_ms, text };
        Completion { worker_id: worker.clone(), receipt: body.sign(key).expect("a valid receipt"), output }
    }
}

fn transition_error(e: TransitionError) -> MarketError {
    match e {
        TransitionError::NotHolder => MarketError::Forbidden("the job's lease is held by another worker".into()),
        TransitionError::LeaseLength(_) => MarketError::invalid("lease_ms", e.to_string()),
        other => MarketError::Conflict(other.to_string()),
    }
}

/// Members of a job that hold floats (inline inputs, returned values). Store numbers are
/// integers, so these travel inside the item as JSON text.
const FLOAT_MEMBERS: [&str; 2] = ["spec", "output"];

/// The store item of a job.
fn job_item(job: &JobRecord, indexes: &[IndexKey]) -> Item {
    let mut item = to_item(keys::job(job.job_id.as_str()), job, indexes);
    for member in FLOAT_MEMBERS {
        if let Some(value) = item.attrs.remove(member) {
            item.attrs.insert(format!("{member}_json"), serde_json::Value::String(value.to_string()));
        }
    }
    item
}

/// The job in a store item.
pub(crate) fn job_from_item(item: &Item) -> Result<JobRecord, MarketError> {
    let mut item = item.clone();
    for member in FLOAT_MEMBERS {
        if let Some(serde_json::Value::String(text)) = item.attrs.remove(&format!("{member}_json")) {
            let value = serde_json::from_str(&text).map_err(|e| MarketError::Internal(format!("stored job {member} does not parse: {e}")))?;
            item.attrs.insert(member.to_string(), value);
        }
    }
    from_item(&item)
}

/// Index keys of a job in its current state.
fn job_indexes(job: &JobRecord, changed_ms: i64) -> Vec<keys::IndexKey> {
    vec![
        keys::job_client_index(job.client.as_str(), job.created_at_ms, job.job_id.as_str()),
        keys::job_state_index(job.status.state.name(), changed_ms, job.job_id.as_str()),
        keys::job_listing_index(job.gpu_id.as_str(), job.created_at_ms, job.job_id.as_str()),
    ]
}

/// A job id derived from the client and its idempotency key, so a retried submission cannot
/// create a second job even if the first attempt's answer was lost.
pub fn job_id_for(client: &Address, idempotency_key: &str) -> JobId {
    let digest = Sha256::digest(format!("{client}\n{idempotency_key}").as_bytes());
    JobId::parse(&format!("job-{}", &hex::encode(digest)[..32])).expect("hex is a valid id")
}

/// The id of a job's hold: named after the job, so that the job's records need not carry it.
pub fn hold_id_for(job_id: &JobId) -> HoldId {
    let rest = job_id.as_str().strip_prefix("job-").expect("job ids start with job-");
    HoldId::parse(&format!("hold-{rest}")).expect("a valid hold id")
}

impl Market {
    /// The job and its stored version.
    pub async fn job_with_version(&self, job_id: &JobId) -> Result<(JobRecord, i64), MarketError> {
        let item = self.store.get(&keys::job(job_id.as_str())).await?.ok_or_else(|| MarketError::not_found(format!("job {job_id}")))?;
        let version = item.int(ATTR_VERSION).unwrap_or(0);
        Ok((job_from_item(&item)?, version))
    }

    /// The write that replaces a job read at `version` with `job`.
    pub fn job_write(&self, job: &JobRecord, version: i64) -> TxWrite {
        let item = job_item(job, &job_indexes(job, self.now_ms())).with(ATTR_VERSION, version + 1);
        TxWrite::Put { item, condition: Condition::equals(ATTR_VERSION, version) }
    }

    /// Submits a job for `caller` (a client); `idempotency_key` names the job.
    pub async fn submit_job(&self, caller: &Principal, submit: SubmitJob, idempotency_key: &str) -> Result<JobRecord, MarketError> {
        // A batch's quote prices a job of that batch only (`submit_batch`).
        if submit.quote.as_ref().is_some_and(|q| q.terms.batch_size > 1) {
            return Err(MarketError::invalid("quote", "the quote prices a job of a batch: submit the batch to /v1/batches"));
        }
        self.submit_one(caller, submit, idempotency_key).await
    }

    async fn submit_one(&self, caller: &Principal, submit: SubmitJob, idempotency_key: &str) -> Result<JobRecord, MarketError> {
        caller.require(Role::Client)?;
        submit.spec.validate().map_err(|e| MarketError::invalid(format!("spec.{}", e.field), e.reason))?;
        let timeout_ms = submit.timeout_ms.unwrap_or(JOB_TIMEOUT_MS_DEFAULT);
        if !(1..=JOB_TIMEOUT_MS_MAX).contains(&timeout_ms) {
            return Err(MarketError::invalid("timeout_ms", format!("must be 1..={JOB_TIMEOUT_MS_MAX}")));
        }
        // The key names the job. A repeated key is caught by the job's and the hold's
        // absent-conditions in the one transaction below, so no read is spent on it up front.
        let job_id = job_id_for(&caller.address, idempotency_key);
        let kind = submit.spec.kind();
        // A text-generation job is priced as the model it runs; another model named beside it
        // (or on its quote) is a contradiction, refused before anything is held.
        let model = match submit.spec.model() {
            Some(spec_model) => {
                let named = submit.model.as_ref().or(submit.quote.as_ref().and_then(|q| q.terms.model.as_ref()));
                if named.is_some_and(|m| m != spec_model) {
                    return Err(MarketError::invalid("model", format!("the job runs {spec_model}; price it as that model")));
                }
                Some(spec_model.clone())
            }
            None => submit.model.clone(),
        };
        let mut priced_now = None;
        let (quote, view) = match submit.quote {
            Some(quote) => {
                self.check_quote(&quote)?;
                let view = self.listing_view_cached(&quote.terms.gpu_id).await?;
                (quote, view)
            }
            None => {
                let units = submit.units.ok_or_else(|| MarketError::invalid("units", "give units (GPU-seconds) or a quote"))?;
                let input = QuoteInput {
                    model: model.clone(),
                    units,
                    region: submit.region.clone(),
                    gpu_id: submit.gpu_id.clone(),
                    tier: submit.tier,
                    duration_hours: 0,
                    kind: Some(kind),
                    batch_size: 0,
                };
                let priced = self.quote_with_view(&input).await?;
                priced_now = Some(input);
                priced
            }
        };
        // A job priced now (no quote of its own) on a provider the client has an active
        // fixed-rate contract with pays the contract's rate while its hours last.
        let applied = match priced_now {
            Some(_) => self.applicable_contract(&view.listing.provider, &caller.address, quote.terms.units.millis()).await?,
            None => None,
        };
        let quote = match (&applied, &priced_now) {
            (Some(applied), Some(input)) => self.quote_on_with(&view, input, Some(&applied.contract)).await?,
            _ => quote,
        };
        let terms = &quote.terms;
        let listing = &view.listing;
        if !view.runs(kind, model.as_ref()) {
            return Err(MarketError::invalid("spec.kind", format!("GPU listing {} does not run {}", listing.gpu_id, kind.name())));
        }
        if model.is_some() && terms.model != model {
            return Err(MarketError::invalid("quote", "the quote prices another model than the job runs"));
        }
        if !self.is_available(&view) {
            return Err(MarketError::NoCapacity(format!("GPU listing {} is not taking jobs now", listing.gpu_id)));
        }
        // The client's spending limit bounds what it may have held at once.
        let wallet = AccountId::wallet(&caller.address);
        if let Some(limit) = self.spending_limit(&wallet).await? {
            let (_, balance) = self.account(&wallet).await?;
            let would_hold = balance.held.checked_add(terms.max_price).map_err(|e| MarketError::invalid("units", e.to_string()))?;
            if would_hold > limit {
                return Err(MarketError::SpendingLimit(format!("{would_hold} held would exceed the limit of {limit}")));
            }
        }
        // A full queue refuses the job before anything is held (the view may be a second old;
        // the room counter's floor in the transaction below is the authority).
        let config = listing.queue_config;
        // Other clients' live capacity reservations keep their places free (`reservations`).
        let mut floor = i64::from(aitbc_core::capacity::reserved_by_others(&view.held, self.now_ms(), Some(&caller.address)));
        let mut reservations_read = crate::reservations::unchanged(view.reservations_version);
        if view.room_counted && view.queue_room - 1 < floor {
            // The view may be a second old: decide, and write, by the listing as it is now.
            let fresh = self.listing_item(&listing.gpu_id).await?;
            (floor, reservations_read) = self.reserved_floor(&fresh, &caller.address)?;
            if !crate::reservations::room_allows(&fresh, floor) {
                return Err(queue_full_reserved(listing, floor));
            }
        }
        let now = self.now_ms();
        let uuid_part = &job_id.as_str()[4..];
        let hold_id = hold_id_for(&job_id);
        let tagged = match config.priority {
            QueuePriority::WeightedFairShare => Some(self.fair_share_tag(&listing.gpu_id, &caller.address, terms.units.millis()).await?),
            QueuePriority::Fifo => None,
        };
        let job = JobRecord {
            job_id: job_id.clone(),
            client: caller.address.clone(),
            provider: listing.provider.clone(),
            gpu_id: listing.gpu_id.clone(),
            queue: listing.queue.clone(),
            spec: submit.spec,
            model: terms.model.clone(),
            tier: terms.tier,
            units_max: terms.units,
            unit_price: terms.unit_price,
            max_price: terms.max_price,
            hold_id: hold_id.clone(),
            timeout_ms,
            status: JobStatus::queued(config.attempts_max.unwrap_or(self.settings.attempts_max), now + self.settings.claim_timeout_ms as i64),
            created_at_ms: now,
            claimed_at_ms: None,
            finished_at_ms: None,
            receipt_id: None,
            output: None,
            failure: None,
            price: None,
            queue_tag: tagged.as_ref().map(|t| t.tag),
            contract: applied.as_ref().map(|a| a.job),
            preempt: false,
            settlement: None,
        };
        let job_item = job_item(&job, &job_indexes(&job, now)).with(ATTR_VERSION, 0);
        let mut writes = vec![TxWrite::Put { item: job_item, condition: Condition::Absent }];
        if view.room_counted {
            // One place in the queue, refused below the places other clients' reservations
            // keep (zero without any): a full queue fails the whole transaction, the hold with
            // it. Conditional on the reservations read, so one accepted meanwhile is honoured.
            let room = aitbc_store::Update::new().add(crate::registry::ATTR_QUEUE_ROOM, -1, Some(floor));
            let condition = Condition::And(vec![Condition::Present, reservations_read]);
            writes.push(TxWrite::Update { key: keys::listing(listing.gpu_id.as_str()), update: room, condition });
        }
        if let Some(tagged) = tagged {
            writes.push(tagged.write);
            writes.extend(crate::priority::entry_put(&job));
        }
        if let Some(applied) = applied {
            writes.push(applied.write);
        }
        let hold = Transfer::Hold {
            id: TransferId::parse(&format!("tx-{uuid_part}-hold")).expect("valid id"),
            hold: hold_id,
            from: wallet,
            amount: job.max_price,
        };
        let created = match self.apply_transfer(&hold, writes).await {
            Ok(Applied::Now) => true,
            // The key was used before (a retry, or a concurrent twin): the hold exists already.
            Ok(Applied::Replayed) => false,
            Err(MarketError::Conflict(why)) => {
                // A used key, or the queue filled meanwhile, or a racing submission of the same
                // client moved its fair-share clock: only the first is a replay.
                if self.store.get(&keys::job(job_id.as_str())).await?.is_none() {
                    let fresh = self.listing_item(&listing.gpu_id).await?;
                    let (fresh_floor, _) = self.reserved_floor(&fresh, &caller.address)?;
                    if !crate::reservations::room_allows(&fresh, fresh_floor) {
                        return Err(queue_full_reserved(listing, fresh_floor));
                    }
                    // Perhaps the cached view's reservations were stale: read them afresh next time.
                    self.forget_listing(&listing.gpu_id, &listing.region);
                    return Err(MarketError::Conflict(format!("{why}; submit again with the same Idempotency-Key")));
                }
                false
            }
            Err(e) => return Err(e),
        };
        let job = if created { job } else { self.job_with_version(&job_id).await?.0 };
        // The message goes out after the job exists (a worker must find it). A crash or a failed
        // send before this point leaves a queued job without a message: the client's retry (same
        // key) lands here again and re-sends, and the sweeper re-matches what nobody retries.
        // Duplicate messages are harmless: a claim of a job that is not queued is refused.
        if job.status.state == JobState::Queued {
            self.enqueue(&job).await?;
        }
        Ok(job)
    }

    /// Submits a batch of jobs in one request: one quote for all (with the listing's batch
    /// discount when the batch is large enough), then each job as if submitted alone, with its
    /// own hold, receipt and settlement, named by `<key>#batch-<i>`. What can be checked for
    /// the whole batch (every spec, the price, the funds for every hold, the queue's room) is
    /// checked before any hold; a job refused after that (a race for the same funds or room)
    /// is listed in `refused`, the others stand.
    pub async fn submit_batch(&self, caller: &Principal, batch: SubmitBatch, idempotency_key: &str) -> Result<BatchSubmitted, MarketError> {
        caller.require(Role::Client)?;
        let n = batch.specs.len();
        if n == 0 || n > BATCH_JOBS_MAX as usize {
            return Err(MarketError::invalid("specs", format!("give 1..={BATCH_JOBS_MAX} job specs")));
        }
        let kind = batch.specs[0].kind();
        for (i, spec) in batch.specs.iter().enumerate() {
            spec.validate().map_err(|e| MarketError::invalid(format!("specs[{i}].{}", e.field), e.reason))?;
            if spec.kind() != kind || spec.model() != batch.specs[0].model() {
                return Err(MarketError::invalid(format!("specs[{i}].kind"), "the jobs of a batch are of one kind (and one model): they share one quote"));
            }
        }
        let model = match batch.specs[0].model() {
            Some(spec_model) if batch.model.as_ref().is_some_and(|m| m != spec_model) => {
                return Err(MarketError::invalid("model", format!("the jobs run {spec_model}; price them as that model")));
            }
            Some(spec_model) => Some(spec_model.clone()),
            None => batch.model.clone(),
        };
        let input = QuoteInput {
            model: model.clone(),
            units: batch.units,
            region: batch.region.clone(),
            gpu_id: batch.gpu_id.clone(),
            tier: batch.tier,
            duration_hours: 0,
            kind: Some(kind),
            batch_size: n as u32,
        };
        let (quote, view) = self.quote_with_view(&input).await?;
        let total = (0..n).try_fold(Amount::ZERO, |sum, _| sum.checked_add(quote.terms.max_price)).map_err(|e| MarketError::invalid("units", e.to_string()))?;
        let (_, balance) = self.account(&AccountId::wallet(&caller.address)).await?;
        if balance.available < total {
            return Err(MarketError::InsufficientFunds(format!("the batch holds {total}; {} is available", balance.available)));
        }
        let floor = i64::from(aitbc_core::capacity::reserved_by_others(&view.held, self.now_ms(), Some(&caller.address)));
        if view.room_counted && view.queue_room - floor < n as i64 {
            let fresh = self.listing_item(&view.listing.gpu_id).await?;
            let (fresh_floor, _) = self.reserved_floor(&fresh, &caller.address)?;
            let room = fresh.int(crate::registry::ATTR_QUEUE_ROOM).unwrap_or(i64::MAX).saturating_sub(fresh_floor);
            if room < n as i64 {
                return Err(MarketError::QueueFull(format!("GPU listing {} has room for {} more jobs, not {n}; nothing was held", view.listing.gpu_id, room.max(0))));
            }
        }
        let mut jobs = Vec::with_capacity(n);
        let mut refused = Vec::new();
        for (index, spec) in batch.specs.into_iter().enumerate() {
            let submit = SubmitJob { quote: Some(quote.clone()), model: None, units: None, region: None, gpu_id: None, tier: batch.tier, spec, timeout_ms: batch.timeout_ms };
            match self.submit_one(caller, submit, &format!("{idempotency_key}#batch-{index}")).await {
                Ok(job) => jobs.push(job),
                Err(e @ (MarketError::Internal(_) | MarketError::Unavailable(_))) => return Err(e),
                Err(e) => refused.push(BatchRefusal { index, code: e.code().to_string(), status: e.status(), detail: e.to_string() }),
            }
        }
        Ok(BatchSubmitted { quote, jobs, refused })
    }

    /// Puts a message for `job` on its listing's queue (duplicates are harmless: a claim of a
    /// job that is not queued is refused).
    pub async fn enqueue(&self, job: &JobRecord) -> Result<(), MarketError> {
        let body = serde_json::to_string(&JobMessage { job_id: job.job_id.clone() }).expect("serializes");
        self.queue.send_batch(&job.queue, vec![body]).await?;
        Ok(())
    }

    /// Who may see a job: its client, its provider, an admin.
    fn may_see(caller: &Principal, job: &JobRecord) -> Result<(), MarketError> {
        if caller.role == Role::Admin || caller.address == job.client || caller.address == job.provider {
            Ok(())
        } else {
            Err(MarketError::Forbidden(format!("job {} belongs to another account", job.job_id)))
        }
    }

    fn own_as_provider(caller: &Principal, job: &JobRecord) -> Result<(), MarketError> {
        caller.require(Role::Provider)?;
        if caller.role == Role::Admin || caller.address == job.provider {
            Ok(())
        } else {
            Err(MarketError::Forbidden(format!("job {} runs on another provider's GPU", job.job_id)))
        }
    }

    pub async fn get_job(&self, caller: &Principal, job_id: &JobId) -> Result<JobRecord, MarketError> {
        let (job, _) = self.job_with_version(job_id).await?;
        Self::may_see(caller, &job)?;
        self.with_settlement(job).await
    }

    /// A client's jobs, newest first.
    pub async fn list_jobs(&self, caller: &Principal, limit: usize, cursor: Option<String>) -> Result<(Vec<JobRecord>, Option<String>), MarketError> {
        let query = keys::jobs_by_client(caller.address.as_str()).descending().limit(limit.clamp(1, JOBS_PAGE_MAX)).after(cursor);
        let page = self.store.query(query).await.map_err(|e| match e {
            StoreError::Invalid(r) => MarketError::invalid("cursor", r),
            e => e.into(),
        })?;
        let mut jobs = Vec::with_capacity(page.items.len());
        for item in &page.items {
            jobs.push(self.with_settlement(job_from_item(item)?).await?);
        }
        Ok((jobs, page.cursor))
    }

    /// Applies `event` to the job and writes it with `extra` writes, in one transaction.
    async fn apply_event(&self, job_id: &JobId, event: Event, check: impl Fn(&JobRecord) -> Result<(), MarketError>) -> Result<(JobRecord, JobRecord, i64), MarketError> {
        let (job, version) = self.job_with_version(job_id).await?;
        check(&job)?;
        let status = transition(&job.status, &event).map_err(transition_error)?;
        let mut next = job.clone();
        next.status = status;
        Ok((job, next, version))
    }

    async fn commit(&self, writes: Vec<TxWrite>) -> Result<(), MarketError> {
        match self.store.transact(writes).await {
            Ok(()) => Ok(()),
            Err(StoreError::ConditionFailed { .. }) => Err(MarketError::Conflict("the job changed meanwhile; read it again".into())),
            Err(e) => Err(e.into()),
        }
    }

    /// A worker takes a queued job: it gets a lease and the job's spec. A job whose lease has
    /// lapsed (its worker died) is taken over at once, as the sweeper would: the lapse and the
    /// new claim are one write.
    ///
    /// On a listing that orders its queue (`QueuePriority::WeightedFairShare`), a claim of a
    /// queued job takes the listing's first job in that order instead, when that is another
    /// job, and puts a message back for the one named (`priority`): the answer is the job
    /// claimed, which the worker runs.
    pub async fn claim_job(&self, caller: &Principal, job_id: &JobId, worker: &WorkerId, lease_ms: Option<u64>) -> Result<JobRecord, MarketError> {
        let (job, version) = self.job_with_version(job_id).await?;
        Self::own_as_provider(caller, &job)?;
        if job.status.state == JobState::Queued && job.queue_tag.is_some() {
            if let Some((first, _)) = self.next_queued(&job.gpu_id).await? {
                if &first != job_id {
                    match self.claim_exactly(caller, &first, worker, lease_ms).await {
                        Ok(claimed) => {
                            self.enqueue(&job).await?;
                            return Ok(claimed);
                        }
                        // Taken meanwhile (or gone): claim the job named instead.
                        Err(MarketError::Conflict(_) | MarketError::NotFound { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        self.claim_read(caller, job, version, worker, lease_ms).await
    }

    /// Claims exactly `job_id`, whatever the listing's order.
    async fn claim_exactly(&self, caller: &Principal, job_id: &JobId, worker: &WorkerId, lease_ms: Option<u64>) -> Result<JobRecord, MarketError> {
        let (job, version) = self.job_with_version(job_id).await?;
        Self::own_as_provider(caller, &job)?;
        self.claim_read(caller, job, version, worker, lease_ms).await
    }

    /// Claims `job`, read at `version`.
    async fn claim_read(&self, _caller: &Principal, job: JobRecord, version: i64, worker: &WorkerId, lease_ms: Option<u64>) -> Result<JobRecord, MarketError> {
        let now = self.now_ms();
        let job_id = &job.job_id;
        let lease_ms = lease_ms.unwrap_or(self.settings.lease_ms);
        let lapsed = job.status.state.is_leased() && job.status.lease.as_ref().is_some_and(|l| now >= l.expires_at_ms);
        let mut status = job.status.clone();
        if lapsed {
            status = transition(&status, &Event::LeaseLapsed { now_ms: now }).map_err(transition_error)?;
            if status.state != JobState::Queued {
                // Out of attempts: the job fails and its hold is voided.
                let mut failed = job.clone();
                failed.status = status;
                self.finish_transition(job.status.state, failed, version).await?;
                return Err(MarketError::Conflict(format!("job {job_id} failed: its attempts are used up")));
            }
        }
        let mut next = job.clone();
        next.status = transition(&status, &Event::Claim { worker: worker.clone(), now_ms: now, lease_ms }).map_err(transition_error)?;
        next.claimed_at_ms = Some(now);
        let mut writes = vec![self.job_write(&next, version)];
        // A job's first claim is its start for reputation: its time since submission counts
        // once (a takeover or a requeued job's next claim is a later attempt, not a start).
        let fact = (job.status.attempt == 0).then(|| Fact::Started { wait_ms: u64::try_from(now - job.created_at_ms).unwrap_or(0) });
        if !lapsed {
            // A takeover moves the listing's active count by -1 and +1: no write. A queued job
            // leaves the queue: its place frees, its entry goes.
            let mv = crate::priority::claim_move(&job, fact);
            writes.extend(crate::Market::listing_move_write(&next.gpu_id, &mv));
            writes.extend(crate::priority::entry_delete(&job));
        }
        if let Some(fact) = fact {
            writes.push(fact.provider_write(&job.provider));
        }
        self.commit(writes).await?;
        Ok(next)
    }

    /// The holder starts running the job.
    pub async fn start_job(&self, caller: &Principal, job_id: &JobId, worker: &WorkerId) -> Result<JobRecord, MarketError> {
        let event = Event::Start { worker: worker.clone(), now_ms: self.now_ms() };
        let (_, next, version) = self.apply_event(job_id, event, |job| Self::own_as_provider(caller, job)).await?;
        self.commit(vec![self.job_write(&next, version)]).await?;
        Ok(next)
    }

    /// The holder extends its lease.
    pub async fn heartbeat_job(&self, caller: &Principal, job_id: &JobId, worker: &WorkerId, lease_ms: Option<u64>) -> Result<JobRecord, MarketError> {
        let lease_ms = lease_ms.unwrap_or(self.settings.lease_ms);
        let event = Event::Heartbeat { worker: worker.clone(), now_ms: self.now_ms(), lease_ms };
        let (_, mut next, version) = self.apply_event(job_id, event, |job| Self::own_as_provider(caller, job)).await?;
        self.commit(vec![self.job_write(&next, version)]).await?;
        next.preempt = self.should_preempt(&next).await?;
        Ok(next)
    }

    /// The holder completes the job with a receipt signed by the provider's registered key. The
    /// marketplace checks it against the job and its lease, countersigns and stores it.
    pub async fn complete_job(&self, caller: &Principal, job_id: &JobId, completion: Completion) -> Result<(JobRecord, Receipt), MarketError> {
        let now = self.now_ms();
        let event = Event::Complete { worker: completion.worker_id.clone(), now_ms: now };
        let (job, mut next, version) = self.apply_event(job_id, event, |job| Self::own_as_provider(caller, job)).await?;
        let mut receipt = completion.receipt;
        self.check_receipt_against_job(&job, &receipt, now)?;
        let provider_keys = self.provider_key_set(&job.provider).await?;
        receipt.verify(&provider_keys).map_err(|e| MarketError::invalid("receipt", e.to_string()))?;
        receipt.countersign(&self.signing_key).map_err(|e| MarketError::Internal(e.to_string()))?;
        let output = completion.output;
        Self::check_output_against_receipt(&job, &output, &receipt)?;
        next.finished_at_ms = Some(now);
        next.receipt_id = Some(receipt.body.receipt_id.to_string());
        next.output = Some(output);
        next.price = Some(receipt.body.price);
        // What the receipt posts is decided now: the settlement record a batch will cover.
        let (due, sla_breach, contract_write) = self.settlement_due_for(&job, receipt.body.price, now).await?;
        let fact = Fact::Completed { sla_breach };
        let mut writes = vec![self.job_write(&next, version)];
        writes.extend(contract_write);
        writes.push(crate::Market::listing_counter_write(&job.gpu_id, -1, Some((receipt.body.units.millis(), receipt.body.price)), Some(fact)));
        writes.push(fact.provider_write(&job.provider));
        writes.extend(receipt_writes(&receipt, now));
        // The hold is captured: it can no longer be voided; settlement posts it from the record.
        writes.push(crate::ledger::hold_capture_write(&job.hold_id, &receipt.body.receipt_id));
        writes.push(due.write());
        self.commit(writes).await?;
        self.progress.notify_waiters();
        Ok((next, receipt))
    }

    /// Everything a receipt must agree with in the job it completes.
    fn check_receipt_against_job(&self, job: &JobRecord, receipt: &Receipt, now_ms: i64) -> Result<(), MarketError> {
        let body = &receipt.body;
        let bad = |field: &str, why: String| Err(MarketError::invalid(format!("receipt.{field}"), why));
        if body.job_id != job.job_id {
            return bad("job_id", format!("is for {}, not {}", body.job_id, job.job_id));
        }
        if body.gpu_id != job.gpu_id || body.provider != job.provider || body.client != job.client {
            return bad("gpu_id", "names another listing, provider or client than the job".into());
        }
        if body.attempt != job.status.attempt {
            return bad("attempt", format!("is {}, the job's current attempt is {}", body.attempt, job.status.attempt));
        }
        if body.unit_price != job.unit_price || body.model != job.model {
            return bad("unit_price", "differs from the job's quoted unit price or model".into());
        }
        if body.units.millis() == 0 || body.units > job.units_max {
            return bad("units", format!("must be above 0 and at most the job's {} GPU-seconds", job.units_max));
        }
        let claimed_s = job.claimed_at_ms.unwrap_or(job.created_at_ms) / 1_000;
        let now_s = now_ms / 1_000;
        if body.started_at < claimed_s - RECEIPT_CLOCK_SKEW_S || body.completed_at > now_s + RECEIPT_CLOCK_SKEW_S {
            return bad("started_at", "lies outside the job's lease".into());
        }
        // Metered time cannot exceed the wall time the receipt claims (second resolution, so
        // one second of slack), times the GPUs of the listing.
        let wall_ms = (body.completed_at - body.started_at + 1).max(1) as u64 * 1_000;
        if body.units.millis() > wall_ms.saturating_mul(64) {
            return bad("units", "exceed the wall time between started_at and completed_at".into());
        }
        body.check().map_err(|e| MarketError::invalid("receipt", e.to_string()))
    }

    /// What the output says ran must be what the receipt bills: CPU time as `cpu_seconds`, GPU
    /// time as `gpu_seconds`, and a text job's token counts as the receipt's.
    fn check_output_against_receipt(job: &JobRecord, output: &JobOutput, receipt: &Receipt) -> Result<(), MarketError> {
        let bad = |field: &str, why: String| Err(MarketError::invalid(field.to_string(), why));
        if output.values.len() > RESULT_VALUES_MAX {
            return bad("output.values", format!("at most {RESULT_VALUES_MAX}"));
        }
        let metered = aitbc_core::receipt::UnitType::metered_by(&output.backend);
        if receipt.body.unit_type != metered {
            return bad("receipt.unit_type", format!("the {} backend's time is {metered:?}, not {:?}", output.backend, receipt.body.unit_type));
        }
        let tokens = (receipt.body.prompt_tokens, receipt.body.completion_tokens);
        match (&job.spec, &output.text) {
            (aitbc_core::jobspec::JobSpec::TextGeneration { max_tokens, .. }, Some(text)) => {
                if text.text.len() > aitbc_core::jobspec::TEXT_BYTES_MAX {
                    return bad("output.text", format!("at most {} bytes", aitbc_core::jobspec::TEXT_BYTES_MAX));
                }
                if text.completion_tokens > *max_tokens {
                    return bad("output.text.completion_tokens", format!("exceeds the job's max_tokens of {max_tokens}"));
                }
                if tokens != (Some(text.prompt_tokens), Some(text.completion_tokens)) {
                    return bad("receipt.completion_tokens", "differ from the output's token counts".into());
                }
                Ok(())
            }
            (aitbc_core::jobspec::JobSpec::TextGeneration { .. }, None) => bad("output.text", "a text_generation job answers with text".into()),
            (_, Some(_)) => bad("output.text", "only a text_generation job answers with text".into()),
            (_, None) if tokens != (None, None) => bad("receipt.prompt_tokens", "only a text_generation job counts tokens".into()),
            (_, None) => Ok(()),
        }
    }

    /// The holder reports failure: retryable ones go back to the queue while attempts remain,
    /// others fail the job and void its hold.
    pub async fn fail_job(&self, caller: &Principal, job_id: &JobId, worker: &WorkerId, reason: String, retryable: bool) -> Result<JobRecord, MarketError> {
        if reason.len() > FAILURE_REASON_BYTES_MAX {
            return Err(MarketError::invalid("reason", format!("at most {FAILURE_REASON_BYTES_MAX} bytes")));
        }
        let event = Event::Fail { worker: worker.clone(), now_ms: self.now_ms(), retryable };
        let (job, mut next, version) = self.apply_event(job_id, event, |job| Self::own_as_provider(caller, job)).await?;
        next.failure = Some(Failure { reason, retryable });
        self.finish_transition(job.status.state, next, version).await
    }

    /// The holder hands the job back unfinished (shutting down); it is queued again at once.
    pub async fn release_job(&self, caller: &Principal, job_id: &JobId, worker: &WorkerId) -> Result<JobRecord, MarketError> {
        let event = Event::Release { worker: worker.clone(), now_ms: self.now_ms() };
        let (job, next, version) = self.apply_event(job_id, event, |job| Self::own_as_provider(caller, job)).await?;
        self.finish_transition(job.status.state, next, version).await
    }

    /// The client cancels a job that is still queued; its hold is voided.
    pub async fn cancel_job(&self, caller: &Principal, job_id: &JobId) -> Result<JobRecord, MarketError> {
        let (job, next, version) = self
            .apply_event(job_id, Event::Cancel, |job| {
                if caller.role == Role::Admin || caller.address == job.client {
                    Ok(())
                } else {
                    Err(MarketError::Forbidden(format!("job {} belongs to another client", job.job_id)))
                }
            })
            .await?;
        self.finish_transition(job.status.state, next, version).await
    }

    /// Writes a transition out of a leased or queued state: the job, the listing's counter
    /// (when it leaves a lease), the hold's void (when it ends unpaid), and a new queue message
    /// (when it goes back to the queue).
    pub async fn finish_transition(&self, previous: JobState, mut next: JobRecord, version: i64) -> Result<JobRecord, MarketError> {
        if next.status.state.hold_outcome() == Some(false) {
            next.finished_at_ms = Some(self.now_ms());
        }
        let mut writes = vec![self.job_write(&next, version)];
        // Failing for good and expiring count against the listing's reputation; a cancel is
        // the client's choice and a requeue is not an end.
        let fact = match next.status.state {
            JobState::Failed => Some(Fact::Failed),
            JobState::Expired => Some(Fact::Expired),
            _ => None,
        };
        // Queue room: a job leaving the queue (cancelled, expired) frees its place, one going
        // back (lapsed, retryable failure, release) takes one, whatever the room left; its
        // priority entry follows it.
        let leaves_queue = previous == JobState::Queued && next.status.state != JobState::Queued;
        let enters_queue = previous.is_leased() && next.status.state == JobState::Queued;
        let mv = crate::registry::ListingMove {
            active: if previous.is_leased() { -1 } else { 0 },
            room: i64::from(leaves_queue) - i64::from(enters_queue),
            fact,
            ..Default::default()
        };
        if previous.is_leased() {
            writes.extend(crate::Market::listing_move_write(&next.gpu_id, &mv));
        } else if let Some(write) = crate::Market::listing_move_write(&next.gpu_id, &mv) {
            // A queued job's listing may have been deleted (queued jobs do not hold it); then
            // only the provider's counters take the fact.
            if self.store.get(&keys::listing(next.gpu_id.as_str())).await?.is_some() {
                writes.push(write);
            }
        }
        if leaves_queue {
            writes.extend(crate::priority::entry_delete(&next));
        }
        if enters_queue {
            writes.extend(crate::priority::entry_put(&next));
        }
        if let Some(fact) = fact {
            writes.push(fact.provider_write(&next.provider));
        }
        let requeued = next.status.state == JobState::Queued;
        if next.status.state.hold_outcome() == Some(false) {
            let void = Transfer::Void { id: self.void_transfer_id(&next), hold: next.hold_id.clone() };
            match self.apply_transfer(&void, writes).await {
                Ok(_) => {}
                Err(MarketError::Conflict(_)) => return Err(MarketError::Conflict("the job changed meanwhile; read it again".into())),
                Err(e) => return Err(e),
            }
        } else {
            self.commit(writes).await?;
        }
        if requeued {
            self.enqueue(&next).await?;
        }
        self.progress.notify_waiters();
        Ok(next)
    }

    pub fn void_transfer_id(&self, job: &JobRecord) -> TransferId {
        TransferId::parse(&format!("tx-{}-void", &job.job_id.as_str()[4..])).expect("valid id")
    }
}

fn queue_full(listing: &crate::registry::Listing) -> MarketError {
    MarketError::QueueFull(format!(
        "GPU listing {} has {} jobs waiting, its max_queue_size; nothing was held, submit again later",
        listing.gpu_id, listing.queue_config.max_queue_size
    ))
}

/// A full queue, or one whose remaining places other clients' reservations keep.
fn queue_full_reserved(listing: &crate::registry::Listing, reserved: i64) -> MarketError {
    if reserved <= 0 {
        return queue_full(listing);
    }
    MarketError::QueueFull(format!(
        "GPU listing {}: its free queue places are kept for other clients' capacity reservations ({reserved}); nothing was held, submit again later",
        listing.gpu_id
    ))
}
