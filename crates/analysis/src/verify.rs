//! Re-checking a signed result: the lifts, intervals, p-values, chances to win, the SRM p-value and the verdict,
//! recomputed from the per-variant sufficient statistics the pod stored (ratio and CUPED inputs included), with the
//! significance level it recorded, against the experiment's weights in the registry. Anyone holding the registry
//! (a council node, another pod) can run it; no raw event is needed.

use model::{LiftSummary, ResultDecision, ResultSummary, VariantStatistics};
use serde::Serialize;
use stats::statistic::{RatioStatistic, RegressionAdjustedStatistic, Statistic};

use crate::Error;
use crate::report::{MetricReport, Options, Verdict, lift, moments, variant_verdict};

/// Two stored and recomputed numbers agree when they differ by at most this, relative to their size (the JSON of
/// a registry record keeps every f64 exactly; the margin only absorbs a different floating-point order).
const TOLERANCE: f64 = 1e-9;

/// One metric's tests, as stored or recomputed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MetricRecap {
    /// Metric key.
    pub metric: String,
    /// `binomial`, `mean` or `ratio`.
    pub kind: String,
    /// Whether the statistics carry a CUPED covariate (the test is regression-adjusted).
    pub cuped: bool,
    /// Whether it is a guardrail.
    pub guardrail: bool,
    /// Each treatment against the control.
    pub lifts: Vec<LiftSummary>,
}

/// A result's verdict and tests.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Recap {
    /// `ship`, `dont_ship`, `keep_running`, `guardrail_regression`, `sample_ratio_mismatch` or `no_data`.
    pub verdict: String,
    /// Sample-ratio-mismatch p-value.
    pub srm_p_value: f64,
    /// Per metric.
    pub metrics: Vec<MetricRecap>,
}

/// What [`verify`] found.
#[derive(Clone, Debug, Serialize)]
pub struct Verification {
    /// Experiment key.
    pub experiment: String,
    /// Whether every recomputed number and the verdict agree with the stored ones.
    pub matches: bool,
    /// The pod's decision.
    pub decision: ResultDecision,
    /// Whether that decision is the one the recomputed verdict suggests (a pod may decide otherwise, e.g. not to
    /// ship a win; this says so, it is not a mismatch).
    pub decision_follows_verdict: bool,
    /// The significance level used (the one the pod recorded).
    pub alpha: f64,
    /// As stored.
    pub stored: Recap,
    /// As recomputed.
    pub recomputed: Recap,
    /// Every disagreement, for people.
    pub differences: Vec<String>,
}

