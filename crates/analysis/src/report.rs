//! From per-variant sufficient statistics to a decision: each treatment against the control on each metric
//! (Welch t-test on relative and absolute lift, Bayesian chance to win and expected loss, CUPED when a pre-exposure
//! covariate exists), the sample-ratio-mismatch check, and a verdict per variant and for the experiment.

use model::{
    Direction, LiftSummary, MetricSummary, ResultDecision, ResultSummary, VariantStatistics,
};
use serde::Serialize;
use stats::statistic::{
    Moments, ProportionStatistic, RatioStatistic, RegressionAdjustedStatistic, SampleMeanStatistic,
    Statistic,
};
use stats::{Difference, bayesian, frequentist};

use crate::Error;
use crate::aggregate::{Exposures, Sums};
use crate::plan::{MetricPlan, Plan};

/// Settings of an analysis.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Options {
    /// Significance level (and one minus the credible level).
    pub alpha: f64,
    /// Adjust with the pre-exposure covariate (CUPED) where one exists.
    pub cuped: bool,
    /// An SRM p-value below this flags the experiment.
    pub srm_threshold: f64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            alpha: 0.05,
            cuped: true,
            srm_threshold: 0.001,
        }
    }
}

/// What to do with a variant (or the experiment).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The observed split does not match the weights: the data cannot be trusted until explained.
    SampleRatioMismatch,
    /// A guardrail metric got significantly worse.
    GuardrailRegression,
    /// The primary metric improved significantly and no guardrail regressed.
    Ship,
    /// The primary metric got significantly worse.
    DontShip,
    /// No significant difference yet.
    KeepRunning,
    /// Nobody was exposed.
    NoData,
}

impl Verdict {
    /// For people.
    pub fn describe(self) -> &'static str {
        match self {
            Verdict::SampleRatioMismatch => "investigate: sample ratio mismatch",
            Verdict::GuardrailRegression => "don't ship: guardrail regression",
            Verdict::Ship => "ship",
            Verdict::DontShip => "don't ship",
            Verdict::KeepRunning => "keep running (not significant yet)",
            Verdict::NoData => "no data: nobody was exposed",
        }
    }

    /// The decision this verdict suggests when concluding.
    pub fn decision(self) -> ResultDecision {
        match self {
            Verdict::Ship => ResultDecision::Ship,
            Verdict::DontShip | Verdict::GuardrailRegression => ResultDecision::DontShip,
            _ => ResultDecision::Inconclusive,
        }
    }
}

/// One variant of one metric.
#[derive(Clone, Debug, Serialize)]
pub struct VariantReport {
    /// Variant key.
    pub variant: String,
    /// Users.
    pub users: u64,
    /// Mean per user (ratio: Σ numerator / Σ denominator).
    pub mean: f64,
    /// The sufficient statistics.
    pub statistics: VariantStatistics,
}

/// One treatment against the control on one metric.
#[derive(Clone, Debug, Serialize)]
pub struct LiftReport {
    /// Treatment variant key.
    pub variant: String,
    /// Relative lift.
    pub relative_lift: f64,
    /// Its confidence interval.
    pub relative_ci: [f64; 2],
    /// Absolute lift.
    pub absolute_lift: f64,
    /// Its confidence interval.
    pub absolute_ci: [f64; 2],
    /// Two-sided p-value of the relative lift.
    pub p_value: f64,
    /// `p_value < alpha`.
    pub significant: bool,
    /// Whether the lift points in the metric's good direction.
    pub better: bool,
    /// Bayesian chance that the treatment is better (direction-aware).
    pub chance_to_win: f64,
    /// Expected relative loss of shipping the treatment.
    pub expected_loss: f64,
    /// Why the engine declined to test (gbstats code), if it did.
    pub declined: Option<&'static str>,
}

/// One metric.
#[derive(Clone, Debug, Serialize)]
pub struct MetricReport {
    /// Metric key.
    pub metric: String,
    /// `binomial`, `mean` or `ratio`.
    pub kind: &'static str,
    /// Which direction is good.
    pub direction: Direction,
    /// Whether it is a guardrail.
    pub guardrail: bool,
    /// Whether CUPED adjusted it.
    pub cuped: bool,
    /// Events credited to the metric window.
    pub events: u64,
    /// Per variant, control first.
    pub variants: Vec<VariantReport>,
    /// Each treatment against the control.
    pub lifts: Vec<LiftReport>,
}

