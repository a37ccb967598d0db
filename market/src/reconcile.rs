//! Reconciliation: settlement records that a batch's range covers but the batch never read.
//!
//! # The hole it closes
//!
//! A batch settles the records in its key range `(after_sk, through_sk]` that it read; the
//! range ends at most at `now - grace` so that a completion in flight commits before the range
//! is read. A completion that commits later than that (a stalled process, clock skew, a slow
//! disk) leaves a record inside the range of a batch that did not read it: its hold is captured
//! (not voidable) but never posted, and the client's `held` balance keeps it. Money is not
//! gone (the record and the hold say exactly what is owed) but nothing would ever post it.
//!
//! # How late records are found, cheaply
//!
//! Every batch stores, beside its count of records (`receipts`), a [`Sketch`] of the sort keys
//! it read: an invertible Bloom lookup table of [`SKETCH_CELLS`] cells (about 3.7 KiB of
//! base64 in the batch's record, whatever its size; no write per receipt). Sketches subtract:
//! the sketch of a set minus the sketch of a subset is the sketch of the difference, and a
//! sketch of a small set lists its members. So, once a finished batch is
//! [`RECONCILE_DELAY_MS`] old, the reconciler reads its range again and counts it. The
//! same count as the batch and its catch-ups: nothing is late (records are never deleted, so
//! the range can only have grown). A larger count: the sketch of the range read again, minus
//! the batch's, minus the keys of its earlier catch-ups, lists the late records' keys
//! (decoding is certain to be right when it succeeds: every peeled key carries a 64-bit check;
//! it succeeds with near certainty up to about [`SKETCH_DECODE_RELIABLE`] late records per
//! batch). A second read of the range picks those records.
//!
//! # Catch-up batches
//!
//! The late records of batch `n` are settled by catch-up batches `batch-settle-<n>-late-<k>`
//! (`k = 1, 2, ...`), of at most [`RECONCILE_CATCHUP_RECORDS_MAX`] records each, with the very
//! steps of an ordinary batch (settlement's module docs): **create** (the record, listing its
//! records' keys; its plan; and one late marker per record, `SETTLELATE#<job>`, each only if
//! absent, in one transaction), **accounts** (lines only if absent, one balance update per
//! account), **finish** (open -> done). Then the reconciler's **cursor** moves past batch `n`
//! (conditional on its old value). Catch-ups are not in the index of batches, so the tiling of
//! ranges, the search for the newest batch and the batch covering a record are unchanged.
//!
//! Why this cannot settle a record twice or lose one: a record is settled by the batch that
//! read it, or by the one catch-up that lists it: the reconciler subtracts the batch's sketch
//! (what it read) and every existing catch-up's keys before it creates another; a catch-up's
//! markers are written only if absent, in the transaction that creates it; and the counts must
//! agree (`read again = batch + catch-ups + late`) or it stops with an error. Killed at any
//! step, the next run resumes an open catch-up from its record, finds nothing new to catch up,
//! and moves the cursor; run twice, the second finds the counts equal and writes nothing but
//! nothing. A late record is never lost from sight: its hold stays in the client's `held`
//! balance until a catch-up posts it.
//!
//! The job view (`Market::job_settlement`) reads the late marker first: a late job shows
//! `settled`, with its catch-up's details, once the catch-up is done, and not before.
//!
//! # Bounds
//!
//! A run examines at most [`RECONCILE_BATCHES_MAX`] batches and [`RECONCILE_RECORDS_MAX`]
//! records (and always at least one batch), from its cursor on: normal operation reads each
//! record once more, in the order batches finished, and writes nothing. A batch is looked at
//! once, [`RECONCILE_DELAY_MS`] after it finished: a completion that commits later still than
//! that is not found (see ARCHITECTURE.md, "Reconciliation", for why that bound holds).

