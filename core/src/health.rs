//! Worker health reports and the alert rules over them (the provider guide's
//! `configure_monitoring`). A worker reports what it measured; the provider sets thresholds per
//! listing; a report that crosses one is a breach. Pure rules: storing reports and alerts is the
//! market's.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Basis points in one whole.
pub const BPS_ONE: u32 = 10_000;
/// A GPU temperature above this (degrees Celsius) is not a reading but a fault.
pub const GPU_TEMPERATURE_C_MAX: u32 = 150;
/// Memory sizes (MiB) above this are not plausible for one machine (1 PiB).
pub const MEMORY_MIB_MAX: u64 = 1 << 30;
/// Jobs one report may count, at most (a report covers minutes, not months).
pub const REPORT_JOBS_MAX: u32 = 1_000_000;
/// Queue lengths a threshold may name, at most (the largest queue a listing has).
pub const QUEUE_LENGTH_MAX: u32 = 100_000;
/// How often a worker reports health: at least every this many seconds...
pub const REPORT_INTERVAL_S_MIN: u32 = 10;
/// ...and at most this many (an hour).
pub const REPORT_INTERVAL_S_MAX: u32 = 3_600;
/// The report interval of a listing whose provider names none.
pub const REPORT_INTERVAL_S_DEFAULT: u32 = 60;
/// A failure-rate alert needs at least this many ended jobs in one report: one failure out of
/// one job is not a rate.
pub const FAILURE_RATE_JOBS_MIN: u32 = 5;

/// What a worker measured since its previous report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HealthReport {
    /// Whether the worker's compute device answers (false: the GPU failed or vanished).
    pub gpu_ok: bool,
    /// Degrees Celsius (0..=150), where the device reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(maximum = 150))]
    pub gpu_temperature_c: Option<u32>,
    /// The device's utilization in basis points (0..=10000), where it reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(maximum = 10000))]
    pub gpu_utilization_bps: Option<u32>,
    /// Device (or, on a CPU worker, host) memory in use, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(maximum = 1073741824))]
    pub memory_used_mib: Option<u64>,
    /// Device (or host) memory in all, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(maximum = 1073741824))]
    pub memory_total_mib: Option<u64>,
    /// Jobs the worker completed since its previous report.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(maximum = 1000000))]
    pub jobs_completed: u32,
    /// Jobs the worker failed since its previous report.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(maximum = 1000000))]
    pub jobs_failed: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthError {
    pub field: &'static str,
    pub reason: String,
}

impl fmt::Display for HealthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

fn err(field: &'static str, reason: impl Into<String>) -> HealthError {
    HealthError { field, reason: reason.into() }
}

impl HealthReport {
    pub fn validate(&self) -> Result<(), HealthError> {
        if self.gpu_temperature_c.is_some_and(|t| t > GPU_TEMPERATURE_C_MAX) {
            return Err(err("health.gpu_temperature_c", format!("at most {GPU_TEMPERATURE_C_MAX}")));
        }
        if self.gpu_utilization_bps.is_some_and(|u| u > BPS_ONE) {
            return Err(err("health.gpu_utilization_bps", format!("at most {BPS_ONE}")));
        }
        for (field, v) in [("health.memory_used_mib", self.memory_used_mib), ("health.memory_total_mib", self.memory_total_mib)] {
            if v.is_some_and(|m| m > MEMORY_MIB_MAX) {
                return Err(err(field, format!("at most {MEMORY_MIB_MAX}")));
            }
        }
        if let (Some(used), Some(total)) = (self.memory_used_mib, self.memory_total_mib) {
            if used > total {
                return Err(err("health.memory_used_mib", "more than memory_total_mib"));
            }
        }
        if self.jobs_completed > REPORT_JOBS_MAX || self.jobs_failed > REPORT_JOBS_MAX {
            return Err(err("health.jobs_completed", format!("each count at most {REPORT_JOBS_MAX}")));
        }
        Ok(())
    }

    /// Memory in use as basis points of the total, when both are known and the total is not 0.
    pub fn memory_used_bps(&self) -> Option<u32> {
        match (self.memory_used_mib, self.memory_total_mib) {
            (Some(used), Some(total)) if total > 0 => Some((u128::from(used) * u128::from(BPS_ONE) / u128::from(total)) as u32),
            _ => None,
        }
    }

