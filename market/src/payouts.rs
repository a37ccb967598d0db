//! Nightly payouts: every provider whose settled earnings (the available balance of its
//! `earnings` account) reach the threshold is paid all of them into its wallet, at most once per
//! UTC day.
//!
//! Idempotency: the payout id and its transfer id are derived from (UTC day, provider), and the
//! payout record is written in the same transaction as the `Transfer::Move`, on the condition
//! that it is new. A re-run the same day finds the record and pays nothing; a run killed half
//! way is simply run again. The run record (`payout_batch`, id `batch-payout-<yyyymmdd>`) keeps
//! the day's last run's counts.

use crate::accounts::ProviderRecord;
use crate::records::{from_item, to_item};
use crate::settlement::Progress;
use crate::{Market, MarketError};
use aitbc_core::ledger::{AccountId, Applied, Transfer};
use aitbc_core::money::{Amount, NANO_PER_AITBC};
use aitbc_core::values::{Address, TransferId};
use aitbc_store::{keys, Condition, TxWrite, PAGE_ITEMS_MAX};
use serde::{Deserialize, Serialize};

/// Earnings below this stay for a later night: 10 AITBC.
pub const PAYOUT_THRESHOLD_DEFAULT: Amount = Amount::from_raw(10 * NANO_PER_AITBC);
/// Providers one run looks at, at most (pages of `PAGE_ITEMS_MAX`).
pub const PAYOUT_RUN_PROVIDERS_MAX: usize = 1_000_000;
/// Milliseconds of a UTC day.
pub const MS_PER_DAY: i64 = 86_400_000;

/// How to run payouts.
#[derive(Debug, Clone)]
pub struct PayoutOptions {
    /// Pay providers whose earnings reach this (> 0).
    pub threshold: Amount,
}

impl Default for PayoutOptions {
    fn default() -> Self {
        Self { threshold: PAYOUT_THRESHOLD_DEFAULT }
    }
}

/// A stored payout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutRecord {
    pub payout_id: String,
    pub provider: Address,
    pub amount: Amount,
    pub transfer_id: TransferId,
    /// The UTC day it is for, `YYYY-MM-DD`.
    pub day: String,
    pub run_id: String,
    pub created_at_ms: i64,
}

/// What became of one provider in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayoutStatus {
    /// Paid by this run.
    Paid,
    /// Paid earlier the same UTC day (this run changed nothing).
    AlreadyPaid,
}

/// One line of a payout report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutLine {
    pub provider: Address,
    pub payout_id: String,
    pub transfer_id: TransferId,
    pub amount: Amount,
    pub status: PayoutStatus,
}

/// What a payout run did (written as CSV and JSON by the scheduler).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutReport {
    pub run_id: String,
    pub day: String,
    pub threshold: Amount,
    pub providers_scanned: u64,
    pub paid: u64,
    pub already_paid: u64,
    /// Paid by this run.
    pub paid_total: Amount,
    pub lines: Vec<PayoutLine>,
}

impl PayoutReport {
    /// The report as CSV: a header and one line per provider paid (now or earlier today).
    pub fn to_csv(&self) -> String {
        let mut out = String::from("day,provider,payout_id,transfer_id,amount,status\n");
        for line in &self.lines {
            let status = match line.status {
                PayoutStatus::Paid => "paid",
                PayoutStatus::AlreadyPaid => "already_paid",
            };
            // Every field is an id, a date or a decimal: none holds a comma or a quote.
            out.push_str(&format!("{},{},{},{},{},{status}\n", self.day, line.provider, line.payout_id, line.transfer_id, line.amount));
        }
        out
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("reports serialize")
    }
}

