//! Reserved capacity (the provider guide's `reserve_capacity`): a provider offers one client a
//! share of a listing (slots of its `max_concurrent_jobs`, or GPU memory, which is converted to
//! slots) for a duration at a fee; the client accepts and pays the fee, and from then until the
//! reservation ends the listing keeps that share of its queue for the client.
//!
//! - **Money.** Acceptance is one transaction: a `Transfer::Pay` of the fee from the client's
//!   wallet to the provider's earnings with the platform's fee (the job fee rate, rounded down)
//!   to the fee account; the reservation's state (`offered` -> `active`, only if still offered);
//!   and the listing's list of live reservations (only if unchanged since read). The transfer id
//!   is named after the reservation, so the fee moves at most once; too little money refuses it
//!   all (402) and nothing changes.
//! - **Routing.** The listing's item carries its live reservations (`reservations`, at most
//!   `RESERVATIONS_PER_LISTING_MAX`) and a version moved by every change of them. A submission
//!   takes its queue place with a floor of the slots the *other* clients' live reservations hold
//!   (`aitbc_core::capacity`), on the condition that the version is the one it read, so that
//!   a reservation accepted meanwhile is honoured. Expiry is computed from the stored end time:
//!   nothing sweeps reservations, and an ended one holds nothing.

use crate::auth::{Principal, Role};
use crate::records::{from_item, to_item};
use crate::registry::{ListingStatus, ATTR_QUEUE_ROOM};
use crate::{Market, MarketError};
use aitbc_core::capacity::{self, CapacityError, Held, RESERVATIONS_PER_LISTING_MAX};
use aitbc_core::ledger::{AccountId, Transfer};
use aitbc_core::money::Amount;
use aitbc_core::values::{AccountRef, Address, ListingId, ReservationId, TransferId};
use aitbc_store::{keys, Condition, Item, StoreError, TxWrite, Update};
use serde::{Deserialize, Serialize};

/// A reservation fee is at most a million AITBC (a bound on typos).
pub const RESERVATION_FEE_MAX: Amount = Amount::from_raw(1_000_000 * 1_000_000_000);
/// An offer stands at most 30 days, a week unless said otherwise.
pub const RESERVATION_OFFER_HOURS_MAX: u32 = 720;
pub const RESERVATION_OFFER_HOURS_DEFAULT: u32 = 168;
/// Reservations per page, at most.
pub const RESERVATIONS_PAGE_MAX: usize = 100;
/// The listing's live reservations (a JSON array of `Held`) and the version of that list.
pub(crate) const ATTR_RESERVATIONS: &str = "reservations";
pub(crate) const ATTR_RESERVATIONS_VERSION: &str = "reservations_version";
const ATTR_STATE: &str = "state";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ReservationState {
    /// Offered by the provider, not accepted (nor paid) yet.
    Offered,
    /// Paid for: the share is the client's until `ends_at_ms`.
    Active,
    /// Served only: an offer nobody accepted before it expired.
    Expired,
    /// Served only: an active reservation past its end.
    Ended,
}

fn default_offer_hours() -> u32 {
    RESERVATION_OFFER_HOURS_DEFAULT
}

/// What a provider sends to offer a reservation: the share as `slots` or as `gpu_memory_gib`
/// (exactly one of them).
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewReservation {
    /// The listing whose capacity is reserved (the caller's own, active and online).
    pub gpu_id: ListingId,
    /// The client: its address, or the agent name it registered.
    pub client: AccountRef,
    /// Slots of the listing's `max_concurrent_jobs` (at least 1, at most all of them).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 4096))]
    pub slots: Option<u32>,
    /// GPU memory in GiB (at least 1, at most the listing's), converted to whole slots.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 4096))]
    pub gpu_memory_gib: Option<u32>,
    /// How long, from acceptance: `<N>h` or `<N>d`, 1h..=90d.
    #[cfg_attr(feature = "openapi", schema(pattern = r"^(([1-9]|[1-9][0-9]|[1-9][0-9][0-9]|1[0-9]{3}|20[0-9]{2}|21[0-5][0-9]|2160)h|([1-9]|[1-8][0-9]|90)d)$"))]
    pub duration: String,
    /// The fee the client pays on acceptance, in AITBC (above 0, at most 1000000).
    pub fee: Amount,
    /// How long the client has to accept, in hours (1..=720, default 168).
    #[serde(default = "default_offer_hours")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 720))]
    pub offer_valid_hours: u32,
}

