//! Settlement: completed jobs are settled in bounded batches whose writes grow by one per job
//! plus two per account a batch touches.
//!
//! # Money of one receipt
//!
//! A job's hold `H` (its quote's maximum price) is resolved by its receipt's price `P <= H`:
//!
//! - `fee = floor(P x fee_bps / 10_000)` goes to the platform's fee account. The fee is charged
//!   on the full price, SLA or not: a penalty never refunds the platform's fee.
//! - A job that missed its listing's SLA (it started, i.e. was claimed, more than
//!   `response_time_s` after submission) refunds `penalty = min(floor(P x penalty_rate_bps /
//!   10_000), P - fee)` to the client. The penalty comes only out of the provider's share and is
//!   capped by it, so the provider never owes money for a job.
//! - The provider's earnings get `P - fee - penalty`; the client's available balance gets the
//!   rest of the hold, `H - P + penalty`, and its held balance drops by `H`.
//!
//! That is exactly the core ledger's `Transfer::Post { amount: P - penalty, fee }` on the hold
//! (or a `Void` when nothing is left to post), and its postings are computed by
//! `aitbc_core::ledger::postings`, the one place that turns a transfer into balance changes.
//!
//! # One write per receipt
//!
//! Completing a job writes its receipt (which never changes again), the job's price, and
//! *captures* its hold (`ledger::HOLD_CAPTURED`): from then on nothing can void the hold, and
//! the job's outcome is decided. So settling needs to write only the job: `completed ->
//! settled` with its `Settlement` (batch, transfer id, amounts), on the condition that the job
//! is still at the version the plan read. The job is the one record of the posting; the hold
//! item and the receipt are not written again. Completed jobs are found through the sharded
//! jobs-by-state index, so the job items themselves are the work list.
//!
//! # A batch, step by step
//!
//! Each batch has a sequence number and the id `batch-settle-<seq>`; only one batch is open at a
//! time, and a batch `n + 1` is created only after batch `n` is seen done. Every step is one
//! store transaction of at most 100 writes, and every step is safe to repeat:
//!
//! 1. **Plan** (1 + pages writes). Read up to `SETTLE_BATCH_RECEIPTS_MAX` completed jobs from
//!    the 16 index shards (re-read by key where the store's indexes may lag, so that a stale
//!    entry of a settled job is dropped), compute each one's amounts and the per-account sum of
//!    the postings, and put the batch record (the checkpoint) and its plan, in pages of at most
//!    `SETTLE_PLAN_PAGE_BYTES_MAX`, in one transaction, on the condition that the batch id is
//!    new. A racing planner of the same sequence number loses that condition and resumes (or
//!    re-plans after) the winner's batch instead.
//! 2. **Jobs** (`ceil(jobs / 100)` writes of 100). Each job goes `completed -> settled` with
//!    its settlement (condition: the version the plan read). A chunk commits whole or not at
//!    all, so a re-run finds each chunk either fully applied (skipped) or not at all (applied
//!    now).
//! 3. **Accounts** (`ceil(accounts / 50)` writes of 100). For each account the batch touches,
//!    its settlement line (the batch's aggregated entry in the account's ledger history;
//!    condition: absent) and ONE balance update by the sum of its deltas (floors of 0). The
//!    line is the proof that the delta was applied, so a delta applies at most once; the fee
//!    account gets one write per batch, not one per receipt.
//! 4. **Finish** (1 write). The batch record goes `open -> done`.
//!
//! Jobs are written before balances so that the plan's jobs are marked settled before their
//! money moves; between steps 2 and 3 the client's `held` balance still includes holds that
//! are already settled, which step 3 (or a re-run of it) settles. Killed anywhere and run again,
//! the open batch is resumed from its record and reaches the same balances; a finished batch
//! run again writes nothing.
//!
//! Every settled job names its transfer (`tx-<job>-post`) and its receipt, so "one posted
//! transfer per receipt" can be checked job by job; the per-receipt transfer is not stored as a
//! separate `TRANSFER#` item, because that would cost a write per receipt on the ledger side,
//! which the aggregated lines replace.
//!
//! Writes per 1,000 receipts: `1,000 + 1,000 x (2 x accounts per batch + pages + 2) / receipts
//! per batch`. Batches are large (up to 10,000 receipts) so that the account writes amortize.


use crate::jobs::{job_from_item, JobRecord};
use crate::ledger::{account_key, LedgerEntry, ATTR_AVAILABLE, ATTR_HELD};
use crate::records::{from_item, to_item};
use crate::registry::Sla;
use crate::{Market, MarketError};
use aitbc_core::config::FEE_BPS_MAX;
use aitbc_core::job::{transition, Event, JobState};
use aitbc_core::ledger::{postings, AccountId, Hold, HoldState, Transfer};
use aitbc_core::money::{Amount, BPS_ONE};
use aitbc_core::values::{JobId, ListingId, TransferId};
use aitbc_store::keys::INDEX_SHARDS;
use aitbc_store::{keys, Condition, Item, Key, Store, StoreError, TxWrite, Update, PAGE_ITEMS_MAX, TRANSACTION_WRITES_MAX};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Receipts (completed jobs) one batch settles, at most. Large, because a batch writes two
/// items per account it touches: the more receipts per account, the fewer writes per receipt.
pub const SETTLE_BATCH_RECEIPTS_MAX: usize = 10_000;
/// Accounts one batch touches, at most. A receipt touches at most three (client, provider,
/// fee), so a batch stops taking receipts before it would cross this; it bounds the plan and
/// the number of account steps.
pub const SETTLE_BATCH_ACCOUNTS_MAX: usize = 4_096;
/// Writes per receipt in the jobs step: the job.
pub const SETTLE_RECEIPT_WRITES: usize = 1;
/// Jobs per jobs transaction.
pub const SETTLE_CHUNK_RECEIPTS_MAX: usize = TRANSACTION_WRITES_MAX / SETTLE_RECEIPT_WRITES;
/// Accounts per accounts transaction: a line and a balance update each, 50 x 2 = 100 writes.
pub const SETTLE_CHUNK_ACCOUNTS_MAX: usize = TRANSACTION_WRITES_MAX / 2;
/// Bytes of one page of a batch's plan (JSON text), at most: a page must stay below the
/// store's 400 KiB item limit with room for its key.
pub const SETTLE_PLAN_PAGE_BYTES_MAX: usize = 300 * 1024;
/// Pages of one plan, at most: the record and its pages are written in one transaction, which
/// must stay below the store's 4 MiB.
pub const SETTLE_PLAN_PAGES_MAX: usize = 10;
/// Bytes of a batch's plan, at most.
pub const SETTLE_PLAN_BYTES_MAX: usize = SETTLE_PLAN_PAGE_BYTES_MAX * SETTLE_PLAN_PAGES_MAX;
/// Batches one run plans or resumes, at most (100 million receipts); the rest waits for the
/// next run.
pub const SETTLE_RUN_BATCHES_MAX: u32 = 10_000;
/// Index pages one batch's planning reads per shard, at most (pages it must skip over when the
/// head of a shard holds jobs it cannot settle).
pub const SETTLE_SCAN_PAGES_MAX: usize = 32;
/// Times one run loses the race for a batch number before it gives up, at most.
pub const SETTLE_PLAN_RACES_MAX: u32 = 8;
/// Reads and transactions a batch keeps in flight at once, at most: the SQLite adapter commits
/// concurrent requests together, DynamoDB serves them in parallel.
pub const SETTLE_IN_FLIGHT_MAX: usize = 64;
/// Jobs completed up to this far ahead of the clock are settled too: the clocks of the API's
/// instances may differ by this much.
pub const SETTLE_CLOCK_SKEW_MS: i64 = crate::jobs::RECEIPT_CLOCK_SKEW_S * 1_000;

