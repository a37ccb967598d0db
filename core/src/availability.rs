//! Availability schedules (the provider guide's `set_availability`): weekly windows in a time
//! zone, minus maintenance windows. A listing outside its schedule takes no new jobs.

use chrono::{Datelike, Timelike};
use serde::{Deserialize, Serialize};

/// Windows in one schedule, at most.
pub const WINDOWS_MAX: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid availability: {0}")]
pub struct ScheduleError(pub String);

/// `HH:MM-HH:MM` within one day; `00:00-24:00` is the whole day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hours {
    pub start_min: u32,
    pub end_min: u32,
}

impl Hours {
    pub fn parse(text: &str) -> Result<Self, ScheduleError> {
        let err = || ScheduleError(format!("hours {text:?} are not HH:MM-HH:MM"));
        let (a, b) = text.split_once('-').ok_or_else(err)?;
        let minute = |t: &str| -> Result<u32, ScheduleError> {
            let (h, m) = t.split_once(':').ok_or_else(err)?;
            if h.len() != 2 || m.len() != 2 {
                return Err(err());
            }
            let (h, m): (u32, u32) = (h.parse().map_err(|_| err())?, m.parse().map_err(|_| err())?);
            if m > 59 || h > 24 || (h == 24 && m != 0) {
                return Err(err());
            }
            Ok(h * 60 + m)
        };
        let (start_min, end_min) = (minute(a)?, minute(b)?);
        if start_min >= end_min {
            return Err(ScheduleError(format!("hours {text:?} end before they start")));
        }
        Ok(Self { start_min, end_min })
    }

    fn contains(&self, minute_of_day: u32) -> bool {
        (self.start_min..self.end_min).contains(&minute_of_day)
    }
}

const DAYS: [&str; 7] = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];

fn day_index(name: &str) -> Result<u32, ScheduleError> {
    DAYS.iter().position(|d| *d == name).map(|i| i as u32).ok_or_else(|| ScheduleError(format!("{name:?} is not a day name")))
}

/// A weekly window as the guide writes it: `{"days": ["monday", ...], "hours": "09:00-17:00"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Window {
    pub days: Vec<String>,
    pub hours: String,
}

/// A maintenance window: `{"day": "sunday", "hours": "02:00-04:00"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Maintenance {
    pub day: String,
    pub hours: String,
}

/// A schedule: available within any window and outside every maintenance window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub timezone: String,
    pub availability: Vec<Window>,
    #[serde(default)]
    pub maintenance_windows: Vec<Maintenance>,
}

impl Schedule {
    pub fn validate(&self) -> Result<chrono_tz::Tz, ScheduleError> {
        let tz: chrono_tz::Tz = self.timezone.parse().map_err(|_| ScheduleError(format!("unknown time zone {:?}", self.timezone)))?;
        if self.availability.is_empty() || self.availability.len() > WINDOWS_MAX || self.maintenance_windows.len() > WINDOWS_MAX {
            return Err(ScheduleError(format!("needs 1..={WINDOWS_MAX} windows and at most {WINDOWS_MAX} maintenance windows")));
        }
        for w in &self.availability {
            if w.days.is_empty() || w.days.len() > 7 {
                return Err(ScheduleError("a window names 1..=7 days".into()));
            }
            for d in &w.days {
                day_index(d)?;
            }
            Hours::parse(&w.hours)?;
        }
        for m in &self.maintenance_windows {
            day_index(&m.day)?;
            Hours::parse(&m.hours)?;
        }
        Ok(tz)
    }

    /// Whether the schedule is open at `now_ms` (a schedule that does not validate never is).
    pub fn is_open(&self, now_ms: i64) -> bool {
        let Ok(tz) = self.validate() else { return false };
        let Some(utc) = chrono::DateTime::from_timestamp_millis(now_ms) else { return false };
        let local = utc.with_timezone(&tz);
        let day = local.weekday().num_days_from_monday();
        let minute = local.hour() * 60 + local.minute();
        let in_window = |day_name: &str, hours: &str| day_index(day_name) == Ok(day) && Hours::parse(hours).is_ok_and(|h| h.contains(minute));
        self.availability.iter().any(|w| w.days.iter().any(|d| in_window(d, &w.hours)))
            && !self.maintenance_windows.iter().any(|m| in_window(&m.day, &m.hours))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The provider guide's example schedule.
    fn guide() -> Schedule {
        serde_json::from_value(serde_json::json!({
            "timezone": "UTC",
            "availability": [
                {"days": ["monday", "tuesday", "wednesday", "thursday", "friday"], "hours": "09:00-17:00"},
                {"days": ["saturday", "sunday"], "hours": "00:00-24:00"}
            ],
            "maintenance_windows": [{"day": "sunday", "hours": "02:00-04:00"}]
        }))
        .unwrap()
    }

    /// 2026-01-24 is a Saturday; 2026-01-26 a Monday.
    fn utc(day: u32, hour: u32, minute: u32) -> i64 {
        chrono::NaiveDate::from_ymd_opt(2026, 1, day).unwrap().and_hms_opt(hour, minute, 0).unwrap().and_utc().timestamp_millis()
    }

    #[test]
    fn the_guides_schedule() {
        let s = guide();
        assert!(s.validate().is_ok());
        assert!(s.is_open(utc(26, 9, 0)), "monday 09:00");
        assert!(s.is_open(utc(26, 16, 59)), "monday 16:59");
        assert!(!s.is_open(utc(26, 17, 0)), "monday 17:00");
        assert!(!s.is_open(utc(26, 8, 59)), "monday 08:59");
        assert!(s.is_open(utc(24, 3, 0)), "saturday 03:00");
        assert!(s.is_open(utc(25, 1, 59)), "sunday 01:59");
        assert!(!s.is_open(utc(25, 2, 0)), "sunday 02:00 maintenance");
        assert!(s.is_open(utc(25, 4, 0)), "sunday 04:00");
    }

    #[test]
    fn bad_schedules_are_refused() {
        for hours in ["9-17", "09:00-08:00", "25:00-26:00", "09:60-10:00", "24:01-24:02", "09:00"] {
            assert!(Hours::parse(hours).is_err(), "{hours}");
        }
        let mut s = guide();
        s.timezone = "Mars/Olympus".into();
        assert!(s.validate().is_err());
        let mut s = guide();
        s.availability[0].days.push("funday".into());
        assert!(s.validate().is_err());
        assert!(!s.is_open(utc(26, 10, 0)));
        let mut s = guide();
        s.availability.clear();
        assert!(s.validate().is_err());
    }
}
