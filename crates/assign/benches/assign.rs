//! Throughput of `assign::assign`: assignments per second over distinct user ids, for both hash versions.
#![allow(clippy::print_stdout)]

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group};

/// Distinct user ids per measured batch: enough to defeat any caching of one id.
const USERS: usize = 10_000;
/// Assignments timed for the one-figure summary printed after criterion's report.
const SUMMARY_ASSIGNMENTS: usize = 2_000_000;

fn users() -> Vec<String> {
    (0..USERS).map(|i| format!("user-{i:08}")).collect()
}

fn experiments() -> [(&'static str, assign::Experiment); 3] {
    let v1 = assign::Experiment::new("checkout-button", 2);
    let v2 = assign::Experiment {
        hash_version: 2,
        weights: Some(vec![0.2, 0.3, 0.5]),
        coverage: 0.8,
        ..assign::Experiment::new("pricing", 3)
    };
    let namespaced = assign::Experiment {
        namespace: Some(assign::Namespace {
            id: "pricing".into(),
            start: 0.0,
            end: 0.5,
        }),
        ..v2.clone()
    };
    [
        ("v1 2 variations", v1),
        ("v2 weighted 3 variations", v2),
        ("v2 + namespace", namespaced),
    ]
}

fn bench_assign(c: &mut Criterion) {
    let users = users();
    let mut group = c.benchmark_group("assign");
    group.throughput(Throughput::Elements(USERS as u64));
    for (name, experiment) in experiments() {
        group.bench_function(name, |b| {
            b.iter(|| {
                for user in &users {
                    black_box(assign::assign(black_box(&experiment), black_box(user)));
                }
            });
        });
    }
    group.finish();
}

/// One figure for the record: assignments per second, hash version 2, weighted, 3 variations.
fn print_summary() {
    let users = users();
    let experiment = experiments()[1].1.clone();
    let started = Instant::now();
    for i in 0..SUMMARY_ASSIGNMENTS {
        black_box(assign::assign(
            black_box(&experiment),
            black_box(&users[i % USERS]),
        ));
    }
    let per_second = SUMMARY_ASSIGNMENTS as f64 / started.elapsed().as_secs_f64();
    println!(
        "assign throughput: {:.1} million assignments/s (hash v2, 3 weighted variations)",
        per_second / 1e6
    );
}

criterion_group!(benches, bench_assign);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    print_summary();
}