const ATTR_STATE: &str = "state";
const ATTR_PLAN: &str = "plan";
const LINE_KIND: &str = "settlement";

const _: () = assert!(SETTLE_CHUNK_RECEIPTS_MAX * SETTLE_RECEIPT_WRITES <= TRANSACTION_WRITES_MAX);
const _: () = assert!(SETTLE_CHUNK_ACCOUNTS_MAX * 2 <= TRANSACTION_WRITES_MAX);
const _: () = assert!(SETTLE_BATCH_ACCOUNTS_MAX >= 3, "one receipt always fits");
const _: () = assert!(SETTLE_PLAN_PAGES_MAX + 1 <= TRANSACTION_WRITES_MAX);
const _: () = assert!(SETTLE_PLAN_BYTES_MAX + 64 * 1024 <= aitbc_store::store::TRANSACTION_BYTES_MAX);

/// Why a settlement run stopped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SettleError {
    /// A failpoint stopped the run (tests of crash safety): what was committed stays.
    #[error("failpoint: stopped at step {step}")]
    Injected { step: u32 },
    /// The store holds something settlement never writes (a bug, or a hand edit).
    #[error("settlement invariant broken: {0}")]
    Invariant(String),
    #[error(transparent)]
    Market(#[from] MarketError),
}

impl From<StoreError> for SettleError {
    fn from(e: StoreError) -> Self {
        Self::Market(e.into())
    }
}

impl From<SettleError> for MarketError {
    fn from(e: SettleError) -> Self {
        match e {
            SettleError::Injected { step } => MarketError::Unavailable(format!("stopped by a failpoint at step {step}")),
            SettleError::Invariant(what) => MarketError::Internal(what),
            SettleError::Market(e) => e,
        }
    }
}

/// Stops a run at a numbered step (a store transaction), before it commits or right after, as
/// a crash would. Steps are numbered from 1 within one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failpoint {
    pub step: u32,
    /// Stop after the step's transaction committed (else before it runs).
    pub after_commit: bool,
}

/// Counts a run's steps and fires its failpoint; carries how many store requests may be in
/// flight at once.
#[derive(Debug)]
pub struct Steps {
    taken: u32,
    failpoint: Option<Failpoint>,
    in_flight_max: usize,
}

impl Steps {
    pub fn new(failpoint: Option<Failpoint>, in_flight_max: usize) -> Self {
        assert!((1..=SETTLE_IN_FLIGHT_MAX).contains(&in_flight_max));
        Self { taken: 0, failpoint, in_flight_max }
    }

    /// Steps started so far.
    pub fn taken(&self) -> u32 {
        self.taken
    }

    /// Numbers the next step; `Err` when the failpoint stops the run before it.
    fn begin(&mut self) -> Result<(u32, bool), SettleError> {
        self.taken = self.taken.checked_add(1).expect("steps fit u32");
        let step = self.taken;
        match self.failpoint {
            Some(f) if f.step == step && !f.after_commit => Err(SettleError::Injected { step }),
            Some(f) => Ok((step, f.step == step)),
            None => Ok((step, false)),
        }
    }
}

