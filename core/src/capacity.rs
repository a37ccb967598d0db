//! Capacity terms between a provider and one client: reserved shares of a listing (the guide's
//! `reserve_capacity`) and the availability guarantee of a fixed-rate contract (its
//! `create_contract(guaranteed_availability=...)`). Pure rules; `aitbc-market` stores them.
//!
//! **Reservations.** A reservation holds `slots` of a listing's `max_concurrent_jobs` for one
//! client until `ends_at_ms` (expiry is computed from that stored time: nothing sweeps it).
//! The rule the store can enforce with the listing's queue-room counter (the room a submission
//! takes with an add that has a floor) is: **a submission keeps as many places of the listing's
//! queue free as the other clients' live reservations hold slots**. So a client's job is
//! accepted only while `queue_room - 1 >= reserved_by_others(now)`; a holder's own jobs may use
//! its reserved places (and the free ones). Reservations on one listing never add up to more than
//! its `max_concurrent_jobs` slots.
//!
//! **Availability guarantee.** A contract job is *available* when it started (was claimed)
//! within the listing's SLA response time. The contract counts its completed jobs and its
//! available ones; a contract job whose completion leaves the measured availability
//! (`available / completed`, this job included) below the guarantee pays the listing's SLA
//! penalty out of the provider's share, as a late job does without a contract.

use crate::money::BPS_ONE;
use crate::values::Address;
use serde::{Deserialize, Serialize};

/// A reservation lasts at most 90 days.
pub const RESERVATION_HOURS_MAX: u32 = 90 * 24;
/// Live reservations on one listing, at most (they live on the listing's item).
pub const RESERVATIONS_PER_LISTING_MAX: usize = 16;

/// A live reservation as the listing's item carries it (what routing reads).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub client: Address,
    pub slots: u32,
    pub ends_at_ms: i64,
}

impl Held {
    pub fn live(&self, now_ms: i64) -> bool {
        now_ms < self.ends_at_ms
    }
}

/// Slots held by live reservations of clients other than `client` (all of them when None):
/// the queue places a submission of `client` must leave free.
pub fn reserved_by_others(held: &[Held], now_ms: i64, client: Option<&Address>) -> u32 {
    held.iter().filter(|h| h.live(now_ms) && Some(&h.client) != client).map(|h| h.slots).sum()
}

/// Why a share cannot be reserved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapacityError {
    #[error("reserve at least 1 slot or 1 GiB")]
    Empty,
    #[error("the listing has {have} {unit}; {asked} asked")]
    LargerThanListing { asked: u32, have: u32, unit: &'static str },
    #[error("{free} of the listing's {total} slots are not reserved; {asked} asked")]
    Overbooked { asked: u32, free: u32, total: u32 },
    #[error("write a duration as <N>h or <N>d, from 1h to {RESERVATION_HOURS_MAX}h")]
    Duration,
}

/// Slots of a listing of `memory_gib` and `slots_total` concurrent jobs that `gib` GiB of GPU
/// memory take: each slot stands for `memory_gib / slots_total` GiB, rounded up to whole slots.
pub fn slots_for_memory(gib: u32, memory_gib: u32, slots_total: u32) -> Result<u32, CapacityError> {
    assert!(memory_gib > 0 && slots_total > 0, "a listing has memory and slots");
    if gib == 0 {
        return Err(CapacityError::Empty);
    }
    if gib > memory_gib {
        return Err(CapacityError::LargerThanListing { asked: gib, have: memory_gib, unit: "GiB" });
    }
    let slots = (u64::from(gib) * u64::from(slots_total)).div_ceil(u64::from(memory_gib));
    Ok(u32::try_from(slots).expect("at most slots_total"))
}

/// Checks that `slots` more fit beside the live reservations `held` on a listing of
/// `slots_total` slots.
pub fn check_room(held: &[Held], now_ms: i64, slots: u32, slots_total: u32) -> Result<(), CapacityError> {
    if slots == 0 {
        return Err(CapacityError::Empty);
    }
    if slots > slots_total {
        return Err(CapacityError::LargerThanListing { asked: slots, have: slots_total, unit: "slots" });
    }
    let free = slots_total.saturating_sub(reserved_by_others(held, now_ms, None));
    if slots > free {
        return Err(CapacityError::Overbooked { asked: slots, free, total: slots_total });
    }
    Ok(())
}

/// A duration as `<N>h` or `<N>d` (the guide's `reservation_duration="30d"`), in hours,
/// 1..=[`RESERVATION_HOURS_MAX`].
pub fn parse_duration_hours(text: &str) -> Result<u32, CapacityError> {
    let (number, per) = match text.as_bytes().last() {
        Some(b'h') => (&text[..text.len() - 1], 1),
        Some(b'd') => (&text[..text.len() - 1], 24),
        _ => return Err(CapacityError::Duration),
    };
    if number.is_empty() || number.len() > 4 || number.starts_with('0') || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CapacityError::Duration);
    }
    let hours = number.parse::<u32>().map_err(|_| CapacityError::Duration)? * per;
    if !(1..=RESERVATION_HOURS_MAX).contains(&hours) {
        return Err(CapacityError::Duration);
    }
    Ok(hours)
}

