//! The ledger on the store: `aitbc_core::ledger::postings` turned into one all-or-nothing store
//! transaction per transfer, with the same guarantees as the in-memory reference model:
//! balances never go below zero (each add carries a floor of 0), a transfer id applies at most
//! once (its record is written only if absent), and a hold resolves at most once (its record
//! changes only while pending). Callers may add their own writes to the same transaction, so a
//! job's state and its money move together or not at all.

use crate::records::{from_item, int, to_item};
use crate::{Market, MarketError};
use aitbc_core::ledger::{postings, AccountId, Applied, Balance, Hold, HoldState, Transfer};
use aitbc_core::money::Amount;
use aitbc_store::{keys, Condition, Key, Query, StoreError, TxWrite, Update};
use serde::{Deserialize, Serialize};

/// Store numbers are i64; no single amount or balance may exceed this.
pub const AMOUNT_STORE_MAX: u64 = i64::MAX as u64;
/// Writes a caller may add to a transfer's transaction (the transfer itself takes at most 9).
pub const EXTRA_WRITES_MAX: usize = 80;
/// Ledger history page size, at most.
pub const HISTORY_PAGE_MAX: usize = 200;
/// A pending hold's index entry says when the sweeper should look at it.
pub const HOLD_REVIEW_AFTER_MS: i64 = 24 * 3_600_000;

pub(crate) const ATTR_AVAILABLE: &str = "available";
pub(crate) const ATTR_HELD: &str = "held";
pub(crate) const ATTR_HOLD_STATE: &str = "hold_state";

/// A ledger account's stored profile (its balances are numeric attributes beside it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountRecord {
    pub account: AccountId,
    pub created_at_ms: i64,
    /// The most this account may have held at once (client spending limit), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spending_limit: Option<Amount>,
}

/// A transfer as stored, with when it happened.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransferRecord {
    pub transfer: Transfer,
    pub at_ms: i64,
}

/// One account's line of a transfer (its history entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LedgerEntry {
    pub transfer_id: String,
    pub account: AccountId,
    #[serde(rename = "type")]
    pub kind: String,
    /// Signed change of the available balance, nano-AITBC.
    pub available_delta: i64,
    pub held_delta: i64,
    pub at_ms: i64,
}

pub(crate) fn account_key(account: &AccountId) -> Key {
    keys::account(&account.to_string())
}

fn entry_key(transfer_id: &str, account: &AccountId) -> Key {
    Key::new(keys::transfer(transfer_id).pk, format!("ENTRY#{account}"))
}

fn store_amount(amount: Amount) -> Result<i64, MarketError> {
    i64::try_from(amount.raw()).map_err(|_| MarketError::invalid("amount", format!("exceeds {AMOUNT_STORE_MAX} nano")))
}

fn transfer_kind(t: &Transfer) -> &'static str {
    match t {
        Transfer::Deposit { .. } => "deposit",
        Transfer::Withdraw { .. } => "withdraw",
        Transfer::Move { .. } => "move",
        Transfer::Pay { .. } => "pay",
        Transfer::Hold { .. } => "hold",
        Transfer::Post { .. } => "post",
        Transfer::Void { .. } => "void",
    }
}

/// The stored state of a hold whose job completed: its outcome is decided (it will be posted
/// for the job's receipt, by the amounts of the job's settlement record), so nothing may void
/// it any more. It leaves the pending-holds index and is not written again: it is posted when a
/// done settlement batch covers the record (`settlement`), which writes per account, not per
/// receipt.
pub const HOLD_CAPTURED: &str = "captured";

/// The write that captures a pending hold for a job's receipt (in the completing transaction).
pub fn hold_capture_write(hold_id: &aitbc_core::values::HoldId, receipt_id: &aitbc_core::values::ReceiptId) -> TxWrite {
    leave_pending(hold_id.as_str(), Update::new().set(ATTR_HOLD_STATE, HOLD_CAPTURED).set("receipt_id", receipt_id.as_str()))
}

/// The write that moves a hold out of `pending` with `update`: only while it is pending (so
/// a hold leaves that state once), and out of the pending-holds index the sweeper reads.
fn leave_pending(hold_id: &str, mut update: Update) -> TxWrite {
    for attr in keys::hold_pending_index(hold_id, 0).attrs() {
        update = update.remove(attr);
    }
    TxWrite::Update { key: keys::hold(hold_id), update, condition: Condition::equals(ATTR_HOLD_STATE, "pending") }
}

fn hold_state_name(state: HoldState) -> &'static str {
    match state {
        HoldState::Pending => "pending",
        HoldState::Posted { .. } => "posted",
        HoldState::Voided => "voided",
    }
}