/// Reports progress of a long run (the scheduler draws bars or logs rates).
pub trait Progress: Send + Sync {
    /// `items` more items of `task` are done (receipts settled, providers paid, jobs swept).
    fn advance(&self, task: &'static str, items: u64);
}

/// Progress nobody watches.
pub struct NoProgress;

impl Progress for NoProgress {
    fn advance(&self, _task: &'static str, _items: u64) {}
}

/// How to run settlement.
#[derive(Debug, Clone)]
pub struct SettleOptions {
    /// Receipts per batch: 1..=SETTLE_BATCH_RECEIPTS_MAX.
    pub batch_receipts_max: usize,
    /// Batches this run plans or resumes: 1..=SETTLE_RUN_BATCHES_MAX.
    pub batches_max: u32,
    /// Stop at a step, as a crash would (tests).
    pub failpoint: Option<Failpoint>,
    /// Store requests in flight at once: 1..=SETTLE_IN_FLIGHT_MAX (an emulator may need 1).
    pub in_flight_max: usize,
}

impl Default for SettleOptions {
    fn default() -> Self {
        Self {
            batch_receipts_max: SETTLE_BATCH_RECEIPTS_MAX,
            batches_max: SETTLE_RUN_BATCHES_MAX,
            failpoint: None,
            in_flight_max: SETTLE_IN_FLIGHT_MAX,
        }
    }
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SettleReport {
    /// Batches finished by this run (resumed ones included).
    pub batches: u32,
    /// Of those, batches an earlier run had left open.
    pub resumed: u32,
    pub receipts: u64,
    /// Unsettled index entries left alone: receipts whose job is not `completed` (a stale index
    /// entry of a settled receipt, or an anomaly, logged), or whose price exceeds the hold.
    pub skipped: u64,
    /// Account balance updates (one per account per batch).
    pub account_updates: u64,
    /// Store transactions started (the failpoint numbering).
    pub steps: u32,
    pub price_total: Amount,
    pub fee_total: Amount,
    pub penalty_total: Amount,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_batch: Option<String>,
}

/// The money of one receipt (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SettleAmounts {
    /// The job's hold.
    pub hold: Amount,
    /// The receipt's price.
    pub price: Amount,
    /// To the platform's fee account.
    pub fee: Amount,
    /// SLA refund to the client, out of the provider's share.
    pub penalty: Amount,
    /// To the provider's earnings: price - fee - penalty.
    pub provider: Amount,
    /// Back to the client's available balance: hold - price + penalty.
    pub refund: Amount,
}

impl SettleAmounts {
    /// What the hold posts (the rest returns to the client): price - penalty.
    pub fn posted(&self) -> Amount {
        Amount::from_raw(self.price.raw() - self.penalty.raw())
    }
}

/// The amounts of a receipt of `price` on a hold of `hold`, with the market's fee and the
/// penalty rate that applies (0 when the SLA was met). Fee and penalty round down; the penalty
/// is capped by the provider's share.
pub fn settle_amounts(hold: Amount, price: Amount, fee_bps: u32, penalty_bps: u32) -> Result<SettleAmounts, MarketError> {
    assert!(fee_bps <= FEE_BPS_MAX, "fee_bps {fee_bps} above {FEE_BPS_MAX}");
    assert!(penalty_bps <= BPS_ONE, "penalty_bps {penalty_bps} above {BPS_ONE}");
    if price > hold {
        return Err(MarketError::invalid("receipt.price", format!("{price} exceeds the job's hold of {hold}")));
    }
    let fee = price.share_bps(fee_bps);
    let share = Amount::from_raw(price.raw() - fee.raw());
    let penalty = price.share_bps(penalty_bps).min(share);
    let provider = Amount::from_raw(share.raw() - penalty.raw());
    let refund = Amount::from_raw(hold.raw() - price.raw() + penalty.raw());
    let amounts = SettleAmounts { hold, price, fee, penalty, provider, refund };
    assert_eq!(
        u128::from(provider.raw()) + u128::from(fee.raw()) + u128::from(refund.raw()),
        u128::from(hold.raw()),
        "a hold splits exactly"
    );
    Ok(amounts)
}

/// Whether a job missed its SLA: it started (was claimed) more than `response_time_s` after it
/// was submitted.
pub fn sla_missed(created_at_ms: i64, started_at_ms: i64, sla: &Sla) -> bool {
    started_at_ms.saturating_sub(created_at_ms) > i64::from(sla.response_time_s) * 1_000
}

/// The id of the transfer that settles a job's hold: derived from the job, so it is the same
/// in every run.
pub fn post_transfer_id(job_id: &JobId) -> TransferId {
    let rest = job_id.as_str().strip_prefix("job-").expect("job ids start with job-");
    TransferId::parse(&format!("tx-{rest}-post")).expect("a valid transfer id")
}

/// The ledger transfer that settles a job with these amounts: a post of `price - penalty`
/// with the fee, or, when nothing is left to post, a void.
pub fn settle_transfer(job: &JobRecord, amounts: &SettleAmounts, platform: &aitbc_core::values::Address) -> Transfer {
    let id = post_transfer_id(&job.job_id);
    let posted = amounts.posted();
    if posted.is_zero() {
        assert!(amounts.fee.is_zero());
        Transfer::Void { id, hold: job.hold_id.clone() }
    } else {
        Transfer::Post {
            id,
            hold: job.hold_id.clone(),
            amount: posted,
            to: AccountId::earnings(&job.provider),
            fee: amounts.fee,
            fee_to: AccountId::fee(platform),
        }
    }
}

/// How a job's hold was settled, recorded on the job (`JobRecord::settlement`): the batch, the
/// posted transfer's id, the receipt it was posted for, and the amounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Settlement {
    pub batch_id: String,
    pub transfer_id: TransferId,
    pub receipt_id: String,
    #[serde(flatten)]
    pub amounts: SettleAmounts,
    pub settled_at_ms: i64,
}

/// A settlement batch's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchState {
    Open,
    Done,
}

impl BatchState {
    fn name(self) -> &'static str {
        match self {
            BatchState::Open => "open",
            BatchState::Done => "done",
        }
    }
}

/// A settlement batch's record: its checkpoint and its plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRecord {
    pub batch_id: String,
    pub seq: u64,
    pub state: BatchState,
    pub created_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<i64>,
    pub fee_bps: u32,
    pub receipts: u32,
    pub accounts: u32,
    pub price_total: Amount,
    pub fee_total: Amount,
    pub penalty_total: Amount,
    /// Pages of the plan (items `PLAN#<n>` beside the record). Each holds a slice of the plan's
    /// JSON text: an opaque blob to the store, so that reading and updating the record does not
    /// parse thousands of nested values.
    pub plan_pages: u32,
}

/// One receipt of a plan: its job, the job's version when planned, hold, price, fee, penalty
/// (nano). A tuple, so that the plan stays small.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PlannedReceipt(String, i64, u64, u64, u64, u64);

impl PlannedReceipt {
    fn job_id(&self) -> &str {
        &self.0
    }
    fn version(&self) -> i64 {
        self.1
    }
    fn amounts(&self) -> SettleAmounts {
        let (hold, price, fee, penalty) = (self.2, self.3, self.4, self.5);
        let provider = price - fee - penalty;
        SettleAmounts {
            hold: Amount::from_raw(hold),
            price: Amount::from_raw(price),
            fee: Amount::from_raw(fee),
            penalty: Amount::from_raw(penalty),
            provider: Amount::from_raw(provider),
            refund: Amount::from_raw(hold - price + penalty),
        }
    }
}

/// One account's aggregated change: account, available delta, held delta, receipts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PlannedLine(String, i64, i64, u32);

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Plan {
    receipts: Vec<PlannedReceipt>,
    lines: Vec<PlannedLine>,
}

/// A plan with what planning read (the jobs, so the jobs step need not read them again).
struct Planned {
    record: BatchRecord,
    plan: Plan,
    jobs: HashMap<String, (JobRecord, i64)>,
    skipped: u64,
    /// An upper bound of the plan's JSON size.
    plan_bytes: usize,
}

/// The plan's JSON text in pages of at most SETTLE_PLAN_PAGE_BYTES_MAX bytes, cut at character
/// boundaries.
fn split_pages(json: &str) -> Vec<String> {
    let mut pages = Vec::new();
    let mut rest = json;
    while !rest.is_empty() {
        let mut cut = rest.len().min(SETTLE_PLAN_PAGE_BYTES_MAX);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (page, tail) = rest.split_at(cut);
        pages.push(page.to_string());
        rest = tail;
    }
    pages
}