use crate::settlement::{settlement_batch_id, BatchRecord, BatchState, SettleError, SettlementDue, ShardReader, Steps, Tally, ATTR_BATCH_ID, SETTLE_IN_FLIGHT_MAX};
use crate::{Market, MarketError};
use aitbc_store::keys::INDEX_SHARDS;
use aitbc_store::{keys, Condition, Item, StoreError, TxWrite, TRANSACTION_WRITES_MAX};
use base64::Engine;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};

/// Cells of a batch's sketch: three hash functions over three tables of 32 cells.
pub const SKETCH_CELLS: usize = 96;
/// Late records of one batch that a sketch decodes with near certainty (an invertible Bloom
/// lookup table with three hashes decodes up to about 0.8 records per cell; half of that).
pub const SKETCH_DECODE_RELIABLE: usize = SKETCH_CELLS / 2;
/// A batch is reconciled once it finished at least this long ago: an API request lives at
/// most its Lambda's 15 minutes and DynamoDB refuses a request signed more than 5 minutes
/// before it arrives, so a completion stamped in a range commits within 20 minutes of the
/// batch reading it, or never; an hour leaves room for clock skew within those 5 minutes.
pub const RECONCILE_DELAY_MS: i64 = 60 * 60_000;
/// The longest delay an operator may ask for (a week).
pub const RECONCILE_DELAY_MS_MAX: i64 = 7 * 24 * 3_600_000;
/// Batches one run reconciles, at most; the rest waits for the next run.
pub const RECONCILE_BATCHES_MAX: u32 = 64;
/// Records one run reads again, at most (ten full batches: a few seconds).
pub const RECONCILE_RECORDS_MAX: u64 = 1_000_000;
/// Records of one catch-up batch, at most: its record, one plan page and one marker per record
/// are one transaction.
pub const RECONCILE_CATCHUP_RECORDS_MAX: usize = 64;
/// Catch-up batches of one batch, at most (more late records than the sketch decodes anyway).
pub const RECONCILE_CATCHUPS_PER_BATCH_MAX: u32 = 64;

const SKETCH_HASHES: usize = 3;
const SKETCH_TABLE_CELLS: usize = SKETCH_CELLS / SKETCH_HASHES;
/// A cell as stored: count (i32), key (u128), check (u64), little-endian.
const SKETCH_CELL_BYTES: usize = 4 + 16 + 8;
const ATTR_SEQ: &str = "seq";

const _: () = assert!(SKETCH_TABLE_CELLS * SKETCH_HASHES == SKETCH_CELLS);
const _: () = assert!(1 + 1 + RECONCILE_CATCHUP_RECORDS_MAX <= TRANSACTION_WRITES_MAX, "record, one plan page, markers");
// A catch-up's plan (at most three accounts per record) fits one page (see settlement's bound).
const _: () = assert!(RECONCILE_CATCHUP_RECORDS_MAX * 3 * (72 + 58) + 64 <= crate::settlement::SETTLE_PLAN_PAGE_BYTES_MAX);
const _: () = assert!(RECONCILE_CATCHUP_RECORDS_MAX * 3 <= crate::settlement::SETTLE_BATCH_ACCOUNTS_MAX);

/// An invertible Bloom lookup table of settlement-record sort keys (Goodrich and
/// Mitzenmacher): each key is a 128-bit hash, added to one cell of each of three tables (the
/// count, the XOR of the keys and the XOR of their checks). Sketches subtract cell by cell; a
/// cell holding exactly one key (count +-1, check matching) gives it up, and peeling such cells
/// lists a small difference in full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sketch {
    cells: Vec<Cell>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Cell {
    count: i32,
    key: u128,
    check: u64,
}

impl Default for Sketch {
    fn default() -> Self {
        Self { cells: vec![Cell::default(); SKETCH_CELLS] }
    }
}

/// A record's key in a sketch: 128 bits of the SHA-256 of its sort key.
pub fn sketch_key(sk: &str) -> u128 {
    let digest = Sha256::digest(sk.as_bytes());
    u128::from_le_bytes(digest[..16].try_into().expect("16 bytes"))
}

/// SplitMix64's finalizer: a bijective mix of 64 bits.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn check_of(key: u128) -> u64 {
    mix((key as u64) ^ mix((key >> 64) as u64 ^ 0x9e37_79b9_7f4a_7c15))
}

