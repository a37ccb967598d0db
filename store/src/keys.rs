//! The single-table key scheme: every entity's partition key, sort key and secondary index keys,
//! built in one place (`store/KEYS.md` has the same scheme as a table).
//!
//! Rules the functions enforce or rely on:
//! - Entity ids are plain strings here (the domain newtypes live in `aitbc-core`). They must be
//!   non-empty and free of `#`, the separator, so that a prefix query for one id never matches
//!   another (`JOB#ab` must not match a query for `JOB#a#`); a violation is a programming error
//!   and panics.
//! - Time in sort keys is unix milliseconds, zero-padded to `TIME_DIGITS` digits, so that string
//!   order is time order. The id follows the time, making each sort key unique.
//! - Index partitions that many writers touch at once (jobs by state, pending holds) are split over `INDEX_SHARDS` shards picked by a stable hash of the id, because
//!   one DynamoDB partition takes about 1,000 writes/s; readers query every shard.
//! - Items carry only the index attributes of the access patterns they are in; removing the
//!   attribute (for example `gsi2pk` of a hold once captured or resolved) removes the item from
//!   that sparse index.

use serde_json::{Map, Value};

use crate::spec::Index;
use crate::store::{Key, Query, SortCondition};

/// Shards of each hot index partition (jobs by state, pending holds).
pub const INDEX_SHARDS: u32 = 16;
/// Digits of a time in a sort key: unix milliseconds up to 10^16 (year 318857).
pub const TIME_DIGITS: usize = 16;
/// Sort key of an entity's main item when the entity owns its partition.
const MAIN: &str = "#";

/// An index key of one item: which index, and the values of its `gsiNpk` and `gsiNsk`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexKey {
    /// The index.
    pub index: Index,
    /// The index partition key value.
    pub pk: String,
    /// The index sort key value.
    pub sk: String,
}

impl IndexKey {
    /// Writes the index attributes into an item's attributes.
    pub fn apply(&self, attrs: &mut Map<String, Value>) {
        let spec = self.index.spec();
        attrs.insert(spec.pk_attr.to_string(), Value::from(self.pk.clone()));
        attrs.insert(spec.sk_attr.to_string(), Value::from(self.sk.clone()));
    }

    /// The attribute names of this index key (for removing the item from the index).
    pub fn attrs(&self) -> [&'static str; 2] {
        let spec = self.index.spec();
        [spec.pk_attr, spec.sk_attr]
    }
}

fn id(value: &str) -> &str {
    assert!(!value.is_empty(), "an id in a key is empty");
    assert!(!value.contains('#'), "an id in a key holds the separator '#': {value:?}");
    value
}

/// A time as it appears in sort keys: fixed-width unix milliseconds.
pub fn time(unix_ms: i64) -> String {
    assert!(unix_ms >= 0, "times in keys are after 1970");
    let text = format!("{unix_ms:0width$}", width = TIME_DIGITS);
    assert_eq!(text.len(), TIME_DIGITS);
    text
}

/// The shard of an id: FNV-1a (32 bit) modulo INDEX_SHARDS. Stable across builds and platforms
/// because stored keys depend on it (std's hasher is randomized per process).
pub fn shard(id_value: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in id_value.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % INDEX_SHARDS
}

fn main_key(entity: &str, value: &str) -> Key {
    Key::new(format!("{entity}#{}", id(value)), MAIN)
}

fn timed(unix_ms: i64, value: &str) -> String {
    format!("{}#{}", time(unix_ms), id(value))
}

/// The sort key above every `timed(t, id)` with `t <= unix_ms` and below every later one.
fn timed_end(unix_ms: i64) -> String {
    format!("{}#\u{10FFFF}", time(unix_ms))
}

/// Items of an index partition, oldest first.
fn index_query(index: Index, partition: String) -> Query {
    Query::index(index, partition)
}

/// Items of an index partition whose time is before `before_ms` (exclusive), oldest first.
fn index_query_before(index: Index, partition: String, before_ms: i64) -> Query {
    assert!(before_ms > 0);
    Query::index(index, partition).sort(SortCondition::AtMost(timed_end(before_ms - 1)))
}

