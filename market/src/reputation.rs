//! Reputation: the measured facts of `aitbc_core::reputation`, kept as counters on each listing
//! item and on its provider's item, and clients' ratings of their settled jobs.
//!
//! Each fact is added in the transaction that makes it true, never later and never twice: a
//! job's first claim adds its submission-to-start time (with the claim), a completion adds a
//! completed job and maybe an SLA breach (with the receipt), a failure for good or an expiry
//! adds itself (with the hold's void), a rating adds itself (with the rating's guard, written
//! only if absent). A listing's counters live on the listing item, which a job's transaction
//! already updates, so the listing view reads its reputation with no extra read; the provider's
//! live on the provider item (`PROVIDER#<provider>`), so they outlive deleted listings.

use crate::auth::{Principal, Role};
use crate::records::{from_item, to_item};
use crate::registry::LISTINGS_PAGE_MAX;
use crate::{Market, MarketError};
use aitbc_core::reputation::{wait_bucket, Facts, Rating, Reputation, WAIT_BUCKETS};
use aitbc_core::values::{Address, JobId, ListingId};
use aitbc_store::{keys, Condition, Item, StoreError, TxWrite, Update};
use serde::{Deserialize, Serialize};

const ATTR_COMPLETED: &str = "rep_completed";
const ATTR_FAILED: &str = "rep_failed";
const ATTR_EXPIRED: &str = "rep_expired";
const ATTR_SLA_BREACHES: &str = "rep_sla_breaches";
const ATTR_STARTED: &str = "rep_started";
const ATTR_WAIT_MS: &str = "rep_wait_ms";
const ATTR_RATINGS: &str = "rep_ratings";
const ATTR_RATING_TOTAL: &str = "rep_rating_total";

/// The attribute of histogram bucket `i`: `rep_wait_b00` .. `rep_wait_b15`.
fn bucket_attr(i: usize) -> String {
    format!("rep_wait_b{i:02}")
}

/// One fact about a job, as it becomes true.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fact {
    /// A first claim, this long after submission.
    Started { wait_ms: u64 },
    Completed { sla_breach: bool },
    /// Failed for good.
    Failed,
    Expired,
    Rated(Rating),
}

impl Fact {
    /// Adds the fact's counters to `update` (missing counters count as 0).
    pub fn add_to(self, update: Update) -> Update {
        match self {
            Fact::Started { wait_ms } => update
                .add(ATTR_STARTED, 1, None)
                .add(ATTR_WAIT_MS, i64::try_from(wait_ms).unwrap_or(i64::MAX), None)
                .add(&bucket_attr(wait_bucket(wait_ms)), 1, None),
            Fact::Completed { sla_breach } => {
                let update = update.add(ATTR_COMPLETED, 1, None);
                if sla_breach {
                    update.add(ATTR_SLA_BREACHES, 1, None)
                } else {
                    update
                }
            }
            Fact::Failed => update.add(ATTR_FAILED, 1, None),
            Fact::Expired => update.add(ATTR_EXPIRED, 1, None),
            Fact::Rated(rating) => update.add(ATTR_RATINGS, 1, None).add(ATTR_RATING_TOTAL, i64::from(rating.get()), None),
        }
    }

    /// The write that adds the fact to the provider's counters (the provider item exists for
    /// every provider with a listing; it is never deleted).
    pub fn provider_write(self, provider: &Address) -> TxWrite {
        TxWrite::Update { key: keys::provider(provider.as_str()), update: self.add_to(Update::new()), condition: Condition::Present }
    }

    /// The write that adds the fact to a listing's counters alone (when no other write of the
    /// transaction touches the listing item: one item, one write per transaction).
    pub fn listing_write(self, gpu_id: &ListingId) -> TxWrite {
        TxWrite::Update { key: keys::listing(gpu_id.as_str()), update: self.add_to(Update::new()), condition: Condition::Present }
    }
}

/// The facts counted on an item (a listing or a provider); counters never written are 0.
pub fn facts_from_item(item: &Item) -> Facts {
    let n = |attr: &str| item.int(attr).unwrap_or(0).max(0) as u64;
    let mut wait_histogram = [0u64; WAIT_BUCKETS];
    for (i, count) in wait_histogram.iter_mut().enumerate() {
        *count = n(&bucket_attr(i));
    }
    Facts {
        completed: n(ATTR_COMPLETED),
        failed: n(ATTR_FAILED),
        expired: n(ATTR_EXPIRED),
        sla_breaches: n(ATTR_SLA_BREACHES),
        started: n(ATTR_STARTED),
        wait_ms_total: n(ATTR_WAIT_MS),
        wait_histogram,
        ratings: n(ATTR_RATINGS),
        rating_total: n(ATTR_RATING_TOTAL),
    }
}