/// The key's cell in each of the three tables.
fn cells_of(key: u128) -> [usize; SKETCH_HASHES] {
    let (lo, hi) = (key as u64, (key >> 64) as u64);
    std::array::from_fn(|i| {
        let h = mix(lo.wrapping_add((i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)) ^ hi);
        i * SKETCH_TABLE_CELLS + (h % SKETCH_TABLE_CELLS as u64) as usize
    })
}

impl Sketch {
    pub fn insert(&mut self, sk: &str) {
        self.toggle(sketch_key(sk), 1);
    }

    pub fn remove(&mut self, sk: &str) {
        self.toggle(sketch_key(sk), -1);
    }

    fn toggle(&mut self, key: u128, sign: i32) {
        let check = check_of(key);
        for i in cells_of(key) {
            let cell = &mut self.cells[i];
            cell.count = cell.count.wrapping_add(sign);
            cell.key ^= key;
            cell.check ^= check;
        }
    }

    /// This sketch minus `other`: the sketch of the keys in one and not in the other.
    pub fn subtract(&mut self, other: &Sketch) {
        for (cell, o) in self.cells.iter_mut().zip(&other.cells) {
            cell.count = cell.count.wrapping_sub(o.count);
            cell.key ^= o.key;
            cell.check ^= o.check;
        }
    }

    /// Lists a difference: the keys counted positive and those counted negative. None when it
    /// cannot be peeled to empty (too many keys for the cells).
    pub fn decode(mut self) -> Option<(Vec<u128>, Vec<u128>)> {
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        // Each round peels at least one key, and a sketch that decodes holds at most one key
        // per cell.
        for _ in 0..=SKETCH_CELLS {
            let pure = self.cells.iter().find(|c| (c.count == 1 || c.count == -1) && c.check == check_of(c.key)).copied();
            let Some(cell) = pure else { break };
            if cell.count == 1 {
                added.push(cell.key);
            } else {
                removed.push(cell.key);
            }
            self.toggle(cell.key, -cell.count);
        }
        self.cells.iter().all(|c| *c == Cell::default()).then_some((added, removed))
    }

    /// The sketch as stored: its cells in base64.
    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(SKETCH_CELLS * SKETCH_CELL_BYTES);
        for c in &self.cells {
            bytes.extend_from_slice(&c.count.to_le_bytes());
            bytes.extend_from_slice(&c.key.to_le_bytes());
            bytes.extend_from_slice(&c.check.to_le_bytes());
        }
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
    }

    /// A stored sketch; an error when it is not one.
    pub fn parse(text: &str) -> Result<Sketch, String> {
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD.decode(text).map_err(|e| format!("sketch: {e}"))?;
        if bytes.len() != SKETCH_CELLS * SKETCH_CELL_BYTES {
            return Err(format!("sketch of {} bytes, not {}", bytes.len(), SKETCH_CELLS * SKETCH_CELL_BYTES));
        }
        let cells = bytes
            .chunks_exact(SKETCH_CELL_BYTES)
            .map(|b| Cell {
                count: i32::from_le_bytes(b[..4].try_into().expect("4 bytes")),
                key: u128::from_le_bytes(b[4..20].try_into().expect("16 bytes")),
                check: u64::from_le_bytes(b[20..].try_into().expect("8 bytes")),
            })
            .collect();
        Ok(Sketch { cells })
    }
}

/// How to reconcile.
#[derive(Debug, Clone)]
pub struct ReconcileOptions {
    /// Batches finished less than this long ago wait: 0..=RECONCILE_DELAY_MS_MAX.
    pub delay_ms: i64,
    /// Stop at a step, as a crash would (tests).
    pub failpoint: Option<crate::settlement::Failpoint>,
    /// Store requests in flight at once: 1..=SETTLE_IN_FLIGHT_MAX.
    pub in_flight_max: usize,
}