// ---- providers ------------------------------------------------------------------------------

/// A provider's profile.
pub fn provider(provider_id: &str) -> Key {
    main_key("PROVIDER", provider_id)
}

/// Index key of a provider in the list of all providers (gsi1).
pub fn provider_list_index(provider_id: &str) -> IndexKey {
    IndexKey { index: Index::Gsi1, pk: "PROVIDERS".into(), sk: id(provider_id).into() }
}

/// All providers, by id.
pub fn providers() -> Query {
    index_query(Index::Gsi1, "PROVIDERS".into())
}

/// A provider's receipt-signing (Ed25519) public key, in the provider's partition.
pub fn provider_signing_key(provider_id: &str, key_id: &str) -> Key {
    Key::new(provider(provider_id).pk, format!("KEY#{}", id(key_id)))
}

/// The signing keys of a provider.
pub fn provider_signing_keys(provider_id: &str) -> Query {
    Query::table(provider(provider_id).pk).sort(SortCondition::Prefix("KEY#".into()))
}

/// Index key of a signing key by its key id alone (gsi1), for verifying a receipt's signature.
pub fn signing_key_index(key_id: &str) -> IndexKey {
    IndexKey { index: Index::Gsi1, pk: format!("SIGNKEY#{}", id(key_id)), sk: MAIN.into() }
}

/// The signing key with this key id (at most one item).
pub fn signing_key_by_id(key_id: &str) -> Query {
    index_query(Index::Gsi1, format!("SIGNKEY#{}", id(key_id)))
}

// ---- GPU listings ---------------------------------------------------------------------------

/// A GPU listing.
pub fn listing(listing_id: &str) -> Key {
    main_key("LISTING", listing_id)
}

/// Index key of a listing in its region (gsi1), for matching jobs to listings.
pub fn listing_region_index(region: &str, listing_id: &str) -> IndexKey {
    IndexKey { index: Index::Gsi1, pk: format!("REGION#{}", id(region)), sk: format!("LISTING#{}", id(listing_id)) }
}

/// The listings of a region.
pub fn listings_by_region(region: &str) -> Query {
    index_query(Index::Gsi1, format!("REGION#{}", id(region))).sort(SortCondition::Prefix("LISTING#".into()))
}

/// Index key of a listing under its provider (gsi2).
pub fn listing_provider_index(provider_id: &str, listing_id: &str) -> IndexKey {
    IndexKey {
        index: Index::Gsi2,
        pk: format!("PROVIDER#{}", id(provider_id)),
        sk: format!("LISTING#{}", id(listing_id)),
    }
}

/// The listings of a provider.
pub fn listings_by_provider(provider_id: &str) -> Query {
    index_query(Index::Gsi2, format!("PROVIDER#{}", id(provider_id))).sort(SortCondition::Prefix("LISTING#".into()))
}

/// Sort-key prefix of a listing's alerts (beside the listing's own item).
const ALERT_PREFIX: &str = "ALERT#";

/// An alert of a listing: a health report crossed `metric`'s threshold in the window starting
/// at `window_ms`. Written only if absent (one alert per metric and window) and expiring.
pub fn listing_alert(listing_id: &str, window_ms: i64, metric: &str) -> Key {
    Key::new(listing(listing_id).pk, format!("{ALERT_PREFIX}{}#{}", time(window_ms), id(metric)))
}

/// A listing's alerts, in time order (query descending for the newest first).
pub fn listing_alerts(listing_id: &str) -> Query {
    Query::table(listing(listing_id).pk).sort(SortCondition::Prefix(ALERT_PREFIX.into()))
}

/// A provider's latest market signal of `kind` (`OBS`: an observation, `PROP`: a pricing
/// proposal) in a region: one per provider, kind and region, replaced by the next, expiring.
pub fn market_signal(region: &str, kind: &str, provider_id: &str) -> Key {
    Key::new(format!("MARKETSIG#{}", id(region)), format!("{}#{}", id(kind), id(provider_id)))
}

/// The market signals of a region (query pk).
pub fn market_signals(region: &str) -> Query {
    Query::table(format!("MARKETSIG#{}", id(region)))
}

