//! Student's t distribution, accurate at any degrees of freedom (statrs' drifts above ~1e5 and its quantile is 1e-5 off).
//!
//! Below [`ASYMPTOTIC_DOF`] the tail is the regularized incomplete beta `I_x(v/2, 1/2)` with its
//! prefactor built from `log1p` and an asymptotic `ln Γ(a + 1/2) - ln Γ(a)`, so nothing cancels.
//! Above it, the continued fraction would lose `log10(v)` digits, and the Fisher expansion
//! `F(t) = Φ(t) + φ(t) Σ P_k(t) / v^k` (six terms, derived symbolically) is exact to machine precision.

use super::normal;
use statrs::distribution::{ContinuousCDF, StudentsT};
use statrs::function::gamma::ln_gamma;
use std::f64::consts::PI;

/// From this many degrees of freedom on, the asymptotic expansion replaces the incomplete beta.
pub const ASYMPTOTIC_DOF: f64 = 1e4;
/// Below this `a`, `ln Γ` itself is small enough to subtract without losing digits.
const GAMMA_RATIO_SERIES_FROM: f64 = 30.0;
const CONTINUED_FRACTION_MAX_TERMS: u32 = 10_000;
const NEWTON_MAX_STEPS: u32 = 60;
const TINY: f64 = 1e-300;

/// `P(T <= t)`, composed as `1 - sf` for positive `t` like scipy's `stdtr`.
pub fn cdf(t: f64, dof: f64) -> f64 {
    if t > 0.0 {
        1.0 - sf(t, dof)
    } else {
        sf(-t, dof)
    }
}

/// `P(T > t)` with full relative precision in the upper tail.
pub fn sf(t: f64, dof: f64) -> f64 {
    if t.is_nan() || dof.is_nan() || dof <= 0.0 {
        return f64::NAN;
    }
    if t < 0.0 {
        return 1.0 - sf(-t, dof);
    }
    if t == 0.0 {
        return 0.5;
    }
    if t.is_infinite() {
        return 0.0;
    }
    if dof.is_infinite() {
        return normal::upper_tail(t);
    }
    // The expansion is in t⁴/v; once that is not small the beta route is the accurate one again.
    if dof >= ASYMPTOTIC_DOF && t.powi(4) <= 0.05 * dof {
        return asymptotic_sf(t, dof);
    }
    beta_sf(t, dof)
}

/// The density of `T` at `t`.
pub fn pdf(t: f64, dof: f64) -> f64 {
    if dof.is_infinite() {
        return normal::pdf(t);
    }
    let log_kernel = -0.5 * (dof + 1.0) * (t * t / dof).ln_1p();
    (log_kernel - ln_beta_half(0.5 * dof)).exp() / dof.sqrt()
}

/// The quantile: the `t` with `cdf(t, dof) == p`.
pub fn ppf(p: f64, dof: f64) -> f64 {
    if p.is_nan() || dof.is_nan() || dof <= 0.0 {
        return f64::NAN;
    }
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    if p == 0.5 {
        return 0.0;
    }
    // Solve on the smaller tail so the target keeps its relative precision; 1 - p is exact for p > 0.5.
    if p > 0.5 {
        isf(1.0 - p, dof)
    } else {
        -isf(p, dof)
    }
}

/// The `t > 0` with `sf(t, dof) == q`, for `0 < q < 1/2`.
fn isf(q: f64, dof: f64) -> f64 {
    let mut t = initial_isf(q, dof);
    for _ in 0..NEWTON_MAX_STEPS {
        let step = (sf(t, dof) - q) / pdf(t, dof);
        if !step.is_finite() {
            break;
        }
        t += step;
        if step.abs() <= 4.0 * f64::EPSILON * t.abs() {
            break;
        }
    }
    t
}

/// A starting point for Newton: Cornish-Fisher (A&S 26.7.5) at large dof, statrs below.
fn initial_isf(q: f64, dof: f64) -> f64 {
    let z = -normal::ppf(q);
    if dof >= ASYMPTOTIC_DOF || dof.is_infinite() {
        return cornish_fisher(z, dof);
    }
    StudentsT::new(0.0, 1.0, dof)
        .map(|distribution| -distribution.inverse_cdf(q))
        .ok()
        .filter(|t| t.is_finite() && *t > 0.0)
        .unwrap_or_else(|| cornish_fisher(z, dof))
}

fn cornish_fisher(z: f64, dof: f64) -> f64 {
    let w = 1.0 / dof;
    let z2 = z * z;
    let g1 = (z2 + 1.0) * z / 4.0;
    let g2 = ((5.0 * z2 + 16.0) * z2 + 3.0) * z / 96.0;
    let g3 = (((3.0 * z2 + 19.0) * z2 + 17.0) * z2 - 15.0) * z / 384.0;
    let g4 = ((((79.0 * z2 + 776.0) * z2 + 1482.0) * z2 - 1920.0) * z2 - 945.0) * z / 92160.0;
    z + w * (g1 + w * (g2 + w * (g3 + w * g4)))
}