impl Default for ReconcileOptions {
    fn default() -> Self {
        Self { delay_ms: RECONCILE_DELAY_MS, failpoint: None, in_flight_max: SETTLE_IN_FLIGHT_MAX }
    }
}

/// What one reconciliation run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    /// Batches whose ranges were read again (and the cursor moved past).
    pub batches: u32,
    /// Records read again.
    pub records: u64,
    /// Late records found and settled by catch-up batches.
    pub late: u64,
    /// Catch-up batches finished (resumed ones included).
    pub catchups: u32,
    /// Of those, catch-ups an earlier run had left open.
    pub resumed: u32,
    /// Batches whose late records could not be listed (too many for the sketch): the run
    /// stops there, an error is logged, and the money stays held until an operator acts.
    pub undecodable: u32,
    /// Batches written before batches had sketches: passed over, unverified.
    pub unverifiable: u32,
    /// Store transactions started (the failpoint numbering).
    pub steps: u32,
}

/// The id of catch-up batch `k` of batch number `seq`.
pub fn catchup_batch_id(seq: u64, k: u32) -> String {
    assert!(k >= 1);
    format!("{}-late-{k:03}", settlement_batch_id(seq))
}

impl Market {
    /// Reconciles the finished settlement batches after the cursor that finished at least
    /// `options.delay_ms` ago, in order, within the run's bounds (see the module docs).
    pub async fn reconcile(&self, options: &ReconcileOptions) -> Result<ReconcileReport, SettleError> {
        assert!((0..=RECONCILE_DELAY_MS_MAX).contains(&options.delay_ms));
        let mut steps = Steps::new(options.failpoint, options.in_flight_max);
        let mut report = ReconcileReport::default();
        let before_ms = self.now_ms() - options.delay_ms;
        let result = async {
            let mut cursor = self.reconcile_cursor().await?;
            for _ in 0..RECONCILE_BATCHES_MAX {
                let Some(batch) = self.settlement_batch(&settlement_batch_id(cursor + 1)).await? else { break };
                if batch.state != BatchState::Done || batch.finished_at_ms.unwrap_or(i64::MAX) > before_ms {
                    break;
                }
                if report.records > 0 && report.records + u64::from(batch.receipts) > RECONCILE_RECORDS_MAX {
                    break;
                }
                if !self.reconcile_batch(&batch, &mut steps, &mut report).await? {
                    break; // undecodable: the cursor stays, and so does the alarm
                }
                if !self.advance_reconcile_cursor(cursor, batch.seq, &mut steps).await? {
                    break; // another run moved it: it goes on from there
                }
                cursor = batch.seq;
                report.batches += 1;
            }
            Ok::<(), SettleError>(())
        }
        .await;
        report.steps = steps.taken();
        if report.late > 0 || report.undecodable > 0 {
            tracing::warn!(?report, "reconciliation found late settlement records");
        }
        result.map(|()| report)
    }

    /// The sequence number of the last batch reconciled (0: none yet).
    pub async fn reconcile_cursor(&self) -> Result<u64, MarketError> {
        let Some(item) = self.store.get(&keys::settlement_reconcile_cursor()).await? else { return Ok(0) };
        let seq = item.int(ATTR_SEQ).ok_or_else(|| MarketError::Internal("reconcile cursor without seq".into()))?;
        u64::try_from(seq).map_err(|_| MarketError::Internal(format!("reconcile cursor at {seq}")))
    }

