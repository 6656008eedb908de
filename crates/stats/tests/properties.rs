//! Invariants of the engine over arbitrary valid sufficient statistics (proptest).

use proptest::prelude::*;
use stats::{Difference, SampleMeanStatistic, Statistic, bayesian, correction, frequentist, meta};

/// An arm with `n` in `[2, 1e7]`, a mean bounded away from 0 and a positive standard deviation.
fn arm() -> impl Strategy<Value = Statistic> {
    (
        2u64..10_000_000,
        0.1f64..100.0,
        prop::bool::ANY,
        0.01f64..50.0,
    )
        .prop_map(|(n, mean, negative, sd)| {
            let mean = if negative { -mean } else { mean };
            let nf = n as f64;
            let sum = nf * mean;
            Statistic::Mean(SampleMeanStatistic {
                n,
                sum,
                sum_squares: (nf - 1.0) * sd * sd + sum * sum / nf,
            })
        })
}

fn difference() -> impl Strategy<Value = Difference> {
    prop_oneof![Just(Difference::Relative), Just(Difference::Absolute)]
}

proptest! {
    #[test]
    fn frequentist_interval_contains_estimate(a in arm(), b in arm(), difference in difference(), alpha in 0.001f64..0.5) {
        let config = frequentist::Config { alpha, difference, test_value: 0.0 };
        for r in [
            frequentist::two_sided_ttest(&a, &b, &config).unwrap(),
            frequentist::sequential_ttest(&a, &b, &config, frequentist::DEFAULT_SEQUENTIAL_TUNING).unwrap(),
        ] {
            prop_assert!(r.error.is_none());
            prop_assert!(r.ci[0] <= r.expected && r.expected <= r.ci[1]);
            prop_assert!((0.0..=1.0).contains(&r.p_value));
        }
    }

    #[test]
    fn sequential_interval_is_wider(a in arm(), b in arm(), difference in difference()) {
        let config = frequentist::Config { difference, ..frequentist::Config::default() };
        let fixed = frequentist::two_sided_ttest(&a, &b, &config).unwrap();
        let sequential = frequentist::sequential_ttest(&a, &b, &config, 5000.0).unwrap();
        prop_assert!(sequential.ci[1] - sequential.ci[0] >= fixed.ci[1] - fixed.ci[0]);
    }

    #[test]
    fn absolute_test_is_antisymmetric_under_swap(a in arm(), b in arm()) {
        let config = frequentist::Config { difference: Difference::Absolute, ..frequentist::Config::default() };
        let forward = frequentist::two_sided_ttest(&a, &b, &config).unwrap();
        let backward = frequentist::two_sided_ttest(&b, &a, &config).unwrap();
        prop_assert!((forward.expected + backward.expected).abs() <= 1e-9 * forward.expected.abs().max(1e-12));
        prop_assert!((forward.p_value - backward.p_value).abs() <= 1e-9);
        prop_assert!((forward.ci[0] + backward.ci[1]).abs() <= 1e-9 * forward.ci[0].abs().max(1.0));
    }

    #[test]
    fn bayesian_probabilities_are_consistent(a in arm(), b in arm(), difference in difference()) {
        let config = bayesian::Config { difference, ..bayesian::Config::default() };
        let r = bayesian::effect_test(&a, &b, &config).unwrap();
        prop_assert!((0.0..=1.0).contains(&r.chance_to_win));
        prop_assert!(r.risk[0] >= 0.0 && r.risk[1] >= 0.0);
        prop_assert!(r.ci[0] <= r.expected && r.expected <= r.ci[1]);
        let swapped = bayesian::effect_test(&a, &b, &bayesian::Config { inverse: true, ..config }).unwrap();
        prop_assert!((swapped.chance_to_win - (1.0 - r.chance_to_win)).abs() <= 1e-15);
        prop_assert_eq!(swapped.risk, [r.risk[1], r.risk[0]]);
    }

    #[test]
    fn adjusted_p_values_dominate_and_stay_in_range(p in prop::collection::vec(0.0f64..=1.0, 1..20)) {
        let holm = correction::adjust(&p, correction::Method::Holm).unwrap();
        let bh = correction::adjust(&p, correction::Method::BenjaminiHochberg).unwrap();
        for i in 0..p.len() {
            // Both are m·p for the largest p, computed as p / (m / m) and p · 1: equal up to rounding.
            prop_assert!(p[i] <= bh[i] && bh[i] <= holm[i] * (1.0 + 1e-12) && holm[i] <= 1.0);
        }
    }

    #[test]
    fn random_effects_interval_is_at_least_fixed(effects in prop::collection::vec((-1.0f64..1.0, 0.001f64..1.0), 1..10)) {
        let effects: Vec<meta::Effect> = effects.into_iter().map(|(estimate, standard_error)| meta::Effect { estimate, standard_error }).collect();
        let r = meta::combine(&effects, 0.05).unwrap();
        prop_assert!(r.random.se >= r.fixed.se * (1.0 - 1e-12));
        prop_assert!((0.0..=1.0).contains(&r.i2) && r.tau2 >= 0.0);
        prop_assert!((0.0..=1.0).contains(&r.q_p_value));
    }
}
