//! The lift between two arms and its delta-method variance, shared by every test (gbstats `frequentist_diff`/`frequentist_variance`).

use crate::statistic::Statistic;

/// Whether lifts are relative to the control mean (gbstats' default) or absolute differences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Difference {
    #[default]
    Relative,
    Absolute,
}

impl Difference {
    /// gbstats' name: `"relative"` or `"absolute"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Difference::Relative => "relative",
            Difference::Absolute => "absolute",
        }
    }
}

/// Why gbstats returns its uninformative default result instead of a test (its `error_message` codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declined {
    /// An arm's variance is zero or negative (constant data, `n = 1`, a proportion of 0 or 1).
    ZeroNegativeVariance,
    /// The control mean is zero, so no relative lift exists.
    ZeroNegativeBaselineVariation,
    /// An arm has no units.
    NoUnitsInVariation,
}

impl Declined {
    /// The code gbstats reports.
    pub fn code(self) -> &'static str {
        match self {
            Declined::ZeroNegativeVariance => "ZERO_NEGATIVE_VARIANCE",
            Declined::ZeroNegativeBaselineVariation => "ZERO_NEGATIVE_BASELINE_VARIATION",
            Declined::NoUnitsInVariation => "NO_UNITS_IN_VARIATION",
        }
    }
}

/// A normal approximation of the lift (gbstats `Uplift` with `dist = "normal"`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Uplift {
    pub mean: f64,
    pub stddev: f64,
}

/// The lift of `b` over `a`; relative lifts divide by the unadjusted control mean.
pub fn point_estimate(a: &Statistic, b: &Statistic, difference: Difference) -> f64 {
    let mut baseline = a.unadjusted_mean();
    if baseline == 0.0 {
        baseline = a.mean();
    }
    match difference {
        Difference::Relative => (b.mean() - a.mean()) / baseline,
        Difference::Absolute => b.mean() - a.mean(),
    }
}

/// Variance of [`point_estimate`]; for relative lifts the delta method on `μb/μa`.
pub fn variance(a: &Statistic, b: &Statistic, difference: Difference) -> f64 {
    let (var_a, mean_a, n_a) = (a.variance(), a.unadjusted_mean(), a.n() as f64);
    let (var_b, mean_b, n_b) = (b.variance(), b.unadjusted_mean(), b.n() as f64);
    match difference {
        Difference::Relative => {
            var_b / (mean_a.powi(2) * n_b) + var_a * mean_b.powi(2) / (mean_a.powi(4) * n_a)
        }
        Difference::Absolute => var_b / n_b + var_a / n_a,
    }
}

/// Welch–Satterthwaite degrees of freedom.
pub fn welch_dof(a: &Statistic, b: &Statistic) -> f64 {
    let (var_a, n_a) = (a.variance(), a.n() as f64);
    let (var_b, n_b) = (b.variance(), b.n() as f64);
    (var_b / n_b + var_a / n_a).powi(2)
        / (var_b.powi(2) / (n_b.powi(2) * (n_b - 1.0))
            + var_a.powi(2) / (n_a.powi(2) * (n_a - 1.0)))
}
