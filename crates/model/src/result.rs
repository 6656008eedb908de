//! The result summary of a concluded experiment: per-variant sufficient statistics per metric, the analysis made of
//! them and the pod's decision. It is what leaves a pod's node instead of raw events, so a council can recompute
//! every number from it.

use serde::{Deserialize, Serialize};

use crate::{Direction, Error};

/// What the owning pod decided when it concluded an experiment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ResultDecision {
    /// Roll out the winning treatment.
    Ship,
    /// Keep the control.
    DontShip,
    /// No conclusion could be drawn.
    Inconclusive,
}

impl ResultDecision {
    /// The decision as the CLI spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ResultDecision::Ship => "ship",
            ResultDecision::DontShip => "dont-ship",
            ResultDecision::Inconclusive => "inconclusive",
        }
    }
}

impl std::str::FromStr for ResultDecision {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        match text {
            "ship" => Ok(ResultDecision::Ship),
            "dont-ship" | "dont_ship" | "don't-ship" => Ok(ResultDecision::DontShip),
            "inconclusive" => Ok(ResultDecision::Inconclusive),
            other => Err(Error::invalid(
                "--decision",
                format!("`{other}` is not one of ship, dont-ship, inconclusive"),
            )),
        }
    }
}

/// Sufficient statistics of one metric in one variant: enough to rerun every test without raw data.
///
/// For a ratio metric `sum`/`sum_squares` describe the numerator and the `denominator_*` fields the denominator;
/// for a CUPED-adjusted metric the `pre_*` fields describe the pre-exposure covariate.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VariantStatistics {
    /// Variant key.
    pub variant: String,
    /// Users.
    pub n: u64,
    /// Sum of per-user values (numerator for a ratio).
    pub sum: f64,
    /// Sum of squared per-user values.
    pub sum_squares: f64,
    /// Ratio: sum of per-user denominators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denominator_sum: Option<f64>,
    /// Ratio: sum of squared denominators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denominator_sum_squares: Option<f64>,
    /// Ratio: sum of numerator times denominator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numerator_denominator_sum: Option<f64>,
    /// CUPED: sum of the pre-exposure covariate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_sum: Option<f64>,
    /// CUPED: sum of the squared covariate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_sum_squares: Option<f64>,
    /// CUPED: sum of value times covariate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_pre_sum: Option<f64>,
}

/// The test of one treatment variant against the control on one metric.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LiftSummary {
    /// Treatment variant key.
    pub variant: String,
    /// Relative lift (treatment / control - 1).
    pub relative_lift: f64,
    /// Confidence interval of the relative lift.
    pub relative_ci: [f64; 2],
    /// Absolute lift (treatment - control).
    pub absolute_lift: f64,
    /// Confidence interval of the absolute lift.
    pub absolute_ci: [f64; 2],
    /// Two-sided p-value.
    pub p_value: f64,
    /// Bayesian chance that the treatment is better (direction-aware).
    pub chance_to_win: f64,
    /// Expected loss of shipping the treatment (relative).
    pub expected_loss: f64,
}

/// One metric of a result summary.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricSummary {
    /// Metric key.
    pub metric: String,
    /// `binomial`, `mean` or `ratio`.
    pub kind: String,
    /// Which direction is good.
    #[serde(default)]
    pub direction: Direction,
    /// Whether this is a guardrail (else the primary or a secondary metric).
    #[serde(default)]
    pub guardrail: bool,
    /// Per-variant statistics, control first.
    pub variants: Vec<VariantStatistics>,
    /// Tests of each treatment against the control.
    #[serde(default)]
    pub lifts: Vec<LiftSummary>,
}

/// The significance level of an analysis that did not record one.
pub const DEFAULT_ALPHA: f64 = 0.05;

fn default_alpha() -> f64 {
    DEFAULT_ALPHA
}

/// The signed summary a pod writes when it concludes an experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultSummary {
    /// Experiment key.
    pub experiment: String,
    /// The pod's decision.
    pub decision: ResultDecision,
    /// The analysis's verdict at conclusion (`ship`, `dont_ship`, `keep_running`, `guardrail_regression`, ...).
    #[serde(default)]
    pub verdict: String,
    /// Users per variant, control first.
    #[serde(default)]
    pub users: Vec<u64>,
    /// Sample-ratio-mismatch chi-square p-value.
    #[serde(default)]
    pub srm_p_value: f64,
    /// The significance level the analysis used (results stored before it was recorded used the default, 0.05).
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Per metric statistics and tests.
    #[serde(default)]
    pub metrics: Vec<MetricSummary>,
    /// Author's key.
    #[serde(default)]
    pub concluded_by: String,
    /// When (Unix ms).
    #[serde(default)]
    pub concluded_at_ms: i64,
}