    /// Failed over ended jobs in basis points, when at least `FAILURE_RATE_JOBS_MIN` ended.
    pub fn failure_rate_bps(&self) -> Option<u32> {
        let ended = u64::from(self.jobs_completed) + u64::from(self.jobs_failed);
        (ended >= u64::from(FAILURE_RATE_JOBS_MIN)).then(|| (u64::from(self.jobs_failed) * u64::from(BPS_ONE) / ended) as u32)
    }
}

/// A listing's alert thresholds; an absent one never fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct AlertThresholds {
    /// Alert at once when a worker reports its GPU failed (`gpu_ok: false`).
    pub gpu_failure: bool,
    /// Alert above this temperature, degrees Celsius (1..=150).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 150))]
    pub gpu_temperature_c_max: Option<u32>,
    /// Alert above this device utilization, basis points (1..=10000).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10000))]
    pub gpu_utilization_bps_max: Option<u32>,
    /// Alert above this share of memory in use, basis points (1..=10000).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10000))]
    pub memory_used_bps_max: Option<u32>,
    /// Alert above this share of failed jobs in one report (of at least 5 ended), basis points
    /// (1..=10000).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10000))]
    pub failure_rate_bps_max: Option<u32>,
    /// Alert above this many jobs waiting in the listing's queue (1..=100000).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100000))]
    pub queue_length_max: Option<u32>,
}

/// A listing's monitoring: how often its workers report, and when a report is an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MonitoringConfig {
    /// Seconds between a worker's health reports (10..=3600, default 60). A worker also
    /// heartbeats every 10 s whatever this says; a listing whose worker stops goes offline.
    #[serde(default = "default_interval")]
    #[cfg_attr(feature = "openapi", schema(minimum = 10, maximum = 3600))]
    pub report_interval_s: u32,
    #[serde(default)]
    pub alerts: AlertThresholds,
}

fn default_interval() -> u32 {
    REPORT_INTERVAL_S_DEFAULT
}

impl MonitoringConfig {
    pub fn validate(&self) -> Result<(), HealthError> {
        if !(REPORT_INTERVAL_S_MIN..=REPORT_INTERVAL_S_MAX).contains(&self.report_interval_s) {
            return Err(err("report_interval_s", format!("must be {REPORT_INTERVAL_S_MIN}..={REPORT_INTERVAL_S_MAX}")));
        }
        let a = &self.alerts;
        let checks: [(&'static str, Option<u32>, u32); 5] = [
            ("alerts.gpu_temperature_c_max", a.gpu_temperature_c_max, GPU_TEMPERATURE_C_MAX),
            ("alerts.gpu_utilization_bps_max", a.gpu_utilization_bps_max, BPS_ONE),
            ("alerts.memory_used_bps_max", a.memory_used_bps_max, BPS_ONE),
            ("alerts.failure_rate_bps_max", a.failure_rate_bps_max, BPS_ONE),
            ("alerts.queue_length_max", a.queue_length_max, QUEUE_LENGTH_MAX),
        ];
        for (field, value, max) in checks {
            if value.is_some_and(|v| !(1..=max).contains(&v)) {
                return Err(err(field, format!("must be 1..={max}")));
            }
        }
        Ok(())
    }
}

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    GpuFailure,
    GpuTemperature,
    GpuUtilization,
    MemoryUsed,
    FailureRate,
    QueueLength,
}

impl Metric {
    pub const ALL: [Metric; 6] = [Metric::GpuFailure, Metric::GpuTemperature, Metric::GpuUtilization, Metric::MemoryUsed, Metric::FailureRate, Metric::QueueLength];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::GpuFailure => "gpu_failure",
            Metric::GpuTemperature => "gpu_temperature",
            Metric::GpuUtilization => "gpu_utilization",
            Metric::MemoryUsed => "memory_used",
            Metric::FailureRate => "failure_rate",
            Metric::QueueLength => "queue_length",
        }
    }
}

/// A threshold a report crossed: the value measured and the limit (in the metric's unit:
/// degrees, basis points, jobs; for `gpu_failure` 1 over 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Breach {
    pub metric: Metric,
    pub value: u64,
    pub threshold: u64,
}

