//! Sample-ratio mismatch: does the observed split of users match the intended weights (gbstats `check_srm`)?

use crate::distribution::chi_squared;
use crate::error::{Error, finite};

/// The chi-square goodness-of-fit p-value of `counts` against `weights`.
///
/// As in gbstats, variations with a non-positive weight are skipped (but keep their degree of
/// freedom), and no users at all gives `1`.
pub fn check_srm(counts: &[u64], weights: &[f64]) -> Result<f64, Error> {
    if counts.len() < 2 {
        return Err(Error::TooFew {
            field: "counts",
            minimum: 2,
            count: counts.len(),
        });
    }
    if weights.len() != counts.len() {
        return Err(Error::LengthMismatch {
            field: "weights",
            expected: counts.len(),
            actual: weights.len(),
        });
    }
    for &weight in weights {
        finite("weight", weight)?;
    }
    let total_observed: u64 = counts.iter().sum();
    if total_observed == 0 {
        return Ok(1.0);
    }
    let total_weight: f64 = weights.iter().sum();
    if total_weight <= 0.0 {
        return Err(Error::NotPositive {
            field: "sum of weights",
            value: total_weight,
        });
    }
    let statistic = counts
        .iter()
        .zip(weights)
        .filter(|(_, weight)| **weight > 0.0)
        .map(|(&observed, weight)| {
            let expected = weight / total_weight * total_observed as f64;
            (observed as f64 - expected).powi(2) / expected
        })
        .sum::<f64>();
    Ok(chi_squared::sf(statistic, (counts.len() - 1) as f64))
}