/// A reservation as stored and served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Reservation {
    pub reservation_id: ReservationId,
    pub gpu_id: ListingId,
    pub provider: Address,
    pub client: Address,
    /// The share: slots of the listing's concurrent jobs (and the queue places kept free).
    pub slots: u32,
    /// The GPU memory asked for, when the share was given as memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory_gib: Option<u32>,
    pub duration_hours: u32,
    /// What the client pays on acceptance.
    pub fee: Amount,
    /// Of the fee, the platform's share (the job fee rate, rounded down).
    pub platform_fee: Amount,
    pub state: ReservationState,
    pub offered_at_ms: i64,
    pub offer_expires_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at_ms: Option<i64>,
}

/// A page of reservations.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReservationPage {
    pub items: Vec<Reservation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

fn capacity_error(e: CapacityError) -> MarketError {
    match e {
        CapacityError::Overbooked { .. } => MarketError::Conflict(e.to_string()),
        CapacityError::Duration => MarketError::invalid("duration", e.to_string()),
        CapacityError::Empty | CapacityError::LargerThanListing { .. } => MarketError::invalid("slots", e.to_string()),
    }
}

/// The live reservations a listing's item carries, and the version of that list (None: never
/// reserved).
pub(crate) fn held_of(item: &Item) -> Result<(Vec<Held>, Option<i64>), MarketError> {
    let held = match item.attrs.get(ATTR_RESERVATIONS) {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(value) => serde_json::from_value(value.clone()).map_err(|e| MarketError::Internal(format!("stored reservations do not parse: {e}")))?,
    };
    Ok((held, item.int(ATTR_RESERVATIONS_VERSION)))
}

/// The condition that the listing's reservations are still those read at `version`.
pub(crate) fn unchanged(version: Option<i64>) -> Condition {
    match version {
        Some(v) => Condition::equals(ATTR_RESERVATIONS_VERSION, v),
        None => Condition::AttrAbsent(ATTR_RESERVATIONS_VERSION.into()),
    }
}

impl Market {
    /// A provider offers `new.client` a share of one of its listings.
    pub async fn offer_reservation(&self, caller: &Principal, new: NewReservation) -> Result<Reservation, MarketError> {
        caller.require(Role::Provider)?;
        let duration_hours = capacity::parse_duration_hours(&new.duration).map_err(capacity_error)?;
        if new.fee.is_zero() || new.fee > RESERVATION_FEE_MAX {
            return Err(MarketError::invalid("fee", format!("must be above 0 and at most {RESERVATION_FEE_MAX}")));
        }
        if !(1..=RESERVATION_OFFER_HOURS_MAX).contains(&new.offer_valid_hours) {
            return Err(MarketError::invalid("offer_valid_hours", format!("must be 1..={RESERVATION_OFFER_HOURS_MAX}")));
        }
        let item = self.listing_item(&new.gpu_id).await?;
        let view = self.listing_view(&item)?;
        let listing = &view.listing;
        if caller.address != listing.provider {
            return Err(MarketError::Forbidden(format!("GPU listing {} belongs to another provider", listing.gpu_id)));
        }
        let total = listing.max_concurrent_jobs;
        let slots = match (new.slots, new.gpu_memory_gib) {
            (Some(slots), None) => slots,
            (None, Some(gib)) => capacity::slots_for_memory(gib, listing.memory_gib.gib(), total).map_err(|e| match e {
                CapacityError::LargerThanListing { .. } | CapacityError::Empty => MarketError::invalid("gpu_memory_gib", e.to_string()),
                e => capacity_error(e),
            })?,
            _ => return Err(MarketError::invalid("slots", "give the share as slots or as gpu_memory_gib (one of them)")),
        };
        if slots == 0 || slots > total {
            return Err(capacity_error(CapacityError::LargerThanListing { asked: slots, have: total, unit: "slots" }));
        }
        self.reservable(&view)?;
        let (held, _) = held_of(&item)?;
        capacity::check_room(&held, self.now_ms(), slots, total).map_err(capacity_error)?;
        let client = self.resolve_account(&new.client).await?;
        if client == caller.address || self.is_provider(&client).await? {
            return Err(MarketError::invalid("client", "capacity is reserved for a client account"));
        }
        let now = self.now_ms();
        let reservation = Reservation {
            reservation_id: ReservationId::generate(),
            gpu_id: listing.gpu_id.clone(),
            provider: caller.address.clone(),
            client: client.clone(),
            slots,
            gpu_memory_gib: new.gpu_memory_gib,
            duration_hours,
            fee: new.fee,
            platform_fee: new.fee.share_bps(self.config.fee_bps),
            state: ReservationState::Offered,
            offered_at_ms: now,
            offer_expires_at_ms: now + i64::from(new.offer_valid_hours) * 3_600_000,
            accepted_at_ms: None,
            ends_at_ms: None,
        };
        let id = reservation.reservation_id.as_str();
        let indexes = [keys::reservation_client_index(client.as_str(), now, id), keys::reservation_provider_index(caller.address.as_str(), now, id)];
        self.store.put(to_item(keys::reservation(id), &reservation, &indexes), Condition::Absent).await?;
        Ok(reservation)
    }