// ---- accounts, transfers, holds ---------------------------------------------------------------

/// An account with its balances (integer minor units).
pub fn account(account_id: &str) -> Key {
    main_key("ACCOUNT", account_id)
}

/// A posted ledger transfer.
pub fn transfer(transfer_id: &str) -> Key {
    main_key("TRANSFER", transfer_id)
}

/// Index key of a transfer in one account's history (gsi1); a transfer between two accounts is
/// in the history of one of them here (the debit side's copy is the caller's choice).
pub fn transfer_account_index(account_id: &str, at_ms: i64, transfer_id: &str) -> IndexKey {
    IndexKey {
        index: Index::Gsi1,
        pk: format!("ACCOUNT#{}#TRANSFERS", id(account_id)),
        sk: timed(at_ms, transfer_id),
    }
}

/// An account's transfers in time order (add `.descending()` for newest first).
pub fn transfers_by_account(account_id: &str) -> Query {
    index_query(Index::Gsi1, format!("ACCOUNT#{}#TRANSFERS", id(account_id)))
}

/// A hold (pending transfer) on a client's funds for one job.
pub fn hold(hold_id: &str) -> Key {
    main_key("HOLD", hold_id)
}

/// Index key of a hold under its account (gsi1).
pub fn hold_account_index(account_id: &str, created_ms: i64, hold_id: &str) -> IndexKey {
    IndexKey {
        index: Index::Gsi1,
        pk: format!("ACCOUNT#{}#HOLDS", id(account_id)),
        sk: timed(created_ms, hold_id),
    }
}

/// An account's holds in time order.
pub fn holds_by_account(account_id: &str) -> Query {
    index_query(Index::Gsi1, format!("ACCOUNT#{}#HOLDS", id(account_id)))
}

/// Index key of a pending hold by expiry (gsi2, sharded); remove it when the hold resolves.
pub fn hold_pending_index(hold_id: &str, expires_ms: i64) -> IndexKey {
    IndexKey {
        index: Index::Gsi2,
        pk: format!("HOLDS#PENDING#{}", shard(id(hold_id))),
        sk: timed(expires_ms, hold_id),
    }
}

/// Pending holds of one shard that expire before `before_ms`, soonest first (the sweeper).
pub fn pending_holds_expiring(shard_index: u32, before_ms: i64) -> Query {
    assert!(shard_index < INDEX_SHARDS);
    index_query_before(Index::Gsi2, format!("HOLDS#PENDING#{shard_index}"), before_ms)
}

// ---- quotes -----------------------------------------------------------------------------------

/// A price quote (expires: carries `expires_at`).
pub fn quote(quote_id: &str) -> Key {
    main_key("QUOTE", quote_id)
}

// ---- listing queues (priority order) --------------------------------------------------------

/// A queued job's entry in its listing's priority order: tier rank, then fair-share finish tag,
/// then submission time, then job, so that the first entry is the job to claim next.
pub fn queue_entry(listing_id: &str, tier_rank: u32, finish_tag: u64, created_ms: i64, job_id: &str) -> Key {
    Key::new(format!("QUEUE#{}", id(listing_id)), format!("E#{tier_rank}#{finish_tag:020}#{}#{}", time(created_ms), id(job_id)))
}

/// A listing's queued jobs in priority order (the first is claimed next).
pub fn queue_entries(listing_id: &str) -> Query {
    Query::table(format!("QUEUE#{}", id(listing_id))).sort(SortCondition::Prefix("E#".into()))
}

/// The job id of a queue entry from its sort key.
pub fn queue_entry_job(sort_key: &str) -> Option<&str> {
    sort_key.rsplit('#').next().filter(|j| !j.is_empty())
}

/// A client's fair-share clock on a listing: the finish tag of its last queued job.
pub fn queue_client(listing_id: &str, client_id: &str) -> Key {
    Key::new(format!("QUEUE#{}", id(listing_id)), format!("C#{}", id(client_id)))
}

// ---- fixed-rate contracts ----------------------------------------------------------------------

