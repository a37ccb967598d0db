//! The priority order of a listing's queued jobs (`QueuePriority::WeightedFairShare`): higher
//! tier first, then weighted fair share across clients, which claims follow.
//!
//! The queue port (SQS) delivers messages in no useful order, so the order lives in the table:
//! each queued job of such a listing has an entry `QUEUE#<listing>` / `E#<rank>#<tag>#<t>#<job>`,
//! written with the job (and again when it is requeued) and deleted in the transaction that
//! claims, cancels or expires it. A message only says "a job may be waiting": a claim of a
//! queued job takes the listing's first entry instead when that is another job, and puts a
//! message back for the one it was asked for, so every queued job keeps a message.
//!
//! The order (ARCHITECTURE.md repeats it):
//! - `rank`: enterprise 0, premium 1, basic 2: a higher tier is always claimed first;
//! - `tag`, the job's finish tag in start-time fair queueing: `tag = max(V, F_c) + cost`, where
//!   `V` is the listing's virtual time (the tag of the job claimed last), `F_c` the tag of the
//!   client's previous job on the listing, and `cost` the GPU-milliseconds the job may use.
//!   Each client advances its own clock by what it asks, so clients share claims in inverse
//!   proportion to the GPU time of their jobs (the weight is the job's size), and a client
//!   that was idle restarts at `V` instead of cashing in its idle time;
//! - then the submission time, then the job id.

use crate::jobs::JobRecord;
use crate::records::int;
use crate::registry::{ListingMove, Preemption, QueuePriority, ATTR_QUEUE_VTIME};
use crate::{Market, MarketError};
use aitbc_core::pricing::Tier;
use aitbc_core::values::{Address, JobId, ListingId};
use aitbc_store::{keys, Condition, Item, TxWrite};

const ATTR_FINISH: &str = "finish";

/// Lower ranks are claimed first.
pub fn tier_rank(tier: Tier) -> u32 {
    match tier {
        Tier::Enterprise => 0,
        Tier::Premium => 1,
        Tier::Basic => 2,
    }
}

/// The entry of a queued job with a finish tag.
pub(crate) fn entry_key(job: &JobRecord) -> Option<aitbc_store::Key> {
    job.queue_tag.map(|tag| keys::queue_entry(job.gpu_id.as_str(), tier_rank(job.tier), tag, job.created_at_ms, job.job_id.as_str()))
}

/// The write that puts a queued job's entry (when it has one).
pub(crate) fn entry_put(job: &JobRecord) -> Option<TxWrite> {
    entry_key(job).map(|key| TxWrite::Put { item: Item::new(key).with("job_id", job.job_id.as_str()), condition: Condition::Always })
}

/// The write that deletes a job's entry as it leaves the queue (when it has one).
pub(crate) fn entry_delete(job: &JobRecord) -> Option<TxWrite> {
    entry_key(job).map(|key| TxWrite::Delete { key, condition: Condition::Always })
}

/// A fair-share tag for a new job and the write that advances its client's clock to it.
pub(crate) struct Tagged {
    pub tag: u64,
    pub write: TxWrite,
}

impl Market {
    /// The finish tag of a job of `client` costing `cost_ms` on `listing` (the module's rule),
    /// with the conditional write of the client's clock: a racing submission of the same client
    /// loses the condition and is refused as a conflict (its retry, same key, recomputes).
    pub(crate) async fn fair_share_tag(&self, gpu_id: &ListingId, client: &Address, cost_ms: u64) -> Result<Tagged, MarketError> {
        let listing = self.listing_item(gpu_id).await?;
        let vtime = listing.int(ATTR_QUEUE_VTIME).unwrap_or(0).max(0) as u64;
        let key = keys::queue_client(gpu_id.as_str(), client.as_str());
        let (previous, condition) = match self.store.get(&key).await? {
            Some(item) => {
                let finish = int(&item, ATTR_FINISH)?;
                (finish.max(0) as u64, Condition::equals(ATTR_FINISH, finish))
            }
            None => (0, Condition::Absent),
        };
        let tag = vtime.max(previous).saturating_add(cost_ms.max(1)).min(i64::MAX as u64);
        let write = TxWrite::Put { item: Item::new(key).with(ATTR_FINISH, tag as i64), condition };
        Ok(Tagged { tag, write })
    }

    /// The listing's first queued entry: its job and tier rank.
    pub(crate) async fn next_queued(&self, gpu_id: &ListingId) -> Result<Option<(JobId, u32)>, MarketError> {
        let page = self.store.query(keys::queue_entries(gpu_id.as_str()).limit(1)).await?;
        let Some(item) = page.items.first() else { return Ok(None) };
        let sk = &item.key.sk;
        let rank = sk.split('#').nth(1).and_then(|r| r.parse().ok());
        let job = keys::queue_entry_job(sk).and_then(|j| JobId::parse(j).ok());
        match (job, rank) {
            (Some(job), Some(rank)) => Ok(Some((job, rank))),
            _ => Err(MarketError::Internal(format!("queue entry {sk} does not parse"))),
        }
    }

    /// Whether the running `job` should hand itself back (graceful preemption): its listing
    /// preempts, is full, and a job of a higher tier waits.
    pub(crate) async fn should_preempt(&self, job: &JobRecord) -> Result<bool, MarketError> {
        let view = self.listing_view_cached(&job.gpu_id).await?;
        let config = view.listing.queue_config;
        if config.preemption != Preemption::Graceful || config.priority != QueuePriority::WeightedFairShare {
            return Ok(false);
        }
        // The running count now, not as cached: a claim a moment ago may have filled it.
        let view = self.listing_view(&self.listing_item(&job.gpu_id).await?)?;
        if view.active_jobs < i64::from(view.listing.max_concurrent_jobs) {
            return Ok(false);
        }
        Ok(self.next_queued(&job.gpu_id).await?.is_some_and(|(_, rank)| rank < tier_rank(job.tier)))
    }
}

/// What a claim of a queued job moves on its listing: one more running, one more place in the
/// queue, the reputation fact of a first start, and the virtual time.
pub(crate) fn claim_move(job: &JobRecord, fact: Option<crate::reputation::Fact>) -> ListingMove {
    ListingMove { active: 1, room: 1, fact, vtime: job.queue_tag, ..Default::default() }
}
