//! Meta-analysis of one lift measured in several pods: fixed effect and DerSimonian-Laird random effects.
//!
//! Conventions follow metafor (`rma(method = "DL")`): τ² and I² are truncated at 0, intervals are normal.

use crate::distribution::{chi_squared, normal};
use crate::error::{Error, finite, open_unit, positive};

/// One pod's estimate and its standard error.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Effect {
    pub estimate: f64,
    pub standard_error: f64,
}

/// A pooled estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pooled {
    pub effect: f64,
    pub se: f64,
    pub ci: [f64; 2],
}

/// Both pooled estimates and the heterogeneity statistics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetaAnalysis {
    pub fixed: Pooled,
    pub random: Pooled,
    /// Between-pod variance τ² (DerSimonian-Laird, truncated at 0).
    pub tau2: f64,
    /// Cochran's Q.
    pub q: f64,
    /// `P(χ²(k-1) > Q)`; 1 for a single pod, which shows no heterogeneity.
    pub q_p_value: f64,
    /// I² as a fraction: `max(0, (Q - df) / Q)`, 0 when `Q = 0` or for a single pod.
    pub i2: f64,
}

/// Pools `effects` with `(1 - alpha)` normal intervals.
pub fn combine(effects: &[Effect], alpha: f64) -> Result<MetaAnalysis, Error> {
    open_unit("alpha", alpha)?;
    if effects.is_empty() {
        return Err(Error::TooFew {
            field: "effects",
            minimum: 1,
            count: 0,
        });
    }
    for effect in effects {
        finite("effect estimate", effect.estimate)?;
        positive("standard error", effect.standard_error)?;
    }
    let z = normal::ppf(1.0 - alpha / 2.0);
    let variances: Vec<f64> = effects.iter().map(|e| e.standard_error.powi(2)).collect();
    let fixed = pooled(effects, &variances, 0.0, z);
    let weights: Vec<f64> = variances.iter().map(|v| 1.0 / v).collect();
    let q = effects
        .iter()
        .zip(&weights)
        .map(|(e, w)| w * (e.estimate - fixed.effect).powi(2))
        .sum::<f64>();
    let df = (effects.len() - 1) as f64;
    let sum_w: f64 = weights.iter().sum();
    let sum_w2: f64 = weights.iter().map(|w| w * w).sum();
    let tau2 = if df == 0.0 {
        0.0
    } else {
        ((q - df) / (sum_w - sum_w2 / sum_w)).max(0.0)
    };
    Ok(MetaAnalysis {
        fixed,
        random: pooled(effects, &variances, tau2, z),
        tau2,
        q,
        q_p_value: if df == 0.0 {
            1.0
        } else {
            chi_squared::sf(q, df)
        },
        i2: if df > 0.0 && q > 0.0 {
            ((q - df) / q).max(0.0)
        } else {
            0.0
        },
    })
}

/// The inverse-variance weighted mean with between-pod variance `tau2`.
fn pooled(effects: &[Effect], variances: &[f64], tau2: f64, z: f64) -> Pooled {
    let weights: Vec<f64> = variances.iter().map(|v| 1.0 / (v + tau2)).collect();
    let sum_w: f64 = weights.iter().sum();
    // Relative weights first, as statsmodels sums them, so Q's cancellation rounds the same way.
    let effect = effects
        .iter()
        .zip(&weights)
        .map(|(e, w)| w / sum_w * e.estimate)
        .sum::<f64>();
    let se = (1.0 / sum_w).sqrt();
    Pooled {
        effect,
        se,
        ci: [effect - z * se, effect + z * se],
    }
}