/// The verdict on one treatment.
#[derive(Clone, Debug, Serialize)]
pub struct VariantVerdict {
    /// Treatment variant key.
    pub variant: String,
    /// Verdict.
    pub verdict: Verdict,
    /// Why, for people.
    pub reason: String,
}

/// The whole analysis of an experiment.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Experiment key.
    pub experiment: String,
    /// Variant keys, control first.
    pub variants: Vec<String>,
    /// Intended weights.
    pub weights: Vec<f64>,
    /// Users per variant.
    pub users: Vec<u64>,
    /// Exposure events read.
    pub exposure_events: u64,
    /// Users left out for being exposed to several variations.
    pub excluded_multiple_variations: u64,
    /// Users left out because their variation id names no variant.
    pub excluded_unknown_variation: u64,
    /// Exposure and metric events left out for falling outside the experiment's dates (set by whoever reads the
    /// events: the analysis itself sees only those inside).
    pub outside_window: u64,
    /// Chi-square p-value of the split against the weights.
    pub srm_p_value: f64,
    /// `srm_p_value < srm_threshold`.
    pub srm: bool,
    /// Significance level used.
    pub alpha: f64,
    /// Per metric.
    pub metrics: Vec<MetricReport>,
    /// Per treatment.
    pub verdicts: Vec<VariantVerdict>,
    /// For the experiment: the best treatment's verdict.
    pub verdict: Verdict,
}

pub(crate) fn finite(x: f64) -> f64 {
    if x.is_finite() { x } else { 0.0 }
}

/// Tests every metric and builds the report.
pub fn build(
    plan: &Plan,
    exposures: &Exposures,
    metric_sums: &[(Vec<Sums>, u64)],
    options: &Options,
) -> Result<Report, Error> {
    let users = exposures.counts();
    let srm_p_value =
        stats::srm::check_srm(&users, &plan.weights).map_err(|source| Error::Stats {
            metric: "sample ratio".into(),
            source,
        })?;
    let metrics = plan
        .metrics
        .iter()
        .zip(metric_sums)
        .map(|(metric, (sums, events))| metric_report(plan, metric, sums, *events, options))
        .collect::<Result<Vec<_>, _>>()?;
    let srm = srm_p_value < options.srm_threshold;
    let verdicts: Vec<VariantVerdict> = (1..plan.variants.len())
        .map(|v| {
            variant_verdict(
                &plan.variants,
                &metrics,
                v - 1,
                srm,
                users.iter().sum::<u64>() == 0,
            )
        })
        .collect();
    let verdict = verdicts
        .iter()
        .map(|v| v.verdict)
        .min()
        .unwrap_or(Verdict::NoData);
    Ok(Report {
        experiment: plan.experiment.clone(),
        variants: plan.variants.clone(),
        weights: plan.weights.clone(),
        users,
        exposure_events: exposures.events,
        excluded_multiple_variations: exposures.multiple_variations,
        excluded_unknown_variation: exposures.unknown_variation,
        outside_window: 0,
        srm_p_value: finite(srm_p_value),
        srm,
        alpha: options.alpha,
        metrics,
        verdicts,
        verdict,
    })
}

pub(crate) fn variant_verdict(
    variants: &[String],
    metrics: &[MetricReport],
    lift_index: usize,
    srm: bool,
    empty: bool,
) -> VariantVerdict {
    let variant = variants[lift_index + 1].clone();
    let (verdict, reason) = if empty {
        (Verdict::NoData, "no exposures".to_owned())
    } else if srm {
        (
            Verdict::SampleRatioMismatch,
            "the split of users does not match the weights".to_owned(),
        )
    } else if let Some(m) = metrics
        .iter()
        .find(|m| m.guardrail && m.lifts[lift_index].significant && !m.lifts[lift_index].better)
    {
        (
            Verdict::GuardrailRegression,
            format!("guardrail `{}` got significantly worse", m.metric),
        )
    } else {
        match metrics.iter().find(|m| !m.guardrail) {
            Some(m) if m.lifts[lift_index].significant && m.lifts[lift_index].better => (
                Verdict::Ship,
                format!("`{}` improved significantly", m.metric),
            ),
            Some(m) if m.lifts[lift_index].significant => (
                Verdict::DontShip,
                format!("`{}` got significantly worse", m.metric),
            ),
            Some(m) => (
                Verdict::KeepRunning,
                format!("`{}` shows no significant difference", m.metric),
            ),
            None => (
                Verdict::KeepRunning,
                "no primary metric; no guardrail regressed".to_owned(),
            ),
        }
    };
    VariantVerdict {
        variant,
        verdict,
        reason,
    }
}

