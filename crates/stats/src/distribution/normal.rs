//! Standard normal distribution, composed the way scipy's `ndtr` and `ndtri` are so the rounding matches.

use statrs::function::erf::{erf as statrs_erf, erfc as statrs_erfc, erfc_inv};
use std::f64::consts::{FRAC_1_SQRT_2, PI, SQRT_2};

/// Above this, `Q(x)` is small enough that the Mills-ratio continued fraction is more accurate than `erfc`.
const MILLS_CONTINUED_FRACTION_FROM: f64 = 8.0;
/// Depth of the Mills-ratio continued fraction; at x >= 8 it converges to machine precision well before.
const MILLS_CONTINUED_FRACTION_DEPTH: u32 = 120;

/// statrs ports Boost's rational `erfc` but writes Boost's `Y` offsets (fitted as `f32`) as `f64`
/// literals; `exp(-z²)/z · (Y_f64 - Y_f32)` is its whole error (~1e-11 relative), so it is added back.
/// Each entry is (upper end of the interval, offset) for `0.5 <= z < 110`.
const STATRS_ERFC_OFFSETS: [(f64, f64); 13] = [
    (0.75, 0.3440242112),
    (1.25, 0.419990927),
    (2.25, 0.4898625016),
    (3.5, 0.5317370892),
    (5.25, 0.5489973426),
    (8.0, 0.5571740866),
    (11.5, 0.5609807968),
    (17.0, 0.5626493692),
    (24.0, 0.5634598136),
    (38.0, 0.5638477802),
    (60.0, 0.5640528202),
    (85.0, 0.5641309023),
    (110.0, 0.5641584396),
];

/// The complementary error function for `z >= 0`, accurate to a few ulps.
pub fn erfc(z: f64) -> f64 {
    let raw = statrs_erfc(z);
    let Some(&(_, offset)) = STATRS_ERFC_OFFSETS
        .iter()
        .find(|(upper, _)| z >= 0.5 && z < *upper)
    else {
        return raw;
    };
    let boost_offset = f64::from(offset as f32);
    raw - (-z * z).exp() / z * (offset - boost_offset)
}

/// The error function, accurate to a few ulps.
pub fn erf(z: f64) -> f64 {
    if z.abs() < 0.5 {
        statrs_erf(z)
    } else {
        (1.0 - erfc(z.abs())).copysign(z)
    }
}

/// `Φ(x)`, exactly as cephes `ndtr` composes it (so `cdf(9.0) == 1.0`, as in scipy).
pub fn cdf(x: f64) -> f64 {
    let t = x * FRAC_1_SQRT_2;
    let z = t.abs();
    if z < FRAC_1_SQRT_2 {
        return 0.5 + 0.5 * erf(t);
    }
    let y = 0.5 * erfc(z);
    if t > 0.0 { 1.0 - y } else { y }
}

/// `1 - Φ(x)` as scipy's `norm.sf` computes it (`ndtr(-x)`).
pub fn sf(x: f64) -> f64 {
    cdf(-x)
}

/// `1 - Φ(x)` with full relative precision in the upper tail.
pub fn upper_tail(x: f64) -> f64 {
    if x >= 0.0 {
        0.5 * erfc(x * FRAC_1_SQRT_2)
    } else {
        1.0 - 0.5 * erfc(-x * FRAC_1_SQRT_2)
    }
}

/// The standard normal density `φ(x)`.
pub fn pdf(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * PI).sqrt()
}

/// The quantile `Φ⁻¹(p)`; symmetric in `p ↔ 1 - p` as `ndtri` is.
pub fn ppf(p: f64) -> f64 {
    if p.is_nan() {
        return f64::NAN;
    }
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    if p > 0.5 {
        SQRT_2 * erfc_inv(2.0 * (1.0 - p))
    } else {
        -SQRT_2 * erfc_inv(2.0 * p)
    }
}

/// The hazard `φ(x) / (1 - Φ(x))`, finite even where `1 - Φ(x)` underflows.
pub fn hazard(x: f64) -> f64 {
    if x < MILLS_CONTINUED_FRACTION_FROM {
        return pdf(x) / upper_tail(x);
    }
    // Mills ratio R(x) = 1/(x + 1/(x + 2/(x + 3/(x + ...)))), evaluated from the bottom up.
    let mut tail = x;
    for k in (1..=MILLS_CONTINUED_FRACTION_DEPTH).rev() {
        tail = x + f64::from(k) / tail;
    }
    tail
}

/// Mean of `N(mu, sigma²)` truncated to `(0, ∞)`.
pub fn truncated_mean_above_zero(mu: f64, sigma: f64) -> f64 {
    mu + sigma * hazard(-mu / sigma)
}

/// Mean of `N(mu, sigma²)` truncated to `(-∞, 0)`.
pub fn truncated_mean_below_zero(mu: f64, sigma: f64) -> f64 {
    mu - sigma * hazard(mu / sigma)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_inverts_cdf() {
        for p in [1e-12, 0.025, 0.3, 0.5, 0.975, 1.0 - 1e-9] {
            let x = ppf(p);
            assert!((cdf(x) - p).abs() <= 1e-13 * p.min(1.0 - p), "p={p}");
        }
        assert_eq!(ppf(0.5), 0.0);
    }

    #[test]
    fn hazard_is_continuous_at_the_switch() {
        let below = pdf(7.999_999_999) / upper_tail(7.999_999_999);
        let above = hazard(8.0);
        assert!((below - above).abs() < 1e-8);
        assert!(hazard(60.0).is_finite());
    }
}