/// What one batch did.
#[derive(Debug, Default)]
struct BatchOutcome {
    receipts: u64,
    accounts: u64,
}

/// The id of settlement batch number `seq`.
pub fn settlement_batch_id(seq: u64) -> String {
    assert!(seq >= 1);
    format!("batch-settle-{seq:012}")
}

impl Market {
    /// Reads jobs with up to `in_flight_max` reads in flight; answers in order, None for a job
    /// that does not exist. Goes through `job_with_version`, the one reader of job items.
    pub(crate) async fn jobs_many(&self, ids: Vec<JobId>, in_flight_max: usize) -> Result<Vec<Option<(JobRecord, i64)>>, MarketError> {
        assert!((1..=SETTLE_IN_FLIGHT_MAX).contains(&in_flight_max));
        let mut out: Vec<Option<(JobRecord, i64)>> = vec![None; ids.len()];
        let mut set = tokio::task::JoinSet::new();
        let mut pending = ids.into_iter().enumerate();
        loop {
            while set.len() < in_flight_max {
                let Some((i, id)) = pending.next() else { break };
                let market = self.clone();
                set.spawn(async move { (i, market.job_with_version(&id).await) });
            }
            let Some(joined) = set.join_next().await else { break };
            let (i, job) = joined.map_err(|e| MarketError::Internal(format!("read task: {e}")))?;
            out[i] = match job {
                Ok(job) => Some(job),
                Err(MarketError::NotFound { .. }) => None,
                Err(e) => return Err(e),
            };
        }
        Ok(out)
    }
}

fn to_i64(value: i128, what: &str) -> Result<i64, SettleError> {
    i64::try_from(value).map_err(|_| SettleError::Invariant(format!("{what} {value} does not fit a stored integer")))
}

impl Market {
    /// Settles every completed, unsettled receipt, batch after batch, until none remain (or
    /// `options.batches_max`). Resumes a batch an earlier run left open first.
    pub async fn settle(&self, options: &SettleOptions, progress: &dyn Progress) -> Result<SettleReport, SettleError> {
        assert!((1..=SETTLE_BATCH_RECEIPTS_MAX).contains(&options.batch_receipts_max));
        assert!((1..=SETTLE_RUN_BATCHES_MAX).contains(&options.batches_max));
        let mut steps = Steps::new(options.failpoint, options.in_flight_max);
        let mut report = SettleReport::default();
        let mut seq_floor: u64 = 1;
        let mut races: u32 = 0;
        let result = async {
            for _ in 0..options.batches_max {
                let latest = self.latest_settlement_batch().await?;
                if let Some(open) = latest.as_ref().filter(|b| b.state == BatchState::Open) {
                    let outcome = self.resume_batch(open, &mut steps).await?;
                    report.resumed += 1;
                    Self::count(&mut report, open, &outcome, progress);
                    seq_floor = seq_floor.max(open.seq + 1);
                    continue;
                }
                let seq = latest.map_or(1, |b| b.seq + 1).max(seq_floor);
                let planning = std::time::Instant::now();
                let mut planned = self.plan_batch(seq, options.batch_receipts_max, options.in_flight_max).await?;
                tracing::debug!(seq, receipts = planned.plan.receipts.len(), plan_ms = planning.elapsed().as_millis() as u64, "planned");
                report.skipped += planned.skipped;
                if planned.plan.receipts.is_empty() {
                    break;
                }
                match self.create_batch(&mut planned.record, &planned.plan, planned.plan_bytes, &mut steps).await? {
                    None => {
                        let outcome = self.execute_batch(&planned.record, &planned.plan, Some(planned.jobs), &mut steps).await?;
                        Self::count(&mut report, &planned.record, &outcome, progress);
                        seq_floor = seq + 1;
                    }
                    Some(existing) => {
                        // Another run created this batch number first: resume its batch if it
                        // is open, and plan again after it (our plan may overlap it).
                        races += 1;
                        if races > SETTLE_PLAN_RACES_MAX {
                            return Err(SettleError::Market(MarketError::Conflict("settlement keeps racing another run".into())));
                        }
                        if existing.state == BatchState::Open {
                            let outcome = self.resume_batch(&existing, &mut steps).await?;
                            report.resumed += 1;
                            Self::count(&mut report, &existing, &outcome, progress);
                        }
                        seq_floor = existing.seq + 1;
                    }
                }
            }
            Ok::<(), SettleError>(())
        }
        .await;
        report.steps = steps.taken();
        result.map(|()| report)
    }

    fn count(report: &mut SettleReport, record: &BatchRecord, outcome: &BatchOutcome, progress: &dyn Progress) {
        report.batches += 1;
        report.receipts += outcome.receipts;
        report.account_updates += outcome.accounts;
        let add = |a: Amount, b: Amount| a.checked_add(b).expect("totals fit");
        report.price_total = add(report.price_total, record.price_total);
        report.fee_total = add(report.fee_total, record.fee_total);
        report.penalty_total = add(report.penalty_total, record.penalty_total);
        report.last_batch = Some(record.batch_id.clone());
        progress.advance("settle", outcome.receipts);
        tracing::info!(batch = %record.batch_id, receipts = outcome.receipts, accounts = outcome.accounts, "settlement batch done");
    }

    /// A settlement batch's record, read by key (strongly consistent).
    pub async fn settlement_batch(&self, batch_id: &str) -> Result<Option<BatchRecord>, MarketError> {
        match self.store.get(&keys::settlement_batch(batch_id)).await? {
            Some(item) => Ok(Some(from_item(&item)?)),
            None => Ok(None),
        }
    }

    /// The newest settlement batch. The index may lag (DynamoDB's indexes are eventually
    /// consistent), so the record is read again by key; a lagging answer only makes the next
    /// batch number taken, which the planner then learns.
    pub async fn latest_settlement_batch(&self) -> Result<Option<BatchRecord>, MarketError> {
        let page = self.store.query(keys::settlement_batches().descending().limit(1)).await?;
        let Some(item) = page.items.first() else { return Ok(None) };
        let id = item.str("batch_id").ok_or_else(|| MarketError::Internal("settlement batch without id".into()))?;
        self.settlement_batch(id).await
    }

