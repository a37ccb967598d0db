//! Market intelligence and optimization suggestions: rules over measured data only (receipts,
//! listing counters, schedules). Pure: the market gathers the facts, these decide.

use crate::money::Rate;
use serde::{Deserialize, Serialize};

/// Basis points in one whole.
pub const BPS_ONE: u32 = 10_000;
/// A change of more than this between the two halves of a window is a trend (5%).
pub const TREND_BPS_MIN: u32 = 500;
/// A price this far above the region's median (20%) is "above the market".
pub const PRICE_ABOVE_BPS: u32 = 12_000;
/// A price this far below the region's median (80%) is "below the market".
pub const PRICE_BELOW_BPS: u32 = 8_000;
/// Utilization below this is low (20%).
pub const UTILIZATION_LOW_BPS: u32 = 2_000;
/// Utilization above this is high (80%).
pub const UTILIZATION_HIGH_BPS: u32 = 8_000;
/// A failure rate above this is high (10%), once at least `FAILURE_JOBS_MIN` jobs ended.
pub const FAILURE_RATE_HIGH_BPS: u32 = 1_000;
pub const FAILURE_JOBS_MIN: u64 = 5;
/// Hours in a week: schedules are checked hour by hour over one.
pub const WEEK_HOURS: usize = 168;

/// The `p`-th percentile (basis points: 5000 is the median) of sorted values, nearest rank:
/// the value at rank `ceil(p n)`. None for no values.
pub fn percentile(sorted: &[Rate], p_bps: u32) -> Option<Rate> {
    assert!(p_bps <= BPS_ONE, "a percentile is at most 100%");
    assert!(sorted.windows(2).all(|w| w[0] <= w[1]), "percentile needs sorted values");
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len() as u64;
    let rank = (n * u64::from(p_bps)).div_ceil(u64::from(BPS_ONE)).max(1);
    Some(sorted[(rank - 1) as usize])
}

/// Where a measure went over a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Trend {
    Rising,
    Falling,
    Flat,
    /// One half of the window has no data.
    Unknown,
}

/// The trend from the first half's value to the second's: more than `TREND_BPS_MIN` up or
/// down, else flat; unknown when either half measured nothing (0).
pub fn trend(first: u128, second: u128) -> Trend {
    if first == 0 || second == 0 {
        return Trend::Unknown;
    }
    let min = u128::from(TREND_BPS_MIN);
    let one = u128::from(BPS_ONE);
    if second * one > first * (one + min) {
        Trend::Rising
    } else if second * one < first * (one - min) {
        Trend::Falling
    } else {
        Trend::Flat
    }
}

/// What the suggestion rules look at: one listing's measured facts and its region's.
#[derive(Debug, Clone, Default)]
pub struct ListingFacts {
    /// The listing's base price per GPU-second (basic tier, before its strategy).
    pub price: Rate,
    /// The median unit price paid in the listing's region over the window, if any job ran.
    pub region_median: Option<Rate>,
    /// The listing's metered GPU time over its capacity in the window, basis points.
    pub utilization_bps: u32,
    /// Whether its strategy already follows load (`dynamic` or `utilization-guard`).
    pub load_following_strategy: bool,
    /// Hours of the coming week the listing's schedule is closed (0..=168).
    pub closed_hours: u32,
    /// Jobs the region ran in the window in hours of the week the listing is closed.
    pub region_jobs_in_closed_hours: u64,
    pub region_jobs: u64,
    /// Its jobs' end counts (reputation facts).
    pub completed: u64,
    pub failed: u64,
}

/// One suggestion: what, why (the evidence), what to expect, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Suggestion {
    /// Stable name of the rule: `lower_price`, `raise_price`, `follow_load`, `widen_schedule`,
    /// `reduce_failures`.
    pub code: String,
    pub description: String,
    /// The effect to expect, and why.
    pub impact: String,
    pub implementation_steps: Vec<String>,
}

fn bps_of(part: u128, whole: u128) -> u32 {
    (part * u128::from(BPS_ONE)).checked_div(whole).map_or(0, |b| b.min(u128::from(u32::MAX)) as u32)
}

