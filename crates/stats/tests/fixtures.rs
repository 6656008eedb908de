//! Checks the engine against reference values from gbstats 0.8.0, scipy and statsmodels (`fixtures/generate.py`).

use serde_json::Value;
use stats::distribution::{chi_squared, normal, student};
use stats::{
    Difference, Moments, ProportionStatistic, RatioStatistic, RegressionAdjustedStatistic,
    SampleMeanStatistic, Statistic, bayesian, correction, frequentist, meta, power, srm,
};

const RELATIVE_TOLERANCE: f64 = 1e-9;
/// Values near 0 (p-values computed as `1 - cdf`, risks) carry absolute rounding noise of a few ulps of 1.
const ABSOLUTE_TOLERANCE: f64 = 1e-13;

fn reference() -> Value {
    let text = include_str!("../fixtures/reference.json");
    serde_json::from_str(text).expect("reference.json is valid JSON")
}

fn number(value: &Value) -> f64 {
    match value {
        Value::String(text) => match text.as_str() {
            "inf" => f64::INFINITY,
            "-inf" => f64::NEG_INFINITY,
            _ => f64::NAN,
        },
        other => other.as_f64().expect("a number"),
    }
}

fn close(actual: f64, expected: f64) -> bool {
    if expected.is_nan() || expected.is_infinite() {
        return actual.is_nan() == expected.is_nan() && (expected.is_nan() || actual == expected);
    }
    let gap = (actual - expected).abs();
    gap <= ABSOLUTE_TOLERANCE || gap <= RELATIVE_TOLERANCE * expected.abs().max(actual.abs())
}

#[track_caller]
fn check(what: &str, actual: f64, expected: &Value, failures: &mut Vec<String>) {
    let expected = number(expected);
    if !close(actual, expected) {
        let relative = ((actual - expected) / expected).abs();
        failures.push(format!(
            "{what}: got {actual:e}, want {expected:e} (relative {relative:e})"
        ));
    }
}