/// `P(T > t) = I_x(v/2, 1/2) / 2` with `x = v / (v + t²)`, for `t > 0`.
fn beta_sf(t: f64, dof: f64) -> f64 {
    let (a, b) = (0.5 * dof, 0.5);
    let t2 = t * t;
    let x = dof / (dof + t2);
    let y = t2 / (dof + t2);
    let ln_front = -a * (t2 / dof).ln_1p() + b * y.ln() - ln_beta_half(a);
    let front = ln_front.exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        0.5 * front * beta_continued_fraction(a, b, x) / a
    } else {
        0.5 * (1.0 - front * beta_continued_fraction(b, a, y) / b)
    }
}

/// The continued fraction of the incomplete beta (modified Lentz, as in Numerical Recipes `betacf`).
fn beta_continued_fraction(a: f64, b: f64, x: f64) -> f64 {
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = guard_tiny(1.0 - qab * x / qap).recip();
    let mut h = d;
    for m in 1..=CONTINUED_FRACTION_MAX_TERMS {
        let m = f64::from(m);
        let m2 = 2.0 * m;
        let even = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = guard_tiny(1.0 + even * d).recip();
        c = guard_tiny(1.0 + even / c);
        h *= d * c;
        let odd = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = guard_tiny(1.0 + odd * d).recip();
        c = guard_tiny(1.0 + odd / c);
        let delta = d * c;
        h *= delta;
        if (delta - 1.0).abs() <= f64::EPSILON {
            break;
        }
    }
    h
}

fn guard_tiny(value: f64) -> f64 {
    if value.abs() < TINY { TINY } else { value }
}

/// `ln B(a, 1/2) = ln Γ(a) + ln Γ(1/2) - ln Γ(a + 1/2)`, without cancellation for large `a`.
fn ln_beta_half(a: f64) -> f64 {
    let ln_gamma_half = 0.5 * PI.ln();
    if a < GAMMA_RATIO_SERIES_FROM {
        return ln_gamma(a) + ln_gamma_half - ln_gamma(a + 0.5);
    }
    ln_gamma_half - 0.5 * a.ln() - ln_gamma_ratio_correction(a)
}

/// `ln Γ(a + 1/2) - ln Γ(a) - ln(a)/2` from the Stirling series (terms through `a^-11`).
fn ln_gamma_ratio_correction(a: f64) -> f64 {
    let x = 1.0 / a;
    let x2 = x * x;
    let coefficients = [
        -1.0 / 8.0,
        1.0 / 192.0,
        -1.0 / 640.0,
        17.0 / 14336.0,
        -31.0 / 18432.0,
        691.0 / 180_224.0,
    ];
    x * coefficients.iter().rev().fold(0.0, |sum, c| sum * x2 + c)
}

/// Fisher's expansion of the upper tail in `1/v`; `P_k` are the odd polynomials of `F(t) - Φ(t) = φ(t) Σ P_k / v^k`.
fn asymptotic_sf(t: f64, dof: f64) -> f64 {
    let w = 1.0 / dof;
    let correction = FISHER_TERMS.iter().rev().fold(0.0, |sum, coefficients| {
        sum * w + odd_polynomial(coefficients, t)
    }) * w;
    normal::upper_tail(t) - normal::pdf(t) * correction
}

/// Evaluates `Σ c_i t^(2i+1)`.
fn odd_polynomial(coefficients: &[f64], t: f64) -> f64 {
    let t2 = t * t;
    t * coefficients.iter().rev().fold(0.0, |sum, c| sum * t2 + c)
}

/// Coefficients of `t, t³, t⁵, ...` in `P_1 .. P_6` (see `derive` in fixtures/generate.py).
const FISHER_TERMS: [&[f64]; 6] = [
    &[-1.0 / 4.0, -1.0 / 4.0],
    &[1.0 / 32.0, 5.0 / 96.0, 7.0 / 96.0, -1.0 / 32.0],
    &[
        5.0 / 128.0,
        1.0 / 128.0,
        -1.0 / 64.0,
        -7.0 / 192.0,
        11.0 / 384.0,
        -1.0 / 384.0,
    ],
    &[
        -21.0 / 2048.0,
        -61.0 / 6144.0,
        71.0 / 30720.0,
        313.0 / 30720.0,
        2141.0 / 92160.0,
        -445.0 / 18432.0,
        25.0 / 6144.0,
        -1.0 / 6144.0,
    ],
    &[
        -399.0 / 8192.0,
        -119.0 / 8192.0,
        -1.0 / 2048.0,
        -19.0 / 6144.0,
        -83.0 / 12288.0,
        -333.0 / 20480.0,
        1879.0 / 92160.0,
        -49.0 / 10240.0,
        133.0 / 368_640.0,
        -1.0 / 122_880.0,
    ],
    &[
        869.0 / 65536.0,
        2465.0 / 196_608.0,
        -137.0 / 196_608.0,
        -1949.0 / 1_376_256.0,
        12805.0 / 6_193_152.0,
        146_047.0 / 30_965_760.0,
        75113.0 / 6_193_152.0,
        -231_253.0 / 13_271_040.0,
        135_149.0 / 26_542_080.0,
        -107.0 / 196_608.0,
        23.0 / 983_040.0,
        -1.0 / 2_949_120.0,
    ],
];
