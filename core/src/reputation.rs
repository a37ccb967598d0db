//! Reputation from measured facts: what happened to the jobs routed to a listing (or to all of a
//! provider's listings), and what their clients said of them. No opinion enters but the
//! clients' ratings of their own settled jobs.
//!
//! The facts are counters that the marketplace adds to in the same transactions that move the
//! jobs (a first claim, a completion, a failure, an expiry, a rating), so they are exact and
//! never re-computed. Submission-to-start times are kept as a sum (for the mean) and a fixed
//! histogram (for the 95th percentile): bounded storage whatever the number of jobs.
//!
//! # The score (ARCHITECTURE.md repeats this)
//!
//! Every component is a fraction in basis points, smoothed towards one half by
//! [`PRIOR_WEIGHT`] imaginary observations, so that a listing with three jobs is neither perfect
//! nor hopeless: `smoothed(good, total) = (10_000 good + 5_000 K) / (total + K)`, floored.
//!
//! - success `S = smoothed(completed, completed + failed)`: of the jobs a worker took, how many
//!   it finished (a failure is a job that failed for good: non-retryable, or out of attempts);
//! - completion `C = smoothed(completed, completed + failed + expired)`: of the jobs routed to
//!   it that ended without the client cancelling, how many it finished;
//! - timeliness `T = smoothed(completed - sla_breaches, completed)`: of its completed jobs, how
//!   many started within the listing's SLA response time;
//! - satisfaction `R = (2_500 (sum of ratings - ratings) + 5_000 K) / (ratings + K)`: the mean
//!   rating mapped from 1..=5 onto 0..=1, smoothed the same way.
//!
//! `score = (35 S + 20 C + 20 T + 25 R) / 100`, floored: 0..=10_000 basis points. Nothing
//! measured gives 5_000.

use crate::values::ValueError;
use serde::{Deserialize, Serialize};

/// Imaginary observations at one half that every component starts with.
pub const PRIOR_WEIGHT: u64 = 5;
/// The components' weights, in percent: success, completion, timeliness, satisfaction.
pub const SCORE_WEIGHTS_PCT: [u64; 4] = [35, 20, 20, 25];
/// A score or fraction of one, in basis points.
pub const BPS_ONE: u64 = 10_000;
/// The lowest and highest rating a client may give.
pub const RATING_MIN: u8 = 1;
pub const RATING_MAX: u8 = 5;
/// Upper bounds (milliseconds, inclusive) of the submission-to-start histogram's buckets; the
/// last bucket, past the last bound, is open. Roughly 1-2.5-5 steps: a percentile read from it
/// is exact to the bucket.
pub const WAIT_BUCKET_BOUNDS_MS: [u64; 15] =
    [100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000, 600_000, 1_800_000, 3_600_000, 86_400_000];
/// Buckets of the histogram: one per bound and the open one.
pub const WAIT_BUCKETS: usize = WAIT_BUCKET_BOUNDS_MS.len() + 1;
/// The percentile the reputation reports, in percent.
pub const WAIT_PERCENTILE_PCT: u64 = 95;

/// A client's rating of one of its settled jobs: 1 (bad) to 5 (excellent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Rating(u8);

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Rating {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Integer)
            .description(Some("A client's rating of a job: 1 (bad) to 5 (excellent)"))
            .minimum(Some(RATING_MIN))
            .maximum(Some(RATING_MAX))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Rating {}

impl Rating {
    pub fn parse(value: i64) -> Result<Self, ValueError> {
        if (i64::from(RATING_MIN)..=i64::from(RATING_MAX)).contains(&value) {
            Ok(Self(value as u8))
        } else {
            Err(ValueError::new("rating", format!("must be {RATING_MIN}..={RATING_MAX}, not {value}")))
        }
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Rating {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = i64::deserialize(d)?;
        Rating::parse(value).map_err(serde::de::Error::custom)
    }
}

/// The bucket of the histogram a submission-to-start time falls in.
pub fn wait_bucket(wait_ms: u64) -> usize {
    WAIT_BUCKET_BOUNDS_MS.iter().position(|&bound| wait_ms <= bound).unwrap_or(WAIT_BUCKET_BOUNDS_MS.len())
}

/// The measured facts of a listing or a provider. Counters only grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Facts {
    /// Jobs completed with a receipt.
    pub completed: u64,
    /// Jobs failed for good (non-retryable failure, or attempts used up).
    pub failed: u64,
    /// Jobs that expired unclaimed.
    pub expired: u64,
    /// Completed jobs that started later than the listing's SLA response time.
    pub sla_breaches: u64,
    /// Jobs claimed for the first time (each adds one submission-to-start time).
    pub started: u64,
    /// Sum of the submission-to-start times, in milliseconds.
    pub wait_ms_total: u64,
    /// How many submission-to-start times fell in each bucket of [`WAIT_BUCKET_BOUNDS_MS`].
    #[cfg_attr(feature = "openapi", schema(min_items = 16, max_items = 16))]
    pub wait_histogram: [u64; WAIT_BUCKETS],
    /// Ratings received, and their sum.
    pub ratings: u64,
    pub rating_total: u64,
}

