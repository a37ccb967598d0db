//! A provider's load-balancing policy across its own listings (the guide's
//! `enable_load_balancing`), and the pure rule that applies it.
//!
//! Routing (market `quotes.rs`) first picks the region's best listing by price weighted by
//! reputation, then load. When that listing has a load-balancing policy, the job goes instead to
//! the listing its policy prefers among its provider's *group*: the same provider's listings of
//! the region that fit the job, have a policy too, and quote a unit price no higher than the
//! routed one (balancing never costs the client more than routing would have).
//!
//! - `least_loaded`, and `adaptive` with target `latency`: the fewest jobs per slot, counting
//!   the jobs waiting in its queue as well as those running (where the job starts soonest).
//! - `adaptive` with target `throughput`: the most free slots (capacity minus running jobs),
//!   so large idle listings fill before small ones and the provider runs the most jobs at once.
//!
//! Ties go to the lower routing rank, then the lower listing id (deterministic).

use serde::{Deserialize, Serialize};

/// How a provider's jobs are spread across its listings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BalanceStrategy {
    /// Leaves the group: a listing patched with it stores no policy (plain routing).
    None,
    /// The listing with the fewest jobs (running and waiting) per slot.
    LeastLoaded,
    /// By `optimization_target`: free slots for throughput, jobs per slot for latency.
    Adaptive,
}

/// What `adaptive` optimizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OptimizationTarget {
    /// Jobs running at once: the listing with the most free slots.
    #[default]
    Throughput,
    /// Time to start: the listing with the fewest jobs per slot.
    Latency,
}

/// A listing's load-balancing policy (`PATCH /v1/listings/{gpu_id}` `load_balancing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LoadBalancing {
    pub strategy: BalanceStrategy,
    #[serde(default)]
    pub optimization_target: OptimizationTarget,
}

/// What the rule reads of one listing of the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Jobs the listing runs at once (at least 1).
    pub capacity: u32,
    /// Jobs running (leased) now.
    pub running: u32,
    /// Jobs waiting in its queue.
    pub waiting: u32,
    /// Its routing rank (lower is better): the tie-break.
    pub rank: u128,
}

impl Candidate {
    /// Jobs per slot, running and waiting, in basis points (unbounded above 10 000).
    pub fn load_bps(&self) -> u64 {
        (u64::from(self.running) + u64::from(self.waiting)) * 10_000 / u64::from(self.capacity.max(1))
    }

    pub fn free_slots(&self) -> u32 {
        self.capacity.max(1).saturating_sub(self.running)
    }
}

impl LoadBalancing {
    /// The policy to store: none for strategy `none`.
    pub fn stored(self) -> Option<Self> {
        (self.strategy != BalanceStrategy::None).then_some(self)
    }

    /// The index in `group` of the listing this policy sends the job to; `group` is in listing
    /// id order, so equal candidates resolve to the first. None only for an empty group.
    pub fn pick(&self, group: &[Candidate]) -> Option<usize> {
        let by_load = |c: &Candidate| (c.load_bps(), u64::MAX - u64::from(c.free_slots()), c.rank);
        let by_room = |c: &Candidate| (u64::MAX - u64::from(c.free_slots()), c.load_bps(), c.rank);
        let throughput = self.strategy == BalanceStrategy::Adaptive && self.optimization_target == OptimizationTarget::Throughput;
        let indexed = group.iter().enumerate();
        let best = if throughput { indexed.min_by_key(|(i, c)| (by_room(c), *i)) } else { indexed.min_by_key(|(i, c)| (by_load(c), *i)) };
        best.map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(capacity: u32, running: u32, waiting: u32, rank: u128) -> Candidate {
        Candidate { capacity, running, waiting, rank }
    }

    #[test]
    fn each_policy_picks_by_its_own_measure() {
        // A small idle listing and a large half-busy one with two jobs waiting.
        let group = [c(1, 0, 0, 5), c(8, 4, 2, 5)];
        let least = LoadBalancing { strategy: BalanceStrategy::LeastLoaded, optimization_target: OptimizationTarget::Throughput };
        let latency = LoadBalancing { strategy: BalanceStrategy::Adaptive, optimization_target: OptimizationTarget::Latency };
        let throughput = LoadBalancing { strategy: BalanceStrategy::Adaptive, optimization_target: OptimizationTarget::Throughput };
        assert_eq!(least.pick(&group), Some(0), "0 jobs per slot beats 0.75");
        assert_eq!(latency.pick(&group), Some(0));
        assert_eq!(throughput.pick(&group), Some(1), "4 free slots beat 1");
        // Waiting jobs count as load: a listing with none running but a queue is not idle.
        assert_eq!(least.pick(&[c(1, 0, 2, 1), c(4, 1, 0, 9)]), Some(1));
        // Ties: the lower rank, then the first.
        assert_eq!(least.pick(&[c(2, 1, 0, 9), c(2, 1, 0, 3)]), Some(1));
        assert_eq!(throughput.pick(&[c(2, 0, 0, 3), c(2, 0, 0, 3)]), Some(0));
        assert_eq!(throughput.pick(&[]), None);
    }

    #[test]
    fn the_wire_form_is_snake_case_and_strict() {
        let p: LoadBalancing = serde_json::from_str(r#"{"strategy":"adaptive","optimization_target":"latency"}"#).unwrap();
        assert_eq!(p, LoadBalancing { strategy: BalanceStrategy::Adaptive, optimization_target: OptimizationTarget::Latency });
        let d: LoadBalancing = serde_json::from_str(r#"{"strategy":"least_loaded"}"#).unwrap();
        assert_eq!(d.optimization_target, OptimizationTarget::Throughput);
        assert!(serde_json::from_str::<LoadBalancing>(r#"{"strategy":"round_robin"}"#).is_err());
        let off: LoadBalancing = serde_json::from_str(r#"{"strategy":"none"}"#).unwrap();
        assert_eq!((off.stored(), d.stored()), (None, Some(d)));
        assert!(serde_json::from_str::<LoadBalancing>(r#"{"strategy":"adaptive","optimization_target":"cost"}"#).is_err());
        assert!(serde_json::from_str::<LoadBalancing>(r#"{"strategy":"adaptive","metrics":[]}"#).is_err());
    }
}
