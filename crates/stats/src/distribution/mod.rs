//! Probability distributions under every test: normal, Student's t and chi-squared, accurate to ~1e-15.
//!
//! statrs supplies `erf`, `erfc` and `ln_gamma`; the compositions here mirror scipy's rounding
//! (`ndtr`, `stdtr`) so results agree with gbstats to the last few ulps rather than to 1e-5.

pub mod chi_squared;
pub mod normal;
pub mod student;