fn metric_report(
    plan: &Plan,
    metric: &MetricPlan,
    sums: &[Sums],
    events: u64,
    options: &Options,
) -> Result<MetricReport, Error> {
    let cuped = options.cuped && metric.denominator.is_none() && pre_varies(sums);
    let statistics: Vec<Statistic> = sums.iter().map(|s| statistic(metric, s, cuped)).collect();
    let variants = plan
        .variants
        .iter()
        .zip(sums)
        .zip(&statistics)
        .map(|((variant, s), statistic)| VariantReport {
            variant: variant.clone(),
            users: s.n,
            mean: finite(statistic.unadjusted_mean()),
            statistics: variant_statistics(variant, metric, s, cuped),
        })
        .collect();
    let lifts = (1..statistics.len())
        .map(|v| {
            lift(
                &metric.key,
                metric.direction,
                &plan.variants[v],
                &statistics[0],
                &statistics[v],
                options,
            )
        })
        .collect::<Result<_, _>>()?;
    Ok(MetricReport {
        metric: metric.key.clone(),
        kind: metric.kind,
        direction: metric.direction,
        guardrail: metric.guardrail,
        cuped,
        events,
        variants,
        lifts,
    })
}

/// CUPED only helps when the covariate varies.
fn pre_varies(sums: &[Sums]) -> bool {
    let n: u64 = sums.iter().map(|s| s.n).sum();
    let sum: f64 = sums.iter().map(|s| s.pre_sum).sum();
    let squares: f64 = sums.iter().map(|s| s.pre_sum_squares).sum();
    n > 1 && squares - sum * sum / n as f64 > 1e-12 * squares.abs()
}

pub(crate) fn moments(binomial: bool, n: u64, sum: f64, sum_squares: f64) -> Moments {
    if binomial {
        Moments::Proportion(ProportionStatistic { n, sum })
    } else {
        Moments::Mean(SampleMeanStatistic {
            n,
            sum,
            sum_squares,
        })
    }
}

fn statistic(metric: &MetricPlan, s: &Sums, cuped: bool) -> Statistic {
    let binomial = metric.is_binomial();
    if metric.denominator.is_some() {
        return Statistic::Ratio(RatioStatistic {
            n: s.n,
            numerator: moments(false, s.n, s.sum, s.sum_squares),
            denominator: moments(false, s.n, s.denominator_sum, s.denominator_sum_squares),
            sum_of_products: s.numerator_denominator_sum,
        });
    }
    let post = moments(binomial, s.n, s.sum, s.sum_squares);
    if cuped {
        return Statistic::RegressionAdjusted(RegressionAdjustedStatistic {
            n: s.n,
            post,
            pre: moments(binomial, s.n, s.pre_sum, s.pre_sum_squares),
            sum_of_products: s.post_pre_sum,
            theta: 0.0,
        });
    }
    match post {
        Moments::Proportion(p) => Statistic::Proportion(p),
        Moments::Mean(m) => Statistic::Mean(m),
    }
}

fn variant_statistics(
    variant: &str,
    metric: &MetricPlan,
    s: &Sums,
    cuped: bool,
) -> VariantStatistics {
    let ratio = metric.denominator.is_some();
    let when = |on: bool, x: f64| on.then_some(x);
    VariantStatistics {
        variant: variant.to_owned(),
        n: s.n,
        sum: s.sum,
        sum_squares: s.sum_squares,
        denominator_sum: when(ratio, s.denominator_sum),
        denominator_sum_squares: when(ratio, s.denominator_sum_squares),
        numerator_denominator_sum: when(ratio, s.numerator_denominator_sum),
        pre_sum: when(cuped, s.pre_sum),
        pre_sum_squares: when(cuped, s.pre_sum_squares),
        post_pre_sum: when(cuped, s.post_pre_sum),
    }
}