    /// A batch's plan, read from its pages.
    async fn batch_plan(&self, record: &BatchRecord) -> Result<Plan, SettleError> {
        let pages = record.plan_pages;
        if pages == 0 || pages as usize > SETTLE_PLAN_PAGES_MAX {
            return Err(SettleError::Invariant(format!("batch {} has {pages} plan pages", record.batch_id)));
        }
        let mut json = String::new();
        for page in 0..pages {
            let item = self.store.get(&keys::settlement_plan_page(&record.batch_id, page)).await?;
            let text = item.as_ref().and_then(|i| i.str(ATTR_PLAN)).ok_or_else(|| SettleError::Invariant(format!("plan page {page} of {} is missing", record.batch_id)))?;
            json.push_str(text);
        }
        serde_json::from_str(&json).map_err(|e| SettleError::Invariant(format!("plan of {}: {e}", record.batch_id)))
    }

    /// Completed jobs of one index page, as they are now: index entries as they are where the
    /// store's indexes are current, else each job re-read by key (a lagging entry may show a
    /// job that is settled already).
    async fn completed_jobs(&self, items: &[Item], in_flight_max: usize) -> Result<Vec<(JobRecord, i64)>, SettleError> {
        if !self.store.indexes_lag() {
            return items.iter().map(|item| Ok((job_from_item(item)?, item.int(crate::jobs::ATTR_VERSION).unwrap_or(0)))).collect();
        }
        let ids = items
            .iter()
            .map(|item| item.str("job_id").and_then(|id| JobId::parse(id).ok()).ok_or_else(|| SettleError::Invariant("a job index entry without a job id".into())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.jobs_many(ids, in_flight_max).await?.into_iter().flatten().collect())
    }

    /// Reads completed jobs and computes the batch's plan (no writes).
    async fn plan_batch(&self, seq: u64, receipts_max: usize, in_flight_max: usize) -> Result<Planned, SettleError> {
        let now = self.now_ms();
        let before_ms = now + SETTLE_CLOCK_SKEW_MS + 1;
        let fee_bps = self.config.fee_bps;
        let mut plan = Plan::default();
        let mut lines: BTreeMap<AccountId, (i128, i128, u32)> = BTreeMap::new();
        let mut jobs: HashMap<String, (JobRecord, i64)> = HashMap::new();
        let mut slas: HashMap<ListingId, Option<Sla>> = HashMap::new();
        let mut skipped: u64 = 0;
        // An upper bound of the plan's JSON size: each receipt is its job id plus at most 112
        // bytes of numbers and punctuation, each line its account plus at most 58.
        let mut plan_bytes: usize = 64;
        let (mut price_total, mut fee_total, mut penalty_total) = (Amount::ZERO, Amount::ZERO, Amount::ZERO);
        // Start at a different shard each batch so that no shard waits behind the others.
        let first_shard = (seq % u64::from(INDEX_SHARDS)) as u32;
        'shards: for k in 0..INDEX_SHARDS {
            let shard = (first_shard + k) % INDEX_SHARDS;
            let mut cursor = None;
            for _page in 0..SETTLE_SCAN_PAGES_MAX {
                let wanted = receipts_max - plan.receipts.len();
                if wanted == 0 {
                    break 'shards;
                }
                let query = keys::jobs_by_state(JobState::Completed.name(), shard, before_ms).limit(wanted.min(PAGE_ITEMS_MAX)).after(cursor.take());
                let page = self.store.query(query).await?;
                let read = page.items.len();
                let completed = self.completed_jobs(&page.items, in_flight_max).await?;
                skipped += (read - completed.len()) as u64; // gone since the index was read
                for (job, version) in completed {
                    if job.status.state != JobState::Completed {
                        skipped += 1; // settled since the index was read
                        continue;
                    }
                    let (Some(price), Some(receipt_id)) = (job.price, job.receipt_id.as_deref()) else {
                        tracing::warn!(job = %job.job_id, "completed job without a receipt price; left unsettled");
                        skipped += 1;
                        continue;
                    };
                    let sla = match slas.get(&job.gpu_id) {
                        Some(sla) => *sla,
                        None => {
                            // A listing deleted since the job ran has no SLA left to apply.
                            let sla = match self.listing(&job.gpu_id).await {
                                Ok(listing) => Some(listing.sla),
                                Err(MarketError::NotFound { .. }) => None,
                                Err(e) => return Err(e.into()),
                            };
                            slas.insert(job.gpu_id.clone(), sla);
                            sla
                        }
                    };
                    let started_ms = job.claimed_at_ms.unwrap_or(job.created_at_ms);
                    let penalty_bps = sla.filter(|s| sla_missed(job.created_at_ms, started_ms, s)).map_or(0, |s| s.penalty_rate_bps);
                    let amounts = match settle_amounts(job.max_price, price, fee_bps, penalty_bps) {
                        Ok(amounts) => amounts,
                        Err(e) => {
                            tracing::error!(job = %job.job_id, receipt = receipt_id, error = %e, "receipt cannot settle; left unsettled");
                            skipped += 1;
                            continue;
                        }
                    };
                    let transfer = settle_transfer(&job, &amounts, &self.platform);
                    let hold = Hold { id: job.hold_id.clone(), account: AccountId::wallet(&job.client), amount: job.max_price, state: HoldState::Pending };
                    let effect = postings(&transfer, Some(&hold)).map_err(MarketError::from)?;
                    let new_accounts = effect.postings.iter().filter(|p| !lines.contains_key(&p.account)).count();
                    let new_bytes = job.job_id.as_str().len()
                        + 112
                        + effect.postings.iter().filter(|p| !lines.contains_key(&p.account)).map(|p| p.account.to_string().len() + 58).sum::<usize>();
                    if lines.len() + new_accounts > SETTLE_BATCH_ACCOUNTS_MAX || plan_bytes + new_bytes > SETTLE_PLAN_BYTES_MAX {
                        break 'shards; // full: the rest goes to the next batch
                    }
                    plan_bytes += new_bytes;
                    for p in &effect.postings {
                        let line = lines.entry(p.account.clone()).or_insert((0, 0, 0));
                        line.0 += p.available_delta;
                        line.1 += p.held_delta;
                        line.2 += 1;
                    }
                    let add = |a: Amount, b: Amount| a.checked_add(b).map_err(|e| MarketError::Internal(e.to_string()));
                    price_total = add(price_total, amounts.price)?;
                    fee_total = add(fee_total, amounts.fee)?;
                    penalty_total = add(penalty_total, amounts.penalty)?;
                    plan.receipts.push(PlannedReceipt(
                        job.job_id.to_string(),
                        version,
                        amounts.hold.raw(),
                        amounts.price.raw(),
                        amounts.fee.raw(),
                        amounts.penalty.raw(),
                    ));
                    jobs.insert(job.job_id.to_string(), (job, version));
                }
                cursor = page.cursor;
                if cursor.is_none() {
                    break;
                }
            }
        }
        for (account, (available, held, receipts)) in lines {
            // An account whose postings cancel out (a provider paid exactly the fee's worth of
            // nothing) needs no line and no write.
            if available != 0 || held != 0 {
                plan.lines.push(PlannedLine(account.to_string(), to_i64(available, "available delta")?, to_i64(held, "held delta")?, receipts));
            }
        }
        let record = BatchRecord {
            batch_id: settlement_batch_id(seq),
            seq,
            state: BatchState::Open,
            created_at_ms: now,
            finished_at_ms: None,
            fee_bps,
            receipts: u32::try_from(plan.receipts.len()).expect("bounded"),
            accounts: u32::try_from(plan.lines.len()).expect("bounded"),
            price_total,
            fee_total,
            penalty_total,
            plan_pages: 0,
        };
        Ok(Planned { record, plan, jobs, skipped, plan_bytes })
    }