fn pct(bps: u32) -> String {
    format!("{}.{:02}%", bps / 100, bps % 100)
}

/// The rules (ARCHITECTURE.md, "Provider insight"), in a fixed order:
///
/// 1. `lower_price`: price above 120% of the region's median and utilization below 20%.
/// 2. `raise_price`: price below 80% of the median and utilization above 80%.
/// 3. `follow_load`: utilization below 20% or above 80% under a strategy that ignores load.
/// 4. `widen_schedule`: the region ran jobs in hours the listing is closed.
/// 5. `reduce_failures`: more than 10% of at least 5 ended jobs failed.
pub fn suggest(f: &ListingFacts) -> Vec<Suggestion> {
    let mut out = Vec::new();
    let ratio = f.region_median.filter(|m| m.raw() > 0).map(|m| bps_of(u128::from(f.price.raw()), u128::from(m.raw())));
    let median_per_hour = f.region_median.map(|m| crate::money::Amount::from_raw(u64::try_from(u128::from(m.raw()) * 3_600 / 1_000).unwrap_or(u64::MAX)));
    if let (Some(ratio), Some(median)) = (ratio, median_per_hour) {
        if ratio > PRICE_ABOVE_BPS && f.utilization_bps < UTILIZATION_LOW_BPS {
            out.push(Suggestion {
                code: "lower_price".into(),
                description: format!("Your base price is {} of the median price paid in your region, and your GPU was busy {} of the time.", pct(ratio), pct(f.utilization_bps)),
                impact: "More jobs: routing picks the cheapest available listing (weighted by reputation), so a price near the median wins jobs that now go elsewhere.".into(),
                implementation_steps: vec![
                    format!("Lower the base price towards the median, {median} AITBC per GPU-hour: `aitbc marketplace gpu update --gpu-id <gpu_id> --base-price {median}`."),
                    "Watch utilization over the next days (`aitbc marketplace analytics --gpu-id <gpu_id>`).".into(),
                ],
            });
        }
        if ratio < PRICE_BELOW_BPS && f.utilization_bps > UTILIZATION_HIGH_BPS {
            out.push(Suggestion {
                code: "raise_price".into(),
                description: format!("Your base price is {} of the median price paid in your region while your GPU was busy {} of the time.", pct(ratio), pct(f.utilization_bps)),
                impact: format!("More revenue per GPU-hour: at the median you would earn about {} more per job at the same load.", pct(BPS_ONE.saturating_sub(ratio).saturating_mul(BPS_ONE) / ratio.max(1))),
                implementation_steps: vec![format!("Raise the base price towards {median} AITBC per GPU-hour: `aitbc marketplace gpu update --gpu-id <gpu_id> --base-price {median}`.")],
            });
        }
    }
    if !f.load_following_strategy && (f.utilization_bps < UTILIZATION_LOW_BPS || f.utilization_bps > UTILIZATION_HIGH_BPS) {
        let (strategy, why) = if f.utilization_bps < UTILIZATION_LOW_BPS {
            ("utilization-guard", "it lowers the price (down to 70%) while the GPU is idle, to win jobs")
        } else {
            ("dynamic", "it raises the price (up to your maximum multiplier) once the GPU is busier than your threshold")
        };
        out.push(Suggestion {
            code: "follow_load".into(),
            description: format!("Your GPU was busy {} of the time and your pricing strategy does not follow load.", pct(f.utilization_bps)),
            impact: format!("Prices that track load: the {strategy} strategy prices each quote from utilization measured then; {why}."),
            implementation_steps: vec![format!("`aitbc marketplace gpu update --gpu-id <gpu_id> --strategy {strategy}` (SDK: `set_pricing_strategy(\"{strategy}\")`).")],
        });
    }
    if f.closed_hours > 0 && f.region_jobs_in_closed_hours > 0 {
        out.push(Suggestion {
            code: "widen_schedule".into(),
            description: format!(
                "Your schedule is closed {} hours a week, and {} of your region's {} jobs in the window ran in those hours.",
                f.closed_hours, f.region_jobs_in_closed_hours, f.region_jobs
            ),
            impact: format!("More jobs: {} of the region's demand falls in hours you do not sell.", pct(bps_of(u128::from(f.region_jobs_in_closed_hours), u128::from(f.region_jobs)))),
            implementation_steps: vec!["Open more hours of your availability schedule (`set_availability`), keeping maintenance windows where you need them.".into()],
        });
    }
    let ended = f.completed + f.failed;
    let failure = bps_of(u128::from(f.failed), u128::from(ended));
    if ended >= FAILURE_JOBS_MIN && failure > FAILURE_RATE_HIGH_BPS {
        out.push(Suggestion {
            code: "reduce_failures".into(),
            description: format!("{} of your {} ended jobs failed.", pct(failure), ended),
            impact: "A better reputation score: success is 35% of it, and routing ranks a lower score as a dearer price.".into(),
            implementation_steps: vec![
                "Read your worker's log for the failures' reasons and your listing's alerts (`aitbc marketplace alerts --gpu-id <gpu_id>`).".into(),
                "Check the GPU's stability (temperature, memory) and that your models are compatible; set alert thresholds with `configure_monitoring`.".into(),
                "Lower max_concurrent_jobs or the queue size while you investigate.".into(),
            ],
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(n: u64) -> Rate {
        Rate::from_raw(n)
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<Rate> = (1..=10).map(r).collect();
        assert_eq!(percentile(&v, 5_000), Some(r(5)));
        assert_eq!(percentile(&v, 9_000), Some(r(9)));
        assert_eq!(percentile(&v, 1_000), Some(r(1)));
        assert_eq!(percentile(&v, 10_000), Some(r(10)));
        assert_eq!(percentile(&v, 0), Some(r(1)));
        assert_eq!(percentile(&[r(7)], 5_000), Some(r(7)));
        assert_eq!(percentile(&[], 5_000), None);
    }

    #[test]
    fn trends_need_both_halves_and_more_than_five_percent() {
        assert_eq!(trend(100, 106), Trend::Rising);
        assert_eq!(trend(100, 105), Trend::Flat);
        assert_eq!(trend(100, 94), Trend::Falling);
        assert_eq!(trend(0, 10), Trend::Unknown);
    }

    #[test]
    fn each_rule_fires_on_its_facts_only() {
        let quiet = ListingFacts { price: r(100), region_median: Some(r(100)), utilization_bps: 5_000, ..Default::default() };
        assert!(suggest(&quiet).is_empty());
        let codes = |f: &ListingFacts| suggest(f).into_iter().map(|s| s.code).collect::<Vec<_>>();
        assert_eq!(codes(&ListingFacts { price: r(121), utilization_bps: 1_000, load_following_strategy: true, ..quiet.clone() }), ["lower_price"]);
        assert_eq!(codes(&ListingFacts { price: r(120), utilization_bps: 1_000, load_following_strategy: true, ..quiet.clone() }), Vec::<String>::new());
        assert_eq!(codes(&ListingFacts { price: r(79), utilization_bps: 9_000, ..quiet.clone() }), ["raise_price", "follow_load"]);
        assert_eq!(codes(&ListingFacts { closed_hours: 10, region_jobs_in_closed_hours: 3, region_jobs: 6, ..quiet.clone() }), ["widen_schedule"]);
        assert_eq!(codes(&ListingFacts { completed: 8, failed: 2, ..quiet.clone() }), ["reduce_failures"]);
        assert_eq!(codes(&ListingFacts { completed: 3, failed: 1, ..quiet.clone() }), Vec::<String>::new(), "too few jobs");
        let s = &suggest(&ListingFacts { price: r(200), utilization_bps: 0, load_following_strategy: true, ..quiet })[0];
        assert!(s.description.contains("200.00%") && !s.implementation_steps.is_empty() && !s.impact.is_empty(), "{s:?}");
    }
}
