//! Chi-squared upper tail, for sample-ratio mismatch and meta-analysis heterogeneity.

use statrs::function::gamma::gamma_ur;

/// `P(X > x)` for `X ~ χ²(dof)`, as scipy's `chi2.sf` (`NaN` for `dof <= 0`).
pub fn sf(x: f64, dof: f64) -> f64 {
    if dof.is_nan() || x.is_nan() || dof <= 0.0 {
        return f64::NAN;
    }
    if x <= 0.0 {
        return 1.0;
    }
    if x.is_infinite() {
        return 0.0;
    }
    gamma_ur(dof / 2.0, x / 2.0)
}
