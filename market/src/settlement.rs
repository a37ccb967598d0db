//! Settlement: completed receipts are settled in bounded batches whose writes grow with the
//! accounts a batch touches, not with its receipts.
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
//! # The settlement record, written at completion
//!
//! Completing a job decides its money: in the same transaction as the receipt, the job and the
//! hold's capture (`ledger::HOLD_CAPTURED`: no longer voidable), it writes the job's
//! [`SettlementDue`] record with the amounts above (fee and SLA as they stand at completion).
//! Records live in 16 table partitions `DUE#<shard>`, sorted by `<t completed>#<job>`, so the
//! receipts of a period are dense, ordered runs of small items. A record is never written
//! again: it is the posted transfer of its receipt once a batch covers it.
//!
//! # Batches cover consecutive ranges of records
//!
//! Batch `n` settles every record whose sort key lies in `(after_sk, through_sk]`, where
//! `after_sk` is batch `n - 1`'s `through_sk`: the ranges tile the key space, so each record
//! is covered by exactly one batch, and "is this job settled" is "is the batch covering its
//! record done". Settling therefore writes nothing per receipt. A range ends at most at
//! `now - grace` ([`SETTLE_GRACE_MS`], 15 minutes): a completion stamped at `t` commits well
//! within that (an API request lives at most its Lambda's 15 s timeout, and DynamoDB refuses a
//! request signed more than 5 minutes before it arrives; the embedded server's one process
//! commits within seconds, hence its 60 s), so no record lands in a range that a batch has
//! already read. A caller that knows no completion is in flight (the demo, tests, the bench)
//! may pass a grace of 0.
//!
//! # A batch, step by step
//!
//! Each batch has a sequence number and the id `batch-settle-<seq>`; only one batch is open at
//! a time, and batch `n + 1` is created only after batch `n` is seen done. Every step is one
//! store transaction of at most 100 writes, and every step is safe to repeat:
//!
//! 1. **Plan** (1 + pages writes). Read the records after `after_sk` in key order, merging the
//!    16 partitions, up to `batch_receipts_max` records or `SETTLE_BATCH_ACCOUNTS_MAX` accounts;
//!    sum the postings per account; put the batch record (range, totals: the checkpoint) and
//!    its per-account lines, in pages of at most `SETTLE_PLAN_PAGE_BYTES_MAX`, in one
//!    transaction, on the condition that the batch id is new. A racing planner of the same
//!    number loses that condition and resumes (or plans after) the winner's batch instead.
//! 2. **Accounts** (`ceil(accounts / 50)` writes of 100). For each account the batch touches,
//!    its settlement line (the batch's aggregated entry in the account's ledger history;
//!    condition: absent) and ONE balance update by the sum of its deltas (floors of 0). The
//!    line is the proof that the delta was applied, so a delta applies at most once; the fee
//!    account gets one write per batch, not one per receipt.
//! 3. **Finish** (1 write). The batch record goes `open -> done`: its receipts are settled.
//!
//! Killed anywhere and run again, the open batch is resumed from its record and reaches the
//! same balances; a finished batch run again writes nothing.
//!
//! Writes per 1,000 receipts: `1,000 x (2 x accounts per batch + pages + 2) / receipts per
//! batch`, which batches of up to 100,000 receipts keep far below one per receipt.

use crate::jobs::JobRecord;
use crate::ledger::{account_key, LedgerEntry, ATTR_AVAILABLE, ATTR_HELD};
use crate::records::{from_item, to_item};
use crate::reconcile::Sketch;
use crate::registry::Sla;
use crate::{Market, MarketError};
use aitbc_core::config::FEE_BPS_MAX;
use aitbc_core::job::JobState;
use aitbc_core::ledger::{postings, AccountId, Hold, HoldState, Transfer};
use aitbc_core::money::{Amount, BPS_ONE};
use aitbc_core::values::{Address, HoldId, JobId, TransferId};
use aitbc_store::keys::INDEX_SHARDS;
use aitbc_store::{keys, Condition, Item, Key, Store, StoreError, TxWrite, Update, PAGE_ITEMS_MAX, TRANSACTION_WRITES_MAX};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

/// Receipts one batch settles, at most. A batch reads them and holds only per-account sums,
/// so the bound is on the time one batch takes (a Lambda has 15 minutes), not on memory.
pub const SETTLE_BATCH_RECEIPTS_MAX: usize = 100_000;
/// Accounts one batch touches, at most. A receipt touches at most three (client, provider,
/// fee), so a batch stops taking receipts before it would cross this; it bounds the plan and
/// the number of account steps.
pub const SETTLE_BATCH_ACCOUNTS_MAX: usize = 4_096;
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
/// Batches one run plans or resumes, at most; the rest waits for the next run.
pub const SETTLE_RUN_BATCHES_MAX: u32 = 10_000;
/// Times one run loses the race for a batch number before it gives up, at most.
pub const SETTLE_PLAN_RACES_MAX: u32 = 8;
/// Batches the search for the newest one steps past the (possibly lagging) index, at most.
pub const SETTLE_LATEST_PROBES_MAX: u32 = 64;
/// Store requests a batch keeps in flight at once, at most: the SQLite adapter commits
/// concurrent requests together, DynamoDB serves them in parallel.
pub const SETTLE_IN_FLIGHT_MAX: usize = 64;
/// Settlement leaves receipts completed less than this long ago to a later batch, so that a
/// completion still in flight cannot land in a range a batch has read (see the module docs).
pub const SETTLE_GRACE_MS: i64 = 15 * 60_000;
/// The longest grace an operator may ask for (a week).
pub const SETTLE_GRACE_MS_MAX: i64 = 7 * 24 * 3_600_000;

