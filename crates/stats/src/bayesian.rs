//! GrowthBook's Bayesian test of a lift: a Gaussian posterior on the effect (gbstats 0.8.0 `EffectBayesianABTest`).

use crate::distribution::normal;
use crate::error::{Error, open_unit};
use crate::lift::{self, Declined, Difference, Uplift};
use crate::statistic::{Statistic, with_pooled_theta};

/// A Gaussian prior on the effect (gbstats `GaussianPrior`); improper by default, i.e. flat.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GaussianPrior {
    pub mean: f64,
    pub variance: f64,
    /// An improper prior contributes nothing: the posterior is the data's normal approximation.
    pub proper: bool,
}

impl Default for GaussianPrior {
    fn default() -> Self {
        GaussianPrior {
            mean: 0.0,
            variance: 1.0,
            proper: false,
        }
    }
}

/// Settings of the Bayesian test (gbstats `EffectBayesianConfig`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// One minus the credible level.
    pub alpha: f64,
    pub difference: Difference,
    /// A metric where lower is better: swaps chance to win and the risks.
    pub inverse: bool,
    pub prior: GaussianPrior,
    /// The scale `prior` is written on; rescaled by the control mean when it differs from `difference`.
    pub prior_scale: Difference,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            alpha: 0.05,
            difference: Difference::Relative,
            inverse: false,
            prior: GaussianPrior::default(),
            prior_scale: Difference::Relative,
        }
    }
}

/// The posterior summary, with gbstats' field meanings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TestResult {
    /// The posterior mean of the lift.
    pub expected: f64,
    /// The equal-tailed credible interval.
    pub ci: [f64; 2],
    pub uplift: Uplift,
    pub chance_to_win: f64,
    /// Expected loss of choosing `[control, treatment]`.
    pub risk: [f64; 2],
    /// Set when gbstats would decline; the other fields then hold its defaults.
    pub error: Option<Declined>,
}

impl TestResult {
    /// gbstats' `_default_output`: even odds, no lift, no risk.
    fn declined(reason: Declined) -> Self {
        TestResult {
            expected: 0.0,
            ci: [0.0, 0.0],
            uplift: Uplift::default(),
            chance_to_win: 0.5,
            risk: [0.0, 0.0],
            error: Some(reason),
        }
    }
}

/// The Bayesian test of `b` against control `a`.
pub fn effect_test(a: &Statistic, b: &Statistic, config: &Config) -> Result<TestResult, Error> {
    open_unit("alpha", config.alpha)?;
    let (a, b) = with_pooled_theta(a, b)?;
    if let Some(reason) = declined(&a, &b, config.difference) {
        return Ok(TestResult::declined(reason));
    }
    let prior = rescaled_prior(
        &config.prior,
        config.prior_scale,
        config.difference,
        a.unadjusted_mean(),
    );
    let (mean, stddev) = posterior(&a, &b, config.difference, &prior);
    let risk = risk(mean, stddev);
    let chance = normal::cdf(-((0.0 - mean) / stddev));
    Ok(TestResult {
        expected: mean,
        ci: credible_interval(mean, stddev, config.alpha),
        uplift: Uplift { mean, stddev },
        chance_to_win: if config.inverse { 1.0 - chance } else { chance },
        risk: if config.inverse {
            [risk[1], risk[0]]
        } else {
            risk
        },
        error: None,
    })
}

/// gbstats' reasons to decline, in its order.
fn declined(a: &Statistic, b: &Statistic, difference: Difference) -> Option<Declined> {
    let zero_baseline = a.mean() == 0.0 || a.unadjusted_mean() == 0.0;
    if zero_baseline && difference == Difference::Relative {
        return Some(Declined::ZeroNegativeBaselineVariation);
    }
    if a.n() == 0 || b.n() == 0 {
        return Some(Declined::NoUnitsInVariation);
    }
    if a.has_zero_variance() || b.has_zero_variance() {
        return Some(Declined::ZeroNegativeVariance);
    }
    None
}

/// Moves a prior between the relative and absolute scales using the control mean.
fn rescaled_prior(
    prior: &GaussianPrior,
    from: Difference,
    to: Difference,
    baseline: f64,
) -> GaussianPrior {
    match (from, to) {
        (Difference::Absolute, Difference::Relative) => GaussianPrior {
            mean: prior.mean / baseline.abs(),
            variance: prior.variance / baseline.powi(2),
            proper: prior.proper,
        },
        (Difference::Relative, Difference::Absolute) => GaussianPrior {
            mean: prior.mean * baseline.abs(),
            variance: prior.variance * baseline.powi(2),
            proper: prior.proper,
        },
        _ => *prior,
    }
}

/// The normal posterior `(mean, stddev)` of the lift.
fn posterior(
    a: &Statistic,
    b: &Statistic,
    difference: Difference,
    prior: &GaussianPrior,
) -> (f64, f64) {
    let data_variance = lift::variance(a, b, difference);
    let data_mean = lift::point_estimate(a, b, difference);
    if !prior.proper {
        // gbstats adds `0 / prior.variance`; skipping it avoids its division by zero for a zero-variance prior.
        return (data_mean, (1.0 / (1.0 / data_variance)).sqrt());
    }
    let precision = 1.0 / data_variance + 1.0 / prior.variance;
    let mean = (data_mean / data_variance + prior.mean / prior.variance) / precision;
    (mean, (1.0 / precision).sqrt())
}

/// `norm.ppf([α/2, 1 - α/2], mean, stddev)`.
fn credible_interval(mean: f64, stddev: f64, alpha: f64) -> [f64; 2] {
    [
        normal::ppf(alpha / 2.0) * stddev + mean,
        normal::ppf(1.0 - alpha / 2.0) * stddev + mean,
    ]
}

/// Expected loss of shipping control and of shipping treatment (gbstats `get_risk`).
fn risk(mean: f64, stddev: f64) -> [f64; 2] {
    let control_better = normal::cdf((0.0 - mean) / stddev);
    let mean_negative = normal::truncated_mean_below_zero(mean, stddev);
    let mean_positive = normal::truncated_mean_above_zero(mean, stddev);
    [
        (1.0 - control_better) * mean_positive,
        -(control_better * mean_negative),
    ]
}
