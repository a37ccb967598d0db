//! The public explorer's reads: every recent receipt (newest first, filtered by address, model
//! and time), one receipt with its job and settlement, the GPU listings with their current
//! prices, the market's history in time buckets, and an account's totals over time.
//!
//! Receipts are public proofs, so these reads take no key; job specs and results stay private
//! (a receipt's job is shown without them). Nothing here writes, and nothing adds an index:
//! - all receipts come from the settlement records (`DUE#<shard>` / `<t completed>#<job>`, one
//!   per completed job, 16 shards), merged newest first; each record leads to its receipt
//!   through the job's receipt guard (`JOB#<job>` / `RECEIPT`);
//! - one address's receipts come from the receipt indexes by client or by provider.
//!
//! Pages continue from an opaque cursor: base64url of the last sort key read, so a page never
//! repeats or skips an item whatever was written since. Filters that the keys cannot express
//! (model, or the other address) read at most [`SCAN_RECORDS_MAX`] records per page: a page may
//! then hold fewer items than asked, with a cursor to go on.

use crate::jobs::JobRecord;
use crate::quotes::{QuoteInput, REGION_LISTINGS_MAX};
use crate::receipts::{job_receipt_guard, receipt_from_item};
use crate::registry::{ListingFilter, ListingView};
use crate::settlement::{SettleAmounts, Settlement, SettlementDue};
use crate::{Market, MarketError};
use aitbc_core::job::JobState;
use aitbc_core::money::{Amount, GpuMillis, Rate};
use aitbc_core::pricing::Tier;
use aitbc_core::receipt::Receipt;
use aitbc_core::values::{Address, JobId, ListingId, ModelName, ReceiptId, Region};
use aitbc_store::{keys, Item, Query, SortCondition, StoreError};
use base64::Engine;
use serde::Serialize;
use std::collections::BTreeMap;

/// Receipts per explorer page, at most.
pub const EXPLORER_PAGE_MAX: usize = 100;
/// Receipts per explorer page unless the caller asks.
pub const EXPLORER_PAGE_DEFAULT: usize = 25;
/// Records one page reads at most while a filter the keys cannot express drops some.
pub const SCAN_RECORDS_MAX: usize = 1_000;
/// Receipts a history or an account summary reads at most (the newest first); more sets
/// `truncated`.
pub const SUMMARY_RECEIPTS_MAX: usize = 5_000;
/// Time buckets of a history, at most.
pub const HISTORY_BUCKETS_MAX: u32 = 168;
/// Time buckets of a history unless the caller asks.
pub const HISTORY_BUCKETS_DEFAULT: u32 = 48;
/// Receipts resolved from their settlement records at once.
const RESOLVE_IN_FLIGHT_MAX: usize = 32;
/// Bytes of an explorer cursor, at most.
const CURSOR_BYTES_MAX: usize = 512;

/// Which receipts to list: any combination; all of them when empty.
#[derive(Debug, Clone, Default)]
pub struct ReceiptFilter {
    pub client: Option<Address>,
    pub provider: Option<Address>,
    pub model: Option<ModelName>,
    /// Completed at or after (unix ms).
    pub since_ms: Option<i64>,
    /// Completed at or before (unix ms).
    pub until_ms: Option<i64>,
}

impl ReceiptFilter {
    fn keeps(&self, receipt: &Receipt) -> bool {
        let b = &receipt.body;
        self.client.as_ref().is_none_or(|c| c == &b.client)
            && self.provider.as_ref().is_none_or(|p| p == &b.provider)
            && self.model.as_ref().is_none_or(|m| b.model.as_ref() == Some(m))
    }

    /// The sort key range `[low, high]` of the time filter (both key shapes are `<t>#<id>`).
    ///
    /// Bounds outside the times a receipt can carry are clamped to them: they select the same
    /// receipts, and key times have a fixed width (`keys::time` refuses wider ones).
    fn range(&self) -> (String, String) {
        let clamp = |ms: i64| ms.clamp(0, RECEIPT_TIME_MS_MAX);
        let low = keys::time(clamp(self.since_ms.unwrap_or(0)));
        let high = match self.until_ms {
            Some(ms) => keys::settlement_due_end(clamp(ms)),
            None => format!("{}\u{10FFFF}", "9".repeat(keys::TIME_DIGITS)),
        };
        (low, high)
    }
}

