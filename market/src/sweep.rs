//! The sweeper: what no request will ever come back for.
//!
//! - **Unclaimed jobs.** A queued job past its `claim_deadline_ms` is re-matched once (its
//!   deadline moves a full claim timeout ahead and its message is sent again: the first may have
//!   been lost or dead-lettered) if its listing still takes jobs; otherwise, or when it was
//!   re-matched before, it expires (`Event::Expire`) and its hold is voided in the same
//!   transaction (`Market::finish_transition`). A job is only re-matched to its own listing:
//!   its price was quoted for that listing. "Re-matched before" is read from the job itself: a
//!   deadline further than one claim timeout after submission was moved by a re-match.
//! - **Lapsed leases.** A claimed or running job whose lease expired goes back to the queue
//!   (`Event::LeaseLapsed`; the claim already counted the attempt) and its message is sent
//!   again, or fails once its attempts are used up, its hold voided; the listing's
//!   `active_jobs` counter drops by one either way (`finish_transition`).
//! - **Stragglers.** Failed, cancelled and expired jobs void their hold in the transaction that
//!   ends them, so none should stay pending; the sweeper still looks at pending holds past
//!   their review time and voids the hold of a job that ended unpaid (an anomaly is logged).
//! - **Late settlement records.** A completion that committed after the settlement batch
//!   covering its record had read its range would leave its hold captured and never posted; the
//!   sweeper reconciles finished batches once they are old enough and settles such records in
//!   catch-up batches (`crate::reconcile`).
//! - **Expired records.** Idempotency records past `expires_at`: DynamoDB's TTL deletes them;
//!   on SQLite the sweeper does, through [`ExpiredRecords`]. Quotes are stateless signed tokens
//!   (their signature and expiry travel with them), so there is nothing to sweep for them.
//!
//! Every change is one of the market's conditional transitions, so a sweep racing a worker or
//! another sweep loses cleanly (counted as `raced`) and the next sweep looks again.

use crate::jobs::{Failure, JobRecord};
use crate::reconcile::{ReconcileOptions, ReconcileReport};
use crate::records::from_item;
use crate::settlement::Progress;
use crate::{Market, MarketError};
use aitbc_core::job::{transition, Event, JobState, LEASE_MS_MIN};
use aitbc_core::ledger::{Applied, Hold, HoldState, Transfer};
use aitbc_core::values::JobId;
use aitbc_store::keys::INDEX_SHARDS;
use aitbc_store::{keys, Item, Query, StoreError, PAGE_ITEMS_MAX};
use async_trait::async_trait;
use serde::Serialize;
use std::sync::Arc;

/// Jobs (or holds) one sweep looks at per kind of work, at most (items of a few KiB each are
/// held at once); the rest waits for the next sweep.
pub const SWEEP_ITEMS_MAX: usize = 10_000;
/// Expired records one call of [`ExpiredRecords::sweep_expired`] deletes, at most (SQLite's
/// `SWEEP_ITEMS_MAX`).
pub const SWEEP_EXPIRED_BATCH_MAX: usize = 1_000;
/// Calls of [`ExpiredRecords::sweep_expired`] per sweep, at most.
pub const SWEEP_EXPIRED_ROUNDS_MAX: usize = 1_000;

/// A backend without TTL deletes expired records when told (SQLite's `sweep_expired`).
#[async_trait]
pub trait ExpiredRecords: Send + Sync {
    /// Deletes up to `limit` items whose `expires_at` (unix seconds) is at or before `now_s`;
    /// returns how many.
    async fn sweep_expired(&self, now_s: i64, limit: usize) -> Result<usize, StoreError>;
}

/// How to sweep.
#[derive(Clone, Default)]
pub struct SweepOptions {
    /// Deletes expired records (None: the backend's TTL does it).
    pub expired_records: Option<Arc<dyn ExpiredRecords>>,
    /// How to reconcile settlement batches.
    pub reconcile: ReconcileOptions,
}

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Jobs and holds looked at.
    pub scanned: u64,
    /// Unclaimed jobs sent to their listing's queue again.
    pub rematched: u64,
    /// Unclaimed jobs expired, holds voided.
    pub expired: u64,
    /// Jobs whose lease lapsed, back in the queue.
    pub requeued: u64,
    /// Jobs whose lease lapsed on their last attempt: failed, holds voided.
    pub failed: u64,
    /// Straggling holds of jobs that ended unpaid, voided now.
    pub holds_voided: u64,
    /// Changes lost to a concurrent change of the same job (the next sweep looks again).
    pub raced: u64,
    /// Inconsistencies logged and left alone.
    pub anomalies: u64,
    /// Expired records deleted.
    pub expired_records: u64,
    /// Settlement batches reconciled, late records settled.
    pub reconcile: ReconcileReport,
}