/// The fixed-rate contract between a provider and one client (at most one per pair).
pub fn contract(provider_id: &str, client_id: &str) -> Key {
    Key::new(format!("CONTRACT#{}", id(provider_id)), format!("CLIENT#{}", id(client_id)))
}

/// A provider's contracts, one per client.
pub fn contracts_by_provider(provider_id: &str) -> Query {
    Query::table(format!("CONTRACT#{}", id(provider_id))).sort(SortCondition::Prefix("CLIENT#".into()))
}

/// Index key of a contract under its client (gsi1).
pub fn contract_client_index(client_id: &str, provider_id: &str) -> IndexKey {
    IndexKey { index: Index::Gsi1, pk: format!("CLIENT#{}#CONTRACTS", id(client_id)), sk: format!("PROVIDER#{}", id(provider_id)) }
}

/// A client's contracts, one per provider.
pub fn contracts_by_client(client_id: &str) -> Query {
    index_query(Index::Gsi1, format!("CLIENT#{}#CONTRACTS", id(client_id)))
}

// ---- capacity reservations ---------------------------------------------------------------------

/// A capacity reservation (offered, then active until its end).
pub fn reservation(reservation_id: &str) -> Key {
    main_key("RESERVATION", reservation_id)
}

/// Index key of a reservation under its client (gsi1), newest last.
pub fn reservation_client_index(client_id: &str, created_ms: i64, reservation_id: &str) -> IndexKey {
    IndexKey { index: Index::Gsi1, pk: format!("CLIENT#{}#RESERVATIONS", id(client_id)), sk: timed(created_ms, reservation_id) }
}

/// A client's reservations in time order.
pub fn reservations_by_client(client_id: &str) -> Query {
    index_query(Index::Gsi1, format!("CLIENT#{}#RESERVATIONS", id(client_id)))
}

/// Index key of a reservation under its provider (gsi2, beside the provider's listings).
pub fn reservation_provider_index(provider_id: &str, created_ms: i64, reservation_id: &str) -> IndexKey {
    IndexKey { index: Index::Gsi2, pk: format!("PROVIDER#{}", id(provider_id)), sk: format!("RESERVATION#{}", timed(created_ms, reservation_id)) }
}

/// A provider's reservations in time order.
pub fn reservations_by_provider(provider_id: &str) -> Query {
    index_query(Index::Gsi2, format!("PROVIDER#{}", id(provider_id))).sort(SortCondition::Prefix("RESERVATION#".into()))
}

// ---- agent names -------------------------------------------------------------------------------

/// The guard of an agent name: which account took it (written once, only if absent).
pub fn agent_name(name: &str) -> Key {
    main_key("AGENTNAME", name)
}

// ---- jobs -------------------------------------------------------------------------------------

/// A job.
pub fn job(job_id: &str) -> Key {
    main_key("JOB", job_id)
}

/// A job's rating by its client (beside the job's own item): written only if absent, so a job
/// is rated once.
pub fn job_rating(job_id: &str) -> Key {
    Key::new(format!("JOB#{}", id(job_id)), "RATING")
}

/// Sort keys of a job's output chunks: `CHUNK#` and the chunk's number in fixed width, so they
/// sort in order.
const CHUNK_PREFIX: &str = "CHUNK#";
const CHUNK_SEQ_DIGITS: usize = 6;

/// Chunk `seq` of a running job's output (beside the job's own item, expiring).
pub fn job_chunk(job_id: &str, seq: u32) -> Key {
    assert!(seq < 10u32.pow(CHUNK_SEQ_DIGITS as u32), "a chunk number fits its width");
    Key::new(format!("JOB#{}", id(job_id)), format!("{CHUNK_PREFIX}{seq:0width$}", width = CHUNK_SEQ_DIGITS))
}

/// The chunks of a job from number `first` on, in order.
pub fn job_chunks_from(job_id: &str, first: u32) -> Query {
    let low = format!("{CHUNK_PREFIX}{first:0width$}", width = CHUNK_SEQ_DIGITS);
    let high = format!("{CHUNK_PREFIX}{}", "9".repeat(CHUNK_SEQ_DIGITS));
    Query::table(format!("JOB#{}", id(job_id))).sort(SortCondition::Between(low, high))
}