/// The latest time a receipt can carry, in unix milliseconds.
const RECEIPT_TIME_MS_MAX: i64 = aitbc_core::receipt::TIMESTAMP_S_MAX * 1_000 + 999;

/// A receipt's job as the public sees it: its state and terms, never its spec or result.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PublicJob {
    pub job_id: JobId,
    /// `settled` once a done settlement batch covers it.
    pub state: JobState,
    pub attempt: u32,
    pub gpu_id: ListingId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelName>,
    pub tier: Tier,
    /// GPU-seconds the hold covers.
    pub units_max: GpuMillis,
    pub unit_price: Rate,
    /// What the job held in escrow.
    pub max_price: Amount,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<Amount>,
    pub created_at_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claimed_at_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<i64>,
}

impl From<&JobRecord> for PublicJob {
    fn from(j: &JobRecord) -> Self {
        PublicJob {
            job_id: j.job_id.clone(),
            state: j.status.state,
            attempt: j.status.attempt,
            gpu_id: j.gpu_id.clone(),
            model: j.model.clone(),
            tier: j.tier,
            units_max: j.units_max,
            unit_price: j.unit_price,
            max_price: j.max_price,
            price: j.price,
            created_at_ms: j.created_at_ms,
            claimed_at_ms: j.claimed_at_ms,
            finished_at_ms: j.finished_at_ms,
        }
    }
}

/// One receipt with its job and what its settlement posts.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReceiptDetail {
    pub receipt: Receipt,
    pub job: PublicJob,
    /// What settlement posts for the receipt (decided at completion): the hold, the price, the
    /// platform fee, the SLA penalty, the provider's share and the refund.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due: Option<SettleAmounts>,
    /// Present once a done settlement batch covers the receipt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settlement: Option<Settlement>,
}

/// A GPU listing as the explorer shows it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GpuRow {
    #[serde(flatten)]
    pub view: ListingView,
    /// Active jobs over capacity, e.g. "0.5".
    pub utilization: String,
    /// Per model it serves: the current unit price (AITBC per GPU-second, basic tier) with the
    /// listing's strategy applied now; empty while the listing is offline.
    pub prices: BTreeMap<String, Rate>,
}

/// One time bucket of a history.
#[derive(Debug, Clone, Serialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Bucket {
    /// Start of the bucket, unix ms.
    pub t_ms: i64,
    pub receipts: u64,
    /// GPU-seconds metered.
    pub units: GpuMillis,
    /// Sum of receipt prices.
    pub amount: Amount,
    /// `amount / units` (AITBC per GPU-second), rounded down to the pico; absent without units.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_price: Option<Rate>,
    /// Metered GPU time over the GPUs listed in the region now times the bucket's length,
    /// e.g. "0.25"; market history only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub utilization: Option<String>,
}

impl Bucket {
    fn add(&mut self, receipt: &Receipt) {
        self.receipts += 1;
        self.units = GpuMillis::from_raw(self.units.raw().saturating_add(receipt.body.units.raw()));
        self.amount = self.amount.checked_add(receipt.body.price).unwrap_or(Amount::MAX);
    }

    fn finish(&mut self, capacity_ms: Option<u128>) {
        if self.units.raw() > 0 {
            // nano per GPU-ms = 1e6 pico per GPU-second.
            let pico = u128::from(self.amount.raw()) * 1_000_000 / u128::from(self.units.raw());
            self.unit_price = Some(Rate::from_raw(u64::try_from(pico).unwrap_or(u64::MAX)));
        }
        if let Some(capacity) = capacity_ms.filter(|c| *c > 0) {
            // Parts per 1e12, printed as a decimal with Rate's 12 places.
            let ppt = u128::from(self.units.raw()) * 1_000_000_000_000 / capacity;
            self.utilization = Some(Rate::from_raw(u64::try_from(ppt).unwrap_or(u64::MAX)).to_string());
        }
    }
}