/// Recomputes `summary` against the experiment's `weights` (control first).
pub fn verify(summary: &ResultSummary, weights: &[f64]) -> Result<Verification, Error> {
    let options = Options {
        alpha: summary.alpha,
        ..Options::default()
    };
    let variants: Vec<String> = summary
        .metrics
        .first()
        .map(|m| m.variants.iter().map(|v| v.variant.clone()).collect())
        .unwrap_or_default();
    let srm_p_value =
        stats::srm::check_srm(&summary.users, weights).map_err(|source| Error::Stats {
            metric: "sample ratio".into(),
            source,
        })?;
    let srm_p_value = crate::report::finite(srm_p_value);
    let mut reports = Vec::new();
    let mut recomputed_metrics = Vec::new();
    for metric in &summary.metrics {
        if metric.variants.len() != variants.len() {
            return Err(Error::BadExperiment {
                key: summary.experiment.clone(),
                problem: format!(
                    "its stored result's metric `{}` has {} variants, its first metric {}",
                    metric.metric,
                    metric.variants.len(),
                    variants.len()
                ),
            });
        }
        let statistics: Vec<Statistic> = metric
            .variants
            .iter()
            .map(|v| statistic(&metric.kind, v))
            .collect();
        let lifts = (1..statistics.len())
            .map(|v| {
                lift(
                    &metric.metric,
                    metric.direction,
                    &variants[v],
                    &statistics[0],
                    &statistics[v],
                    &options,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        recomputed_metrics.push(MetricRecap {
            metric: metric.metric.clone(),
            kind: metric.kind.clone(),
            cuped: metric.variants.iter().all(|v| v.pre_sum.is_some()),
            guardrail: metric.guardrail,
            lifts: lifts.iter().map(LiftSummary::from).collect(),
        });
        reports.push(MetricReport {
            metric: metric.metric.clone(),
            kind: "",
            direction: metric.direction,
            guardrail: metric.guardrail,
            cuped: false,
            events: 0,
            variants: Vec::new(),
            lifts,
        });
    }
    let srm = srm_p_value < options.srm_threshold;
    let empty = summary.users.iter().sum::<u64>() == 0;
    let verdict = (1..variants.len())
        .map(|v| variant_verdict(&variants, &reports, v - 1, srm, empty).verdict)
        .min()
        .unwrap_or(Verdict::NoData);
    let recomputed = Recap {
        verdict: verdict_code(verdict),
        srm_p_value,
        metrics: recomputed_metrics,
    };
    let stored = Recap {
        verdict: summary.verdict.clone(),
        srm_p_value: summary.srm_p_value,
        metrics: summary
            .metrics
            .iter()
            .map(|m| MetricRecap {
                metric: m.metric.clone(),
                kind: m.kind.clone(),
                cuped: m.variants.iter().all(|v| v.pre_sum.is_some()),
                guardrail: m.guardrail,
                lifts: m.lifts.clone(),
            })
            .collect(),
    };
    let differences = differences(&stored, &recomputed);
    Ok(Verification {
        experiment: summary.experiment.clone(),
        matches: differences.is_empty(),
        decision: summary.decision,
        decision_follows_verdict: verdict.decision() == summary.decision,
        alpha: options.alpha,
        stored,
        recomputed,
        differences,
    })
}

/// One metric's relative lift of the first treatment against the control in a stored result, and its standard
/// error, recomputed from the stored statistics (what a meta-analysis pools). `None` when the result has no such
/// metric or the engine declines to test it (too few users, a zero control mean).
pub fn effect(summary: &ResultSummary, metric: &str) -> Result<Option<(f64, f64)>, Error> {
    let Some(m) = summary.metrics.iter().find(|m| m.metric == metric) else {
        return Ok(None);
    };
    let (Some(control), Some(treatment)) = (m.variants.first(), m.variants.get(1)) else {
        return Ok(None);
    };
    let config = stats::frequentist::Config {
        alpha: summary.alpha,
        difference: stats::Difference::Relative,
        test_value: 0.0,
    };
    let result = stats::frequentist::two_sided_ttest(
        &statistic(&m.kind, control),
        &statistic(&m.kind, treatment),
        &config,
    )
    .map_err(|source| Error::Stats {
        metric: metric.to_owned(),
        source,
    })?;
    let usable = result.error.is_none()
        && result.expected.is_finite()
        && result.uplift.stddev.is_finite()
        && result.uplift.stddev > 0.0;
    Ok(usable.then_some((result.expected, result.uplift.stddev)))
}

fn verdict_code(verdict: Verdict) -> String {
    serde_json::to_value(verdict)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The test statistic the stored sufficient statistics describe: a ratio when they carry a denominator, CUPED when
/// they carry a covariate, else a proportion (binomial) or a mean.
pub fn statistic(kind: &str, v: &VariantStatistics) -> Statistic {
    let binomial = kind == "binomial";
    if let (Some(sum), Some(squares), Some(products)) = (
        v.denominator_sum,
        v.denominator_sum_squares,
        v.numerator_denominator_sum,
    ) {
        return Statistic::Ratio(RatioStatistic {
            n: v.n,
            numerator: moments(false, v.n, v.sum, v.sum_squares),
            denominator: moments(false, v.n, sum, squares),
            sum_of_products: products,
        });
    }
    let post = moments(binomial, v.n, v.sum, v.sum_squares);
    if let (Some(sum), Some(squares), Some(products)) =
        (v.pre_sum, v.pre_sum_squares, v.post_pre_sum)
    {
        return Statistic::RegressionAdjusted(RegressionAdjustedStatistic {
            n: v.n,
            post,
            pre: moments(binomial, v.n, sum, squares),
            sum_of_products: products,
            theta: 0.0,
        });
    }
    match post {
        stats::statistic::Moments::Proportion(p) => Statistic::Proportion(p),
        stats::statistic::Moments::Mean(m) => Statistic::Mean(m),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= TOLERANCE * a.abs().max(b.abs()).max(1.0)
}

fn differences(stored: &Recap, recomputed: &Recap) -> Vec<String> {
    let mut out = Vec::new();
    if stored.verdict != recomputed.verdict {
        out.push(format!(
            "verdict: stored `{}`, recomputed `{}`",
            stored.verdict, recomputed.verdict
        ));
    }
    if !close(stored.srm_p_value, recomputed.srm_p_value) {
        out.push(format!(
            "srm_p_value: stored {}, recomputed {}",
            stored.srm_p_value, recomputed.srm_p_value
        ));
    }
    for (s, r) in stored.metrics.iter().zip(&recomputed.metrics) {
        if s.lifts.len() != r.lifts.len() {
            out.push(format!(
                "metric `{}`: {} lifts stored, {} recomputed",
                s.metric,
                s.lifts.len(),
                r.lifts.len()
            ));
            continue;
        }
        for (a, b) in s.lifts.iter().zip(&r.lifts) {
            let fields = [
                ("relative_lift", a.relative_lift, b.relative_lift),
                ("relative_ci.low", a.relative_ci[0], b.relative_ci[0]),
                ("relative_ci.high", a.relative_ci[1], b.relative_ci[1]),
                ("absolute_lift", a.absolute_lift, b.absolute_lift),
                ("absolute_ci.low", a.absolute_ci[0], b.absolute_ci[0]),
                ("absolute_ci.high", a.absolute_ci[1], b.absolute_ci[1]),
                ("p_value", a.p_value, b.p_value),
                ("chance_to_win", a.chance_to_win, b.chance_to_win),
                ("expected_loss", a.expected_loss, b.expected_loss),
            ];
            for (name, x, y) in fields {
                if !close(x, y) {
                    out.push(format!(
                        "metric `{}`, variant `{}`: {name} stored {x}, recomputed {y}",
                        s.metric, a.variant
                    ));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use model::{Direction, ResultDecision};

    use super::*;
    use crate::aggregate::{ExposureBuilder, Sums};
    use crate::plan::{MetricPlan, Plan, Source};
    use crate::report::build;

    fn metric(key: &str, kind: &'static str, guardrail: bool, ratio: bool) -> MetricPlan {
        let source = |event: &str| Source {
            event: event.into(),
            property: None,
        };
        MetricPlan {
            key: key.into(),
            kind,
            direction: Direction::Higher,
            capping: None,
            window_ms: 0,
            guardrail,
            numerator: source("Order Completed"),
            denominator: ratio.then(|| source("Session Started")),
        }
    }

    /// Sums of `n` users whose values follow a made-up but deterministic pattern, shifted by `lift`.
    fn sums(n: u64, lift: f64, binomial: bool) -> Sums {
        let mut s = Sums::default();
        for i in 0..n {
            let pre = (i % 7) as f64;
            let value = if binomial {
                f64::from(u8::from((i as f64 * (0.3 + lift)).fract() < 0.3 + lift))
            } else {
                pre * 0.8 + (i % 5) as f64 + lift
            };
            let denominator = 1.0 + (i % 3) as f64;
            s.n += 1;
            s.sum += value;
            s.sum_squares += value * value;
            s.pre_sum += pre;
            s.pre_sum_squares += pre * pre;
            s.post_pre_sum += value * pre;
            s.denominator_sum += denominator;
            s.denominator_sum_squares += denominator * denominator;
            s.numerator_denominator_sum += value * denominator;
        }
        s
    }

    /// A concluded result as `experiment conclude` stores it: a CUPED-adjusted mean, a ratio and a binomial
    /// guardrail, analysed from sums through the same path as stored events.
    fn stored() -> (ResultSummary, Vec<f64>) {
        let plan = Plan {
            experiment: "exp".into(),
            variants: vec!["control".into(), "treatment".into()],
            weights: vec![0.5, 0.5],
            metrics: vec![
                metric("revenue", "mean", false, false),
                metric("revenue-per-session", "ratio", false, true),
                metric("refunds", "binomial", true, false),
            ],
        };
        let mut exposures = ExposureBuilder::new(&plan.variants);
        for i in 0..1_980u32 {
            let variant = if i < 1_000 { "control" } else { "treatment" };
            exposures.push(format!("u{i:05}").as_bytes(), 0, variant.as_bytes());
        }
        let per_metric = vec![
            (vec![sums(1_000, 0.0, false), sums(980, 0.25, false)], 0),
            (vec![sums(1_000, 0.0, false), sums(980, 0.1, false)], 0),
            (vec![sums(1_000, 0.0, true), sums(980, 0.01, true)], 0),
        ];
        let report =
            build(&plan, &exposures.finish(), &per_metric, &Options::default()).expect("a report");
        assert!(
            report.metrics[0].cuped,
            "the covariate varies: the mean is CUPED-adjusted"
        );
        (
            report.summary(ResultDecision::Ship, "pod-key", 1),
            plan.weights,
        )
    }

    #[test]
    fn an_honest_result_is_recomputed_exactly() {
        let (summary, weights) = stored();
        assert!(summary.metrics[0].variants[0].pre_sum.is_some());
        assert!(summary.metrics[1].variants[0].denominator_sum.is_some());
        let verification = verify(&summary, &weights).expect("verifiable");
        assert!(verification.matches, "{:?}", verification.differences);
        assert_eq!(verification.stored, verification.recomputed);
        assert!(verification.recomputed.metrics[0].cuped);
        // The same numbers survive the registry's JSON.
        let json = serde_json::to_string(&summary).expect("serializes");
        let read: ResultSummary = serde_json::from_str(&json).expect("reads back");
        assert!(verify(&read, &weights).expect("verifiable").matches);
    }

    #[test]
    fn a_doctored_lift_a_doctored_verdict_or_doctored_statistics_are_named() {
        let (summary, weights) = stored();
        let mut lift = summary.clone();
        lift.metrics[0].lifts[0].relative_lift += 0.0015;
        let v = verify(&lift, &weights).expect("verifiable");
        assert!(!v.matches);
        assert!(
            v.differences
                .iter()
                .any(|d| d.contains("metric `revenue`") && d.contains("relative_lift")),
            "{:?}",
            v.differences
        );
        let mut verdict = summary.clone();
        verdict.verdict = "ship".into();
        verdict.metrics[0].variants[1].sum = verdict.metrics[0].variants[0].sum;
        verdict.metrics[0].variants[1].post_pre_sum = verdict.metrics[0].variants[0].post_pre_sum;
        let v = verify(&verdict, &weights).expect("verifiable");
        assert!(!v.matches);
        assert!(
            v.differences.iter().any(|d| d.contains("p_value")),
            "{:?}",
            v.differences
        );
        // Recomputed without the covariate (as a plain mean), the stored CUPED numbers do not hold.
        let mut plain = summary.clone();
        for v in &mut plain.metrics[0].variants {
            v.pre_sum = None;
            v.pre_sum_squares = None;
            v.post_pre_sum = None;
        }
        let v = verify(&plain, &weights).expect("verifiable");
        assert!(!v.matches, "CUPED and plain lifts differ");
        // The users no longer match the weights they were drawn with.
        let v = verify(&summary, &[0.9, 0.1]).expect("verifiable");
        assert!(
            v.differences.iter().any(|d| d.contains("srm_p_value")),
            "{:?}",
            v.differences
        );
    }
}
