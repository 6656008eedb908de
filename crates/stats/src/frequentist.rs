//! Frequentist tests of a lift: Welch's two-sided t-test and the always-valid sequential test (gbstats 0.8.0).

use crate::distribution::student;
use crate::error::{Error, open_unit, positive};
use crate::lift::{self, Declined, Difference, Uplift};
use crate::statistic::{Statistic, with_pooled_theta};

/// gbstats' default `sequential_tuning_parameter`.
pub const DEFAULT_SEQUENTIAL_TUNING: f64 = 5000.0;

/// Settings of a frequentist test (gbstats `FrequentistConfig`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    pub alpha: f64,
    pub difference: Difference,
    /// The lift under the null hypothesis.
    pub test_value: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            alpha: 0.05,
            difference: Difference::Relative,
            test_value: 0.0,
        }
    }
}

/// The outcome of a frequentist test, with gbstats' field meanings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TestResult {
    /// The lift point estimate.
    pub expected: f64,
    pub ci: [f64; 2],
    pub uplift: Uplift,
    pub p_value: f64,
    /// Set when gbstats would decline; the other fields then hold its defaults.
    pub error: Option<Declined>,
}

impl TestResult {
    /// gbstats' `_default_output`: no lift, `[0, 0]` interval, `p = 1`.
    fn declined(reason: Declined) -> Self {
        TestResult {
            expected: 0.0,
            ci: [0.0, 0.0],
            uplift: Uplift::default(),
            p_value: 1.0,
            error: Some(reason),
        }
    }
}

/// The lift and its variance once both arms are known testable.
struct Lift {
    estimate: f64,
    variance: f64,
}

/// gbstats' checks before any frequentist test (also applied to absolute lifts).
fn prepare(a: &Statistic, b: &Statistic, config: &Config) -> Result<Result<Lift, Declined>, Error> {
    open_unit("alpha", config.alpha)?;
    if a.mean() == 0.0 || a.unadjusted_mean() == 0.0 {
        return Ok(Err(Declined::ZeroNegativeBaselineVariation));
    }
    if a.has_zero_variance() || b.has_zero_variance() {
        return Ok(Err(Declined::ZeroNegativeVariance));
    }
    let estimate = lift::point_estimate(a, b, config.difference);
    Ok(Ok(Lift {
        estimate,
        variance: lift::variance(a, b, config.difference),
    }))
}

/// Welch's two-sided t-test on the lift (gbstats `TwoSidedTTest`).
pub fn two_sided_ttest(a: &Statistic, b: &Statistic, config: &Config) -> Result<TestResult, Error> {
    let (a, b) = with_pooled_theta(a, b)?;
    let lift = match prepare(&a, &b, config)? {
        Ok(lift) => lift,
        Err(reason) => return Ok(TestResult::declined(reason)),
    };
    let dof = lift::welch_dof(&a, &b);
    let stddev = lift.variance.sqrt();
    let critical = (lift.estimate - config.test_value) / stddev;
    let width = student::ppf(1.0 - config.alpha / 2.0, dof) * stddev;
    Ok(TestResult {
        expected: lift.estimate,
        ci: [lift.estimate - width, lift.estimate + width],
        uplift: Uplift {
            mean: lift.estimate,
            stddev,
        },
        p_value: 2.0 * (1.0 - student::cdf(critical.abs(), dof)),
        error: None,
    })
}

/// The always-valid two-sided test of Waudby-Smith et al. (gbstats `SequentialTwoSidedTTest`).
pub fn sequential_ttest(
    a: &Statistic,
    b: &Statistic,
    config: &Config,
    tuning: f64,
) -> Result<TestResult, Error> {
    positive("sequential tuning parameter", tuning)?;
    let (a, b) = with_pooled_theta(a, b)?;
    let lift = match prepare(&a, &b, config)? {
        Ok(lift) => lift,
        Err(reason) => return Ok(TestResult::declined(reason)),
    };
    let total = (a.n() + b.n()) as f64;
    let rho = sequential_rho(config.alpha, tuning);
    let width = sequential_half_width(lift.variance, total, rho, config.alpha);
    Ok(TestResult {
        expected: lift.estimate,
        ci: [lift.estimate - width, lift.estimate + width],
        uplift: Uplift {
            mean: lift.estimate,
            stddev: lift.variance.sqrt(),
        },
        p_value: sequential_p_value(&lift, total, rho, config.test_value),
        error: None,
    })
}

/// Eq. 161 of arXiv:2103.06476v7.
fn sequential_rho(alpha: f64, tuning: f64) -> f64 {
    ((-2.0 * alpha.ln() + (-2.0 * alpha.ln() + 1.0).ln()) / tuning).sqrt()
}

/// Eq. 9 of arXiv:2103.06476v7: the half-width of the always-valid interval.
fn sequential_half_width(variance: f64, total: f64, rho: f64, alpha: f64) -> f64 {
    let s2 = variance * total;
    let n_rho2 = total * rho.powi(2);
    s2.sqrt()
        * ((2.0 * (n_rho2 + 1.0)) * ((n_rho2 + 1.0).sqrt() / alpha).ln() / (total * rho).powi(2))
            .sqrt()
}

/// Eq. 155 of arXiv:2103.06476v7: the always-valid p-value `min(1, 1/e-value)`.
fn sequential_p_value(lift: &Lift, total: f64, rho: f64, test_value: f64) -> f64 {
    let st2 = (lift.estimate - test_value).powi(2) * total / lift.variance;
    let tr2p1 = total * rho.powi(2) + 1.0;
    let evalue = (rho.powi(2) * st2 / (2.0 * tr2p1)).exp() / tr2p1.sqrt();
    (1.0 / evalue).min(1.0)
}
