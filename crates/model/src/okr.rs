//! Live OKRs, the pure part: a quarter's span in time, the window a key result is measured over, and how its
//! progress compares with the pace the quarter asks for (the confidence flag `okr tree` shows).
//!
//! Every function here is a function of the registry's records and an as-of instant, so every node that holds the
//! same key results shows the same flags for the same as-of date.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::calendar::{DAY_MS, date_start_ms, days_from_civil};
use crate::{Error, KeyResult, validate_quarter};

pub mod tree;

/// Window of a key result when none is given: four weeks, so weekly patterns weigh the same in every window.
pub const DEFAULT_KEY_RESULT_WINDOW_DAYS: u32 = 28;
/// Longest window of a key result: a year and a day covers any quarter's yearly comparison.
pub const MAX_KEY_RESULT_WINDOW_DAYS: u32 = 366;
/// Progress this far behind the expected pace is still on track.
pub const ON_TRACK_SLACK: f64 = 0.1;
/// Progress this far behind the expected pace is at risk; further behind is off track.
pub const AT_RISK_SLACK: f64 = 0.3;
/// Absorbs floating-point rounding at the boundaries, so that a pace exactly on a boundary gets the better flag.
const BOUNDARY_EPSILON: f64 = 1e-9;

/// A calendar quarter, `2026Q4`: 2026-10-01 (inclusive) to 2027-01-01 (exclusive), UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quarter {
    /// Year.
    pub year: i64,
    /// 1 to 4.
    pub number: u8,
}

impl Quarter {
    /// The first instant of the quarter (Unix ms).
    pub fn start_ms(self) -> i64 {
        let month = i64::from(self.number - 1) * 3 + 1;
        days_from_civil(self.year, month, 1) * DAY_MS
    }

    /// The first instant after the quarter (Unix ms): the start of the next one.
    pub fn end_ms(self) -> i64 {
        self.next().start_ms()
    }

    /// The quarter after this one.
    pub fn next(self) -> Self {
        if self.number == 4 {
            Self {
                year: self.year + 1,
                number: 1,
            }
        } else {
            Self {
                year: self.year,
                number: self.number + 1,
            }
        }
    }

    /// The share of the quarter elapsed at `at_ms`, in [0, 1]: 0 before it starts, 1 once it is over.
    pub fn elapsed_share(self, at_ms: i64) -> f64 {
        let (start, end) = (self.start_ms(), self.end_ms());
        ((at_ms - start) as f64 / (end - start) as f64).clamp(0.0, 1.0)
    }
}

impl FromStr for Quarter {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        validate_quarter("quarter", text)?;
        Ok(Self {
            year: text[..4].parse().expect("validated: four digits"),
            number: text[5..].parse().expect("validated: 1 to 4"),
        })
    }
}

impl fmt::Display for Quarter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}Q{}", self.year, self.number)
    }
}

/// How a key result's progress compares with the pace its objective's quarter asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    /// Progress is at most [`ON_TRACK_SLACK`] behind the elapsed share of the quarter, or the target is reached.
    OnTrack,
    /// Progress is at most [`AT_RISK_SLACK`] behind.
    AtRisk,
    /// Progress is further behind.
    OffTrack,
    /// No current value has been published yet.
    NoData,
}

impl Confidence {
    /// The flag for `progress` (`None` before any current value) against the `expected` share of the quarter.
    pub fn from_pace(progress: Option<f64>, expected: f64) -> Self {
        let Some(progress) = progress else {
            return Self::NoData;
        };
        let ahead = progress - expected + BOUNDARY_EPSILON;
        if progress >= 1.0 || ahead >= -ON_TRACK_SLACK {
            Self::OnTrack
        } else if ahead >= -AT_RISK_SLACK {
            Self::AtRisk
        } else {
            Self::OffTrack
        }
    }

    /// For people: `on track`, `at risk`, `off track`, `no data`.
    pub fn describe(self) -> &'static str {
        match self {
            Self::OnTrack => "on track",
            Self::AtRisk => "at risk",
            Self::OffTrack => "off track",
            Self::NoData => "no data",
        }
    }
}

impl fmt::Display for Confidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// A period of time, `[start_ms, end_ms)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Window {
    /// First instant inside (Unix ms).
    pub start_ms: i64,
    /// First instant after (Unix ms).
    pub end_ms: i64,
}

impl Window {
    /// The `days` days that end at `end_ms`.
    pub fn ending(end_ms: i64, days: u32) -> Self {
        Self {
            start_ms: end_ms - i64::from(days) * DAY_MS,
            end_ms,
        }
    }

    /// Whether `at_ms` falls inside.
    pub fn contains(&self, at_ms: i64) -> bool {
        (self.start_ms..self.end_ms).contains(&at_ms)
    }
}

/// Where a key result stands at an as-of instant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pace {
    /// Share of the way from baseline to target, `None` before any current value.
    pub progress: Option<f64>,
    /// Elapsed share of the objective's quarter.
    pub expected: f64,
    /// The flag.
    pub confidence: Confidence,
}

impl KeyResult {
    /// The window this key result is measured over when measured as of `as_of_ms`.
    pub fn window(&self, as_of_ms: i64) -> Window {
        Window::ending(as_of_ms, self.window_days)
    }

    /// Progress against the pace of `quarter` (its objective's) as of `as_of_ms`.
    pub fn pace(&self, quarter: Quarter, as_of_ms: i64) -> Pace {
        let progress = self.progress();
        let expected = quarter.elapsed_share(as_of_ms);
        Pace {
            progress,
            expected,
            confidence: Confidence::from_pace(progress, expected),
        }
    }
}