/// The civil UTC date of a unix time in milliseconds, as (year, month, day). Howard Hinnant's
/// days-from-civil inverse: exact for every date this system will see.
pub fn utc_date(unix_ms: i64) -> (i64, u32, u32) {
    let days = unix_ms.div_euclid(MS_PER_DAY);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `YYYY-MM-DD` of a unix time in milliseconds (UTC).
pub fn utc_day(unix_ms: i64) -> String {
    let (y, m, d) = utc_date(unix_ms);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The payout id of (day, provider): `pay-<yyyymmdd>-<provider>`.
pub fn payout_id(day: &str, provider: &Address) -> String {
    format!("pay-{}-{provider}", day.replace('-', ""))
}

/// The transfer id of a payout: derived from the same pair, so a retry cannot pay twice.
pub fn payout_transfer_id(day: &str, provider: &Address) -> Result<TransferId, MarketError> {
    Ok(TransferId::parse(&format!("tx-{}", payout_id(day, provider)))?)
}

impl Market {
    /// Pays every provider whose earnings reach `options.threshold`, once per UTC day.
    pub async fn run_payouts(&self, options: &PayoutOptions, progress: &dyn Progress) -> Result<PayoutReport, MarketError> {
        assert!(!options.threshold.is_zero(), "a payout threshold is above zero");
        let now = self.now_ms();
        let day = utc_day(now);
        let run_id = format!("batch-payout-{}", day.replace('-', ""));
        let mut report = PayoutReport {
            run_id: run_id.clone(),
            day: day.clone(),
            threshold: options.threshold,
            providers_scanned: 0,
            paid: 0,
            already_paid: 0,
            paid_total: Amount::ZERO,
            lines: Vec::new(),
        };
        let started = aitbc_store::Item::new(keys::payout_batch(&run_id))
            .with("run_id", run_id.as_str())
            .with("day", day.as_str())
            .with("state", "running")
            .with("started_at_ms", now);
        match self.store.put(started, Condition::Absent).await {
            Ok(()) | Err(aitbc_store::StoreError::ConditionFailed { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let mut cursor = None;
        'pages: for _ in 0..PAYOUT_RUN_PROVIDERS_MAX.div_ceil(PAGE_ITEMS_MAX) {
            let page = self.store.query(keys::providers().limit(PAGE_ITEMS_MAX).after(cursor.take())).await?;
            for item in &page.items {
                let provider: ProviderRecord = from_item(item)?;
                report.providers_scanned += 1;
                if let Some(line) = self.pay_provider(&provider.address, &day, &run_id, options.threshold).await? {
                    match line.status {
                        PayoutStatus::Paid => {
                            report.paid += 1;
                            report.paid_total = report.paid_total.checked_add(line.amount).map_err(|e| MarketError::Internal(e.to_string()))?;
                        }
                        PayoutStatus::AlreadyPaid => report.already_paid += 1,
                    }
                    report.lines.push(line);
                }
            }
            progress.advance("payout", page.items.len() as u64);
            cursor = page.cursor;
            if cursor.is_none() {
                break 'pages;
            }
        }
        let done = aitbc_store::Update::new()
            .set("state", "done")
            .set("finished_at_ms", self.now_ms())
            .set("providers_scanned", report.providers_scanned as i64)
            .set("paid", report.paid as i64)
            .set("already_paid", report.already_paid as i64)
            .set("paid_total", report.paid_total.to_string());
        self.store.update(&keys::payout_batch(&run_id), done, Condition::Present).await?;
        tracing::info!(run = %run_id, paid = report.paid, already_paid = report.already_paid, total = %report.paid_total, "payout run done");
        Ok(report)
    }

    /// A stored payout.
    pub async fn payout_record(&self, payout_id: &str) -> Result<Option<PayoutRecord>, MarketError> {
        match self.store.get(&keys::payout(payout_id)).await? {
            Some(item) => Ok(Some(from_item(&item)?)),
            None => Ok(None),
        }
    }

    /// Pays one provider for `day` if its earnings reach the threshold; `None` when it has too
    /// little (or no earnings account).
    async fn pay_provider(&self, provider: &Address, day: &str, run_id: &str, threshold: Amount) -> Result<Option<PayoutLine>, MarketError> {
        let id = payout_id(day, provider);
        let transfer_id = payout_transfer_id(day, provider)?;
        let already = |record: PayoutRecord| PayoutLine {
            provider: provider.clone(),
            payout_id: record.payout_id,
            transfer_id: record.transfer_id,
            amount: record.amount,
            status: PayoutStatus::AlreadyPaid,
        };
        if let Some(record) = self.payout_record(&id).await? {
            return Ok(Some(already(record)));
        }
        let earnings = AccountId::earnings(provider);
        let balance = match self.account(&earnings).await {
            Ok((_, balance)) => balance,
            Err(MarketError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        if balance.available < threshold {
            return Ok(None);
        }
        let amount = balance.available;
        let now = self.now_ms();
        let record = PayoutRecord {
            payout_id: id.clone(),
            provider: provider.clone(),
            amount,
            transfer_id: transfer_id.clone(),
            day: day.to_string(),
            run_id: run_id.to_string(),
            created_at_ms: now,
        };
        let index = keys::payout_provider_index(provider.as_str(), now, &id);
        let item = to_item(keys::payout(&id), &record, &[index]);
        let transfer = Transfer::Move { id: transfer_id.clone(), from: earnings, to: AccountId::wallet(provider), amount };
        match self.apply_transfer(&transfer, vec![TxWrite::Put { item, condition: Condition::Absent }]).await {
            Ok(Applied::Now) => Ok(Some(PayoutLine { provider: provider.clone(), payout_id: id, transfer_id, amount, status: PayoutStatus::Paid })),
            // A racing run paid it (the record and the transfer commit together).
            Ok(Applied::Replayed) | Err(MarketError::Conflict(_)) => match self.payout_record(&id).await? {
                Some(record) => Ok(Some(already(record))),
                None => Err(MarketError::Conflict(format!("payout {id} raced and is not recorded"))),
            },
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_days_are_civil_dates() {
        assert_eq!(utc_day(0), "1970-01-01");
        assert_eq!(utc_day(MS_PER_DAY - 1), "1970-01-01");
        assert_eq!(utc_day(-1), "1969-12-31");
        // 2026-01-24 20:00 UTC.
        assert_eq!(utc_day(1_769_284_800_000), "2026-01-24");
        // 2024-02-29 (leap day) 00:00 UTC and 2000-03-01.
        assert_eq!(utc_day(1_709_164_800_000), "2024-02-29");
        assert_eq!(utc_day(951_868_800_000), "2000-03-01");
    }

    #[test]
    fn payout_ids_name_day_and_provider() {
        let provider = Address::parse("ait1provider0001").unwrap();
        assert_eq!(payout_id("2026-01-24", &provider), "pay-20260124-ait1provider0001");
        assert_eq!(payout_transfer_id("2026-01-24", &provider).unwrap().as_str(), "tx-pay-20260124-ait1provider0001");
    }
}
