//! Accounts: opening one (an address and an API key shown once), balances, deposits (admin, or
//! anyone where the local faucet is on), withdrawals and the ledger history.

use crate::auth::{Principal, Role};
use crate::records::to_item;
use crate::{Market, MarketError};
use aitbc_core::ledger::{AccountId, Applied, Balance, Transfer};
use aitbc_core::money::Amount;
use aitbc_core::values::{AccountRef, Address, AgentName, TransferId};
use aitbc_store::{keys, Condition};
use serde::{Deserialize, Serialize};

/// A single deposit is at most a billion AITBC (a bound on typos, not on wealth).
pub const DEPOSIT_MAX: Amount = Amount::from_raw(1_000_000_000 * 1_000_000_000);

/// What opening an account returns: the secret is shown this once.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OpenedAccount {
    pub address: Address,
    pub role: Role,
    pub api_key: String,
    /// The agent name it registered, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<AgentName>,
}

/// A provider's profile in the registry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProviderRecord {
    pub address: Address,
    pub created_at_ms: i64,
}

/// An owner's balances: the wallet, and for providers the earnings awaiting payout.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Balances {
    pub address: Address,
    pub wallet: Balance,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub earnings: Option<Balance>,
}

impl Market {
    /// Opens an account with a role and its first API key. Signup is open in local mode;
    /// otherwise, and always for the admin role, it needs an admin caller.
    pub async fn open_account_with_key(
        &self,
        caller: Option<&Principal>,
        role: Role,
        spending_limit: Option<Amount>,
    ) -> Result<OpenedAccount, MarketError> {
        self.open_named_account(caller, role, spending_limit, None).await
    }

    /// [`Market::open_account_with_key`] with an agent name others may use for the account
    /// (a contract's or reservation's `client`). The name's guard is written first, only if
    /// absent: a taken name refuses the request before an account exists.
    pub async fn open_named_account(
        &self,
        caller: Option<&Principal>,
        role: Role,
        spending_limit: Option<Amount>,
        name: Option<AgentName>,
    ) -> Result<OpenedAccount, MarketError> {
        let is_admin = caller.is_some_and(|p| p.role == Role::Admin);
        if !is_admin && (role == Role::Admin || !self.settings.open_signup) {
            return match caller {
                None => Err(MarketError::Unauthenticated("opening this account needs an admin key".into())),
                Some(_) => Err(MarketError::Forbidden("opening this account needs an admin key".into())),
            };
        }
        let address = Address::generate();
        if let Some(name) = &name {
            let guard = aitbc_store::Item::new(keys::agent_name(name.as_str())).with("address", address.as_str()).with("role", role.name());
            match self.store.put(guard, Condition::Absent).await {
                Ok(()) => {}
                Err(aitbc_store::StoreError::ConditionFailed { .. }) => return Err(MarketError::Conflict(format!("the name {name} is taken"))),
                Err(e) => return Err(e.into()),
            }
        }
        self.open_account(&AccountId::wallet(&address), spending_limit).await?;
        if role == Role::Provider {
            self.open_account(&AccountId::earnings(&address), None).await?;
            let record = ProviderRecord { address: address.clone(), created_at_ms: self.now_ms() };
            let item = to_item(keys::provider(address.as_str()), &record, &[keys::provider_list_index(address.as_str())]);
            self.store.put(item, Condition::Absent).await?;
        }
        let api_key = self.issue_api_key(&address, role).await?;
        Ok(OpenedAccount { address, role, api_key, name })
    }

    /// Makes sure the platform's fee account exists, and an admin key if `admin` is given
    /// (`aitbc up` keeps one in its data directory).
    pub async fn bootstrap(&self) -> Result<(), MarketError> {
        self.open_account(&AccountId::fee(&self.platform), None).await
    }

    /// The address an account reference names: itself, or the account that registered the
    /// name. A name nobody took, or an address without a wallet, is not found.
    pub async fn resolve_account(&self, account: &AccountRef) -> Result<Address, MarketError> {
        let address = match account {
            AccountRef::Address(address) => address.clone(),
            AccountRef::Name(name) => {
                let guard = self.store.get(&keys::agent_name(name.as_str())).await?.ok_or_else(|| MarketError::not_found(format!("agent {name}")))?;
                let text = guard.str("address").ok_or_else(|| MarketError::Internal(format!("agent name {name} without an address")))?;
                Address::parse(text).map_err(|e| MarketError::Internal(format!("agent name {name}: {e}")))?
            }
        };
        match self.account(&AccountId::wallet(&address)).await {
            Ok(_) => Ok(address),
            Err(MarketError::NotFound { .. }) => Err(MarketError::not_found(format!("account {account}"))),
            Err(e) => Err(e),
        }
    }

    /// Whether `address` is a registered provider.
    pub async fn is_provider(&self, address: &Address) -> Result<bool, MarketError> {
        Ok(self.store.get(&keys::provider(address.as_str())).await?.is_some())
    }

    pub async fn balances(&self, caller: &Principal, address: &Address) -> Result<Balances, MarketError> {
        if &caller.address != address {
            caller.require_admin()?;
        }
        let (_, wallet) = self.account(&AccountId::wallet(address)).await?;
        let earnings = match self.account(&AccountId::earnings(address)).await {
            Ok((_, b)) => Some(b),
            Err(MarketError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        Ok(Balances { address: address.clone(), wallet, earnings })
    }

    /// Deposits into `to`'s wallet. `transfer_id` makes a retried deposit apply once.
    pub async fn deposit(&self, caller: &Principal, to: &Address, amount: Amount, transfer_id: TransferId) -> Result<Applied, MarketError> {
        if !self.settings.faucet {
            caller.require_admin()?;
        } else if &caller.address != to {
            // The faucet funds one's own wallet; funding others stays an admin's business.
            caller.require_admin()?;
        }
        if amount.is_zero() || amount > DEPOSIT_MAX {
            return Err(MarketError::invalid("amount", format!("must be above 0 and at most {DEPOSIT_MAX}")));
        }
        self.apply_transfer(&Transfer::Deposit { id: transfer_id, to: AccountId::wallet(to), amount }, vec![]).await
    }

    /// Withdraws from the caller's own wallet.
    pub async fn withdraw(&self, caller: &Principal, amount: Amount, transfer_id: TransferId) -> Result<Applied, MarketError> {
        if amount.is_zero() {
            return Err(MarketError::invalid("amount", "must be above 0"));
        }
        let from = AccountId::wallet(&caller.address);
        self.apply_transfer(&Transfer::Withdraw { id: transfer_id, from, amount }, vec![]).await
    }
}