/// The as-of instant of a date written `YYYY-MM-DD`: the end of that day (UTC), so that a window or a quarter's
/// pace "as of 2026-11-15" includes all of 15 November.
pub fn as_of_ms(field: &str, date: &str) -> Result<i64, Error> {
    Ok(date_start_ms(field, date)? + DAY_MS)
}

/// Checks a key result's window.
pub fn validate_window_days(field: &str, days: u32) -> Result<(), Error> {
    if (1..=MAX_KEY_RESULT_WINDOW_DAYS).contains(&days) {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("{days} is not between 1 and {MAX_KEY_RESULT_WINDOW_DAYS} days"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(text: &str) -> i64 {
        date_start_ms("date", text).expect("a date")
    }

    fn quarter(text: &str) -> Quarter {
        text.parse().expect("a quarter")
    }

    #[test]
    fn quarters_span_their_three_months() {
        let q4 = quarter("2026Q4");
        assert_eq!(q4.start_ms(), date("2026-10-01"));
        assert_eq!(q4.end_ms(), date("2027-01-01"));
        assert_eq!(q4.to_string(), "2026Q4");
        assert_eq!(quarter("2026Q1").end_ms(), date("2026-04-01"));
        assert_eq!(
            quarter("2024Q1").end_ms() - quarter("2024Q1").start_ms(),
            91 * DAY_MS
        );
        assert_eq!(quarter("2026Q3").next(), quarter("2026Q4"));
        assert!("2026Q0".parse::<Quarter>().is_err());
        assert!("26Q1".parse::<Quarter>().is_err());
    }

    #[test]
    fn elapsed_share_runs_from_zero_to_one() {
        let q4 = quarter("2026Q4");
        assert_eq!(q4.elapsed_share(date("2026-09-30")), 0.0);
        assert_eq!(q4.elapsed_share(date("2026-10-01")), 0.0);
        // 2026Q4 has 92 days; the end of 15 November is 46 days in.
        assert_eq!(q4.elapsed_share(date("2026-11-16")), 0.5);
        assert_eq!(q4.elapsed_share(date("2027-01-01")), 1.0);
        assert_eq!(q4.elapsed_share(date("2027-06-01")), 1.0);
    }

    #[test]
    fn confidence_follows_the_pace() {
        let flag = Confidence::from_pace;
        assert_eq!(flag(None, 0.5), Confidence::NoData);
        assert_eq!(flag(Some(0.5), 0.5), Confidence::OnTrack);
        assert_eq!(flag(Some(0.4), 0.5), Confidence::OnTrack, "the boundary");
        assert_eq!(flag(Some(0.39), 0.5), Confidence::AtRisk);
        assert_eq!(flag(Some(0.2), 0.5), Confidence::AtRisk, "the boundary");
        assert_eq!(flag(Some(0.19), 0.5), Confidence::OffTrack);
        assert_eq!(
            flag(Some(0.0), 0.05),
            Confidence::OnTrack,
            "early in the quarter"
        );
        assert_eq!(flag(Some(1.0), 1.0), Confidence::OnTrack);
        assert_eq!(flag(Some(0.85), 1.0), Confidence::AtRisk);
        assert_eq!(flag(Some(0.5), 1.0), Confidence::OffTrack);
        assert_eq!(
            serde_json::to_value(Confidence::OffTrack).expect("serializes"),
            "off_track"
        );
        assert_eq!(Confidence::AtRisk.to_string(), "at risk");
    }

    #[test]
    fn a_key_result_is_paced_against_its_quarter() {
        let kr = KeyResult {
            id: "kr".into(),
            objective: "o".into(),
            pod: "emea".into(),
            metric: "m".into(),
            baseline: 0.3,
            target: 0.7,
            current: Some(0.4),
            updated_at_ms: 0,
            window_days: 28,
        };
        let pace = kr.pace(quarter("2026Q4"), date("2026-11-16"));
        assert_eq!(pace.expected, 0.5);
        assert!((pace.progress.expect("a value") - 0.25).abs() < 1e-12);
        assert_eq!(pace.confidence, Confidence::AtRisk);
        let reached = KeyResult {
            current: Some(0.9),
            ..kr.clone()
        };
        let pace = reached.pace(quarter("2026Q4"), date("2027-01-01"));
        assert_eq!(
            (pace.progress, pace.confidence),
            (Some(1.0), Confidence::OnTrack)
        );
        let fresh = KeyResult {
            current: None,
            ..kr.clone()
        };
        assert_eq!(
            fresh.pace(quarter("2026Q4"), date("2026-12-01")).confidence,
            Confidence::NoData
        );
        let window = kr.window(date("2026-11-16"));
        assert_eq!(window.start_ms, date("2026-10-19"));
        assert!(window.contains(date("2026-10-19")));
        assert!(!window.contains(date("2026-11-16")));
    }

    #[test]
    fn as_of_a_date_is_the_end_of_it() {
        assert_eq!(as_of_ms("--as-of", "2026-11-15"), Ok(date("2026-11-16")));
        assert_eq!(
            quarter("2026Q4").elapsed_share(as_of_ms("--as-of", "2026-12-31").expect("a date")),
            1.0
        );
        assert!(as_of_ms("--as-of", "15/11/2026").is_err());
    }

    #[test]
    fn windows_are_bounded() {
        assert!(validate_window_days("--window-days", 28).is_ok());
        assert!(validate_window_days("--window-days", 0).is_err());
        assert_eq!(
            validate_window_days("--window-days", 400)
                .expect_err("too long")
                .to_string(),
            "--window-days: 400 is not between 1 and 366 days"
        );
    }
}