    /// A listing can be reserved while it is active and online, and counts its queue room.
    fn reservable(&self, view: &crate::registry::ListingView) -> Result<(), MarketError> {
        if view.listing.status != ListingStatus::Active || !view.online {
            return Err(MarketError::Conflict(format!("GPU listing {} is paused or offline: it cannot be reserved now", view.listing.gpu_id)));
        }
        if !view.room_counted {
            return Err(MarketError::Conflict(format!("GPU listing {} predates queue sizes; set its queue_config first", view.listing.gpu_id)));
        }
        Ok(())
    }

    /// The client accepts a reservation offered to it and pays its fee (see the module docs).
    pub async fn accept_reservation(&self, caller: &Principal, id: &ReservationId) -> Result<Reservation, MarketError> {
        caller.require(Role::Client)?;
        let key = keys::reservation(id.as_str());
        let item = self.store.get(&key).await?.ok_or_else(|| MarketError::not_found(format!("reservation {id}")))?;
        let mut reservation: Reservation = from_item(&item)?;
        if reservation.client != caller.address {
            // Someone else's offer is not the caller's to see.
            return Err(MarketError::not_found(format!("reservation {id}")));
        }
        if reservation.state != ReservationState::Offered {
            return Err(MarketError::Conflict("the reservation is accepted already".into()));
        }
        let now = self.now_ms();
        if now >= reservation.offer_expires_at_ms {
            return Err(MarketError::Conflict(format!("the offer expired at {} (unix ms); ask the provider for a new one", reservation.offer_expires_at_ms)));
        }
        let listing_item = self.listing_item(&reservation.gpu_id).await.map_err(|e| match e {
            MarketError::NotFound { .. } => MarketError::Conflict(format!("GPU listing {} is gone", reservation.gpu_id)),
            e => e,
        })?;
        let view = self.listing_view(&listing_item)?;
        self.reservable(&view)?;
        let (held, version) = held_of(&listing_item)?;
        capacity::check_room(&held, now, reservation.slots, view.listing.max_concurrent_jobs).map_err(capacity_error)?;
        let mut live: Vec<Held> = held.into_iter().filter(|h| h.live(now)).collect();
        if live.len() >= RESERVATIONS_PER_LISTING_MAX {
            return Err(MarketError::Conflict(format!("GPU listing {} has {RESERVATIONS_PER_LISTING_MAX} live reservations, the most it holds", view.listing.gpu_id)));
        }
        let ends_at_ms = now + i64::from(reservation.duration_hours) * 3_600_000;
        live.push(Held { client: caller.address.clone(), slots: reservation.slots, ends_at_ms });
        // A clean 402 before the transaction (whose balance floor is the authority).
        let wallet = AccountId::wallet(&caller.address);
        let (_, balance) = self.account(&wallet).await?;
        if balance.available < reservation.fee {
            return Err(MarketError::InsufficientFunds(format!("the reservation costs {}; {} is available", reservation.fee, balance.available)));
        }
        let listing_write = TxWrite::Update {
            key: keys::listing(view.listing.gpu_id.as_str()),
            update: Update::new().set(ATTR_RESERVATIONS, serde_json::to_value(&live).expect("serializes")).add(ATTR_RESERVATIONS_VERSION, 1, None),
            condition: Condition::And(vec![Condition::Present, unchanged(version)]),
        };
        let reservation_write = TxWrite::Update {
            key: key.clone(),
            update: Update::new().set(ATTR_STATE, "active").set("accepted_at_ms", now).set("ends_at_ms", ends_at_ms),
            condition: Condition::equals(ATTR_STATE, "offered"),
        };
        let uuid_part = &id.as_str()[ReservationId::PREFIX.len() + 1..];
        let pay = Transfer::Pay {
            id: TransferId::parse(&format!("tx-{uuid_part}-reservation")).expect("valid id"),
            from: wallet,
            to: AccountId::earnings(&reservation.provider),
            amount: reservation.fee,
            fee: reservation.platform_fee,
            fee_to: AccountId::fee(&self.platform),
        };
        match self.apply_transfer(&pay, vec![listing_write, reservation_write]).await {
            Ok(aitbc_core::ledger::Applied::Now) => {}
            // The same reservation's payment exists: accepted by a twin of this request.
            Ok(aitbc_core::ledger::Applied::Replayed) => return Err(MarketError::Conflict("the reservation is accepted already".into())),
            Err(e) => return Err(e),
        }
        self.forget_listing(&view.listing.gpu_id, &view.listing.region);
        reservation.state = ReservationState::Active;
        reservation.accepted_at_ms = Some(now);
        reservation.ends_at_ms = Some(ends_at_ms);
        Ok(reservation)
    }