fn report(failures: Vec<String>, total: usize) {
    assert!(
        failures.is_empty(),
        "{} of {total} values differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn moments(spec: &Value) -> Moments {
    match statistic(spec) {
        Statistic::Mean(s) => Moments::Mean(s),
        Statistic::Proportion(s) => Moments::Proportion(s),
        _ => unreachable!("inner statistics are means or proportions"),
    }
}

fn statistic(spec: &Value) -> Statistic {
    let n = spec["n"].as_u64().expect("n");
    let f = |key: &str| number(&spec[key]);
    match spec["kind"].as_str().expect("kind") {
        "mean" => Statistic::Mean(SampleMeanStatistic {
            n,
            sum: f("sum"),
            sum_squares: f("sum_squares"),
        }),
        "proportion" => Statistic::Proportion(ProportionStatistic { n, sum: f("sum") }),
        "ratio" => Statistic::Ratio(RatioStatistic {
            n,
            numerator: moments(&spec["numerator"]),
            denominator: moments(&spec["denominator"]),
            sum_of_products: f("sum_of_products"),
        }),
        _ => Statistic::RegressionAdjusted(RegressionAdjustedStatistic {
            n,
            post: moments(&spec["post"]),
            pre: moments(&spec["pre"]),
            sum_of_products: f("sum_of_products"),
            theta: 0.0,
        }),
    }
}

/// The fields every test result shares, flattened for comparison.
struct Outcome {
    expected: f64,
    ci: [f64; 2],
    mean: f64,
    stddev: f64,
    error: Option<&'static str>,
    extra: Vec<(&'static str, f64)>,
}

fn run(case: &Value) -> Outcome {
    let a = statistic(&case["control"]);
    let b = statistic(&case["treatment"]);
    let difference = match case["difference"].as_str() {
        Some("absolute") => Difference::Absolute,
        _ => Difference::Relative,
    };
    let alpha = number(&case["alpha"]);
    let config = frequentist::Config {
        alpha,
        difference,
        test_value: 0.0,
    };
    let frequentist = |r: frequentist::TestResult| Outcome {
        expected: r.expected,
        ci: r.ci,
        mean: r.uplift.mean,
        stddev: r.uplift.stddev,
        error: r.error.map(|e| e.code()),
        extra: vec![("p_value", r.p_value)],
    };
    match case["method"].as_str().expect("method") {
        "frequentist" => frequentist(frequentist::two_sided_ttest(&a, &b, &config).expect("valid")),
        "sequential" => frequentist(
            frequentist::sequential_ttest(&a, &b, &config, frequentist::DEFAULT_SEQUENTIAL_TUNING)
                .expect("valid"),
        ),
        _ => {
            let config = bayesian::Config {
                alpha,
                difference,
                ..bayesian::Config::default()
            };
            let r = bayesian::effect_test(&a, &b, &config).expect("valid");
            Outcome {
                expected: r.expected,
                ci: r.ci,
                mean: r.uplift.mean,
                stddev: r.uplift.stddev,
                error: r.error.map(|e| e.code()),
                extra: vec![
                    ("chance_to_win", r.chance_to_win),
                    ("risk[0]", r.risk[0]),
                    ("risk[1]", r.risk[1]),
                ],
            }
        }
    }
}

fn compare_outcome(label: &str, outcome: &Outcome, want: &Value, failures: &mut Vec<String>) {
    let want_error = want["error"].as_str();
    if outcome.error != want_error {
        failures.push(format!(
            "{label}: error {:?}, want {want_error:?}",
            outcome.error
        ));
    }
    check(
        &format!("{label} expected"),
        outcome.expected,
        &want["expected"],
        failures,
    );
    check(
        &format!("{label} ci[0]"),
        outcome.ci[0],
        &want["ci"][0],
        failures,
    );
    check(
        &format!("{label} ci[1]"),
        outcome.ci[1],
        &want["ci"][1],
        failures,
    );
    check(
        &format!("{label} uplift.mean"),
        outcome.mean,
        &want["uplift"]["mean"],
        failures,
    );
    check(
        &format!("{label} uplift.stddev"),
        outcome.stddev,
        &want["uplift"]["stddev"],
        failures,
    );
    for (name, value) in &outcome.extra {
        let expected = match *name {
            "risk[0]" => &want["risk"][0],
            "risk[1]" => &want["risk"][1],
            other => &want[other],
        };
        check(&format!("{label} {name}"), *value, expected, failures);
    }
}

#[test]
fn comparisons_match_gbstats() {
    let reference = reference();
    let cases = reference["comparisons"].as_array().expect("comparisons");
    let mut failures = Vec::new();
    for (index, case) in cases.iter().enumerate() {
        let label = format!(
            "#{index} {} {} {}",
            case["method"], case["difference"], case["control"]["kind"]
        );
        let outcome = run(case);
        let want = &case["result"];
        if want.get("exception").is_some() {
            // gbstats divides 0 by a zero prior variance (absolute lift, zero control mean, improper
            // prior) and raises; the improper prior contributes nothing, so we report the data alone.
            assert!(
                outcome.error.is_none() && outcome.stddev.is_finite(),
                "{label}"
            );
            continue;
        }
        compare_outcome(&label, &outcome, want, &mut failures);
    }
    report(failures, cases.len());
}

#[test]
fn distributions_match_scipy() {
    let reference = reference();
    let d = &reference["distributions"];
    let mut failures = Vec::new();
    let rows = |key: &str| d[key].as_array().expect("rows").clone();
    for row in rows("t_cdf") {
        let (dof, x) = (number(&row[0]), number(&row[1]));
        check(
            &format!("t.cdf({x}, {dof})"),
            student::cdf(x, dof),
            &row[2],
            &mut failures,
        );
    }
    for row in rows("t_ppf") {
        let (dof, p) = (number(&row[0]), number(&row[1]));
        check(
            &format!("t.ppf({p}, {dof})"),
            student::ppf(p, dof),
            &row[2],
            &mut failures,
        );
    }
    for row in rows("norm_cdf") {
        let x = number(&row[0]);
        check(
            &format!("norm.cdf({x})"),
            normal::cdf(x),
            &row[1],
            &mut failures,
        );
    }
    for row in rows("norm_ppf") {
        let p = number(&row[0]);
        check(
            &format!("norm.ppf({p})"),
            normal::ppf(p),
            &row[1],
            &mut failures,
        );
    }
    for row in rows("chi2_sf") {
        let (dof, x) = (number(&row[0]), number(&row[1]));
        check(
            &format!("chi2.sf({x}, {dof})"),
            chi_squared::sf(x, dof),
            &row[2],
            &mut failures,
        );
    }
    report(failures, 0);
}

#[test]
fn srm_matches_gbstats() {
    let reference = reference();
    let mut failures = Vec::new();
    for case in reference["srm"].as_array().expect("srm") {
        let counts: Vec<u64> = case["counts"]
            .as_array()
            .expect("counts")
            .iter()
            .map(|c| c.as_u64().expect("count"))
            .collect();
        let weights: Vec<f64> = case["weights"]
            .as_array()
            .expect("weights")
            .iter()
            .map(number)
            .collect();
        let p = srm::check_srm(&counts, &weights).expect("valid");
        check(
            &format!("srm {counts:?}"),
            p,
            &case["p_value"],
            &mut failures,
        );
    }
    report(failures, 0);
}

#[test]
fn meta_analysis_matches_statsmodels() {
    let reference = reference();
    let mut failures = Vec::new();
    for case in reference["meta"].as_array().expect("meta") {
        let effects: Vec<meta::Effect> = case["effects"]
            .as_array()
            .expect("effects")
            .iter()
            .zip(case["standard_errors"].as_array().expect("ses"))
            .map(|(e, s)| meta::Effect {
                estimate: number(e),
                standard_error: number(s),
            })
            .collect();
        let r = meta::combine(&effects, number(&case["alpha"])).expect("valid");
        let want = &case["result"];
        let label = format!("meta k={}", effects.len());
        for (name, pooled) in [("fixed", r.fixed), ("random", r.random)] {
            check(
                &format!("{label} {name}.effect"),
                pooled.effect,
                &want[name]["effect"],
                &mut failures,
            );
            check(
                &format!("{label} {name}.se"),
                pooled.se,
                &want[name]["se"],
                &mut failures,
            );
            check(
                &format!("{label} {name}.ci[0]"),
                pooled.ci[0],
                &want[name]["ci"][0],
                &mut failures,
            );
            check(
                &format!("{label} {name}.ci[1]"),
                pooled.ci[1],
                &want[name]["ci"][1],
                &mut failures,
            );
        }
        check(
            &format!("{label} tau2"),
            r.tau2,
            &want["random"]["tau2"],
            &mut failures,
        );
        check(&format!("{label} q"), r.q, &want["q"], &mut failures);
        check(
            &format!("{label} q_p_value"),
            r.q_p_value,
            &want["q_p_value"],
            &mut failures,
        );
        check(&format!("{label} i2"), r.i2, &want["i2"], &mut failures);
    }
    report(failures, 0);
}

#[test]
fn power_matches_statsmodels() {
    let reference = reference();
    let mut failures = Vec::new();
    for case in reference["power"].as_array().expect("power") {
        let design = power::Design {
            mean: number(&case["mean"]),
            stddev: number(&case["stddev"]),
            alpha: number(&case["alpha"]),
            power: number(&case["power"]),
            variations: case["variations"].as_u64().expect("variations") as u32,
        };
        let users = power::users_per_variation(&design, number(&case["mde"])).expect("valid");
        check(
            &format!("users {design:?}"),
            users as f64,
            &case["users_per_variation"],
            &mut failures,
        );
        let mde = power::minimum_detectable_effect(&design, number(&case["users"])).expect("valid");
        check(
            &format!("mde {design:?}"),
            mde,
            &case["mde_at_users"],
            &mut failures,
        );
    }
    report(failures, 0);
}

#[test]
fn corrections_match_statsmodels() {
    let reference = reference();
    let mut failures = Vec::new();
    for case in reference["corrections"].as_array().expect("corrections") {
        let p: Vec<f64> = case["p_values"]
            .as_array()
            .expect("p")
            .iter()
            .map(number)
            .collect();
        for (key, method) in [
            ("holm", correction::Method::Holm),
            ("bh", correction::Method::BenjaminiHochberg),
        ] {
            let adjusted = correction::adjust(&p, method).expect("valid");
            for (i, value) in adjusted.iter().enumerate() {
                check(
                    &format!("{key} {p:?}[{i}]"),
                    *value,
                    &case[key][i],
                    &mut failures,
                );
            }
        }
    }
    report(failures, 0);
}