    /// Step 1: writes the batch record and its plan's pages if its number is new.
    /// `Some(existing)` when another run holds the number.
    async fn create_batch(&self, record: &mut BatchRecord, plan: &Plan, plan_bytes: usize, steps: &mut Steps) -> Result<Option<BatchRecord>, SettleError> {
        let json = serde_json::to_string(plan).expect("plans serialize");
        assert!(json.len() <= plan_bytes && plan_bytes <= SETTLE_PLAN_BYTES_MAX, "the plan's size bound is off: {} bytes", json.len());
        let pages = split_pages(&json);
        assert!((1..=SETTLE_PLAN_PAGES_MAX).contains(&pages.len()));
        record.plan_pages = u32::try_from(pages.len()).expect("bounded");
        let index = keys::settlement_batch_index(record.created_at_ms, &record.batch_id);
        let mut writes = vec![TxWrite::Put { item: to_item(keys::settlement_batch(&record.batch_id), &*record, &[index]), condition: Condition::Absent }];
        for (n, text) in pages.into_iter().enumerate() {
            let item = Item::new(keys::settlement_plan_page(&record.batch_id, n as u32)).with(ATTR_PLAN, text);
            writes.push(TxWrite::Put { item, condition: Condition::Absent });
        }
        let results = self.transact_steps(vec![writes], steps).await?;
        match results.into_iter().next().expect("one step") {
            Ok(()) => Ok(None),
            Err(StoreError::ConditionFailed { .. }) => {
                let existing = self.settlement_batch(&record.batch_id).await?;
                existing.map(Some).ok_or_else(|| SettleError::Invariant(format!("batch {} exists and does not", record.batch_id)))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn resume_batch(&self, record: &BatchRecord, steps: &mut Steps) -> Result<BatchOutcome, SettleError> {
        tracing::info!(batch = %record.batch_id, "resuming an open settlement batch");
        let plan = self.batch_plan(record).await?;
        self.execute_batch(record, &plan, None, steps).await
    }

    /// Steps 2 to 4 of a batch. `jobs` are the jobs as planning read them; None on a resume,
    /// which reads them again.
    async fn execute_batch(
        &self,
        record: &BatchRecord,
        plan: &Plan,
        jobs: Option<HashMap<String, (JobRecord, i64)>>,
        steps: &mut Steps,
    ) -> Result<BatchOutcome, SettleError> {
        assert_eq!(record.state, BatchState::Open);
        assert_eq!(plan.receipts.len(), record.receipts as usize);
        let started = std::time::Instant::now();
        self.apply_jobs(record, plan, jobs, steps).await?;
        let jobs_ms = started.elapsed().as_millis() as u64;
        self.apply_lines(record, plan, steps).await?;
        tracing::debug!(batch = %record.batch_id, jobs_ms, lines_ms = started.elapsed().as_millis() as u64 - jobs_ms, "applied");
        let update = Update::new().set(ATTR_STATE, BatchState::Done.name()).set("finished_at_ms", self.now_ms());
        let finish = TxWrite::Update {
            key: keys::settlement_batch(&record.batch_id),
            update,
            condition: Condition::equals(ATTR_STATE, BatchState::Open.name()),
        };
        match self.transact_steps(vec![vec![finish]], steps).await?.remove(0) {
            Ok(()) | Err(StoreError::ConditionFailed { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(BatchOutcome { receipts: plan.receipts.len() as u64, accounts: plan.lines.len() as u64 })
    }

    /// Step 2: each job `completed -> settled`, in chunks of SETTLE_CHUNK_RECEIPTS_MAX.
    async fn apply_jobs(&self, record: &BatchRecord, plan: &Plan, jobs: Option<HashMap<String, (JobRecord, i64)>>, steps: &mut Steps) -> Result<(), SettleError> {
        let jobs = match jobs {
            Some(jobs) => jobs,
            None => {
                let ids = plan
                    .receipts
                    .iter()
                    .map(|r| JobId::parse(r.job_id()).map_err(|e| SettleError::Invariant(format!("planned job id: {e}"))))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut jobs = HashMap::with_capacity(plan.receipts.len());
                for (planned, job) in plan.receipts.iter().zip(self.jobs_many(ids, steps.in_flight_max).await?) {
                    let job = job.ok_or_else(|| SettleError::Invariant(format!("job {} of batch {} is gone", planned.job_id(), record.batch_id)))?;
                    jobs.insert(planned.job_id().to_string(), job);
                }
                jobs
            }
        };
        let settled_by_us = |job: &JobRecord| job.settlement.as_ref().is_some_and(|s| s.batch_id == record.batch_id);
        let mut chunks = Vec::new();
        let mut chunk_firsts = Vec::new();
        for chunk in plan.receipts.chunks(SETTLE_CHUNK_RECEIPTS_MAX) {
            let mut writes = Vec::with_capacity(chunk.len() * SETTLE_RECEIPT_WRITES);
            let mut applied = 0usize;
            for planned in chunk {
                let (job, version) = jobs.get(planned.job_id()).ok_or_else(|| SettleError::Invariant(format!("job {} not read", planned.job_id())))?;
                if job.status.state == JobState::Settled && settled_by_us(job) {
                    applied += 1; // an earlier run committed this chunk
                    continue;
                }
                if job.status.state != JobState::Completed || *version != planned.version() {
                    return Err(SettleError::Invariant(format!(
                        "job {} of batch {} is {} at version {version}, planned completed at {}",
                        job.job_id,
                        record.batch_id,
                        job.status.state,
                        planned.version()
                    )));
                }
                writes.push(self.settle_job_write(record, job, *version, planned)?);
            }
            match applied {
                0 => {
                    chunks.push(writes);
                    chunk_firsts.push(chunk[0].job_id().to_string());
                }
                n if n == chunk.len() => {}
                _ => return Err(SettleError::Invariant(format!("a chunk of batch {} is half applied", record.batch_id))),
            }
        }
        for (result, first) in self.transact_steps(chunks, steps).await?.into_iter().zip(chunk_firsts) {
            match result {
                Ok(()) => {}
                Err(StoreError::ConditionFailed { .. }) => {
                    // A concurrent run of the same batch committed this chunk (chunks are all
                    // or nothing: its first job tells).
                    let id = JobId::parse(&first).map_err(|e| SettleError::Invariant(format!("planned job id: {e}")))?;
                    let (job, _) = self.job_with_version(&id).await?;
                    if !settled_by_us(&job) {
                        return Err(SettleError::Market(MarketError::Conflict(format!("job {first} changed while batch {} settled it", record.batch_id))));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// The one write that settles a receipt: its job goes `completed -> settled` with the
    /// settlement.
    fn settle_job_write(&self, record: &BatchRecord, job: &JobRecord, version: i64, planned: &PlannedReceipt) -> Result<TxWrite, SettleError> {
        let amounts = planned.amounts();
        if amounts.hold != job.max_price || Some(amounts.price) != job.price {
            return Err(SettleError::Invariant(format!("job {} holds {} for {:?}, planned {} for {}", job.job_id, job.max_price, job.price, amounts.hold, amounts.price)));
        }
        let receipt_id = job.receipt_id.clone().ok_or_else(|| SettleError::Invariant(format!("completed job {} without a receipt", job.job_id)))?;
        let mut next = job.clone();
        next.status = transition(&job.status, &Event::Settle).map_err(|e| SettleError::Invariant(format!("job {}: {e}", job.job_id)))?;
        next.settlement = Some(Settlement {
            batch_id: record.batch_id.clone(),
            transfer_id: post_transfer_id(&job.job_id),
            receipt_id,
            amounts,
            settled_at_ms: record.created_at_ms,
        });
        Ok(self.job_write(&next, version))
    }

    /// Step 3: one line and one balance update per account, in chunks.
    async fn apply_lines(&self, record: &BatchRecord, plan: &Plan, steps: &mut Steps) -> Result<(), SettleError> {
        let mut chunks = Vec::new();
        let mut line_keys = Vec::new();
        for chunk in plan.lines.chunks(SETTLE_CHUNK_ACCOUNTS_MAX) {
            let mut writes = Vec::with_capacity(chunk.len() * 2);
            let mut keys_of_chunk = Vec::with_capacity(chunk.len());
            for PlannedLine(account, available, held, receipts) in chunk {
                let account_id = AccountId::parse(account).map_err(|e| SettleError::Invariant(format!("line account {account}: {e}")))?;
                let entry = LedgerEntry {
                    transfer_id: record.batch_id.clone(),
                    account: account_id.clone(),
                    kind: LINE_KIND.into(),
                    available_delta: *available,
                    held_delta: *held,
                    at_ms: record.created_at_ms,
                };
                let index = keys::transfer_account_index(account, record.created_at_ms, &record.batch_id);
                let line_key = keys::settlement_line(&record.batch_id, account);
                let item = to_item(line_key.clone(), &entry, &[index]).with("receipts", i64::from(*receipts));
                writes.push(TxWrite::Put { item, condition: Condition::Absent });
                let mut update = Update::new();
                if *available != 0 {
                    update = update.add(ATTR_AVAILABLE, *available, Some(0));
                }
                if *held != 0 {
                    update = update.add(ATTR_HELD, *held, Some(0));
                }
                writes.push(TxWrite::Update { key: account_key(&account_id), update, condition: Condition::Present });
                keys_of_chunk.push(line_key);
            }
            chunks.push(writes);
            line_keys.push(keys_of_chunk);
        }
        for (result, keys_of_chunk) in self.transact_steps(chunks, steps).await?.into_iter().zip(line_keys) {
            match result {
                Ok(()) => {}
                // The line exists: this chunk was applied before (chunks are all or nothing).
                Err(StoreError::ConditionFailed { pk, sk }) if keys_of_chunk.iter().any(|k| k.pk == pk && k.sk == sk) => {}
                Err(StoreError::ConditionFailed { pk, .. }) => {
                    return Err(SettleError::Invariant(format!("batch {}: account {pk} is missing or would go below zero", record.batch_id)))
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Runs each transaction as one numbered step, up to `steps.in_flight_max` at once, and
    /// answers each one's result in order. The failpoint stops the run before its step starts
    /// or after it commits; steps already in flight finish first, as they would in a crash.
    async fn transact_steps(&self, transactions: Vec<Vec<TxWrite>>, steps: &mut Steps) -> Result<Vec<Result<(), StoreError>>, SettleError> {
        let count = transactions.len();
        let mut results: Vec<Option<Result<(), StoreError>>> = vec![None; count];
        let mut set = tokio::task::JoinSet::new();
        let mut pending = transactions.into_iter().enumerate();
        let mut stopped: Option<SettleError> = None;
        loop {
            while stopped.is_none() && set.len() < steps.in_flight_max {
                let Some((i, writes)) = pending.next() else { break };
                assert!(!writes.is_empty() && writes.len() <= TRANSACTION_WRITES_MAX);
                match steps.begin() {
                    Err(e) => stopped = Some(e),
                    Ok((step, stop_after)) => {
                        let store = self.store.clone();
                        set.spawn(async move { (i, step, stop_after, store.transact(writes).await) });
                    }
                }
            }
            let Some(joined) = set.join_next().await else { break };
            let (i, step, stop_after, result) = joined.map_err(|e| SettleError::Market(MarketError::Internal(format!("settlement task: {e}"))))?;
            if stop_after && stopped.is_none() {
                stopped = Some(SettleError::Injected { step });
            }
            results[i] = Some(result);
        }
        if let Some(e) = stopped {
            return Err(e);
        }
        Ok(results.into_iter().map(|r| r.expect("every step ran")).collect())
    }
}

/// A Store wrapper that counts the items written through it: a put, update or delete counts
/// one, a transaction counts each of its writes (condition checks included, as DynamoDB bills
/// them). For measuring write amplification (the scheduler's bench) and in tests; it adds a
/// lock per write, so it is not for production paths.
pub struct CountingStore {
    inner: Arc<dyn Store>,
    writes: std::sync::atomic::AtomicU64,
    transactions: std::sync::atomic::AtomicU64,
    /// Writes per entity (the partition key up to its first `#`), and per account item.
    by_entity: std::sync::Mutex<BTreeMap<String, u64>>,
}

impl CountingStore {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            writes: Default::default(),
            transactions: Default::default(),
            by_entity: Default::default(),
        }
    }

    /// Items written so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Transactions run so far.
    pub fn transactions(&self) -> u64 {
        self.transactions.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Writes per entity kind (`RECEIPT`, `JOB`, `HOLD`, `SETTLEMENT`, `ACCOUNT`, ...) and per
    /// account item (`ACCOUNT#fee-ait1...`).
    pub fn by_entity(&self) -> BTreeMap<String, u64> {
        self.by_entity.lock().expect("not poisoned").clone()
    }

    /// Forgets the counts.
    pub fn reset(&self) {
        self.writes.store(0, std::sync::atomic::Ordering::SeqCst);
        self.transactions.store(0, std::sync::atomic::Ordering::SeqCst);
        self.by_entity.lock().expect("not poisoned").clear();
    }

    fn count<'a>(&self, keys: impl Iterator<Item = &'a Key>) {
        let mut by_entity = self.by_entity.lock().expect("not poisoned");
        for key in keys {
            self.writes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let entity = key.pk.split('#').next().unwrap_or_default().to_string();
            if entity == "ACCOUNT" {
                *by_entity.entry(key.pk.clone()).or_default() += 1;
            }
            *by_entity.entry(entity).or_default() += 1;
        }
    }
}

#[async_trait::async_trait]
impl Store for CountingStore {
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        self.inner.get(key).await
    }
    async fn put(&self, item: Item, condition: Condition) -> Result<(), StoreError> {
        self.count(std::iter::once(&item.key));
        self.inner.put(item, condition).await
    }
    async fn update(&self, key: &Key, update: Update, condition: Condition) -> Result<Item, StoreError> {
        self.count(std::iter::once(key));
        self.inner.update(key, update, condition).await
    }
    async fn delete(&self, key: &Key, condition: Condition) -> Result<(), StoreError> {
        self.count(std::iter::once(key));
        self.inner.delete(key, condition).await
    }
    async fn query(&self, query: aitbc_store::Query) -> Result<aitbc_store::Page, StoreError> {
        self.inner.query(query).await
    }
    async fn transact(&self, writes: Vec<TxWrite>) -> Result<(), StoreError> {
        self.transactions.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.count(writes.iter().map(TxWrite::key));
        self.inner.transact(writes).await
    }
    fn indexes_lag(&self) -> bool {
        self.inner.indexes_lag()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nano(n: u64) -> Amount {
        Amount::from_raw(n)
    }

    #[test]
    fn fee_and_penalty_round_down_and_split_the_hold_exactly() {
        // 3.2 on a hold of 4 with 2.5%: fee 0.08, provider 3.12, 0.8 back.
        let a = settle_amounts(Amount::parse("4").unwrap(), Amount::parse("3.2").unwrap(), 250, 0).unwrap();
        assert_eq!((a.fee, a.penalty, a.provider, a.refund), (nano(80_000_000), Amount::ZERO, nano(3_120_000_000), nano(800_000_000)));
        // 39 nano: 2.5% is 0.975 nano, which rounds down to 0; a 50% penalty is 19.5 -> 19.
        let a = settle_amounts(nano(100), nano(39), 250, 5_000).unwrap();
        assert_eq!((a.fee, a.penalty, a.provider, a.refund), (nano(0), nano(19), nano(20), nano(80)));
        // 41 nano: fee 1.025 -> 1; penalty 100% is capped by the provider's share of 40.
        let a = settle_amounts(nano(41), nano(41), 250, 10_000).unwrap();
        assert_eq!((a.fee, a.penalty, a.provider, a.refund), (nano(1), nano(40), nano(0), nano(40)));
        assert_eq!(a.posted(), nano(1));
        assert!(settle_amounts(nano(10), nano(11), 250, 0).is_err(), "a price above the hold is refused");
    }

    #[test]
    fn sla_is_missed_only_past_the_response_time() {
        let sla = Sla { response_time_s: 30, penalty_rate_bps: 5_000 };
        assert!(!sla_missed(1_000, 31_000, &sla));
        assert!(sla_missed(1_000, 31_001, &sla));
    }

    #[test]
    fn the_plan_size_bound_holds_for_the_widest_values() {
        // The planner's per-entry bounds hold for the longest ids and the widest numbers.
        let id = "x".repeat(72);
        let receipt = PlannedReceipt(id.clone(), i64::MAX, u64::MAX, u64::MAX, u64::MAX, u64::MAX);
        let line = PlannedLine(id.clone(), i64::MIN, i64::MIN, u32::MAX);
        let one = Plan { receipts: vec![receipt.clone()], lines: vec![line.clone()] };
        let two = Plan { receipts: vec![receipt.clone(), receipt], lines: vec![line.clone(), line] };
        let (one, two) = (serde_json::to_string(&one).unwrap().len(), serde_json::to_string(&two).unwrap().len());
        assert!(one <= 64 + 72 + 112 + 72 + 58);
        assert!(two - one <= 72 + 112 + 72 + 58);
        // A page and its key fit one item; the record and every page fit one transaction.
        assert!(SETTLE_PLAN_PAGE_BYTES_MAX + 1024 < aitbc_store::store::ITEM_BYTES_MAX);
    }

    #[test]
    fn plan_pages_cut_at_character_boundaries_and_join_to_the_plan() {
        let json = format!("[\"{}\"]", "é".repeat(SETTLE_PLAN_PAGE_BYTES_MAX));
        let pages = split_pages(&json);
        assert_eq!(pages.len(), 3);
        assert!(pages.iter().all(|p| p.len() <= SETTLE_PLAN_PAGE_BYTES_MAX && !p.is_empty()));
        assert_eq!(pages.concat(), json);
        assert!(split_pages("").is_empty());
    }
}