/// The buckets' width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Interval {
    Minute,
    Hour,
    Day,
}

impl Interval {
    pub fn ms(self) -> i64 {
        match self {
            Interval::Minute => 60_000,
            Interval::Hour => 3_600_000,
            Interval::Day => 86_400_000,
        }
    }
}

/// The window of a history: `buckets` buckets of `interval`, the last one holding now.
#[derive(Debug, Clone, Copy, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryWindow {
    pub interval: Interval,
    pub interval_ms: i64,
    /// Start of the first bucket, unix ms.
    pub from_ms: i64,
    /// End of the last bucket (exclusive), unix ms.
    pub to_ms: i64,
    pub buckets: u32,
}

impl HistoryWindow {
    pub(crate) fn new(interval: Interval, buckets: u32, now_ms: i64) -> Result<HistoryWindow, MarketError> {
        if !(1..=HISTORY_BUCKETS_MAX).contains(&buckets) {
            return Err(MarketError::invalid("buckets", format!("must be 1..={HISTORY_BUCKETS_MAX}")));
        }
        let width = interval.ms();
        let to_ms = (now_ms / width + 1) * width;
        Ok(HistoryWindow { interval, interval_ms: width, from_ms: to_ms - width * i64::from(buckets), to_ms, buckets })
    }

    fn empty(&self) -> Vec<Bucket> {
        (0..i64::from(self.buckets)).map(|i| Bucket { t_ms: self.from_ms + i * self.interval_ms, ..Default::default() }).collect()
    }

    pub(crate) fn index(&self, completed_at_s: i64) -> Option<usize> {
        let t = completed_at_s.saturating_mul(1_000);
        (t >= self.from_ms && t < self.to_ms).then(|| ((t - self.from_ms) / self.interval_ms) as usize)
    }

    pub(crate) fn filter(&self) -> ReceiptFilter {
        ReceiptFilter { since_ms: Some(self.from_ms), until_ms: Some(self.to_ms - 1), ..Default::default() }
    }
}

/// One region and model's history.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Series {
    pub region: String,
    /// The receipts' model; `-` for receipts without one.
    pub model: String,
    /// GPUs listed in the region now (the utilization's denominator).
    pub gpus: u64,
    pub points: Vec<Bucket>,
}

/// The market over time, from the receipts completed in the window.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MarketHistory {
    pub window: HistoryWindow,
    pub series: Vec<Series>,
    /// True when the window held more than the receipts one history reads (the newest count).
    pub truncated: bool,
}

/// An account's receipts in total and over time.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccountSummary {
    pub address: Address,
    /// `provider` (totals are earnings) or `client` (totals are spending).
    pub role: String,
    /// Over the newest receipts read (all of them unless `truncated`).
    pub receipts: u64,
    pub units: GpuMillis,
    /// Sum of receipt prices: gross earnings (before the platform fee) or spending.
    pub amount: Amount,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_completed_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_completed_at: Option<i64>,
    pub truncated: bool,
    pub window: HistoryWindow,
    pub points: Vec<Bucket>,
}

fn encode_cursor(sk: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sk)
}

fn decode_cursor(cursor: &str) -> Result<String, MarketError> {
    let bad = || MarketError::invalid("cursor", "not a cursor of this list");
    if cursor.len() > CURSOR_BYTES_MAX {
        return Err(bad());
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let sk = String::from_utf8(bytes).map_err(|_| bad())?;
    let digits = sk.get(..keys::TIME_DIGITS).ok_or_else(bad)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) || sk.as_bytes().get(keys::TIME_DIGITS) != Some(&b'#') {
        return Err(bad());
    }
    Ok(sk)
}

fn store_error(e: StoreError) -> MarketError {
    match e {
        StoreError::Invalid(r) => MarketError::invalid("cursor", r),
        e => e.into(),
    }
}

/// Where a scan stands: sort keys at or below `high` (descending), and whether it is over.
struct Scan {
    low: String,
    high: String,
    /// A sort key already read (the cursor's): dropped if met again.
    skip: Option<String>,
}

