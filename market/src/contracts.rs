//! Fixed-rate contracts (the provider guide's `create_contract`): a provider offers one client a
//! rate per GPU-hour for a number of GPU-hours; once the client accepts, the client's jobs on
//! that provider's listings that are priced at submission pay the contract's rate (no strategy,
//! tier or discount multiplies it) until the hours are used.
//!
//! Hours are counted at submission by the GPU time each job may use (its hold's units), in the
//! submitting transaction itself (`remaining_ms` added to with a floor of 0), so two jobs can
//! never use the same hours; a job that does not fit the hours left is priced at the market.
//! A contract lives at `CONTRACT#<provider>` / `CLIENT#<client>`: one per pair.

use crate::auth::{Principal, Role};
use crate::records::{from_item, to_item};
use crate::registry::BASE_PRICE_PER_HOUR_MAX;
use crate::{Market, MarketError};
use aitbc_core::ledger::AccountId;
use aitbc_core::money::{Amount, Rate};
use aitbc_core::pricing::Contract;
use aitbc_store::{keys, Condition, StoreError, TxWrite, Update};
use serde::{Deserialize, Serialize};

/// A contract covers at most a year of GPU-hours.
pub const CONTRACT_HOURS_MAX: u32 = 8_760;
/// GPU-milliseconds of the contract not used yet.
const ATTR_REMAINING_MS: &str = "remaining_ms";
const ATTR_STATE: &str = "state";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ContractState {
    /// Offered by the provider, not accepted yet.
    Offered,
    /// Accepted: the client's jobs on the provider pay its rate while hours remain.
    Active,
}

/// What a provider sends to offer a contract.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewContract {
    /// The client's address (an existing client account).
    pub client: aitbc_core::values::Address,
    /// AITBC per GPU-hour.
    pub fixed_rate: Amount,
    /// GPU-hours it covers (1..=8760).
    pub hours: u32,
}

/// A contract as stored and served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ContractRecord {
    pub provider: aitbc_core::values::Address,
    pub client: aitbc_core::values::Address,
    /// AITBC per GPU-hour.
    pub fixed_rate: Amount,
    pub hours: u32,
    pub state: ContractState,
    pub offered_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_at_ms: Option<i64>,
    /// GPU-seconds not used yet (a decimal string), filled in when served.
    #[serde(default)]
    pub remaining: Option<String>,
}

/// An active contract that applies to a job: its pricing terms and the write that uses the
/// job's hours (in the submitting transaction).
pub struct AppliedContract {
    pub contract: Contract,
    pub write: TxWrite,
}

impl Market {
    /// A provider offers `new.client` a fixed rate for some GPU-hours. An offer replaces an
    /// earlier offer or a used-up contract of the pair, never an active one with hours left.
    pub async fn offer_contract(&self, caller: &Principal, new: NewContract) -> Result<ContractRecord, MarketError> {
        caller.require(Role::Provider)?;
        if !self.is_provider(&caller.address).await? {
            return Err(MarketError::Forbidden("only a provider account can offer contracts".into()));
        }
        if new.fixed_rate.is_zero() || new.fixed_rate > BASE_PRICE_PER_HOUR_MAX {
            return Err(MarketError::invalid("fixed_rate", format!("must be above 0 and at most {BASE_PRICE_PER_HOUR_MAX} per GPU-hour")));
        }
        if !(1..=CONTRACT_HOURS_MAX).contains(&new.hours) {
            return Err(MarketError::invalid("hours", format!("must be 1..={CONTRACT_HOURS_MAX}")));
        }
        if new.client == caller.address || self.is_provider(&new.client).await? {
            return Err(MarketError::invalid("client", "a contract is offered to a client account"));
        }
        match self.account(&AccountId::wallet(&new.client)).await {
            Ok(_) => {}
            Err(MarketError::NotFound { .. }) => return Err(MarketError::not_found(format!("client {}", new.client))),
            Err(e) => return Err(e),
        }
        let key = keys::contract(caller.address.as_str(), new.client.as_str());
        let condition = match self.store.get(&key).await? {
            None => Condition::Absent,
            Some(item) => {
                let remaining = item.int(ATTR_REMAINING_MS).unwrap_or(0);
                if item.str(ATTR_STATE) == Some("active") && remaining > 0 {
                    return Err(MarketError::Conflict(format!("client {} has an active contract with hours left", new.client)));
                }
                Condition::equals(ATTR_REMAINING_MS, remaining)
            }
        };
        let record = ContractRecord {
            provider: caller.address.clone(),
            client: new.client.clone(),
            fixed_rate: new.fixed_rate,
            hours: new.hours,
            state: ContractState::Offered,
            offered_at_ms: self.now_ms(),
            accepted_at_ms: None,
            remaining: None,
        };
        let item = to_item(key, &record, &[]).with(ATTR_REMAINING_MS, i64::from(new.hours) * 3_600_000);
        match self.store.put(item, condition).await {
            Ok(()) => Ok(self.served(record, i64::from(new.hours) * 3_600_000)),
            Err(StoreError::ConditionFailed { .. }) => Err(MarketError::Conflict("the contract changed meanwhile; read it again".into())),
            Err(e) => Err(e.into()),
        }
    }

