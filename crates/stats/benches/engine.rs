//! Times one metric's frequentist and Bayesian comparison; `fixtures/bench_gbstats.py` times gbstats on the same input.

use criterion::{Criterion, criterion_group, criterion_main};
use stats::{SampleMeanStatistic, Statistic, bayesian, frequentist};
use std::hint::black_box;

/// Control and treatment of the Python benchmark: n, sum, sum of squares.
const CONTROL: SampleMeanStatistic = SampleMeanStatistic {
    n: 10_000,
    sum: 100_000.0,
    sum_squares: 1_090_000.0,
};
const TREATMENT: SampleMeanStatistic = SampleMeanStatistic {
    n: 10_100,
    sum: 102_000.0,
    sum_squares: 1_120_000.0,
};

fn one_metric(c: &mut Criterion) {
    let (a, b) = (Statistic::Mean(CONTROL), Statistic::Mean(TREATMENT));
    let frequentist_config = frequentist::Config::default();
    let bayesian_config = bayesian::Config::default();
    c.bench_function("frequentist + bayesian, one metric", |bench| {
        bench.iter(|| {
            let f = frequentist::two_sided_ttest(black_box(&a), black_box(&b), &frequentist_config);
            let g = bayesian::effect_test(black_box(&a), black_box(&b), &bayesian_config);
            (f, g)
        })
    });
    c.bench_function("sequential, one metric", |bench| {
        bench.iter(|| {
            frequentist::sequential_ttest(black_box(&a), black_box(&b), &frequentist_config, 5000.0)
        })
    });
}

criterion_group!(benches, one_metric);
criterion_main!(benches);
