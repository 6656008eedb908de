//! The domain of growthmesh: members and roles, objectives, key results, event schemas, metric definitions,
//! experiments, approvals, budgets and learnings, as plain serde types with their validation.
//!
//! # Layout
//! - `doc.rs`: [`DocId`], the write authorities of the registry, and [`Role`].
//! - `records.rs`: one type per registry record.
//! - `view.rs`: [`RegistryView`], the typed registry every reader sees.
//! - `okr.rs`: live OKRs: [`okr::Quarter`], key result windows, pace and [`okr::Confidence`].
//! - `calendar.rs`: dates to Unix days and back (quarters, `--as-of` dates, event timestamps); `time.rs`: RFC 3339
//!   timestamps, dates and quarters as text.
//!
//! This crate does no I/O and reads no clock; times are parameters (Unix milliseconds).

pub mod calendar;
mod doc;
pub mod okr;
mod records;
mod result;
pub mod time;
mod view;

pub use doc::{DocId, Role};
pub use records::*;
pub use result::{
    DEFAULT_ALPHA, LiftSummary, MetricSummary, ResultDecision, ResultSummary, VariantStatistics,
};
pub use view::{Federation, RegistryView};

/// Errors of validating domain values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A field has a value it cannot take.
    #[error("{field}: {problem}")]
    Invalid {
        /// The field, as the user spells it (`--quarter`, `name`).
        field: String,
        /// What is wrong.
        problem: String,
    },
}

impl Error {
    /// Builds an [`Error::Invalid`].
    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// Checks a name used in document ids and keys: 1 to 48 characters of `a-z`, `0-9`, `-`, `_`, `.`.
pub fn validate_slug(field: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() || value.len() > 48 {
        return Err(Error::invalid(field, "must be 1 to 48 characters"));
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c);
    if let Some(bad) = value.chars().find(|c| !allowed(*c)) {
        return Err(Error::invalid(
            field,
            format!("`{value}` contains `{bad}`; use lowercase letters, digits, `-`, `_` or `.`"),
        ));
    }
    Ok(())
}

/// Checks a free-text field: non-empty after trimming and at most `max` bytes.
pub fn validate_text(field: &str, value: &str, max: usize) -> Result<(), Error> {
    if value.trim().is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(Error::invalid(
            field,
            format!("is {} bytes, at most {max} allowed", value.len()),
        ));
    }
    Ok(())
}

/// Checks a quarter written as `2026Q4`.
pub fn validate_quarter(field: &str, value: &str) -> Result<(), Error> {
    let ok = value.len() == 6
        && value[..4].chars().all(|c| c.is_ascii_digit())
        && &value[4..5] == "Q"
        && matches!(&value[5..], "1" | "2" | "3" | "4");
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("`{value}` is not a quarter like 2026Q4"),
        ))
    }
}

/// Checks a date written as `YYYY-MM-DD`.
pub fn validate_date(field: &str, value: &str) -> Result<(), Error> {
    let parts: Vec<&str> = value.split('-').collect();
    let numbers: Option<Vec<u32>> = parts.iter().map(|p| p.parse().ok()).collect();
    let ok = match (parts.as_slice(), numbers.as_deref()) {
        ([y, m, d], Some([_, month, day])) => {
            y.len() == 4
                && m.len() == 2
                && d.len() == 2
                && (1..=12).contains(month)
                && (1..=31).contains(day)
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("`{value}` is not a date like 2026-11-25"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert!(validate_slug("pod", "emea-growth").is_ok());
        let error = validate_slug("pod", "EMEA").expect_err("uppercase");
        assert_eq!(
            error.to_string(),
            "pod: `EMEA` contains `E`; use lowercase letters, digits, `-`, `_` or `.`"
        );
        assert!(validate_slug("pod", "").is_err());
    }

    #[test]
    fn quarters_and_dates() {
        assert!(validate_quarter("--quarter", "2026Q4").is_ok());
        assert!(validate_quarter("--quarter", "2026Q5").is_err());
        assert!(validate_quarter("--quarter", "Q4").is_err());
        assert!(validate_date("--start", "2026-11-25").is_ok());
        assert!(validate_date("--start", "2026-13-01").is_err());
        assert!(validate_date("--start", "tomorrow").is_err());
    }
}