/// The number of a chunk from its sort key.
pub fn job_chunk_seq(sort_key: &str) -> Option<u32> {
    sort_key.strip_prefix(CHUNK_PREFIX)?.parse().ok()
}

/// Index key of a job under its client (gsi1).
pub fn job_client_index(client_id: &str, created_ms: i64, job_id: &str) -> IndexKey {
    IndexKey { index: Index::Gsi1, pk: format!("CLIENT#{}#JOBS", id(client_id)), sk: timed(created_ms, job_id) }
}

/// A client's jobs in time order.
pub fn jobs_by_client(client_id: &str) -> Query {
    index_query(Index::Gsi1, format!("CLIENT#{}#JOBS", id(client_id)))
}

/// Index key of a job by state and age (gsi2, sharded): rewrite it on every state change, with
/// the time of that change. The sweeper reads the queued and leased states.
pub fn job_state_index(state: &str, changed_ms: i64, job_id: &str) -> IndexKey {
    IndexKey {
        index: Index::Gsi2,
        pk: format!("JOBSTATE#{}#{}", id(state), shard(id(job_id))),
        sk: timed(changed_ms, job_id),
    }
}

/// Jobs of one shard in a state since before `before_ms`, oldest first (stuck or expired jobs).
pub fn jobs_by_state(state: &str, shard_index: u32, before_ms: i64) -> Query {
    assert!(shard_index < INDEX_SHARDS);
    index_query_before(Index::Gsi2, format!("JOBSTATE#{}#{shard_index}", id(state)), before_ms)
}

/// Index key of a job under the listing it was routed to (gsi3).
pub fn job_listing_index(listing_id: &str, created_ms: i64, job_id: &str) -> IndexKey {
    IndexKey { index: Index::Gsi3, pk: format!("LISTING#{}#JOBS", id(listing_id)), sk: timed(created_ms, job_id) }
}

/// A listing's jobs in time order.
pub fn jobs_by_listing(listing_id: &str) -> Query {
    index_query(Index::Gsi3, format!("LISTING#{}#JOBS", id(listing_id)))
}

// ---- receipts ---------------------------------------------------------------------------------

/// A usage receipt.
pub fn receipt(receipt_id: &str) -> Key {
    main_key("RECEIPT", receipt_id)
}

/// Index key of a receipt under its client (gsi1), by completion time.
pub fn receipt_client_index(client_id: &str, completed_ms: i64, receipt_id: &str) -> IndexKey {
    IndexKey {
        index: Index::Gsi1,
        pk: format!("CLIENT#{}#RECEIPTS", id(client_id)),
        sk: timed(completed_ms, receipt_id),
    }
}

/// A client's receipts in time order.
pub fn receipts_by_client(client_id: &str) -> Query {
    index_query(Index::Gsi1, format!("CLIENT#{}#RECEIPTS", id(client_id)))
}

/// Index key of a receipt under its provider (gsi2), by completion time.
pub fn receipt_provider_index(provider_id: &str, completed_ms: i64, receipt_id: &str) -> IndexKey {
    IndexKey {
        index: Index::Gsi2,
        pk: format!("PROVIDER#{}#RECEIPTS", id(provider_id)),
        sk: timed(completed_ms, receipt_id),
    }
}

/// A provider's receipts in time order.
pub fn receipts_by_provider(provider_id: &str) -> Query {
    index_query(Index::Gsi2, format!("PROVIDER#{}#RECEIPTS", id(provider_id)))
}

// ---- settlement and payouts -------------------------------------------------------------------

/// A settlement batch with its checkpoint.
pub fn settlement_batch(batch_id: &str) -> Key {
    main_key("SETTLEMENT", batch_id)
}

/// One account's aggregated line of a settlement batch.
pub fn settlement_line(batch_id: &str, account_id: &str) -> Key {
    Key::new(settlement_batch(batch_id).pk, format!("LINE#{}", id(account_id)))
}