    /// A reservation (its provider, its client, or an admin).
    pub async fn get_reservation(&self, caller: &Principal, id: &ReservationId) -> Result<Reservation, MarketError> {
        let item = self.store.get(&keys::reservation(id.as_str())).await?.ok_or_else(|| MarketError::not_found(format!("reservation {id}")))?;
        let reservation: Reservation = from_item(&item)?;
        if caller.role != Role::Admin && caller.address != reservation.provider && caller.address != reservation.client {
            return Err(MarketError::Forbidden("a reservation is its provider's and its client's".into()));
        }
        Ok(self.served_reservation(reservation))
    }

    /// The caller's reservations: those a provider offered, or those offered to a client.
    pub async fn list_reservations(&self, caller: &Principal, limit: usize, cursor: Option<String>) -> Result<ReservationPage, MarketError> {
        let query = match caller.role {
            Role::Provider => keys::reservations_by_provider(caller.address.as_str()),
            Role::Client => keys::reservations_by_client(caller.address.as_str()),
            Role::Admin => return Err(MarketError::Forbidden("reservations are listed by their provider or client".into())),
        };
        let page = self.store.query(query.limit(limit.clamp(1, RESERVATIONS_PAGE_MAX)).after(cursor)).await.map_err(|e| match e {
            StoreError::Invalid(r) => MarketError::invalid("cursor", r),
            e => e.into(),
        })?;
        let mut items = Vec::with_capacity(page.items.len());
        for entry in &page.items {
            // An index entry may lag the table: serve the item as it is now.
            if let Some(item) = self.store.get(&entry.key).await? {
                items.push(self.served_reservation(from_item(&item)?));
            }
        }
        Ok(ReservationPage { items, cursor: page.cursor })
    }

    fn served_reservation(&self, mut r: Reservation) -> Reservation {
        let now = self.now_ms();
        r.state = match r.state {
            ReservationState::Offered if now >= r.offer_expires_at_ms => ReservationState::Expired,
            ReservationState::Active if r.ends_at_ms.is_some_and(|end| now >= end) => ReservationState::Ended,
            s => s,
        };
        r
    }

    /// The queue places a submission of `client` must leave free on the listing whose item is
    /// `item`, and the condition that the reservations are still those read.
    pub(crate) fn reserved_floor(&self, item: &Item, client: &Address) -> Result<(i64, Condition), MarketError> {
        let (held, version) = held_of(item)?;
        let floor = capacity::reserved_by_others(&held, self.now_ms(), Some(client));
        Ok((i64::from(floor), unchanged(version)))
    }
}

/// Whether the listing's room counter lets one more job of a client in, above `floor`.
pub(crate) fn room_allows(item: &Item, floor: i64) -> bool {
    item.int(ATTR_QUEUE_ROOM).is_none_or(|room| room > floor)
}