/// What a client sends to rate a job.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RateJob {
    /// 1 (bad) to 5 (excellent).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 5))]
    pub rating: i64,
}

/// A client's rating of one job, as stored (the job's rating guard) and served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobRating {
    pub job_id: JobId,
    pub client: Address,
    pub provider: Address,
    pub gpu_id: ListingId,
    pub rating: Rating,
    pub rated_at_ms: i64,
}

/// One listing's reputation.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ListingReputation {
    pub gpu_id: ListingId,
    pub reputation: Reputation,
}

/// A provider's reputation over all its jobs, and each of its listings'.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProviderReputation {
    pub provider: Address,
    pub reputation: Reputation,
    /// Its listings (at most a page of `LISTINGS_PAGE_MAX`), in id order.
    pub listings: Vec<ListingReputation>,
    /// True when it has more listings than one answer lists.
    pub truncated: bool,
}

impl Market {
    /// A client rates one of its settled jobs, once: 1..=5. The rating and the counters it
    /// moves are one transaction, conditional on the job not being rated yet.
    pub async fn rate_job(&self, caller: &Principal, job_id: &JobId, rate: RateJob) -> Result<JobRating, MarketError> {
        caller.require(Role::Client)?;
        let rating = Rating::parse(rate.rating)?;
        let (job, _) = self.job_with_version(job_id).await?;
        if caller.address != job.client {
            return Err(MarketError::Forbidden(format!("job {job_id} belongs to another client")));
        }
        // Settled means the money moved: what the client rates is a finished, paid job.
        if self.job_settlement(&job).await?.is_none() {
            return Err(MarketError::Conflict(format!("job {job_id} is {}, not settled: only a settled job can be rated", job.status.state)));
        }
        let guard_key = keys::job_rating(job_id.as_str());
        if self.store.get(&guard_key).await?.is_some() {
            return Err(already_rated(job_id));
        }
        let record = JobRating { job_id: job_id.clone(), client: job.client.clone(), provider: job.provider.clone(), gpu_id: job.gpu_id.clone(), rating, rated_at_ms: self.now_ms() };
        let fact = Fact::Rated(rating);
        let mut writes = vec![TxWrite::Put { item: to_item(guard_key.clone(), &record, &[]), condition: Condition::Absent }, fact.provider_write(&job.provider)];
        // A deleted listing keeps no counters; the provider's still count the rating.
        let listing_exists = self.store.get(&keys::listing(job.gpu_id.as_str())).await?.is_some();
        if listing_exists {
            writes.push(fact.listing_write(&job.gpu_id));
        }
        match self.store.transact(writes).await {
            Ok(()) => {}
            Err(StoreError::ConditionFailed { .. }) => {
                // A twin rated it meanwhile, or the listing went away between the reads.
                return Err(match self.store.get(&guard_key).await? {
                    Some(_) => already_rated(job_id),
                    None => MarketError::Conflict("the job's listing changed meanwhile; retry".into()),
                });
            }
            Err(e) => return Err(e.into()),
        }
        if listing_exists {
            if let Ok(listing) = self.listing(&job.gpu_id).await {
                self.forget_listing(&job.gpu_id, &listing.region);
            }
        }
        Ok(record)
    }

    /// A job's rating, if its client gave one.
    pub async fn job_rating(&self, job_id: &JobId) -> Result<Option<JobRating>, MarketError> {
        self.store.get(&keys::job_rating(job_id.as_str())).await?.map(|item| from_item(&item)).transpose()
    }

    /// A provider's reputation (public: it is made of measured facts and counts only).
    pub async fn provider_reputation(&self, provider: &Address) -> Result<ProviderReputation, MarketError> {
        let item = self.store.get(&keys::provider(provider.as_str())).await?.ok_or_else(|| MarketError::not_found(format!("provider {provider}")))?;
        let reputation = facts_from_item(&item).reputation();
        let page = self.store.query(keys::listings_by_provider(provider.as_str()).limit(LISTINGS_PAGE_MAX)).await?;
        let mut listings = Vec::with_capacity(page.items.len());
        for item in &page.items {
            let view = self.listing_view(item)?;
            listings.push(ListingReputation { gpu_id: view.listing.gpu_id, reputation: view.reputation });
        }
        Ok(ProviderReputation { provider: provider.clone(), reputation, listings, truncated: page.cursor.is_some() })
    }
}

fn already_rated(job_id: &JobId) -> MarketError {
    MarketError::Conflict(format!("job {job_id} is rated already: a job is rated once"))
}