const ATTR_STATE: &str = "state";
const ATTR_PLAN: &str = "plan";
/// The batch a late marker names.
pub(crate) const ATTR_BATCH_ID: &str = "batch_id";
const LINE_KIND: &str = "settlement";

const _: () = assert!(SETTLE_CHUNK_ACCOUNTS_MAX * 2 <= TRANSACTION_WRITES_MAX);
const _: () = assert!(SETTLE_BATCH_ACCOUNTS_MAX >= 3, "one receipt always fits");
const _: () = assert!(SETTLE_PLAN_PAGES_MAX < TRANSACTION_WRITES_MAX);
const _: () = assert!(SETTLE_PLAN_BYTES_MAX + 64 * 1024 <= aitbc_store::store::TRANSACTION_BYTES_MAX);
// The widest plan (every account at its widest line) fits: see the test of the bound.
const _: () = assert!(SETTLE_BATCH_ACCOUNTS_MAX * (72 + 58) + 64 <= SETTLE_PLAN_BYTES_MAX);

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
    /// Receipts completed less than this long ago wait: 0..=SETTLE_GRACE_MS_MAX. 0 only where
    /// no completion can be in flight (see the module docs).
    pub grace_ms: i64,
}

impl Default for SettleOptions {
    fn default() -> Self {
        Self {
            batch_receipts_max: SETTLE_BATCH_RECEIPTS_MAX,
            batches_max: SETTLE_RUN_BATCHES_MAX,
            failpoint: None,
            in_flight_max: SETTLE_IN_FLIGHT_MAX,
            grace_ms: SETTLE_GRACE_MS,
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

    /// The amounts given hold, price, fee and penalty: the provider gets `price - fee -
    /// penalty`, the client `hold - price + penalty` back. None when they do not split the hold.
    pub fn from_parts(hold: Amount, price: Amount, fee: Amount, penalty: Amount) -> Option<SettleAmounts> {
        let (h, r, f, n) = (hold.raw(), price.raw(), fee.raw(), penalty.raw());
        let provider = r.checked_sub(f)?.checked_sub(n)?;
        let refund = h.checked_sub(r)?.checked_add(n)?;
        Some(SettleAmounts { hold, price, fee, penalty, provider: Amount::from_raw(provider), refund: Amount::from_raw(refund) })
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
    let amounts = SettleAmounts::from_parts(hold, price, fee, penalty).expect("the fee and the capped penalty fit the price");
    assert_eq!(
        u128::from(amounts.provider.raw()) + u128::from(fee.raw()) + u128::from(amounts.refund.raw()),
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

/// The ledger transfer that settles a job's hold with these amounts: a post of `price -
/// penalty` with the fee, or, when nothing is left to post, a void.
pub fn settle_transfer(job_id: &JobId, hold_id: &HoldId, provider: &Address, amounts: &SettleAmounts, platform: &Address) -> Transfer {
    let id = post_transfer_id(job_id);
    let posted = amounts.posted();
    if posted.is_zero() {
        assert!(amounts.fee.is_zero());
        Transfer::Void { id, hold: hold_id.clone() }
    } else {
        Transfer::Post {
            id,
            hold: hold_id.clone(),
            amount: posted,
            to: AccountId::earnings(provider),
            fee: amounts.fee,
            fee_to: AccountId::fee(platform),
        }
    }
}

/// How a job's hold was settled, as `GET /v1/jobs/{id}` shows it: the batch, the posted
/// transfer's id, the receipt it was posted for, and the amounts.
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

/// A completed job's settlement record: what its receipt posts, decided at completion and
/// written once (see the module docs). Once a done batch covers it, it is the posted transfer
/// `post_transfer_id(job_id)` of its receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementDue {
    pub job_id: JobId,
    pub client: Address,
    pub provider: Address,
    pub completed_at_ms: i64,
    pub amounts: SettleAmounts,
}

impl SettlementDue {
    /// The record of `job` completed at `completed_at_ms` for `price`: the fee at `fee_bps`,
    /// and the SLA's penalty if the job started late.
    pub fn new(job: &JobRecord, price: Amount, completed_at_ms: i64, sla: Option<&Sla>, fee_bps: u32) -> Result<SettlementDue, MarketError> {
        let started_ms = job.claimed_at_ms.unwrap_or(job.created_at_ms);
        let penalty_bps = sla.filter(|s| sla_missed(job.created_at_ms, started_ms, s)).map_or(0, |s| s.penalty_rate_bps);
        Self::with_penalty_bps(job, price, completed_at_ms, penalty_bps, fee_bps)
    }

    /// The record of `job` with the penalty rate decided by the caller (a contract job's, by
    /// the contract's availability).
    pub fn with_penalty_bps(job: &JobRecord, price: Amount, completed_at_ms: i64, penalty_bps: u32, fee_bps: u32) -> Result<SettlementDue, MarketError> {
        assert_eq!(job.hold_id, crate::jobs::hold_id_for(&job.job_id), "a job's hold is named after the job");
        Ok(SettlementDue {
            job_id: job.job_id.clone(),
            client: job.client.clone(),
            provider: job.provider.clone(),
            completed_at_ms,
            amounts: settle_amounts(job.max_price, price, fee_bps, penalty_bps)?,
        })
    }

    /// The record's key.
    pub fn key(&self) -> Key {
        due_key(&self.job_id, self.completed_at_ms)
    }

    /// The hold the record posts: named after the job (`jobs::hold_id_for`).
    pub fn hold_id(&self) -> HoldId {
        crate::jobs::hold_id_for(&self.job_id)
    }

    /// The write that stores the record (in the completing transaction): only if absent, so
    /// that it is written once.
    pub fn write(&self) -> TxWrite {
        let a = &self.amounts;
        let stored = StoredDue { c: self.client.clone(), p: self.provider.clone(), h: a.hold.raw(), r: a.price.raw(), f: a.fee.raw(), n: a.penalty.raw() };
        TxWrite::Put { item: to_item(self.key(), &stored, &[]), condition: Condition::Absent }
    }

    /// The record stored in `item` (its job and completion time are in its sort key).
    pub fn from_item(item: Item) -> Result<SettlementDue, MarketError> {
        let Item { key, attrs } = item;
        let corrupt = |why: String| MarketError::Internal(format!("settlement record ({}, {}): {why}", key.pk, key.sk));
        let stored: StoredDue = serde_json::from_value(serde_json::Value::Object(attrs)).map_err(|e| corrupt(e.to_string()))?;
        // `<t completed>#<job>`: TIME_DIGITS digits, the separator, the job id.
        let (time, job) = key.sk.split_at_checked(keys::TIME_DIGITS).ok_or_else(|| corrupt("short sort key".into()))?;
        let completed_at_ms: i64 = time.parse().map_err(|_| corrupt("sort key time".into()))?;
        let job_id = job.strip_prefix('#').and_then(|j| JobId::parse(j).ok()).ok_or_else(|| corrupt("sort key job".into()))?;
        let (hold, price, fee, penalty) = (stored.h, stored.r, stored.f, stored.n);
        let amounts = SettleAmounts::from_parts(Amount::from_raw(hold), Amount::from_raw(price), Amount::from_raw(fee), Amount::from_raw(penalty))
            .ok_or_else(|| corrupt(format!("amounts do not split the hold: {hold} {price} {fee} {penalty}")))?;
        Ok(SettlementDue { job_id, client: stored.c, provider: stored.p, completed_at_ms, amounts })
    }

    /// The ledger transfer that settles the receipt: a post of `price - penalty` with the fee,
    /// or, when nothing is left to post, a void.
    pub fn transfer(&self, platform: &Address) -> Transfer {
        settle_transfer(&self.job_id, &self.hold_id(), &self.provider, &self.amounts, platform)
    }

    /// The balance changes of the receipt, through the core ledger's `postings`.
    fn postings(&self, platform: &Address) -> Result<Vec<aitbc_core::ledger::Posting>, MarketError> {
        let hold = Hold { id: self.hold_id(), account: AccountId::wallet(&self.client), amount: self.amounts.hold, state: HoldState::Pending };
        Ok(postings(&self.transfer(platform), Some(&hold))?.postings)
    }
}

/// The key of the settlement record of `job_id` completed at `completed_ms`: the job's shard,
/// then completion time and job.
pub(crate) fn due_key(job_id: &JobId, completed_ms: i64) -> Key {
    keys::settlement_due(keys::shard(job_id.as_str()), completed_ms, job_id.as_str())
}

/// A settlement record as stored: small, because settlement reads a million of them in
/// seconds (one-letter names; money as integers of nano-AITBC like every stored amount). The
/// job and the completion time are the sort key, the hold's id follows from the job's
/// (`jobs::hold_id_for`), the provider's share and the refund from the other amounts.
#[derive(Serialize, Deserialize)]
struct StoredDue {
    /// Client.
    c: Address,
    /// Provider.
    p: Address,
    /// Hold, price, fee, penalty.
    h: u64,
    r: u64,
    f: u64,
    n: u64,
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

/// A settlement batch's record: its range, its checkpoint and the size of its plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRecord {
    pub batch_id: String,
    pub seq: u64,
    pub state: BatchState,
    pub created_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<i64>,
    /// The batch settles the settlement records with sort keys in `(after_sk, through_sk]`.
    pub after_sk: String,
    pub through_sk: String,
    pub receipts: u32,
    pub accounts: u32,
    pub price_total: Amount,
    pub fee_total: Amount,
    pub penalty_total: Amount,
    /// Pages of the plan (items `PLAN#<n>` beside the record). Each holds a slice of the plan's
    /// JSON text: an opaque blob to the store, so that reading and updating the record does not
    /// parse thousands of nested values.
    pub plan_pages: u32,
    /// A sketch of the sort keys of the records the batch read (`reconcile::Sketch`, base64):
    /// the reconciler finds the records of the range the batch did not read by subtracting it
    /// from a sketch of the range read again. None on catch-up batches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sketch: Option<String>,
    /// A catch-up batch's records (their sort keys), all in the range of batch `seq`, which
    /// did not read them: written after that batch read its range (see `reconcile`). Empty on
    /// ordinary batches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub late: Vec<String>,
}

impl BatchRecord {
    /// Whether the batch's range covers the settlement record with sort key `due_sk`.
    pub fn covers(&self, due_sk: &str) -> bool {
        self.after_sk.as_str() < due_sk && due_sk <= self.through_sk.as_str()
    }
}

/// One account's aggregated change: account, available delta, held delta, receipts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PlannedLine(String, i64, i64, u32);

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Plan {
    lines: Vec<PlannedLine>,
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

/// The id of settlement batch number `seq`.
pub fn settlement_batch_id(seq: u64) -> String {
    assert!(seq >= 1);
    format!("batch-settle-{seq:012}")
}

fn to_i64(value: i128, what: &str) -> Result<i64, SettleError> {
    i64::try_from(value).map_err(|_| SettleError::Invariant(format!("{what} {value} does not fit a stored integer")))
}

/// A page of one shard's settlement records: (sort key, record) in key order, and where to go on.
type DuePage = (Vec<(String, SettlementDue)>, Option<String>);

/// Reads one shard's records of a range, page after page, one page ahead of its reader when
/// asked to (so that the store's work and the parsing overlap the planner's).
pub(crate) struct ShardReader {
    store: Arc<dyn Store>,
    shard: u32,
    after_sk: String,
    through_sk: String,
    buffer: VecDeque<(String, SettlementDue)>,
    /// The page being read ahead, if any.
    ahead: Option<tokio::task::JoinHandle<Result<DuePage, MarketError>>>,
    cursor: Option<String>,
    read_ahead: bool,
    finished: bool,
}

impl ShardReader {
    pub(crate) fn new(store: Arc<dyn Store>, shard: u32, after_sk: &str, through_sk: &str, read_ahead: bool) -> Self {
        let mut reader = Self {
            store,
            shard,
            after_sk: after_sk.to_string(),
            through_sk: through_sk.to_string(),
            buffer: VecDeque::new(),
            ahead: None,
            cursor: None,
            read_ahead,
            finished: false,
        };
        if read_ahead {
            reader.ahead = Some(tokio::spawn(reader.page()));
        }
        reader
    }

    /// The read of the next page (the first when no cursor is set yet).
    fn page(&self) -> impl std::future::Future<Output = Result<DuePage, MarketError>> + Send + 'static {
        let store = self.store.clone();
        let query = keys::settlement_due_range(self.shard, &self.after_sk, &self.through_sk).limit(PAGE_ITEMS_MAX).after(self.cursor.clone());
        let after_sk = self.after_sk.clone();
        async move {
            let page = store.query(query).await?;
            let mut records = Vec::with_capacity(page.items.len());
            for item in page.items {
                // The range's start belongs to the batch before.
                if item.key.sk != after_sk {
                    let sk = item.key.sk.clone();
                    records.push((sk, SettlementDue::from_item(item)?));
                }
            }
            Ok((records, page.cursor))
        }
    }

    /// Reads pages until a record is buffered or the range is read.
    pub(crate) async fn fill(&mut self) -> Result<(), MarketError> {
        while self.buffer.is_empty() && !self.finished {
            let (records, cursor) = match self.ahead.take() {
                Some(task) => task.await.map_err(|e| MarketError::Internal(format!("settlement read task: {e}")))??,
                None => self.page().await?,
            };
            self.buffer.extend(records);
            self.cursor = cursor;
            if self.cursor.is_none() {
                self.finished = true;
            } else if self.read_ahead {
                self.ahead = Some(tokio::spawn(self.page()));
            }
        }
        Ok(())
    }

    /// The next record's sort key (after `fill`); None when the range is read.
    pub(crate) fn peek(&self) -> Option<&str> {
        self.buffer.front().map(|(sk, _)| sk.as_str())
    }

    pub(crate) fn pop(&mut self) -> (String, SettlementDue) {
        self.buffer.pop_front().expect("pop follows a peek that saw a record")
    }
}

impl Drop for ShardReader {
    fn drop(&mut self) {
        if let Some(task) = self.ahead.take() {
            task.abort();
        }
    }
}

/// A plan with its record, before it is written.
pub(crate) struct Planned {
    pub(crate) record: BatchRecord,
    pub(crate) plan: Plan,
}

/// A batch's records summed as they are read: their postings per account, their totals, and
/// the sketch of their sort keys.
#[derive(Default)]
pub(crate) struct Tally {
    lines: HashMap<AccountId, (i128, i128, u32)>,
    pub(crate) receipts: usize,
    price_total: Amount,
    fee_total: Amount,
    penalty_total: Amount,
    pub(crate) sketch: Sketch,
}

impl Tally {
    /// Adds the record with sort key `sk`; false (and nothing added) when its accounts would
    /// take the batch past SETTLE_BATCH_ACCOUNTS_MAX.
    pub(crate) fn add(&mut self, sk: &str, due: &SettlementDue, platform: &Address) -> Result<bool, SettleError> {
        let postings = due.postings(platform)?;
        let new_accounts = postings.iter().filter(|p| !self.lines.contains_key(&p.account)).count();
        if self.lines.len() + new_accounts > SETTLE_BATCH_ACCOUNTS_MAX {
            return Ok(false);
        }
        for p in postings {
            let line = self.lines.entry(p.account).or_insert((0, 0, 0));
            line.0 += p.available_delta;
            line.1 += p.held_delta;
            line.2 += 1;
        }
        let add = |a: Amount, b: Amount| a.checked_add(b).map_err(|e| SettleError::Invariant(e.to_string()));
        self.price_total = add(self.price_total, due.amounts.price)?;
        self.fee_total = add(self.fee_total, due.amounts.fee)?;
        self.penalty_total = add(self.penalty_total, due.amounts.penalty)?;
        self.receipts += 1;
        self.sketch.insert(sk);
        Ok(true)
    }

    /// The open batch `batch_id` (number `seq`, range `(after_sk, through_sk]`) of the records
    /// added, with its plan: one line per account whose postings do not cancel out.
    pub(crate) fn finish(self, batch_id: String, seq: u64, after_sk: &str, through_sk: &str, created_at_ms: i64) -> Result<Planned, SettleError> {
        assert!(self.receipts > 0);
        let mut plan = Plan::default();
        let mut sorted: Vec<(String, (i128, i128, u32))> = self.lines.into_iter().map(|(account, line)| (account.to_string(), line)).collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (account, (available, held, count)) in sorted {
            // An account whose postings cancel out needs no line and no write.
            if available != 0 || held != 0 {
                plan.lines.push(PlannedLine(account, to_i64(available, "available delta")?, to_i64(held, "held delta")?, count));
            }
        }
        let record = BatchRecord {
            batch_id,
            seq,
            state: BatchState::Open,
            created_at_ms,
            finished_at_ms: None,
            after_sk: after_sk.to_string(),
            through_sk: through_sk.to_string(),
            receipts: u32::try_from(self.receipts).expect("bounded"),
            accounts: u32::try_from(plan.lines.len()).expect("bounded"),
            price_total: self.price_total,
            fee_total: self.fee_total,
            penalty_total: self.penalty_total,
            plan_pages: 0,
            sketch: None,
            late: Vec::new(),
        };
        Ok(Planned { record, plan })
    }
}

impl Market {
    /// Settles every receipt completed before `now - options.grace_ms`, batch after batch,
    /// until none remain (or `options.batches_max`). Resumes a batch an earlier run left open
    /// first.
    pub async fn settle(&self, options: &SettleOptions, progress: &dyn Progress) -> Result<SettleReport, SettleError> {
        assert!((1..=SETTLE_BATCH_RECEIPTS_MAX).contains(&options.batch_receipts_max));
        assert!((1..=SETTLE_RUN_BATCHES_MAX).contains(&options.batches_max));
        assert!((0..=SETTLE_GRACE_MS_MAX).contains(&options.grace_ms));
        let mut steps = Steps::new(options.failpoint, options.in_flight_max);
        let mut report = SettleReport::default();
        let mut races: u32 = 0;
        // One horizon for the whole run, so that a run ends even while receipts keep arriving.
        let horizon_ms = self.now_ms() - options.grace_ms;
        let result = async {
            for _ in 0..options.batches_max {
                let latest = self.latest_settlement_batch().await?;
                if let Some(open) = latest.as_ref().filter(|b| b.state == BatchState::Open) {
                    self.resume_batch(open, &mut steps).await?;
                    report.resumed += 1;
                    Self::count(&mut report, open, progress);
                    continue;
                }
                let (seq, after_sk) = latest.map_or((1, keys::settlement_due_start()), |b| (b.seq + 1, b.through_sk));
                let planning = std::time::Instant::now();
                let Some(mut planned) = self.plan_batch(seq, &after_sk, horizon_ms, options.batch_receipts_max, options.in_flight_max).await? else {
                    break; // nothing left to settle
                };
                tracing::debug!(seq, receipts = planned.record.receipts, plan_ms = planning.elapsed().as_millis() as u64, "planned");
                if self.create_batch(&mut planned.record, &planned.plan, true, Vec::new(), &mut steps).await? {
                    self.execute_batch(&planned.record, &planned.plan, &mut steps).await?;
                    Self::count(&mut report, &planned.record, progress);
                } else {
                    // Another run created this batch number first: the next round resumes its
                    // batch if open, and plans after it.
                    races += 1;
                    if races > SETTLE_PLAN_RACES_MAX {
                        return Err(SettleError::Market(MarketError::Conflict("settlement keeps racing another run".into())));
                    }
                }
            }
            Ok::<(), SettleError>(())
        }
        .await;
        report.steps = steps.taken();
        result.map(|()| report)
    }

    fn count(report: &mut SettleReport, record: &BatchRecord, progress: &dyn Progress) {
        report.batches += 1;
        report.receipts += u64::from(record.receipts);
        report.account_updates += u64::from(record.accounts);
        let add = |a: Amount, b: Amount| a.checked_add(b).expect("totals fit");
        report.price_total = add(report.price_total, record.price_total);
        report.fee_total = add(report.fee_total, record.fee_total);
        report.penalty_total = add(report.penalty_total, record.penalty_total);
        report.last_batch = Some(record.batch_id.clone());
        progress.advance("settle", u64::from(record.receipts));
        tracing::info!(batch = %record.batch_id, receipts = record.receipts, accounts = record.accounts, "settlement batch done");
    }

    /// A settlement batch's record, read by key (strongly consistent).
    pub async fn settlement_batch(&self, batch_id: &str) -> Result<Option<BatchRecord>, MarketError> {
        match self.store.get(&keys::settlement_batch(batch_id)).await? {
            Some(item) => Ok(Some(from_item(&item)?)),
            None => Ok(None),
        }
    }

    /// The newest settlement batch. The index may lag (DynamoDB's indexes are eventually
    /// consistent), so its answer is only a start: the batches after it are probed by key
    /// (numbers are consecutive) until one is missing.
    pub async fn latest_settlement_batch(&self) -> Result<Option<BatchRecord>, MarketError> {
        let page = self.store.query(keys::settlement_batches().descending().limit(1)).await?;
        let mut latest = match page.items.first() {
            None => None,
            Some(item) => {
                let id = item.str("batch_id").ok_or_else(|| MarketError::Internal("settlement batch without id".into()))?;
                self.settlement_batch(id).await?
            }
        };
        for _ in 0..SETTLE_LATEST_PROBES_MAX {
            let next = latest.as_ref().map_or(1, |b| b.seq + 1);
            match self.settlement_batch(&settlement_batch_id(next)).await? {
                Some(record) => latest = Some(record),
                None => return Ok(latest),
            }
        }
        Err(MarketError::Unavailable(format!("the settlement index lags by more than {SETTLE_LATEST_PROBES_MAX} batches")))
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

    /// Reads the records after `after_sk` (up to `horizon_ms`) in key order and sums their
    /// postings per account, up to `receipts_max` records or SETTLE_BATCH_ACCOUNTS_MAX accounts
    /// (no writes). None when there is nothing to settle.
    async fn plan_batch(&self, seq: u64, after_sk: &str, horizon_ms: i64, receipts_max: usize, in_flight_max: usize) -> Result<Option<Planned>, SettleError> {
        let horizon_sk = keys::settlement_due_end(horizon_ms.max(0));
        if horizon_sk.as_str() <= after_sk {
            return Ok(None);
        }
        let read_ahead = in_flight_max >= INDEX_SHARDS as usize;
        let mut readers: Vec<ShardReader> = (0..INDEX_SHARDS).map(|shard| ShardReader::new(self.store.clone(), shard, after_sk, &horizon_sk, read_ahead)).collect();
        let mut tally = Tally::default();
        let mut through_sk: Option<String> = None;
        for reader in readers.iter_mut() {
            reader.fill().await?;
        }
        loop {
            // The smallest head of the 16 shards is the next record in key order.
            let mut next: Option<(usize, &str)> = None;
            for (i, reader) in readers.iter().enumerate() {
                if let Some(sk) = reader.peek() {
                    if next.is_none_or(|(_, best)| sk < best) {
                        next = Some((i, sk));
                    }
                }
            }
            let Some((i, _)) = next else {
                // Every record up to the horizon is in: the range ends at the horizon.
                through_sk = Some(horizon_sk);
                break;
            };
            if tally.receipts == receipts_max {
                break; // full: the range ends at the last record taken
            }
            let (sk, due) = readers[i].pop();
            readers[i].fill().await?;
            if !tally.add(&sk, &due, &self.platform)? {
                break;
            }
            through_sk = Some(sk);
        }
        drop(readers);
        let Some(through_sk) = through_sk.filter(|_| tally.receipts > 0) else {
            return Ok(None);
        };
        assert!(after_sk < through_sk.as_str());
        let sketch = tally.sketch.encode();
        let mut planned = tally.finish(settlement_batch_id(seq), seq, after_sk, &through_sk, self.now_ms())?;
        planned.record.sketch = Some(sketch);
        Ok(Some(planned))
    }

    /// Step 1: writes the batch record (in the index of batches when `indexed`), its plan's
    /// pages and `extra` writes if its number is new; false when another run holds the number
    /// (or an `extra` write's condition fails).
    pub(crate) async fn create_batch(&self, record: &mut BatchRecord, plan: &Plan, indexed: bool, extra: Vec<TxWrite>, steps: &mut Steps) -> Result<bool, SettleError> {
        let json = serde_json::to_string(plan).expect("plans serialize");
        assert!(json.len() <= SETTLE_PLAN_BYTES_MAX, "a plan of {} bytes", json.len());
        let pages = split_pages(&json);
        assert!((1..=SETTLE_PLAN_PAGES_MAX).contains(&pages.len()));
        record.plan_pages = u32::try_from(pages.len()).expect("bounded");
        let index: Vec<_> = indexed.then(|| keys::settlement_batch_index(&record.through_sk, &record.batch_id)).into_iter().collect();
        let mut writes = vec![TxWrite::Put { item: to_item(keys::settlement_batch(&record.batch_id), &*record, &index), condition: Condition::Absent }];
        for (n, text) in pages.into_iter().enumerate() {
            let item = Item::new(keys::settlement_plan_page(&record.batch_id, n as u32)).with(ATTR_PLAN, text);
            writes.push(TxWrite::Put { item, condition: Condition::Absent });
        }
        writes.extend(extra);
        assert!(writes.len() <= TRANSACTION_WRITES_MAX);
        let results = self.transact_steps(vec![writes], steps).await?;
        match results.into_iter().next().expect("one step") {
            Ok(()) => Ok(true),
            Err(StoreError::ConditionFailed { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) async fn resume_batch(&self, record: &BatchRecord, steps: &mut Steps) -> Result<(), SettleError> {
        tracing::info!(batch = %record.batch_id, "resuming an open settlement batch");
        let plan = self.batch_plan(record).await?;
        self.execute_batch(record, &plan, steps).await
    }

    /// Steps 2 and 3 of a batch.
    pub(crate) async fn execute_batch(&self, record: &BatchRecord, plan: &Plan, steps: &mut Steps) -> Result<(), SettleError> {
        assert_eq!(record.state, BatchState::Open);
        assert_eq!(plan.lines.len(), record.accounts as usize);
        let started = std::time::Instant::now();
        self.apply_lines(record, plan, steps).await?;
        tracing::debug!(batch = %record.batch_id, lines_ms = started.elapsed().as_millis() as u64, "applied");
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
        Ok(())
    }

    /// Step 2: one line and one balance update per account, in chunks.
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

    /// The settlement record of a job completing now for `price`, with the SLA of the job's
    /// listing (a listing deleted since has no SLA left to apply).
    /// Also says whether the job missed its listing's SLA (a fact of its reputation).
    pub async fn settlement_due_for(&self, job: &JobRecord, price: Amount, completed_at_ms: i64) -> Result<(SettlementDue, bool, Option<TxWrite>), MarketError> {
        let sla = match self.listing(&job.gpu_id).await {
            Ok(listing) => Some(listing.sla),
            Err(MarketError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let started_ms = job.claimed_at_ms.unwrap_or(job.created_at_ms);
        let missed = sla.as_ref().is_some_and(|s| sla_missed(job.created_at_ms, started_ms, s));
        // A contract job pays the penalty by the contract's measured availability instead of
        // by its own start time (`aitbc_core::capacity`).
        if let (Some(terms), Some(sla)) = (&job.contract, &sla) {
            if let Some((breached, write)) = self.contract_completion(&job.provider, &job.client, terms, !missed).await? {
                let penalty_bps = if breached { sla.penalty_rate_bps } else { 0 };
                let due = SettlementDue::with_penalty_bps(job, price, completed_at_ms, penalty_bps, self.config.fee_bps)?;
                return Ok((due, missed, Some(write)));
            }
        }
        Ok((SettlementDue::new(job, price, completed_at_ms, sla.as_ref(), self.config.fee_bps)?, missed, None))
    }

    /// How a completed job was settled: Some once the batch that settles its record is done:
    /// the catch-up batch its late marker names, if it has one (`reconcile`), else the batch
    /// whose range covers the record. Reads the marker, the index of batches (which may lag: a
    /// just-finished batch may show a moment late), the batch and the record.
    pub async fn job_settlement(&self, job: &JobRecord) -> Result<Option<Settlement>, MarketError> {
        let (JobState::Completed, Some(completed_ms), Some(receipt_id)) = (job.status.state, job.finished_at_ms, job.receipt_id.as_ref()) else {
            return Ok(None);
        };
        let due_key = due_key(&job.job_id, completed_ms);
        let batch_id = match self.store.get(&keys::settlement_late(job.job_id.as_str())).await? {
            // Late: the batch covering the record did not read it; its catch-up settles it.
            Some(marker) => marker.str(ATTR_BATCH_ID).ok_or_else(|| MarketError::Internal(format!("late marker of {} without a batch", job.job_id)))?.to_string(),
            None => {
                // The first entry at or above the record is the batch covering it (entries sort
                // by the end of their range); it does not cover the record only while the index
                // lags.
                let page = self.store.query(keys::settlement_batches_covering(&due_key.sk).limit(1)).await?;
                let Some(item) = page.items.first() else { return Ok(None) };
                let entry: BatchRecord = from_item(item)?;
                if !entry.covers(&due_key.sk) {
                    return Ok(None);
                }
                entry.batch_id
            }
        };
        // The entry's state may lag; the record read by key does not.
        let Some(batch) = self.settlement_batch(&batch_id).await? else { return Ok(None) };
        if batch.state != BatchState::Done {
            return Ok(None);
        }
        let item = self.store.get(&due_key).await?.ok_or_else(|| MarketError::Internal(format!("completed job {} has no settlement record", job.job_id)))?;
        let due = SettlementDue::from_item(item)?;
        Ok(Some(Settlement {
            batch_id: batch.batch_id,
            transfer_id: post_transfer_id(&job.job_id),
            receipt_id: receipt_id.clone(),
            amounts: due.amounts,
            settled_at_ms: batch.finished_at_ms.unwrap_or(batch.created_at_ms),
        }))
    }

    /// The job as clients see it: a completed job whose receipt a done batch settled shows as
    /// `settled`, with its settlement.
    pub async fn with_settlement(&self, mut job: JobRecord) -> Result<JobRecord, MarketError> {
        if let Some(settlement) = self.job_settlement(&job).await? {
            job.status = aitbc_core::job::transition(&job.status, &aitbc_core::job::Event::Settle).map_err(|e| MarketError::Internal(format!("job {}: {e}", job.job_id)))?;
            job.settlement = Some(settlement);
        }
        Ok(job)
    }

    /// Runs each transaction as one numbered step, up to `steps.in_flight_max` at once, and
    /// answers each one's result in order. The failpoint stops the run before its step starts
    /// or after it commits; steps already in flight finish first, as they would in a crash.
    pub(crate) async fn transact_steps(&self, transactions: Vec<Vec<TxWrite>>, steps: &mut Steps) -> Result<Vec<Result<(), StoreError>>, SettleError> {
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
    fn a_settlement_record_reads_back_as_written_and_refuses_a_broken_split() {
        let amounts = settle_amounts(nano(4_000), nano(3_200), 250, 5_000).unwrap();
        let due = SettlementDue {
            job_id: JobId::parse("job-0123456789abcdef0123456789abcdef").unwrap(),
            client: Address::generate(),
            provider: Address::generate(),
            completed_at_ms: 1_769_284_800_123,
            amounts,
        };
        let TxWrite::Put { item, condition } = due.write() else { panic!("a put") };
        assert_eq!((condition, &item.key), (Condition::Absent, &due.key()));
        assert_eq!(item.int("r"), Some(3_200), "money is stored as integers");
        assert_eq!(SettlementDue::from_item(item.clone()).unwrap(), due);
        let mut broken = item;
        broken.attrs.insert("f".into(), serde_json::Value::from(3_300));
        assert!(SettlementDue::from_item(broken).is_err(), "a fee above the price does not split the hold");
    }

    #[test]
    fn sla_is_missed_only_past_the_response_time() {
        let sla = Sla { response_time_s: 30, penalty_rate_bps: 5_000 };
        assert!(!sla_missed(1_000, 31_000, &sla));
        assert!(sla_missed(1_000, 31_001, &sla));
    }

    #[test]
    fn the_plan_size_bound_holds_for_the_widest_values() {
        // A line is its account plus at most 58 bytes of numbers and punctuation, for the
        // longest ids and the widest numbers; the empty plan is at most 64.
        let id = "x".repeat(72);
        let line = PlannedLine(id.clone(), i64::MIN, i64::MIN, u32::MAX);
        let one = serde_json::to_string(&Plan { lines: vec![line.clone()] }).unwrap().len();
        let two = serde_json::to_string(&Plan { lines: vec![line.clone(), line] }).unwrap().len();
        assert!(serde_json::to_string(&Plan::default()).unwrap().len() <= 64);
        assert!(one <= 64 + 72 + 58 && two - one <= 72 + 58);
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
