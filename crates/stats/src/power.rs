//! Planning: power, users per variation and minimum detectable effect of a two-sided test on relative lift.
//!
//! The formula is GrowthBook's power calculator: the relative lift `d` estimated from `n` users
//! per arm has (delta method, equal variances `σ²`, control mean `μ`, treatment mean `μ(1+d)`)
//! `SE(n, d) = σ / |μ| · sqrt((1 + (1 + d)²) / n)`, and with `z* = Φ⁻¹(1 - α / (2 (k - 1)))`
//! (Bonferroni over the `k - 1` comparisons with control)
//! `power = 1 - Φ(z* - |d|/SE) + Φ(-z* - |d|/SE)`, the normal approximation of Welch's test.
//! Users per variation is the smallest integer reaching the target power.

use crate::distribution::normal;
use crate::error::{Error, finite, open_unit, positive};

/// Bisection steps; each halves the bracket, so 200 reaches adjacent floats from any start.
const BISECTION_STEPS: u32 = 200;
/// Doublings allowed while bracketing the minimum detectable effect.
const BRACKET_DOUBLINGS: u32 = 64;

/// What is known about the metric and the test before it runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Design {
    /// Control mean `μ` (non-zero).
    pub mean: f64,
    /// Per-user standard deviation `σ` (> 0).
    pub stddev: f64,
    pub alpha: f64,
    /// Target power, e.g. 0.8.
    pub power: f64,
    /// Number of variations including control (>= 2).
    pub variations: u32,
}

impl Design {
    /// Checks every field's range.
    pub fn validate(&self) -> Result<(), Error> {
        if finite("mean", self.mean)? == 0.0 {
            return Err(Error::Zero { field: "mean" });
        }
        positive("stddev", self.stddev)?;
        open_unit("alpha", self.alpha)?;
        open_unit("power", self.power)?;
        if self.variations < 2 {
            return Err(Error::TooFew {
                field: "variations",
                minimum: 2,
                count: self.variations as usize,
            });
        }
        Ok(())
    }

    /// The two-sided critical value after the Bonferroni split.
    fn critical_value(&self) -> f64 {
        normal::ppf(1.0 - self.alpha / (2.0 * f64::from(self.variations - 1)))
    }

    /// Power to detect relative lift `effect` with `users` per variation.
    pub fn power_at(&self, effect: f64, users: f64) -> f64 {
        let se = self.stddev / self.mean.abs() * ((1.0 + (1.0 + effect).powi(2)) / users).sqrt();
        let shift = effect.abs() / se;
        let z = self.critical_value();
        normal::upper_tail(z - shift) + normal::cdf(-z - shift)
    }
}

/// The smallest number of users per variation with at least the target power for relative lift `effect`.
pub fn users_per_variation(design: &Design, effect: f64) -> Result<u64, Error> {
    design.validate()?;
    if finite("minimum detectable effect", effect)? == 0.0 {
        return Err(Error::Zero {
            field: "minimum detectable effect",
        });
    }
    let reaches = |users: f64| design.power_at(effect, users) >= design.power;
    // Dropping the far tail gives an upper bound where the target is certainly reached.
    let z = design.critical_value() + normal::ppf(design.power);
    let variance = (design.stddev / design.mean).powi(2) * (1.0 + (1.0 + effect).powi(2));
    let mut high = (z.powi(2) * variance / effect.powi(2)).max(1.0);
    let mut low = 0.0;
    for _ in 0..BISECTION_STEPS {
        let middle = 0.5 * (low + high);
        if reaches(middle) {
            high = middle
        } else {
            low = middle
        }
    }
    let mut users = high.ceil().max(1.0);
    while users > 1.0 && reaches(users - 1.0) {
        users -= 1.0;
    }
    Ok(users as u64)
}

/// The smallest positive relative lift detected with the target power given `users` per variation.
pub fn minimum_detectable_effect(design: &Design, users: f64) -> Result<f64, Error> {
    design.validate()?;
    positive("users", users)?;
    let reaches = |effect: f64| design.power_at(effect, users) >= design.power;
    let mut high = 1.0;
    let mut doublings = 0;
    while !reaches(high) {
        high *= 2.0;
        doublings += 1;
        if doublings > BRACKET_DOUBLINGS {
            return Err(Error::PowerUnreachable {
                power: design.power,
                users,
            });
        }
    }
    let mut low = 0.0;
    for _ in 0..BISECTION_STEPS {
        let middle = 0.5 * (low + high);
        if reaches(middle) {
            high = middle
        } else {
            low = middle
        }
    }
    Ok(high)
}