    /// The client accepts the contract `provider` offered it.
    pub async fn accept_contract(&self, caller: &Principal, provider: &aitbc_core::values::Address) -> Result<ContractRecord, MarketError> {
        caller.require(Role::Client)?;
        let key = keys::contract(provider.as_str(), caller.address.as_str());
        let item = self.store.get(&key).await?.ok_or_else(|| MarketError::not_found(format!("a contract of provider {provider} for you")))?;
        let mut record: ContractRecord = from_item(&item)?;
        if record.state != ContractState::Offered {
            return Err(MarketError::Conflict("the contract is accepted already".into()));
        }
        let now = self.now_ms();
        let update = Update::new().set(ATTR_STATE, "active").set("accepted_at_ms", now);
        match self.store.update(&key, update, Condition::equals(ATTR_STATE, "offered")).await {
            Ok(_) => {}
            Err(StoreError::ConditionFailed { .. }) => return Err(MarketError::Conflict("the contract changed meanwhile; read it again".into())),
            Err(e) => return Err(e.into()),
        }
        record.state = ContractState::Active;
        record.accepted_at_ms = Some(now);
        Ok(self.served(record, item.int(ATTR_REMAINING_MS).unwrap_or(0)))
    }

    /// The contract between `provider` and `client` (either of them, or an admin, may read it).
    pub async fn get_contract(&self, caller: &Principal, provider: &aitbc_core::values::Address, client: &aitbc_core::values::Address) -> Result<ContractRecord, MarketError> {
        if caller.role != Role::Admin && &caller.address != provider && &caller.address != client {
            return Err(MarketError::Forbidden("a contract is its provider's and its client's".into()));
        }
        let item = self.store.get(&keys::contract(provider.as_str(), client.as_str())).await?.ok_or_else(|| MarketError::not_found("contract"))?;
        let record: ContractRecord = from_item(&item)?;
        Ok(self.served(record, item.int(ATTR_REMAINING_MS).unwrap_or(0)))
    }

    fn served(&self, mut record: ContractRecord, remaining_ms: i64) -> ContractRecord {
        record.remaining = Some(aitbc_core::money::GpuMillis::from_millis(remaining_ms.max(0) as u64).to_string());
        record
    }

    /// The active contract of `client` with `provider` that has at least `units_ms` left, with
    /// the write that uses them (conditional on the hours still being there).
    pub(crate) async fn applicable_contract(&self, provider: &aitbc_core::values::Address, client: &aitbc_core::values::Address, units_ms: u64) -> Result<Option<AppliedContract>, MarketError> {
        let key = keys::contract(provider.as_str(), client.as_str());
        let Some(item) = self.store.get(&key).await? else { return Ok(None) };
        let record: ContractRecord = from_item(&item)?;
        let remaining = item.int(ATTR_REMAINING_MS).unwrap_or(0);
        let units = i64::try_from(units_ms).unwrap_or(i64::MAX);
        if record.state != ContractState::Active || remaining < units {
            return Ok(None);
        }
        let accepted = record.accepted_at_ms.unwrap_or(record.offered_at_ms);
        let contract = Contract { fixed_rate: Rate::per_hour(record.fixed_rate), valid_from_ms: accepted, valid_until_ms: i64::MAX };
        let update = Update::new().add(ATTR_REMAINING_MS, -units, Some(0));
        Ok(Some(AppliedContract { contract, write: TxWrite::Update { key, update, condition: Condition::equals(ATTR_STATE, "active") } }))
    }
}