/// The API document's pattern for [`parse_duration_hours`]: 1..=2160 hours or 1..=90 days, no
/// leading zeros (a test checks the two agree).
pub const DURATION_PATTERN: &str = r"^(([1-9]|[1-9][0-9]|[1-9][0-9][0-9]|1[0-9]{3}|20[0-9]{2}|21[0-5][0-9]|2160)h|([1-9]|[1-8][0-9]|90)d)$";

/// Whether a contract job completing now pays the SLA penalty: the contract has `completed`
/// jobs of which `available` started in time before this one; this one did or did not
/// (`available_now`). True when the measured availability with this job, `(available +
/// available_now) / (completed + 1)`, is below `guaranteed_bps` (compared exactly, in integers).
pub fn availability_breached(completed: u64, available: u64, available_now: bool, guaranteed_bps: u32) -> bool {
    assert!(guaranteed_bps <= BPS_ONE, "a guarantee is at most 100%");
    assert!(available <= completed, "available jobs are completed jobs");
    let good = u128::from(available) + u128::from(available_now);
    let total = u128::from(completed) + 1;
    good * u128::from(BPS_ONE) < u128::from(guaranteed_bps) * total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u8) -> Address {
        Address::parse(&format!("ait1client{n:04}")).unwrap()
    }

    #[test]
    fn memory_takes_whole_slots() {
        assert_eq!(slots_for_memory(8, 24, 3), Ok(1));
        assert_eq!(slots_for_memory(9, 24, 3), Ok(2));
        assert_eq!(slots_for_memory(24, 24, 3), Ok(3));
        assert_eq!(slots_for_memory(1, 80, 1), Ok(1));
        assert_eq!(slots_for_memory(25, 24, 3), Err(CapacityError::LargerThanListing { asked: 25, have: 24, unit: "GiB" }));
        assert_eq!(slots_for_memory(0, 24, 3), Err(CapacityError::Empty));
    }

    #[test]
    fn live_reservations_of_others_are_kept_free_and_expire_by_time() {
        let held = vec![Held { client: addr(1), slots: 2, ends_at_ms: 1_000 }, Held { client: addr(2), slots: 1, ends_at_ms: 2_000 }];
        assert_eq!(reserved_by_others(&held, 0, None), 3);
        assert_eq!(reserved_by_others(&held, 0, Some(&addr(1))), 1);
        assert_eq!(reserved_by_others(&held, 0, Some(&addr(3))), 3);
        assert_eq!(reserved_by_others(&held, 1_000, None), 1, "the first ended at 1000");
        assert_eq!(reserved_by_others(&held, 2_000, None), 0);
        assert_eq!(check_room(&held, 0, 1, 4), Ok(()));
        assert_eq!(check_room(&held, 0, 2, 4), Err(CapacityError::Overbooked { asked: 2, free: 1, total: 4 }));
        assert_eq!(check_room(&held, 1_000, 3, 4), Ok(()));
        assert_eq!(check_room(&held, 0, 5, 4), Err(CapacityError::LargerThanListing { asked: 5, have: 4, unit: "slots" }));
        assert_eq!(check_room(&held, 0, 0, 4), Err(CapacityError::Empty));
    }

    #[test]
    fn durations_and_their_pattern_agree() {
        assert_eq!(parse_duration_hours("30d"), Ok(720));
        assert_eq!(parse_duration_hours("12h"), Ok(12));
        assert_eq!(parse_duration_hours("90d"), Ok(RESERVATION_HOURS_MAX));
        let pattern = regex_lite::Regex::new(DURATION_PATTERN).unwrap();
        let mut texts: Vec<String> = ["", "h", "d", "0h", "0d", "+1h", "1.5d", "1m", "91d", "2161h", "30d ", "١h"].map(String::from).to_vec();
        for n in 0..3_000 {
            texts.push(format!("{n}h"));
            texts.push(format!("{n}d"));
            texts.push(format!("0{n}h"));
        }
        for text in texts {
            assert_eq!(pattern.is_match(&text), parse_duration_hours(&text).is_ok(), "{text:?}");
        }
    }

    #[test]
    fn availability_is_compared_exactly() {
        // 95%: 19 of 20 is exactly the guarantee (not below), 18 of 20 is below.
        assert!(!availability_breached(19, 18, true, 9_500));
        assert!(availability_breached(19, 18, false, 9_500));
        assert!(!availability_breached(0, 0, true, 10_000));
        assert!(availability_breached(0, 0, false, 1));
        assert!(!availability_breached(0, 0, false, 0), "no guarantee, no breach");
        assert!(!availability_breached(u64::MAX - 1, u64::MAX - 1, true, 10_000));
    }
}