impl Market {
    /// A page of receipts, newest first, and the cursor of the next page (absent at the end).
    pub async fn explorer_receipts(&self, filter: &ReceiptFilter, limit: usize, cursor: Option<&str>) -> Result<(Vec<Receipt>, Option<String>), MarketError> {
        let limit = limit.clamp(1, EXPLORER_PAGE_MAX);
        self.scan_receipts(filter, limit, SCAN_RECORDS_MAX.max(limit), cursor).await
    }

    /// Reads receipts newest first until `limit` pass the filter or `scan_max` were read.
    async fn scan_receipts(&self, filter: &ReceiptFilter, limit: usize, scan_max: usize, cursor: Option<&str>) -> Result<(Vec<Receipt>, Option<String>), MarketError> {
        let (low, mut high) = filter.range();
        let skip = cursor.map(decode_cursor).transpose()?;
        if let Some(sk) = &skip {
            high = high.min(sk.clone());
        }
        let mut scan = Scan { low, high, skip };
        let mut out = Vec::new();
        let mut scanned = 0usize;
        loop {
            // Real sort keys are `<t>#<id>`, above the bare time `low`.
            if scan.high <= scan.low {
                return Ok((out, None));
            }
            let chunk = (limit - out.len()).clamp(1, EXPLORER_PAGE_MAX);
            let (batch, more) = match (&filter.client, &filter.provider) {
                (Some(c), _) => self.index_chunk(keys::receipts_by_client(c.as_str()), &scan, chunk).await?,
                (None, Some(p)) => self.index_chunk(keys::receipts_by_provider(p.as_str()), &scan, chunk).await?,
                (None, None) => self.due_chunk(&scan, chunk).await?,
            };
            for (sk, receipt) in batch {
                scanned += 1;
                scan.high = sk.clone();
                scan.skip = Some(sk.clone());
                if filter.keeps(&receipt) {
                    out.push(receipt);
                }
                if out.len() == limit || scanned >= scan_max {
                    // The next page starts below this key (it may be the last: the next page
                    // is then empty and ends the list).
                    return Ok((out, Some(encode_cursor(&sk))));
                }
            }
            if !more {
                return Ok((out, None));
            }
        }
    }

    /// The next `chunk` receipts of one address's receipt index below the scan's position.
    async fn index_chunk(&self, query: Query, scan: &Scan, chunk: usize) -> Result<(Vec<(String, Receipt)>, bool), MarketError> {
        let (_, sk_attr) = query.key_attrs();
        let query = query.sort(SortCondition::Between(scan.low.clone(), scan.high.clone())).descending().limit(chunk + 1);
        let page = self.store.query(query).await.map_err(store_error)?;
        let mut out = Vec::with_capacity(page.items.len());
        for item in &page.items {
            let sk = item.str(sk_attr).ok_or_else(|| MarketError::Internal("index item without its sort key".into()))?.to_string();
            if scan.skip.as_deref() == Some(sk.as_str()) {
                continue;
            }
            out.push((sk, receipt_from_item(item)?));
        }
        let more = page.cursor.is_some() || out.len() > chunk;
        out.truncate(chunk);
        Ok((out, more))
    }

    /// The next `chunk` receipts of all, newest first: each shard's newest records below the
    /// scan's position, merged, then resolved to their receipts.
    async fn due_chunk(&self, scan: &Scan, chunk: usize) -> Result<(Vec<(String, Receipt)>, bool), MarketError> {
        let mut set = tokio::task::JoinSet::new();
        for shard in 0..keys::INDEX_SHARDS {
            let query = keys::settlement_due_range(shard, &scan.low, &scan.high).descending().limit(chunk + 1);
            let store = self.store.clone();
            set.spawn(async move { store.query(query).await });
        }
        let mut records: Vec<Item> = Vec::new();
        let mut shard_more = false;
        while let Some(joined) = set.join_next().await {
            let page = joined.map_err(|e| MarketError::Internal(format!("explorer query: {e}")))?.map_err(store_error)?;
            let kept: Vec<Item> = page.items.into_iter().filter(|i| scan.skip.as_deref() != Some(i.key.sk.as_str())).collect();
            shard_more |= kept.len() > chunk;
            records.extend(kept);
        }
        records.sort_by(|a, b| b.key.sk.cmp(&a.key.sk));
        let more = shard_more || records.len() > chunk;
        records.truncate(chunk);
        let dues = records.into_iter().map(SettlementDue::from_item).collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::with_capacity(dues.len());
        for group in dues.chunks(RESOLVE_IN_FLIGHT_MAX) {
            let mut set = tokio::task::JoinSet::new();
            for (i, due) in group.iter().enumerate() {
                let market = self.clone();
                let job_id = due.job_id.clone();
                set.spawn(async move { (i, market.receipt_of_job(&job_id).await) });
            }
            let mut resolved: Vec<Option<Receipt>> = vec![None; group.len()];
            while let Some(joined) = set.join_next().await {
                let (i, receipt) = joined.map_err(|e| MarketError::Internal(format!("explorer read: {e}")))?;
                resolved[i] = Some(receipt?);
            }
            for (due, receipt) in group.iter().zip(resolved) {
                out.push((due.key().sk, receipt.expect("every read answered")));
            }
        }
        Ok((out, more))
    }

