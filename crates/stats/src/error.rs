//! The one error type of the `stats` crate: inputs that cannot describe any data or question.

/// Why a `stats` computation refused its input. Each variant names the field at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A count of units is zero where at least one unit is needed.
    #[error("n must be >= 1, got {n}")]
    EmptySample { n: u64 },
    /// A value that must be a finite number is not.
    #[error("{field} must be a finite number, got {value}")]
    NotFinite { field: &'static str, value: f64 },
    /// A sum of squares below `sum² / n` cannot come from real data.
    #[error("sum of squares {sum_squares} is below sum^2/n = {minimum}")]
    SumOfSquaresTooSmall { sum_squares: f64, minimum: f64 },
    /// A binomial count of successes outside `0..=n`.
    #[error("successes {sum} must be between 0 and n = {n}")]
    SuccessesOutOfRange { sum: f64, n: u64 },
    /// A probability parameter outside its open interval.
    #[error("{field} must be strictly between 0 and 1, got {value}")]
    ProbabilityOutOfRange { field: &'static str, value: f64 },
    /// A p-value outside `[0, 1]`.
    #[error("p-value #{index} must be in [0, 1], got {value}")]
    PValueOutOfRange { index: usize, value: f64 },
    /// A value that must be strictly positive is not.
    #[error("{field} must be > 0, got {value}")]
    NotPositive { field: &'static str, value: f64 },
    /// A value that must be non-zero is zero.
    #[error("{field} must not be zero")]
    Zero { field: &'static str },
    /// Too few items to compute anything (p-values, effects, groups).
    #[error("{field} needs at least {minimum} entries, got {count}")]
    TooFew {
        field: &'static str,
        minimum: usize,
        count: usize,
    },
    /// Two parallel lists of different lengths.
    #[error("{field} has {actual} entries, expected {expected}")]
    LengthMismatch {
        field: &'static str,
        expected: usize,
        actual: usize,
    },
    /// Regression adjustment across arms whose inner statistics differ (a mean in one, a proportion in the other).
    #[error("statistic types for a metric must be the same in every arm")]
    MixedStatisticKinds,
    /// The requested power cannot be reached at any effect size with this many users.
    #[error("power {power} is out of reach with {users} users per variation")]
    PowerUnreachable { power: f64, users: f64 },
}

/// Checks that `value` is finite.
pub(crate) fn finite(field: &'static str, value: f64) -> Result<f64, Error> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(Error::NotFinite { field, value })
    }
}

/// Checks that `value` is strictly between 0 and 1.
pub(crate) fn open_unit(field: &'static str, value: f64) -> Result<f64, Error> {
    if value > 0.0 && value < 1.0 {
        Ok(value)
    } else {
        Err(Error::ProbabilityOutOfRange { field, value })
    }
}

/// Checks that `value` is finite and strictly positive.
pub(crate) fn positive(field: &'static str, value: f64) -> Result<f64, Error> {
    if finite(field, value)? > 0.0 {
        Ok(value)
    } else {
        Err(Error::NotPositive { field, value })
    }
}
