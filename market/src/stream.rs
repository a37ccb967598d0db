//! A running job's partial output: the worker appends the text a model produces in numbered
//! chunks while it runs, and a client's stream (the OpenAI-compatible API's server-sent events)
//! reads them in order. Chunks are bounded in size and number, expire after a while, and are
//! written only by the worker that holds the job's lease; the receipt and the job's final
//! output stay the record of what was produced and billed.

use crate::auth::Principal;
use crate::{Market, MarketError};
use aitbc_core::job::JobState;
use aitbc_core::values::{JobId, WorkerId};
use aitbc_store::{keys, spec::ATTR_EXPIRES_AT, Condition, Item, StoreError};

pub use aitbc_core::jobspec::{STREAM_CHUNKS_MAX as CHUNKS_MAX, STREAM_CHUNK_BYTES_MAX as CHUNK_BYTES_MAX};
/// Chunks live this long: a stream reads them within the job's time limit; they are not a record.
pub const CHUNK_TTL_S: i64 = 3_600;
/// Chunks one read returns, at most.
pub const CHUNKS_PAGE_MAX: usize = 256;

/// One piece of a running job's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub seq: u32,
    pub text: String,
}

impl Market {
    /// Appends chunk `seq` of `job_id`'s output, from the worker holding its lease. Sending the
    /// same chunk again (a retry) is accepted; another text under a number already written is a
    /// conflict.
    pub async fn append_chunk(&self, caller: &Principal, job_id: &JobId, worker: &WorkerId, seq: u32, text: &str) -> Result<(), MarketError> {
        if seq >= CHUNKS_MAX {
            return Err(MarketError::invalid("seq", format!("must be below {CHUNKS_MAX}")));
        }
        if text.is_empty() || text.len() > CHUNK_BYTES_MAX {
            return Err(MarketError::invalid("text", format!("must be 1..={CHUNK_BYTES_MAX} bytes")));
        }
        let (job, _) = self.job_with_version(job_id).await?;
        caller.require(crate::auth::Role::Provider)?;
        if caller.address != job.provider {
            return Err(MarketError::Forbidden(format!("job {job_id} runs on another provider's GPU")));
        }
        let holds = job.status.lease.as_ref().is_some_and(|l| &l.holder == worker && l.expires_at_ms > self.now_ms());
        if !holds || !matches!(job.status.state, JobState::Claimed | JobState::Running) {
            return Err(MarketError::Forbidden(format!("worker {worker} does not hold job {job_id}'s lease")));
        }
        let key = keys::job_chunk(job_id.as_str(), seq);
        let expires_at_s = self.now_ms() / 1_000 + CHUNK_TTL_S;
        let item = Item::new(key.clone()).with("text", text).with(ATTR_EXPIRES_AT, expires_at_s);
        match self.store.put(item, Condition::Absent).await {
            Ok(()) => {
                self.progress.notify_waiters();
                Ok(())
            }
            Err(StoreError::ConditionFailed { .. }) => match self.store.get(&key).await?.as_ref().and_then(|i| i.str("text").map(str::to_string)) {
                Some(stored) if stored == text => Ok(()),
                _ => Err(MarketError::Conflict(format!("chunk {seq} of job {job_id} was written with another text"))),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// The chunks of `job_id` after number `after` (all when None), in order, at most `limit`.
    /// The caller checked that it may read the job.
    pub async fn chunks_after(&self, job_id: &JobId, after: Option<u32>, limit: usize) -> Result<Vec<Chunk>, MarketError> {
        let first = after.map_or(0, |a| a.saturating_add(1));
        if first >= CHUNKS_MAX {
            return Ok(Vec::new());
        }
        let page = self.store.query(keys::job_chunks_from(job_id.as_str(), first).limit(limit.clamp(1, CHUNKS_PAGE_MAX))).await?;
        page.items
            .iter()
            .map(|item| {
                let seq = keys::job_chunk_seq(&item.key.sk).ok_or_else(|| MarketError::Internal(format!("chunk key {}", item.key.sk)))?;
                let text = item.str("text").ok_or_else(|| MarketError::Internal("chunk without text".into()))?;
                Ok(Chunk { seq, text: text.to_string() })
            })
            .collect()
    }
}
