//! Fixed-rate contracts (the provider guide's `create_contract`): a provider offers one client a
//! rate per GPU-hour for a number of GPU-hours, with a guaranteed availability; once the client
//! accepts (before the offer expires), the client's jobs on that provider's listings that are
//! priced at submission pay the contract's rate (no strategy, tier or discount multiplies it)
//! until the hours are used.
//!
//! Hours are counted at submission by the GPU time each job may use (its hold's units), in the
//! submitting transaction itself (`remaining_ms` added to with a floor of 0), so two jobs can
//! never use the same hours; a job that does not fit the hours left is priced at the market.
//! A contract lives at `CONTRACT#<provider>` / `CLIENT#<client>`: one per pair. The job records
//! the contract's terms (`JobRecord::contract`); its completion adds to the contract's counters
//! of completed and available jobs and, with `sla_penalties`, pays the listing's SLA penalty
//! when the measured availability falls below the guarantee (`aitbc_core::capacity`).

use crate::auth::{Principal, Role};
use crate::records::{from_item, to_item};
use crate::registry::BASE_PRICE_PER_HOUR_MAX;
use crate::{Market, MarketError};
use aitbc_core::money::BPS_ONE;
use aitbc_core::money::{Amount, Rate};
use aitbc_core::pricing::Contract;
use aitbc_core::values::{AccountRef, Address};
use aitbc_store::{keys, Condition, Item, StoreError, TxWrite, Update};
use serde::{Deserialize, Serialize};

/// A contract covers at most a year of GPU-hours.
pub const CONTRACT_HOURS_MAX: u32 = 8_760;
/// An offer stands at most 30 days.
pub const OFFER_VALID_HOURS_MAX: u32 = 720;
/// An offer stands a week unless the provider says otherwise.
pub const OFFER_VALID_HOURS_DEFAULT: u32 = 168;
/// Contracts per page, at most.
pub const CONTRACTS_PAGE_MAX: usize = 100;
/// GPU-milliseconds of the contract not used yet.
const ATTR_REMAINING_MS: &str = "remaining_ms";
const ATTR_STATE: &str = "state";
const ATTR_OFFERED_AT: &str = "offered_at_ms";
/// Contract jobs completed, and those of them that started within the listing's SLA time.
const ATTR_JOBS_COMPLETED: &str = "jobs_completed";
const ATTR_JOBS_AVAILABLE: &str = "jobs_available";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ContractState {
    /// Offered by the provider, not accepted yet.
    Offered,
    /// Accepted: the client's jobs on the provider pay its rate while hours remain.
    Active,
    /// Served only: an offer nobody accepted before it expired (it may be offered again).
    Expired,
    /// Served only: an active contract whose hours are all used (it may be offered again).
    UsedUp,
}

fn default_true() -> bool {
    true
}

fn default_offer_hours() -> u32 {
    OFFER_VALID_HOURS_DEFAULT
}

/// What a provider sends to offer a contract.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewContract {
    /// The client: its address, or the agent name it registered.
    pub client: AccountRef,
    /// AITBC per GPU-hour (above 0, at most 1000000).
    pub fixed_rate: Amount,
    /// GPU-hours it covers (1..=8760).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 8760))]
    pub hours: u32,
    /// The share of the contract's jobs that start within the listing's SLA response time, at
    /// least (0..=10000 basis points; 0: no guarantee).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 10000))]
    pub guaranteed_availability_bps: u32,
    /// Whether a job completing below the guarantee pays the listing's SLA penalty.
    #[serde(default = "default_true")]
    pub sla_penalties: bool,
    /// How long the client has to accept, in hours (1..=720, default 168).
    #[serde(default = "default_offer_hours")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 720))]
    pub offer_valid_hours: u32,
}

/// A contract as stored and served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ContractRecord {
    pub provider: Address,
    pub client: Address,
    /// AITBC per GPU-hour.
    pub fixed_rate: Amount,
    pub hours: u32,
    pub state: ContractState,
    #[serde(default)]
    pub guaranteed_availability_bps: u32,
    #[serde(default = "default_true")]
    pub sla_penalties: bool,
    pub offered_at_ms: i64,
    #[serde(default)]
    pub offer_expires_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_at_ms: Option<i64>,
    /// GPU-seconds not used yet (a decimal string), filled in when served.
    #[serde(default)]
    pub remaining: Option<String>,
    /// Contract jobs completed, filled in when served.
    #[serde(default)]
    pub jobs_completed: u64,
    /// Of those, the jobs that started within the listing's SLA response time.
    #[serde(default)]
    pub jobs_available: u64,
    /// `jobs_available / jobs_completed` in basis points (None before the first completion).
    #[serde(default)]
    pub availability_bps: Option<u32>,
}

/// A page of contracts.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ContractPage {
    pub items: Vec<ContractRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// The contract a job was priced by: what its completion needs to measure availability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobContract {
    /// Which offer of the pair (a pair's contract may be offered again once used up).
    pub offered_at_ms: i64,
    pub guaranteed_availability_bps: u32,
    pub sla_penalties: bool,
}