/// Page `page` of a settlement batch's plan (a plan may exceed one item's size).
pub fn settlement_plan_page(batch_id: &str, page: u32) -> Key {
    Key::new(settlement_batch(batch_id).pk, format!("PLAN#{page:03}"))
}

/// The lines of a settlement batch.
pub fn settlement_lines(batch_id: &str) -> Query {
    Query::table(settlement_batch(batch_id).pk).sort(SortCondition::Prefix("LINE#".into()))
}

/// Index key of a settlement batch in the list of batches (gsi1): the last settlement-record
/// sort key its range covers, then its id. Batches cover consecutive ranges, so this order is
/// also their order of creation, and the first entry at or above a record's sort key is the
/// batch that covers that record, if any does.
pub fn settlement_batch_index(through_sk: &str, batch_id: &str) -> IndexKey {
    assert!(!through_sk.is_empty());
    IndexKey { index: Index::Gsi1, pk: "SETTLEMENTS".into(), sk: format!("{through_sk}#{}", id(batch_id)) }
}

/// Settlement batches in the order of the ranges they cover.
pub fn settlement_batches() -> Query {
    index_query(Index::Gsi1, "SETTLEMENTS".into())
}

/// Settlement batches whose range ends at or after the settlement record with sort key
/// `due_sk`, in order: the first one covers that record if any does.
pub fn settlement_batches_covering(due_sk: &str) -> Query {
    settlement_batches().sort(SortCondition::AtLeast(due_sk.to_string()))
}

/// The reconciler's checkpoint: the sequence number of the last settlement batch whose range
/// it has re-read and caught up (`SETTLEMENT#reconcile`; batch ids start `batch-`, so no batch
/// shares it).
pub fn settlement_reconcile_cursor() -> Key {
    settlement_batch("reconcile")
}

/// The marker of a job whose settlement record a batch's range covers but the batch did not
/// read (a late completion): it names the catch-up batch that settles it. Written only by a
/// catch-up batch, only if absent; a job has one at most.
pub fn settlement_late(job_id: &str) -> Key {
    main_key("SETTLELATE", job_id)
}

/// A completed job's settlement record (written once, with the receipt): in a table partition
/// per shard, in completion time order, so that settlement reads receipts as dense, ordered
/// runs of small items rather than one job item each.
pub fn settlement_due(shard_index: u32, completed_ms: i64, job_id: &str) -> Key {
    Key::new(settlement_due_partition(shard_index), timed(completed_ms, job_id))
}

fn settlement_due_partition(shard_index: u32) -> String {
    assert!(shard_index < INDEX_SHARDS);
    format!("DUE#{shard_index}")
}

/// The sort key below every settlement record: where the first batch's range starts.
pub fn settlement_due_start() -> String {
    time(0)
}

/// The sort key above every settlement record completed at or before `ms` and below every
/// later one: where a range that takes all of them ends.
pub fn settlement_due_end(ms: i64) -> String {
    timed_end(ms)
}

/// The settlement records of one shard with sort keys in `[after_sk, through_sk]`, in order.
/// Ranges of batches exclude their start (`after_sk` is the previous batch's last key): the
/// reader drops a record equal to it.
pub fn settlement_due_range(shard_index: u32, after_sk: &str, through_sk: &str) -> Query {
    assert!(!after_sk.is_empty() && after_sk < through_sk, "an empty range: ({after_sk}, {through_sk}]");
    Query::table(settlement_due_partition(shard_index)).sort(SortCondition::Between(after_sk.to_string(), through_sk.to_string()))
}

/// A payout to a provider.
pub fn payout(payout_id: &str) -> Key {
    main_key("PAYOUT", payout_id)
}

/// Index key of a payout under its provider (gsi1).
pub fn payout_provider_index(provider_id: &str, created_ms: i64, payout_id: &str) -> IndexKey {
    IndexKey {
        index: Index::Gsi1,
        pk: format!("PROVIDER#{}#PAYOUTS", id(provider_id)),
        sk: timed(created_ms, payout_id),
    }
}

/// A provider's payouts in time order.
pub fn payouts_by_provider(provider_id: &str) -> Query {
    index_query(Index::Gsi1, format!("PROVIDER#{}#PAYOUTS", id(provider_id)))
}