    /// The receipt of a completed job, through its receipt guard.
    async fn receipt_of_job(&self, job_id: &JobId) -> Result<Receipt, MarketError> {
        let guard = self.store.get(&job_receipt_guard(job_id.as_str())).await?.ok_or_else(|| MarketError::Internal(format!("completed job {job_id} has no receipt guard")))?;
        let id = guard.str("receipt_id").ok_or_else(|| MarketError::Internal(format!("receipt guard of {job_id} without an id")))?;
        let item = self.store.get(&keys::receipt(id)).await?.ok_or_else(|| MarketError::Internal(format!("receipt {id} of job {job_id} is missing")))?;
        receipt_from_item(&item)
    }

    /// One receipt with its job (without spec or result), what it posts and its settlement.
    pub async fn explorer_receipt(&self, id: &ReceiptId) -> Result<ReceiptDetail, MarketError> {
        let item = self.store.get(&keys::receipt(id.as_str())).await?.ok_or_else(|| MarketError::not_found(format!("receipt {id}")))?;
        let receipt = receipt_from_item(&item)?;
        let (job, _) = self.job_with_version(&receipt.body.job_id).await?;
        let due = match job.finished_at_ms {
            Some(ms) => self.store.get(&keys::settlement_due(keys::shard(job.job_id.as_str()), ms, job.job_id.as_str())).await?.map(SettlementDue::from_item).transpose()?.map(|d| d.amounts),
            None => None,
        };
        let job = self.with_settlement(job).await?;
        Ok(ReceiptDetail { job: PublicJob::from(&job), settlement: job.settlement.clone(), due, receipt })
    }

    /// The listings of one region or of every configured region, optionally serving a model,
    /// each with its utilization and its current price per model.
    pub async fn explorer_gpus(&self, region: Option<&str>, model: Option<&ModelName>) -> Result<Vec<GpuRow>, MarketError> {
        let regions: Vec<Region> = match region {
            Some(name) => vec![self.config.region(name)?.0],
            None => self.config.regions.keys().cloned().collect(),
        };
        let mut rows = Vec::new();
        for region in regions {
            let filter = ListingFilter { region: Some(region.to_string()), model: model.cloned(), limit: REGION_LISTINGS_MAX, ..Default::default() };
            let (views, _) = self.list_listings(filter).await?;
            for view in views {
                let mut prices = BTreeMap::new();
                if view.online {
                    for m in &view.listing.models {
                        let input = QuoteInput::one_second(m.clone());
                        prices.insert(m.to_string(), self.quote_on(&view, &input).await?.terms.unit_price);
                    }
                }
                let utilization = Rate::from_raw(u64::from(Self::utilization_bps(&view)) * 100_000_000).to_string();
                rows.push(GpuRow { view, utilization, prices });
            }
        }
        Ok(rows)
    }