/// An active contract that applies to a job: its pricing terms, what the job records, and the
/// write that uses the job's hours (in the submitting transaction).
pub struct AppliedContract {
    pub contract: Contract,
    pub job: JobContract,
    pub write: TxWrite,
}

fn int_u64(item: &Item, attr: &str) -> u64 {
    item.int(attr).unwrap_or(0).max(0) as u64
}

impl Market {
    /// A provider offers `new.client` a fixed rate for some GPU-hours. An offer replaces an
    /// earlier offer (accepted or not) of the pair, never an active one with hours left.
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
        if new.guaranteed_availability_bps > BPS_ONE {
            return Err(MarketError::invalid("guaranteed_availability_bps", format!("must be 0..={BPS_ONE} (a share of the jobs)")));
        }
        if !(1..=OFFER_VALID_HOURS_MAX).contains(&new.offer_valid_hours) {
            return Err(MarketError::invalid("offer_valid_hours", format!("must be 1..={OFFER_VALID_HOURS_MAX}")));
        }
        let client = self.resolve_account(&new.client).await?;
        if client == caller.address || self.is_provider(&client).await? {
            return Err(MarketError::invalid("client", "a contract is offered to a client account"));
        }
        let key = keys::contract(caller.address.as_str(), client.as_str());
        let now = self.now_ms();
        let condition = match self.store.get(&key).await? {
            None => Condition::Absent,
            Some(item) => {
                let remaining = item.int(ATTR_REMAINING_MS).unwrap_or(0);
                let state = item.str(ATTR_STATE).unwrap_or("").to_string();
                if state == "active" && remaining > 0 {
                    return Err(MarketError::Conflict(format!("client {client} has an active contract with hours left")));
                }
                // Unchanged since read: an acceptance or a job in between makes this a conflict.
                Condition::And(vec![Condition::equals(ATTR_REMAINING_MS, remaining), Condition::equals(ATTR_STATE, state), Condition::equals(ATTR_OFFERED_AT, item.int(ATTR_OFFERED_AT).unwrap_or(0))])
            }
        };
        let record = ContractRecord {
            provider: caller.address.clone(),
            client: client.clone(),
            fixed_rate: new.fixed_rate,
            hours: new.hours,
            state: ContractState::Offered,
            guaranteed_availability_bps: new.guaranteed_availability_bps,
            sla_penalties: new.sla_penalties,
            offered_at_ms: now,
            offer_expires_at_ms: now + i64::from(new.offer_valid_hours) * 3_600_000,
            accepted_at_ms: None,
            remaining: None,
            jobs_completed: 0,
            jobs_available: 0,
            availability_bps: None,
        };
        let remaining_ms = i64::from(new.hours) * 3_600_000;
        let item = to_item(key, &record, &[keys::contract_client_index(client.as_str(), caller.address.as_str())])
            .with(ATTR_REMAINING_MS, remaining_ms)
            .with(ATTR_JOBS_COMPLETED, 0)
            .with(ATTR_JOBS_AVAILABLE, 0);
        match self.store.put(item.clone(), condition).await {
            Ok(()) => Ok(self.served_contract(&item)?),
            Err(StoreError::ConditionFailed { .. }) => Err(MarketError::Conflict("the contract changed meanwhile; read it again".into())),
            Err(e) => Err(e.into()),
        }
    }

    /// The client accepts the contract `provider` offered it, before the offer expires.
    pub async fn accept_contract(&self, caller: &Principal, provider: &Address) -> Result<ContractRecord, MarketError> {
        caller.require(Role::Client)?;
        let key = keys::contract(provider.as_str(), caller.address.as_str());
        let item = self.store.get(&key).await?.ok_or_else(|| MarketError::not_found(format!("a contract of provider {provider} for you")))?;
        let record: ContractRecord = from_item(&item)?;
        if record.state != ContractState::Offered {
            return Err(MarketError::Conflict("the contract is accepted already".into()));
        }
        let now = self.now_ms();
        if now >= record.offer_expires_at_ms {
            return Err(MarketError::Conflict(format!("the offer expired at {} (unix ms); ask the provider for a new one", record.offer_expires_at_ms)));
        }
        let update = Update::new().set(ATTR_STATE, "active").set("accepted_at_ms", now);
        let condition = Condition::And(vec![Condition::equals(ATTR_STATE, "offered"), Condition::equals(ATTR_OFFERED_AT, record.offered_at_ms)]);
        match self.store.update(&key, update, condition).await {
            Ok(updated) => self.served_contract(&updated),
            Err(StoreError::ConditionFailed { .. }) => Err(MarketError::Conflict("the contract changed meanwhile; read it again".into())),
            Err(e) => Err(e.into()),
        }
    }

    /// The contract between `provider` and `client` (either of them, or an admin, may read it).
    pub async fn get_contract(&self, caller: &Principal, provider: &Address, client: &Address) -> Result<ContractRecord, MarketError> {
        if caller.role != Role::Admin && &caller.address != provider && &caller.address != client {
            return Err(MarketError::Forbidden("a contract is its provider's and its client's".into()));
        }
        let item = self.store.get(&keys::contract(provider.as_str(), client.as_str())).await?.ok_or_else(|| MarketError::not_found("contract"))?;
        self.served_contract(&item)
    }

    /// The caller's contracts: a provider's (one per client), or a client's (one per provider).
    pub async fn list_contracts(&self, caller: &Principal, limit: usize, cursor: Option<String>) -> Result<ContractPage, MarketError> {
        let query = match caller.role {
            Role::Provider => keys::contracts_by_provider(caller.address.as_str()),
            Role::Client => keys::contracts_by_client(caller.address.as_str()),
            Role::Admin => return Err(MarketError::Forbidden("contracts are listed by their provider or client".into())),
        };
        let page = self.store.query(query.limit(limit.clamp(1, CONTRACTS_PAGE_MAX)).after(cursor)).await.map_err(|e| match e {
            StoreError::Invalid(r) => MarketError::invalid("cursor", r),
            e => e.into(),
        })?;
        let mut items = Vec::with_capacity(page.items.len());
        for item in &page.items {
            // An index entry may lag the table: serve the item as it is now.
            let fresh = match caller.role {
                Role::Client => self.store.get(&item.key).await?,
                _ => Some(item.clone()),
            };
            if let Some(fresh) = fresh {
                items.push(self.served_contract(&fresh)?);
            }
        }
        Ok(ContractPage { items, cursor: page.cursor })
    }

    fn served_contract(&self, item: &Item) -> Result<ContractRecord, MarketError> {
        let mut record: ContractRecord = from_item(item)?;
        let remaining_ms = item.int(ATTR_REMAINING_MS).unwrap_or(0).max(0);
        record.remaining = Some(aitbc_core::money::GpuMillis::from_millis(remaining_ms as u64).to_string());
        record.jobs_completed = int_u64(item, ATTR_JOBS_COMPLETED);
        record.jobs_available = int_u64(item, ATTR_JOBS_AVAILABLE).min(record.jobs_completed);
        record.availability_bps = (record.jobs_completed > 0).then(|| (u128::from(record.jobs_available) * u128::from(BPS_ONE) / u128::from(record.jobs_completed)) as u32);
        record.state = match record.state {
            ContractState::Offered if self.now_ms() >= record.offer_expires_at_ms => ContractState::Expired,
            ContractState::Active if remaining_ms == 0 => ContractState::UsedUp,
            s => s,
        };
        Ok(record)
    }

    /// The active contract of `client` with `provider` that has at least `units_ms` left, with
    /// the write that uses them (conditional on the same contract still being active).
    pub(crate) async fn applicable_contract(&self, provider: &Address, client: &Address, units_ms: u64) -> Result<Option<AppliedContract>, MarketError> {
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
        let job = JobContract { offered_at_ms: record.offered_at_ms, guaranteed_availability_bps: record.guaranteed_availability_bps, sla_penalties: record.sla_penalties };
        let update = Update::new().add(ATTR_REMAINING_MS, -units, Some(0));
        let condition = Condition::And(vec![Condition::equals(ATTR_STATE, "active"), Condition::equals(ATTR_OFFERED_AT, record.offered_at_ms)]);
        Ok(Some(AppliedContract { contract, job, write: TxWrite::Update { key, update, condition } }))
    }

    /// For a contract job completing now: whether it pays the SLA penalty (the measured
    /// availability with it falls below the guarantee, and the contract has SLA penalties), and
    /// the write that counts it on the contract. None when the contract the job was priced by
    /// is gone or was offered again since (the listing's per-job SLA rule applies then).
    pub(crate) async fn contract_completion(&self, provider: &Address, client: &Address, terms: &JobContract, available_now: bool) -> Result<Option<(bool, TxWrite)>, MarketError> {
        let key = keys::contract(provider.as_str(), client.as_str());
        let Some(item) = self.store.get(&key).await? else { return Ok(None) };
        if item.int(ATTR_OFFERED_AT) != Some(terms.offered_at_ms) {
            return Ok(None);
        }
        let completed = int_u64(&item, ATTR_JOBS_COMPLETED);
        let available = int_u64(&item, ATTR_JOBS_AVAILABLE).min(completed);
        let breached = terms.sla_penalties && aitbc_core::capacity::availability_breached(completed, available, available_now, terms.guaranteed_availability_bps);
        let update = Update::new().add(ATTR_JOBS_COMPLETED, 1, None).add(ATTR_JOBS_AVAILABLE, i64::from(available_now), None);
        // Present only: the counters are exact atomic adds; the decision above read them a
        // moment before (two completions at once may both see the other's job missing).
        Ok(Some((breached, TxWrite::Update { key, update, condition: Condition::Present })))
    }
}
