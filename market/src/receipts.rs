//! Receipts: stored when a job completes (countersigned, exactly one per job), listed by client
//! or provider in time order, verified against the registry's keys, and the public key set.

use crate::auth::{Principal, Role};
use crate::records::from_item;
use crate::{Market, MarketError};
use aitbc_core::receipt::Receipt;
use aitbc_core::signing::{KeySet, KeySetDocument, PublicKeyEntry};
use aitbc_core::values::{Address, ReceiptId};
use aitbc_store::{keys, Condition, Item, Key, StoreError, TxWrite};
use serde::Serialize;

/// Receipts per page, at most.
pub const RECEIPTS_PAGE_MAX: usize = 200;
/// Providers whose keys one `GET /v1/keys` page lists, at most.
pub const KEYS_PROVIDERS_MAX: usize = 1_000;

const ATTR_RECEIPT: &str = "receipt";

/// Whose receipts to list.
#[derive(Debug, Clone)]
pub enum ReceiptOwner {
    Client(Address),
    Provider(Address),
}

/// What verifying a posted receipt found.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Verification {
    pub valid: bool,
    pub provider_signature: bool,
    pub countersignature: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn receipt_key(id: &str) -> Key {
    keys::receipt(id)
}

/// The guard that allows one receipt per job, whatever its attempt or id.
pub(crate) fn job_receipt_guard(job_id: &str) -> Key {
    Key::new(keys::job(job_id).pk, "RECEIPT")
}

/// The writes that store a countersigned receipt (in the completing transaction). A stored
/// receipt never changes: its settlement is recorded on its job.
pub fn receipt_writes(receipt: &Receipt, now_ms: i64) -> Vec<TxWrite> {
    let body = &receipt.body;
    let id = body.receipt_id.as_str();
    let completed_ms = body.completed_at.saturating_mul(1_000);
    let mut item = Item::new(receipt_key(id))
        .with(ATTR_RECEIPT, serde_json::to_value(receipt).expect("serializes"))
        .with("job_id", body.job_id.as_str())
        .with("stored_at_ms", now_ms);
    for index in [
        keys::receipt_client_index(body.client.as_str(), completed_ms, id),
        keys::receipt_provider_index(body.provider.as_str(), completed_ms, id),
    ] {
        index.apply(&mut item.attrs);
    }
    let guard = Item::new(job_receipt_guard(body.job_id.as_str())).with("receipt_id", id);
    vec![TxWrite::Put { item, condition: Condition::Absent }, TxWrite::Put { item: guard, condition: Condition::Absent }]
}

pub fn receipt_from_item(item: &Item) -> Result<Receipt, MarketError> {
    let value = item.attrs.get(ATTR_RECEIPT).cloned().ok_or_else(|| MarketError::Internal("receipt item without receipt".into()))?;
    serde_json::from_value(value).map_err(|e| MarketError::Internal(format!("stored receipt does not parse: {e}")))
}

impl Market {
    pub async fn get_receipt(&self, caller: &Principal, id: &ReceiptId) -> Result<Receipt, MarketError> {
        let item = self.store.get(&receipt_key(id.as_str())).await?.ok_or_else(|| MarketError::not_found(format!("receipt {id}")))?;
        let receipt = receipt_from_item(&item)?;
        let body = &receipt.body;
        if caller.role != Role::Admin && caller.address != body.client && caller.address != body.provider {
            return Err(MarketError::Forbidden(format!("receipt {id} belongs to other accounts")));
        }
        Ok(receipt)
    }

    /// A page of receipts, newest first. Callers see their own; admins anyone's.
    pub async fn list_receipts(&self, caller: &Principal, owner: ReceiptOwner, limit: usize, cursor: Option<String>) -> Result<(Vec<Receipt>, Option<String>), MarketError> {
        let (address, query) = match &owner {
            ReceiptOwner::Client(a) => (a, keys::receipts_by_client(a.as_str())),
            ReceiptOwner::Provider(a) => (a, keys::receipts_by_provider(a.as_str())),
        };
        if caller.role != Role::Admin && &caller.address != address {
            return Err(MarketError::Forbidden("receipts of other accounts need an admin key".into()));
        }
        let page = self.store.query(query.descending().limit(limit.clamp(1, RECEIPTS_PAGE_MAX)).after(cursor)).await.map_err(|e| match e {
            StoreError::Invalid(r) => MarketError::invalid("cursor", r),
            e => e.into(),
        })?;
        let receipts = page.items.iter().map(receipt_from_item).collect::<Result<Vec<_>, _>>()?;
        Ok((receipts, page.cursor))
    }

    /// Verifies a receipt against the registry: the provider's signature by a key registered
    /// to that provider, and the countersignature (if any) by the marketplace's key.
    pub async fn verify_receipt(&self, receipt: &Receipt) -> Result<Verification, MarketError> {
        let provider_keys = self.provider_key_set(&receipt.body.provider).await?;
        let provider = receipt.verify(&provider_keys);
        let counter = match &receipt.countersignature {
            None => None,
            Some(_) => Some(receipt.verify_countersigned(&provider_keys, &self.marketplace_key_set()).is_ok()),
        };
        let valid = provider.is_ok() && counter != Some(false);
        let error = provider.err().map(|e| e.to_string()).or_else(|| (counter == Some(false)).then(|| "countersignature does not verify".to_string()));
        Ok(Verification { valid, provider_signature: error.is_none() || counter == Some(false), countersignature: counter, error })
    }

    pub fn marketplace_key_set(&self) -> KeySet {
        let mut set = KeySet::new();
        set.insert(&self.signing_key.public()).expect("the marketplace key is valid");
        set
    }

    /// The public keys receipts verify against: the marketplace's and every provider's.
    pub async fn key_document(&self) -> Result<KeySetDocument, MarketError> {
        let mut keys_out: Vec<PublicKeyEntry> = vec![self.signing_key.public()];
        let page = self.store.query(keys::providers().limit(KEYS_PROVIDERS_MAX)).await?;
        for item in &page.items {
            let provider: crate::accounts::ProviderRecord = from_item(item)?;
            keys_out.extend(self.provider_keys(&provider.address).await?);
        }
        Ok(KeySetDocument { keys: keys_out, marketplace_key_id: Some(self.signing_key.key_id.clone()) })
    }
}