    /// The newest receipts of the window that pass `filter` (at most SUMMARY_RECEIPTS_MAX) and
    /// whether there were more.
    pub(crate) async fn window_receipts(&self, filter: &ReceiptFilter) -> Result<(Vec<Receipt>, bool), MarketError> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let want = (SUMMARY_RECEIPTS_MAX - all.len()).min(EXPLORER_PAGE_MAX);
            let (page, next) = self.scan_receipts(filter, want, SCAN_RECORDS_MAX, cursor.as_deref()).await?;
            all.extend(page);
            match next {
                None => return Ok((all, false)),
                Some(_) if all.len() >= SUMMARY_RECEIPTS_MAX => return Ok((all, true)),
                Some(next) => cursor = Some(next),
            }
        }
    }

    /// Receipts per region and model in time buckets: volume, price and utilization.
    pub async fn market_history(&self, region: Option<&str>, model: Option<&ModelName>, interval: Interval, buckets: u32) -> Result<MarketHistory, MarketError> {
        let window = HistoryWindow::new(interval, buckets, self.now_ms())?;
        let only_region = region.map(|r| self.config.region(r).map(|(r, _)| r)).transpose()?;
        // Each listing's region and each region's GPUs, from the listings there now.
        let mut region_of: BTreeMap<ListingId, Region> = BTreeMap::new();
        let mut gpus: BTreeMap<Region, u64> = BTreeMap::new();
        for region in self.config.regions.keys() {
            let filter = ListingFilter { region: Some(region.to_string()), limit: REGION_LISTINGS_MAX, ..Default::default() };
            let (views, _) = self.list_listings(filter).await?;
            for v in views {
                *gpus.entry(region.clone()).or_default() += u64::from(v.listing.count);
                region_of.insert(v.listing.gpu_id.clone(), region.clone());
            }
        }
        let filter = ReceiptFilter { model: model.cloned(), ..window.filter() };
        let (receipts, truncated) = self.window_receipts(&filter).await?;
        let mut series: BTreeMap<(String, String), Vec<Bucket>> = BTreeMap::new();
        for r in &receipts {
            let region = region_of.get(&r.body.gpu_id).map_or_else(|| "-".to_string(), |r| r.to_string());
            if only_region.as_ref().is_some_and(|o| o.as_str() != region) {
                continue;
            }
            let model = r.body.model.as_ref().map_or_else(|| "-".to_string(), |m| m.to_string());
            let Some(i) = window.index(r.body.completed_at) else { continue };
            series.entry((region, model)).or_insert_with(|| window.empty())[i].add(r);
        }
        let series = series
            .into_iter()
            .map(|((region, model), mut points)| {
                let region_gpus = Region::parse(&region).ok().and_then(|r| gpus.get(&r).copied()).unwrap_or(0);
                let capacity = u128::from(region_gpus) * u128::try_from(window.interval_ms).expect("positive");
                points.iter_mut().for_each(|b| b.finish(Some(capacity)));
                Series { region, model, gpus: region_gpus, points }
            })
            .collect();
        Ok(MarketHistory { window, series, truncated })
    }

    /// An account's receipts in total (the newest SUMMARY_RECEIPTS_MAX) and per time bucket.
    pub async fn account_summary(&self, address: &Address, interval: Interval, buckets: u32) -> Result<AccountSummary, MarketError> {
        let window = HistoryWindow::new(interval, buckets, self.now_ms())?;
        let provider = self.is_provider(address).await?;
        let filter = if provider {
            ReceiptFilter { provider: Some(address.clone()), ..Default::default() }
        } else {
            ReceiptFilter { client: Some(address.clone()), ..Default::default() }
        };
        let (receipts, truncated) = self.window_receipts(&filter).await?;
        let mut total = Bucket::default();
        let mut points = window.empty();
        for r in &receipts {
            total.add(r);
            if let Some(i) = window.index(r.body.completed_at) {
                points[i].add(r);
            }
        }
        points.iter_mut().for_each(|b| b.finish(None));
        Ok(AccountSummary {
            address: address.clone(),
            role: if provider { "provider" } else { "client" }.to_string(),
            receipts: total.receipts,
            units: total.units,
            amount: total.amount,
            first_completed_at: receipts.last().map(|r| r.body.completed_at),
            last_completed_at: receipts.first().map(|r| r.body.completed_at),
            truncated,
            window,
            points,
        })
    }
}