impl Market {
    /// The job an index item names, read again by key through `job_with_version` (the one
    /// reader of job items; the index copy may also lag). None when it is gone.
    async fn job_of(&self, item: &Item) -> Result<Option<(JobRecord, i64)>, MarketError> {
        let id = item.str("job_id").ok_or_else(|| MarketError::Internal(format!("job item {} without job_id", item.key.pk)))?;
        match self.job_with_version(&JobId::parse(id)?).await {
            Ok(job) => Ok(Some(job)),
            Err(MarketError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The items of `query(shard)` over every shard, page after page, up to SWEEP_ITEMS_MAX.
async fn scan(market: &Market, query: impl Fn(u32) -> Query) -> Result<Vec<Item>, MarketError> {
    let mut items = Vec::new();
    for shard in 0..INDEX_SHARDS {
        let mut cursor = None;
        loop {
            let room = SWEEP_ITEMS_MAX - items.len();
            if room == 0 {
                return Ok(items);
            }
            let page = market.store.query(query(shard).limit(room.min(PAGE_ITEMS_MAX)).after(cursor.take())).await?;
            items.extend(page.items);
            cursor = page.cursor;
            if cursor.is_none() {
                break;
            }
        }
    }
    Ok(items)
}

impl Market {
    /// One sweep: unclaimed jobs, lapsed leases, straggling holds, expired records.
    pub async fn sweep(&self, options: &SweepOptions, progress: &dyn Progress) -> Result<SweepReport, MarketError> {
        let mut report = SweepReport::default();
        self.sweep_unclaimed(&mut report).await?;
        progress.advance("sweep", report.rematched + report.expired);
        let before = report.requeued + report.failed;
        self.sweep_lapsed(&mut report).await?;
        progress.advance("sweep", report.requeued + report.failed - before);
        self.sweep_holds(&mut report).await?;
        report.reconcile = self.reconcile(&options.reconcile).await?;
        progress.advance("sweep", report.reconcile.late);
        if let Some(expired) = &options.expired_records {
            let now_s = self.now_ms().div_euclid(1_000);
            for _ in 0..SWEEP_EXPIRED_ROUNDS_MAX {
                let removed = expired.sweep_expired(now_s, SWEEP_EXPIRED_BATCH_MAX).await?;
                assert!(removed <= SWEEP_EXPIRED_BATCH_MAX);
                report.expired_records += removed as u64;
                if removed < SWEEP_EXPIRED_BATCH_MAX {
                    break;
                }
            }
        }
        tracing::info!(?report, "sweep done");
        Ok(report)
    }

    /// Queued jobs past their claim deadline: re-match once, else expire.
    async fn sweep_unclaimed(&self, report: &mut SweepReport) -> Result<(), MarketError> {
        let now = self.now_ms();
        let claim_timeout_ms = i64::try_from(self.settings.claim_timeout_ms).expect("a timeout fits i64");
        // The index orders queued jobs by when they became queued; a job queued later than
        // this cannot have passed a deadline set at its submission, and a re-match moved the
        // deadline along with that time.
        let before_ms = now - claim_timeout_ms + 1;
        if before_ms <= 0 {
            return Ok(());
        }
        for item in scan(self, |shard| keys::jobs_by_state(JobState::Queued.name(), shard, before_ms)).await? {
            report.scanned += 1;
            let Some((job, version)) = self.job_of(&item).await? else { continue };
            if job.status.state != JobState::Queued || now < job.status.claim_deadline_ms {
                continue;
            }
            let rematched_before = job.status.claim_deadline_ms - job.created_at_ms > claim_timeout_ms;
            let available = match self.listing_item(&job.gpu_id).await {
                Ok(item) => self.is_available(&self.listing_view(&item)?),
                Err(MarketError::NotFound { .. }) => false,
                Err(e) => return Err(e),
            };
            if available && !rematched_before {
                let mut next = job.clone();
                next.status.claim_deadline_ms = now + claim_timeout_ms;
                match self.store.transact(vec![self.job_write(&next, version)]).await {
                    Ok(()) => {}
                    Err(StoreError::ConditionFailed { .. }) => {
                        report.raced += 1;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
                self.enqueue(&next).await?;
                report.rematched += 1;
                continue;
            }
            let mut next = job.clone();
            next.status = match transition(&job.status, &Event::Expire { now_ms: now }) {
                Ok(status) => status,
                Err(e) => {
                    tracing::warn!(job = %job.job_id, error = %e, "cannot expire");
                    report.anomalies += 1;
                    continue;
                }
            };
            match self.finish_transition(JobState::Queued, next, version).await {
                Ok(_) => report.expired += 1,
                Err(MarketError::Conflict(_)) => report.raced += 1,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Claimed or running jobs whose lease lapsed: back to the queue, or failed.
    async fn sweep_lapsed(&self, report: &mut SweepReport) -> Result<(), MarketError> {
        let now = self.now_ms();
        // A lease lasts at least LEASE_MS_MIN from the job's last write (claim or heartbeat).
        let before_ms = now - i64::try_from(LEASE_MS_MIN).expect("fits") + 1;
        if before_ms <= 0 {
            return Ok(());
        }
        for state in [JobState::Claimed, JobState::Running] {
            for item in scan(self, |shard| keys::jobs_by_state(state.name(), shard, before_ms)).await? {
                report.scanned += 1;
                let Some((job, version)) = self.job_of(&item).await? else { continue };
                let Some(lease) = job.status.lease.as_ref().filter(|_| job.status.state.is_leased()) else { continue };
                if now < lease.expires_at_ms {
                    continue;
                }
                let mut next = job.clone();
                next.status = match transition(&job.status, &Event::LeaseLapsed { now_ms: now }) {
                    Ok(status) => status,
                    Err(e) => {
                        tracing::warn!(job = %job.job_id, error = %e, "cannot lapse the lease");
                        report.anomalies += 1;
                        continue;
                    }
                };
                let failed = next.status.state == JobState::Failed;
                if failed {
                    let reason = format!("the lease lapsed on attempt {} of {}", next.status.attempt, next.status.attempts_max);
                    next.failure = Some(Failure { reason, retryable: true });
                }
                match self.finish_transition(job.status.state, next, version).await {
                    Ok(_) if failed => report.failed += 1,
                    Ok(_) => report.requeued += 1,
                    Err(MarketError::Conflict(_)) => report.raced += 1,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Pending holds past their review time whose job ended unpaid: void them.
    async fn sweep_holds(&self, report: &mut SweepReport) -> Result<(), MarketError> {
        let now = self.now_ms();
        for item in scan(self, |shard| keys::pending_holds_expiring(shard, now)).await? {
            report.scanned += 1;
            let hold: Hold = from_item(&item)?;
            if hold.state != HoldState::Pending {
                continue; // a lagging index entry
            }
            let job_id = hold.id.as_str().strip_prefix("hold-").and_then(|rest| JobId::parse(&format!("job-{rest}")).ok());
            let job = match job_id {
                Some(id) => match self.job_with_version(&id).await {
                    Ok(job) => Some(job),
                    Err(MarketError::NotFound { .. }) => None,
                    Err(e) => return Err(e),
                },
                None => None,
            };
            let Some((job, _)) = job else {
                tracing::warn!(hold = %hold.id, "pending hold without a job");
                report.anomalies += 1;
                continue;
            };
            match job.status.state.hold_outcome() {
                None => {} // still running or awaiting settlement
                Some(true) => {
                    tracing::error!(hold = %hold.id, job = %job.job_id, "hold of a settled job is still pending");
                    report.anomalies += 1;
                }
                Some(false) => {
                    tracing::warn!(hold = %hold.id, job = %job.job_id, state = %job.status.state, "straggling hold of a job that ended unpaid; voiding it");
                    let void = Transfer::Void { id: self.void_transfer_id(&job), hold: hold.id.clone() };
                    match self.apply_transfer(&void, vec![]).await {
                        Ok(Applied::Now) => report.holds_voided += 1,
                        Ok(Applied::Replayed) => report.anomalies += 1,
                        Err(MarketError::Conflict(_)) => report.raced += 1,
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(())
    }
}