/// The thresholds `report` crosses, with `queue_length` jobs waiting. A value equal to its
/// threshold is not a breach; an unmeasured value never is.
pub fn breaches(thresholds: &AlertThresholds, report: &HealthReport, queue_length: u64) -> Vec<Breach> {
    let mut out = Vec::new();
    let mut over = |metric: Metric, value: Option<u64>, threshold: Option<u32>| {
        if let (Some(value), Some(threshold)) = (value, threshold) {
            if value > u64::from(threshold) {
                out.push(Breach { metric, value, threshold: u64::from(threshold) });
            }
        }
    };
    over(Metric::GpuFailure, Some(u64::from(!report.gpu_ok)), thresholds.gpu_failure.then_some(0));
    over(Metric::GpuTemperature, report.gpu_temperature_c.map(u64::from), thresholds.gpu_temperature_c_max);
    over(Metric::GpuUtilization, report.gpu_utilization_bps.map(u64::from), thresholds.gpu_utilization_bps_max);
    over(Metric::MemoryUsed, report.memory_used_bps().map(u64::from), thresholds.memory_used_bps_max);
    over(Metric::FailureRate, report.failure_rate_bps().map(u64::from), thresholds.failure_rate_bps_max);
    over(Metric::QueueLength, Some(queue_length), thresholds.queue_length_max);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> HealthReport {
        HealthReport { gpu_ok: true, gpu_temperature_c: Some(70), gpu_utilization_bps: Some(5_000), memory_used_mib: Some(900), memory_total_mib: Some(1_000), jobs_completed: 8, jobs_failed: 2 }
    }

    #[test]
    fn each_threshold_fires_above_and_not_at_its_value() {
        let all = AlertThresholds {
            gpu_failure: true,
            gpu_temperature_c_max: Some(70),
            gpu_utilization_bps_max: Some(5_000),
            memory_used_bps_max: Some(9_000),
            failure_rate_bps_max: Some(2_000),
            queue_length_max: Some(3),
        };
        assert!(breaches(&all, &report(), 3).is_empty(), "equal is not above");
        let hot = HealthReport { gpu_ok: false, gpu_temperature_c: Some(71), gpu_utilization_bps: Some(5_001), memory_used_mib: Some(901), jobs_failed: 3, ..report() };
        let fired: Vec<Metric> = breaches(&all, &hot, 4).iter().map(|b| b.metric).collect();
        assert_eq!(fired, Metric::ALL.to_vec());
        let b = breaches(&all, &hot, 4);
        assert_eq!((b[4].value, b[4].threshold), (2_727, 2_000), "3 failed of 11");
        assert!(breaches(&AlertThresholds::default(), &hot, 1_000).is_empty(), "no thresholds, no alerts");
    }

    #[test]
    fn unmeasured_or_too_few_jobs_never_fire() {
        let t = AlertThresholds { gpu_temperature_c_max: Some(1), memory_used_bps_max: Some(1), failure_rate_bps_max: Some(1), ..Default::default() };
        let quiet = HealthReport { gpu_ok: true, jobs_failed: 4, ..Default::default() };
        assert!(breaches(&t, &quiet, 0).is_empty());
    }

    #[test]
    fn reports_and_configs_are_bounded() {
        assert!(report().validate().is_ok());
        assert_eq!(HealthReport { gpu_temperature_c: Some(151), ..report() }.validate().unwrap_err().field, "health.gpu_temperature_c");
        assert!(HealthReport { memory_used_mib: Some(1_001), ..report() }.validate().is_err());
        assert!(HealthReport { gpu_utilization_bps: Some(10_001), ..report() }.validate().is_err());
        let ok = MonitoringConfig { report_interval_s: 30, alerts: AlertThresholds::default() };
        assert!(ok.validate().is_ok());
        assert!(MonitoringConfig { report_interval_s: 9, ..ok.clone() }.validate().is_err());
        assert!(MonitoringConfig { alerts: AlertThresholds { queue_length_max: Some(0), ..Default::default() }, ..ok.clone() }.validate().is_err());
        assert!(MonitoringConfig { alerts: AlertThresholds { memory_used_bps_max: Some(10_001), ..Default::default() }, ..ok }.validate().is_err());
    }
}