/// What the facts say, as served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Reputation {
    /// The overall score in basis points (0..=10000; 5000 with nothing measured).
    pub score_bps: u32,
    /// Completed over completed + failed, in basis points; absent with neither.
    pub success_rate_bps: Option<u32>,
    /// Completed over completed + failed + expired, in basis points; absent with none.
    pub completion_rate_bps: Option<u32>,
    /// SLA breaches over completed, in basis points; absent with no completion.
    pub sla_breach_rate_bps: Option<u32>,
    /// Mean submission-to-start time in milliseconds (floored); absent before a first start.
    pub mean_start_ms: Option<u64>,
    /// The 95th percentile of the submission-to-start time: the upper bound of the histogram
    /// bucket it falls in (the last bound for the open bucket); absent before a first start.
    pub p95_start_ms: Option<u64>,
    /// Mean client rating in hundredths (e.g. 450 is 4.5); absent without ratings.
    pub mean_rating_centi: Option<u32>,
    pub facts: Facts,
}

fn ratio_bps(good: u64, total: u64) -> Option<u32> {
    (total > 0).then(|| (u128::from(good) * u128::from(BPS_ONE) / u128::from(total)) as u32)
}

/// `(10_000 good + 5_000 K) / (total + K)`, floored; `good <= total`.
pub fn smoothed_bps(good: u64, total: u64) -> u64 {
    let good = u128::from(good.min(total));
    let prior = u128::from(PRIOR_WEIGHT);
    ((good * u128::from(BPS_ONE) + prior * u128::from(BPS_ONE / 2)) / (u128::from(total) + prior)) as u64
}

impl Facts {
    /// The facts' four components in basis points: success, completion, timeliness,
    /// satisfaction (the module's formulas).
    pub fn components_bps(&self) -> [u64; 4] {
        let s = smoothed_bps(self.completed, self.completed.saturating_add(self.failed));
        let c = smoothed_bps(self.completed, self.completed.saturating_add(self.failed).saturating_add(self.expired));
        let t = smoothed_bps(self.completed.saturating_sub(self.sla_breaches), self.completed);
        // Each rating r maps to (r - 1) / 4: 2_500 bps per step above 1.
        let above_one = u128::from(self.rating_total.saturating_sub(self.ratings));
        let prior = u128::from(PRIOR_WEIGHT);
        let r = ((above_one * u128::from(BPS_ONE / 4) + prior * u128::from(BPS_ONE / 2)) / (u128::from(self.ratings) + prior)).min(u128::from(BPS_ONE)) as u64;
        [s, c, t, r]
    }

    /// The overall score in basis points.
    pub fn score_bps(&self) -> u32 {
        let weighted: u64 = self.components_bps().iter().zip(SCORE_WEIGHTS_PCT).map(|(c, w)| c * w).sum();
        (weighted / 100) as u32
    }

    /// The submission-to-start time under which [`WAIT_PERCENTILE_PCT`] percent of the starts
    /// fell, as the upper bound of its bucket.
    pub fn p95_start_ms(&self) -> Option<u64> {
        let count = self.wait_histogram.iter().fold(0u64, |a, n| a.saturating_add(*n));
        if count == 0 {
            return None;
        }
        // The rank of the percentile, rounded up: the smallest n with n >= 0.95 count.
        let rank = (u128::from(count) * u128::from(WAIT_PERCENTILE_PCT)).div_ceil(100) as u64;
        let mut seen = 0u64;
        for (bucket, n) in self.wait_histogram.iter().enumerate() {
            seen = seen.saturating_add(*n);
            if seen >= rank {
                return Some(WAIT_BUCKET_BOUNDS_MS[bucket.min(WAIT_BUCKET_BOUNDS_MS.len() - 1)]);
            }
        }
        Some(WAIT_BUCKET_BOUNDS_MS[WAIT_BUCKET_BOUNDS_MS.len() - 1])
    }

    /// The facts summed with `other`'s (a provider's over its listings, in tests).
    pub fn plus(&self, other: &Facts) -> Facts {
        let mut sum = *self;
        sum.completed = sum.completed.saturating_add(other.completed);
        sum.failed = sum.failed.saturating_add(other.failed);
        sum.expired = sum.expired.saturating_add(other.expired);
        sum.sla_breaches = sum.sla_breaches.saturating_add(other.sla_breaches);
        sum.started = sum.started.saturating_add(other.started);
        sum.wait_ms_total = sum.wait_ms_total.saturating_add(other.wait_ms_total);
        for (a, b) in sum.wait_histogram.iter_mut().zip(other.wait_histogram) {
            *a = a.saturating_add(b);
        }
        sum.ratings = sum.ratings.saturating_add(other.ratings);
        sum.rating_total = sum.rating_total.saturating_add(other.rating_total);
        sum
    }

