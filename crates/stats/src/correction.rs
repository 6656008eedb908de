//! Multiple-comparison corrections of p-values: Holm and Benjamini-Hochberg (as statsmodels `multipletests`).

use crate::error::Error;

/// Which correction to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Holm's step-down family-wise error control (`"holm"`).
    Holm,
    /// Benjamini-Hochberg false discovery rate control (`"fdr_bh"`).
    BenjaminiHochberg,
}

/// Adjusted p-values, in the order given.
pub fn adjust(p_values: &[f64], method: Method) -> Result<Vec<f64>, Error> {
    if p_values.is_empty() {
        return Err(Error::TooFew {
            field: "p-values",
            minimum: 1,
            count: 0,
        });
    }
    for (index, &value) in p_values.iter().enumerate() {
        if !(0.0..=1.0).contains(&value) {
            return Err(Error::PValueOutOfRange { index, value });
        }
    }
    let mut order: Vec<usize> = (0..p_values.len()).collect();
    order.sort_by(|&i, &j| p_values[i].total_cmp(&p_values[j]));
    let sorted: Vec<f64> = order.iter().map(|&i| p_values[i]).collect();
    let adjusted_sorted = match method {
        Method::Holm => holm_sorted(&sorted),
        Method::BenjaminiHochberg => benjamini_hochberg_sorted(&sorted),
    };
    let mut adjusted = vec![0.0; p_values.len()];
    for (rank, &index) in order.iter().enumerate() {
        adjusted[index] = adjusted_sorted[rank];
    }
    Ok(adjusted)
}

/// `max_{j<=i} (m - j) p_(j)`, capped at 1.
fn holm_sorted(sorted: &[f64]) -> Vec<f64> {
    let m = sorted.len();
    let mut running = 0.0_f64;
    sorted
        .iter()
        .enumerate()
        .map(|(rank, p)| {
            running = running.max(p * (m - rank) as f64);
            running.min(1.0)
        })
        .collect()
}

/// `min_{j>=i} p_(j) m / j`, capped at 1.
fn benjamini_hochberg_sorted(sorted: &[f64]) -> Vec<f64> {
    let m = sorted.len() as f64;
    let mut adjusted = vec![0.0; sorted.len()];
    let mut running = f64::INFINITY;
    for (rank, p) in sorted.iter().enumerate().rev() {
        running = running.min(p / ((rank + 1) as f64 / m));
        adjusted[rank] = running.min(1.0);
    }
    adjusted
}