impl Market {
    /// Creates a ledger account with zero balances; opening an open account is no error.
    pub async fn open_account(&self, account: &AccountId, spending_limit: Option<Amount>) -> Result<(), MarketError> {
        let record = AccountRecord { account: account.clone(), created_at_ms: self.now_ms(), spending_limit };
        let item = to_item(account_key(account), &record, &[]).with(ATTR_AVAILABLE, 0).with(ATTR_HELD, 0);
        match self.store.put(item, Condition::Absent).await {
            Ok(()) | Err(StoreError::ConditionFailed { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// An account's record and balances.
    pub async fn account(&self, account: &AccountId) -> Result<(AccountRecord, Balance), MarketError> {
        let item = self.store.get(&account_key(account)).await?.ok_or_else(|| MarketError::not_found(format!("account {account}")))?;
        let balance = |attr| -> Result<Amount, MarketError> {
            let v = int(&item, attr)?;
            u64::try_from(v).map(Amount::from_raw).map_err(|_| MarketError::Internal(format!("negative {attr} on {account}")))
        };
        let balance = Balance { available: balance(ATTR_AVAILABLE)?, held: balance(ATTR_HELD)? };
        Ok((from_item(&item)?, balance))
    }

    /// An account's spending limit, if it has one. The limit is fixed when the account opens,
    /// so it is read once per process: a submission then reads balances only for accounts
    /// that have a limit.
    pub async fn spending_limit(&self, account: &AccountId) -> Result<Option<Amount>, MarketError> {
        let id = account.to_string();
        if let Some(limit) = self.caches.limits.lock().expect("limit cache").get(&id) {
            return Ok(*limit);
        }
        let (record, _) = self.account(account).await?;
        let mut cache = self.caches.limits.lock().expect("limit cache");
        if cache.len() >= crate::auth::KEY_CACHE_ENTRIES_MAX {
            cache.clear();
        }
        cache.insert(id, record.spending_limit);
        Ok(record.spending_limit)
    }

    pub async fn hold_record(&self, hold_id: &str) -> Result<Option<Hold>, MarketError> {
        Ok(self.hold_with_phase(hold_id).await?.map(|(hold, _)| hold))
    }

    /// A hold and its stored state: `pending`, `captured` (see `HOLD_CAPTURED`), `posted` or
    /// `voided`.
    pub async fn hold_with_phase(&self, hold_id: &str) -> Result<Option<(Hold, String)>, MarketError> {
        let Some(item) = self.store.get(&keys::hold(hold_id)).await? else { return Ok(None) };
        let phase = item.str(ATTR_HOLD_STATE).ok_or_else(|| MarketError::Internal(format!("hold {hold_id} without a state")))?.to_string();
        Ok(Some((from_item(&item)?, phase)))
    }

    /// The store writes that apply `transfer` given the hold it names. Pure but for `now_ms`;
    /// `apply_transfer` runs them, the scheduler batches them.
    pub fn transfer_writes(&self, transfer: &Transfer, hold: Option<&Hold>, now_ms: i64) -> Result<Vec<TxWrite>, MarketError> {
        let effect = postings(transfer, hold)?;
        let id = transfer.id().as_str();
        let mut writes = Vec::with_capacity(2 + 2 * effect.postings.len());
        let record = TransferRecord { transfer: transfer.clone(), at_ms: now_ms };
        writes.push(TxWrite::Put { item: to_item(keys::transfer(id), &record, &[]), condition: Condition::Absent });
        for p in &effect.postings {
            let available = i64::try_from(p.available_delta).map_err(|_| MarketError::invalid("amount", "too large"))?;
            let held = i64::try_from(p.held_delta).map_err(|_| MarketError::invalid("amount", "too large"))?;
            let mut update = Update::new();
            if available != 0 {
                update = update.add(ATTR_AVAILABLE, available, Some(0));
            }
            if held != 0 {
                update = update.add(ATTR_HELD, held, Some(0));
            }
            writes.push(TxWrite::Update { key: account_key(&p.account), update, condition: Condition::Present });
            let entry = LedgerEntry {
                transfer_id: id.to_string(),
                account: p.account.clone(),
                kind: transfer_kind(transfer).into(),
                available_delta: available,
                held_delta: held,
                at_ms: now_ms,
            };
            let index = keys::transfer_account_index(&p.account.to_string(), now_ms, id);
            writes.push(TxWrite::Put { item: to_item(entry_key(id, &p.account), &entry, &[index]), condition: Condition::Absent });
        }
        if let Some(after) = effect.hold_after {
            let state = hold_state_name(after.state);
            match transfer {
                Transfer::Hold { .. } => {
                    let indexes = [
                        keys::hold_account_index(&after.account.to_string(), now_ms, after.id.as_str()),
                        keys::hold_pending_index(after.id.as_str(), now_ms + HOLD_REVIEW_AFTER_MS),
                    ];
                    let item = to_item(keys::hold(after.id.as_str()), &after, &indexes).with(ATTR_HOLD_STATE, state);
                    writes.push(TxWrite::Put { item, condition: Condition::Absent });
                }
                _ => {
                    let update = Update::new().set("state", serde_json::to_value(after.state).expect("serializes")).set(ATTR_HOLD_STATE, state);
                    writes.push(leave_pending(after.id.as_str(), update));
                }
            }
        }
        Ok(writes)
    }

    /// Applies `transfer` (and `extra` writes with it) at most once.
    pub async fn apply_transfer(&self, transfer: &Transfer, extra: Vec<TxWrite>) -> Result<Applied, MarketError> {
        assert!(extra.len() <= EXTRA_WRITES_MAX, "too many extra writes");
        for amount in transfer_amounts(transfer) {
            store_amount(amount)?;
        }
        let id = transfer.id().as_str();
        // Resolving a hold reads it first, so check for a replay before (a replayed post would
        // otherwise meet its own resolved hold). Other transfers need no read: the transfer
        // record's absent-condition in the transaction catches a reused id.
        let hold = match transfer {
            Transfer::Post { hold, .. } | Transfer::Void { hold, .. } => {
                if let Some(applied) = self.replayed(transfer).await? {
                    return Ok(applied);
                }
                self.hold_record(hold.as_str()).await?
            }
            _ => None,
        };
        let mut writes = self.transfer_writes(transfer, hold.as_ref(), self.now_ms())?;
        writes.extend(extra);
        match self.store.transact(writes).await {
            Ok(()) => Ok(Applied::Now),
            Err(StoreError::ConditionFailed { pk, sk }) => {
                if pk == keys::transfer(id).pk {
                    // A concurrent twin won: compare with what it wrote.
                    return self.replayed(transfer).await?.ok_or_else(|| MarketError::Conflict("transfer raced".into()));
                }
                if pk.starts_with("ACCOUNT#") {
                    let account = pk.trim_start_matches("ACCOUNT#");
                    return match self.store.get(&Key::new(pk.clone(), sk)).await? {
                        None => Err(MarketError::not_found(format!("account {account}"))),
                        Some(_) => Err(MarketError::InsufficientFunds(format!("{account} has too little available"))),
                    };
                }
                if pk.starts_with("HOLD#") {
                    return Err(MarketError::Conflict(format!("{} was resolved concurrently", pk.trim_start_matches("HOLD#"))));
                }
                Err(MarketError::Conflict(format!("the request raced with another change ({pk})")))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// `Some` when a transfer with this id exists: a replay if identical, else an error.
    async fn replayed(&self, transfer: &Transfer) -> Result<Option<Applied>, MarketError> {
        let Some(item) = self.store.get(&keys::transfer(transfer.id().as_str())).await? else {
            return Ok(None);
        };
        let record: TransferRecord = from_item(&item)?;
        if &record.transfer == transfer {
            Ok(Some(Applied::Replayed))
        } else {
            Err(MarketError::Conflict(format!("transfer id {} was used for a different transfer", transfer.id())))
        }
    }

    /// One page of an account's ledger entries, newest first.
    pub async fn ledger_history(&self, account: &AccountId, limit: usize, cursor: Option<String>) -> Result<(Vec<LedgerEntry>, Option<String>), MarketError> {
        let query: Query = keys::transfers_by_account(&account.to_string()).descending().limit(limit.clamp(1, HISTORY_PAGE_MAX)).after(cursor);
        let page = self.store.query(query).await.map_err(|e| match e {
            StoreError::Invalid(reason) => MarketError::invalid("cursor", reason),
            other => other.into(),
        })?;
        let entries = page.items.iter().map(from_item).collect::<Result<Vec<LedgerEntry>, _>>()?;
        Ok((entries, page.cursor))
    }
}

fn transfer_amounts(t: &Transfer) -> Vec<Amount> {
    match t {
        Transfer::Deposit { amount, .. } | Transfer::Withdraw { amount, .. } | Transfer::Move { amount, .. } | Transfer::Hold { amount, .. } => {
            vec![*amount]
        }
        Transfer::Post { amount, fee, .. } | Transfer::Pay { amount, fee, .. } => vec![*amount, *fee],
        Transfer::Void { .. } => vec![],
    }
}