    /// Moves the cursor from `from` to `to`; false when another run moved it first.
    async fn advance_reconcile_cursor(&self, from: u64, to: u64, steps: &mut Steps) -> Result<bool, SettleError> {
        assert!(to > from);
        let condition = if from == 0 { Condition::Absent } else { Condition::equals(ATTR_SEQ, from as i64) };
        let item = Item::new(keys::settlement_reconcile_cursor()).with(ATTR_SEQ, to as i64);
        match self.transact_steps(vec![vec![TxWrite::Put { item, condition }]], steps).await?.remove(0) {
            Ok(()) => Ok(true),
            Err(StoreError::ConditionFailed { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Settles the late records of `batch` by catch-up batches; false when they cannot be
    /// listed (the sketch does not decode).
    async fn reconcile_batch(&self, batch: &BatchRecord, steps: &mut Steps, report: &mut ReconcileReport) -> Result<bool, SettleError> {
        let Some(text) = batch.sketch.as_deref() else {
            tracing::warn!(batch = %batch.batch_id, "a settlement batch without a sketch cannot be reconciled");
            report.unverifiable += 1;
            return Ok(true);
        };
        let mut expected = Sketch::parse(text).map_err(|e| SettleError::Invariant(format!("batch {}: {e}", batch.batch_id)))?;
        // Earlier catch-ups: resume an open one; their records are no longer late.
        let mut known = u64::from(batch.receipts);
        let mut catchups: u32 = 0;
        for k in 1..=RECONCILE_CATCHUPS_PER_BATCH_MAX {
            let Some(catchup) = self.settlement_batch(&catchup_batch_id(batch.seq, k)).await? else { break };
            if catchup.state == BatchState::Open {
                self.resume_batch(&catchup, steps).await?;
                report.resumed += 1;
                report.catchups += 1;
            }
            for sk in &catchup.late {
                expected.insert(sk);
            }
            known += u64::from(catchup.receipts);
            catchups = k;
        }
        let (count, mut found) = self.sketch_range(batch).await?;
        report.records += count;
        if count == known {
            return Ok(true);
        }
        if count < known {
            return Err(SettleError::Invariant(format!("batch {}: {count} records in its range, {known} settled", batch.batch_id)));
        }
        found.subtract(&expected);
        let Some((late, vanished)) = found.decode() else {
            tracing::error!(batch = %batch.batch_id, late = count - known, "late settlement records too many to list; their holds stay captured");
            report.undecodable += 1;
            return Ok(false);
        };
        if !vanished.is_empty() || late.len() as u64 != count - known {
            return Err(SettleError::Invariant(format!("batch {}: {} late records listed, {} counted, {} vanished", batch.batch_id, late.len(), count - known, vanished.len())));
        }
        let records = self.records_in_range(batch, &late.into_iter().collect()).await?;
        if records.len() as u64 != count - known {
            return Err(SettleError::Invariant(format!("batch {}: {} of {} late records read", batch.batch_id, records.len(), count - known)));
        }
        let records: Vec<(String, SettlementDue)> = records.into_iter().collect();
        for chunk in records.chunks(RECONCILE_CATCHUP_RECORDS_MAX) {
            catchups += 1;
            if catchups > RECONCILE_CATCHUPS_PER_BATCH_MAX {
                return Err(SettleError::Invariant(format!("batch {}: more than {RECONCILE_CATCHUPS_PER_BATCH_MAX} catch-ups", batch.batch_id)));
            }
            self.catch_up(batch, catchups, chunk, steps).await?;
            report.catchups += 1;
            report.late += chunk.len() as u64;
        }
        Ok(true)
    }

    /// Creates and runs catch-up batch `k` of `batch` for `records` (late, in key order).
    async fn catch_up(&self, batch: &BatchRecord, k: u32, records: &[(String, SettlementDue)], steps: &mut Steps) -> Result<(), SettleError> {
        assert!(!records.is_empty() && records.len() <= RECONCILE_CATCHUP_RECORDS_MAX);
        let mut tally = Tally::default();
        for (sk, due) in records {
            assert!(batch.covers(sk), "a late record lies in its batch's range");
            let added = tally.add(sk, due, &self.platform)?;
            assert!(added, "a catch-up's accounts fit a batch");
        }
        let id = catchup_batch_id(batch.seq, k);
        let mut planned = tally.finish(id.clone(), batch.seq, &batch.after_sk, &batch.through_sk, self.now_ms())?;
        planned.record.late = records.iter().map(|(sk, _)| sk.clone()).collect();
        let markers = records
            .iter()
            .map(|(_, due)| TxWrite::Put { item: Item::new(keys::settlement_late(due.job_id.as_str())).with(ATTR_BATCH_ID, id.as_str()), condition: Condition::Absent })
            .collect();
        if !self.create_batch(&mut planned.record, &planned.plan, false, markers, steps).await? {
            // Another run created it (or marked one of its records): the next run resumes it.
            return Err(SettleError::Market(MarketError::Conflict(format!("catch-up batch {id} raced another run"))));
        }
        tracing::warn!(batch = %id, records = records.len(), "settling late records");
        self.execute_batch(&planned.record, &planned.plan, steps).await
    }

    /// Reads the range of `batch` again: the count of its records and the sketch of their keys.
    async fn sketch_range(&self, batch: &BatchRecord) -> Result<(u64, Sketch), SettleError> {
        let mut sketch = Sketch::default();
        let mut count: u64 = 0;
        self.each_in_range(batch, |sk, _| {
            sketch.insert(sk);
            count += 1;
        })
        .await?;
        Ok((count, sketch))
    }

    /// The records of the range of `batch` whose sketch keys are in `wanted`, by sort key.
    async fn records_in_range(&self, batch: &BatchRecord, wanted: &HashSet<u128>) -> Result<BTreeMap<String, SettlementDue>, SettleError> {
        let mut records = BTreeMap::new();
        self.each_in_range(batch, |sk, due| {
            if wanted.contains(&sketch_key(sk)) {
                records.insert(sk.to_string(), due);
            }
        })
        .await?;
        Ok(records)
    }

    /// Calls `f` with every record in the range of `batch`, shard after shard.
    async fn each_in_range(&self, batch: &BatchRecord, mut f: impl FnMut(&str, SettlementDue)) -> Result<(), SettleError> {
        for shard in 0..INDEX_SHARDS {
            let mut reader = ShardReader::new(self.store.clone(), shard, &batch.after_sk, &batch.through_sk, false);
            loop {
                reader.fill().await?;
                if reader.peek().is_none() {
                    break;
                }
                let (sk, due) = reader.pop();
                f(&sk, due);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sk(n: u32) -> String {
        format!("{:016}#job-{n:032x}", 1_769_284_800_000u64 + u64::from(n))
    }

    #[test]
    fn a_sketch_lists_the_difference_of_two_sets() {
        let mut read = Sketch::default();
        let mut all = Sketch::default();
        for n in 0..10_000 {
            all.insert(&sk(n));
            if n % 500 != 7 {
                read.insert(&sk(n));
            }
        }
        let parsed = Sketch::parse(&read.encode()).unwrap();
        assert_eq!(parsed, read);
        all.subtract(&parsed);
        let (mut added, removed) = all.decode().expect("20 keys decode");
        added.sort_unstable();
        let mut expected: Vec<u128> = (0..10_000).filter(|n| n % 500 == 7).map(|n| sketch_key(&sk(n))).collect();
        expected.sort_unstable();
        assert_eq!((added, removed), (expected, vec![]));
    }

    #[test]
    fn a_sketch_of_equal_sets_is_empty_and_too_many_keys_do_not_decode() {
        let mut a = Sketch::default();
        let mut b = Sketch::default();
        for n in 0..1_000 {
            a.insert(&sk(n));
            b.insert(&sk(999 - n));
        }
        a.subtract(&b);
        assert_eq!(a.decode(), Some((vec![], vec![])));
        let mut many = Sketch::default();
        for n in 0..SKETCH_CELLS as u32 * 2 {
            many.insert(&sk(n));
        }
        assert_eq!(many.decode(), None, "more keys than cells never peel to empty");
        assert!(Sketch::parse("not a sketch").is_err());
    }

    #[test]
    fn a_sketch_decodes_up_to_its_reliable_size() {
        for round in 0..50u32 {
            let mut s = Sketch::default();
            for n in 0..SKETCH_DECODE_RELIABLE as u32 {
                s.insert(&sk(round * 1_000 + n));
            }
            let (added, removed) = s.decode().expect("decodes");
            assert_eq!((added.len(), removed.len()), (SKETCH_DECODE_RELIABLE, 0));
        }
    }
}
