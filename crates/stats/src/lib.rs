//! `stats`: the experiment statistics engine, pure functions from sufficient statistics to decisions.
//!
//! Numbers agree with gbstats 0.8.0 (and scipy/statsmodels where gbstats has no equivalent) to
//! 1e-9 relative; `fixtures/generate.py` produces the reference values `tests/fixtures.rs` checks.
//!
//! # Layout
//! - [`statistic`]: per-arm sufficient statistics (means, proportions, ratios, CUPED).
//! - [`lift`]: the lift between arms and its delta-method variance.
//! - [`frequentist`], [`bayesian`]: the tests, returning gbstats-shaped results.
//! - [`srm`], [`correction`], [`meta`], [`power`]: checks and planning around the tests.
//! - [`distribution`]: normal, Student's t and chi-squared, accurate where statrs is not.
//!
//! # Invariants
//! `stats` does no I/O, reads no clock, knows nothing of the network, and never panics on user input.

pub mod bayesian;
pub mod correction;
pub mod distribution;
mod error;
pub mod frequentist;
pub mod lift;
pub mod meta;
pub mod power;
pub mod srm;
pub mod statistic;

pub use error::Error;
pub use lift::{Declined, Difference, Uplift};
pub use statistic::{
    Moments, ProportionStatistic, RatioStatistic, RegressionAdjustedStatistic, SampleMeanStatistic,
    Statistic,
};
