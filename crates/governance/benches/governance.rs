//! Overlap detection and governance recomputation at registry scale.
//!
//! `cargo bench -p governance --bench governance [-- --experiments N --candidates C --seed S]` registers N
//! experiments (default 10,000: 12 pods, 40 primary metrics, 6 regions, hypotheses of 8 to 14 words drawn from a
//! skewed 1,500-word vocabulary, some in namespace ranges), then measures:
//! - overlap detection for one new experiment (index lookups), against a baseline that compares the candidate with
//!   every registered experiment; target under 10 ms per new experiment;
//! - `Governance::derive` of the whole registry after one change (one more experiment), the recomputation every
//!   node does when the registry changes.
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use governance::{Governance, OverlapIndex};
use model::{
    Audience, Budget, Experiment, ExperimentStatus, Hypothesis, Member, NamespaceRange,
    RegistryView, Role, Variant,
};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(clap::Parser)]
#[command(
    about = "governance at scale: overlap detection per new experiment, and the full recomputation"
)]
struct Args {
    /// Experiments in the registry.
    #[arg(long, default_value_t = 10_000)]
    experiments: usize,
    /// New experiments checked for overlaps.
    #[arg(long, default_value_t = 200)]
    candidates: usize,
    /// Seed of the generated registry (ChaCha8).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

fn args() -> Args {
    clap::Parser::parse()
}

fn word(rng: &mut ChaCha8Rng) -> String {
    // Skewed: low ranks are common (a rough Zipf by squaring a uniform draw).
    let u: f64 = rng.random();
    format!("w{}", (u * u * 1_500.0) as usize)
}

fn experiment(rng: &mut ChaCha8Rng, i: usize) -> Experiment {
    let words: Vec<String> = (0..rng.random_range(8..=14)).map(|_| word(rng)).collect();
    let month = rng.random_range(1..=12);
    let day = rng.random_range(1..=28);
    let start = format!("2026-{month:02}-{day:02}");
    let end = format!("2026-{:02}-{day:02}", (month + 1).min(12));
    let pod = format!("pod{}", rng.random_range(0..12));
    Experiment {
        key: format!("exp-{i}"),
        pod,
        hypothesis: Hypothesis {
            change: words[..3].join(" "),
            then: words[3..6].join(" "),
            because: words[6..].join(" "),
        },
        funnel_stage: Default::default(),
        audience: Audience {
            region: Some(format!("region{}", rng.random_range(0..6))),
            segment: rng
                .random_bool(0.5)
                .then(|| format!("segment{}", rng.random_range(0..4))),
        },
        variants: vec![
            Variant {
                key: "control".into(),
                weight: 0.5,
            },
            Variant {
                key: "treatment".into(),
                weight: 0.5,
            },
        ],
        primary_metric: Some(format!("metric{}", rng.random_range(0..40))),
        guardrail_metrics: vec![],
        start_date: Some(start),
        end_date: Some(end),
        cost: f64::from(rng.random_range(0..20)) * 500.0,
        status: if rng.random_bool(0.3) {
            ExperimentStatus::Concluded
        } else {
            ExperimentStatus::Draft
        },
        namespace: rng.random_bool(0.3).then(|| {
            let start = f64::from(rng.random_range(0..4)) / 4.0;
            NamespaceRange {
                id: "checkout".into(),
                start,
                end: start + 0.25,
            }
        }),
        started_at_ms: None,
        hash_version: 1,
        coverage: 1.0,
        created_by: String::new(),
        created_at_ms: i as i64,
    }
}

fn view(experiments: impl IntoIterator<Item = Experiment>) -> RegistryView {
    let mut view = RegistryView::default();
    for c in 0..5 {
        let key = format!("{c:064x}");
        view.members.insert(
            key.clone(),
            Member {
                public_key: key,
                name: format!("council {c}"),
                role: Role::Council,
                scope: None,
                admitted_by: String::new(),
                admitted_at_ms: 0,
                revoked: false,
            },
        );
    }
    for p in 0..12 {
        view.budgets.insert(
            format!("pod{p}:2026Q4"),
            Budget {
                pod: format!("pod{p}"),
                quarter: "2026Q4".into(),
                allocated: 50_000.0,
                by: String::new(),
            },
        );
    }
    for q in 1..=4 {
        view.high_impact_thresholds
            .insert(format!("2026Q{q}"), 8_000.0);
    }
    view.experiments = experiments
        .into_iter()
        .map(|e| (e.key.clone(), e))
        .collect::<BTreeMap<_, _>>();
    view
}

fn per(total: Duration, n: usize) -> f64 {
    total.as_secs_f64() * 1e3 / n.max(1) as f64
}

fn main() {
    let args = args();
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let registered: Vec<Experiment> = (0..args.experiments)
        .map(|i| experiment(&mut rng, i))
        .collect();
    let candidates: Vec<Experiment> = (0..args.candidates)
        .map(|i| experiment(&mut rng, args.experiments + i))
        .collect();
    println!(
        "{} registered experiments, {} new candidates (seed {})",
        args.experiments, args.candidates, args.seed
    );

    let start = Instant::now();
    let index = OverlapIndex::new(registered.iter());
    let build = start.elapsed();

    let start = Instant::now();
    let mut found = 0;
    for candidate in &candidates {
        found += index.overlaps_of(candidate).len();
    }
    let indexed = start.elapsed();

    // Baseline: the candidate against every registered experiment (same rules, no index).
    let start = Instant::now();
    let mut found_scan = 0;
    for candidate in &candidates {
        found_scan += index.scan(candidate).len();
    }
    let scan = start.elapsed();

    let mut view = view(registered);
    let start = Instant::now();
    let before = Governance::derive(&view);
    let first = start.elapsed();
    let extra = candidates[0].clone();
    view.experiments.insert(extra.key.clone(), extra);
    let start = Instant::now();
    let after = Governance::derive(&view);
    let again = start.elapsed();

    let per_indexed = per(indexed, candidates.len());
    let per_scan = per(scan, candidates.len());
    println!("index build: {:.1} ms", build.as_secs_f64() * 1e3);
    println!("overlaps of a new experiment (index): {per_indexed:.3} ms ({found} overlaps found)");
    println!(
        "overlaps of a new experiment (scan every experiment, baseline): {per_scan:.3} ms ({found_scan} found)"
    );
    println!(
        "ratio index/scan: {:.3}; the index found {found} of the {found_scan} overlaps a full scan finds",
        per_indexed / per_scan
    );
    println!(
        "Governance::derive: {:.1} ms; after one more experiment: {:.1} ms ({} awaiting approval, {} budget rows)",
        first.as_secs_f64() * 1e3,
        again.as_secs_f64() * 1e3,
        after.queue().len(),
        after.budgets.len()
    );
    assert!(before.experiments.len() + 1 == after.experiments.len());
    let verdict = if per_indexed < 10.0 { "PASS" } else { "MISS" };
    println!(
        "{verdict} overlap detection per new experiment: {per_indexed:.3} ms (target < 10 ms)"
    );
}