    pub fn reputation(&self) -> Reputation {
        Reputation {
            score_bps: self.score_bps(),
            success_rate_bps: ratio_bps(self.completed, self.completed.saturating_add(self.failed)),
            completion_rate_bps: ratio_bps(self.completed, self.completed.saturating_add(self.failed).saturating_add(self.expired)),
            sla_breach_rate_bps: ratio_bps(self.sla_breaches.min(self.completed), self.completed),
            mean_start_ms: (self.started > 0).then(|| self.wait_ms_total / self.started),
            p95_start_ms: self.p95_start_ms(),
            mean_rating_centi: (self.ratings > 0).then(|| (u128::from(self.rating_total) * 100 / u128::from(self.ratings)) as u32),
            facts: *self,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_measured_is_one_half() {
        assert_eq!(Facts::default().score_bps(), 5_000);
        let r = Facts::default().reputation();
        assert_eq!((r.success_rate_bps, r.mean_start_ms, r.p95_start_ms, r.mean_rating_centi), (None, None, None, None));
    }

    #[test]
    fn the_score_follows_the_documented_formula() {
        let f = Facts { completed: 15, failed: 5, expired: 5, sla_breaches: 3, ratings: 4, rating_total: 18, ..Default::default() };
        // S = (150000 + 25000) / 25 = 7000; C = 175000 / 30 = 5833; T = (120000 + 25000) / 20 = 7250;
        // R = (2500 * 14 + 25000) / 9 = 6666.
        assert_eq!(f.components_bps(), [7_000, 5_833, 7_250, 6_666]);
        assert_eq!(f.score_bps(), ((35 * 7_000 + 20 * 5_833 + 20 * 7_250 + 25 * 6_666) / 100) as u32);
        let r = f.reputation();
        assert_eq!((r.success_rate_bps, r.completion_rate_bps, r.sla_breach_rate_bps, r.mean_rating_centi), (Some(7_500), Some(6_000), Some(2_000), Some(450)));
    }

    #[test]
    fn better_facts_never_score_lower() {
        let base = Facts { completed: 10, failed: 2, expired: 1, sla_breaches: 2, ratings: 3, rating_total: 9, ..Default::default() };
        let more_done = Facts { completed: 11, ..base };
        let fewer_failed = Facts { failed: 1, ..base };
        let fewer_breaches = Facts { sla_breaches: 1, ..base };
        let better_rated = Facts { rating_total: 10, ..base };
        for better in [more_done, fewer_failed, fewer_breaches, better_rated] {
            assert!(better.score_bps() > base.score_bps(), "{better:?}");
        }
        let perfect = Facts { completed: 1_000_000, ratings: 1_000_000, rating_total: 5_000_000, ..Default::default() };
        assert!(perfect.score_bps() <= 10_000 && perfect.score_bps() > 9_990);
        let worst = Facts { failed: 1_000_000, expired: 1_000_000, ratings: 1_000_000, rating_total: 1_000_000, ..Default::default() };
        assert!(worst.score_bps() < 3_000, "{}", worst.score_bps());
    }

    #[test]
    fn huge_counters_do_not_overflow() {
        let f = Facts { completed: u64::MAX, failed: u64::MAX, expired: u64::MAX, sla_breaches: u64::MAX, started: u64::MAX, wait_ms_total: u64::MAX, wait_histogram: [u64::MAX / 16; WAIT_BUCKETS], ratings: u64::MAX, rating_total: u64::MAX };
        let r = f.reputation();
        assert!(r.score_bps <= 10_000);
        assert!(r.p95_start_ms.is_some());
    }

    #[test]
    fn the_p95_is_the_bucket_bound_of_its_rank() {
        let mut f = Facts::default();
        // 94 fast starts and 6 slow ones: the 95th of 100 is slow.
        f.wait_histogram[wait_bucket(80)] += 94;
        f.wait_histogram[wait_bucket(20_000)] += 6;
        assert_eq!(f.p95_start_ms(), Some(30_000));
        f.wait_histogram[wait_bucket(80)] += 1;
        f.wait_histogram[wait_bucket(20_000)] -= 1;
        assert_eq!(f.p95_start_ms(), Some(100));
        let mut open = Facts::default();
        open.wait_histogram[wait_bucket(u64::MAX)] = 1;
        assert_eq!(open.p95_start_ms(), Some(86_400_000));
    }

    #[test]
    fn buckets_are_inclusive_upper_bounds() {
        assert_eq!(wait_bucket(0), 0);
        assert_eq!(wait_bucket(100), 0);
        assert_eq!(wait_bucket(101), 1);
        assert_eq!(wait_bucket(86_400_000), 14);
        assert_eq!(wait_bucket(86_400_001), 15);
    }

    #[test]
    fn ratings_parse_only_one_to_five() {
        for bad in [-1, 0, 6, 100, i64::MAX, i64::MIN] {
            assert_eq!(Rating::parse(bad).unwrap_err().field, "rating");
        }
        assert_eq!(Rating::parse(4).unwrap().get(), 4);
        assert!(serde_json::from_str::<Rating>("3").is_ok());
        assert!(serde_json::from_str::<Rating>("3.5").is_err());
        assert!(serde_json::from_str::<Rating>("\"3\"").is_err());
    }
}