pub(crate) fn lift(
    metric: &str,
    direction: Direction,
    variant: &str,
    control: &Statistic,
    treatment: &Statistic,
    options: &Options,
) -> Result<LiftReport, Error> {
    let stats_error = |source| Error::Stats {
        metric: metric.to_owned(),
        source,
    };
    let config = |difference| frequentist::Config {
        alpha: options.alpha,
        difference,
        test_value: 0.0,
    };
    let relative = frequentist::two_sided_ttest(control, treatment, &config(Difference::Relative))
        .map_err(stats_error)?;
    let absolute = frequentist::two_sided_ttest(control, treatment, &config(Difference::Absolute))
        .map_err(stats_error)?;
    let inverse = direction == Direction::Lower;
    let bayes = bayesian::effect_test(
        control,
        treatment,
        &bayesian::Config {
            alpha: options.alpha,
            inverse,
            ..bayesian::Config::default()
        },
    )
    .map_err(stats_error)?;
    let better = if inverse {
        relative.expected < 0.0
    } else {
        relative.expected > 0.0
    };
    let declined = relative.error.or(bayes.error).map(|d| d.code());
    Ok(LiftReport {
        variant: variant.to_owned(),
        relative_lift: finite(relative.expected),
        relative_ci: relative.ci.map(finite),
        absolute_lift: finite(absolute.expected),
        absolute_ci: absolute.ci.map(finite),
        p_value: if relative.p_value.is_finite() {
            relative.p_value
        } else {
            1.0
        },
        significant: declined.is_none() && relative.p_value < options.alpha,
        better,
        chance_to_win: if bayes.chance_to_win.is_finite() {
            bayes.chance_to_win
        } else {
            0.5
        },
        expected_loss: finite(bayes.risk[1]),
        declined,
    })
}

impl Report {
    /// The result summary to store when concluding with `decision`.
    pub fn summary(&self, decision: ResultDecision, by: &str, at_ms: i64) -> ResultSummary {
        let metrics = self
            .metrics
            .iter()
            .map(|m| MetricSummary {
                metric: m.metric.clone(),
                kind: m.kind.to_owned(),
                direction: m.direction,
                guardrail: m.guardrail,
                variants: m
                    .variants
                    .iter()
                    .map(|v| sanitized(&v.statistics))
                    .collect(),
                lifts: m.lifts.iter().map(LiftSummary::from).collect(),
            })
            .collect();
        ResultSummary {
            experiment: self.experiment.clone(),
            decision,
            verdict: serde_json::to_value(self.verdict)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            users: self.users.clone(),
            srm_p_value: self.srm_p_value,
            alpha: self.alpha,
            metrics,
            concluded_by: by.to_owned(),
            concluded_at_ms: at_ms,
        }
    }
}

impl From<&LiftReport> for LiftSummary {
    fn from(l: &LiftReport) -> Self {
        LiftSummary {
            variant: l.variant.clone(),
            relative_lift: l.relative_lift,
            relative_ci: l.relative_ci,
            absolute_lift: l.absolute_lift,
            absolute_ci: l.absolute_ci,
            p_value: l.p_value,
            chance_to_win: l.chance_to_win,
            expected_loss: l.expected_loss,
        }
    }
}

/// Sums of finite per-user values are finite unless they overflow; a registry record must never hold NaN.
fn sanitized(s: &VariantStatistics) -> VariantStatistics {
    let f = |x: Option<f64>| x.map(finite);
    VariantStatistics {
        variant: s.variant.clone(),
        n: s.n,
        sum: finite(s.sum),
        sum_squares: finite(s.sum_squares),
        denominator_sum: f(s.denominator_sum),
        denominator_sum_squares: f(s.denominator_sum_squares),
        numerator_denominator_sum: f(s.numerator_denominator_sum),
        pre_sum: f(s.pre_sum),
        pre_sum_squares: f(s.pre_sum_squares),
        post_pre_sum: f(s.post_pre_sum),
    }
}