/// A payout run (the nightly batch) with its checkpoint.
pub fn payout_batch(batch_id: &str) -> Key {
    main_key("PAYOUTRUN", batch_id)
}

// ---- idempotency and API keys -----------------------------------------------------------------

/// An idempotency record (expires: carries `expires_at`). `scope` names whose key it is (the
/// caller's account or the scheduler) so that two callers' keys never collide.
pub fn idempotency(scope: &str, idempotency_key: &str) -> Key {
    Key::new(format!("IDEM#{}#{}", id(scope), id(idempotency_key)), MAIN)
}

/// An API key, addressed by the hash of its secret (the secret itself is never stored).
pub fn api_key(secret_hash: &str) -> Key {
    main_key("APIKEY", secret_hash)
}

/// Index key of an API key under its owner (gsi1).
pub fn api_key_owner_index(owner_id: &str, created_ms: i64, key_id: &str) -> IndexKey {
    IndexKey { index: Index::Gsi1, pk: format!("OWNER#{}#APIKEYS", id(owner_id)), sk: timed(created_ms, key_id) }
}

/// An owner's API keys in time order.
pub fn api_keys_by_owner(owner_id: &str) -> Query {
    index_query(Index::Gsi1, format!("OWNER#{}#APIKEYS", id(owner_id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_sort_as_strings() {
        assert!(time(999) < time(1000));
        assert_eq!(time(0).len(), TIME_DIGITS);
    }

    #[test]
    fn shard_is_stable() {
        // Stored keys depend on these values: changing the hash needs a migration.
        assert_eq!(shard(""), 0x811c_9dc5 % INDEX_SHARDS);
        assert_eq!(shard("a"), 0xe40c_292c % INDEX_SHARDS);
        assert!((0..100).map(|i| shard(&i.to_string())).all(|s| s < INDEX_SHARDS));
    }

    #[test]
    fn before_bound_excludes_the_bound() {
        let query = jobs_by_state("completed", 0, 1000);
        let SortCondition::AtMost(high) = &query.sort else { panic!("AtMost") };
        assert!(timed(999, "zzz").as_str() <= high.as_str());
        assert!(timed(1000, "a").as_str() > high.as_str());
    }

    #[test]
    fn due_ranges_and_batch_entries_order_with_records() {
        let record = |t: i64, id: &str| settlement_due(3, t, id).sk;
        assert!(settlement_due_start() < record(0, "a"));
        assert!(record(1000, "zzz") < settlement_due_end(1000) && settlement_due_end(1000) < record(1001, "a"));
        let query = settlement_due_range(3, &record(999, "m"), &settlement_due_end(2000));
        let SortCondition::Between(low, high) = &query.sort else { panic!("Between") };
        assert!(low.as_str() <= record(999, "m").as_str() && record(999, "n").as_str() <= high.as_str());
        assert!(record(2001, "a").as_str() > high.as_str());
        assert_eq!(query.partition, settlement_due(3, 1000, "a").pk);
        // The first batch entry at or above a record is the batch whose range ends at or after it.
        let through = record(1000, "job-b");
        let entry = settlement_batch_index(&through, "batch-1").sk;
        assert!(record(1000, "job-a") <= entry && through <= entry && record(1000, "job-c") > entry);
        assert!(settlement_batch_index(&settlement_due_end(1000), "batch-1").sk > record(1000, "job-z"));
    }

    #[test]
    #[should_panic(expected = "separator")]
    fn ids_may_not_hold_the_separator() {
        let _ = job("a#b");
    }

    #[test]
    fn entities_do_not_collide() {
        let keys = [
            provider("x"),
            provider_signing_key("x", "x"),
            listing("x"),
            account("x"),
            transfer("x"),
            hold("x"),
            quote("x"),
            job("x"),
            receipt("x"),
            settlement_batch("x"),
            settlement_line("x", "x"),
            settlement_due(0, 0, "x"),
            payout("x"),
            payout_batch("x"),
            idempotency("x", "x"),
            api_key("x"),
        ];
        let distinct: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len());
    }
}
